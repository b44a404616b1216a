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
//!
//! This file holds the types and the limits; `spec/constraint.rs` the placement constraints and
//! their two serde forms; `spec/validate.rs` parsing, validation and the "can it ever fit"
//! check; `spec/error.rs` why a spec is refused; `spec/service.rs` ports, checks, the
//! discovery name and tags, and `[update]` (`docs/services.md`), validated in
//! `spec/service_rules.rs`; `spec/interpolate.rs` the
//! `${SHOAL_…}` references in `args` and `env`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use shoal_gossip::Resources;

mod constraint;
mod error;
mod interpolate;
mod service;
mod service_rules;
mod validate;

pub use constraint::{Constraint, ConstraintOp};
pub(crate) use error::fmt_resources;
pub use error::{NeverFitsError, SpecError};
pub use interpolate::{TaskVars, interpolate};
pub use service::{CheckKind, CheckSpec, MAX_CHECKS, MAX_PORTS, MAX_TAGS, PortSpec, UpdateSpec};

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

impl PlacementStrategy {
    /// The strategy of a job whose file or body names none: a service spreads (a node that dies
    /// takes as few of its tasks as it can, as Nomad's job anti-affinity and Kubernetes'
    /// default spreading do), batch work packs (fewer, fuller nodes; a batch on one node also
    /// runs faster: `docs/scheduler.md`, "Placing").
    #[must_use]
    pub fn default_for(job_type: JobType) -> Self {
        match job_type {
            JobType::Service => PlacementStrategy::Spread,
            JobType::Batch => PlacementStrategy::Binpack,
        }
    }
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

/// Longest user name accepted in `user` (the useradd limit).
pub const MAX_USER_BYTES: usize = 32;

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
    /// `binpack` or `spread`. A document that names none gets its type's default
    /// ([`PlacementStrategy::default_for`]: services spread, batch packs) when read by
    /// [`JobSpec::from_toml_str`], [`JobSpec::from_json_str`], [`JobSpec::parse_json`] or
    /// [`JobSpec::from_json_value`]; serde alone, with no type at hand, gives `binpack`.
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
    /// Named ports (`[[ports]]`), picked by the target node at admission.
    #[serde(default)]
    pub ports: Vec<PortSpec>,
    /// Health checks (`[[checks]]`); validated, not run yet.
    #[serde(default)]
    pub checks: Vec<CheckSpec>,
    /// Discovery name (default: the job id with `_` → `-`).
    #[serde(default)]
    pub service: Option<String>,
    /// Discovery tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Rolling update settings (`[update]`); validated, not acted on yet.
    #[serde(default)]
    pub update: Option<UpdateSpec>,
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

impl JobSpec {
    /// How long a node without a majority keeps this job's tasks running (`None`: forever).
    #[must_use]
    pub fn stop_after_disconnect_ms(&self) -> Option<u64> {
        match (self.disconnect.stop_after_ms, self.job_type) {
            (Some(0), _) | (None, JobType::Batch) => None,
            (Some(ms), _) => Some(ms),
            (None, JobType::Service) => Some(DEFAULT_SERVICE_STOP_AFTER_MS),
        }
    }

    /// Whether no two tasks may share a node (asked for, or implied by a static port).
    #[must_use]
    pub fn wants_distinct_hosts(&self) -> bool {
        self.distinct_hosts
            || self.constraints.contains(&Constraint::DistinctHosts)
            || self.ports.iter().any(|p| p.static_port.is_some())
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
}
