//! The discrete-event loop: a virtual clock and one queue of events ordered by `(time, seq)`,
//! each event dispatched to the room that handles it.
//!
//! The rooms: `membership.rs` drives the production membership cores through their sans-IO
//! API (every input to a core is followed by `Simulation::drain`, which routes its datagrams
//! through the [`Network`], hands its events to the [`Observer`] and re-arms its wake-up from
//! `poll_timeout`); `faults.rs` executes the scenario's fault script; the scheduler cores are
//! still driven at the bottom of this file. `node.rs` holds a
//! simulated machine and its ground truth, `agenda.rs` the event queue, `record.rs` the counters
//! and checker violations. A wake-up is one queue entry per node: a node's `epoch` grows on
//! every crash, restart and pause, so entries of an older epoch are skipped when they pop.
//!
//! Randomness: the network, the fault script and each core draw from separate `StdRng`s, all
//! derived from the run's seed with [`derive_seed`], so adding a fault does not change the
//! latencies drawn for unrelated datagrams.

mod agenda;
mod faults;
mod membership;
mod node;
mod record;

use std::net::SocketAddr;

use bytes::Bytes;
use rand::{RngExt, SeedableRng, rngs::StdRng};
use shoal_gossip::{Config, MemberStatus, Millis, Resources};
use shoal_scheduler::{Scheduler, TaskEvent, TaskKey};

use crate::net::Network;
use crate::observe::Observer;
use crate::scenario::{Action, Plan, Scenario};
use crate::sched::{self, Executed, FEED_MS, Workbench};
use crate::shared::{derive_seed, index_of_name, node_name};
use agenda::Agenda;

use node::addr_of;

pub use node::{Life, SimNode};
pub use record::{Counters, Violation};

/// Deliberate harness bugs, for tests that prove the checkers bite. Never set by a scenario.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Sabotage {
    /// The honest simulator.
    #[default]
    None,
    /// Silently drop every datagram addressed to this node, while the ground truth still
    /// says it is running (a black hole the checkers must notice).
    Blackhole(usize),
    /// Crash faults mark nodes crashed in the ground truth but leave their cores running
    /// (a "crashed" node that is never repaired out of anyone's view).
    ZombieCrashes,
    /// Every node advertises twice its real capacity, so admission lets in more than fits.
    OverstateCapacity,
}

/// Everything that can happen at one virtual instant.
#[derive(Debug)]
enum Event {
    /// Node `i`'s process starts for the first time.
    Start(usize),
    /// A datagram arrives.
    Deliver {
        to: usize,
        from: usize,
        payload: Vec<u8>,
        corrupted: bool,
    },
    /// A membership core's wake-up is due.
    Wake {
        node: usize,
        epoch: u64,
    },
    /// A step of the fault script.
    Act(Action),
    /// Crashed or departed nodes come back.
    Restart(Vec<usize>),
    /// A pause ends.
    Resume {
        node: usize,
        epoch: u64,
    },
    /// A slow-down ends.
    Unslow(usize),
    /// Time to sample the views and the checkers.
    Sample,
    Submit(usize),
    Feed {
        node: usize,
        epoch: u64,
    },
    SchedWake {
        node: usize,
        epoch: u64,
    },
    SchedMsg {
        to: usize,
        from: usize,
        /// Shared by every recipient of one broadcast.
        bytes: Bytes,
    },
    TaskExit {
        node: usize,
        epoch: u64,
        task: TaskKey,
    },
}

/// One run of one scenario with one seed.
#[derive(Debug)]
pub struct Simulation {
    /// The scenario, with `nodes` already overridden.
    pub scenario: Scenario,
    /// Its compiled fault plan.
    pub plan: Plan,
    /// The seed.
    pub seed: u64,
    /// Virtual now.
    pub now: Millis,
    /// The machines.
    pub nodes: Vec<SimNode>,
    /// What the cores were seen doing.
    pub observer: Observer,
    /// Counters.
    pub counters: Counters,
    /// First violation of each `always_*` checker, in order of occurrence.
    pub violations: Vec<Violation>,
    /// Ground-truth life changes `(t_ms, node, up)` for the baseline scheduler.
    pub life_log: Vec<(u64, usize, bool)>,
    /// First sample time after the last fault at which every view agreed with the truth.
    pub converged_at_ms: Option<u64>,
    /// Scheduler cores, executors and measurements, when the scenario has a workload.
    pub bench: Option<Box<Workbench>>,
    config: Config,
    work_rng: StdRng,
    agenda: Agenda<Event>,
    net: Network,
    net_rng: StdRng,
    fault_rng: StdRng,
    seeds: Vec<SocketAddr>,
    disturbed: usize,
    sabotage: Sabotage,
}

