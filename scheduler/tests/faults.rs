//! The fault rules of `docs/faults.md` on the in-memory harness: a node without a majority
//! condemns and places nothing and stops its services after `stop_after_ms`; the incumbent
//! wins over its replacement; a restarted node restores its logged writes as they were.

use std::collections::BTreeSet;

use shoal_scheduler::testing::Cluster;
use shoal_scheduler::{JobSpec, TaskEvent, TaskState};

fn spread_service(id: &str, count: u32) -> JobSpec {
    JobSpec::from_json_str(&format!(
        r#"{{"id": "{id}", "type": "service", "count": {count}, "command": "sleep",
            "args": ["600"], "placement": "spread", "resources": {{"cpu": 100, "memory": 32}}}}"#
    ))
    .unwrap()
}

fn running_everywhere(c: &Cluster, job: &str, n: usize) -> bool {
    c.nodes.iter().filter(|(_, node)| node.up).all(|(name, _)| {
        c.view(name, job)
            .is_some_and(|v| v.count_in(TaskState::Running) == n)
    })
}

fn running_on(c: &Cluster, nodes: &[&str], job: &str, n: usize) -> bool {
    nodes.iter().all(|name| {
        c.view(name, job)
            .is_some_and(|v| v.count_in(TaskState::Running) == n)
    })
}

/// Three 4-core nodes running `web`, a service of 3 spread over them, converged.
fn three_running_web(seed: u64) -> Cluster {
    let mut c = Cluster::new(3, 4000, 4096, seed);
    c.submit("n1", spread_service("web", 3)).unwrap();
    assert!(c.run_until(10_000, |c| running_everywhere(c, "web", 3) && c.converged()));
    c
}

/// No node refused a message for an ownership rule (`when` says at which point of the test).
fn nobody_refused(c: &Cluster, when: &str) {
    for (name, n) in &c.nodes {
        let refused = n.sched.stats().refused_messages;
        assert_eq!(refused, 0, "{when}: {name} refused {refused} message(s)");
    }
}

/// A node whose name is the placer of some attempt in n1's tables (n2, n3, n4, then n1).
fn a_node_that_placed(c: &Cluster) -> &'static str {
    ["n2", "n3", "n4", "n1"]
        .into_iter()
        .find(|n| {
            c.nodes["n1"]
                .sched
                .tables()
                .assignments()
                .any(|(id, _)| id.placer.as_str() == *n)
        })
        .unwrap()
}

/// Indexes into `c.processes` of the processes running now, split by whether their node is
/// in `nodes`.
fn alive_processes(c: &Cluster, nodes: &[&str]) -> (BTreeSet<usize>, BTreeSet<usize>) {
    let mut inside = BTreeSet::new();
    let mut outside = BTreeSet::new();
    for (i, p) in c.processes.iter().enumerate() {
        if p.outcome.is_none() {
            if nodes.contains(&p.node.as_str()) {
                inside.insert(i);
            } else {
                outside.insert(i);
            }
        }
    }
    (inside, outside)
}

fn still_alive(c: &Cluster, which: &BTreeSet<usize>) -> Vec<String> {
    which
        .iter()
        .filter(|&&i| c.processes[i].outcome.is_some())
        .map(|&i| {
            let p = &c.processes[i];
            format!(
                "{} slot {} on {}: {:?}",
                p.task.job, p.task.slot, p.node, p.outcome
            )
        })
        .collect()
}

/// No attempt targeted at another node is marked lost in `observer`'s tables.
fn condemned_by(c: &Cluster, observer: &str) -> usize {
    let t = c.nodes[observer].sched.tables();
    t.assignments()
        .filter(|(id, a)| a.target != observer && t.state(id).is_lost())
        .count()
}

const MAJORITY: [&str; 4] = ["n1", "n2", "n3", "n4"];

