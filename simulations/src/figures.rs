//! Membership figures: how fast the views learn of joins, crashes, partitions and heals,
//! measured by one set of definitions on the full simulation (from the status changes its
//! cores reported, [`from_simulation`]) and on the membership model (from the marks it drew,
//! `crate::model`), so the two can be compared figure by figure.
//!
//! Definitions (every time in ms since the fault; "up throughout" = started before the fault
//! and up at the end of the run):
//! - **join**: per ordered pair of nodes that started before the first fault, the later start
//!   → the observer's first `alive` mark of the subject; pairs with none before the first
//!   fault are `missing`.
//! - **crash**: as the report's `detection` (first suspicion, first down, each observer's
//!   down mark, dissemination = first suspicion → the last observer up throughout has it
//!   suspect or down), plus each observer's first suspect-or-down mark.
//! - **partition**, per direction (the rest's views of the cut side, the side's of the rest),
//!   over pairs up throughout: per subject the first observer's suspect-or-down mark; per
//!   pair the first suspect-or-down and the first down mark before the heal (`not_down`
//!   counts pairs never marked down by then); per pair marked before the heal, the heal → its
//!   last `alive` mark, when the pair ends alive (`not_remerged` otherwise).

use serde::Serialize;

use crate::engine::Simulation;
use crate::observe::Mark;
use crate::scenario::{Action, Target};
use crate::shared::{Dist, round3};
use shoal_gossip::MemberStatus;

/// A histogram of milliseconds, for distributions with too many samples to keep (one per
/// pair at 10,000 nodes); its [`Dist`] picks the same samples as [`Dist::of`].
#[derive(Debug, Clone, Default)]
pub struct Hist {
    counts: Vec<u64>,
    count: u64,
    sum: u128,
}

impl Hist {
    /// Adds one sample.
    pub fn add(&mut self, ms: u64) {
        let k = ms as usize;
        if k >= self.counts.len() {
            self.counts.resize(k + 1, 0);
        }
        self.counts[k] += 1;
        self.count += 1;
        self.sum += u128::from(ms);
    }

    /// The 0, 1, …, 100 % quantiles (empty without samples).
    #[must_use]
    pub fn quantiles(&self) -> Vec<u64> {
        if self.count == 0 {
            return Vec::new();
        }
        let mut out = Vec::with_capacity(101);
        let (mut seen, mut ms) = (0, 0);
        for q in 0..=100u64 {
            let rank = ((self.count - 1) as f64 * q as f64 / 100.0).round() as u64;
            while seen + self.counts[ms] <= rank {
                seen += self.counts[ms];
                ms += 1;
            }
            out.push(ms as u64);
        }
        out
    }

    /// The summary, rounded as [`Dist::of`] rounds.
    #[must_use]
    pub fn dist(&self) -> Dist {
        if self.count == 0 {
            return Dist::default();
        }
        let rank = |q: f64| ((self.count - 1) as f64 * q).round() as u64;
        let pick = |r: u64| {
            let mut seen = 0;
            for (ms, &c) in self.counts.iter().enumerate() {
                seen += c;
                if seen > r {
                    return ms as u64;
                }
            }
            self.counts.len() as u64 - 1
        };
        Dist {
            count: self.count as usize,
            min: pick(0),
            p50: pick(rank(0.5)),
            p90: pick(rank(0.9)),
            p99: pick(rank(0.99)),
            max: pick(self.count - 1),
            mean: round3(self.sum as f64 / self.count as f64),
        }
    }
}

/// Every figure of one run.
#[derive(Debug, Clone, Serialize)]
pub struct Figures {
    /// Node count.
    pub nodes: usize,
    /// Joins at the start.
    pub join: JoinFigures,
    /// Crashes.
    pub crash: CrashFigures,
    /// Partitions, in script order.
    pub partitions: Vec<PartitionFigures>,
    /// First sample after the last fault where every view matched the truth.
    pub converged_at_ms: Option<u64>,
}

/// Joins at the start of the run.
#[derive(Debug, Clone, Serialize)]
pub struct JoinFigures {
    /// The later start → the observer's first alive mark, per pair.
    pub pair_ms: Dist,
    /// Pairs with no alive mark before the first fault.
    pub missing: u64,
}

