//! The task that owns the scheduler core: member views in, peer messages in and out over QUIC,
//! executor commands out and task events in, health checks out and their results in,
//! submissions from the API acknowledged once they are durable, snapshots to the store.
//!
//! One tokio task owns [`Scheduler`]; the API talks to it through [`SchedHandle`]. After every
//! input it drains, until nothing is left: the table snapshot (at a bounded rate) and job
//! records, written on the blocking pool one write at a time (the records with an fsync, then
//! reported with `handle_persisted`, which releases the acks they held; a snapshot holds every
//! record handed out before it), peer messages, executor commands; then it answers durability
//! waiters and republishes the service catalog if the input changed it (`docs/services.md`,
//! §3).
//! A submission or stop is logged before the core applies it (`prepare_*`, store, `commit`),
//! so a full disk refuses it with nothing applied (`docs/faults.md`). Allocations are not
//! advertised: every placer counts them from the replicated tables (`docs/scheduler.md`,
//! "Release hold").

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use shoal_gossip::{MemberInfo, Quorum, Resources};
use shoal_scheduler::{
    AttemptId, AttemptState, Catalog, CatalogBuilder, ExecCommand, JobSpec, JobView,
    NeverFitsError, NodeChange, NodeStatus, PromoteError, Receipt, Scheduler, SchedulerConfig,
    SpecError, Stamp, StopError, SubmitError, TaskEvent, VersionView,
};

mod nodes;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::checks::{CheckReport, Checker};
use crate::clock::{Clock, DeadlineTimer};
use crate::executor::ExecEvent;
use crate::gossip_driver::GossipHandle;
use crate::peers::{Inbound, Peers};
use crate::store::{Store, StoreError};

/// How long a submission waits for a second holder before the client is told it is only
/// held locally.
const DURABLE_WAIT: Duration = Duration::from_secs(10);
/// Snapshots are written at most this often. Submissions do not wait for them (their job
/// records are logged on their own before the ack); task states lost in a crash are rebuilt
/// from the processes found and from the peers' replicas.
const SNAPSHOT_EVERY: Duration = Duration::from_secs(2);
/// After a failed write of job records, the next try waits this long (each try may reopen
/// the database).
const STORE_RETRY: Duration = Duration::from_secs(1);

/// Counts the events one pass of [`Driver::drain`] records and yields to the runtime every
/// quarter of the event ring, so a reader following the stream (`GET /v1/events`) takes
/// what is new before one input's events move the ring past it.
struct Burst {
    every: usize,
    count: usize,
}

impl Burst {
    fn new(stream: &crate::events::EventLog) -> Self {
        Burst {
            every: stream.capacity().div_ceil(4).max(1),
            count: 0,
        }
    }

    async fn pushed(&mut self) {
        self.count += 1;
        if self.count.is_multiple_of(self.every) {
            tokio::task::yield_now().await;
        }
    }
}

/// Where executor commands go. The agent plugs the process executor in; tests plug fakes.
pub trait TaskRunner: Send + 'static {
    /// Start the task; what happens then arrives on the executor's event channel. `Err`: the
    /// start was refused, and this is what the core hears (nothing else follows).
    fn start(&mut self, command: ExecCommand) -> Result<(), TaskEvent>;
    /// Kill the task (SIGTERM, grace, SIGKILL); how it ended arrives as an event. `false`: it
    /// does not run here, and the core hears `Killed` at once.
    fn kill(&mut self, task: AttemptId) -> bool;
}

/// Why the API's request failed, with the typed cause.
#[derive(Debug, thiserror::Error)]
pub enum SchedError {
    /// The core's check refused the spec (its message names the field and, from TOML, the line).
    #[error(transparent)]
    Invalid(SpecError),
    /// No node could ever host one task.
    #[error(transparent)]
    NeverFits(NeverFitsError),
    /// No such job.
    #[error(transparent)]
    NotFound(StopError),
    /// The local store failed; nothing was written or changed, nothing acknowledged.
    #[error("job {job} not accepted: nothing was written or changed: {source}")]
    Storage {
        /// The job of the refused write.
        job: String,
        /// Why the store failed.
        source: StoreError,
    },
    /// Held and persisted here, but no other live node confirmed it in time.
    #[error(
        "job {0} is accepted and persisted on this node, but no other live node confirmed holding it within {1:?}; it will keep replicating"
    )]
    NotReplicated(String, Duration, Stamp),
    /// Held and persisted here, and no other node is alive to hold it.
    #[error(
        "job {0} is accepted and persisted on this node only: no other live node can hold it now; it replicates when one joins"
    )]
    LocalOnly(String, Stamp),
    /// The scheduler task is gone (the agent is stopping).
    #[error("the scheduler is stopping")]
    Stopping,
    /// A revert was refused (no such job or version, ambiguous, already current).
    #[error(transparent)]
    Revert(shoal_scheduler::RevertError),
    /// A node command named no known node.
    #[error(transparent)]
    Node(shoal_scheduler::NodeError),
}

