//! Starting and stopping one agent: data dir, generation, sockets, the gossip task, the QUIC
//! endpoint and the HTTP API. `shoal agent` runs one; `shoal dev` runs three in one process.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use shoal_gossip::{Membership, NodeId, PortRange, ResourceAd, Resources};
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::api::ApiState;
use crate::api_server::{AgentFacts, ApiConfig, ApiServer};
use crate::backoff::Backoff;
use crate::clock::Clock;
use crate::executor::{Executor, ExecutorConfig};
use crate::gossip_driver::{self, GossipHandle};
use crate::keyring::{self, KeyringParts};
use crate::keys::{ClusterKey, Keyring};
use crate::known_file;
use crate::peers::{Peers, PeersConfig};
use crate::runner::ProcessRunner;
use crate::sched_driver::{self, SchedParts};
use crate::seal::{SealConfig, Sealer};
use crate::store::Store;
use crate::tls::{self, TlsIdentity};
use crate::watchdog::{self, Lease, WatchdogConfig};

/// Everything an agent needs to start.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Unique node name.
    pub name: String,
    /// Gossip (UDP) address.
    pub bind: SocketAddr,
    /// The gossip address other nodes reach this one at, when it is not `bind` (a proxy or
    /// NAT in between). Sealed datagrams name their destination; this node accepts only
    /// those addressed to this address.
    pub advertise: Option<SocketAddr>,
    /// HTTP API address.
    pub http: SocketAddr,
    /// QUIC address; `None` = the gossip IP with an OS-chosen port.
    pub quic: Option<SocketAddr>,
    /// Seeds to join through (`host:port`), retried with back-off.
    pub join: Vec<String>,
    /// The cluster's shared secret. On first start it becomes the key ring
    /// (`DATA_DIR/keyring.json`); afterwards the ring file wins (it may have been rotated).
    pub cluster_key: ClusterKey,
    /// Where this agent keeps its state.
    pub data_dir: PathBuf,
    /// CPU to offer, millicores; `None` = every core of the machine.
    pub cpu_millicores: Option<u64>,
    /// Memory to offer, MiB; `None` = all of the machine's.
    pub memory_mib: Option<u64>,
    /// Disk to offer, MiB; `None` = free space under the data dir.
    pub disk_mib: Option<u64>,
    /// Operator attributes (`rack=r1`).
    pub attributes: BTreeMap<String, String>,
    /// How the API is reached and secured: token, advertised address, names, certificate.
    pub api: ApiConfig,
    /// Membership tunables.
    pub gossip: shoal_gossip::Config,
    /// Who tasks run as, their process limit, and the watchdog.
    pub tasks: TaskSettings,
    /// Where service discovery is answered over DNS (`--dns`, `--dns-ttl`).
    pub dns: crate::dns::DnsSettings,
    /// Events kept for `GET /v1/events` readers that resume (`--events-kept`,
    /// [`crate::events::RING_EVENTS`] by default).
    pub events_kept: std::num::NonZeroUsize,
}

/// How an agent runs tasks: `shoal agent --task-user`, `--allow-task-user`, `--task-max-pids`
/// and `--orphan-grace-ms`.
#[derive(Debug, Clone)]
pub struct TaskSettings {
    /// Who tasks run as when the agent is root and the job names no user; `None`: `nobody`.
    pub user: Option<String>,
    /// Users a job may name in its `user` field (root agents only).
    pub allowed_users: BTreeSet<String>,
    /// Most processes per task (the `pids` controller, where there is one); 0: unlimited.
    pub max_pids: u64,
    /// Launches in flight (`--max-launches`); `None`: the executor's default.
    pub max_launches: Option<NonZeroUsize>,
    /// The watchdog that kills this agent's tasks when it dies; `None`: no watchdog (the tasks
    /// of a crashed agent run until it restarts and reconciles).
    pub watchdog: Option<WatchdogConfig>,
    /// The ports tasks get (`--port-range`, `--reserved-ports`, `--service-addr`).
    pub ports: crate::host_ports::PortSettings,
    /// How long a finished job (stopped with nothing left running, or a batch whose every
    /// slot is done) stays listed, with its tasks' logs, before the job's GC coordinator
    /// purges it (`--job-gc-grace-s`; the scheduler's `gc_grace`).
    pub job_gc_grace: Duration,
    /// How often the directories of tasks whose attempts the tables dropped are removed from
    /// this host (`--task-gc-interval-s`, `crate::task_gc`).
    pub task_gc_every: Duration,
    /// Above this share of the data dir's disk in use, finished tasks' directories go oldest
    /// first even while jobs list them (`--task-gc-disk-percent`; 100: never).
    pub task_gc_disk_percent: u8,
    /// Each running task's stdout and stderr keep at most their last this many bytes on disk
    /// (`--task-log-max-mib`); `None`: unlimited.
    pub log_cap_bytes: Option<u64>,
}

