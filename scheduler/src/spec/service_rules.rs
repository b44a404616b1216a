//! Validation of the service parts of a job spec (ports, checks, service name, tags,
//! `[update]`; types in `service.rs`), and which spec changes apply in place.

use super::error::SpecError;
use super::service::{
    CheckKind, CheckSpec, MAX_CHECKS, MAX_PORT_NAME, MAX_PORTS, MAX_SERVICE_MS, MAX_TAGS,
    MIN_CHECK_INTERVAL_MS, PortSpec, UpdateSpec,
};
use super::{JobSpec, JobType};

fn invalid(field: impl Into<String>, message: impl Into<String>) -> SpecError {
    SpecError::Invalid {
        field: field.into(),
        message: message.into(),
        line: None,
    }
}

/// `[a-z][a-z0-9-]*` of at most `max` bytes, not ending in `-`.
fn is_lower_name(s: &str, max: usize) -> bool {
    let mut chars = s.chars();
    s.len() <= max
        && !s.ends_with('-')
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// A DNS label: `[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?`.
fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && !s.starts_with('-')
        && !s.ends_with('-')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

impl JobSpec {
    /// The discovery name: `service`, or the job id with `_` → `-`.
    #[must_use]
    pub fn service_name(&self) -> String {
        self.service
            .clone()
            .unwrap_or_else(|| self.id.replace('_', "-"))
    }

    /// The port named `name`, if the job declares it.
    #[must_use]
    pub fn port(&self, name: &str) -> Option<&PortSpec> {
        self.ports.iter().find(|p| p.name == name)
    }

    /// The static ports the job asks for.
    pub fn static_ports(&self) -> impl Iterator<Item = u16> + '_ {
        self.ports
            .iter()
            .filter_map(|p| p.static_port.and_then(|s| u16::try_from(s).ok()))
    }

    /// Validate `ports`, `checks`, `service`, `tags` and `update`.
    pub(super) fn validate_service(&self) -> Result<(), SpecError> {
        self.validate_ports()?;
        self.validate_checks()?;
        if let Some(name) = &self.service
            && !is_dns_label(name)
        {
            return Err(invalid(
                "service",
                format!(
                    "`{}` is not a DNS label: 1 to 63 of a-z 0-9 -, not starting or ending \
                     with -",
                    name.escape_default()
                ),
            ));
        }
        if self.tags.len() > MAX_TAGS {
            return Err(invalid(
                "tags",
                format!("at most {MAX_TAGS} tags, got {}", self.tags.len()),
            ));
        }
        for (i, tag) in self.tags.iter().enumerate() {
            if !is_dns_label(tag) {
                return Err(invalid(
                    format!("tags[{i}]"),
                    format!(
                        "`{}` is not a DNS label: 1 to 63 of a-z 0-9 -, not starting or ending \
                         with -",
                        tag.escape_default()
                    ),
                ));
            }
            if self.tags[..i].contains(tag) {
                return Err(invalid(
                    format!("tags[{i}]"),
                    format!("`{tag}` is repeated"),
                ));
            }
        }
        if let Some(u) = &self.update {
            self.validate_update(u)?;
        }
        Ok(())
    }

    fn validate_ports(&self) -> Result<(), SpecError> {
        if self.ports.len() > MAX_PORTS {
            return Err(invalid(
                "ports",
                format!("at most {MAX_PORTS} ports, got {}", self.ports.len()),
            ));
        }
        for (i, p) in self.ports.iter().enumerate() {
            if !is_lower_name(&p.name, MAX_PORT_NAME) {
                return Err(invalid(
                    format!("ports[{i}].name"),
                    format!(
                        "`{}` must match [a-z][a-z0-9-]{{0,14}} (not ending with -)",
                        p.name.escape_default()
                    ),
                ));
            }
            if let Some(earlier) = self.ports[..i].iter().find(|q| q.name == p.name) {
                return Err(invalid(
                    format!("ports[{i}].name"),
                    format!("port `{}` is declared twice", earlier.name),
                ));
            }
            if let Some(s) = p.static_port {
                if !(1..=65535).contains(&s) {
                    return Err(invalid(
                        format!("ports[{i}].static"),
                        format!("must be 1..=65535, got {s}"),
                    ));
                }
                if let Some(q) = self.ports[..i].iter().find(|q| q.static_port == Some(s)) {
                    return Err(invalid(
                        format!("ports[{i}].static"),
                        format!("port {s} is already taken by port `{}`", q.name),
                    ));
                }
            }
        }
        Ok(())
    }

    fn validate_checks(&self) -> Result<(), SpecError> {
        if self.checks.len() > MAX_CHECKS {
            return Err(invalid(
                "checks",
                format!("at most {MAX_CHECKS} checks, got {}", self.checks.len()),
            ));
        }
        let mut names = Vec::new();
        for (i, c) in self.checks.iter().enumerate() {
            let field = |f: &str| format!("checks[{i}].{f}");
            let name = c.name_or_default(i);
            if !is_lower_name(&name, 32) {
                return Err(invalid(
                    field("name"),
                    format!(
                        "`{}` must match [a-z][a-z0-9-]{{0,31}}",
                        name.escape_default()
                    ),
                ));
            }
            if names.contains(&name) {
                return Err(invalid(
                    field("name"),
                    format!("check `{name}` is declared twice"),
                ));
            }
            names.push(name);
            self.validate_check_target(c, &field)?;
            if !(MIN_CHECK_INTERVAL_MS..=MAX_SERVICE_MS).contains(&c.interval_ms) {
                return Err(invalid(
                    field("interval_ms"),
                    format!(
                        "must be {MIN_CHECK_INTERVAL_MS}..={MAX_SERVICE_MS}, got {}",
                        c.interval_ms
                    ),
                ));
            }
            if c.timeout_ms == 0 || c.timeout_ms > c.interval_ms {
                return Err(invalid(
                    field("timeout_ms"),
                    format!(
                        "must be 1..=interval_ms ({}), got {}",
                        c.interval_ms, c.timeout_ms
                    ),
                ));
            }
            if c.grace_ms > MAX_SERVICE_MS {
                return Err(invalid(
                    field("grace_ms"),
                    format!("must be at most {MAX_SERVICE_MS}, got {}", c.grace_ms),
                ));
            }
            if c.failures > 100 {
                return Err(invalid(
                    field("failures"),
                    format!("must be 0..=100 (0 = never restart), got {}", c.failures),
                ));
            }
        }
        Ok(())
    }

    /// A check's `port`, `path`, `status` and `command` fit its type.
    fn validate_check_target(
        &self,
        c: &CheckSpec,
        field: &dyn Fn(&str) -> String,
    ) -> Result<(), SpecError> {
        let kind = c.kind.as_str();
        match (c.kind, &c.port) {
            (CheckKind::Http | CheckKind::Tcp, None) => {
                return Err(invalid(
                    field("port"),
                    format!("a {kind} check needs `port`, one of the job's [[ports]] names"),
                ));
            }
            (CheckKind::Http | CheckKind::Tcp, Some(p)) if self.port(p).is_none() => {
                return Err(invalid(
                    field("port"),
                    format!("the job has no port \"{}\"", p.escape_default()),
                ));
            }
            (CheckKind::Command, Some(_)) => {
                return Err(invalid(field("port"), "a command check takes no port"));
            }
            _ => {}
        }
        if c.kind != CheckKind::Http && (c.path.is_some() || c.status.is_some()) {
            let f = if c.path.is_some() { "path" } else { "status" };
            return Err(invalid(field(f), format!("only an http check takes `{f}`")));
        }
        if let Some(path) = &c.path
            && (!path.starts_with('/') || path.len() > 1024 || path.chars().any(char::is_control))
        {
            return Err(invalid(
                field("path"),
                "must start with / and be at most 1024 bytes without control characters",
            ));
        }
        if let Some(s) = c.status
            && !(100..=599).contains(&s)
        {
            return Err(invalid(
                field("status"),
                format!("must be 100..=599, got {s}"),
            ));
        }
        match (c.kind, &c.command) {
            (CheckKind::Command, None) => {
                Err(invalid(field("command"), "a command check needs `command`"))
            }
            (CheckKind::Command, Some(cmd)) if cmd.trim().is_empty() || cmd.len() > 4096 => {
                Err(invalid(field("command"), "must be 1 to 4096 bytes"))
            }
            (CheckKind::Http | CheckKind::Tcp, Some(_)) => Err(invalid(
                field("command"),
                format!("a {kind} check takes no `command`"),
            )),
            _ if c.kind != CheckKind::Command && !c.args.is_empty() => {
                Err(invalid(field("args"), "only a command check takes `args`"))
            }
            _ if c.args.len() > 64 || c.args.iter().any(|a| a.len() > 4096) => Err(invalid(
                field("args"),
                "at most 64 arguments of at most 4096 bytes",
            )),
            _ => Ok(()),
        }
    }

    fn validate_update(&self, u: &UpdateSpec) -> Result<(), SpecError> {
        if self.job_type != JobType::Service {
            return Err(invalid(
                "update",
                "only a service job takes an [update] block",
            ));
        }
        if u.max_parallel > self.count {
            return Err(invalid(
                "update.max_parallel",
                format!(
                    "must be 0..=count ({}; 0 = all at once), got {}",
                    self.count, u.max_parallel
                ),
            ));
        }
        if u.min_healthy_ms > MAX_SERVICE_MS {
            return Err(invalid(
                "update.min_healthy_ms",
                format!("must be at most {MAX_SERVICE_MS}, got {}", u.min_healthy_ms),
            ));
        }
        if u.healthy_deadline_ms <= u.min_healthy_ms || u.healthy_deadline_ms > MAX_SERVICE_MS {
            return Err(invalid(
                "update.healthy_deadline_ms",
                format!(
                    "must be greater than min_healthy_ms ({}) and at most {MAX_SERVICE_MS}, \
                     got {}",
                    u.min_healthy_ms, u.healthy_deadline_ms
                ),
            ));
        }
        if u.canary > self.count {
            return Err(invalid(
                "update.canary",
                format!("must be 0..=count ({}), got {}", self.count, u.canary),
            ));
        }
        Ok(())
    }

    /// Whether two specs differ only in what applies in place, without replacing the running
    /// tasks: `count`, `update`, `service`, `tags` and `checks` (`docs/services.md`, §4).
    #[must_use]
    pub fn same_but_in_place(&self, other: &JobSpec) -> bool {
        let mut a = self.clone();
        a.count = other.count;
        a.update.clone_from(&other.update);
        a.service.clone_from(&other.service);
        a.tags.clone_from(&other.tags);
        a.checks.clone_from(&other.checks);
        a == *other
    }
}

