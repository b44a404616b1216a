//! Health checks on the in-memory harness (`docs/services.md`, §2): the target hands the
//! resolved checks to its executor when the task starts, every node's view follows the health
//! the target writes, and a check that keeps failing restarts the task through the existing
//! restart path.

use shoal_scheduler::testing::{Cluster, fast_config};
use shoal_scheduler::{AttemptId, CheckResult, JobSpec, Probe, TaskHealth, TaskState};

fn job(id: &str, count: u32, extra: &str) -> JobSpec {
    JobSpec::from_toml_str(&format!(
        "id = \"{id}\"\ntype = \"service\"\ncount = {count}\ncommand = \"serve\"\n\
         resources = {{ cpu = 100, memory = 32 }}\n\
         restart = {{ delay_ms = 100, backoff = 1.0 }}\n{extra}"
    ))
    .unwrap()
}

const CHECKED: &str = "[[ports]]\nname = \"http\"\n\
    [[checks]]\nname = \"ready\"\ntype = \"http\"\nport = \"http\"\npath = \"/healthz\"\n\
    interval_ms = 100\ntimeout_ms = 100\ngrace_ms = 1000\nfailures = 3\n\
    [[checks]]\ntype = \"command\"\ncommand = \"/bin/check\"\nargs = [\"${SHOAL_PORT_HTTP}\"]\n\
    interval_ms = 100\ntimeout_ms = 50\nfailures = 0\n";

/// The running attempt of job `web`'s slot 0 and the node it runs on.
fn running_task(c: &Cluster) -> Option<(String, AttemptId)> {
    c.nodes.iter().find_map(|(name, n)| {
        n.running
            .keys()
            .find(|id| id.job == "web" && id.slot == 0)
            .map(|id| (name.clone(), id.clone()))
    })
}

fn health_everywhere(c: &Cluster, job: &str) -> Vec<TaskHealth> {
    c.nodes
        .keys()
        .map(|n| {
            c.view(n, job)
                .map_or(TaskHealth::Unknown, |v| v.tasks[0].health)
        })
        .collect()
}

fn start(c: &mut Cluster, spec: JobSpec) -> (String, AttemptId) {
    c.submit("n1", spec).unwrap();
    assert!(c.run_until(10_000, |c| {
        running_task(c).is_some_and(|(n, id)| c.nodes[&n].checks.contains_key(&id))
    }));
    running_task(c).unwrap()
}

#[test]
fn checks_are_resolved_and_health_reaches_every_node() {
    let mut c = Cluster::with_config(3, 4000, 4096, 11, fast_config());
    c.submit("n1", job("plain", 1, "")).unwrap();
    let (node, id) = start(&mut c, job("web", 1, CHECKED));
    let checks = &c.nodes[&node].checks[&id];
    let port = c.nodes[&node]
        .sched
        .tables()
        .binding(&id)
        .unwrap()
        .port("http");
    assert_eq!(checks.len(), 2);
    assert_eq!(checks[0].name, "ready");
    assert_eq!(checks[1].name, "command-1", "the default name");
    match &checks[0].probe {
        Probe::Http {
            port: p,
            path,
            status,
            ..
        } => {
            assert_eq!((Some(*p), path.as_str(), *status), (port, "/healthz", None));
        }
        other => panic!("not http: {other:?}"),
    }
    match &checks[1].probe {
        Probe::Command { args, env, .. } => {
            assert_eq!(args, &[port.unwrap().to_string()], "arguments interpolated");
            assert_eq!(env["SHOAL_PORT_HTTP"], port.unwrap().to_string());
        }
        other => panic!("not a command: {other:?}"),
    }
    // A job without checks is healthy once it runs; this one is unknown until both pass.
    assert!(c.run_until(5000, |c| {
        health_everywhere(c, "plain").iter().all(|h| h.is_healthy())
    }));
    assert_eq!(health_everywhere(&c, "web"), vec![TaskHealth::Unknown; 3]);
    c.check_result(&node, &id, 0, CheckResult::Pass);
    c.run_for(200, |_| {});
    assert_eq!(health_everywhere(&c, "web"), vec![TaskHealth::Unknown; 3]);
    c.check_result(&node, &id, 1, CheckResult::Pass);
    assert!(c.run_until(2000, |c| health_everywhere(c, "web")
        == vec![TaskHealth::Healthy; 3]));
    // The first failure after a pass: unhealthy everywhere, with the note and the counter.
    c.check_result(&node, &id, 0, CheckResult::Fail("HTTP 503".into()));
    assert!(c.run_until(2000, |c| health_everywhere(c, "web")
        == vec![TaskHealth::Unhealthy; 3]));
    let t = c.view("n3", "web").unwrap().tasks[0].clone();
    assert_eq!(t.health_note.as_deref(), Some("check ready: HTTP 503"));
    assert_eq!(
        t.health_summary(),
        "unhealthy (1 of 3 failures before restart)"
    );
    // One pass brings it back.
    c.check_result(&node, &id, 0, CheckResult::Pass);
    assert!(c.run_until(2000, |c| health_everywhere(c, "web")
        == vec![TaskHealth::Healthy; 3]));
    assert_eq!(c.view("n2", "web").unwrap().tasks[0].health_note, None);
}