/// Crashes.
#[derive(Debug, Clone, Serialize)]
pub struct CrashFigures {
    /// Crashes executed.
    pub crashes: usize,
    /// Crash → first suspicion, per crash.
    pub first_suspect_ms: Dist,
    /// Crash → first down mark, per crash.
    pub first_down_ms: Dist,
    /// Crash → each observer's first suspect-or-down mark, per pair.
    pub observer_suspect_ms: Dist,
    /// Crash → each observer's down mark, per pair.
    pub observer_down_ms: Dist,
    /// First suspicion → the last observer up throughout has it suspect or down, per crash.
    pub dissemination_ms: Dist,
    /// Crashes some observer up throughout never marked.
    pub incomplete: usize,
}

/// One partition and its heal.
#[derive(Debug, Clone, Serialize)]
pub struct PartitionFigures {
    /// When it started.
    pub at_ms: u64,
    /// When it was healed, if it was.
    pub heal_ms: Option<u64>,
    /// Nodes on the cut side.
    pub side: usize,
    /// Nodes on the other side.
    pub rest: usize,
    /// The rest's views of the cut side.
    pub rest_sees_side: CutFigures,
    /// The cut side's views of the rest.
    pub side_sees_rest: CutFigures,
}

/// One direction of a partition.
#[derive(Debug, Clone, Serialize)]
pub struct CutFigures {
    /// (observer, subject) pairs up throughout.
    pub pairs: u64,
    /// Partition → the first observer's suspect-or-down mark, per subject.
    pub first_suspect_ms: Dist,
    /// Partition → the observer's first suspect-or-down mark, per pair.
    pub observer_suspect_ms: Dist,
    /// Partition → the observer's first down mark, per pair marked before the heal.
    pub observer_down_ms: Dist,
    /// Pairs not marked down before the heal.
    pub not_down: u64,
    /// Heal → the observer's last alive mark, per pair marked before the heal.
    pub remerge_ms: Dist,
    /// Pairs marked before the heal that do not end alive.
    pub not_remerged: u64,
}

/// The delays the membership model draws from, as measured: quantile tables (0, 1, …, 100 %)
/// in milliseconds.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct WaveDelays {
    /// Observers that could see the change, at the calibration's size.
    pub observers: u64,
    /// Subjects measured.
    pub subjects: u64,
    /// Mean fault → the subject's first suspicion.
    pub first_suspect_mean_ms: f64,
    /// Fault → the subject's first suspicion, per subject.
    #[serde(default)]
    pub first_suspect_ms: Vec<u64>,
    /// Per pair, the subject's first suspicion → this observer's first suspect-or-down mark.
    pub spread_ms: Vec<u64>,
    /// Per pair, the observer's suspect-or-down mark → its down mark.
    pub down_after_ms: Vec<u64>,
    /// Per pair marked before a heal, the heal → its last alive mark (empty for crashes).
    pub remerge_ms: Vec<u64>,
}

/// Accumulates one kind of change (a crash, one direction of a partition) subject by subject.
#[derive(Debug, Default)]
pub struct WaveAcc {
    observers: u64,
    subjects: u64,
    pairs: u64,
    first_suspect: Hist,
    first_down: Hist,
    suspect: Hist,
    down: Hist,
    not_down: u64,
    remerge: Hist,
    not_remerged: u64,
    spread: Hist,
    down_after: Hist,
    dissemination: Hist,
    incomplete: usize,
}

/// One observer's marks of one subject, in ms since the fault: first suspect-or-down, first
/// down (before the heal, for a partition), and for a partition the heal → the last alive mark
/// (`None` if the pair does not end alive). `witness`: up throughout.
#[derive(Debug, Clone, Copy, Default)]
pub struct PairMarks {
    /// First suspect-or-down mark.
    pub suspect: Option<u64>,
    /// First down mark.
    pub down: Option<u64>,
    /// Heal → last alive mark.
    pub remerge: Option<u64>,
    /// Whether the observer counts for the dissemination (up throughout).
    pub witness: bool,
}

