//! The `nodes` component (`docs/services.md`, §5): per node name, the operator's intent
//! (eligible for new work, draining with an optional deadline), last writer wins by its stamp,
//! and the drain progress the node itself writes, joined by `max`. Rows are few (one per node
//! an operator ever touched) and never purged.

use serde::{Deserialize, Serialize};

use crate::ids::Stamp;

/// A drain the operator asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DrainSpec {
    /// Stop whatever is left this long after the node first saw the intent (its own clock);
    /// `None`: batch tasks finish, however long they take.
    pub deadline_ms: Option<u64>,
}

/// What the operator wants of a node. Written by the node that accepted the command; two
/// intents join by last-writer-wins on `stamp` (the whole value breaks a tie).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeIntent {
    /// Last-writer-wins marker.
    pub stamp: Stamp,
    /// New placements may land on the node (a drain implies `false`).
    pub eligible: bool,
    /// The node moves its tasks off.
    pub drain: Option<DrainSpec>,
}

impl NodeIntent {
    /// Whether this intent keeps new work off the node.
    #[must_use]
    pub fn refuses_work(&self) -> bool {
        !self.eligible || self.drain.is_some()
    }
}

/// How far the node carried out a drain: written by the node itself, once none of its
/// attempts is live (never before). Joined by `max` (`drain`, then `done`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DrainProgress {
    /// The stamp of the intent whose drain this is.
    pub drain: Stamp,
    /// Nothing of the node's is live any more.
    pub done: bool,
}

/// One row of the `nodes` component; each field joins on its own.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NodeRow {
    /// The operator's intent.
    pub intent: Option<NodeIntent>,
    /// The node's progress.
    pub progress: Option<DrainProgress>,
}

impl NodeRow {
    /// Join `other` in; returns whether anything changed.
    pub fn join(&mut self, other: &NodeRow) -> bool {
        let mut changed = false;
        if let Some(i) = &other.intent
            && self.intent.as_ref().is_none_or(|cur| i > cur)
        {
            self.intent = Some(i.clone());
            changed = true;
        }
        if let Some(p) = &other.progress
            && self.progress.as_ref().is_none_or(|cur| p > cur)
        {
            self.progress = Some(p.clone());
            changed = true;
        }
        changed
    }

    /// Whether the node refuses new work: ineligible or draining.
    #[must_use]
    pub fn refuses_work(&self) -> bool {
        self.intent.as_ref().is_some_and(NodeIntent::refuses_work)
    }

    /// The drain in force, if any, with its intent's stamp.
    #[must_use]
    pub fn drain(&self) -> Option<(&Stamp, DrainSpec)> {
        let i = self.intent.as_ref()?;
        Some((&i.stamp, i.drain?))
    }

    /// Whether the drain in force is complete.
    #[must_use]
    pub fn drain_done(&self) -> bool {
        self.completed_drain().is_some()
    }

    /// The stamp of the drain in force, when it is complete.
    #[must_use]
    pub fn completed_drain(&self) -> Option<&Stamp> {
        let (stamp, _) = self.drain()?;
        let p = self.progress.as_ref()?;
        (p.drain == *stamp && p.done).then_some(stamp)
    }

    /// Whether the row is empty (not kept).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.intent.is_none() && self.progress.is_none()
    }
}
