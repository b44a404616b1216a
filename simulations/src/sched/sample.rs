//! What the scheduling world looks at every sample: load and pending work, submissions that
//! became durable, and whether an acknowledged job was lost (`always_acknowledged_jobs_kept`).

use std::collections::BTreeSet;

use shoal_gossip::Millis;

use super::{Host, Workbench};
use crate::shared::round3;

impl Workbench {
    /// Takes one utilization / pending / double-run sample over the `up` nodes.
    pub(super) fn sample_load(&mut self, now: Millis, up: &[usize]) {
        let mut used = 0;
        let mut running: BTreeSet<(&str, u32)> = BTreeSet::new();
        let mut doubles = 0;
        for &i in up {
            for (task, p) in &self.nodes[i].running {
                used += p.resources.cpu_millicores;
                if !running.insert((task.job.as_str(), task.slot)) {
                    doubles += 1;
                }
            }
        }
        let submitted: u64 = self
            .tally
            .submitted_at
            .keys()
            .filter_map(|j| self.by_name.get(j))
            .map(|&k| u64::from(self.jobs[k].tasks))
            .sum();
        let done = self.tally.tasks_completed();
        let pending = submitted.saturating_sub(done + running.len() as u64);
        let total = up.len() as u64 * self.capacity.cpu_millicores;
        let util = if total == 0 {
            0.0
        } else {
            round3(used as f64 / total as f64)
        };
        self.tally.record_sample(now, pending, util, doubles);
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
        let up: Vec<(usize, u64)> = up.iter().map(|&i| (i, host.process(i).era)).collect();
        for (job, now_held) in self.acknowledged_holders(&up) {
            let before = self.tally.holders.get(&job).cloned().unwrap_or_default();
            let survivor = before.iter().find(|(i, e)| {
                let process = host.process(*i);
                process.era == *e && process.state.is_up()
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

    /// Every acknowledged job with the `up` nodes `(index, era)` whose tables hold it, in
    /// `up` order. Each node's job ids and the acknowledged jobs are both sorted, so one merge
    /// per node replaces a table lookup per (job, node) pair (48 million per run at 200 nodes).
    fn acknowledged_holders(&self, up: &[(usize, u64)]) -> Vec<(String, Vec<(usize, u64)>)> {
        let mut held: Vec<(String, Vec<(usize, u64)>)> = self
            .tally
            .acknowledged
            .keys()
            .map(|job| (job.clone(), Vec::new()))
            .collect();
        for &(i, era) in up {
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
                    holders.push((i, era));
                }
            }
        }
        held
    }
}
