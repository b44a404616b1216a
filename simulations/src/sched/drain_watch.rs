//! What the drain checkers remember (`drain.rs` does the writing and the checking): the
//! commands as issued, what each node knew, the drains in flight, the figures and the
//! deliberate bugs. A leaf of the room: it imports nothing of `sched`.

use std::collections::BTreeMap;

use serde::Serialize;
use shoal_gossip::Millis;
use shoal_scheduler::{NodeChange, Stamp};

/// Deliberate bugs in the drains, to show their checkers bite (`engine::Sabotage`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DrainSabotage {
    /// The honest simulator.
    #[default]
    None,
    /// Services are submitted with `max_parallel` = their count, while the checkers hold
    /// them to the scenario's.
    InflateMaxParallel,
    /// The accepting node answers the command and writes nothing (a shell that drops it).
    SkipCommands,
    /// A hung task's probes pass (a shell that swallows check timeouts): it stays healthy in
    /// every view while it does not serve.
    HangsPass,
}

/// One node command of the script, as it was issued.
#[derive(Debug, Clone)]
pub(super) struct Command {
    /// When.
    pub(super) at: Millis,
    /// The node that accepted it.
    pub(super) issuer: usize,
    /// The node it is about.
    pub(super) node: usize,
    /// What was asked.
    pub(super) change: NodeChange,
    /// Refused, and why.
    pub(super) refused: Option<String>,
}

/// What the drain checkers remember.
#[derive(Debug, Default)]
pub struct DrainWatch {
    /// The script issues node commands.
    pub(super) enabled: bool,
    /// Tests only.
    pub(super) sabotage: DrainSabotage,
    /// Every command issued, in order.
    pub(super) commands: Vec<Command>,
    /// Per placer: per node its tables say refuses work, its own op counter and the time at
    /// the end of the input after which they first said so.
    pub(super) known: Vec<BTreeMap<usize, (u64, Millis)>>,
    /// Per node: its own op counter at the end of its last input.
    pub(super) last_counter: Vec<u64>,
    /// Per node: the drain its current core carries out, and since when it saw it.
    pub(super) seen: Vec<Option<(Stamp, Millis)>>,
    /// Paced drain stops in flight: (job, incarnation, slot, draining node) → when stopped.
    pub(super) in_flight: BTreeMap<(String, u64, u32, usize), Millis>,
    /// The figures for the report.
    pub figures: DrainFigures,
}

/// What the drain checkers saw.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DrainFigures {
    /// Commands issued (per node named).
    pub commands: u64,
    /// Of those, refused by the accepting core.
    pub refused: u64,
    /// Placements written (all nodes), judged against what their placers knew.
    pub placements: u64,
    /// The longest time from a command to a majority-side node's tables holding it, in ms.
    pub longest_learn_ms: u64,
    /// Drain stops before the deadline.
    pub paced_stops: u64,
    /// Drain stops at or after the deadline (`max_parallel` ignored by design).
    pub deadline_stops: u64,
    /// The most paced stops of one job in flight from one node at once.
    pub most_in_flight: u64,
    /// Times a job had paced stops in flight from two draining nodes at once.
    pub overlaps: u64,
    /// The fewest serving slots left by a paced stop, above `count − max_parallel`.
    pub least_margin: Option<i64>,
}

impl DrainWatch {
    /// What the script says of node `x` at `now`: the last accepted command about it that
    /// makes it refuse new work, if it still does (`None` once it is enabled again).
    pub(super) fn in_force(&self, x: usize, now: Millis) -> Option<&Command> {
        let mut last = None;
        for c in self
            .commands
            .iter()
            .filter(|c| c.node == x && c.at <= now && c.refused.is_none())
        {
            last = match c.change {
                NodeChange::Drain { .. } | NodeChange::Eligible(false) => Some(c),
                NodeChange::Eligible(true) => None,
                // The node stays ineligible after an undrain (`docs/services.md`, §5).
                NodeChange::Undrain => last,
            };
        }
        last
    }

    /// The drain in force on node `x` at the end of the script: when it was issued and its
    /// deadline (`None`: no drain, or undrained or enabled since).
    pub(super) fn drain_in_force(&self, x: usize) -> Option<(Millis, Option<u64>)> {
        let mut last = None;
        for c in self
            .commands
            .iter()
            .filter(|c| c.node == x && c.refused.is_none())
        {
            last = match c.change {
                NodeChange::Drain { deadline_ms } => Some((c.at, deadline_ms)),
                NodeChange::Eligible(false) => last,
                NodeChange::Eligible(true) | NodeChange::Undrain => None,
            };
        }
        last
    }
}

impl DrainWatch {
    /// Whether the script's last accepted command about node `x` makes it refuse new work.
    #[must_use]
    pub fn refuses_at_end(&self, x: usize) -> bool {
        self.in_force(x, Millis(u64::MAX)).is_some()
    }

    /// Whether the script issues node commands, so that the drain checkers watch.
    #[must_use]
    pub fn enabled(&self) -> bool {
        self.enabled
    }
}
