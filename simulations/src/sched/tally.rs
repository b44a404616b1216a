//! What the scheduling world measures: process starts and waits, completions, the utilization
//! and pending-work series, double-runs, acknowledged jobs and who holds them; and Shoal's
//! [`Quality`] from them; and what the fault checkers saw ([`Watch`], filled in by `watch.rs`).
//! Plain bookkeeping: the world decides what to record (`sample.rs`).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use shoal_gossip::Millis;
use shoal_scheduler::{AttemptId, Name};

use crate::shared::{Dist, FaultFigures, Quality, round3};
use crate::workload::JobArrival;

/// The scheduling measurements of one run.
#[derive(Debug)]
pub struct Tally {
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
    /// Job → nodes (index, era) that held it at the last sample.
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
}

impl Tally {
    /// Nothing measured yet; samples are `sample_ms` apart.
    #[must_use]
    pub fn new(sample_ms: u64) -> Self {
        Self {
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
            sample_ms,
            undecodable: 0,
            messages_dropped: 0,
            messages_delivered: 0,
        }
    }

    /// Records a process start.
    pub fn started(&mut self, now: Millis, task: &AttemptId) {
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
    pub fn completed(&mut self, task: &AttemptId) {
        self.completed.insert((task.job.clone(), task.slot));
    }

    /// Batch tasks that ran to completion so far.
    #[must_use]
    pub fn tasks_completed(&self) -> u64 {
        self.completed.len() as u64
    }

    /// Records one sample: `pending` tasks, CPU utilization `util`, `doubles` extra copies of
    /// running slots.
    pub fn record_sample(&mut self, now: Millis, pending: u64, util: f64, doubles: u64) {
        self.double_peak = self.double_peak.max(doubles);
        self.double_samples += doubles;
        self.series.push((now.0, pending, util));
    }

    /// Placement quality over the run of `jobs`.
    #[must_use]
    pub fn quality(&self, jobs: &[JobArrival]) -> Quality {
        let waits: Vec<u64> = self.first_start.values().copied().collect();
        let utils: f64 = self.series.iter().map(|s| s.2).sum();
        Quality {
            tasks: jobs.iter().map(|j| u64::from(j.tasks)).sum(),
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

/// A slot may run twice for its job's `disconnect.stop_after_ms` plus this: the time a cut-off
/// node takes to see that it lost its majority (two probe periods and a probe's round trip,
/// 2.5 s by default) and to hear of the heal, rounded up (`docs/faults.md`, "Duplicates have
/// a bound"). 15 s in all for a service with the default 10 s.
pub const DUPLICATE_SLACK_MS: u64 = 5_000;

/// What the fault checkers saw.
#[derive(Debug, Default)]
pub struct Watch {
    /// Processes of each slot running anywhere (orphans and paused nodes' included).
    pub(super) copies: BTreeMap<(Name, u32), u32>,
    /// Slots running more than once now, since when.
    pub(super) doubled: BTreeMap<(Name, u32), Millis>,
    /// The figures for the report.
    pub figures: FaultFigures,
    /// Why the services were not all at count at the last sample that looked.
    pub off_count: Option<String>,
    /// Per deployment (job, incarnation, deployment stamp): what `always_max_parallel`
    /// follows.
    pub(super) voluntary: BTreeMap<(Name, u64, shoal_scheduler::Stamp), Deployment>,
    /// Pairs of deployments of one job seen with slots in flight at once.
    pub(super) overlaps: BTreeSet<(Name, u64, shoal_scheduler::Stamp, shoal_scheduler::Stamp)>,
    /// Per writer: the highest op counter it wrote more than [`OPS_IN_FLIGHT_MS`] before its
    /// latest op, and its ops since, `(counter, when)`: which ops every replica must hold
    /// at the end (`eventually_tables_identical`).
    pub(super) writes: BTreeMap<shoal_scheduler::ActorId, (u64, VecDeque<(u64, Millis)>)>,
}

/// Room freed this recently does not count as room a service could have been placed on
/// (`eventually_services_at_count` at the end, `eventually_services_back_at_count` at each
/// sample): a release is held from placers for up to 1.5 × `release_hold` (0.75 s by
/// default) and shown to the oldest waiting slots first (`docs/scheduler.md`, "Oldest first"),
/// and a placement then takes a proposal's round trip.
pub const ROOM_SETTLE_MS: u64 = 2_000;

/// An op written this close to the end of a run may still be on its way to some replicas:
/// `eventually_tables_identical` does not require it everywhere.
pub const OPS_IN_FLIGHT_MS: u64 = 2_000;

impl Watch {
    /// Writer `actor` wrote its op `counter` at `now`.
    pub(super) fn op_written(
        &mut self,
        actor: &shoal_scheduler::ActorId,
        counter: u64,
        now: Millis,
    ) {
        let (settled, recent) = self.writes.entry(actor.clone()).or_default();
        while let Some(&(c, at)) = recent.front() {
            if now.since(at) <= OPS_IN_FLIGHT_MS {
                break;
            }
            *settled = (*settled).max(c);
            recent.pop_front();
        }
        recent.push_back((counter, now));
    }

    /// The writers' ops that were written at least [`OPS_IN_FLIGHT_MS`] before `end`, as the
    /// highest counter per writer.
    pub fn settled_writes(&self, end: Millis) -> BTreeMap<&shoal_scheduler::ActorId, u64> {
        self.writes
            .iter()
            .map(|(actor, (settled, recent))| {
                let newest_settled = recent
                    .iter()
                    .filter(|(_, at)| end.since(*at) >= OPS_IN_FLIGHT_MS)
                    .map(|&(c, _)| c)
                    .max()
                    .unwrap_or(0);
                (actor, (*settled).max(newest_settled))
            })
            .collect()
    }
}

/// One deployment as `always_max_parallel` follows it.
#[derive(Debug)]
pub(super) struct Deployment {
    /// The scenario's `max_parallel` for it.
    pub(super) max_parallel: u32,
    /// Slots with a voluntary replacement placed by a node on the majority side (ground truth).
    pub(super) majority: BTreeSet<u32>,
    /// Slots with one placed by a node on the minority side of a cut (a slot can be in both).
    pub(super) minority: BTreeSet<u32>,
    /// The union of every core's `done` seen so far.
    pub(super) done: shoal_scheduler::table::SlotSet,
}

impl Deployment {
    pub(super) fn new(max_parallel: u32) -> Deployment {
        Deployment {
            max_parallel,
            majority: BTreeSet::new(),
            minority: BTreeSet::new(),
            done: shoal_scheduler::table::SlotSet::default(),
        }
    }

    /// Whether slot `s` was replaced voluntarily for this deployment, on either side.
    pub(super) fn replaced(&self, s: u32) -> bool {
        self.majority.contains(&s) || self.minority.contains(&s)
    }

    /// The slots replaced voluntarily, on either side, in order.
    pub(super) fn slots(&self) -> impl Iterator<Item = u32> + '_ {
        self.majority.union(&self.minority).copied()
    }
}

/// Where the services stand against their counts.
#[derive(Debug, Default)]
pub struct ServiceCount {
    /// Services submitted.
    pub services: usize,
    /// Services below their count only because no running node has room.
    pub short_of_room: usize,
    /// The first service above its count, or below it while a running node has room.
    pub off: Option<String>,
}

impl Watch {
    /// Nothing watched yet.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }
}
