//! The hosts of one chaos run: a network namespace per node, wired to a bridge in a hub
//! namespace the run creates, and the faults as packet filters inside the nodes' namespaces.
//!
//! ```text
//!   <run>-hub:  br0 ── v0 ─┐  v1 ─┐  …
//!   <run>-n1:   eth0 10.77.0.11/24 ┘
//!   <run>-n2:   eth0 10.77.0.12/24 ┘
//! ```
//!
//! Every run has its own namespaces, so runs in parallel (nextest starts one process per test)
//! use the same addresses without meeting. Nothing is created in the host's namespace: veth
//! pairs are made inside the hub with their peer moved straight into the node's namespace,
//! so no interface name can collide either.
//!
//! Teardown ([`Drop`]) kills every process found in the nodes' namespaces (by pid, read from
//! `/proc/PID/ns/net`), then deletes the namespaces. A run whose test process died without
//! unwinding (SIGKILL by a timeout) leaves namespaces named after its dead pid; the next run
//! sweeps those first ([`sweep_stale`]).
//!
//! Why namespaces rather than agents on 127.0.0.x with `iptables` INPUT rules on the host:
//! rules on the host's loopback are shared by every test and every engineer on the machine,
//! one forgotten rule breaks them all, and loopback traffic between two 127.0.0.x addresses
//! never leaves one network stack, so a cut is only as good as the rule set. A namespace is a
//! separate stack; its rules die with it. (`tc netem` does not work on this kernel, so loss is
//! all-or-nothing: a DROP rule.)

use std::net::Ipv4Addr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The prefix of every namespace this suite creates: `shc<test pid>x<n>-…`.
const PREFIX: &str = "shc";

/// One node's namespace.
#[derive(Debug, Clone)]
pub struct NodeNs {
    /// The namespace name (`ip netns`).
    pub name: String,
    /// The node's address on the bridge.
    pub addr: Ipv4Addr,
    /// The namespace's inode: what `/proc/PID/ns/net` of a process inside names.
    pub inode: u64,
}

impl NodeNs {
    /// The namespace file, for `nsenter --net=` and `setns`.
    pub fn path(&self) -> PathBuf {
        netns_path(&self.name)
    }
}

/// The namespaces of one run.
#[derive(Debug)]
pub struct Net {
    /// What makes this run's names unique on the host: `<test pid>x<n>`.
    pub run: String,
    hub: String,
    /// One per node, in node order.
    pub nodes: Vec<NodeNs>,
}

impl Net {
    /// Creates the hub, its bridge and `n` node namespaces with addresses 10.77.0.11, .12, ….
    pub fn create(n: usize) -> Net {
        assert!(n <= 200, "one /24 holds at most 200 nodes here");
        sweep_stale();
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let id = format!(
            "{}x{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let run = format!("{PREFIX}{id}");
        let hub = format!("{run}-hub");
        // From here on, a failure unwinds through Drop, which deletes what exists.
        let mut net = Net {
            run: id,
            hub: hub.clone(),
            nodes: Vec::new(),
        };
        ip(&["netns", "add", &hub]);
        ip(&["-n", &hub, "link", "set", "lo", "up"]);
        ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &hub, "link", "set", "br0", "up"]);
        for i in 0..n {
            let name = format!("{run}-n{}", i + 1);
            ip(&["netns", "add", &name]);
            let inode = std::fs::metadata(netns_path(&name))
                .unwrap_or_else(|e| panic!("namespace {name} has no file: {e}"))
                .ino();
            let addr = Ipv4Addr::new(10, 77, 0, 11 + i as u8);
            net.nodes.push(NodeNs {
                name: name.clone(),
                addr,
                inode,
            });
            let port = format!("v{i}");
            ip(&[
                "-n", &hub, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
                &name,
            ]);
            ip(&["-n", &hub, "link", "set", &port, "master", "br0"]);
            ip(&["-n", &hub, "link", "set", &port, "up"]);
            ip(&["-n", &name, "link", "set", "lo", "up"]);
            ip(&[
                "-n",
                &name,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                "eth0",
            ]);
            ip(&["-n", &name, "link", "set", "eth0", "up"]);
        }
        net
    }

    /// Node `at` no longer receives anything from node `from` (`from` still hears `at`).
    pub fn drop_from(&self, at: usize, from: usize) {
        let source = self.nodes[from].addr.to_string();
        iptables(
            &self.nodes[at],
            &["-A", "INPUT", "-s", &source, "-j", "DROP"],
        );
    }

    /// Cuts every link between nodes of different sides, both ways.
    pub fn partition(&self, sides: &[&[usize]]) {
        for (a, side) in sides.iter().enumerate() {
            for (b, other) in sides.iter().enumerate() {
                if a == b {
                    continue;
                }
                for &at in *side {
                    for &from in *other {
                        self.drop_from(at, from);
                    }
                }
            }
        }
    }

    /// Removes every rule: every node hears every node again.
    pub fn heal(&self) {
        for node in &self.nodes {
            iptables(node, &["-F", "INPUT"]);
        }
    }

    /// SIGKILLs every process in node `i`'s namespace (the agent, its tasks, anything they
    /// started) until none is left, for at most 10 s. Returns how many were signalled.
    pub fn kill_everything_in(&self, i: usize) -> usize {
        kill_all_in(&[self.nodes[i].inode])
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        let inodes: Vec<u64> = self.nodes.iter().map(|n| n.inode).collect();
        kill_all_in(&inodes);
        for node in &self.nodes {
            let _ = quiet_ip(&["netns", "del", &node.name]);
        }
        let _ = quiet_ip(&["netns", "del", &self.hub]);
    }
}

