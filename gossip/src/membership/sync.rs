//! How news travels besides SWIM: joining through seeds, anti-entropy syncs, resource ads,
//! and identities known only from ads.

use std::net::SocketAddr;

use compact_str::CompactString;
use rand::RngExt;

use crate::types::{MemberStatus, NodeId, ResourceAd};
use crate::wire::{self, Sync, Want};

use super::{CHASE_ATTEMPTS, CHASES_PER_SYNC, MemberEvent, Membership, Tick};
use crate::types::Millis;

/// When a node announces again after hearing from its first member, in milliseconds from then
/// (`Membership::follow_up_join`).
const FOLLOW_UP_AFTER_MS: [u64; 3] = [200, 500, 1_000];

impl Membership {
    pub(super) fn handle_sync(&mut self, from: SocketAddr, sync: Sync) {
        let their_digest = sync.digest;
        let want = sync.want;
        self.offer_ad(sync.ad, false);
        self.drain_ad_changes();
        let reply = match want {
            Want::Nothing => return,
            Want::Yours => vec![wire::encode_ad(&self.own_ad)],
            Want::AllIfDifferent => {
                let ads = self.ads.lock();
                if ads.digest() == their_digest {
                    return;
                }
                ads.encoded_differing(&their_digest)
            }
        };
        self.send_ads(from, &reply);
    }

    /// Sends encoded ads to `to`, split into datagrams that fit.
    pub(super) fn send_ads(&mut self, to: SocketAddr, ads: &[Vec<u8>]) {
        let budget = self.config.max_packet_size.saturating_sub(16);
        let mut start = 0;
        let mut size = 0;
        for (i, ad) in ads.iter().enumerate() {
            let len = ad.len();
            if i > start && size + len > budget {
                self.push_out(to, wire::encode_ads_batch(&ads[start..i]));
                start = i;
                size = 0;
            }
            size += len;
        }
        if start < ads.len() {
            self.push_out(to, wire::encode_ads_batch(&ads[start..]));
        }
    }

    pub(super) fn announce_to(&mut self, seed: SocketAddr) {
        // A placeholder identity with the seed's address: foca accepts an announce whose
        // destination has its own address, whatever name and generation it carries.
        let dst = NodeId {
            name: CompactString::default(),
            addr: seed,
            generation: 0,
        };
        self.swim_call(|swim, rt| swim.announce(dst, rt));
    }

    pub(super) fn retry_join(&mut self) {
        if self.left || self.joining.seeds().is_empty() {
            return;
        }
        if self.swim.num_members() == 0 {
            for seed in self.joining.seeds().to_vec() {
                self.announce_to(seed);
            }
            self.join_backoff = (self.join_backoff * 2).min(self.config.join_retry_max);
            self.joining.attempted(self.now, self.join_backoff);
        } else {
            // Joined; keep watching so an isolated node goes back to its seeds.
            self.join_backoff = self.config.join_retry_min;
        }
        let next = if self.swim.num_members() == 0 {
            self.join_backoff
        } else {
            self.config.join_retry_max
        };
        self.schedule(self.now.plus(next), Tick::JoinRetry);
    }

    /// Schedules the follow-up announces of a node that has just heard from its first member.
    pub(super) fn schedule_follow_ups(&mut self, now: Millis) {
        if let Some(&first) = FOLLOW_UP_AFTER_MS.first() {
            self.schedule(now.plus_ms(first), Tick::FollowUp(0));
        }
    }

