//! Job specifications: the one flat shape accepted as a TOML file and as the JSON body of
//! `POST /v1/jobs`, its validation, and the "can this ever fit" check against the current
//! members.
//!
//! ```toml
//! id = "web"
//! type = "service"
//! count = 6
//! command = "sleep"
//! args = ["600"]
//! resources = { cpu = 100, memory = 32 }
//! constraints = ["rack != r3", { attribute = "zone", op = "=", value = "eu-1" }]
//! ```
//!
//! Parsing rejects unknown fields. Validation errors name the field and, for TOML, the line.
//! The same type travels inside replicated ops (postcard); its serde impls are format-agnostic
//! except [`Constraint`], whose compact string form is accepted only from human-readable
//! formats.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use shoal_gossip::{MemberInfo, MemberStatus, Resources};

/// Service (kept at `count` forever) or batch (each slot runs until it exits 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobType {
    /// Long-running; restarted per the restart policy.
    Service,
    /// Run to completion; retried per `retries`.
    Batch,
}

impl JobType {
    /// Stable lowercase name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            JobType::Service => "service",
            JobType::Batch => "batch",
        }
    }
}

/// How the coordinator scores feasible nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PlacementStrategy {
    /// Fill the fullest node that fits (fewer, fuller nodes).
    #[default]
    Binpack,
    /// Prefer nodes with the fewest tasks of this job, then the emptiest.
    Spread,
}

/// Resources one task requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceRequest {
    /// CPU in millicores.
    pub cpu: u64,
    /// Memory in MiB.
    pub memory: u64,
    /// Disk in MiB (optional, default 0).
    #[serde(default)]
    pub disk: u64,
}

impl ResourceRequest {
    /// As the shared resource vector.
    #[must_use]
    pub fn to_resources(&self) -> Resources {
        Resources {
            cpu_millicores: self.cpu,
            memory_mib: self.memory,
            disk_mib: self.disk,
        }
    }
}

/// Restart policy of a service (and retry delay of a batch job).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RestartPolicy {
    /// Consecutive failed restarts after which a service slot gives up; 0 = never give up.
    pub attempts: u32,
    /// Delay before the first restart.
    pub delay_ms: u64,
    /// Multiplier applied to the delay after each consecutive failure (1.0 ..= 10.0).
    pub backoff: f64,
    /// Cap on the delay.
    pub max_delay_ms: u64,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self {
            attempts: 0,
            delay_ms: 1000,
            backoff: 2.0,
            max_delay_ms: 60_000,
        }
    }
}

impl RestartPolicy {
    /// Delay before the restart that follows `consecutive` failures (1 = the first failure).
    #[must_use]
    pub fn delay_after(&self, consecutive: u32) -> u64 {
        let exp = consecutive.saturating_sub(1).min(64);
        let factor = self.backoff.max(1.0).powi(i32::try_from(exp).unwrap_or(64));
        let delay = (self.delay_ms as f64) * factor;
        if delay.is_finite() && delay < self.max_delay_ms as f64 {
            delay as u64
        } else {
            self.max_delay_ms
        }
    }
}

/// Which copy of a slot the cluster keeps when a node that was declared down comes back still
/// running it after a replacement was placed (`docs/faults.md`, "The incumbent wins").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reconcile {
    /// Keep the copy that never stopped; the replacement is stopped.
    #[default]
    KeepOriginal,
    /// Keep the replacement; the returning node stops its copy.
    KeepReplacement,
}

/// What happens to a job's tasks on a node cut off from the majority of the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DisconnectPolicy {
    /// A node that has been without a majority this long stops the job's tasks itself, which
    /// bounds how long a slot runs twice; `0` = never. Default: 10 s for services; batch jobs
    /// keep running unless they set it.
    pub stop_after_ms: Option<u64>,
    /// Which copy to keep when the cut-off node comes back still running a replaced slot.
    pub reconcile: Reconcile,
}

/// Default [`DisconnectPolicy::stop_after_ms`] of a service.
pub const DEFAULT_SERVICE_STOP_AFTER_MS: u64 = 10_000;
/// Longest [`DisconnectPolicy::stop_after_ms`] accepted (one day).
pub const MAX_STOP_AFTER_MS: u64 = 86_400_000;

/// Comparison of a constraint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConstraintOp {
    /// Attribute equals the value.
    #[serde(rename = "==", alias = "=")]
    Eq,
    /// Attribute is absent or differs from the value.
    #[serde(rename = "!=")]
    Ne,
}

