//! Membership with real agents: join through one seed, failure detection, restart with a new
//! generation, a foreign cluster key, and garbage on the gossip port.

mod common;

use std::time::Duration;

use common::{Agent, AgentSpec, TempDir, keygen, status_of, wait_for};
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
