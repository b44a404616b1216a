//! Messages between schedulers, and their bounded codec.
//!
//! The shell sends each [`Message`] reliably (a QUIC stream) to the named peer. Messages may
//! arrive in any order and more than once; the receiver copes (ops are buffered per actor,
//! everything is idempotent). Decoding trusts nothing: the input length is capped before
//! parsing, postcard reads lengths against the remaining input (serde caps pre-allocation), and
//! counts are checked against [`WireLimits`] afterwards.
//!
//! A shell that can hand over the received buffer uses [`Message::decode_shared`]: the ops of
//! an `Ops` message then keep their bytes as slices of that buffer, which the replica logs
//! as they are (see [`Op`]).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use bytes::Bytes;

use crate::ids::{ActorId, VersionVector};
use crate::table::{MAX_HEALTH_NOTE, Op, OpBody, Tables};

/// One message for one or more peers ([`crate::Scheduler::poll_message`]). A write is pushed
/// to every live peer: the shell encodes it once and sends the same bytes to each recipient,
/// instead of the core cloning the ops and the shell encoding them once per peer.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    /// The recipients, each named once: iterate [`Recipients::iter`].
    pub to: Recipients,
    /// The message.
    pub message: Message,
}

impl Outgoing {
    /// A message for one peer.
    pub(crate) fn one(to: &str, message: Message) -> Self {
        Self {
            to: Recipients::One(to.to_string()),
            message,
        }
    }
}

/// Who an [`Outgoing`] is for: one peer, or every live peer of the sender's member view.
/// A broadcast names its recipients by sharing the view's list (an `Arc`), not by copying
/// every name into each message: at 5,000 members a write was 4,999 name clones.
#[derive(Debug, Clone, PartialEq)]
pub enum Recipients {
    /// One peer.
    One(String),
    /// Every live member of the view (alive or suspect, not left) but the sender.
    Live(LivePeers),
}

/// The live members of a view, less the sender (see [`Recipients::Live`]).
#[derive(Debug, Clone, PartialEq)]
pub struct LivePeers {
    /// The view's live members with their name hashes, sorted by name (shared with the core).
    pub(crate) live: Arc<Vec<(String, u64)>>,
    /// The sender's index in `live`, if it is there.
    pub(crate) sender: Option<usize>,
}

impl LivePeers {
    /// How many peers.
    #[must_use]
    pub fn len(&self) -> usize {
        self.live.len() - usize::from(self.sender.is_some())
    }

    /// No peer at all.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `i`-th peer in name order.
    #[must_use]
    pub fn nth(&self, i: usize) -> Option<&str> {
        let i = match self.sender {
            Some(s) if i >= s => i + 1,
            _ => i,
        };
        self.live.get(i).map(|(n, _)| n.as_str())
    }

    /// The peers in name order.
    pub fn iter(&self) -> impl Iterator<Item = &str> + '_ {
        let sender = self.sender;
        self.live
            .iter()
            .enumerate()
            .filter(move |(i, _)| Some(*i) != sender)
            .map(|(_, (n, _))| n.as_str())
    }
}

impl Recipients {
    /// The recipients' names, each once.
    pub fn iter(&self) -> impl Iterator<Item = &str> + '_ {
        let (one, live) = match self {
            Self::One(n) => (Some(n.as_str()), None),
            Self::Live(p) => (None, Some(p.iter())),
        };
        one.into_iter().chain(live.into_iter().flatten())
    }

    /// How many recipients.
    #[must_use]
    pub fn len(&self) -> usize {
        match self {
            Self::One(_) => 1,
            Self::Live(p) => p.len(),
        }
    }

    /// No recipient.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Replication traffic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Message {
    /// Ops: pushed by their writer right after the write, or sent in reply to a digest.
    Ops {
        /// In per-actor counter order.
        ops: Vec<Op>,
    },
    /// "This is what I have." The receiver replies with the ops the sender lacks (or its
    /// state), and with its own digest when `reply` is set and it lacks something itself.
    Digest {
        /// The sender's version vector.
        clock: VersionVector,
        /// Ask for a digest back (push-pull); never set on a reply.
        reply: bool,
    },
    /// The whole tables, when the needed ops are no longer in the sender's logs.
    State {
        /// Sender's tables.
        tables: Box<Tables>,
    },
    /// "I hold all your ops up to `counter`": lets a writer know a submission is replicated.
    Ack {
        /// The writer acknowledged.
        actor: ActorId,
        /// Highest contiguous counter held.
        counter: u64,
    },
}