#[cfg(test)]
mod tests {
    use crate::spec::{JobSpec, SpecError};

    const BASE: &str = "id = \"web_1\"\ntype = \"service\"\ncount = 3\ncommand = \"x\"\n\
                        resources = { cpu = 1, memory = 1 }\n";

    fn parse(extra: &str) -> Result<JobSpec, SpecError> {
        JobSpec::from_toml_str(&format!("{BASE}{extra}"))
    }

    fn refused(extra: &str) -> String {
        parse(extra).unwrap_err().to_string()
    }

    #[test]
    fn parses_the_service_parts() {
        let s = parse(
            "args = [\"${SHOAL_PORT_HTTP}\", \"$${SHOAL_X}\"]\nenv = { A = \"${SHOAL_ADDR_ADMIN_UI}\" }\n\
             tags = [\"blue\", \"v2\"]\n\
             [[ports]]\nname = \"http\"\n[[ports]]\nname = \"admin-ui\"\nstatic = 8080\n\
             [[checks]]\ntype = \"http\"\nport = \"http\"\npath = \"/healthz\"\ninterval_ms = 300\n\
             timeout_ms = 300\n[[checks]]\ntype = \"command\"\ncommand = \"/bin/check\"\n\
             args = [\"-q\"]\n[update]\nmax_parallel = 2\ncanary = 1\n",
        );
        let s = s.unwrap();
        assert_eq!(s.service_name(), "web-1");
        assert_eq!(s.static_ports().collect::<Vec<_>>(), [8080]);
        assert!(
            s.wants_distinct_hosts(),
            "a static port implies distinct_hosts"
        );
        assert_eq!(s.checks[0].name_or_default(0), "http-0");
        assert_eq!((s.checks[1].failures, s.checks[1].interval_ms), (3, 10_000));
        let u = s.update.as_ref().unwrap();
        assert_eq!((u.max_parallel, u.min_healthy_ms, u.canary), (2, 10_000, 1));
        // JSON and postcard round trips keep every part.
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(JobSpec::from_json_str(&json).unwrap(), s);
        let bin = postcard::to_stdvec(&s).unwrap();
        assert_eq!(postcard::from_bytes::<JobSpec>(&bin).unwrap(), s);
        // Without the new fields, a spec is as before.
        let plain = parse("").unwrap();
        assert!(plain.ports.is_empty() && plain.update.is_none() && !plain.wants_distinct_hosts());
    }