enum Request {
    Submit(Box<JobSpec>, oneshot::Sender<Result<Receipt, SchedError>>),
    Stop(String, oneshot::Sender<Result<Receipt, SchedError>>),
    Job(String, oneshot::Sender<Option<JobView>>),
    Jobs(oneshot::Sender<Vec<JobView>>),
    Stats(oneshot::Sender<shoal_scheduler::Stats>),
    Usage(Vec<String>, oneshot::Sender<Vec<Resources>>),
    Attempt(
        String,
        u32,
        WhichAttempt,
        oneshot::Sender<Option<(AttemptId, String)>>,
    ),
    HostPorts(BTreeSet<u16>),
    Versions(String, oneshot::Sender<Option<Vec<VersionView>>>),
    Revert(String, u32, oneshot::Sender<Result<Receipt, SchedError>>),
    Promote(String, oneshot::Sender<Result<u32, PromoteError>>),
    Node(
        String,
        NodeChange,
        oneshot::Sender<Result<Receipt, SchedError>>,
    ),
    NodeStatuses(oneshot::Sender<Vec<NodeStatus>>),
    TaskRows(Vec<AttemptId>, oneshot::Sender<Vec<TaskRow>>),
}

/// Which attempt of a slot ([`SchedHandle::attempt`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhichAttempt {
    /// The one that should run (`Tables::current_attempt`).
    Current,
    /// The newest one that ran (or tried to start) before the current one: the one a crash
    /// loop's logs are in (`shoal task logs --previous`).
    Previous,
    /// The attempt with this number; of two with one number (racing placers), the one that
    /// ran.
    Number(u32),
}

/// What this node's tables say of an attempt whose directory is on this host
/// ([`SchedHandle::task_rows`], `crate::task_gc`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskRow {
    /// The tables hold it: a view may still show it and its logs.
    Held,
    /// The tables dropped it for good (its job incarnation purged, or its slot's floor above
    /// it): nothing shows it again and it never runs again.
    Dropped,
    /// The tables do not know it, nor that it was dropped (a purge whose tombstone expired
    /// before this node heard it, or an attempt this node's tables never had).
    Unknown,
}

/// A cloneable handle on the scheduler task.
#[derive(Debug, Clone)]
pub struct SchedHandle {
    requests: mpsc::Sender<Request>,
    catalog: watch::Receiver<Arc<Catalog>>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Request")
    }
}

impl SchedHandle {
    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Request) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        self.requests.send(make(tx)).await.ok()?;
        rx.await.ok()
    }

    /// Submits a job; resolves once it is durable (or with why not).
    pub async fn submit(&self, spec: JobSpec) -> Result<Receipt, SchedError> {
        self.ask(|tx| Request::Submit(Box::new(spec), tx))
            .await
            .unwrap_or(Err(SchedError::Stopping))
    }

    /// Stops a job; resolves once the stop is durable (or with why not).
    pub async fn stop(&self, id: String) -> Result<Receipt, SchedError> {
        self.ask(|tx| Request::Stop(id, tx))
            .await
            .unwrap_or(Err(SchedError::Stopping))
    }

    /// A job's kept versions (`None`: no such job).
    pub async fn versions(&self, id: String) -> Option<Vec<VersionView>> {
        self.ask(|tx| Request::Versions(id, tx)).await.flatten()
    }

    /// Reverts a job to one of its kept versions; resolves once the write is durable.
    pub async fn revert(&self, id: String, version: u32) -> Result<Receipt, SchedError> {
        self.ask(|tx| Request::Revert(id, version, tx))
            .await
            .unwrap_or(Err(SchedError::Stopping))
    }

    /// Promotes the canaries of a job's current deployment; the version promoted.
    pub async fn promote(&self, id: String) -> Option<Result<u32, PromoteError>> {
        self.ask(|tx| Request::Promote(id, tx)).await
    }

    /// One job's view.
    pub async fn job(&self, id: String) -> Option<JobView> {
        self.ask(|tx| Request::Job(id, tx)).await.flatten()
    }

    /// Every job's view.
    pub async fn jobs(&self) -> Vec<JobView> {
        self.ask(Request::Jobs).await.unwrap_or_default()
    }

    /// An attempt of a slot of the job's visible incarnation and the node it is placed on.
    pub async fn attempt(
        &self,
        job: String,
        slot: u32,
        which: WhichAttempt,
    ) -> Option<(AttemptId, String)> {
        self.ask(|tx| Request::Attempt(job, slot, which, tx))
            .await
            .flatten()
    }

    /// Scheduler counters (`None` when the scheduler task is gone).
    pub async fn stats(&self) -> Option<shoal_scheduler::Stats> {
        self.ask(Request::Stats).await
    }

    /// What live tasks hold on each of `nodes`, as this node's tables show it (zero when the
    /// scheduler is gone).
    pub async fn node_usage(&self, nodes: Vec<String>) -> Vec<Resources> {
        let n = nodes.len();
        self.ask(|tx| Request::Usage(nodes, tx))
            .await
            .unwrap_or_else(|| vec![Resources::default(); n])
    }

    /// The service catalog, republished after every drained input that changed it
    /// (`docs/services.md`, §3): readers never wait on the scheduler task.
    pub fn catalog(&self) -> watch::Receiver<Arc<Catalog>> {
        self.catalog.clone()
    }

    /// What the tables say of each of `tasks`, in order (`None`: the scheduler is gone).
    pub async fn task_rows(&self, tasks: Vec<AttemptId>) -> Option<Vec<TaskRow>> {
        self.ask(|tx| Request::TaskRows(tasks, tx)).await
    }

    /// The ports listening on this host (admission keeps clear of them).
    pub async fn host_ports(&self, ports: BTreeSet<u16>) {
        let _ = self.requests.send(Request::HostPorts(ports)).await;
    }
}

