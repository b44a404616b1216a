//! Reliable, ordered, mutually authenticated messages between agents over QUIC.
//!
//! Every agent runs one [`quinn::Endpoint`] (see [`crate::tls`]). To send to a peer, the
//! agent keeps one connection per peer and one long-lived unidirectional stream on it, so
//! messages to one peer arrive in the order they were sent. A message is a frame:
//! `u32 big-endian body length` + `u8 channel` + body, with the length checked against
//! [`PeersConfig::max_frame_bytes`] before anything is allocated ([`decode_frame_header`]).
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

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{Notify, mpsc, watch};

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
    /// Bytes of one peer's frames read but not yet consumed before the peer is cut off.
    /// Taken as at least `max_frame_bytes`.
    pub inbound_bytes_per_peer: usize,
    /// First reconnect delay; doubles up to `max_backoff`.
    pub min_backoff: Duration,
    /// Largest reconnect delay.
    pub max_backoff: Duration,
    /// How long a connection attempt may take.
    pub connect_timeout: Duration,
}

impl Default for PeersConfig {
    fn default() -> Self {
        Self {
            max_frame_bytes: 32 * 1024 * 1024,
            queue_per_peer: 4096,
            queue_bytes_per_peer: 64 * 1024 * 1024,
            inbound_queue: 8192,
            control_queue: 256,
            inbound_bytes_per_peer: 64 * 1024 * 1024,
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
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

/// A decoded frame: its channel and body.
pub type Frame<'a> = (Channel, &'a [u8]);

/// Splits a byte stream into frames with [`decode_frame_header`] (what a stream reader does,
/// without the IO). Returns the frames and how many bytes of an incomplete last frame remain;
/// the error of the first bad header ends the stream.
pub fn decode_frames(mut bytes: &[u8], max: usize) -> Result<(Vec<Frame<'_>>, usize), FrameError> {
    let mut frames = Vec::new();
    while let Some(header) = bytes.first_chunk::<FRAME_HEADER_LEN>() {
        let (channel, len) = decode_frame_header(*header, max)?;
        let Some(body) = bytes.get(FRAME_HEADER_LEN..FRAME_HEADER_LEN + len) else {
            break;
        };
        frames.push((channel, body));
        bytes = &bytes[FRAME_HEADER_LEN + len..];
    }
    Ok((frames, bytes.len()))
}

/// Encodes a frame header for a body of `len` bytes.
fn encode_frame_header(channel: Channel, len: usize) -> std::io::Result<[u8; FRAME_HEADER_LEN]> {
    let len = u32::try_from(len).map_err(std::io::Error::other)?;
    let [a, b, c, d] = len.to_be_bytes();
    Ok([a, b, c, d, channel.byte()])
}

/// A frame from a peer. While it is alive its bytes count against the sender's inbound
/// budget; drop it once consumed.
#[derive(Debug)]
pub struct Inbound {
    /// The sender's node name, from its certificate.
    pub from: String,
    /// The frame's bytes.
    pub payload: Vec<u8>,
    /// Held for its `Drop`, which refunds the sender's budget.
    _charge: Charge,
}

impl Inbound {
    /// A frame not read from the network (tests, fakes): charged to nobody.
    pub fn detached(from: String, payload: Vec<u8>) -> Self {
        Inbound {
            from,
            payload,
            _charge: Charge {
                budget: Arc::default(),
                len: 0,
            },
        }
    }
}

/// Bytes charged to a peer's inbound budget, refunded on drop.
#[derive(Debug)]
struct Charge {
    budget: Arc<AtomicUsize>,
    len: usize,
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget.fetch_sub(self.len, Ordering::Relaxed);
    }
}

/// The frames peers send, by channel.
#[derive(Debug)]
pub struct PeerInbound {
    /// Scheduler frames.
    pub scheduler: mpsc::Receiver<Inbound>,
    /// Control frames.
    pub control: mpsc::Receiver<Inbound>,
}

/// Where to reach a node: its QUIC address.
pub type Directory = watch::Receiver<BTreeMap<String, SocketAddr>>;

/// One peer's send queue.
#[derive(Debug, Clone)]
struct Queue {
    tx: mpsc::Sender<(Channel, Vec<u8>)>,
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

/// What every connection reader shares.
#[derive(Debug)]
struct Receiving {
    scheduler: mpsc::Sender<Inbound>,
    control: mpsc::Sender<Inbound>,
    config: PeersConfig,
    counters: Arc<PeerCounters>,
    /// Unconsumed inbound bytes per peer name.
    budgets: Mutex<BTreeMap<String, Arc<AtomicUsize>>>,
    connections: Connections,
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
            config,
            counters: peers.counters.clone(),
            budgets: Mutex::default(),
            connections: peers.connections.clone(),
        });
        tokio::spawn(peers.clone().accept_loop(receiving));
        (peers, PeerInbound { scheduler, control })
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
        let ok = queue.tx.try_send((channel, payload)).is_ok();
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
                let queue = Queue {
                    tx,
                    bytes: Arc::default(),
                    cut: Arc::default(),
                };
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

