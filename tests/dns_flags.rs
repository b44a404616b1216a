//! The agent's DNS flags on real agents (README, `shoal agent` flags; `docs/services.md`, §3):
//! with `--dns off` the agent opens no DNS socket at all, `/v1/agent/self` and
//! `addresses.json` show no DNS, and `/v1/metrics` has no `shoal_dns_*` family; with
//! `--dns-ttl SECONDS` every record `dig` gets carries that TTL, and 0 without the flag.
//!
//! "Nothing answers DNS" is checked on the agent's own sockets (`/proc/PID/fd` against
//! `/proc/PID/net/{udp,tcp}`), not by asking `dig` at the default `127.0.0.1:8600`: other tests
//! on this host (`shoal dev` in tests/security.rs) may answer there, and no socket at all is
//! the stronger claim. Agents with DNS on beside them show that the same inventory does see a
//! DNS socket.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use common::{Agent, AgentSpec, TaskCluster, TempDir, keygen, wait_for};
use serde_json::{Value, json};

const DEADLINE: Duration = Duration::from_secs(90);

/// Reads `DATA_DIR/addresses.json`, the ports the agent's OS-chosen sockets got.
fn addresses(agent: &Agent) -> Value {
    let text = std::fs::read_to_string(agent.data_dir.join("addresses.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The sockets process `pid` receives on: (`udp`|`udp6`, port) for every UDP socket and
/// (`tcp`|`tcp6`, port) for every listening TCP socket (state `0A`), found by matching the
/// inodes of its open sockets against its network namespace's tables.
fn receiving_sockets(pid: i32) -> BTreeSet<(&'static str, u16)> {
    let inodes: BTreeSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter_map(|target| {
            let target = target.to_str()?;
            Some(
                target
                    .strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .to_string(),
            )
        })
        .collect();
    let mut out = BTreeSet::new();
    for proto in ["udp", "udp6", "tcp", "tcp6"] {
        let table = std::fs::read_to_string(format!("/proc/{pid}/net/{proto}")).unwrap();
        for line in table.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state), Some(inode)) = (f.get(1), f.get(3), f.get(9)) else {
                continue;
            };
            let listening = proto.starts_with("udp") || *state == "0A";
            if listening && inodes.contains(*inode) {
                let port = local.rsplit_once(':').unwrap().1;
                out.insert((proto, u16::from_str_radix(port, 16).unwrap()));
            }
        }
    }
    out
}

/// What every agent receives on, DNS aside: gossip and QUIC (UDP), the API (TCP).
fn base_sockets(agent: &Agent) -> BTreeSet<(&'static str, u16)> {
    let quic: SocketAddr = addresses(agent)["quic"].as_str().unwrap().parse().unwrap();
    BTreeSet::from([
        ("udp", agent.gossip.port()),
        ("udp", quic.port()),
        ("tcp", agent.http.port()),
    ])
}

fn metrics(agent: &Agent) -> String {
    let answer = common::http_request(
        agent.http,
        "GET",
        "/v1/metrics",
        None,
        Duration::from_secs(10),
    )
    .expect("GET /v1/metrics");
    assert_eq!(answer.status, 200, "{}", answer.body);
    answer.body
}

#[test]
fn with_dns_off_the_agent_opens_no_dns_socket_and_shows_no_dns() {
    let dir = TempDir::new("dns-off");
    let key = keygen(&dir.0, "cluster.key");
    let on = Agent::start(AgentSpec::new("on", &key, &dir.0));
    let off = Agent::start(AgentSpec {
        extra: vec!["--dns".into(), "off".into()],
        ..AgentSpec::new("off", &key, &dir.0)
    });

    // The agent with DNS on receives on one more port, over UDP and TCP: the inventory sees it.
    let dns: SocketAddr = addresses(&on)["dns"].as_str().unwrap().parse().unwrap();
    let mut expected = base_sockets(&on);
    expected.extend([("udp", dns.port()), ("tcp", dns.port())]);
    assert_eq!(
        receiving_sockets(on.pid()),
        expected,
        "the agent with DNS on"
    );
    // With `--dns off`: gossip, QUIC and the API, nothing else on any port.
    assert_eq!(
        receiving_sockets(off.pid()),
        base_sockets(&off),
        "the agent with --dns off receives on a port beyond gossip, QUIC and the API"
    );

    // `/v1/agent/self` and `addresses.json` show no DNS (the key is there, as `null`).
    let me = off.agent_self().expect("GET /v1/agent/self");
    assert_eq!(me.get("dns"), Some(&Value::Null), "{me:#}");
    assert_eq!(addresses(&off)["dns"], Value::Null);
    let on_me = on.agent_self().expect("GET /v1/agent/self");
    assert_eq!(on_me["dns"]["addr"], dns.to_string(), "{on_me:#}");

    // `/v1/metrics`: the `shoal_dns_*` families are absent, not zero.
    let text = metrics(&off);
    let dns_lines: Vec<&str> = text.lines().filter(|l| l.contains("shoal_dns_")).collect();
    assert!(dns_lines.is_empty(), "--dns off exports {dns_lines:#?}");
    assert!(
        metrics(&on).contains("shoal_dns_queries_total{"),
        "the agent with DNS on exports shoal_dns_queries_total"
    );
}

