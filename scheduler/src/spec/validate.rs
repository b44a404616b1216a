//! Parsing a job spec from TOML or JSON, validating it against [`SpecLimits`], and refusing a
//! job no current member could ever host; errors name the field and, for TOML, the line.

use shoal_gossip::{MemberInfo, MemberStatus, Resources};

use super::error::{NeverFitsError, SpecError, fmt_resources};
use super::interpolate::check_refs;
use super::{Constraint, JobSpec, MAX_STOP_AFTER_MS, MAX_USER_BYTES, RestartPolicy, SpecLimits};

fn invalid(field: impl Into<String>, message: impl Into<String>) -> SpecError {
    SpecError::Invalid {
        field: field.into(),
        message: message.into(),
        line: None,
    }
}

/// What a job document names among the fields whose default depends on the job's type. Read
/// beside the spec (a second pass over a document of a few hundred bytes), so the spec's own
/// errors keep their lines and columns.
#[derive(serde::Deserialize)]
struct Named {
    placement: Option<serde::de::IgnoredAny>,
}

impl JobSpec {
    /// Parse and validate a TOML job file. Errors carry the line.
    pub fn from_toml_str(s: &str) -> Result<Self, SpecError> {
        let spec: JobSpec = toml::from_str(s).map_err(|e| SpecError::Parse(e.to_string()))?;
        let named: Named = toml::from_str(s).map_err(|e| SpecError::Parse(e.to_string()))?;
        let spec = spec.with_type_defaults(&named);
        spec.validate().map_err(|e| with_toml_line(e, s))?;
        Ok(spec)
    }

    /// Parse and validate a JSON job body (same shape as the TOML file).
    pub fn from_json_str(s: &str) -> Result<Self, SpecError> {
        let spec = Self::parse_json(s)?;
        spec.validate()?;
        Ok(spec)
    }

    /// Parse a JSON job body without validating it (the scheduler core checks every spec it
    /// is given, so the API parses only).
    pub fn parse_json(s: &str) -> Result<Self, SpecError> {
        let spec: JobSpec = serde_json::from_str(s).map_err(|e| SpecError::Parse(e.to_string()))?;
        let named: Named = serde_json::from_str(s).map_err(|e| SpecError::Parse(e.to_string()))?;
        Ok(spec.with_type_defaults(&named))
    }

    /// A spec built as a JSON value (the simulator's workload), not validated.
    pub fn from_json_value(value: serde_json::Value) -> Result<Self, SpecError> {
        let named = <Named as serde::Deserialize>::deserialize(&value)
            .map_err(|e| SpecError::Parse(e.to_string()))?;
        let spec: JobSpec =
            serde_json::from_value(value).map_err(|e| SpecError::Parse(e.to_string()))?;
        Ok(spec.with_type_defaults(&named))
    }

    fn with_type_defaults(mut self, named: &Named) -> Self {
        if named.placement.is_none() {
            self.placement = super::PlacementStrategy::default_for(self.job_type);
        }
        self
    }

    /// Validate with the default [`SpecLimits`].
    pub fn validate(&self) -> Result<(), SpecError> {
        self.validate_with(&SpecLimits::default())
    }

    /// Validate every field; the first problem found is returned.
    pub fn validate_with(&self, limits: &SpecLimits) -> Result<(), SpecError> {
        validate_id(&self.id)?;
        self.validate_process(limits)?;
        self.validate_scheduling(limits)?;
        validate_restart(&self.restart)?;
        self.validate_service()
    }

    fn validate_process(&self, limits: &SpecLimits) -> Result<(), SpecError> {
        let long = |field: &str, v: &str| -> Result<(), SpecError> {
            if v.len() > limits.max_string_bytes {
                return Err(invalid(
                    field,
                    format!("longer than {} bytes", limits.max_string_bytes),
                ));
            }
            Ok(())
        };
        if self.command.trim().is_empty() {
            return Err(invalid("command", "must not be empty"));
        }
        long("command", &self.command)?;
        if self.args.len() > limits.max_args {
            return Err(invalid(
                "args",
                format!("more than {} arguments", limits.max_args),
            ));
        }
        for (i, a) in self.args.iter().enumerate() {
            long(&format!("args[{i}]"), a)?;
            check_refs(a, &self.ports).map_err(|m| invalid(format!("args[{i}]"), m))?;
        }
        if self.env.len() > limits.max_env {
            return Err(invalid(
                "env",
                format!("more than {} variables", limits.max_env),
            ));
        }
        for (k, v) in &self.env {
            if k.is_empty() || k.contains('=') || k.contains('\0') {
                return Err(invalid(
                    format!("env.{k}"),
                    "variable names must be non-empty without `=`",
                ));
            }
            long(&format!("env.{k}"), v)?;
            check_refs(v, &self.ports).map_err(|m| invalid(format!("env.{k}"), m))?;
        }
        if let Some(w) = &self.workdir {
            if w.is_empty() {
                return Err(invalid("workdir", "must not be empty when given"));
            }
            long("workdir", w)?;
        }
        if let Some(user) = &self.user {
            validate_user(user)?;
        }
        Ok(())
    }