impl Simulation {
    /// Prepares a run. `scenario.plan()` must succeed (it did when the scenario was loaded).
    pub fn new(scenario: Scenario, seed: u64, sabotage: Sabotage) -> anyhow::Result<Self> {
        let plan = scenario.plan()?;
        let n = scenario.nodes;
        let mut start_rng = StdRng::seed_from_u64(derive_seed(seed, 1, 0, 0));
        let nodes: Vec<SimNode> = (0..n)
            .map(|i| SimNode::new(node_name(i), addr_of(i), scenario.rack_of(i)))
            .collect();
        let seed_count = scenario.start.seeds.clamp(1, n);
        let seeds = (0..seed_count)
            .map(|k| addr_of(k * n / seed_count))
            .collect();
        let mut sim = Self {
            net: Network::new(scenario.network),
            observer: Observer::new(n),
            plan,
            seed,
            now: Millis(0),
            nodes,
            counters: Counters::default(),
            violations: Vec::new(),
            life_log: Vec::new(),
            converged_at_ms: None,
            config: scenario.membership.config(),
            agenda: Agenda::default(),
            net_rng: StdRng::seed_from_u64(derive_seed(seed, 2, 0, 0)),
            fault_rng: StdRng::seed_from_u64(derive_seed(seed, 3, 0, 0)),
            work_rng: StdRng::seed_from_u64(derive_seed(seed, 7, 0, 0)),
            bench: scenario.workload.as_ref().map(|w| {
                let mut bench = Workbench::new(n, crate::workload::generate(w, seed));
                bench.sample_ms = scenario.checks.sample_ms;
                Box::new(bench)
            }),
            seeds,
            disturbed: 0,
            sabotage,
            scenario,
        };
        let stagger = sim.scenario.start.stagger_ms.max(1);
        for i in 0..n {
            let at = if i == 0 {
                0
            } else {
                start_rng.random_range(0..stagger)
            };
            sim.push(Millis(at), Event::Start(i));
        }
        for (at, action) in sim.plan.actions.clone() {
            sim.push(Millis(at), Event::Act(action));
        }
        let arrivals: Vec<u64> = sim
            .bench
            .as_ref()
            .map(|b| b.jobs.iter().map(|j| j.at_ms).collect())
            .unwrap_or_default();
        for (k, at) in arrivals.into_iter().enumerate() {
            sim.push(Millis(at), Event::Submit(k));
        }
        sim.push(Millis(0), Event::Sample);
        Ok(sim)
    }

    /// The membership configuration every core runs with.
    #[must_use]
    pub fn config(&self) -> &Config {
        &self.config
    }

    fn push(&mut self, at: Millis, event: Event) {
        self.agenda.push(at, event);
    }

    /// Runs to the end of the scenario; `progress` is called with the virtual time at every
    /// sample.
    pub fn run(&mut self, progress: &mut dyn FnMut(u64)) {
        let end = Millis(self.plan.duration_ms);
        while let Some((at, event)) = self.agenda.pop_until(end) {
            self.now = at;
            self.counters.events += 1;
            if matches!(event, Event::Sample) {
                progress(self.now.0);
            }
            self.dispatch(event);
        }
        self.now = end;
    }

    fn dispatch(&mut self, event: Event) {
        match event {
            Event::Start(i) => self.start_core(i),
            Event::Deliver {
                to,
                from,
                payload,
                corrupted,
            } => self.deliver(to, from, payload, corrupted),
            Event::Wake { node, epoch } => self.wake(node, epoch),
            Event::Act(action) => self.act(action),
            Event::Restart(nodes) => nodes.into_iter().for_each(|i| self.restart(i)),
            Event::Resume { node, epoch } => self.resume(node, epoch),
            Event::Unslow(i) => self.unslow(i),
            Event::Sample => self.sample(),
            Event::Submit(k) => self.submit(k),
            Event::Feed { node, epoch } => self.feed(node, epoch),
            Event::SchedWake { node, epoch } => self.sched_wake(node, epoch),
            Event::SchedMsg { to, from, bytes } => self.sched_message(to, from, bytes),
            Event::TaskExit { node, epoch, task } => self.task_exit(node, epoch, task),
        }
    }

    /// Records the first violation of checker `check`.
    fn violate(&mut self, check: &str, event: String) {
        record::violate(&mut self.violations, self.now, check, event);
    }

    // ---- observation -----------------------------------------------------------------

