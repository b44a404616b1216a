//! The membership core: foca SWIM plus identities, seeds, resource ads and a member view.
//!
//! Drive it like quinn-proto's `Connection`:
//! 1. feed inputs: [`Membership::handle_datagram`] for every datagram received (after the
//!    transport opened its seal), [`Membership::handle_timeout`] when the deadline from
//!    [`Membership::poll_timeout`] has passed, and commands ([`Membership::join`],
//!    [`Membership::set_ad`], [`Membership::leave`]);
//! 2. after every input, drain [`Membership::poll_transmit`] (datagrams to seal and send)
//!    and [`Membership::poll_event`] (member events), then re-read `poll_timeout`; a shell
//!    that times probes also drains [`Membership::poll_probe`] (the last few are kept), and
//!    one that logs for an operator takes [`Membership::poll_join_notice`] (the newest is
//!    kept).
//!
//! Timers live inside the core in one ordered queue, so foca always gets them in order.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use compact_str::CompactString;
use foca::{Foca, PostcardCodec, State, Timer};
use rand::{SeedableRng, rngs::StdRng};
use rustc_hash::FxHashMap;

mod forget;
mod join;
mod names;
mod quorum;
mod reap;
mod sync;
mod view;

use join::JoinTracker;
pub use quorum::ForgetError;
use quorum::QuorumTracker;

use crate::ads::{AdCache, AdHandler, SharedAds};
use crate::config::Config;
use crate::swim_io::{Note, Outputs, ProbeEvent};
use crate::types::{
    JoinNotice, JoinStatus, MemberInfo, MemberStatus, Millis, NodeId, Quorum, ResourceAd,
};
use crate::wire::{self, Ads, DecodeError, Want};

type Swim = Foca<NodeId, PostcardCodec, StdRng, AdHandler>;

/// Every how many scans the whole view is reconciled with foca's member list (the safety net
/// behind the incremental updates; see `swim_io`).
const FULL_SCAN_EVERY: u64 = 20;

/// Identities known only from ads that one sync period may announce to, and how many times
/// each is tried before it is given up (see `Membership::chase_unheard`).
const CHASES_PER_SYNC: usize = 16;
const CHASE_ATTEMPTS: u8 = 3;
/// Rounds of announces to every down member after a regained majority, one per probe period
/// (`Membership::announce_to_every_down_member`).
const REGAIN_ANNOUNCE_ROUNDS: u8 = 3;

/// Whether a recorded status still matches foca's state for the same identity. Down and left
/// both read as foca's `Down`; telling them apart needs the ad, which `drain_ad_changes`
/// applies when it arrives, so the scan need not look it up for every down member.
fn same_status(recorded: MemberStatus, state: State) -> bool {
    matches!(
        (recorded, state),
        (MemberStatus::Alive, State::Alive)
            | (MemberStatus::Suspect, State::Suspect)
            | (MemberStatus::Down | MemberStatus::Left, State::Down)
    )
}

/// What the view records of a name, for the lookups that keep it current.
#[derive(Debug, Clone, Copy)]
struct Indexed {
    generation: u64,
    addr: SocketAddr,
    status: MemberStatus,
}

/// Whether the view already shows foca's state for `m`, or holds a newer generation of its
/// name, or holds this generation at another address. A generation lives at one address; a
/// second address for it can only come from a forged or corrupted datagram (the transport's
/// seal stops those, unsealed simulations do not), and the view keeps the first.
fn recorded_current(index: &FxHashMap<CompactString, Indexed>, id: &NodeId, state: State) -> bool {
    index.get(&id.name).is_some_and(|known| {
        known.generation > id.generation
            || (known.generation == id.generation
                && (known.addr != id.addr || same_status(known.status, state)))
    })
}

impl foca::Identity for NodeId {
    type Addr = SocketAddr;

    /// A node that was declared down while alive rejoins as a new generation.
    fn renew(&self) -> Option<Self> {
        Some(NodeId {
            generation: self.generation.wrapping_add(1),
            ..self.clone()
        })
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Two identities on one address: the later generation (a restart) wins.
    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        (self.generation, &self.name) > (adversary.generation, &adversary.name)
    }
}

