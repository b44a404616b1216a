//! Multi-node scenarios on the in-memory harness: several schedulers wired by direct message
//! passing, a fake clock and fake executors.

use std::collections::BTreeMap;

use shoal_scheduler::testing::{Behavior, Cluster};
use shoal_scheduler::{AttemptState, JobSpec, JobStatus, TaskEvent, TaskState};

fn service(id: &str, count: u32, cpu: u64) -> JobSpec {
    JobSpec::from_json_str(&format!(
        r#"{{"id": "{id}", "type": "service", "count": {count}, "command": "sleep", "args": ["600"],
            "resources": {{"cpu": {cpu}, "memory": 32}}}}"#
    ))
    .unwrap()
}

fn batch(id: &str, count: u32) -> JobSpec {
    JobSpec::from_json_str(&format!(
        r#"{{"id": "{id}", "type": "batch", "count": {count}, "command": "true",
            "resources": {{"cpu": 100, "memory": 32}}}}"#
    ))
    .unwrap()
}

fn all_running(c: &Cluster, job: &str, n: usize) -> bool {
    c.nodes.keys().filter(|k| c.nodes[*k].up).all(|k| {
        c.view(k, job)
            .is_some_and(|v| v.count_in(TaskState::Running) == n)
    })
}

#[test]
fn service_of_six_runs_and_every_node_agrees() {
    let mut c = Cluster::new(3, 4000, 4096, 1);
    c.submit("n1", service("web", 6, 100)).unwrap();
    assert!(
        c.run_until(5_000, |c| all_running(c, "web", 6)),
        "{:#?}",
        c.view("n1", "web")
    );
    assert_eq!(c.running_count(), 6);
    assert!(c.run_until(5_000, |c| c.converged()));
    let views: Vec<_> = ["n1", "n2", "n3"]
        .iter()
        .map(|n| c.view(n, "web").unwrap())
        .collect();
    assert!(views.windows(2).all(|w| w[0] == w[1]), "{views:#?}");
    assert_eq!(views[0].status, JobStatus::Running);
    c.assert_no_overcommit();
}

#[test]
fn batch_of_200_exits_zero_exactly_once() {
    let mut c = Cluster::new(4, 4000, 4096, 2);
    c.behavior = Box::new(|_| Behavior::ExitAfter { ms: 20, code: 0 });
    c.submit("n2", batch("crunch", 200)).unwrap();
    let complete = |c: &Cluster| {
        c.nodes.keys().all(|n| {
            c.view(n, "crunch")
                .is_some_and(|v| v.status == JobStatus::Complete)
        })
    };
    assert!(
        c.run_until(20_000, complete),
        "{:?}",
        c.view("n2", "crunch").map(|v| v.status)
    );
    let mut exits: BTreeMap<u32, usize> = BTreeMap::new();
    for p in &c.processes {
        assert_eq!(p.outcome, Some(TaskEvent::Exited { code: 0 }), "{p:?}");
        *exits.entry(p.task.slot).or_default() += 1;
    }
    assert_eq!(exits.len(), 200);
    assert!(exits.values().all(|n| *n == 1), "a slot ran twice");
    assert_eq!(c.processes.len(), 200);
    c.assert_no_overcommit();
}

#[test]
fn concurrent_oversubscription_never_overcommits_and_explains_pending() {
    // 5 nodes × 1000m; 5 jobs × 8 tasks × 300m = 12000m wanted, room for 15 tasks.
    let mut c = Cluster::new(5, 1000, 4096, 3);
    for i in 1..=5 {
        c.submit(&format!("n{i}"), service(&format!("job{i}"), 8, 300))
            .unwrap();
    }
    c.run_for(3_000, |c| c.assert_no_overcommit());
    assert_eq!(c.running_count(), 15);
    assert!(c.run_until(5_000, |c| c.converged()));
    let mut pending = 0;
    for i in 1..=5 {
        let v = c.view("n1", &format!("job{i}")).unwrap();
        for t in v.tasks.iter().filter(|t| t.state == TaskState::Pending) {
            pending += 1;
            let reason = t.pending_reason.as_deref().unwrap_or("");
            assert!(
                reason.contains("lack 300m cpu"),
                "slot {} of job{i}: {reason:?}",
                t.slot
            );
        }
    }
    assert_eq!(pending, 25);
}

