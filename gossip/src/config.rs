//! Tunables of the membership core, with defaults chosen for a LAN datacenter.

use std::time::Duration;

/// Every limit and period of the membership core. `Config::default()` is tuned for a LAN:
/// one probe per second, suspicion confirmed after 2 s (stretched by local health awareness),
/// 100 ms piggy-back gossip while updates are pending, a digest sync every 10 s.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// How often a random member is probed.
    pub probe_period: Duration,
    /// How long to wait for a direct ack before asking others to probe indirectly.
    pub probe_rtt: Duration,
    /// How many members are asked to probe indirectly.
    pub num_indirect_probes: usize,
    /// Base time a suspect has to refute before it is declared down. Local health awareness
    /// multiplies it by up to `1 + max_health_score` while this node is starved.
    pub suspect_to_down_after: Duration,
    /// Upper bound of the local health score (Lifeguard's "awareness").
    pub max_health_score: u32,
    /// A timer that fires this much later than it was due counts as a sign of starvation.
    pub late_timer_threshold: Duration,
    /// Piggy-back gossip period while membership updates or broadcasts are pending.
    pub gossip_period: Duration,
    /// Members gossiped to each `gossip_period`.
    pub gossip_fanout: usize,
    /// Period of announcing to one random member (heals partitions, fills holes).
    pub announce_period: Duration,
    /// Period of announcing to down members (lets a healed node come back).
    pub announce_down_period: Duration,
    /// How long a down member is remembered.
    pub remove_down_after: Duration,
    /// Largest datagram payload this core emits (before the transport's seal).
    pub max_packet_size: usize,
    /// Period of the resource-ad digest sync with one random member.
    pub sync_period: Duration,
    /// How long after a gossiped ad named an identity SWIM has not delivered this node
    /// chases it (announces to it), unless SWIM delivered it meanwhile.
    pub chase_after_gossip: Duration,
    /// First retry delay when joining through seeds; doubles up to `join_retry_max`.
    pub join_retry_min: Duration,
    /// Largest retry delay when joining through seeds.
    pub join_retry_max: Duration,
    /// A node none of whose seeds answered for this long says so
    /// ([`crate::JoinNotice::NoAnswer`], at the first retry past it).
    pub join_warn_after: Duration,
    /// While no seed answers, it says so again at most this often.
    pub join_warn_every: Duration,
    /// How often the member view is reconciled against foca's state.
    pub scan_period: Duration,
    /// A timer that fires this much later than it was due means this node was stopped (a
    /// SIGSTOP, a paused VM, a frozen disk): its view is stale, and it holds no majority for
    /// the stall's length plus `stall_cooldown` (`docs/faults.md`).
    pub stall_threshold: Duration,
    /// See `stall_threshold`.
    pub stall_cooldown: Duration,
    /// A newcomer that sees another live member with its own name at another address for
    /// this long gives the name up ([`crate::Membership::name_conflict`]): a second agent
    /// started under a name in use.
    pub name_conflict_after: Duration,
    /// Who is the newcomer: a node that first sees a namesake within this long of first
    /// hearing from the cluster found the name taken; a namesake that appears later is the
    /// newcomer, and this node, the name's incumbent, re-asserts the name (a newer
    /// generation) instead of giving it up.
    pub name_join_grace: Duration,
    /// A known member down this long is forgotten by a node that holds a majority, so that
    /// the cluster's size shrinks to the nodes that are still there.
    pub forget_down_after: Duration,
    /// The view lets go of a member this long after it left, or after it went down if it was
    /// forgotten (`membership/reap.rs`): its record, its ad, and the scheduler's view of it.
    /// Serf's `tombstone_timeout` is the like of it (24 h too).
    pub reap_after: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            probe_period: Duration::from_millis(1000),
            probe_rtt: Duration::from_millis(500),
            num_indirect_probes: 3,
            suspect_to_down_after: Duration::from_millis(2000),
            max_health_score: 8,
            late_timer_threshold: Duration::from_millis(150),
            gossip_period: Duration::from_millis(100),
            gossip_fanout: 3,
            announce_period: Duration::from_secs(60),
            announce_down_period: Duration::from_secs(3),
            remove_down_after: Duration::from_secs(3600),
            max_packet_size: 1200,
            sync_period: Duration::from_secs(10),
            chase_after_gossip: Duration::from_secs(1),
            join_retry_min: Duration::from_millis(200),
            join_retry_max: Duration::from_secs(30),
            join_warn_after: Duration::from_secs(5),
            join_warn_every: Duration::from_secs(30),
            scan_period: Duration::from_millis(500),
            stall_threshold: Duration::from_secs(1),
            stall_cooldown: Duration::from_secs(5),
            forget_down_after: Duration::from_secs(24 * 3600),
            reap_after: Duration::from_secs(24 * 3600),
            name_conflict_after: Duration::from_secs(10),
            name_join_grace: Duration::from_secs(5),
        }
    }
}

impl Config {
    /// foca's transmissions per update for a cluster of `members`: `4·log10(n+1)`, at least 6.
    /// The floor matters while a cluster forms: when 30 nodes join at once the member count
    /// is still small, and 3 transmissions let some join updates die before reaching everyone
    /// (measured: one node learned of a peer 11 s late).
    #[must_use]
    pub fn max_transmissions(members: usize) -> u8 {
        let n = members.saturating_add(1) as f64;
        let tx = (4.0 * n.log10()).ceil();
        tx.clamp(6.0, 20.0) as u8
    }

    /// The foca configuration for a cluster of `members`, with suspicion stretched by `health`.
    pub(crate) fn foca(&self, members: usize, health: u32) -> foca::Config {
        let nz =
            |n: usize| std::num::NonZeroUsize::new(n.max(1)).unwrap_or(std::num::NonZeroUsize::MIN);
        let mut cfg = foca::Config::simple();
        cfg.probe_period = self.probe_period;
        cfg.probe_rtt = self.probe_rtt;
        cfg.num_indirect_probes = nz(self.num_indirect_probes);
        cfg.max_transmissions = std::num::NonZeroU8::new(Self::max_transmissions(members))
            .unwrap_or(std::num::NonZeroU8::MIN);
        cfg.suspect_to_down_after = self.suspect_to_down_after * (1 + health);
        cfg.remove_down_after = Some(self.remove_down_after);
        cfg.max_packet_size = nz(self.max_packet_size - crate::wire::KIND_LEN);
        cfg.notify_down_members = true;
        cfg.periodic_announce = Some(foca::PeriodicParams {
            frequency: self.announce_period,
            num_members: nz(1),
        });
        cfg.periodic_announce_to_down_members = Some(foca::PeriodicParams {
            frequency: self.announce_down_period,
            num_members: nz(2),
        });
        cfg.periodic_gossip = Some(foca::PeriodicParams {
            frequency: self.gossip_period,
            num_members: nz(self.gossip_fanout),
        });
        cfg
    }
}
