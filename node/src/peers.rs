//! Reliable, ordered, mutually authenticated messages between agents over QUIC.
//!
//! Every agent runs one [`quinn::Endpoint`] (see [`crate::tls`]). To send to a peer, the
//! agent keeps one connection per peer and one long-lived unidirectional stream on it, so
//! messages to one peer arrive in the order they were sent. A message is a frame
//! (`peers/frame.rs`): `u32 big-endian body length` + `u8 channel` + body, with the length checked
//! against [`PeersConfig::max_frame_bytes`] before anything is allocated.
//! The channel says who consumes it: the scheduler ([`Channel::Scheduler`]) or the control
//! plane ([`Channel::Control`], key rotation). Who sent a frame is read from the peer's
//! certificate, never from the frame.
//!
//! Sending never blocks the caller: each peer has a queue bounded in frames and in bytes. A
//! full frame count drops the message (counted); a peer whose queue would exceed
//! [`PeersConfig::queue_bytes_per_peer`] is too slow to keep: it is **cut off** (its queue
//! discarded, its connection closed, a warning naming it), and the next message to it starts
//! afresh with a new connection. Callers that need delivery (acknowledged submissions) retry
//! at their own level; anti-entropy repairs the rest.
//!
//! Receiving is bounded the same way: the bytes of a peer's frames that were read but not yet
//! consumed (in flight through [`Inbound`]) are charged to that peer, by certificate name
//! across all its connections, before the frame is even allocated. A peer that would exceed
//! [`PeersConfig::inbound_bytes_per_peer`] is cut off (connection closed, logged); it can
//! reconnect, and is accepted again once what it sent has been consumed.

mod frame;
mod receive;
mod send;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{Notify, mpsc, watch};

use self::frame::Charge;
pub use self::frame::{
    Channel, FRAME_HEADER_LEN, Frame, FrameCodec, FrameError, StreamError, decode_frame_header,
    decode_frames,
};
use self::receive::Receiving;
use crate::tls;

/// Application close code: the peer exceeded a byte limit.
const CLOSE_CUT_OFF: u32 = 2;
/// Application close code: the peer broke the frame format.
const CLOSE_PROTOCOL: u32 = 3;
/// Application close code: the key the peer's certificate came from left our ring.
const CLOSE_KEY_REMOVED: u32 = 4;

/// Limits of the peer transport.
#[derive(Debug, Clone)]
pub struct PeersConfig {
    /// Largest frame body accepted or sent.
    pub max_frame_bytes: usize,
    /// Messages queued per peer before new ones are dropped.
    pub queue_per_peer: usize,
    /// Bytes queued per peer (not yet written to its stream) before the peer is cut off.
    /// Taken as at least `max_frame_bytes`, so one largest frame always fits.
    pub queue_bytes_per_peer: usize,
    /// Inbound scheduler frames queued for the consumer.
    pub inbound_queue: usize,
    /// Inbound control frames queued for the consumer.
    pub control_queue: usize,
    /// Says which scheduler frames skip the queues: those it is true for leave ahead of the
    /// frames queued to the same peer before them, and on arrival go to
    /// [`PeerInbound::urgent`] instead of behind the frames read before them. Only for
    /// frames whose effect does not depend on their order (a durability ack: "I hold your ops
    /// up to N" raises a maximum). Default: none.
    pub urgent: fn(&[u8]) -> bool,
    /// Urgent frames queued, per peer to send and for the consumer on arrival.
    pub urgent_queue: usize,
    /// Bytes of one peer's frames read but not yet consumed before the peer is cut off.
    /// Taken as at least `max_frame_bytes`.
    pub inbound_bytes_per_peer: usize,
    /// First reconnect delay; doubles up to `max_backoff`.
    pub min_backoff: Duration,
    /// Largest reconnect delay.
    pub max_backoff: Duration,
    /// How long a connection attempt may take.
    pub connect_timeout: Duration,
    /// While a peer is sent more than [`coalesce_above`](Self::coalesce_above) frames a second,
    /// its frames written within this long of the last write wait for the end of it, so a
    /// busy stream leaves in one write (one datagram, one wake-up of the peer) per `coalesce`
    /// instead of one per frame. Below that rate (a submission's few messages, an idle peer)
    /// every frame leaves at once. Zero: never wait.
    pub coalesce: Duration,
    /// Frames per second to one peer (averaged over the last ~10 ms) above which its writes
    /// are coalesced.
    pub coalesce_above: f64,
}

/// The default [`PeersConfig::coalesce`]: one write per peer per millisecond at most, while
/// frames keep coming (`docs/agent.md`, "Coalesced writes").
pub const COALESCE: Duration = Duration::from_millis(1);

/// The default [`PeersConfig::coalesce_above`]: a 10,000-task batch sends each peer ~3,000
/// frames a second; a single submission's messages, a handful within a few milliseconds, stay
/// under it and are not delayed.
pub const COALESCE_ABOVE: f64 = 1_000.0;

