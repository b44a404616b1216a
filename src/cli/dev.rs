//! `shoal dev`: a local three-node cluster on loopback with a throwaway key, like
//! `nomad agent -dev`. Everything lives in a temporary directory removed on exit.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use shoal_node::agent::{self, AgentConfig, RunningAgent, TaskSettings};
use shoal_node::keys::ClusterKey;
use shoal_node::watchdog::WatchdogConfig;

/// Flags of `shoal dev`.
#[derive(Debug, Args)]
pub struct DevArgs {
    /// How many nodes to run.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=16))]
    pub nodes: u16,
    /// First HTTP port; node i listens on port + i (any free port if taken).
    #[arg(long, default_value_t = 4646)]
    pub http_port: u16,
    /// First gossip port; node i listens on port + i (any free port if taken).
    #[arg(long, default_value_t = 7946)]
    pub gossip_port: u16,
}

/// Runs the dev cluster until Ctrl-C.
pub async fn run(args: DevArgs) -> anyhow::Result<ExitCode> {
    super::init_tracing("warn,shoal_node=info");
    let key = ClusterKey::generate();
    let dir = std::env::temp_dir().join(format!("shoal-dev-{}", std::process::id()));
    let mut agents: Vec<RunningAgent> = Vec::new();
    let mut seed: Option<SocketAddr> = None;
    for i in 0..args.nodes {
        let config = AgentConfig {
            name: format!("dev-{}", i + 1),
            bind: free_udp(args.gossip_port.saturating_add(i)),
            http: free_tcp(args.http_port.saturating_add(i)),
            quic: None,
            join: seed.iter().map(ToString::to_string).collect(),
            cluster_key: key.clone(),
            data_dir: dir.join(format!("dev-{}", i + 1)),
            cpu_millicores: None,
            memory_mib: None,
            disk_mib: None,
            attributes: BTreeMap::from([("rack".to_string(), format!("r{}", i % 2 + 1))]),
            http_token: None,
            gossip: shoal_gossip::Config::default(),
            tasks: TaskSettings {
                watchdog: Some(WatchdogConfig::this_binary(Duration::from_secs(10))?),
                ..TaskSettings::default()
            },
        };
        let running = agent::start(config).await?;
        seed.get_or_insert(running.id.addr);
        agents.push(running);
    }
    print_banner(&agents, &key);
    super::stop_signal().await;
    println!("\nstopping the dev cluster…");
    for a in agents {
        a.shutdown().await;
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(ExitCode::SUCCESS)
}

fn print_banner(agents: &[RunningAgent], key: &ClusterKey) {
    println!(
        "Shoal dev cluster: {} nodes on loopback, throwaway cluster {}\n",
        agents.len(),
        key.cluster_label()
    );
    for a in agents {
        println!(
            "  {:<7} api http://{:<16} gossip {:<16} quic {}",
            a.id.name, a.http_addr, a.id.addr, a.quic_addr
        );
    }
    let first = agents
        .first()
        .map_or("127.0.0.1:4646".to_string(), |a| a.http_addr.to_string());
    println!("\nTry:");
    println!("  shoal node list --addr http://{first}");
    println!("  shoal node status dev-2 --addr http://{first}");
    println!("  curl -s http://{first}/v1/nodes");
    println!("  shoal job run examples/web.toml --addr http://{first}");
    println!("  shoal job status web --addr http://{first}");
    println!("\nCtrl-C stops the cluster.");
}

fn free_udp(port: u16) -> SocketAddr {
    let want = SocketAddr::from(([127, 0, 0, 1], port));
    match std::net::UdpSocket::bind(want) {
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
