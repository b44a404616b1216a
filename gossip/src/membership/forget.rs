//! Forgetting a member for good (`shoal node forget`, `forget_down_after`), and telling it
//! until every member has heard.
//!
//! The operator's forget used to go out once, in one datagram to each member alive in the
//! asking agent's view. A member that missed it (the datagram lost, the member cut off or down
//! at that moment, or restarted since from a known-members file that still names the node)
//! kept counting the forgotten node in its quorum, for good when it held no majority (a
//! majority forgets on its own after `forget_down_after`; a minority never does). That is the
//! case the forget exists for: the survivors of a lost rack.
//!
//! So every node that forgets a node on the operator's word keeps the forget for
//! [`RETELL_FOR_MS`] and tells it again: to the member of each digest sync (every
//! `sync_period`), and to every member that comes up. A receiver applies it as the first one
//! did, and keeps and tells it in turn. The forget carries the newest generation of the node
//! its sender knew: a node that has heard of a newer one (it came back since, which makes it
//! known again) refuses, and a node drops a forget it keeps once it hears of the node again
//! at that generation or a newer one, alive.

use compact_str::CompactString;

use crate::types::{MemberStatus, Millis};
use crate::wire;

use super::quorum::ForgetError;
use super::{MemberEvent, Membership};

/// How long a node tells a forget again after it forgot: an hour of digest syncs.
pub(crate) const RETELL_FOR_MS: u64 = 3_600 * 1000;
/// Most forgets a node keeps telling; past it, the oldest goes (a lost rack is well under).
pub(crate) const MAX_RETOLD: usize = 128;

/// A forget this node tells again (`Membership::forgotten`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Told {
    /// The newest generation of the node known when it was forgotten (0: none).
    pub(crate) generation: u64,
    /// When this node forgot it.
    pub(crate) at: Millis,
}

impl Membership {
    /// Forgets a member that is down for good (the operator says so): it no longer counts
    /// toward the majority, here and on every other member, told at once if alive in this
    /// node's view and later otherwise (the module docs). Works without a majority, so that
    /// the survivors of a lost rack can regain one.
    pub fn forget(&mut self, now: Millis, name: &str) -> Result<(), ForgetError> {
        self.now = now;
        self.quorum.forget(name)?;
        tracing::info!(
            member = name,
            "forgotten: no longer counted in the known membership"
        );
        let generation = self.records.get(name).map_or(0, |r| r.id.generation);
        self.keep_telling(name.into(), generation);
        let peers: Vec<std::net::SocketAddr> = self
            .records
            .values()
            .filter(|r| r.status == MemberStatus::Alive && r.id != *self.identity())
            .map(|r| r.id.addr)
            .collect();
        for to in peers {
            self.tell_forget(to, name, generation);
        }
        self.refresh_quorum();
        Ok(())
    }

    /// A peer's forget datagram.
    pub(super) fn on_forget(&mut self, from: std::net::SocketAddr, forget: wire::Forget) {
        let name = forget.name;
        if let (Some(told), Some(r)) = (forget.generation, self.records.get(&name))
            && r.id.generation > told
        {
            tracing::debug!(member = %name, %from, "not forgotten: a newer generation came back");
            return;
        }
        match self.quorum.forget(&name) {
            Ok(()) => {
                tracing::info!(member = %name, %from, "forgotten on a peer's word");
                let known = self.records.get(&name).map_or(0, |r| r.id.generation);
                self.keep_telling(name, forget.generation.unwrap_or(known));
                self.refresh_quorum();
            }
            // Told again by every node that forgot it: already done here.
            Err(ForgetError::Unknown(_)) => {}
            // Alive here: told again until the teller hears so too, so not at `info`.
            Err(e) => tracing::debug!(member = %name, %from, error = %e, "not forgotten"),
        }
    }

    /// A forget of the quorum's own (`forget_down_after`): shown like the operator's, not
    /// told (every node holding a majority does it itself).
    pub(super) fn forgotten_here(&mut self, name: CompactString) {
        self.events.push_back(MemberEvent::Forgotten { name });
    }

    /// Tells `to` every forget this node keeps: at a digest sync, and when `to` comes up.
    pub(super) fn retell_forgets(&mut self, to: std::net::SocketAddr) {
        if self.forgotten.is_empty() {
            return;
        }
        self.drop_stale_forgets();
        for (name, generation) in self.forgets_told() {
            self.tell_forget(to, &name, generation);
        }
    }

    /// The forgets this node keeps telling: (name, generation), by name.
    #[must_use]
    pub fn forgets_told(&self) -> Vec<(CompactString, u64)> {
        self.forgotten
            .iter()
            .map(|(n, t)| (n.clone(), t.generation))
            .collect()
    }

    fn keep_telling(&mut self, name: CompactString, generation: u64) {
        self.events
            .push_back(MemberEvent::Forgotten { name: name.clone() });
        self.forgotten.insert(
            name,
            Told {
                generation,
                at: self.now,
            },
        );
        while self.forgotten.len() > MAX_RETOLD {
            let oldest = self
                .forgotten
                .iter()
                .min_by_key(|(_, t)| t.at)
                .map(|(n, _)| n.clone());
            if let Some(n) = oldest {
                self.forgotten.remove(&n);
            }
        }
    }

    /// Drops the forgets told long enough, and those of nodes heard of again, alive, at
    /// the forgotten generation or a newer one.
    fn drop_stale_forgets(&mut self) {
        let now = self.now;
        let records = &self.records;
        self.forgotten.retain(|name, t| {
            let back = records.get(name).is_some_and(|r| {
                r.status == MemberStatus::Alive && r.id.generation >= t.generation
            });
            now.since(t.at) < RETELL_FOR_MS && !back
        });
    }

    fn tell_forget(&mut self, to: std::net::SocketAddr, name: &str, generation: u64) {
        let msg = wire::encode(
            wire::KIND_FORGET,
            &wire::Forget {
                name: name.into(),
                generation: Some(generation),
            },
        );
        self.push_out(to, msg);
    }
}