/// What the scheduler task needs.
pub struct SchedParts {
    /// The core (new, or restored with its logged job records).
    pub core: Scheduler,
    /// The durable store.
    pub store: Arc<Store>,
    /// The membership task (views in).
    pub gossip: GossipHandle,
    /// Peer transport.
    pub peers: Peers,
    /// Frames from peers.
    pub inbound: mpsc::Receiver<Inbound>,
    /// Durability acks from peers, picked out of `inbound`'s backlog as they are read
    /// (`PeersConfig::urgent`): handled before the frames queued ahead of them.
    pub acks: mpsc::Receiver<Inbound>,
    /// The executor.
    pub runner: Box<dyn TaskRunner>,
    /// Executor observations, straight from the executor.
    pub events: mpsc::Receiver<ExecEvent>,
    /// Runs the health checks the core asks for (`Checks`, `StopChecks`).
    pub checker: Checker,
    /// Their results.
    pub check_results: mpsc::Receiver<CheckReport>,
    /// The clock.
    pub clock: Clock,
    /// Scheduler limits (wire bounds for decoding).
    pub config: SchedulerConfig,
    /// Where executor starts and outcomes are counted.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Where task, placement, attempt, job and service events are recorded (`crate::events`).
    pub stream: crate::events::EventLog,
}

impl std::fmt::Debug for SchedParts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchedParts").finish_non_exhaustive()
    }
}

/// Opens the store's state and builds the core: restored from the last snapshot, with the
/// job records logged after it joined in, or new. Restored from a clean shutdown's final
/// snapshot, it writes on as the actor of the start that wrote it
/// (`Scheduler::continue_writing_as`). A new core may be this node's name back
/// with an empty data dir: given a cluster to join (`joins`), it catches up with a peer
/// before it acts, like a restored one (`Scheduler::catch_up_before_acting`); given none, it
/// acts at once while alone and catches up on its first contact with a peer
/// (`Scheduler::catch_up_on_first_contact`). A restored core given no cluster to join whose
/// last life knew no other member (`knew_peers`: the known membership it wrote down) does the
/// same: a one-node cluster has nobody to catch up with (`Scheduler::knew_no_peer`).
pub fn load_core(
    store: &Store,
    node: &str,
    config: &SchedulerConfig,
    seed: u64,
    joins: bool,
    knew_peers: bool,
) -> anyhow::Result<Scheduler> {
    let mut core = match store.snapshot()? {
        Some(bytes) => {
            let mut core = Scheduler::restore(node.to_string(), config.clone(), seed, &bytes)
                .map_err(|e| anyhow::anyhow!("cannot restore the scheduler tables: {e}"))?;
            // Taken (durably) before the core writes: only this start may write on as it.
            if let Some(start) = store.take_final_writer()? {
                core.continue_writing_as(start);
            }
            core
        }
        None => {
            let mut core = Scheduler::new(node.to_string(), config.clone(), seed);
            if joins {
                core.catch_up_before_acting();
            } else {
                core.catch_up_on_first_contact();
            }
            core
        }
    };
    let records = store.job_records()?;
    let unreadable = core.restore_job_records(records.iter().map(|(_, b)| b.as_slice()));
    if unreadable > 0 {
        tracing::error!(unreadable, "job records in the store could not be read");
    }
    if !records.is_empty() {
        tracing::info!(
            jobs = records.len(),
            "restored job writes logged after the last snapshot"
        );
    }
    if !joins && !knew_peers && core.knew_no_peer() {
        tracing::info!(
            "restored with no other member known and no cluster to join: acting at once, \
             catching up on the first contact with a peer"
        );
    }
    Ok(core)
}

/// Spawns the scheduler task.
pub fn spawn(
    parts: SchedParts,
    shutdown: watch::Receiver<bool>,
) -> (SchedHandle, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(1024);
    let members = parts.gossip.watch_members();
    let quorum = parts.gossip.watch_quorum();
    let (catalog_tx, catalog) = watch::channel(Arc::new(Catalog::default()));
    let driver = Driver::new(parts, catalog_tx);
    let span = tracing::info_span!("sched", node = %driver.core.node());
    let task = tokio::spawn(tracing::Instrument::instrument(
        driver.run(rx, members, quorum, shutdown),
        span,
    ));
    (
        SchedHandle {
            requests: tx,
            catalog,
        },
        task,
    )
}

/// A write to the store running on the blocking pool: job records
/// ([`Driver::log_job_records`]) or a table snapshot ([`Driver::start_snapshot`]). One at a
/// time, so writes land in the order they were started: a snapshot empties the job log, and
/// a record logged beside it could land before it and be lost.
struct StoreWrite {
    kind: WriteKind,
    result: std::sync::mpsc::Receiver<Result<(), StoreError>>,
}

