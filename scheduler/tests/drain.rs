//! Drain and eligibility on the in-memory harness (`docs/services.md`, §5): the draining
//! node moves its services off at most `max_parallel` at a time and never below
//! `count − max_parallel` healthy, nothing new lands on it, batch tasks run on until the
//! deadline and then move without spending a retry, a cut-off node moves nothing, a second
//! drain waits for the first, undrain stops the migration, and the intent survives restarts.

use std::collections::BTreeSet;

use shoal_scheduler::testing::{Behavior, Cluster};
use shoal_scheduler::{
    AttemptId, AttemptState, CheckResult, JobSpec, NodeChange, NodeError, TaskState,
};

/// A service packed (`binpack`, not a service's default `spread`), so that the drained node
/// holds several of its tasks.
fn service(id: &str, count: u32, extra: &str) -> JobSpec {
    JobSpec::from_toml_str(&format!(
        "id = \"{id}\"\ntype = \"service\"\ncount = {count}\ncommand = \"serve\"\n\
         placement = \"binpack\"\n\
         resources = {{ cpu = 100, memory = 32 }}\n\
         restart = {{ delay_ms = 100, backoff = 1.0, attempts = 1 }}\n{extra}"
    ))
    .unwrap()
}

const UPDATE_MP2: &str = "[update]\nmax_parallel = 2\nmin_healthy_ms = 500\n";

const CHECKED: &str = "[[checks]]\ntype = \"command\"\ncommand = \"/bin/check\"\n\
    interval_ms = 100\ntimeout_ms = 50\nfailures = 0\n";

/// Slots of `job` whose process runs on an up node: what a balancer could reach.
fn running_slots(c: &Cluster, job: &str) -> usize {
    c.nodes
        .values()
        .filter(|n| n.up)
        .flat_map(|n| n.running.keys())
        .filter(|id| id.job == job)
        .map(|id| id.slot)
        .collect::<BTreeSet<u32>>()
        .len()
}

/// Processes of `job` running on `node`.
fn on(c: &Cluster, node: &str, job: &str) -> Vec<AttemptId> {
    c.nodes[node]
        .running
        .keys()
        .filter(|id| id.job == job)
        .cloned()
        .collect()
}

/// The node running the most tasks of `job`.
fn busiest(c: &Cluster, job: &str) -> String {
    c.nodes
        .keys()
        .max_by_key(|n| (on(c, n, job).len(), std::cmp::Reverse((*n).clone())))
        .unwrap()
        .clone()
}

fn all_running(c: &Cluster, job: &str, count: usize) -> bool {
    c.nodes.keys().all(|n| {
        c.view(n, job)
            .is_some_and(|v| v.count_in(TaskState::Running) == count)
    })
}

fn drain_complete_everywhere(c: &Cluster, node: &str) -> bool {
    c.nodes.values().all(|n| {
        n.sched
            .node_statuses()
            .iter()
            .any(|s| s.name == node && s.drain_complete && !s.eligible)
    })
}

/// Every attempt any node knows that targets `node` and was placed after `before`.
fn placed_since(c: &Cluster, node: &str, before: &BTreeSet<AttemptId>) -> Vec<AttemptId> {
    let mut out = BTreeSet::new();
    for n in c.nodes.values() {
        for (id, a) in n.sched.tables().assignments() {
            if a.target == node && !before.contains(id) {
                out.insert(id.clone());
            }
        }
    }
    out.into_iter().collect()
}

/// Slots of `job` drained off `node` whose newest attempt is not yet running and settled,
/// from the true state: any node's tables (the harness moves so fast that a replacement
/// often runs within one step, so counting running processes would not see the drain).
fn drained_in_flight(c: &Cluster, job: &str, node: &str) -> usize {
    let mut drained = BTreeSet::new();
    let mut newest: std::collections::BTreeMap<u32, AttemptId> = Default::default();
    for n in c.nodes.values() {
        let t = n.sched.tables();
        for (id, a) in t.assignments().filter(|(id, _)| id.job == job) {
            if a.target == node && t.state(id) == AttemptState::Drained {
                drained.insert(id.slot);
            }
            let e = newest.entry(id.slot).or_insert_with(|| id.clone());
            if id.attempt > e.attempt {
                *e = id.clone();
            }
        }
    }
    drained
        .into_iter()
        .filter(|slot| {
            let id = &newest[slot];
            !c.nodes.values().any(|n| {
                let t = n.sched.tables();
                matches!(t.state(id), AttemptState::Running { .. }) && t.milestones(id).settled
            })
        })
        .count()
}

