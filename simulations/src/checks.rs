//! The checkers, named by when they must hold.
//!
//! - `always_*` hold at every event; the engine records the first event that broke one.
//! - `eventually_*` hold once faults have healed and the cluster has been quiet for
//!   `checks.quiet_s`; they are evaluated at the end of the run against the production cores'
//!   own `members()` view (not the simulator's reconstruction of it).
//! - `finally_*` are summaries of the whole run; they fail only on what must never happen at
//!   all (such as a crash that nobody ever detected).
//!
//! Scheduling checkers are listed as `skipped` with the reason when the scheduler core does not
//! run, so a report never claims a check it did not make.

use serde::Serialize;
use shoal_gossip::{CompactString, MemberInfo, MemberStatus, Millis};

use crate::engine::{Life, Simulation};
use crate::sched::{ROOM_SETTLE_MS, Workbench};

/// Outcome of one checker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Held.
    Pass,
    /// Broken.
    Fail,
    /// Not evaluated (the reason is in `detail`).
    Skipped,
    /// Broken, but listed in the scenario's `checks.known_failures` (an open core bug).
    #[serde(rename = "known-fail")]
    KnownFail,
}

/// One checker's result.
#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    /// `always_*`, `eventually_*` or `finally_*`.
    pub name: String,
    /// Pass, fail or skipped.
    pub status: Status,
    /// What was checked, or the first thing that broke it.
    pub detail: String,
    /// Virtual time of the first violation, for `always_*`.
    pub at_ms: Option<u64>,
}

fn result(name: &str, failure: Option<String>, ok: String) -> CheckResult {
    CheckResult {
        name: name.to_string(),
        status: if failure.is_some() {
            Status::Fail
        } else {
            Status::Pass
        },
        detail: failure.unwrap_or(ok),
        at_ms: None,
    }
}

/// Why the scheduling checkers did not run, when they did not.
pub const SCHEDULER_MISSING: &str =
    "not run: the scenario has no [workload], so the scheduler cores were not started";

/// Evaluates every checker at the end of a run.
#[must_use]
pub fn evaluate(sim: &Simulation) -> Vec<CheckResult> {
    let mut out = always(sim);
    let views = views(sim);
    out.push(live_see_live(sim, &views));
    out.push(crashed_known_down(sim, &views));
    out.push(left_known_gone(sim, &views));
    out.push(ads_converged(sim, &views));
    match &sim.bench {
        Some(bench) => {
            out.push(tables_identical(sim, bench));
            out.push(services_at_count(sim, bench));
            out.push(services_back_at_count(sim, bench));
            out.push(rollouts_settle(sim, bench));
            out.push(discovery_complete(bench));
            out.push(drain_complete(sim, bench));
        }
        None => {
            for name in [
                "eventually_tables_identical",
                "eventually_services_at_count",
                "eventually_services_back_at_count",
                "eventually_rollouts_settle",
                "eventually_discovery_complete",
                "eventually_drain_complete",
            ] {
                out.push(skipped(name, SCHEDULER_MISSING));
            }
        }
    }
    out.push(crashes_detected(sim));
    out.push(views_incremental(sim));
    apply_known_failures(sim, &mut out);
    out
}

/// Marks listed checkers `known-fail` when they failed, and flags listed ones that passed.
fn apply_known_failures(sim: &Simulation, results: &mut [CheckResult]) {
    let known = &sim.scenario.checks.known_failures;
    for r in results.iter_mut() {
        let Some(reason) = known.get(&r.name) else {
            continue;
        };
        match r.status {
            Status::Fail => {
                r.status = Status::KnownFail;
                r.detail = format!("{} [known: {reason}]", r.detail);
            }
            Status::Pass => {
                r.detail = format!(
                    "{} [listed as known failure but passed: {reason}]",
                    r.detail
                );
            }
            _ => {}
        }
    }
}

fn skipped(name: &str, why: &str) -> CheckResult {
    CheckResult {
        name: name.to_string(),
        status: Status::Skipped,
        detail: why.to_string(),
        at_ms: None,
    }
}