    /// Indices of nodes whose process exists (running or paused), in order.
    #[must_use]
    pub fn up_nodes(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].life.is_up())
            .collect()
    }

    fn sample(&mut self) {
        let up = self.up_nodes();
        self.observer.sample(self.now, &up);
        self.sample_scheduling(&up);
        if self.converged_at_ms.is_none()
            && self.now.0 >= self.plan.last_fault_ms.max(self.scenario.start.stagger_ms)
            && self.view_mismatch().is_none()
        {
            self.converged_at_ms = Some(self.now.0);
        }
        let next = self.now.plus_ms(self.scenario.checks.sample_ms);
        if next.0 <= self.plan.duration_ms {
            self.push(next, Event::Sample);
        }
    }

    /// Whether node `j`'s ad changed too recently to expect everyone to hold it: within two
    /// digest-sync periods (the anti-entropy bound) of now.
    #[must_use]
    pub fn ad_settling(&self, j: usize) -> bool {
        let settle = 2 * self.config.sync_period.as_millis() as u64;
        self.now.0 < self.nodes[j].ad_changed_ms + settle
    }

    /// The first `(observer, subject)` whose event-derived view disagrees with the truth.
    #[must_use]
    pub fn view_mismatch(&self) -> Option<(usize, usize)> {
        let up = self.up_nodes();
        for &i in &up {
            if self.nodes[i].life != Life::Running {
                continue;
            }
            for (j, subject) in self.nodes.iter().enumerate() {
                if i == j {
                    continue;
                }
                let seen = self.observer.seen(i, j);
                let ok = match subject.life {
                    Life::Running | Life::Paused => {
                        let ad = subject.core.as_ref().map(|c| c.own_ad().key());
                        seen.status == Some(MemberStatus::Alive)
                            && seen.generation == subject.generation
                            && (Some(seen.ad) == ad || self.ad_settling(j))
                    }
                    Life::Crashed | Life::Left => !matches!(
                        seen.status,
                        Some(MemberStatus::Alive | MemberStatus::Suspect)
                    ),
                    Life::NotStarted => true,
                };
                if !ok {
                    return Some((i, j));
                }
            }
        }
        None
    }
}

// ---- the scheduler cores (scenarios with a workload) ------------------------------------

impl Simulation {
    fn start_scheduler(&mut self, i: usize, generation: u64) {
        let seed = derive_seed(self.seed, 6, i as u64, generation);
        let name = self.nodes[i].name.clone();
        let now = self.now;
        let Some(bench) = self.bench.as_mut() else {
            return;
        };
        let config = bench.config.clone();
        let node = &mut bench.nodes[i];
        let restored = node
            .disk
            .take()
            .and_then(|disk| Scheduler::restore(name.clone(), config.clone(), seed, &disk).ok());
        let mut core = restored.unwrap_or_else(|| Scheduler::new(name, config, seed));
        core.restore_job_records(node.log.values().map(Vec::as_slice));
        core.handle_recovered_tasks(now, &[]);
        node.core = Some(Box::new(core));
        node.running.clear();
        node.next_wake = None;
        node.feed_armed = false;
        node.members_dirty = true;
        self.arm_feed(i);
    }

    fn stop_scheduler(&mut self, i: usize) {
        let Some(bench) = self.bench.as_mut() else {
            return;
        };
        let node = &mut bench.nodes[i];
        if let Some(core) = node.core.take() {
            node.disk = Some(core.snapshot());
        }
        node.running.clear();
        node.receipts.clear();
        node.next_wake = None;
    }

    fn members_changed(&mut self, i: usize) {
        if let Some(bench) = self.bench.as_mut() {
            bench.nodes[i].members_dirty = true;
            self.arm_feed(i);
        }
    }

    fn arm_feed(&mut self, i: usize) {
        let epoch = self.nodes[i].epoch;
        let Some(bench) = self.bench.as_mut() else {
            return;
        };
        if !bench.nodes[i].feed_armed {
            bench.nodes[i].feed_armed = true;
            self.push(self.now.plus_ms(FEED_MS), Event::Feed { node: i, epoch });
        }
    }

    fn feed(&mut self, i: usize, epoch: u64) {
        let now = self.now;
        let Some(bench) = self.bench.as_mut() else {
            return;
        };
        bench.nodes[i].feed_armed = false;
        if self.nodes[i].life == Life::Paused {
            self.arm_feed(i);
            return;
        }
        if self.nodes[i].epoch != epoch || self.nodes[i].life != Life::Running {
            return;
        }
        let node = &mut bench.nodes[i];
        if node.members_dirty
            && let (Some(sched), Some(core)) = (node.core.as_mut(), self.nodes[i].core.as_ref())
        {
            sched.handle_members(now, &core.members());
            node.members_dirty = false;
        }
        self.drain_sched(i);
    }