    async fn sender_loop(
        self,
        to: String,
        mut rx: mpsc::Receiver<(Channel, Vec<u8>)>,
        queue: Queue,
    ) {
        let mut backoff = self.config.min_backoff;
        let mut pending: Option<(Channel, Vec<u8>)> = None;
        let mut directory = self.directory.clone();
        loop {
            // The address the stream goes to. A peer that restarted listens elsewhere: a
            // stream to its old address accepts writes until the idle timeout (a minute) and
            // delivers none of them, so a new address for the peer ends the stream at once.
            let addr = self.directory.borrow().get(&to).copied();
            let moved = |d: &Directory| d.borrow().get(&to).copied() != addr;
            let opened = tokio::select! {
                () = queue.cut.notified() => return,
                opened = self.open_stream(&to) => opened,
            };
            let (conn, mut stream) = match opened {
                Some(s) => {
                    backoff = self.config.min_backoff;
                    s
                }
                None => {
                    if *self.shutdown.borrow() {
                        return;
                    }
                    tokio::select! {
                        () = queue.cut.notified() => return,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(self.config.max_backoff);
                    continue;
                }
            };
            loop {
                let (channel, frame) = match pending.take() {
                    Some(f) => f,
                    None => tokio::select! {
                        () = queue.cut.notified() => {
                            conn.close(CLOSE_CUT_OFF.into(), b"send queue over its byte limit");
                            return;
                        }
                        f = rx.recv() => match f {
                            Some(f) => f,
                            None => return,
                        },
                        Ok(()) = directory.changed() => {
                            if moved(&directory) {
                                tracing::debug!(peer = %to, "peer moved; reconnecting");
                                conn.close(0u32.into(), b"peer moved");
                                break;
                            }
                            continue;
                        }
                    },
                };
                if moved(&directory) {
                    conn.close(0u32.into(), b"peer moved");
                    pending = Some((channel, frame));
                    break;
                }
                let written = tokio::select! {
                    () = queue.cut.notified() => {
                        conn.close(CLOSE_CUT_OFF.into(), b"send queue over its byte limit");
                        return;
                    }
                    w = write_frame(&mut stream, channel, &frame) => w,
                };
                if let Err(e) = written {
                    tracing::debug!(peer = %to, error = %e, "stream broke; reconnecting");
                    pending = Some((channel, frame));
                    break;
                }
                queue.bytes.fetch_sub(frame.len(), Ordering::Relaxed);
            }
        }
    }

    async fn open_stream(&self, to: &str) -> Option<(quinn::Connection, quinn::SendStream)> {
        let addr = *self.directory.borrow().get(to)?;
        let client_config = self
            .client_config
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let connecting = self
            .endpoint
            .connect_with(client_config, addr, tls::SERVER_NAME)
            .ok()?;
        let conn = match tokio::time::timeout(self.config.connect_timeout, connecting).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                tracing::debug!(peer = %to, %addr, error = %e, "cannot connect");
                return None;
            }
            Err(_) => return None,
        };
        if tls::peer_node_name(&conn).as_deref() != Some(to) {
            tracing::warn!(peer = %to, %addr, "the node at this address presents another name");
            conn.close(1u32.into(), b"unexpected peer");
            return None;
        }
        register(&self.connections, &conn);
        let stream = conn.open_uni().await.ok()?;
        Some((conn, stream))
    }

    async fn accept_loop(self, receiving: Arc<Receiving>) {
        let mut shutdown = self.shutdown.clone();
        loop {
            let incoming = tokio::select! {
                _ = shutdown.changed() => return,
                i = self.endpoint.accept() => i,
            };
            let Some(incoming) = incoming else { return };
            let receiving = receiving.clone();
            tokio::spawn(async move {
                match incoming.await {
                    Ok(conn) => serve_connection(conn, receiving).await,
                    Err(e) => tracing::debug!(error = %e, "quic handshake refused"),
                }
            });
        }
    }
}

