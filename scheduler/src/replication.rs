//! Replication: local writes go through the replica and out to every live peer; ops, digests
//! and states from peers come in here, with the ownership rules checked and acks held for the
//! log (`durability.rs`); anti-entropy sends a digest to a random peer.

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::ids::{ActorId, Dot, Stamp, VersionVector};
use crate::message::{LivePeers, Message, Outgoing, Recipients};
use crate::scheduler::Scheduler;
use crate::table::{Op, OpBody, Received, Tables};

impl Scheduler {
    /// A fresh stamp for a job write: the clock's next tick, by this actor.
    pub(crate) fn stamp(&mut self) -> Stamp {
        Stamp {
            hlc: self.repl.hlc.tick(self.now),
            actor: self.actor.clone(),
        }
    }

    /// The dot of this actor's last write.
    pub(crate) fn last_dot(&self) -> Dot {
        Dot::new(self.actor.clone(), self.repl.counter)
    }

    /// Write a local op: apply it through the replica (same path as remote ops) and queue it
    /// for every live peer.
    pub(crate) fn write(&mut self, body: OpBody) -> Dot {
        self.repl.counter += 1;
        let dot = Dot::new(self.actor.clone(), self.repl.counter);
        let op = Op::new(dot.clone(), body);
        let outcome = self.replica.receive(op.clone());
        debug_assert_eq!(outcome, Received::Applied, "own op must apply in order");
        self.repl.push.push(op);
        dot
    }

    /// Every live member but this node, in name order, sharing the view's list.
    pub(crate) fn live_peers(&self) -> LivePeers {
        LivePeers {
            live: Arc::clone(&self.members.live),
            sender: self.members.live_me,
        }
    }

    pub(crate) fn flush_push(&mut self) {
        if self.repl.push.is_empty() {
            return;
        }
        let ops = std::mem::take(&mut self.repl.push);
        let peers = self.live_peers();
        if peers.is_empty() {
            return;
        }
        for chunk in ops.chunks(self.config.max_ops_per_message.get()) {
            self.outbox.push_back(Outgoing {
                to: Recipients::Live(peers.clone()),
                message: Message::Ops {
                    ops: chunk.to_vec(),
                },
            });
        }
    }

    /// The first op of a message that its author may not write (DESIGN's ownership rules):
    /// an assignment only by the placer named in its key, a state other than `Lost`, a
    /// binding and a health row only by the attempt's target (when the assignment is known here), and nothing in the name of
    /// this start of this node that it did not write. `from` is the sending peer as its certificate
    /// names it: an op it pushes as the author must be its own; ops of other authors are
    /// relayed (answers to digests) and checked against their author.
    fn ownership_violation(&self, from: &str, ops: &[Op]) -> Option<String> {
        for op in ops {
            let author = op.dot.actor.node.as_str();
            if op.dot.actor == self.actor && op.dot.counter > self.repl.counter && from != self.node
            {
                // Our own ops come back relayed (harmless duplicates); one we never wrote
                // cannot.
                return Some(format!(
                    "{from} sent an op this node never wrote in its name"
                ));
            }
            match &op.body {
                OpBody::Assign { id, .. } if id.placer.as_str() != author => {
                    return Some(format!(
                        "{author} wrote an assignment placed by {}",
                        id.placer
                    ));
                }
                OpBody::Binding { id, .. }
                | OpBody::Health { id, .. }
                | OpBody::Milestones { id, .. } => {
                    if let Some(a) = self.tables().assignment(id)
                        && a.target.as_str() != author
                    {
                        let what = match op.body {
                            OpBody::Binding { .. } => "ports",
                            OpBody::Health { .. } => "health",
                            _ => "rollout marks",
                        };
                        return Some(format!(
                            "{author} wrote the {what} of an attempt that runs on {}",
                            a.target
                        ));
                    }
                }
                // Only the node itself reports its drain's progress.
                OpBody::Node { node, row } if row.progress.is_some() && node.as_str() != author => {
                    return Some(format!("{author} wrote the drain progress of {node}"));
                }
                OpBody::State { id, state } if !state.is_lost() => {
                    if let Some(a) = self.tables().assignment(id)
                        && a.target.as_str() != author
                    {
                        return Some(format!(
                            "{author} wrote the state of an attempt that runs on {}",
                            a.target
                        ));
                    }
                }
                _ => {}
            }
        }
        None
    }

