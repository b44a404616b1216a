//! The omniscient centralized scheduler: the yardstick for placement quality.
//!
//! It sees the ground truth instantly (which nodes run, every free resource), places every task
//! the moment it arrives or the moment capacity frees up (best fit on CPU, FIFO with skipping),
//! and re-places work of a crashed node at the instant of the crash. It is a yardstick, not a
//! bound: greedy best fit with FIFO skipping is not an optimal schedule, and Shoal's wait p50
//! has come out below it in the scheduling bench (`BENCHMARKS.md`). The gap at the tail (p90
//! wait, utilisation) is the price of having no master.

use std::collections::{BTreeMap, VecDeque};

use crate::scenario::NodeShape;
use crate::shared::{Dist, Quality, round3};
use crate::workload::JobArrival;

#[derive(Debug, Clone, Copy)]
struct Task {
    job: usize,
    slot: u32,
    submitted_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Happening {
    Life { up: bool, node: usize },
    Done { node: usize, run: u64 },
    Arrive { job: usize },
}

struct Baseline<'a> {
    jobs: &'a [JobArrival],
    shape: NodeShape,
    up: Vec<bool>,
    used: Vec<(u64, u64)>,
    running: BTreeMap<u64, (usize, Task)>,
    next_run: u64,
    pending: VecDeque<Task>,
    first_wait: BTreeMap<(usize, u32), u64>,
    agenda: BTreeMap<(u64, u64), Happening>,
    agenda_seq: u64,
    q: Quality,
}

/// Runs the baseline over `jobs` on `n` nodes of `shape` whose up/down changes are `life_log`.
#[must_use]
pub fn run(
    jobs: &[JobArrival],
    n: usize,
    shape: NodeShape,
    life_log: &[(u64, usize, bool)],
    end_ms: u64,
    sample_ms: u64,
) -> Quality {
    let mut b = Baseline {
        jobs,
        shape,
        up: vec![false; n],
        used: vec![(0, 0); n],
        running: BTreeMap::new(),
        next_run: 0,
        pending: VecDeque::new(),
        first_wait: BTreeMap::new(),
        agenda: BTreeMap::new(),
        agenda_seq: 0,
        q: Quality {
            tasks: jobs.iter().map(|j| u64::from(j.tasks)).sum(),
            placements: 0,
            placements_retried: 0,
            tasks_completed: 0,
            pending_at_end: 0,
            mean_utilization: 0.0,
            wait_ms: Dist::default(),
            double_run_peak: 0,
            double_run_slot_s: 0.0,
            series: Vec::new(),
        },
    };
    for &(t, node, up) in life_log {
        b.at(t, Happening::Life { up, node });
    }
    for (job, j) in jobs.iter().enumerate() {
        b.at(j.at_ms, Happening::Arrive { job });
    }
    b.run(end_ms, sample_ms.max(1));
    b.q
}

