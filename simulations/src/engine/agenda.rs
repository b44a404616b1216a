//! The engine's queue of future events: a heap ordered by `(time, seq)`, so events at the same
//! virtual time pop in the order they were pushed.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use shoal_gossip::Millis;

/// Queued events of type `E`, earliest first, ties in push order.
#[derive(Debug)]
pub struct Agenda<E> {
    queue: BinaryHeap<Reverse<Queued>>,
    slab: EventSlab<E>,
    seq: u64,
}

impl<E> Default for Agenda<E> {
    fn default() -> Self {
        Self {
            queue: BinaryHeap::new(),
            slab: EventSlab::default(),
            seq: 0,
        }
    }
}

impl<E> Agenda<E> {
    /// Queues `event` for `at`, after everything already queued for `at`.
    pub fn push(&mut self, at: Millis, event: E) {
        self.seq += 1;
        let slot = self.slab.insert(event);
        self.queue.push(Reverse(Queued {
            at,
            seq: self.seq,
            slot,
        }));
    }

    /// Takes the earliest event with its time, unless it is due after `end` (it then stays
    /// queued).
    pub fn pop_until(&mut self, end: Millis) -> Option<(Millis, E)> {
        while self.queue.peek().is_some_and(|Reverse(q)| q.at <= end) {
            let Reverse(q) = self.queue.pop()?;
            if let Some(event) = self.slab.take(q.slot) {
                return Some((q.at, event));
            }
        }
        None
    }
}

/// A queued event's place in time; the event itself waits in [`EventSlab`]. The heap moves
/// its entries at every push and pop (about 20 levels with millions queued), so they are kept
/// small: 24 bytes instead of the 96 of an inline event.
#[derive(Debug)]
struct Queued {
    at: Millis,
    seq: u64,
    slot: u32,
}

impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Queued {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// The queued events, by slot; freed slots are reused.
#[derive(Debug)]
struct EventSlab<E> {
    events: Vec<Option<E>>,
    free: Vec<u32>,
}

impl<E> Default for EventSlab<E> {
    fn default() -> Self {
        Self {
            events: Vec::new(),
            free: Vec::new(),
        }
    }
}

impl<E> EventSlab<E> {
    fn insert(&mut self, event: E) -> u32 {
        match self.free.pop() {
            Some(slot) => {
                self.events[slot as usize] = Some(event);
                slot
            }
            None => {
                self.events.push(Some(event));
                u32::try_from(self.events.len() - 1).expect("fewer than 2^32 queued events")
            }
        }
    }

    fn take(&mut self, slot: u32) -> Option<E> {
        let event = self.events.get_mut(slot as usize)?.take();
        debug_assert!(event.is_some(), "event slot {slot} taken twice");
        if event.is_some() {
            self.free.push(slot);
        }
        event
    }
}
