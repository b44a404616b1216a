//! Identities and clocks shared by the tables: actors, hybrid logical clocks, write stamps and
//! attempt keys.

use std::cmp::Ordering;
use std::fmt;

use serde::{Deserialize, Serialize};
use shoal_gossip::Millis;

/// A job id or node name inside the tables' keys: up to 24 bytes are stored inline (job ids
/// and node names almost always fit), longer ones on the heap. Every replica compares and
/// clones these keys for every op it applies; a heap string made each comparison a cache miss
/// and each clone an allocation. Same order, equality and serde bytes as `String`.
pub type Name = compact_str::CompactString;

/// The writer of replicated ops: one start of one node's scheduler.
///
/// `start` is drawn from the scheduler's seed on every start (including a restore from a
/// snapshot), so a node that restarts from a slightly stale snapshot can never reuse a dot it
/// already sent before crashing: its new ops come from a fresh actor. Ownership rules (who may
/// write what) are stated in terms of the node name, never the start.
///
/// Ordered by `(start, node)`: a version vector is a map keyed by actor, and comparing the
/// inline random start id first settles almost every comparison without reading the name from
/// the heap (a cache miss per comparison in a large process).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ActorId {
    /// Node name.
    pub node: Name,
    /// Random id of this start of the node's scheduler.
    pub start: u64,
}

impl Ord for ActorId {
    fn cmp(&self, other: &Self) -> Ordering {
        self.start
            .cmp(&other.start)
            .then_with(|| self.node.cmp(&other.node))
    }
}

impl PartialOrd for ActorId {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for ActorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{:x}", self.node, self.start)
    }
}

/// A dot: the `counter`-th op written by `actor`.
pub type Dot = crdts::Dot<ActorId>;
/// A version vector over actors.
pub type VersionVector = crdts::VClock<ActorId>;

/// A hybrid logical clock reading: wall milliseconds plus a logical counter that orders events
/// within one millisecond and across skewed clocks.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct Hlc {
    /// Physical component, in the caller's milliseconds.
    pub wall_ms: u64,
    /// Logical component.
    pub logical: u32,
}

/// The hybrid logical clock of one scheduler.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct HlcClock {
    last: Hlc,
}

impl HlcClock {
    /// A new reading strictly greater than every reading issued or observed so far.
    pub(crate) fn tick(&mut self, now: Millis) -> Hlc {
        self.last = if now.0 > self.last.wall_ms {
            Hlc {
                wall_ms: now.0,
                logical: 0,
            }
        } else {
            match self.last.logical.checked_add(1) {
                Some(logical) => Hlc {
                    wall_ms: self.last.wall_ms,
                    logical,
                },
                None => Hlc {
                    wall_ms: self.last.wall_ms.saturating_add(1),
                    logical: 0,
                },
            }
        };
        self.last
    }

    /// Fold in a reading seen on a replicated write so later local writes order after it.
    pub(crate) fn observe(&mut self, seen: Hlc) {
        self.last = self.last.max(seen);
    }
}

/// A unique, totally ordered write stamp: last-writer-wins registers compare these. Uniqueness
/// comes from the actor (each actor's clock is strictly increasing). Ordered by `(hlc, actor
/// node, actor start)`, written out rather than derived so that the last-writer-wins
/// order does not follow [`ActorId`]'s lookup order.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Stamp {
    /// When.
    pub hlc: Hlc,
    /// Who.
    pub actor: ActorId,
}

impl Ord for Stamp {
    fn cmp(&self, other: &Self) -> Ordering {
        self.hlc
            .cmp(&other.hlc)
            .then_with(|| self.actor.node.cmp(&other.actor.node))
            .then_with(|| self.actor.start.cmp(&other.actor.start))
    }
}

impl PartialOrd for Stamp {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// One attempt to run one slot of one job: the key of the attempt tables and the identity of a
/// task for the executor. Ordered by `(incarnation, job, slot, attempt, placer)`: within one
/// slot the newest attempt is the greatest key (the fencing order), the attempts of one slot
/// and of one job incarnation are contiguous, and the incarnation (a hash of the job id and
/// its creating stamp, stored inline) comes first so that comparing two keys of different jobs
/// almost never reads the job id from the heap. The tables are maps keyed by this type, and
/// those heap reads were most of their lookup cost in large simulations.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AttemptId {
    /// Job id.
    pub job: Name,
    /// Which incarnation of the job id (a job purged and submitted again is a new incarnation).
    pub incarnation: u64,
    /// Slot index, `0..count`.
    pub slot: u32,
    /// Attempt number within the slot, from 1.
    pub attempt: u32,
    /// Name of the coordinator that placed it (breaks ties between two coordinators).
    pub placer: Name,
}