impl Default for TaskSettings {
    fn default() -> Self {
        TaskSettings {
            user: None,
            allowed_users: BTreeSet::new(),
            max_pids: ExecutorConfig::default().task_max_pids,
            max_launches: None,
            watchdog: None,
            ports: crate::host_ports::PortSettings::default(),
            job_gc_grace: shoal_scheduler::SchedulerConfig::default().gc_grace,
            task_gc_every: crate::task_gc::DEFAULT_EVERY,
            task_gc_disk_percent: crate::task_gc::DEFAULT_DISK_PERCENT,
            log_cap_bytes: Some(crate::task_gc::DEFAULT_LOG_CAP_MIB << 20),
        }
    }
}

/// How long a stopping agent waits for task launches under way (`Executor::close_launches`).
const LAUNCH_END_WAIT: Duration = Duration::from_secs(5);

/// A started agent. Dropping it does not stop it; call [`RunningAgent::shutdown`].
#[derive(Debug)]
pub struct RunningAgent {
    /// This incarnation's identity.
    pub id: NodeId,
    /// Where the API listens.
    pub http_addr: SocketAddr,
    /// Where clients and other nodes reach the API (`http://` on loopback, else `https://`).
    pub http_url: String,
    /// The file holding the API token.
    pub http_token_file: PathBuf,
    /// Where QUIC listens.
    pub quic_addr: SocketAddr,
    /// Where DNS is answered (UDP and TCP), unless it is off.
    pub dns_addr: Option<SocketAddr>,
    /// The gossip task.
    pub gossip: GossipHandle,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    endpoint: quinn::Endpoint,
    executor: Executor,
    lease: Option<Lease>,
    events: crate::events::EventLog,
}

impl RunningAgent {
    /// Leaves the cluster and stops every task of this agent.
    pub async fn shutdown(self) {
        // Tasks are stopped first: this node announces that it leaves, so the cluster
        // re-places its work, and a process left running here would run twice.
        let stopped = tokio::time::timeout(
            crate::runner::KILL_GRACE * 2,
            self.executor.shutdown(crate::runner::KILL_GRACE),
        )
        .await
        .is_ok();
        if !stopped {
            tracing::warn!("tasks still run after the stop's grace; the watchdog kills them");
        }
        // No launch may be cut by the process's exit between its spawn and its pid record
        // (the executor's threads are not joined): none is under way after a shutdown that
        // ended, and one under way after a timed-out one gets a few seconds.
        if !self.executor.close_launches(LAUNCH_END_WAIT).await {
            tracing::warn!(
                "a task launch did not end within {LAUNCH_END_WAIT:?}; a process it started \
                 is left to the watchdog's sweep of the task cgroups"
            );
        }
        // Only now, with every task stopped, may the watchdog go.
        if let Some(lease) = self.lease {
            lease.release().await;
        }
        // Following event readers end their streams, so the server's graceful stop does not
        // wait on them.
        self.events.close();
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
        self.endpoint.close(0u32.into(), b"agent stopping");
        let _ = tokio::time::timeout(Duration::from_secs(2), self.endpoint.wait_idle()).await;
    }

    /// Resolves when a shutdown was requested.
    pub fn shutdown_requested(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }
}