#[test]
fn a_dead_node_loses_its_tasks_and_survivors_take_them() {
    let mut c = Cluster::new(4, 4000, 4096, 4);
    let mut spec = service("web", 6, 100);
    spec.placement = shoal_scheduler::PlacementStrategy::Spread;
    c.submit("n1", spec).unwrap();
    assert!(c.run_until(5_000, |c| all_running(c, "web", 6)));
    let victim = c.view("n1", "web").unwrap().tasks[0].node.clone().unwrap();
    let on_victim = c.nodes[&victim].running.len();
    assert!(on_victim > 0);
    c.crash(&victim);
    c.declare_down(&victim);
    assert!(
        c.run_until(5_000, |c| all_running(c, "web", 6)),
        "{:#?}",
        c.view("n1", "web")
    );
    assert_eq!(c.running_count(), 6);
    let survivor = c.nodes.keys().find(|n| **n != victim).unwrap().clone();
    let t = c.nodes[&survivor].sched.tables();
    let lost = t
        .assignments()
        .filter(|(id, a)| a.target == victim && t.state(id).is_lost())
        .count();
    assert_eq!(lost, on_victim);
    let v = c.view(&survivor, "web").unwrap();
    assert!(v.tasks.iter().all(|t| t.node.as_deref() != Some(&victim)));
}

#[test]
fn stopping_kills_every_process() {
    let mut c = Cluster::new(3, 4000, 4096, 5);
    c.submit("n3", service("web", 6, 100)).unwrap();
    assert!(c.run_until(5_000, |c| all_running(c, "web", 6)));
    c.stop("n2", "web");
    assert!(c.run_until(5_000, |c| c.running_count() == 0));
    assert!(c.run_until(5_000, |c| c.nodes.keys().all(|n| {
        c.view(n, "web")
            .is_some_and(|v| v.status == JobStatus::Stopped)
    })));
    let v = c.view("n1", "web").unwrap();
    assert!(
        v.tasks.iter().all(|t| t.state == TaskState::Killed),
        "{v:#?}"
    );
    assert!(
        c.processes
            .iter()
            .all(|p| p.outcome == Some(TaskEvent::Killed))
    );
}

#[test]
fn finished_jobs_are_garbage_collected_everywhere() {
    let mut c = Cluster::new(3, 4000, 4096, 6);
    c.behavior = Box::new(|_| Behavior::ExitAfter { ms: 10, code: 0 });
    c.submit("n1", batch("once", 20)).unwrap();
    c.submit("n2", service("svc", 3, 100)).unwrap();
    assert!(c.run_until(5_000, |c| {
        c.view("n3", "once")
            .is_some_and(|v| v.status == JobStatus::Complete)
    }));
    c.stop("n3", "svc");
    // Grace is 5 s in the fast config: the finished batch stays listed everywhere for 4 s
    // after its completion was seen (a purge before its grace would hide it early).
    c.run_for(4_000, |c| {
        for n in c.nodes.keys() {
            assert!(
                c.view(n, "once").is_some(),
                "{n} purged `once` before its grace"
            );
        }
    });
    assert!(c.run_until(20_000, |c| {
        c.nodes
            .keys()
            .all(|n| c.view(n, "once").is_none() && c.view(n, "svc").is_none())
    }));
    assert!(
        c.run_until(30_000, |c| c.converged()
            && c.nodes.values().all(|n| n.sched.tables().row_count() == 0)),
        "rows left: {:?}",
        c.nodes
            .values()
            .map(|n| n.sched.tables().row_count())
            .collect::<Vec<_>>()
    );
}

#[test]
fn lossy_network_still_converges() {
    let mut c = Cluster::new(5, 4000, 4096, 7);
    c.loss_permille = 200;
    c.behavior = Box::new(|k| {
        if k.slot % 3 == 0 {
            Behavior::ExitAfter { ms: 50, code: 1 }
        } else {
            Behavior::RunForever
        }
    });
    c.submit("n1", service("web", 10, 100)).unwrap();
    c.submit("n4", batch("b", 30)).unwrap();
    c.run_for(5_000, |c| c.assert_no_overcommit());
    c.loss_permille = 0;
    // Stop the flapping slots so the tables can become quiet.
    c.behavior = Box::new(|_| Behavior::RunForever);
    assert!(c.run_until(30_000, |c| c.converged() && all_running(c, "web", 10)));
}

