//! The properties of docs/faults.md, judged over a [`History`]. Each checker is a pure function
//! of the history and returns its figure and its violations (one sentence each, naming the
//! job, slot, pid, node and times), so a run reports everything that went wrong at once.
//!
//! Named by when they hold (the simulator's convention): `always_*` at every sample,
//! `eventually_*` within a bound after a point, `finally_*` at the end of the run.
//!
//! The unit tests at the bottom feed each checker a small history that breaks its property
//! and one that keeps it: every checker is shown to bite.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::history::{FinalView, History, Op, TaskSeen};

/// The bounds a run is judged against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Longest time two copies of a slot may run at once: docs/faults.md, "Duplicates have a
    /// bound": about 10 s for a task that exits on SIGTERM, 15 s for one that needs SIGKILL.
    pub duplicate_ms: u64,
    /// Time from the heal (or the crash) until every service runs exactly `count` copies.
    /// Not in docs/faults.md: chosen here (detection ~3 s + placement + the 10 s duplicate
    /// bound with room to spare), and the measured figure is reported beside it.
    pub back_to_count_ms: u64,
    /// How long `count` must have held at the end of the run for "back at count" to count.
    pub stable_ms: u64,
    /// Time from a `200` to `DELETE` until no process of the job runs (kill grace 5 s, or an
    /// orphan's watchdog bound when the node that ran it crashed).
    pub stopped_ms: u64,
    /// Time from the crash of an agent until its tasks are gone: the watchdog's `orphan_grace`
    /// (10 s) + one lease renewal (1 s) + the kill grace for tasks that exit on SIGTERM, and
    /// the same 15 s figure as the duplicate bound.
    pub orphan_ms: u64,
    /// Largest gap between two `/proc` samples for the history to be judged at all: every
    /// figure above is measured to within a gap.
    pub sample_gap_ms: u64,
}

impl Bounds {
    /// The default [`Bounds::stable_ms`].
    pub const STABLE_MS: u64 = 5_000;
}

impl Default for Bounds {
    fn default() -> Self {
        Bounds {
            duplicate_ms: 15_000,
            back_to_count_ms: 30_000,
            stable_ms: Bounds::STABLE_MS,
            stopped_ms: 15_000,
            orphan_ms: 15_000,
            sample_gap_ms: 2_000,
        }
    }
}

/// What a scenario promises beyond the always-on properties.
#[derive(Debug, Clone, Default)]
pub struct Expect {
    /// Task sets that must keep their processes to the end.
    pub incumbents: Vec<Incumbents>,
    /// Services must be back at `count` within the bound after this time (the heal, or the
    /// crash when nothing heals).
    pub recovery_from_ms: Option<u64>,
    /// Nodes whose agent crashed at a time: their task processes must be gone within the bound.
    pub orphans: Vec<Orphans>,
    /// Count `202` answers as acknowledgements too (a `202` job must not be lost either when
    /// no node crashed).
    pub accepted_is_acknowledged: bool,
}

/// The tasks running at `at_ms` on `nodes` (of `jobs`, or of every job) must run until the
/// end with the same pid, unless their job is stopped or updated after `at_ms`.
#[derive(Debug, Clone)]
pub struct Incumbents {
    /// The reference time (the last sample at or before it is used).
    pub at_ms: u64,
    /// The nodes that stayed in the majority.
    pub nodes: Vec<String>,
    /// Only these jobs (`None`: every job).
    pub jobs: Option<Vec<String>>,
    /// For the figure line: `pre-fault`, `at the heal`, ….
    pub what: String,
}

/// The agent of `node` crashed at `at_ms`; its tasks are orphans from then on.
#[derive(Debug, Clone)]
pub struct Orphans {
    /// The node.
    pub node: String,
    /// When its agent was killed.
    pub at_ms: u64,
}

/// How long after the fault's end something came back: the services to `count`
/// (`Figures::back_to_count`), or the views to every running agent alive
/// (`Figures::views_merged`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    /// The scenario does not measure it.
    NotMeasured,
    /// Back this long after the reference time (the slowest service; the last settle's views
    /// where a scenario settles more than once).
    After(u64),
    /// Not back: services at the end of the run, views within the back-to-count bound.
    Never,
}

/// The figures the lead pastes into the notes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Figures {
    /// Incumbent tasks checked, per set: (what, checked, killed).
    pub incumbents: Vec<(String, usize, usize)>,
    /// The longest time one slot ran twice (or more), and which slot.
    pub longest_duplicate_ms: u64,
    /// `job/slot` of the longest duplicate window.
    pub longest_duplicate_slot: Option<String>,
    /// Back at count after the heal.
    pub back_to_count: Recovery,
    /// Acknowledged jobs missing (or stopped) on some node at the end.
    pub jobs_lost: usize,
    /// Longest time an orphan ran after its agent's crash.
    pub longest_orphan_ms: Option<u64>,
    /// Samples in which some node ran more than its capacity.
    pub over_capacity_samples: usize,
    /// The sampling resolution actually achieved.
    pub largest_sample_gap_ms: u64,
    /// From the fault's end (a heal, a resume, a restart, a freed disk) until the views
    /// merged, polled every 100 ms by `Cluster::settle`.
    pub views_merged: Recovery,
}

/// The judgement of one run.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub figures: Figures,
    pub violations: Vec<String>,
}

