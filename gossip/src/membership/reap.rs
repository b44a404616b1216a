//! Letting go of members that are gone for good.
//!
//! The view used to keep a record of every member it ever heard of, and the ad store every
//! ad, for the agent's life: a node that left stayed listed `left`, a forgotten node stayed in
//! the scheduler's view as `down`, and their ads went on being exchanged by digest sync, so an
//! agent started since learned them again. A cluster that replaces its nodes under new names
//! (autoscaled or spot machines) grew all of that by one node per replacement, for good.
//!
//! A member is let go of ("reaped", as Serf says) [`crate::Config::reap_after`] (24 h) after
//! its record last changed, if it left, or if it is down and no longer in the known
//! membership (forgotten by the operator or by a majority, `forget.rs`). A member still
//! known, down or not, is never reaped: it counts toward the majority. Its record, its ad and
//! its pending chases go, the scheduler's view no longer holds it, and the listing never did.
//! An ad that no record of this node's view has matched for as long goes too: its node was
//! not heard of here in that time.
//!
//! Peers let go at slightly different times, and until they do they still hold the record and
//! the ad: for another `reap_after`, this node refuses that identity and every older
//! generation of its name, as a record (a SWIM update foca still holds) and as an ad (a digest
//! sync). A newer generation, the node back under its name, is heard as usual. An ad let go
//! of for want of a record refuses only ads: should SWIM ever bring its node alive, the
//! node is heard, and its ads are taken again.

use compact_str::CompactString;

use crate::types::{MemberStatus, Millis, NodeId};

use super::{MemberEvent, Membership, left_join_sorted};

/// A name this node let go of (`Membership::reaped`).
#[derive(Debug, Clone, Copy)]
pub(super) struct Reaped {
    /// Refused at this generation and older.
    generation: u64,
    /// Since when.
    at: Millis,
    /// Its record was let go of, so the identity is refused too; `false`: only its ad was
    /// held, and only ads are refused.
    record: bool,
}

impl Membership {
    /// Whether `id` is a generation of a member this node let go of (or an older one).
    pub(super) fn is_reaped(&self, id: &NodeId) -> bool {
        self.reaped
            .get(&id.name)
            .is_some_and(|r| r.record && id.generation <= r.generation)
    }

    /// `name` is heard of alive: an ad let go of for want of a record is taken again.
    pub(super) fn heard_alive(&mut self, name: &str) {
        if self.reaped.get(name).is_some_and(|r| !r.record) {
            self.reaped.remove(name);
            self.ads.lock().unreap(name);
        }
    }

    /// Lets go of the members gone for `reap_after`, and of the refusals older than that
    /// (every full scan).
    pub(super) fn reap_gone(&mut self) {
        let after = self.config.reap_after.as_millis() as u64;
        let now = self.now;
        let expired: Vec<CompactString> = self
            .reaped
            .iter()
            .filter(|(_, r)| now.since(r.at) >= after)
            .map(|(name, _)| name.clone())
            .collect();
        for name in expired {
            self.reaped.remove(&name);
            self.ads.lock().unreap(&name);
        }
        let me = self.own_ad.node.clone();
        let gone: Vec<NodeId> = self
            .records
            .values()
            .filter(|r| r.id.name != me && now.since(r.last_update) >= after)
            .filter(|r| match r.status {
                MemberStatus::Left => true,
                MemberStatus::Down => !self.quorum.is_known(&r.id.name),
                MemberStatus::Alive | MemberStatus::Suspect => false,
            })
            .map(|r| r.id.clone())
            .collect();
        for id in gone {
            tracing::info!(member = %id, "let go of: gone for good, no longer in the view");
            self.reap(id.name, id.generation, true);
        }
        // Ads no record matches: dated from the first full scan that found them so. Both maps
        // are in name order, so one walk side by side finds them (a tree search per ad cost
        // the 1,000-node simulation about 3 % of its time).
        let recordless: Vec<(CompactString, u64)> = {
            let ads = self.ads.lock();
            left_join_sorted(ads.ads.iter(), self.records.iter())
                .filter(|(name, _, record)| record.is_none() && **name != me)
                .map(|(name, ad, _)| (name.clone(), ad.generation))
                .collect()
        };
        let mut since = std::mem::take(&mut self.recordless);
        for (name, generation) in recordless {
            let first = since.remove(&name).unwrap_or(now);
            if now.since(first) >= after {
                tracing::info!(
                    member = %name,
                    generation,
                    "let go of the ad of a member not heard of here"
                );
                self.reap(name, generation, false);
            } else {
                self.recordless.insert(name, first);
            }
        }
    }

    /// Drops everything the view holds of `name` at `generation` or older, and refuses it
    /// (its ads, and with `record` its identity) from now on for `reap_after`.
    fn reap(&mut self, name: CompactString, generation: u64, record: bool) {
        self.records.remove(&name);
        self.index.remove(&name);
        self.suspects.remove(&name);
        self.unheard.remove(&name);
        self.ads.lock().reap(&name, generation);
        let at = self.now;
        self.reaped.insert(
            name.clone(),
            Reaped {
                generation,
                at,
                record,
            },
        );
        self.events.push_back(MemberEvent::Reaped { name });
    }

    /// The names this node lets go of and refuses for now, with the generation refused.
    #[must_use]
    pub fn reaped(&self) -> Vec<(CompactString, u64)> {
        self.reaped
            .iter()
            .map(|(name, r)| (name.clone(), r.generation))
            .collect()
    }
}