enum WriteKind {
    /// Job records; `last` is the last batch it holds: the core hears it persisted once the
    /// write succeeds.
    Log { last: u64 },
    /// The tables as of `clock`, which hold every batch handed out up to `last`.
    Snapshot {
        last: Option<u64>,
        clock: shoal_scheduler::VersionVector,
    },
}

struct Waiter {
    receipt: Receipt,
    reply: oneshot::Sender<Result<Receipt, SchedError>>,
    deadline: Instant,
}

struct Driver {
    core: Scheduler,
    store: Arc<Store>,
    peers: Peers,
    inbound: mpsc::Receiver<Inbound>,
    acks: mpsc::Receiver<Inbound>,
    runner: Box<dyn TaskRunner>,
    events: mpsc::Receiver<ExecEvent>,
    checker: Checker,
    check_results: mpsc::Receiver<CheckReport>,
    /// What the runner answered at once (a refused start, a kill of a task not running
    /// here): the core hears it as its next inputs.
    answered: VecDeque<(AttemptId, TaskEvent)>,
    clock: Clock,
    config: SchedulerConfig,
    waiters: Vec<Waiter>,
    /// Job records the core handed out and not yet logged (being written, or whose write
    /// failed), oldest first: written (in order, as one transaction) until the store takes
    /// them; their batches are reported persisted only then.
    unlogged: Vec<shoal_scheduler::JobRecords>,
    /// The store write running on the blocking pool, if any: one at a time, so records
    /// land in the order they were handed out.
    store_write: Option<StoreWrite>,
    /// Woken when `store_write` has its result.
    store_written: Arc<tokio::sync::Notify>,
    /// When the last failed write of job records happened.
    store_failed_at: Option<Instant>,
    /// The tables changed since the last snapshot (their version vector moved). Messages that
    /// change nothing, such as anti-entropy digests between replicas in sync, do not count:
    /// they arrive every second and a snapshot costs an fsync.
    dirty: bool,
    snapshot_clock: shoal_scheduler::VersionVector,
    last_snapshot: Instant,
    /// A snapshot was due when a log write took the store: it goes before the next one.
    snapshot_passed_over: bool,
    metrics: Arc<crate::metrics::Metrics>,
    /// When each start still in progress was asked for (start latency).
    starting: HashMap<AttemptId, Instant>,
    /// The service catalog, brought up to date after every drained input.
    catalog: CatalogBuilder,
    /// Where it is published.
    catalog_tx: watch::Sender<Arc<Catalog>>,
    /// The event stream.
    stream: crate::events::EventLog,
    /// The core's count of dropped events, as last reported to the stream.
    events_dropped: u64,
    /// The membership task and its view: the ad mirrors the node's intent (`nodes.rs`).
    gossip: GossipHandle,
    /// What the ad was last set to say about refusing work.
    mirrored: Option<bool>,
}

impl Driver {
    fn new(p: SchedParts, catalog_tx: watch::Sender<Arc<Catalog>>) -> Self {
        Driver {
            core: p.core,
            store: p.store,
            peers: p.peers,
            inbound: p.inbound,
            acks: p.acks,
            runner: p.runner,
            events: p.events,
            checker: p.checker,
            check_results: p.check_results,
            answered: VecDeque::new(),
            clock: p.clock,
            config: p.config,
            waiters: Vec::new(),
            unlogged: Vec::new(),
            store_write: None,
            store_written: Arc::new(tokio::sync::Notify::new()),
            store_failed_at: None,
            dirty: true,
            snapshot_clock: shoal_scheduler::VersionVector::new(),
            last_snapshot: Instant::now(),
            snapshot_passed_over: false,
            metrics: p.metrics,
            starting: HashMap::new(),
            catalog: CatalogBuilder::new(),
            catalog_tx,
            stream: p.stream,
            events_dropped: 0,
            gossip: p.gossip,
            mirrored: None,
        }
    }

    /// Gives the core the membership core's newest quorum if it has not seen it.
    fn feed_quorum(&mut self, quorum: &mut watch::Receiver<Quorum>) {
        let q = quorum.borrow_and_update().clone();
        if *self.core.quorum() != q {
            self.core.handle_quorum(self.clock.now(), &q);
        }
    }

