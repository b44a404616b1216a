//! What the scheduling world measures: process starts and waits, completions, the utilization
//! and pending-work series, double-runs, acknowledged jobs and who holds them; and Shoal's
//! [`Quality`] from them.

use std::collections::{BTreeMap, BTreeSet};

use shoal_gossip::Millis;
use shoal_scheduler::{Name, TaskKey};

use super::{Host, Workbench};
use crate::shared::{Dist, Quality, round3};
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

impl Workbench {
    /// Takes one utilization / pending / double-run sample over the `up` nodes.
    pub(super) fn sample_load(&mut self, now: Millis, up: &[usize]) {
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
        let tally = &mut self.tally;
        tally.double_peak = tally.double_peak.max(doubles);
        tally.double_samples += doubles;
        let submitted: u64 = tally
            .submitted_at
            .keys()
            .filter_map(|j| self.by_name.get(j))
            .map(|&k| u64::from(self.jobs[k].tasks))
            .sum();
        let done = tally.completed.len() as u64;
        let pending = submitted.saturating_sub(done + running.len() as u64);
        let total = up.len() as u64 * self.capacity.cpu_millicores;
        let util = if total == 0 {
            0.0
        } else {
            round3(used as f64 / total as f64)
        };
        tally.series.push((now.0, pending, util));
    }

    /// Submissions accepted on the `up` nodes that became durable are acknowledged now.
    pub(super) fn acknowledge_durable(&mut self, now: Millis, up: &[usize]) {
        for &i in up {
            let node = &mut self.nodes[i];
            let Some(core) = node.core.as_ref() else {
                continue;
            };
            let receipts = std::mem::take(&mut node.receipts);
            for r in receipts {
                if core.is_durable(&r) {
                    self.tally
                        .acknowledged
                        .entry(r.job.clone())
                        .or_insert(now.0);
                } else {
                    node.receipts.push(r);
                }
            }
        }
    }

    /// An acknowledged job that no running node holds although a node that held it at the
    /// previous sample still runs the same incarnation.
    pub(super) fn lost_acknowledged_job(
        &mut self,
        host: &dyn Host,
        up: &[usize],
    ) -> Option<String> {
        let mut lost = None;
        let up: Vec<(usize, u64)> = up.iter().map(|&i| (i, host.process(i).epoch)).collect();
        for (job, now_held) in self.acknowledged_holders(&up) {
            let before = self.tally.holders.get(&job).cloned().unwrap_or_default();
            let survivor = before.iter().find(|(i, e)| {
                let process = host.process(*i);
                process.epoch == *e && process.state.is_up()
            });
            if now_held.is_empty()
                && let Some((i, _)) = survivor
            {
                lost.get_or_insert(format!(
                    "acknowledged job {job} is in no running node's tables, although n{i}, which \
                     held it, still runs"
                ));
            }
            self.tally.holders.insert(job, now_held);
        }
        lost
    }

    /// Every acknowledged job with the `up` nodes `(index, epoch)` whose tables hold it, in
    /// `up` order. Each node's job ids and the acknowledged jobs are both sorted, so one merge
    /// per node replaces a table lookup per (job, node) pair (48 million per run at 200 nodes).
    #[must_use]
    fn acknowledged_holders(&self, up: &[(usize, u64)]) -> Vec<(String, Vec<(usize, u64)>)> {
        let mut held: Vec<(String, Vec<(usize, u64)>)> = self
            .tally
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
}