fn always(sim: &Simulation) -> Vec<CheckResult> {
    let mut out = Vec::new();
    let name = "always_intact_datagrams_accepted";
    let broken = sim.violations.iter().find(|v| v.check == name);
    out.push(CheckResult {
        name: name.to_string(),
        status: if broken.is_some() {
            Status::Fail
        } else {
            Status::Pass
        },
        detail: broken.map_or_else(
            || {
                format!(
                    "{} intact datagrams delivered, none refused",
                    sim.counters.datagrams_delivered - sim.counters.corrupted_delivered
                )
            },
            |v| v.event.clone(),
        ),
        at_ms: broken.map(|v| v.at_ms),
    });
    let f = sim
        .bench
        .as_ref()
        .map(|b| b.watch.figures.clone())
        .unwrap_or_default();
    for (name, ok) in [
        (
            "always_no_node_overcommitted",
            "no node's running processes ever reserved more than its capacity".to_string(),
        ),
        (
            "always_majority_tasks_kept",
            format!(
                "{} kills, {} on nodes that stayed on the majority side since the task started, \
                 none of a task that started as its slot's only copy (but {} replaced by a \
                 rolling update, {} restarted after failing their checks, {} stopped by a \
                 drain, {} that lost a placement race to a copy started before its own start \
                 was reported)",
                f.kills,
                f.kills_on_majority_side,
                f.kills_for_update,
                f.kills_unhealthy,
                f.kills_for_drain,
                f.kills_of_raced
            ),
        ),
        (
            "always_duplicates_bounded",
            format!(
                "{} times a slot ran twice; the longest bounded one {:.1} s ({}), each within \
                 its job's stop_after_ms + {:.0} s; batch jobs that keep running when cut off: \
                 longest {:.1} s (not bounded by design)",
                f.duplicate_episodes,
                f.longest_bounded_duplicate_ms as f64 / 1000.0,
                f.longest_bounded_duplicate.as_deref().unwrap_or("none"),
                crate::sched::DUPLICATE_SLACK_MS as f64 / 1000.0,
                f.longest_unbounded_duplicate_ms as f64 / 1000.0
            ),
        ),
        (
            "always_max_parallel",
            format!(
                "{} voluntary replacements in {} deployments; at most {} of one deployment \
                 replaced and not done at any placement or sample, never above its \
                 max_parallel; {} pairs of one job's deployments overlapped, at most {} of a \
                 job's slots in flight across them (bound 2 × max_parallel on each side of a \
                 cut; {} across a cut)",
                f.voluntary_replacements,
                f.deployments,
                f.most_in_flight,
                f.overlaps,
                f.most_in_flight_job,
                f.most_in_flight_across_cut
            ),
        ),
        (
            "always_minority_condemns_nobody",
            format!(
                "{} lost marks written for other nodes' attempts, each by a node holding a \
                 majority (its quorum and the ground truth)",
                f.condemnations
            ),
        ),
        (
            "always_acknowledged_jobs_kept",
            sim.bench.as_ref().map_or(String::new(), |b| {
                format!(
                    "{} acknowledged jobs, each held by a running node at every sample",
                    b.tally.acknowledged.len()
                )
            }),
        ),
    ] {
        if sim.bench.is_none() {
            out.push(skipped(name, SCHEDULER_MISSING));
            continue;
        }
        out.push(always_result(sim, name, ok));
    }
    out.extend(discovery_always(sim));
    out.extend(drain_always(sim));
    out
}

/// Why the drain checkers did not run, when the scheduler did.
pub const DRAINS_MISSING: &str = "not run: the scenario's script issues no node command (drain)";