/// Runs every checker.
pub fn judge(h: &History, expect: &Expect, bounds: &Bounds) -> Verdict {
    let mut violations = Vec::new();
    let mut incumbents = Vec::new();
    for set in &expect.incumbents {
        let (checked, killed, v) = finally_incumbents_kept(h, set);
        incumbents.push((set.what.clone(), checked, killed));
        violations.extend(v);
    }
    let (longest_duplicate_ms, longest_duplicate_slot, v) =
        always_duplicates_within_bound(h, bounds.duplicate_ms);
    violations.extend(v);
    let back_to_count = match expect.recovery_from_ms {
        Some(from) => {
            let (figure, v) = eventually_back_to_count(h, from, bounds);
            violations.extend(v);
            figure
        }
        None => Recovery::NotMeasured,
    };
    let (jobs_lost, v) = finally_no_acknowledged_job_lost(h, expect.accepted_is_acknowledged);
    violations.extend(v);
    violations.extend(finally_stopped_jobs_stay_stopped(h, bounds.stopped_ms));
    violations.extend(finally_views_match_processes(h));
    let mut longest_orphan_ms = None;
    for o in &expect.orphans {
        let (longest, v) = eventually_orphans_gone(h, o, bounds.orphan_ms);
        longest_orphan_ms = longest_orphan_ms.max(Some(longest));
        violations.extend(v);
    }
    let (over_capacity_samples, v) = always_within_capacity(h);
    violations.extend(v);
    violations.extend(always_sampled(h, bounds.sample_gap_ms));
    Verdict {
        figures: Figures {
            incumbents,
            longest_duplicate_ms,
            longest_duplicate_slot,
            back_to_count,
            jobs_lost,
            longest_orphan_ms,
            over_capacity_samples,
            largest_sample_gap_ms: h.largest_sample_gap_ms(),
            views_merged: Recovery::NotMeasured,
        },
        violations,
    }
}

/// Every job acknowledged with `200` (and `202` when `accepted_too`) and never stopped is
/// listed, not stopped, by every node that answered at the end.
pub fn finally_no_acknowledged_job_lost(h: &History, accepted_too: bool) -> (usize, Vec<String>) {
    let mut violations = Vec::new();
    let acked: BTreeSet<&str> = h
        .requests
        .iter()
        .filter(|r| r.op == Op::Submit)
        .filter(|r| r.status == Some(200) || (accepted_too && r.status == Some(202)))
        .map(|r| r.job.as_str())
        .filter(|job| h.stop_sent_ms(job).is_none())
        .collect();
    if h.final_views.is_empty() {
        violations.push("no node was asked for its jobs at the end: nothing to check".into());
    }
    let mut lost = BTreeSet::new();
    for (node, view) in &h.final_views {
        let jobs = match view {
            FinalView::Jobs(jobs) => jobs,
            FinalView::NoAnswer(e) => {
                violations.push(format!(
                    "{node} did not list its jobs at the end ({e}), so no acknowledged job can \
                     be shown to be there"
                ));
                continue;
            }
        };
        for job in &acked {
            match jobs.iter().find(|j| j.id == *job) {
                Some(j) if !j.stopped => {}
                Some(j) => {
                    lost.insert(*job);
                    violations.push(format!(
                        "acknowledged job {job} is stopped on {node} at the end (status {}) \
                         though nobody stopped it",
                        j.status
                    ));
                }
                None => {
                    lost.insert(*job);
                    violations.push(format!(
                        "acknowledged job {job} is missing on {node} at the end"
                    ));
                }
            }
        }
    }
    (lost.len(), violations)
}

/// A job whose `DELETE` was answered `200` runs no process `bound_ms` after that answer, and
/// no node lists it as not stopped at the end.
pub fn finally_stopped_jobs_stay_stopped(h: &History, bound_ms: u64) -> Vec<String> {
    let mut violations = Vec::new();
    let stops: BTreeMap<&str, u64> = h
        .requests
        .iter()
        .filter(|r| r.op == Op::Stop && r.status == Some(200))
        .fold(BTreeMap::new(), |mut m, r| {
            let t = m.entry(r.job.as_str()).or_insert(r.answered_ms);
            *t = (*t).min(r.answered_ms);
            m
        });
    for (job, acked_ms) in &stops {
        if h.resubmitted_after(job, *acked_ms) {
            continue;
        }
        let limit = acked_ms + bound_ms;
        for t in h
            .tasks
            .iter()
            .filter(|t| t.job == *job && t.last_ms > limit)
        {
            violations.push(format!(
                "job {job} was stopped (200 at {}) but {} still ran at {} ({} after the stop; \
                 bound {})",
                secs(*acked_ms),
                describe(t),
                secs(t.last_ms),
                secs(t.last_ms - acked_ms),
                secs(bound_ms)
            ));
        }
        for (node, view) in &h.final_views {
            if let FinalView::Jobs(jobs) = view
                && let Some(j) = jobs.iter().find(|j| j.id == *job && !j.stopped)
            {
                violations.push(format!(
                    "job {job} was stopped (200 at {}) but {node} lists it as not stopped at \
                     the end (status {})",
                    secs(*acked_ms),
                    j.status
                ));
            }
        }
    }
    violations
}

