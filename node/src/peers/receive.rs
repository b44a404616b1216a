//! The receiving side: accepted connections, their streams split into frames, each charged to
//! its sender and handed to its channel's consumer.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_util::codec::FramedRead;

use super::{
    CLOSE_CUT_OFF, CLOSE_PROTOCOL, Channel, Connections, FrameCodec, FrameError, Inbound,
    PeerCounters, Peers, PeersConfig, StreamError, register,
};
use crate::tls;

/// What every connection reader shares.
#[derive(Debug)]
pub(super) struct Receiving {
    pub(super) scheduler: mpsc::Sender<Inbound>,
    pub(super) control: mpsc::Sender<Inbound>,
    pub(super) urgent: mpsc::Sender<Inbound>,
    pub(super) config: PeersConfig,
    pub(super) counters: Arc<PeerCounters>,
    /// Unconsumed inbound bytes per peer name.
    pub(super) budgets: Mutex<BTreeMap<String, Arc<AtomicUsize>>>,
    pub(super) connections: Connections,
}

impl Peers {
    pub(super) async fn accept_loop(self, receiving: Arc<Receiving>) {
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
    stream: quinn::RecvStream,
    from: String,
    budget: Arc<AtomicUsize>,
    receiving: Arc<Receiving>,
) {
    let (config, counters) = (&receiving.config, &receiving.counters);
    let codec = FrameCodec::new(config.max_frame_bytes).charging(budget, config.inbound_bytes());
    let mut frames = FramedRead::new(stream, codec);
    while let Some(read) = frames.next().await {
        let frame = match read {
            Ok(frame) => frame,
            // The stream ended or broke (mid-frame too): the connection's business.
            Err(StreamError::Io(_)) => return,
            Err(e @ StreamError::Frame(f)) => {
                if matches!(f, FrameError::Oversized { .. }) {
                    counters.oversized.fetch_add(1, Ordering::Relaxed);
                }
                counters.protocol_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(peer = %from, error = %e, "peer broke the frame format; closing its connection");
                conn.close(CLOSE_PROTOCOL.into(), b"bad frame");
                return;
            }
            Err(StreamError::OverBudget {
                unconsumed,
                len,
                limit,
            }) => {
                counters.cut_off.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    peer = %from,
                    unconsumed_bytes = unconsumed,
                    frame_bytes = len,
                    limit,
                    "peer sent more than its inbound byte limit before we consumed it; cut off (connection closed)"
                );
                conn.close(CLOSE_CUT_OFF.into(), b"inbound over its byte limit");
                return;
            }
        };
        counters.frames_in.fetch_add(1, Ordering::Relaxed);
        let consumer = match frame.channel {
            Channel::Scheduler if (config.urgent)(&frame.body) => &receiving.urgent,
            Channel::Scheduler => &receiving.scheduler,
            Channel::Control => &receiving.control,
        };
        if consumer
            .send(Inbound::received(from.clone(), frame))
            .await
            .is_err()
        {
            return;
        }
    }
}