/// `always_drain_parallel` and `always_drain_no_new_placements`.
fn drain_always(sim: &Simulation) -> Vec<CheckResult> {
    let w = sim.bench.as_ref().map(|b| &b.drains);
    let enabled = w.is_some_and(|w| w.enabled());
    let f = w.map(|w| w.figures.clone()).unwrap_or_default();
    [
        (
            "always_drain_parallel",
            format!(
                "{} drain stops before the deadline ({} at or after it, unpaced by design): at \
                 most {} of one job in flight from one node, never above its max_parallel; each \
                 stop of a serving task left at least count − max_parallel slots serving \
                 (least margin {}); {} stops while another draining node had the same job in \
                 flight",
                f.paced_stops,
                f.deadline_stops,
                f.most_in_flight,
                f.least_margin
                    .map_or_else(|| "none".to_string(), |m| m.to_string()),
                f.overlaps
            ),
        ),
        (
            "always_drain_no_new_placements",
            format!(
                "{} placements and admissions judged against {} node commands ({} refused): \
                 none on a node its writer knew refused work, none later than {:.1} s after \
                 the command by a node that stayed on the majority side; the slowest \
                 majority-side node learned a command after {} ms",
                f.placements,
                f.commands,
                f.refused,
                crate::sched::REPLICATION_MS as f64 / 1000.0,
                f.longest_learn_ms
            ),
        ),
    ]
    .into_iter()
    .map(|(name, ok)| match (&sim.bench, enabled) {
        (None, _) => skipped(name, SCHEDULER_MISSING),
        (Some(_), false) => skipped(name, DRAINS_MISSING),
        (Some(_), true) => always_result(sim, name, ok),
    })
    .collect()
}

/// Every node left draining ends with no service task (and nothing after its deadline).
fn drain_complete(sim: &Simulation, bench: &Workbench) -> CheckResult {
    let name = "eventually_drain_complete";
    let running: Vec<bool> = sim.nodes.iter().map(|n| n.life == Life::Running).collect();
    match bench.unfinished_drain(&running, sim.now) {
        None => skipped(name, DRAINS_MISSING),
        Some((judged, skipped_nodes, failure)) => result(
            name,
            failure,
            format!(
                "{judged} nodes left draining and running at the end hold no service task, \
                 nothing after their deadline, and wrote their drain complete when empty \
                 ({skipped_nodes} not running, not judged)"
            ),
        ),
    }
}

/// Why the discovery checkers did not run, when the scheduler did.
pub const SERVICES_MISSING: &str =
    "not run: the scenario's services have no ports and checks ([workload.services])";

/// `always_ports_unique` and `always_discovery_live_healthy`.
fn discovery_always(sim: &Simulation) -> Vec<CheckResult> {
    let d = sim.bench.as_ref().map(|b| &b.discovery);
    let enabled = d.is_some_and(|d| d.enabled());
    let f = d.map(|d| d.figures.clone()).unwrap_or_default();
    [
        (
            "always_ports_unique",
            format!(
                "{} ports bound at process starts, none held by another process of its node",
                f.port_bindings
            ),
        ),
        (
            "always_discovery_live_healthy",
            format!(
                "{} healthy listings held against the truth ({} probes, {} tasks hung); {} \
                 listed a process that no longer served, the longest {:.1} s, each within the \
                 bound ({:.1} s, + {:.1} s after a partition or while its agent is down); {} more by nodes on the \
                 minority side (stale by design)",
                f.listed,
                f.probes,
                f.hangs,
                f.stale,
                f.longest_stale_ms as f64 / 1000.0,
                f.bound_ms as f64 / 1000.0,
                crate::sched::DETECTION_MS as f64 / 1000.0,
                f.minority_stale
            ),
        ),
    ]
    .into_iter()
    .map(|(name, ok)| match (&sim.bench, enabled) {
        (None, _) => skipped(name, SCHEDULER_MISSING),
        (Some(_), false) => skipped(name, SERVICES_MISSING),
        (Some(_), true) => always_result(sim, name, ok),
    })
    .collect()
}

/// An `always_*` checker: the first violation recorded, or `ok`.
fn always_result(sim: &Simulation, name: &str, ok: String) -> CheckResult {
    let broken = sim.violations.iter().find(|v| v.check == name);
    CheckResult {
        name: name.to_string(),
        status: if broken.is_some() {
            Status::Fail
        } else {
            Status::Pass
        },
        detail: broken.map_or(ok, |v| v.event.clone()),
        at_ms: broken.map(|v| v.at_ms),
    }
}

