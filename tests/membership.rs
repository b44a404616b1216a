//! Membership with real agents: join through one seed, failure detection, restart with a new
//! generation, a foreign cluster key, garbage on the gossip port, a join retried until its seed
//! appears (and said meanwhile not to have joined: API, log, `shoal node list`), and the known
//! membership (`DATA_DIR/known-members`, `shoal node forget`, also heard by a member that was
//! down when it was said).

mod common;

use std::time::Duration;

use common::{Agent, AgentSpec, TempDir, http_request, keygen, run_in_within, status_of, wait_for};
use serde_json::Value;

const DEADLINE: Duration = Duration::from_secs(45);

fn start_cluster(n: usize, dir: &TempDir, key: &std::path::Path) -> Vec<Agent> {
    let names: Vec<String> = (1..=n).map(|i| format!("n{i}")).collect();
    let seed = Agent::start(AgentSpec::new(&names[0], key, &dir.0));
    let seed_addr = seed.gossip;
    let mut agents = vec![seed];
    for name in &names[1..] {
        agents.push(Agent::start(AgentSpec {
            join: Some(seed_addr),
            ..AgentSpec::new(name, key, &dir.0)
        }));
    }
    agents
}

/// Waits until every agent in `observers` lists exactly `expected` alive nodes.
fn wait_all_alive(observers: &[&Agent], expected: usize) {
    for a in observers {
        wait_for(
            DEADLINE,
            &format!("{} lists {expected} alive nodes", a.name),
            || {
                let nodes = a.nodes()?;
                let alive = nodes.iter().filter(|n| n["status"] == "alive").count();
                (alive == expected).then_some(())
            },
        );
    }
}

/// The names in `agent`'s `DATA_DIR/known-members`, in file order; `None` before the file
/// exists.
fn known_members_file(agent: &Agent) -> Option<Vec<String>> {
    let body = std::fs::read_to_string(agent.data_dir.join("known-members")).ok()?;
    Some(body.lines().map(str::to_string).collect())
}

/// Waits until `agent`'s known-members file holds exactly `names` (sorted, as it writes them).
fn wait_known_members_file(agent: &Agent, names: &[&str]) {
    wait_for(
        DEADLINE,
        &format!("{}'s known-members file is {names:?}", agent.name),
        || (known_members_file(agent)? == names).then_some(()),
    );
}

/// `agent`'s quorum (`GET /v1/agent/self`) as (known, reachable, majority).
fn quorum_of(agent: &Agent) -> Option<(u64, u64, bool)> {
    let q = &agent.agent_self()?["quorum"];
    Some((
        q["known"].as_u64()?,
        q["reachable"].as_u64()?,
        q["majority"].as_bool()?,
    ))
}

/// Waits until `agent` reports the quorum (known, reachable, majority).
fn wait_quorum(agent: &Agent, expected: (u64, u64, bool)) {
    wait_for(
        DEADLINE,
        &format!(
            "{}'s quorum (known, reachable, majority) is {expected:?}",
            agent.name
        ),
        || (quorum_of(agent)? == expected).then_some(()),
    );
}

/// Waits until `observer` lists `name` with `status`.
fn wait_status(observer: &Agent, name: &str, status: &str) {
    wait_for(
        DEADLINE,
        &format!("{} lists {name} {status}", observer.name),
        || {
            let nodes = observer.nodes()?;
            (status_of(&nodes, name)?["status"] == status).then_some(())
        },
    );
}

/// The lines of `agent`'s log file (`ROOT/NAME.log`, written by the harness).
fn log_lines(agent: &Agent) -> Vec<String> {
    std::fs::read_to_string(agent.root.join(format!("{}.log", agent.name)))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// `shoal_members{status="STATUS"}` in `agent`'s `GET /v1/metrics`.
fn members_metric(agent: &Agent, status: &str) -> Option<u64> {
    let metrics = http_request(agent.http, "GET", "/v1/metrics", None, DEADLINE).ok()?;
    let prefix = format!("shoal_members{{status=\"{status}\"}} ");
    metrics
        .body
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))?
        .parse()
        .ok()
}

