//! The membership model: what the views of N nodes would hold, without running SWIM.
//!
//! For sizes the full simulation cannot reach (10,000 nodes: `docs/simulation-scale.md`), the
//! model replaces the N membership cores by the ground truth of the fault script and draws,
//! per (observer, member) pair, when the observer's view changes: a crash or a partition
//! becomes a first suspicion per member, a spread to each other observer, a down mark; a heal,
//! a re-merge; a start, a join. The delays come from tables one full simulation measured
//! (`shoal simulate FILE --figures` writes them; `model/calibration.json` is the one built
//! in), scaled as `delays.rs` says.
//!
//! What it promises: the same scenario file as the full simulation (crash, crash-restart,
//! restart, partition, unpartition and heal faults; anything else is refused with its
//! name); the same seed gives the same report, byte for byte; the figures of
//! `crate::figures`, measured by the same definitions as on the full simulation, and its
//! members-alive time series. What it does not do: exercise SWIM, foca or any Shoal core
//! (no datagrams, no ads, no checkers), model a node started during a partition, loss or
//! pauses beyond what the calibration run had, or a second partition while one is in force.
//!
//! How to drive it: [`run`] with a scenario and a seed (`shoal simulate FILE --model`), or
//! [`run_calibrated`] with another calibration. Views are one dense array of 16-byte entries
//! (`views.rs`); every fault visits the pairs it touches, observer by observer.

mod delays;
mod drawing;
mod episodes;
mod views;

use std::collections::BTreeMap;

use anyhow::Context;
use rand::{RngExt, SeedableRng, rngs::StdRng};
use serde::Serialize;

use crate::figures::{
    Calibration, Figures, Hist, JoinFigures, PairMarks, PartitionFigures, WaveAcc,
};
use crate::observe::Sample;
use crate::scenario::{Action, Scenario, Target};
use crate::shared::{derive_seed, round3};
use delays::{Delays, Kind};
use drawing::Drawing;
use episodes::{cut_direction, next_up, wave};
use views::{NEVER, Status, Views};

/// The calibrations built in: membership-1000 at 1,000 and at 2,000 nodes, seed 1, measured
/// by `--figures`.
const CALIBRATIONS: [&str; 2] = [
    include_str!("model/calibration-1000.json"),
    include_str!("model/calibration-2000.json"),
];

/// What one model run produced.
#[derive(Debug, Clone, Serialize)]
pub struct ModelReport {
    /// Scenario name.
    pub scenario: String,
    /// The seed.
    pub seed: u64,
    /// Node count.
    pub nodes: usize,
    /// Simulated time.
    pub duration_ms: u64,
    /// Command that replays this run.
    pub replay: String,
    /// Node counts of the full simulations the delays were measured on.
    pub calibrated_on_nodes: Vec<usize>,
    /// Bytes of view per (observer, member) pair.
    pub pair_bytes: usize,
    /// When the last fault settled.
    pub last_fault_ms: u64,
    /// The figures, as `--figures` measures them on the full simulation.
    pub figures: Figures,
    /// The members-alive time series.
    pub timeline: Vec<Sample>,
}

/// Runs the model on `scenario` with the built-in calibration.
pub fn run(scenario: &Scenario, seed: u64, replay: String) -> anyhow::Result<ModelReport> {
    let cals = CALIBRATIONS
        .iter()
        .map(|text| serde_json::from_str(text).context("reading a built-in calibration"))
        .collect::<anyhow::Result<Vec<Calibration>>>()?;
    run_calibrated(scenario, seed, replay, &cals)
}

/// Runs the model on `scenario` with the delays of `cals` (one or more sizes).
pub fn run_calibrated(
    scenario: &Scenario,
    seed: u64,
    replay: String,
    cals: &[Calibration],
) -> anyhow::Result<ModelReport> {
    let plan = scenario.plan()?;
    for (_, action) in &plan.actions {
        supported(action)?;
    }
    // The ground truth first (who is up when, drawn as the full simulation draws it), so that
    // "up throughout" is known when the views are drawn.
    let mut truth = World::new(scenario, seed, None);
    truth.play(&plan.actions)?;
    let last_start = truth.last_starts();
    let delays = Delays::new(cals, seed, scenario.nodes);
    let mut world = World::new(scenario, seed, Some((delays, last_start)));
    world.play(&plan.actions)?;
    Ok(world.report(scenario, plan.last_fault_ms, replay))
}

