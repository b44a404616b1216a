//! Driving the production scheduler cores (`shoal_scheduler::Scheduler`), one per node, beside
//! the membership cores, plus a simulated executor per node.
//!
//! Scheduling runs only in scenarios with a `[workload]`. Per node: the scheduler is fed the
//! membership core's own `members()` view (at most every [`FEED_MS`], as the agent would
//! batch it), its messages travel as reliable FIFO streams over the simulated network (dropped
//! while a partition cuts the pair; lost datagrams become retransmission delay), and its
//! executor commands start and kill simulated processes. A batch task exits with code 0 after
//! the run time the workload drew for it; a service runs until killed. Placement counts what
//! the replicated tables hold on each node; the resource ad carries capacity, not allocation.
//! A crash keeps the scheduler's snapshot and its job log as its disk (the log is written at
//! once: the simulated disk never lags); the restart restores both and reports that no
//! process survived.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use shoal_gossip::{Millis, Resources};
use shoal_scheduler::{
    ExecCommand, JobSpec, Message, Name, Receipt, Scheduler, SchedulerConfig, TaskEvent, TaskKey,
};

use crate::shared::{Dist, Quality, round3};
use crate::workload::JobArrival;

/// Members and ad changes are handed over at most this often per node.
pub const FEED_MS: u64 = 500;

/// One node's scheduler, executor and disk.
#[derive(Debug, Default)]
pub struct NodeSched {
    /// The production scheduler core, while the process exists (boxed, like the membership
    /// core: the engine moves it out and back once per event).
    pub core: Option<Box<Scheduler>>,
    /// Simulated processes: task → reserved resources.
    pub running: BTreeMap<TaskKey, Resources>,
    /// The snapshot kept across a crash (the agent's data dir).
    pub disk: Option<Vec<u8>>,
    /// The job log kept across a crash (`Scheduler::poll_job_records`), by job.
    pub log: BTreeMap<String, Vec<u8>>,
    /// Submissions accepted here and not yet durable.
    pub receipts: Vec<Receipt>,
    pub(crate) next_wake: Option<Millis>,
    pub(crate) feed_armed: bool,
    pub(crate) members_dirty: bool,
}

/// Simulation-wide scheduling state and measurements.
#[derive(Debug)]
pub struct Workbench {
    /// The arrivals.
    pub jobs: Vec<JobArrival>,
    by_name: BTreeMap<String, usize>,
    /// Per node.
    pub nodes: Vec<NodeSched>,
    /// Scheduler configuration every node runs with.
    pub config: SchedulerConfig,
    /// Job → submission time.
    pub submitted_at: BTreeMap<String, u64>,
    /// Submissions a node refused, with the first reason.
    pub submit_refused: (u64, Option<String>),
    first_start: BTreeMap<(Name, u32), u64>,
    completed: BTreeSet<(Name, u32)>,
    starts: u64,
    retried: u64,
    /// Job → time its submission became durable (acknowledged).
    pub acknowledged: BTreeMap<String, u64>,
    /// Job → nodes (index, epoch) that held it at the last sample.
    pub holders: BTreeMap<String, Vec<(usize, u64)>>,
    series: Vec<(u64, u64, f64)>,
    double_peak: u64,
    double_samples: u64,
    /// Sample period, in milliseconds.
    pub sample_ms: u64,
    /// Scheduler messages that failed to decode (never expected).
    pub undecodable: u64,
    /// Scheduler messages dropped by a partition or a dead end.
    pub messages_dropped: u64,
    /// Scheduler messages delivered.
    pub messages_delivered: u64,
    /// FIFO: last delivery time per (from, to). Looked up once per message (200 times per
    /// broadcast at 200 nodes), never iterated.
    pub(crate) link_clock: rustc_hash::FxHashMap<(usize, usize), Millis>,
}

impl Workbench {
    /// A workbench for `n` nodes running `jobs`.
    #[must_use]
    pub fn new(n: usize, jobs: Vec<JobArrival>) -> Self {
        let by_name = jobs
            .iter()
            .enumerate()
            .map(|(k, j)| (j.name.clone(), k))
            .collect();
        Self {
            jobs,
            by_name,
            nodes: (0..n).map(|_| NodeSched::default()).collect(),
            config: SchedulerConfig::default(),
            submitted_at: BTreeMap::new(),
            submit_refused: (0, None),
            first_start: BTreeMap::new(),
            completed: BTreeSet::new(),
            starts: 0,
            retried: 0,
            acknowledged: BTreeMap::new(),
            holders: BTreeMap::new(),
            series: Vec::new(),
            double_peak: 0,
            double_samples: 0,
            sample_ms: 1_000,
            undecodable: 0,
            messages_dropped: 0,
            messages_delivered: 0,
            link_clock: rustc_hash::FxHashMap::default(),
        }
    }

    /// The spec submitted for arrival `k`.
    #[must_use]
    pub fn spec(&self, k: usize) -> Option<JobSpec> {
        let j = self.jobs.get(k)?;
        let value = serde_json::json!({
            "id": j.name,
            "type": if j.service { "service" } else { "batch" },
            "count": j.tasks,
            "command": "simulated",
            "resources": { "cpu": j.cpu_millicores, "memory": j.memory_mib },
        });
        serde_json::from_value(value).ok()
    }

    /// How long the process of `task` runs before exiting by itself (`None`: a service).
    #[must_use]
    pub fn run_time(&self, task: &TaskKey) -> Option<u64> {
        let k = *self.by_name.get(task.job.as_str())?;
        self.jobs[k].durations_ms.get(task.slot as usize).copied()
    }

