//! Jobs with real agents and real processes: services kept at their count through a node
//! crash, a service spread and a batch packed when neither names a placement, `job run` of a
//! job no node fits (exit 2, the job stays), a 200-task batch run exactly once, admission that never overcommits, stop that kills everything,
//! submissions that survive the death of the node that acknowledged them, a clean restart that
//! writes on as the same actor, and restarts of a one-node cluster and of a whole cluster
//! stopped node by node.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{
    Agent, AgentSpec, TempDir, http_request_typed, http_request_with_token, run, run_in,
    start_agents, wait_for,
};
use serde_json::Value;

const DEADLINE: Duration = Duration::from_secs(90);

struct Cluster {
    agents: Vec<Agent>,
    /// Every task writes its pid here, so the test can stop every process it caused.
    pids: PathBuf,
    _dir: TempDir,
}

impl Cluster {
    fn start(n: usize, tag: &str) -> Cluster {
        Self::start_with(n, tag, &[])
    }

    /// `start` with extra agent flags for every agent.
    fn start_with(n: usize, tag: &str, extra: &[&str]) -> Cluster {
        // Alive with the capacity every harness agent gets (`--cpu 2000`).
        let (dir, agents) = start_agents(n, tag, extra, DEADLINE, |x| {
            x["status"] == "alive" && x["resources"]["capacity"]["cpu_millicores"] == 2000
        });
        let pids = dir.0.join("pids");
        Cluster {
            agents,
            pids,
            _dir: dir,
        }
    }

    fn dir(&self) -> &Path {
        self.pids.parent().unwrap()
    }

    /// Writes a job file and runs `shoal job run FILE --addr A` (the CLI finds the token).
    fn submit(&self, at: usize, spec: Value, extra: &[&str]) -> std::process::Output {
        let file = self
            .dir()
            .join(format!("{}.json", spec["id"].as_str().unwrap()));
        std::fs::write(&file, spec.to_string()).unwrap();
        let mut args = vec!["job", "run", file.to_str().unwrap()];
        args.extend_from_slice(extra);
        self.agents[at].cli(&args)
    }

    fn job(&self, at: usize, id: &str) -> Option<Value> {
        let out = run(&[
            "job",
            "status",
            id,
            "--json",
            "--addr",
            &self.agents[at].api(),
        ]);
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).ok())
            .flatten()
    }

    /// A shell command that records its pid, then becomes `rest`.
    fn recorded(&self, rest: &str) -> Value {
        serde_json::json!([
            "-c",
            format!("echo $$ >> {}; exec {rest}", self.pids.display())
        ])
    }

    fn recorded_pids(&self) -> Vec<i32> {
        std::fs::read_to_string(&self.pids)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for a in &mut self.agents {
            a.stop();
        }
        // Processes of agents killed with -9 are not stopped by anyone else.
        for pid in self.recorded_pids() {
            let _ = std::process::Command::new("kill")
                .args(["-9", &pid.to_string()])
                .status();
        }
    }
}