fn all_attempts(c: &Cluster) -> BTreeSet<AttemptId> {
    c.nodes
        .values()
        .flat_map(|n| n.sched.tables().assignments().map(|(id, _)| id.clone()))
        .collect()
}

#[test]
fn a_drain_moves_services_off_within_max_parallel_and_nothing_lands_there() {
    // 3 tasks fit per node: the busiest node holds 3 of the 6.
    let mut c = Cluster::new(4, 350, 4096, 21);
    c.submit("n1", service("web", 6, UPDATE_MP2)).unwrap();
    assert!(c.run_until(10_000, |c| all_running(c, "web", 6)));
    let victim = busiest(&c, "web");
    assert_eq!(on(&c, &victim, "web").len(), 3, "the victim holds 3 tasks");
    let before = all_attempts(&c);
    c.node_command("n2", &victim, NodeChange::Drain { deadline_ms: None })
        .unwrap();
    let mut min_running = usize::MAX;
    let mut max_drained_in_flight = 0;
    let done = c.run_until(30_000, |c| {
        min_running = min_running.min(running_slots(c, "web"));
        max_drained_in_flight = max_drained_in_flight.max(drained_in_flight(c, "web", &victim));
        drain_complete_everywhere(c, &victim) && all_running(c, "web", 6)
    });
    assert!(
        done,
        "the drain completes and the service runs its 6 elsewhere"
    );
    assert!(
        min_running >= 4,
        "fell to {min_running} running (count 6 − mp 2 = 4)"
    );
    assert!(
        max_drained_in_flight <= 2,
        "{max_drained_in_flight} in flight"
    );
    assert!(on(&c, &victim, "web").is_empty());
    assert!(
        placed_since(&c, &victim, &before).is_empty(),
        "nothing new on {victim}"
    );
    // A new job never lands there, and says why when nothing else fits.
    c.submit("n1", service("more", 3, "")).unwrap();
    assert!(c.run_until(10_000, |c| all_running(c, "more", 3)));
    assert!(placed_since(&c, &victim, &before).is_empty());
    // The drained slots spent no restart attempt (`attempts = 1`): none gave up.
    assert!(
        c.view("n1", "web")
            .unwrap()
            .tasks
            .iter()
            .all(|t| t.state == TaskState::Running)
    );
}

#[test]
fn a_drain_waits_for_the_replacements_to_be_healthy() {
    let mut c = Cluster::new(4, 350, 4096, 22);
    c.submit(
        "n1",
        service(
            "web",
            6,
            &format!("{CHECKED}[update]\nmax_parallel = 1\nmin_healthy_ms = 200\n"),
        ),
    )
    .unwrap();
    let pass_all = |c: &mut Cluster| {
        let tasks: Vec<(String, AttemptId)> = c
            .nodes
            .iter()
            .flat_map(|(n, node)| node.checks.keys().map(move |id| (n.clone(), id.clone())))
            .collect();
        for (n, id) in tasks {
            c.check_result(&n, &id, 0, CheckResult::Pass);
        }
    };
    assert!(c.run_until(
        10_000,
        |c| c.nodes.values().map(|n| n.checks.len()).sum::<usize>() == 6
    ));
    pass_all(&mut c);
    assert!(c.run_until(5_000, |c| {
        c.view("n1", "web")
            .is_some_and(|v| v.tasks.iter().all(|t| t.health.is_healthy()))
    }));
    let victim = busiest(&c, "web");
    c.node_command("n1", &victim, NodeChange::Drain { deadline_ms: None })
        .unwrap();
    // One moves; its replacement never passes: the other two stay.
    c.run_for(3_000, |_| {});
    assert_eq!(
        on(&c, &victim, "web").len(),
        2,
        "mp 1: one in flight until healthy"
    );
    // Once replacements pass (and settle), the rest follow one at a time.
    let done = c.run_until(30_000, |c| drain_complete_everywhere(c, &victim));
    assert!(
        !done,
        "nothing more moves while the replacement is not healthy"
    );
    for _ in 0..20 {
        pass_all(&mut c);
        if c.run_until(1_000, |c| drain_complete_everywhere(c, &victim)) {
            break;
        }
    }
    assert!(drain_complete_everywhere(&c, &victim));
    assert!(on(&c, &victim, "web").is_empty());
}