/// A datagram to send (the transport seals it first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Destination gossip address.
    pub to: SocketAddr,
    /// Unsealed payload.
    pub payload: Vec<u8>,
}

/// Something that changed in the member view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberEvent {
    /// A member's status changed (`from` is `None` the first time it is seen).
    Status {
        /// The identity the status is about.
        id: NodeId,
        /// Previous status.
        from: Option<MemberStatus>,
        /// New status.
        to: MemberStatus,
    },
    /// A newer resource ad arrived for a member.
    Resources {
        /// The new ad.
        ad: ResourceAd,
    },
    /// A member was forgotten here: it no longer counts in the known membership, and the
    /// listing leaves it out (`membership/forget.rs`).
    Forgotten {
        /// Its name.
        name: CompactString,
    },
    /// A member gone for good was let go of: the view and the ads no longer hold it
    /// (`membership/reap.rs`).
    Reaped {
        /// Its name.
        name: CompactString,
    },
}

/// Counters for reports and the agent's self view.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Stats {
    /// Datagrams handled.
    pub datagrams_in: u64,
    /// Datagrams refused (malformed, unknown kind, too large, refused by foca).
    pub datagrams_refused: u64,
    /// Datagrams emitted.
    pub datagrams_out: u64,
    /// Payload bytes emitted (before the seal).
    pub bytes_out: u64,
    /// Times this node marked some member suspect.
    pub suspect_marks: u64,
    /// Times this node marked some member down.
    pub down_marks: u64,
    /// Times a member this node held suspect came back alive (a false suspicion refuted).
    #[serde(default)]
    pub suspicions_refuted: u64,
    /// Current local health score (0 = healthy).
    pub health_score: u32,
    /// Digest syncs sent.
    pub syncs_sent: u64,
    /// Member statuses the periodic full scan found stale: changes foca made that the
    /// incremental view updates missed. Zero unless something in `swim_io` is incomplete.
    #[serde(default)]
    pub view_corrections: u64,
    /// Announces sent to identities known only from resource ads (SWIM gossip had missed
    /// them).
    #[serde(default)]
    pub identity_chases: u64,
    /// Follow-up announces sent after joining (`docs/membership.md`).
    #[serde(default)]
    pub follow_up_announces: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tick {
    Swim(Timer<NodeId>),
    JoinRetry,
    /// A follow-up announce after joining (`Membership::follow_up_join`).
    FollowUp(u8),
    Sync,
    Scan,
    /// Chase identities that gossiped ads named but SWIM has not delivered
    /// (`Membership::note_unheard`).
    Chase,
}

#[derive(Debug)]
struct Record {
    id: NodeId,
    status: MemberStatus,
    last_update: Millis,
    /// When this member last became suspect (cleared on any other status).
    suspect_since: Option<Millis>,
}