async fn serve_connection(conn: quinn::Connection, receiving: Arc<Receiving>) {
    let Some(from) = tls::peer_node_name(&conn) else {
        conn.close(1u32.into(), b"no node name in certificate");
        return;
    };
    register(&receiving.connections, &conn);
    let budget = receiving
        .budgets
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .entry(from.clone())
        .or_default()
        .clone();
    while let Ok(stream) = conn.accept_uni().await {
        tokio::spawn(read_frames(
            conn.clone(),
            stream,
            from.clone(),
            budget.clone(),
            receiving.clone(),
        ));
    }
}

async fn read_frames(
    conn: quinn::Connection,
    mut stream: quinn::RecvStream,
    from: String,
    budget: Arc<AtomicUsize>,
    receiving: Arc<Receiving>,
) {
    let (config, counters) = (&receiving.config, &receiving.counters);
    loop {
        let mut header = [0u8; FRAME_HEADER_LEN];
        if stream.read_exact(&mut header).await.is_err() {
            return;
        }
        let (channel, len) = match decode_frame_header(header, config.max_frame_bytes) {
            Ok(decoded) => decoded,
            Err(e) => {
                if matches!(e, FrameError::Oversized { .. }) {
                    counters.oversized.fetch_add(1, Ordering::Relaxed);
                }
                counters.protocol_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(peer = %from, error = %e, "peer broke the frame format; closing its connection");
                conn.close(CLOSE_PROTOCOL.into(), b"bad frame");
                return;
            }
        };
        let charged = budget.fetch_add(len, Ordering::Relaxed) + len;
        let charge = Charge {
            budget: budget.clone(),
            len,
        };
        if charged > config.inbound_bytes() {
            drop(charge);
            counters.cut_off.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                peer = %from,
                unconsumed_bytes = charged - len,
                frame_bytes = len,
                limit = config.inbound_bytes(),
                "peer sent more than its inbound byte limit before we consumed it; cut off (connection closed)"
            );
            conn.close(CLOSE_CUT_OFF.into(), b"inbound over its byte limit");
            return;
        }
        let mut payload = vec![0u8; len];
        if stream.read_exact(&mut payload).await.is_err() {
            return;
        }
        counters.frames_in.fetch_add(1, Ordering::Relaxed);
        let inbound = Inbound {
            from: from.clone(),
            payload,
            _charge: charge,
        };
        let consumer = match channel {
            Channel::Scheduler => &receiving.scheduler,
            Channel::Control => &receiving.control,
        };
        if consumer.send(inbound).await.is_err() {
            return;
        }
    }
}

