//! `shoal dev`: a local three-node cluster on loopback with a throwaway key, like
//! `nomad agent -dev`.
//!
//! Everything lives in `DEV_ROOT/PID/` ([`super::local::dev_root`]: `$XDG_RUNTIME_DIR/shoal-dev`
//! or `/tmp/shoal-dev-UID`, mode 0700), removed on exit; the three agents share one API token
//! in `DEV_ROOT/PID/http.token`, and the CLI on this machine finds it through their
//! `addresses.json`, so `shoal job run web.toml` works with no flags.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use shoal_node::agent::{self, AgentConfig, RunningAgent, TaskSettings};
use shoal_node::api_auth::create_token_file;
use shoal_node::api_server::ApiConfig;
use shoal_node::host_ports::PortSettings;
use shoal_node::keys::ClusterKey;
use shoal_node::watchdog::WatchdogConfig;

use super::local;

/// Flags of `shoal dev`.
#[derive(Debug, Args)]
pub struct DevArgs {
    /// How many nodes to run.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=16))]
    pub nodes: u16,
    /// First HTTP port; node i listens on port + i (any free port if taken; 0: all OS-chosen).
    #[arg(long, default_value_t = 4646)]
    pub http_port: u16,
    /// First gossip port; node i listens on port + i (any free port if taken; 0: all OS-chosen).
    #[arg(long, default_value_t = 7946)]
    pub gossip_port: u16,
    /// First DNS port (UDP and TCP); node i answers on port + i (any free port if taken; 0: all
    /// OS-chosen).
    #[arg(long, default_value_t = 8600)]
    pub dns_port: u16,
}

