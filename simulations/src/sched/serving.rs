//! What the discovery checkers remember (`discovery.rs` does the checking): since when each
//! process stopped serving, the figures, the staleness constants and the deliberate bugs.
//! A leaf of the room: it imports nothing of `sched`.

use std::collections::BTreeMap;

use serde::Serialize;
use shoal_gossip::Millis;
use shoal_scheduler::{AttemptId, Name};

/// A health op's way to every peer once the target wrote it: one push on the reliable
/// stream (latency, plus at most five 200 ms retransmissions of lost datagrams) and, when
/// the push was lost, one anti-entropy round (1 s, `SchedulerConfig::anti_entropy_interval`),
/// rounded up.
pub const REPLICATION_MS: u64 = 2_000;

/// Added to the bound when a partition was in force since the instance stopped serving: a
/// node cut off from the target never gets the op and drops the instance only when its view
/// marks the target down (SWIM: probe period 1 s, suspicion 2 s, dissemination; the library's
/// p90 from crash to every observer's down mark is 5.4 s), plus the 500 ms feed of the view
/// to the core, rounded up.
pub const DETECTION_MS: u64 = 8_000;

/// One attempt on one node: (job, slot, attempt, node index).
pub(super) type Key = (Name, u32, u32, usize);

/// The discovery checker's memory.
#[derive(Debug, Default)]
pub struct Discovery {
    /// Whether the services have ports and checks (else nothing is watched).
    pub(super) enabled: bool,
    /// Record when processes stop serving even so (the drain checkers read it).
    pub(super) track: bool,
    /// The base staleness bound: check interval + timeout + [`REPLICATION_MS`].
    pub(super) base_ms: u64,
    /// From when `eventually_discovery_complete` is judged (the end of the quiet time).
    pub(super) check_from_ms: u64,
    /// Tests only: a deliberate bug (`engine::Sabotage`).
    pub(super) sabotage: DiscoverySabotage,
    /// Since when each attempt's process has not served (hung, killed, exited).
    pub(super) stopped: BTreeMap<Key, Millis>,
    /// The figures for the report.
    pub figures: DiscoveryFigures,
    /// At the last sample after the quiet time: the first live, healthy instance some
    /// running node did not list (`eventually_discovery_complete`), or what was compared.
    pub complete: Option<Result<String, String>>,
}

/// Deliberate bugs in how catalogs are built or checks reported, to show the checkers bite
/// (`engine::Sabotage::{CatalogMissesTouches, ChecksAlwaysPass}`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DiscoverySabotage {
    /// The honest simulator.
    #[default]
    None,
    /// The core's table touches are left out of the catalog's changes.
    MissTouches,
    /// Every probe passes.
    AlwaysPass,
}

/// What the discovery checkers saw.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DiscoveryFigures {
    /// Probes the simulated executors ran.
    pub probes: u64,
    /// Tasks the `hang` fault hung.
    pub hangs: u64,
    /// Ports bound at process starts.
    pub port_bindings: u64,
    /// Healthy instances held against the truth (summed over nodes and samples).
    pub listed: u64,
    /// Of those, listed while their process did not serve (within the bound).
    pub stale: u64,
    /// The longest such staleness, in ms, counted as the bound counts it.
    pub longest_stale_ms: u64,
    /// The base bound, in ms.
    pub bound_ms: u64,
    /// Listings of processes that no longer served, by nodes on the minority side (stale by
    /// design, not judged).
    pub minority_stale: u64,
}

impl Discovery {
    /// Whether the services have ports and checks, so that discovery is watched.
    #[must_use]
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The process of `task` on node `i` stopped serving now (unless it had already).
    pub(super) fn stopped_serving(&mut self, now: Millis, i: usize, task: &AttemptId) {
        if self.enabled || self.track {
            let key = (task.job.clone(), task.slot, task.attempt, i);
            self.stopped.entry(key).or_insert(now);
        }
    }

    /// A hung process of `task` on node `i` serves again.
    pub(super) fn serving_again(&mut self, i: usize, task: &AttemptId) {
        self.stopped
            .remove(&(task.job.clone(), task.slot, task.attempt, i));
    }
}