/// One node's membership core. See the module docs for the call order.
pub struct Membership {
    config: Config,
    swim: Swim,
    runtime: Outputs,
    ads: SharedAds,
    own_ad: ResourceAd,
    records: BTreeMap<CompactString, Record>,
    /// `(generation, address, status)` by name, mirroring `records` for the view's lookups
    /// (hashing a name is far cheaper than a B-tree walk of string compares at 1,000 nodes).
    /// Never iterated, so its order decides nothing.
    index: FxHashMap<CompactString, Indexed>,
    /// Names of the members currently recorded suspect.
    suspects: BTreeSet<CompactString>,
    /// Identities that resource ads name but SWIM never delivered: `(generation, gossip
    /// address, attempts left)` by name.
    unheard: BTreeMap<CompactString, (u64, SocketAddr, u8)>,
    /// While a pull reply is handled: the names `note_unheard` added to `unheard` (see
    /// `Membership::chase_fresh_unheard`). `None` otherwise.
    fresh_unheard: Option<Vec<CompactString>>,
    scans: u64,
    timers: BinaryHeap<Reverse<(Millis, u64, TimerSlot)>>,
    timer_seq: u64,
    outbox: VecDeque<Transmit>,
    events: VecDeque<MemberEvent>,
    /// The seeds, the announce rounds and the first member heard from (`membership/join.rs`).
    joining: JoinTracker,
    join_backoff: Duration,
    rng: StdRng,
    now: Millis,
    health: u32,
    late_since_scan: bool,
    sized_for: usize,
    left: bool,
    stats: Stats,
    quorum: QuorumTracker,
    /// `handle_timeout` ran at least once.
    driven: bool,
    /// Forgets this node tells again, by name (`membership/forget.rs`).
    forgotten: BTreeMap<CompactString, forget::Told>,
    /// Other live identities with this node's name, by address (see `on_namesake`).
    namesakes: BTreeMap<SocketAddr, Namesake>,
    /// The namesake that made this node give its name up.
    conflict: Option<NodeId>,
    /// foca's periodic gossip timer, held back while foca has nothing to gossip (see
    /// `unpark_gossip`): `(when it was due, the timer)`.
    parked_gossip: Option<(Millis, Timer<NodeId>)>,
    /// When this node last rejoined as a new generation. foca drops every pending timer then,
    /// suspicion timers included, so a suspicion older than this has no timer left and
    /// `expire_stale_suspects` times it out itself.
    renewed_at: Option<Millis>,
    /// A [`Tick::Chase`] is queued.
    chase_queued: bool,
    /// Rounds of announces to every member down in this view still to send after this node
    /// regained its majority (`Membership::announce_to_every_down_member`).
    regain_announces: u8,
    /// Names let go of, refused at the generation given or older, and when
    /// (`membership/reap.rs`).
    reaped: BTreeMap<CompactString, reap::Reaped>,
    /// Ads that no record matched at a full scan, and since which one.
    recordless: BTreeMap<CompactString, Millis>,
}

/// Another agent under this node's name.
#[derive(Debug)]
struct Namesake {
    id: NodeId,
    /// Since when it has been alive or suspect without a break; `None` while down.
    alive_since: Option<Millis>,
    /// It held the name before this node joined: this node is the newcomer.
    first: bool,
}

/// A timer in the queue; ordered by due time then insertion, never by payload.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TimerSlot(Tick);