#[test]
fn an_isolated_node_condemns_nobody_and_its_tasks_win_after_a_short_cut() {
    let mut c = Cluster::new(5, 4000, 4096, 21);
    c.submit("n1", spread_service("web", 10)).unwrap();
    assert!(c.run_until(5_000, |c| running_everywhere(c, "web", 10)));
    assert!(c.run_until(5_000, |c| c.converged()));
    let (on_n5, elsewhere) = alive_processes(&c, &["n5"]);
    assert!(!on_n5.is_empty(), "spread puts some of the 10 on n5");

    // Cut n5 off for 3 s, less than the default stop_after_ms (10 s).
    c.partition(&[&["n5"]]);
    assert!(
        c.run_until(3_000, |c| running_on(c, &MAJORITY, "web", 10)
            && c.running_count() == 10 + on_n5.len()),
        "the majority replaces n5's tasks"
    );
    c.run_for(1_000, |c| {
        assert_eq!(condemned_by(c, "n5"), 0, "n5 alone condemned someone");
        c.assert_no_overcommit();
    });
    c.heal();
    assert!(c.run_until(10_000, |c| c.converged()
        && running_everywhere(c, "web", 10)
        && c.running_count() == 10));
    assert_eq!(
        still_alive(&c, &elsewhere),
        Vec::<String>::new(),
        "healthy tasks died"
    );
    assert_eq!(
        still_alive(&c, &on_n5),
        Vec::<String>::new(),
        "the incumbents on n5 never stopped, so they win"
    );
    let t = c.nodes["n1"].sched.tables();
    let reclaimed = t
        .assignments()
        .filter(|(id, _)| t.state(id).is_reclaimed())
        .count();
    assert_eq!(
        reclaimed,
        on_n5.len(),
        "n5 reclaimed each of its tasks once"
    );
}

/// The same short cut with `reconcile = "keep_replacement"`: the node back from the cut
/// stops its copies, and the replacements the majority placed are the ones that stay.
#[test]
fn with_keep_replacement_the_returning_copies_stop_and_the_replacements_stay() {
    let mut c = Cluster::new(5, 4000, 4096, 21);
    let spec = JobSpec::from_json_str(
        r#"{"id": "web", "type": "service", "count": 10, "command": "sleep", "args": ["600"],
            "placement": "spread", "resources": {"cpu": 100, "memory": 32},
            "disconnect": {"reconcile": "keep_replacement"}}"#,
    )
    .unwrap();
    c.submit("n1", spec).unwrap();
    assert!(c.run_until(5_000, |c| running_everywhere(c, "web", 10) && c.converged()));
    let (on_n5, elsewhere) = alive_processes(&c, &["n5"]);
    assert!(!on_n5.is_empty(), "spread puts some of the 10 on n5");

    c.partition(&[&["n5"]]);
    assert!(
        c.run_until(3_000, |c| running_on(c, &MAJORITY, "web", 10)
            && c.running_count() == 10 + on_n5.len()),
        "the majority replaces n5's tasks"
    );
    let (_, with_replacements) = alive_processes(&c, &["n5"]);
    c.heal();
    assert!(c.run_until(10_000, |c| c.converged()
        && running_everywhere(c, "web", 10)
        && c.running_count() == 10));
    assert_eq!(
        still_alive(&c, &with_replacements),
        Vec::<String>::new(),
        "a replacement or a task that was never cut off died"
    );
    assert!(
        with_replacements.is_superset(&elsewhere),
        "the tasks elsewhere are among them"
    );
    assert_eq!(
        still_alive(&c, &on_n5).len(),
        on_n5.len(),
        "every copy on n5 stopped: {:?}",
        on_n5
            .iter()
            .map(|&i| &c.processes[i].outcome)
            .collect::<Vec<_>>()
    );
    let t = c.nodes["n1"].sched.tables();
    assert_eq!(
        t.assignments()
            .filter(|(id, _)| t.state(id).is_reclaimed())
            .count(),
        0,
        "nothing was reclaimed"
    );
}

