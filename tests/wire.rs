//! The wire under attack, with real agents: gossip datagrams recorded on their way to a node
//! and replayed after their sender was killed change nothing and draw nothing back, and the
//! cluster key rotates across five running agents without any member ever being suspected.

mod common;

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Agent, AgentSpec, TempDir, http_get, keygen, run, status_of, wait_for};
use serde_json::Value;

const DEADLINE: Duration = Duration::from_secs(45);
/// A proxy or replay loop never runs longer than this, whatever happens to the test.
const HARD_STOP: Duration = Duration::from_secs(240);

/// A loopback UDP port that was free a moment ago.
fn free_udp_port() -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.local_addr().unwrap()
}

/// A UDP relay in front of one agent: peers send to `front` (the agent's advertised
/// address), the relay forwards to the agent's real socket from one upstream socket per
/// client and relays answers back. It records every datagram a chosen source sends.
struct Relay {
    front: SocketAddr,
    captured: Arc<Mutex<Vec<Vec<u8>>>>,
    capture_from: Arc<Mutex<Option<SocketAddr>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Relay {
    fn start(target: SocketAddr) -> Relay {
        let front_socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        front_socket.set_nonblocking(true).unwrap();
        let front = front_socket.local_addr().unwrap();
        let captured = Arc::new(Mutex::new(Vec::new()));
        let capture_from = Arc::new(Mutex::new(None));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (captured, capture_from, stop) =
                (captured.clone(), capture_from.clone(), stop.clone());
            std::thread::spawn(move || {
                relay_loop(front_socket, target, &captured, &capture_from, &stop);
            })
        };
        Relay {
            front,
            captured,
            capture_from,
            stop,
            thread: Some(thread),
        }
    }

    fn capture(&self, from: SocketAddr) {
        *self.capture_from.lock().unwrap() = Some(from);
    }

