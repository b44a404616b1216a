//! What a run records besides the views: datagram and fault counters, and the first violation
//! of each `always_*` checker.

use shoal_gossip::{Membership, Millis};

/// Datagram and fault counters.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Counters {
    /// Events popped from the heap.
    pub events: u64,
    /// Datagrams the cores emitted.
    pub datagrams_sent: u64,
    /// Datagrams handed to a core.
    pub datagrams_delivered: u64,
    /// Dropped by random loss.
    pub datagrams_lost: u64,
    /// Dropped by a partition.
    pub datagrams_cut: u64,
    /// Extra copies delivered.
    pub datagrams_duplicated: u64,
    /// Arrived at a node whose process did not exist.
    pub datagrams_to_dead: u64,
    /// Addressed to no simulated node.
    pub datagrams_unroutable: u64,
    /// Corrupted in flight and dropped by the (modelled) AEAD seal.
    pub corrupted_sealed_out: u64,
    /// Corrupted in flight and delivered to the core unsealed.
    pub corrupted_delivered: u64,
    /// Corrupted datagrams the core refused.
    pub corrupted_refused: u64,
    /// Corrupted datagrams the core accepted (the transport's AEAD seal would drop them).
    pub corrupted_accepted: u64,
    /// Intact datagrams the core refused.
    pub intact_refused: u64,
    /// Crashes executed.
    pub crashes: u64,
    /// Restarts executed.
    pub restarts: u64,
    /// Graceful leaves executed.
    pub leaves: u64,
    /// Pauses executed.
    pub pauses: u64,
    /// Member statuses the cores' periodic full scan had to correct, summed over the cores
    /// that stopped (the `finally_views_incremental` checker adds the running ones).
    pub view_corrections: u64,
}

impl Counters {
    /// Drops a stopped node's membership core, keeping the counts the report needs from it.
    pub(super) fn retire(&mut self, core: &mut Option<Box<Membership>>) {
        if let Some(core) = core.take() {
            self.view_corrections += core.stats().view_corrections;
        }
    }
}

/// The first violation of an `always_*` checker.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Violation {
    /// Checker name.
    pub check: String,
    /// When.
    pub at_ms: u64,
    /// The event that broke it.
    pub event: String,
}

/// Records `event` as the violation of `check` at `now`, unless `check` was violated before.
pub(super) fn violate(violations: &mut Vec<Violation>, now: Millis, check: &str, event: String) {
    if violations.iter().any(|v| v.check == check) {
        return;
    }
    violations.push(Violation {
        check: check.to_string(),
        at_ms: now.0,
        event,
    });
}
