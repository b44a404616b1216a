//! What the simulator learns by watching the cores: every node's member view (rebuilt from
//! the `MemberEvent`s the production core emits), failure-detection times, and a time series.
//!
//! The view is an `n × n` matrix of small entries indexed by node index, so sampling and the
//! convergence test are plain loops with no hashing and a fixed order.

use std::collections::BTreeMap;

use serde::Serialize;
use shoal_gossip::{MemberEvent, MemberStatus, Millis};

use crate::shared::round3;

/// What observer `i` believes about subject `j`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Seen {
    /// Generation of the identity the status is about.
    pub generation: u64,
    /// Status, if `i` has heard of `j` at all.
    pub status: Option<MemberStatus>,
    /// `(generation, version)` of the newest ad `i` holds for `j`.
    pub ad: (u64, u64),
}

/// One crash (or crash-restart) of one incarnation, and who noticed when.
#[derive(Debug, Clone, Serialize)]
pub struct CrashRecord {
    /// Node index.
    pub node: usize,
    /// Generation that crashed.
    pub generation: u64,
    /// Crash time.
    pub at_ms: u64,
    /// First time any node marked it suspect.
    pub first_suspect_ms: Option<u64>,
    /// First time any node marked it down.
    pub first_down_ms: Option<u64>,
    /// Observer index → time it marked the incarnation down.
    #[serde(skip)]
    pub down_by: BTreeMap<usize, u64>,
    /// Observer index → time it first marked the incarnation suspect or down.
    #[serde(skip)]
    pub seen_by: BTreeMap<usize, u64>,
    /// No other node's view held this generation when it crashed (it renewed its identity
    /// moments before, and the news was lost): to them the crashed node is the older
    /// generation they know, and their marks of that one detect this crash.
    #[serde(skip)]
    pub unheard: bool,
}

/// One status change a core reported: at `t_ms`, `observer`'s view of `subject`'s incarnation
/// `generation` became `to`. Kept only when [`Observer::keep_marks`] was called (the
/// membership figures of `crate::figures` read them); a run that does not ask keeps none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    /// Virtual time.
    pub t_ms: u64,
    /// Who changed its view.
    pub observer: u32,
    /// About whom.
    pub subject: u32,
    /// The subject's incarnation.
    pub generation: u32,
    /// The new status.
    pub to: MemberStatus,
}

/// One sample of the members-alive time series.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// Virtual time.
    pub t_ms: u64,
    /// Nodes actually running (ground truth).
    pub running: usize,
    /// Fewest members a running node sees alive (itself included).
    pub alive_min: usize,
    /// Mean members seen alive.
    pub alive_mean: f64,
    /// Most members a running node sees alive.
    pub alive_max: usize,
    /// Members seen suspect, summed over all running nodes.
    pub suspect_total: usize,
}

/// The observer state.
#[derive(Debug)]
pub struct Observer {
    n: usize,
    view: Vec<Seen>,
    alive: Vec<usize>,
    suspect: Vec<usize>,
    /// Crashes in order.
    pub crashes: Vec<CrashRecord>,
    open: BTreeMap<(usize, u64), usize>,
    /// Down marks of an incarnation that was running (not crashed) at the time.
    pub down_marks_of_running: u64,
    /// Of those, marks made while no partition, pause, slow-down or loss could explain them.
    pub down_marks_unexplained: u64,
    /// Members let go of (`MemberEvent::Reaped`), over every observer.
    pub reaps: u64,
    /// The time series.
    pub samples: Vec<Sample>,
    /// Every status change in order, when asked for.
    pub marks: Option<Vec<Mark>>,
}

impl Observer {
    /// An observer of `n` nodes that have not started.
    #[must_use]
    pub fn new(n: usize) -> Self {
        Self {
            n,
            view: vec![Seen::default(); n * n],
            alive: vec![0; n],
            suspect: vec![0; n],
            crashes: Vec::new(),
            open: BTreeMap::new(),
            down_marks_of_running: 0,
            down_marks_unexplained: 0,
            reaps: 0,
            samples: Vec::new(),
            marks: None,
        }
    }

    /// Keeps every status change from now on (in [`Observer::marks`]).
    pub fn keep_marks(&mut self) {
        self.marks.get_or_insert_with(Vec::new);
    }

    /// What `i` believes about `j`.
    #[must_use]
    pub fn seen(&self, i: usize, j: usize) -> Seen {
        self.view[i * self.n + j]
    }

    /// Members `i` sees alive.
    #[must_use]
    pub fn alive_count(&self, i: usize) -> usize {
        self.alive[i]
    }

    /// Node `i` (re)started as `generation` with a fresh view holding only itself.
    pub fn started(&mut self, i: usize, generation: u64, ad: (u64, u64)) {
        for j in 0..self.n {
            self.view[i * self.n + j] = Seen::default();
        }
        self.view[i * self.n + i] = Seen {
            generation,
            status: Some(MemberStatus::Alive),
            ad,
        };
        self.alive[i] = 1;
        self.suspect[i] = 0;
    }

    /// Node `i`'s own ad changed.
    pub fn own_ad(&mut self, i: usize, ad: (u64, u64)) {
        self.view[i * self.n + i].ad = ad;
    }

    /// Incarnation `generation` of `node` crashed at `now`.
    pub fn crashed(&mut self, node: usize, generation: u64, now: Millis) {
        let unheard = (0..self.n)
            .filter(|&i| i != node)
            .all(|i| self.view[i * self.n + node].generation < generation);
        self.open.insert((node, generation), self.crashes.len());
        self.crashes.push(CrashRecord {
            node,
            generation,
            at_ms: now.0,
            first_suspect_ms: None,
            first_down_ms: None,
            down_by: BTreeMap::new(),
            seen_by: BTreeMap::new(),
            unheard,
        });
    }

