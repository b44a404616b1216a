//! What one foca call produced, including which members it changed.
//!
//! foca raises no notification when a member turns suspect or refutes a suspicion, so the
//! member view used to be reconciled by scanning foca's whole member list every 500 ms on
//! every node: O(N) per node per scan, the largest cost of a 1,000-node simulation. Then the
//! codec recorded every member it decoded and the view looked each one up, though most
//! piggy-backed updates are news to nobody. Now the vendored foca notifies
//! `MemberChanged` for every update it applied (and only those), and [`Outputs`] keeps the
//! member as it now is, so the view compares just the changes (see
//! `Membership::resolve_changed`).
//!
//! A full scan still runs every few seconds as a safety net and counts what it had to
//! correct (`Stats::view_corrections`); the simulator reports that count, and tests require it
//! to stay zero.
//!
//! [`Outputs`] also replaces foca's `AccumulatingRuntime`, which copies every payload twice.
//!
//! It also keeps the steps of direct probes ([`ProbeEvent`], from the vendored foca's
//! `ProbeStarted` and `ProbeAcked`) for a shell that times them: foca keeps no clock, and
//! the core's [`crate::Millis`] are too coarse for a LAN round trip, so the agent notes its
//! own instants. At most [`PROBE_EVENTS_KEPT`] wait; a shell that never asks (the simulator)
//! costs a bounded queue.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use foca::{Notification, Runtime, State, Timer};

use crate::types::NodeId;
use crate::wire;

/// A view-relevant notification, owned.
#[derive(Debug)]
pub(crate) enum Note {
    Up(NodeId),
    Down(NodeId),
    Rename(NodeId),
    Rejoin(NodeId),
    /// A probe of this member got no answer, directly or through anyone asked.
    ProbeFailed(NodeId),
}

/// A step of a direct probe, for a shell that times probes ([`crate::Membership::poll_probe`]).
///
/// foca probes one member at a time: a `Started` is followed by at most one `Acked` of the
/// same `number` and member, before the next `Started`. Probes that succeed only through the
/// members asked to ping indirectly, and late or repeated acks, have no `Acked`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeEvent {
    /// The direct ping of probe `number` to `member` is in the outbox.
    Started {
        /// foca's probe number (wraps at 256).
        number: u8,
        /// The member probed.
        member: NodeId,
    },
    /// `member` answered the direct ping of probe `number`: the datagram just handled.
    Acked {
        /// foca's probe number.
        number: u8,
        /// The member probed.
        member: NodeId,
    },
}

/// Probe steps kept for the shell; the oldest go first (one probe period has two).
pub const PROBE_EVENTS_KEPT: usize = 8;

/// Everything a foca call produced, in order per kind.
#[derive(Debug, Default)]
pub(crate) struct Outputs {
    /// Datagrams to send, already prefixed with [`wire::KIND_SWIM`].
    pub(crate) sends: VecDeque<(SocketAddr, Vec<u8>)>,
    pub(crate) timers: VecDeque<(Duration, Timer<NodeId>)>,
    pub(crate) notes: VecDeque<Note>,
    /// Members whose identity, incarnation or state this call changed, as each change left
    /// them, in order (a member changed twice appears twice).
    pub(crate) changed: Vec<(NodeId, State)>,
    /// Steps of direct probes not yet taken by the shell (at most [`PROBE_EVENTS_KEPT`]).
    pub(crate) probes: VecDeque<ProbeEvent>,
}

impl Outputs {
    fn probe(&mut self, event: ProbeEvent) {
        if self.probes.len() == PROBE_EVENTS_KEPT {
            self.probes.pop_front();
        }
        self.probes.push_back(event);
    }
}

impl Runtime<NodeId> for Outputs {
    fn notify(&mut self, notification: Notification<'_, NodeId>) {
        match notification {
            Notification::MemberChanged(m) => self.changed.push((m.id().clone(), m.state())),
            Notification::MemberUp(id) => self.notes.push_back(Note::Up(id.clone())),
            Notification::MemberDown(id) => self.notes.push_back(Note::Down(id.clone())),
            Notification::Rename(_, new) => self.notes.push_back(Note::Rename(new.clone())),
            Notification::Rejoin(id) => self.notes.push_back(Note::Rejoin(id.clone())),
            Notification::ProbeFailed(_, id) => {
                self.notes.push_back(Note::ProbeFailed(id.clone()));
            }
            Notification::ProbeStarted(number, id) => self.probe(ProbeEvent::Started {
                number,
                member: id.clone(),
            }),
            Notification::ProbeAcked(number, id) => self.probe(ProbeEvent::Acked {
                number,
                member: id.clone(),
            }),
            _ => {}
        }
    }

    fn send_to(&mut self, to: NodeId, data: &[u8]) {
        let mut payload = Vec::with_capacity(data.len() + 1);
        payload.push(wire::KIND_SWIM);
        payload.extend_from_slice(data);
        self.sends.push_back((to.addr, payload));
    }

    fn submit_after(&mut self, event: Timer<NodeId>, after: Duration) {
        self.timers.push_back((after, event));
    }
}
