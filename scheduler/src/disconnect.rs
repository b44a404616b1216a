//! Deciding without a view of the whole cluster (`docs/faults.md`): what this node does when
//! the membership core says it does not reach a majority, and what it does with its own tasks
//! that the cluster marked lost while they kept running.
//!
//! - [`Scheduler::handle_quorum`] takes the membership core's [`Quorum`].
//! - [`Scheduler::may_act`]: condemning other nodes' attempts, placing and collecting garbage
//!   need a majority, and a restored node first catches up with a live peer.
//! - A node without a majority stops each local task once the job's `disconnect.stop_after_ms`
//!   has passed since it lost the majority (`Wake::Disconnect`). A node that flaps in and out
//!   of its majority counts from the start of the streak ([`Streak`]): a majority held for
//!   less than [`STABLE_MAJORITY_MS`] does not restart the clock. Both live in `roles.rs`, with
//!   the rest of this room's state ([`Reach`]).
//! - A local task marked lost is reclaimed (the incumbent wins), killed, or kept until the
//!   majority returns ([`Scheduler::lost_fate`]).

use shoal_gossip::{Millis, Quorum};

use crate::ids::AttemptId;
use crate::placement::PendingReason;
use crate::roles::{CATCH_UP_MAX_MS, CatchUp, Wake};
#[cfg(doc)]
use crate::roles::{Reach, STABLE_MAJORITY_MS, Streak};
use crate::scheduler::{KillReason, Scheduler};
use crate::spec::{JobSpec, Reconcile};
use crate::table::AttemptState;

/// What to do with a local task whose attempt the cluster marked lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LostFate {
    /// Write this state: the task still runs here, the cluster keeps it.
    Reclaim(AttemptState),
    /// Stop it.
    Kill(KillReason),
    /// Decide once this node holds a majority again.
    Wait,
}

impl Scheduler {
    /// How much of the cluster this node reaches, from the membership core, after every change.
    pub fn handle_quorum(&mut self, now: Millis, quorum: &Quorum) {
        self.tick(now);
        let before = &self.reach.quorum;
        let changed = quorum.majority != before.majority;
        let (was_cut, is_cut) = (before.cut_off(), quorum.cut_off());
        if was_cut != is_cut {
            // A declaration of this node down that outlived its grace cuts it off from the
            // declaration on; a stalled node found cut off, from now.
            let at = if changed || before.just_declared_down {
                quorum.since
            } else {
                now
            };
            self.reach.streak.update(!is_cut, at);
        }
        self.reach.quorum = quorum.clone();
        if changed {
            // Slots waiting for a majority, lost tasks waiting to be reclaimed, GC: look again.
            self.work.everything = true;
        }
        if !quorum.majority {
            self.arm_disconnect_stop();
        }
        self.reconcile();
    }

    /// The quorum as last reported.
    #[must_use]
    pub fn quorum(&self) -> &Quorum {
        &self.reach.quorum
    }

    /// Whether this node may act for the cluster: condemn, place, collect garbage. It needs a
    /// majority, and a restored node first completes an exchange with a live peer.
    ///
    /// The member view must show a majority too: the quorum and the view arrive as separate
    /// inputs, and a view that already shows most members down must not be acted on with a
    /// quorum from before (at an exact half, the quorum's tie-break decides).
    pub(crate) fn may_act(&self) -> bool {
        let listed = self.members.listed;
        let live = u32::try_from(self.members.live.len()).unwrap_or(u32::MAX);
        let view_majority = live.saturating_mul(2) > listed
            || (live.saturating_mul(2) == listed && self.reach.quorum.majority);
        self.reach.quorum.majority && view_majority && !self.catching_up()
    }

    /// Restored (or new, and given a cluster to join or contacted by a peer) and not yet
    /// caught up: no peer it asked has answered, and [`CATCH_UP_MAX_MS`] have not passed since
    /// the wait began. A catch-up still waiting for a first contact does not hold it back.
    pub(crate) fn catching_up(&self) -> bool {
        self.reach.catch_up.as_ref().is_some_and(|c| {
            !c.on_contact && c.since.is_none_or(|t| self.now.since(t) < CATCH_UP_MAX_MS)
        })
    }

    /// [`Wake::CatchUp`]: the wait ran out with no answer; act on what this node has. Before
    /// this timer, a node alone stayed "waiting for a majority" until some other input came,
    /// and one whose asked peers died since waited for good.
    pub(crate) fn catch_up_ran_out(&mut self) {
        if self.reach.catch_up.is_some() && !self.catching_up() {
            tracing::warn!(
                asked = ?self.reach.catch_up.as_ref().map(|c| c.asked.len()),
                "no peer answered the catch-up in time: acting on the restored tables"
            );
            self.caught_up_with("");
        }
    }

