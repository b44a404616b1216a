//! The model's views: one dense array entry per (observer, member) pair — 16 bytes: the
//! member's generation, the status the pair had when its last episode began, and up to two
//! scheduled status changes — and the members-alive time series kept as per-sample deltas,
//! so nothing is stored per change beyond the pair's own entry.
//!
//! An episode (a join, a crash's suspicion and down marks, a re-merge) is written with
//! [`Views::begin`]: the changes of the previous episode that were due after its start are
//! taken back (they never happened), and the new ones are scheduled.

/// What an observer holds about a member. `Unknown` until it hears of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Status {
    /// Never heard of, or forgotten by a restart.
    Unknown = 0,
    /// Alive.
    Alive = 1,
    /// Suspect.
    Suspect = 2,
    /// Down.
    Down = 3,
}

impl Status {
    fn from_code(code: u32) -> Self {
        match code & 0xff {
            1 => Status::Alive,
            2 => Status::Suspect,
            3 => Status::Down,
            _ => Status::Unknown,
        }
    }
}

/// "Not scheduled".
pub const NEVER: u32 = u32::MAX;

/// One (observer, member) pair.
#[derive(Debug, Clone, Copy)]
#[repr(C)]
pub struct Pair {
    /// The member's generation the entry is about.
    pub generation: u32,
    /// First scheduled change.
    t1: u32,
    /// Second scheduled change (after `t1`).
    t2: u32,
    /// Status before `t1` (bits 0–7), after `t1` (8–15) and after `t2` (16–23).
    codes: u32,
}

impl Default for Pair {
    fn default() -> Self {
        Self {
            generation: 0,
            t1: NEVER,
            t2: NEVER,
            codes: 0,
        }
    }
}

impl Pair {
    /// The status at `t` (changes due at `t` have happened).
    #[must_use]
    pub fn status_at(&self, t: u32) -> Status {
        let shift = if self.t2 <= t {
            16
        } else if self.t1 <= t {
            8
        } else {
            0
        };
        Status::from_code(self.codes >> shift)
    }

    /// When the pair last changed at or before `t` (`None` if it has not since its episode
    /// began).
    #[must_use]
    pub fn last_change(&self, t: u32) -> Option<u32> {
        [self.t2, self.t1].into_iter().find(|&c| c <= t)
    }

    fn changes(&self) -> [(u32, Status, Status); 2] {
        let s = |k: u32| Status::from_code(self.codes >> k);
        [(self.t1, s(0), s(8)), (self.t2, s(8), s(16))]
    }
}

/// Every observer's view and the time series' deltas.
#[derive(Debug)]
pub struct Views {
    n: usize,
    pairs: Vec<Pair>,
    sample_ms: u64,
    samples: usize,
    duration_ms: u64,
    /// `[sample][observer]`: change of the alive count since the previous sample.
    alive_delta: Vec<i32>,
    /// Same for suspects.
    suspect_delta: Vec<i32>,
}

impl Views {
    /// Views of `n` members held by `n` observers, all `Unknown`; samples every `sample_ms`
    /// up to `duration_ms`.
    #[must_use]
    pub fn new(n: usize, sample_ms: u64, duration_ms: u64) -> Self {
        let samples = (duration_ms / sample_ms.max(1)) as usize + 1;
        Self {
            n,
            pairs: vec![Pair::default(); n * n],
            sample_ms: sample_ms.max(1),
            samples,
            duration_ms,
            alive_delta: vec![0; samples * n],
            suspect_delta: vec![0; samples * n],
        }
    }

    /// The end of the run.
    #[must_use]
    pub fn end_ms(&self) -> u64 {
        self.duration_ms
    }

    /// Bytes held per (observer, member) pair.
    #[must_use]
    pub const fn pair_bytes() -> usize {
        std::mem::size_of::<Pair>()
    }

    /// Observer `i`'s entry for member `j`.
    #[must_use]
    pub fn pair(&self, i: usize, j: usize) -> &Pair {
        &self.pairs[i * self.n + j]
    }