#[test]
fn batch_runs_on_until_the_deadline_then_moves_without_a_retry() {
    let mut c = Cluster::new(3, 4000, 4096, 23);
    let batch = JobSpec::from_toml_str(
        "id = \"crunch\"\ntype = \"batch\"\ncount = 1\ncommand = \"crunch\"\n\
         resources = { cpu = 100, memory = 32 }\nretries = 0\n",
    )
    .unwrap();
    c.submit("n1", batch).unwrap();
    assert!(c.run_until(10_000, |c| running_slots(c, "crunch") == 1));
    let victim = busiest(&c, "crunch");
    let first = on(&c, &victim, "crunch")[0].clone();
    c.node_command(
        "n1",
        &victim,
        NodeChange::Drain {
            deadline_ms: Some(2_000),
        },
    )
    .unwrap();
    c.run_for(1_500, |_| {});
    assert_eq!(
        on(&c, &victim, "crunch"),
        vec![first.clone()],
        "batch runs on"
    );
    assert!(c.run_until(5_000, |c| drain_complete_everywhere(c, &victim)));
    assert_eq!(
        c.nodes["n1"].sched.tables().state(&first),
        AttemptState::Drained
    );
    // `retries = 0`: a failure would give up; a drain places it again.
    assert!(c.run_until(5_000, |c| running_slots(c, "crunch") == 1));
    assert!(on(&c, &victim, "crunch").is_empty());
}

#[test]
fn without_a_deadline_batch_tasks_finish_before_the_drain_completes() {
    let mut c = Cluster::new(3, 4000, 4096, 24);
    c.behavior = Box::new(|id| {
        if id.job == "crunch" {
            Behavior::ExitAfter { ms: 3_000, code: 0 }
        } else {
            Behavior::RunForever
        }
    });
    let batch = JobSpec::from_toml_str(
        "id = \"crunch\"\ntype = \"batch\"\ncount = 1\ncommand = \"crunch\"\n\
         resources = { cpu = 100, memory = 32 }\n",
    )
    .unwrap();
    c.submit("n1", batch).unwrap();
    assert!(c.run_until(2_000, |c| running_slots(c, "crunch") == 1));
    let victim = busiest(&c, "crunch");
    c.node_command("n1", &victim, NodeChange::Drain { deadline_ms: None })
        .unwrap();
    c.run_for(1_000, |_| {});
    assert!(
        !drain_complete_everywhere(&c, &victim),
        "not before the task ends"
    );
    assert!(c.run_until(5_000, |c| drain_complete_everywhere(c, &victim)));
    assert_eq!(
        c.view("n1", "crunch").unwrap().status,
        shoal_scheduler::JobStatus::Complete
    );
}

#[test]
fn an_ineligible_node_takes_no_work_and_says_so_until_enabled() {
    let mut c = Cluster::new(3, 4000, 4096, 25);
    for n in ["n1", "n2", "n3"] {
        c.node_command("n1", n, NodeChange::Eligible(false))
            .unwrap();
    }
    c.run_for(200, |_| {});
    c.submit("n2", service("web", 2, "")).unwrap();
    c.run_for(1_000, |_| {});
    assert_eq!(running_slots(&c, "web"), 0);
    let view = c.view("n1", "web").unwrap();
    let reasons: Vec<String> = view
        .tasks
        .iter()
        .filter_map(|t| t.pending_reason.clone())
        .collect();
    assert!(
        reasons.iter().any(|r| r.contains("3 ineligible")),
        "pending reasons: {reasons:?}"
    );
    c.node_command("n3", "n2", NodeChange::Eligible(true))
        .unwrap();
    assert!(c.run_until(5_000, |c| running_slots(c, "web") == 2));
    assert_eq!(on(&c, "n2", "web").len(), 2, "only n2 takes work");
    // Unknown names are refused, naming the known ones.
    let err = c
        .node_command("n1", "n9", NodeChange::Eligible(false))
        .unwrap_err();
    assert!(matches!(err, NodeError::Unknown { .. }));
    assert_eq!(err.to_string(), "no node `n9` (known: n1, n2, n3)");
}

#[test]
fn a_cut_off_node_moves_nothing() {
    let mut c = Cluster::new(3, 350, 4096, 26);
    c.submit("n1", service("web", 3, "")).unwrap();
    assert!(c.run_until(10_000, |c| all_running(c, "web", 3)));
    let victim = busiest(&c, "web");
    let others: Vec<String> = c.nodes.keys().filter(|n| **n != victim).cloned().collect();
    let held = on(&c, &victim, "web");
    // The intent reaches the victim, then it is cut off before it acts.
    c.partition(&[&[victim.as_str()]]);
    c.node_command(&victim, &victim, NodeChange::Drain { deadline_ms: None })
        .unwrap();
    c.run_for(2_000, |_| {});
    assert_eq!(on(&c, &victim, "web"), held, "a minority moves nothing");
    c.heal();
    assert!(c.run_until(10_000, |c| drain_complete_everywhere(c, &victim)));
    assert!(on(&c, &victim, "web").is_empty());
    assert!(others.iter().all(|n| {
        !c.nodes[n]
            .sched
            .node_statuses()
            .iter()
            .any(|s| s.name == *n && !s.eligible)
    }));
}