    fn validate_scheduling(&self, limits: &SpecLimits) -> Result<(), SpecError> {
        if self.count == 0 || self.count > limits.max_count {
            return Err(invalid(
                "count",
                format!("must be 1..={}, got {}", limits.max_count, self.count),
            ));
        }
        if self.resources.cpu == 0 {
            return Err(invalid("resources.cpu", "must be at least 1 millicore"));
        }
        if self.resources.memory == 0 {
            return Err(invalid("resources.memory", "must be at least 1 MiB"));
        }
        if self.priority > 100 {
            return Err(invalid(
                "priority",
                format!("must be 0..=100, got {}", self.priority),
            ));
        }
        if let Some(ms) = self.disconnect.stop_after_ms
            && ms > MAX_STOP_AFTER_MS
        {
            return Err(invalid(
                "disconnect.stop_after_ms",
                format!("must be 0..={MAX_STOP_AFTER_MS} (0 = never stop), got {ms}"),
            ));
        }
        if self.constraints.len() > limits.max_constraints {
            return Err(invalid(
                "constraints",
                format!("more than {}", limits.max_constraints),
            ));
        }
        for (i, c) in self.constraints.iter().enumerate() {
            if let Constraint::Attribute {
                attribute, value, ..
            } = c
            {
                if attribute.is_empty() || value.is_empty() {
                    return Err(invalid(
                        format!("constraints[{i}]"),
                        "needs an attribute and a value",
                    ));
                }
                if attribute.len() + value.len() > limits.max_string_bytes {
                    return Err(invalid(format!("constraints[{i}]"), "too long"));
                }
            }
        }
        Ok(())
    }

    /// Refuse a job that no current member could host even when empty: its request exceeds
    /// the capacity of every member that satisfies its constraints. Members without a
    /// resource ad, and members that are down or left, are ignored; with no member known,
    /// everything passes. A job whose constraints no current member satisfies is accepted and
    /// stays pending with the filter report as its reason (as Nomad and Kubernetes do): the
    /// node it names may not have joined yet (a job submitted as a cluster starts was refused
    /// with "all 1 nodes fail its constraints"), may be down for a restart, or may be a rack
    /// still being added.
    pub fn check_can_ever_fit<'a>(
        &self,
        members: impl IntoIterator<Item = &'a MemberInfo>,
    ) -> Result<(), NeverFitsError> {
        let request = self.resources.to_resources();
        let mut seen = 0usize;
        let mut failing_constraints = 0usize;
        let mut largest: Option<(&str, Resources)> = None;
        for m in members {
            let Some(ad) = m.ad.as_ref() else { continue };
            if matches!(m.status, MemberStatus::Down | MemberStatus::Left) || ad.left {
                continue;
            }
            seen += 1;
            if self.failed_constraint(&m.id.name, &ad.attributes).is_some() {
                failing_constraints += 1;
                continue;
            }
            if request.fits_in(&ad.capacity) {
                return Ok(());
            }
            let bigger = largest.is_none_or(|(n, c)| {
                (
                    ad.capacity.cpu_millicores,
                    ad.capacity.memory_mib,
                    std::cmp::Reverse(&*m.id.name),
                ) > (c.cpu_millicores, c.memory_mib, std::cmp::Reverse(n))
            });
            if bigger {
                largest = Some((&m.id.name, ad.capacity));
            }
        }
        let Some((name, cap)) = largest else {
            // No member known, or none satisfies the constraints (yet): placement reports it.
            return Ok(());
        };
        let detail = format!(
            "the largest eligible node `{name}` offers {}{}",
            fmt_resources(&cap),
            if failing_constraints > 0 {
                format!(" ({failing_constraints} of {seen} nodes fail its constraints)")
            } else {
                String::new()
            }
        );
        Err(NeverFitsError {
            job: self.id.clone(),
            request,
            detail,
        })
    }
}