fn supported(action: &Action) -> anyhow::Result<()> {
    let name = match action {
        Action::Crash { .. }
        | Action::Restart { .. }
        | Action::Unpartition { .. }
        | Action::Heal => return Ok(()),
        Action::Partition { one_way: false, .. } => return Ok(()),
        Action::Partition { one_way: true, .. } => "one-way partition",
        Action::Pause { .. } => "pause",
        Action::Slow { .. } => "slow",
        Action::Leave { .. } => "leave",
        Action::Network(_) => "network",
        Action::Hang { .. } => "hang",
        Action::Node { .. } => "node command",
    };
    anyhow::bail!("the membership model does not model the `{name}` fault")
}

/// What happens at one instant, in the order the full simulation's queue has it.
#[derive(Debug, Clone)]
enum Ev {
    Start(usize),
    Act(Action),
    Restart(Vec<usize>),
}

/// A partition in force.
#[derive(Debug)]
struct Cut {
    episode: u64,
    in_side: Vec<bool>,
    /// The table the rest's views of the side draw from, and the side's of the rest.
    kinds: (Kind, Kind),
}

#[derive(Debug)]
struct World {
    seed: u64,
    n: usize,
    racks: Vec<String>,
    duration_ms: u64,
    first_fault_ms: u64,
    stagger_ms: u64,
    now: u64,
    agenda: BTreeMap<(u64, u64), Ev>,
    seq: u64,
    fault_rng: StdRng,
    up: Vec<bool>,
    start: Vec<Option<u64>>,
    generation: Vec<u32>,
    life_log: Vec<(u64, usize, bool)>,
    heal_of: BTreeMap<u64, u64>,
    cut: Option<Cut>,
    episode: u64,
    draw: Option<Drawing>,
}

impl World {
    fn new(scenario: &Scenario, seed: u64, draw: Option<(Delays, Vec<Option<u64>>)>) -> Self {
        let n = scenario.nodes;
        let duration_ms = (scenario.duration_s * 1000.0).round() as u64;
        let draw = draw.map(|(delays, last_start)| Drawing {
            delays,
            views: Views::new(n, scenario.checks.sample_ms, duration_ms),
            last_start,
            join: Hist::default(),
            join_missing: 0,
            crash: WaveAcc::default(),
            partitions: Vec::new(),
        });
        let mut world = Self {
            seed,
            n,
            racks: (0..n).map(|i| scenario.rack_of(i)).collect(),
            duration_ms,
            first_fault_ms: u64::MAX,
            stagger_ms: scenario.start.stagger_ms,
            now: 0,
            agenda: BTreeMap::new(),
            seq: 0,
            fault_rng: StdRng::seed_from_u64(derive_seed(seed, 3, 0, 0)),
            up: vec![false; n],
            start: vec![None; n],
            generation: vec![0; n],
            life_log: Vec::new(),
            heal_of: BTreeMap::new(),
            cut: None,
            episode: 0,
            draw,
        };
        // The start times, drawn as `Simulation::new` draws them.
        let mut start_rng = StdRng::seed_from_u64(derive_seed(seed, 1, 0, 0));
        let stagger = scenario.start.stagger_ms.max(1);
        for i in 0..n {
            let at = if i == 0 {
                0
            } else {
                start_rng.random_range(0..stagger)
            };
            world.push(at, Ev::Start(i));
        }
        world
    }

    fn push(&mut self, at: u64, ev: Ev) {
        self.agenda.insert((at, self.seq), ev);
        self.seq += 1;
    }

