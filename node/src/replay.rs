//! The anti-replay check of sealed gossip datagrams: a recorded datagram replayed later, to
//! the same node or to another, changes nothing.
//!
//! What it promises, for datagrams whose seal opened (so their [`Stamp`] is authentic):
//! - **Addressed to us**: a datagram stamped for another address is refused, so a datagram
//!   recorded on its way to node A cannot be replayed to node B.
//! - **Fresh**: a datagram whose sender clock is more than [`ReplayConfig::window`] away from
//!   ours (either way) is refused as stale. This bounds how long a recording stays useful and
//!   is the clock skew the cluster tolerates.
//! - **Once**: per sender epoch (one per process start of the sender), an IPsec-style sliding
//!   window over the stamp's counter accepts each counter at most once. Counters more than
//!   [`WINDOW_COUNTERS`] below the highest one seen are refused as too old.
//! - **Bounded**: at most [`ReplayConfig::max_senders`] epochs are tracked. An epoch not heard
//!   for twice the freshness window is forgotten, which is safe: every datagram it could
//!   still replay is stale by then. When the table is full of epochs heard more recently, a
//!   datagram from a new epoch is refused (counted) rather than evicting a live one, so
//!   nobody can flush a window to make room for a replay.
//!
//! What it cannot promise: a receiver that restarts forgets every window, so a datagram
//! recorded less than `window` before the restart is accepted once more by the new process.
//!
//! Drive it as: one guard per gossip socket, owned by the task that reads the socket;
//! [`ReplayGuard::check`] every opened datagram before the plaintext is parsed. The guard
//! marks a counter as seen when it accepts it. Time is an input (`now_ms`, Unix ms).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::time::Duration;

use crate::seal::Stamp;

/// Width of the sliding window, in counters. Counters are per sender, not per receiver, so
/// a sender that talks to many members skips counters for each receiver; the window only
/// needs to cover how far datagrams to one receiver get reordered, measured in the sender's
/// datagrams to everyone in between (one gossip flush sends tens).
pub const WINDOW_COUNTERS: u64 = 1024;
const WORDS: usize = (WINDOW_COUNTERS / 64) as usize;

/// Limits of the anti-replay check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayConfig {
    /// How far a datagram's sender clock may be from ours, either way. Default 30 s: clocks
    /// kept by NTP are within milliseconds; 30 s tolerates a badly drifting host while
    /// keeping a recording useless half a minute after it was made.
    pub window: Duration,
    /// Most sender epochs tracked at once (about 160 bytes each). Default 16,384: a 4,000
    /// node cluster where every node restarts within one minute still fits.
    pub max_senders: NonZeroUsize,
}

impl Default for ReplayConfig {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(30),
            max_senders: NonZeroUsize::new(16_384).unwrap_or(NonZeroUsize::MIN),
        }
    }
}

/// Why a datagram was refused. None of these reach the gossip core.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Replay {
    /// Stamped for another address: recorded on its way to another node.
    #[error("datagram addressed to {0}, not to this node")]
    Misaddressed(SocketAddr),
    /// Sender clock too far from ours: a recording, or a clock off by more than the window.
    #[error("datagram stamped {skew_ms} ms away from this node's clock (window ±{window_ms} ms)")]
    Stale {
        /// Sender clock minus ours, in ms.
        skew_ms: i64,
        /// The configured window.
        window_ms: u64,
    },
    /// This counter of this epoch was already accepted.
    #[error("datagram {counter} of sender epoch {epoch:016x} was already received")]
    Duplicate {
        /// The sender epoch.
        epoch: u64,
        /// The repeated counter.
        counter: u64,
    },
    /// Too far below the highest counter seen from this epoch to tell.
    #[error("datagram {counter} of sender epoch {epoch:016x} is below the anti-replay window")]
    TooOld {
        /// The sender epoch.
        epoch: u64,
        /// The counter.
        counter: u64,
    },
    /// A new sender epoch while the table is full of live ones.
    #[error("anti-replay table full ({0} sender epochs heard recently); new sender refused")]
    Full(usize),
}

impl Replay {
    /// True when the datagram was refused for its timestamp.
    pub fn is_stale(&self) -> bool {
        matches!(self, Replay::Stale { .. })
    }
}

/// Per-epoch sliding window: `top` is the highest counter accepted, bit `d` of `seen` says
/// whether counter `top - d` was.
#[derive(Debug, Clone)]
struct Window {
    top: u64,
    seen: [u64; WORDS],
    last_heard_ms: u64,
}

impl Window {
    fn new(counter: u64, now_ms: u64) -> Self {
        let mut seen = [0u64; WORDS];
        seen[0] = 1;
        Self {
            top: counter,
            seen,
            last_heard_ms: now_ms,
        }
    }

