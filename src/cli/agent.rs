//! `shoal agent`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroUsize;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use shoal_node::agent::{self, AgentConfig, TaskSettings};
use shoal_node::api_server::ApiConfig;
use shoal_node::api_tls::ServerCertificate;
use shoal_node::host_ports::{self, PortSettings};
use shoal_node::keys::ClusterKey;
use shoal_node::watchdog::WatchdogConfig;

/// Flags of `shoal agent`.
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// Unique node name (default: the host name).
    #[arg(long)]
    pub name: Option<String>,
    /// Gossip (UDP) address.
    #[arg(long, default_value = "127.0.0.1:7946")]
    pub bind: SocketAddr,
    /// The gossip address other nodes reach this one at, when it differs from --bind (a
    /// proxy or NAT in between; required with --bind 0.0.0.0:PORT). Sealed datagrams name
    /// their destination, so it must be the address peers send to.
    #[arg(long, value_name = "ADDR")]
    pub advertise: Option<SocketAddr>,
    /// HTTP API address.
    #[arg(long, default_value = "127.0.0.1:4646")]
    pub http: SocketAddr,
    /// QUIC (mTLS) address for reliable traffic (default: the gossip IP, any port).
    #[arg(long)]
    pub quic: Option<SocketAddr>,
    /// A seed's gossip address (repeatable); retried with back-off until it answers.
    #[arg(long, value_name = "ADDR")]
    pub join: Vec<String>,
    /// File holding the cluster key (from `shoal keygen`).
    #[arg(long, env = "SHOAL_CLUSTER_KEY_FILE")]
    pub cluster_key_file: PathBuf,
    /// Where this agent keeps its state (default: ./shoal-data/NAME).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// CPU to offer, in millicores (default: every core).
    #[arg(long)]
    pub cpu: Option<u64>,
    /// Memory to offer, in MiB (default: all memory).
    #[arg(long)]
    pub memory: Option<u64>,
    /// Disk to offer, in MiB (default: free space under the data dir).
    #[arg(long)]
    pub disk: Option<u64>,
    /// An attribute `key=value` (repeatable), e.g. `--attr rack=r1`.
    #[arg(long = "attr", value_name = "KEY=VALUE")]
    pub attrs: Vec<String>,
    /// File holding the API token (default: DATA_DIR/http.token, created on first start).
    /// Agents that redirect to each other (task logs) should share one.
    #[arg(long, env = "SHOAL_HTTP_TOKEN_FILE")]
    pub http_token_file: Option<PathBuf>,
    /// The API address other nodes and clients use (default: the --http address; with
    /// 0.0.0.0, the gossip IP).
    #[arg(long, value_name = "ADDR")]
    pub http_advertise: Option<SocketAddr>,
    /// A DNS name this API answers to (repeatable): accepted in Host and Origin, and put in
    /// the certificate the cluster CA issues.
    #[arg(long = "http-name", value_name = "NAME")]
    pub http_names: Vec<String>,
    /// The API's certificate chain (PEM), instead of one issued by the cluster CA; off
    /// loopback only.
    #[arg(long, requires = "http_tls_key")]
    pub http_tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --http-tls-cert.
    #[arg(long, requires = "http_tls_cert")]
    pub http_tls_key: Option<PathBuf>,
    /// The user tasks run as when the agent runs as root (default: nobody). An agent that is
    /// not root runs tasks as itself.
    #[arg(long, value_name = "NAME")]
    pub task_user: Option<String>,
    /// A user a job may choose with `user = "NAME"` (repeatable; root agents only).
    #[arg(long = "allow-task-user", value_name = "NAME")]
    pub allow_task_users: Vec<String>,
    /// Most processes (and threads) per task, where the host has a pids cgroup; 0: unlimited.
    #[arg(long, default_value_t = 4096)]
    pub task_max_pids: u64,
    /// How many task launches (directory, log files, cgroup, spawn) run at once, 1–256
    /// (default: 4 per core, at most 32). Each holds a blocking-pool thread (tokio's pool has
    /// 512, shared with the rest of the agent) and about seven descriptors.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub max_launches: Option<u16>,
    /// How long the watchdog waits without hearing from this agent (crashed, killed, stopped)
    /// before it kills the agent's tasks, in milliseconds.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1000..=3_600_000))]
    pub orphan_grace_ms: u64,
    /// How long a finished job (stopped with nothing left running, or a batch whose every
    /// slot is done) stays listed, with its tasks' logs, before it is purged and its task
    /// directories are removed, in seconds. The node that purges a job uses its own value.
    #[arg(long, default_value_t = 3600, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..=30 * 86_400))]
    pub job_gc_grace_s: u64,
    /// How long after a member left, or went down and was forgotten, this agent lets go of it:
    /// its record, its resource ad, its place in the scheduler's view (`docs/membership.md`,
    /// "Letting go of members gone for good"), in seconds.
    #[arg(long, default_value_t = 86_400, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..=365 * 86_400))]
    pub member_reap_after_s: u64,
    /// How often this agent removes the directories (logs, files) of tasks whose attempts the
    /// cluster dropped: a purged job's, and a crash-looping slot's beyond its last 8 attempts.
    #[arg(long, default_value_t = 60, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub task_gc_interval_s: u64,
    /// Above this share of the data dir's disk in use, the directories (logs) of finished
    /// tasks go, oldest first, even while their jobs are listed; 100: never.
    #[arg(long, default_value_t = shoal_node::task_gc::DEFAULT_DISK_PERCENT, value_name = "PERCENT", value_parser = clap::value_parser!(u8).range(1..=100))]
    pub task_gc_disk_percent: u8,
    /// Each running task's stdout and stderr keep their last this many MiB on disk; older
    /// output is cut away (offsets stay, so `task logs --follow` keeps its place; a file
    /// system that cannot punch holes gets the log emptied instead). 0: unlimited.
    #[arg(long, default_value_t = shoal_node::task_gc::DEFAULT_LOG_CAP_MIB, value_name = "MIB", value_parser = clap::value_parser!(u64).range(0..=1 << 30))]
    pub task_log_max_mib: u64,
    /// The host ports this node hands out as jobs' dynamic ports, `LOW-HIGH`.
    #[arg(long, default_value = "20000-32000", value_name = "LOW-HIGH", value_parser = host_ports::parse_range)]
    pub port_range: RangeInclusive<u16>,
    /// Host ports never given to a task, e.g. `22,8500-8600` (the agent's own ports always
    /// are).
    #[arg(long, value_name = "LIST", value_parser = host_ports::parse_list)]
    pub reserved_ports: Option<BTreeSet<u16>>,
    /// The IP tasks' ports are reached at (SHOAL_IP, SHOAL_ADDR_<NAME>); default: the gossip
    /// address's IP.
    #[arg(long, value_name = "IP")]
    pub service_addr: Option<IpAddr>,
    /// Where to answer DNS for `*.service.shoal.` and `*.node.shoal.` (UDP and TCP), or `off`;
    /// port 0: chosen by the OS (shown in `/v1/agent/self` and `addresses.json`).
    #[arg(long, default_value = shoal_node::dns::DEFAULT_ADDR, value_name = "IP:PORT|off", value_parser = shoal_node::dns::parse_addr)]
    // Spelled out: clap treats a plain `Option` as "flag may be absent", but here absent means
    // the default and `off` is the `None`.
    pub dns: std::option::Option<std::net::SocketAddr>,
    /// The TTL of DNS answers, seconds (0: clients ask again every time).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=86_400))]
    pub dns_ttl: u32,
    /// Events kept in memory for `GET /v1/events` readers that resume with `since` (older
    /// ones are evicted; a reader that asks for them is told how many it missed).
    #[arg(long, default_value_t = shoal_node::events::RING_EVENTS as u64, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub events_kept: u64,
}