    fn play(&mut self, actions: &[(u64, Action)]) -> anyhow::Result<()> {
        self.first_fault_ms = actions.first().map_or(u64::MAX, |(t, _)| *t);
        for (k, (at, action)) in actions.iter().enumerate() {
            if let Action::Partition { id, .. } = action {
                let heal = actions[k + 1..].iter().find_map(|(t, a)| match a {
                    Action::Heal => Some(*t),
                    Action::Unpartition { id: other } if other == id => Some(*t),
                    _ => None,
                });
                self.heal_of.insert(*at, heal.unwrap_or(u64::MAX));
            }
            self.push(*at, Ev::Act(action.clone()));
        }
        // When every node starts before the first fault (the usual script), the joins are
        // drawn in one pass over the views, row by row, instead of start by start.
        let last_start = self
            .agenda
            .iter()
            .filter(|(_, ev)| matches!(ev, Ev::Start(_)));
        let last_start = last_start.map(|((t, _), _)| *t).max().unwrap_or(0);
        let mut bulk = last_start < self.first_fault_ms;
        while let Some(((at, _), ev)) = self.agenda.pop_first() {
            if at > self.duration_ms {
                break;
            }
            if bulk && !matches!(ev, Ev::Start(_)) {
                self.join_all();
                bulk = false;
            }
            self.now = at;
            match ev {
                Ev::Start(i) if bulk => self.start_truth(i),
                Ev::Start(i) => self.start_node(i),
                Ev::Restart(nodes) => nodes.into_iter().for_each(|i| self.restart(i)),
                Ev::Act(action) => self.act(action)?,
            }
        }
        if bulk {
            self.join_all();
        }
        Ok(())
    }

    fn act(&mut self, action: Action) -> anyhow::Result<()> {
        match action {
            Action::Crash {
                target,
                restart_after_ms,
            } => {
                let nodes = self.resolve(&target);
                nodes.iter().for_each(|&i| self.crash(i));
                if let Some(after) = restart_after_ms {
                    self.push(self.now + after, Ev::Restart(nodes));
                }
            }
            Action::Restart { target } => {
                let nodes = self.resolve(&target);
                nodes.into_iter().for_each(|i| self.restart(i));
            }
            Action::Partition { side, .. } => {
                anyhow::ensure!(
                    self.cut.is_none(),
                    "the membership model does not model two partitions at once"
                );
                let side = self.resolve(&side);
                self.partition(&side);
            }
            Action::Unpartition { .. } | Action::Heal => self.heal(),
            other => supported(&other)?,
        }
        Ok(())
    }

    /// The targets, drawn as `Simulation::resolve` draws them.
    fn resolve(&mut self, target: &Target) -> Vec<usize> {
        match target {
            Target::Nodes(nodes) => nodes.iter().copied().filter(|&i| i < self.n).collect(),
            Target::Rack(rack) => (0..self.n).filter(|&i| &self.racks[i] == rack).collect(),
            Target::Random(k) => {
                let mut up: Vec<usize> = (0..self.n).filter(|&i| self.up[i]).collect();
                let k = (*k).min(up.len());
                for slot in 0..k {
                    let pick = self.fault_rng.random_range(slot..up.len());
                    up.swap(slot, pick);
                }
                up.truncate(k);
                up
            }
        }
    }

    fn last_starts(&self) -> Vec<Option<u64>> {
        let mut last = vec![None; self.n];
        for &(t, i, up) in &self.life_log {
            last[i] = up.then_some(t);
        }
        last
    }

    // ---- the faults ----------------------------------------------------------------------

    /// Node `i` starts for the first time: it and every node up learn of each other.
    fn start_node(&mut self, i: usize) {
        self.start_truth(i);
        self.joined(i, false);
    }

    fn start_truth(&mut self, i: usize) {
        self.up[i] = true;
        self.generation[i] = 1;
        self.start[i] = Some(self.now);
        self.life_log.push((self.now, i, true));
    }

    /// Every node started, before any fault: every pair's join, drawn row by row.
    fn join_all(&mut self) {
        let (n, first_fault) = (self.n, self.first_fault_ms);
        let episode = self.next_episode();
        let Some(d) = self.draw.as_mut() else {
            return;
        };
        let t = |ms: u64| ms.min(u64::from(NEVER - 1)) as u32;
        for i in (0..n).filter(|&i| self.up[i]) {
            let si = self.start[i].unwrap_or(0);
            d.views.begin(i, i, t(si), 1, &[(t(si), Status::Alive)]);
            for j in (0..n).filter(|&j| j != i && self.up[j]) {
                let later = si.max(self.start[j].unwrap_or(0));
                let at = later + d.delays.join(episode, (i, j));
                d.views.begin(i, j, t(later), 1, &[(t(at), Status::Alive)]);
                if at < first_fault {
                    d.join.add(at - later);
                } else {
                    d.join_missing += 1;
                }
            }
        }
    }

