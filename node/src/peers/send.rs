//! The sending side: one task per peer drains its queue into one long-lived stream,
//! reconnecting with back-off.

use std::sync::PoisonError;
use std::sync::atomic::Ordering;

use bytes::BytesMut;
use tokio::sync::mpsc;
use tokio_util::codec::Encoder;

use super::{CLOSE_CUT_OFF, Channel, Directory, FrameCodec, Peers, Queue, StreamError, register};
use crate::backoff::Backoff;
use crate::tls;

impl Peers {
    pub(super) async fn sender_loop(
        self,
        to: String,
        mut rx: mpsc::Receiver<(Channel, Vec<u8>)>,
        queue: Queue,
    ) {
        let mut backoff = Backoff::new(self.config.min_backoff, self.config.max_backoff);
        let mut codec = FrameCodec::new(self.config.max_frame_bytes);
        let mut buf = BytesMut::new();
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
                    w = write_frame(&mut stream, &mut codec, &mut buf, channel, &frame) => w,
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