/// Runs the dev cluster until Ctrl-C.
pub async fn run(args: DevArgs) -> anyhow::Result<ExitCode> {
    super::init_tracing("warn,shoal_node=info");
    let key = ClusterKey::generate();
    let dir = cluster_dir()?;
    let token_file = dir.join("http.token");
    create_token_file(&token_file)?;
    let mut agents: Vec<RunningAgent> = Vec::new();
    let mut seed: Option<SocketAddr> = None;
    for i in 0..args.nodes {
        let config = AgentConfig {
            name: format!("dev-{}", i + 1),
            bind: free_udp(port(args.gossip_port, i)),
            advertise: None,
            http: free_tcp(port(args.http_port, i)),
            quic: None,
            join: seed.iter().map(ToString::to_string).collect(),
            cluster_key: key.clone(),
            data_dir: dir.join(format!("dev-{}", i + 1)),
            cpu_millicores: None,
            memory_mib: None,
            disk_mib: None,
            attributes: BTreeMap::from([("rack".to_string(), format!("r{}", i % 2 + 1))]),
            api: ApiConfig {
                token_file: Some(token_file.clone()),
                ..ApiConfig::default()
            },
            gossip: shoal_gossip::Config::default(),
            tasks: TaskSettings {
                watchdog: Some(WatchdogConfig::this_binary(Duration::from_secs(10))?),
                ports: PortSettings {
                    range: task_ports(i, args.nodes),
                    ..PortSettings::default()
                },
                ..TaskSettings::default()
            },
            dns: shoal_node::dns::DnsSettings {
                addr: Some(free_dns(port(args.dns_port, i))),
                ttl: 0,
            },
            events_kept: std::num::NonZeroUsize::new(shoal_node::events::RING_EVENTS)
                .unwrap_or(std::num::NonZeroUsize::MIN),
        };
        let running = match agent::start(config.clone()).await {
            // A port found free a moment ago was taken since (a second `shoal dev` starting
            // beside this one, say): this node takes OS-chosen ports instead, as it would have.
            Err(e) if addr_in_use(&e) => {
                let mut config = config;
                config.bind.set_port(0);
                config.http.set_port(0);
                if let Some(dns) = config.dns.addr.as_mut() {
                    dns.set_port(0);
                }
                agent::start(config).await?
            }
            started => started?,
        };
        seed.get_or_insert(running.id.addr);
        agents.push(running);
    }
    print_banner(&agents, &key, &token_file);
    super::stop_signal().await;
    println!("\nstopping the dev cluster…");
    for a in agents {
        a.shutdown().await;
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(ExitCode::SUCCESS)
}

/// `DEV_ROOT/PID`, fresh; `DEV_ROOT` is created private, and refused if another user owns it
/// or may write to it (someone could otherwise read the dev token or plant files).
fn cluster_dir() -> anyhow::Result<PathBuf> {
    let root = local::dev_root();
    // Run as root, the agents run tasks as `nobody`, which must be able to enter (not list) the
    // way to its task directories: search permission for others, nothing else.
    let mode = if local::uid() == 0 { 0o711 } else { 0o700 };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(&root)
        .with_context(|| format!("cannot create {}", root.display()))?;
    let meta = std::fs::symlink_metadata(&root)
        .with_context(|| format!("cannot inspect {}", root.display()))?;
    if !meta.is_dir() || meta.uid() != local::uid() || meta.permissions().mode() & 0o066 != 0 {
        bail!(
            "{} must be a directory of this user that no one else may read or write (it holds \
             the dev cluster's API token); remove it or set XDG_RUNTIME_DIR",
            root.display()
        );
    }
    remove_stale(&root);
    let dir = root.join(std::process::id().to_string());
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::DirBuilder::new()
        .mode(mode)
        .create(&dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

/// Removes the directories of `shoal dev` processes that no longer run (killed with -9).
fn remove_stale(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.take(1024).flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn print_banner(agents: &[RunningAgent], key: &ClusterKey, token_file: &Path) {
    println!(
        "Shoal dev cluster: {} nodes on loopback, throwaway cluster {}\n",
        agents.len(),
        key.cluster_label()
    );
    for a in agents {
        let dns = a.dns_addr.map_or("off".to_string(), |d| d.to_string());
        println!(
            "  {:<7} api {:<23} gossip {:<16} quic {:<16} dns {dns}",
            a.id.name, a.http_url, a.id.addr, a.quic_addr
        );
    }
    let first = agents
        .first()
        .map_or("http://127.0.0.1:4646".to_string(), |a| a.http_url.clone());
    let addr = if first == "http://127.0.0.1:4646" {
        String::new()
    } else {
        format!(" --addr {first}")
    };
    let token = token_file.display();
    println!("\nEvery request that changes something needs the API token, kept in {token}");
    println!("(the shoal CLI on this machine finds it by itself). Try:");
    println!("  shoal node list{addr}");
    println!("  shoal node status dev-2{addr}");
    println!("  shoal job run examples/web.toml{addr}      # 6 copies of `sleep`, spread");
    println!("  shoal job status web{addr}");
    // Discovery needs a service with a port: `web` has none.
    println!("  shoal job run examples/http.toml{addr}     # python3's web server, checked");
    println!("  shoal service show http{addr}");
    if let Some(dns) = agents.first().and_then(|a| a.dns_addr) {
        println!(
            "  dig @{} -p {} http.service.shoal SRV",
            dns.ip(),
            dns.port()
        );
    }
    println!("  curl -s {first}/v1/nodes");
    println!("  curl -s -X DELETE -H \"Authorization: Bearer $(cat {token})\" {first}/v1/jobs/web");
    println!("\nCtrl-C stops the cluster.");
}

/// Node `i`'s port from the first `port`; 0 stays 0 (OS-chosen).
fn port(first: u16, i: u16) -> u16 {
    if first == 0 {
        0
    } else {
        first.saturating_add(i)
    }
}

/// Node `i`'s share of the default task port range, 20000–32000: the dev nodes share one
/// host, and each hands out ports without knowing the others' (a port its host scan has not
/// seen yet), so with the whole range each, two tasks on two nodes could be given the same
/// port and the second would fail to bind it. Disjoint shares make that impossible.
fn task_ports(i: u16, nodes: u16) -> std::ops::RangeInclusive<u16> {
    let (low, high) = (
        *shoal_scheduler::DEFAULT_PORT_RANGE.start(),
        *shoal_scheduler::DEFAULT_PORT_RANGE.end(),
    );
    let share = (high - low + 1) / nodes.max(1);
    let start = low + i * share;
    start..=start + share - 1
}

/// Whether starting an agent failed on an address in use.
fn addr_in_use(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::AddrInUse)
    })
}

fn free_udp(port: u16) -> SocketAddr {
    let want = SocketAddr::from(([127, 0, 0, 1], port));
    match std::net::UdpSocket::bind(want) {
        Ok(_) => want,
        Err(_) => SocketAddr::from(([127, 0, 0, 1], 0)),
    }
}

/// `port` when it is free on both UDP and TCP, else 0 (one OS-chosen port for both).
fn free_dns(port: u16) -> SocketAddr {
    let want = SocketAddr::from(([127, 0, 0, 1], port));
    match shoal_node::dns::bind(want) {
        Ok(_) => want,
        Err(_) => SocketAddr::from(([127, 0, 0, 1], 0)),
    }
}

fn free_tcp(port: u16) -> SocketAddr {
    let want = SocketAddr::from(([127, 0, 0, 1], port));
    match std::net::TcpListener::bind(want) {
        Ok(_) => want,
        Err(_) => SocketAddr::from(([127, 0, 0, 1], 0)),
    }
}

#[cfg(test)]
mod tests {
    use super::{addr_in_use, task_ports};

    #[test]
    fn a_port_taken_between_the_probe_and_the_bind_is_told_apart() {
        let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let at = held.local_addr().unwrap();
        // The agent's own errors: a bind with its context, and the DNS sockets' pair.
        let http = std::net::TcpListener::bind(at)
            .map_err(|e| anyhow::Error::new(e).context(format!("cannot bind {at}")))
            .unwrap_err();
        assert!(addr_in_use(&http), "{http:#}");
        let dns = shoal_node::dns::bind(at).map(|_| ()).unwrap_err();
        assert!(addr_in_use(&dns), "{dns:#}");
        let other = anyhow::anyhow!("cannot read the cluster key");
        assert!(!addr_in_use(&other));
    }

    #[test]
    fn dev_nodes_get_disjoint_task_ports_inside_the_default_range() {
        for nodes in 1..=16u16 {
            let ranges: Vec<_> = (0..nodes).map(|i| task_ports(i, nodes)).collect();
            for (i, r) in ranges.iter().enumerate() {
                assert!(r.start() <= r.end() && *r.start() >= 20000 && *r.end() <= 32000);
                assert!(r.end() - r.start() + 1 >= 750, "{nodes} nodes: {r:?}");
                if let Some(next) = ranges.get(i + 1) {
                    assert!(r.end() < next.start(), "{nodes} nodes: {r:?} and {next:?}");
                }
            }
        }
    }
}