/// Runs the agent until SIGINT/SIGTERM, then leaves the cluster cleanly.
pub async fn run(args: AgentArgs) -> anyhow::Result<ExitCode> {
    super::init_tracing("info");
    let config = config_from(args)?;
    let running = agent::start(config).await?;
    let gossip = running.gossip.clone();
    tokio::spawn(release_code_pages());
    tokio::select! {
        () = super::stop_signal() => {
            tracing::info!("stopping: telling the cluster this node leaves");
            running.shutdown().await;
            Ok(ExitCode::SUCCESS)
        }
        conflict = gossip.name_conflict() => {
            tracing::error!("{conflict}");
            running.shutdown().await;
            eprintln!("error: {conflict}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// After the start has settled, and then now and again, gives back the program pages only
/// the start (or a burst of work since) used: an idle agent's resident set is then what it
/// runs (`shoal_node::code_pages`). Only the agent process does this, not agents embedded
/// in tests.
async fn release_code_pages() {
    let mut wait = CODE_PAGES_FIRST_RELEASE;
    loop {
        tokio::time::sleep(wait).await;
        wait = CODE_PAGES_RELEASE_EVERY;
        match shoal_node::code_pages::release() {
            Ok(r) => tracing::debug!(
                mappings = r.mappings,
                resident_kib = r.resident_bytes / 1024,
                "gave back program pages"
            ),
            Err(e) => {
                tracing::info!(error = %e, "cannot give back program pages; not trying again");
                return;
            }
        }
    }
}

/// The first release: the start, the first joins and the store's catch-up are done by then.
const CODE_PAGES_FIRST_RELEASE: Duration = Duration::from_secs(30);
/// Later releases: what a burst of work (a deploy, a drain) faulted in and no longer runs.
const CODE_PAGES_RELEASE_EVERY: Duration = Duration::from_secs(600);

fn config_from(args: AgentArgs) -> anyhow::Result<AgentConfig> {
    let name = match args.name {
        Some(n) => n,
        None => hostname()?,
    };
    let cluster_key = ClusterKey::load(&args.cluster_key_file)?;
    let certificate = match (args.http_tls_cert, args.http_tls_key) {
        (Some(cert), Some(key)) => ServerCertificate::Files { cert, key },
        _ => ServerCertificate::ClusterCa,
    };
    let api = ApiConfig {
        token_file: args.http_token_file,
        advertise: args.http_advertise,
        names: args.http_names,
        certificate,
        ..ApiConfig::default()
    };
    Ok(AgentConfig {
        data_dir: args
            .data_dir
            .unwrap_or_else(|| PathBuf::from("shoal-data").join(&name)),
        name,
        bind: args.bind,
        advertise: args.advertise,
        http: args.http,
        quic: args.quic,
        join: args.join,
        cluster_key,
        cpu_millicores: args.cpu,
        memory_mib: args.memory,
        disk_mib: args.disk,
        attributes: parse_attrs(&args.attrs)?,
        api,
        gossip: shoal_gossip::Config {
            reap_after: Duration::from_secs(args.member_reap_after_s),
            ..shoal_gossip::Config::default()
        },
        tasks: TaskSettings {
            user: args.task_user,
            allowed_users: args.allow_task_users.into_iter().collect(),
            max_pids: args.task_max_pids,
            max_launches: args.max_launches.and_then(|n| NonZeroUsize::new(n.into())),
            watchdog: Some(WatchdogConfig::this_binary(Duration::from_millis(
                args.orphan_grace_ms,
            ))?),
            ports: PortSettings {
                range: args.port_range,
                reserved: args.reserved_ports.unwrap_or_default(),
                service_ip: args.service_addr,
            },
            job_gc_grace: Duration::from_secs(args.job_gc_grace_s),
            task_gc_every: Duration::from_secs(args.task_gc_interval_s),
            task_gc_disk_percent: args.task_gc_disk_percent,
            log_cap_bytes: (args.task_log_max_mib > 0).then_some(args.task_log_max_mib << 20),
        },
        dns: shoal_node::dns::DnsSettings {
            addr: args.dns,
            ttl: args.dns_ttl,
        },
        events_kept: usize::try_from(args.events_kept)
            .ok()
            .and_then(std::num::NonZeroUsize::new)
            .context("--events-kept must be from 1 to 1000000")?,
    })
}

/// Parses `key=value` pairs; a key given twice is an error, not a silent overwrite.
pub fn parse_attrs(attrs: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for a in attrs {
        let Some((k, v)) = a.split_once('=') else {
            bail!("--attr {a:?} must look like key=value");
        };
        let (k, v) = (k.trim(), v.trim());
        if k.is_empty() {
            bail!("--attr {a:?} has an empty key");
        }
        if out.insert(k.to_string(), v.to_string()).is_some() {
            bail!("--attr {k:?} is given twice");
        }
    }
    Ok(out)
}

fn hostname() -> anyhow::Result<String> {
    let text = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .context("no --name given and the host name cannot be read")?;
    name_of_host(&text)
}

/// The node name a host name (as the kernel gives it, with its newline) makes.
fn name_of_host(text: &str) -> anyhow::Result<String> {
    let name = text.trim().to_string();
    agent::validate_name(&name)
        .context("no --name given, and the host name is no node name (give one with --name)")?;
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::name_of_host;

    #[test]
    fn a_host_name_the_agent_cannot_take_is_named_as_the_host_name() {
        assert_eq!(
            name_of_host("web-01.example.com\n").unwrap(),
            "web-01.example.com"
        );
        // The kernel allows 64 bytes; a node name is at most 63.
        let err = format!(
            "{:#}",
            name_of_host(&format!("{}\n", "h".repeat(64))).unwrap_err()
        );
        assert!(
            err.starts_with(
                "no --name given, and the host name is no node name (give one with \
                             --name): invalid node name"
            ),
            "{err}"
        );
    }
}
