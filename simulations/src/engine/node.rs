//! One simulated machine: its ground truth (whether its process runs), its membership core, and
//! the addressing of simulated nodes.

use std::net::SocketAddr;

use shoal_gossip::{Membership, Millis};

/// The gossip port every simulated node listens on.
pub const GOSSIP_PORT: u16 = 7946;

/// Whether a node runs, in the ground truth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Life {
    /// Not started yet.
    NotStarted,
    /// Running.
    Running,
    /// Running but frozen: inputs are held.
    Paused,
    /// Crashed.
    Crashed,
    /// Left on purpose.
    Left,
}

impl Life {
    /// Running or paused: the process exists.
    #[must_use]
    pub fn is_up(self) -> bool {
        matches!(self, Life::Running | Life::Paused)
    }
}

/// One simulated machine.
#[derive(Debug)]
pub struct SimNode {
    /// Node name (`n<index>`).
    pub name: String,
    /// Gossip address.
    pub addr: SocketAddr,
    /// Rack attribute.
    pub rack: String,
    /// The production membership core, while the process exists. Boxed: the engine takes a
    /// core out of its node to drive it once per event, and moving the 2 KB struct in and out
    /// was a few percent of a large run.
    pub core: Option<Box<Membership>>,
    /// Ground truth.
    pub life: Life,
    /// Highest generation this node has run as.
    pub generation: u64,
    /// When this node's own resource ad last changed.
    pub ad_changed_ms: u64,
    /// Grows at every crash, restart and pause: queued events of an older era are stale.
    pub(super) era: u64,
    /// When the membership core's next wake-up is queued for.
    pub(super) next_wake: Option<Millis>,
    /// Datagrams `(from, payload, corrupted)` that arrived while the node was paused.
    pub(super) held: Vec<(usize, Vec<u8>, bool)>,
    /// Extra delay of everything this node does, while it is slowed down.
    pub(super) slow_ms: u64,
    /// The known membership as the agent keeps it on disk (`DATA_DIR/known-members`, saved at
    /// every change): taken when the process goes, restored when it starts again.
    pub(super) known_disk: Vec<compact_str::CompactString>,
    /// The membership core's quorum last handed to the scheduling world.
    pub(super) quorum_seen: Option<shoal_gossip::Quorum>,
    /// Ground truth: not on the majority side now (see `sides.rs`).
    pub(super) minority: bool,
    /// Ground truth: when this node last was not on the majority side (`None`: never since it
    /// first started).
    pub(super) minority_until_ms: Option<u64>,
}

impl SimNode {
    /// A machine whose process has not started.
    pub(super) fn new(name: String, addr: SocketAddr, rack: String) -> Self {
        Self {
            name,
            addr,
            rack,
            core: None,
            life: Life::NotStarted,
            generation: 0,
            ad_changed_ms: 0,
            era: 0,
            next_wake: None,
            held: Vec::new(),
            slow_ms: 0,
            known_disk: Vec::new(),
            quorum_seen: None,
            minority: false,
            minority_until_ms: None,
        }
    }
}

/// The gossip address of node `index`: `10.a.b.c:7946` with `index` in the low 24 bits.
#[must_use]
pub fn addr_of(index: usize) -> SocketAddr {
    SocketAddr::from((crate::shared::ip_of(index), GOSSIP_PORT))
}

/// The node index behind a simulated gossip address.
#[must_use]
pub fn index_of_addr(addr: SocketAddr) -> Option<usize> {
    match addr {
        SocketAddr::V4(v4) if v4.port() == GOSSIP_PORT && v4.ip().octets()[0] == 10 => {
            let [_, a, b, c] = v4.ip().octets();
            Some(((a as usize) << 16) | ((b as usize) << 8) | c as usize)
        }
        _ => None,
    }
}
