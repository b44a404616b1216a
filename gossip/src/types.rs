//! Plain data shared by the membership core, the scheduler and the agent: time, identities,
//! resource vectors and the member view. Nothing here does IO.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use compact_str::CompactString;
use serde::{Deserialize, Serialize};

/// A point in time in milliseconds. The agent feeds wall-clock milliseconds since the Unix
/// epoch (made monotonic); the simulator feeds virtual time. Cores never read a clock.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct Millis(pub u64);

impl Millis {
    /// `self + ms`, saturating.
    #[must_use]
    pub fn plus_ms(self, ms: u64) -> Self {
        Self(self.0.saturating_add(ms))
    }
    /// `self + d`, saturating, at millisecond resolution (rounded up so a timer never fires early).
    #[must_use]
    pub fn plus(self, d: std::time::Duration) -> Self {
        let ms = d.as_micros().div_ceil(1000);
        self.plus_ms(u64::try_from(ms).unwrap_or(u64::MAX))
    }
    /// Milliseconds from `earlier` to `self`, zero if `earlier` is later.
    #[must_use]
    pub fn since(self, earlier: Millis) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

impl fmt::Display for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.0)
    }
}

/// The SWIM identity of one incarnation of an agent: its name, its gossip address and a
/// generation that grows on every restart, so a restarted node wins over its old self.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeId {
    /// Operator-chosen unique node name, stored inline up to 24 bytes: identities are
    /// compared and hashed on every gossip update, and a heap pointer per name made that a
    /// cache miss (a quarter of a 1,000-node simulation's time went to comparing names).
    pub name: CompactString,
    /// Gossip (UDP) address peers reach this node at.
    pub addr: SocketAddr,
    /// Grows on every restart of the agent (the agent uses start time in ms, made strictly
    /// larger than the previous generation persisted in its data dir).
    pub generation: u64,
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}#{}", self.name, self.addr, self.generation)
    }
}

/// A resource vector: what a node has, or what is allocated on it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct Resources {
    /// CPU in millicores (1000 = one core).
    pub cpu_millicores: u64,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// Disk in MiB.
    pub disk_mib: u64,
}

impl Resources {
    /// Component-wise `self - other`, saturating at zero.
    #[must_use]
    pub fn saturating_sub(&self, other: &Resources) -> Resources {
        Resources {
            cpu_millicores: self.cpu_millicores.saturating_sub(other.cpu_millicores),
            memory_mib: self.memory_mib.saturating_sub(other.memory_mib),
            disk_mib: self.disk_mib.saturating_sub(other.disk_mib),
        }
    }
    /// Component-wise `self + other`, saturating.
    #[must_use]
    pub fn saturating_add(&self, other: &Resources) -> Resources {
        Resources {
            cpu_millicores: self.cpu_millicores.saturating_add(other.cpu_millicores),
            memory_mib: self.memory_mib.saturating_add(other.memory_mib),
            disk_mib: self.disk_mib.saturating_add(other.disk_mib),
        }
    }
    /// Component-wise maximum of `self` and `other`.
    #[must_use]
    pub fn max_each(&self, other: &Resources) -> Resources {
        Resources {
            cpu_millicores: self.cpu_millicores.max(other.cpu_millicores),
            memory_mib: self.memory_mib.max(other.memory_mib),
            disk_mib: self.disk_mib.max(other.disk_mib),
        }
    }
    /// True when every component of `self` is at most the one of `other`.
    #[must_use]
    pub fn fits_in(&self, other: &Resources) -> bool {
        self.cpu_millicores <= other.cpu_millicores
            && self.memory_mib <= other.memory_mib
            && self.disk_mib <= other.disk_mib
    }
}

/// A node's operator attributes (`rack=r1`, …), behind an `Arc`: cloning an ad (every
/// member list does) shares them instead of copying a B-tree, and comparing two clones of
/// one ad compares a pointer. Serialised as the map itself.
pub type Attributes = Arc<BTreeMap<String, String>>;

/// The ports a node hands to tasks that ask for a dynamic one (`shoal agent --port-range`),
/// both ends included. Advertised so that every node can show a node's ports in use against
/// its range (`docs/observability.md`, "Ports on the map").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PortRange {
    /// The lowest port of the range.
    pub first: u16,
    /// The highest port of the range.
    pub last: u16,
}

