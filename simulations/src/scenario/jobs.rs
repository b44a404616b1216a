//! The `[workload]` part of a scenario: job arrivals, rolling updates of the services and
//! their ports and health checks (`docs/services.md`, §1 to §4), and their validation.

use serde::{Deserialize, Serialize};

/// Job arrivals (needs the scheduler core; the omniscient baseline always runs on it).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    /// Jobs submitted in total.
    pub jobs: usize,
    /// Arrivals are spread uniformly at random over `[start_s, until_s)`.
    pub start_s: f64,
    /// End of the arrival window.
    pub until_s: f64,
    /// Tasks per job, inclusive range.
    pub tasks: [u32; 2],
    /// CPU per task in millicores, inclusive range.
    pub cpu_millicores: [u64; 2],
    /// Memory per task in MiB, inclusive range.
    pub memory_mib: [u64; 2],
    /// Run time of a batch task in seconds, inclusive range.
    pub task_duration_s: [f64; 2],
    /// Fraction of jobs that are services (run until the end, kept at their count).
    #[serde(default)]
    pub service_fraction: f64,
    /// Every job's `disconnect.stop_after_ms` (absent: the job's default, 10 s for services,
    /// never for batch jobs; `0` = never).
    #[serde(default)]
    pub stop_after_ms: Option<u64>,
    /// Every job's `disconnect.reconcile` (absent: `keep_original`).
    #[serde(default)]
    pub reconcile: Option<shoal_scheduler::Reconcile>,
    /// Rolling updates of the services (`docs/services.md`, §4); absent: never updated.
    #[serde(default)]
    pub updates: Option<Updates>,
    /// Ports and a health check for every service (`docs/services.md`, §1 and §2); absent:
    /// services have neither, and no discovery is checked.
    #[serde(default)]
    pub services: Option<Services>,
    /// Every service's `placement` (absent: a service's default, `spread`). `spread` puts a
    /// service's tasks on as many nodes as it can, so that a drained node holds some.
    #[serde(default)]
    pub service_placement: Option<shoal_scheduler::PlacementStrategy>,
}

/// Every service is submitted with an `[update]` block (these fields, `max_parallel` at most
/// its count) and re-submitted as a new version `count` times, `every_s` apart; a
/// `bad_fraction` of the new versions (drawn from the seed) fail, so their rollouts fail: they
/// exit with code 1 a second after they start, or, when the services have checks
/// (`[workload.services]`), run on and fail every check (an HTTP 500). With
/// `supersede_after_s`, every update is followed that long after by one more version, which
/// supersedes it while it rolls out (`docs/services.md`, §10, open question 1).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct Updates {
    pub count: u32,
    pub every_s: f64,
    pub max_parallel: u32,
    pub min_healthy_ms: u64,
    pub healthy_deadline_ms: u64,
    #[serde(default)]
    pub auto_revert: bool,
    #[serde(default)]
    pub bad_fraction: f64,
    #[serde(default)]
    pub supersede_after_s: Option<f64>,
}

impl Updates {
    /// The versions submitted, after the first: `(delay after the arrival in ms, version)`.
    #[must_use]
    pub fn schedule(&self) -> Vec<(u64, u32)> {
        let every_ms = (self.every_s * 1000.0) as u64;
        let mut out = Vec::new();
        for n in 1..=self.count {
            let at = every_ms * u64::from(n);
            match self.supersede_after_s {
                None => out.push((at, n + 1)),
                Some(s) => {
                    out.push((at, 2 * n));
                    out.push((at + (s * 1000.0) as u64, 2 * n + 1));
                }
            }
        }
        out
    }
}

/// `[workload.services]`: every service declares `ports` dynamic ports (`http`, then `p1`,
/// `p2`, …) and one `http` check on the first, with these timings. The simulated executor
/// answers the checks: a task passes unless it runs a bad version or hangs (the `hang` fault).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Services {
    /// Dynamic ports per service, 1..=16.
    #[serde(default = "one")]
    pub ports: u32,
    /// The check's `interval_ms`.
    pub interval_ms: u64,
    /// The check's `timeout_ms` (a hung task's probe fails after it).
    pub timeout_ms: u64,
    /// The check's `grace_ms`.
    #[serde(default)]
    pub grace_ms: u64,
    /// The check's `failures` (0: an unhealthy task is never restarted).
    #[serde(default)]
    pub failures: u32,
}

fn one() -> u32 {
    1
}

/// Checks the workload's ranges.
pub(super) fn validate(w: &Workload) -> Result<(), String> {
    let ordered = w.tasks[0] >= 1
        && w.tasks[0] <= w.tasks[1]
        && w.cpu_millicores[0] <= w.cpu_millicores[1]
        && w.memory_mib[0] <= w.memory_mib[1]
        && w.task_duration_s[0] > 0.0
        && w.task_duration_s[0] <= w.task_duration_s[1]
        && w.start_s >= 0.0
        && w.start_s <= w.until_s;
    if !ordered {
        return Err(
            "workload ranges must be [low, high] with low <= high, tasks >= 1, durations > 0"
                .into(),
        );
    }
    if w.stop_after_ms
        .is_some_and(|ms| ms > shoal_scheduler::spec::MAX_STOP_AFTER_MS)
    {
        return Err(format!(
            "workload.stop_after_ms must be at most {} (0 = never stop)",
            shoal_scheduler::spec::MAX_STOP_AFTER_MS
        ));
    }
    if !(0.0..=1.0).contains(&w.service_fraction) {
        return Err("workload.service_fraction must be in [0, 1]".into());
    }
    if let Some(s) = &w.services {
        let ok = (1..=16).contains(&s.ports)
            && (100..=86_400_000).contains(&s.interval_ms)
            && (1..=s.interval_ms).contains(&s.timeout_ms)
            && s.failures <= 100;
        if !ok {
            return Err(
                "workload.services: ports 1..=16, interval_ms >= 100, timeout_ms \
                        1..=interval_ms, failures <= 100"
                    .into(),
            );
        }
    }
    if let Some(u) = &w.updates
        && u.supersede_after_s
            .is_some_and(|s| !(s >= 0.0 && s < u.every_s))
    {
        return Err("workload.updates.supersede_after_s must be in [0, every_s)".into());
    }
    Ok(())
}