    async fn run(
        mut self,
        mut requests: mpsc::Receiver<Request>,
        mut members: watch::Receiver<Vec<MemberInfo>>,
        mut quorum: watch::Receiver<Quorum>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        self.feed_quorum(&mut quorum);
        let view = members.borrow_and_update().clone();
        self.core.handle_members(self.clock.now(), &view);
        self.publish_catalog();
        let mut timer = DeadlineTimer::new();
        let store_written = self.store_written.clone();
        loop {
            // An ack releases a waiting submission; it raises a maximum, so it need not
            // wait for the ops its peer sent before it (a 10,000-slot submission's answer
            // waited behind the placements of its own slots: `docs/agent.md`).
            if let Ok(frame) = self.acks.try_recv() {
                self.on_frame(frame);
                self.drain().await;
                continue;
            }
            if let Some((task, event)) = self.answered.pop_front() {
                self.on_task_event(task, event);
                self.drain().await;
                continue;
            }
            timer.set(self.next_deadline());
            tokio::select! {
                _ = shutdown.changed() => break,
                Ok(()) = quorum.changed() => self.feed_quorum(&mut quorum),
                Ok(()) = members.changed() => {
                    // The quorum first: a view showing most members down is never acted on
                    // under the quorum from before it (`docs/faults.md`).
                    self.feed_quorum(&mut quorum);
                    let view = members.borrow_and_update().clone();
                    self.core.handle_members(self.clock.now(), &view);
                }
                Some(frame) = self.acks.recv() => self.on_frame(frame),
                Some(frame) = self.inbound.recv() => self.on_frame(frame),
                Some(event) = self.events.recv() => {
                    let (task, event) = event.into_task_event();
                    self.on_task_event(task, event);
                }
                Some(req) = requests.recv() => self.on_request(req),
                Some(report) = self.check_results.recv() => {
                    let CheckReport { task, check, result } = report;
                    self.core.handle_check_result(self.clock.now(), task, check, result);
                }
                () = timer.fired(), if timer.is_armed() => {
                    self.core.handle_timeout(self.clock.now());
                }
                () = store_written.notified() => self.finish_store_write(false),
            }
            self.drain().await;
        }
        // A clean stop killed every task before it signalled (`RunningAgent::shutdown`): their
        // ends, if any are still queued, are written now, so that the final snapshot holds
        // them. The next start then has nothing to write about them before its catch-up and
        // can write on as this start (`Scheduler::continue_writing_as`), and they read
        // "killed", not "process not found after agent restart".
        let mut ended = false;
        while let Some((task, event)) = self.answered.pop_front() {
            self.on_task_event(task, event);
            ended = true;
        }
        while let Ok(event) = self.events.try_recv() {
            let (task, event) = event.into_task_event();
            self.on_task_event(task, event);
            ended = true;
        }
        if ended {
            self.drain().await;
        }
        self.write_final_snapshot();
    }

    /// The earliest of the core's deadline, the durability waiters', the next snapshot's and
    /// the store retry's; `None` when nothing is due ever.
    fn next_deadline(&self) -> Option<Instant> {
        let core = self
            .core
            .poll_timeout()
            .map(|at| Instant::from(self.clock.instant_of(at)));
        let waiter = self.waiters.iter().map(|w| w.deadline).min();
        // While a store write runs, its end wakes the loop and the snapshot is started then.
        let snapshot =
            (self.dirty && self.store_write.is_none()).then(|| self.last_snapshot + SNAPSHOT_EVERY);
        let store = match self.store_failed_at {
            Some(at) if !self.unlogged.is_empty() && self.store_write.is_none() => {
                Some(at + STORE_RETRY)
            }
            _ => None,
        };
        [core, waiter, snapshot, store].into_iter().flatten().min()
    }

    fn on_frame(&mut self, frame: Inbound) {
        // Plain decoding: the core logs each op re-encoded, in its own small buffer. Logging
        // slices of the frame (`decode_shared`, what the simulator does with one buffer shared
        // by 200 replicas) would save nothing here, where every frame has one receiver, and a
        // logged op would keep its whole frame (up to `max_message_bytes`) alive.
        match shoal_scheduler::Message::decode(&frame.payload, &self.config.wire) {
            Ok(msg) => {
                self.core.handle_message(self.clock.now(), &frame.from, msg);
            }
            Err(e) => tracing::warn!(peer = %frame.from, error = %e, "refused a scheduler message"),
        }
    }

    fn on_request(&mut self, req: Request) {
        let now = self.clock.now();
        match req {
            Request::Submit(spec, reply) => self.submit(*spec, reply),
            Request::Stop(id, reply) => match self.core.prepare_stop(now, &id) {
                Ok(prepared) => self.log_and_commit("Stopped", prepared, reply),
                Err(e) => {
                    let _ = reply.send(Err(SchedError::NotFound(e)));
                }
            },
            Request::Job(id, reply) => {
                let _ = reply.send(self.core.job(&id));
            }
            Request::Jobs(reply) => {
                let _ = reply.send(self.core.jobs());
            }
            Request::Attempt(job, slot, which, reply) => {
                let _ = reply.send(self.attempt(&job, slot, which));
            }
            Request::Stats(reply) => {
                let _ = reply.send(self.core.stats());
            }
            Request::Usage(nodes, reply) => {
                let _ = reply.send(nodes.iter().map(|n| self.core.node_usage(n)).collect());
            }
            Request::HostPorts(ports) => self.core.handle_host_ports(self.clock.now(), ports),
            Request::Versions(id, reply) => {
                let _ = reply.send(self.core.job_versions(&id));
            }
            Request::Revert(id, version, reply) => {
                match self.core.prepare_revert(now, &id, version) {
                    Ok(prepared) => self.log_and_commit("Reverted", prepared, reply),
                    Err(e) => {
                        let _ = reply.send(Err(SchedError::Revert(e)));
                    }
                }
            }
            Request::Node(name, change, reply) => self.node_command(&name, change, reply),
            Request::NodeStatuses(reply) => {
                let _ = reply.send(self.core.node_statuses());
            }
            Request::Promote(id, reply) => {
                let _ = reply.send(self.core.promote(now, &id));
            }
            Request::TaskRows(tasks, reply) => {
                let tables = self.core.tables();
                let rows = tasks.iter().map(|t| {
                    if tables.is_collected(t) {
                        TaskRow::Dropped
                    } else if tables.assignment(t).is_some() {
                        TaskRow::Held
                    } else {
                        TaskRow::Unknown
                    }
                });
                let _ = reply.send(rows.collect());
            }
        }
    }

