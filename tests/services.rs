//! Services with real agents (`docs/services.md`; so far steps 2 to 5): each task of a
//! service gets a free port on its node, picked there at admission, sees it as
//! `SHOAL_PORT_<NAME>` / `SHOAL_ADDR_<NAME>` / `SHOAL_IP` and in `${…}` in its arguments, and
//! serves on it; `job status` shows the ports. The node running a task runs its health
//! checks; every node shows the health, and a task whose check keeps failing is restarted.
//! Every node's `/v1/services` and DNS list the running instances, and a stopped one leaves
//! every node's answers.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::TaskCluster as Cluster;
use common::{Agent, AgentSpec, TempDir, keygen, run, shoal, start_agents, wait_for};
use serde_json::Value;

const DEADLINE: Duration = Duration::from_secs(90);

impl Cluster {
    fn start(n: usize, tag: &str, extra: &[&str]) -> Cluster {
        let (dir, agents) = start_agents(n, tag, extra, DEADLINE, |x| {
            x["status"] == "alive" && !x["resources"].is_null()
        });
        Cluster::new(dir, agents)
    }

    fn path(&self) -> &Path {
        &self.dir.0
    }

    /// A directory under the cluster's that every task user may write (sticky, `1777`).
    fn shared_dir(&self, name: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let dir = self.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
        dir
    }

    fn job(&self, at: usize, id: &str) -> Option<Value> {
        let api = self.agents[at].api();
        let out = run(&["job", "status", id, "--json", "--addr", &api]);
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).ok())
            .flatten()
    }
}

/// The status line of `GET /` at `addr`, e.g. `HTTP/1.0 200 OK`.
fn get_status(addr: SocketAddr) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET / HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text.lines().next().map(str::to_string)
}

#[test]
fn each_task_serves_on_its_own_port_and_knows_it() {
    let c = Cluster::start(3, "svc-ports", &[]);
    let envs = c.shared_dir("envs");
    // Six tasks on three nodes: two per node on average, so ports picked on one node must
    // differ. The port reaches the task twice: in its environment (read by sh) and in its
    // arguments (replaced by the scheduler before the start).
    let script = format!(
        "echo $$ >> {pids}; echo \"$SHOAL_PORT_HTTP $SHOAL_ADDR_HTTP $SHOAL_IP $SHOAL_PORT_ADMIN\" \
         > {envs}/$$; exec /usr/bin/python3 -m http.server ${{SHOAL_PORT_HTTP}} --bind 127.0.0.1",
        pids = c.pids.display(),
        envs = envs.display()
    );
    let spec = serde_json::json!({
        "id": "web", "type": "service", "count": 6, "command": "sh", "args": ["-c", script],
        "resources": {"cpu": 100, "memory": 64},
        "ports": [{"name": "http"}, {"name": "admin"}]
    });
    c.run_job(&spec, &[]);

    // Every node reports six running tasks, each with its ports.
    let mut views = Vec::new();
    for i in 0..3 {
        views.push(wait_for(
            DEADLINE,
            &format!("n{} sees 6 running with ports", i + 1),
            || {
                let job = c.job(i, "web")?;
                let tasks = job["tasks"].as_array()?;
                let ready = tasks
                    .iter()
                    .filter(|t| t["state"] == "running" && t["ports"]["http"].is_u64())
                    .count();
                (ready == 6).then_some(job)
            },
        ));
    }
    let tasks = views[0]["tasks"].as_array().unwrap().clone();
    let mut per_node: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut expected = BTreeSet::new();
    for t in &tasks {
        assert_eq!(t["ip"], "127.0.0.1", "{t}");
        let (http, admin) = (
            t["ports"]["http"].as_u64().unwrap(),
            t["ports"]["admin"].as_u64().unwrap(),
        );
        assert!(
            (20000..=32000).contains(&http) && (20000..=32000).contains(&admin),
            "{t}"
        );
        let node = t["node"].as_str().unwrap().to_string();
        per_node.entry(node).or_default().extend([http, admin]);
        expected.insert(format!("{http} 127.0.0.1:{http} 127.0.0.1 {admin}"));
        // The same ports in every node's view.
        for v in &views[1..] {
            let same = &v["tasks"][t["slot"].as_u64().unwrap() as usize];
            assert_eq!(same["ports"], t["ports"]);
        }
    }
    for (node, ports) in &per_node {
        let unique: BTreeSet<_> = ports.iter().collect();
        assert_eq!(
            unique.len(),
            ports.len(),
            "{node} handed out a port twice: {ports:?}"
        );
    }
    assert!(
        per_node.values().any(|p| p.len() > 2),
        "some node runs two tasks"
    );

    // Each task saw its own ports in its environment, and serves HTTP on its port.
    let seen = wait_for(DEADLINE, "six tasks wrote their environment", || {
        let lines: BTreeSet<String> = std::fs::read_dir(&envs)
            .ok()?
            .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
            .map(|s| s.trim().to_string())
            .collect();
        (lines.len() >= 6).then_some(lines)
    });
    assert!(
        expected.is_subset(&seen),
        "expected {expected:?}, the tasks saw {seen:?}"
    );
    for t in &tasks {
        let addr: SocketAddr = format!("127.0.0.1:{}", t["ports"]["http"]).parse().unwrap();
        let status = wait_for(DEADLINE, &format!("{addr} answers"), || get_status(addr));
        assert!(status.contains(" 200 "), "{addr}: {status}");
    }

    // `job status` shows them.
    let api = c.agents[1].api();
    let out = run(&["job", "status", "web", "--addr", &api]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("PORTS"), "{text}");
    let first = &tasks[0]["ports"];
    assert!(
        text.contains(&format!("admin={},http={}", first["admin"], first["http"])),
        "{text}"
    );
}