fn alive(pid: i32) -> bool {
    // A zombie (exited, not yet reaped) counts as dead.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .is_some_and(|rest| !rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

fn tasks(job: &Value) -> Vec<Value> {
    job["tasks"].as_array().cloned().unwrap_or_default()
}

fn running_on(job: &Value) -> BTreeMap<String, usize> {
    let mut per = BTreeMap::new();
    for t in tasks(job).iter().filter(|t| t["state"] == "running") {
        *per.entry(t["node"].as_str().unwrap_or("?").to_string())
            .or_insert(0) += 1;
    }
    per
}

/// The (slot, attempt, node, state) rows every node must agree on.
fn placement(job: &Value) -> Vec<(Value, Value, Value, Value)> {
    tasks(job)
        .iter()
        .map(|t| {
            (
                t["slot"].clone(),
                t["attempt"].clone(),
                t["node"].clone(),
                t["state"].clone(),
            )
        })
        .collect()
}

#[test]
fn a_service_stays_at_its_count_through_a_node_crash() {
    let mut c = Cluster::start(4, "service");
    let spec = serde_json::json!({
        "id": "web", "type": "service", "count": 6, "command": "sh", "args": c.recorded("sleep 600"),
        "resources": {"cpu": 500, "memory": 64}, "placement": "spread"
    });
    let out = c.submit(0, spec, &[]);
    assert!(
        out.status.success(),
        "job run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Every node gives the same answer: six running, same slots on the same nodes.
    let reference = wait_for(DEADLINE, "node A sees 6 running", || {
        let job = c.job(0, "web")?;
        (running_on(&job).values().sum::<usize>() == 6).then_some(job)
    });
    for i in 1..4 {
        wait_for(DEADLINE, &format!("n{} agrees with n1", i + 1), || {
            (placement(&c.job(i, "web")?) == placement(&reference)).then_some(())
        });
    }

    // kill -9 a node that runs some of them (not the one we query).
    let per_node = running_on(&reference);
    let victim = (1..4)
        .find(|i| per_node.contains_key(&format!("n{}", i + 1)))
        .expect("spread placed tasks beyond n1");
    let victim_name = c.agents[victim].name.clone();
    c.agents[victim].kill9();
    let survivors: Vec<usize> = (0..4).filter(|i| *i != victim).collect();
    for &i in &survivors {
        wait_for(
            DEADLINE,
            &format!("{} sees 6 running on survivors", c.agents[i].name),
            || {
                let job = c.job(i, "web")?;
                let per = running_on(&job);
                (per.values().sum::<usize>() == 6 && !per.contains_key(&victim_name)).then_some(())
            },
        );
    }
}

#[test]
fn a_service_that_names_no_placement_spreads_and_a_batch_packs() {
    // Neither job names a `placement`: the service spreads over the three idle nodes, two
    // copies each (a lost node takes a third of it, not all), the batch packs onto one. The
    // service goes through `shoal job run`, the batch through the API's JSON body, the two
    // paths that read a job document.
    let c = Cluster::start(3, "defaults");
    let web = serde_json::json!({
        "id": "web", "type": "service", "count": 6, "command": "sh", "args": c.recorded("sleep 600"),
        "resources": {"cpu": 100, "memory": 16}
    });
    let out = c.submit(0, web, &[]);
    assert!(
        out.status.success(),
        "job run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let batch = serde_json::json!({
        "id": "crunch", "type": "batch", "count": 6, "command": "sh", "args": c.recorded("sleep 600"),
        "resources": {"cpu": 100, "memory": 16}
    })
    .to_string();
    let answer = http_request_with_token(
        c.agents[1].http,
        "POST",
        "/v1/jobs",
        Some(&batch),
        Duration::from_secs(10),
        Some(&c.agents[1].token()),
    )
    .unwrap();
    assert_eq!(answer.status, 200, "{}", answer.body);
    for (id, want) in [("web", vec![2, 2, 2]), ("crunch", vec![6])] {
        let job = wait_for(DEADLINE, &format!("{id}: 6 running"), || {
            let job = c.job(0, id)?;
            (running_on(&job).values().sum::<usize>() == 6).then_some(job)
        });
        let per_node = running_on(&job);
        let mut counts: Vec<usize> = per_node.values().copied().collect();
        counts.sort_unstable();
        assert_eq!(counts, want, "{id}: {per_node:?}");
    }
}

#[test]
fn a_batch_of_200_runs_every_slot_exactly_once() {
    let c = Cluster::start(3, "batch");
    let ran = c.dir().join("ran");
    let spec = serde_json::json!({
        "id": "many", "type": "batch", "count": 200, "command": "sh",
        "args": ["-c", format!("echo $SHOAL_SLOT >> {}", ran.display())],
        "resources": {"cpu": 100, "memory": 16}
    });
    let out = c.submit(1, spec, &[]);
    assert!(
        out.status.success(),
        "job run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let job = wait_for(DEADLINE, "the batch completes", || {
        let job = c.job(1, "many")?;
        (job["status"] == "complete").then_some(job)
    });
    let t = tasks(&job);
    assert_eq!(t.len(), 200);
    for task in &t {
        assert_eq!(
            (task["state"].as_str(), task["exit_code"].as_i64()),
            (Some("exited"), Some(0)),
            "{task}"
        );
    }
    let mut slots: Vec<u32> = std::fs::read_to_string(&ran)
        .unwrap()
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    slots.sort_unstable();
    // Attempt numbers may exceed 1 (an attempt rejected by a full node is re-placed), but only
    // one process per slot ever ran: the side effect proves it.
    assert_eq!(
        slots,
        (0..200).collect::<Vec<_>>(),
        "every slot ran exactly once"
    );
}