/// Starts an agent. Errors name what could not be set up (a busy port, an unwritable dir).
///
/// In four steps: bind every socket, start the membership (gossip), start the scheduler with
/// its peers, executor and store, then serve the API.
pub async fn start(config: AgentConfig) -> anyhow::Result<RunningAgent> {
    validate_name(&config.name)?;
    let clock = Clock::new();
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data dir {}", config.data_dir.display()))?;
    let generation = next_generation(&config.data_dir, clock.now().0)?;
    let ring = load_ring(&config.data_dir, &config.cluster_key)?;
    let (shutdown, shutdown_rx) = watch::channel(false);

    let (socket, bound) = bind(&config, &ring).await?;
    let id = NodeId {
        name: config.name.as_str().into(),
        addr: bound.gossip_addr,
        generation,
    };
    let events = crate::events::EventLog::with_capacity(
        config.name.clone(),
        generation,
        clock,
        config.events_kept.get(),
    );
    let shared = Shared {
        clock,
        events: events.clone(),
        shutdown: shutdown_rx.clone(),
    };
    let (gossip, mut tasks, alone_before) =
        start_gossip(&config, &id, socket, &bound, &ring, &shared).await?;
    let sched =
        start_scheduler(&config, &id, &bound, &ring, &gossip, alone_before, &shared).await?;
    tasks.extend(sched.tasks);
    let dns = match bound.dns {
        Some(sockets) => {
            let info = crate::dns::DnsInfo {
                addr: sockets.local_addr(),
                ttl: config.dns.ttl,
                counters: Arc::default(),
            };
            let handler =
                crate::dns::Handler::new(sched.handle.catalog(), info.ttl, info.counters.clone());
            tasks.push(crate::dns::spawn(sockets, handler, shutdown_rx.clone())?);
            Some(info)
        }
        None => None,
    };
    let dns_addr = dns.as_ref().map(|d| d.addr);

    let state = ApiState {
        id: id.clone(),
        quic_addr: bound.quic_addr,
        http_addr: bound.http_advertise,
        cluster: ring.primary().cluster_label().to_string(),
        gossip: gossip.clone(),
        clock,
        sched: Some(sched.handle),
        logs: Some(crate::runner::logs(&sched.executor)),
        enforcement: Some(sched.executor.enforcement()),
        metrics: sched.metrics,
        dns,
        events: events.clone(),
    };
    let Bound {
        quic_addr,
        http_addr,
        http_advertise,
        endpoint,
        api_server,
        ..
    } = bound;
    let http_url = format!("{}://{http_advertise}", api_server.scheme());
    let http_token_file = api_server.token_file().to_path_buf();
    let ca_file = api_server.ca_file().map(Path::to_path_buf);
    tasks.push(api_server.spawn(state, sched.keyring, shutdown_rx));
    let addresses = Addresses {
        id: &id,
        quic_addr,
        http_addr,
        http_url: &http_url,
        token_file: &http_token_file,
        ca_file: ca_file.as_deref(),
        dns_addr,
    };
    write_addresses(&config.data_dir, &addresses)?;
    tracing::info!(node = %id, %quic_addr, %http_url, dns = ?dns_addr, cluster = %ring.primary().cluster_label(), keys = ring.keys().len(), "agent started");
    Ok(RunningAgent {
        id,
        http_addr,
        http_url,
        http_token_file,
        quic_addr,
        dns_addr,
        gossip,
        shutdown,
        tasks,
        endpoint,
        executor: sched.executor,
        lease: sched.lease,
        events,
    })
}

/// What the agent's tasks share: the clock, the event stream, the shutdown signal.
#[derive(Clone)]
struct Shared {
    clock: Clock,
    events: crate::events::EventLog,
    shutdown: watch::Receiver<bool>,
}

/// Every socket of the agent, bound before anything starts: a busy port fails the start
/// with nothing running.
struct Bound {
    /// The gossip address other nodes reach this one at.
    gossip_addr: SocketAddr,
    /// Where the gossip socket listens (its port differs from the advertised one behind a NAT
    /// or proxy; both are kept from tasks).
    gossip_bound: SocketAddr,
    tls_identity: TlsIdentity,
    quic_config: tls::QuicConfig,
    endpoint: quinn::Endpoint,
    /// The QUIC address peers dial (the bound one, or the gossip IP with its port when it is
    /// bound to every address).
    quic_addr: SocketAddr,
    api_server: ApiServer,
    /// Where the API listens.
    http_addr: SocketAddr,
    /// Where the API is reached.
    http_advertise: SocketAddr,
    /// The DNS sockets, unless DNS is off.
    dns: Option<crate::dns::DnsSockets>,
}