    /// Marks `counter` as seen; an error if it was, or is too old to tell.
    fn accept(&mut self, epoch: u64, counter: u64) -> Result<(), Replay> {
        if counter > self.top {
            self.shift(counter - self.top);
            self.top = counter;
            self.seen[0] |= 1;
            return Ok(());
        }
        let distance = self.top - counter;
        if distance >= WINDOW_COUNTERS {
            return Err(Replay::TooOld { epoch, counter });
        }
        let (word, bit) = ((distance / 64) as usize, distance % 64);
        if self.seen[word] & (1 << bit) != 0 {
            return Err(Replay::Duplicate { epoch, counter });
        }
        self.seen[word] |= 1 << bit;
        Ok(())
    }

    /// Moves every mark `by` counters further from the top (bits shift toward the end).
    fn shift(&mut self, by: u64) {
        if by >= WINDOW_COUNTERS {
            self.seen = [0; WORDS];
            return;
        }
        let (words, bits) = ((by / 64) as usize, (by % 64) as u32);
        for i in (0..WORDS).rev() {
            let from = i.checked_sub(words);
            let high = from.map_or(0, |j| self.seen[j]);
            let low = from
                .and_then(|j| j.checked_sub(1))
                .map_or(0, |j| self.seen[j]);
            self.seen[i] = if bits == 0 {
                high
            } else {
                (high << bits) | (low >> (64 - bits))
            };
        }
    }
}

/// The anti-replay state of one gossip socket.
#[derive(Debug)]
pub struct ReplayGuard {
    config: ReplayConfig,
    own: SocketAddr,
    senders: HashMap<u64, Window>,
    /// When the table may next be swept for forgettable epochs (sweeps cost a pass over it).
    next_sweep_ms: u64,
}

impl ReplayGuard {
    /// A guard for the node whose gossip address (as the cluster knows it) is `own`.
    pub fn new(own: SocketAddr, config: ReplayConfig) -> Self {
        Self {
            config,
            own,
            senders: HashMap::new(),
            next_sweep_ms: 0,
        }
    }

    /// Sender epochs currently tracked.
    pub fn tracked(&self) -> usize {
        self.senders.len()
    }

    /// Accepts a stamp once; refuses replays, stale and misaddressed datagrams.
    pub fn check(&mut self, stamp: &Stamp, now_ms: u64) -> Result<(), Replay> {
        if !self.addressed_to_us(stamp.to) {
            return Err(Replay::Misaddressed(stamp.to));
        }
        let window_ms = u64::try_from(self.config.window.as_millis()).unwrap_or(u64::MAX);
        if stamp.sent_ms.abs_diff(now_ms) > window_ms {
            let skew = i128::from(stamp.sent_ms) - i128::from(now_ms);
            return Err(Replay::Stale {
                skew_ms: i64::try_from(skew).unwrap_or(if skew < 0 { i64::MIN } else { i64::MAX }),
                window_ms,
            });
        }
        if let Some(window) = self.senders.get_mut(&stamp.epoch) {
            window.accept(stamp.epoch, stamp.counter)?;
            window.last_heard_ms = window.last_heard_ms.max(now_ms);
            return Ok(());
        }
        if self.senders.len() >= self.config.max_senders.get() {
            self.sweep(now_ms, window_ms);
            if self.senders.len() >= self.config.max_senders.get() {
                return Err(Replay::Full(self.senders.len()));
            }
        }
        self.senders
            .insert(stamp.epoch, Window::new(stamp.counter, now_ms));
        Ok(())
    }

    /// Forgets epochs not heard for twice the window. A datagram accepted from such an epoch
    /// was stamped within `window` of a time at most its last-heard time, so any replay of it
    /// now is more than `window` old and refused as stale: forgetting loses no protection.
    fn sweep(&mut self, now_ms: u64, window_ms: u64) {
        if now_ms < self.next_sweep_ms {
            return;
        }
        // At most one pass per second, so a full table costs O(n) once a second, not per
        // datagram.
        self.next_sweep_ms = now_ms.saturating_add(1000);
        let horizon = window_ms.saturating_mul(2);
        self.senders
            .retain(|_, w| now_ms.saturating_sub(w.last_heard_ms) <= horizon);
    }

