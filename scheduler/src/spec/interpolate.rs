//! `${SHOAL_PORT_<NAME>}`, `${SHOAL_ADDR_<NAME>}` and `${SHOAL_IP}` in a task's `args` and `env`
//! values: checked at submission, replaced by the core at admission (so the simulator and the
//! executor see the same argv). `$${` escapes; any other `${…}` is left alone.

use std::net::{IpAddr, SocketAddr};

use super::service::{PortSpec, env_suffix};

/// What a task's references resolve to: its node's service IP and its bound ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskVars {
    /// The node's service IP.
    pub ip: IpAddr,
    /// Port name (as declared) → host port.
    pub ports: Vec<(String, u16)>,
}

impl TaskVars {
    /// The value of one `SHOAL_…` name, if it is known.
    #[must_use]
    pub fn get(&self, name: &str) -> Option<String> {
        if name == "SHOAL_IP" {
            return Some(self.ip.to_string());
        }
        let (addr, suffix) = match (
            name.strip_prefix("SHOAL_PORT_"),
            name.strip_prefix("SHOAL_ADDR_"),
        ) {
            (Some(s), _) => (false, s),
            (_, Some(s)) => (true, s),
            _ => return None,
        };
        let (_, port) = self.ports.iter().find(|(n, _)| env_suffix(n) == suffix)?;
        Some(if addr {
            SocketAddr::new(self.ip, *port).to_string()
        } else {
            port.to_string()
        })
    }

    /// The environment the task gets: `SHOAL_IP`, and per port `SHOAL_PORT_<NAME>` and
    /// `SHOAL_ADDR_<NAME>` (ip:port).
    #[must_use]
    pub fn env(&self) -> Vec<(String, String)> {
        let mut out = vec![("SHOAL_IP".to_string(), self.ip.to_string())];
        for (name, port) in &self.ports {
            let suffix = env_suffix(name);
            out.push((format!("SHOAL_PORT_{suffix}"), port.to_string()));
            out.push((
                format!("SHOAL_ADDR_{suffix}"),
                SocketAddr::new(self.ip, *port).to_string(),
            ));
        }
        out
    }
}

/// One piece of a string: literal text, or a `${NAME}` reference.
enum Piece<'a> {
    Text(&'a str),
    Ref(&'a str),
}

/// Splits `s` into text and `${SHOAL_…}` references; `$${` becomes the text `${`.
fn pieces(s: &str) -> Vec<Piece<'_>> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(at) = rest.find('$') {
        let after = &rest[at..];
        if let Some(escaped) = after.strip_prefix("$${") {
            out.push(Piece::Text(&rest[..at]));
            out.push(Piece::Text("${"));
            rest = escaped;
        } else if let Some(body) = after.strip_prefix("${SHOAL_")
            && let Some(end) = body.find('}')
        {
            out.push(Piece::Text(&rest[..at]));
            out.push(Piece::Ref(&after[2..2 + "SHOAL_".len() + end]));
            rest = &body[end + 1..];
        } else {
            out.push(Piece::Text(&rest[..=at]));
            rest = &after[1..];
        }
    }
    out.push(Piece::Text(rest));
    out
}

/// `s` with every `${SHOAL_…}` it knows replaced and `$${` unescaped. A string without `$` is
/// returned as it is.
#[must_use]
pub fn interpolate(s: &str, vars: &TaskVars) -> String {
    if !s.contains('$') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    for piece in pieces(s) {
        match piece {
            Piece::Text(t) => out.push_str(t),
            Piece::Ref(name) => match vars.get(name) {
                Some(v) => out.push_str(&v),
                None => {
                    out.push_str("${");
                    out.push_str(name);
                    out.push('}');
                }
            },
        }
    }
    out
}

/// Why a reference in `s` cannot resolve for a job with `ports`, e.g.
/// `${SHOAL_PORT_HTTPS}: the job has no port "https"`.
pub(crate) fn check_refs(s: &str, ports: &[PortSpec]) -> Result<(), String> {
    if !s.contains("${SHOAL_") {
        return Ok(());
    }
    for piece in pieces(s) {
        let Piece::Ref(name) = piece else { continue };
        if name == "SHOAL_IP" {
            continue;
        }
        let suffix = name
            .strip_prefix("SHOAL_PORT_")
            .or_else(|| name.strip_prefix("SHOAL_ADDR_"));
        match suffix {
            Some(sfx) if ports.iter().any(|p| p.env_suffix() == sfx) => {}
            Some(sfx) => {
                let kind = &name[..name.len() - sfx.len()];
                if let Some(p) = ports
                    .iter()
                    .find(|p| p.env_suffix() == env_suffix(&sfx.to_ascii_lowercase()))
                {
                    return Err(format!(
                        "${{{name}}}: port \"{}\" is written ${{{kind}{}}} (upper case, - as _)",
                        p.name,
                        p.env_suffix()
                    ));
                }
                return Err(format!(
                    "${{{name}}}: the job has no port \"{}\"",
                    sfx.to_ascii_lowercase().replace('_', "-")
                ));
            }
            None => {
                return Err(format!(
                    "${{{name}}}: unknown; a task knows ${{SHOAL_IP}}, ${{SHOAL_PORT_<NAME>}} \
                     and ${{SHOAL_ADDR_<NAME>}} (write $${{ for a literal ${{)"
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> TaskVars {
        TaskVars {
            ip: "10.0.0.7".parse().unwrap(),
            ports: vec![("http".into(), 23456), ("admin-ui".into(), 8080)],
        }
    }

    #[test]
    fn replaces_known_references() {
        let v = vars();
        assert_eq!(interpolate("${SHOAL_PORT_HTTP}", &v), "23456");
        assert_eq!(
            interpolate("--bind=${SHOAL_IP}:${SHOAL_PORT_ADMIN_UI}", &v),
            "--bind=10.0.0.7:8080"
        );
        assert_eq!(interpolate("${SHOAL_ADDR_HTTP}/x", &v), "10.0.0.7:23456/x");
        let v6 = TaskVars {
            ip: "::1".parse().unwrap(),
            ..vars()
        };
        assert_eq!(interpolate("${SHOAL_ADDR_HTTP}", &v6), "[::1]:23456");
    }

    #[test]
    fn escapes_and_leaves_others_alone() {
        let v = vars();
        assert_eq!(interpolate("$${SHOAL_PORT_HTTP}", &v), "${SHOAL_PORT_HTTP}");
        assert_eq!(interpolate("${HOME} $x $ ${", &v), "${HOME} $x $ ${");
        assert_eq!(interpolate("${SHOAL_PORT_HTTP", &v), "${SHOAL_PORT_HTTP");
        assert_eq!(interpolate("${SHOAL_NOPE}", &v), "${SHOAL_NOPE}");
        assert_eq!(interpolate("a$$b", &v), "a$$b");
        assert_eq!(interpolate("plain", &v), "plain");
        assert_eq!(interpolate("é${SHOAL_IP}é", &v), "é10.0.0.7é");
    }

    #[test]
    fn env_names_every_port() {
        let env = vars().env();
        assert!(env.contains(&("SHOAL_IP".into(), "10.0.0.7".into())));
        assert!(env.contains(&("SHOAL_PORT_ADMIN_UI".into(), "8080".into())));
        assert!(env.contains(&("SHOAL_ADDR_HTTP".into(), "10.0.0.7:23456".into())));
        assert_eq!(env.len(), 5);
    }
}
