//! Draining a node on real agents (`docs/services.md`, §5): a service of 6 with
//! `max_parallel = 2` and an http check moves off a drained node while every node's
//! `?healthy=true` answer, sampled every 100 ms, never drops below 4 and nothing new lands
//! there; the drain completes; the flag survives the agent's restart; `eligibility --enable`
//! lets work land there again.

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::TaskCluster as Cluster;
use common::{Agent, AgentSpec, start_agents, wait_for};
use serde_json::Value;

const DEADLINE: Duration = Duration::from_secs(90);

fn get_json(addr: SocketAddr, path: &str) -> Option<Value> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (_, body) = text.split_once("\r\n\r\n")?;
    serde_json::from_str(body).ok()
}

fn cli_ok(a: &Agent, args: &[&str]) -> String {
    let out = a.cli(args);
    assert!(
        out.status.success(),
        "shoal {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A python HTTP server on `${SHOAL_PORT_HTTP}` with an http check, 6 of them, moved 2 at a
/// time.
fn web(c: &Cluster) -> Value {
    let script = format!(
        "echo $$ >> {pids}; exec /usr/bin/python3 -m http.server ${{SHOAL_PORT_HTTP}} \
         --bind 127.0.0.1",
        pids = c.pids.display()
    );
    serde_json::json!({
        "id": "web", "type": "service", "count": 6, "command": "sh", "args": ["-c", script],
        "resources": {"cpu": 100, "memory": 64},
        "ports": [{"name": "http"}],
        "restart": {"delay_ms": 200},
        "checks": [{"type": "http", "port": "http", "path": "/",
                    "interval_ms": 300, "timeout_ms": 300, "failures": 0}],
        "update": {"max_parallel": 2, "min_healthy_ms": 1000, "healthy_deadline_ms": 10000}
    })
}

/// A plain sleeper service, optionally pinned to one node.
fn sleeper(c: &Cluster, id: &str, count: u32, pin: Option<&str>) -> Value {
    let mut spec = serde_json::json!({
        "id": id, "type": "service", "count": count, "command": "sh",
        "args": ["-c", format!("echo $$ >> {}; exec sleep 600", c.pids.display())],
        "resources": {"cpu": 100, "memory": 32}
    });
    if let Some(node) = pin {
        spec["constraints"] = serde_json::json!([format!("node == {node}")]);
    }
    spec
}

/// `(node, slot, attempt)` of every healthy instance of `web` agent `at` answers.
fn healthy_instances(addr: SocketAddr) -> Option<Vec<(String, u64, u64)>> {
    let v = get_json(addr, "/v1/services/web?healthy=true")?;
    Some(
        v["instances"]
            .as_array()?
            .iter()
            .map(|i| {
                (
                    i["node"].as_str().unwrap_or("").to_string(),
                    i["slot"].as_u64().unwrap_or(0),
                    i["attempt"].as_u64().unwrap_or(0),
                )
            })
            .collect(),
    )
}

/// Nodes running a task of `job` in agent `at`'s view.
fn nodes_of(c: &Cluster, at: usize, job: &str) -> Vec<String> {
    let out = c.agents[at].cli(&["job", "status", job, "--json"]);
    let Ok(v) = serde_json::from_slice::<Value>(&out.stdout) else {
        return Vec::new();
    };
    v["tasks"]
        .as_array()
        .map(|ts| {
            ts.iter()
                .filter(|t| t["state"] == "running")
                .filter_map(|t| t["node"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn node_view(a: &Agent, name: &str) -> Option<Value> {
    a.nodes()?.into_iter().find(|n| n["name"] == name)
}

/// What the sampler saw: the fewest healthy instances in any node's answer, the number of
/// samples, the answers below 4, and every instance seen on the drained node.
struct Seen {
    fewest: usize,
    samples: usize,
    low: Vec<String>,
    on_victim: BTreeSet<(u64, u64)>,
}

fn sample(addrs: Vec<SocketAddr>, victim: String, stop: Arc<AtomicBool>) -> Seen {
    let mut seen = Seen {
        fewest: usize::MAX,
        samples: 0,
        low: Vec::new(),
        on_victim: BTreeSet::new(),
    };
    while !stop.load(Ordering::Relaxed) {
        for (i, addr) in addrs.iter().enumerate() {
            let Some(instances) = healthy_instances(*addr) else {
                continue;
            };
            seen.samples += 1;
            seen.fewest = seen.fewest.min(instances.len());
            if instances.len() < 4 {
                seen.low
                    .push(format!("n{} answered {} healthy", i + 1, instances.len()));
            }
            for (node, slot, attempt) in instances {
                if node == victim {
                    seen.on_victim.insert((slot, attempt));
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    seen
}

#[test]
fn drain_keeps_count_minus_max_parallel_and_the_flag_survives_a_restart() {
    let (dir, agents) = start_agents(4, "drain", &[], DEADLINE, |x| {
        x["status"] == "alive" && !x["resources"].is_null()
    });
    let mut c = Cluster::new(dir, agents);
    c.submit(&web(&c));
    let before = wait_for(DEADLINE, "every node answers 6 healthy", || {
        let all: Vec<Vec<(String, u64, u64)>> = c
            .agents
            .iter()
            .map(|a| healthy_instances(a.http))
            .collect::<Option<_>>()?;
        all.iter().all(|v| v.len() == 6).then(|| all[0].clone())
    });
    // The node holding the most instances (bin-packing puts several on one).
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    for (node, _, _) in &before {
        *counts.entry(node.clone()).or_default() += 1;
    }
    let (victim, held) = counts
        .iter()
        .max_by_key(|(n, k)| (**k, std::cmp::Reverse((*n).clone())))
        .map(|(n, k)| (n.clone(), *k))
        .unwrap();
    let victim_at = c.agents.iter().position(|a| a.name == victim).unwrap();
    let before_on_victim: BTreeSet<(u64, u64)> = before
        .iter()
        .filter(|(n, _, _)| *n == victim)
        .map(|(_, s, a)| (*s, *a))
        .collect();
    eprintln!("draining {victim}, which holds {held} of 6");

    // Drain through another node's API, following it to the end, under the sampler.
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let addrs = c.agents.iter().map(|a| a.http).collect();
        let (victim, stop) = (victim.clone(), stop.clone());
        std::thread::spawn(move || sample(addrs, victim, stop))
    };
    let other = (victim_at + 1) % c.agents.len();
    let started = Instant::now();
    let out = cli_ok(
        &c.agents[other],
        &["node", "drain", &victim, "--no-deadline"],
    );
    let took = started.elapsed();
    assert!(out.contains(&format!("{victim} is drained")), "{out}");
    // Every node agrees: the drain is complete, and 6 healthy run elsewhere.
    for a in &c.agents {
        wait_for(
            DEADLINE,
            &format!("{} sees the drain complete", a.name),
            || {
                let n = node_view(a, &victim)?;
                (n["drain"]["complete"] == true && n["eligible"] == false).then_some(())
            },
        );
        wait_for(
            DEADLINE,
            &format!("{} answers 6 healthy elsewhere", a.name),
            || {
                let v = healthy_instances(a.http)?;
                (v.len() == 6 && v.iter().all(|(n, _, _)| *n != victim)).then_some(())
            },
        );
    }
    stop.store(true, Ordering::Relaxed);
    let seen = sampler.join().unwrap();
    eprintln!(
        "drain of {victim} ({held} instances): {:.1} s, {} samples, fewest healthy {}",
        took.as_secs_f64(),
        seen.samples,
        seen.fewest
    );
    assert!(
        seen.low.is_empty(),
        "below count - max_parallel: {:?}",
        seen.low
    );
    assert!(
        seen.fewest < 6,
        "the sampler never saw a move ({} samples)",
        seen.samples
    );
    let new_on_victim: Vec<_> = seen.on_victim.difference(&before_on_victim).collect();
    assert!(
        new_on_victim.is_empty(),
        "new instances on {victim}: {new_on_victim:?}"
    );
    let status = cli_ok(&c.agents[0], &["node", "status", &victim]);
    assert!(status.contains("drained"), "{status}");

    // Restart the drained agent: the flag survives (from its own log and snapshot).
    let key = c.dir.0.join("cluster.key");
    let seed = c.agents[if victim_at == 0 { 1 } else { 0 }].gossip;
    c.agents[victim_at].stop();
    let root = c.dir.0.clone();
    c.agents[victim_at] = Agent::start(AgentSpec {
        join: Some(seed),
        ..AgentSpec::new(&victim, &key, &root)
    });
    for a in &c.agents {
        wait_for(
            DEADLINE,
            &format!("{} sees {victim} back, still ineligible", a.name),
            || {
                let n = node_view(a, &victim)?;
                (n["status"] == "alive" && n["eligible"] == false).then_some(())
            },
        );
    }
    // New work lands elsewhere; a job pinned to it waits and says why.
    c.submit(&sleeper(&c, "more", 3, None));
    c.submit(&sleeper(&c, "pinned", 1, Some(&victim)));
    wait_for(DEADLINE, "3 of `more` run", || {
        (nodes_of(&c, 0, "more").len() == 3).then_some(())
    });
    assert!(!nodes_of(&c, 0, "more").contains(&victim));
    let pinned = cli_ok(&c.agents[0], &["job", "status", "pinned"]);
    assert!(pinned.contains("draining"), "{pinned}");
    // Enabled again: the pinned job lands there.
    let out = cli_ok(
        &c.agents[other],
        &["node", "eligibility", &victim, "--enable"],
    );
    assert!(out.contains("eligible"), "{out}");
    wait_for(DEADLINE, "the pinned job runs on the enabled node", || {
        (nodes_of(&c, 0, "pinned") == vec![victim.clone()]).then_some(())
    });
    // Unknown names are refused with the known ones.
    let bad = c.agents[0].cli(&["node", "drain", "nope", "--detach"]);
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("no node `nope`"), "{err}");
}
