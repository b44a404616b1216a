//! The service parts of a job spec (`docs/services.md`): named ports, health checks, the
//! discovery name and tags, and the `[update]` block, with their validation and limits.
//!
//! ```toml
//! service = "web"            # discovery name; default: the job id ("_" becomes "-")
//! tags = ["blue", "v2"]
//! [[ports]]
//! name = "http"
//! static = 8080              # optional; absent = picked by the node from its range
//! [[checks]]
//! type = "http"
//! port = "http"
//! path = "/healthz"
//! [update]
//! max_parallel = 2
//! ```
//!
//! Ports are acted on (the target node picks them at admission), and so are checks (the node
//! running a task runs them: `crate::health`, `checking.rs`). The update block is only parsed
//! and validated so far: updates still replace every task at once (build step 7 of
//! `docs/services.md`). The rules are in `service_rules.rs`.

use serde::{Deserialize, Serialize};

/// Most `[[ports]]` in one job.
pub const MAX_PORTS: usize = 16;
/// Most `[[checks]]` in one job.
pub const MAX_CHECKS: usize = 8;
/// Most `tags`.
pub const MAX_TAGS: usize = 16;
/// Longest port name (`[a-z][a-z0-9-]{0,14}`).
pub const MAX_PORT_NAME: usize = 15;
/// Shortest check interval.
pub const MIN_CHECK_INTERVAL_MS: u64 = 100;
/// Longest interval, grace, or update duration accepted (one day).
pub const MAX_SERVICE_MS: u64 = 86_400_000;

/// A named port of a task (`[[ports]]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortSpec {
    /// `[a-z][a-z0-9-]{0,14}`, unique in the job; the task sees `SHOAL_PORT_<NAME>`.
    pub name: String,
    /// A fixed host port (1..=65535); absent: the target node picks one from its range.
    #[serde(default, rename = "static")]
    pub static_port: Option<u32>,
}

impl PortSpec {
    /// The environment suffix of this port: upper-cased, `-` → `_` (`http-alt` → `HTTP_ALT`).
    #[must_use]
    pub fn env_suffix(&self) -> String {
        env_suffix(&self.name)
    }
}

/// `http-alt` → `HTTP_ALT`.
pub(crate) fn env_suffix(name: &str) -> String {
    name.to_ascii_uppercase().replace('-', "_")
}

/// What a health check probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckKind {
    /// `GET http://IP:PORT/path`, passing on the expected status.
    Http,
    /// A TCP connect to the port.
    Tcp,
    /// A command; exit 0 passes.
    Command,
}

impl CheckKind {
    /// Stable lowercase name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            CheckKind::Http => "http",
            CheckKind::Tcp => "tcp",
            CheckKind::Command => "command",
        }
    }
}

fn default_interval() -> u64 {
    10_000
}
fn default_timeout() -> u64 {
    2_000
}
fn default_grace() -> u64 {
    10_000
}
fn default_failures() -> u32 {
    3
}

/// A health check (`[[checks]]`), run by the node that runs the task (`crate::health`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckSpec {
    /// Name; default `<type>-<index>`.
    #[serde(default)]
    pub name: Option<String>,
    /// `http`, `tcp` or `command`.
    #[serde(rename = "type")]
    pub kind: CheckKind,
    /// A `[[ports]]` name (http, tcp).
    #[serde(default)]
    pub port: Option<String>,
    /// HTTP path, starting with `/` (http; default `/`).
    #[serde(default)]
    pub path: Option<String>,
    /// Expected HTTP status (http; default: any of 200..=399).
    #[serde(default)]
    pub status: Option<u32>,
    /// Program to run (command).
    #[serde(default)]
    pub command: Option<String>,
    /// Its arguments (command).
    #[serde(default)]
    pub args: Vec<String>,
    /// Time between probes, ≥ 100 ms.
    #[serde(default = "default_interval")]
    pub interval_ms: u64,
    /// Time a probe may take, ≤ `interval_ms`.
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    /// Failures are ignored until the first pass or until this much time after the start.
    #[serde(default = "default_grace")]
    pub grace_ms: u64,
    /// Consecutive failures before the task is restarted; 0 = never restart.
    #[serde(default = "default_failures")]
    pub failures: u32,
}

impl CheckSpec {
    /// The check's name, or its default `<type>-<index>`.
    #[must_use]
    pub fn name_or_default(&self, index: usize) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| format!("{}-{index}", self.kind.as_str()))
    }
}

fn default_max_parallel() -> u32 {
    1
}
fn default_min_healthy() -> u64 {
    10_000
}
fn default_healthy_deadline() -> u64 {
    300_000
}

/// How a changed service replaces its tasks (`[update]`). Parsed and validated only: every
/// change still replaces all tasks at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateSpec {
    /// Slots replaced at a time (default 1; 0 = all at once).
    #[serde(default = "default_max_parallel")]
    pub max_parallel: u32,
    /// How long a new task must stay healthy to count as done.
    #[serde(default = "default_min_healthy")]
    pub min_healthy_ms: u64,
    /// A new task not healthy this long after admission fails the update.
    #[serde(default = "default_healthy_deadline")]
    pub healthy_deadline_ms: u64,
    /// The first `canary` slots update, then wait for `shoal job promote`.
    #[serde(default)]
    pub canary: u32,
    /// Go back to the last stable version when the update fails.
    #[serde(default)]
    pub auto_revert: bool,
}