/// A placement constraint. In TOML/JSON either a table
/// `{ attribute = "rack", op = "=", value = "r1" }`, a compact string `"rack == r1"` /
/// `"rack != r1"`, or `"distinct_hosts"` / `{ distinct_hosts = true }`. The attribute `node`
/// matches the node name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Constraint {
    /// Compare a node attribute with a value.
    Attribute {
        /// Attribute name, e.g. `rack`.
        attribute: String,
        /// Comparison.
        op: ConstraintOp,
        /// Value to compare with.
        value: String,
    },
    /// No two tasks of the job on the same node.
    DistinctHosts,
}

impl Constraint {
    /// Whether a node with this name and these attributes satisfies the constraint
    /// (`DistinctHosts` is checked by the placer, not here, and always passes).
    #[must_use]
    pub fn matches(&self, node: &str, attributes: &BTreeMap<String, String>) -> bool {
        match self {
            Constraint::Attribute {
                attribute,
                op,
                value,
            } => {
                let actual = if attribute == "node" {
                    Some(node)
                } else {
                    attributes.get(attribute).map(String::as_str)
                };
                match op {
                    ConstraintOp::Eq => actual == Some(value.as_str()),
                    ConstraintOp::Ne => actual != Some(value.as_str()),
                }
            }
            Constraint::DistinctHosts => true,
        }
    }

    /// Parse the compact form: `attr == value`, `attr = value`, `attr != value`,
    /// `distinct_hosts`.
    pub fn parse_compact(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s == "distinct_hosts" {
            return Ok(Constraint::DistinctHosts);
        }
        let (attr, op, value) = if let Some((a, v)) = s.split_once("!=") {
            (a, ConstraintOp::Ne, v)
        } else if let Some((a, v)) = s.split_once("==") {
            (a, ConstraintOp::Eq, v)
        } else if let Some((a, v)) = s.split_once('=') {
            (a, ConstraintOp::Eq, v)
        } else {
            return Err(format!(
                "constraint `{s}` is not `attr == value`, `attr != value` or `distinct_hosts`"
            ));
        };
        let (attribute, value) = (attr.trim(), value.trim());
        if attribute.is_empty() || value.is_empty() {
            return Err(format!("constraint `{s}` needs an attribute and a value"));
        }
        Ok(Constraint::Attribute {
            attribute: attribute.into(),
            op,
            value: value.into(),
        })
    }
}

impl fmt::Display for Constraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Constraint::Attribute {
                attribute,
                op: ConstraintOp::Eq,
                value,
            } => {
                write!(f, "{attribute}={value}")
            }
            Constraint::Attribute {
                attribute,
                op: ConstraintOp::Ne,
                value,
            } => {
                write!(f, "{attribute}!={value}")
            }
            Constraint::DistinctHosts => f.write_str("distinct_hosts"),
        }
    }
}

/// Positional form used by binary formats (postcard).
#[derive(Serialize, Deserialize)]
enum ConstraintWire {
    Attribute {
        attribute: String,
        op: ConstraintOp,
        value: String,
    },
    DistinctHosts,
}

impl Serialize for Constraint {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            return match self {
                Constraint::Attribute {
                    attribute,
                    op,
                    value,
                } => {
                    let op = if *op == ConstraintOp::Eq { "==" } else { "!=" };
                    s.collect_str(&format_args!("{attribute} {op} {value}"))
                }
                Constraint::DistinctHosts => s.serialize_str("distinct_hosts"),
            };
        }
        match self.clone() {
            Constraint::Attribute {
                attribute,
                op,
                value,
            } => ConstraintWire::Attribute {
                attribute,
                op,
                value,
            },
            Constraint::DistinctHosts => ConstraintWire::DistinctHosts,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Constraint {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            return d.deserialize_any(ConstraintVisitor);
        }
        Ok(match ConstraintWire::deserialize(d)? {
            ConstraintWire::Attribute {
                attribute,
                op,
                value,
            } => Constraint::Attribute {
                attribute,
                op,
                value,
            },
            ConstraintWire::DistinctHosts => Constraint::DistinctHosts,
        })
    }
}

struct ConstraintVisitor;