impl PartialOrd for TimerSlot {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for TimerSlot {
    fn cmp(&self, _other: &Self) -> std::cmp::Ordering {
        std::cmp::Ordering::Equal
    }
}

impl std::fmt::Debug for Membership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Membership")
            .field("id", self.swim.identity())
            .field("members", &self.records.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Membership {
    /// Creates the core for `id`, advertising `ad` (its `node`/`generation` are overwritten
    /// from `id`). `seed` drives every random choice.
    #[must_use]
    pub fn new(id: NodeId, mut ad: ResourceAd, config: Config, seed: u64, now: Millis) -> Self {
        ad.node = id.name.clone();
        ad.generation = id.generation;
        ad.gossip_addr = Some(id.addr);
        ad.version = ad.version.max(1);
        let ads = SharedAds::default();
        ads.lock().offer(ad.clone());
        ads.lock().changed.clear();
        let swim = Foca::with_custom_broadcast(
            id.clone(),
            config.foca(0, 0),
            StdRng::seed_from_u64(seed),
            PostcardCodec,
            AdHandler(ads.clone()),
        );
        let probe_period = config.probe_period;
        let joining = JoinTracker::new(&config);
        let mut me = Self {
            join_backoff: config.join_retry_min,
            config,
            swim,
            runtime: Outputs::default(),
            ads,
            own_ad: ad,
            records: BTreeMap::new(),
            index: FxHashMap::default(),
            suspects: BTreeSet::new(),
            unheard: BTreeMap::new(),
            fresh_unheard: None,
            scans: 0,
            timers: BinaryHeap::new(),
            timer_seq: 0,
            outbox: VecDeque::new(),
            events: VecDeque::new(),
            joining,
            rng: StdRng::seed_from_u64(seed ^ 0x5eed_a11e),
            now,
            health: 0,
            late_since_scan: false,
            sized_for: 0,
            left: false,
            stats: Stats::default(),
            quorum: QuorumTracker::new(id.name.clone(), probe_period, now),
            driven: false,
            namesakes: BTreeMap::new(),
            conflict: None,
            forgotten: BTreeMap::new(),
            parked_gossip: None,
            renewed_at: None,
            chase_queued: false,
            regain_announces: 0,
            reaped: BTreeMap::new(),
            recordless: BTreeMap::new(),
        };
        me.index.insert(
            id.name.clone(),
            Indexed {
                generation: id.generation,
                addr: id.addr,
                status: MemberStatus::Alive,
            },
        );
        me.records.insert(
            id.name.clone(),
            Record {
                id,
                status: MemberStatus::Alive,
                last_update: now,
                suspect_since: None,
            },
        );
        me.schedule(now.plus(me.config.sync_period), Tick::Sync);
        me.schedule(now.plus(me.config.scan_period), Tick::Scan);
        let broadcast = wire::encode_ad(&me.own_ad);
        me.swim_call(|swim, rt| {
            swim.add_broadcast(&broadcast)
                .map(|_| ())
                .and(swim.broadcast(rt))
        });
        me
    }

    /// Shares the resource ads this core receives with every other core given the same
    /// `cache`: each ad is then held once in the process instead of once per core. For a
    /// process that runs many cores (the simulator); it changes no value a core holds.
    pub fn share_ads(&mut self, cache: AdCache) {
        self.ads.lock().cache = Some(cache);
    }

    /// This node's identity.
    #[must_use]
    pub fn identity(&self) -> &NodeId {
        self.swim.identity()
    }

    /// This node's current ad.
    #[must_use]
    pub fn own_ad(&self) -> &ResourceAd {
        &self.own_ad
    }

    /// Counters.
    #[must_use]
    pub fn stats(&self) -> Stats {
        Stats {
            health_score: self.health,
            ..self.stats
        }
    }

    /// Number of other members foca considers active (alive or suspect).
    #[must_use]
    pub fn active_members(&self) -> usize {
        self.swim.num_members()
    }

    /// Joins the cluster through `seed`, retrying with exponential back-off until at least
    /// one member is known. Several seeds may be given; each retry announces to all.
    pub fn join(&mut self, now: Millis, seed: SocketAddr) {
        self.now = now;
        if seed == self.identity().addr || self.joining.seeds().contains(&seed) {
            return;
        }
        let first = self.joining.seeds().is_empty();
        if first {
            self.join_backoff = self.config.join_retry_min;
        }
        self.joining.seed_added(now, seed, self.join_backoff);
        self.announce_to(seed);
        if first {
            self.schedule(now.plus(self.join_backoff), Tick::JoinRetry);
        }
    }

    /// How the join through the seeds stands: the seeds, whether another member was heard
    /// from, the announce rounds so far.
    #[must_use]
    pub fn join_status(&self) -> &JoinStatus {
        self.joining.status()
    }

    /// Replaces this node's advertised resources (capacity, allocated, attributes, draining,
    /// addresses) and spreads the new version. Identity fields of `ad` are ignored.
    pub fn set_ad(&mut self, now: Millis, mut ad: ResourceAd) -> Result<(), DecodeError> {
        self.now = now;
        ad.node = self.own_ad.node.clone();
        ad.generation = self.own_ad.generation;
        ad.gossip_addr = self.own_ad.gossip_addr;
        ad.version = self.own_ad.version + 1;
        ad.left = self.left;
        wire::check_ad(&ad)?;
        self.publish(ad);
        Ok(())
    }

    /// Leaves the cluster on purpose: marks the ad `left`, tells a few members directly and
    /// lets foca announce the departure. The core should not be driven afterwards except to
    /// drain `poll_transmit`.
    pub fn leave(&mut self, now: Millis) {
        self.now = now;
        self.left = true;
        let mut ad = self.own_ad.clone();
        ad.left = true;
        ad.version += 1;
        self.publish(ad);
        let push = wire::encode(
            wire::KIND_ADS,
            &Ads {
                ads: vec![self.own_ad.clone()],
            },
        );
        let targets: Vec<SocketAddr> = self
            .swim
            .iter_members()
            .take(3)
            .map(|m| m.id().addr)
            .collect();
        for to in targets {
            self.push_out(to, push.clone());
        }
        self.swim_call(|swim, rt| swim.leave_cluster(rt));
        self.set_status(self.identity().clone(), MemberStatus::Left);
        self.refresh_quorum();
    }

    /// Handles one datagram (already authenticated by the transport). Errors say why it was
    /// refused; a refused datagram changes nothing.
    pub fn handle_datagram(
        &mut self,
        now: Millis,
        from: SocketAddr,
        data: &[u8],
    ) -> Result<(), DecodeError> {
        self.now = now;
        self.stats.datagrams_in += 1;
        let result = self.dispatch(from, data);
        if result.is_err() {
            self.stats.datagrams_refused += 1;
        }
        self.refresh_quorum();
        result
    }

    fn dispatch(&mut self, from: SocketAddr, data: &[u8]) -> Result<(), DecodeError> {
        if self.left {
            return Ok(());
        }
        if data.len() > self.config.max_packet_size {
            return Err(DecodeError::TooLarge(data.len()));
        }
        let (&kind, payload) = data.split_first().ok_or(DecodeError::Empty)?;
        match kind {
            wire::KIND_SWIM => self.handle_swim(payload),
            wire::KIND_SYNC => {
                let sync = wire::decode_sync(payload)?;
                self.handle_sync(from, sync);
                Ok(())
            }
            wire::KIND_ADS => {
                let ads = wire::decode_ads(payload)?;
                self.fresh_unheard = Some(Vec::new());
                for ad in ads.ads {
                    // A departure is news its owner no longer spreads; everything else in
                    // a pull reply is what the cluster already gossiped.
                    let spread = ad.left;
                    self.offer_ad(ad, spread);
                }
                self.drain_ad_changes();
                self.chase_fresh_unheard();
                Ok(())
            }
            wire::KIND_FORGET => {
                let forget = wire::decode_forget(payload)?;
                self.on_forget(from, forget);
                Ok(())
            }
            other => Err(DecodeError::UnknownKind(other)),
        }
    }

    fn handle_swim(&mut self, payload: &[u8]) -> Result<(), DecodeError> {
        let mut refused = None;
        self.swim_call(|swim, rt| match swim.handle_data(payload, rt) {
            // Late traffic addressed to an older incarnation of ourselves is normal SWIM noise.
            Err(foca::Error::DataFromOurselves) => Ok(()),
            // An intact request to probe ourselves (or an answer routed back to us) comes from
            // a sender whose view holds a stale or phantom identity at our address; foca drops
            // it without a change, and it is not malformed. Seen in the unsealed-corruption
            // simulation (`corruption-unsealed`, seed 2, after issue 17's gossip change),
            // where bit flips plant such identities.
            Err(foca::Error::IndirectForOurselves) => Ok(()),
            Err(e) => {
                refused = Some(e.to_string());
                Ok(())
            }
            Ok(()) => Ok(()),
        });
        refused.map_or(Ok(()), |e| Err(DecodeError::Swim(e)))
    }

    /// Fires every timer due at or before `now`, in order.
    pub fn handle_timeout(&mut self, now: Millis) {
        self.now = now;
        let mut latest = 0;
        while let Some(Reverse((due, _, _))) = self.timers.peek() {
            if *due > now {
                break;
            }
            let due = *due;
            let Some(Reverse((_, _, TimerSlot(tick)))) = self.timers.pop() else {
                break;
            };
            let late = now.since(due);
            latest = latest.max(late);
            if late > self.config.late_timer_threshold.as_millis() as u64 {
                self.late_since_scan = true;
            }
            self.fire(tick);
        }
        // The first timers' lateness says how long the shell took to start driving the core,
        // not that this node was stopped.
        let first = !std::mem::replace(&mut self.driven, true);
        self.quorum.timer_late(
            Duration::from_millis(if first { 0 } else { latest }),
            self.config.stall_threshold,
            self.config.stall_cooldown,
            now,
        );
        self.refresh_quorum();
    }

    fn fire(&mut self, tick: Tick) {
        match tick {
            Tick::Swim(timer @ Timer::ProbeRandomMember(_)) => {
                self.quorum.begin_probe_period();
                // foca ignores a probe timer of an earlier identity or connection (its timer
                // token moved on): such a tick completes and starts no probe. A tick that
                // probes always asks for the next one.
                let mut probed = false;
                self.swim_call(|swim, rt| {
                    let result = swim.handle_timer(timer, &mut *rt);
                    probed = rt
                        .timers
                        .iter()
                        .any(|(_, t)| matches!(t, Timer::ProbeRandomMember(_)));
                    result
                });
                if probed {
                    self.quorum.end_probe_period(self.swim.num_members());
                } else {
                    self.quorum.probe_period_skipped();
                }
                if self.regain_announces > 0 && self.quorum.current().majority {
                    self.announce_to_every_down_member();
                }
            }
            Tick::Swim(timer) => self.swim_call(|swim, rt| swim.handle_timer(timer, rt)),
            Tick::JoinRetry => self.retry_join(),
            Tick::FollowUp(k) => self.follow_up_join(k),
            Tick::Chase => {
                self.chase_queued = false;
                self.chase_unheard();
            }
            Tick::Sync => {
                if let Some(to) = self.sync_with_random_member() {
                    self.retell_forgets(to);
                }
                self.chase_unheard();
                self.schedule(self.now.plus(self.config.sync_period), Tick::Sync);
            }
            Tick::Scan => {
                self.adjust_health();
                self.scans += 1;
                if self.scans.is_multiple_of(FULL_SCAN_EVERY) {
                    let corrected = self.refresh_view();
                    if corrected > 0 {
                        tracing::warn!(corrected, "the full member scan found stale statuses");
                    }
                    self.stats.view_corrections += corrected as u64;
                    self.reap_gone();
                }
                self.expire_stale_suspects();
                self.forget_long_down();
                self.check_namesakes();
                self.schedule(self.now.plus(self.config.scan_period), Tick::Scan);
            }
        }
    }

    /// The earliest deadline at which [`Membership::handle_timeout`] wants to run.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Millis> {
        self.timers.peek().map(|Reverse((due, _, _))| *due)
    }

    /// The next datagram to seal and send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.outbox.pop_front()
    }