#[test]
fn a_check_failing_failures_times_restarts_the_task() {
    let mut c = Cluster::with_config(3, 4000, 4096, 12, fast_config());
    let (node, id) = start(&mut c, job("web", 1, CHECKED));
    c.check_result(&node, &id, 0, CheckResult::Pass);
    for n in 1..=2 {
        c.check_result(&node, &id, 0, CheckResult::Fail("HTTP 503".into()));
        c.run_for(50, |_| {});
        assert!(c.nodes[&node].running.contains_key(&id), "{n} < 3");
    }
    c.check_result(&node, &id, 0, CheckResult::Fail("HTTP 503".into()));
    c.run_for(10, |_| {});
    assert!(!c.nodes[&node].running.contains_key(&id), "killed at 3");
    assert!(
        !c.nodes[&node].checks.contains_key(&id),
        "its checks stopped"
    );
    assert_eq!(
        c.nodes["n2"].sched.tables().state(&id),
        shoal_scheduler::AttemptState::Failed {
            reason: "check ready failed 3 times: HTTP 503".into()
        }
    );
    // Restarted under the restart policy: a new attempt runs, with its own checks.
    assert!(c.run_until(10_000, |c| running_task(c).is_some_and(
        |(n, new)| new.attempt > id.attempt && c.nodes[&n].checks.contains_key(&new)
    )));
    let view = c.view("n1", "web").unwrap();
    assert_eq!(view.tasks[0].state, TaskState::Running);
    assert_eq!(
        view.tasks[0].health,
        TaskHealth::Unknown,
        "a new attempt starts unknown"
    );
}

#[test]
fn failures_inside_grace_are_ignored_until_the_first_pass() {
    let mut c = Cluster::with_config(2, 4000, 4096, 13, fast_config());
    let (node, id) = start(&mut c, job("web", 1, CHECKED));
    // Grace is 1000 ms from the start: ten failures inside it do nothing.
    for _ in 0..10 {
        c.check_result(
            &node,
            &id,
            0,
            CheckResult::Fail("connection refused".into()),
        );
    }
    c.run_for(50, |_| {});
    assert!(c.nodes[&node].running.contains_key(&id));
    let t = c.view(&node, "web").unwrap().tasks[0].clone();
    assert_eq!(t.health, TaskHealth::Unknown);
    assert_eq!(
        t.health_note.as_deref(),
        Some("check ready: connection refused")
    );
    // After the grace, failures count.
    c.run_for(1000, |_| {});
    for _ in 0..3 {
        c.check_result(
            &node,
            &id,
            0,
            CheckResult::Fail("connection refused".into()),
        );
    }
    c.run_for(10, |_| {});
    assert!(!c.nodes[&node].running.contains_key(&id));
}

#[test]
fn checks_stop_with_the_task_and_follow_an_in_place_change() {
    let mut c = Cluster::with_config(2, 4000, 4096, 14, fast_config());
    let (node, id) = start(&mut c, job("web", 1, CHECKED));
    let epoch = c.nodes[&node]
        .sched
        .tables()
        .assignment(&id)
        .unwrap()
        .epoch
        .clone();
    // Fewer checks, same epoch: the running task keeps going with the new checks.
    let one_check = CHECKED
        .split("[[checks]]\ntype = \"command\"")
        .next()
        .unwrap();
    c.submit("n2", job("web", 1, one_check)).unwrap();
    assert!(c.run_until(2000, |c| {
        c.nodes[&node].checks.get(&id).is_some_and(|k| k.len() == 1)
    }));
    assert!(c.nodes[&node].running.contains_key(&id), "not restarted");
    assert_eq!(
        c.nodes[&node].sched.tables().job("web").unwrap().1.epoch,
        epoch
    );
    c.stop("n1", "web");
    assert!(c.run_until(5000, |c| !c.nodes[&node].running.contains_key(&id)));
    assert!(
        c.nodes[&node].checks.is_empty(),
        "checks stopped with the task"
    );
}