impl<'de> Visitor<'de> for ConstraintVisitor {
    type Value = Constraint;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "a constraint: \"attr == value\", \"attr != value\", \"distinct_hosts\", \
             { attribute, op, value } or { distinct_hosts = true }",
        )
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Constraint, E> {
        Constraint::parse_compact(v).map_err(E::custom)
    }

    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Constraint, M::Error> {
        let (mut attribute, mut op, mut value, mut distinct) = (None, None, None, None);
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "attribute" => attribute = Some(map.next_value::<String>()?),
                "op" => op = Some(map.next_value::<ConstraintOp>()?),
                "value" => value = Some(map.next_value::<String>()?),
                "distinct_hosts" => distinct = Some(map.next_value::<bool>()?),
                other => {
                    return Err(de::Error::unknown_field(
                        other,
                        &["attribute", "op", "value", "distinct_hosts"],
                    ));
                }
            }
        }
        match (attribute, op, value, distinct) {
            (None, None, None, Some(true)) => Ok(Constraint::DistinctHosts),
            (Some(attribute), op, Some(value), None) => Ok(Constraint::Attribute {
                attribute,
                op: op.unwrap_or(ConstraintOp::Eq),
                value,
            }),
            _ => Err(de::Error::custom(
                "a constraint table needs `attribute` and `value` (and optionally `op`), \
                 or only `distinct_hosts = true`",
            )),
        }
    }
}

fn default_count() -> u32 {
    1
}
fn default_retries() -> u32 {
    3
}
fn default_priority() -> u32 {
    50
}

/// A job as submitted. See the module doc for the format.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// Unique id, `[a-z0-9][a-z0-9_-]{0,62}`.
    pub id: String,
    /// `service` or `batch`.
    #[serde(rename = "type")]
    pub job_type: JobType,
    /// Number of slots (tasks), default 1.
    #[serde(default = "default_count")]
    pub count: u32,
    /// Program to run.
    pub command: String,
    /// Arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// Environment variables.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory (default: the task's directory under the agent's data dir).
    #[serde(default)]
    pub workdir: Option<String>,
    /// Resources per task.
    pub resources: ResourceRequest,
    /// Placement constraints.
    #[serde(default)]
    pub constraints: Vec<Constraint>,
    /// No two tasks of this job on one node (same as a `distinct_hosts` constraint).
    #[serde(default)]
    pub distinct_hosts: bool,
    /// `binpack` (default) or `spread`.
    #[serde(default)]
    pub placement: PlacementStrategy,
    /// Restart policy (services) and retry delay (batch).
    #[serde(default)]
    pub restart: RestartPolicy,
    /// Batch: how many failed or lost attempts per slot are retried (default 3).
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// 0..=100, default 50. Higher-priority work is placed first.
    #[serde(default = "default_priority")]
    pub priority: u32,
    /// Behaviour on a node cut off from the majority (`[disconnect]`).
    #[serde(default)]
    pub disconnect: DisconnectPolicy,
    /// The user the tasks run as; none: the node's default task user. A node runs a job that
    /// names a user only if its agent allows that user (`--allow-task-user`).
    #[serde(default)]
    pub user: Option<String>,
}

/// Limits applied by [`JobSpec::validate_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpecLimits {
    /// Largest `count`.
    pub max_count: u32,
    /// Most `args`.
    pub max_args: usize,
    /// Most `env` entries.
    pub max_env: usize,
    /// Most constraints.
    pub max_constraints: usize,
    /// Longest string (command, arg, env key or value, workdir, constraint part), in bytes.
    pub max_string_bytes: usize,
}

impl SpecLimits {
    /// The generous bounds every replica applies to specs arriving in replicated ops (a
    /// node's own, possibly larger, `spec_limits` must stay within these, or its peers ignore
    /// its jobs).
    pub const WIRE: SpecLimits = SpecLimits {
        max_count: 1_000_000,
        max_args: 65_536,
        max_env: 65_536,
        max_constraints: 1024,
        max_string_bytes: 1 << 20,
    };
}

impl Default for SpecLimits {
    fn default() -> Self {
        Self {
            max_count: 100_000,
            max_args: 1024,
            max_env: 1024,
            max_constraints: 64,
            max_string_bytes: 4096,
        }
    }
}

/// Why a job spec was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpecError {
    /// Not valid TOML/JSON or not the right shape; the message carries line and column.
    Parse(String),
    /// A field has an invalid value.
    Invalid {
        /// Dotted path of the field, e.g. `resources.cpu`.
        field: String,
        /// What is wrong.
        message: String,
        /// 1-based line in the TOML source, when known.
        line: Option<usize>,
    },
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpecError::Parse(m) => write!(f, "malformed job spec: {}", m.trim_end()),
            SpecError::Invalid {
                field,
                message,
                line: Some(line),
            } => {
                write!(f, "invalid job spec: line {line}: `{field}`: {message}")
            }
            SpecError::Invalid {
                field,
                message,
                line: None,
            } => {
                write!(f, "invalid job spec: `{field}`: {message}")
            }
        }
    }
}