    /// The next member event.
    pub fn poll_event(&mut self) -> Option<MemberEvent> {
        self.events.pop_front()
    }

    /// News about the join for the operator's log: no seed answers yet (at most every
    /// `join_warn_every`), or the join succeeded. Only the newest is kept.
    pub fn poll_join_notice(&mut self) -> Option<JoinNotice> {
        self.joining.poll_notice()
    }

    /// The next step of a direct probe, for timing probes (the last few are kept).
    pub fn poll_probe(&mut self) -> Option<ProbeEvent> {
        self.runtime.probes.pop_front()
    }

    /// The member view, sorted by name, this node included.
    #[must_use]
    pub fn members(&self) -> Vec<MemberInfo> {
        let ads = self.ads.lock();
        // Records and ads are both keyed by name in order: walk them side by side instead of
        // searching the ads once per record (the scheduler asks for this view twice a second).
        left_join_sorted(self.records.iter(), ads.ads.iter())
            .map(|(_, r, ad)| MemberInfo {
                id: r.id.clone(),
                status: r.status,
                ad: ad.map(|ad| (**ad).clone()),
                last_update: r.last_update,
            })
            .collect()
    }

    /// The member view as an operator's listing shows it (`GET /v1/nodes`, metrics): the
    /// [`Membership::members`] view without the members forgotten while down or suspect
    /// (`shoal node forget`, `forget_down_after`; `docs/membership.md`, "A forgotten node
    /// leaves the listing"). A suspect or down member is listed exactly while the quorum
    /// counts it; a forgotten member that is heard of again (alive, or a new status) is
    /// known again and listed again. The scheduler keeps reading [`Membership::members`].
    #[must_use]
    pub fn listed_members(&self) -> Vec<MemberInfo> {
        let mut members = self.members();
        members.retain(|m| self.listed(&m.id.name, m.status));
        members
    }

