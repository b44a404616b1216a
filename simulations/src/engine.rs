//! The discrete-event engine: a virtual clock, one heap of events ordered by `(time, seq)`,
//! and the production membership cores driven through their sans-IO API.
//!
//! Every input to a core is followed by [`Simulation::drain`], which routes its datagrams
//! through the [`Network`], hands its events to the [`Observer`] and re-arms its wake-up from
//! `poll_timeout`. A wake-up is one heap entry per node: a node's `epoch` grows on every
//! crash, restart and pause, so entries of an older epoch are skipped when they pop.
//!
//! Randomness: the network, the fault script and each core draw from separate `StdRng`s, all
//! derived from the run's seed with [`derive_seed`], so adding a fault does not change the
//! latencies drawn for unrelated datagrams.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::{Ipv4Addr, SocketAddr};

use rand::{RngExt, SeedableRng, rngs::StdRng};
use shoal_gossip::{Config, MemberStatus, Membership, Millis, NodeId, ResourceAd, Resources};

use crate::net::{Fate, Network};
use crate::observe::Observer;
use crate::scenario::{Action, Plan, Scenario, Target};
use crate::sched::{self, Executed, FEED_MS, Workbench};
use crate::shared::{derive_seed, index_of_name, node_name};
use bytes::Bytes;
use shoal_scheduler::{Scheduler, TaskEvent, TaskKey};

/// The gossip port every simulated node listens on.
pub const GOSSIP_PORT: u16 = 7946;

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

/// Whether a node runs, in the ground truth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Life {
    /// Not started yet.
    NotStarted,
    /// Running.
    Running,
    /// Running but frozen: inputs are held.
    Paused,
    /// Crashed.
    Crashed,
    /// Left on purpose.
    Left,
}

impl Life {
    /// Running or paused: the process exists.
    #[must_use]
    pub fn is_up(self) -> bool {
        matches!(self, Life::Running | Life::Paused)
    }
}

/// One simulated machine.
#[derive(Debug)]
pub struct SimNode {
    /// Node name (`n<index>`).
    pub name: String,
    /// Gossip address.
    pub addr: SocketAddr,
    /// Rack attribute.
    pub rack: String,
    /// The production membership core, while the process exists. Boxed: the engine takes a
    /// core out of its node to drive it once per event, and moving the 2 KB struct in and out
    /// was a few percent of a large run.
    pub core: Option<Box<Membership>>,
    /// Ground truth.
    pub life: Life,
    /// Highest generation this node has run as.
    pub generation: u64,
    /// When this node's own resource ad last changed.
    pub ad_changed_ms: u64,
    epoch: u64,
    next_wake: Option<Millis>,
    held: Vec<(usize, Vec<u8>, bool)>,
    slow_ms: u64,
}

/// Datagram and fault counters.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Counters {
    /// Events popped from the heap.
    pub events: u64,
    /// Datagrams the cores emitted.
    pub datagrams_sent: u64,
    /// Datagrams handed to a core.
    pub datagrams_delivered: u64,
    /// Dropped by random loss.
    pub datagrams_lost: u64,
    /// Dropped by a partition.
    pub datagrams_cut: u64,
    /// Extra copies delivered.
    pub datagrams_duplicated: u64,
    /// Arrived at a node whose process did not exist.
    pub datagrams_to_dead: u64,
    /// Addressed to no simulated node.
    pub datagrams_unroutable: u64,
    /// Corrupted in flight and dropped by the (modelled) AEAD seal.
    pub corrupted_sealed_out: u64,
    /// Corrupted in flight and delivered to the core unsealed.
    pub corrupted_delivered: u64,
    /// Corrupted datagrams the core refused.
    pub corrupted_refused: u64,
    /// Corrupted datagrams the core accepted (the transport's AEAD seal would drop them).
    pub corrupted_accepted: u64,
    /// Intact datagrams the core refused.
    pub intact_refused: u64,
    /// Crashes executed.
    pub crashes: u64,
    /// Restarts executed.
    pub restarts: u64,
    /// Graceful leaves executed.
    pub leaves: u64,
    /// Pauses executed.
    pub pauses: u64,
    /// Member statuses the cores' periodic full scan had to correct, summed over the cores
    /// that stopped (the `finally_views_incremental` checker adds the running ones).
    pub view_corrections: u64,
}

