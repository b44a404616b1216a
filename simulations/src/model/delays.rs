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
//! - **down after suspect**, **re-merge after a heal** and **join**: the measured quantiles
//!   (a timer, the announce period, the start-up exchange), carried in N as below — joins only
//!   between the sizes measured, held at the nearest outside them.
//!
//!
//! With calibrations at two sizes (the built-in ones: 1,000 and 2,000 nodes), every table is
//! first carried to the run's size quantile by quantile along a power law through the two
//! measurements (`synthesize`), the exponent held to [0, 1] (no delay shrinks with N, none
//! grows faster than N) and the quantiles kept in order; the log₂ stretch of the spread then
//! only adjusts for a different split of the observers. Between the two sizes this is an
//! interpolation; beyond them an extrapolation, the only thing the 10,000-node figures rest
//! on for the delays no mechanism above scales (`docs/simulation-scale.md`).
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
    sizes: Vec<usize>,
    seed: u64,
    n: usize,
}

impl Delays {
    /// Delays for a run of `n` nodes with `seed`, from calibrations at one or more sizes.
    #[must_use]
    pub fn new(cals: &[Calibration], seed: u64, n: usize) -> Self {
        let cal = synthesize(cals, n);
        let mut sizes: Vec<usize> = cals.iter().map(|c| c.nodes).collect();
        sizes.sort_unstable();
        Self {
            cal,
            sizes,
            seed,
            n,
        }
    }

    /// The sizes of the calibration runs.
    #[must_use]
    pub fn calibrated_on(&self) -> &[usize] {
        &self.sizes
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

/// One calibration at size `n`, from calibrations at one or more sizes (see the module doc).
#[must_use]
pub fn synthesize(cals: &[Calibration], n: usize) -> Calibration {
    let mut sorted: Vec<&Calibration> = cals.iter().collect();
    sorted.sort_by_key(|c| c.nodes);
    let Some(&first) = sorted.first() else {
        panic!("synthesize needs a calibration");
    };
    if sorted.len() == 1 {
        return first.clone();
    }
    // The two sizes around n, or the two nearest ones.
    let k = sorted
        .iter()
        .position(|c| c.nodes >= n)
        .unwrap_or(sorted.len() - 1)
        .max(1);
    let (lo, hi) = (sorted[k - 1], sorted[k]);
    let carry = |a: &[u64], b: &[u64]| power_law(a, lo.nodes, b, hi.nodes, n);
    let wave = |a: &WaveDelays, b: &WaveDelays| {
        let (near, _) = if n.abs_diff(lo.nodes) <= n.abs_diff(hi.nodes) {
            (a, b)
        } else {
            (b, a)
        };
        let with_table = if a.first_suspect_ms.is_empty() { b } else { a };
        let ratio = n as f64 / lo.nodes as f64;
        WaveDelays {
            observers: (a.observers as f64 * ratio).round() as u64,
            subjects: with_table.subjects,
            first_suspect_mean_ms: near.first_suspect_mean_ms,
            first_suspect_ms: with_table.first_suspect_ms.clone(),
            spread_ms: carry(&a.spread_ms, &b.spread_ms),
            down_after_ms: carry(&a.down_after_ms, &b.down_after_ms),
            remerge_ms: carry(&a.remerge_ms, &b.remerge_ms),
        }
    };
    let cut = |a: &Option<WaveDelays>, b: &Option<WaveDelays>| match (a, b) {
        (Some(a), Some(b)) => Some(wave(a, b)),
        (a, b) => a.clone().or_else(|| b.clone()),
    };
    Calibration {
        nodes: n,
        probe_period_ms: lo.probe_period_ms,
        // Joins are not carried beyond the sizes measured: their low quantiles (a few ms at
        // 1,000 nodes, ~100 at 2,000) would be stretched out of all proportion.
        join_ms: match n {
            n if n < lo.nodes => lo.join_ms.clone(),
            n if n > hi.nodes => hi.join_ms.clone(),
            _ => carry(&lo.join_ms, &hi.join_ms),
        },
        crash: wave(&lo.crash, &hi.crash),
        larger_sees_smaller: cut(&lo.larger_sees_smaller, &hi.larger_sees_smaller),
        smaller_sees_larger: cut(&lo.smaller_sees_larger, &hi.smaller_sees_larger),
    }
}

/// Quantile tables `a` at `na` nodes and `b` at `nb` (`na < nb`) carried to `n`: each
/// quantile along the power law through its two points, outside `[na, nb]` from the nearer
/// point with the exponent held to [0, 1], then kept in order.
fn power_law(a: &[u64], na: usize, b: &[u64], nb: usize, n: usize) -> Vec<u64> {
    if a.len() != b.len() || na == nb {
        return if n.abs_diff(na) <= n.abs_diff(nb) {
            a.to_vec()
        } else {
            b.to_vec()
        };
    }
    let span = (nb as f64 / na as f64).ln();
    let mut out: Vec<u64> = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| {
            if x == 0 || y == 0 {
                return if n >= nb { x.max(y) } else { x };
            }
            let e = (y as f64 / x as f64).ln() / span;
            let (anchor, at, e) = match n {
                n if n < na => (x, na, e.clamp(0.0, 1.0)),
                n if n <= nb => (x, na, e),
                _ => (y, nb, e.clamp(0.0, 1.0)),
            };
            ms(anchor as f64 * (n as f64 / at as f64).powf(e))
        })
        .collect();
    for k in 1..out.len() {
        out[k] = out[k].max(out[k - 1]);
    }
    out
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
    fn tables_follow_a_power_law_between_two_sizes() {
        let a = [100, 200, 400];
        let b = [100, 400, 1600];
        assert_eq!(power_law(&a, 1000, &b, 2000, 1000), vec![100, 200, 400]);
        assert_eq!(power_law(&a, 1000, &b, 2000, 2000), vec![100, 400, 1600]);
        assert_eq!(power_law(&a, 1000, &b, 2000, 1500)[1], 300, "interpolated");
        // Beyond: the exponent is held to 1 (400 → 1600 is N², carried on as N).
        assert_eq!(power_law(&a, 1000, &b, 2000, 4000), vec![100, 800, 3200]);
        // A quantile that shrank is held at its last value, and the table stays in order.
        assert_eq!(
            power_law(&[100, 900], 1000, &[200, 300], 2000, 8000),
            vec![800, 800]
        );
        // Below: from the smaller size, the same way.
        assert_eq!(
            power_law(&[100, 900], 1000, &[200, 300], 2000, 500),
            vec![50, 900]
        );
    }

    #[test]
    fn quantiles_interpolate_between_points() {
        let t = [0, 100, 300];
        assert_eq!(quantile(&t, 0.0), 0.0);
        assert_eq!(quantile(&t, 0.25), 50.0);
        assert_eq!(quantile(&t, 0.75), 200.0);
        assert!(quantile(&t, 0.999_999) <= 300.0);
    }
}