/// At the end, every node's view of every job it lists as not stopped says what runs: each
/// slot it shows `running` on a node has a process there, and each process has its slot shown
/// `running` on its node. (The run ends only after the processes held still for a while, so
/// the views have had time to catch up.)
pub fn finally_views_match_processes(h: &History) -> Vec<String> {
    let end = h.end_ms();
    let live: BTreeSet<(&str, u32, &str)> = h
        .tasks
        .iter()
        .filter(|t| t.live_at(end))
        .map(|t| (t.job.as_str(), t.slot, t.node.as_str()))
        .collect();
    // (job, slot, node) → the viewers that are wrong about it, in each direction.
    let mut phantom: BTreeMap<(&str, u32, &str), Vec<&str>> = BTreeMap::new();
    let mut unseen: BTreeMap<(&str, u32, &str), Vec<&str>> = BTreeMap::new();
    for (viewer, view) in &h.final_views {
        let FinalView::Jobs(jobs) = view else {
            continue;
        };
        for job in jobs.iter().filter(|j| !j.stopped) {
            let shown: BTreeSet<(&str, u32, &str)> = job
                .running
                .iter()
                .map(|(slot, node)| (job.id.as_str(), *slot, node.as_str()))
                .collect();
            for key in shown.difference(&live) {
                phantom.entry(*key).or_default().push(viewer);
            }
            for key in live.iter().filter(|(j, ..)| *j == job.id) {
                if !shown.contains(key) {
                    unseen.entry(*key).or_default().push(viewer);
                }
            }
        }
    }
    let phantoms = phantom.into_iter().map(|((job, slot, node), viewers)| {
        format!(
            "{} show{} {job}/{slot} running on {node} at the end, but no process of it runs there",
            viewers.join(", "),
            if viewers.len() == 1 { "s" } else { "" }
        )
    });
    let unseens = unseen.into_iter().map(|((job, slot, node), viewers)| {
        format!(
            "a process of {job}/{slot} runs on {node} at the end, but {} do{} not show it \
             running there",
            viewers.join(", "),
            if viewers.len() == 1 { "es" } else { "" }
        )
    });
    phantoms.chain(unseens).collect()
}

/// The tasks of `set` keep their processes to the end. Returns (checked, killed, violations).
/// An empty set is a violation: the scenario meant to check something and did not.
pub fn finally_incumbents_kept(h: &History, set: &Incumbents) -> (usize, usize, Vec<String>) {
    let mut violations = Vec::new();
    let Some(t_ref) = h
        .sample_times_ms
        .iter()
        .copied()
        .filter(|t| *t <= set.at_ms)
        .max()
    else {
        return (
            0,
            0,
            vec![format!(
                "{} incumbents: no sample at or before {}",
                set.what,
                secs(set.at_ms)
            )],
        );
    };
    let end = h.end_ms();
    let chosen: Vec<&TaskSeen> = h
        .tasks
        .iter()
        .filter(|t| t.live_at(t_ref) && set.nodes.contains(&t.node))
        .filter(|t| set.jobs.as_ref().is_none_or(|jobs| jobs.contains(&t.job)))
        .filter(|t| h.stop_sent_ms(&t.job).is_none() && !h.resubmitted_after(&t.job, set.at_ms))
        .collect();
    if chosen.is_empty() {
        violations.push(format!(
            "{} incumbents: no task ran on {:?} at {}; the check would be empty",
            set.what,
            set.nodes,
            secs(t_ref)
        ));
    }
    let mut killed = 0;
    for t in &chosen {
        if t.last_ms < end {
            killed += 1;
            violations.push(format!(
                "{} incumbent {} was killed: last seen at {} (the run ended at {})",
                set.what,
                describe(t),
                secs(t.last_ms),
                secs(end)
            ));
        }
    }
    (chosen.len(), killed, violations)
}

/// At most one process per slot, and none for a slot beyond `count`, except for windows of
/// at most `bound_ms`. Returns the longest window, its slot, and the violations. A job is
/// judged until a stop of it is sent.
pub fn always_duplicates_within_bound(
    h: &History,
    bound_ms: u64,
) -> (u64, Option<String>, Vec<String>) {
    let mut violations = Vec::new();
    let mut longest = (0, None);
    let end = h.end_ms();
    let mut slots: BTreeMap<(&str, u32), Vec<&TaskSeen>> = BTreeMap::new();
    for t in &h.tasks {
        slots.entry((t.job.as_str(), t.slot)).or_default().push(t);
    }
    for ((job, slot), tasks) in slots {
        let count = h
            .spec_of(job)
            .and_then(|s| s["count"].as_u64())
            .unwrap_or(1);
        if u64::from(slot) >= count {
            violations.push(format!(
                "slot {job}/{slot} ran but the job has count {count}: {}",
                describe(tasks[0])
            ));
            continue;
        }
        let until = h.stop_sent_ms(job).unwrap_or(u64::MAX);
        let mut open: Option<u64> = None;
        let mut windows = Vec::new();
        for &t in h.sample_times_ms.iter().filter(|t| **t < until) {
            let copies = tasks.iter().filter(|x| x.live_at(t)).count();
            match (copies >= 2, open) {
                (true, None) => open = Some(t),
                (false, Some(start)) => {
                    windows.push((start, t, false));
                    open = None;
                }
                _ => {}
            }
        }
        if let Some(start) = open {
            windows.push((start, end.min(until), true));
        }
        for (start, stop, still) in windows {
            let len = stop - start;
            if len > longest.0 {
                longest = (len, Some(format!("{job}/{slot}")));
            }
            if len > bound_ms || still {
                let copies: Vec<String> = tasks
                    .iter()
                    .filter(|x| x.live_at(start))
                    .map(|x| describe(x))
                    .collect();
                violations.push(format!(
                    "slot {job}/{slot} ran twice for {} from {}{} (bound {}): {}",
                    secs(len),
                    secs(start),
                    if still { ", still at the end" } else { "" },
                    secs(bound_ms),
                    copies.join("; ")
                ));
            }
        }
    }
    (longest.0, longest.1, violations)
}