    /// Announces once more to a random member some time after joining, so that its feed
    /// fills in members this node missed. A joiner's first full view is the seed's feed,
    /// taken while others may still be joining; the joins that reach the seed later spread
    /// by piggy-backed gossip, `max_transmissions` times each, and while many nodes join at
    /// once most of those transmissions go out before the gossipers know this node. Without
    /// a follow-up, a node that missed them learned the rest only from the next digest sync
    /// (10 s) or from being probed by each missing member (seen in 14 of 200 simulated
    /// 32-node joins; `docs/membership.md`).
    pub(super) fn follow_up_join(&mut self, k: u8) {
        if self.left {
            return;
        }
        // Identities the previous follow-up's digest sync found (ads of nodes this node's SWIM
        // never heard of) are chased now rather than at the next periodic sync.
        self.chase_unheard();
        if let Some(to) = self.random_member() {
            self.stats.follow_up_announces += 1;
            self.announce_to(to);
        }
        if k == 0 {
            // One digest sync early instead of a full period after joining: a feed holds what
            // fits in one datagram (about 30 members), the ads hold everyone.
            self.sync_with_random_member();
        }
        let next = usize::from(k) + 1;
        if let (Some(&at), Some(&prev)) = (
            FOLLOW_UP_AFTER_MS.get(next),
            FOLLOW_UP_AFTER_MS.get(usize::from(k)),
        ) {
            self.schedule(self.now.plus_ms(at - prev), Tick::FollowUp(next as u8));
        }
    }

    pub(super) fn send_sync(&mut self, to: SocketAddr, want: Want) {
        let digest = self.ads.lock().digest();
        let msg = Sync {
            digest,
            want,
            ad: self.own_ad.clone(),
        };
        self.stats.syncs_sent += 1;
        self.push_out(to, wire::encode(wire::KIND_SYNC, &msg));
    }

    /// The gossip address of a member foca considers active, picked at random.
    fn random_member(&mut self) -> Option<SocketAddr> {
        let n = self.swim.num_members();
        if n == 0 {
            return None;
        }
        let pick = self.rng.random_range(0..n);
        self.swim.iter_members().nth(pick).map(|m| m.id().addr)
    }

    /// Returns the member synced with.
    pub(super) fn sync_with_random_member(&mut self) -> Option<SocketAddr> {
        if self.left {
            return None;
        }
        let to = self.random_member()?;
        self.send_sync(to, Want::AllIfDifferent);
        Some(to)
    }

    pub(super) fn publish(&mut self, ad: ResourceAd) {
        self.own_ad = ad.clone();
        let bytes = wire::encode_ad(&ad);
        self.swim_call(|swim, _| swim.add_broadcast(&bytes).map(|_| ()));
    }

    /// Keeps `ad` if it is newer than what is known. With `spread`, it goes through foca's
    /// broadcast backlog so this node also spreads it by piggy-back; without, it is only
    /// stored. Ads learned by pull (join pulls, digest syncs) are not spread: their owners
    /// already gossip them, and re-spreading every pulled ad made each node's backlog hold the
    /// whole cluster's ads while a large cluster started (foca walks that backlog for every
    /// datagram it sends).
    pub(super) fn offer_ad(&mut self, ad: ResourceAd, spread: bool) {
        if ad.node == self.own_ad.node {
            return; // nobody knows our resources better than we do
        }
        if spread {
            let bytes = wire::encode_ad(&ad);
            self.swim_call(|swim, _| swim.add_broadcast(&bytes).map(|_| ()));
        } else {
            self.ads.lock().offer(ad);
        }
    }

    pub(super) fn drain_ad_changes(&mut self) {
        let changed: Vec<CompactString> = std::mem::take(&mut self.ads.lock().changed);
        for name in changed {
            if name == self.own_ad.node {
                continue;
            }
            let Some(ad) = self.ads.lock().ads.get(&name).map(|ad| (**ad).clone()) else {
                continue;
            };
            self.note_unheard(&ad);
            if let Some(r) = self.records.get_mut(&name) {
                r.last_update = self.now;
                if ad.left && ad.generation == r.id.generation && r.status == MemberStatus::Down {
                    let id = r.id.clone();
                    self.set_status(id, MemberStatus::Left);
                }
            }
            self.events.push_back(MemberEvent::Resources { ad });
        }
    }