async fn bind(config: &AgentConfig, ring: &Keyring) -> anyhow::Result<(UdpSocket, Bound)> {
    let socket = UdpSocket::bind(config.bind)
        .await
        .with_context(|| format!("cannot bind gossip address {}", config.bind))?;
    let gossip_bound = socket.local_addr()?;
    let gossip_addr = advertised_gossip(config.advertise, gossip_bound)?;
    let quic_config = tls::QuicConfig::default();
    let tls_identity = TlsIdentity::from_ring(ring, &config.name, quic_config)
        .context("cannot build this node's TLS identity from the cluster key")?;
    let quic_bind = config.quic.unwrap_or(SocketAddr::new(gossip_bound.ip(), 0));
    let endpoint = tls::endpoint(&tls_identity, quic_bind)
        .with_context(|| format!("cannot bind QUIC address {quic_bind}"))?;
    let quic_addr = reachable_at(endpoint.local_addr()?, gossip_addr)
        .context("cannot tell peers where QUIC listens")?;
    let facts = AgentFacts {
        node_name: &config.name,
        gossip_addr,
        data_dir: &config.data_dir,
        cluster_key: &config.cluster_key,
    };
    let api_server = ApiServer::bind(config.http, &config.api, facts).await?;
    let http_addr = api_server.bound();
    let http_advertise = api_server.advertise();
    let dns = config.dns.addr.map(crate::dns::bind).transpose()?;
    let bound = Bound {
        gossip_addr,
        gossip_bound,
        tls_identity,
        quic_config,
        endpoint,
        quic_addr,
        api_server,
        http_addr,
        http_advertise,
        dns,
    };
    Ok((socket, bound))
}

/// The gossip address peers send to: `--advertise`, else the bound one. An address that
/// names every interface (`0.0.0.0`, `::`) is no address a peer can send to (on Linux a
/// datagram to `0.0.0.0` goes to the sender's own host), and it would be handed on as the
/// QUIC and task addresses too: refused, with what to set.
fn advertised_gossip(given: Option<SocketAddr>, bound: SocketAddr) -> anyhow::Result<SocketAddr> {
    match given {
        Some(a) if a.ip().is_unspecified() || a.port() == 0 => {
            bail!("--advertise {a} is not an address peers can send to")
        }
        Some(a) => Ok(a),
        None if bound.ip().is_unspecified() => bail!(
            "gossip listens on every address ({bound}): set --advertise to the address peers \
             send to (this host's address on the cluster's network, with the gossip port)"
        ),
        None => Ok(bound),
    }
}

/// Where peers reach a socket bound at `bound`: itself, or, bound to every address, the
/// advertised gossip IP with the bound port. Every IPv4 address cannot be reached at an IPv6
/// one (an IPv6 socket usually takes IPv4 too, so the other way round is left to the host).
fn reachable_at(bound: SocketAddr, gossip: SocketAddr) -> anyhow::Result<SocketAddr> {
    if !bound.ip().is_unspecified() {
        return Ok(bound);
    }
    if bound.is_ipv4() && gossip.is_ipv6() {
        bail!(
            "QUIC listens on every IPv4 address ({bound}) but gossip is advertised at \
             {gossip}: set --quic to an IPv6 address (e.g. [::]:0)"
        );
    }
    Ok(SocketAddr::new(gossip.ip(), bound.port()))
}

/// The membership core, restored from the known members and joined to the seeds, in its own
/// task; seeds that do not resolve yet are retried by a second task.
async fn start_gossip(
    config: &AgentConfig,
    id: &NodeId,
    socket: UdpSocket,
    bound: &Bound,
    ring: &Keyring,
    shared: &Shared,
) -> anyhow::Result<(GossipHandle, Vec<JoinHandle<()>>, bool)> {
    let Shared {
        clock,
        events,
        shutdown: shutdown_rx,
    } = shared.clone();
    let ad = initial_ad(config, bound.quic_addr, bound.http_advertise);
    shoal_gossip::wire::check_ad(&ResourceAd {
        node: id.name.clone(),
        ..ad.clone()
    })
    .map_err(|e| anyhow::anyhow!("this node's resources cannot be advertised: {e}"))?;
    let mut core = Membership::new(
        id.clone(),
        ad,
        config.gossip.clone(),
        seed_of(id),
        clock.now(),
    );
    let sealer = Sealer::with_ring(ring, SealConfig::default());
    let known_path = known_file::path_in(&config.data_dir);
    // The last life's known membership named no other member: a one-node cluster restarting
    // (`Scheduler::knew_no_peer`).
    let alone_before = known_file::lists_no_peer(&known_path, &id.name);
    let known = known_file::load(&known_path)?;
    if !known.is_empty() {
        tracing::info!(members = known.len(), "restored the known membership");
        core.restore_known(clock.now(), known);
    }
    for seed in resolve_now(&config.join, bound.gossip_addr).await {
        core.join(clock.now(), seed);
    }
    let (gossip, gossip_task) = gossip_driver::spawn(
        core,
        socket,
        sealer,
        clock,
        Some(known_path),
        Some(events),
        shutdown_rx.clone(),
    );
    let resolver = tokio::spawn(resolve_later(
        config.join.clone(),
        gossip.clone(),
        shutdown_rx,
    ));
    Ok((gossip, vec![gossip_task, resolver], alone_before))
}