    fn captured(&self) -> Vec<Vec<u8>> {
        self.captured.lock().unwrap().clone()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn relay_loop(
    front: UdpSocket,
    target: SocketAddr,
    captured: &Mutex<Vec<Vec<u8>>>,
    capture_from: &Mutex<Option<SocketAddr>>,
    stop: &AtomicBool,
) {
    let mut upstream: BTreeMap<SocketAddr, UdpSocket> = BTreeMap::new();
    let mut buf = vec![0u8; 65_536];
    let end = Instant::now() + HARD_STOP;
    while !stop.load(Ordering::Relaxed) && Instant::now() < end {
        let mut idle = true;
        while let Ok((len, from)) = front.recv_from(&mut buf) {
            idle = false;
            if *capture_from.lock().unwrap() == Some(from) {
                captured.lock().unwrap().push(buf[..len].to_vec());
            }
            let socket = upstream.entry(from).or_insert_with(|| {
                let s = UdpSocket::bind("127.0.0.1:0").unwrap();
                s.set_nonblocking(true).unwrap();
                s
            });
            let _ = socket.send_to(&buf[..len], target);
        }
        for (client, socket) in &upstream {
            while let Ok((len, _)) = socket.recv_from(&mut buf) {
                idle = false;
                let _ = front.send_to(&buf[..len], client);
            }
        }
        if idle {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

fn transport(agent: &Agent, counter: &str) -> Option<u64> {
    agent.agent_self()?["transport"][counter].as_u64()
}

fn sees_down(agent: &Agent, name: &str) -> bool {
    agent
        .nodes()
        .and_then(|nodes| Some(status_of(&nodes, name)?["status"] == "down"))
        .unwrap_or(false)
}

/// Datagrams recorded on their way from x to a, replayed after x was `kill -9`ed to a and to
/// every other node, from x's own address and from a bystander's (the spoofed source of a
/// reflection attack): none is accepted, none draws a byte back to the bystander, and x goes
/// down everywhere as if nothing were replayed. (x's own address does receive traffic: the
/// members keep probing x until it is down, replays or not.)
#[test]
fn replayed_datagrams_neither_keep_a_killed_node_alive_nor_draw_replies() {
    let dir = TempDir::new("replay");
    let key = keygen(&dir.0, "cluster.key");
    let a_real = free_udp_port();
    let relay = Relay::start(a_real);
    let advertise = relay.front.to_string();
    let a = Agent::start(AgentSpec {
        bind: a_real,
        extra: vec!["--advertise".into(), advertise],
        ..AgentSpec::new("a", &key, &dir.0)
    });
    assert_eq!(a.gossip, relay.front, "a advertises the relay");
    let b = Agent::start(AgentSpec {
        join: Some(relay.front),
        ..AgentSpec::new("b", &key, &dir.0)
    });
    let c = Agent::start(AgentSpec {
        join: Some(relay.front),
        ..AgentSpec::new("c", &key, &dir.0)
    });
    // x's gossip port is chosen here so the relay can record what comes from it.
    let x_addr = free_udp_port();
    relay.capture(x_addr);
    let mut x = Agent::start(AgentSpec {
        join: Some(relay.front),
        bind: x_addr,
        ..AgentSpec::new("x", &key, &dir.0)
    });
    for agent in [&a, &b, &c, &x] {
        wait_for(DEADLINE, &format!("{} sees 4 alive", agent.name), || {
            let nodes = agent.nodes()?;
            (nodes.iter().filter(|n| n["status"] == "alive").count() == 4).then_some(())
        });
    }
    let recorded = wait_for(DEADLINE, "the relay recorded 15 datagrams from x", || {
        let got = relay.captured();
        (got.len() >= 15).then_some(got)
    });

    x.kill9();
    let killed_at = Instant::now();
    // The attacker sends from x's own address, and from a bystander's: a reflection attack
    // spoofs its victim's address, and replies, if any, would go there.
    let as_x = wait_for(DEADLINE, "x's port is free again", || {
        UdpSocket::bind(x_addr).ok()
    });
    let bystander = UdpSocket::bind("127.0.0.1:0").unwrap();
    bystander.set_nonblocking(true).unwrap();
    let replayed_before: Vec<u64> = [&a, &b, &c]
        .iter()
        .map(|n| transport(n, "replayed").unwrap())
        .collect();
    let malformed_before = transport(&a, "malformed").unwrap();

    let (mut sent_bytes, mut sent_datagrams, mut back_bytes) = (0u64, 0u64, 0u64);
    let mut buf = vec![0u8; 65_536];
    let targets = [a_real, b.gossip, c.gossip];
    let mut down_everywhere = false;
    while !down_everywhere {
        assert!(
            killed_at.elapsed() < DEADLINE,
            "x was not down everywhere within {DEADLINE:?} of its kill while its datagrams were replayed"
        );
        for target in targets {
            for datagram in &recorded {
                for source in [&as_x, &bystander] {
                    if source.send_to(datagram, target).is_ok() {
                        sent_bytes += datagram.len() as u64;
                        sent_datagrams += 1;
                    }
                }
            }
        }
        let end = Instant::now() + Duration::from_millis(200);
        while Instant::now() < end {
            match bystander.recv_from(&mut buf) {
                Ok((len, _)) => back_bytes += len as u64,
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
        down_everywhere = [&a, &b, &c].iter().all(|n| sees_down(n, "x"));
    }
    let detection = killed_at.elapsed();
    // Late answers, if any, have had time to arrive.
    let end = Instant::now() + Duration::from_millis(500);
    while Instant::now() < end {
        match bystander.recv_from(&mut buf) {
            Ok((len, _)) => back_bytes += len as u64,
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
    println!(
        "x down everywhere {detection:?} after kill -9; replayed {sent_datagrams} datagrams \
         ({sent_bytes} bytes) from its address and a bystander's; {back_bytes} bytes came back \
         to the bystander"
    );
    assert_eq!(back_bytes, 0, "replays drew {back_bytes} bytes back");
    assert!(sent_datagrams >= 6 * recorded.len() as u64);

    // Every replay was refused at the anti-replay check, before parsing.
    let per_target = sent_datagrams / 3;
    for (node, before) in [&a, &b, &c].iter().zip(replayed_before) {
        let after = transport(node, "replayed").unwrap();
        assert!(
            after - before >= per_target,
            "{} refused {} of {per_target} replays",
            node.name,
            after - before
        );
    }
    assert_eq!(transport(&a, "malformed").unwrap(), malformed_before);
}

/// Bytes that are not a sealed datagram (a first contact from a stranger) draw nothing back.
#[test]
fn unsealed_first_contact_draws_no_reply() {
    let dir = TempDir::new("first-contact");
    let key = keygen(&dir.0, "cluster.key");
    let a = Agent::start(AgentSpec::new("a", &key, &dir.0));
    let stranger = UdpSocket::bind("127.0.0.1:0").unwrap();
    stranger
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let before = transport(&a, "unauthentic").unwrap();
    let mut buf = vec![0u8; 65_536];
    let (mut sent, mut back) = (0u64, 0u64);
    for i in 0..50u8 {
        // Shaped like the envelope: version 2, then noise.
        let mut datagram = vec![2u8];
        datagram.extend((0..200u8).map(|j| j.wrapping_mul(31).wrapping_add(i)));
        sent += stranger.send_to(&datagram, a.gossip).unwrap() as u64;
        if let Ok((len, _)) = stranger.recv_from(&mut buf) {
            back += len as u64;
        }
    }
    wait_for(DEADLINE, "a counted 50 unauthentic datagrams", || {
        (transport(&a, "unauthentic")? >= before + 50).then_some(())
    });
    assert_eq!(back, 0, "{sent} bytes sent drew {back} bytes back");
}

/// `shoal keyring ARGS --json` against `agent`, run in its directory (the CLI finds the
/// agent's API token there, as an operator's would).
fn keyring(agent: &Agent, args: &[&str]) -> Value {
    let mut full = vec!["keyring"];
    full.extend_from_slice(args);
    full.push("--json");
    let out = agent.cli(&full);
    assert!(
        out.status.success(),
        "shoal {full:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The label of the primary key of `agent` (what `keyring list` shows for it).
fn primary_label(agent: &Agent) -> String {
    let listing = keyring(agent, &["list"]);
    listing["results"][0]["keys"]["primary"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Every agent answers `/v1/nodes` with every node alive; anything else is recorded.
struct SuspicionWatch {
    stop: Arc<AtomicBool>,
    polls: Arc<AtomicU64>,
    seen: Arc<Mutex<Vec<String>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SuspicionWatch {
    fn start(agents: Vec<(String, SocketAddr)>, expected: usize) -> SuspicionWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let polls = Arc::new(AtomicU64::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (stop, polls, seen) = (stop.clone(), polls.clone(), seen.clone());
            std::thread::spawn(move || {
                let end = Instant::now() + HARD_STOP;
                while !stop.load(Ordering::Relaxed) && Instant::now() < end {
                    for (name, http) in &agents {
                        let Some(Value::Array(nodes)) = http_get(*http, "/v1/nodes") else {
                            seen.lock()
                                .unwrap()
                                .push(format!("{name}: /v1/nodes failed"));
                            continue;
                        };
                        polls.fetch_add(1, Ordering::Relaxed);
                        if nodes.len() != expected {
                            seen.lock()
                                .unwrap()
                                .push(format!("{name} lists {} nodes", nodes.len()));
                        }
                        for n in nodes.iter().filter(|n| n["status"] != "alive") {
                            seen.lock()
                                .unwrap()
                                .push(format!("{name} sees {} {}", n["name"], n["status"]));
                        }
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            })
        };
        SuspicionWatch {
            stop,
            polls,
            seen,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let seen = std::mem::take(&mut *self.seen.lock().unwrap());
        (self.polls.load(Ordering::Relaxed), seen)
    }
}

impl Drop for SuspicionWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn assert_complete(answer: &Value, members: usize) {
    let results = answer["results"].as_array().unwrap();
    assert_eq!(answer["complete"], true, "{answer}");
    assert_eq!(results.len(), members, "{answer}");
    assert!(results.iter().all(|r| r["ok"] == true), "{answer}");
}

/// Waits until every agent received `more` datagrams after `since`, so a rotation step has
/// been exercised by real gossip before the next one.
fn gossip_flows(agents: &[Agent], more: u64) {
    let since: Vec<u64> = agents
        .iter()
        .map(|a| transport(a, "datagrams_in").unwrap())
        .collect();
    for (agent, since) in agents.iter().zip(since) {
        wait_for(
            DEADLINE,
            &format!("{} received {more} more datagrams", agent.name),
            || (transport(agent, "datagrams_in")? >= since + more).then_some(()),
        );
    }
}

/// install new → use new → remove old across five running agents, with every agent's view
/// polled all along: no member is ever anything but alive. Afterwards a node that only knows
/// the new key joins, and a job submitted to it replicates to every node.
#[test]
fn a_key_rotation_across_five_agents_suspects_nobody() {
    let dir = TempDir::new("rotation");
    let old = keygen(&dir.0, "old.key");
    let new = keygen(&dir.0, "new.key");
    let new_key = std::fs::read_to_string(&new).unwrap().trim().to_string();
    let seed = Agent::start(AgentSpec::new("n1", &old, &dir.0));
    let mut agents = vec![seed];
    for i in 2..=5 {
        let name = format!("n{i}");
        agents.push(Agent::start(AgentSpec {
            join: Some(agents[0].gossip),
            ..AgentSpec::new(&name, &old, &dir.0)
        }));
    }
    for agent in &agents {
        wait_for(DEADLINE, &format!("{} sees 5 alive", agent.name), || {
            let nodes = agent.nodes()?;
            (nodes.iter().filter(|n| n["status"] == "alive").count() == 5).then_some(())
        });
    }
    let old_label = primary_label(&agents[0]);
    let watch = SuspicionWatch::start(agents.iter().map(|a| (a.name.clone(), a.http)).collect(), 5);

    let installed = keyring(&agents[2], &["install", &new_key]);
    assert_complete(&installed, 5);
    let new_label = installed["results"][0]["keys"]["keys"][1]
        .as_str()
        .unwrap()
        .to_string();
    gossip_flows(&agents, 20);
    let used = keyring(&agents[3], &["use", &new_label]);
    assert_complete(&used, 5);
    for r in used["results"].as_array().unwrap() {
        assert_eq!(r["keys"]["primary"], new_label.as_str(), "{r}");
    }
    gossip_flows(&agents, 20);
    let removed = keyring(&agents[0], &["remove", &old_label]);
    assert_complete(&removed, 5);
    gossip_flows(&agents, 40);

    // Every connection was opened under the old key (before `use`); removing it closed them.
    let closed: usize = agents
        .iter()
        .map(|a| {
            std::fs::read_to_string(dir.0.join(format!("{}.log", a.name)))
                .unwrap_or_default()
                .matches("closing a connection authenticated under a key no longer in the ring")
                .count()
        })
        .sum();
    assert!(closed > 0, "no connection under the removed key was closed");

    let (polls, seen) = watch.finish();
    assert!(polls >= 50, "the watch polled only {polls} times");
    assert!(seen.is_empty(), "during the rotation: {seen:?}");
    for agent in &agents {
        assert_eq!(transport(agent, "unknown_key"), Some(0), "{}", agent.name);
        let ring: Value = serde_json::from_str(
            &std::fs::read_to_string(agent.data_dir.join("keyring.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(ring["keys"], serde_json::json!([new_key]), "{}", agent.name);
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(agent.data_dir.join("keyring.json"))
                .unwrap()
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o600, "{}", agent.name);
    }
    let listing = keyring(&agents[1], &["list"]);
    for r in listing["results"].as_array().unwrap() {
        assert_eq!(r["keys"]["keys"], serde_json::json!([new_label]), "{r}");
    }

    // A node started with only the new key joins (new QUIC connections both ways, under the
    // new CA only), and a job submitted to it replicates to everyone.
    let newcomer = Agent::start(AgentSpec {
        join: Some(agents[0].gossip),
        ..AgentSpec::new("n6", &new, &dir.0)
    });
    agents.push(newcomer);
    for agent in &agents {
        wait_for(DEADLINE, &format!("{} sees 6 alive", agent.name), || {
            let nodes = agent.nodes()?;
            (nodes.iter().filter(|n| n["status"] == "alive").count() == 6).then_some(())
        });
    }
    let spec = serde_json::json!({
        "id": "after-rotation", "type": "batch", "count": 2, "command": "true",
        "resources": {"cpu": 10, "memory": 8}
    });
    let file = dir.0.join("after-rotation.json");
    std::fs::write(&file, spec.to_string()).unwrap();
    let out = agents[5].cli(&["job", "run", file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "job run on the newcomer failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for agent in &agents {
        wait_for(DEADLINE, &format!("{} holds the job", agent.name), || {
            let out = run(&[
                "job",
                "status",
                "after-rotation",
                "--json",
                "--addr",
                &agent.api(),
            ]);
            out.status.success().then_some(())
        });
    }
}