#[test]
fn concurrent_submissions_beyond_capacity_never_overcommit() {
    let c = Cluster::start(3, "overcommit");
    // 3 nodes × 2000m = 6000m; four jobs of 8 × 300m = 9600m ask for more than there is.
    let handles: Vec<_> = (0..4)
        .map(|j| {
            let spec = serde_json::json!({
                "id": format!("hog{j}"), "type": "service", "count": 8, "command": "sh",
                "args": c.recorded("sleep 600"), "resources": {"cpu": 300, "memory": 32}
            });
            let file = c.dir().join(format!("hog{j}.json"));
            std::fs::write(&file, spec.to_string()).unwrap();
            let (api, root) = (c.agents[j % 3].api(), c.dir().to_path_buf());
            std::thread::spawn(move || {
                run_in(
                    &root,
                    &[
                        "job",
                        "run",
                        file.to_str().unwrap(),
                        "--addr",
                        &api,
                        "--detach",
                    ],
                )
            })
        })
        .collect();
    for h in handles {
        let out = h.join().unwrap();
        assert!(
            out.status.success(),
            "submission failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Wait until placement settles: 18 tasks fit (6 per node: 6 × 300m = 1800m of 2000m),
    // and every slot left pending names the resource it lacks. A slot can still be in the
    // back-off after a rejection that raced another coordinator's placement when the 18th task
    // starts; its next attempt must then report cpu.
    wait_for(
        DEADLINE,
        "18 tasks running and every pending slot short of cpu",
        || {
            let jobs: Vec<_> = (0..4)
                .filter_map(|j| c.job(0, &format!("hog{j}")))
                .collect();
            let running: usize = jobs
                .iter()
                .map(|j| running_on(j).values().sum::<usize>())
                .sum();
            let settled = jobs.iter().flat_map(tasks).all(|t| {
                t["state"] != "pending"
                    || t["pending_reason"]
                        .as_str()
                        .is_some_and(|r| r.contains("cpu"))
            });
            (jobs.len() == 4 && running == 18 && settled).then_some(())
        },
    );
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    let mut pending = Vec::new();
    for j in 0..4 {
        let job = c.job(0, &format!("hog{j}")).unwrap();
        for (node, n) in running_on(&job) {
            *per_node.entry(node).or_default() += n;
        }
        pending.extend(tasks(&job).into_iter().filter(|t| t["state"] == "pending"));
    }
    for (node, n) in &per_node {
        assert!(n * 300 <= 2000, "{node} runs {n} × 300m > 2000m");
    }
    assert_eq!(pending.len(), 14);
    for t in &pending {
        let reason = t["pending_reason"].as_str().unwrap_or("");
        assert!(
            reason.contains("cpu"),
            "pending without a resource reason: {t}"
        );
    }
    // The nodes' own accounting agrees: allocated ≤ capacity everywhere.
    for n in c.agents[0].nodes().unwrap() {
        let (alloc, cap) = (
            &n["resources"]["allocated"]["cpu_millicores"],
            &n["resources"]["capacity"]["cpu_millicores"],
        );
        assert!(alloc.as_u64().unwrap() <= cap.as_u64().unwrap(), "{n}");
    }
}

#[test]
fn stopping_a_job_kills_every_process_it_started() {
    let c = Cluster::start(3, "stop");
    let spec = serde_json::json!({
        "id": "sleepy", "type": "service", "count": 5, "command": "sh",
        "args": c.recorded("sleep 600"), "resources": {"cpu": 100, "memory": 16}, "placement": "spread"
    });
    assert!(c.submit(2, spec, &[]).status.success());
    let pids = wait_for(DEADLINE, "5 pids recorded", || {
        let p = c.recorded_pids();
        (p.len() == 5).then_some(p)
    });
    assert!(pids.iter().all(|p| alive(*p)));
    let out = c.agents[0].cli(&["job", "stop", "sleepy"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for(DEADLINE, "every process of the job is gone", || {
        pids.iter().all(|p| !alive(*p)).then_some(())
    });
    wait_for(DEADLINE, "the job reports stopped", || {
        (c.job(1, "sleepy")?["status"] == "stopped").then_some(())
    });
}

#[test]
fn killing_the_accepting_node_right_after_the_ack_loses_nothing() {
    let mut c = Cluster::start(3, "ack");
    let spec = serde_json::json!({
        "id": "precious", "type": "service", "count": 2, "command": "sh",
        "args": c.recorded("sleep 600"), "resources": {"cpu": 100, "memory": 16}
    });
    let out = c.submit(0, spec, &["--detach"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    c.agents[0].kill9();
    for i in 1..3 {
        wait_for(DEADLINE, &format!("n{} runs the job", i + 1), || {
            let job = c.job(i, "precious")?;
            (running_on(&job).values().sum::<usize>() == 2 && !running_on(&job).contains_key("n1"))
                .then_some(())
        });
    }
}

#[test]
fn bad_jobs_get_clear_errors() {
    let c = Cluster::start(1, "badjobs");
    let bad = c.dir().join("bad.toml");
    std::fs::write(&bad, "id = \"x\"\ntype = \"service\"\ncount = 0\ncommand = \"true\"\n[resources]\ncpu = 1\nmemory = 1\n").unwrap();
    let out = c.agents[0].cli(&["job", "run", bad.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("bad.toml") && err.contains("count"), "{err}");

    // The API's own answer names the problem once, with the field (no "invalid job spec:
    // invalid job spec:" from two layers each adding their prefix).
    let api = c.agents[0].http;
    let token = c.agents[0].token();
    for (body, says) in [
        (
            r#"{"id":"x","type":"service","count":0,"command":"true","resources":{"cpu":1,"memory":1}}"#,
            "invalid job spec: `count`",
        ),
        (r#"{"id": "#, "malformed job spec: "),
    ] {
        let answer = http_request_with_token(
            api,
            "POST",
            "/v1/jobs",
            Some(body),
            Duration::from_secs(10),
            Some(&token),
        )
        .unwrap();
        assert_eq!(answer.status, 400, "{}", answer.body);
        assert!(answer.body.contains(says), "{}", answer.body);
        assert_eq!(
            answer.body.matches("job spec").count(),
            1,
            "{}",
            answer.body
        );
    }

    let out = c.submit(0, serde_json::json!({
        "id": "huge", "type": "service", "count": 1, "command": "true", "resources": {"cpu": 64000, "memory": 1}
    }), &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("422") && err.contains("64000m cpu") && err.contains("n1"),
        "{err}"
    );
    let listed = run(&["job", "list", "--json", "--addr", &c.agents[0].api()]);
    assert_eq!(
        String::from_utf8_lossy(&listed.stdout).trim(),
        "[]",
        "a refused job was kept"
    );
}

#[test]
fn job_run_of_a_job_no_node_fits_exits_2_and_the_job_stays() {
    // No node has `zone=eu-1`: the job is accepted (a node that has it may join) and every task
    // stays pending. `job run` says why, then stops following and exits 2, as Nomad's does on
    // placement failures: a script that submits must not hang on a node that is not there.
    let c = Cluster::start(1, "blocked");
    let file = c.dir().join("zoned.toml");
    std::fs::write(
        &file,
        "id = \"zoned\"\ntype = \"service\"\ncount = 2\ncommand = \"sleep\"\nargs = [\"600\"]\n\
         constraints = [\"zone == eu-1\"]\n[resources]\ncpu = 100\nmemory = 16\n",
    )
    .unwrap();
    let out = c.agents[0].cli_within(&["job", "run", file.to_str().unwrap()], DEADLINE);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("waiting: 2 task(s): 1 fail constraint zone=eu-1"),
        "{err}"
    );
    assert!(
        err.contains("job zoned is submitted, but no node fits 2 of its tasks now")
            && err.contains("`shoal job stop zoned`"),
        "{err}"
    );
    let job = c.job(0, "zoned").expect("the job stays submitted");
    assert_eq!(job["status"], "pending", "{job}");
}

#[test]
fn a_restarted_node_reloads_its_tables_and_kills_what_was_superseded() {
    // The orphan must outlive the re-placement: a watchdog grace far longer than the test.
    let mut c = Cluster::start_with(4, "restart", &["--orphan-grace-ms", "600000"]);
    let spec = serde_json::json!({
        "id": "svc", "type": "service", "count": 3, "command": "sh",
        "args": c.recorded("sleep 600"), "resources": {"cpu": 100, "memory": 16}, "distinct_hosts": true
    });
    assert!(c.submit(0, spec, &[]).status.success());
    let job = wait_for(DEADLINE, "3 running, one per node", || {
        let job = c.job(0, "svc")?;
        (running_on(&job).len() == 3).then_some(job)
    });
    // The victim runs one task and is not n1, through which the test watches.
    let victim_task = tasks(&job).into_iter().find(|t| t["node"] != "n1").unwrap();
    let victim_name = victim_task["node"].as_str().unwrap().to_string();
    let victim = c.agents.iter().position(|a| a.name == victim_name).unwrap();
    let victim_slot = victim_task["slot"].clone();
    let before = c.recorded_pids();

    // kill -9 the victim: its process keeps running, orphaned; the cluster re-places its slot.
    let bind = c.agents[victim].gossip;
    c.agents[victim].kill9();
    wait_for(DEADLINE, "the slot runs again on a survivor", || {
        let job = c.job(0, "svc")?;
        let t = tasks(&job).into_iter().find(|t| t["slot"] == victim_slot)?;
        (t["state"] == "running" && t["node"] != victim_name.as_str()).then_some(())
    });
    let orphans: Vec<i32> = before.iter().copied().filter(|p| alive(*p)).collect();
    assert_eq!(
        orphans.len(),
        3,
        "the crashed node's process should still be running"
    );

    // Restart the victim with the same data dir: it reloads its tables, finds its old process, learns
    // the slot was superseded, and kills it. Exactly three processes run afterwards.
    let key = c.dir().join("cluster.key");
    let root = c.dir().to_path_buf();
    c.agents[victim] = Agent::start(AgentSpec {
        join: Some(c.agents[0].gossip),
        bind,
        extra: vec!["--orphan-grace-ms".into(), "600000".into()],
        ..AgentSpec::new(&victim_name, &key, &root)
    });
    wait_for(DEADLINE, "the superseded process is killed", || {
        let running: Vec<i32> = c
            .recorded_pids()
            .into_iter()
            .filter(|p| alive(*p))
            .collect();
        (running.len() == 3).then_some(())
    });
    wait_for(DEADLINE, "the restarted node reports 3 running", || {
        let job = c.job(victim, "svc")?;
        (running_on(&job).values().sum::<usize>() == 3).then_some(())
    });
}

/// A batch job of one `true` task.
fn true_batch(id: &str) -> Value {
    serde_json::json!({"id": id, "type": "batch", "count": 1, "command": "true",
        "resources": {"cpu": 100, "memory": 16}})
}

/// Submits [`true_batch`] `id` to agent `at` until it is accepted (a restarting agent refuses
/// work until it has caught up); `what` names the wait.
fn submit_until_accepted(c: &Cluster, at: usize, id: &str, what: &str) {
    wait_for(DEADLINE, what, || {
        c.submit(at, true_batch(id), &[])
            .status
            .success()
            .then_some(())
    });
}

/// Whether agent `at` lists job `id` as complete.
fn completed(c: &Cluster, at: usize, id: &str) -> bool {
    c.job(at, id).is_some_and(|j| j["status"] == "complete")
}

/// `shoal_replication_writers` on agent `at`: the writers in its version vector.
fn writers(c: &Cluster, at: usize) -> Option<u64> {
    let answer =
        common::http_request(c.agents[at].http, "GET", "/v1/metrics", None, DEADLINE).ok()?;
    answer
        .body
        .lines()
        .find_map(|l| l.strip_prefix("shoal_replication_writers "))?
        .trim()
        .parse()
        .ok()
}

/// A clean restart (SIGTERM) of an agent that runs a task adds no writer to the cluster's
/// version vectors: the agent writes on as the start whose last act was its final snapshot. A crash restart
/// (`kill -9`) adds one, since the crashed start may have sent ops its last snapshot lacks.
/// Every writer is an entry in every digest, for good (`docs/scheduler.md`, "Actors are per
/// start"), so an upgrade or a reboot used to cost one per node.
#[test]
fn a_clean_restart_adds_no_writer_and_a_crash_restart_one() {
    let mut c = Cluster::start(3, "writers");
    // Every agent writes: a job through each.
    for at in 0..3 {
        let id = format!("first{at}");
        assert!(c.submit(at, true_batch(&id), &[]).status.success());
        wait_for(DEADLINE, &format!("{id} completes"), || {
            completed(&c, 0, &id).then_some(())
        });
    }
    // And n3 runs a task of a service when it stops: a clean stop kills it first, and its
    // end is in the final snapshot, so the next start has nothing to write before it
    // catches up.
    let svc = serde_json::json!({"id": "svc", "type": "service", "count": 3, "command": "sh",
        "args": c.recorded("sleep 600"), "resources": {"cpu": 100, "memory": 16},
        "distinct_hosts": true});
    assert!(c.submit(2, svc, &[]).status.success());
    let svc_running = |c: &Cluster| {
        let job = c.job(0, "svc")?;
        (running_on(&job).len() == 3).then_some(())
    };
    wait_for(DEADLINE, "svc runs on every node", || svc_running(&c));
    let everyone = |c: &Cluster, n: u64| (0..3).all(|at| writers(c, at) == Some(n));
    wait_for(DEADLINE, "every agent counts 3 writers", || {
        everyone(&c, 3).then_some(())
    });

    let key = c.dir().join("cluster.key");
    let root = c.dir().to_path_buf();
    for (round, crash) in [(0, false), (1, false), (2, true)] {
        let bind = c.agents[2].gossip;
        if crash {
            c.agents[2].kill9();
        } else {
            let status = c.agents[2].stop();
            assert!(
                status.is_some_and(|s| s.success()),
                "n3 stopped: {status:?}"
            );
        }
        c.agents[2] = Agent::start(AgentSpec {
            join: Some(c.agents[0].gossip),
            bind,
            ..AgentSpec::new("n3", &key, &root)
        });
        // The switch to the last start's actor waits for n3's catch-up; a write before it
        // would keep n3 a new actor (`Scheduler::continue_writing_as`).
        let resumed = if crash { 2 } else { round + 1 };
        wait_for(DEADLINE, "n3's catch-up ends", || {
            let log = std::fs::read_to_string(root.join("n3.log")).ok()?;
            (log.matches("writing on as its actor").count() == resumed).then_some(())
        });
        let id = format!("again{round}");
        submit_until_accepted(&c, 2, &id, "n3 takes a job again");
        wait_for(DEADLINE, &format!("{id} completes"), || {
            completed(&c, 0, &id).then_some(())
        });
        wait_for(DEADLINE, "svc runs on every node again", || svc_running(&c));
        let expected = if crash { 4 } else { 3 };
        wait_for(
            DEADLINE,
            &format!("round {round}: every agent counts {expected} writers"),
            || everyone(&c, expected).then_some(()),
        );
        assert_eq!(writers(&c, 0), Some(expected), "round {round}");
    }
}

/// A one-node cluster that restarts has nobody to catch up with: it places at once instead
/// of waiting out the catch-up (10 s) for nobody. Found by the agent's log: the waiver is
/// logged, the catch-up running out never is. A clean restart is a new writer (it writes on
/// as its last start only once a peer's answer shows that is safe). A node of a
/// larger cluster started without `--join` still catches up after a crash: no waiver.
#[test]
fn a_one_node_cluster_restarts_without_waiting_for_peers() {
    let mut c = Cluster::start(1, "lone");
    assert!(c.submit(0, true_batch("first"), &[]).status.success());
    wait_for(DEADLINE, "first completes", || {
        completed(&c, 0, "first").then_some(())
    });
    wait_for(DEADLINE, "n1 counts 1 writer", || {
        (writers(&c, 0) == Some(1)).then_some(())
    });

    let key = c.dir().join("cluster.key");
    let root = c.dir().to_path_buf();
    let log = || std::fs::read_to_string(root.join("n1.log")).unwrap_or_default();
    for (round, crash) in [(1, false), (2, true)] {
        if crash {
            c.agents[0].kill9();
        } else {
            let status = c.agents[0].stop();
            assert!(
                status.is_some_and(|s| s.success()),
                "n1 stopped: {status:?}"
            );
        }
        c.agents[0] = Agent::start(AgentSpec::new("n1", &key, &root));
        let id = format!("again{round}");
        submit_until_accepted(&c, 0, &id, "n1 takes a job again");
        wait_for(DEADLINE, &format!("{id} completes"), || {
            completed(&c, 0, &id).then_some(())
        });
        let log = log();
        assert_eq!(
            log.matches("restored with no other member known").count(),
            round,
            "round {round}: the catch-up is waived at every restart; log:\n{log}"
        );
        assert!(
            !log.contains("no peer answered the catch-up in time"),
            "round {round}: n1 waited out a catch-up with nobody; log:\n{log}"
        );
        if !crash {
            // A crash restart also writes as a new actor, but the start before it may vanish
            // from the vector: alone, its ops after the last snapshot were nowhere else.
            wait_for(DEADLINE, "a clean restart: 2 writers", || {
                (writers(&c, 0) == Some(2)).then_some(())
            });
        }
    }
    drop(c);

    // Two nodes: n1 (no `--join`) knew n2, so a crash restart owes a catch-up.
    let mut c = Cluster::start(2, "not-lone");
    assert!(c.submit(0, true_batch("first"), &[]).status.success());
    wait_for(DEADLINE, "first completes", || {
        completed(&c, 0, "first").then_some(())
    });
    let key = c.dir().join("cluster.key");
    let root = c.dir().to_path_buf();
    let bind = c.agents[0].gossip;
    c.agents[0].kill9();
    c.agents[0] = Agent::start(AgentSpec {
        bind,
        ..AgentSpec::new("n1", &key, &root)
    });
    submit_until_accepted(&c, 0, "again", "n1 takes a job again");
    wait_for(DEADLINE, "again completes", || {
        completed(&c, 0, "again").then_some(())
    });
    let log = std::fs::read_to_string(root.join("n1.log")).unwrap_or_default();
    assert!(
        !log.contains("restored with no other member known"),
        "n1 knew n2 and must catch up; log:\n{log}"
    );
}

/// A whole cluster stopped cleanly node by node (planned maintenance) comes back whole: each
/// stop is a leave, so the service moves onto the nodes still up, and the last node to stop
/// lists nobody else. Started again first, it runs the service at once without waiting for
/// peers (`docs/faults.md`, "A node that knew no other member"); the others join it again and
/// catch up. Nothing is lost and nothing runs twice.
#[test]
fn a_cluster_stopped_node_by_node_comes_back_whole() {
    let mut c = Cluster::start(3, "whole");
    let svc = serde_json::json!({"id": "svc", "type": "service", "count": 3, "command": "sh",
        "args": c.recorded("sleep 600"), "resources": {"cpu": 100, "memory": 16}});
    assert!(c.submit(0, svc, &[]).status.success());
    let running = |c: &Cluster, at: usize| {
        let job = c.job(at, "svc")?;
        Some(running_on(&job).values().sum::<usize>())
    };
    let alive_pids = |c: &Cluster| c.recorded_pids().into_iter().filter(|p| alive(*p)).count();
    wait_for(DEADLINE, "svc runs 3", || {
        (running(&c, 0) == Some(3)).then_some(())
    });
    // n3, then n2: the service moves onto what is still up.
    for at in [2, 1] {
        let status = c.agents[at].stop();
        assert!(status.is_some_and(|s| s.success()), "stopped: {status:?}");
        wait_for(DEADLINE, "svc runs 3 on the nodes still up", || {
            (running(&c, 0) == Some(3) && alive_pids(&c) == 3).then_some(())
        });
    }
    let status = c.agents[0].stop();
    assert!(
        status.is_some_and(|s| s.success()),
        "n1 stopped: {status:?}"
    );
    assert_eq!(alive_pids(&c), 0, "a clean stop kills its tasks");

    let key = c.dir().join("cluster.key");
    let root = c.dir().to_path_buf();
    c.agents[0] = Agent::start(AgentSpec::new("n1", &key, &root));
    wait_for(DEADLINE, "n1 runs svc again, alone", || {
        (running(&c, 0) == Some(3) && alive_pids(&c) == 3).then_some(())
    });
    let log = std::fs::read_to_string(root.join("n1.log")).unwrap_or_default();
    assert!(
        log.contains("restored with no other member known"),
        "the last node to stop knew nobody else; log:\n{log}"
    );
    for (at, name) in [(1, "n2"), (2, "n3")] {
        c.agents[at] = Agent::start(AgentSpec {
            join: Some(c.agents[0].gossip),
            ..AgentSpec::new(name, &key, &root)
        });
    }
    submit_until_accepted(&c, 2, "after", "n3 takes a job");
    wait_for(
        DEADLINE,
        "every node agrees: svc runs 3, the batch completed",
        || {
            (0..3)
                .all(|at| running(&c, at) == Some(3) && completed(&c, at, "after"))
                .then_some(())
        },
    );
    assert_eq!(alive_pids(&c), 3, "nothing runs twice");
}

/// Directories of the tasks of `job` on every agent, as `(agent, <slot>/<attempt>)`.
fn task_dirs(c: &Cluster, job: &str) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for a in &c.agents {
        let tasks = a.data_dir.join("tasks");
        let Ok(keys) = std::fs::read_dir(&tasks) else {
            continue;
        };
        for key in keys.filter_map(Result::ok) {
            if !key
                .file_name()
                .to_string_lossy()
                .starts_with(&format!("{job}."))
            {
                continue;
            }
            for slot in std::fs::read_dir(key.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                for attempt in std::fs::read_dir(slot.path())
                    .into_iter()
                    .flatten()
                    .flatten()
                {
                    found.push((
                        a.name.clone(),
                        format!(
                            "{}/{}",
                            slot.file_name().to_string_lossy(),
                            attempt.file_name().to_string_lossy()
                        ),
                    ));
                }
            }
        }
    }
    found.sort();
    found
}

/// What `docs/executor.md` ("Task directories", "Logs") promises on real agents: a finished
/// batch's task directories are kept (logs readable) until the job is purged, then removed on
/// every node; a crash-looping service keeps the directories of its last attempts only; a
/// running service's directories and processes are untouched; a running task's log is cut to
/// the cap, and `shoal task logs` shows its tail.
#[test]
fn task_directories_go_with_their_attempts_and_running_ones_stay() {
    let c = Cluster::start_with(
        3,
        "taskgc",
        &[
            "--job-gc-grace-s",
            "4",
            "--task-gc-interval-s",
            "1",
            "--task-log-max-mib",
            "1",
        ],
    );
    let chatty = serde_json::json!({
        "id": "chatty", "type": "service", "count": 1, "command": "sh",
        "args": c.recorded("sh -c 'head -c 3145728 /dev/zero | tr \"\\\\000\" a; echo; echo the-end; exec sleep 600'"),
        "resources": {"cpu": 100, "memory": 16}
    });
    let out = c.submit(0, chatty, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let keep = serde_json::json!({
        "id": "keep", "type": "service", "count": 3, "command": "sh",
        "args": c.recorded("sleep 600"), "resources": {"cpu": 100, "memory": 16},
        "placement": "spread"
    });
    let flap = serde_json::json!({
        "id": "flap", "type": "service", "count": 1, "command": "sh", "args": ["-c", "exit 1"],
        "resources": {"cpu": 100, "memory": 16},
        "restart": {"delay_ms": 300, "backoff": 1.0}
    });
    let once = serde_json::json!({
        "id": "once", "type": "batch", "count": 6, "command": "sh",
        "args": ["-c", "echo out-$SHOAL_SLOT"], "resources": {"cpu": 100, "memory": 16}
    });
    // `flap` never stays running, so it is submitted detached: a followed `job run` gives up
    // on a crash loop and fails (`the_logs_of_earlier_attempts_are_readable`).
    for (spec, extra) in [(keep, &[][..]), (flap, &["--detach"][..]), (once, &[][..])] {
        let out = c.submit(0, spec, extra);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let running = wait_for(DEADLINE, "3 of keep running", || {
        let job = c.job(1, "keep")?;
        (running_on(&job).values().sum::<usize>() == 3).then_some(job)
    });

    // The batch's six directories exist with their output while the job is listed.
    wait_for(DEADLINE, "the batch's six task directories", || {
        (task_dirs(&c, "once").len() == 6).then_some(())
    });
    let outputs: Vec<String> = c
        .agents
        .iter()
        .flat_map(|a| {
            let root = a.data_dir.join("tasks");
            std::fs::read_dir(&root).into_iter().flatten().flatten()
        })
        .filter(|k| k.file_name().to_string_lossy().starts_with("once."))
        .flat_map(|k| std::fs::read_dir(k.path()).into_iter().flatten().flatten())
        .flat_map(|s| std::fs::read_dir(s.path()).into_iter().flatten().flatten())
        .map(|t| std::fs::read_to_string(t.path().join("stdout")).unwrap_or_default())
        .collect();
    assert_eq!(outputs.len(), 6, "{outputs:?}");

    // Purged after its grace, then its directories go from every node.
    wait_for(DEADLINE, "the batch is purged", || {
        let out = run(&["job", "status", "once", "--addr", &c.agents[2].api()]);
        (!out.status.success()).then_some(())
    });
    wait_for(
        DEADLINE,
        "the batch's directories removed everywhere",
        || task_dirs(&c, "once").is_empty().then_some(()),
    );

    // The crash loop: past attempt 16, at most the last 8 attempts (the scheduler's
    // attempt_history) plus the ones since the last pass keep a directory.
    let dirs = wait_for(
        DEADLINE,
        "flap past attempt 16 with few directories",
        || {
            let job = c.job(0, "flap")?;
            let newest = tasks(&job)
                .iter()
                .filter_map(|t| t["attempt"].as_u64())
                .max()?;
            let dirs = task_dirs(&c, "flap");
            (newest >= 16 && dirs.len() <= 11).then_some(dirs)
        },
    );
    assert!(
        !dirs.iter().any(|(_, d)| d == "0/1"),
        "attempt 1 still has a directory: {dirs:?}"
    );

    // The running service: its three directories and processes are all there.
    assert_eq!(
        task_dirs(&c, "keep").len(),
        3,
        "{:?}",
        task_dirs(&c, "keep")
    );
    let job = c.job(0, "keep").expect("keep is listed");
    assert_eq!(
        placement(&job),
        placement(&running),
        "keep was not disturbed"
    );

    // The chatty task's 3 MiB log is cut to its last MiB on disk, and its tail is served.
    let log = wait_for(DEADLINE, "chatty's log cut to 1 MiB", || {
        use std::os::unix::fs::MetadataExt;
        let dirs = task_dirs(&c, "chatty");
        let (node, sub) = dirs.first()?;
        let agent = c.agents.iter().find(|a| &a.name == node)?;
        let key = std::fs::read_dir(agent.data_dir.join("tasks"))
            .ok()?
            .flatten()
            .find(|k| k.file_name().to_string_lossy().starts_with("chatty."))?;
        let path = key.path().join(sub).join("stdout");
        let meta = std::fs::metadata(&path).ok()?;
        (meta.len() > 3 << 20 && meta.blocks() * 512 <= (1 << 20) + 8192).then_some(path)
    });
    let out = run(&["task", "logs", "chatty", "0", "--addr", &c.agents[1].api()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stdout.ends_with(b"aaaa\nthe-end\n") && out.stdout.len() < (1 << 20) + 8192,
        "{} bytes from {}",
        out.stdout.len(),
        log.display()
    );
    let pids = c.recorded_pids();
    assert_eq!(pids.len(), 4, "{pids:?}");
    assert!(pids.iter().all(|p| alive(*p)), "{pids:?}");
}

/// `shoal job run` of a crash loop gives up and says so; `shoal task logs --attempt N` and
/// `--previous`: the output of its earlier attempts, kept until the tables drop them.
#[test]
fn the_logs_of_earlier_attempts_are_readable() {
    let c = Cluster::start(1, "prevlogs");
    let spec = serde_json::json!({
        "id": "flap", "type": "service", "count": 1, "command": "sh",
        "args": ["-c", "echo run $SHOAL_ATTEMPT; exit 1"],
        "resources": {"cpu": 100, "memory": 16},
        "restart": {"delay_ms": 200, "backoff": 1.0}
    });
    // Followed, not detached: the restarts never end (`attempts = 0`), so `job run` must
    // stop on its own, fail, and name the slot and its exit.
    let file = c.dir().join("flap.json");
    std::fs::write(&file, spec.to_string()).unwrap();
    let out = c.agents[0].cli_within(&["job", "run", file.to_str().unwrap()], DEADLINE);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "job run of a crash loop succeeded: {err}"
    );
    assert!(err.contains("job flap keeps failing: slot 0"), "{err}");
    assert!(err.contains("exited 1"), "{err}");
    let job = c.job(0, "flap").expect("flap stays submitted");
    assert!(
        !matches!(job["status"].as_str(), Some("stopping" | "stopped")),
        "{job}"
    );
    let logs = |extra: &[&str]| {
        let mut args = vec!["task", "logs", "flap", "0"];
        args.extend_from_slice(extra);
        c.agents[0].cli(&args)
    };
    wait_for(DEADLINE, "flap reaches attempt 3", || {
        let job = c.job(0, "flap")?;
        let newest = tasks(&job)
            .iter()
            .filter_map(|t| t["attempt"].as_u64())
            .max()?;
        (newest >= 3).then_some(())
    });
    let first = logs(&["--attempt", "1"]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&first.stdout), "run 1\n");
    let previous = logs(&["--previous"]);
    assert!(
        previous.status.success(),
        "{}",
        String::from_utf8_lossy(&previous.stderr)
    );
    let text = String::from_utf8_lossy(&previous.stdout).into_owned();
    let n: u32 = text
        .strip_prefix("run ")
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or_else(|| panic!("{text:?}"));
    assert!(n >= 2, "the previous attempt ran after the first: {text:?}");
    let missing = logs(&["--attempt", "999"]);
    assert!(!missing.status.success());
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("no attempt 999"),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );
    let both = logs(&["--attempt", "1", "--previous"]);
    assert!(!both.status.success());
    assert!(String::from_utf8_lossy(&both.stderr).contains("cannot be used with"));
    // A job that does not exist is named as such, not as a slot without a task.
    let stderr_of = |args: &[&str]| {
        let out = c.agents[0].cli(args);
        assert!(!out.status.success(), "task logs {args:?} succeeded");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let nojob = stderr_of(&["task", "logs", "nojob", "0"]);
    assert!(nojob.contains("no job \"nojob\""), "{nojob}");
    let noslot = stderr_of(&["task", "logs", "flap", "7"]);
    assert!(
        noslot.contains("job \"flap\" has no placed task in slot 7"),
        "{noslot}"
    );
}

/// `shoal task logs --stderr` reads the other stream, and `--follow` keeps reading a slot
/// across its restarts: it says when it moves on to the next attempt and prints that
/// attempt's output from its start.
#[test]
fn task_logs_follow_a_slot_across_its_restarts_and_read_stderr() {
    let c = Cluster::start(1, "follow");
    let spec = serde_json::json!({
        "id": "chatty", "type": "service", "count": 1, "command": "sh",
        "args": ["-c", "echo out $SHOAL_ATTEMPT; echo err $SHOAL_ATTEMPT >&2; sleep 1; exit 1"],
        "resources": {"cpu": 100, "memory": 16},
        "restart": {"delay_ms": 200, "backoff": 1.0}
    });
    let out = c.submit(0, spec, &["--detach"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let agent = &c.agents[0];
    let stderr_text = wait_for(DEADLINE, "chatty's stderr has a line", || {
        let out = agent.cli(&["task", "logs", "chatty", "0", "--stderr"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        (out.status.success() && text.starts_with("err ")).then_some(text)
    });
    assert!(!stderr_text.contains("out "), "{stderr_text:?}");

    let mut follower = common::shoal()
        .current_dir(&agent.root)
        .args(["task", "logs", "chatty", "0", "--follow", "--addr"])
        .arg(agent.api())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("shoal task logs --follow starts");
    let collect = |pipe: Box<dyn std::io::Read + Send>| {
        let text = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let sink = text.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut t = sink.lock().unwrap();
                t.push_str(&line);
                t.push('\n');
            }
        });
        text
    };
    let said = collect(Box::new(follower.stdout.take().unwrap()));
    let notes = collect(Box::new(follower.stderr.take().unwrap()));
    // Two attempts' output in one follow, each said when the follow moved on to it.
    let seen = wait_for(DEADLINE, "the follow prints two later attempts", || {
        let said = said.lock().unwrap().clone();
        let notes = notes.lock().unwrap().clone();
        let lines = said.lines().filter(|l| l.starts_with("out ")).count();
        (notes.matches("its output follows").count() >= 2 && lines >= 3).then_some((said, notes))
    });
    let _ = follower.kill();
    let _ = follower.wait();
    let (said, notes) = seen;
    let attempts: Vec<u32> = said
        .lines()
        .filter_map(|l| l.strip_prefix("out ")?.parse().ok())
        .collect();
    assert!(
        attempts.windows(2).all(|w| w[1] > w[0]),
        "one line per attempt, in order: {said:?} ({notes:?})"
    );
    assert!(!said.contains("err "), "stdout only: {said:?}");
    assert!(
        notes.contains(&format!("is now attempt {}", attempts[attempts.len() - 1])),
        "{notes:?}"
    );
}

/// README's `curl` example: `POST /v1/jobs` takes a job file as TOML (`Content-Type:
/// application/toml`) as it takes the CLI's JSON, and a malformed one is `400` naming its line.
#[test]
fn a_job_file_posted_as_toml_runs_and_a_bad_one_names_its_line() {
    let c = Cluster::start(2, "toml-post");
    let agent = &c.agents[0];
    let token = agent.token();
    let post = |body: &str| {
        http_request_typed(
            agent.http,
            "POST",
            "/v1/jobs",
            Some(body),
            "application/toml",
            DEADLINE,
            Some(&token),
        )
        .expect("POST /v1/jobs")
    };
    let answer = post(
        "id = \"posted\"\ntype = \"batch\"\ncount = 2\ncommand = \"true\"\n\
         resources = { cpu = 10, memory = 8 }\n",
    );
    assert_eq!(answer.status, 200, "{}", answer.body);
    let job = wait_for(DEADLINE, "the posted batch completes", || {
        let job = c.job(0, "posted")?;
        (job["status"] == "complete").then_some(job)
    });
    assert_eq!(job["count"], 2, "{job}");
    let answer = post("id = \"bad\"\ntype = \"batch\"\ncount = \"two\"\ncommand = \"true\"\n");
    assert_eq!(answer.status, 400, "{}", answer.body);
    assert!(answer.body.contains("line 3"), "{}", answer.body);
    assert!(c.job(0, "bad").is_none(), "a refused job exists");
}
