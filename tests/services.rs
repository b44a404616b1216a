//! Services with real agents (`docs/services.md`; so far steps 2 and 3, ports and health
//! checks): each task of a service gets a free port on its node, picked there at admission,
//! sees it as `SHOAL_PORT_<NAME>` / `SHOAL_ADDR_<NAME>` / `SHOAL_IP` and in `${…}` in its
//! arguments, and serves on it; `job status` shows the ports. The node running a task runs its
//! health checks; every node shows the health, and a task whose check keeps failing is
//! restarted.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Agent, TempDir, run, start_agents, wait_for};
use serde_json::Value;

const DEADLINE: Duration = Duration::from_secs(90);

struct Cluster {
    agents: Vec<Agent>,
    /// Every task writes its pid here, so the test can stop every process it caused.
    pids: PathBuf,
    dir: TempDir,
}

impl Cluster {
    fn start(n: usize, tag: &str, extra: &[&str]) -> Cluster {
        let (dir, agents) = start_agents(n, tag, extra, DEADLINE, |x| {
            x["status"] == "alive" && !x["resources"].is_null()
        });
        let pids = dir.0.join("pids");
        Cluster { agents, pids, dir }
    }

    fn path(&self) -> &Path {
        &self.dir.0
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

impl Drop for Cluster {
    fn drop(&mut self) {
        for a in &mut self.agents {
            a.stop();
        }
        for pid in std::fs::read_to_string(&self.pids)
            .unwrap_or_default()
            .lines()
        {
            let _ = std::process::Command::new("kill")
                .args(["-9", pid.trim()])
                .status();
        }
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
    let envs = c.path().join("envs");
    std::fs::create_dir_all(&envs).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&envs, std::fs::Permissions::from_mode(0o1777)).unwrap();
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
    let file = c.path().join("web.json");
    std::fs::write(&file, spec.to_string()).unwrap();
    let out = c.agents[0].cli(&["job", "run", file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "job run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

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
        let file = c.path().join(format!("{id}.json"));
        std::fs::write(&file, spec(id, p).to_string()).unwrap();
        let out = c.agents[0].cli(&["job", "run", file.to_str().unwrap(), "--detach"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
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

/// Submits `spec` (JSON) at agent 0 without waiting for it to run.
fn submit(c: &Cluster, spec: &Value) {
    let id = spec["id"].as_str().unwrap();
    let file = c.path().join(format!("{id}.json"));
    std::fs::write(&file, spec.to_string()).unwrap();
    let out = c.agents[0].cli(&["job", "run", file.to_str().unwrap(), "--detach"]);
    assert!(
        out.status.success(),
        "job run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
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
    let marks = c.path().join("marks");
    std::fs::create_dir_all(&marks).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&marks, std::fs::Permissions::from_mode(0o1777)).unwrap();
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
    submit(&c, &spec);
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
    let marks = c.path().join("marks");
    std::fs::create_dir_all(&marks).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&marks, std::fs::Permissions::from_mode(0o1777)).unwrap();
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
    submit(&c, &spec);
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
