//! The node's identity in the view: namesakes and name conflicts, newer generations of this
//! node, forgetting long-down members, and keeping the quorum current.

use crate::types::{MemberStatus, NodeId};

use super::{Membership, Namesake};

impl Membership {
    /// Another identity with this node's name. At this node's own address it is an earlier
    /// or later incarnation of this node (SWIM renames settle it). Elsewhere it is a second
    /// agent under the same name. Which of the two is the newcomer is fixed when this node
    /// first sees the address: a namesake seen within `name_join_grace` of this node's join
    /// was there first. The incumbent re-asserts the name with a newer generation than the
    /// intruder's, so the cluster's view of the name (keyed by name, newest generation wins)
    /// stays its own; the newcomer gives the name up after `name_conflict_after`
    /// (`check_namesakes`). The view never shows a namesake.
    pub(super) fn on_namesake(&mut self, id: NodeId, status: MemberStatus) {
        if id.addr == self.identity().addr {
            return;
        }
        let now = self.now;
        let grace = self.config.name_join_grace.as_millis() as u64;
        let first = self
            .joining
            .joined_at()
            .is_none_or(|j| now.since(j) <= grace);
        let live = matches!(status, MemberStatus::Alive | MemberStatus::Suspect);
        let entry = self.namesakes.entry(id.addr).or_insert(Namesake {
            id: id.clone(),
            alive_since: None,
            first,
        });
        if id.generation < entry.id.generation {
            return;
        }
        entry.id = id.clone();
        entry.alive_since = if live {
            entry.alive_since.or(Some(now))
        } else {
            None
        };
        let incumbent = !entry.first;
        if live
            && incumbent
            && id.generation >= self.identity().generation
            && self.conflict.is_none()
        {
            let mut renewed = self.identity().clone();
            renewed.generation = id.generation.wrapping_add(1);
            tracing::warn!(intruder = %id, "another agent uses this node's name; re-asserting it as generation {}", renewed.generation);
            self.swim_call(|swim, rt| swim.change_identity(renewed.clone(), rt));
            self.adopt_generation(renewed);
        }
    }

    /// This node now is `id` (a newer generation of itself, which foca already uses): its ad
    /// starts over under that generation and the view shows it alive.
    pub(super) fn adopt_generation(&mut self, id: NodeId) {
        self.own_ad.generation = id.generation;
        self.own_ad.version = 1;
        let ad = self.own_ad.clone();
        self.publish(ad);
        self.set_status(id, MemberStatus::Alive);
    }

    /// A newcomer that has seen a namesake that was there first alive for
    /// `name_conflict_after` gives the name up.
    pub(super) fn check_namesakes(&mut self) {
        if self.conflict.is_some() {
            return;
        }
        let after = self.config.name_conflict_after.as_millis() as u64;
        let now = self.now;
        if let Some(n) = self
            .namesakes
            .values()
            .find(|n| n.first && n.alive_since.is_some_and(|t| now.since(t) >= after))
        {
            tracing::error!(holder = %n.id, "this node's name is used by a live agent at another address");
            self.conflict = Some(n.id.clone());
        }
    }

    pub(super) fn refresh_quorum(&mut self) {
        let index = &self.index;
        let had = self.quorum.current().majority;
        // A failed probe keeps counting once its member is down at the generation probed: the
        // member going down says nothing about whether this node can reach the others. (It
        // stopped counting before, and an isolated node whose own suspicion declared the first
        // probed member down while its view still showed 3 of 5 alive got its majority back
        // until the next probe failed: a scheduler core placed work in that moment.) A member
        // that left, or came back as a new generation, no longer counts.
        let changed = self.quorum.evaluate(self.now, |name, generation| {
            index.get(name).is_some_and(|k| {
                k.generation == generation
                    && matches!(
                        k.status,
                        MemberStatus::Alive | MemberStatus::Suspect | MemberStatus::Down
                    )
            })
        });
        if changed && self.quorum.current().majority != had {
            let q = self.quorum.current();
            if q.majority {
                tracing::info!(
                    reachable = q.reachable,
                    known = q.known,
                    "majority regained"
                );
                self.regain_announces = super::REGAIN_ANNOUNCE_ROUNDS;
                self.announce_to_every_down_member();
            } else if self.left {
                // This node's own leave: the last one to go sees nobody, which is no fault.
                tracing::debug!(
                    reachable = q.reachable,
                    known = q.known,
                    "left: no majority"
                );
            } else {
                tracing::warn!(reachable = q.reachable, known = q.known, reason = ?q.reason, "no majority");
            }
        }
    }

    /// A node holding a majority forgets the members down longer than `forget_down_after`.
    pub(super) fn forget_long_down(&mut self) {
        if !self.quorum.current().majority {
            return;
        }
        for name in self
            .quorum
            .down_longer_than(self.config.forget_down_after, self.now)
        {
            if self.quorum.forget(&name).is_ok() {
                tracing::info!(member = %name, "down longer than forget_down_after; forgotten");
                self.forgotten_here(name);
            }
        }
    }
}