#[test]
fn undrain_stops_the_migration_and_moved_tasks_stay() {
    let mut c = Cluster::new(4, 350, 4096, 27);
    c.submit(
        "n1",
        service(
            "web",
            6,
            &format!("{CHECKED}[update]\nmax_parallel = 1\nmin_healthy_ms = 200\n"),
        ),
    )
    .unwrap();
    assert!(c.run_until(
        10_000,
        |c| c.nodes.values().map(|n| n.checks.len()).sum::<usize>() == 6
    ));
    let tasks: Vec<(String, AttemptId)> = c
        .nodes
        .iter()
        .flat_map(|(n, node)| node.checks.keys().map(move |id| (n.clone(), id.clone())))
        .collect();
    for (n, id) in tasks {
        c.check_result(&n, &id, 0, CheckResult::Pass);
    }
    c.run_for(500, |_| {});
    let victim = busiest(&c, "web");
    c.node_command("n1", &victim, NodeChange::Drain { deadline_ms: None })
        .unwrap();
    assert!(c.run_until(3_000, |c| on(c, &victim, "web").len() == 2));
    c.node_command("n1", &victim, NodeChange::Undrain).unwrap();
    c.run_for(5_000, |_| {});
    // The remaining two stay (the replacement never passed, but no drain waits on it now).
    assert_eq!(on(&c, &victim, "web").len(), 2);
    let status = c.nodes["n3"].sched.node_statuses();
    let s = status.iter().find(|s| s.name == victim).unwrap();
    assert!(
        !s.draining && !s.eligible,
        "undrain leaves the node ineligible: {s:?}"
    );
}

#[test]
fn a_second_drain_waits_for_the_first_on_a_shared_job() {
    // 2 per node over 3 nodes; mp 1 per drain.
    let mut c = Cluster::new(4, 250, 4096, 28);
    c.submit(
        "n1",
        service(
            "web",
            6,
            "[update]\nmax_parallel = 1\nmin_healthy_ms = 300\n",
        ),
    )
    .unwrap();
    assert!(c.run_until(10_000, |c| all_running(c, "web", 6)));
    let mut holders: Vec<String> = c
        .nodes
        .keys()
        .filter(|n| !on(&c, n, "web").is_empty())
        .cloned()
        .collect();
    holders.sort();
    let (first, second) = (holders[0].clone(), holders[1].clone());
    c.node_command("n1", &first, NodeChange::Drain { deadline_ms: None })
        .unwrap();
    c.step();
    c.node_command("n1", &second, NodeChange::Drain { deadline_ms: None })
        .unwrap();
    let mut both_moving = false;
    let done = c.run_until(60_000, |c| {
        let first_left = on(c, &first, "web").len();
        let second_left = on(c, &second, "web").len();
        both_moving |= first_left > 0 && second_left < 2;
        drain_complete_everywhere(c, &first) && drain_complete_everywhere(c, &second)
    });
    assert!(
        !both_moving,
        "the second drain moved a task while the first held one"
    );
    // With two of four nodes drained, only 4 slots of room are left: 2 slots wait.
    assert!(done || running_slots(&c, "web") >= 4);
}

#[test]
fn the_intent_survives_restarts() {
    let mut c = Cluster::new(3, 4000, 4096, 29);
    c.submit("n1", service("web", 2, "")).unwrap();
    assert!(c.run_until(10_000, |c| all_running(c, "web", 2)));
    c.node_command("n1", "n3", NodeChange::Drain { deadline_ms: None })
        .unwrap();
    assert!(c.run_until(10_000, |c| drain_complete_everywhere(c, "n3")));
    // From a snapshot.
    let snap = c.nodes["n3"].sched.snapshot();
    c.crash("n3");
    c.restart("n3", Some(&snap));
    c.run_for(500, |_| {});
    assert!(drain_complete_everywhere(&c, "n3"));
    // From the job log alone (no snapshot), with every peer down to tell it.
    c.crash("n3");
    c.partition(&[&["n3"]]);
    c.restart("n3", None);
    c.run_for(200, |_| {});
    assert!(
        c.nodes["n3"].sched.refuses_work(),
        "n3 reads its intent from its log"
    );
    c.heal();
    c.node_command("n2", "n3", NodeChange::Eligible(true))
        .unwrap();
    assert!(c.run_until(5_000, |c| {
        c.nodes
            .values()
            .all(|n| !n.sched.tables().refuses_work("n3"))
    }));
}
