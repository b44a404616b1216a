//! The frame format of peer streams, split and joined by `tokio-util`'s `LengthDelimitedCodec`.
//!
//! A frame is `u32 big-endian body length` + `u8 channel` + body. [`FrameCodec`] reads the
//! header of each frame itself first, so that an oversized length is refused with the length it
//! announced and, on a receiving stream, the body is charged to its sender's budget before the
//! codec reserves room for it; the codec does the buffering and the splitting.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::{Buf, BufMut, BytesMut};
use tokio_util::codec::{Decoder, Encoder, LengthDelimitedCodec};

/// Who consumes a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// Scheduler messages (`shoal_scheduler::Message`).
    Scheduler,
    /// Control messages (key rotation, `crate::keyring`).
    Control,
}

impl Channel {
    fn byte(self) -> u8 {
        match self {
            Channel::Scheduler => 0,
            Channel::Control => 1,
        }
    }

    fn of(byte: u8) -> Option<Self> {
        match byte {
            0 => Some(Channel::Scheduler),
            1 => Some(Channel::Control),
            _ => None,
        }
    }
}

/// Length of a frame header: body length and channel.
pub const FRAME_HEADER_LEN: usize = 5;
/// Length of the body length field, the start of the header.
const LENGTH_FIELD_LEN: usize = 4;

/// Why a frame header was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The body is longer than the configured maximum.
    #[error("frame of {len} bytes exceeds the {max}-byte maximum")]
    Oversized {
        /// Announced body length.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// A channel byte this build does not know.
    #[error("unknown frame channel {0}")]
    UnknownChannel(u8),
}

