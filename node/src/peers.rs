//! Reliable, ordered, mutually authenticated messages between agents over QUIC.
//!
//! Every agent runs one [`quinn::Endpoint`] (see [`crate::tls`]). To send to a peer, the
//! agent keeps one connection per peer and one long-lived unidirectional stream on it, so
//! messages to one peer arrive in the order they were sent. A message is a frame:
//! `u32 big-endian length` + bytes, with the length checked against
//! [`PeersConfig::max_frame_bytes`] before anything is allocated. Who sent a frame is read
//! from the peer's certificate, never from the frame.
//!
//! Sending never blocks the caller: each peer has a bounded queue, and a full queue drops the
//! message (counted). Callers that need delivery (acknowledged submissions) retry at their own
//! level; anti-entropy repairs the rest.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::tls;

/// Limits of the peer transport.
#[derive(Debug, Clone)]
pub struct PeersConfig {
    /// Largest frame accepted or sent.
    pub max_frame_bytes: usize,
    /// Messages queued per peer before new ones are dropped.
    pub queue_per_peer: usize,
    /// Inbound frames queued for the consumer.
    pub inbound_queue: usize,
    /// First reconnect delay; doubles up to `max_backoff`.
    pub min_backoff: Duration,
    /// Largest reconnect delay.
    pub max_backoff: Duration,
}

impl Default for PeersConfig {
    fn default() -> Self {
        Self {
            max_frame_bytes: 32 * 1024 * 1024,
            queue_per_peer: 4096,
            inbound_queue: 8192,
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
        }
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
}

/// A frame from a peer.
#[derive(Debug)]
pub struct Inbound {
    /// The sender's node name, from its certificate.
    pub from: String,
    /// The frame's bytes.
    pub payload: Vec<u8>,
}

/// Where to reach a node: its QUIC address.
pub type Directory = watch::Receiver<BTreeMap<String, SocketAddr>>;

/// A cloneable handle for sending frames to peers.
#[derive(Debug, Clone)]
pub struct Peers {
    endpoint: quinn::Endpoint,
    config: PeersConfig,
    directory: Directory,
    queues: Arc<Mutex<BTreeMap<String, mpsc::Sender<Vec<u8>>>>>,
    /// Counters.
    pub counters: Arc<PeerCounters>,
    shutdown: watch::Receiver<bool>,
}

impl Peers {
    /// Starts accepting on `endpoint`; returns the handle and the inbound frames.
    pub fn start(
        endpoint: quinn::Endpoint,
        directory: Directory,
        config: PeersConfig,
        shutdown: watch::Receiver<bool>,
    ) -> (Peers, mpsc::Receiver<Inbound>) {
        let (tx, rx) = mpsc::channel(config.inbound_queue);
        let peers = Peers {
            endpoint,
            config,
            directory,
            queues: Arc::default(),
            counters: Arc::default(),
            shutdown,
        };
        tokio::spawn(peers.clone().accept_loop(tx));
        (peers, rx)
    }

    /// Queues `payload` for `to`. Returns false (and counts a drop) when it cannot be queued.
    pub fn send(&self, to: &str, payload: Vec<u8>) -> bool {
        if payload.len() > self.config.max_frame_bytes {
            self.counters.oversized.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                to,
                bytes = payload.len(),
                "frame too large to send; dropped"
            );
            return false;
        }
        let sender = {
            let mut queues = self
                .queues
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            queues
                .entry(to.to_string())
                .or_insert_with(|| {
                    let (tx, rx) = mpsc::channel(self.config.queue_per_peer);
                    tokio::spawn(self.clone().sender_loop(to.to_string(), rx));
                    tx
                })
                .clone()
        };
        let ok = sender.try_send(payload).is_ok();
        if ok {
            self.counters.frames_out.fetch_add(1, Ordering::Relaxed);
        } else {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
        ok
    }