    pub(crate) fn receive_ops(&mut self, from: &str, ops: Vec<Op>) {
        if let Some(why) = self.ownership_violation(from, &ops) {
            self.repl.refused_messages += 1;
            tracing::warn!(peer = %from, %why, "refused a message that breaks an ownership rule");
            return;
        }
        // Only job writes are acknowledged: they are the writes a client waits on
        // (`durability`). Acknowledging every op doubled the replication traffic. The ack
        // leaves once the job's record is logged here (`handle_persisted`).
        let mut actors = BTreeSet::new();
        let (mut overflow, mut gap) = (false, false);
        for op in ops {
            if let OpBody::State { state, .. } = &op.body
                && let Some(since) = state.running_since()
            {
                // A start seen here orders before every start this node reports later.
                self.repl.hlc.observe(since);
            }
            if let OpBody::Job { entry, .. } = &op.body {
                self.repl.hlc.observe(entry.stamp.hlc);
            }
            // Node intents are acknowledged like job writes (`drain_intent.rs`).
            if matches!(op.body, OpBody::Job { .. } | OpBody::Node { .. })
                && !actors.contains(&op.dot.actor)
            {
                actors.insert(op.dot.actor.clone());
            }
            match self.replica.receive(op) {
                Received::Applied => self.counters.ops_applied += 1,
                Received::Overflow => overflow = true,
                Received::Buffered => gap = true,
                Received::Duplicate => {}
            }
        }
        for actor in actors {
            if actor.node != self.node {
                let counter = self.tables().clock().get(&actor);
                let writer = actor.node.to_string();
                self.log.hold_ack(&writer, actor, counter);
            }
        }
        if overflow {
            self.ask_writer(from);
        } else if gap {
            self.ask_for_gap(from);
        }
    }

    /// Asks `from` for the ops this node misses: a digest it answers with them (or its state)
    /// and then with its own digest. `reply: true`, because a `reply: false` digest is read as
    /// the answer to a digest of the receiver's own, which would end a restored writer's
    /// catch-up before it got anything.
    fn ask_writer(&mut self, from: &str) {
        let clock = self.tables().clock().clone();
        self.outbox
            .push_back(Outgoing::one(from, Message::Digest { clock, reply: true }));
    }

    /// An op from `from` waits for earlier ops of its writer that never came here: `from`
    /// wrote them before it counted this node among its live peers (a cluster forming, a
    /// node back from a partition), or they were lost. Anti-entropy would fill the gap within
    /// a few of its rounds (a digest to one random peer per second: a proposal waited 0.3–4.6
    /// s in `bench/scheduling.py`'s first second); this asks the sender at once
    /// ([`Scheduler::ask_writer`]). At most one ask per
    /// peer per tenth of the anti-entropy interval, however many ops arrive behind the gap.
    fn ask_for_gap(&mut self, from: &str) {
        let spacing = u64::try_from(self.config.anti_entropy_interval.as_millis() / 10)
            .unwrap_or(u64::MAX)
            .max(1);
        let now = self.now;
        if self
            .repl
            .gap_asked
            .get(from)
            .is_some_and(|&at| now.since(at) < spacing)
        {
            return;
        }
        self.repl.gap_asked.insert(from.to_string(), now);
        self.ask_writer(from);
    }

    pub(crate) fn receive_digest(&mut self, from: &str, clock: VersionVector, reply: bool) {
        // A digest says what the peer holds in memory, not what it logged: it is no ack. It
        // does tell us which of the peer's writes we hold; ack those once logged, in case an
        // earlier ack was lost.
        let theirs: Vec<ActorId> = clock
            .iter()
            .filter(|d| d.actor.node == from)
            .map(|d| d.actor.clone())
            .collect();
        for actor in theirs {
            let held = self.tables().clock().get(&actor);
            if held > 0 {
                self.log.hold_ack(from, actor, held);
            }
        }
        if !reply {
            // The answer to a digest of ours: everything the peer had then has arrived (one
            // ordered stream per peer), so a restored node has caught up.
            self.caught_up_with(from);
        }
        let max = self
            .config
            .wire
            .max_ops
            .min(self.config.max_ops_per_message.get() * 64);
        match self.replica.missing_for(&clock, max) {
            Some(ops) => {
                for chunk in ops.chunks(self.config.max_ops_per_message.get()) {
                    self.outbox.push_back(Outgoing::one(
                        from,
                        Message::Ops {
                            ops: chunk.to_vec(),
                        },
                    ));
                }
            }
            None => {
                let tables = Box::new(self.tables().clone());
                self.outbox
                    .push_back(Outgoing::one(from, Message::State { tables }));
            }
        }
        let mine = self.tables().clock();
        if reply {
            // Always answered: the answer closes the exchange for the asker (it may be
            // catching up after a restart), and tells it what we lack.
            let clock = mine.clone();
            self.outbox.push_back(Outgoing::one(
                from,
                Message::Digest {
                    clock,
                    reply: false,
                },
            ));
        }
        self.tombstones_heard(from, &clock);
    }

    pub(crate) fn receive_state(&mut self, tables: Tables) {
        if let Some(max) = tables.jobs().map(|(_, e)| e.stamp.hlc).max() {
            self.repl.hlc.observe(max);
        }
        self.replica.merge_state(tables);
    }

    pub(crate) fn send_digest_to_random_peer(&mut self) {
        // Drawn by index from the view's live list: the same draw and peer as collecting
        // the names, without walking or cloning N names per digest (N = 5,000 in the
        // placement bench).
        let peers = self.live_peers();
        let count = peers.len();
        if count == 0 {
            return;
        }
        let i = usize::try_from(self.rng.below(count as u64)).unwrap_or(0);
        let Some(peer) = peers.nth(i).map(str::to_string) else {
            return;
        };
        let clock = self.tables().clock().clone();
        self.counters.anti_entropy_rounds += 1;
        self.outbox
            .push_back(Outgoing::one(&peer, Message::Digest { clock, reply: true }));
    }
}