    /// Records a process start for the quality figures.
    pub fn started(&mut self, now: Millis, task: &TaskKey) {
        self.starts += 1;
        let key = (task.job.clone(), task.slot);
        if self.first_start.contains_key(&key) {
            self.retried += 1;
            return;
        }
        let submitted = self
            .submitted_at
            .get(task.job.as_str())
            .copied()
            .unwrap_or(now.0);
        self.first_start
            .insert(key, now.0.saturating_sub(submitted));
    }

    /// Records a batch task that ran to completion.
    pub fn completed(&mut self, task: &TaskKey) {
        self.completed.insert((task.job.clone(), task.slot));
    }

    /// Takes one utilization / pending sample over the `up` nodes of capacity `cap`.
    pub fn sample(&mut self, now: Millis, up: &[usize], cap: Resources) {
        let mut used = 0;
        let mut running: BTreeSet<(&str, u32)> = BTreeSet::new();
        let mut doubles = 0;
        for &i in up {
            for (task, r) in &self.nodes[i].running {
                used += r.cpu_millicores;
                if !running.insert((task.job.as_str(), task.slot)) {
                    doubles += 1;
                }
            }
        }
        self.double_peak = self.double_peak.max(doubles);
        self.double_samples += doubles;
        let submitted: u64 = self
            .submitted_at
            .keys()
            .filter_map(|j| self.by_name.get(j))
            .map(|&k| u64::from(self.jobs[k].tasks))
            .sum();
        let done = self.completed.len() as u64;
        let pending = submitted.saturating_sub(done + running.len() as u64);
        let total = up.len() as u64 * cap.cpu_millicores;
        let util = if total == 0 {
            0.0
        } else {
            round3(used as f64 / total as f64)
        };
        self.series.push((now.0, pending, util));
    }

    /// Every acknowledged job with the `up` nodes `(index, epoch)` whose tables hold it, in
    /// `up` order. Each node's job ids and the acknowledged jobs are both sorted, so one merge
    /// per node replaces a table lookup per (job, node) pair (48 million per run at 200 nodes).
    #[must_use]
    pub fn acknowledged_holders(&self, up: &[(usize, u64)]) -> Vec<(String, Vec<(usize, u64)>)> {
        let mut held: Vec<(String, Vec<(usize, u64)>)> = self
            .acknowledged
            .keys()
            .map(|job| (job.clone(), Vec::new()))
            .collect();
        for &(i, epoch) in up {
            let Some(core) = self.nodes[i].core.as_ref() else {
                continue;
            };
            let ids = core.tables().job_ids();
            let mut k = 0;
            for (job, holders) in &mut held {
                while ids.get(k).is_some_and(|id| *id < job.as_str()) {
                    k += 1;
                }
                if ids.get(k) == Some(&job.as_str()) {
                    holders.push((i, epoch));
                }
            }
        }
        held
    }

    /// Shoal's placement quality over the run.
    #[must_use]
    pub fn quality(&self) -> Quality {
        let waits: Vec<u64> = self.first_start.values().copied().collect();
        let utils: f64 = self.series.iter().map(|s| s.2).sum();
        Quality {
            tasks: self.jobs.iter().map(|j| u64::from(j.tasks)).sum(),
            placements: self.starts,
            placements_retried: self.retried,
            tasks_completed: self.completed.len() as u64,
            pending_at_end: self.series.last().map_or(0, |s| s.1),
            mean_utilization: round3(utils / self.series.len().max(1) as f64),
            wait_ms: Dist::of(&waits),
            double_run_peak: self.double_peak,
            double_run_slot_s: round3(self.double_samples as f64 * self.sample_ms as f64 / 1000.0),
            series: self.series.clone(),
        }
    }
}

/// What the simulated executor does with one command: `(task, event, exit_after_ms)`.
#[derive(Debug)]
pub enum Executed {
    /// A process started; it exits by itself after the given time (batch) or never.
    Started(TaskKey, Option<u64>),
    /// A process was killed (or was not running).
    Killed(TaskKey),
}

/// Runs one executor command against node `i`'s process table.
pub fn execute(bench: &mut Workbench, i: usize, cmd: ExecCommand) -> Executed {
    match cmd {
        ExecCommand::Start {
            task, resources, ..
        } => {
            let after = bench.run_time(&task);
            bench.nodes[i].running.insert(task.clone(), resources);
            Executed::Started(task, after)
        }
        ExecCommand::Kill { task, .. } => {
            bench.nodes[i].running.remove(&task);
            Executed::Killed(task)
        }
    }
}

/// The event the executor reports for what it did.
#[must_use]
pub fn report_of(executed: &Executed) -> (TaskKey, TaskEvent) {
    match executed {
        Executed::Started(task, _) => (task.clone(), TaskEvent::Started { pid: 1 }),
        Executed::Killed(task) => (task.clone(), TaskEvent::Killed),
    }
}

/// Sum of what node's processes reserve.
#[must_use]
pub fn reserved(node: &NodeSched) -> Resources {
    node.running
        .values()
        .fold(Resources::default(), |a, r| a.saturating_add(r))
}

/// Decodes a scheduler message as the receiving shell would. The ops keep their bytes as
/// slices of `bytes`, which every recipient of one broadcast shares.
pub fn decode(bytes: &Bytes, config: &SchedulerConfig) -> Option<Message> {
    Message::decode_shared(bytes, &config.wire).ok()
}