/// `--service-addr IP`: the address a node's tasks are reached at, in place of the gossip
/// IP: tasks get it as `SHOAL_IP` and in `SHOAL_ADDR_*`, and every view lists it.
#[test]
fn service_addr_is_the_address_tasks_are_reached_at() {
    let c = Cluster::start(1, "svc-addr", &["--service-addr", "127.0.0.2"]);
    let envs = c.shared_dir("envs");
    let script = format!(
        "echo $$ >> {pids}; echo \"$SHOAL_IP $SHOAL_ADDR_HTTP $SHOAL_PORT_HTTP\" > {envs}/$$; \
         exec sleep 600",
        pids = c.pids.display(),
        envs = envs.display()
    );
    let spec = serde_json::json!({
        "id": "addr", "type": "service", "count": 1, "command": "sh", "args": ["-c", script],
        "resources": {"cpu": 100, "memory": 16},
        "ports": [{"name": "http"}]
    });
    c.run_job(&spec, &[]);
    let task = wait_for(DEADLINE, "addr runs with its port", || {
        let job = c.job(0, "addr")?;
        let t = job["tasks"][0].clone();
        (t["state"] == "running" && t["ports"]["http"].is_u64()).then_some(t)
    });
    assert_eq!(task["ip"], "127.0.0.2", "{task}");
    let port = task["ports"]["http"].as_u64().unwrap();
    let seen = wait_for(DEADLINE, "the task wrote its environment", || {
        let line = std::fs::read_dir(&envs)
            .ok()?
            .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
            .find(|l| l.ends_with('\n'))?;
        Some(line.trim().to_string())
    });
    assert_eq!(seen, format!("127.0.0.2 127.0.0.2:{port} {port}"));
}