/// Every service accepted (`200`/`202`) and not stopped runs exactly one process per slot from
/// some time within `bounds.back_to_count_ms` after `from_ms` (or after its first submission,
/// if later) until the end, and that lasted at least `bounds.stable_ms`.
pub fn eventually_back_to_count(
    h: &History,
    from_ms: u64,
    bounds: &Bounds,
) -> (Recovery, Vec<String>) {
    let mut violations = Vec::new();
    let mut slowest = Recovery::After(0);
    let end = h.end_ms();
    let services: BTreeSet<String> = h
        .requests
        .iter()
        .filter(|r| r.op == Op::Submit && matches!(r.status, Some(200 | 202)))
        .filter(|r| h.spec_of(&r.job).is_some_and(|s| s["type"] == "service"))
        .filter(|r| h.stop_sent_ms(&r.job).is_none())
        .map(|r| r.job.clone())
        .collect();
    if services.is_empty() {
        violations.push("no service to bring back to count: the check would be empty".into());
    }
    for job in &services {
        let count = h
            .spec_of(job)
            .and_then(|s| s["count"].as_u64())
            .unwrap_or(1) as u32;
        let submitted = h
            .requests
            .iter()
            .filter(|r| r.op == Op::Submit && r.job == *job)
            .map(|r| r.sent_ms)
            .min()
            .unwrap_or(0);
        let from = from_ms.max(submitted);
        let Some(since) = at_count_since(h, job, count) else {
            slowest = Recovery::Never;
            let per_slot: Vec<usize> = (0..count)
                .map(|s| {
                    h.tasks
                        .iter()
                        .filter(|x| x.job == *job && x.slot == s && x.live_at(end))
                        .count()
                })
                .collect();
            violations.push(format!(
                "service {job} is not back at count {count} at the end ({} after {}): \
                 processes per slot {per_slot:?}",
                secs(end.saturating_sub(from)),
                secs(from)
            ));
            continue;
        };
        // At count since before `from`: it never left its count.
        let took = since.saturating_sub(from);
        if let Recovery::After(worst) = slowest {
            slowest = Recovery::After(worst.max(took));
        }
        if took > bounds.back_to_count_ms {
            violations.push(format!(
                "service {job} was back at count {count} only {} after {} (bound {})",
                secs(took),
                secs(from),
                secs(bounds.back_to_count_ms)
            ));
        }
        if end - since < bounds.stable_ms {
            violations.push(format!(
                "service {job} was at count {count} only for the last {} of the run (needs {})",
                secs(end - since),
                secs(bounds.stable_ms)
            ));
        }
    }
    (slowest, violations)
}

/// The start of the final run of samples in which `job` runs exactly one process per slot
/// `0..count` and none beyond; `None` when the last sample is not at count.
pub fn at_count_since(h: &History, job: &str, count: u32) -> Option<u64> {
    let tasks: Vec<&TaskSeen> = h.tasks.iter().filter(|t| t.job == job).collect();
    let at_count = |t: u64| {
        let mut per_slot = vec![0usize; count as usize];
        for x in tasks.iter().filter(|x| x.live_at(t)) {
            match per_slot.get_mut(x.slot as usize) {
                Some(n) => *n += 1,
                None => return false,
            }
        }
        per_slot.iter().all(|n| *n == 1)
    };
    h.sample_times_ms
        .iter()
        .rev()
        .take_while(|t| at_count(**t))
        .last()
        .copied()
}

/// The tasks running on a crashed agent's node are gone within `bound_ms` of the crash.
/// Returns the longest time one of them ran after the crash.
pub fn eventually_orphans_gone(h: &History, o: &Orphans, bound_ms: u64) -> (u64, Vec<String>) {
    let mut violations = Vec::new();
    let end = h.end_ms();
    let t_ref = h
        .sample_times_ms
        .iter()
        .copied()
        .filter(|t| *t <= o.at_ms)
        .max();
    let orphans: Vec<&TaskSeen> = h
        .tasks
        .iter()
        .filter(|t| t.node == o.node && t_ref.is_some_and(|r| t.live_at(r)))
        .collect();
    if orphans.is_empty() {
        violations.push(format!(
            "no task ran on {} when its agent was killed at {}: no orphan to watch",
            o.node,
            secs(o.at_ms)
        ));
    }
    let mut longest = 0;
    for t in orphans {
        let ran = t.last_ms.saturating_sub(o.at_ms);
        longest = longest.max(ran);
        if ran > bound_ms || t.last_ms == end {
            violations.push(format!(
                "orphan {} ran {} after its agent was killed at {}{} (bound {})",
                describe(t),
                secs(ran),
                secs(o.at_ms),
                if t.last_ms == end {
                    ", and still runs at the end"
                } else {
                    ""
                },
                secs(bound_ms)
            ));
        }
    }
    (longest, violations)
}