    async fn sender_loop(self, to: String, mut queue: mpsc::Receiver<Vec<u8>>) {
        let mut backoff = self.config.min_backoff;
        let mut pending: Option<Vec<u8>> = None;
        loop {
            let mut stream = match self.open_stream(&to).await {
                Some(s) => {
                    backoff = self.config.min_backoff;
                    s
                }
                None => {
                    if *self.shutdown.borrow() {
                        return;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(self.config.max_backoff);
                    continue;
                }
            };
            loop {
                let frame = match pending.take() {
                    Some(f) => f,
                    None => match queue.recv().await {
                        Some(f) => f,
                        None => return,
                    },
                };
                if let Err(e) = write_frame(&mut stream, &frame).await {
                    tracing::debug!(peer = %to, error = %e, "stream broke; reconnecting");
                    pending = Some(frame);
                    break;
                }
            }
        }
    }

    async fn open_stream(&self, to: &str) -> Option<quinn::SendStream> {
        let addr = *self.directory.borrow().get(to)?;
        let connecting = self.endpoint.connect(addr, tls::SERVER_NAME).ok()?;
        let conn = match tokio::time::timeout(Duration::from_secs(5), connecting).await {
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
        conn.open_uni().await.ok()
    }

    async fn accept_loop(self, inbound: mpsc::Sender<Inbound>) {
        let mut shutdown = self.shutdown.clone();
        loop {
            let incoming = tokio::select! {
                _ = shutdown.changed() => return,
                i = self.endpoint.accept() => i,
            };
            let Some(incoming) = incoming else { return };
            let (inbound, max, counters) = (
                inbound.clone(),
                self.config.max_frame_bytes,
                self.counters.clone(),
            );
            tokio::spawn(async move {
                match incoming.await {
                    Ok(conn) => serve_connection(conn, inbound, max, counters).await,
                    Err(e) => tracing::debug!(error = %e, "quic handshake refused"),
                }
            });
        }
    }
}

async fn serve_connection(
    conn: quinn::Connection,
    inbound: mpsc::Sender<Inbound>,
    max: usize,
    counters: Arc<PeerCounters>,
) {
    let Some(from) = tls::peer_node_name(&conn) else {
        conn.close(1u32.into(), b"no node name in certificate");
        return;
    };
    while let Ok(stream) = conn.accept_uni().await {
        let (inbound, from, counters) = (inbound.clone(), from.clone(), counters.clone());
        tokio::spawn(read_frames(stream, from, inbound, max, counters));
    }
}

async fn read_frames(
    mut stream: quinn::RecvStream,
    from: String,
    inbound: mpsc::Sender<Inbound>,
    max: usize,
    counters: Arc<PeerCounters>,
) {
    loop {
        let mut len = [0u8; 4];
        if stream.read_exact(&mut len).await.is_err() {
            return;
        }
        let len = u32::from_be_bytes(len) as usize;
        if len > max {
            counters.oversized.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(peer = %from, len, "peer sent an oversized frame; closing its stream");
            let _ = stream.stop(1u32.into());
            return;
        }
        let mut payload = vec![0u8; len];
        if stream.read_exact(&mut payload).await.is_err() {
            return;
        }
        counters.frames_in.fetch_add(1, Ordering::Relaxed);
        if inbound
            .send(Inbound {
                from: from.clone(),
                payload,
            })
            .await
            .is_err()
        {
            return;
        }
    }
}

async fn write_frame(stream: &mut quinn::SendStream, frame: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(frame.len()).map_err(std::io::Error::other)?;
    stream.write_all(&len.to_be_bytes()).await?;
    stream.write_all(frame).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::ClusterKey;
    use crate::tls::TlsIdentity;

    fn node(key: &ClusterKey, name: &str) -> quinn::Endpoint {
        let id = TlsIdentity::new(key, name).unwrap();
        tls::endpoint(&id, "127.0.0.1:0".parse().unwrap()).unwrap()
    }

    #[tokio::test]
    async fn frames_arrive_in_order_and_name_their_sender() {
        let key = ClusterKey::generate();
        let (a, b) = (node(&key, "a"), node(&key, "b"));
        let dir = BTreeMap::from([
            ("a".to_string(), a.local_addr().unwrap()),
            ("b".to_string(), b.local_addr().unwrap()),
        ]);
        let (_dir_tx, dir_rx) = watch::channel(dir);
        let (_stop, stop_rx) = watch::channel(false);
        let (pa, _ina) = Peers::start(a, dir_rx.clone(), PeersConfig::default(), stop_rx.clone());
        let (_pb, mut inb) = Peers::start(b, dir_rx, PeersConfig::default(), stop_rx);
        for i in 0..500u32 {
            assert!(pa.send("b", i.to_be_bytes().to_vec()));
        }
        for i in 0..500u32 {
            let got = tokio::time::timeout(Duration::from_secs(10), inb.recv())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(got.from, "a");
            assert_eq!(got.payload, i.to_be_bytes());
        }
    }

    #[tokio::test]
    async fn a_node_with_another_key_cannot_deliver() {
        let (k1, k2) = (ClusterKey::generate(), ClusterKey::generate());
        let (a, b) = (node(&k2, "a"), node(&k1, "b"));
        let dir = BTreeMap::from([("b".to_string(), b.local_addr().unwrap())]);
        let (_dir_tx, dir_rx) = watch::channel(dir);
        let (_stop, stop_rx) = watch::channel(false);
        let (pa, _ina) = Peers::start(a, dir_rx.clone(), PeersConfig::default(), stop_rx.clone());
        let (_pb, mut inb) = Peers::start(b, dir_rx, PeersConfig::default(), stop_rx);
        pa.send("b", b"hello".to_vec());
        let got = tokio::time::timeout(Duration::from_secs(2), inb.recv()).await;
        assert!(got.is_err(), "a foreign node delivered a frame: {got:?}");
    }
}