    /// Records one event emitted by observer `i`'s core. `subject` maps the event's identity
    /// to a node index; `running_gen` says which generation of that node is running now;
    /// `explained` says whether a fault in force could explain a false suspicion.
    pub fn event(
        &mut self,
        i: usize,
        now: Millis,
        event: &MemberEvent,
        subject: Option<usize>,
        running_gen: Option<u64>,
        explained: bool,
    ) {
        let Some(j) = subject.filter(|j| *j < self.n) else {
            return;
        };
        match event {
            MemberEvent::Status { id, to, .. } => {
                self.status(i, j, id.generation, *to);
                if let Some(marks) = self.marks.as_mut() {
                    marks.push(Mark {
                        t_ms: now.0,
                        observer: i as u32,
                        subject: j as u32,
                        generation: id.generation as u32,
                        to: *to,
                    });
                }
                self.detection(i, j, id.generation, *to, now);
                if *to == MemberStatus::Down && running_gen == Some(id.generation) {
                    self.down_marks_of_running += 1;
                    if !explained {
                        self.down_marks_unexplained += 1;
                    }
                }
            }
            MemberEvent::Resources { ad } => {
                self.view[i * self.n + j].ad = ad.key();
            }
            // The view (and so this observer) keeps the record; only the quorum drops it.
            MemberEvent::Forgotten { .. } => {}
            // Only a left or forgotten-down member is let go of: no alive or suspect count
            // changes, the record and the ad go.
            MemberEvent::Reaped { .. } => {
                self.reaps += 1;
                let seen = &mut self.view[i * self.n + j];
                seen.status = None;
                seen.ad = (0, 0);
            }
        }
    }

    fn status(&mut self, i: usize, j: usize, generation: u64, to: MemberStatus) {
        let slot = &mut self.view[i * self.n + j];
        let before = slot.status;
        slot.generation = generation;
        slot.status = Some(to);
        if before == Some(MemberStatus::Alive) {
            self.alive[i] -= 1;
        }
        if before == Some(MemberStatus::Suspect) {
            self.suspect[i] -= 1;
        }
        if to == MemberStatus::Alive {
            self.alive[i] += 1;
        }
        if to == MemberStatus::Suspect {
            self.suspect[i] += 1;
        }
    }

    fn detection(&mut self, i: usize, j: usize, generation: u64, to: MemberStatus, now: Millis) {
        let k = match self.open.get(&(j, generation)) {
            Some(&k) => k,
            // A mark of an older generation, after a crash of a generation nobody else had
            // heard of: that older one is the crashed node to the others (sweep seed 4662 of
            // `loss-20pct`: n4 renewed 0.7 s before its crash, under 20 % loss).
            None => match self.open.range((j, generation + 1)..=(j, u64::MAX)).next() {
                Some((_, &k)) if self.crashes[k].unheard => k,
                _ => return,
            },
        };
        let rec = &mut self.crashes[k];
        if matches!(to, MemberStatus::Suspect | MemberStatus::Down) {
            rec.seen_by.entry(i).or_insert(now.0);
        }
        match to {
            MemberStatus::Suspect => {
                rec.first_suspect_ms.get_or_insert(now.0);
            }
            MemberStatus::Down => {
                rec.first_suspect_ms.get_or_insert(now.0);
                rec.first_down_ms.get_or_insert(now.0);
                rec.down_by.entry(i).or_insert(now.0);
            }
            _ => {}
        }
    }

    /// Takes one time-series sample over the `running` nodes.
    pub fn sample(&mut self, now: Millis, running: &[usize]) {
        let (mut lo, mut hi, mut sum, mut suspect) = (usize::MAX, 0, 0, 0);
        for &i in running {
            let a = self.alive[i];
            lo = lo.min(a);
            hi = hi.max(a);
            sum += a;
            suspect += self.suspect[i];
        }
        let count = running.len();
        self.samples.push(Sample {
            t_ms: now.0,
            running: count,
            alive_min: if count == 0 { 0 } else { lo },
            alive_mean: if count == 0 {
                0.0
            } else {
                round3(sum as f64 / count as f64)
            },
            alive_max: hi,
            suspect_total: suspect,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three nodes that know each other as generation 1; node 0 then renews itself to
    /// generation 2, and `heard_by` of the others learn it.
    fn renewed(heard_by: &[usize]) -> Observer {
        let mut o = Observer::new(3);
        for i in 0..3 {
            o.started(i, 1, (0, 0));
        }
        for i in 0..3 {
            for j in 0..3 {
                o.status(i, j, 1, MemberStatus::Alive);
            }
        }
        o.status(0, 0, 2, MemberStatus::Alive);
        for &i in heard_by {
            o.status(i, 0, 2, MemberStatus::Alive);
        }
        o
    }

    #[test]
    fn a_crash_of_a_generation_nobody_heard_of_is_detected_by_the_one_they_knew() {
        let mut o = renewed(&[]);
        o.crashed(0, 2, Millis(100));
        // Generation 1 marked down after the crash: that is the crash, to the others.
        o.detection(1, 0, 1, MemberStatus::Down, Millis(200));
        assert_eq!(o.crashes[0].first_down_ms, Some(200));
        assert!(o.crashes[0].unheard);
    }

    #[test]
    fn once_another_node_knew_the_new_generation_only_its_own_marks_count() {
        let mut o = renewed(&[2]);
        o.crashed(0, 2, Millis(100));
        o.detection(1, 0, 1, MemberStatus::Down, Millis(200));
        assert_eq!(o.crashes[0].first_down_ms, None);
        o.detection(2, 0, 2, MemberStatus::Down, Millis(300));
        assert_eq!(o.crashes[0].first_down_ms, Some(300));
    }
}