    /// Routes everything scheduler `i` produced, runs its executor commands and re-arms its
    /// wake-up.
    fn drain_sched(&mut self, i: usize) {
        let Some(mut bench) = self.bench.take() else {
            return;
        };
        let Some(mut core) = bench.nodes[i].core.take() else {
            self.bench = Some(bench);
            return;
        };
        // Commands first: a simulated process starts at once, so the `Admitted` and `Running`
        // writes of one admission leave in the same `Ops` message per peer instead of two.
        loop {
            if let Some(cmd) = core.poll_command() {
                let executed = sched::execute(&mut bench, i, cmd);
                self.executed(&mut bench, i, &executed);
                let (task, event) = sched::report_of(&executed);
                core.handle_task_event(self.now, task, event);
                continue;
            }
            if let Some(batch) = core.poll_job_records() {
                let log = &mut bench.nodes[i].log;
                for r in batch.records {
                    if r.bytes.is_empty() {
                        log.remove(&r.job);
                    } else {
                        log.insert(r.job, r.bytes);
                    }
                }
                core.handle_persisted(self.now, batch.batch);
                continue;
            }
            let Some(out) = core.poll_message() else {
                break;
            };
            let bytes = Bytes::from(out.message.encode());
            for to in &out.to {
                self.send_sched(&mut bench, i, to, bytes.clone());
            }
        }
        let due = core.poll_timeout();
        bench.nodes[i].core = Some(core);
        if let Some(due) = due {
            let node = &mut bench.nodes[i];
            let at = due.max(self.now).plus_ms(self.nodes[i].slow_ms);
            if node.next_wake.is_none_or(|w| at < w) {
                node.next_wake = Some(at);
                let epoch = self.nodes[i].epoch;
                self.push(at, Event::SchedWake { node: i, epoch });
            }
        }
        self.bench = Some(bench);
    }

    fn executed(&mut self, bench: &mut Workbench, i: usize, executed: &Executed) {
        let Executed::Started(task, exit_after) = executed else {
            return;
        };
        bench.started(self.now, task);
        let reserved = sched::reserved(&bench.nodes[i]);
        let shape = self.scenario.node;
        let capacity = Resources {
            cpu_millicores: shape.cpu_millicores,
            memory_mib: shape.memory_mib,
            disk_mib: shape.disk_mib,
        };
        if !reserved.fits_in(&capacity) {
            let event = format!(
                "n{i} started {}/{} (attempt {}) and now reserves {} m CPU, {} MiB of {} m, {} MiB",
                task.job,
                task.slot,
                task.attempt,
                reserved.cpu_millicores,
                reserved.memory_mib,
                capacity.cpu_millicores,
                capacity.memory_mib
            );
            self.violate("always_no_node_overcommitted", event);
        }
        if let Some(ms) = exit_after {
            let epoch = self.nodes[i].epoch;
            let task = task.clone();
            self.push(
                self.now.plus_ms(*ms),
                Event::TaskExit {
                    node: i,
                    epoch,
                    task,
                },
            );
        }
    }

    fn send_sched(&mut self, bench: &mut Workbench, from: usize, to: &str, bytes: Bytes) {
        let Some(to) = index_of_name(to).filter(|&j| j < self.nodes.len()) else {
            bench.messages_dropped += 1;
            return;
        };
        let Some(delay) = self.net.reliable_delay(&mut self.net_rng, from, to) else {
            bench.messages_dropped += 1;
            return;
        };
        let link = bench.link_clock.entry((from, to)).or_default();
        let at = self.now.plus_ms(delay).max(*link);
        *link = at;
        self.push(at, Event::SchedMsg { to, from, bytes });
    }

    fn sched_message(&mut self, to: usize, from: usize, bytes: Bytes) {
        if self.nodes[to].life == Life::Paused {
            self.push(
                self.now.plus_ms(FEED_MS),
                Event::SchedMsg { to, from, bytes },
            );
            return;
        }
        let now = self.now;
        let from_name = self.nodes[from].name.as_str();
        let Some(bench) = self.bench.as_mut() else {
            return;
        };
        let Some(core) = bench.nodes[to].core.as_mut() else {
            bench.messages_dropped += 1;
            return;
        };
        match sched::decode(&bytes, &bench.config) {
            Some(msg) => {
                bench.messages_delivered += 1;
                core.handle_message(now, from_name, msg);
            }
            None => bench.undecodable += 1,
        }
        self.drain_sched(to);
    }