    /// Act only after an exchange with a live peer, as a restored node does (or after
    /// [`CATCH_UP_MAX_MS`] with no answer). For a node that starts with nothing but was given
    /// a cluster to join: it may be a node back under its old name with an empty data dir
    /// (a replaced disk), whose attempt ids name it as placer like its first life's, and whose
    /// tables arrive from its peers in several messages (`docs/faults.md`).
    pub fn catch_up_before_acting(&mut self) {
        self.must_catch_up();
    }

    /// Catch up before acting (an armed catch-up becomes a due one).
    pub(crate) fn must_catch_up(&mut self) {
        self.reach
            .catch_up
            .get_or_insert_with(CatchUp::default)
            .on_contact = false;
    }

    /// For a node that starts with nothing and was given no cluster to join: act at once
    /// while alone (a new cluster's first node must not wait), and catch up, as a restored
    /// node does, on the first contact with a peer: a live peer in the member view, or a
    /// message from one, whichever comes first. It may be a cluster's first node back under
    /// its old name with an empty data dir, which its peers join again; its attempt ids name
    /// it as placer like its first life's, and its tables arrive in several messages
    /// (`docs/faults.md`). A new cluster's first node pays one exchange when the second
    /// joins. Does nothing to a core that already catches up.
    pub fn catch_up_on_first_contact(&mut self) {
        self.reach.catch_up.get_or_insert(CatchUp {
            on_contact: true,
            ..CatchUp::default()
        });
    }

    /// For a restored node whose last life knew no other member (a one-node cluster
    /// restarting, or one whose peers all left) and that was given no cluster to join: there
    /// is nobody to catch up with, so a due catch-up that has not begun becomes one that waits
    /// for a first contact, as for a new cluster's first node. It acts at once while alone;
    /// a peer that turns up (a member it never wrote down, joining it again) is asked before
    /// anything is placed or admitted. Waiting [`CATCH_UP_MAX_MS`] for nobody cost every
    /// restart of a one-node cluster 10 s without placements. Also for a new core with job
    /// records but no snapshot: the records say it lived before, and alone.
    ///
    /// A clean restart does *not* write on as its last start here
    /// ([`Scheduler::continue_writing_as`]): only a peer's answer can show that no peer holds
    /// ops of that start beyond the final snapshot, and one can, when the data dir was
    /// restored from a copy taken before the node gained peers (its known membership then
    /// says it was alone). Writing on would give a dot those peers hold to other content,
    /// and each side would refuse the other's for good. So the restart costs a writer in the
    /// version vectors, as a crash does (`docs/scheduler.md`, "Actors are per start").
    /// Returns whether a due catch-up was waived.
    pub fn knew_no_peer(&mut self) -> bool {
        match self.reach.catch_up.as_mut() {
            Some(c) if !c.on_contact && c.since.is_none() && c.asked.is_empty() => {
                c.on_contact = true;
                true
            }
            _ => false,
        }
    }

    /// A message from `from` while the catch-up waits for a first contact: this is it. Ask
    /// the sender before the message is acted on, so that nothing is placed or admitted
    /// from a part of the tables.
    pub(crate) fn contact_from(&mut self, from: &str) {
        let Some(c) = self.reach.catch_up.as_mut() else {
            return;
        };
        if !c.on_contact {
            return;
        }
        c.on_contact = false;
        tracing::info!(
            peer = from,
            "first contact with a peer: catching up before acting"
        );
        self.start_catch_up_clock();
        self.ask_to_catch_up(from.to_string());
    }

    /// The catch-up's deadline runs from now, if it does not run yet.
    fn start_catch_up_clock(&mut self) {
        let now = self.now;
        if let Some(c) = self.reach.catch_up.as_mut()
            && c.since.is_none()
        {
            c.since = Some(now);
            self.timers
                .insert((now.plus_ms(CATCH_UP_MAX_MS), Wake::CatchUp));
        }
    }

    /// Send `peer` our digest, asking for an answer.
    fn ask_to_catch_up(&mut self, peer: String) {
        let clock = self.tables().clock().clone();
        self.outbox.push_back(crate::message::Outgoing::one(
            &peer,
            crate::message::Message::Digest { clock, reply: true },
        ));
        if let Some(c) = self.reach.catch_up.as_mut() {
            c.asked.insert(peer);
        }
    }

    /// A digest answer from `from` arrived: everything the peer had when it answered has
    /// arrived too (one ordered stream per peer), so a restored node has caught up.
    pub(crate) fn caught_up_with(&mut self, from: &str) {
        if self.reach.catch_up.take().is_some() {
            self.resume_or_not(!from.is_empty());
            self.work.everything = true;
            self.requeue_deferred(None);
        }
    }