/// Every live, healthy instance is in every running node's catalog at the end.
fn discovery_complete(bench: &Workbench) -> CheckResult {
    let name = "eventually_discovery_complete";
    if !bench.discovery.enabled() {
        return skipped(name, SERVICES_MISSING);
    }
    match &bench.discovery.complete {
        None => skipped(name, "no sample after the quiet time"),
        Some(Ok(what)) => result(
            name,
            None,
            format!(
                "{what} list every process that has served for longer than the bound as a \
                 healthy instance"
            ),
        ),
        Some(Err(why)) => result(name, Some(why.clone()), String::new()),
    }
}

fn running_nodes(sim: &Simulation) -> impl Iterator<Item = usize> + '_ {
    (0..sim.nodes.len()).filter(|&i| sim.nodes[i].life == Life::Running)
}

fn tables_identical(sim: &Simulation, bench: &Workbench) -> CheckResult {
    let mut reference: Option<(usize, &shoal_scheduler::Tables)> = None;
    let mut failure = None;
    let mut compared = 0;
    let mut in_flight = 0;
    let settled = bench.watch.settled_writes(sim.now);
    // Every op written before the last `OPS_IN_FLIGHT_MS` is in this replica's tables.
    let holds_settled = |t: &shoal_scheduler::Tables| {
        settled
            .iter()
            .all(|(actor, &counter)| t.clock().get(actor) >= counter)
    };
    for i in running_nodes(sim) {
        let Some(core) = bench.nodes[i].core.as_ref() else {
            continue;
        };
        compared += 1;
        match reference {
            None => reference = Some((i, core.tables())),
            Some((r, tables)) if failure.is_none() && tables != core.tables() => {
                // Replicas that differ only by ops written in the run's last moments are not
                // diverging: those ops are on their way (an exit at the run's last
                // millisecond). Equal clocks with different tables, or a missing older op,
                // are a failure.
                if tables.clock() != core.tables().clock()
                    && holds_settled(tables)
                    && holds_settled(core.tables())
                {
                    in_flight += 1;
                    continue;
                }
                failure = Some(format!(
                    "n{i}'s tables ({} rows) differ from n{r}'s ({} rows){}",
                    core.tables().row_count(),
                    tables.row_count(),
                    first_difference(core.tables(), tables)
                ));
            }
            Some(_) => {}
        }
    }
    result(
        "eventually_tables_identical",
        failure,
        format!(
            "{compared} running replicas hold identical job and attempt tables ({in_flight} \
             lacked only ops written in the last {:.0} s, still on their way)",
            crate::sched::OPS_IN_FLIGHT_MS as f64 / 1000.0
        ),
    )
}

/// Where two replicas' tables first differ, for the failure's detail: the first line that
/// differs in their pretty-printed forms, with the nearest lines above it that name a job,
/// slot, attempt and placer (only computed when the checker fails).
fn first_difference(a: &shoal_scheduler::Tables, b: &shoal_scheduler::Tables) -> String {
    let (a, b) = (format!("{a:#?}"), format!("{b:#?}"));
    let (a, b): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    let Some(at) = (0..a.len().max(b.len())).find(|&k| a.get(k) != b.get(k)) else {
        return String::new();
    };
    let mut names: Vec<&str> = Vec::new();
    for key in ["job:", "incarnation:", "slot:", "attempt:", "placer:"] {
        if let Some(line) = a[..at.min(a.len())]
            .iter()
            .rev()
            .map(|l| l.trim())
            .find(|l| l.starts_with(key))
        {
            names.push(line);
        }
    }
    format!(
        "; first difference under `{}`: `{}` against `{}`",
        names.join(" "),
        a.get(at).map_or("(end)", |l| l.trim()),
        b.get(at).map_or("(end)", |l| l.trim())
    )
}

fn services_at_count(sim: &Simulation, bench: &Workbench) -> CheckResult {
    let running: Vec<usize> = running_nodes(sim).collect();
    let settled_at = Millis(sim.now.0.saturating_sub(ROOM_SETTLE_MS));
    let count = bench.service_count(&running, settled_at);
    result(
        "eventually_services_at_count",
        count.off,
        format!(
            "{} services: none above its count, none below it while a node has room freed over \
             2 s before the end ({} below for lack of room)",
            count.services, count.short_of_room
        ),
    )
}