/// A portable user name: `[A-Za-z_][A-Za-z0-9_.-]*`, at most [`MAX_USER_BYTES`] bytes.
fn validate_user(user: &str) -> Result<(), SpecError> {
    let first_ok = user
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    let rest_ok = user
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if user.len() > MAX_USER_BYTES || !first_ok || !rest_ok {
        return Err(invalid(
            "user",
            format!(
                "`{}` is not a user name: 1 to {MAX_USER_BYTES} of A-Z a-z 0-9 _ . - starting \
                 with a letter or _",
                user.escape_default()
            ),
        ));
    }
    Ok(())
}

fn validate_id(id: &str) -> Result<(), SpecError> {
    let ok_first = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    let ok_rest = |c: char| ok_first(c) || c == '_' || c == '-';
    let mut chars = id.chars();
    let valid = id.len() <= 63 && chars.next().is_some_and(ok_first) && chars.all(ok_rest);
    if valid {
        Ok(())
    } else {
        Err(invalid(
            "id",
            format!(
                "`{}` must match [a-z0-9][a-z0-9_-]{{0,62}}",
                id.escape_default()
            ),
        ))
    }
}

fn validate_restart(r: &RestartPolicy) -> Result<(), SpecError> {
    if !r.backoff.is_finite() || !(1.0..=10.0).contains(&r.backoff) {
        return Err(invalid(
            "restart.backoff",
            format!("must be 1.0..=10.0, got {}", r.backoff),
        ));
    }
    if r.max_delay_ms < r.delay_ms {
        return Err(invalid(
            "restart.max_delay_ms",
            "must be at least restart.delay_ms",
        ));
    }
    if r.max_delay_ms > 86_400_000 {
        return Err(invalid("restart.max_delay_ms", "must be at most one day"));
    }
    Ok(())
}

/// Attach the TOML line of the offending field to a validation error.
fn with_toml_line(err: SpecError, source: &str) -> SpecError {
    match err {
        SpecError::Invalid {
            field,
            message,
            line: None,
        } => {
            let line = toml_line_of(source, &field);
            SpecError::Invalid {
                field,
                message,
                line,
            }
        }
        other => other,
    }
}

/// 1-based line of a dotted field path (`resources.cpu`, `args[2]`, `env.KEY`) in TOML source.
fn toml_line_of(source: &str, field: &str) -> Option<usize> {
    let doc = toml_edit::ImDocument::parse(source).ok()?;
    let mut parts = field.split('.');
    let first = parts.next()?;
    let (name, index) = split_index(first);
    let mut item = doc.as_table().get(name)?;
    let mut best = item.span();
    if let Some(i) = index {
        item = item.get(i)?;
        best = item.span().or(best);
    }
    for part in parts {
        let (name, index) = split_index(part);
        item = item.get(name)?;
        best = item.span().or(best);
        if let Some(i) = index {
            item = item.get(i)?;
            best = item.span().or(best);
        }
    }
    let start = best?.start;
    Some(source.get(..start)?.matches('\n').count() + 1)
}

