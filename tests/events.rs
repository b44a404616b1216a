//! The event stream on real agents (`GET /v1/events`, `shoal events`,
//! `docs/observability.md`): a task start reaches the stream of the node that runs it, a
//! reader that reconnects with `since` gets exactly what it missed, topics filter, and bad
//! queries are refused with a reason.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{Agent, AgentSpec, http_request, run, start_agents, wait_for};
use serde_json::Value;

const DEADLINE: Duration = Duration::from_secs(60);

/// A live `shoal ARGS --addr API` against one agent: its stdout lines read by a thread, the
/// process killed on drop.
struct Live {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Live {
    fn start(agent: &Agent, args: &[&str]) -> Self {
        let mut child = common::shoal()
            .args(args)
            .args(["--addr", &agent.api()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("shoal {args:?} runs: {e}"));
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Live { child, lines }
    }

    /// The next line, or `None` once `end` passed (or the output ended).
    fn next_line(&self, end: Instant) -> Option<String> {
        let left = end.saturating_duration_since(Instant::now());
        self.lines.recv_timeout(left).ok()
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `shoal events --follow --json ARGS` against one agent.
struct Follower(Live);

impl Follower {
    fn start(agent: &Agent, args: &[&str]) -> Self {
        Follower(Live::start(
            agent,
            &[&["events", "--follow", "--json"], args].concat(),
        ))
    }

    /// Every event received until `pred` holds for one (returned last), or panics at the
    /// deadline with what arrived.
    fn until(&self, what: &str, mut pred: impl FnMut(&Value) -> bool) -> Vec<Value> {
        let end = Instant::now() + DEADLINE;
        let mut seen = Vec::new();
        loop {
            let Some(line) = self.0.next_line(end) else {
                panic!("no event {what} within {DEADLINE:?}; got {seen:#?}");
            };
            let e: Value = serde_json::from_str(&line)
                .unwrap_or_else(|err| panic!("shoal events printed {line:?}: {err}"));
            let done = pred(&e);
            seen.push(e);
            if done {
                return seen;
            }
        }
    }
}

/// What live `shoal top` writes into a pipe until `frames` frames began (≤ [`DEADLINE`]);
/// the process is killed then.
fn top_into_a_pipe(agent: &Agent, frames: usize) -> String {
    let top = Live::start(agent, &["top"]);
    let end = Instant::now() + DEADLINE;
    let mut text = String::new();
    while text.matches("shoal top · ").count() < frames {
        let Some(line) = top.next_line(end) else {
            panic!("{frames} frames not begun within {DEADLINE:?}: {text}");
        };
        text.push_str(&line);
        text.push('\n');
    }
    text
}

/// `shoal events --json ARGS` (no follow): every event the agent keeps that passes.
fn events_now(agent: &Agent, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["events", "--json"];
    all.extend(args);
    let out = agent.cli(&all);
    assert!(
        out.status.success(),
        "shoal events {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn indexes(events: &[Value]) -> Vec<u64> {
    events
        .iter()
        .map(|e| e["index"].as_u64().unwrap())
        .collect()
}

/// A service `id` of `count` tasks of `sleep 600`, submitted with `shoal job run`.
fn submit(agent: &Agent, dir: &std::path::Path, id: &str, count: u32) {
    let spec = serde_json::json!({
        "id": id, "type": "service", "count": count, "command": "sleep", "args": ["600"],
        "resources": {"cpu": 10, "memory": 8}
    });
    run_job(agent, dir, &spec);
}

/// `shoal job run` of `spec`, written as a job file in `dir`.
fn run_job(agent: &Agent, dir: &std::path::Path, spec: &Value) {
    let file = dir.join(format!("{}.json", spec["id"].as_str().unwrap()));
    std::fs::write(&file, spec.to_string()).unwrap();
    let out = agent.cli(&["job", "run", file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The node each running task of `job` runs on, once all `count` run.
fn nodes_of(agent: &Agent, job: &str, count: usize) -> Vec<String> {
    wait_for(DEADLINE, &format!("{job} runs {count} tasks"), || {
        let out = run(&["job", "status", job, "--json", "--addr", &agent.api()]);
        let view: Value = serde_json::from_slice(&out.stdout).ok()?;
        let nodes: Vec<String> = view["tasks"]
            .as_array()?
            .iter()
            .filter(|t| t["state"] == "running")
            .filter_map(|t| Some(t["node"].as_str()?.to_string()))
            .collect();
        (nodes.len() == count).then_some(nodes)
    })
}

fn is_start_of(job: &str) -> impl Fn(&Value) -> bool + '_ {
    move |e| e["topic"] == "Task" && e["type"] == "Started" && e["payload"]["job"] == job
}

#[test]
fn a_task_start_reaches_the_stream_of_the_node_that_runs_it() {
    let (dir, mut agents) = start_agents(2, "events-start", &[], DEADLINE, |x| {
        x["status"] == "alive" && !x["resources"].is_null()
    });
    let followers: Vec<Follower> = agents
        .iter()
        .map(|a| Follower::start(a, &["--topic", "Task"]))
        .collect();
    submit(&agents[0], &dir.0, "one", 1);
    let node = nodes_of(&agents[0], "one", 1).remove(0);
    let runs = agents.iter().position(|a| a.name == node).unwrap();
    let seen = followers[runs].until("Task/Started of job one", is_start_of("one"));
    let start = seen.last().unwrap();
    assert_eq!(start["node"], node.as_str(), "{start}");
    assert_eq!(start["payload"]["node"], node.as_str(), "{start}");
    assert!(start["payload"]["pid"].as_u64().unwrap() > 0, "{start}");
    assert_eq!(start["payload"]["slot"], 0);
    // The topic filter held: only Task events came.
    assert!(seen.iter().all(|e| e["topic"] == "Task"), "{seen:#?}");
    // Task events are the executor's: the other node's stream has no start of this job.
    let other = &agents[1 - runs];
    let there = events_now(other, &["--topic", "Task"]);
    assert!(!there.iter().any(is_start_of("one")), "{there:#?}");
    // But every node merged the attempt's rows: the Attempt topic shows it running there.
    wait_for(
        DEADLINE,
        "the other node's Attempt events show it running",
        || {
            events_now(other, &["--topic", "Attempt"])
                .iter()
                .any(|e| e["payload"]["job"] == "one" && e["payload"]["state"] == "running")
                .then_some(())
        },
    );
    drop(followers);
    for a in &mut agents {
        a.stop();
    }
}

#[test]
fn a_reader_that_reconnects_with_since_gets_exactly_what_it_missed() {
    let (dir, mut agents) = start_agents(2, "events-since", &[], DEADLINE, |x| {
        x["status"] == "alive" && !x["resources"].is_null()
    });
    let n1 = &agents[0];
    // Everything kept so far: indexes 1, 2, 3, … without gaps, from this incarnation.
    let first = events_now(n1, &[]);
    let first_idx = indexes(&first);
    assert!(!first_idx.is_empty());
    assert_eq!(first_idx, (1..=first_idx.len() as u64).collect::<Vec<_>>());
    assert!(first.iter().all(|e| e["generation"] == n1.generation));
    assert!(first.iter().any(|e| e["topic"] == "Node"), "{first:#?}");

    // A follower sees a job's submission, then is cut off (killed by its PID).
    let follower = Follower::start(n1, &[]);
    submit(n1, &dir.0, "before", 2);
    let seen = follower.until("Job/Submitted of before", |e| {
        e["topic"] == "Job" && e["payload"]["job"] == "before"
    });
    let last = *indexes(&seen).last().unwrap();
    drop(follower);

    // While no one listens, more happens.
    submit(n1, &dir.0, "missed", 2);
    nodes_of(n1, "missed", 2);

    // Reconnecting after `last`: exactly the events after it, the same as a full read shows.
    let resumed = Follower::start(n1, &["--since", &last.to_string()]);
    let got = resumed.until("Job/Submitted of missed", |e| {
        e["topic"] == "Job" && e["payload"]["job"] == "missed"
    });
    let full = events_now(n1, &[]);
    let got_idx = indexes(&got);
    assert_eq!(got_idx[0], last + 1, "the first event after {last}");
    let expected: Vec<&Value> = full
        .iter()
        .filter(|e| e["index"].as_u64().unwrap() > last)
        .collect();
    assert_eq!(
        got.iter().collect::<Vec<_>>(),
        expected[..got.len()].to_vec(),
        "the resumed stream is the ring's tail, event for event"
    );
    assert!(
        got.iter().all(|e| e["type"] != "Missed"),
        "nothing was evicted: no Missed notice"
    );
    // `--since` without follow ends after the kept events, and agrees too.
    let tail = events_now(n1, &["--since", &last.to_string()]);
    assert_eq!(indexes(&tail)[..got.len()], got_idx[..]);
    drop(resumed);
    for a in &mut agents {
        a.stop();
    }
}

#[test]
fn topics_filter_and_bad_queries_are_refused_with_a_reason() {
    let (dir, mut agents) = start_agents(1, "events-query", &[], DEADLINE, |x| {
        x["status"] == "alive" && !x["resources"].is_null()
    });
    let n1 = &agents[0];
    submit(n1, &dir.0, "filtered", 1);
    nodes_of(n1, "filtered", 1);
    let both = events_now(n1, &["--topic", "Task,Job"]);
    assert!(both.iter().any(|e| e["topic"] == "Task"), "{both:#?}");
    assert!(both.iter().any(|e| e["topic"] == "Job"), "{both:#?}");
    assert!(
        both.iter()
            .all(|e| e["topic"] == "Task" || e["topic"] == "Job"),
        "{both:#?}"
    );
    // Over HTTP: the query string, case-insensitive, as server-sent events.
    let answer = http_request(
        n1.http,
        "GET",
        "/v1/events?topic=placement&follow=false",
        None,
        Duration::from_secs(10),
    )
    .unwrap();
    assert_eq!(answer.status, 200, "{}", answer.body);
    let data: Vec<Value> = answer
        .body
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert!(!data.is_empty() && data.iter().all(|e| e["topic"] == "Placement"));
    assert!(answer.body.contains(&format!("id: {}", data[0]["index"])));

    let newest = indexes(&events_now(n1, &[])).into_iter().max().unwrap();
    for (query, says) in [
        ("since=abc", "not an event index"),
        ("since=-3", "not an event index"),
        ("topic=Tasks", "unknown topic \\\"Tasks\\\""),
        ("follow=maybe", "not true or false"),
        ("wait=1", "unknown parameter"),
        (
            &format!("since={}", newest + 1_000_000) as &str,
            "ahead of this agent's newest event",
        ),
    ] {
        let answer = http_request(
            n1.http,
            "GET",
            &format!("/v1/events?{query}"),
            None,
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!(answer.status, 400, "{query}: {}", answer.body);
        assert!(answer.body.contains(says), "{query}: {}", answer.body);
    }
    // Without --json, one line per event: index, time, topic, type, the payload's fields.
    let out = n1.cli(&["events", "--topic", "Job"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("job=filtered"))
        .unwrap_or_else(|| panic!("no line for the job:\n{text}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    assert!(words[0].parse::<u64>().is_ok(), "{line}");
    assert!(words[1].ends_with('Z'), "{line}");
    assert_eq!(&words[2..5], ["Job", "Submitted", "job=filtered"], "{line}");
    // `shoal top --once`: the node and the job, as one frame.
    let out = n1.cli(&["top", "--once"]);
    assert!(out.status.success());
    let frame = String::from_utf8_lossy(&out.stdout);
    assert!(frame.starts_with("shoal top · 1 node: 1 alive"), "{frame}");
    assert!(
        frame
            .lines()
            .any(|l| l.starts_with("n1 ") && l.contains("alive")),
        "{frame}"
    );
    assert!(
        frame
            .lines()
            .any(|l| l.starts_with("filtered ") && l.contains("1/1")),
        "{frame}"
    );
    // Live into a pipe: frames a blank line apart, without the terminal's escapes (the
    // first frame, then one more once the event stream's replay marks it stale).
    let frames = top_into_a_pipe(n1, 2);
    assert!(!frames.contains('\x1b'), "escapes in a pipe: {frames:?}");
    assert_eq!(frames.matches("shoal top · 1 node").count(), 2, "{frames}");
    assert!(
        frames.contains("\n\nshoal top · "),
        "no blank line between frames: {frames}"
    );
    // The CLI says so too, and fails.
    let out = n1.cli(&["events", "--topic", "Tasks"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown topic"));
    for a in &mut agents {
        a.stop();
    }
}

#[test]
fn a_reader_behind_a_small_ring_is_told_what_it_missed_and_nothing_else() {
    let (dir, mut agents) =
        start_agents(1, "events-ring", &["--events-kept", "8"], DEADLINE, |x| {
            x["status"] == "alive" && !x["resources"].is_null()
        });
    let n1 = &agents[0];
    // Far more than 8 events: a job's submission, placements, attempt rows, starts.
    submit(n1, &dir.0, "many", 3);
    nodes_of(n1, "many", 3);
    let kept = events_now(n1, &["--since", "0"]);
    let notice = &kept[0];
    assert_eq!(
        (notice["topic"].as_str(), notice["type"].as_str()),
        (Some("Stream"), Some("Missed")),
        "{kept:#?}"
    );
    let rest = &kept[1..];
    assert_eq!(rest.len(), 8, "the ring keeps 8: {kept:#?}");
    let first_kept = rest[0]["index"].as_u64().unwrap();
    // The notice counts exactly the events between the cursor and the oldest kept, and its
    // index is the last one missed; the kept ones follow without a gap.
    assert_eq!(notice["payload"]["missed"].as_u64(), Some(first_kept - 1));
    assert_eq!(notice["payload"]["oldest_kept"].as_u64(), Some(first_kept));
    assert_eq!(notice["index"].as_u64(), Some(first_kept - 1));
    assert_eq!(
        indexes(rest),
        (first_kept..first_kept + 8).collect::<Vec<_>>()
    );
    // Resuming after the notice misses nothing more; the metrics count the evictions.
    let resumed = events_now(n1, &["--since", &(first_kept - 1).to_string()]);
    assert!(
        resumed.iter().all(|e| e["type"] != "Missed"),
        "{resumed:#?}"
    );
    let metrics =
        http_request(n1.http, "GET", "/v1/metrics", None, Duration::from_secs(10)).unwrap();
    let dropped = metrics
        .body
        .lines()
        .find_map(|l| l.strip_prefix("shoal_events_dropped_total "))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap();
    assert!(dropped >= first_kept - 1, "{dropped} < {}", first_kept - 1);
    for a in &mut agents {
        a.stop();
    }
}

/// One submission makes far more events than the ring keeps (placements, admissions, attempt
/// rows: about three per slot, here 5 times the ring): a reader that follows the stream
/// still gets every one, with no `Missed` or `Dropped` notice, because the agent lets readers
/// take what is new every quarter of the ring. Before, the core's queue dropped what one input
/// made beyond 4,096 events (about 6,200 of a 10,000-slot submission's), and the ring could
/// move past a follower within one input.
#[test]
fn a_follower_gets_every_event_of_a_submission_larger_than_the_ring() {
    let (dir, mut agents) = start_agents(
        1,
        "events-burst",
        &["--events-kept", "128"],
        DEADLINE,
        |x| x["status"] == "alive" && !x["resources"].is_null(),
    );
    let n1 = &agents[0];
    let follower = Follower::start(n1, &["--topic", "Placement"]);
    // The follower is connected once it has read what the ring held when it started.
    submit(n1, &dir.0, "first", 1);
    follower.until("first placed", |e| {
        e["type"] == "Placed" && e["payload"]["job"] == "first"
    });
    let slots = 200;
    let spec = serde_json::json!({
        "id": "burst", "type": "batch", "count": slots, "command": "true",
        "resources": {"cpu": 1, "memory": 1}
    });
    run_job(n1, &dir.0, &spec);
    let mut placed = std::collections::BTreeSet::new();
    let seen = follower.until(&format!("{slots} placements of burst"), |e| {
        if e["type"] == "Placed" && e["payload"]["job"] == "burst" {
            placed.insert(e["payload"]["slot"].as_u64().unwrap());
        }
        placed.len() == slots as usize
    });
    let notices: Vec<&Value> = seen.iter().filter(|e| e["topic"] == "Stream").collect();
    assert!(
        notices.is_empty(),
        "the follower missed events: {notices:#?}"
    );
    let idx = indexes(&seen);
    assert!(
        idx.windows(2).all(|w| w[0] < w[1]),
        "indexes in order: {idx:?}"
    );
    for a in &mut agents {
        a.stop();
    }
}

#[test]
fn a_reader_from_before_a_restart_is_told_and_reads_the_new_stream_from_its_start() {
    let (dir, mut agents) = start_agents(2, "events-restart", &[], DEADLINE, |x| {
        x["status"] == "alive" && !x["resources"].is_null()
    });
    let old = events_now(&agents[1], &[]);
    let last = old.last().unwrap();
    let (since, generation) = (
        last["index"].as_u64().unwrap().to_string(),
        last["generation"].as_u64().unwrap(),
    );
    // n2, stopped and started again on its data dir: a new generation.
    agents[1].stop();
    let key = dir.0.join("cluster.key");
    agents[1] = Agent::start(AgentSpec {
        join: Some(agents[0].gossip),
        ..AgentSpec::new("n2", &key, &dir.0)
    });
    assert_ne!(agents[1].generation, generation);
    let n2 = &agents[1];
    // It sees n1 again: events of the new incarnation exist.
    wait_for(DEADLINE, "n2's new stream has events", || {
        (events_now(n2, &[]).len() >= 2).then_some(())
    });
    let got = events_now(
        n2,
        &["--since", &since, "--generation", &generation.to_string()],
    );
    let notice = &got[0];
    assert_eq!(
        (notice["topic"].as_str(), notice["type"].as_str()),
        (Some("Stream"), Some("Restarted")),
        "{got:#?}"
    );
    assert_eq!(notice["payload"]["previous_generation"], generation);
    assert_eq!(notice["generation"], n2.generation);
    // Then the new incarnation's events from its first, whatever `since` said.
    let rest = &got[1..];
    assert_eq!(rest[0]["index"], 1, "{got:#?}");
    assert_eq!(indexes(rest), (1..=rest.len() as u64).collect::<Vec<_>>());
    assert!(rest.iter().all(|e| e["generation"] == n2.generation));
    // The same generation resumes as before: no notice.
    let same = events_now(
        n2,
        &["--since", "1", "--generation", &n2.generation.to_string()],
    );
    assert_eq!(same[0]["index"], 2, "{same:#?}");
    for a in &mut agents {
        a.stop();
    }
}