/// Waits until `observer` no longer lists `name` (`GET /v1/nodes`), then checks that
/// `shoal node list` and `shoal node status` agree and that its metrics count nobody down.
fn wait_unlisted(observer: &Agent, name: &str) {
    wait_for(
        DEADLINE,
        &format!("{} no longer lists {name}", observer.name),
        || (status_of(&observer.nodes()?, name).is_none()).then_some(()),
    );
    let listed = node_list_text(observer);
    assert!(
        !listed
            .lines()
            .any(|l| l.split_whitespace().next() == Some(name)),
        "{} still lists {name}: {listed}",
        observer.name
    );
    let status = observer.cli(&["node", "status", name]);
    assert!(
        !status.status.success(),
        "{} still answers for {name}: {status:?}",
        observer.name
    );
    assert_eq!(
        members_metric(observer, "down"),
        Some(0),
        "{}",
        observer.name
    );
}

/// Three agents, every one alive to every other and holding all three in its known-members
/// file: `(dir, key file, agents)`.
fn three_known(tag: &str) -> (TempDir, std::path::PathBuf, Vec<Agent>) {
    let dir = TempDir::new(tag);
    let key = keygen(&dir.0, "cluster.key");
    let agents = start_cluster(3, &dir, &key);
    wait_all_alive(&agents.iter().collect::<Vec<_>>(), 3);
    for a in &agents {
        wait_known_members_file(a, &["n1", "n2", "n3"]);
    }
    (dir, key, agents)
}