    fn attempt(&self, job: &str, slot: u32, which: WhichAttempt) -> Option<(AttemptId, String)> {
        let tables = self.core.tables();
        let (incarnation, _) = tables.job(job)?;
        let key = shoal_scheduler::SlotKey {
            job: job.into(),
            incarnation,
            slot,
        };
        // An attempt that reached its node's executor: its directory (and logs) may exist.
        let ran = |id: &AttemptId| {
            !matches!(
                tables.state(id),
                AttemptState::Proposed | AttemptState::Admitted | AttemptState::Rejected { .. }
            )
        };
        let found = match which {
            WhichAttempt::Current => tables.current_attempt(&key),
            // The first of that number that ran, else the first (`min_by_key` keeps the first
            // of equal keys).
            WhichAttempt::Number(n) => tables
                .slot_attempts(&key)
                .filter(|(id, _)| id.attempt == n)
                .min_by_key(|(id, _)| !ran(id)),
            WhichAttempt::Previous => {
                let current = tables.current_attempt(&key).map(|(id, _)| id.clone());
                tables.slot_attempts(&key).rev().find(|(id, _)| {
                    ran(id) && current.as_ref().is_none_or(|c| id.attempt < c.attempt)
                })
            }
        };
        found.map(|(id, a)| (id.clone(), a.target.to_string()))
    }

    /// Accepts a job: checked by the core (the one check of a spec), its record logged, then
    /// applied (`log_and_commit`).
    fn submit(&mut self, spec: JobSpec, reply: oneshot::Sender<Result<Receipt, SchedError>>) {
        match self.core.prepare_submit(self.clock.now(), spec) {
            Ok(prepared) => self.log_and_commit("Submitted", prepared, reply),
            Err(SubmitError::NeverFits(e)) => {
                let _ = reply.send(Err(SchedError::NeverFits(e)));
            }
            Err(SubmitError::Invalid(e)) => {
                let _ = reply.send(Err(SchedError::Invalid(e)));
            }
        }
    }

    /// A prepared write is logged (fsync) *before* the core applies it: a crash right after
    /// the acknowledgement finds it on restart, and a full disk refuses it with nothing
    /// applied. Then the client waits for a second holder. `kind` names the write in the
    /// event stream (`Submitted`, `Stopped`).
    fn log_and_commit(
        &mut self,
        kind: &'static str,
        prepared: shoal_scheduler::Prepared,
        reply: oneshot::Sender<Result<Receipt, SchedError>>,
    ) {
        let write = match prepared {
            shoal_scheduler::Prepared::Unchanged(receipt) => {
                self.wait_durable(receipt, reply);
                return;
            }
            shoal_scheduler::Prepared::Write(write) => write,
        };
        // After the records handed out before it, never beside them: a record of the same
        // job written in another transaction could otherwise land after this newer one.
        self.finish_store_write(true);
        if let Err(source) = self
            .store
            .put_job_records(std::slice::from_ref(&write.record))
        {
            let job = write.record.job.clone();
            tracing::error!(%job, error = %source, "cannot log a job write; refused it");
            let _ = reply.send(Err(SchedError::Storage { job, source }));
            return;
        }
        let receipt = self.core.commit(self.clock.now(), *write);
        if !receipt.job.starts_with('~') {
            // A node write's events come from the core (`Node` topic).
            self.stream
                .push(crate::events::job_event(kind, &receipt.job));
        }
        self.wait_durable(receipt, reply);
    }

    fn wait_durable(
        &mut self,
        receipt: Receipt,
        reply: oneshot::Sender<Result<Receipt, SchedError>>,
    ) {
        self.waiters.push(Waiter {
            receipt,
            reply,
            deadline: Instant::now() + DURABLE_WAIT,
        });
    }

    /// Logs the job records the core handed out (with the ones a failed write left behind,
    /// in order, in one transaction) on the blocking pool, so the fsync (milliseconds on a
    /// slow disk) does not stall this loop: starts, messages and digests go on meanwhile.
    /// Only its result reports them persisted ([`Self::finish_store_write`]), which releases
    /// the acks they held; on failure they wait for the next try, and nothing is
    /// acknowledged.
    fn log_job_records(&mut self) {
        self.take_job_records();
        if self.unlogged.is_empty() || self.store_write.is_some() {
            return;
        }
        if self
            .store_failed_at
            .is_some_and(|at| at.elapsed() < STORE_RETRY)
        {
            return;
        }
        // Later records of a job replace earlier ones: merge the batches, newest last.
        let mut by_job: std::collections::BTreeMap<&str, &shoal_scheduler::JobRecord> =
            std::collections::BTreeMap::new();
        for b in &self.unlogged {
            for r in &b.records {
                by_job.insert(r.job.as_str(), r);
            }
        }
        let records: Vec<shoal_scheduler::JobRecord> = by_job.into_values().cloned().collect();
        let Some(last) = self.unlogged.last().map(|b| b.batch) else {
            return;
        };
        let store = self.store.clone();
        self.start_store_write(WriteKind::Log { last }, move || {
            store.put_job_records(&records)
        });
    }