    /// Node `i` came up at `now` (a start or a restart): views of it and its own view.
    fn joined(&mut self, i: usize, restart: bool) {
        let (now, n, first_fault) = (self.now, self.n, self.first_fault_ms);
        let episode = self.next_episode();
        let Some(d) = self.draw.as_mut() else {
            return;
        };
        let t = |ms: u64| ms.min(u64::from(NEVER - 1)) as u32;
        let gen_i = self.generation[i];
        for j in 0..n {
            if j == i {
                d.views
                    .begin(i, i, t(now), gen_i, &[(t(now), Status::Alive)]);
                continue;
            }
            if !self.up[j] {
                if restart {
                    d.views.begin(i, j, t(now), 0, &[(t(now), Status::Unknown)]);
                }
                continue;
            }
            for (o, m) in [(i, j), (j, i)] {
                let at = now + d.delays.join(episode, (o, m));
                let generation = self.generation[m];
                let forget = restart && o == i;
                let changes = [(t(now), Status::Unknown), (t(at), Status::Alive)];
                d.views
                    .begin(o, m, t(now), generation, &changes[usize::from(!forget)..]);
                if !restart && at < first_fault {
                    d.join.add(at - now);
                } else if !restart {
                    d.join_missing += 1;
                }
            }
        }
    }

    fn restart(&mut self, i: usize) {
        if self.up[i] {
            return;
        }
        self.up[i] = true;
        self.generation[i] += 1;
        self.life_log.push((self.now, i, true));
        self.joined(i, true);
    }

    fn next_episode(&mut self) -> u64 {
        self.episode += 1;
        self.episode
    }

    /// Node `j` crashes: every observer that knows it suspects it, then marks it down.
    fn crash(&mut self, j: usize) {
        if !self.up[j] {
            return;
        }
        self.up[j] = false;
        self.life_log.push((self.now, j, false));
        let episode = self.next_episode();
        let (now, n) = (self.now, self.n);
        let Some(d) = self.draw.as_mut() else {
            return;
        };
        let knows = |d: &Drawing, i: usize| {
            matches!(
                d.views.pair(i, j).status_at(now as u32),
                Status::Alive | Status::Suspect
            )
        };
        let observers: Vec<usize> = (0..n)
            .filter(|&i| i != j && self.up[i] && knows(d, i))
            .collect();
        // Observers still joining never hear of it alive.
        let joining: Vec<usize> = (0..n)
            .filter(|&i| i != j && self.up[i] && !knows(d, i))
            .collect();
        for i in joining {
            d.views.begin(i, j, now as u32, self.generation[j], &[]);
        }
        let end = next_up(&self.life_log, j, now);
        let marks = wave(
            d,
            Kind::Crash,
            episode,
            j,
            &observers,
            now,
            end,
            self.generation[j],
        );
        let mut pairs: Vec<PairMarks> = Vec::with_capacity(n);
        for i in (0..n).filter(|&i| i != j) {
            let witness = d.up_throughout(i, now);
            let drawn = observers.binary_search(&i).ok().map(|k| marks[k]);
            if witness || drawn.is_some() {
                let (suspect, down) = drawn.unwrap_or((None, None));
                pairs.push(PairMarks {
                    suspect,
                    down,
                    remerge: None,
                    witness,
                });
            }
        }
        let first_down = pairs.iter().filter_map(|p| p.down).min();
        d.crash.subject(first_down, &pairs);
    }