/// `shoal node list` on `agent`: its table and quorum line.
fn node_list_text(agent: &Agent) -> String {
    let out = agent.cli(&["node", "list"]);
    assert!(out.status.success(), "shoal node list failed: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn five_agents_join_detect_a_kill_and_welcome_a_restart() {
    let dir = TempDir::new("five");
    let key = keygen(&dir.0, "cluster.key");
    let mut agents = start_cluster(5, &dir, &key);
    wait_all_alive(&agents.iter().collect::<Vec<_>>(), 5);

    // Every node lists the same five names with their resources.
    for a in &agents {
        let nodes = a.nodes().unwrap();
        let names: Vec<&str> = nodes.iter().map(|n| n["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["n1", "n2", "n3", "n4", "n5"], "seen by {}", a.name);
        for n in &nodes {
            assert_eq!(n["resources"]["capacity"]["cpu_millicores"], 2000, "{n}");
            assert_eq!(n["resources"]["capacity"]["memory_mib"], 2048, "{n}");
        }
    }

    // The agent says which task limits this host enforces (detected, never assumed).
    let me = agents[0].agent_self().unwrap();
    assert!(
        me["limits"]["cpu"].as_str().is_some_and(|v| !v.is_empty()),
        "{me}"
    );
    assert!(
        me["limits"]["memory"]
            .as_str()
            .is_some_and(|v| !v.is_empty()),
        "{me}"
    );
    assert!(
        me["limits"]["note"].as_str().is_some_and(|v| !v.is_empty()),
        "{me}"
    );

    // kill -9 n3: every survivor marks it down.
    let old_generation = agents[2].generation;
    let bind = agents[2].gossip;
    agents[2].kill9();
    for a in agents.iter().filter(|a| a.name != "n3") {
        wait_for(DEADLINE, &format!("{} lists n3 down", a.name), || {
            let nodes = a.nodes()?;
            (status_of(&nodes, "n3")?["status"] == "down").then_some(())
        });
    }

    // Start it again with the same name (and address): alive, with a new generation.
    let seed = agents[0].gossip;
    agents[2] = Agent::start(AgentSpec {
        join: Some(seed),
        bind,
        ..AgentSpec::new("n3", &key, &dir.0)
    });
    assert!(agents[2].generation > old_generation);
    for a in &agents {
        wait_for(
            DEADLINE,
            &format!("{} lists n3 alive again", a.name),
            || {
                let nodes = a.nodes()?;
                let n3 = status_of(&nodes, "n3")?;
                (n3["status"] == "alive" && n3["generation"].as_u64()? > old_generation)
                    .then_some(())
            },
        );
    }
    wait_all_alive(&agents.iter().collect::<Vec<_>>(), 5);

    // A clean stop is reported as `left`, not `down`.
    let status = agents[4].stop().expect("n5 was running");
    assert!(status.success(), "n5 exited with {status}");
    for a in &agents[..4] {
        wait_for(DEADLINE, &format!("{} lists n5 left", a.name), || {
            let nodes = a.nodes()?;
            (status_of(&nodes, "n5")?["status"] == "left").then_some(())
        });
    }
}

#[test]
fn an_agent_without_a_name_takes_the_host_name() {
    let dir = TempDir::new("mem-hostname");
    let key = keygen(&dir.0, "cluster.key");
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let agent = Agent::start(AgentSpec {
        host_name: true,
        ..AgentSpec::new("unnamed", &key, &dir.0)
    });
    let names = wait_for(DEADLINE, "the agent lists itself", || {
        let nodes = agent.nodes()?;
        let names: Vec<String> = nodes
            .iter()
            .filter_map(|n| n["name"].as_str().map(str::to_string))
            .collect();
        (!names.is_empty()).then_some(names)
    });
    assert_eq!(
        names,
        [host.trim()],
        "README: `--name` (default: host name)"
    );
}

#[test]
fn an_agent_with_another_cluster_key_never_appears() {
    let dir = TempDir::new("foreign");
    let key = keygen(&dir.0, "cluster.key");
    let other_key = keygen(&dir.0, "other.key");
    let agents = start_cluster(3, &dir, &key);
    wait_all_alive(&agents.iter().collect::<Vec<_>>(), 3);

    let intruder = Agent::start(AgentSpec {
        join: Some(agents[0].gossip),
        ..AgentSpec::new("intruder", &other_key, &dir.0)
    });
    // The seed must have seen (and dropped) several of the intruder's join attempts.
    wait_for(
        DEADLINE,
        "the seed dropped at least 3 unauthentic datagrams",
        || {
            let me = agents[0].agent_self()?;
            (me["transport"]["unauthentic"].as_u64()? >= 3).then_some(())
        },
    );
    for a in &agents {
        let nodes = a.nodes().unwrap();
        assert!(
            status_of(&nodes, "intruder").is_none(),
            "{} lists the intruder: {nodes:?}",
            a.name
        );
        assert_eq!(nodes.len(), 3);
    }
    let seen_by_intruder = intruder.nodes().unwrap();
    assert_eq!(
        seen_by_intruder.len(),
        1,
        "the intruder learned about the cluster: {seen_by_intruder:?}"
    );
}

#[test]
fn a_burst_of_random_udp_bytes_changes_nothing() {
    let dir = TempDir::new("garbage");
    let key = keygen(&dir.0, "cluster.key");
    let mut agents = start_cluster(3, &dir, &key);
    wait_all_alive(&agents.iter().collect::<Vec<_>>(), 3);
    let before: Vec<Value> = agents[0].nodes().unwrap();

    // A seeded xorshift stream: 5,000 datagrams of 0..1,600 bytes, a third of them starting
    // with the real seal version byte so they reach the AEAD check.
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    // Batches of 100 fit the socket's receive buffer; each batch must be counted (at least
    // 95 of 100, loopback may still drop) before the next is sent.
    let unauthentic = |a: &Agent| {
        a.agent_self()
            .and_then(|me| me["transport"]["unauthentic"].as_u64())
    };
    let mut counted = unauthentic(&agents[0]).unwrap();
    for batch in 0..50 {
        for i in 0..100 {
            let len = (next() % 1_600) as usize;
            let mut data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if i % 3 == 0 && !data.is_empty() {
                data[0] = 1;
            }
            sock.send_to(&data, agents[0].gossip).unwrap();
        }
        counted = wait_for(
            DEADLINE,
            &format!("batch {batch} was counted as unauthentic"),
            || {
                let now = unauthentic(&agents[0])?;
                (now >= counted + 95).then_some(now)
            },
        );
    }
    assert!(agents[0].is_running(), "the target crashed");
    let me = agents[0].agent_self().unwrap();
    assert_eq!(
        me["transport"]["malformed"], 0,
        "garbage got past the seal: {me}"
    );
    wait_all_alive(&agents.iter().collect::<Vec<_>>(), 3);
    let after = agents[0].nodes().unwrap();
    let strip = |v: &[Value]| -> Vec<(Value, Value, Value)> {
        v.iter()
            .map(|n| {
                (
                    n["name"].clone(),
                    n["status"].clone(),
                    n["generation"].clone(),
                )
            })
            .collect()
    };
    assert_eq!(strip(&before), strip(&after));
    for a in &mut agents {
        assert!(a.is_running(), "{} died", a.name);
    }
}

#[test]
fn a_second_agent_under_a_live_name_exits_and_the_first_keeps_the_name() {
    let dir = TempDir::new("dupname");
    let other_root = TempDir::new("dupname-2");
    let key = keygen(&dir.0, "cluster.key");
    let agents = start_cluster(3, &dir, &key);
    wait_all_alive(&agents.iter().collect::<Vec<_>>(), 3);
    // n1 holds its name once past its join grace (5 s after it first heard from a member);
    // a duplicate arriving within the grace would make both give the name up.
    let formed = std::time::Instant::now();
    wait_for(DEADLINE, "n1's name_join_grace passed", || {
        (formed.elapsed() > Duration::from_secs(6)).then_some(())
    });
    let mut dup = Agent::start(AgentSpec {
        join: Some(agents[1].gossip),
        ..AgentSpec::new("n1", &key, &other_root.0)
    });
    let status = wait_for(DEADLINE, "the second n1 exits", || {
        dup.child.as_mut()?.try_wait().ok().flatten()
    });
    assert!(!status.success(), "{status:?}");
    let log = std::fs::read_to_string(other_root.0.join("n1.log")).unwrap();
    assert!(
        log.contains(&format!(
            "is already used by the live agent at {}",
            agents[0].gossip
        )),
        "{log}"
    );
    // Every node still shows n1 alive at the first agent's address, and keeps doing so.
    for _ in 0..2 {
        for a in &agents {
            let nodes = a.nodes().unwrap();
            let n1 = status_of(&nodes, "n1").unwrap();
            assert_eq!(n1["status"], "alive", "seen by {}: {n1}", a.name);
            assert_eq!(
                n1["addr"].as_str().unwrap(),
                agents[0].gossip.to_string(),
                "seen by {}",
                a.name
            );
        }
        let settled = std::time::Instant::now();
        wait_for(DEADLINE, "a suspicion's time passed", || {
            (settled.elapsed() > Duration::from_secs(5)).then_some(())
        });
    }
}

#[test]
fn a_joiner_started_before_its_seed_keeps_retrying_and_joins_once_it_appears() {
    let dir = TempDir::new("join-retry");
    let key = keygen(&dir.0, "cluster.key");
    // The seed's gossip address, chosen by the OS now and bound by the seed only later.
    let seed_addr = {
        let reserved = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        reserved.local_addr().unwrap()
    };
    let started = std::time::Instant::now();
    let joiner = Agent::start(AgentSpec {
        join: Some(seed_addr),
        ..AgentSpec::new("n2", &key, &dir.0)
    });

    // Alone, the joiner sends nothing but its announces to the seed: five of them mean it
    // retried four times. Retries that back off (from `join_retry_min`, 200 ms, doubling) send
    // the fifth 3 s after the join began, and the join began after the process started, so
    // this bound never fails slow machines; a joiner retrying every 200 ms would take 0.8 s.
    let announces = |a: &Agent| a.agent_self()?["membership"]["datagrams_out"].as_u64();
    wait_for(
        DEADLINE,
        "the joiner announced to the absent seed 5 times",
        || (announces(&joiner)? >= 5).then_some(()),
    );
    let five_after = started.elapsed();
    assert!(
        five_after >= Duration::from_secs(2),
        "5 announces within {five_after:?} of the start: the joiner retries without backing off"
    );
    let alone = joiner.nodes().unwrap();
    assert_eq!(
        alone.len(),
        1,
        "the joiner lists others before any seed ran: {alone:?}"
    );

    // Alone, it counts itself a majority of one, and says it has not joined: in its API, in
    // its log (a WARN once 5 s passed without an answer) and in `shoal node list`.
    let join = joiner.agent_self().unwrap()["join"].clone();
    assert_eq!(join["joined"], false, "{join}");
    assert_eq!(
        join["seeds"],
        serde_json::json!([seed_addr.to_string()]),
        "{join}"
    );
    assert!(join["attempts"].as_u64().unwrap() >= 5, "{join}");
    assert!(join["first_member"].is_null(), "{join}");
    let warning = format!("cannot join: no answer from seed {seed_addr} after ");
    let warned = wait_for(
        DEADLINE,
        "the joiner's log warns that it cannot join",
        || {
            log_lines(&joiner)
                .into_iter()
                .find(|l| l.contains(&warning))
        },
    );
    assert!(warned.contains("WARN"), "{warned}");
    let join = joiner.agent_self().unwrap()["join"].clone();
    assert_eq!(join["joined"], false, "{join}");
    assert!(join["waited_ms"].as_u64().unwrap() >= 5_000, "{join}");
    let listed = node_list_text(&joiner);
    assert!(
        listed.contains("quorum as n2 sees it: majority (sees 1 of 1 members)"),
        "{listed}"
    );
    assert!(
        listed.contains(&format!("NOT JOINED: no answer from seed {seed_addr} for ")),
        "{listed}"
    );

    let seed = Agent::start(AgentSpec {
        bind: seed_addr,
        ..AgentSpec::new("n1", &key, &dir.0)
    });
    assert_eq!(seed.gossip, seed_addr);
    let seed_up = std::time::Instant::now();
    wait_status(&joiner, "n1", "alive");
    wait_status(&seed, "n2", "alive");
    eprintln!(
        "5 announces {five_after:?} after the joiner's start; joined {:?} after the seed's",
        seed_up.elapsed()
    );
    wait_all_alive(&[&seed, &joiner], 2);

    // Joined: the API says through whom, the log says it once, the list no longer warns.
    let join = joiner.agent_self().unwrap()["join"].clone();
    assert_eq!(join["joined"], true, "{join}");
    assert_eq!(join["first_member"], "n1", "{join}");
    assert_eq!(join["retry_ms"], 0, "{join}");
    let joined_lines: Vec<String> = log_lines(&joiner)
        .into_iter()
        .filter(|l| l.contains("joined the cluster after "))
        .collect();
    assert_eq!(joined_lines.len(), 1, "{joined_lines:?}");
    assert!(
        joined_lines[0].contains("INFO") && joined_lines[0].contains("first heard from n1 at"),
        "{joined_lines:?}"
    );
    assert!(!node_list_text(&joiner).contains("NOT JOINED"));
    // The seed, given no seeds, was joined by n2 and has nothing to warn about.
    let join = seed.agent_self().unwrap()["join"].clone();
    assert_eq!(join["joined"], true, "{join}");
    assert_eq!(join["seeds"], serde_json::json!([]), "{join}");
    assert!(!node_list_text(&seed).contains("NOT JOINED"));
    assert!(
        !log_lines(&seed).iter().any(|l| l.contains("cannot join")),
        "the seed warned about a join it never tried"
    );
}

#[test]
fn a_restarted_survivor_still_counts_the_dead_node_it_knew() {
    let (dir, key, mut agents) = three_known("known");

    // n3 crashes: the survivors list it down (not gone) and keep it in their known members.
    agents[2].kill9();
    for a in &agents[..2] {
        wait_status(a, "n3", "down");
        wait_quorum(a, (3, 2, true));
        assert_eq!(
            known_members_file(a).unwrap(),
            ["n1", "n2", "n3"],
            "{} no longer keeps the dead n3",
            a.name
        );
    }

    // n2 crashes too and restarts on its data dir, on a new port and with no seed: it hears
    // from nobody, yet counts the cluster it knew, so it knows it is a minority.
    agents[1].kill9();
    agents[1] = Agent::start(AgentSpec::new("n2", &key, &dir.0));
    let restarted = &agents[1];
    wait_quorum(restarted, (3, 1, false));
    let listed = node_list_text(restarted);
    assert!(
        listed.contains("quorum as n2 sees it: NO MAJORITY: sees 1 of 3 members"),
        "{listed}"
    );
    assert_eq!(known_members_file(restarted).unwrap(), ["n1", "n2", "n3"]);
}

#[test]
fn forget_removes_a_dead_node_from_every_agents_known_members() {
    let dir = TempDir::new("forget");
    let key = keygen(&dir.0, "cluster.key");
    let mut agents = start_cluster(3, &dir, &key);
    wait_all_alive(&agents.iter().collect::<Vec<_>>(), 3);
    agents[2].kill9();
    for a in &agents[..2] {
        wait_status(a, "n3", "down");
        wait_known_members_file(a, &["n1", "n2", "n3"]);
    }

    // A node that is alive is refused, and stays known.
    let refused = agents[0].cli(&["node", "forget", "n2"]);
    assert!(!refused.status.success(), "forgot a live node: {refused:?}");
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(why.contains("node n2 is alive"), "{why}");
    assert!(why.contains("409 Conflict"), "{why}");
    assert_eq!(known_members_file(&agents[0]).unwrap(), ["n1", "n2", "n3"]);
    // A name no agent knows is refused as unknown, not as alive.
    let unknown = agents[0].cli(&["node", "forget", "n9"]);
    assert!(!unknown.status.success(), "forgot n9: {unknown:?}");
    let why = String::from_utf8_lossy(&unknown.stderr);
    assert!(why.contains("404 Not Found"), "{why}");
    assert!(why.contains("n9"), "{why}");

    // Forgetting the dead n3 through n1 reaches n2 too: n3 no longer counts anywhere.
    let forgot = agents[0].cli(&["node", "forget", "n3"]);
    assert!(forgot.status.success(), "{forgot:?}");
    let said = String::from_utf8_lossy(&forgot.stdout);
    assert!(said.contains("forgot n3"), "{said}");
    for a in &agents[..2] {
        wait_known_members_file(a, &["n1", "n2"]);
        wait_quorum(a, (2, 2, true));
        // Nor is it listed as a member that is down: the operator said it is gone.
        wait_unlisted(a, "n3");
        assert_eq!(a.nodes().unwrap().len(), 2, "{}", a.name);
    }

    // Back under its name (a new generation), n3 is listed alive again and counts again.
    agents[2] = Agent::start(AgentSpec {
        join: Some(agents[0].gossip),
        ..AgentSpec::new("n3", &key, &dir.0)
    });
    for a in &agents {
        wait_status(a, "n3", "alive");
        wait_quorum(a, (3, 3, true));
    }
    for a in &agents[..2] {
        wait_known_members_file(a, &["n1", "n2", "n3"]);
    }
}

#[test]
fn forgetting_the_dead_gives_a_lone_survivor_its_majority_back() {
    let dir = TempDir::new("forget-majority");
    let key = keygen(&dir.0, "cluster.key");
    let mut agents = start_cluster(3, &dir, &key);
    wait_all_alive(&agents.iter().collect::<Vec<_>>(), 3);
    agents[1].kill9();
    agents[2].kill9();
    let survivor = &agents[0];
    wait_status(survivor, "n2", "down");
    wait_status(survivor, "n3", "down");
    wait_quorum(survivor, (3, 1, false));
    let listed = node_list_text(survivor);
    assert!(
        listed.contains("NO MAJORITY: sees 1 of 3 members"),
        "{listed}"
    );

    // Forget works without a majority: the operator's word that n2 and n3 are gone for good.
    let forgot = survivor.cli(&["node", "forget", "n2", "n3"]);
    assert!(forgot.status.success(), "{forgot:?}");
    wait_quorum(survivor, (1, 1, true));
    wait_known_members_file(survivor, &["n1"]);
    for name in ["n2", "n3"] {
        wait_unlisted(survivor, name);
    }
    let listed = node_list_text(survivor);
    assert!(
        listed.contains("quorum as n1 sees it: majority (sees 1 of 1 members)"),
        "{listed}"
    );
    assert!(listed.contains("1 nodes, 1 alive"), "{listed}");
}

/// The events of `GET /v1/events?follow=false` on `agent` of `topic` and `kind`.
fn events_of(agent: &Agent, topic: &str, kind: &str) -> Vec<Value> {
    let Ok(answer) = http_request(agent.http, "GET", "/v1/events?follow=false", None, DEADLINE)
    else {
        return Vec::new();
    };
    answer
        .body
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
        .filter(|e| e["topic"] == topic && e["type"] == kind)
        .collect()
}

/// A survivor that was down while the operator forgot a node hears the forget when it comes
/// back: it no longer counts nor lists the node, though its known-members file still named
/// it. (The forget used to go out once, to the members alive at that moment; this survivor
/// kept counting the node for good.) Both agents record a `Node` `Forgotten` event, which
/// is what the web UI re-reads its node list on.
#[test]
fn a_survivor_down_during_a_forget_hears_it_when_it_comes_back() {
    let (dir, key, mut agents) = three_known("forget-later");
    agents[2].kill9();
    wait_status(&agents[1], "n3", "down");
    agents[1].kill9();
    wait_status(&agents[0], "n2", "down");
    let forgot = agents[0].cli(&["node", "forget", "n3"]);
    assert!(forgot.status.success(), "{forgot:?}");
    // 1 of 2: whether that is a majority is the tie-break's call, not this test's.
    wait_for(DEADLINE, "n1 counts 2 known members", || {
        let (known, reachable, _) = quorum_of(&agents[0])?;
        (known == 2 && reachable == 1).then_some(())
    });
    wait_for(DEADLINE, "n1 records that n3 was forgotten", || {
        let seen = events_of(&agents[0], "Node", "Forgotten");
        seen.iter()
            .any(|e| e["payload"]["node"] == "n3")
            .then_some(())
    });

    // n2 comes back on its data dir, which still names n3.
    agents[1] = Agent::start(AgentSpec {
        join: Some(agents[0].gossip),
        ..AgentSpec::new("n2", &key, &dir.0)
    });
    let back = &agents[1];
    wait_quorum(back, (2, 2, true));
    wait_known_members_file(back, &["n1", "n2"]);
    wait_unlisted(back, "n3");
    wait_quorum(&agents[0], (2, 2, true));
    let seen = events_of(back, "Node", "Forgotten");
    assert!(
        seen.iter().any(|e| e["payload"]["node"] == "n3"),
        "n2 recorded no Forgotten event for n3: {seen:?}"
    );
}

/// A member that left is let go of on every agent `--member-reap-after-s` later: no longer
/// listed (`left` before that), counted in no metric, a `Node` `Reaped` event on each; and it
/// may come back under its name, heard as a new generation like any restart.
#[test]
fn a_member_that_left_is_let_go_of_on_every_agent_and_may_come_back() {
    let dir = TempDir::new("reap");
    let key = keygen(&dir.0, "cluster.key");
    let reap = || vec!["--member-reap-after-s".to_string(), "3".to_string()];
    let spec = |name, join| AgentSpec {
        join,
        extra: reap(),
        ..AgentSpec::new(name, &key, &dir.0)
    };
    let mut agents = vec![Agent::start(spec("n1", None))];
    let seed = Some(agents[0].gossip);
    agents.push(Agent::start(spec("n2", seed)));
    agents.push(Agent::start(spec("n3", seed)));
    wait_all_alive(&agents.iter().collect::<Vec<_>>(), 3);

    let stopped = agents[2].stop().expect("n3 was running");
    assert!(stopped.success(), "n3 did not stop cleanly: {stopped:?}");
    for a in &agents[..2] {
        wait_status(a, "n3", "left");
    }
    for a in &agents[..2] {
        wait_unlisted(a, "n3");
        assert_eq!(members_metric(a, "left"), Some(0), "{}", a.name);
        wait_for(DEADLINE, &format!("{} records n3 reaped", a.name), || {
            events_of(a, "Node", "Reaped")
                .iter()
                .any(|e| e["payload"]["node"] == "n3")
                .then_some(())
        });
    }

    agents[2] = Agent::start(spec("n3", seed));
    wait_all_alive(&agents.iter().collect::<Vec<_>>(), 3);
}

/// A clean stop is no fault: the last node of a cluster to leave sees nobody after its own
/// leave, and does not warn of it (it logged `WARN no majority` before).
#[test]
fn a_lone_agent_that_stops_cleanly_does_not_warn_of_no_majority() {
    let dir = TempDir::new("lone-leave");
    let key = keygen(&dir.0, "cluster.key");
    let mut agent = Agent::start(AgentSpec::new("n1", &key, &dir.0));
    wait_quorum(&agent, (1, 1, true));
    let stopped = agent.stop().expect("n1 was running");
    assert!(stopped.success(), "n1 did not stop cleanly: {stopped:?}");
    let lines = log_lines(&agent);
    assert!(
        lines.iter().any(|l| l.contains("left the cluster")),
        "n1's log does not show its leave: {lines:#?}"
    );
    let loud: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("no majority") && (l.contains(" WARN ") || l.contains(" ERROR ")))
        .collect();
    assert!(loud.is_empty(), "a clean stop logged {loud:#?}");
}

/// An agent bound to every address (`0.0.0.0`) has no address peers could send to unless it
/// is told one: it refuses to start and says to set `--advertise` (it advertised `0.0.0.0`
/// before, and so did its QUIC address, which a peer dials on its own host).
#[test]
fn an_agent_bound_to_every_address_needs_an_advertised_one() {
    let dir = TempDir::new("bind-any");
    let key = keygen(&dir.0, "cluster.key");
    let out = run_in_within(
        &dir.0,
        &[
            "agent",
            "--name",
            "n1",
            "--bind",
            "0.0.0.0:0",
            "--http",
            "127.0.0.1:0",
            "--dns",
            "off",
            "--cluster-key-file",
            key.to_str().unwrap(),
        ],
        Duration::from_secs(20),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the agent ran: {err}");
    assert!(err.contains("set --advertise"), "{err}");
}

/// README: `--cpu` and `--memory` default to what the machine has (every core, `MemTotal`),
/// and `--disk` to the free space under the data dir.
#[test]
fn an_agent_given_no_resources_offers_what_the_machine_has() {
    let dir = TempDir::new("machine");
    let key = keygen(&dir.0, "cluster.key");
    let agent = Agent::start(AgentSpec {
        machine_resources: true,
        ..AgentSpec::new("n1", &key, &dir.0)
    });
    let resources = wait_for(DEADLINE, "n1 lists its own resources", || {
        let nodes = agent.nodes()?;
        let r = status_of(&nodes, "n1")?["resources"]["capacity"].clone();
        (!r.is_null()).then_some(r)
    });
    let cores = std::thread::available_parallelism().unwrap().get() as u64;
    assert_eq!(resources["cpu_millicores"], cores * 1000, "{resources}");
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("MemTotal in /proc/meminfo");
    assert_eq!(resources["memory_mib"], kib / 1024, "{resources}");
    assert!(
        resources["disk_mib"].as_u64().is_some_and(|d| d > 0),
        "{resources}"
    );
}