    /// Whether the view already holds `generation` (or a newer one) of `name`.
    pub(super) fn heard_of(&self, name: &str, generation: u64) -> bool {
        self.index
            .get(name)
            .is_some_and(|k| k.generation >= generation)
    }

    /// Remembers an identity (name, gossip address, generation) that an ad names but this
    /// node's SWIM has not heard of. Piggy-backed gossip can miss a node — a join, or a rejoin
    /// after a partition, in a large cluster — and nothing in SWIM corrects that before a probe
    /// happens to reach it, up to N probe periods later; ads, which converge by digest sync,
    /// notice it.
    pub(super) fn note_unheard(&mut self, ad: &ResourceAd) {
        let Some(addr) = ad.gossip_addr else {
            return;
        };
        if ad.left || addr == self.identity().addr || self.heard_of(&ad.node, ad.generation) {
            return;
        }
        let known = self
            .unheard
            .insert(ad.node.clone(), (ad.generation, addr, CHASE_ATTEMPTS));
        if known.is_some() {
            return;
        }
        match self.fresh_unheard.as_mut() {
            Some(fresh) => fresh.push(ad.node.clone()),
            None if !self.chase_queued => {
                // Gossip brought the ad: SWIM's own update about the identity usually comes
                // with it or soon after; chase whatever is still unheard a second later
                // instead of at the next periodic sync.
                self.chase_queued = true;
                self.schedule(self.now.plus(self.config.chase_after_gossip), Tick::Chase);
            }
            None => {}
        }
    }

    /// Announces once, at once, to the identities that a pull reply (`KIND_ADS`: the answer to
    /// a digest sync) has just revealed, instead of waiting for the next chase (the next
    /// join follow-up or periodic sync). Their chase attempts are left for those.
    ///
    /// Why: the join's early sync (0.2 s) found the members a joiner's feeds had missed, and
    /// they were chased only at the 0.5 s follow-up; in 1 of 50 real 32-agent joins that
    /// follow-up was what completed the view, 0.52 s after the last start (issue 17). A reply
    /// is the answer this node asked for, so the identities in it are not ones that gossip is
    /// about to deliver anyway; the reply's size bounds the announces (at most
    /// `CHASES_PER_SYNC`), the first in name order.
    ///
    /// The fresh names are the ones `note_unheard` added while the reply was handled (nothing
    /// removes an entry meanwhile): collecting them as they come costs what the reply holds,
    /// where comparing a copy of `unheard` taken before cost a tree of every identity still
    /// unheard, per reply (a sixth of the 1,000-node simulation's time while its nodes
    /// joined and re-merged).
    pub(super) fn chase_fresh_unheard(&mut self) {
        let mut fresh = self.fresh_unheard.take().unwrap_or_default();
        fresh.sort_unstable();
        let fresh: Vec<SocketAddr> = fresh
            .iter()
            .take(CHASES_PER_SYNC)
            .filter_map(|name| self.unheard.get(name).map(|&(_, addr, _)| addr))
            .collect();
        for addr in fresh {
            self.stats.identity_chases += 1;
            self.announce_to(addr);
        }
    }

    /// Announces to a few identities known only from ads: a live one answers, and foca learns
    /// it from the answer (a datagram's sender is alive); a dead one (ads outlive their
    /// nodes) does not, and is forgotten after a few tries. An ad alone never makes a member
    /// look alive. Most entries resolve themselves first, when gossip catches up.
    pub(super) fn chase_unheard(&mut self) {
        let unheard = std::mem::take(&mut self.unheard);
        let mut chased = 0;
        for (name, (generation, addr, attempts)) in unheard {
            if self.heard_of(&name, generation) {
                continue;
            }
            if chased < CHASES_PER_SYNC {
                chased += 1;
                self.stats.identity_chases += 1;
                self.announce_to(addr);
                if attempts > 1 {
                    self.unheard.insert(name, (generation, addr, attempts - 1));
                }
            } else {
                self.unheard.insert(name, (generation, addr, attempts));
            }
        }
    }
}