    /// Whether a member named `name` in `status` belongs in the listing: everything but a
    /// suspect or down member the known membership no longer holds (it was forgotten).
    fn listed(&self, name: &str, status: MemberStatus) -> bool {
        match status {
            MemberStatus::Alive | MemberStatus::Left => true,
            MemberStatus::Suspect | MemberStatus::Down => self.quorum.is_known(name),
        }
    }

    /// One member by name.
    #[must_use]
    pub fn member(&self, name: &str) -> Option<MemberInfo> {
        let r = self.records.get(name)?;
        Some(MemberInfo {
            id: r.id.clone(),
            status: r.status,
            ad: self.ads.lock().ads.get(name).map(|ad| (**ad).clone()),
            last_update: r.last_update,
        })
    }

    /// Whether this node sees most of its cluster (`docs/faults.md`), as of the last input.
    #[must_use]
    pub fn quorum(&self) -> &Quorum {
        self.quorum.current()
    }

    /// The known membership (names, sorted): what the quorum counts. A shell persists it
    /// when [`Membership::known_version`] changes and gives it back to a restarted node with
    /// [`Membership::restore_known`].
    pub fn known_members(&self) -> Vec<CompactString> {
        self.quorum.known().cloned().collect()
    }

    /// Bumped whenever the known membership changes.
    #[must_use]
    pub fn known_version(&self) -> u64 {
        self.quorum.known_version()
    }

