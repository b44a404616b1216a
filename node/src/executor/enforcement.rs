//! What limits the host lets the executor enforce, detected once at start and reported as is.

use serde::{Deserialize, Serialize};

use super::cgroup::{self, Hierarchy};
use super::users::Users;
use super::{CgroupMode, ExecutorConfig};

/// How CPU limits are enforced on this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CpuEnforcement {
    /// cgroup v2 `cpu.max`: a rate limit (CFS bandwidth, 100 ms period).
    CgroupV2CpuMax,
    /// cgroup v1 `cpu.cfs_quota_us`: the same rate limit on the legacy hierarchy.
    CgroupV1CfsQuota,
    /// Nothing limits CPU; requests are bookkeeping only.
    NotEnforced,
}

/// How memory limits are enforced on this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemoryEnforcement {
    /// cgroup v2 `memory.max`: the task is OOM-killed above it (swap is not limited).
    CgroupV2MemoryMax,
    /// cgroup v1 `memory.limit_in_bytes`: the same on the legacy hierarchy.
    CgroupV1LimitInBytes,
    /// Nothing limits memory; requests are bookkeeping only.
    NotEnforced,
}

/// How the number of processes of a task is limited on this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PidsEnforcement {
    /// cgroup v2 `pids.max`: `fork` fails with `EAGAIN` at the limit.
    CgroupV2PidsMax,
    /// cgroup v1 `pids.max` in the `pids` hierarchy: the same.
    CgroupV1PidsMax,
    /// Nothing limits the process count (no `pids` controller, or no cgroups).
    NotEnforced,
}

/// How stopping a task reaches every process it started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KillEnforcement {
    /// cgroup v2 `cgroup.kill`: every process of the task cgroup at once, `setsid` or not.
    CgroupKill,
    /// cgroup v1 freezer: the task cgroup is frozen, each member SIGKILLed, then thawed.
    CgroupFreezer,
    /// Each process listed in the task cgroup, again until none is left.
    CgroupMembers,
    /// The task's process group only: a child that called `setsid` or `setpgid` escapes.
    ProcessGroup,
}

/// What this executor enforces, and why, for operators and `GET /v1/node`-style reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enforcement {
    /// CPU rate limits.
    pub cpu: CpuEnforcement,
    /// Memory limits.
    pub memory: MemoryEnforcement,
    /// Process-count limits ([`ExecutorConfig::task_max_pids`]).
    pub pids: PidsEnforcement,
    /// How a stop reaches every process of a task.
    pub kill: KillEnforcement,
    /// Who tasks run as when the job names no user.
    pub task_user: String,
    /// The users a job's `user` may name here.
    pub allowed_task_users: Vec<String>,
    /// Task launches that run at once ([`ExecutorConfig::max_parallel_launches`],
    /// `--max-launches`).
    pub launches_in_flight: usize,
    /// How detection went, e.g. which cgroup paths are used or why none is.
    pub note: String,
}

pub(super) fn detect_enforcement(
    config: &ExecutorConfig,
    users: &Users,
) -> (Option<Hierarchy>, Enforcement) {
    let detected = match config.cgroups {
        CgroupMode::Off => cgroup::Detected {
            hierarchy: None,
            kill: cgroup::KillMethod::EachMember,
            note: "cgroups disabled by configuration".to_owned(),
        },
        CgroupMode::Auto => cgroup::detect(&config.instance),
    };
    let (cpu, memory, pids) = match &detected.hierarchy {
        Some(Hierarchy::V2 { pids, .. }) => (
            CpuEnforcement::CgroupV2CpuMax,
            MemoryEnforcement::CgroupV2MemoryMax,
            if *pids {
                PidsEnforcement::CgroupV2PidsMax
            } else {
                PidsEnforcement::NotEnforced
            },
        ),
        Some(Hierarchy::V1 { pids_parent, .. }) => (
            CpuEnforcement::CgroupV1CfsQuota,
            MemoryEnforcement::CgroupV1LimitInBytes,
            if pids_parent.is_some() {
                PidsEnforcement::CgroupV1PidsMax
            } else {
                PidsEnforcement::NotEnforced
            },
        ),
        None => (
            CpuEnforcement::NotEnforced,
            MemoryEnforcement::NotEnforced,
            PidsEnforcement::NotEnforced,
        ),
    };
    let kill = match (&detected.hierarchy, detected.kill) {
        (None, _) => KillEnforcement::ProcessGroup,
        (Some(_), cgroup::KillMethod::CgroupKill) => KillEnforcement::CgroupKill,
        (Some(_), cgroup::KillMethod::Freezer) => KillEnforcement::CgroupFreezer,
        (Some(_), cgroup::KillMethod::EachMember) => KillEnforcement::CgroupMembers,
    };
    let enforcement = Enforcement {
        cpu,
        memory,
        pids,
        kill,
        task_user: users.default_name(),
        allowed_task_users: users.accepted().into_iter().collect(),
        launches_in_flight: config.max_parallel_launches.get(),
        note: detected.note,
    };
    (detected.hierarchy, enforcement)
}