    #[test]
    fn errors_name_the_field_the_limit_and_the_line() {
        let cases: &[(&str, &str)] = &[
            (
                "[[ports]]\nname = \"HTTP\"\n",
                "line 7: `ports[0].name`: `HTTP` must match",
            ),
            (
                "[[ports]]\nname = \"a\"\n[[ports]]\nname = \"a\"\n",
                "`ports[1].name`: port `a` is declared twice",
            ),
            (
                "[[ports]]\nname = \"a\"\nstatic = 70000\n",
                "line 8: `ports[0].static`: must be 1..=65535, got 70000",
            ),
            (
                "[[ports]]\nname = \"a\"\nstatic = 0\n",
                "must be 1..=65535, got 0",
            ),
            (
                "[[ports]]\nname = \"a\"\nstatic = 80\n[[ports]]\nname = \"b\"\nstatic = 80\n",
                "port 80 is already taken by port `a`",
            ),
            (
                "args = [\"x\", \"${SHOAL_PORT_HTTPS}\"]\n",
                "`args[1]`: ${SHOAL_PORT_HTTPS}: the job has no port \"https\"",
            ),
            (
                "env = { B = \"${SHOAL_ADDR_X_Y}\" }\n",
                "`env.B`: ${SHOAL_ADDR_X_Y}: the job has no port \"x-y\"",
            ),
            (
                "args = [\"${SHOAL_FOO}\"]\n",
                "`args[0]`: ${SHOAL_FOO}: unknown",
            ),
            (
                "args = [\"${SHOAL_PORT_A-B}\"]\n[[ports]]\nname = \"a-b\"\n",
                "port \"a-b\" is written ${SHOAL_PORT_A_B}",
            ),
            ("service = \"Web\"\n", "`service`: `Web` is not a DNS label"),
            ("tags = [\"a\", \"a\"]\n", "`tags[1]`: `a` is repeated"),
            (
                "[[checks]]\ntype = \"http\"\n",
                "`checks[0].port`: a http check needs `port`",
            ),
            (
                "[[checks]]\ntype = \"tcp\"\nport = \"db\"\n",
                "`checks[0].port`: the job has no port \"db\"",
            ),
            (
                "[[checks]]\ntype = \"command\"\n",
                "`checks[0].command`: a command check needs `command`",
            ),
            (
                "[[ports]]\nname = \"p\"\n[[checks]]\ntype = \"tcp\"\nport = \"p\"\npath = \"/\"\n",
                "`checks[0].path`: only an http check takes `path`",
            ),
            (
                "[[ports]]\nname = \"p\"\n[[checks]]\ntype = \"http\"\nport = \"p\"\ninterval_ms = 50\n",
                "`checks[0].interval_ms`: must be 100..=86400000, got 50",
            ),
            (
                "[[ports]]\nname = \"p\"\n[[checks]]\ntype = \"http\"\nport = \"p\"\ninterval_ms = 500\ntimeout_ms = 600\n",
                "`checks[0].timeout_ms`: must be 1..=interval_ms (500), got 600",
            ),
            (
                "[[ports]]\nname = \"p\"\n[[checks]]\ntype = \"http\"\nport = \"p\"\nstatus = 700\n",
                "`checks[0].status`: must be 100..=599",
            ),
            (
                "[[ports]]\nname = \"p\"\n[[checks]]\ntype = \"http\"\nport = \"p\"\n[[checks]]\nname = \"http-0\"\ntype = \"tcp\"\nport = \"p\"\n",
                "`checks[1].name`: check `http-0` is declared twice",
            ),
            (
                "[update]\nmax_parallel = 4\n",
                "`update.max_parallel`: must be 0..=count (3; 0 = all at once), got 4",
            ),
            (
                "[update]\nmin_healthy_ms = 5000\nhealthy_deadline_ms = 5000\n",
                "`update.healthy_deadline_ms`: must be greater than min_healthy_ms (5000)",
            ),
            (
                "[update]\ncanary = 9\n",
                "`update.canary`: must be 0..=count (3), got 9",
            ),
            ("[update]\nbogus = 1\n", "bogus"),
        ];
        for (extra, want) in cases {
            let got = refused(extra);
            assert!(got.contains(want), "{extra:?}:\n got  {got}\n want {want}");
        }
        let many_ports: String = (0..17)
            .map(|i| format!("[[ports]]\nname = \"p{i}\"\n"))
            .collect();
        assert!(refused(&many_ports).contains("`ports`: at most 16 ports, got 17"));
        let batch = BASE.replace("service\"", "batch\"") + "[update]\n";
        let e = JobSpec::from_toml_str(&batch).unwrap_err().to_string();
        assert!(e.contains("`update`: only a service job"), "{e}");
    }

    #[test]
    fn the_example_parses() {
        let s = JobSpec::from_toml_str(include_str!("../../../examples/http.toml")).unwrap();
        assert_eq!(s.ports[0].name, "http");
        assert_eq!(s.checks[0].name.as_deref(), Some("ready"));
        let update = s.update.expect("the example rolls updates");
        assert_eq!((update.max_parallel, update.auto_revert), (2, true));
    }

    #[test]
    fn what_applies_in_place() {
        let a = parse("[[ports]]\nname = \"http\"\n").unwrap();
        let mut b = a.clone();
        b.count = 9;
        b.tags = vec!["x".into()];
        b.service = Some("api".into());
        b.update = Some(parse("[update]\n").unwrap().update.unwrap());
        b.checks =
            parse("[[ports]]\nname = \"http\"\n[[checks]]\ntype = \"tcp\"\nport = \"http\"\n")
                .unwrap()
                .checks;
        assert!(a.same_but_in_place(&b));
        let mut c = b.clone();
        c.ports[0].static_port = Some(80);
        assert!(
            !a.same_but_in_place(&c),
            "a change of ports starts a new epoch"
        );
        c = b;
        c.args = vec!["y".into()];
        assert!(!a.same_but_in_place(&c));
    }
}