    /// Counts `names` (remembered by an earlier run of this node) as known members, not
    /// reachable until heard of, so a restarted node knows how big its cluster was.
    pub fn restore_known(&mut self, now: Millis, names: impl IntoIterator<Item = CompactString>) {
        self.now = now;
        self.quorum.restore(names, now);
        self.refresh_quorum();
    }

    /// Another agent that holds this node's name and was there first: set once this node,
    /// within `name_check_window` of its start, has seen it alive at another address for
    /// `name_conflict_after`. The shell must stop this agent without leaving (a leave would
    /// be news about the name) and tell the operator to pick another name.
    #[must_use]
    pub fn name_conflict(&self) -> Option<&NodeId> {
        self.conflict.as_ref()
    }

    // ---- internals -------------------------------------------------------------------

    fn schedule(&mut self, at: Millis, tick: Tick) {
        self.timer_seq += 1;
        self.timers
            .push(Reverse((at, self.timer_seq, TimerSlot(tick))));
    }

    /// Announces to every member down in this view, once a round: at once when this node
    /// regains its majority, then at the next probe periods while it holds it
    /// ([`REGAIN_ANNOUNCE_ROUNDS`] rounds in all).
    ///
    /// foca announces to two down members every 3 s; a member this node marked down while
    /// it was cut off (an artifact of its own cut) would keep that mark until one of those
    /// reached it. Announced to, a live member answers; this node, which holds it down, tells
    /// it so (`TurnUndead`), and it comes back as a new identity within a few round trips.
    /// The scheduler waits `REGAIN_SETTLE_MS` after the regain before it acts on a member
    /// that was down then (`docs/faults.md`, "Settling"): a member still down by then did not
    /// answer three rounds.
    fn announce_to_every_down_member(&mut self) {
        self.regain_announces = self.regain_announces.saturating_sub(1);
        if self.left {
            return;
        }
        let down: Vec<NodeId> = self
            .swim
            .iter_membership_state()
            .filter(|m| m.state() == State::Down)
            .map(|m| m.id().clone())
            .collect();
        for id in down {
            self.swim_call(|swim, rt| swim.announce(id, rt));
        }
    }

    /// Runs one foca call and drains everything it produced.
    fn swim_call(&mut self, call: impl FnOnce(&mut Swim, &mut Outputs) -> Result<(), foca::Error>) {
        if let Err(e) = call(&mut self.swim, &mut self.runtime) {
            tracing::debug!(error = %e, "foca");
        }
        self.drain_runtime();
    }

    fn drain_runtime(&mut self) {
        while let Some((to, payload)) = self.runtime.sends.pop_front() {
            self.push_out(to, payload);
        }
        while let Some((after, timer)) = self.runtime.timers.pop_front() {
            let due = self.now.plus(after);
            if matches!(timer, Timer::PeriodicGossip(_)) && self.nothing_to_gossip() {
                self.parked_gossip = Some((due, timer));
                continue;
            }
            self.schedule(due, Tick::Swim(timer));
        }
        let mut notified = false;
        while let Some(note) = self.runtime.notes.pop_front() {
            self.on_notification(note);
            notified = true;
        }
        self.resolve_changed();
        if notified {
            self.resize_for(self.swim.num_members() + 1);
        }
        self.drain_ad_changes();
        self.unpark_gossip();
    }