async fn write_frame(
    stream: &mut quinn::SendStream,
    channel: Channel,
    frame: &[u8],
) -> std::io::Result<()> {
    stream
        .write_all(&encode_frame_header(channel, frame.len())?)
        .await?;
    stream.write_all(frame).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::ClusterKey;
    use crate::tls::TlsIdentity;
    use proptest::prelude::*;

    const DEADLINE: Duration = Duration::from_secs(20);

    fn node(key: &ClusterKey, name: &str) -> (quinn::Endpoint, quinn::ClientConfig) {
        let id = TlsIdentity::new(key, name).unwrap();
        let endpoint = tls::endpoint(&id, "127.0.0.1:0".parse().unwrap()).unwrap();
        (endpoint, id.client_config())
    }

    fn start(
        node: (quinn::Endpoint, quinn::ClientConfig),
        dir: Directory,
        config: PeersConfig,
        stop: watch::Receiver<bool>,
    ) -> (Peers, PeerInbound) {
        Peers::start(node.0, node.1, dir, config, stop)
    }

    async fn next(inbound: &mut mpsc::Receiver<Inbound>) -> Inbound {
        tokio::time::timeout(DEADLINE, inbound.recv())
            .await
            .expect("a frame within the deadline")
            .expect("the channel is open")
    }

    async fn until(what: &str, mut condition: impl FnMut() -> bool) {
        let end = tokio::time::Instant::now() + DEADLINE;
        while !condition() {
            assert!(
                tokio::time::Instant::now() < end,
                "timed out waiting: {what}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn frames_arrive_in_order_and_name_their_sender() {
        let key = ClusterKey::generate();
        let (a, b) = (node(&key, "a"), node(&key, "b"));
        let dir = BTreeMap::from([
            ("a".to_string(), a.0.local_addr().unwrap()),
            ("b".to_string(), b.0.local_addr().unwrap()),
        ]);
        let (_dir_tx, dir_rx) = watch::channel(dir);
        let (_stop, stop_rx) = watch::channel(false);
        let (pa, _ina) = start(a, dir_rx.clone(), PeersConfig::default(), stop_rx.clone());
        let (_pb, mut inb) = start(b, dir_rx, PeersConfig::default(), stop_rx);
        for i in 0..500u32 {
            assert!(pa.send("b", i.to_be_bytes().to_vec()));
            if i % 100 == 0 {
                assert!(pa.send_control("b", vec![0xc0, i as u8]));
            }
        }
        for i in 0..500u32 {
            let got = next(&mut inb.scheduler).await;
            assert_eq!(got.from, "a");
            assert_eq!(got.payload, i.to_be_bytes());
        }
        for i in (0..500u32).step_by(100) {
            let got = next(&mut inb.control).await;
            assert_eq!((got.from.as_str(), got.payload), ("a", vec![0xc0, i as u8]));
        }
    }

    #[tokio::test]
    async fn a_node_with_another_key_cannot_deliver() {
        let (k1, k2) = (ClusterKey::generate(), ClusterKey::generate());
        let (a, b) = (node(&k2, "a"), node(&k1, "b"));
        let dir = BTreeMap::from([("b".to_string(), b.0.local_addr().unwrap())]);
        let (_dir_tx, dir_rx) = watch::channel(dir);
        let (_stop, stop_rx) = watch::channel(false);
        let (pa, _ina) = start(a, dir_rx.clone(), PeersConfig::default(), stop_rx.clone());
        let (_pb, mut inb) = start(b, dir_rx, PeersConfig::default(), stop_rx);
        pa.send("b", b"hello".to_vec());
        let got = tokio::time::timeout(Duration::from_secs(2), inb.scheduler.recv()).await;
        assert!(got.is_err(), "a foreign node delivered a frame: {got:?}");
    }

    /// A peer that sends faster than we consume is cut off once its unconsumed bytes pass
    /// the limit; after we catch up it reconnects and is heard again.
    #[tokio::test]
    async fn a_peer_over_its_inbound_byte_limit_is_cut_off_and_can_come_back() {
        let key = ClusterKey::generate();
        let (a, b) = (node(&key, "a"), node(&key, "b"));
        let dir = BTreeMap::from([("b".to_string(), b.0.local_addr().unwrap())]);
        let (_dir_tx, dir_rx) = watch::channel(dir);
        let (_stop, stop_rx) = watch::channel(false);
        let small = PeersConfig {
            max_frame_bytes: 4096,
            inbound_bytes_per_peer: 64 * 1024,
            ..PeersConfig::default()
        };
        let (pa, _ina) = start(a, dir_rx.clone(), PeersConfig::default(), stop_rx.clone());
        let (pb, mut inb) = start(b, dir_rx, small, stop_rx);
        // 32 frames of 4 KiB = 128 KiB, nobody consuming on b: b must cut a off.
        for i in 0..32u8 {
            assert!(pa.send("b", vec![i; 4096]));
        }
        until("b cut a off", || {
            pb.counters.cut_off.load(Ordering::Relaxed) == 1
        })
        .await;
        // What b accepted stayed within the limit.
        let mut held = Vec::new();
        while let Ok(frame) = inb.scheduler.try_recv() {
            held.push(frame);
        }
        let held_bytes: usize = held.iter().map(|f| f.payload.len()).sum();
        assert!(held_bytes <= 64 * 1024, "{held_bytes} bytes held");
        assert!(held.iter().all(|f| f.from == "a"));
        drop(held); // consumed: a's budget is refunded
        // a notices the closed connection, reconnects, and is heard again.
        let mut marker_seen = false;
        let end = tokio::time::Instant::now() + DEADLINE;
        while !marker_seen {
            assert!(tokio::time::Instant::now() < end, "a was never heard again");
            pa.send("b", b"again".to_vec());
            tokio::time::sleep(Duration::from_millis(50)).await;
            while let Ok(frame) = inb.scheduler.try_recv() {
                marker_seen |= frame.payload == b"again";
            }
        }
    }

    /// A peer we cannot write to fast enough (here: not reachable at all) is cut off once its
    /// queue passes the byte limit; the next frame starts a new queue that delivers once the
    /// peer is reachable.
    #[tokio::test]
    async fn a_peer_over_its_send_queue_byte_limit_is_cut_off_and_can_come_back() {
        let key = ClusterKey::generate();
        let (a, b) = (node(&key, "a"), node(&key, "b"));
        let b_addr = b.0.local_addr().unwrap();
        let (dir_tx, dir_rx) = watch::channel(BTreeMap::new());
        let (_stop, stop_rx) = watch::channel(false);
        let small = PeersConfig {
            max_frame_bytes: 4096,
            queue_bytes_per_peer: 16 * 1024,
            ..PeersConfig::default()
        };
        let (pa, _ina) = start(a, dir_rx.clone(), small, stop_rx.clone());
        let (_pb, mut inb) = start(b, dir_rx, PeersConfig::default(), stop_rx);
        // b's address is unknown yet: frames pile up in a's queue.
        for i in 0..4u8 {
            assert!(pa.send("b", vec![i; 4096]), "frame {i} fits");
        }
        assert!(
            !pa.send("b", vec![4; 4096]),
            "the fifth 4 KiB frame passes 16 KiB"
        );
        assert_eq!(pa.counters.cut_off.load(Ordering::Relaxed), 1);
        // b becomes reachable; the next frame opens a new queue and arrives; the discarded
        // frames never do.
        dir_tx.send_replace(BTreeMap::from([("b".to_string(), b_addr)]));
        assert!(pa.send("b", b"fresh".to_vec()));
        assert_eq!(next(&mut inb.scheduler).await.payload, b"fresh");
    }

    /// After a key leaves the ring, connections authenticated under it are closed, both the
    /// ones we accepted and the ones we dialed.
    #[tokio::test]
    async fn connections_under_a_removed_key_are_closed() {
        let (old, new) = (ClusterKey::generate(), ClusterKey::generate());
        let (a, b) = (node(&old, "a"), node(&old, "b"));
        let dir = BTreeMap::from([
            ("a".to_string(), a.0.local_addr().unwrap()),
            ("b".to_string(), b.0.local_addr().unwrap()),
        ]);
        let (_dir_tx, dir_rx) = watch::channel(dir);
        let (_stop, stop_rx) = watch::channel(false);
        let (pa, mut ina) = start(a, dir_rx.clone(), PeersConfig::default(), stop_rx.clone());
        let (pb, mut inb) = start(b, dir_rx, PeersConfig::default(), stop_rx);
        assert!(pa.send("b", b"a to b".to_vec()) && pb.send("a", b"b to a".to_vec()));
        assert_eq!(next(&mut inb.scheduler).await.payload, b"a to b");
        assert_eq!(next(&mut ina.scheduler).await.payload, b"b to a");
        let config = tls::QuicConfig::default();
        let mut ring = crate::keys::Keyring::new(old.clone());
        ring.install(new.clone()).unwrap();
        let still = TlsIdentity::from_ring(&ring, "b", config).unwrap();
        assert_eq!(pb.close_untrusted(&still), 0, "both keys are still trusted");
        let new_only =
            TlsIdentity::from_ring(&crate::keys::Keyring::new(new), "b", config).unwrap();
        // b accepted a's connection and dialed its own to a: both were under the old key.
        assert_eq!(pb.close_untrusted(&new_only), 2);
        assert_eq!(
            pb.close_untrusted(&new_only),
            0,
            "closed connections are forgotten"
        );
    }

    #[test]
    fn frame_headers_are_checked_before_allocation() {
        let header = |len: u32, channel: u8| {
            let [a, b, c, d] = len.to_be_bytes();
            [a, b, c, d, channel]
        };
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

    proptest! {
        #[test]
        fn frames_round_trip(bodies in proptest::collection::vec(
            (any::<bool>(), proptest::collection::vec(any::<u8>(), 0..64)), 0..20))
        {
            let mut stream = Vec::new();
            for (control, body) in &bodies {
                let channel = if *control { Channel::Control } else { Channel::Scheduler };
                stream.extend_from_slice(&encode_frame_header(channel, body.len()).unwrap());
                stream.extend_from_slice(body);
            }
            let (frames, rest) = decode_frames(&stream, 64).unwrap();
            prop_assert_eq!(rest, 0);
            prop_assert_eq!(frames.len(), bodies.len());
            for ((channel, got), (control, body)) in frames.iter().zip(&bodies) {
                prop_assert_eq!(*channel == Channel::Control, *control);
                prop_assert_eq!(*got, body.as_slice());
            }
        }

        #[test]
        fn frame_decoding_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_frames(&bytes, 64);
        }
    }
}
