//! Job arrivals drawn from a scenario's `[workload]` and the seed.
//!
//! The same arrivals (and the same per-task run times) feed the production scheduler cores and
//! the omniscient baseline, so their placement quality can be compared side by side.

use rand::{RngExt, SeedableRng, rngs::StdRng};
use serde::Serialize;

use crate::scenario::Workload;
use crate::shared::derive_seed;

/// One job submission.
#[derive(Debug, Clone, Serialize)]
pub struct JobArrival {
    /// Submission time.
    pub at_ms: u64,
    /// Job name (`job-<k>`).
    pub name: String,
    /// A service runs until the end of the simulation and is kept at its count.
    pub service: bool,
    /// CPU per task.
    pub cpu_millicores: u64,
    /// Memory per task.
    pub memory_mib: u64,
    /// Run time of each task of a batch job (empty for services).
    pub durations_ms: Vec<u64>,
    /// Task count.
    pub tasks: u32,
}

impl JobArrival {
    /// The spec the simulator submits for this arrival, as JSON, before a scenario adds its
    /// disconnect policy, placement, ports, checks and update block (`sched/drive.rs`); the
    /// placement bench submits it as it is.
    #[must_use]
    pub fn base_spec(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.name,
            "type": if self.service { "service" } else { "batch" },
            "count": self.tasks,
            "command": "simulated",
            "resources": { "cpu": self.cpu_millicores, "memory": self.memory_mib },
        })
    }
}

/// Draws the arrivals, sorted by time then name.
#[must_use]
pub fn generate(w: &Workload, seed: u64) -> Vec<JobArrival> {
    let mut rng = StdRng::seed_from_u64(derive_seed(seed, 5, 0, 0));
    let (start, until) = ((w.start_s * 1000.0) as u64, (w.until_s * 1000.0) as u64);
    let mut jobs: Vec<JobArrival> = (0..w.jobs)
        .map(|k| {
            let at_ms = if until > start {
                rng.random_range(start..until)
            } else {
                start
            };
            let tasks = rng.random_range(w.tasks[0]..=w.tasks[1]);
            let service = w.service_fraction > 0.0 && rng.random_bool(w.service_fraction);
            let cpu_millicores = rng.random_range(w.cpu_millicores[0]..=w.cpu_millicores[1]);
            let memory_mib = rng.random_range(w.memory_mib[0]..=w.memory_mib[1]);
            let (lo, hi) = (w.task_duration_s[0] * 1000.0, w.task_duration_s[1] * 1000.0);
            let durations_ms = if service {
                Vec::new()
            } else {
                (0..tasks)
                    .map(|_| {
                        let d: f64 = if hi > lo {
                            rng.random_range(lo..hi)
                        } else {
                            lo
                        };
                        d.round().max(1.0) as u64
                    })
                    .collect()
            };
            JobArrival {
                at_ms,
                name: format!("job-{k}"),
                service,
                cpu_millicores,
                memory_mib,
                durations_ms,
                tasks,
            }
        })
        .collect();
    jobs.sort_by(|a, b| (a.at_ms, &a.name).cmp(&(b.at_ms, &b.name)));
    jobs
}