impl std::error::Error for SpecError {}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> SpecError {
    SpecError::Invalid {
        field: field.into(),
        message: message.into(),
        line: None,
    }
}

/// Why a job can never be placed on the current cluster.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "job `{job}` requests {} but no node can ever host it: {detail}",
    fmt_resources(.request)
)]
pub struct NeverFitsError {
    /// Job id.
    pub job: String,
    /// Per-task request.
    pub request: Resources,
    /// Which node comes closest and what it offers.
    pub detail: String,
}

/// `2000m cpu, 512 MiB memory, 0 MiB disk`.
pub(crate) fn fmt_resources(r: &Resources) -> String {
    format!(
        "{}m cpu, {} MiB memory, {} MiB disk",
        r.cpu_millicores, r.memory_mib, r.disk_mib
    )
}

impl JobSpec {
    /// Parse and validate a TOML job file. Errors carry the line.
    pub fn from_toml_str(s: &str) -> Result<Self, SpecError> {
        let spec: JobSpec = toml::from_str(s).map_err(|e| SpecError::Parse(e.to_string()))?;
        spec.validate().map_err(|e| with_toml_line(e, s))?;
        Ok(spec)
    }

    /// Parse and validate a JSON job body (same shape as the TOML file).
    pub fn from_json_str(s: &str) -> Result<Self, SpecError> {
        let spec: JobSpec = serde_json::from_str(s).map_err(|e| SpecError::Parse(e.to_string()))?;
        spec.validate()?;
        Ok(spec)
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
        validate_restart(&self.restart)
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

    /// How long a node without a majority keeps this job's tasks running (`None`: forever).
    #[must_use]
    pub fn stop_after_disconnect_ms(&self) -> Option<u64> {
        match (self.disconnect.stop_after_ms, self.job_type) {
            (Some(0), _) | (None, JobType::Batch) => None,
            (Some(ms), _) => Some(ms),
            (None, JobType::Service) => Some(DEFAULT_SERVICE_STOP_AFTER_MS),
        }
    }

    /// Whether no two tasks may share a node.
    #[must_use]
    pub fn wants_distinct_hosts(&self) -> bool {
        self.distinct_hosts || self.constraints.contains(&Constraint::DistinctHosts)
    }

    /// The first attribute constraint a node fails, if any.
    #[must_use]
    pub fn failed_constraint(
        &self,
        node: &str,
        attributes: &BTreeMap<String, String>,
    ) -> Option<&Constraint> {
        self.constraints
            .iter()
            .find(|c| !c.matches(node, attributes))
    }

    /// Refuse a job that no current member could host even when empty: its request exceeds
    /// every (constraint-satisfying) member's capacity. Members without a resource ad, and
    /// members that are down or left, are ignored; with no member known, everything passes.
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
        if seen == 0 {
            return Ok(());
        }
        let detail = match largest {
            Some((name, cap)) => format!(
                "the largest eligible node `{name}` offers {}{}",
                fmt_resources(&cap),
                if failing_constraints > 0 {
                    format!(" ({failing_constraints} of {seen} nodes fail its constraints)")
                } else {
                    String::new()
                }
            ),
            None => format!("all {seen} nodes fail its constraints"),
        };
        Err(NeverFitsError {
            job: self.id.clone(),
            request,
            detail,
        })
    }
}

/// Longest user name accepted in `user` (the useradd limit).
pub const MAX_USER_BYTES: usize = 32;

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

    const WEB_JSON: &str = r#"{"id": "web", "type": "service", "count": 6, "command": "sleep",
        "args": ["600"], "resources": {"cpu": 100, "memory": 32}}"#;

    #[test]
    fn parses_the_issue_example() {
        let s = JobSpec::from_json_str(WEB_JSON).unwrap();
        assert_eq!(
            (s.id.as_str(), s.job_type, s.count),
            ("web", JobType::Service, 6)
        );
        assert_eq!(s.placement, PlacementStrategy::Binpack);
        assert_eq!((s.priority, s.retries), (50, 3));
        assert_eq!(s.resources.to_resources().cpu_millicores, 100);
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
        spec.resources.cpu = 100;
        spec.constraints
            .push(Constraint::parse_compact("rack == r9").unwrap());
        let e = spec.check_can_ever_fit(&members).unwrap_err().to_string();
        assert!(e.contains("all 2 nodes fail"), "{e}");
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