#[test]
fn a_restarted_node_reloads_its_tables_and_keeps_its_tasks() {
    let mut c = Cluster::new(3, 4000, 4096, 8);
    c.submit("n1", service("web", 6, 100)).unwrap();
    assert!(c.run_until(5_000, |c| all_running(c, "web", 6)));
    let snap = c.nodes["n2"].sched.snapshot();
    let running_on_n2: Vec<_> = c.nodes["n2"].running.keys().cloned().collect();
    // Simulate a quick agent restart that keeps the processes (the executor re-attaches).
    let seed = 99;
    let now = c.now;
    let n2 = c.nodes.get_mut("n2").unwrap();
    n2.sched = shoal_scheduler::Scheduler::restore(
        "n2".into(),
        shoal_scheduler::testing::fast_config(),
        seed,
        &snap,
    )
    .unwrap();
    n2.sched.handle_recovered_tasks(now, &running_on_n2);
    assert_eq!(n2.sched.local_tasks().count(), running_on_n2.len());
    c.run_for(2_000, |c| c.assert_no_overcommit());
    assert!(all_running(&c, "web", 6));
    assert_eq!(c.running_count(), 6);
    assert!(c.run_until(5_000, |c| c.converged()));
}

#[test]
fn same_seed_same_outcome() {
    let run = |seed| {
        let mut c = Cluster::new(4, 2000, 4096, seed);
        c.loss_permille = 50;
        c.behavior = Box::new(|k| Behavior::ExitAfter {
            ms: 30 + u64::from(k.slot % 7) * 10,
            code: 0,
        });
        for i in 1..=4 {
            c.submit(&format!("n{i}"), batch(&format!("b{i}"), 25))
                .unwrap();
        }
        c.run_for(4_000, |_| {});
        c.digest()
    };
    assert_eq!(run(11), run(11));
}

/// Scale check (run with `--release -- --ignored`): a 10,000-task batch on 3 nodes.
#[test]
#[ignore = "scale check; run in release mode"]
#[allow(clippy::disallowed_methods)] // measures the harness's wall time, outside the core
fn scale_batch_of_10000() {
    let mut c = Cluster::new(3, 64_000, 262_144, 12);
    c.behavior = Box::new(|_| Behavior::ExitAfter { ms: 5, code: 0 });
    let t0 = std::time::Instant::now();
    c.submit("n1", batch("big", 10_000)).unwrap();
    let done = c.run_until(600_000, |c| {
        c.view("n1", "big")
            .is_some_and(|v| v.status == JobStatus::Complete)
    });
    eprintln!(
        "10k batch: complete={done} virtual={}ms wall={:?} delivered={} processes={} rows={:?}",
        c.now.0 - 1000,
        t0.elapsed(),
        c.delivered,
        c.processes.len(),
        c.nodes
            .values()
            .map(|n| n.sched.stats())
            .collect::<Vec<_>>()
    );
    let t = c.nodes["n1"].sched.tables();
    let placements = t.assignments().count();
    let rejected = t
        .assignments()
        .filter(|(id, _)| matches!(t.state(id), AttemptState::Rejected { .. }))
        .count();
    eprintln!(
        "placements={placements} rejected={rejected} ({} per 1000)",
        rejected * 1000 / placements.max(1)
    );
    assert!(done);
}

#[test]
fn every_example_job_file_is_valid() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let text = std::fs::read_to_string(&path).unwrap();
            if let Err(e) = JobSpec::from_toml_str(&text) {
                panic!("{}: {e}", path.display());
            }
            n += 1;
        }
    }
    assert!(n >= 3);
}