/// No node ever runs tasks whose requests add up to more than its capacity (cpu or memory).
/// Returns how many samples broke it. Reports the first sample per node and resource.
pub fn always_within_capacity(h: &History) -> (usize, Vec<String>) {
    let mut violations = Vec::new();
    let mut reported = BTreeSet::new();
    let mut over_samples = 0;
    let mut unknown = BTreeSet::new();
    for &t in &h.sample_times_ms {
        let mut load: BTreeMap<&str, (u64, u64, Vec<&TaskSeen>)> = BTreeMap::new();
        for task in h.tasks.iter().filter(|x| x.live_at(t)) {
            let Some(spec) = h.spec_of(&task.job) else {
                if unknown.insert(task.job.clone()) {
                    violations.push(format!(
                        "{} belongs to no job this run submitted",
                        describe(task)
                    ));
                }
                continue;
            };
            let e = load.entry(task.node.as_str()).or_default();
            e.0 += spec["resources"]["cpu"].as_u64().unwrap_or(0);
            e.1 += spec["resources"]["memory"].as_u64().unwrap_or(0);
            e.2.push(task);
        }
        let mut over_here = false;
        for (node, (cpu, mem, tasks)) in load {
            let Some(cap) = h.node(node) else { continue };
            for (what, used, limit) in [
                ("cpu millicores", cpu, cap.cpu_millicores),
                ("memory MiB", mem, cap.memory_mib),
            ] {
                if used <= limit {
                    continue;
                }
                over_here = true;
                if reported.insert((node, what)) {
                    let list: Vec<String> = tasks.iter().map(|x| describe(x)).collect();
                    violations.push(format!(
                        "{node} ran {used} {what} of tasks at {} (capacity {limit}): {}",
                        secs(t),
                        list.join("; ")
                    ));
                }
            }
        }
        over_samples += usize::from(over_here);
    }
    (over_samples, violations)
}

/// The history was sampled at all, and never with a gap above `max_gap_ms`: a starved sampler
/// could miss a short-lived copy, so its history is not judged as if it had seen everything.
pub fn always_sampled(h: &History, max_gap_ms: u64) -> Vec<String> {
    if h.sample_times_ms.len() < 2 {
        return vec!["fewer than two /proc samples: nothing was observed".into()];
    }
    let gap = h.largest_sample_gap_ms();
    if gap > max_gap_ms {
        let at = h
            .sample_times_ms
            .windows(2)
            .find(|w| w[1] - w[0] == gap)
            .map_or(0, |w| w[0]);
        return vec![format!(
            "the /proc sampler went {} without a sample from {} (limit {}): the history is \
             too coarse to judge",
            secs(gap),
            secs(at),
            secs(max_gap_ms)
        )];
    }
    Vec::new()
}

/// `pid 812 (web/3 attempt 2 on n4)`.
pub fn describe(t: &TaskSeen) -> String {
    format!(
        "pid {} ({}/{} attempt {} on {})",
        t.pid, t.job, t.slot, t.attempt, t.node
    )
}

/// Milliseconds as seconds with one decimal: `12.4 s`.
pub fn secs(ms: u64) -> String {
    format!("{:.1} s", ms as f64 / 1000.0)
}

impl fmt::Display for Recovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Recovery::NotMeasured => f.write_str("n/a"),
            Recovery::After(ms) => f.write_str(&secs(*ms)),
            Recovery::Never => f.write_str("never"),
        }
    }
}

impl Verdict {
    /// The one line per scenario the lead pastes into the notes.
    pub fn figure_line(&self, scenario: &str) -> String {
        let f = &self.figures;
        let incumbents: Vec<String> = f
            .incumbents
            .iter()
            .map(|(what, n, killed)| format!("{killed}/{n} {what}"))
            .collect();
        format!(
            "chaos figures | {scenario} | incumbent tasks killed on majority nodes: {} | \
             longest duplicate window: {}{} | back to count: {} | jobs lost: {} | \
             longest orphan: {} | over-capacity samples: {} | largest sample gap: {} | \
             views merged after the fault: {} | violations: {}",
            if incumbents.is_empty() {
                "n/a".to_string()
            } else {
                incumbents.join(", ")
            },
            secs(f.longest_duplicate_ms),
            f.longest_duplicate_slot
                .as_ref()
                .map(|s| format!(" ({s})"))
                .unwrap_or_default(),
            f.back_to_count,
            f.jobs_lost,
            f.longest_orphan_ms.map_or("n/a".to_string(), secs),
            f.over_capacity_samples,
            secs(f.largest_sample_gap_ms),
            f.views_merged,
            self.violations.len()
        )
    }
}

#[cfg(test)]
mod tests {
    //! Each checker against a history that breaks its property and one that keeps it.

    use super::*;
    use crate::history::{JobSeen, NodeInfo, Request};
    use serde_json::json;

    /// A history of `nodes` (2000m, 2048 MiB each) sampled every 200 ms up to `end_ms`.
    fn history(nodes: &[&str], end_ms: u64) -> History {
        History {
            scenario: "synthetic".into(),
            nodes: nodes
                .iter()
                .map(|n| NodeInfo {
                    name: n.to_string(),
                    addr: String::new(),
                    cpu_millicores: 2000,
                    memory_mib: 2048,
                })
                .collect(),
            sample_times_ms: (0..=end_ms / 200).map(|i| i * 200).collect(),
            ..History::default()
        }
    }