impl Baseline<'_> {
    fn at(&mut self, t: u64, h: Happening) {
        self.agenda_seq += 1;
        self.agenda.insert((t, self.agenda_seq), h);
    }

    fn run(&mut self, end_ms: u64, sample_ms: u64) {
        let mut next_sample = 0;
        let mut util_sum = 0.0;
        while let Some((&(t, seq), &h)) = self.agenda.iter().next() {
            if t > end_ms {
                break;
            }
            while next_sample <= t {
                util_sum += self.sample(next_sample);
                next_sample += sample_ms;
            }
            self.agenda.remove(&(t, seq));
            self.happen(t, h);
            self.place_pending(t);
        }
        while next_sample <= end_ms {
            util_sum += self.sample(next_sample);
            next_sample += sample_ms;
        }
        let samples = self.q.series.len().max(1) as f64;
        self.q.mean_utilization = round3(util_sum / samples);
        self.q.pending_at_end = self.pending.len() as u64;
        let waits: Vec<u64> = self.first_wait.values().copied().collect();
        self.q.wait_ms = Dist::of(&waits);
    }

    fn sample(&mut self, t: u64) -> f64 {
        let cap: u64 = self.up.iter().filter(|u| **u).count() as u64 * self.shape.cpu_millicores;
        let used: u64 = (0..self.up.len())
            .filter(|&i| self.up[i])
            .map(|i| self.used[i].0)
            .sum();
        let util = if cap == 0 {
            0.0
        } else {
            round3(used as f64 / cap as f64)
        };
        self.q.series.push((t, self.pending.len() as u64, util));
        util
    }

    fn happen(&mut self, t: u64, h: Happening) {
        match h {
            Happening::Arrive { job } => {
                for slot in 0..self.jobs[job].tasks {
                    self.pending.push_back(Task {
                        job,
                        slot,
                        submitted_ms: t,
                    });
                }
            }
            Happening::Done { node, run } => {
                if let Some((_, task)) = self.running.remove(&run) {
                    self.release(node, task);
                    self.q.tasks_completed += 1;
                }
            }
            Happening::Life { up, node } => {
                self.up[node] = up;
                if !up {
                    self.lose(node);
                }
            }
        }
    }

    fn release(&mut self, node: usize, task: Task) {
        let j = &self.jobs[task.job];
        let u = &mut self.used[node];
        u.0 = u.0.saturating_sub(j.cpu_millicores);
        u.1 = u.1.saturating_sub(j.memory_mib);
    }

    fn lose(&mut self, node: usize) {
        let lost: Vec<u64> = self
            .running
            .iter()
            .filter(|(_, (n, _))| *n == node)
            .map(|(run, _)| *run)
            .collect();
        for run in lost {
            if let Some((_, task)) = self.running.remove(&run) {
                self.q.placements_retried += 1;
                self.pending.push_front(task);
            }
        }
        self.used[node] = (0, 0);
    }

    fn place_pending(&mut self, t: u64) {
        let mut waiting = VecDeque::with_capacity(self.pending.len());
        let mut max_free = self.max_free();
        while let Some(task) = self.pending.pop_front() {
            let j = &self.jobs[task.job];
            if j.cpu_millicores > max_free.0 || j.memory_mib > max_free.1 {
                waiting.push_back(task);
                continue;
            }
            match self.best_fit(j.cpu_millicores, j.memory_mib) {
                Some(node) => {
                    self.start(t, node, task);
                    max_free = self.max_free();
                }
                None => waiting.push_back(task),
            }
        }
        self.pending = waiting;
    }

    fn max_free(&self) -> (u64, u64) {
        (0..self.up.len())
            .filter(|&i| self.up[i])
            .map(|i| {
                (
                    self.shape.cpu_millicores.saturating_sub(self.used[i].0),
                    self.shape.memory_mib.saturating_sub(self.used[i].1),
                )
            })
            .fold((0, 0), |a, b| (a.0.max(b.0), a.1.max(b.1)))
    }

    /// The running node with the least CPU left after placing, lowest index on ties.
    fn best_fit(&self, cpu: u64, mem: u64) -> Option<usize> {
        (0..self.up.len())
            .filter(|&i| self.up[i])
            .filter(|&i| {
                self.used[i].0 + cpu <= self.shape.cpu_millicores
                    && self.used[i].1 + mem <= self.shape.memory_mib
            })
            .min_by_key(|&i| (self.shape.cpu_millicores - self.used[i].0 - cpu, i))
    }

    fn start(&mut self, t: u64, node: usize, task: Task) {
        let j = &self.jobs[task.job];
        self.used[node].0 += j.cpu_millicores;
        self.used[node].1 += j.memory_mib;
        self.q.placements += 1;
        self.first_wait
            .entry((task.job, task.slot))
            .or_insert(t - task.submitted_ms.min(t));
        self.next_run += 1;
        let run = self.next_run;
        self.running.insert(run, (node, task));
        if let Some(&d) = j.durations_ms.get(task.slot as usize) {
            self.at(t + d, Happening::Done { node, run });
        }
    }
}