impl PortRange {
    /// How many ports the range holds (0 if `first > last`, which [`crate::wire::check_ad`]
    /// refuses).
    #[must_use]
    pub fn len(&self) -> u32 {
        (u32::from(self.last) + 1).saturating_sub(u32::from(self.first))
    }

    /// Whether the range holds no port.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a node advertises about itself, disseminated as a versioned broadcast. The newest
/// `(generation, version)` for a node name wins everywhere.
///
/// The encoding is postcard's, field by field in this order; a field is only ever appended,
/// and [`crate::wire`] still decodes ads of the layouts before (`port_range` is the first
/// field appended since, so the layout without it is read with `port_range: None`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceAd {
    /// Node name (the key), inline like [`NodeId::name`].
    pub node: CompactString,
    /// Generation of the advertising incarnation.
    pub generation: u64,
    /// Grows on every change within a generation.
    pub version: u64,
    /// Total resources the node offers to the cluster.
    pub capacity: Resources,
    /// Operator attributes such as `rack=r1`, `zone=eu-1`, shared: they rarely change, and
    /// every member list and scheduler view holds each member's ad.
    pub attributes: Attributes,
    /// A draining node accepts no new work.
    pub draining: bool,
    /// Set by a node that leaves the cluster on purpose (SIGINT/SIGTERM).
    pub left: bool,
    /// The node's QUIC (mTLS) address for reliable traffic, when it has one.
    pub quic_addr: Option<SocketAddr>,
    /// The node's HTTP API address, when it has one.
    pub http_addr: Option<SocketAddr>,
    /// The node's gossip address; the membership core fills it in. With the name and the
    /// generation it is the node's SWIM identity, so ads (which converge by digest sync)
    /// also repair membership that piggy-backed gossip missed.
    pub gossip_addr: Option<SocketAddr>,
    /// The node's dynamic port range; `None` from agents that predate the field.
    pub port_range: Option<PortRange>,
}

impl ResourceAd {
    /// A first ad for `node` offering `capacity`: generation 0 and version 1 (the membership
    /// core sets both), nothing allocated, no attributes, not draining, no addresses, no port
    /// range.
    #[must_use]
    pub fn new(node: impl Into<CompactString>, capacity: Resources) -> Self {
        ResourceAd {
            node: node.into(),
            generation: 0,
            version: 1,
            capacity,
            attributes: Attributes::default(),
            draining: false,
            left: false,
            quic_addr: None,
            http_addr: None,
            gossip_addr: None,
            port_range: None,
        }
    }

    /// The ordering key: a higher key supersedes a lower one for the same node.
    #[must_use]
    pub fn key(&self) -> (u64, u64) {
        (self.generation, self.version)
    }
}

/// Health of a member as seen from one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberStatus {
    /// Answers probes.
    Alive,
    /// Missed a probe; will be declared down unless it refutes in time.
    Suspect,
    /// Declared failed by SWIM.
    Down,
    /// Left the cluster on purpose.
    Left,
}

impl MemberStatus {
    /// The stable lowercase name used by the API and CLI.
    #[must_use]
    pub fn as_str(&self) -> &'static str {
        match self {
            MemberStatus::Alive => "alive",
            MemberStatus::Suspect => "suspect",
            MemberStatus::Down => "down",
            MemberStatus::Left => "left",
        }
    }
}

impl fmt::Display for MemberStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One member as seen from one node: identity, health and the newest resource ad known.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    /// The newest identity known for this node name.
    pub id: NodeId,
    /// Health as seen locally.
    pub status: MemberStatus,
    /// The newest resource ad for this name, if one has arrived yet.
    pub ad: Option<ResourceAd>,
    /// When this view of the member last changed (status or ad), in the caller's clock.
    pub last_update: Millis,
}