#[test]
fn a_cut_off_node_stops_its_services_after_stop_after_and_no_healthy_task_dies() {
    let mut c = Cluster::new(5, 4000, 4096, 22);
    c.submit("n2", spread_service("web", 10)).unwrap();
    assert!(c.run_until(5_000, |c| running_everywhere(c, "web", 10) && c.converged()));
    let (on_n5, elsewhere) = alive_processes(&c, &["n5"]);
    assert!(!on_n5.is_empty());

    c.partition(&[&["n5"]]);
    // Before the bound, n5 keeps its tasks; after it, it has stopped them itself.
    c.run_for(9_500, |c| assert_eq!(condemned_by(c, "n5"), 0));
    assert_eq!(
        still_alive(&c, &on_n5),
        Vec::<String>::new(),
        "stopped too early"
    );
    c.run_for(1_000, |_| {});
    let stopped: Vec<&TaskEvent> = on_n5
        .iter()
        .filter_map(|&i| c.processes[i].outcome.as_ref())
        .collect();
    assert_eq!(
        stopped.len(),
        on_n5.len(),
        "n5 still runs its tasks past 10 s"
    );
    assert_eq!(
        c.running_count(),
        10,
        "after the bound, each slot runs once"
    );

    c.run_for(5_000, |_| {});
    c.heal();
    assert!(c.run_until(10_000, |c| c.converged()
        && running_everywhere(c, "web", 10)
        && c.running_count() == 10));
    assert_eq!(
        still_alive(&c, &elsewhere),
        Vec::<String>::new(),
        "healthy tasks died"
    );
}

/// A node that flaps in and out of its majority (a one-way or lossy link) stops its services
/// `stop_after_ms` after the start of the streak: a short spell of majority in between does
/// not restart the clock, so its duplicates stay bounded.
#[test]
fn a_flapping_node_stops_its_services_from_the_start_of_the_streak() {
    let mut c = Cluster::new(5, 4000, 4096, 24);
    c.submit("n3", spread_service("web", 10)).unwrap();
    assert!(c.run_until(5_000, |c| running_everywhere(c, "web", 10) && c.converged()));
    let (on_n5, _) = alive_processes(&c, &["n5"]);
    assert!(!on_n5.is_empty());
    let lost_majority = |c: &Cluster| !c.nodes["n5"].sched.quorum().majority;
    let start = c.now;

    // Cut 6 s, heal until n5 holds its majority again for 2 s, cut again.
    c.partition(&[&["n5"]]);
    assert!(c.run_until(5_000, lost_majority));
    let first_loss = c.now;
    c.run_for(6_000, |_| {});
    c.heal();
    assert!(c.run_until(5_000, |c| !lost_majority(c)));
    c.run_for(2_000, |_| {});
    assert_eq!(still_alive(&c, &on_n5), Vec::<String>::new());
    c.partition(&[&["n5"]]);
    assert!(c.run_until(5_000, lost_majority));
    // Stopped 10 s after the first loss (plus a tick), not 10 s after the second one.
    let bound = first_loss.since(start) + 10_000 + 500;
    let left = bound.saturating_sub(c.now.since(start));
    c.run_for(left, |_| {});
    let stopped = on_n5
        .iter()
        .filter(|&&i| c.processes[i].outcome.is_some())
        .count();
    assert_eq!(
        stopped,
        on_n5.len(),
        "n5 still runs its tasks 10 s after the streak began"
    );
}

#[test]
fn a_minority_places_nothing_and_the_heal_moves_nothing() {
    let mut c = Cluster::new(5, 4000, 4096, 23);
    c.submit("n1", spread_service("web", 5)).unwrap();
    assert!(c.run_until(5_000, |c| running_everywhere(c, "web", 5) && c.converged()));
    let (_, pre_fault) = alive_processes(&c, &["n4", "n5"]);
    c.partition(&[&["n1", "n2", "n3"], &["n4", "n5"]]);
    // A job submitted to each side during the partition: the majority places its own; the
    // minority's waits for the heal and says why.
    c.submit("n1", spread_service("api", 3)).unwrap();
    c.submit("n4", spread_service("late", 2)).unwrap();
    assert!(c.run_until(5_000, |c| running_on(c, &["n1", "n2", "n3"], "api", 3)));
    c.run_for(2_000, |c| {
        assert_eq!(condemned_by(c, "n4") + condemned_by(c, "n5"), 0);
    });
    let late = c.view("n4", "late").unwrap();
    assert_eq!(late.count_in(TaskState::Running), 0);
    let reason = late.tasks[0].pending_reason.clone().unwrap_or_default();
    assert!(reason.contains("waiting for a majority"), "{reason}");
    // The job submitted to the majority during the partition stays where it runs.
    let api: BTreeSet<usize> = alive_processes(&c, &["n4", "n5"])
        .1
        .into_iter()
        .filter(|&i| c.processes[i].task.job == "api")
        .collect();
    assert_eq!(api.len(), 3);
    c.heal();
    assert!(c.run_until(15_000, |c| c.converged()
        && running_everywhere(c, "web", 5)
        && running_everywhere(c, "api", 3)
        && running_everywhere(c, "late", 2)));
    assert_eq!(
        still_alive(&c, &pre_fault),
        Vec::<String>::new(),
        "tasks of the majority from before the fault died"
    );
    assert_eq!(
        still_alive(&c, &api),
        Vec::<String>::new(),
        "a job placed by the majority moved after the heal"
    );
}