/// `args[2]` → (`args`, Some(2)).
fn split_index(part: &str) -> (&str, Option<usize>) {
    match part.split_once('[') {
        Some((name, rest)) => (name, rest.trim_end_matches(']').parse().ok()),
        None => (part, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::*;

    const WEB_JSON: &str = r#"{"id": "web", "type": "service", "count": 6, "command": "sleep",
        "args": ["600"], "resources": {"cpu": 100, "memory": 32}}"#;

    #[test]
    fn parses_the_issue_example() {
        let s = JobSpec::from_json_str(WEB_JSON).unwrap();
        assert_eq!(
            (s.id.as_str(), s.job_type, s.count),
            ("web", JobType::Service, 6)
        );
        assert_eq!(s.placement, PlacementStrategy::Spread);
        assert_eq!((s.priority, s.retries), (50, 3));
        assert_eq!(s.resources.to_resources().cpu_millicores, 100);
    }

    #[test]
    fn a_job_that_names_no_placement_gets_its_types() {
        let toml = |ty: &str, extra: &str| {
            format!(
                "id = \"j\"\ntype = \"{ty}\"\ncommand = \"x\"\n{extra}\
                 resources = {{ cpu = 1, memory = 1 }}\n"
            )
        };
        let json = |ty: &str, extra: &str| {
            format!(
                r#"{{"id": "j", "type": "{ty}", "command": "x", {extra}
                    "resources": {{"cpu": 1, "memory": 1}}}}"#
            )
        };
        let (spread, binpack) = (PlacementStrategy::Spread, PlacementStrategy::Binpack);
        for (ty, named, toml_extra, json_extra, want) in [
            ("service", false, "", "", spread),
            ("batch", false, "", "", binpack),
            (
                "service",
                true,
                "placement = \"binpack\"\n",
                r#""placement": "binpack","#,
                binpack,
            ),
            (
                "batch",
                true,
                "placement = \"spread\"\n",
                r#""placement": "spread","#,
                spread,
            ),
        ] {
            let from_toml = JobSpec::from_toml_str(&toml(ty, toml_extra)).unwrap();
            let from_json = JobSpec::from_json_str(&json(ty, json_extra)).unwrap();
            let parsed = JobSpec::parse_json(&json(ty, json_extra)).unwrap();
            let value: serde_json::Value = serde_json::from_str(&json(ty, json_extra)).unwrap();
            let from_value = JobSpec::from_json_value(value).unwrap();
            for (how, got) in [
                ("toml", from_toml.placement),
                ("json", from_json.placement),
                ("parse_json", parsed.placement),
                ("value", from_value.placement),
            ] {
                assert_eq!(got, want, "{ty}, placement named: {named}, read from {how}");
            }
        }
        // An unknown strategy is still refused, and names itself.
        let err = JobSpec::from_toml_str(&toml("service", "placement = \"pack\"\n")).unwrap_err();
        assert!(err.to_string().contains("pack"), "{err}");
    }

    #[test]
    fn toml_and_json_have_the_same_shape() {
        let toml = r#"
id = "web"
type = "service"
count = 6
command = "sleep"
args = ["600"]
[resources]
cpu = 100
memory = 32
"#;
        assert_eq!(
            JobSpec::from_toml_str(toml).unwrap(),
            JobSpec::from_json_str(WEB_JSON).unwrap()
        );
    }

    #[test]
    fn constraints_in_every_form() {
        let toml = r#"
id = "c"
type = "batch"
command = "true"
resources = { cpu = 1, memory = 1 }
constraints = ["rack == r1", "zone != z2", "disk=ssd", { attribute = "os", op = "=", value = "linux" },
               { distinct_hosts = true }, "distinct_hosts"]
"#;
        let s = JobSpec::from_toml_str(toml).unwrap();
        assert_eq!(s.constraints.len(), 6);
        assert!(s.wants_distinct_hosts());
        let mut attrs = BTreeMap::new();
        attrs.insert("rack".to_string(), "r1".to_string());
        attrs.insert("disk".to_string(), "ssd".to_string());
        attrs.insert("os".to_string(), "linux".to_string());
        assert!(s.failed_constraint("n1", &attrs).is_none());
        attrs.insert("zone".to_string(), "z2".to_string());
        assert_eq!(
            s.failed_constraint("n1", &attrs).unwrap().to_string(),
            "zone!=z2"
        );
        // JSON round trip keeps them; postcard too.
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(JobSpec::from_json_str(&json).unwrap(), s);
        let bin = postcard::to_stdvec(&s).unwrap();
        assert_eq!(postcard::from_bytes::<JobSpec>(&bin).unwrap(), s);
    }

    #[test]
    fn errors_name_field_and_line() {
        let toml = "id = \"web\"\ntype = \"service\"\ncommand = \"x\"\ncount = 0\nresources = { cpu = 1, memory = 1 }\n";
        let e = JobSpec::from_toml_str(toml).unwrap_err();
        assert_eq!(
            e,
            SpecError::Invalid {
                field: "count".into(),
                message: "must be 1..=100000, got 0".into(),
                line: Some(4)
            }
        );
        let toml =
            "id = \"web\"\ntype = \"service\"\ncommand = \"x\"\n[resources]\nmemory = 1\ncpu = 0\n";
        let e = JobSpec::from_toml_str(toml).unwrap_err().to_string();
        assert!(e.contains("line 6") && e.contains("resources.cpu"), "{e}");
        let e = JobSpec::from_toml_str(
            "id = \"web\"\ntype = \"service\"\nresources = { cpu = 1, memory = 1 }\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("command"), "{e}");
        let e = JobSpec::from_toml_str("id = \"Web!\"\ntype = \"batch\"\ncommand = \"x\"\nresources = { cpu = 1, memory = 1 }\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 1") && e.contains("`id`"), "{e}");
        let e = JobSpec::from_toml_str("id = \"w\"\ntype = \"batch\"\ncommand = \"x\"\nbogus = 1\nresources = { cpu = 1, memory = 1 }\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("bogus") && e.contains("line 4"), "{e}");
        let e = JobSpec::from_json_str(
            r#"{"id": "w", "type": "cron", "command": "x", "resources": {"cpu": 1, "memory": 1}}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("cron") && e.contains("line 1"), "{e}");
    }

    #[test]
    fn id_rules() {
        for ok in ["a", "0", "web-1", "a_b", &"a".repeat(63)] {
            assert!(validate_id(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "_a", "A", "a.b", "a b", &"a".repeat(64), "é"] {
            assert!(validate_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn restart_delay_grows_and_caps() {
        let r = RestartPolicy {
            attempts: 0,
            delay_ms: 100,
            backoff: 2.0,
            max_delay_ms: 1000,
        };
        assert_eq!(
            [1, 2, 3, 4, 5, 100].map(|n| r.delay_after(n)),
            [100, 200, 400, 800, 1000, 1000]
        );
    }

    #[test]
    fn never_fits_names_the_largest_node() {
        use shoal_gossip::{NodeId, ResourceAd};
        let member = |name: &str, cpu, mem| MemberInfo {
            id: NodeId {
                name: name.into(),
                addr: "127.0.0.1:1".parse().unwrap(),
                generation: 1,
            },
            status: MemberStatus::Alive,
            ad: Some(ResourceAd {
                generation: 1,
                ..ResourceAd::new(
                    name,
                    Resources {
                        cpu_millicores: cpu,
                        memory_mib: mem,
                        disk_mib: 0,
                    },
                )
            }),
            last_update: shoal_gossip::Millis(0),
        };
        let members = [member("n1", 4000, 8192), member("n2", 16000, 4096)];
        let mut spec = JobSpec::from_json_str(WEB_JSON).unwrap();
        assert!(spec.check_can_ever_fit(&members).is_ok());
        spec.resources.cpu = 64_000;
        let e = spec.check_can_ever_fit(&members).unwrap_err().to_string();
        assert!(e.contains("`n2` offers 16000m cpu"), "{e}");
        // Constraints no member satisfies: accepted, the node may join later.
        spec.resources.cpu = 100;
        spec.constraints
            .push(Constraint::parse_compact("node == n3").unwrap());
        assert!(spec.check_can_ever_fit(&members).is_ok());
        // Constraints some member satisfies, none of them big enough: refused, naming it.
        spec.constraints = vec![Constraint::parse_compact("node == n1").unwrap()];
        spec.resources.cpu = 8000;
        let e = spec.check_can_ever_fit(&members).unwrap_err().to_string();
        assert!(
            e.contains("`n1` offers 4000m cpu")
                && e.contains("(1 of 2 nodes fail its constraints)"),
            "{e}"
        );
        assert!(spec.check_can_ever_fit(&[]).is_ok());
    }

    #[test]
    fn user_names_are_checked() {
        let with = |user: &str| {
            JobSpec::from_json_str(&WEB_JSON.replace(
                r#""command""#,
                &format!(r#""user": "{}", "command""#, user.escape_default()),
            ))
        };
        assert_eq!(with("www-data").unwrap().user.as_deref(), Some("www-data"));
        assert_eq!(JobSpec::from_json_str(WEB_JSON).unwrap().user, None);
        for bad in ["", "0day", "a b", "../root", "x:y", &"u".repeat(33)] {
            let e = with(bad).unwrap_err().to_string();
            assert!(
                e.contains("`user`") && e.contains("is not a user name"),
                "{bad:?}: {e}"
            );
        }
    }
}