    /// Moves the job records the core handed out to `unlogged`.
    fn take_job_records(&mut self) {
        while let Some(batch) = self.core.poll_job_records() {
            self.unlogged.push(batch);
        }
    }

    /// Runs `write` on the blocking pool as the one store write in flight.
    fn start_store_write(
        &mut self,
        kind: WriteKind,
        write: impl FnOnce() -> Result<(), StoreError> + Send + 'static,
    ) {
        let (tx, result) = std::sync::mpsc::sync_channel(1);
        let written = self.store_written.clone();
        tokio::task::spawn_blocking(move || {
            let _ = tx.send(write());
            written.notify_one();
        });
        self.store_write = Some(StoreWrite { kind, result });
    }

    /// Takes the result of the running store write once it has one (with `wait`, blocks
    /// until then: before any other write to the store, which must not overtake it).
    fn finish_store_write(&mut self, wait: bool) {
        let Some(write) = &self.store_write else {
            return;
        };
        let result = if wait {
            write.result.recv().ok()
        } else {
            match write.result.try_recv() {
                Ok(r) => Some(r),
                Err(std::sync::mpsc::TryRecvError::Empty) => return,
                Err(std::sync::mpsc::TryRecvError::Disconnected) => None,
            }
        };
        let Some(StoreWrite { kind, .. }) = self.store_write.take() else {
            return;
        };
        let result = result.unwrap_or_else(|| {
            Err(StoreError::Io {
                path: self.store.path().to_path_buf(),
                what: "writing to the store",
                reason: "the write did not complete".to_owned(),
            })
        });
        match (kind, result) {
            (WriteKind::Log { last }, Ok(())) => {
                if self.store_failed_at.take().is_some() {
                    tracing::info!("job records are logged again");
                }
                self.persisted_through(last);
            }
            (WriteKind::Log { .. }, Err(e)) => {
                if self.store_failed_at.is_none() {
                    tracing::error!(error = %e, "cannot log job records; acknowledgements wait");
                }
                self.store_failed_at = Some(Instant::now());
            }
            (WriteKind::Snapshot { last, clock }, Ok(())) => self.snapshot_written(last, clock),
            (WriteKind::Snapshot { .. }, Err(e)) => {
                // The spacing counts from the end of a write, failed or not: a snapshot that
                // takes longer than the spacing is not followed at once by the next, and log
                // writes get their turn between them.
                self.last_snapshot = Instant::now();
                tracing::error!(error = %e, "cannot write the table snapshot; will retry");
            }
        }
    }

    /// Every batch up to `last` is durable: the core hears it (releasing their acks) and
    /// they leave `unlogged`; later batches, handed out since, wait for their write.
    fn persisted_through(&mut self, last: u64) {
        self.unlogged.retain(|b| b.batch > last);
        self.core.handle_persisted(self.clock.now(), last);
    }

    /// A task event from the executor: counted, then handed to the core.
    fn on_task_event(&mut self, task: AttemptId, event: TaskEvent) {
        self.count_task_event(&task, &event);
        self.core.handle_task_event(self.clock.now(), task, event);
    }

    /// Counts a task event before the core hears it: the start latency, submit → running
    /// for a slot's first attempt (timed from the job write's stamp, the accepting node's
    /// clock), and how tasks end.
    fn count_task_event(&mut self, task: &AttemptId, event: &TaskEvent) {
        self.stream
            .push(crate::events::task_event(self.core.node(), task, event));
        // Every event ends the start in progress; only `Started` times it.
        let asked = self
            .starting
            .remove(task)
            .filter(|_| matches!(event, TaskEvent::Started { .. }));
        self.metrics.task_event(event, asked.map(Instant::into_std));
        if matches!(event, TaskEvent::Started { .. })
            && task.attempt == 1
            && let Some((incarnation, entry)) = self.core.tables().job(&task.job)
            && incarnation == task.incarnation
        {
            let ms = self.clock.now().0.saturating_sub(entry.epoch.hlc.wall_ms);
            self.metrics.submitted_to_running(Duration::from_millis(ms));
        }
    }