/// Frames taken from a peer's queue into one write, at most.
const BATCH_FRAMES: usize = 256;

impl Default for PeersConfig {
    fn default() -> Self {
        Self {
            max_frame_bytes: 32 * 1024 * 1024,
            queue_per_peer: 4096,
            queue_bytes_per_peer: 64 * 1024 * 1024,
            inbound_queue: 8192,
            control_queue: 256,
            urgent: |_| false,
            urgent_queue: 256,
            inbound_bytes_per_peer: 64 * 1024 * 1024,
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            coalesce: COALESCE,
            coalesce_above: COALESCE_ABOVE,
        }
    }
}

impl PeersConfig {
    fn queue_bytes(&self) -> usize {
        self.queue_bytes_per_peer.max(self.max_frame_bytes)
    }

    fn inbound_bytes(&self) -> usize {
        self.inbound_bytes_per_peer.max(self.max_frame_bytes)
    }
}

/// Counters of the peer transport.
#[derive(Debug, Default)]
pub struct PeerCounters {
    /// Frames sent.
    pub frames_out: AtomicU64,
    /// Frames received.
    pub frames_in: AtomicU64,
    /// Frames dropped because a peer's queue was full or its address unknown.
    pub dropped: AtomicU64,
    /// Frames refused as oversized.
    pub oversized: AtomicU64,
    /// Peers cut off for exceeding a byte limit (send queue or inbound).
    pub cut_off: AtomicU64,
    /// Connections closed because the peer broke the frame format.
    pub protocol_errors: AtomicU64,
}

/// A frame from a peer. While it is alive its bytes count against the sender's inbound
/// budget; drop it once consumed.
#[derive(Debug)]
pub struct Inbound {
    /// The sender's node name, from its certificate.
    pub from: String,
    /// The frame's bytes.
    pub payload: Bytes,
    /// Held for its `Drop`, which refunds the sender's budget.
    _charge: Charge,
}

impl Inbound {
    /// A frame not read from the network (tests, fakes): charged to nobody.
    pub fn detached(from: String, payload: Vec<u8>) -> Self {
        Inbound {
            from,
            payload: payload.into(),
            _charge: Charge::none(),
        }
    }

    /// A frame `from` read off its stream.
    fn received(from: String, frame: Frame) -> Self {
        Inbound {
            from,
            payload: frame.body.freeze(),
            _charge: frame.charge,
        }
    }
}

/// The frames peers send, by channel.
#[derive(Debug)]
pub struct PeerInbound {
    /// Scheduler frames.
    pub scheduler: mpsc::Receiver<Inbound>,
    /// Control frames.
    pub control: mpsc::Receiver<Inbound>,
    /// Scheduler frames [`PeersConfig::urgent`] picked out of the queue.
    pub urgent: mpsc::Receiver<Inbound>,
}

/// Where to reach a node: its QUIC address.
pub type Directory = watch::Receiver<BTreeMap<String, SocketAddr>>;

/// One peer's send queue.
#[derive(Debug, Clone)]
struct Queue {
    tx: mpsc::Sender<(Channel, Vec<u8>)>,
    /// Frames [`PeersConfig::urgent`] says may overtake those in `tx`.
    urgent: mpsc::Sender<(Channel, Vec<u8>)>,
    bytes: Arc<AtomicUsize>,
    cut: Arc<Notify>,
}

/// A cloneable handle for sending frames to peers.
#[derive(Debug, Clone)]
pub struct Peers {
    endpoint: quinn::Endpoint,
    client_config: Arc<Mutex<quinn::ClientConfig>>,
    config: PeersConfig,
    directory: Directory,
    queues: Arc<Mutex<BTreeMap<String, Queue>>>,
    /// Every connection opened or accepted and not yet seen closed, so a key rotation can
    /// close those authenticated under a removed key.
    connections: Connections,
    /// Counters.
    pub counters: Arc<PeerCounters>,
    shutdown: watch::Receiver<bool>,
}

type Connections = Arc<Mutex<Vec<quinn::Connection>>>;

/// Remembers `conn`, forgetting connections that have closed (which bounds the list by the
/// connections actually open).
fn register(connections: &Connections, conn: &quinn::Connection) {
    let mut list = connections.lock().unwrap_or_else(PoisonError::into_inner);
    list.retain(|c| c.close_reason().is_none());
    list.push(conn.clone());
}

