//! What one foca call produced, and which members it may have changed.
//!
//! foca raises no notification when a member turns suspect or refutes a suspicion, so the
//! member view used to be reconciled by scanning foca's whole member list every 500 ms on
//! every node: O(N) per node per scan, the largest cost of a 1,000-node simulation. Instead,
//! every input to foca records the addresses it may have touched, and the view looks up only
//! those (see `Membership::resolve_touched`):
//! - [`TouchCodec`] records the sender of every datagram foca decodes (foca marks it alive
//!   and may apply its refutation) and every member update in it (gossip piggy-back and
//!   announce feeds) — the only ways news about a member arrives;
//! - [`Outputs::notify`] records members foca declared up, down or renamed;
//! - [`Outputs::submit_after`] records the member of every suspect-to-down timer, which foca
//!   arms exactly when its own probe makes a member suspect.
//!
//! A full scan still runs every few seconds as a safety net and counts what it had to
//! correct (`Stats::view_corrections`); the simulator reports that count, and tests require it
//! to stay zero.
//!
//! [`Outputs`] also replaces foca's `AccumulatingRuntime`, which copies every payload twice.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Buf, BufMut};
use foca::{Codec, Header, Member, Notification, PostcardCodec, Runtime, Timer};

use crate::ads::Shared;
use crate::types::NodeId;
use crate::wire;

/// A view-relevant notification, owned.
#[derive(Debug)]
pub(crate) enum Note {
    Up(NodeId),
    Down(NodeId),
    Rename(NodeId),
    Rejoin(NodeId),
}

/// Everything a foca call produced, in order per kind.
#[derive(Debug, Default)]
pub(crate) struct Outputs {
    /// Datagrams to send, already prefixed with [`wire::KIND_SWIM`].
    pub(crate) sends: VecDeque<(SocketAddr, Vec<u8>)>,
    pub(crate) timers: VecDeque<(Duration, Timer<NodeId>)>,
    pub(crate) notes: VecDeque<Note>,
    /// Addresses of members whose state this call may have changed (duplicates allowed).
    pub(crate) touched: Vec<SocketAddr>,
}

impl Runtime<NodeId> for Outputs {
    fn notify(&mut self, notification: Notification<'_, NodeId>) {
        match notification {
            Notification::MemberUp(id) => {
                self.touched.push(id.addr);
                self.notes.push_back(Note::Up(id.clone()));
            }
            Notification::MemberDown(id) => {
                self.touched.push(id.addr);
                self.notes.push_back(Note::Down(id.clone()));
            }
            Notification::Rename(_, new) => {
                self.touched.push(new.addr);
                self.notes.push_back(Note::Rename(new.clone()));
            }
            Notification::Rejoin(id) => self.notes.push_back(Note::Rejoin(id.clone())),
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
        if let Timer::ChangeSuspectToDown { member_id, .. } = &event {
            self.touched.push(member_id.addr);
        }
        self.timers.push_back((after, event));
    }
}

/// Addresses of members decoded from datagrams, shared between the codec (owned by foca)
/// and the membership core.
pub(crate) type Touched = Shared<Vec<SocketAddr>>;

/// foca's postcard codec, recording the address of every member it decodes.
#[derive(Debug, Clone, Default)]
pub(crate) struct TouchCodec {
    pub(crate) touched: Touched,
}

impl Codec<NodeId> for TouchCodec {
    type Error = <PostcardCodec as Codec<NodeId>>::Error;

    fn encode_header(
        &mut self,
        header: &Header<NodeId>,
        buf: impl BufMut,
    ) -> Result<(), Self::Error> {
        PostcardCodec.encode_header(header, buf)
    }

    fn decode_header(&mut self, buf: impl Buf) -> Result<Header<NodeId>, Self::Error> {
        let header: Header<NodeId> = PostcardCodec.decode_header(buf)?;
        self.touched.lock().push(header.src.addr);
        Ok(header)
    }

    fn encode_member(
        &mut self,
        member: &Member<NodeId>,
        buf: impl BufMut,
    ) -> Result<(), Self::Error> {
        PostcardCodec.encode_member(member, buf)
    }

    fn decode_member(&mut self, buf: impl Buf) -> Result<Member<NodeId>, Self::Error> {
        let member: Member<NodeId> = PostcardCodec.decode_member(buf)?;
        self.touched.lock().push(member.id().addr);
        Ok(member)
    }
}