/// What [`start_scheduler`] started.
struct Scheduling {
    handle: sched_driver::SchedHandle,
    executor: Executor,
    lease: Option<Lease>,
    keyring: crate::keyring::KeyringHandle,
    metrics: Arc<crate::metrics::Metrics>,
    tasks: Vec<JoinHandle<()>>,
}

/// The scheduler task with what it drives: the store it logs to, the executor (and its
/// watchdog) that runs its tasks, the peer transport it replicates over, and the key ring
/// task that shares that transport.
async fn start_scheduler(
    config: &AgentConfig,
    id: &NodeId,
    bound: &Bound,
    ring: &Keyring,
    gossip: &GossipHandle,
    alone_before: bool,
    shared: &Shared,
) -> anyhow::Result<Scheduling> {
    let Shared {
        clock,
        ref events,
        shutdown: ref shutdown_rx,
    } = *shared;
    let store = Arc::new(Store::open(&config.data_dir)?);
    let defaults = ExecutorConfig::default();
    let exec_config = ExecutorConfig {
        instance: cgroup_instance(&config.name, &config.data_dir),
        task_user: config.tasks.user.clone(),
        allowed_task_users: config.tasks.allowed_users.clone(),
        task_max_pids: config.tasks.max_pids,
        max_parallel_launches: config
            .tasks
            .max_launches
            .unwrap_or(defaults.max_parallel_launches),
        ..defaults
    };
    let (executor, exec_events) = Executor::new(config.data_dir.clone(), exec_config)
        .context("cannot start the task executor")?;
    // Before anything is adopted: a watchdog whose lease ran out has finished killing by the
    // time a new one listens, so the processes found below are the ones that are left.
    let lease = match config.tasks.watchdog.clone() {
        Some(wd) => Some(
            watchdog::attach(
                wd,
                &config.data_dir,
                executor.tasks_dir(),
                executor.cgroup_parents(),
            )
            .await
            .context("cannot start the watchdog")?,
        ),
        None => None,
    };
    // Ops are pushed to every live peer as they are written; anti-entropy only repairs losses,
    // so every 5 s is enough (every second cost an idle 32-node agent ~0.1 % of a core).
    let ports = &config.tasks.ports;
    crate::host_ports::warn_on_ephemeral_overlap(&ports.range);
    // The agent's own ports are never a task's.
    let mut reserved_ports = ports.reserved.clone();
    reserved_ports.extend([
        bound.gossip_bound.port(),
        bound.gossip_addr.port(),
        bound.quic_addr.port(),
        bound.http_addr.port(),
    ]);
    reserved_ports.extend(bound.dns.as_ref().map(|d| d.local_addr().port()));
    // Never unspecified: `advertised_gossip` refuses that.
    let service_ip = ports.service_ip.unwrap_or(bound.gossip_addr.ip());
    let sched_config = shoal_scheduler::SchedulerConfig {
        anti_entropy_interval: Duration::from_secs(5),
        task_users: executor.accepted_task_users(),
        port_range: ports.range.clone(),
        reserved_ports,
        service_ip,
        event_queue: std::num::NonZeroUsize::new(4096),
        gc_grace: config.tasks.job_gc_grace,
        ..shoal_scheduler::SchedulerConfig::default()
    };
    let joins = !config.join.is_empty();
    // Alone in the known membership it wrote down in its last life, and still alone now.
    let knew_peers = !alone_before || gossip.quorum().known > 1;
    let mut sched_core = sched_driver::load_core(
        &store,
        &config.name,
        &sched_config,
        seed_of(id),
        joins,
        knew_peers,
    )?;
    let (directory, directory_task) = directory_of(gossip, shutdown_rx.clone());
    let mut tasks = vec![directory_task];
    let peers_config = PeersConfig {
        max_frame_bytes: sched_config.wire.max_message_bytes,
        urgent: shoal_scheduler::Message::is_ack,
        ..PeersConfig::default()
    };
    let (peers, inbound) = Peers::start(
        bound.endpoint.clone(),
        bound.tls_identity.client_config(),
        directory,
        peers_config,
        shutdown_rx.clone(),
    );
    let metrics = Arc::new(crate::metrics::Metrics::default());
    metrics.set_peers(peers.counters.clone());
    let (keyring, keyring_task) = keyring::spawn(
        KeyringParts {
            ring: ring.clone(),
            path: ring_path(&config.data_dir),
            node_name: config.name.clone(),
            quic: bound.quic_config,
            endpoint: bound.endpoint.clone(),
            gossip: gossip.clone(),
            peers: peers.clone(),
            control: inbound.control,
            answer_timeout: Duration::from_secs(10),
        },
        shutdown_rx.clone(),
    );
    tasks.push(keyring_task);
    let runner = ProcessRunner::new(executor.clone());
    let recovered = runner.recover();
    if !recovered.is_empty() {
        tracing::info!(
            tasks = recovered.len(),
            "adopted processes left by the previous incarnation"
        );
    }
    sched_core.handle_recovered_tasks(clock.now(), &recovered);
    let (check_tx, check_results) = tokio::sync::mpsc::channel(1024);
    let checker = crate::checks::Checker::new(Some(executor.clone()), check_tx)?;
    let parts = SchedParts {
        core: sched_core,
        store,
        gossip: gossip.clone(),
        peers,
        inbound: inbound.scheduler,
        acks: inbound.urgent,
        runner: Box::new(runner),
        events: exec_events,
        checker,
        check_results,
        clock,
        config: sched_config,
        metrics: metrics.clone(),
        stream: events.clone(),
    };
    let (handle, sched_task) = sched_driver::spawn(parts, shutdown_rx.clone());
    tasks.push(sched_task);
    tasks.push(tokio::spawn(crate::host_ports::report(
        handle.clone(),
        shutdown_rx.clone(),
    )));
    tasks.push(tokio::spawn(crate::task_gc::run(
        executor.clone(),
        handle.clone(),
        metrics.clone(),
        config.tasks.task_gc_every,
        crate::task_gc::DiskPressure {
            percent: config.tasks.task_gc_disk_percent,
        },
        shutdown_rx.clone(),
    )));
    if let Some(cap) = config.tasks.log_cap_bytes {
        tasks.push(tokio::spawn(crate::task_gc::trim_logs(
            executor.clone(),
            metrics.clone(),
            cap,
            shutdown_rx.clone(),
        )));
    }
    Ok(Scheduling {
        handle,
        executor,
        lease,
        keyring,
        metrics,
        tasks,
    })
}

