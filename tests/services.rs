//! Services with real agents (`docs/services.md`; so far step 2, ports): each task of a
//! service gets a free port on its node, picked there at admission, sees it as
//! `SHOAL_PORT_<NAME>` / `SHOAL_ADDR_<NAME>` / `SHOAL_IP` and in `${…}` in its arguments, and
//! serves on it; `job status` shows the ports.

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