/// Why a stream of frames ended.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The peer broke the frame format.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The sender's frames read but not yet consumed would pass its inbound byte limit.
    #[error(
        "{unconsumed} unconsumed bytes and a frame of {len} would pass the {limit}-byte inbound limit"
    )]
    OverBudget {
        /// Bytes of the sender's earlier frames not yet consumed.
        unconsumed: usize,
        /// This frame's body length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// Reading or writing the stream failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Decodes a frame header: the channel and the body length, checked against `max` before
/// the caller allocates anything.
pub fn decode_frame_header(
    header: [u8; FRAME_HEADER_LEN],
    max: usize,
) -> Result<(Channel, usize), FrameError> {
    let [a, b, c, d, channel] = header;
    let len = u32::from_be_bytes([a, b, c, d]) as usize;
    if len > max {
        return Err(FrameError::Oversized { len, max });
    }
    let channel = Channel::of(channel).ok_or(FrameError::UnknownChannel(channel))?;
    Ok((channel, len))
}

/// Bytes charged to a peer's inbound budget, refunded on drop.
#[derive(Debug)]
pub(crate) struct Charge {
    budget: Arc<AtomicUsize>,
    len: usize,
}

impl Charge {
    /// A charge to nobody.
    pub(crate) fn none() -> Self {
        Charge {
            budget: Arc::default(),
            len: 0,
        }
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget.fetch_sub(self.len, Ordering::Relaxed);
    }
}

/// A decoded frame: its channel, its body, and what it costs its sender until dropped.
#[derive(Debug)]
pub struct Frame {
    /// Who consumes it.
    pub channel: Channel,
    /// The body.
    pub body: BytesMut,
    pub(crate) charge: Charge,
}

/// Frames on a peer stream: the header checked (and charged) here, the rest done by a
/// `LengthDelimitedCodec`.
#[derive(Debug)]
pub struct FrameCodec {
    lengths: LengthDelimitedCodec,
    max: usize,
    /// The sender's unconsumed bytes and their limit, on a receiving stream.
    budget: Option<(Arc<AtomicUsize>, usize)>,
    /// The frame whose header was read and whose body is still arriving.
    current: Option<(Channel, Charge)>,
}

impl FrameCodec {
    /// Frames with bodies of at most `max` bytes.
    #[must_use]
    pub fn new(max: usize) -> Self {
        let lengths = LengthDelimitedCodec::builder()
            .length_field_length(LENGTH_FIELD_LEN)
            .big_endian()
            // The channel byte follows the length and is not counted in it.
            .length_adjustment(1)
            // The codec's own bound, on the channel byte and the body; the header check in
            // `decode` refuses a longer body first, naming its length.
            .max_frame_length(max.saturating_add(1))
            .new_codec();
        FrameCodec {
            lengths,
            max,
            budget: None,
            current: None,
        }
    }

    /// Charges each frame's body to `budget` before it is buffered; a frame that would take
    /// it past `limit` ends the stream with [`StreamError::OverBudget`].
    #[must_use]
    pub(crate) fn charging(mut self, budget: Arc<AtomicUsize>, limit: usize) -> Self {
        self.budget = Some((budget, limit));
        self
    }

    fn charge(&self, len: usize) -> Result<Charge, StreamError> {
        let Some((budget, limit)) = &self.budget else {
            return Ok(Charge::none());
        };
        let charged = budget.fetch_add(len, Ordering::Relaxed) + len;
        let charge = Charge {
            budget: budget.clone(),
            len,
        };
        if charged > *limit {
            drop(charge);
            return Err(StreamError::OverBudget {
                unconsumed: charged - len,
                len,
                limit: *limit,
            });
        }
        Ok(charge)
    }
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = StreamError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, StreamError> {
        if self.current.is_none() {
            let Some(header) = src.first_chunk::<FRAME_HEADER_LEN>() else {
                return Ok(None);
            };
            let (channel, len) = decode_frame_header(*header, self.max)?;
            self.current = Some((channel, self.charge(len)?));
        }
        let Some(mut body) = self.lengths.decode(src)? else {
            return Ok(None);
        };
        body.advance(1); // the channel byte, read with the header
        let (channel, charge) = self.current.take().expect("a frame under way");
        Ok(Some(Frame {
            channel,
            body,
            charge,
        }))
    }
}

impl Encoder<(Channel, &[u8])> for FrameCodec {
    type Error = StreamError;

    fn encode(
        &mut self,
        (channel, body): (Channel, &[u8]),
        dst: &mut BytesMut,
    ) -> Result<(), StreamError> {
        if body.len() > self.max {
            return Err(FrameError::Oversized {
                len: body.len(),
                max: self.max,
            }
            .into());
        }
        // The codec frames one slice: the channel byte and the body, joined here.
        let mut joined = BytesMut::with_capacity(1 + body.len());
        joined.put_u8(channel.byte());
        joined.put_slice(body);
        Ok(self.lengths.encode(joined.freeze(), dst)?)
    }
}

/// Splits a byte stream into frames (what a stream reader does, without the IO). Returns the
/// frames and how many bytes of an incomplete last frame remain; the error of the first bad
/// header ends the stream.
pub fn decode_frames(bytes: &[u8], max: usize) -> Result<(Vec<Frame>, usize), FrameError> {
    let mut codec = FrameCodec::new(max);
    let mut src = BytesMut::from(bytes);
    let mut frames = Vec::new();
    loop {
        match codec.decode(&mut src) {
            Ok(Some(frame)) => frames.push(frame),
            Ok(None) => break,
            Err(StreamError::Frame(e)) => return Err(e),
            // Without a budget and with the header checked, the codec refuses nothing.
            Err(_) => break,
        }
    }
    // The codec has taken the length field of a frame under way off the buffer.
    let rest = match &codec.current {
        Some(_) => src.len() + LENGTH_FIELD_LEN,
        None => src.len(),
    };
    Ok((frames, rest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn header(len: u32, channel: u8) -> [u8; FRAME_HEADER_LEN] {
        let [a, b, c, d] = len.to_be_bytes();
        [a, b, c, d, channel]
    }

    #[test]
    fn frame_headers_are_checked_before_allocation() {
        assert_eq!(
            decode_frame_header(header(10, 0), 10),
            Ok((Channel::Scheduler, 10))
        );
        assert_eq!(
            decode_frame_header(header(0, 1), 10),
            Ok((Channel::Control, 0))
        );
        assert_eq!(
            decode_frame_header(header(11, 0), 10),
            Err(FrameError::Oversized { len: 11, max: 10 })
        );
        assert_eq!(
            decode_frame_header(header(1, 7), 10),
            Err(FrameError::UnknownChannel(7))
        );
    }

    /// The wire format is the one agents spoke before the codec: a body of exactly the
    /// maximum passes both ways, one byte more is refused naming its length.
    #[test]
    fn the_codec_speaks_the_frame_format() {
        let mut codec = FrameCodec::new(4);
        let mut wire = BytesMut::new();
        codec
            .encode((Channel::Control, b"abcd"), &mut wire)
            .unwrap();
        assert_eq!(&wire[..], &[0, 0, 0, 4, 1, b'a', b'b', b'c', b'd']);
        let err = codec
            .encode((Channel::Scheduler, b"abcde"), &mut wire)
            .unwrap_err();
        assert!(matches!(
            err,
            StreamError::Frame(FrameError::Oversized { len: 5, max: 4 })
        ));
        let frame = codec.decode(&mut wire).unwrap().unwrap();
        assert_eq!(
            (frame.channel, &frame.body[..]),
            (Channel::Control, &b"abcd"[..])
        );
        let mut big = BytesMut::from(&header(5, 0)[..]);
        let err = codec.decode(&mut big).unwrap_err().to_string();
        assert_eq!(err, "frame of 5 bytes exceeds the 4-byte maximum");
    }

    /// A body is charged when its header is read, before it is buffered; one that would pass
    /// the limit ends the stream; a consumed frame refunds its sender.
    #[test]
    fn bodies_are_charged_before_they_are_buffered() {
        let budget = Arc::new(AtomicUsize::new(0));
        let mut codec = FrameCodec::new(8).charging(budget.clone(), 10);
        let mut src = BytesMut::from(&header(6, 0)[..]);
        assert!(codec.decode(&mut src).unwrap().is_none());
        assert_eq!(
            budget.load(Ordering::Relaxed),
            6,
            "charged on the header alone"
        );
        src.extend_from_slice(b"sixsix");
        let first = codec.decode(&mut src).unwrap().unwrap();
        src.extend_from_slice(&header(5, 0));
        let err = codec.decode(&mut src).unwrap_err();
        assert!(
            matches!(
                err,
                StreamError::OverBudget {
                    unconsumed: 6,
                    len: 5,
                    limit: 10
                }
            ),
            "{err}"
        );
        assert_eq!(
            budget.load(Ordering::Relaxed),
            6,
            "the refused frame is not charged"
        );
        drop(first);
        assert_eq!(budget.load(Ordering::Relaxed), 0);
    }

    proptest! {
        #[test]
        fn frames_round_trip(bodies in proptest::collection::vec(
            (any::<bool>(), proptest::collection::vec(any::<u8>(), 0..64)), 0..20))
        {
            let mut codec = FrameCodec::new(64);
            let mut stream = BytesMut::new();
            for (control, body) in &bodies {
                let channel = if *control { Channel::Control } else { Channel::Scheduler };
                codec.encode((channel, body.as_slice()), &mut stream).unwrap();
            }
            let (frames, rest) = decode_frames(&stream, 64).unwrap();
            prop_assert_eq!(rest, 0);
            prop_assert_eq!(frames.len(), bodies.len());
            for (frame, (control, body)) in frames.iter().zip(&bodies) {
                prop_assert_eq!(frame.channel == Channel::Control, *control);
                prop_assert_eq!(&frame.body[..], body.as_slice());
            }
        }

        #[test]
        fn frame_decoding_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_frames(&bytes, 64);
        }
    }
}