    /// Starts a new episode of pair `(i, j)` at `now`, about `generation`: the changes of the
    /// previous episode due after `now` are taken back and `changes` (in time order, none
    /// before `now`, at most two) are scheduled.
    pub fn begin(
        &mut self,
        i: usize,
        j: usize,
        now: u32,
        generation: u32,
        changes: &[(u32, Status)],
    ) {
        debug_assert!(changes.len() <= 2);
        debug_assert!(changes.windows(2).all(|w| w[0].0 <= w[1].0));
        let k = i * self.n + j;
        let old = self.pairs[k];
        for (t, from, to) in old.changes() {
            if t != NEVER && t > now {
                self.shift(i, t, to, from);
            }
        }
        let base = old.status_at(now);
        let mut entry = Pair {
            generation,
            t1: NEVER,
            t2: NEVER,
            codes: base as u32 * 0x01_01_01,
        };
        let mut before = base;
        for (slot, &(t, to)) in changes.iter().enumerate() {
            debug_assert!(t >= now);
            if slot == 0 {
                entry.t1 = t;
                entry.codes = base as u32 | (to as u32) << 8 | (to as u32) << 16;
            } else {
                entry.t2 = t;
                entry.codes = (entry.codes & 0xffff) | (to as u32) << 16;
            }
            self.shift(i, t, before, to);
            before = to;
        }
        self.pairs[k] = entry;
    }

    /// Records a change of observer `i`'s counts at `t` (`sign` −1 takes it back).
    fn shift(&mut self, i: usize, t: u32, from: Status, to: Status) {
        let bucket = u64::from(t).div_ceil(self.sample_ms) as usize;
        if bucket >= self.samples || from == to {
            return;
        }
        let k = bucket * self.n + i;
        let d = |s: Status, of: Status| i32::from(s == of);
        self.alive_delta[k] += d(to, Status::Alive) - d(from, Status::Alive);
        self.suspect_delta[k] += d(to, Status::Suspect) - d(from, Status::Suspect);
    }

    /// The members-alive counts at every sample: calls `sample(k, alive, suspect)` with
    /// per-observer counts, in sample order.
    pub fn replay_counts(&self, mut sample: impl FnMut(usize, &[i64], &[i64])) {
        let (mut alive, mut suspect) = (vec![0i64; self.n], vec![0i64; self.n]);
        for k in 0..self.samples {
            let row = k * self.n..(k + 1) * self.n;
            for (a, d) in alive.iter_mut().zip(&self.alive_delta[row.clone()]) {
                *a += i64::from(*d);
            }
            for (s, d) in suspect.iter_mut().zip(&self.suspect_delta[row]) {
                *s += i64::from(*d);
            }
            sample(k, &alive, &suspect);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_episode_takes_back_the_changes_not_yet_due() {
        let mut v = Views::new(2, 1000, 10_000);
        v.begin(0, 1, 0, 1, &[(500, Status::Alive)]);
        v.begin(
            0,
            1,
            2000,
            1,
            &[(2500, Status::Suspect), (6000, Status::Down)],
        );
        // A heal at 4 s: the down mark due at 6 s never happens.
        v.begin(0, 1, 4000, 1, &[(5000, Status::Alive)]);
        let p = v.pair(0, 1);
        assert_eq!(
            p.status_at(4000),
            Status::Suspect,
            "still what it was at the heal"
        );
        assert_eq!(p.status_at(5000), Status::Alive);
        assert_eq!(p.last_change(5500), Some(5000));
        let mut alive = Vec::new();
        v.replay_counts(|_, a, _| alive.push(a[0]));
        // Samples 0..=10 s: alive from 1 s, suspect from 3 s, alive again from 5 s.
        assert_eq!(alive, vec![0, 1, 1, 0, 0, 1, 1, 1, 1, 1, 1]);
    }

    #[test]
    fn a_pair_is_sixteen_bytes() {
        assert_eq!(Views::pair_bytes(), 16);
    }
}