impl Counters {
    /// Drops a stopped node's membership core, keeping the counts the report needs from it.
    fn retire(&mut self, core: &mut Option<Box<Membership>>) {
        if let Some(core) = core.take() {
            self.view_corrections += core.stats().view_corrections;
        }
    }
}

/// The first violation of an `always_*` checker.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Violation {
    /// Checker name.
    pub check: String,
    /// When.
    pub at_ms: u64,
    /// The event that broke it.
    pub event: String,
}

#[derive(Debug)]
enum Event {
    Start(usize),
    Deliver {
        to: usize,
        from: usize,
        payload: Vec<u8>,
        corrupted: bool,
    },
    Wake {
        node: usize,
        epoch: u64,
    },
    Act(Action),
    Restart(Vec<usize>),
    Resume {
        node: usize,
        epoch: u64,
    },
    Unslow(usize),
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

/// A queued event's place in time; the event itself waits in [`EventSlab`]. The heap moves
/// its entries at every push and pop (about 20 levels with millions queued), so they are kept
/// small: 24 bytes instead of the 96 of an inline event.
#[derive(Debug)]
struct Queued {
    at: Millis,
    seq: u64,
    slot: u32,
}

/// The queued events, by slot; freed slots are reused.
#[derive(Debug, Default)]
struct EventSlab {
    events: Vec<Option<Event>>,
    free: Vec<u32>,
}

impl EventSlab {
    fn insert(&mut self, event: Event) -> u32 {
        match self.free.pop() {
            Some(slot) => {
                self.events[slot as usize] = Some(event);
                slot
            }
            None => {
                self.events.push(Some(event));
                u32::try_from(self.events.len() - 1).expect("fewer than 2^32 queued events")
            }
        }
    }