/// Bounds applied when decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WireLimits {
    /// Largest encoded message accepted.
    pub max_message_bytes: usize,
    /// Most ops in one `Ops` message.
    pub max_ops: usize,
    /// Most actors in one version vector.
    pub max_actors: usize,
}

impl Default for WireLimits {
    fn default() -> Self {
        Self {
            max_message_bytes: 64 << 20,
            max_ops: 65_536,
            max_actors: 65_536,
        }
    }
}

/// Why bytes were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Longer than [`WireLimits::max_message_bytes`].
    #[error("message of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Input length.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// Not a valid encoding.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// Trailing bytes after a valid message.
    #[error("{0} trailing bytes after the message")]
    Trailing(usize),
    /// A count exceeds a limit.
    #[error("{what}: {count} exceeds the limit of {max}")]
    Limit {
        /// What was counted.
        what: &'static str,
        /// How many.
        count: usize,
        /// Limit.
        max: usize,
    },
    /// Semantically impossible content.
    #[error("invalid message: {0}")]
    Invalid(&'static str),
}

impl Message {
    /// Encode with postcard. Encoding our own types cannot fail; an empty vector is returned
    /// (and refused by the peer) if it ever did.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let bytes = postcard::to_stdvec(self).unwrap_or_default();
        debug_assert!(!bytes.is_empty(), "postcard encoding failed");
        bytes
    }

    /// Decode and check bounds. Never panics, whatever the bytes.
    pub fn decode(bytes: &[u8], limits: &WireLimits) -> Result<Self, DecodeError> {
        check_size(bytes, limits)?;
        let (msg, rest): (Message, &[u8]) = postcard::take_from_bytes(bytes).map_err(malformed)?;
        if !rest.is_empty() {
            return Err(DecodeError::Trailing(rest.len()));
        }
        msg.check(limits)?;
        Ok(msg)
    }

    /// Whether `bytes` encode an [`Message::Ack`], read from the variant index alone (no
    /// decoding; the message is still decoded and checked where it is handled). An ack may be
    /// handled ahead of the messages its sender sent before it: it raises a maximum, and
    /// says nothing about them. A node picks acks out of a backlog of inbound frames with
    /// this, so a submission's answer does not wait behind thousands of ops
    /// (`docs/agent.md`, "What a large submission's answer waits for").
    #[must_use]
    pub fn is_ack(bytes: &[u8]) -> bool {
        matches!(
            postcard::take_from_bytes::<u32>(bytes),
            Ok((ACK_VARIANT, _))
        )
    }

    /// [`Message::decode`], keeping each op of an `Ops` message's own bytes as a slice of
    /// `bytes` (refcounted, no copy): the replica logs them instead of encoding the op again,
    /// so the recipients of one broadcast log one buffer. Same checks and same result as
    /// `decode` (the slices aside); never panics, whatever the bytes.
    pub fn decode_shared(bytes: &Bytes, limits: &WireLimits) -> Result<Self, DecodeError> {
        check_size(bytes, limits)?;
        // postcard's layout of `Ops { ops }`: the variant index (varint u32), the number of
        // ops (varint usize), then each op. Other variants have no ops to keep.
        let Ok((OPS_VARIANT, after_variant)) = postcard::take_from_bytes::<u32>(bytes) else {
            return Self::decode(bytes, limits);
        };
        let (count, mut rest) =
            postcard::take_from_bytes::<usize>(after_variant).map_err(malformed)?;
        // Checked before parsing; the count from the wire never sizes an allocation either
        // (the vector grows with the ops actually decoded).
        limit("ops", count, limits.max_ops)?;
        let mut ops = Vec::new();
        for _ in 0..count {
            let start = bytes.len() - rest.len();
            let (op, tail) = postcard::take_from_bytes::<Op>(rest).map_err(malformed)?;
            rest = tail;
            let end = bytes.len() - rest.len();
            ops.push(op.with_encoding(bytes.slice(start..end)));
        }
        if !rest.is_empty() {
            return Err(DecodeError::Trailing(rest.len()));
        }
        let msg = Message::Ops { ops };
        msg.check(limits)?;
        Ok(msg)
    }

    fn check(&self, limits: &WireLimits) -> Result<(), DecodeError> {
        match self {
            Message::Ops { ops } => {
                limit("ops", ops.len(), limits.max_ops)?;
                if ops.iter().any(|op| op.dot.counter == 0) {
                    return Err(DecodeError::Invalid("op with counter 0"));
                }
                if ops.iter().any(|op| matches!(&op.body, OpBody::Assign { id, .. } | OpBody::State { id, .. } | OpBody::Binding { id, .. } | OpBody::Health { id, .. } | OpBody::Milestones { id, .. } if id.attempt == 0)) {
                    return Err(DecodeError::Invalid("attempt number 0"));
                }
                if ops.iter().any(|op| matches!(&op.body, OpBody::Health { health, .. } if health.note.len() > MAX_HEALTH_NOTE)) {
                    return Err(DecodeError::Invalid("health note over 256 bytes"));
                }
                if ops.iter().any(|op| matches!(&op.body, OpBody::Rollout { rollout, .. } if rollout.failed.as_ref().is_some_and(|f| f.reason.len() > MAX_HEALTH_NOTE))) {
                    return Err(DecodeError::Invalid("rollout failure over 256 bytes"));
                }
                Ok(())
            }
            Message::Digest { clock, .. } => {
                limit("actors", clock.iter().count(), limits.max_actors)
            }
            Message::State { tables } => {
                limit("actors", tables.clock().iter().count(), limits.max_actors)
            }
            Message::Ack { .. } => Ok(()),
        }
    }
}