#[test]
fn a_restarted_node_restores_its_logged_writes_as_they_were() {
    let mut c = Cluster::new(3, 4000, 4096, 24);
    let receipt = c.submit("n1", spread_service("web", 3)).unwrap();
    assert!(c.run_until(2_000, |c| c.nodes["n1"].sched.is_durable(&receipt)));
    assert!(c.run_until(5_000, |c| running_everywhere(c, "web", 3) && c.converged()));
    let (_, running) = alive_processes(&c, &["n1"]);
    // n1 crashes before any snapshot: only its job log survives.
    c.crash("n1");
    c.declare_down("n1");
    c.stop("n2", "web");
    assert!(c.run_until(5_000, |c| c.running_count() == 0));
    c.restart("n1", None);
    assert!(c.run_until(10_000, |c| c.converged()));
    c.run_for(2_000, |c| {
        assert_eq!(c.running_count(), 0, "a stopped job came back")
    });
    let v = c.view("n1", "web").expect("the job is still known");
    assert_eq!(v.count_in(TaskState::Running), 0);
    assert!(!running.is_empty());

    // Without the stop, a restart of the accepting node restarts nothing elsewhere.
    let mut c = three_running_web(25);
    let (_, elsewhere) = alive_processes(&c, &["n1"]);
    c.crash("n1");
    c.restart("n1", None);
    assert!(c.run_until(10_000, |c| c.converged() && running_everywhere(c, "web", 3)));
    assert_eq!(still_alive(&c, &elsewhere), Vec::<String>::new());
    assert_eq!(c.processes.len(), 4, "only n1's own task was started again");
}

#[test]
fn a_down_member_is_condemned_only_after_settle_ms_with_the_majority() {
    let mut c = Cluster::new(5, 4000, 4096, 23);
    c.settle_ms = 4_000;
    c.submit("n1", spread_service("web", 10)).unwrap();
    assert!(c.run_until(5_000, |c| running_everywhere(c, "web", 10)));
    assert!(c.run_until(5_000, |c| c.converged()));
    let (on_n5, _) = alive_processes(&c, &["n5"]);
    assert!(!on_n5.is_empty());
    c.crash("n5");
    c.declare_down("n5");
    c.run_for(3_900, |c| {
        for name in MAJORITY {
            assert_eq!(
                condemned_by(c, name),
                0,
                "{name} condemned before settle_ms"
            );
        }
    });
    assert!(
        c.run_until(1_000, |c| condemned_by(c, "n1") == on_n5.len()),
        "once settled, the majority condemns n5's tasks"
    );
    assert!(
        c.run_until(3_000, |c| running_on(c, &MAJORITY, "web", 10)
            && c.running_count() == 10),
        "and replaces them"
    );
}

/// A node restarted with only its job log (it crashed before any snapshot) must learn the
/// cluster's tables before it places. Placing from its stale view starts copies of slots
/// that run elsewhere, and re-placing a slot it had placed in its first life reuses that
/// attempt's id, for another target when placement picks differently: the ownership rules
/// then refuse every message carrying either write, for good (found on real agents:
/// `tests/jobs.rs`, `a_restarted_node_reloads_its_tables_and_kills_what_was_superseded`).
#[test]
fn a_node_restarted_without_a_snapshot_catches_up_before_it_places() {
    for seed in 40..48 {
        // Anti-entropy as slow as an agent's (1 s): a restarted node learns the others'
        // tables from its own digests, not from a peer's periodic one.
        let config = shoal_scheduler::SchedulerConfig {
            anti_entropy_interval: std::time::Duration::from_secs(1),
            ..shoal_scheduler::testing::fast_config()
        };
        let mut c = Cluster::with_config(4, 4000, 4096, seed, config);
        c.submit("n1", spread_service("web", 3)).unwrap();
        assert!(c.run_until(5_000, |c| running_everywhere(c, "web", 3) && c.converged()));
        // Crash a node that placed something, let the others re-place its work, restart it.
        let victim = a_node_that_placed(&c);
        c.crash(victim);
        c.declare_down(victim);
        assert!(
            c.run_until(15_000, |c| running_everywhere(c, "web", 3)),
            "seed {seed}: the survivors re-place {victim}'s slot"
        );
        let started = c.processes.len();
        c.restart(victim, None);
        assert!(
            c.run_until(15_000, |c| c.converged() && running_everywhere(c, "web", 3)),
            "seed {seed}: the cluster converges after {victim} restarts"
        );
        assert_eq!(
            c.nodes[victim].sched.stats().placements,
            0,
            "seed {seed}: every slot runs elsewhere, yet the restarted {victim} placed"
        );
        assert_eq!(
            c.processes.len(),
            started,
            "seed {seed}: a process started after {victim} restarted"
        );
        for (name, n) in &c.nodes {
            assert_eq!(
                n.sched.stats().refused_messages,
                0,
                "seed {seed}: {name} refused a message after {victim} restarted"
            );
        }
    }
}

