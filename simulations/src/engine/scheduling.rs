//! The engine's side of the scheduling world (`crate::sched`): the [`Host`] it lends at each
//! call, and the few calls it makes.

use rand::rngs::StdRng;
use shoal_gossip::{MemberInfo, Millis, Quorum};

use super::agenda::Agenda;
use super::node::{Life, SimNode};
use super::record::{self, Violation};
use super::sides;
use super::{Event, Simulation};
use crate::net::Network;
use crate::sched::{Host, Process, ProcessState, SchedEvent, Workbench};

/// The parts of the engine the scheduling world may use during one call.
struct Lent<'a> {
    now: Millis,
    nodes: &'a [SimNode],
    agenda: &'a mut Agenda<Event>,
    net: &'a Network,
    net_rng: &'a mut StdRng,
    violations: &'a mut Vec<Violation>,
    invert_fencing: bool,
    deaf: Option<(usize, u64)>,
    last_cut_ms: u64,
}

impl Host for Lent<'_> {
    fn now(&self) -> Millis {
        self.now
    }

    fn process(&self, node: usize) -> Process {
        let n = &self.nodes[node];
        let state = match n.life {
            Life::Running => ProcessState::Running,
            Life::Paused => ProcessState::Paused,
            Life::NotStarted | Life::Crashed | Life::Left => ProcessState::Down,
        };
        Process {
            state,
            era: n.era,
            slow_ms: n.slow_ms,
        }
    }

    fn members(&self, node: usize) -> Option<Vec<MemberInfo>> {
        self.nodes[node].core.as_ref().map(|core| core.members())
    }

    fn quorum(&self, node: usize) -> Option<Quorum> {
        self.nodes[node]
            .core
            .as_ref()
            .map(|core| core.quorum().clone())
    }

    fn majority_side_since(&self, node: usize, since: Millis) -> bool {
        sides::majority_side_since(self.nodes, node, since.0)
    }

    fn invert_fencing(&self) -> bool {
        self.invert_fencing
    }

    fn scheduler_deaf(&self, node: usize) -> bool {
        self.deaf
            .is_some_and(|(deaf, from)| deaf == node && self.now.0 >= from)
    }

    fn partitioned_since(&self, since: Millis) -> bool {
        self.net.is_partitioned() || self.last_cut_ms >= since.0
    }

    fn minority_side(&self, node: usize) -> bool {
        sides::minority_side(self.nodes, node)
    }

    fn reliable_delay(&mut self, from: usize, to: usize) -> Option<u64> {
        self.net.reliable_delay(self.net_rng, from, to)
    }

    fn schedule(&mut self, at: Millis, event: SchedEvent) {
        self.agenda.push(at, Event::Sched(event));
    }

    fn violate(&mut self, check: &str, event: String) {
        record::violate(self.violations, self.now, check, event);
    }
}

impl Simulation {
    /// The scheduling world and what it may use, when the scenario has a workload.
    fn lend(&mut self) -> Option<(&mut Workbench, Lent<'_>)> {
        let bench = self.bench.as_deref_mut()?;
        let host = Lent {
            now: self.now,
            nodes: &self.nodes,
            agenda: &mut self.agenda,
            net: &self.net,
            net_rng: &mut self.net_rng,
            violations: &mut self.violations,
            invert_fencing: self.sabotage == super::Sabotage::InvertFencing,
            deaf: match self.sabotage {
                super::Sabotage::DeafScheduler(node, from) => Some((node, from)),
                _ => None,
            },
            last_cut_ms: self.last_cut_ms,
        };
        Some((bench, host))
    }

    pub(super) fn schedule_arrivals(&mut self) {
        if let Some((bench, mut host)) = self.lend() {
            bench.schedule_arrivals(&mut host);
        }
    }

    pub(super) fn sched_process_started(&mut self, i: usize, generation: u64) {
        if let Some((bench, mut host)) = self.lend() {
            bench.handle_process_started(&mut host, i, generation);
        }
    }

    pub(super) fn sched_process_stopped(&mut self, i: usize, graceful: bool) {
        if let Some((bench, mut host)) = self.lend() {
            bench.handle_process_stopped(&mut host, i, graceful);
        }
    }

    pub(super) fn sched_paused(&mut self, i: usize) {
        if let Some((bench, mut host)) = self.lend() {
            bench.handle_paused(&mut host, i);
        }
    }

    /// Node `i`'s membership core's quorum changed: the scheduling world hands it over.
    pub(super) fn sched_quorum_changed(&mut self, i: usize) {
        if let Some((bench, mut host)) = self.lend() {
            bench.handle_quorum_changed(&mut host, i);
        }
    }

    /// Node `i`'s membership core reported a change: the scheduling world feeds it on.
    pub(super) fn sched_members_changed(&mut self, i: usize) {
        if let Some((bench, mut host)) = self.lend() {
            bench.handle_members_changed(&mut host, i);
        }
    }

    pub(super) fn sched_resumed(&mut self, i: usize) {
        if let Some((bench, mut host)) = self.lend() {
            bench.handle_resumed(&mut host, i);
        }
    }

    pub(super) fn sched_event(&mut self, event: SchedEvent) {
        if let Some((bench, mut host)) = self.lend() {
            bench.handle_event(&mut host, event);
        }
    }

    /// The `hang` fault: `tasks` running service tasks stop answering their checks.
    pub(super) fn sched_hang(&mut self, tasks: usize, for_ms: Option<u64>) {
        if let Some((bench, mut host)) = self.lend() {
            bench.hang(&mut host, tasks, for_ms);
        }
    }

    /// An operator's node command about `nodes` (`Action::Node`).
    pub(super) fn sched_node_command(
        &mut self,
        nodes: &[usize],
        change: shoal_scheduler::NodeChange,
    ) {
        if let Some((bench, mut host)) = self.lend() {
            bench.node_command(&mut host, nodes, change);
        }
    }

    pub(super) fn sample_scheduling(&mut self, up: &[usize]) {
        let last_fault_ms = self.plan.last_fault_ms;
        if let Some((bench, mut host)) = self.lend() {
            bench.sample(&mut host, up, last_fault_ms);
        }
    }
}