/// postcard's variant index of [`Message::Ops`] (declaration order).
const OPS_VARIANT: u32 = 0;
/// postcard's variant index of [`Message::Ack`].
const ACK_VARIANT: u32 = 3;

fn check_size(bytes: &[u8], limits: &WireLimits) -> Result<(), DecodeError> {
    if bytes.len() > limits.max_message_bytes {
        return Err(DecodeError::TooLarge {
            len: bytes.len(),
            max: limits.max_message_bytes,
        });
    }
    Ok(())
}

fn limit(what: &'static str, count: usize, max: usize) -> Result<(), DecodeError> {
    if count > max {
        Err(DecodeError::Limit { what, count, max })
    } else {
        Ok(())
    }
}

fn malformed(e: postcard::Error) -> DecodeError {
    DecodeError::Malformed(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{AttemptId, Dot, Hlc, Stamp};
    use crate::table::{Assignment, AttemptState, JobEntry};
    use proptest::prelude::*;
    use shoal_gossip::Resources;

    fn actor() -> ActorId {
        ActorId {
            node: "n1".into(),
            start: 42,
        }
    }

    fn sample_messages() -> Vec<Message> {
        let stamp = Stamp {
            hlc: Hlc {
                wall_ms: 5,
                logical: 1,
            },
            actor: actor(),
        };
        let spec = crate::JobSpec::from_json_str(
            r#"{"id": "web", "type": "service", "count": 6, "command": "sleep", "args": ["600"],
                "resources": {"cpu": 100, "memory": 32}, "constraints": ["rack == r1"]}"#,
        )
        .unwrap();
        let id = AttemptId {
            job: "web".into(),
            incarnation: 9,
            slot: 3,
            attempt: 1,
            placer: "n2".into(),
        };
        let ops = vec![
            Op::new(
                Dot::new(actor(), 1),
                OpBody::Job {
                    incarnation: 9,
                    entry: JobEntry {
                        stamp: stamp.clone(),
                        epoch: stamp.clone(),
                        spec,
                        stopped: false,
                        deployment: stamp.clone(),
                        version: 1,
                        skip_canary: false,
                    },
                },
            ),
            Op::new(
                Dot::new(actor(), 2),
                OpBody::Assign {
                    id: id.clone(),
                    assignment: Assignment {
                        target: "n3".into(),
                        resources: Resources::default(),
                        epoch: stamp,
                        generation: 0,
                    },
                },
            ),
            Op::new(
                Dot::new(actor(), 3),
                OpBody::State {
                    id,
                    state: AttemptState::Exited { code: -9 },
                },
            ),
        ];
        let mut tables = Tables::default();
        for op in ops.clone() {
            crdts::CmRDT::apply(&mut tables, op);
        }
        vec![
            Message::Ops { ops },
            Message::Digest {
                clock: tables.clock().clone(),
                reply: true,
            },
            Message::State {
                tables: Box::new(tables),
            },
            Message::Ack {
                actor: actor(),
                counter: 3,
            },
        ]
    }

    /// Both decoders, which must agree; for `Ops`, every op kept its bytes and they decode
    /// to the op alone.
    fn decode_both(bytes: &[u8], limits: &WireLimits) -> Result<Message, DecodeError> {
        let plain = Message::decode(bytes, limits);
        let shared = Message::decode_shared(&Bytes::copy_from_slice(bytes), limits);
        assert_eq!(plain.is_ok(), shared.is_ok(), "{plain:?} vs {shared:?}");
        if let Ok(Message::Ops { ops }) = &shared {
            for op in ops {
                let encoding = op.encoding().expect("a received op keeps its bytes");
                assert_eq!(&postcard::from_bytes::<Op>(encoding).unwrap(), op);
            }
        }
        if plain.is_ok() {
            assert_eq!(plain, shared);
        }
        shared
    }

    #[test]
    fn round_trips() {
        for m in sample_messages() {
            assert_eq!(
                Message::decode(&m.encode(), &WireLimits::default()).unwrap(),
                m
            );
            assert_eq!(decode_both(&m.encode(), &WireLimits::default()).unwrap(), m);
        }
    }

    #[test]
    fn only_an_ack_reads_as_an_ack() {
        let mut acks = 0;
        for m in sample_messages() {
            let is_ack = matches!(m, Message::Ack { .. });
            acks += usize::from(is_ack);
            assert_eq!(Message::is_ack(&m.encode()), is_ack, "{m:?}");
        }
        assert!(acks > 0, "the samples hold an ack");
        // Not a message at all: never an ack.
        for bytes in [&[][..], &[0x83][..], &[ACK_VARIANT as u8 + 1][..]] {
            assert!(!Message::is_ack(bytes), "{bytes:?}");
        }
    }

    #[test]
    fn shared_decoding_keeps_each_ops_exact_encoding() {
        let Message::Ops { ops } = &sample_messages()[0] else {
            unreachable!("the first sample is an Ops message")
        };
        let bytes = Bytes::from(sample_messages()[0].encode());
        let Ok(Message::Ops { ops: decoded }) =
            Message::decode_shared(&bytes, &WireLimits::default())
        else {
            panic!("decodes as Ops");
        };
        assert_eq!(&decoded, ops);
        for op in &decoded {
            let encoding = op.encoding().unwrap();
            assert_eq!(**encoding, *postcard::to_stdvec(op).unwrap());
            // A slice of the received buffer, not a copy.
            assert!(bytes.as_ptr_range().contains(&encoding.as_ptr()));
        }
        // Ops written here (or decoded without a buffer) carry none.
        assert!(ops.iter().all(|op| op.encoding().is_none()));
        assert_eq!(
            Message::Ops { ops: Vec::new() }.encode(),
            [OPS_VARIANT as u8, 0]
        );
    }

    #[test]
    fn limits_bite() {
        let m = &sample_messages()[0];
        let bytes = m.encode();
        let tight = WireLimits {
            max_ops: 2,
            ..WireLimits::default()
        };
        assert!(matches!(
            Message::decode(&bytes, &tight),
            Err(DecodeError::Limit { .. })
        ));
        assert!(matches!(
            decode_both(&bytes, &tight),
            Err(DecodeError::Limit { .. })
        ));
        let tiny = WireLimits {
            max_message_bytes: 10,
            ..WireLimits::default()
        };
        assert!(matches!(
            Message::decode(&bytes, &tiny),
            Err(DecodeError::TooLarge { .. })
        ));
        assert!(matches!(
            decode_both(&bytes, &tiny),
            Err(DecodeError::TooLarge { .. })
        ));
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(
            Message::decode(&long, &WireLimits::default()),
            Err(DecodeError::Trailing(1))
        );
        assert_eq!(
            decode_both(&long, &WireLimits::default()),
            Err(DecodeError::Trailing(1))
        );
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_both(&bytes, &WireLimits::default());
        }

        #[test]
        fn mutated_messages_never_panic(which in 0usize..4, flips in prop::collection::vec((any::<usize>(), any::<u8>()), 1..8), cut in any::<usize>()) {
            let mut bytes = sample_messages()[which].encode();
            for (at, v) in flips {
                let i = at % bytes.len();
                bytes[i] = v;
            }
            bytes.truncate(cut % (bytes.len() + 1));
            let _ = decode_both(&bytes, &WireLimits::default());
        }

        #[test]
        fn huge_length_prefixes_are_harmless(tag in 0u8..4, len in any::<u32>()) {
            // A variant tag followed by a varint length claiming up to 4 G elements.
            let mut bytes = vec![tag];
            let mut l = len;
            loop {
                let b = (l & 0x7f) as u8;
                l >>= 7;
                if l == 0 { bytes.push(b); break; }
                bytes.push(b | 0x80);
            }
            prop_assert!(decode_both(&bytes, &WireLimits::default()).is_err());
        }
    }
}