/// A one-node cluster restarted from its job log has nobody to catch up with: it acts on its
/// own tables once the catch-up runs out, without waiting for another input.
#[test]
fn a_lone_node_restarted_from_its_job_log_places_again() {
    let mut c = Cluster::new(1, 4000, 4096, 50);
    c.submit("n1", spread_service("web", 2)).unwrap();
    assert!(c.run_until(5_000, |c| running_everywhere(c, "web", 2)));
    c.crash("n1");
    c.restart("n1", None);
    c.run_for(9_000, |c| {
        assert_eq!(c.running_count(), 0, "placed before the catch-up ran out")
    });
    assert!(
        c.run_until(3_000, |c| running_everywhere(c, "web", 2)),
        "{:?}",
        c.view("n1", "web")
    );
}

/// A node that has not heard of a restart yet still sees the target's previous generation
/// down. Attempts placed on the new generation, by nodes that saw it back, are not condemned
/// on that old mark: no task of the restarted node is killed (simulator finding 16, where a
/// restarted node's first placement was condemned 3 ms after it was made).
#[test]
fn a_down_mark_of_an_older_generation_condemns_nothing_placed_since() {
    let mut c = Cluster::new(3, 4000, 4096, 7);
    c.crash("n1");
    c.declare_down("n1");
    assert!(c.run_until(10_000, |c| c.converged()));
    // n2 and n3 keep seeing generation 1 of n1 down after n1 restarts as generation 2; n1,
    // which sees everyone, places some slots on itself.
    for observer in ["n2", "n3"] {
        c.believes_down
            .insert(observer.into(), ["n1".to_string()].into());
        c.stale_generation
            .insert(observer.into(), [("n1".to_string(), 1)].into());
    }
    c.restart("n1", None);
    c.submit("n1", spread_service("web", 9)).unwrap();
    assert!(
        c.run_until(20_000, |c| running_on(c, &["n1"], "web", 9)
            && c.processes
                .iter()
                .any(|p| p.node == "n1" && p.outcome.is_none())),
        "n1 never ran its share: {:?}",
        c.view("n2", "web")
    );
    let on_n1: BTreeSet<usize> = c
        .processes
        .iter()
        .enumerate()
        .filter(|(_, p)| p.node == "n1" && p.outcome.is_none())
        .map(|(i, _)| i)
        .collect();
    // Well past the quorum's settle time and the absent-settle wait. Without the generation
    // check n2 and n3 condemn n1's attempts and n1 reclaims them, back and forth (200 rounds
    // in 40 s); in the simulator the loss killed a task admitted but not yet started.
    c.run_for(40_000, |_| {});
    for (name, node) in &c.nodes {
        let tables = node.sched.tables();
        let condemned: Vec<String> = tables
            .assignments()
            .filter(|(_, a)| a.target.as_str() == "n1")
            .map(|(id, _)| (id, tables.state(id)))
            .filter(|(_, s)| s.is_lost() || s.is_reclaimed())
            .map(|(id, s)| format!("slot {} attempt {}: {s:?}", id.slot, id.attempt))
            .collect();
        assert!(
            condemned.is_empty(),
            "{name} holds n1's attempts condemned: {condemned:?}"
        );
    }
    let killed = still_alive(&c, &on_n1);
    assert!(
        killed.is_empty(),
        "condemned on an older generation's down mark: {killed:?}"
    );
}

