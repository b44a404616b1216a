//! The sending side: one task per peer drains its queue into one long-lived stream,
//! reconnecting with back-off.

use std::collections::VecDeque;
use std::sync::PoisonError;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::BytesMut;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::codec::Encoder;

use super::{
    BATCH_FRAMES, CLOSE_CUT_OFF, Channel, Directory, FrameCodec, Peers, Queue, StreamError,
    register,
};
use crate::backoff::Backoff;
use crate::tls;

/// The receiving ends of one peer's queue: frames in order, and urgent frames, which
/// overtake those not yet written ([`super::PeersConfig::urgent`]).
pub(super) struct SendQueue {
    pub(super) rx: mpsc::Receiver<(Channel, Vec<u8>)>,
    pub(super) urgent_rx: mpsc::Receiver<(Channel, Vec<u8>)>,
}

impl Peers {
    pub(super) async fn sender_loop(self, to: String, mut rx: SendQueue, queue: Queue) {
        let mut backoff = Backoff::new(self.config.min_backoff, self.config.max_backoff);
        let mut codec = FrameCodec::new(self.config.max_frame_bytes);
        let mut buf = BytesMut::new();
        // Frames taken from the queue and not yet written, oldest first: a stream that broke
        // keeps them for the next one.
        let mut batch: VecDeque<(Channel, Vec<u8>)> = VecDeque::new();
        let mut last_write: Option<Instant> = None;
        let mut rate = FrameRate::default();
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
                    backoff.reset();
                    s
                }
                None => {
                    if *self.shutdown.borrow() {
                        return;
                    }
                    tokio::select! {
                        () = queue.cut.notified() => return,
                        () = tokio::time::sleep(backoff.next().unwrap_or_default()) => {}
                    }
                    continue;
                }
            };
            loop {
                if batch.is_empty() {
                    tokio::select! {
                        biased;
                        () = queue.cut.notified() => return cut_off(&conn),
                        Some(f) = rx.urgent_rx.recv() => {
                            batch.push_back(f);
                            rate.add(Instant::now(), 1);
                        }
                        f = rx.rx.recv() => match f {
                            Some(f) => {
                                batch.push_back(f);
                                rate.add(Instant::now(), 1);
                            }
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
                    }
                }
                take_queued(&mut rx, &mut batch, &mut rate);
                // A busy peer written to less than `coalesce` ago: what comes until then leaves
                // in the same write (the timer ticks in milliseconds, so the wait is up to one
                // more). An idle or slow peer's frames, and a full batch, leave at once.
                if let Some(due) = last_write.map(|t| t + self.config.coalesce)
                    && due > Instant::now()
                    && rate.per_s >= self.config.coalesce_above
                    && batch.len() < BATCH_FRAMES
                {
                    tokio::select! {
                        () = queue.cut.notified() => return cut_off(&conn),
                        () = tokio::time::sleep_until(due) => {}
                    }
                    take_queued(&mut rx, &mut batch, &mut rate);
                }
                if moved(&directory) {
                    conn.close(0u32.into(), b"peer moved");
                    break;
                }
                // Every frame of the batch is written before this task yields, so the
                // connection's driver packs them into as few datagrams as they fit.
                let mut broke = false;
                while let Some((channel, frame)) = batch.front() {
                    let written = tokio::select! {
                        () = queue.cut.notified() => return cut_off(&conn),
                        w = write_frame(&mut stream, &mut codec, &mut buf, *channel, frame) => w,
                    };
                    if let Err(e) = written {
                        tracing::debug!(peer = %to, error = %e, "stream broke; reconnecting");
                        broke = true;
                        break;
                    }
                    queue.bytes.fetch_sub(frame.len(), Ordering::Relaxed);
                    batch.pop_front();
                }
                if broke {
                    break;
                }
                last_write = Some(Instant::now());
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
}

/// Moves what is queued now into `batch`: urgent frames to its front (ahead of every frame
/// not yet written, in the order they came), then the others, up to [`BATCH_FRAMES`]; counts
/// them in `rate`.
fn take_queued(rx: &mut SendQueue, batch: &mut VecDeque<(Channel, Vec<u8>)>, rate: &mut FrameRate) {
    let mut urgent = Vec::new();
    while let Ok(f) = rx.urgent_rx.try_recv() {
        urgent.push(f);
    }
    let mut taken = urgent.len();
    for f in urgent.into_iter().rev() {
        batch.push_front(f);
    }
    while batch.len() < BATCH_FRAMES {
        match rx.rx.try_recv() {
            Ok(f) => {
                batch.push_back(f);
                taken += 1;
            }
            Err(_) => break,
        }
    }
    rate.add(Instant::now(), taken);
}

/// Closes the connection of a peer whose queue passed its byte limit (`Queue::cut`).
fn cut_off(conn: &quinn::Connection) {
    conn.close(CLOSE_CUT_OFF.into(), b"send queue over its byte limit");
}

/// How long the frame rate's memory is: frames older than a few of these hardly count.
const RATE_WINDOW: Duration = Duration::from_millis(10);

/// Frames per second to one peer, as an exponentially decaying average over [`RATE_WINDOW`].
#[derive(Debug, Default)]
struct FrameRate {
    per_s: f64,
    at: Option<Instant>,
}

impl FrameRate {
    fn add(&mut self, now: Instant, frames: usize) {
        let window = RATE_WINDOW.as_secs_f64();
        let decay = self
            .at
            .map_or(0.0, |t| (-(now - t).as_secs_f64() / window).exp());
        self.per_s = self.per_s * decay + frames as f64 / window;
        self.at = Some(now);
    }
}

/// Frames `body` into `buf` (cleared first) and writes it whole.
async fn write_frame(
    stream: &mut quinn::SendStream,
    codec: &mut FrameCodec,
    buf: &mut BytesMut,
    channel: Channel,
    body: &[u8],
) -> Result<(), StreamError> {
    buf.clear();
    codec.encode((channel, body), buf)?;
    stream.write_all(buf).await.map_err(std::io::Error::from)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A steady stream settles at its own rate; a few frames within some milliseconds stay well
    /// under the default threshold; a pause lets the rate fall away.
    #[test]
    fn the_frame_rate_follows_the_stream() {
        let start = Instant::now();
        let mut rate = FrameRate::default();
        for ms in 0..200u64 {
            rate.add(start + Duration::from_millis(ms), 3);
        }
        assert!((2_800.0..3_200.0).contains(&rate.per_s), "{}", rate.per_s);
        rate.add(start + Duration::from_millis(300), 0);
        assert!(rate.per_s < 1.0, "{}", rate.per_s);

        let mut few = FrameRate::default();
        for ms in [0, 1, 2, 3, 4] {
            few.add(start + Duration::from_millis(ms), 1);
        }
        assert!(few.per_s < super::super::COALESCE_ABOVE, "{}", few.per_s);
    }
}