#[test]
fn two_coordinators_for_one_slot_are_fenced() {
    // n1 wrongly believes n2 is down. It still sees a majority (4 of 5), so it coordinates
    // n2's slots while n2 coordinates them too: the same slots get placed twice, and n1 marks
    // what runs on n2 lost. Fencing and reclaims must end with one process per slot.
    let mut c = Cluster::new(5, 4000, 4096, 13);
    c.believes_down
        .insert("n1".into(), ["n2".to_string()].into());
    c.sync_members();
    c.submit("n2", service("web", 30, 100)).unwrap();
    c.run_for(2_000, |c| c.assert_no_overcommit());
    let t = c.nodes["n2"].sched.tables();
    let placers: std::collections::BTreeSet<&str> =
        t.assignments().map(|(id, _)| id.placer.as_str()).collect();
    assert!(
        placers.contains("n1") && placers.len() > 1,
        "both sides placed: {placers:?}"
    );
    c.believes_down.clear();
    c.sync_members();
    assert!(c.run_until(10_000, |c| c.converged() && all_running(c, "web", 30)));
    c.run_for(1_000, |c| c.assert_no_overcommit());
    assert_eq!(
        c.running_count(),
        30,
        "exactly one process per slot after fencing"
    );
    let mut slots: Vec<u32> = c
        .nodes
        .values()
        .flat_map(|n| n.running.keys().map(|k| k.slot))
        .collect();
    slots.sort_unstable();
    assert_eq!(slots, (0..30).collect::<Vec<_>>());
}

#[test]
fn spread_of_ten_on_five_empty_nodes_ends_even() {
    // Every node coordinates some of the ten slots and proposes in the same step, before any
    // proposal of the others arrives.
    for seed in 30..36 {
        let mut c = Cluster::new(5, 4000, 4096, seed);
        let mut s = service("web", 10, 100);
        s.placement = shoal_scheduler::PlacementStrategy::Spread;
        c.submit("n1", s).unwrap();
        assert!(c.run_until(5_000, |c| all_running(c, "web", 10)));
        let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
        for (name, n) in &c.nodes {
            per_node.insert(name.clone(), n.running.len());
        }
        let (min, max) = (
            per_node.values().min().copied().unwrap_or(0),
            per_node.values().max().copied().unwrap_or(0),
        );
        assert!(max - min <= 1, "seed {seed}: {per_node:?}");
    }
}

#[test]
fn a_job_pinned_to_a_node_that_is_down_waits_and_lands_when_it_returns() {
    // Accepted though no live node satisfies its constraint (the node may be restarting or
    // not have joined yet), pending with the reason, and placed there once it is back.
    let mut c = Cluster::new(4, 4000, 4096, 12);
    c.crash("n3");
    c.declare_down("n3");
    let mut spec = service("pinned", 1, 100);
    spec.constraints
        .push(shoal_scheduler::Constraint::parse_compact("node == n3").unwrap());
    c.submit("n1", spec).expect("accepted while n3 is down");
    c.run_for(2_000, |_| {});
    let view = c.view("n1", "pinned").expect("the job is known");
    assert_eq!(view.count_in(TaskState::Running), 0);
    let snapshot = c.nodes["n3"].sched.snapshot();
    c.restart("n3", Some(&snapshot));
    assert!(c.run_until(10_000, |c| all_running(c, "pinned", 1)));
    assert!(c.nodes["n3"].running.len() == 1, "it runs on n3");
}

/// A slot waiting out its restart delay says how its last attempt ended, not only that it did
/// ("exited 3; retrying in 4.9 s"), beside the attempt's own detail.
#[test]
fn a_slot_waiting_to_restart_says_how_its_attempt_ended() {
    let mut c = Cluster::new(1, 4000, 4096, 5);
    c.behavior = Box::new(|_| Behavior::ExitAfter { ms: 20, code: 3 });
    let spec = JobSpec::from_json_str(
        r#"{"id": "flap", "type": "service", "count": 1, "command": "false",
            "resources": {"cpu": 100, "memory": 32}, "restart": {"delay_ms": 5000}}"#,
    )
    .unwrap();
    c.submit("n1", spec).unwrap();
    let waits = |c: &Cluster| {
        c.view("n1", "flap")
            .and_then(|v| v.tasks[0].pending_reason.clone())
            .filter(|r| r.contains("retrying in"))
    };
    assert!(
        c.run_until(5_000, |c| waits(c).is_some()),
        "{:#?}",
        c.view("n1", "flap")
    );
    let why = waits(&c).unwrap();
    assert!(why.starts_with("exited 3; retrying in "), "{why}");
}