/// Where the key ring lives.
fn ring_path(data_dir: &Path) -> PathBuf {
    data_dir.join("keyring.json")
}

/// The key ring: the one persisted in the data dir, or a new one holding `configured`
/// (persisted at once, mode 0600). A persisted ring wins over the configured key, as Serf's
/// keyring file does: after a rotation, the key file given on the command line is stale,
/// and re-adding it on restart would bring back a key the operator removed.
fn load_ring(data_dir: &Path, configured: &ClusterKey) -> anyhow::Result<Keyring> {
    let path = ring_path(data_dir);
    if let Some(ring) = Keyring::load(&path)? {
        if !ring.keys().contains(configured) {
            tracing::warn!(
                path = %path.display(),
                configured = %configured.cluster_label(),
                primary = %ring.primary().cluster_label(),
                "the cluster key given is not in this agent's key ring (rotated since?); using the ring"
            );
        }
        return Ok(ring);
    }
    let ring = Keyring::new(configured.clone());
    ring.save(&path)?;
    Ok(ring)
}

/// What `addresses.json` says.
struct Addresses<'a> {
    id: &'a NodeId,
    quic_addr: SocketAddr,
    http_addr: SocketAddr,
    http_url: &'a str,
    token_file: &'a Path,
    ca_file: Option<&'a Path>,
    dns_addr: Option<SocketAddr>,
}