impl Peers {
    /// Starts accepting on `endpoint`, dialing with `client_config`; returns the handle and
    /// the inbound frames.
    pub fn start(
        endpoint: quinn::Endpoint,
        client_config: quinn::ClientConfig,
        directory: Directory,
        config: PeersConfig,
        shutdown: watch::Receiver<bool>,
    ) -> (Peers, PeerInbound) {
        let (scheduler_tx, scheduler) = mpsc::channel(config.inbound_queue.max(1));
        let (control_tx, control) = mpsc::channel(config.control_queue.max(1));
        let (urgent_tx, urgent) = mpsc::channel(config.urgent_queue.max(1));
        let peers = Peers {
            endpoint,
            client_config: Arc::new(Mutex::new(client_config)),
            config: config.clone(),
            directory,
            queues: Arc::default(),
            connections: Arc::default(),
            counters: Arc::default(),
            shutdown,
        };
        let receiving = Arc::new(Receiving {
            scheduler: scheduler_tx,
            control: control_tx,
            urgent: urgent_tx,
            config,
            counters: peers.counters.clone(),
            budgets: Mutex::default(),
            connections: peers.connections.clone(),
        });
        tokio::spawn(peers.clone().accept_loop(receiving));
        let inbound = PeerInbound {
            scheduler,
            control,
            urgent,
        };
        (peers, inbound)
    }

    /// Dials new connections with `config` from now on (a key rotation step); established
    /// connections stay up.
    pub fn set_client_config(&self, config: quinn::ClientConfig) {
        *self
            .client_config
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = config;
    }

    /// Closes every connection whose peer certificate `identity` no longer trusts (its key
    /// left the ring); returns how many. The peers reconnect under a key still trusted, or
    /// not at all.
    pub fn close_untrusted(&self, identity: &tls::TlsIdentity) -> usize {
        let list = self
            .connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let mut closed = 0;
        for conn in list {
            let trusted = tls::peer_certificate(&conn).is_some_and(|cert| identity.trusts(&cert));
            if !trusted && conn.close_reason().is_none() {
                tracing::warn!(
                    peer = tls::peer_node_name(&conn).as_deref().unwrap_or("?"),
                    addr = %conn.remote_address(),
                    "closing a connection authenticated under a key no longer in the ring"
                );
                conn.close(CLOSE_KEY_REMOVED.into(), b"key removed from the ring");
                closed += 1;
            }
        }
        closed
    }

    /// Queues a scheduler frame for `to`. Returns false (and counts a drop) when it cannot be
    /// queued.
    pub fn send(&self, to: &str, payload: Vec<u8>) -> bool {
        self.enqueue(to, Channel::Scheduler, payload)
    }

    /// Queues a control frame for `to`, like [`Peers::send`].
    pub fn send_control(&self, to: &str, payload: Vec<u8>) -> bool {
        self.enqueue(to, Channel::Control, payload)
    }

    fn enqueue(&self, to: &str, channel: Channel, payload: Vec<u8>) -> bool {
        if payload.len() > self.config.max_frame_bytes {
            self.counters.oversized.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                to,
                bytes = payload.len(),
                "frame too large to send; dropped"
            );
            return false;
        }
        let queue = self.queue(to);
        let len = payload.len();
        let queued = queue.bytes.fetch_add(len, Ordering::Relaxed) + len;
        if queued > self.config.queue_bytes() {
            queue.bytes.fetch_sub(len, Ordering::Relaxed);
            self.cut_off(to, &queue, queued - len);
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        let tx = if channel == Channel::Scheduler && (self.config.urgent)(&payload) {
            &queue.urgent
        } else {
            &queue.tx
        };
        let ok = tx.try_send((channel, payload)).is_ok();
        if ok {
            self.counters.frames_out.fetch_add(1, Ordering::Relaxed);
        } else {
            queue.bytes.fetch_sub(len, Ordering::Relaxed);
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
        ok
    }

    /// The queue to `to`, started (with its sender task) if there is none.
    fn queue(&self, to: &str) -> Queue {
        let mut queues = self.queues.lock().unwrap_or_else(PoisonError::into_inner);
        queues
            .entry(to.to_string())
            .or_insert_with(|| {
                let (tx, rx) = mpsc::channel(self.config.queue_per_peer.max(1));
                let (urgent, urgent_rx) = mpsc::channel(self.config.urgent_queue.max(1));
                let queue = Queue {
                    tx,
                    urgent,
                    bytes: Arc::default(),
                    cut: Arc::default(),
                };
                let rx = send::SendQueue { rx, urgent_rx };
                tokio::spawn(self.clone().sender_loop(to.to_string(), rx, queue.clone()));
                queue
            })
            .clone()
    }

    /// Discards `to`'s queue and closes its connection; the next frame starts afresh.
    fn cut_off(&self, to: &str, queue: &Queue, queued: usize) {
        {
            let mut queues = self.queues.lock().unwrap_or_else(PoisonError::into_inner);
            if queues
                .get(to)
                .is_some_and(|q| Arc::ptr_eq(&q.bytes, &queue.bytes))
            {
                queues.remove(to);
            }
        }
        queue.cut.notify_one();
        self.counters.cut_off.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            peer = %to,
            queued_bytes = queued,
            limit = self.config.queue_bytes(),
            "peer too slow: its send queue would exceed its byte limit; cut off (queue discarded, connection closed)"
        );
    }
}