impl WaveAcc {
    /// One subject and every observer's marks of it. `first_down` is the first down mark by
    /// anyone (ms since the fault).
    pub fn subject(&mut self, first_down: Option<u64>, pairs: &[PairMarks]) {
        let first = pairs.iter().filter_map(|p| p.suspect).min();
        let mut last = Some(0);
        for p in pairs {
            self.pair(first, *p);
            if p.witness {
                last = last.and_then(|l: u64| p.suspect.map(|s| l.max(s)));
            }
        }
        self.observers = self.observers.max(pairs.len() as u64);
        self.summary(first, first_down, last);
    }

    /// One pair of a subject whose first suspicion (by anyone) was at `first`.
    pub fn pair(&mut self, first: Option<u64>, p: PairMarks) {
        self.pairs += 1;
        if let Some(s) = p.suspect {
            self.suspect.add(s);
            self.spread.add(s - first.unwrap_or(s).min(s));
            match p.remerge {
                Some(r) => self.remerge.add(r),
                None => self.not_remerged += 1,
            }
        }
        match (p.suspect, p.down) {
            (Some(s), Some(d)) => {
                self.down.add(d);
                self.down_after.add(d.saturating_sub(s));
            }
            (None, Some(d)) => self.down.add(d),
            _ => self.not_down += 1,
        }
    }

    /// One subject, once its pairs are in: its first suspicion and first down mark, and the
    /// last witness's suspect-or-down mark (`None`: a witness never marked it).
    pub fn summary(&mut self, first: Option<u64>, first_down: Option<u64>, last: Option<u64>) {
        self.subjects += 1;
        if let Some(f) = first {
            self.first_suspect.add(f);
        }
        if let Some(d) = first_down {
            self.first_down.add(d);
        }
        match (last, first) {
            (Some(l), Some(f)) => self.dissemination.add(l.saturating_sub(f)),
            (None, _) => self.incomplete += 1,
            _ => {}
        }
    }

    /// Observers a subject could be seen by (the largest count met).
    pub fn observers(&mut self, count: usize) {
        self.observers = self.observers.max(count as u64);
    }

    /// The figures of crashes.
    #[must_use]
    pub fn crash(&self) -> CrashFigures {
        CrashFigures {
            crashes: self.subjects as usize,
            first_suspect_ms: self.first_suspect.dist(),
            first_down_ms: self.first_down.dist(),
            observer_suspect_ms: self.suspect.dist(),
            observer_down_ms: self.down.dist(),
            dissemination_ms: self.dissemination.dist(),
            incomplete: self.incomplete,
        }
    }

    /// The figures of one direction of a partition.
    #[must_use]
    pub fn cut(&self) -> CutFigures {
        CutFigures {
            pairs: self.pairs,
            first_suspect_ms: self.first_suspect.dist(),
            observer_suspect_ms: self.suspect.dist(),
            observer_down_ms: self.down.dist(),
            not_down: self.not_down,
            remerge_ms: self.remerge.dist(),
            not_remerged: self.not_remerged,
        }
    }

    /// The delays measured, for the model.
    #[must_use]
    pub fn delays(&self) -> WaveDelays {
        WaveDelays {
            observers: self.observers,
            subjects: self.subjects,
            first_suspect_mean_ms: self.first_suspect.dist().mean,
            first_suspect_ms: self.first_suspect.quantiles(),
            spread_ms: self.spread.quantiles(),
            down_after_ms: self.down_after.quantiles(),
            remerge_ms: self.remerge.quantiles(),
        }
    }
}