impl Ord for AttemptId {
    fn cmp(&self, other: &Self) -> Ordering {
        self.incarnation
            .cmp(&other.incarnation)
            .then_with(|| self.job.cmp(&other.job))
            .then_with(|| self.slot.cmp(&other.slot))
            .then_with(|| self.attempt.cmp(&other.attempt))
            .then_with(|| self.placer.cmp(&other.placer))
    }
}

impl PartialOrd for AttemptId {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl AttemptId {
    /// The slot this attempt belongs to.
    #[must_use]
    pub fn slot_key(&self) -> SlotKey {
        SlotKey {
            job: self.job.clone(),
            incarnation: self.incarnation,
            slot: self.slot,
        }
    }
}

impl fmt::Display for AttemptId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}[{}]#{}@{}",
            self.job, self.slot, self.attempt, self.placer
        )
    }
}

/// One slot of one job incarnation. Ordered like [`AttemptId`]: `(incarnation, job, slot)`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SlotKey {
    /// Job id.
    pub job: Name,
    /// Job incarnation.
    pub incarnation: u64,
    /// Slot index.
    pub slot: u32,
}

impl Ord for SlotKey {
    fn cmp(&self, other: &Self) -> Ordering {
        self.incarnation
            .cmp(&other.incarnation)
            .then_with(|| self.job.cmp(&other.job))
            .then_with(|| self.slot.cmp(&other.slot))
    }
}

impl PartialOrd for SlotKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl SlotKey {
    /// The smallest attempt key of this slot (for range scans).
    pub(crate) fn first_attempt(&self) -> AttemptId {
        AttemptId {
            job: self.job.clone(),
            incarnation: self.incarnation,
            slot: self.slot,
            attempt: 0,
            placer: Name::default(),
        }
    }

    /// The smallest attempt key of the next slot (exclusive end of range scans).
    pub(crate) fn end_attempt(&self) -> AttemptId {
        match self.slot.checked_add(1) {
            Some(next) => AttemptId {
                slot: next,
                ..self.first_attempt()
            },
            // The smallest job id above this one, in the same incarnation.
            None => AttemptId {
                job: compact_str::format_compact!("{}\0", self.job),
                slot: 0,
                ..self.first_attempt()
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hlc_is_strictly_increasing() {
        let mut c = HlcClock::default();
        let a = c.tick(Millis(10));
        let b = c.tick(Millis(10));
        let d = c.tick(Millis(5));
        assert!(a < b && b < d);
        c.observe(Hlc {
            wall_ms: 100,
            logical: 7,
        });
        assert!(
            c.tick(Millis(50))
                > Hlc {
                    wall_ms: 100,
                    logical: 7
                }
        );
    }

    #[test]
    fn attempt_order_is_fencing_order() {
        let k = |attempt, placer: &str| AttemptId {
            job: "j".into(),
            incarnation: 1,
            slot: 0,
            attempt,
            placer: placer.into(),
        };
        assert!(k(2, "a") > k(1, "z"));
        assert!(k(2, "b") > k(2, "a"));
        let s = k(1, "a").slot_key();
        assert!(s.first_attempt() < k(1, "a") && k(u32::MAX, "zz") < s.end_attempt());
    }

    #[test]
    fn slot_ranges_hold_exactly_the_slots_attempts() {
        let id = |job: &str, incarnation, slot, attempt| AttemptId {
            job: job.into(),
            incarnation,
            slot,
            attempt,
            placer: "p".into(),
        };
        for slot in [0, 7, u32::MAX] {
            let s = id("j", 5, slot, 1).slot_key();
            let inside = |k: &AttemptId| s.first_attempt() <= *k && *k < s.end_attempt();
            assert!(inside(&id("j", 5, slot, 1)) && inside(&id("j", 5, slot, u32::MAX)));
            for other in [
                id("j", 4, slot, 1),
                id("j", 6, slot, 1),
                id("j", 5, slot.wrapping_add(1), 1),
                id("j\0", 5, 0, 1),
                id("i", 5, slot, 1),
                id("k", 5, slot, 1),
            ] {
                assert!(!inside(&other), "{other} in slot {slot}");
            }
        }
    }
}
