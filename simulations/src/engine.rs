//! The discrete-event loop: a virtual clock and one queue of events ordered by `(time, seq)`,
//! each event dispatched to the room that handles it.
//!
//! The rooms: `membership.rs` drives the production membership cores through their sans-IO
//! API (every input to a core is followed by `Simulation::drain`, which routes its datagrams
//! through the [`Network`], hands its events to the [`Observer`] and re-arms its wake-up from
//! `poll_timeout`); `faults.rs` executes the scenario's fault script; `scheduling.rs` lends the
//! scheduling world (`crate::sched`) what it needs and hands it its events; `sides.rs` keeps the
//! ground truth of who is on the majority side, for the scheduling checkers. `node.rs` holds a
//! simulated machine and its ground truth, `agenda.rs` the event queue, `record.rs` the counters
//! and checker violations. A wake-up is one queue entry per node: a node's `era` grows on
//! every crash, restart and pause, so entries of an older era are skipped when they pop.
//!
//! Randomness: the network, the fault script and each core draw from separate `StdRng`s, all
//! derived from the run's seed with [`derive_seed`], so adding a fault does not change the
//! latencies drawn for unrelated datagrams.

mod agenda;
mod faults;
mod membership;
mod node;
mod record;
mod scheduling;
mod sides;

use std::net::SocketAddr;

use rand::{RngExt, SeedableRng, rngs::StdRng};
use shoal_gossip::{AdCache, Config, MemberStatus, Millis};

use crate::net::Network;
use crate::observe::Observer;
use crate::scenario::{Action, Plan, Scenario};
use crate::sched::{SchedEvent, Setup, Workbench};
use crate::shared::{derive_seed, node_name};
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
    /// Fencing kills the wrong copy: when a core orders a copy killed as superseded, the
    /// executors kill the slot's other copies instead (the incumbent), as the cores did before
    /// issue 12 after every heal.
    InvertFencing,
    /// Services are submitted with `max_parallel = 0` (rolling updates replace everything at
    /// once) while `always_max_parallel` holds them to the scenario's.
    IgnoreWindow,
    /// The catalogs are built from the production `CatalogBuilder` with the core's table
    /// touches left out of its changes (what a core that forgot to record a touch would hand
    /// it): a health change reaches a catalog only when a member's status change rebuilds
    /// every service.
    CatalogMissesTouches,
    /// The simulated executor reports every probe that answers as passed (a shell that
    /// swallows failed checks): bad versions stay healthy in every table. A hung task's probe
    /// still times out (`HangsPass` swallows that).
    ChecksAlwaysPass,
    /// Services are submitted with `max_parallel` = their count (a drain moves them all at
    /// once) while `always_drain_parallel` and `always_max_parallel` hold them to the
    /// scenario's.
    InflateMaxParallel,
    /// The node that accepts an operator's node command answers it and writes nothing (a
    /// shell that drops drains): nodes go on taking work and keep their tasks.
    SkipNodeCommands,
    /// A hung task's probes pass (a shell that swallows check timeouts): hung tasks stay
    /// healthy in every view, so a drain stops serving tasks counting them.
    HangsPass,
    /// Node `.0`'s scheduler core hears no message from its peers from `.1` ms on (a shell
    /// that stops reading its streams): its tables fall behind for good.
    DeafScheduler(usize, u64),
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
    Wake { node: usize, era: u64 },
    /// A step of the fault script.
    Act(Action),
    /// Crashed or departed nodes come back.
    Restart(Vec<usize>),
    /// A pause ends.
    Resume { node: usize, era: u64 },
    /// A slow-down ends.
    Unslow(usize),
    /// Time to sample the views and the checkers.
    Sample,
    /// An event of the scheduling world.
    Sched(SchedEvent),
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
    /// One copy of each resource ad for all the cores (`Membership::share_ads`).
    ad_cache: AdCache,
    agenda: Agenda<Event>,
    net: Network,
    net_rng: StdRng,
    fault_rng: StdRng,
    seeds: Vec<SocketAddr>,
    disturbed: usize,
    sabotage: Sabotage,
    /// The last time a partition was in force, when none is now.
    last_cut_ms: u64,
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
        let bench = scenario.workload.as_ref().map(|w| {
            let setup = Setup {
                shape: scenario.node,
                sample_ms: scenario.checks.sample_ms,
                quorum_feed: scenario.scheduler.quorum_feed,
                restarting: plan.restarting(n),
                ignore_window: sabotage == Sabotage::IgnoreWindow,
                check_from_ms: plan.check_from_ms,
                discovery_sabotage: match sabotage {
                    Sabotage::CatalogMissesTouches => crate::sched::DiscoverySabotage::MissTouches,
                    Sabotage::ChecksAlwaysPass => crate::sched::DiscoverySabotage::AlwaysPass,
                    _ => crate::sched::DiscoverySabotage::None,
                },
                drains: plan
                    .actions
                    .iter()
                    .any(|(_, a)| matches!(a, Action::Node { .. })),
                drain_sabotage: match sabotage {
                    Sabotage::InflateMaxParallel => crate::sched::DrainSabotage::InflateMaxParallel,
                    Sabotage::SkipNodeCommands => crate::sched::DrainSabotage::SkipCommands,
                    Sabotage::HangsPass => crate::sched::DrainSabotage::HangsPass,
                    _ => crate::sched::DrainSabotage::None,
                },
            };
            Box::new(Workbench::new(n, w, seed, setup))
        });
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
            ad_cache: AdCache::default(),
            agenda: Agenda::default(),
            net_rng: StdRng::seed_from_u64(derive_seed(seed, 2, 0, 0)),
            fault_rng: StdRng::seed_from_u64(derive_seed(seed, 3, 0, 0)),
            bench,
            seeds,
            disturbed: 0,
            sabotage,
            last_cut_ms: 0,
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
        sim.schedule_arrivals();
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
        let topology = matches!(
            event,
            Event::Start(_) | Event::Act(_) | Event::Restart(_) | Event::Resume { .. }
        );
        self.dispatch_one(event);
        if topology {
            self.update_sides();
        }
    }

    fn dispatch_one(&mut self, event: Event) {
        match event {
            Event::Start(i) => self.start_core(i),
            Event::Deliver {
                to,
                from,
                payload,
                corrupted,
            } => self.deliver(to, from, payload, corrupted),
            Event::Wake { node, era } => self.wake(node, era),
            Event::Act(action) => self.act(action),
            Event::Restart(nodes) => nodes.into_iter().for_each(|i| self.restart(i)),
            Event::Resume { node, era } => self.resume(node, era),
            Event::Unslow(i) => self.unslow(i),
            Event::Sample => self.sample(),
            Event::Sched(event) => self.sched_event(event),
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