    fn submit(h: &mut History, job: &str, count: u64, cpu: u64, status: u16, at: u64) {
        h.requests.push(Request {
            op: Op::Submit,
            node: "n1".into(),
            job: job.into(),
            spec: Some(json!({"id": job, "type": "service", "count": count,
                "resources": {"cpu": cpu, "memory": 32}})),
            sent_ms: at,
            answered_ms: at + 50,
            status: Some(status),
            body: String::new(),
        });
    }

    fn stop(h: &mut History, job: &str, status: u16, at: u64) {
        h.requests.push(Request {
            op: Op::Stop,
            node: "n2".into(),
            job: job.into(),
            spec: None,
            sent_ms: at,
            answered_ms: at + 50,
            status: Some(status),
            body: String::new(),
        });
    }

    fn task(h: &mut History, pid: i32, node: &str, job: &str, slot: u32, from: u64, to: u64) {
        h.tasks.push(TaskSeen {
            pid,
            start_ticks: pid as u64,
            node: node.into(),
            job: job.into(),
            job_key: format!("{job}.1.n1"),
            slot,
            attempt: 1,
            task_dir: String::new(),
            first_ms: from,
            last_ms: to,
        });
    }

    fn listed(h: &mut History, node: &str, jobs: &[(&str, bool)]) {
        h.final_views.insert(
            node.into(),
            FinalView::Jobs(
                jobs.iter()
                    .map(|(id, stopped)| JobSeen {
                        id: id.to_string(),
                        stopped: *stopped,
                        status: if *stopped { "stopped" } else { "running" }.into(),
                        running: Vec::new(),
                    })
                    .collect(),
            ),
        );
    }

    fn incumbents(at_ms: u64, nodes: &[&str]) -> Incumbents {
        Incumbents {
            at_ms,
            nodes: nodes.iter().map(|n| n.to_string()).collect(),
            jobs: None,
            what: "pre-fault".into(),
        }
    }

    #[test]
    fn a_killed_incumbent_on_a_majority_node_is_caught() {
        let mut h = history(&["n1", "n2", "n3"], 20_000);
        submit(&mut h, "web", 3, 100, 200, 0);
        task(&mut h, 11, "n1", "web", 0, 1_000, 20_000);
        task(&mut h, 12, "n2", "web", 1, 1_000, 12_000); // killed after the heal
        task(&mut h, 13, "n3", "web", 2, 1_000, 6_000); // on the cut-off node: not judged
        let (n, killed, v) = finally_incumbents_kept(&h, &incumbents(5_000, &["n1", "n2"]));
        assert_eq!((n, killed), (2, 1));
        assert_eq!(v.len(), 1);
        assert!(v[0].contains("pid 12") && v[0].contains("n2"), "{v:?}");

        h.tasks[1].last_ms = 20_000;
        let (_, killed, v) = finally_incumbents_kept(&h, &incumbents(5_000, &["n1", "n2"]));
        assert_eq!((killed, v.len()), (0, 0), "{v:?}");
    }

    #[test]
    fn an_empty_incumbent_set_is_a_violation_not_a_pass() {
        let mut h = history(&["n1", "n2"], 10_000);
        submit(&mut h, "web", 1, 100, 200, 0);
        task(&mut h, 11, "n2", "web", 0, 6_000, 10_000); // started after the fault
        let (n, _, v) = finally_incumbents_kept(&h, &incumbents(5_000, &["n1", "n2"]));
        assert_eq!(n, 0);
        assert_eq!(v.len(), 1, "{v:?}");
    }

    #[test]
    fn a_stopped_or_updated_job_excuses_its_incumbents() {
        let mut h = history(&["n1"], 20_000);
        submit(&mut h, "a", 1, 100, 200, 0);
        submit(&mut h, "b", 1, 100, 200, 0);
        task(&mut h, 11, "n1", "a", 0, 1_000, 9_000);
        task(&mut h, 12, "n1", "b", 0, 1_000, 9_000);
        stop(&mut h, "a", 200, 8_000);
        submit(&mut h, "b", 1, 200, 200, 8_000);
        let (n, _, v) = finally_incumbents_kept(&h, &incumbents(5_000, &["n1"]));
        assert_eq!(n, 0);
        assert_eq!(v.len(), 1, "only the empty-set violation: {v:?}");
    }