/// `/run/netns/NAME`, where `ip netns add` mounts the namespace.
pub fn netns_path(name: &str) -> PathBuf {
    Path::new("/run/netns").join(name)
}

/// The network namespace inode of `pid`, from `/proc/PID/ns/net` (`net:[4026532…]`).
pub fn netns_of(pid: i32) -> Option<u64> {
    let link = std::fs::read_link(format!("/proc/{pid}/ns/net")).ok()?;
    let text = link.to_str()?;
    text.strip_prefix("net:[")?.strip_suffix(']')?.parse().ok()
}

/// Every pid in `/proc`.
pub fn all_pids() -> Vec<i32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

fn pids_in_namespaces(inodes: &[u64]) -> Vec<i32> {
    all_pids()
        .into_iter()
        .filter(|&pid| netns_of(pid).is_some_and(|ino| inodes.contains(&ino)))
        .collect()
}

fn kill_all_in(inodes: &[u64]) -> usize {
    let mut signalled = std::collections::BTreeSet::new();
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        // A zombie stays listed until its parent reaps it; it holds nothing, so it is done.
        let left: Vec<i32> = pids_in_namespaces(inodes)
            .into_iter()
            .filter(|&pid| !is_zombie(pid))
            .collect();
        if left.is_empty() || Instant::now() > end {
            return signalled.len();
        }
        for pid in left {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            signalled.insert(pid);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether `pid` has exited and waits to be reaped (state `Z` in `/proc/PID/stat`).
pub fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
    })
}

/// Deletes the namespaces of runs whose test process is gone (killed before it could unwind),
/// killing what still runs in them first.
pub fn sweep_stale() {
    let Ok(entries) = std::fs::read_dir("/run/netns") else {
        return;
    };
    let mut stale: Vec<String> = entries
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|name| {
            let pid = name
                .strip_prefix(PREFIX)
                .and_then(|rest| rest.split_once('x'))
                .and_then(|(pid, _)| pid.parse::<u32>().ok());
            pid.is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
        })
        .collect();
    stale.sort();
    let inodes: Vec<u64> = stale
        .iter()
        .filter_map(|n| std::fs::metadata(netns_path(n)).ok().map(|m| m.ino()))
        .collect();
    kill_all_in(&inodes);
    for name in stale {
        let _ = quiet_ip(&["netns", "del", &name]);
    }
}

/// Runs `ip ARGS`, panicking with its stderr when it fails.
fn ip(args: &[&str]) {
    if let Err(e) = quiet_ip(args) {
        panic!("{e}");
    }
}

fn quiet_ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run `ip` (install iproute2): {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Runs `iptables -w ARGS` inside `node`'s namespace, panicking with its stderr when it fails.
fn iptables(node: &NodeNs, args: &[&str]) {
    let out = Command::new("nsenter")
        .arg(format!("--net={}", node.path().display()))
        .args(["iptables", "-w", "5"])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run nsenter/iptables (install iptables): {e}"));
    assert!(
        out.status.success(),
        "`iptables {}` in {} failed: {}",
        args.join(" "),
        node.name,
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// Checks that this host can run the suite (root, `ip`, `iptables`, `nsenter`), with an error
/// that says what is missing. The suite fails rather than skips: a skipped chaos run must not
/// look like a passing one.
pub fn check_prerequisites() -> Result<(), String> {
    if nix::unistd::geteuid().as_raw() != 0 {
        return Err("the chaos suite creates network namespaces and needs root \
             (CI runs as root; locally: `sudo -E cargo nextest run --test chaos`)"
            .into());
    }
    for (tool, version, package) in [
        ("ip", "-V", "iproute2"),
        ("iptables", "--version", "iptables"),
        ("nsenter", "--version", "util-linux"),
    ] {
        let found = Command::new(tool)
            .arg(version)
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            return Err(format!("`{tool}` is missing: install {package}"));
        }
    }
    Ok(())
}