    fn addressed_to_us(&self, to: SocketAddr) -> bool {
        let (to_ip, own_ip) = (to.ip().to_canonical(), self.own.ip().to_canonical());
        to.port() == self.own.port() && (to_ip == own_ip || own_ip.is_unspecified())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NOW: u64 = 1_700_000_000_000;

    fn own() -> SocketAddr {
        "127.0.0.1:7946".parse().unwrap()
    }

    fn stamp(epoch: u64, counter: u64) -> Stamp {
        Stamp {
            epoch,
            counter,
            sent_ms: NOW,
            to: own(),
        }
    }

    fn guard() -> ReplayGuard {
        ReplayGuard::new(own(), ReplayConfig::default())
    }

    #[test]
    fn each_counter_is_accepted_once() {
        let mut g = guard();
        assert_eq!(g.check(&stamp(1, 5), NOW), Ok(()));
        assert_eq!(
            g.check(&stamp(1, 5), NOW),
            Err(Replay::Duplicate {
                epoch: 1,
                counter: 5
            })
        );
        // Reordered but new: accepted once.
        assert_eq!(g.check(&stamp(1, 3), NOW), Ok(()));
        assert!(g.check(&stamp(1, 3), NOW).is_err());
        // Another epoch (the sender restarted) has its own window.
        assert_eq!(g.check(&stamp(2, 5), NOW), Ok(()));
        assert_eq!(g.tracked(), 2);
    }

    #[test]
    fn counters_below_the_window_are_refused() {
        let mut g = guard();
        g.check(&stamp(1, 10_000), NOW).unwrap();
        assert_eq!(
            g.check(&stamp(1, 10_000 - WINDOW_COUNTERS), NOW),
            Err(Replay::TooOld {
                epoch: 1,
                counter: 10_000 - WINDOW_COUNTERS
            })
        );
        assert_eq!(
            g.check(&stamp(1, 10_000 - WINDOW_COUNTERS + 1), NOW),
            Ok(())
        );
    }

    #[test]
    fn stale_and_future_stamps_are_refused() {
        let mut g = guard();
        let window = 30_000;
        let at = |sent_ms| Stamp {
            sent_ms,
            ..stamp(1, sent_ms)
        };
        assert!(g.check(&at(NOW - window - 1), NOW).unwrap_err().is_stale());
        assert!(g.check(&at(NOW + window + 1), NOW).unwrap_err().is_stale());
        assert_eq!(g.check(&at(NOW - window), NOW), Ok(()));
        assert_eq!(g.check(&at(NOW + window), NOW), Ok(()));
    }

    #[test]
    fn datagrams_for_another_node_are_refused() {
        let mut g = guard();
        let other: SocketAddr = "127.0.0.1:7947".parse().unwrap();
        let s = Stamp {
            to: other,
            ..stamp(1, 1)
        };
        assert_eq!(g.check(&s, NOW), Err(Replay::Misaddressed(other)));
        let mapped = Stamp {
            to: "[::ffff:127.0.0.1]:7946".parse().unwrap(),
            ..stamp(1, 2)
        };
        assert_eq!(g.check(&mapped, NOW), Ok(()));
        let mut any = ReplayGuard::new("0.0.0.0:7946".parse().unwrap(), ReplayConfig::default());
        assert_eq!(any.check(&stamp(1, 1), NOW), Ok(()));
        assert!(any.check(&s, NOW).is_err());
    }

    #[test]
    fn the_table_is_bounded_and_forgets_only_what_is_safe_to_forget() {
        let config = ReplayConfig {
            max_senders: NonZeroUsize::new(3).unwrap(),
            ..ReplayConfig::default()
        };
        let mut g = ReplayGuard::new(own(), config);
        for epoch in 0..3 {
            g.check(&stamp(epoch, 1), NOW).unwrap();
        }
        // Full of epochs heard just now: a new one is refused, the old windows stay.
        assert_eq!(g.check(&stamp(9, 1), NOW + 1), Err(Replay::Full(3)));
        assert!(g.check(&stamp(0, 1), NOW + 1).is_err());
        // Epoch 2 keeps talking; 0 and 1 go quiet for more than twice the window.
        let later = NOW + 60_001;
        g.check(
            &Stamp {
                sent_ms: later - 1,
                ..stamp(2, 2)
            },
            later - 1,
        )
        .unwrap();
        let fresh = Stamp {
            sent_ms: later,
            ..stamp(9, 1)
        };
        assert_eq!(g.check(&fresh, later), Ok(()));
        assert_eq!(g.tracked(), 2);
        // A replay of a forgotten epoch's datagram is stale by construction.
        assert!(g.check(&stamp(0, 1), later).unwrap_err().is_stale());
    }

    proptest! {
        /// Against a model: a counter is accepted iff it was never accepted and is within the
        /// window below the highest counter seen so far.
        #[test]
        fn window_matches_a_model(counters in proptest::collection::vec(0u64..5000, 1..400)) {
            let mut g = guard();
            let mut accepted = std::collections::BTreeSet::new();
            let mut top: Option<u64> = None;
            for c in counters {
                let fresh = !accepted.contains(&c)
                    && top.is_none_or(|t| c > t || t - c < WINDOW_COUNTERS);
                let got = g.check(&stamp(7, c), NOW).is_ok();
                prop_assert_eq!(got, fresh, "counter {}", c);
                if got {
                    accepted.insert(c);
                    top = Some(top.map_or(c, |t| t.max(c)));
                }
            }
        }

        #[test]
        fn check_never_panics(epoch in any::<u64>(), counter in any::<u64>(), sent in any::<u64>(), now in any::<u64>()) {
            let mut g = guard();
            let s = Stamp { epoch, counter, sent_ms: sent, to: own() };
            let _ = g.check(&s, now);
            let _ = g.check(&s, now);
        }
    }
}