    fn sched_wake(&mut self, i: usize, epoch: u64) {
        let now = self.now;
        if self.nodes[i].epoch != epoch || self.nodes[i].life == Life::Paused {
            return;
        }
        let Some(bench) = self.bench.as_mut() else {
            return;
        };
        let node = &mut bench.nodes[i];
        if node.next_wake != Some(now) {
            return;
        }
        node.next_wake = None;
        if let Some(core) = node.core.as_mut() {
            core.handle_timeout(now);
        }
        self.drain_sched(i);
    }

    fn sched_wake_now(&mut self, i: usize) {
        let now = self.now;
        let Some(bench) = self.bench.as_mut() else {
            return;
        };
        bench.nodes[i].next_wake = None;
        if let Some(core) = bench.nodes[i].core.as_mut() {
            core.handle_timeout(now);
        }
        self.drain_sched(i);
        self.arm_feed(i);
    }

    fn task_exit(&mut self, i: usize, epoch: u64, task: TaskKey) {
        if self.nodes[i].epoch != epoch && self.nodes[i].life != Life::Paused {
            return;
        }
        if self.nodes[i].life == Life::Paused {
            let epoch = self.nodes[i].epoch;
            self.push(
                self.now.plus_ms(FEED_MS),
                Event::TaskExit {
                    node: i,
                    epoch,
                    task,
                },
            );
            return;
        }
        let now = self.now;
        let Some(bench) = self.bench.as_mut() else {
            return;
        };
        if bench.nodes[i].running.remove(&task).is_none() {
            return;
        }
        bench.completed(&task);
        if let Some(core) = bench.nodes[i].core.as_mut() {
            core.handle_task_event(now, task, TaskEvent::Exited { code: 0 });
        }
        self.drain_sched(i);
    }

    fn submit(&mut self, k: usize) {
        let running: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].life == Life::Running)
            .collect();
        let now = self.now;
        let Some(bench) = self.bench.as_mut() else {
            return;
        };
        let Some(spec) = bench.spec(k) else {
            return;
        };
        if running.is_empty() {
            bench.submit_refused.0 += 1;
            return;
        }
        let i = running[self.work_rng.random_range(0..running.len())];
        let job = spec.id.clone();
        let Some(core) = bench.nodes[i].core.as_mut() else {
            return;
        };
        match core.submit(now, spec) {
            Ok(receipt) => {
                bench.nodes[i].receipts.push(receipt);
                bench.submitted_at.insert(job, now.0);
            }
            Err(e) => {
                bench.submit_refused.0 += 1;
                bench
                    .submit_refused
                    .1
                    .get_or_insert(format!("{job} on n{i}: {e}"));
            }
        }
        self.drain_sched(i);
    }

    fn sample_scheduling(&mut self, up: &[usize]) {
        let now = self.now;
        let shape = self.scenario.node;
        let cap = Resources {
            cpu_millicores: shape.cpu_millicores,
            memory_mib: shape.memory_mib,
            disk_mib: shape.disk_mib,
        };
        let Some(bench) = self.bench.as_mut() else {
            return;
        };
        bench.sample(now, up, cap);
        for &i in up {
            let node = &mut bench.nodes[i];
            let Some(core) = node.core.as_ref() else {
                continue;
            };
            let receipts = std::mem::take(&mut node.receipts);
            for r in receipts {
                if core.is_durable(&r) {
                    bench.acknowledged.entry(r.job.clone()).or_insert(now.0);
                } else {
                    node.receipts.push(r);
                }
            }
        }
        if let Some(event) = self.lost_acknowledged_job(up) {
            self.violate("always_acknowledged_jobs_kept", event);
        }
    }

    /// An acknowledged job that no running node holds although a node that held it at the
    /// previous sample still runs the same incarnation.
    fn lost_acknowledged_job(&mut self, up: &[usize]) -> Option<String> {
        let bench = self.bench.as_mut()?;
        let mut lost = None;
        let up: Vec<(usize, u64)> = up.iter().map(|&i| (i, self.nodes[i].epoch)).collect();
        for (job, now_held) in bench.acknowledged_holders(&up) {
            let before = bench.holders.get(&job).cloned().unwrap_or_default();
            let survivor = before
                .iter()
                .find(|(i, e)| self.nodes[*i].epoch == *e && self.nodes[*i].life.is_up());
            if now_held.is_empty()
                && let Some((i, _)) = survivor
            {
                lost.get_or_insert(format!(
                    "acknowledged job {job} is in no running node's tables, although n{i}, which \
                     held it, still runs"
                ));
            }
            bench.holders.insert(job, now_held);
        }
        lost
    }
}