    /// Whether foca's periodic gossip would send nothing: no member update and no broadcast
    /// (ad) has transmissions left.
    fn nothing_to_gossip(&self) -> bool {
        self.swim.updates_backlog() == 0 && self.swim.custom_broadcast_backlog() == 0
    }

    /// Puts foca's periodic gossip timer, parked while there was nothing to gossip, back in
    /// the queue once there is: due when it would have been, or now if that has passed.
    ///
    /// foca re-arms that timer every `gossip_period` (100 ms) whether or not it has anything
    /// to send, which made it ten of the idle agent's ~13 wake-ups a second. Parked, an idle
    /// node wakes only for probes, scans and syncs. Never scheduled in the past: a timer
    /// that fires late reads as starvation or a stall (`handle_timeout`), and a parked one
    /// is not late. Rejected: a longer `gossip_period` (slower spreading of every update) and
    /// a change to foca (a patch more to carry, when the core can decide this alone).
    fn unpark_gossip(&mut self) {
        if self.parked_gossip.is_none() || self.nothing_to_gossip() {
            return;
        }
        if let Some((due, timer)) = self.parked_gossip.take() {
            self.schedule(due.max(self.now), Tick::Swim(timer));
        }
    }

    /// Applies one foca notification to the view directly: up, down and renames name the
    /// identity they are about.
    fn on_notification(&mut self, note: Note) {
        match note {
            Note::Up(id) => {
                // Pull on join: ask a member we have no current ad for to send its own.
                let known = self
                    .ads
                    .lock()
                    .ads
                    .get(&id.name)
                    .is_some_and(|ad| ad.generation >= id.generation);
                if !known {
                    self.send_sync(id.addr, Want::Yours);
                }
                self.set_status(id, MemberStatus::Alive);
            }
            Note::Down(id) => {
                let status = self.status_of(&id, State::Down);
                self.set_status(id, status);
            }
            Note::Rename(new) => self.set_status(new, MemberStatus::Alive),
            Note::ProbeFailed(id) => self.quorum.probe_failed(id.name, id.generation),
            Note::Rejoin(id) => {
                tracing::warn!(%id, "declared down by the cluster; rejoined as a new generation");
                self.quorum.declared_down(self.now);
                self.renewed_at = Some(self.now);
                self.adopt_generation(id);
            }
        }
    }

    /// Brings the view up to date with the members the last foca call changed (see
    /// `swim_io`): O(1) per change instead of a scan of all members.
    fn resolve_changed(&mut self) {
        let mut changed = std::mem::take(&mut self.runtime.changed);
        if changed.is_empty() {
            self.runtime.changed = changed;
            return;
        }
        // A member changed twice in one call (suspect, then refuted) ends in its last state:
        // the stable sort keeps each identity's changes in order, and only the last counts.
        changed.sort_by(|a, b| a.0.cmp(&b.0));
        let mut changes: Vec<(NodeId, State)> = Vec::new();
        let mut rest = changed.drain(..).peekable();
        while let Some((id, state)) = rest.next() {
            let superseded = rest.peek().is_some_and(|(next, _)| *next == id);
            if !superseded && !recorded_current(&self.index, &id, state) {
                changes.push((id, state));
            }
        }
        drop(rest);
        self.runtime.changed = changed;
        self.apply_changes(changes);
    }

    fn push_out(&mut self, to: SocketAddr, payload: Vec<u8>) {
        self.stats.datagrams_out += 1;
        self.stats.bytes_out += payload.len() as u64;
        self.outbox.push_back(Transmit { to, payload });
    }
}

/// Every entry of `left` with the entry of `right` under the same key, if any. Both must be in
/// strictly ascending key order (as B-tree maps iterate); one pass over each.
fn left_join_sorted<'a, K: Ord + 'a, A: 'a, B: 'a>(
    left: impl Iterator<Item = (&'a K, &'a A)>,
    right: impl Iterator<Item = (&'a K, &'a B)>,
) -> impl Iterator<Item = (&'a K, &'a A, Option<&'a B>)> {
    let mut right = right.peekable();
    left.map(move |(k, a)| {
        while right.next_if(|(r, _)| *r < k).is_some() {}
        (k, a, right.next_if(|(r, _)| *r == k).map(|(_, b)| b))
    })
}

#[cfg(test)]
mod tests;