/// A node comes back while its peers' answers to its catch-up arrive in many small messages
/// (4 ops each here; 4,096 on agents, so a node that missed more): it must neither place nor
/// admit from a part of the tables. Seen without it: a proposal of the node's first life,
/// whose loss and replacement were in a later message, admitted and started again beside its
/// replacement (a duplicate). Every way back: from its job log, and with an empty data dir
/// (a replaced disk) under its old name, whose attempt ids name it as placer like its first
/// life's, started with `--join` or without (a cluster's first node, which its peers join
/// again: it catches up on its first contact with one).
#[test]
fn a_node_back_catches_up_before_it_places_or_admits() {
    let jobs = ["web", "api", "db", "cache", "queue"];
    // How the node comes back: from its job log, with an empty data dir and `--join`, or
    // with an empty data dir and no `--join` (a cluster's first node, joined again by peers).
    #[derive(Debug, Clone, Copy)]
    enum Back {
        Log,
        EmptyJoining,
        EmptyJoined,
    }
    let ways = [Back::Log, Back::EmptyJoining, Back::EmptyJoined];
    for (seed, back) in (60..68).flat_map(|s| ways.map(|w| (s, w))) {
        let config = shoal_scheduler::SchedulerConfig {
            anti_entropy_interval: std::time::Duration::from_secs(1),
            max_ops_per_message: std::num::NonZeroUsize::new(4).unwrap(),
            ..shoal_scheduler::testing::fast_config()
        };
        let mut c = Cluster::with_config(4, 4000, 4096, seed, config);
        for (k, job) in jobs.iter().enumerate() {
            let writer = format!("n{}", k % 4 + 1);
            c.submit(&writer, spread_service(job, 3)).unwrap();
        }
        let all_running = |c: &Cluster| jobs.iter().all(|j| running_everywhere(c, j, 3));
        assert!(c.run_until(10_000, |c| all_running(c) && c.converged()));
        let victim = a_node_that_placed(&c);
        c.crash(victim);
        c.declare_down(victim);
        assert!(
            c.run_until(20_000, all_running),
            "seed {seed}: the survivors re-place {victim}'s slots"
        );
        let started = c.processes.len();
        match back {
            Back::Log => c.restart(victim, None),
            Back::EmptyJoining => c.restart_empty(victim, true),
            Back::EmptyJoined => c.restart_empty(victim, false),
        }
        assert!(
            c.run_until(20_000, |c| c.converged() && all_running(c)),
            "seed {seed}: the cluster converges after {victim} comes back ({back:?})"
        );
        nobody_refused(
            &c,
            &format!("seed {seed}, after {victim} came back ({back:?})"),
        );
        assert_eq!(
            c.processes.len(),
            started,
            "seed {seed}: a process started after {victim} came back, though every slot ran: {:?}",
            &c.processes[started..]
        );
    }
}

/// A clean restart (the agent's final snapshot was its last act, and the store says so)
/// writes on as the same actor: the version vectors do not grow, and every replica takes its
/// next ops as they come. A crash restart still writes as a new actor, since the crashed start
/// may have sent ops its last snapshot lacks.
#[test]
fn a_clean_restart_writes_on_as_the_same_actor() {
    let mut c = three_running_web(21);
    let actors = |c: &Cluster| c.nodes["n1"].sched.tables().clock().iter().count();
    let before = actors(&c);
    for round in 0..3u32 {
        let n3 = &c.nodes["n3"].sched;
        let (start, snapshot) = (n3.actor().start, n3.snapshot());
        c.restart_agent("n3", &snapshot);
        c.nodes
            .get_mut("n3")
            .unwrap()
            .sched
            .continue_writing_as(start);
        // The switch waits for a peer's answer to the catch-up.
        assert!(c.run_until(5_000, |c| c.nodes["n3"].sched.actor().start == start));
        // n3 writes: a job submitted through it.
        let job = format!("more{round}");
        c.submit("n3", spread_service(&job, 3)).unwrap();
        assert!(
            c.run_until(10_000, |c| running_everywhere(c, &job, 3) && c.converged()),
            "round {round}: the cluster takes the restarted node's writes"
        );
        assert_eq!(
            actors(&c),
            before,
            "round {round}: a clean restart added an actor"
        );
    }
    nobody_refused(&c, "");
    assert!(
        running_everywhere(&c, "web", 3),
        "the first job ran on throughout"
    );

    // A crash restart: a new actor.
    let snapshot = c.nodes["n3"].sched.snapshot();
    c.crash("n3");
    c.restart("n3", Some(&snapshot));
    c.submit("n3", spread_service("after", 3)).unwrap();
    assert!(c.run_until(10_000, |c| running_everywhere(c, "after", 3)
        && c.converged()));
    assert_eq!(actors(&c), before + 1);
}