/// Whether this node may act for the cluster: how much of the known membership it can reach.
///
/// Produced by the membership core ([`crate::Membership::quorum`]) and consumed by the
/// scheduler, which condemns other nodes' work and places new work only while `majority`
/// holds, and stops its own disconnected work after a job's `stop_after_ms` without it
/// (`docs/faults.md`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quorum {
    /// Members this node counts as the cluster (itself included): every node seen that has
    /// not left and has not been forgotten.
    pub known: u32,
    /// Of those, the ones this node currently reaches (itself included).
    pub reachable: u32,
    /// This node sees a majority of `known` and nothing (a stall, failing probes) says its
    /// view is stale.
    pub majority: bool,
    /// When `majority` last changed, in the caller's clock.
    pub since: Millis,
    /// Why there is no majority (`None` while there is one), for operators.
    pub reason: Option<String>,
    /// How long a member must have been down, while this node held its majority, before
    /// this node acts on it (condemns its work): long enough for a node on the wrong side of
    /// a partition to have probed enough members to lose its majority first.
    #[serde(default)]
    pub settle_ms: u64,
    /// The only reason there is no majority is a stall this node resumed from: its view may
    /// be stale, so it condemns nobody, but it is not known to be cut off, so its own work's
    /// `stop_after_ms` clock does not run (`docs/faults.md`).
    #[serde(default)]
    pub stalled: bool,
    /// The only reason there is no majority is that the cluster declared this node down, a
    /// moment ago, and no probe has failed since: a node returning from a cut of its own
    /// gossips such declarations about healthy members. Like a stall, it condemns nobody but
    /// does not run the `stop_after_ms` clock; once the grace passes without an answered probe
    /// the node is cut off from the declaration on (`docs/faults.md`, "Declared down").
    #[serde(default)]
    pub just_declared_down: bool,
}

impl Quorum {
    /// A node alone that counts only itself: a one-node cluster has its majority.
    #[must_use]
    pub fn alone(now: Millis) -> Self {
        Quorum {
            known: 1,
            reachable: 1,
            majority: true,
            since: now,
            reason: None,
            settle_ms: 0,
            stalled: false,
            just_declared_down: false,
        }
    }

    /// This node is known to be cut off from the majority: no majority, and not merely
    /// resumed from a stall or declared down a moment ago. Its local work's `stop_after_ms`
    /// clock runs.
    #[must_use]
    pub fn cut_off(&self) -> bool {
        !self.majority && !self.stalled && !self.just_declared_down
    }
}

/// How this node's join through its seeds stands ([`crate::Membership::join_status`]), for
/// operators: a node whose seeds never answer is otherwise indistinguishable from a healthy
/// cluster of one (`docs/membership.md`, "A join nobody answers").
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinStatus {
    /// The seed addresses this node announces to (empty: it was given none, or none resolved
    /// yet).
    pub seeds: Vec<SocketAddr>,
    /// This node has heard from another member since it started (through a seed, or because
    /// another node joined through it).
    pub joined: bool,
    /// Announce rounds to the seeds before the join: the first, then one per retry.
    pub attempts: u32,
    /// When this node was given its first seed; `None` without seeds.
    pub since: Option<Millis>,
    /// When this node first heard from another member.
    pub joined_at: Option<Millis>,
    /// The first member this node heard from.
    pub first_member: Option<NodeId>,
    /// Milliseconds until the next announce round while not joined (the back-off, doubling
    /// up to `Config::join_retry_max`); 0 once joined.
    pub retry_ms: u64,
}

impl JoinStatus {
    /// How long this node waited for its seeds: from `since` to the join, or to `now` while
    /// no seed has answered; 0 without seeds.
    #[must_use]
    pub fn waited_ms(&self, now: Millis) -> u64 {
        self.since
            .map_or(0, |since| self.joined_at.unwrap_or(now).since(since))
    }
}

/// News about the join worth a line in the operator's log ([`crate::Membership::poll_join_notice`]).
/// The core decides when (rate-limited); the shell words it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinNotice {
    /// No seed has answered `join_warn_after` after the first announce; repeated at most
    /// every `join_warn_every` while that lasts.
    NoAnswer {
        /// The seeds announced to.
        seeds: Vec<SocketAddr>,
        /// Milliseconds since the first seed was given.
        waited_ms: u64,
        /// Announce rounds so far.
        attempts: u32,
        /// Milliseconds until the next round.
        retry_ms: u64,
        /// The longest delay between rounds (`join_retry_max`).
        retry_max_ms: u64,
    },
    /// This node, given seeds, heard from its first member.
    Joined {
        /// That member.
        first_member: NodeId,
        /// Milliseconds since the first seed was given.
        waited_ms: u64,
        /// Announce rounds it took.
        attempts: u32,
    },
}