/// Writes `addresses.json` into the data dir so scripts (and tests) that asked for port 0
/// can find the ports the OS chose, and the CLI on this machine finds the API's token file
/// and CA (their paths, never their contents).
fn write_addresses(data_dir: &Path, a: &Addresses<'_>) -> anyhow::Result<()> {
    let body = serde_json::json!({
        "name": a.id.name,
        "generation": a.id.generation,
        "gossip": a.id.addr,
        "quic": a.quic_addr,
        "http": a.http_addr,
        "http_url": a.http_url,
        "token_file": a.token_file,
        "ca_file": a.ca_file,
        "dns": a.dns_addr,
        "pid": std::process::id(),
    });
    let path = data_dir.join("addresses.json");
    let tmp = data_dir.join("addresses.json.tmp");
    std::fs::write(&tmp, body.to_string())
        .and_then(|()| std::fs::rename(&tmp, &path))
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Longest node name: one DNS label (it names the node's certificate) and short enough that
/// the longest attempt key, `{job}.{incarnation}.{node}`, names a directory
/// (`executor::MAX_JOB_KEY_BYTES`).
pub const MAX_NODE_NAME_BYTES: usize = 63;

/// The executor's cgroup instance: the node name (cut to 48 bytes) and a hash of the data dir.
/// Two agents on one host may carry the same name (two test clusters, a dev cluster beside a
/// real one); their task cgroups must not share a parent, or one agent's watchdog would empty
/// the other's cgroups. FNV-1a rather than std's hasher, whose algorithm may change between
/// Rust releases: an upgraded agent must find its previous incarnation's cgroups.
fn cgroup_instance(name: &str, data_dir: &Path) -> String {
    let dir = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_owned());
    let hash = dir
        .as_os_str()
        .as_encoded_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
        });
    let short = name.get(..48).unwrap_or(name);
    format!("{short}-{:08x}", hash as u32)
}

/// A node name the agent takes: 1 to 63 characters from a-z, A-Z, 0-9, `-`, `_` and `.`.
pub fn validate_name(name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NODE_NAME_BYTES
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
    if !ok {
        bail!(
            "invalid node name {name:?}: use 1 to {MAX_NODE_NAME_BYTES} characters from a-z, A-Z, 0-9, '-', '_' and '.'"
        );
    }
    Ok(())
}