/// The partitions of a plan whose side is known before the run (`nodes` or `fraction`, or a
/// rack): `(at_ms, heal_ms, side)`. Drawn sides (`random`) are left out.
#[must_use]
pub fn partitions(
    actions: &[(u64, Action)],
    rack_of: &dyn Fn(usize) -> String,
    n: usize,
) -> Vec<(u64, Option<u64>, Vec<usize>)> {
    let mut out = Vec::new();
    for (k, (at, action)) in actions.iter().enumerate() {
        let Action::Partition { id, side, .. } = action else {
            continue;
        };
        let side: Vec<usize> = match side {
            Target::Nodes(v) => v.iter().copied().filter(|&i| i < n).collect(),
            Target::Rack(r) => (0..n).filter(|&i| &rack_of(i) == r).collect(),
            Target::Random(_) => continue,
        };
        let heal = actions[k + 1..].iter().find_map(|(t, a)| match a {
            Action::Heal => Some(*t),
            Action::Unpartition { id: other } if other == id => Some(*t),
            _ => None,
        });
        out.push((*at, heal, side));
    }
    out
}

/// What the membership model is calibrated with: the delays one full simulation measured.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Calibration {
    /// Node count of the calibration run.
    pub nodes: usize,
    /// Its probe period.
    pub probe_period_ms: u64,
    /// Quantiles of the join delay per pair (the later start → the first alive mark).
    pub join_ms: Vec<u64>,
    /// Crashes.
    pub crash: WaveDelays,
    /// The larger side's views of the smaller side of the first partition.
    pub larger_sees_smaller: Option<WaveDelays>,
    /// The smaller side's views of the larger side.
    pub smaller_sees_larger: Option<WaveDelays>,
}

/// The figures of a finished full simulation that kept its marks
/// ([`crate::observe::Observer::keep_marks`]), and the delays it measured.
#[must_use]
pub fn from_simulation(sim: &Simulation) -> (Figures, Calibration) {
    let n = sim.nodes.len();
    let marks = sim.observer.marks.as_deref().unwrap_or(&[]);
    let (first_start, last_start) = starts(sim);
    let first_fault = sim.plan.actions.first().map_or(u64::MAX, |(t, _)| *t);
    let up_throughout = |i: usize, at: u64| last_start[i].is_some_and(|s| s <= at);
    let (join, join_hist) = join(n, marks, &first_start, first_fault);
    let crash = crash(sim, &up_throughout);
    let cuts: Vec<(PartitionFigures, WaveAcc, WaveAcc)> =
        partitions(&sim.plan.actions, &|i| sim.scenario.rack_of(i), n)
            .into_iter()
            .map(|(at, heal, side)| partition(n, marks, at, heal, &side, &up_throughout))
            .collect();
    let larger_first = |c: &(PartitionFigures, WaveAcc, WaveAcc)| c.0.rest >= c.0.side;
    let calibration = Calibration {
        nodes: n,
        probe_period_ms: sim.config().probe_period.as_millis() as u64,
        join_ms: join_hist.quantiles(),
        crash: crash.delays(),
        larger_sees_smaller: cuts.first().map(|c| {
            if larger_first(c) {
                c.1.delays()
            } else {
                c.2.delays()
            }
        }),
        smaller_sees_larger: cuts.first().map(|c| {
            if larger_first(c) {
                c.2.delays()
            } else {
                c.1.delays()
            }
        }),
    };
    let figures = Figures {
        nodes: n,
        join,
        crash: crash.crash(),
        partitions: cuts.into_iter().map(|c| c.0).collect(),
        converged_at_ms: sim.converged_at_ms,
    };
    (figures, calibration)
}

/// Each node's first start and its last start if it is up at the end.
fn starts(sim: &Simulation) -> (Vec<Option<u64>>, Vec<Option<u64>>) {
    let n = sim.nodes.len();
    let (mut first, mut last) = (vec![None; n], vec![None; n]);
    for &(t, i, up) in &sim.life_log {
        if up {
            first[i].get_or_insert(t);
        }
        last[i] = up.then_some(t);
    }
    for (i, node) in sim.nodes.iter().enumerate() {
        if !node.life.is_up() {
            last[i] = None;
        }
    }
    (first, last)
}

