//! The fault script at work: crashes, restarts, graceful leaves, pauses, slow-downs, partitions
//! and network changes, applied to the nodes' ground truth and their cores.

use rand::RngExt;

use super::node::Life;
use super::{Event, Sabotage, Simulation};
use crate::scenario::{Action, Target};

impl Simulation {
    /// The nodes a fault targets; `random = k` draws `k` running nodes from the fault RNG.
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

    /// Executes one step of the fault script.
    pub(super) fn act(&mut self, action: Action) {
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
            Action::Unpartition { id } => {
                self.note_cut();
                self.net.unpartition(id);
            }
            Action::Heal => {
                self.note_cut();
                self.net.heal();
            }
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
            Action::Hang { tasks, for_ms } => self.sched_hang(tasks, for_ms),
            Action::Node { nodes, change } => self.sched_node_command(&nodes, change),
        }
    }

    /// A partition may be lifted now: remembers that one was in force until now.
    fn note_cut(&mut self) {
        if self.net.is_partitioned() {
            self.last_cut_ms = self.now.0;
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
            self.sched_process_stopped(i, false);
        }
        let node = &mut self.nodes[i];
        node.life = Life::Crashed;
        if !zombie {
            node.known_disk = node
                .core
                .as_ref()
                .map(|c| c.known_members())
                .unwrap_or_default();
            self.counters.retire(&mut node.core);
            node.era += 1;
            node.next_wake = None;
            node.held.clear();
        }
    }

    /// A crashed or departed node starts again as a new generation.
    pub(super) fn restart(&mut self, i: usize) {
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
        self.sched_process_stopped(i, true);
        self.life_log.push((self.now.0, i, false));
        let node = &mut self.nodes[i];
        node.life = Life::Left;
        node.known_disk = node
            .core
            .as_ref()
            .map(|c| c.known_members())
            .unwrap_or_default();
        self.counters.retire(&mut node.core);
        node.era += 1;
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
        node.era += 1;
        node.next_wake = None;
        let era = node.era;
        self.push(self.now.plus_ms(for_ms), Event::Resume { node: i, era });
        self.sched_paused(i);
    }

    /// A pause ends: the held datagrams arrive, then both cores catch up on the time they missed.
    pub(super) fn resume(&mut self, i: usize, era: u64) {
        if self.nodes[i].era != era || self.nodes[i].life != Life::Paused {
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
        self.sched_resumed(i);
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

    /// A slow-down ends.
    pub(super) fn unslow(&mut self, i: usize) {
        if self.nodes[i].slow_ms > 0 {
            self.nodes[i].slow_ms = 0;
            self.disturbed -= 1;
        }
    }
}