/// The next generation: the current time in ms, but always above the last one persisted, so
/// a restart wins even if the clock went backwards.
fn next_generation(data_dir: &Path, now_ms: u64) -> anyhow::Result<u64> {
    let path = data_dir.join("generation");
    let previous = match std::fs::read_to_string(&path) {
        Ok(text) => text.trim().parse::<u64>().with_context(|| {
            format!(
                "{} is corrupt: expected a number, found {text:?}",
                path.display()
            )
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let generation = now_ms.max(previous + 1);
    let tmp = data_dir.join("generation.tmp");
    std::fs::write(&tmp, generation.to_string())
        .and_then(|()| std::fs::rename(&tmp, &path))
        .with_context(|| format!("cannot persist the generation in {}", path.display()))?;
    Ok(generation)
}

fn initial_ad(config: &AgentConfig, quic_addr: SocketAddr, http_addr: SocketAddr) -> ResourceAd {
    let machine = crate::machine::detect(&config.data_dir);
    let capacity = Resources {
        cpu_millicores: config.cpu_millicores.unwrap_or(machine.cpu_millicores),
        memory_mib: config.memory_mib.unwrap_or(machine.memory_mib),
        disk_mib: config.disk_mib.unwrap_or(machine.disk_mib),
    };
    ResourceAd {
        attributes: config.attributes.clone().into(),
        quic_addr: Some(quic_addr),
        http_addr: Some(http_addr),
        port_range: Some(PortRange {
            first: *config.tasks.ports.range.start(),
            last: *config.tasks.ports.range.end(),
        }),
        ..ResourceAd::new(config.name.clone(), capacity)
    }
}

fn seed_of(id: &NodeId) -> u64 {
    // Deterministic per incarnation; the randomness only spreads probe choices.
    id.name
        .bytes()
        .fold(id.generation, |h, b| h.rotate_left(5) ^ u64::from(b))
}

async fn resolve(seed: &str) -> Option<SocketAddr> {
    tokio::net::lookup_host(seed).await.ok()?.next()
}

async fn resolve_now(seeds: &[String], own: SocketAddr) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for seed in seeds {
        match resolve(seed).await {
            Some(addr) if addr != own => out.push(addr),
            Some(_) => {}
            None => tracing::warn!(%seed, "cannot resolve seed yet; will keep trying"),
        }
    }
    out
}

/// Seeds that did not resolve at start are retried with back-off until they do.
async fn resolve_later(
    seeds: Vec<String>,
    gossip: GossipHandle,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut pending: Vec<String> = Vec::new();
    for seed in seeds {
        if resolve(&seed).await.is_none() {
            pending.push(seed);
        }
    }
    // Shown in `GET /v1/agent/self` (`join.unresolved`) until they resolve.
    gossip.set_unresolved_seeds(pending.clone());
    let mut delays = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    while !pending.is_empty() {
        tokio::select! {
            _ = shutdown.changed() => return,
            () = tokio::time::sleep(delays.next().unwrap_or_default()) => {}
        }
        let mut still = Vec::new();
        for seed in pending {
            match resolve(&seed).await {
                Some(addr) => gossip.join(addr).await,
                None => still.push(seed),
            }
        }
        pending = still;
        gossip.set_unresolved_seeds(pending.clone());
    }
}

/// Keeps the QUIC directory (node name → QUIC address) in step with the member view.
fn directory_of(
    gossip: &GossipHandle,
    mut shutdown: watch::Receiver<bool>,
) -> (crate::peers::Directory, JoinHandle<()>) {
    let mut members = gossip.watch_members();
    let (tx, rx) = watch::channel(BTreeMap::new());
    let task = tokio::spawn(async move {
        loop {
            let map: BTreeMap<String, SocketAddr> = members
                .borrow_and_update()
                .iter()
                .filter_map(|m| Some((m.id.name.to_string(), m.ad.as_ref()?.quic_addr?)))
                .collect();
            tx.send_if_modified(|old| {
                let changed = *old != map;
                *old = map;
                changed
            });
            tokio::select! {
                _ = shutdown.changed() => return,
                r = members.changed() => if r.is_err() { return },
            }
        }
    });
    (rx, task)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_on_every_interface_is_never_advertised() {
        let any: SocketAddr = "0.0.0.0:7946".parse().unwrap();
        let lan: SocketAddr = "10.0.0.1:7946".parse().unwrap();
        let err = advertised_gossip(None, any).unwrap_err().to_string();
        assert!(err.contains("set --advertise"), "{err}");
        assert_eq!(advertised_gossip(Some(lan), any).unwrap(), lan);
        assert_eq!(advertised_gossip(None, lan).unwrap(), lan);
        let v6_any: SocketAddr = "[::]:7946".parse().unwrap();
        assert!(advertised_gossip(None, v6_any).is_err());
        assert!(advertised_gossip(Some(any), lan).is_err());
        assert!(advertised_gossip(Some("10.0.0.1:0".parse().unwrap()), lan).is_err());
        // QUIC bound to every address is dialled at the gossip IP, on its own port.
        let quic_any: SocketAddr = "0.0.0.0:40000".parse().unwrap();
        assert_eq!(
            reachable_at(quic_any, lan).unwrap(),
            "10.0.0.1:40000".parse().unwrap()
        );
        let quic_lan: SocketAddr = "10.0.0.2:40000".parse().unwrap();
        assert_eq!(reachable_at(quic_lan, lan).unwrap(), quic_lan);
        let v6: SocketAddr = "[fd00::1]:7946".parse().unwrap();
        let err = reachable_at(quic_any, v6).unwrap_err().to_string();
        assert!(err.contains("set --quic"), "{err}");
        assert_eq!(
            reachable_at("[::]:40000".parse().unwrap(), lan).unwrap(),
            "10.0.0.1:40000".parse().unwrap()
        );
    }

    #[test]
    fn generation_grows_even_when_the_clock_goes_back() {
        let dir = std::env::temp_dir().join(format!("shoal-gen-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let a = next_generation(&dir, 1_000).unwrap();
        let b = next_generation(&dir, 500).unwrap();
        assert_eq!((a, b), (1_000, 1_001));
        std::fs::write(dir.join("generation"), "garbage").unwrap();
        let err = next_generation(&dir, 2_000).unwrap_err().to_string();
        assert!(err.contains("corrupt"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn cgroup_instances_differ_per_data_dir() {
        let a = cgroup_instance("n1", Path::new("/var/lib/shoal/a"));
        let b = cgroup_instance("n1", Path::new("/var/lib/shoal/b"));
        assert_ne!(a, b);
        assert!(a.starts_with("n1-") && a.len() == 11, "{a}");
        assert_eq!(a, cgroup_instance("n1", Path::new("/var/lib/shoal/a")));
        let long = cgroup_instance(&"x".repeat(64), Path::new("/d"));
        assert_eq!(long.len(), 57);
    }

    #[test]
    fn names_are_checked() {
        assert!(validate_name("node-1.rack_a").is_ok());
        assert!(validate_name(&"n".repeat(MAX_NODE_NAME_BYTES)).is_ok());
        let long = validate_name(&"n".repeat(MAX_NODE_NAME_BYTES + 1)).unwrap_err();
        assert!(long.to_string().contains("1 to 63 characters"), "{long}");
        assert!(validate_name("").is_err());
        assert!(
            validate_name("bad name")
                .unwrap_err()
                .to_string()
                .contains("invalid node name")
        );
    }
}