/// Every updated service ends on a complete deployment or a failed revert (`docs/services.md`,
/// §4), judged on the first running node's tables (`eventually_tables_identical` says whether
/// they all agree).
fn rollouts_settle(sim: &Simulation, bench: &Workbench) -> CheckResult {
    let core = running_nodes(sim).find_map(|i| bench.nodes[i].core.as_deref());
    let Some(core) = core else {
        return skipped("eventually_rollouts_settle", "no running node at the end");
    };
    let s = bench.unsettled_rollout(core, sim.plan.last_fault_ms);
    result(
        "eventually_rollouts_settle",
        s.first,
        format!(
            "{} updated services, each on a complete deployment at the end or on a revert \
             that a later fault failed ({}); {} deployments failed, {} reverts",
            s.services, s.failed_reverts, s.failed, s.reverts
        ),
    )
}

/// Every service was back at its count within `checks.back_at_count_s` of the last fault.
fn services_back_at_count(sim: &Simulation, bench: &Workbench) -> CheckResult {
    let last = sim.plan.last_fault_ms;
    let bound = (sim.scenario.checks.back_at_count_s * 1000.0) as u64;
    let back = bench.watch.figures.back_at_count_ms;
    let failure = match back {
        Some(t) if t <= last + bound => None,
        Some(t) => Some(format!(
            "the services were back at their counts {:.1} s after the last fault, over the \
             bound of {:.1} s",
            (t - last) as f64 / 1000.0,
            bound as f64 / 1000.0
        )),
        None => Some(format!(
            "the services never were all at their counts after the last fault: {}",
            bench
                .watch
                .off_count
                .as_deref()
                .unwrap_or("no sample after it")
        )),
    };
    result(
        "eventually_services_back_at_count",
        failure,
        format!(
            "every service at its count {:.1} s after the last fault (bound {:.1} s)",
            back.map_or(0, |t| t - last) as f64 / 1000.0,
            bound as f64 / 1000.0
        ),
    )
}

/// What the final checkers read of one member in one node's view: a quarter of a
/// [`MemberInfo`] (the whole ad), which at 1,000 nodes is a million entries held at once.
#[derive(Debug)]
struct Member {
    name: CompactString,
    generation: u64,
    status: MemberStatus,
    /// `ResourceAd::key` of the ad the view holds.
    ad: Option<(u64, u64)>,
}

impl From<MemberInfo> for Member {
    fn from(m: MemberInfo) -> Self {
        Member {
            name: m.id.name,
            generation: m.id.generation,
            status: m.status,
            ad: m.ad.map(|ad| ad.key()),
        }
    }
}

/// Every running node's view from its own core, by node index (`None` when not running).
fn views(sim: &Simulation) -> Vec<Option<Vec<Member>>> {
    sim.nodes
        .iter()
        .map(|n| match n.life {
            Life::Running | Life::Paused => n
                .core
                .as_ref()
                .map(|c| c.members().into_iter().map(Member::from).collect()),
            _ => None,
        })
        .collect()
}

fn find<'a>(view: &'a [Member], name: &str) -> Option<&'a Member> {
    view.binary_search_by(|m| m.name.as_str().cmp(name))
        .ok()
        .map(|k| &view[k])
}

/// The first `(observer, subject)` pair (by index) for which `bad` says the view is wrong.
fn first_bad(
    sim: &Simulation,
    views: &[Option<Vec<Member>>],
    subjects: impl Fn(Life) -> bool,
    bad: impl Fn(usize, Option<&Member>) -> Option<String>,
) -> (usize, Option<String>) {
    let mut pairs = 0;
    for (i, view) in views.iter().enumerate() {
        let Some(view) = view else { continue };
        for (j, subject) in sim.nodes.iter().enumerate() {
            if i == j || !subjects(subject.life) {
                continue;
            }
            pairs += 1;
            if let Some(why) = bad(j, find(view, &subject.name)) {
                return (pairs, Some(format!("n{i} sees n{j}: {why}")));
            }
        }
    }
    (pairs, None)
}