    /// The first `fraction` of the nodes (or the named ones) are cut from the rest.
    fn partition(&mut self, side: &[usize]) {
        let episode = self.next_episode();
        let mut in_side = vec![false; self.n];
        side.iter().for_each(|&i| in_side[i] = true);
        let larger_is_rest = self.n - side.len() >= side.len();
        let kinds = if larger_is_rest {
            (Kind::LargerSeesSmaller, Kind::SmallerSeesLarger)
        } else {
            (Kind::SmallerSeesLarger, Kind::LargerSeesSmaller)
        };
        let heal = self.heal_of.get(&self.now).copied().unwrap_or(u64::MAX);
        let (now, n) = (self.now, self.n);
        if let Some(d) = self.draw.as_mut() {
            let mut accs = (WaveAcc::default(), WaveAcc::default());
            for (observer_in_side, kind) in [(false, kinds.0), (true, kinds.1)] {
                let acc = if observer_in_side {
                    &mut accs.1
                } else {
                    &mut accs.0
                };
                let obs: Vec<usize> = (0..n)
                    .filter(|&i| self.up[i] && in_side[i] == observer_in_side)
                    .collect();
                let members: Vec<usize> = (0..n)
                    .filter(|&j| self.up[j] && in_side[j] != observer_in_side)
                    .collect();
                cut_direction(
                    d,
                    acc,
                    kind,
                    episode,
                    (&obs, &members),
                    now,
                    heal,
                    &self.generation,
                );
            }
            let rest = n - side.len();
            let pf = PartitionFigures {
                at_ms: now,
                heal_ms: (heal != u64::MAX).then_some(heal),
                side: side.len(),
                rest,
                rest_sees_side: accs.0.cut(),
                side_sees_rest: accs.1.cut(),
            };
            d.partitions.push((pf, accs.0, accs.1));
        }
        self.cut = Some(Cut {
            episode,
            in_side,
            kinds,
        });
    }

    /// Every partition is lifted: pairs marked suspect or down (or never joined across the
    /// cut) re-merge, pending marks are taken back.
    fn heal(&mut self) {
        let Some(cut) = self.cut.take() else {
            return;
        };
        let (now, n) = (self.now, self.n);
        let Some(d) = self.draw.as_mut() else {
            return;
        };
        let t = now as u32;
        for i in (0..n).filter(|&i| self.up[i]) {
            let kind = if cut.in_side[i] {
                cut.kinds.1
            } else {
                cut.kinds.0
            };
            for j in (0..n).filter(|&j| self.up[j] && cut.in_side[j] != cut.in_side[i]) {
                let pair = *d.views.pair(i, j);
                match pair.status_at(t) {
                    Status::Suspect | Status::Down | Status::Unknown => {
                        let at = now + d.delays.remerge(kind, cut.episode, (i, j));
                        let at = at.min(u64::from(NEVER - 1)) as u32;
                        d.views
                            .begin(i, j, t, pair.generation, &[(at, Status::Alive)]);
                    }
                    _ => d.views.begin(i, j, t, pair.generation, &[]),
                }
            }
        }
    }

    // ---- the report ----------------------------------------------------------------------

    fn report(self, scenario: &Scenario, last_fault_ms: u64, replay: String) -> ModelReport {
        let timeline = self.timeline(scenario.checks.sample_ms);
        let converged_at_ms = self.converged(scenario.checks.sample_ms, last_fault_ms);
        let d = self.draw.expect("the report is of the drawing pass");
        let figures = Figures {
            nodes: self.n,
            join: JoinFigures {
                pair_ms: d.join.dist(),
                missing: d.join_missing,
            },
            crash: d.crash.crash(),
            partitions: d.partitions.into_iter().map(|p| p.0).collect(),
            converged_at_ms,
        };
        ModelReport {
            scenario: scenario.name.clone(),
            seed: self.seed,
            nodes: self.n,
            duration_ms: self.duration_ms,
            replay,
            calibrated_on_nodes: d.delays.calibrated_on().to_vec(),
            pair_bytes: Views::pair_bytes(),
            last_fault_ms,
            figures,
            timeline,
        }
    }

