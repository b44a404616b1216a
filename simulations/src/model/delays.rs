//! The delays the model draws, from the tables one full simulation measured
//! (`crate::figures::Calibration`), scaled to the run's size where the mechanism says how:
//!
//! - **first suspicion** of a member by the observers that can no longer reach it: each of
//!   them probes one member per probe period, so the member is first probed after a time
//!   proportional to `N / observers` probe periods. With enough measured subjects (a
//!   partition's: hundreds) the measured quantiles are drawn, stretched by that ratio against
//!   the calibration's; with few (ten crashes) an exponential time of mean
//!   `period × N / observers` (SWIM's e/(e−1) periods in the continuous limit) plus a
//!   constant (the probe's timeout and indirect probes) fitted to the measured mean;
//! - **spread** (that first suspicion → each other observer's suspect-or-down mark):
//!   dissemination by gossip, the measured quantiles stretched by log₂(observers) over
//!   log₂(the calibration's observers);
//! - **down after suspect**, **re-merge after a heal** and **join**: the measured quantiles as
//!   they are (a timer, the announce period, the start-up exchange: not scaled).
//!
//! Draws are pure functions of `(seed, what, pair)` (SplitMix64 through
//! [`crate::shared::derive_seed`]): the order in which the model visits pairs does not matter,
//! and the partition's draws can be made again at the heal.

use crate::figures::{Calibration, WaveDelays};
use crate::shared::derive_seed;

/// Subjects measured from which a first-suspicion table is drawn rather than fitted.
const MEASURED_SUBJECTS: u64 = 100;

/// Which measured table a change draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A crash, seen by everyone else.
    Crash,
    /// A partition, the larger side's views of the smaller.
    LargerSeesSmaller,
    /// A partition, the smaller side's views of the larger.
    SmallerSeesLarger,
}

/// What is drawn, one tag each.
#[derive(Debug, Clone, Copy)]
pub enum Draw {
    /// The member's first suspicion (per member and episode).
    FirstSuspect = 0,
    /// Spread to one observer.
    Spread = 1,
    /// Down after suspect.
    DownAfter = 2,
    /// Re-merge after the heal.
    Remerge = 3,
    /// Join.
    Join = 4,
}

/// The calibrated delays for one run.
#[derive(Debug)]
pub struct Delays {
    cal: Calibration,
    seed: u64,
    n: usize,
}

impl Delays {
    /// Delays for a run of `n` nodes with `seed`.
    #[must_use]
    pub fn new(cal: Calibration, seed: u64, n: usize) -> Self {
        Self { cal, seed, n }
    }

    /// The calibration.
    #[must_use]
    pub fn calibration(&self) -> &Calibration {
        &self.cal
    }

    fn table(&self, kind: Kind) -> &WaveDelays {
        let cut = match kind {
            Kind::Crash => None,
            Kind::LargerSeesSmaller => self.cal.larger_sees_smaller.as_ref(),
            Kind::SmallerSeesLarger => self.cal.smaller_sees_larger.as_ref(),
        };
        cut.unwrap_or(&self.cal.crash)
    }

    /// A uniform draw in [0, 1) for `(what, episode, a, b)`.
    #[must_use]
    pub fn uniform(&self, what: Draw, episode: u64, a: usize, b: usize) -> f64 {
        let key = (episode << 8) | what as u64;
        let bits = derive_seed(self.seed, 8, key, (a as u64) << 32 | b as u64);
        (bits >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Fault → the first suspicion of `member` by `observers` observers.
    #[must_use]
    pub fn first_suspect(&self, kind: Kind, episode: u64, member: usize, observers: usize) -> u64 {
        let w = self.table(kind);
        let period = self.cal.probe_period_ms as f64;
        let probed = |n: usize, o: u64| period * n as f64 / o.max(1) as f64;
        let u = self.uniform(Draw::FirstSuspect, episode, member, 0);
        if w.subjects >= MEASURED_SUBJECTS && !w.first_suspect_ms.is_empty() {
            let stretch = probed(self.n, observers as u64) / probed(self.cal.nodes, w.observers);
            return (quantile(&w.first_suspect_ms, u) * stretch).round() as u64;
        }
        let offset = (w.first_suspect_mean_ms - probed(self.cal.nodes, w.observers)).max(0.0);
        let wait = -(1.0 - u).ln() * probed(self.n, observers as u64);
        (offset + wait).round() as u64
    }

    /// The first suspicion → `observer`'s mark, among `observers` observers.
    #[must_use]
    pub fn spread(&self, kind: Kind, episode: u64, pair: (usize, usize), observers: usize) -> u64 {
        let w = self.table(kind);
        let stretch = log2(observers) / log2(w.observers as usize);
        let u = self.uniform(Draw::Spread, episode, pair.0, pair.1);
        ms(quantile(&w.spread_ms, u) * stretch)
    }

    /// Suspect-or-down mark → down mark.
    #[must_use]
    pub fn down_after(&self, kind: Kind, episode: u64, pair: (usize, usize)) -> u64 {
        let u = self.uniform(Draw::DownAfter, episode, pair.0, pair.1);
        ms(quantile(&self.table(kind).down_after_ms, u))
    }

    /// Heal → the pair's alive mark.
    #[must_use]
    pub fn remerge(&self, kind: Kind, episode: u64, pair: (usize, usize)) -> u64 {
        let u = self.uniform(Draw::Remerge, episode, pair.0, pair.1);
        ms(quantile(&self.table(kind).remerge_ms, u))
    }

    /// The later start → the pair's first alive mark.
    #[must_use]
    pub fn join(&self, episode: u64, pair: (usize, usize)) -> u64 {
        let u = self.uniform(Draw::Join, episode, pair.0, pair.1);
        ms(quantile(&self.cal.join_ms, u))
    }
}

fn log2(n: usize) -> f64 {
    (n.max(2) as f64).log2()
}

/// A non-negative delay rounded to whole milliseconds (without a libm call per pair).
fn ms(x: f64) -> u64 {
    (x.max(0.0) + 0.5) as u64
}

/// The value at `u` ∈ [0, 1) of a quantile table (0, 1, …, 100 %), linear between points.
#[must_use]
pub fn quantile(table: &[u64], u: f64) -> f64 {
    match table.len() {
        0 => 0.0,
        1 => table[0] as f64,
        len => {
            let x = u * (len - 1) as f64;
            let k = (x as usize).min(len - 2);
            let frac = x - k as f64;
            table[k] as f64 + (table[k + 1] as f64 - table[k] as f64) * frac
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_between_points() {
        let t = [0, 100, 300];
        assert_eq!(quantile(&t, 0.0), 0.0);
        assert_eq!(quantile(&t, 0.25), 50.0);
        assert_eq!(quantile(&t, 0.75), 200.0);
        assert!(quantile(&t, 0.999_999) <= 300.0);
    }
}