    #[test]
    fn a_duplicate_longer_than_the_bound_is_caught_and_measured() {
        let mut h = history(&["n1", "n2"], 40_000);
        submit(&mut h, "web", 2, 100, 200, 0);
        task(&mut h, 11, "n1", "web", 0, 0, 40_000);
        task(&mut h, 12, "n2", "web", 0, 10_000, 26_000); // twice for 16.2 s (to 26.2)
        task(&mut h, 13, "n1", "web", 1, 0, 40_000);
        task(&mut h, 14, "n2", "web", 1, 30_000, 34_000); // twice for 4.2 s
        let (longest, slot, v) = always_duplicates_within_bound(&h, 15_000);
        assert_eq!((longest, slot.as_deref()), (16_200, Some("web/0")));
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].contains("web/0") && v[0].contains("pid 12"), "{v:?}");

        h.tasks[1].last_ms = 20_000;
        let (longest, _, v) = always_duplicates_within_bound(&h, 15_000);
        assert_eq!((longest, v.len()), (10_200, 0), "{v:?}");
    }

    #[test]
    fn a_duplicate_still_running_at_the_end_is_caught_even_when_short() {
        let mut h = history(&["n1", "n2"], 10_000);
        submit(&mut h, "web", 1, 100, 200, 0);
        task(&mut h, 11, "n1", "web", 0, 0, 10_000);
        task(&mut h, 12, "n2", "web", 0, 9_000, 10_000);
        let (_, _, v) = always_duplicates_within_bound(&h, 15_000);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].contains("still at the end"), "{v:?}");
    }

    #[test]
    fn a_slot_beyond_count_is_caught() {
        let mut h = history(&["n1"], 2_000);
        submit(&mut h, "web", 2, 100, 200, 0);
        task(&mut h, 11, "n1", "web", 2, 0, 2_000);
        let (_, _, v) = always_duplicates_within_bound(&h, 15_000);
        assert_eq!(v.len(), 1, "{v:?}");
    }

    #[test]
    fn a_service_never_back_at_count_is_caught() {
        let mut h = history(&["n1", "n2"], 50_000);
        submit(&mut h, "web", 2, 100, 200, 0);
        task(&mut h, 11, "n1", "web", 0, 0, 50_000);
        task(&mut h, 12, "n2", "web", 1, 0, 10_000); // slot 1 never comes back
        let b = Bounds::default();
        let (fig, v) = eventually_back_to_count(&h, 20_000, &b);
        assert_eq!(fig, Recovery::Never);
        assert_eq!(v.len(), 1, "{v:?}");

        task(&mut h, 13, "n1", "web", 1, 32_000, 50_000); // back 12 s after the heal
        let (fig, v) = eventually_back_to_count(&h, 20_000, &b);
        assert_eq!((fig, v.len()), (Recovery::After(12_000), 0), "{v:?}");

        h.tasks[2].first_ms = 46_000; // back 26 s after, but only 4 s before the end
        let (fig, v) = eventually_back_to_count(&h, 20_000, &b);
        assert_eq!(fig, Recovery::After(26_000));
        assert_eq!(v.len(), 1, "{v:?}");

        h.tasks[2].first_ms = 51_000; // never, again
        h.sample_times_ms.extend((251..=300).map(|i| i * 200)); // run to 60 s
        h.tasks[0].last_ms = 60_000;
        h.tasks[2].last_ms = 60_000;
        let (fig, v) = eventually_back_to_count(&h, 20_000, &b);
        assert_eq!(fig, Recovery::After(31_000));
        assert!(v.iter().any(|x| x.contains("only 31.0 s")), "{v:?}");
    }

    #[test]
    fn an_extra_copy_keeps_a_service_off_its_count() {
        let mut h = history(&["n1", "n2"], 30_000);
        submit(&mut h, "web", 1, 100, 200, 0);
        task(&mut h, 11, "n1", "web", 0, 0, 30_000);
        task(&mut h, 12, "n2", "web", 0, 0, 30_000);
        let (fig, v) = eventually_back_to_count(&h, 10_000, &Bounds::default());
        assert_eq!(fig, Recovery::Never);
        assert_eq!(v.len(), 1, "{v:?}");
    }

    #[test]
    fn an_acknowledged_job_missing_on_one_node_is_lost() {
        let mut h = history(&["n1", "n2"], 1_000);
        submit(&mut h, "precious", 1, 100, 200, 0);
        submit(&mut h, "maybe", 1, 100, 202, 0);
        submit(&mut h, "gone", 1, 100, 200, 0);
        stop(&mut h, "gone", 200, 100);
        listed(&mut h, "n1", &[("precious", false)]);
        listed(&mut h, "n2", &[("maybe", false)]);
        let (lost, v) = finally_no_acknowledged_job_lost(&h, false);
        assert_eq!((lost, v.len()), (1, 1), "{v:?}");
        assert!(v[0].contains("precious") && v[0].contains("n2"), "{v:?}");

        // Counting 202s too, `maybe` is missing on n1.
        let (lost, v) = finally_no_acknowledged_job_lost(&h, true);
        assert_eq!((lost, v.len()), (2, 2), "{v:?}");

        listed(&mut h, "n2", &[("precious", true)]);
        let (lost, v) = finally_no_acknowledged_job_lost(&h, false);
        assert_eq!(lost, 1);
        assert!(v[0].contains("stopped on n2"), "{v:?}");

        h.final_views
            .insert("n2".into(), FinalView::NoAnswer("timeout".into()));
        let (_, v) = finally_no_acknowledged_job_lost(&h, false);
        assert!(v.iter().any(|x| x.contains("did not list")), "{v:?}");

        h.final_views.clear();
        let (_, v) = finally_no_acknowledged_job_lost(&h, false);
        assert_eq!(v.len(), 1, "an empty final view is no pass: {v:?}");
    }

    #[test]
    fn a_stopped_job_that_runs_again_is_caught() {
        let mut h = history(&["n1", "n2"], 60_000);
        submit(&mut h, "precious", 2, 100, 200, 0);
        stop(&mut h, "precious", 200, 1_000);
        task(&mut h, 11, "n2", "precious", 0, 500, 4_000); // killed in time
        task(&mut h, 12, "n1", "precious", 0, 20_000, 60_000); // resurrected
        listed(&mut h, "n1", &[("precious", false)]);
        listed(&mut h, "n2", &[("precious", true)]);
        let v = finally_stopped_jobs_stay_stopped(&h, 15_000);
        assert_eq!(v.len(), 2, "{v:?}");
        assert!(v[0].contains("pid 12") && v[1].contains("n1"), "{v:?}");

        h.tasks.pop();
        listed(&mut h, "n1", &[]);
        assert_eq!(
            finally_stopped_jobs_stay_stopped(&h, 15_000),
            Vec::<String>::new()
        );
    }

    #[test]
    fn an_orphan_outliving_the_bound_is_caught() {
        let mut h = history(&["n1", "n2"], 40_000);
        submit(&mut h, "web", 2, 100, 200, 0);
        task(&mut h, 11, "n1", "web", 0, 0, 40_000); // runs for the whole outage
        task(&mut h, 12, "n1", "web", 1, 0, 12_000); // gone 7 s after the crash
        let o = Orphans {
            node: "n1".into(),
            at_ms: 5_000,
        };
        let (longest, v) = eventually_orphans_gone(&h, &o, 15_000);
        assert_eq!(longest, 35_000);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].contains("pid 11"), "{v:?}");

        h.tasks[0].last_ms = 14_000;
        let (longest, v) = eventually_orphans_gone(&h, &o, 15_000);
        assert_eq!((longest, v.len()), (9_000, 0), "{v:?}");
    }

    #[test]
    fn a_node_over_its_capacity_is_caught() {
        let mut h = history(&["n1", "n2"], 10_000);
        submit(&mut h, "big", 3, 800, 200, 0);
        task(&mut h, 11, "n1", "big", 0, 0, 10_000);
        task(&mut h, 12, "n1", "big", 1, 0, 10_000);
        task(&mut h, 13, "n2", "big", 2, 0, 10_000);
        assert_eq!(always_within_capacity(&h), (0, vec![]));
        task(&mut h, 14, "n1", "big", 2, 4_000, 5_000); // 2400m on n1 for 6 samples
        let (samples, v) = always_within_capacity(&h);
        assert_eq!((samples, v.len()), (6, 1), "{v:?}");
        assert!(v[0].contains("n1 ran 2400 cpu"), "{v:?}");
    }

    #[test]
    fn a_view_that_shows_what_does_not_run_is_caught() {
        let mut h = history(&["n1", "n2"], 10_000);
        submit(&mut h, "web", 2, 100, 200, 0);
        task(&mut h, 11, "n1", "web", 0, 0, 10_000);
        task(&mut h, 12, "n2", "web", 1, 0, 10_000);
        let view = |running: Vec<(u32, &str)>| {
            FinalView::Jobs(vec![JobSeen {
                id: "web".into(),
                stopped: false,
                status: "running".into(),
                running: running
                    .into_iter()
                    .map(|(s, n)| (s, n.to_string()))
                    .collect(),
            }])
        };
        h.final_views
            .insert("n1".into(), view(vec![(0, "n1"), (1, "n2")]));
        assert_eq!(finally_views_match_processes(&h), Vec::<String>::new());
        // n2 believes slot 1 runs on n1 (a dead attempt), and does not know of pid 12.
        h.final_views
            .insert("n2".into(), view(vec![(0, "n1"), (1, "n1")]));
        let v = finally_views_match_processes(&h);
        assert_eq!(v.len(), 2, "{v:?}");
        assert!(v[0].contains("n2 shows web/1 running on n1"), "{v:?}");
        assert!(v[1].contains("web/1 runs on n2"), "{v:?}");
    }

    #[test]
    fn a_starved_sampler_is_caught() {
        let mut h = history(&["n1"], 10_000);
        assert_eq!(always_sampled(&h, 2_000), Vec::<String>::new());
        h.sample_times_ms.retain(|t| !(3_000..6_000).contains(t));
        let v = always_sampled(&h, 2_000);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].contains("3.2 s without a sample from 2.8 s"), "{v:?}");
        h.sample_times_ms.truncate(1);
        assert_eq!(always_sampled(&h, 2_000).len(), 1);
    }

    #[test]
    fn the_figure_line_names_every_figure() {
        let mut h = history(&["n1", "n2"], 30_000);
        submit(&mut h, "web", 1, 100, 200, 0);
        task(&mut h, 11, "n1", "web", 0, 0, 30_000);
        for node in ["n1", "n2"] {
            listed(&mut h, node, &[("web", false)]);
            if let Some(FinalView::Jobs(jobs)) = h.final_views.get_mut(node) {
                jobs[0].running = vec![(0, "n1".into())];
            }
        }
        let expect = Expect {
            incumbents: vec![incumbents(5_000, &["n1"])],
            recovery_from_ms: Some(10_000),
            ..Expect::default()
        };
        let v = judge(&h, &expect, &Bounds::default());
        assert_eq!(v.violations, Vec::<String>::new());
        let line = v.figure_line("synthetic");
        for part in [
            "0/1 pre-fault",
            "longest duplicate window: 0.0 s",
            "back to count: 0.0 s",
            "jobs lost: 0",
            "views merged after the fault: n/a",
            "violations: 0",
        ] {
            assert!(line.contains(part), "{part} missing from {line}");
        }
    }
}
