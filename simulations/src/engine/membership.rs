//! Driving the production membership cores (`shoal_gossip::Membership`), one per node, through
//! their sans-IO API: start, datagrams in, timers, and `drain` for everything they produce.

use std::net::SocketAddr;

use shoal_gossip::{MemberEvent, Membership, Millis, NodeId, ResourceAd, Resources};

use super::node::{Life, SimNode, addr_of, index_of_addr};
use super::{Event, Sabotage, Simulation};
use crate::net::Fate;
use crate::shared::{derive_seed, index_of_name};

impl Simulation {
    /// The resource ad node `i` starts with (twice the real capacity under
    /// [`Sabotage::OverstateCapacity`]).
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
            port_range: None,
        }
    }

    /// Starts node `i`'s process as its next generation: a fresh membership core joining the
    /// seeds, then its scheduler core.
    pub(super) fn start_core(&mut self, i: usize) {
        let generation = self.nodes[i].generation + 1;
        let id = NodeId {
            name: self.nodes[i].name.as_str().into(),
            addr: self.nodes[i].addr,
            generation,
        };
        let core_seed = derive_seed(self.seed, 4, i as u64, generation);
        let mut core =
            Membership::new(id, self.ad_for(i), self.config.clone(), core_seed, self.now);
        core.share_ads(self.ad_cache.clone());
        let known = std::mem::take(&mut self.nodes[i].known_disk);
        if !known.is_empty() {
            core.restore_known(self.now, known);
        }
        for seed in self.seeds.clone() {
            core.join(self.now, seed);
        }
        let ad = core.own_ad().key();
        let node = &mut self.nodes[i];
        node.core = Some(Box::new(core));
        node.generation = generation;
        node.life = Life::Running;
        node.era += 1;
        node.next_wake = None;
        self.observer.started(i, generation, ad);
        self.life_log.push((self.now.0, i, true));
        self.sched_process_started(i, generation);
        self.drain(i);
    }

    /// A datagram arrives at node `to` (held while it is paused).
    pub(super) fn deliver(&mut self, to: usize, from: usize, payload: Vec<u8>, corrupted: bool) {
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

    /// Node `i`'s queued wake-up is due.
    pub(super) fn wake(&mut self, i: usize, era: u64) {
        let now = self.now;
        let node = &mut self.nodes[i];
        if node.era != era || node.next_wake != Some(now) || node.life == Life::Paused {
            return;
        }
        node.next_wake = None;
        if let Some(core) = node.core.as_mut() {
            core.handle_timeout(now);
            self.drain(i);
        }
    }

    /// Routes everything core `i` produced and re-arms its wake-up; tells the scheduling world
    /// when the core reported a membership change.
    pub(super) fn drain(&mut self, i: usize) {
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
                MemberEvent::Status { id, .. } => index_of_addr(id.addr),
                MemberEvent::Resources { ad } => index_of_name(&ad.node),
                MemberEvent::Forgotten { name } | MemberEvent::Reaped { name } => {
                    index_of_name(name)
                }
            };
            let running = subject
                .and_then(|j| self.nodes.get(j))
                .and_then(running_gen);
            crate::sched::trace::member_event(self.now, &self.nodes[i].name, &ev);
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
        let quorum_changed =
            self.bench.is_some() && node.quorum_seen.as_ref() != Some(core.quorum());
        if quorum_changed {
            node.quorum_seen = Some(core.quorum().clone());
            crate::sched::trace::quorum(self.now, &node.name, core.quorum());
        }
        node.generation = node.generation.max(generation);
        node.core = Some(core);
        if let Some(due) = due {
            self.arm(i, due);
        }
        if quorum_changed {
            self.sched_quorum_changed(i);
        }
        if changed {
            self.sched_members_changed(i);
        }
    }

    /// Queues node `i`'s wake-up for `due` (delayed while it is slow) unless an earlier one is
    /// queued.
    fn arm(&mut self, i: usize, due: Millis) {
        let node = &mut self.nodes[i];
        if node.life == Life::Paused {
            return;
        }
        let at = due.max(self.now).plus_ms(node.slow_ms);
        if node.next_wake.is_none_or(|w| at < w) {
            node.next_wake = Some(at);
            let era = node.era;
            self.push(at, Event::Wake { node: i, era });
        }
    }

    /// Hands one datagram of node `from` to the network.
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
}