    fn timeline(&self, sample_ms: u64) -> Vec<Sample> {
        let Some(d) = self.draw.as_ref() else {
            return Vec::new();
        };
        let mut up = vec![false; self.n];
        let mut log = self.life_log.iter().peekable();
        let mut out = Vec::new();
        d.views.replay_counts(|k, alive, suspect| {
            let t = k as u64 * sample_ms;
            while let Some(&&(at, i, is_up)) = log.peek() {
                if at > t {
                    break;
                }
                up[i] = is_up;
                log.next();
            }
            let (mut lo, mut hi, mut sum, mut sus, mut count) = (i64::MAX, 0, 0, 0, 0);
            for i in (0..self.n).filter(|&i| up[i]) {
                lo = lo.min(alive[i]);
                hi = hi.max(alive[i]);
                sum += alive[i];
                sus += suspect[i];
                count += 1;
            }
            out.push(Sample {
                t_ms: t,
                running: count,
                alive_min: if count == 0 { 0 } else { lo as usize },
                alive_mean: if count == 0 {
                    0.0
                } else {
                    round3(sum as f64 / count as f64)
                },
                alive_max: hi as usize,
                suspect_total: sus as usize,
            });
        });
        out
    }

    /// The first sample after the last fault from which every running node's view matches
    /// the truth: running members alive in their generation, the others not alive or suspect.
    fn converged(&self, sample_ms: u64, last_fault_ms: u64) -> Option<u64> {
        let d = self.draw.as_ref()?;
        let end = self.duration_ms.min(u64::from(NEVER - 1)) as u32;
        let mut settled = last_fault_ms.max(self.stagger_ms);
        for i in (0..self.n).filter(|&i| self.up[i]) {
            for j in (0..self.n).filter(|&j| j != i && self.start[j].is_some()) {
                let pair = d.views.pair(i, j);
                let status = pair.status_at(end);
                let ok = if self.up[j] {
                    status == Status::Alive && pair.generation == self.generation[j]
                } else {
                    !matches!(status, Status::Alive | Status::Suspect)
                };
                if !ok {
                    return None;
                }
                if let Some(t) = pair.last_change(end) {
                    settled = settled.max(u64::from(t));
                }
            }
        }
        let at = settled.div_ceil(sample_ms.max(1)) * sample_ms.max(1);
        (at <= self.duration_ms).then_some(at)
    }
}

/// The human summary of a model run.
#[must_use]
pub fn summary(r: &ModelReport) -> String {
    let f = &r.figures;
    let mut s = format!(
        "model {} · seed {} · {} nodes · {:.0} s simulated · delays calibrated on {:?} nodes · {} B per pair\n",
        r.scenario,
        r.seed,
        r.nodes,
        r.duration_ms as f64 / 1000.0,
        r.calibrated_on_nodes,
        r.pair_bytes
    );
    s.push_str(&format!(
        "  join: p50 {} p90 {} max {} ms ({} pairs missing at the first fault)\n",
        f.join.pair_ms.p50, f.join.pair_ms.p90, f.join.pair_ms.max, f.join.missing
    ));
    let c = &f.crash;
    if c.crashes > 0 {
        s.push_str(&format!(
            "  crashes: {}; first suspect p50 {} ms; every observer down p50 {} p90 {} max {} ms; dissemination p50 {} ms\n",
            c.crashes,
            c.first_suspect_ms.p50,
            c.observer_down_ms.p50,
            c.observer_down_ms.p90,
            c.observer_down_ms.max,
            c.dissemination_ms.p50
        ));
    }
    for p in &f.partitions {
        for (who, cut) in [
            ("rest sees side", &p.rest_sees_side),
            ("side sees rest", &p.side_sees_rest),
        ] {
            s.push_str(&format!(
                "  partition at {:.0} s, {}: down p50 {} p90 {} max {} ms ({} not down by the heal); re-merge p50 {} p90 {} max {} ms\n",
                p.at_ms as f64 / 1000.0,
                who,
                cut.observer_down_ms.p50,
                cut.observer_down_ms.p90,
                cut.observer_down_ms.max,
                cut.not_down,
                cut.remerge_ms.p50,
                cut.remerge_ms.p90,
                cut.remerge_ms.max
            ));
        }
    }
    s.push_str(&format!(
        "  views converged {}\n  replay: {}\n",
        f.converged_at_ms.map_or("never".into(), |t| format!(
            "at {:.1} s ({:.1} s after the last fault)",
            t as f64 / 1000.0,
            t.saturating_sub(r.last_fault_ms) as f64 / 1000.0
        )),
        r.replay
    ));
    s
}

#[cfg(test)]
mod tests;