/// README: ports come from `--port-range`, and "the agent's own ports never are" a task's.
/// An agent whose whole range is its own HTTP port gives a task none (its reserved ports and
/// its scan of the host's listening ports both keep it): the node refuses every attempt, and
/// the slot waits saying why.
#[test]
fn an_agents_own_port_is_never_a_tasks() {
    let http = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let range = format!("{}-{}", http.port(), http.port());
    let dir = TempDir::new("own-port");
    let key = keygen(&dir.0, "cluster.key");
    let agent = Agent::start(AgentSpec {
        http,
        extra: vec!["--port-range".into(), range.clone()],
        ..AgentSpec::new("n1", &key, &dir.0)
    });
    let spec = serde_json::json!({
        "id": "wants", "type": "service", "count": 1, "command": "sleep", "args": ["600"],
        "resources": {"cpu": 100, "memory": 16},
        "ports": [{"name": "http"}]
    });
    let file = dir.0.join("wants.json");
    std::fs::write(&file, spec.to_string()).unwrap();
    let out = agent.cli(&["job", "run", file.to_str().unwrap(), "--detach"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let why = wait_for(DEADLINE, "wants waits for a port", || {
        let out = run(&["job", "status", "wants", "--json", "--addr", &agent.api()]);
        let job: Value = serde_json::from_slice(&out.stdout).ok()?;
        let task = &job["tasks"][0];
        let reason = task["pending_reason"].as_str()?.to_string();
        (task["state"] == "pending" && reason.contains("port")).then_some(reason)
    });
    assert!(
        why.starts_with(&format!(
            "rejected: n1 has no free port in {range}; retrying in"
        )),
        "{why}"
    );
}

#[test]
fn a_static_port_blocks_a_second_job_on_that_node_with_a_reason() {
    let c = Cluster::start(1, "svc-static", &["--reserved-ports", "21000"]);
    let port = {
        // A port free a moment ago, outside the dynamic range.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let spec = |id: &str, port: u16| {
        serde_json::json!({
            "id": id, "type": "service", "count": 1, "command": "sh",
            "args": ["-c", format!("echo $$ >> {}; exec sleep 600", c.pids.display())],
            "resources": {"cpu": 100, "memory": 32},
            "ports": [{"name": "http", "static": port}]
        })
    };
    for (id, p) in [("first", port), ("second", port), ("reserved", 21000)] {
        c.submit(&spec(id, p));
    }
    wait_for(DEADLINE, "first runs on its static port", || {
        let job = c.job(0, "first")?;
        (job["tasks"][0]["state"] == "running" && job["tasks"][0]["ports"]["http"] == port)
            .then_some(())
    });
    let why = wait_for(DEADLINE, "second waits with the reason", || {
        let job = c.job(0, "second")?;
        let reason = job["tasks"][0]["pending_reason"].as_str()?.to_string();
        reason
            .contains(&format!("port {port} taken"))
            .then_some(reason)
    });
    assert!(why.contains("1 node has"), "{why}");
    let why = wait_for(
        DEADLINE,
        "a reserved static port is refused by the node",
        || {
            let job = c.job(0, "reserved")?;
            let t = &job["tasks"][0];
            let text = format!("{} {}", t["detail"], t["pending_reason"]);
            text.contains("port 21000 is reserved").then_some(text)
        },
    );
    assert!(why.contains("n1"), "{why}");
}

/// Waits until every node shows every task of `id` running with `health`, then returns the
/// views.
fn wait_health_everywhere(c: &Cluster, id: &str, health: &str) -> Vec<Value> {
    (0..c.agents.len())
        .map(|i| {
            wait_for(DEADLINE, &format!("n{} sees {id} {health}", i + 1), || {
                let job = c.job(i, id)?;
                let tasks = job["tasks"].as_array()?;
                tasks
                    .iter()
                    .all(|t| t["state"] == "running" && t["health"] == health)
                    .then_some(job)
            })
        })
        .collect()
}

/// A task that serves HTTP on its port until the file `stop-<attempt>` appears in `dir`,
/// then stops serving and idles. Every pid it starts goes to `pids`.
fn serve_until_stopped(pids: &Path, dir: &Path) -> String {
    format!(
        "echo $$ >> {pids}; /usr/bin/python3 -m http.server ${{SHOAL_PORT_HTTP}} --bind 127.0.0.1 \
         & server=$!; echo $server >> {pids}; \
         while [ ! -e {dir}/stop-$SHOAL_ATTEMPT ]; do sleep 0.1; done; kill $server; exec sleep 600",
        pids = pids.display(),
        dir = dir.display()
    )
}

#[test]
fn health_checks_run_on_the_task_node_and_every_node_shows_them() {
    let c = Cluster::start(3, "svc-health", &[]);
    let marks = c.shared_dir("marks");
    // An http check on the task's port, and a command check (run as the task's user, in its
    // environment) that fails while `sick-<slot>` exists. Neither restarts the task.
    let spec = serde_json::json!({
        "id": "web", "type": "service", "count": 3, "command": "sh",
        "args": ["-c", serve_until_stopped(&c.pids, &marks)],
        "resources": {"cpu": 100, "memory": 64},
        "ports": [{"name": "http"}],
        "checks": [
            {"name": "ready", "type": "http", "port": "http", "path": "/",
             "interval_ms": 300, "timeout_ms": 300, "failures": 0},
            {"name": "alive", "type": "command", "command": "sh",
             "args": ["-c", format!("test ! -e {}/sick-$SHOAL_SLOT", marks.display())],
             "interval_ms": 300, "timeout_ms": 300, "failures": 0},
        ]
    });
    c.submit(&spec);
    let views = wait_health_everywhere(&c, "web", "healthy");
    assert!(
        views[0]["tasks"][0]["health_note"].is_null(),
        "{}",
        views[0]
    );
    let api = c.agents[2].api();
    let text =
        String::from_utf8_lossy(&run(&["job", "status", "web", "--addr", &api]).stdout).to_string();
    assert!(
        text.contains("HEALTH") && text.contains("healthy"),
        "{text}"
    );

    // Slot 0's command check starts failing: unhealthy on every node, with the note and the
    // counter, and the task keeps running (failures = 0).
    std::fs::write(marks.join("sick-0"), "").unwrap();
    for i in 0..3 {
        let t = wait_for(
            DEADLINE,
            &format!("n{} sees slot 0 unhealthy", i + 1),
            || {
                let job = c.job(i, "web")?;
                let t = job["tasks"][0].clone();
                (t["health"] == "unhealthy").then_some(t)
            },
        );
        assert_eq!(t["state"], "running", "{t}");
        assert_eq!(t["health_note"], "check alive: exit 1", "{t}");
        assert_eq!(t["check_failures"]["limit"], 0, "{t}");
        let other = &c.job(i, "web").unwrap()["tasks"][1];
        assert_eq!(other["health"], "healthy", "only slot 0: {other}");
    }
    let text =
        String::from_utf8_lossy(&run(&["job", "status", "web", "--addr", &api]).stdout).to_string();
    assert!(text.contains("unhealthy ("), "{text}");
    assert!(text.contains("never restarted"), "{text}");
    assert!(text.contains("check alive: exit 1"), "{text}");

    // One pass brings it back, everywhere, on the same attempt.
    let attempt = views[0]["tasks"][0]["attempt"].clone();
    std::fs::remove_file(marks.join("sick-0")).unwrap();
    let views = wait_health_everywhere(&c, "web", "healthy");
    for v in &views {
        assert_eq!(v["tasks"][0]["attempt"], attempt, "not restarted: {v}");
    }
}

#[test]
fn a_task_whose_check_keeps_failing_is_restarted() {
    let c = Cluster::start(3, "svc-restart", &[]);
    let marks = c.shared_dir("marks");
    // A tcp check on the task's port; the task closes the port when told to.
    let spec = serde_json::json!({
        "id": "flaky", "type": "service", "count": 1, "command": "sh",
        "args": ["-c", serve_until_stopped(&c.pids, &marks)],
        "resources": {"cpu": 100, "memory": 64},
        "ports": [{"name": "http"}],
        "checks": [{"type": "tcp", "port": "http", "interval_ms": 300, "timeout_ms": 300,
                    "failures": 3}],
        // A long back-off, so the failed attempt stays visible for a while.
        "restart": {"delay_ms": 5000, "backoff": 1.0}
    });
    c.submit(&spec);
    let views = wait_health_everywhere(&c, "flaky", "healthy");
    let first = views[0]["tasks"][0]["attempt"].as_u64().unwrap();
    std::fs::write(marks.join(format!("stop-{first}")), "").unwrap();
    // The task's node kills it at the third failure in a row; it ends failed with the check's
    // reason, which every node shows while the slot waits out its back-off.
    for i in 0..3 {
        let t = wait_for(
            DEADLINE,
            &format!("n{} sees the failed attempt", i + 1),
            || {
                let job = c.job(i, "flaky")?;
                let t = job["tasks"][0].clone();
                (t["attempt"] == first && t["state"] == "failed").then_some(t)
            },
        );
        assert_eq!(
            t["detail"], "check tcp-0 failed 3 times: connection refused",
            "{t}"
        );
    }
    // Restarted under the restart policy: a new attempt, healthy on every node.
    let views = wait_health_everywhere(&c, "flaky", "healthy");
    for v in &views {
        assert!(v["tasks"][0]["attempt"].as_u64().unwrap() > first, "{v}");
    }
}

/// A GET with its headers (lower-cased names) and JSON body; `read_for` bounds a blocking
/// query.
fn get_full(
    addr: SocketAddr,
    path: &str,
    read_for: Duration,
) -> Option<(BTreeMap<String, String>, Value)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(read_for)).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let headers = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Some((headers, serde_json::from_str(body).ok()?))
}