/// A data dir restored from a copy: the "final" snapshot is older than what its start went on
/// to write. The catch-up's answer brings the start's later ops, so the node does not write on
/// as it (two different ops under one dot would split the replicas for good) and goes on as a
/// new actor; nothing is refused and the cluster converges.
#[test]
fn a_final_snapshot_older_than_its_start_is_not_written_on() {
    let mut c = three_running_web(22);
    let n3 = &c.nodes["n3"].sched;
    let (start, copy) = (n3.actor().start, n3.snapshot());
    // The start writes on after the copy was made: a job no node has room for yet, so that
    // nothing runs that the copy does not know of (the restarted node would write about it
    // before its catch-up, which keeps it a new actor for another reason).
    let mut later = spread_service("later", 1);
    later.resources.cpu = 4000;
    c.submit("n3", later).unwrap();
    assert!(c.run_until(10_000, |c| c.converged()));
    c.restart_agent("n3", &copy);
    c.nodes
        .get_mut("n3")
        .unwrap()
        .sched
        .continue_writing_as(start);
    assert!(c.run_until(5_000, |c| c.converged()));
    assert_ne!(
        c.nodes["n3"].sched.actor().start,
        start,
        "wrote on as the copied start"
    );
    c.submit("n3", spread_service("after", 3)).unwrap();
    assert!(c.run_until(10_000, |c| running_everywhere(c, "after", 3)
        && c.converged()));
    nobody_refused(&c, "");
}

/// A proposal addressed to a node's earlier start, which crashed before it arrived, is
/// refused by the start that finds it on catching up, and its slot is placed again. Admitted
/// instead, its task could be killed a moment after it started: its placer condemns what it
/// placed on a start it saw die (the simulator's `workload-churn-reap`, seeds 19 and 314: a
/// node back from a crash, or from a graceful leave, started such a task and killed it as
/// `Lost` 4 ms later, its slot's only copy).
#[test]
fn a_proposal_to_an_earlier_start_is_refused_and_placed_again() {
    let mut c = Cluster::new(3, 4000, 4096, 11);
    assert!(c.run_until(5_000, |c| c.converged()));
    let snapshot = c.nodes["n3"].sched.snapshot();
    c.crash("n3");
    let pinned = JobSpec::from_json_str(
        r#"{"id": "pinned", "type": "service", "count": 1, "command": "sleep",
            "args": ["600"], "resources": {"cpu": 100, "memory": 32},
            "constraints": ["node == n3"]}"#,
    )
    .unwrap();
    c.submit("n1", pinned).unwrap();
    assert!(c.run_until(
        2_000,
        |c| c.nodes["n1"].sched.tables().assignments().count() == 1
    ));
    let (first, placed) = {
        let tables = c.nodes["n1"].sched.tables();
        let (id, a) = tables.assignments().next().unwrap();
        (id.clone(), a.generation)
    };
    assert_eq!(placed, 1, "placed on n3's first start");

    c.restart("n3", Some(&snapshot));
    assert!(
        c.run_until(10_000, |c| running_on(c, &["n1", "n2", "n3"], "pinned", 1)),
        "the slot never ran again: {:?}",
        c.view("n1", "pinned")
    );
    let state = c.nodes["n1"].sched.tables().state(&first);
    assert!(
        matches!(&state, shoal_scheduler::table::AttemptState::Rejected { reason } if reason.contains("earlier start")),
        "the proposal to n3's first start: {state:?}"
    );
    assert!(
        c.processes.iter().all(|p| p.task != first),
        "a task of the proposal to n3's first start ran"
    );
    nobody_refused(&c, "at the end");
}
