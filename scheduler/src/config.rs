//! Tunables and limits of one scheduler.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::num::NonZeroUsize;
use std::ops::RangeInclusive;
use std::time::Duration;

use crate::message::WireLimits;
use crate::spec::SpecLimits;

/// Every limit and period of a [`crate::Scheduler`]. `Default` suits a LAN cluster; the
/// simulator and tests shorten the periods.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// How often to send a version-vector digest to one random live peer.
    pub anti_entropy_interval: Duration,
    /// First back-off after a rejection (doubled per consecutive rejection, plus jitter up to
    /// the same amount).
    pub rejection_backoff_base: Duration,
    /// Cap on the rejection back-off.
    pub rejection_backoff_max: Duration,
    /// How soon slots that found no room are re-examined after resources are freed.
    pub pending_retry_interval: Duration,
    /// How long a finished job (stopped and dead, or batch complete) stays visible before its
    /// coordinator purges it.
    pub gc_grace: Duration,
    /// How long a tombstone is kept, at least (it is also kept until every live peer has it).
    pub tombstone_retention: Duration,
    /// How often tombstones are checked for removal.
    pub tombstone_check_interval: Duration,
    /// Ops kept per actor to answer digests; beyond it peers get the full state.
    pub op_log_per_actor: NonZeroUsize,
    /// How often the op logs of actors that wrote nothing since the last look are dropped
    /// (after one to two of these; zero: never). An actor is one start of a node, so a
    /// restarted node's earlier actor never writes again; its log would stay on every
    /// replica for good. Peers that lack a dropped log's ops get the state instead.
    pub quiet_log_drop: Duration,
    /// Out-of-order ops buffered per actor before the buffer is dropped and state requested.
    pub pending_ops_per_actor: NonZeroUsize,
    /// Most ops per outgoing `Ops` message.
    pub max_ops_per_message: NonZeroUsize,
    /// Feasible candidates scored per placement (more are not examined).
    pub placement_sample: NonZeroUsize,
    /// Attempts kept per slot before older finished ones are compacted into a floor.
    pub attempt_history: NonZeroUsize,
    /// How long, at most, a placer keeps counting resources a node released as still used;
    /// each placer draws its own delay up to this for each node (zero: no hold). Every
    /// coordinator hears of a release within a network delay, and without the hold every one
    /// with a pending slot proposed onto the freed node at once, and the target rejected all
    /// but the first (`docs/scheduler.md`, "Release hold").
    pub release_hold: Duration,
    /// Oldest work first (`docs/scheduler.md`, "Oldest first"): a release held since `o` becomes
    /// visible to a slot whose job version was written at `s` after
    /// `release_hold · scale / (scale + max(0, o − s))`, so the coordinator of the oldest
    /// pending slot that fits sees freed room first and its proposal reaches the others
    /// before their holds end. Zero: every placer draws its hold at random up to
    /// `release_hold`, whatever it has pending (the order of arrival is then not kept).
    pub release_age_scale: Duration,
    /// Bounds for decoding messages.
    pub wire: WireLimits,
    /// Bounds for job specs.
    pub spec_limits: SpecLimits,
    /// The users a job's `user` may name on this node (the agent fills it from its executor:
    /// `--allow-task-user` plus the default task user); admission rejects the others.
    pub task_users: BTreeSet<String>,
    /// The host ports this node hands out as a job's dynamic ports (`--port-range`).
    pub port_range: RangeInclusive<u16>,
    /// Host ports never handed out nor accepted as static ports (`--reserved-ports`, and the
    /// agent's own ports).
    pub reserved_ports: BTreeSet<u16>,
    /// The address tasks' ports are reached at (`SHOAL_IP`, `SHOAL_ADDR_<NAME>`).
    pub service_ip: IpAddr,
    /// Events kept for `Scheduler::poll_event` until the shell drains them: one input's events
    /// are all kept, and when an input begins with more than this left undrained, the oldest
    /// are dropped (`events.rs`); `None`: the core records no events (the simulator's choice).
    pub event_queue: Option<NonZeroUsize>,
}

/// The default dynamic port range: below Linux's ephemeral range (32768–60999).
pub const DEFAULT_PORT_RANGE: RangeInclusive<u16> = 20000..=32000;

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            anti_entropy_interval: Duration::from_secs(1),
            rejection_backoff_base: Duration::from_millis(20),
            rejection_backoff_max: Duration::from_secs(5),
            pending_retry_interval: Duration::from_millis(50),
            gc_grace: Duration::from_secs(3600),
            tombstone_retention: Duration::from_secs(24 * 3600),
            tombstone_check_interval: Duration::from_secs(60),
            op_log_per_actor: NonZeroUsize::new(200_000).unwrap_or(NonZeroUsize::MIN),
            quiet_log_drop: Duration::from_secs(30 * 60),
            pending_ops_per_actor: NonZeroUsize::new(100_000).unwrap_or(NonZeroUsize::MIN),
            max_ops_per_message: NonZeroUsize::new(4096).unwrap_or(NonZeroUsize::MIN),
            placement_sample: NonZeroUsize::new(8).unwrap_or(NonZeroUsize::MIN),
            attempt_history: NonZeroUsize::new(8).unwrap_or(NonZeroUsize::MIN),
            release_hold: Duration::from_millis(500),
            release_age_scale: Duration::from_secs(30),
            wire: WireLimits::default(),
            spec_limits: SpecLimits::default(),
            task_users: BTreeSet::new(),
            port_range: DEFAULT_PORT_RANGE,
            reserved_ports: BTreeSet::new(),
            service_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            event_queue: None,
        }
    }
}

/// Milliseconds of a duration, saturating.
pub(crate) fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