    async fn drain(&mut self) {
        if !self.dirty && self.core.tables().clock() != &self.snapshot_clock {
            self.dirty = true;
        }
        // A finished write releases acks, which then leave with the messages; then the next
        // write starts. Job records waiting to be logged go before a snapshot that is due:
        // a peer's ack of a submission waits for its record's write, and a snapshot writes the
        // whole tables (megabytes at 10,000 tasks), all of which the record would wait for
        // (`docs/agent.md`). A due snapshot waits for at most one log write, so records that
        // keep coming cannot hold it back.
        self.finish_store_write(false);
        let snapshot_due = self.dirty && self.last_snapshot.elapsed() >= SNAPSHOT_EVERY;
        if snapshot_due && self.snapshot_passed_over {
            self.start_snapshot();
        }
        self.log_job_records();
        if snapshot_due {
            self.start_snapshot();
        }
        self.snapshot_passed_over = snapshot_due
            && matches!(
                self.store_write,
                Some(StoreWrite {
                    kind: WriteKind::Log { .. },
                    ..
                })
            );
        self.send_messages();
        // One input can make more events than the ring keeps (a 10,000-slot submission makes
        // tens of thousands): every quarter of the ring, readers get a turn to take what is
        // new before the ring moves past them.
        let mut burst = Burst::new(&self.stream);
        while let Some(cmd) = self.core.poll_command() {
            if let Some(d) = crate::events::command_event(self.core.node(), &cmd) {
                self.stream.push(d);
                burst.pushed().await;
            }
            match cmd {
                ExecCommand::Kill { task, .. } => {
                    if !self.runner.kill(task.clone()) {
                        // Never started here (or already gone): nothing to wait for.
                        self.answered.push_back((task, TaskEvent::Killed));
                    }
                }
                ExecCommand::Start { ref task, .. } => {
                    let task = task.clone();
                    self.metrics.task_start_requested();
                    self.starting.insert(task.clone(), Instant::now());
                    if let Err(refused) = self.runner.start(cmd) {
                        self.answered.push_back((task, refused));
                    }
                }
                ExecCommand::Checks { task, checks } => self.checker.start(task, checks),
                ExecCommand::StopChecks { task } => self.checker.stop(&task),
            }
        }
        while let Some(e) = self.core.poll_event() {
            self.stream.push(crate::events::sched_event(&e));
            burst.pushed().await;
        }
        // The core's queue overflowed (events left undrained between inputs): say so.
        let dropped = self.core.events_dropped();
        if dropped > self.events_dropped {
            let lost = dropped - self.events_dropped;
            self.events_dropped = dropped;
            tracing::warn!(
                lost,
                "the scheduler core dropped events before they were recorded"
            );
            self.stream
                .push(crate::events::core_dropped("scheduler", lost));
        }
        self.answer_waiters();
        self.publish_catalog();
        self.mirror_intent();
    }

    /// Rebuilds the services the last input touched and publishes the catalog if it changed.
    fn publish_catalog(&mut self) {
        if self.core.update_catalog(&mut self.catalog) {
            let after = Arc::new(self.catalog.catalog().clone());
            let before = self.catalog_tx.send_replace(after.clone());
            self.stream
                .extend(crate::events::catalog_events(&before, &after));
        }
    }

    fn send_messages(&mut self) {
        while let Some(out) = self.core.poll_message() {
            let bytes = out.message.encode();
            for to in out.to.iter() {
                self.peers.send(to, bytes.clone());
            }
        }
    }

    fn answer_waiters(&mut self) {
        use shoal_scheduler::Durability;
        let now = Instant::now();
        let mut keep = Vec::new();
        for w in std::mem::take(&mut self.waiters) {
            match self.core.durability(&w.receipt) {
                Durability::Durable => {
                    let _ = w.reply.send(Ok(w.receipt));
                }
                Durability::LocalOnly => {
                    let (job, stamp) = (w.receipt.job.clone(), w.receipt.version.clone());
                    let _ = w.reply.send(Err(SchedError::LocalOnly(job, stamp)));
                }
                Durability::Pending if now >= w.deadline => {
                    let (job, stamp) = (w.receipt.job.clone(), w.receipt.version.clone());
                    let _ = w
                        .reply
                        .send(Err(SchedError::NotReplicated(job, DURABLE_WAIT, stamp)));
                }
                Durability::Pending => keep.push(w),
            }
        }
        self.waiters = keep;
    }

    /// Starts writing the tables on the blocking pool, unless another store write runs (its
    /// end starts this one); the job log is emptied in the same transaction. Only the tables
    /// are encoded here: the write and its fsync (milliseconds, and over 100 ms while a batch
    /// keeps the disk busy) no longer stop this loop, and with it gossip, peers and the API.
    fn start_snapshot(&mut self) {
        if self.store_write.is_some() {
            return;
        }
        let (last, clock, bytes) = self.encode_snapshot();
        let store = self.store.clone();
        self.start_store_write(WriteKind::Snapshot { last, clock }, move || {
            store.put_snapshot(&bytes)
        });
    }

    /// The tables as a snapshot: the last batch handed out (which it holds, with every
    /// earlier one), their clock and their bytes.
    fn encode_snapshot(&mut self) -> (Option<u64>, shoal_scheduler::VersionVector, Vec<u8>) {
        self.take_job_records();
        let last = self.unlogged.last().map(|b| b.batch);
        let clock = self.core.tables().clock().clone();
        (last, clock, self.core.snapshot())
    }

    /// A snapshot of the tables as of `clock` is stored: the batches it holds are durable,
    /// and the tables are dirty again only if they moved since.
    fn snapshot_written(&mut self, last: Option<u64>, clock: shoal_scheduler::VersionVector) {
        self.last_snapshot = Instant::now();
        self.dirty = self.core.tables().clock() != &clock;
        self.snapshot_clock = clock;
        self.store_failed_at = None;
        if let Some(last) = last {
            self.persisted_through(last);
        }
    }

    /// The last snapshot, at shutdown: written here and now, after any write in flight.
    fn write_final_snapshot(&mut self) {
        self.finish_store_write(true);
        let (last, clock, bytes) = self.encode_snapshot();
        match self
            .store
            .put_final_snapshot(&bytes, self.core.actor().start)
        {
            Ok(()) => self.snapshot_written(last, clock),
            Err(e) => tracing::error!(error = %e, "cannot write the table snapshot"),
        }
    }
}