fn join(n: usize, marks: &[Mark], start: &[Option<u64>], first_fault: u64) -> (JoinFigures, Hist) {
    let mut seen = vec![false; n * n];
    let mut hist = Hist::default();
    for m in marks.iter().take_while(|m| m.t_ms < first_fault) {
        let (i, j) = (m.observer as usize, m.subject as usize);
        if m.to != MemberStatus::Alive || i == j || seen[i * n + j] {
            continue;
        }
        seen[i * n + j] = true;
        if let (Some(a), Some(b)) = (start[i], start[j]) {
            hist.add(m.t_ms.saturating_sub(a.max(b)));
        }
    }
    let started: Vec<usize> = (0..n)
        .filter(|&i| start[i].is_some_and(|s| s < first_fault))
        .collect();
    let mut missing = 0;
    for &i in &started {
        for &j in &started {
            if i != j && !seen[i * n + j] {
                missing += 1;
            }
        }
    }
    let figures = JoinFigures {
        pair_ms: hist.dist(),
        missing,
    };
    (figures, hist)
}

fn crash(sim: &Simulation, up_throughout: &dyn Fn(usize, u64) -> bool) -> WaveAcc {
    let mut acc = WaveAcc::default();
    let n = sim.nodes.len();
    for c in &sim.observer.crashes {
        let at = c.at_ms;
        let pairs: Vec<PairMarks> = (0..n)
            .filter(|&i| i != c.node)
            .map(|i| PairMarks {
                suspect: c.seen_by.get(&i).map(|t| t - at),
                down: c.down_by.get(&i).map(|t| t - at),
                remerge: None,
                witness: up_throughout(i, at),
            })
            .filter(|p| p.witness || p.suspect.is_some() || p.down.is_some())
            .collect();
        acc.subject(c.first_down_ms.map(|t| t - at), &pairs);
    }
    acc
}

const NONE: u64 = u64::MAX;

fn partition(
    n: usize,
    marks: &[Mark],
    at: u64,
    heal: Option<u64>,
    side: &[usize],
    up_throughout: &dyn Fn(usize, u64) -> bool,
) -> (PartitionFigures, WaveAcc, WaveAcc) {
    let heal_or_end = heal.unwrap_or(u64::MAX);
    let mut in_side = vec![false; n];
    side.iter().for_each(|&i| in_side[i] = true);
    // Per pair: first suspect-or-down and first down in [at, heal), last alive at or after
    // the heal, last status.
    let (mut sus, mut down, mut alive) = (vec![NONE; n * n], vec![NONE; n * n], vec![NONE; n * n]);
    let mut last = vec![None; n * n];
    for m in marks.iter().filter(|m| m.t_ms >= at) {
        let k = m.observer as usize * n + m.subject as usize;
        last[k] = Some(m.to);
        let before_heal = m.t_ms < heal_or_end;
        match m.to {
            MemberStatus::Suspect | MemberStatus::Down if before_heal => {
                sus[k] = sus[k].min(m.t_ms - at);
                if m.to == MemberStatus::Down {
                    down[k] = down[k].min(m.t_ms - at);
                }
            }
            MemberStatus::Alive if !before_heal => alive[k] = m.t_ms - heal_or_end,
            _ => {}
        }
    }
    let some = |v: u64| (v != NONE).then_some(v);
    let direction = |observer_in_side: bool| {
        let mut acc = WaveAcc::default();
        let up = |i: usize| up_throughout(i, at);
        for j in (0..n).filter(|&j| in_side[j] != observer_in_side && up(j)) {
            let pairs: Vec<PairMarks> = (0..n)
                .filter(|&i| in_side[i] == observer_in_side && up(i))
                .map(|i| {
                    let k = i * n + j;
                    let ends_alive = last[k] == Some(MemberStatus::Alive);
                    PairMarks {
                        suspect: some(sus[k]),
                        down: some(down[k]),
                        remerge: some(alive[k]).filter(|_| ends_alive),
                        witness: true,
                    }
                })
                .collect();
            let first_down = pairs.iter().filter_map(|p| p.down).min();
            acc.subject(first_down, &pairs);
        }
        acc
    };
    let (rest, side_acc) = (direction(false), direction(true));
    let figures = PartitionFigures {
        at_ms: at,
        heal_ms: heal,
        side: side.len(),
        rest: n - side.len(),
        rest_sees_side: rest.cut(),
        side_sees_rest: side_acc.cut(),
    };
    (figures, rest, side_acc)
}