/// `dig @DNS NAME TYPE` with the given sections (`+answer`, `+additional`, `+authority`):
/// every record as (type, TTL); `None` when dig could not ask.
fn dig_records(
    dns: SocketAddr,
    name: &str,
    qtype: &str,
    sections: &[&str],
) -> Option<Vec<(String, u32)>> {
    let out = Command::new("dig")
        .arg(format!("@{}", dns.ip()))
        .args(["-p", &dns.port().to_string(), name, qtype])
        .args(["+noall", "+time=2", "+tries=1"])
        .args(sections)
        .output()
        .expect("dig runs (.ci/run installs bind9-dnsutils)");
    if !out.status.success() {
        return None;
    }
    // `NAME TTL CLASS TYPE RDATA…`, one record a line.
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with(';'))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((f.get(3)?.to_string(), f.get(1)?.parse().ok()?))
        })
        .collect()
}

/// A cluster of `n1 --dns-ttl 37` and `n2` (no flag), running one `web` task with a port.
fn start_ttl_cluster() -> TaskCluster {
    let dir = TempDir::new("dns-ttl");
    let key = keygen(&dir.0, "cluster.key");
    let n1 = Agent::start(AgentSpec {
        extra: vec!["--dns-ttl".into(), "37".into()],
        ..AgentSpec::new("n1", &key, &dir.0)
    });
    let n2 = Agent::start(AgentSpec {
        join: Some(n1.gossip),
        ..AgentSpec::new("n2", &key, &dir.0)
    });
    let c = TaskCluster::new(dir, vec![n1, n2]);
    for a in &c.agents {
        wait_for(DEADLINE, &format!("{} sees 2 alive nodes", a.name), || {
            let nodes = a.nodes()?;
            (nodes.iter().filter(|n| n["status"] == "alive").count() == 2).then_some(())
        });
    }
    let spec = json!({
        "id": "web", "type": "service", "count": 1, "command": "sh",
        "args": ["-c", format!("echo $$ >> {}; exec sleep 600", c.pids.display())],
        "resources": {"cpu": 10, "memory": 8}, "ports": [{"name": "http"}]
    });
    c.submit(&spec);
    c
}

#[test]
fn dns_answers_carry_the_ttl_of_dns_ttl_and_zero_by_default() {
    let c = start_ttl_cluster();
    for (agent, ttl) in [(&c.agents[0], 37), (&c.agents[1], 0)] {
        let me = agent.agent_self().expect("GET /v1/agent/self");
        assert_eq!(me["dns"]["ttl"], ttl, "{me:#}");
        let dns: SocketAddr = me["dns"]["addr"].as_str().unwrap().parse().unwrap();
        let what = format!("{} answers web's SRV", agent.name);
        let service = wait_for(DEADLINE, &what, || {
            dig_records(dns, "web.service.shoal", "SRV", &["+answer", "+additional"])
                .filter(|r| r.iter().any(|(t, _)| t == "SRV"))
        });
        let node = dig_records(dns, "n1.node.shoal", "A", &["+answer"]).expect("dig A");
        let negative =
            dig_records(dns, "nope.service.shoal", "SRV", &["+authority"]).expect("dig SRV");
        // Every kind of record the zone answers with: SRV, its target's A, a node's A, the SOA
        // of a negative answer.
        let records: Vec<(String, u32)> = [service, node, negative].concat();
        let types: BTreeSet<&str> = records.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(types, BTreeSet::from(["A", "SOA", "SRV"]), "{records:?}");
        let ttls: BTreeMap<&str, BTreeSet<u32>> =
            records.iter().fold(BTreeMap::new(), |mut m, (t, ttl)| {
                m.entry(t.as_str())
                    .or_insert_with(BTreeSet::new)
                    .insert(*ttl);
                m
            });
        assert!(
            ttls.values().all(|s| *s == BTreeSet::from([ttl])),
            "{}: expected TTL {ttl} on every record, got {ttls:?}",
            agent.name
        );
    }
}