/// `GET /v1/services/{name}{query}` at agent `at`.
fn service(
    c: &Cluster,
    at: usize,
    name: &str,
    query: &str,
) -> Option<(BTreeMap<String, String>, Value)> {
    get_full(
        c.agents[at].http,
        &format!("/v1/services/{name}{query}"),
        Duration::from_secs(5),
    )
}

/// (job, slot, attempt) of every instance in a `/v1/services/{name}` answer.
fn instance_keys(answer: &Value) -> BTreeSet<(String, u64, u64)> {
    answer["instances"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|i| {
            (
                i["job"].as_str().unwrap_or("?").to_string(),
                i["slot"].as_u64().unwrap_or(0),
                i["attempt"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

/// Submits `web`: `count` python HTTP servers, each writing its pid to `DIR/pid-PORT`.
fn submit_web(c: &Cluster, count: u32) -> PathBuf {
    let pid_dir = c.shared_dir("by-port");
    let script = format!(
        "echo $$ >> {pids}; echo $$ > {dir}/pid-$SHOAL_PORT_HTTP; \
         exec /usr/bin/python3 -m http.server ${{SHOAL_PORT_HTTP}} --bind 127.0.0.1",
        pids = c.pids.display(),
        dir = pid_dir.display()
    );
    let spec = serde_json::json!({
        "id": "web", "type": "service", "count": count, "command": "sh", "args": ["-c", script],
        "resources": {"cpu": 100, "memory": 64}, "tags": ["blue"],
        "ports": [{"name": "http"}, {"name": "admin"}],
        "restart": {"delay_ms": 200}
    });
    c.submit(&spec);
    pid_dir
}

/// Waits until every node answers `count` healthy instances of `web` with one content hash;
/// returns each node's answer.
fn converged_web(c: &Cluster, count: usize, what: &str) -> Vec<(BTreeMap<String, String>, Value)> {
    wait_for(DEADLINE, what, || {
        let answers: Vec<_> = (0..c.agents.len())
            .map(|i| service(c, i, "web", "?healthy=true"))
            .collect::<Option<_>>()?;
        let hashes: BTreeSet<&String> = answers
            .iter()
            .map(|(h, _)| h.get("x-shoal-content-hash"))
            .collect::<Option<_>>()?;
        let full = answers
            .iter()
            .all(|(_, a)| a["instances"].as_array().is_some_and(|i| i.len() == count));
        (full && hashes.len() == 1).then_some(answers)
    })
}

#[test]
fn every_node_lists_the_instances_and_drops_a_stopped_one() {
    let c = Cluster::start(3, "svc-catalog", &[]);
    let pid_dir = submit_web(&c, 3);
    let answers = converged_web(&c, 3, "every node lists 3 healthy web instances, one hash");
    let first = &answers[0].1;
    for i in first["instances"].as_array().unwrap() {
        assert_eq!(i["address"], "127.0.0.1", "{i}");
        assert_eq!(i["health"], "healthy", "{i}");
        assert_eq!(i["tags"], serde_json::json!(["blue"]), "{i}");
        let port = i["ports"]["http"].as_u64().unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let status = wait_for(DEADLINE, &format!("{addr} answers"), || get_status(addr));
        assert!(status.contains(" 200 "), "{addr}: {status}");
    }
    // Filters: a tag nobody has, and an unknown service (200, no instances, index 0).
    let (_, none) = service(&c, 1, "web", "?tag=green").unwrap();
    assert_eq!(none["instances"], serde_json::json!([]));
    let (h, unknown) = service(&c, 1, "nope", "").unwrap();
    assert_eq!(unknown["index"], 0);
    assert_eq!(h["x-shoal-index"], "0");
    let bad = get_full(
        c.agents[0].http,
        "/v1/services/web?wait=3h&index=1",
        Duration::from_secs(5),
    );
    assert!(
        bad.unwrap().1["error"]
            .as_str()
            .unwrap()
            .contains("not a duration")
    );

    // The CLI.
    let out = c.agents[2].cli(&["service", "list"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let row: Vec<&str> = text
        .lines()
        .find(|l| l.trim_start().starts_with("web"))
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(row, ["web", "3", "3", "blue", "web"], "{text}");
    let out = c.agents[1].cli(&["service", "show", "web", "--healthy"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("service web: 3 instances"), "{text}");
    assert!(text.contains("healthy") && text.contains("http="), "{text}");

    // `shoal service show --watch` prints the service, then again when it changes.
    let mut watch_cli = shoal()
        .args([
            "service",
            "show",
            "web",
            "--watch",
            "--json",
            "--addr",
            &c.agents[2].api(),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let (lines_tx, lines) = std::sync::mpsc::channel::<String>();
    let stdout = watch_cli.stdout.take().unwrap();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let next_answer = || -> Value {
        let line = lines
            .recv_timeout(DEADLINE)
            .expect("--watch prints an answer");
        serde_json::from_str(&line).unwrap()
    };
    let first_watch = next_answer();
    assert_eq!(first_watch["instances"].as_array().map(Vec::len), Some(3));

    // A watcher blocked on each node's index wakes when an instance stops.
    let watchers: Vec<_> = answers
        .iter()
        .enumerate()
        .map(|(i, (h, _))| {
            let addr = c.agents[i].http;
            let index: u64 = h["x-shoal-index"].parse().unwrap();
            let path = format!("/v1/services/web?index={index}&wait=60s");
            (
                index,
                std::thread::spawn(move || get_full(addr, &path, Duration::from_secs(90))),
            )
        })
        .collect();
    let victim = &first["instances"][0];
    let key = (
        "web".to_string(),
        victim["slot"].as_u64().unwrap(),
        victim["attempt"].as_u64().unwrap(),
    );
    let pid =
        std::fs::read_to_string(pid_dir.join(format!("pid-{}", victim["ports"]["http"]))).unwrap();
    let killed = std::process::Command::new("kill")
        .args(["-9", pid.trim()])
        .status()
        .unwrap();
    assert!(killed.success());
    let killed_at = std::time::Instant::now();
    // When each node's answer first lacks it, polled every 20 ms (printed, never asserted).
    let mut dropped: Vec<Option<Duration>> = vec![None; 3];
    while dropped.iter().any(Option::is_none) {
        assert!(
            killed_at.elapsed() < DEADLINE,
            "not dropped everywhere: {dropped:?}"
        );
        for (i, d) in dropped.iter_mut().enumerate() {
            if d.is_none()
                && service(&c, i, "web", "").is_some_and(|(_, a)| !instance_keys(&a).contains(&key))
            {
                *d = Some(killed_at.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("kill -9 → gone from each node's /v1/services: {dropped:?}");
    for (i, (index, w)) in watchers.into_iter().enumerate() {
        let (h, _) = w.join().unwrap().expect("the blocking query answers");
        let now: u64 = h["x-shoal-index"].parse().unwrap();
        assert_ne!(
            now,
            index,
            "n{}: the watcher woke on a change, not at its wait",
            i + 1
        );
    }
    let second_watch = next_answer();
    assert_ne!(
        second_watch["index"], first_watch["index"],
        "--watch printed the change"
    );
    let _ = watch_cli.kill();
    let _ = watch_cli.wait();

    // It is restarted (a new attempt) and every node lists 3 again.
    let again = converged_web(&c, 3, "every node lists 3 healthy instances again");
    assert!(!instance_keys(&again[0].1).contains(&key));

    // A stopped job leaves every node's catalog.
    let out = c.agents[1].cli(&["job", "stop", "web"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for(DEADLINE, "every node forgot the stopped service", || {
        (0..3)
            .all(|i| service(&c, i, "web", "").is_some_and(|(_, a)| a["index"] == 0))
            .then_some(())
    });
}

/// Where agent `at` answers DNS, from `/v1/agent/self` (the agents use `--dns 127.0.0.1:0`).
fn dns_addr(c: &Cluster, at: usize) -> SocketAddr {
    let me = c.agents[at].agent_self().expect("agent/self answers");
    me["dns"]["addr"]
        .as_str()
        .expect("DNS is on")
        .parse()
        .unwrap()
}

/// `dig +short` at `dns` (over TCP with `tcp`): the answer's lines, sorted, or `None` when dig
/// could not ask.
fn dig(dns: SocketAddr, name: &str, qtype: &str, tcp: bool) -> Option<Vec<String>> {
    let mut cmd = std::process::Command::new("dig");
    cmd.arg(format!("@{}", dns.ip())).args([
        "-p",
        &dns.port().to_string(),
        name,
        qtype,
        "+short",
        "+time=2",
        "+tries=1",
    ]);
    if tcp {
        cmd.arg("+tcp");
    }
    let out = cmd
        .output()
        .expect("dig runs (.ci/run installs bind9-dnsutils)");
    if !out.status.success() {
        return None;
    }
    let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .filter(|l| !l.is_empty() && !l.starts_with(';'))
        .collect();
    lines.sort();
    Some(lines)
}

/// `(port, target)` of `dig +short SRV` lines (`1 1 PORT TARGET`).
fn srv(lines: &[String]) -> BTreeSet<(u16, String)> {
    lines
        .iter()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((f.get(2)?.parse().ok()?, f.get(3)?.to_string()))
        })
        .collect()
}

#[test]
fn dig_at_every_node_finds_the_instances_that_serve() {
    let c = Cluster::start(3, "svc-dns", &[]);
    let pid_dir = submit_web(&c, 3);
    converged_web(&c, 3, "every node lists 3 healthy web instances");
    let dns: Vec<SocketAddr> = (0..3).map(|i| dns_addr(&c, i)).collect();
    let mut answers = Vec::new();
    for (i, at) in dns.iter().enumerate() {
        let lines = wait_for(DEADLINE, &format!("n{} answers 3 SRV", i + 1), || {
            dig(*at, "web.service.shoal", "SRV", false).filter(|l| l.len() == 3)
        });
        answers.push(srv(&lines));
    }
    assert!(answers.iter().all(|a| *a == answers[0]), "{answers:?}");
    for (port, target) in &answers[0] {
        assert!(target.ends_with(".node.shoal."), "{target}");
        // The target resolves (A), and the port serves HTTP 200 there.
        let ip = dig(dns[1], target, "A", false).unwrap();
        assert_eq!(ip, ["127.0.0.1"], "{target}");
        let addr: SocketAddr = format!("{}:{port}", ip[0]).parse().unwrap();
        let status = wait_for(DEADLINE, &format!("{addr} answers"), || get_status(addr));
        assert!(status.contains(" 200 "), "{addr}: {status}");
    }
    // A, TCP, a named port, a tag, and the negative answers.
    assert_eq!(
        dig(dns[2], "web.service.shoal", "A", true).unwrap(),
        ["127.0.0.1"]
    );
    let admin = dig(dns[0], "_admin._tcp.web.service.shoal", "SRV", false).unwrap();
    assert_eq!(admin.len(), 3, "{admin:?}");
    assert_eq!(
        dig(dns[0], "blue.web.service.shoal", "SRV", false)
            .unwrap()
            .len(),
        3
    );
    let status = |name: &str, qtype: &str| {
        let out = std::process::Command::new("dig")
            .arg(format!("@{}", dns[0].ip()))
            .args([
                "-p",
                &dns[0].port().to_string(),
                name,
                qtype,
                "+time=2",
                "+tries=1",
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let status = text
            .split("status: ")
            .nth(1)
            .and_then(|s| s.split(',').next())
            .unwrap_or("?")
            .to_string();
        (status, text)
    };
    let (s, text) = status("nope.service.shoal", "SRV");
    assert_eq!(s, "NXDOMAIN", "{text}");
    let (s, text) = status("web.service.shoal", "AAAA");
    assert_eq!(s, "NOERROR", "{text}");
    assert!(text.contains("ANSWER: 0") && text.contains("SOA"), "{text}");
    let (s, text) = status("example.com", "A");
    assert_eq!(s, "REFUSED", "{text}");

    // A killed instance leaves every node's DNS answer; its restart comes back.
    let (port, target) = answers[0].iter().next().unwrap().clone();
    let pid = std::fs::read_to_string(pid_dir.join(format!("pid-{port}"))).unwrap();
    let killed = std::process::Command::new("kill")
        .args(["-9", pid.trim()])
        .status()
        .unwrap();
    assert!(killed.success());
    for (i, at) in dns.iter().enumerate() {
        wait_for(
            DEADLINE,
            &format!("n{} drops {target}:{port}", i + 1),
            || {
                dig(*at, "web.service.shoal", "SRV", false)
                    .filter(|l| !srv(l).contains(&(port, target.clone())))
            },
        );
    }
    for (i, at) in dns.iter().enumerate() {
        wait_for(DEADLINE, &format!("n{} answers 3 SRV again", i + 1), || {
            dig(*at, "web.service.shoal", "SRV", true).filter(|l| l.len() == 3)
        });
    }
}

#[test]
fn an_unhealthy_instance_leaves_every_nodes_answers_and_comes_back() {
    let c = Cluster::start(3, "svc-sick", &[]);
    let flags = c.shared_dir("flags");
    let script = format!(
        "echo $$ >> {pids}; exec /usr/bin/python3 -m http.server ${{SHOAL_PORT_HTTP}} \
         --bind 127.0.0.1",
        pids = c.pids.display()
    );
    // The check fails while `flags/sick-PORT` exists; `failures = 0`: never restarted, so
    // the instance stays and only its health moves.
    let check = format!("test ! -e {}/sick-$SHOAL_PORT_HTTP", flags.display());
    let spec = serde_json::json!({
        "id": "web", "type": "service", "count": 3, "command": "sh", "args": ["-c", script],
        "resources": {"cpu": 100, "memory": 64},
        "ports": [{"name": "http"}],
        "checks": [{"type": "command", "command": "sh", "args": ["-c", check],
                    "interval_ms": 200, "timeout_ms": 200, "failures": 0}]
    });
    c.submit(&spec);
    let answers = converged_web(&c, 3, "every node lists 3 healthy web instances");
    let sick = &answers[0].1["instances"][0];
    let port = sick["ports"]["http"].as_u64().unwrap();
    let key = (
        sick["job"].as_str().unwrap().to_string(),
        sick["slot"].as_u64().unwrap(),
        sick["attempt"].as_u64().unwrap(),
    );
    let dns: Vec<SocketAddr> = (0..3).map(|i| dns_addr(&c, i)).collect();

    std::fs::write(flags.join(format!("sick-{port}")), b"").unwrap();
    for (i, at) in dns.iter().enumerate() {
        // Still an instance, now unhealthy: gone from `?healthy=true` and from DNS.
        wait_for(
            DEADLINE,
            &format!("n{} drops the sick instance", i + 1),
            || {
                let (_, healthy) = service(&c, i, "web", "?healthy=true")?;
                let (_, all) = service(&c, i, "web", "")?;
                let listed = all["instances"]
                    .as_array()?
                    .iter()
                    .find(|x| x["ports"]["http"].as_u64() == Some(port))?;
                (!instance_keys(&healthy).contains(&key) && listed["health"] == "unhealthy")
                    .then_some(())
            },
        );
        wait_for(DEADLINE, &format!("n{} answers 2 SRV", i + 1), || {
            dig(*at, "web.service.shoal", "SRV", false)
                .filter(|l| l.len() == 2 && !srv(l).iter().any(|(p, _)| u64::from(*p) == port))
        });
    }
    // The same attempt passes again: back in every answer, never restarted.
    std::fs::remove_file(flags.join(format!("sick-{port}"))).unwrap();
    let answers = converged_web(&c, 3, "every node lists 3 healthy instances again");
    for (_, a) in &answers {
        assert!(instance_keys(a).contains(&key), "{a}");
    }
}

/// A python HTTP server on `${SHOAL_PORT_HTTP}` with an http check on it, as a service of 6
/// updated 2 at a time; `tag` goes in its environment (a change of it is a new version) and
/// the check asks for `check_path`. Readiness turns critical on a check's first failure, so
/// the timeout is generous: at a load of 8 on 2 cores, 300 ms timeouts failed a healthy
/// instance's check now and then, which the sampler counted against the rollout.
fn rolling_web(c: &Cluster, tag: &str, check_path: &str, auto_revert: bool) -> Value {
    let script = format!(
        "echo $$ >> {pids}; exec /usr/bin/python3 -m http.server ${{SHOAL_PORT_HTTP}} \
         --bind 127.0.0.1",
        pids = c.pids.display()
    );
    serde_json::json!({
        "id": "web", "type": "service", "count": 6, "command": "sh", "args": ["-c", script],
        "env": {"TAG": tag},
        "resources": {"cpu": 100, "memory": 64},
        "ports": [{"name": "http"}],
        "restart": {"delay_ms": 200},
        "checks": [{"type": "http", "port": "http", "path": check_path,
                    "interval_ms": 600, "timeout_ms": 600, "failures": 0}],
        "update": {"max_parallel": 2, "min_healthy_ms": 1000, "healthy_deadline_ms": 4000,
                   "auto_revert": auto_revert}
    })
}

/// `shoal job run` of `spec`, followed under the deadline: it must succeed; what it printed.
fn followed_ok(c: &Cluster, spec: &Value) -> String {
    let out = c.run_followed(spec, DEADLINE);
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    said
}

/// `shoal job run` of `spec`, followed under the deadline: it must fail; its stderr.
fn followed_err(c: &Cluster, spec: &Value) -> String {
    let out = c.run_followed(spec, DEADLINE);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "job run succeeded: {err}");
    err
}

/// Every node's `job status`: all 6 tasks run version `version`, healthy, and the
/// deployment is complete.
fn all_healthy_on(c: &Cluster, version: u64) -> bool {
    (0..c.agents.len()).all(|i| {
        c.job(i, "web").is_some_and(|j| {
            j["deployment"]["version"] == version
                && j["deployment"]["status"] == "complete"
                && j["tasks"].as_array().is_some_and(|ts| {
                    ts.len() == 6
                        && ts.iter().all(|t| {
                            t["state"] == "running"
                                && t["health"] == "healthy"
                                && t["version"] == version
                        })
                })
        })
    })
}

/// Samples every node's `?healthy=true` answer for `web` every 100 ms until stopped; the
/// fewest healthy instances any node answered, and the number of samples.
struct Sampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<(usize, usize, Vec<String>)>,
}

impl Sampler {
    fn start(c: &Cluster) -> Sampler {
        use std::sync::atomic::Ordering;
        let addrs: Vec<SocketAddr> = c.agents.iter().map(|a| a.http).collect();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let (mut fewest, mut samples, mut low) = (usize::MAX, 0, Vec::new());
            while !flag.load(Ordering::Relaxed) {
                for (i, addr) in addrs.iter().enumerate() {
                    let Some((_, answer)) = get_full(
                        *addr,
                        "/v1/services/web?healthy=true",
                        Duration::from_secs(5),
                    ) else {
                        continue;
                    };
                    let n = answer["instances"].as_array().map_or(0, Vec::len);
                    samples += 1;
                    if n < fewest {
                        fewest = n;
                    }
                    if n < 4 {
                        low.push(format!("n{} answered {n} healthy", i + 1));
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            (fewest, samples, low)
        });
        Sampler { stop, thread }
    }

    fn finish(self) -> (usize, usize, Vec<String>) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

#[test]
fn rolling_update_keeps_count_minus_max_parallel() {
    let c = Cluster::start(3, "svc-rolling", &[]);
    // A first version's rollout completes too, and `job run` waits for it.
    let said = followed_ok(&c, &rolling_web(&c, "v1", "/", false));
    assert!(said.contains("update version 1 · complete"), "{said}");
    wait_for(DEADLINE, "6 healthy on version 1 everywhere", || {
        all_healthy_on(&c, 1).then_some(())
    });
    converged_web(&c, 6, "every node lists 6 healthy instances");
    let sampler = Sampler::start(&c);
    // `job run` follows the rollout to its end.
    let said = followed_ok(&c, &rolling_web(&c, "v2", "/", false));
    assert!(said.contains("update version 2 · complete"), "{said}");
    assert!(said.contains("  update version 2 · deploying"), "{said}");
    wait_for(DEADLINE, "6 healthy on version 2 everywhere", || {
        all_healthy_on(&c, 2).then_some(())
    });
    let answers = converged_web(
        &c,
        6,
        "every node lists 6 healthy instances after the update",
    );
    for (_, a) in &answers {
        let versions: Vec<&Value> = a["instances"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| &i["version"])
            .collect();
        assert!(versions.iter().all(|v| **v == 2), "{a}");
    }
    let (fewest, samples, low) = sampler.finish();
    eprintln!("rolling update: {samples} samples, fewest healthy {fewest}");
    assert!(low.is_empty(), "below count - max_parallel: {low:?}");
    assert!(
        fewest < 6,
        "the sampler never saw a replacement ({samples} samples)"
    );
    // History on another node: both versions stable, 2 current.
    let out = c.agents[2].cli(&["job", "history", "web", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let history: Value = serde_json::from_slice(&out.stdout).unwrap();
    let got: Vec<(u64, bool, bool)> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["version"].as_u64().unwrap(),
                v["stable"] == true,
                v["current"] == true,
            )
        })
        .collect();
    assert_eq!(got, vec![(1, true, false), (2, true, true)]);
    let status = c.agents[1].cli(&["job", "status", "web"]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains("Update  version 2 · complete"), "{text}");
}

/// `job run` of an in-place change (here the `[update]` block) keeps the version, so it does
/// not report that version's failed rollout as its own: it succeeds once the tasks run.
#[test]
fn job_run_of_an_in_place_change_after_a_failed_update_succeeds() {
    let c = Cluster::start(3, "svc-inplace", &[]);
    c.submit(&rolling_web(&c, "v1", "/", false));
    wait_for(DEADLINE, "6 healthy on version 1 everywhere", || {
        all_healthy_on(&c, 1).then_some(())
    });
    // Version 2 never passes its check and is not reverted.
    let bad = rolling_web(&c, "v2", "/missing", false);
    let err = followed_err(&c, &bad);
    assert!(err.contains("update version 2 · failed: slot"), "{err}");
    let mut in_place = bad.clone();
    in_place["update"]["min_healthy_ms"] = 500.into();
    let said = followed_ok(&c, &in_place);
    assert!(
        said.contains("of 6; update version 2 · failed: slot"),
        "{said}"
    );
}

#[test]
fn failed_update_auto_reverts() {
    let c = Cluster::start(3, "svc-revert", &[]);
    c.submit(&rolling_web(&c, "v1", "/", true));
    wait_for(DEADLINE, "6 healthy on version 1 everywhere", || {
        all_healthy_on(&c, 1).then_some(())
    });
    converged_web(&c, 6, "every node lists 6 healthy instances");
    let sampler = Sampler::start(&c);
    // Version 2's check asks for a page the server does not have: 404, never healthy.
    // `job run` follows its rollout and fails: it sees version 2 fail or, polling after the
    // revert was written, the job moved on to the auto-revert.
    let err = followed_err(&c, &rolling_web(&c, "v2", "/missing", true));
    assert!(
        err.contains("update version 2 · failed: slot")
            || err.contains("update version 3 (auto-revert of version 2 to version 1)"),
        "{err}"
    );
    wait_for(
        DEADLINE,
        "version 3 (the revert) healthy everywhere",
        || all_healthy_on(&c, 3).then_some(()),
    );
    converged_web(
        &c,
        6,
        "every node lists 6 healthy instances after the revert",
    );
    let (fewest, samples, low) = sampler.finish();
    eprintln!("failed update: {samples} samples, fewest healthy {fewest}");
    assert!(low.is_empty(), "below count - max_parallel: {low:?}");
    assert!(
        fewest < 6,
        "the sampler never saw a replacement ({samples} samples)"
    );
    let out = c.agents[1].cli(&["job", "history", "web", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let history: Value = serde_json::from_slice(&out.stdout).unwrap();
    let h = history.as_array().unwrap();
    assert_eq!(h.len(), 3, "{history}");
    assert!(
        h[1]["status"].as_str().unwrap().starts_with("failed: slot"),
        "{history}"
    );
    assert_eq!(h[2]["node"], "~revert", "{history}");
    assert_eq!(
        h[2]["epoch"], h[0]["epoch"],
        "version 3 runs version 1's epoch"
    );
    assert_eq!(h[2]["spec"], h[0]["spec"], "and its spec");
    let status = c.agents[0].cli(&["job", "status", "web"]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.contains("auto-revert of version 2 to version 1"),
        "{text}"
    );
}

#[test]
fn canary_waits_for_promote_and_revert_goes_back() {
    let c = Cluster::start(3, "svc-canary", &[]);
    let canary = |tag: &str| {
        let mut spec = rolling_web(&c, tag, "/", false);
        spec["update"]["canary"] = 1.into();
        spec
    };
    // A first version places every slot at once: `job run` waits for its rollout to
    // complete, not for a promotion (its canary slot may be done before the others).
    let said = followed_ok(&c, &canary("v1"));
    assert!(said.contains("update version 1 · complete"), "{said}");
    wait_for(DEADLINE, "6 healthy on version 1 everywhere", || {
        all_healthy_on(&c, 1).then_some(())
    });
    let refused = c.agents[1].cli(&["job", "promote", "web"]);
    assert!(!refused.status.success(), "nothing waits for a promotion");
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("no canary waiting"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    // `job run` follows the canary until it waits for a promotion, and says so.
    let said = followed_ok(&c, &canary("v2"));
    assert!(
        said.contains("waiting for promote (1 of 1 canaries healthy): `shoal job promote web`"),
        "{said}"
    );
    // Slot 0 moves to version 2 and the deployment waits, on every node.
    for i in 0..3 {
        wait_for(DEADLINE, &format!("n{} waits for promote", i + 1), || {
            let job = c.job(i, "web")?;
            let versions: Vec<u64> = job["tasks"]
                .as_array()?
                .iter()
                .map(|t| t["version"].as_u64().unwrap_or(0))
                .collect();
            (job["deployment"]["status"] == "awaiting promotion" && versions == [2, 1, 1, 1, 1, 1])
                .then_some(())
        });
    }
    let status = c.agents[2].cli(&["job", "status", "web"]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.contains("waiting for promote (1 of 1 canaries healthy)"),
        "{text}"
    );
    let sampler = Sampler::start(&c);
    let promoted = c.agents[1].cli(&["job", "promote", "web"]);
    assert!(
        promoted.status.success(),
        "{}",
        String::from_utf8_lossy(&promoted.stderr)
    );
    wait_for(DEADLINE, "6 healthy on version 2 everywhere", || {
        all_healthy_on(&c, 2).then_some(())
    });
    // Back to version 1 by hand: a new version 3, no canary phase, the same floor.
    let reverted = c.agents[0].cli(&["job", "revert", "web", "1"]);
    assert!(
        reverted.status.success(),
        "{}",
        String::from_utf8_lossy(&reverted.stderr)
    );
    wait_for(DEADLINE, "6 healthy on version 3 everywhere", || {
        all_healthy_on(&c, 3).then_some(())
    });
    converged_web(
        &c,
        6,
        "every node lists 6 healthy instances after the revert",
    );
    let (fewest, samples, low) = sampler.finish();
    eprintln!("canary promote and revert: {samples} samples, fewest healthy {fewest}");
    assert!(low.is_empty(), "below count - max_parallel: {low:?}");
    let unknown = c.agents[0].cli(&["job", "revert", "web", "9"]);
    assert!(!unknown.status.success());
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("has no version 9 (kept: 1, 2, 3)"),
        "{}",
        String::from_utf8_lossy(&unknown.stderr)
    );
    // The version that runs is no revert target (`409`).
    let current = c.agents[0].cli(&["job", "revert", "web", "3"]);
    let why = String::from_utf8_lossy(&current.stderr);
    assert!(!current.status.success(), "reverted to the current version");
    assert!(
        why.contains("409 Conflict") && why.contains("already runs version 3"),
        "{why}"
    );
    let history = c.agents[2].cli(&["job", "history", "web"]);
    let text = String::from_utf8_lossy(&history.stdout);
    assert!(
        text.contains("VERSION") && text.contains("3 (current)"),
        "{text}"
    );
}