    fn take(&mut self, slot: u32) -> Option<Event> {
        let event = self.events.get_mut(slot as usize)?.take();
        debug_assert!(event.is_some(), "event slot {slot} taken twice");
        if event.is_some() {
            self.free.push(slot);
        }
        event
    }
}

impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Queued {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// The gossip address of node `index`: `10.a.b.c:7946` with `index` in the low 24 bits.
#[must_use]
pub fn addr_of(index: usize) -> SocketAddr {
    let i = index as u32;
    let ip = Ipv4Addr::new(10, (i >> 16) as u8, (i >> 8) as u8, i as u8);
    SocketAddr::from((ip, GOSSIP_PORT))
}

/// The node index behind a simulated gossip address.
#[must_use]
pub fn index_of_addr(addr: SocketAddr) -> Option<usize> {
    match addr {
        SocketAddr::V4(v4) if v4.port() == GOSSIP_PORT && v4.ip().octets()[0] == 10 => {
            let [_, a, b, c] = v4.ip().octets();
            Some(((a as usize) << 16) | ((b as usize) << 8) | c as usize)
        }
        _ => None,
    }
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
    queue: BinaryHeap<Reverse<Queued>>,
    slab: EventSlab,
    seq: u64,
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
            .map(|i| SimNode {
                name: node_name(i),
                addr: addr_of(i),
                rack: scenario.rack_of(i),
                core: None,
                life: Life::NotStarted,
                generation: 0,
                ad_changed_ms: 0,
                epoch: 0,
                next_wake: None,
                held: Vec::new(),
                slow_ms: 0,
            })
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
            queue: BinaryHeap::new(),
            slab: EventSlab::default(),
            seq: 0,
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
        self.seq += 1;
        let slot = self.slab.insert(event);
        self.queue.push(Reverse(Queued {
            at,
            seq: self.seq,
            slot,
        }));
    }

    /// Runs to the end of the scenario; `progress` is called with the virtual time at every
    /// sample.
    pub fn run(&mut self, progress: &mut dyn FnMut(u64)) {
        let end = Millis(self.plan.duration_ms);
        while let Some(Reverse(q)) = self.queue.pop() {
            if q.at > end {
                break;
            }
            let Some(event) = self.slab.take(q.slot) else {
                continue;
            };
            self.now = q.at;
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
            Event::Unslow(i) => {
                if self.nodes[i].slow_ms > 0 {
                    self.nodes[i].slow_ms = 0;
                    self.disturbed -= 1;
                }
            }
            Event::Sample => self.sample(),
            Event::Submit(k) => self.submit(k),
            Event::Feed { node, epoch } => self.feed(node, epoch),
            Event::SchedWake { node, epoch } => self.sched_wake(node, epoch),
            Event::SchedMsg { to, from, bytes } => self.sched_message(to, from, bytes),
            Event::TaskExit { node, epoch, task } => self.task_exit(node, epoch, task),
        }
    }

    // ---- driving one core ------------------------------------------------------------

    fn ad_for(&self, i: usize) -> ResourceAd {
        let shape = self.scenario.node;
        let lie = if self.sabotage == Sabotage::OverstateCapacity {
            2
        } else {
            1
        };
        ResourceAd {
            node: Default::default(),
            generation: 0,
            version: 0,
            capacity: Resources {
                cpu_millicores: shape.cpu_millicores * lie,
                memory_mib: shape.memory_mib * lie,
                disk_mib: shape.disk_mib,
            },
            attributes: std::sync::Arc::new(
                [("rack".to_string(), self.nodes[i].rack.clone())]
                    .into_iter()
                    .collect(),
            ),
            draining: false,
            left: false,
            quic_addr: None,
            http_addr: None,
            gossip_addr: None,
        }
    }

    fn start_core(&mut self, i: usize) {
        let generation = self.nodes[i].generation + 1;
        let id = NodeId {
            name: self.nodes[i].name.as_str().into(),
            addr: self.nodes[i].addr,
            generation,
        };
        let core_seed = derive_seed(self.seed, 4, i as u64, generation);
        let mut core =
            Membership::new(id, self.ad_for(i), self.config.clone(), core_seed, self.now);
        for seed in self.seeds.clone() {
            core.join(self.now, seed);
        }
        let ad = core.own_ad().key();
        let node = &mut self.nodes[i];
        node.core = Some(Box::new(core));
        node.generation = generation;
        node.life = Life::Running;
        node.epoch += 1;
        node.next_wake = None;
        self.observer.started(i, generation, ad);
        self.life_log.push((self.now.0, i, true));
        self.start_scheduler(i, generation);
        self.drain(i);
    }

    fn deliver(&mut self, to: usize, from: usize, payload: Vec<u8>, corrupted: bool) {
        let node = &mut self.nodes[to];
        if node.life == Life::Paused {
            node.held.push((from, payload, corrupted));
            return;
        }
        let Some(core) = node.core.as_mut() else {
            self.counters.datagrams_to_dead += 1;
            return;
        };
        if corrupted && self.net.sealed() {
            self.counters.corrupted_sealed_out += 1;
            return;
        }
        self.counters.datagrams_delivered += 1;
        let result = core.handle_datagram(self.now, addr_of(from), &payload);
        match (result, corrupted) {
            (Err(_), true) => self.counters.corrupted_refused += 1,
            (Ok(()), true) => self.counters.corrupted_accepted += 1,
            (Err(e), false) => {
                self.counters.intact_refused += 1;
                let event = format!("n{to} refused an intact datagram from n{from}: {e}");
                self.violate("always_intact_datagrams_accepted", event);
            }
            (Ok(()), false) => {}
        }
        if corrupted {
            self.counters.corrupted_delivered += 1;
        }
        self.drain(to);
    }

    fn wake(&mut self, i: usize, epoch: u64) {
        let now = self.now;
        let node = &mut self.nodes[i];
        if node.epoch != epoch || node.next_wake != Some(now) || node.life == Life::Paused {
            return;
        }
        node.next_wake = None;
        if let Some(core) = node.core.as_mut() {
            core.handle_timeout(now);
            self.drain(i);
        }
    }

    /// Routes everything core `i` produced and re-arms its wake-up.
    fn drain(&mut self, i: usize) {
        let Some(mut core) = self.nodes[i].core.take() else {
            return;
        };
        while let Some(t) = core.poll_transmit() {
            self.send(i, t.to, t.payload);
        }
        let running_gen = |n: &SimNode| match (&n.core, n.life) {
            (_, Life::Running | Life::Paused) => Some(n.generation),
            _ => None,
        };
        let explained = self.disturbed > 0 || self.net.is_partitioned();
        let mut changed = false;
        while let Some(ev) = core.poll_event() {
            changed = true;
            let subject = match &ev {
                shoal_gossip::MemberEvent::Status { id, .. } => index_of_addr(id.addr),
                shoal_gossip::MemberEvent::Resources { ad } => index_of_name(&ad.node),
            };
            let running = subject
                .and_then(|j| self.nodes.get(j))
                .and_then(running_gen);
            self.observer
                .event(i, self.now, &ev, subject, running, explained);
        }
        let generation = core.identity().generation;
        let own_ad = core.own_ad().key();
        if self.observer.seen(i, i).ad != own_ad {
            self.nodes[i].ad_changed_ms = self.now.0;
        }
        self.observer.own_ad(i, own_ad);
        let due = core.poll_timeout();
        let node = &mut self.nodes[i];
        node.generation = node.generation.max(generation);
        node.core = Some(core);
        if let Some(due) = due {
            self.arm(i, due);
        }
        if changed {
            self.members_changed(i);
        }
    }

    fn arm(&mut self, i: usize, due: Millis) {
        let node = &mut self.nodes[i];
        if node.life == Life::Paused {
            return;
        }
        let at = due.max(self.now).plus_ms(node.slow_ms);
        if node.next_wake.is_none_or(|w| at < w) {
            node.next_wake = Some(at);
            let epoch = node.epoch;
            self.push(at, Event::Wake { node: i, epoch });
        }
    }

    fn send(&mut self, from: usize, to: SocketAddr, payload: Vec<u8>) {
        self.counters.datagrams_sent += 1;
        let Some(to) = index_of_addr(to).filter(|&j| j < self.nodes.len()) else {
            self.counters.datagrams_unroutable += 1;
            return;
        };
        if self.sabotage == Sabotage::Blackhole(to) {
            self.counters.datagrams_lost += 1;
            return;
        }
        let (fate, deliveries) = self.net.route(&mut self.net_rng, from, to, payload);
        match fate {
            Fate::Lost => self.counters.datagrams_lost += 1,
            Fate::Cut => self.counters.datagrams_cut += 1,
            Fate::Sent => {}
        }
        self.counters.datagrams_duplicated += deliveries.len().saturating_sub(1) as u64;
        let slow = self.nodes[to].slow_ms;
        for d in deliveries {
            let at = self.now.plus_ms(d.delay_ms + slow);
            let event = Event::Deliver {
                to,
                from,
                payload: d.payload,
                corrupted: d.corrupted,
            };
            self.push(at, event);
        }
    }

    fn violate(&mut self, check: &str, event: String) {
        if self.violations.iter().any(|v| v.check == check) {
            return;
        }
        self.violations.push(Violation {
            check: check.to_string(),
            at_ms: self.now.0,
            event,
        });
    }

    // ---- faults ----------------------------------------------------------------------

    fn resolve(&mut self, target: &Target) -> Vec<usize> {
        match target {
            Target::Nodes(nodes) => nodes
                .iter()
                .copied()
                .filter(|&i| i < self.nodes.len())
                .collect(),
            Target::Rack(rack) => (0..self.nodes.len())
                .filter(|&i| &self.nodes[i].rack == rack)
                .collect(),
            Target::Random(k) => {
                let mut up: Vec<usize> = (0..self.nodes.len())
                    .filter(|&i| self.nodes[i].life == Life::Running)
                    .collect();
                let k = (*k).min(up.len());
                for slot in 0..k {
                    let pick = self.fault_rng.random_range(slot..up.len());
                    up.swap(slot, pick);
                }
                up.truncate(k);
                up
            }
        }
    }

    fn act(&mut self, action: Action) {
        match action {
            Action::Crash {
                target,
                restart_after_ms,
            } => {
                let nodes = self.resolve(&target);
                nodes.iter().for_each(|&i| self.crash(i));
                if let Some(after) = restart_after_ms {
                    self.push(self.now.plus_ms(after), Event::Restart(nodes));
                }
            }
            Action::Restart { target } => {
                let nodes = self.resolve(&target);
                nodes.into_iter().for_each(|i| self.restart(i));
            }
            Action::Pause { target, for_ms } => {
                let nodes = self.resolve(&target);
                nodes.into_iter().for_each(|i| self.pause(i, for_ms));
            }
            Action::Slow {
                target,
                extra_ms,
                for_ms,
            } => {
                let nodes = self.resolve(&target);
                nodes
                    .into_iter()
                    .for_each(|i| self.slow(i, extra_ms, for_ms));
            }
            Action::Partition { id, side, one_way } => {
                let side = self.resolve(&side);
                self.net.partition(id, self.nodes.len(), &side, one_way);
            }
            Action::Unpartition { id } => self.net.unpartition(id),
            Action::Heal => self.net.heal(),
            Action::Leave {
                target,
                rejoin_after_ms,
            } => {
                let nodes = self.resolve(&target);
                nodes.iter().for_each(|&i| self.leave(i));
                if let Some(after) = rejoin_after_ms {
                    self.push(self.now.plus_ms(after), Event::Restart(nodes));
                }
            }
            Action::Network(params) => self.net.set_params(params),
        }
    }

    fn crash(&mut self, i: usize) {
        if !self.nodes[i].life.is_up() {
            return;
        }
        self.counters.crashes += 1;
        let generation = self.nodes[i].generation;
        self.observer.crashed(i, generation, self.now);
        self.life_log.push((self.now.0, i, false));
        if self.nodes[i].life == Life::Paused {
            self.disturbed -= 1;
        }
        let zombie = self.sabotage == Sabotage::ZombieCrashes;
        if !zombie {
            self.stop_scheduler(i);
        }
        let node = &mut self.nodes[i];
        node.life = Life::Crashed;
        if !zombie {
            self.counters.retire(&mut node.core);
            node.epoch += 1;
            node.next_wake = None;
            node.held.clear();
        }
    }

    fn restart(&mut self, i: usize) {
        if matches!(self.nodes[i].life, Life::Crashed | Life::Left) {
            self.counters.restarts += 1;
            self.start_core(i);
        }
    }

    fn leave(&mut self, i: usize) {
        if self.nodes[i].life != Life::Running {
            return;
        }
        self.counters.leaves += 1;
        if let Some(core) = self.nodes[i].core.as_mut() {
            core.leave(self.now);
        }
        self.drain(i);
        self.stop_scheduler(i);
        self.life_log.push((self.now.0, i, false));
        let node = &mut self.nodes[i];
        node.life = Life::Left;
        self.counters.retire(&mut node.core);
        node.epoch += 1;
        node.next_wake = None;
    }

    fn pause(&mut self, i: usize, for_ms: u64) {
        if self.nodes[i].life != Life::Running {
            return;
        }
        self.counters.pauses += 1;
        self.disturbed += 1;
        let node = &mut self.nodes[i];
        node.life = Life::Paused;
        node.epoch += 1;
        node.next_wake = None;
        let epoch = node.epoch;
        self.push(self.now.plus_ms(for_ms), Event::Resume { node: i, epoch });
    }

    fn resume(&mut self, i: usize, epoch: u64) {
        if self.nodes[i].epoch != epoch || self.nodes[i].life != Life::Paused {
            return;
        }
        self.disturbed -= 1;
        self.nodes[i].life = Life::Running;
        let held = std::mem::take(&mut self.nodes[i].held);
        for (from, payload, corrupted) in held {
            self.deliver(i, from, payload, corrupted);
        }
        if let Some(core) = self.nodes[i].core.as_mut() {
            core.handle_timeout(self.now);
        }
        self.drain(i);
        self.sched_wake_now(i);
    }

    fn slow(&mut self, i: usize, extra_ms: u64, for_ms: Option<u64>) {
        if self.nodes[i].slow_ms == 0 && extra_ms > 0 {
            self.disturbed += 1;
        }
        if self.nodes[i].slow_ms > 0 && extra_ms == 0 {
            self.disturbed -= 1;
        }
        self.nodes[i].slow_ms = extra_ms;
        if let Some(d) = for_ms {
            self.push(self.now.plus_ms(d), Event::Unslow(i));
        }
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
