//! The simulated network: per-datagram latency, loss, duplication, corruption, partitions.
//!
//! [`Network::route`] decides the fate of one datagram from the seeded RNG it is given and
//! returns zero, one or two deliveries (time and payload). Reordering is not a separate knob:
//! it falls out of the exponential jitter. Partitions are directed cuts between a side and the
//! rest of the cluster, kept in a `BTreeMap` by id so a flap can remove only its own.

use std::collections::BTreeMap;

use rand::{RngExt, rngs::StdRng};

use crate::scenario::NetworkParams;

/// What happened to one datagram, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Delivered (possibly twice, possibly corrupted).
    Sent,
    /// Dropped by random loss.
    Lost,
    /// Dropped by a partition.
    Cut,
}

/// One delivery: after `delay_ms`, `payload` arrives; `corrupted` says whether bytes were flipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Delay from the send, in milliseconds.
    pub delay_ms: u64,
    /// The bytes that arrive.
    pub payload: Vec<u8>,
    /// Whether the network flipped bytes in this copy.
    pub corrupted: bool,
}

/// A directed cut: datagrams from `side` to the rest (and back, unless `one_way`) are dropped.
#[derive(Debug, Clone)]
struct Cut {
    /// `side[i]` is true when node `i` is on the cut-off side.
    side: Vec<bool>,
    one_way: bool,
}

/// The network model.
#[derive(Debug, Clone)]
pub struct Network {
    params: NetworkParams,
    cuts: BTreeMap<u64, Cut>,
}

impl Network {
    /// A network with `params` and no partition.
    #[must_use]
    pub fn new(params: NetworkParams) -> Self {
        Self {
            params,
            cuts: BTreeMap::new(),
        }
    }

    /// Replaces the parameters (partitions stay).
    pub fn set_params(&mut self, params: NetworkParams) {
        self.params = params;
    }

    /// Adds partition `id`, cutting `side` from the rest of `n` nodes.
    pub fn partition(&mut self, id: u64, n: usize, side: &[usize], one_way: bool) {
        let mut mask = vec![false; n];
        for &i in side {
            if let Some(m) = mask.get_mut(i) {
                *m = true;
            }
        }
        self.cuts.insert(
            id,
            Cut {
                side: mask,
                one_way,
            },
        );
    }

    /// Removes partition `id`.
    pub fn unpartition(&mut self, id: u64) {
        self.cuts.remove(&id);
    }

    /// Removes every partition.
    pub fn heal(&mut self) {
        self.cuts.clear();
    }

    /// Whether datagrams are sealed (corruption is caught before the core).
    #[must_use]
    pub fn sealed(&self) -> bool {
        self.params.seal
    }

    /// Whether any partition is in force.
    #[must_use]
    pub fn is_partitioned(&self) -> bool {
        !self.cuts.is_empty()
    }

    /// Whether a datagram from `from` to `to` crosses a cut.
    #[must_use]
    pub fn is_cut(&self, from: usize, to: usize) -> bool {
        self.cuts.values().any(|c| {
            let (a, b) = (
                c.side.get(from).copied().unwrap_or(false),
                c.side.get(to).copied().unwrap_or(false),
            );
            if c.one_way { a && !b } else { a != b }
        })
    }

    /// Decides the fate of one datagram.
    pub fn route(
        &self,
        rng: &mut StdRng,
        from: usize,
        to: usize,
        payload: Vec<u8>,
    ) -> (Fate, Vec<Delivery>) {
        if self.is_cut(from, to) {
            return (Fate::Cut, Vec::new());
        }
        let p = &self.params;
        if p.loss > 0.0 && rng.random_bool(p.loss) {
            return (Fate::Lost, Vec::new());
        }
        let mut copies = vec![payload];
        if p.duplicate > 0.0 && rng.random_bool(p.duplicate) {
            copies.push(copies[0].clone());
        }
        let mut out = Vec::with_capacity(copies.len());
        for mut bytes in copies {
            let corrupted = p.corrupt > 0.0 && rng.random_bool(p.corrupt);
            if corrupted {
                flip_bytes(rng, &mut bytes);
            }
            out.push(Delivery {
                delay_ms: self.delay(rng),
                payload: bytes,
                corrupted,
            });
        }
        (Fate::Sent, out)
    }

    /// Delay of one message on a reliable stream (QUIC) from `from` to `to`, or `None` while
    /// a partition cuts the pair. Each random loss costs one 200 ms retransmission (at most 5).
    pub fn reliable_delay(&self, rng: &mut StdRng, from: usize, to: usize) -> Option<u64> {
        if self.is_cut(from, to) || self.is_cut(to, from) {
            return None;
        }
        let mut delay = self.delay(rng);
        let mut tries = 0;
        while tries < 5 && self.params.loss > 0.0 && rng.random_bool(self.params.loss) {
            delay += 200;
            tries += 1;
        }
        Some(delay)
    }

    /// `latency + Exp(jitter)`, rounded up to whole milliseconds, at least 1.
    fn delay(&self, rng: &mut StdRng) -> u64 {
        let p = &self.params;
        let jitter = if p.jitter_ms > 0.0 {
            let u: f64 = rng.random();
            -(1.0 - u).ln() * p.jitter_ms
        } else {
            0.0
        };
        ((p.latency_ms + jitter).ceil() as u64).max(1)
    }
}

/// Flips one bit in each of 1–4 consecutive bytes (so the datagram always changes).
fn flip_bytes(rng: &mut StdRng, bytes: &mut [u8]) {
    if bytes.is_empty() {
        return;
    }
    let start = rng.random_range(0..bytes.len());
    let flips = rng.random_range(1..=4usize).min(bytes.len());
    for k in 0..flips {
        let bit = rng.random_range(0..8u32);
        bytes[(start + k) % bytes.len()] ^= 1 << bit;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn symmetric_and_one_way_cuts() {
        let mut net = Network::new(NetworkParams::default());
        net.partition(1, 4, &[0, 1], false);
        assert!(net.is_cut(0, 2) && net.is_cut(2, 0));
        assert!(!net.is_cut(0, 1) && !net.is_cut(2, 3));
        net.heal();
        net.partition(2, 4, &[3], true);
        assert!(net.is_cut(3, 0));
        assert!(!net.is_cut(0, 3));
        net.unpartition(2);
        assert!(!net.is_partitioned());
    }

    #[test]
    fn loss_one_drops_everything_and_corruption_changes_bytes() {
        let mut rng = StdRng::seed_from_u64(1);
        let lossy = Network::new(NetworkParams {
            loss: 1.0,
            ..NetworkParams::default()
        });
        assert_eq!(lossy.route(&mut rng, 0, 1, vec![1, 2, 3]).0, Fate::Lost);
        let corrupt = Network::new(NetworkParams {
            corrupt: 1.0,
            ..NetworkParams::default()
        });
        let (_, out) = corrupt.route(&mut rng, 0, 1, vec![0; 64]);
        assert!(out[0].corrupted);
        assert_ne!(out[0].payload, vec![0; 64]);
    }
}