fn describe(m: Option<&Member>) -> String {
    m.map_or("never heard of it".into(), |m| {
        format!("{} as generation {}", m.status, m.generation)
    })
}

fn live_see_live(sim: &Simulation, views: &[Option<Vec<Member>>]) -> CheckResult {
    let (pairs, failure) = first_bad(sim, views, Life::is_up, |j, m| {
        let want = sim.nodes[j].generation;
        let ok = m.is_some_and(|m| m.status == MemberStatus::Alive && m.generation == want);
        (!ok).then(|| format!("{} (expected alive as generation {want})", describe(m)))
    });
    result(
        "eventually_live_see_live",
        failure,
        format!("{pairs} (observer, live node) pairs alive with the current generation"),
    )
}

fn not_alive(m: Option<&Member>) -> bool {
    !m.is_some_and(|m| matches!(m.status, MemberStatus::Alive | MemberStatus::Suspect))
}

fn crashed_known_down(sim: &Simulation, views: &[Option<Vec<Member>>]) -> CheckResult {
    let (pairs, failure) = first_bad(
        sim,
        views,
        |l| l == Life::Crashed,
        |_, m| (!not_alive(m)).then(|| format!("{} (expected down)", describe(m))),
    );
    result(
        "eventually_crashed_known_down",
        failure,
        format!("{pairs} (observer, crashed node) pairs: none seen alive or suspect"),
    )
}

fn left_known_gone(sim: &Simulation, views: &[Option<Vec<Member>>]) -> CheckResult {
    let (pairs, failure) = first_bad(
        sim,
        views,
        |l| l == Life::Left,
        |_, m| (!not_alive(m)).then(|| format!("{} (expected left or down)", describe(m))),
    );
    result(
        "eventually_left_known_gone",
        failure,
        format!("{pairs} (observer, departed node) pairs: none seen alive or suspect"),
    )
}

fn ads_converged(sim: &Simulation, views: &[Option<Vec<Member>>]) -> CheckResult {
    let settling = (0..sim.nodes.len())
        .filter(|&j| sim.nodes[j].life.is_up() && sim.ad_settling(j))
        .count();
    let (pairs, failure) = first_bad(sim, views, Life::is_up, |j, m| {
        if sim.ad_settling(j) {
            return None;
        }
        let want = sim.nodes[j].core.as_ref().map(|c| c.own_ad().key());
        let have = m.and_then(|m| m.ad);
        (have != want).then(|| format!("ad {have:?}, its own is {want:?}"))
    });
    result(
        "eventually_ads_converged",
        failure,
        format!(
            "{pairs} (observer, live node) pairs hold the newest resource ad (except from {settling} \
             nodes whose ad changed within two sync periods of the end)"
        ),
    )
}

/// The member views are kept current incrementally (only the members each input touched are
/// looked up); a full scan every few seconds counts what that missed. Any correction means
/// the incremental path lost track of some foca state change.
fn views_incremental(sim: &Simulation) -> CheckResult {
    let live: u64 = sim
        .nodes
        .iter()
        .filter_map(|n| n.core.as_ref())
        .map(|c| c.stats().view_corrections)
        .sum();
    let total = sim.counters.view_corrections + live;
    result(
        "finally_views_incremental",
        (total > 0).then(|| {
            format!("the periodic full scan corrected {total} member statuses the incremental updates missed")
        }),
        "the periodic full member scans found every view already current".to_string(),
    )
}

fn crashes_detected(sim: &Simulation) -> CheckResult {
    let missed = sim
        .observer
        .crashes
        .iter()
        .filter(|c| c.first_down_ms.is_none())
        .filter(|c| sim.nodes[c.node].generation == c.generation)
        .map(|c| format!("n{}#{} at {} ms", c.node, c.generation, c.at_ms))
        .next();
    result(
        "finally_every_crash_detected",
        missed.map(|m| format!("crash never marked down by anyone: {m}")),
        format!(
            "{} crashes, each marked down by some node (crashes followed by a restart may be \
             refuted by the new generation first)",
            sim.observer.crashes.len()
        ),
    )
}