    /// While catching up: ask one live peer in `members` for what we lack, and another only
    /// once no peer asked is live any more; the first answer ends the catch-up. Asking every
    /// peer as it appeared (the first version) cost a cluster of new agents given `--join` a
    /// digest and an answer per pair while it formed: +1.7 MiB per agent at N = 32 and a
    /// slower join (`BENCHMARKS.md`, "Session 19").
    pub(crate) fn ask_to_catch_up_after(&mut self, members: &[shoal_gossip::MemberInfo]) {
        let node = self.node.as_str();
        let Some(c) = self.reach.catch_up.as_ref() else {
            return;
        };
        let live: Vec<&str> = members
            .iter()
            .filter(|m| {
                matches!(
                    m.status,
                    shoal_gossip::MemberStatus::Alive | shoal_gossip::MemberStatus::Suspect
                ) && m.id.name != node
            })
            .map(|m| m.id.name.as_str())
            .collect();
        if c.on_contact {
            if live.is_empty() {
                return;
            }
            tracing::info!("first live peer in view: catching up before acting");
        }
        if live.iter().any(|n| c.asked.contains(*n)) {
            self.start_catch_up_clock();
            return;
        }
        let fresh: Vec<&str> = live.into_iter().filter(|n| !c.asked.contains(*n)).collect();
        let peer = (!fresh.is_empty())
            .then(|| fresh[self.rng.below(fresh.len() as u64) as usize].to_string());
        if let Some(c) = self.reach.catch_up.as_mut() {
            c.on_contact = false;
        }
        self.start_catch_up_clock();
        if let Some(peer) = peer {
            self.ask_to_catch_up(peer);
        }
    }

    /// Why a slot this node coordinates is not placed while it may not act: a restarted node
    /// catching up, or no majority.
    pub(crate) fn why_not_acting(&self) -> PendingReason {
        if self.catching_up() {
            return PendingReason::CatchingUp;
        }
        PendingReason::NoMajority {
            reachable: self.reach.quorum.reachable,
            known: self.reach.quorum.known,
        }
    }

    /// When a local task of `spec`, admitted at `admitted`, must stop, this node being cut
    /// off: `stop_after_ms` after the streak without a stable majority began, or after the
    /// task was admitted if that is later (a task placed here while the node was cut off,
    /// or just before it learnt so, gets its own full window).
    fn stop_deadline(&self, spec: &JobSpec, admitted: Millis) -> Option<Millis> {
        if !self.reach.quorum.cut_off() {
            return None;
        }
        let after = spec.stop_after_disconnect_ms()?;
        let streak = self.reach.streak.stop_at(after, self.reach.quorum.since);
        Some(streak.max(admitted.plus_ms(after)))
    }

    /// Arm a wake-up at the earliest stop deadline of the local tasks.
    pub(crate) fn arm_disconnect_stop(&mut self) {
        let earliest = self
            .target
            .ledger
            .iter()
            .filter(|(_, t)| !t.killing)
            .filter_map(|(id, t)| {
                let (inc, entry) = self.tables().job(&id.job)?;
                (inc == id.incarnation).then(|| self.stop_deadline(&entry.spec, t.since))?
            })
            .min();
        if let Some(at) = earliest {
            self.timers.insert((at.max(self.now), Wake::Disconnect));
        }
    }

    /// `Wake::Disconnect`: stop the local tasks whose deadline has passed.
    pub(crate) fn stop_disconnected(&mut self) {
        if !self.reach.quorum.cut_off() {
            return;
        }
        let now = self.now;
        let doomed: Vec<(AttemptId, KillReason)> = self
            .target
            .ledger
            .iter()
            .filter(|(_, t)| !t.killing)
            .filter(|(id, t)| {
                self.tables()
                    .job(&id.job)
                    .filter(|(inc, _)| *inc == id.incarnation)
                    .and_then(|(_, e)| self.stop_deadline(&e.spec, t.since))
                    .is_some_and(|at| at <= now)
            })
            .map(|(id, _)| (id.clone(), KillReason::Disconnected))
            .collect();
        self.kill_doomed(doomed);
        self.arm_disconnect_stop();
    }

    /// A local task whose attempt the cluster marked lost: the incumbent wins when it still
    /// runs here, this start of the node admitted it, and the job keeps originals; it is
    /// killed when it was found at a restart, never started, or the job keeps replacements.
    /// Reclaiming waits for a majority, so the claim reaches the cluster at once.
    pub(crate) fn lost_fate(
        &self,
        id: &AttemptId,
        state: &AttemptState,
        spec: &JobSpec,
    ) -> LostFate {
        let Some(task) = self.target.ledger.get(id) else {
            return LostFate::Kill(KillReason::Lost);
        };
        let Some(since) = task.started.filter(|_| !task.recovered) else {
            return LostFate::Kill(KillReason::Lost);
        };
        if spec.disconnect.reconcile == Reconcile::KeepReplacement {
            return LostFate::Kill(KillReason::Lost);
        }
        if !self.may_act() {
            return LostFate::Wait;
        }
        match state.reclaimed(since) {
            Some(next) => LostFate::Reclaim(next),
            None => LostFate::Kill(KillReason::Lost),
        }
    }
}
