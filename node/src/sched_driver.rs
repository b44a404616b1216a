//! The task that owns the scheduler core: member views in, peer messages in and out over QUIC,
//! executor commands out and task events in, submissions from the API acknowledged once they
//! are durable, snapshots to the store.
//!
//! One tokio task owns [`Scheduler`]; the API talks to it through [`SchedHandle`]. After every
//! input it drains, in this order: peer messages, executor commands, durability waiters, and
//! (at a bounded rate) the snapshot. Allocations are not advertised: every placer counts them
//! from the replicated tables (`docs/scheduler.md`, "Release hold").

use std::sync::Arc;
use std::time::Duration;

use shoal_gossip::{MemberInfo, Resources};
use shoal_scheduler::{
    ExecCommand, JobSpec, JobView, Receipt, Scheduler, SchedulerConfig, TaskEvent, TaskKey,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::clock::Clock;
use crate::gossip_driver::GossipHandle;
use crate::peers::{Inbound, Peers};
use crate::store::Store;

/// How long a submission waits for a second holder before the client is told it is only
/// held locally.
const DURABLE_WAIT: Duration = Duration::from_secs(10);
/// Snapshots are written at most this often. Submissions do not wait for them (they are
/// committed to the store on their own before the ack); task states lost in a crash are
/// rebuilt from the processes found and from the peers' replicas.
const SNAPSHOT_EVERY: Duration = Duration::from_secs(2);

/// Where executor commands go. The agent plugs the process executor in; tests plug fakes.
pub trait TaskRunner: Send + 'static {
    /// Start the task; report what happens on the runner's event channel.
    fn start(&mut self, command: ExecCommand);
    /// Kill the task (SIGTERM, grace, SIGKILL); report `Killed` (or how it ended).
    fn kill(&mut self, task: TaskKey);
}

/// Why the API's request failed.
#[derive(Debug, thiserror::Error)]
pub enum SchedError {
    /// The spec was refused (invalid, or no node could ever host it).
    #[error("{0}")]
    Refused(String),
    /// No node could ever host one task.
    #[error("{0}")]
    NeverFits(String),
    /// No such job.
    #[error("{0}")]
    NotFound(String),
    /// The local store failed; nothing was acknowledged.
    #[error("{0}")]
    Storage(String),
    /// Held and persisted here, but no other live node confirmed it in time.
    #[error(
        "job {0} is accepted and persisted on this node, but no other live node confirmed holding it within {1:?}; it will keep replicating"
    )]
    NotReplicated(String, Duration),
    /// The scheduler task is gone (the agent is stopping).
    #[error("the scheduler is stopping")]
    Stopping,
}

enum Request {
    Submit(Box<JobSpec>, oneshot::Sender<Result<Receipt, SchedError>>),
    Stop(String, oneshot::Sender<Result<Receipt, SchedError>>),
    Job(String, oneshot::Sender<Option<JobView>>),
    Jobs(oneshot::Sender<Vec<JobView>>),
    Stats(oneshot::Sender<serde_json::Value>),
    Usage(Vec<String>, oneshot::Sender<Vec<Resources>>),
    TaskKey(String, u32, oneshot::Sender<Option<(TaskKey, String)>>),
}

/// A cloneable handle on the scheduler task.
#[derive(Debug, Clone)]
pub struct SchedHandle {
    requests: mpsc::Sender<Request>,
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

    /// Stops a job.
    pub async fn stop(&self, id: String) -> Result<Receipt, SchedError> {
        self.ask(|tx| Request::Stop(id, tx))
            .await
            .unwrap_or(Err(SchedError::Stopping))
    }

    /// One job's view.
    pub async fn job(&self, id: String) -> Option<JobView> {
        self.ask(|tx| Request::Job(id, tx)).await.flatten()
    }

    /// Every job's view.
    pub async fn jobs(&self) -> Vec<JobView> {
        self.ask(Request::Jobs).await.unwrap_or_default()
    }

    /// The current attempt of a slot and the node it is placed on.
    pub async fn task_key(&self, job: String, slot: u32) -> Option<(TaskKey, String)> {
        self.ask(|tx| Request::TaskKey(job, slot, tx))
            .await
            .flatten()
    }

    /// Scheduler counters.
    pub async fn stats(&self) -> serde_json::Value {
        self.ask(Request::Stats).await.unwrap_or_default()
    }

    /// What live tasks hold on each of `nodes`, as this node's tables show it (zero when the
    /// scheduler is gone).
    pub async fn node_usage(&self, nodes: Vec<String>) -> Vec<Resources> {
        let n = nodes.len();
        self.ask(|tx| Request::Usage(nodes, tx))
            .await
            .unwrap_or_else(|| vec![Resources::default(); n])
    }
}

/// What the scheduler task needs.
pub struct SchedParts {
    /// The core (new or restored).
    pub core: Scheduler,
    /// Jobs accepted after the snapshot the core was restored from; submitted again.
    pub replay: Vec<JobSpec>,
    /// The durable store.
    pub store: Arc<Store>,
    /// The membership task (views in).
    pub gossip: GossipHandle,
    /// Peer transport.
    pub peers: Peers,
    /// Frames from peers.
    pub inbound: mpsc::Receiver<Inbound>,
    /// The executor.
    pub runner: Box<dyn TaskRunner>,
    /// Executor observations.
    pub events: mpsc::Receiver<(TaskKey, TaskEvent)>,
    /// The clock.
    pub clock: Clock,
    /// Scheduler limits (wire bounds for decoding).
    pub config: SchedulerConfig,
}

impl std::fmt::Debug for SchedParts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchedParts").finish_non_exhaustive()
    }
}

/// Opens the store and builds the core: restored from the last snapshot (plus the jobs
/// accepted after it) or new.
pub fn load_core(
    store: &Store,
    node: &str,
    config: &SchedulerConfig,
    seed: u64,
) -> anyhow::Result<(Scheduler, Vec<JobSpec>)> {
    let core = match store.snapshot()? {
        Some(bytes) => Scheduler::restore(node.to_string(), config.clone(), seed, &bytes)
            .map_err(|e| anyhow::anyhow!("cannot restore the scheduler tables: {e}"))?,
        None => Scheduler::new(node.to_string(), config.clone(), seed),
    };
    let mut replay = Vec::new();
    for (id, bytes) in store.jobs()? {
        match serde_json::from_slice::<JobSpec>(&bytes) {
            Ok(spec) => replay.push(spec),
            Err(e) => {
                tracing::error!(job = %id, error = %e, "unreadable accepted job in the store")
            }
        }
    }
    Ok((core, replay))
}

/// Spawns the scheduler task.
pub fn spawn(
    parts: SchedParts,
    shutdown: watch::Receiver<bool>,
) -> (SchedHandle, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(1024);
    let members = parts.gossip.watch_members();
    let driver = Driver::new(parts);
    let span = tracing::info_span!("sched", node = %driver.core.node());
    let task = tokio::spawn(tracing::Instrument::instrument(
        driver.run(rx, members, shutdown),
        span,
    ));
    (SchedHandle { requests: tx }, task)
}

struct Waiter {
    receipt: Receipt,
    reply: oneshot::Sender<Result<Receipt, SchedError>>,
    deadline: Instant,
}

struct Driver {
    core: Scheduler,
    replay: Vec<JobSpec>,
    store: Arc<Store>,
    peers: Peers,
    inbound: mpsc::Receiver<Inbound>,
    runner: Box<dyn TaskRunner>,
    events: mpsc::Receiver<(TaskKey, TaskEvent)>,
    clock: Clock,
    config: SchedulerConfig,
    waiters: Vec<Waiter>,
    /// The tables changed since the last snapshot (their version vector moved). Messages that
    /// change nothing, such as anti-entropy digests between replicas in sync, do not count:
    /// they arrive every second and a snapshot costs an fsync.
    dirty: bool,
    snapshot_clock: shoal_scheduler::VersionVector,
    last_snapshot: Instant,
}

impl Driver {
    fn new(p: SchedParts) -> Self {
        Driver {
            core: p.core,
            replay: p.replay,
            store: p.store,
            peers: p.peers,
            inbound: p.inbound,
            runner: p.runner,
            events: p.events,
            clock: p.clock,
            config: p.config,
            waiters: Vec::new(),
            dirty: true,
            snapshot_clock: shoal_scheduler::VersionVector::new(),
            last_snapshot: Instant::now(),
        }
    }

    async fn run(
        mut self,
        mut requests: mpsc::Receiver<Request>,
        mut members: watch::Receiver<Vec<MemberInfo>>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let view = members.borrow_and_update().clone();
        self.core.handle_members(self.clock.now(), &view);
        for spec in std::mem::take(&mut self.replay) {
            let id = spec.id.clone();
            match self.core.submit(self.clock.now(), spec) {
                Ok(_) => tracing::info!(job = %id, "re-applied a job accepted before the restart"),
                Err(e) => tracing::error!(job = %id, error = %e, "cannot re-apply an accepted job"),
            }
        }
        loop {
            let deadline = self.next_deadline();
            tokio::select! {
                _ = shutdown.changed() => break,
                Ok(()) = members.changed() => {
                    let view = members.borrow_and_update().clone();
                    self.core.handle_members(self.clock.now(), &view);
                }
                Some(frame) = self.inbound.recv() => self.on_frame(frame),
                Some((task, event)) = self.events.recv() => {
                    self.core.handle_task_event(self.clock.now(), task, event);
                }
                Some(req) = requests.recv() => self.on_request(req),
                () = tokio::time::sleep_until(deadline) => self.core.handle_timeout(self.clock.now()),
            }
            self.drain().await;
        }
        self.write_snapshot();
    }

    fn next_deadline(&self) -> Instant {
        let far = Instant::now() + Duration::from_secs(3600);
        let core = self
            .core
            .poll_timeout()
            .map_or(far, |at| self.clock.instant_of(at).into());
        let waiter = self.waiters.iter().map(|w| w.deadline).min().unwrap_or(far);
        let snapshot = if self.dirty {
            self.last_snapshot + SNAPSHOT_EVERY
        } else {
            far
        };
        core.min(waiter).min(snapshot)
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
            Request::Stop(id, reply) => {
                let result = self
                    .core
                    .stop_job(now, &id)
                    .map_err(|e| SchedError::NotFound(e.to_string()));
                let _ = reply.send(result);
            }
            Request::Job(id, reply) => {
                let _ = reply.send(self.core.job(&id));
            }
            Request::Jobs(reply) => {
                let _ = reply.send(self.core.jobs());
            }
            Request::TaskKey(job, slot, reply) => {
                let _ = reply.send(self.current_attempt(&job, slot));
            }
            Request::Stats(reply) => {
                let _ = reply.send(serde_json::to_value(self.core.stats()).unwrap_or_default());
            }
            Request::Usage(nodes, reply) => {
                let _ = reply.send(nodes.iter().map(|n| self.core.node_usage(n)).collect());
            }
        }
    }

    fn current_attempt(&self, job: &str, slot: u32) -> Option<(TaskKey, String)> {
        let tables = self.core.tables();
        tables
            .assignments()
            .filter(|(id, _)| id.job == job && id.slot == slot)
            .max_by(|a, b| a.0.cmp(b.0))
            .map(|(id, a)| (id.clone(), a.target.to_string()))
    }

    /// Accepts a job: the spec is committed to the store *before* the core writes it, so a
    /// crash right after the acknowledgement finds it on restart; then the client waits for a
    /// second holder.
    fn submit(&mut self, spec: JobSpec, reply: oneshot::Sender<Result<Receipt, SchedError>>) {
        let encoded = match serde_json::to_vec(&spec) {
            Ok(b) => b,
            Err(e) => {
                let _ = reply.send(Err(SchedError::Refused(e.to_string())));
                return;
            }
        };
        if let Err(e) = spec.validate() {
            let _ = reply.send(Err(SchedError::Refused(e.to_string())));
            return;
        }
        if let Err(e) = self.store.put_job(&spec.id, &encoded) {
            let _ = reply.send(Err(SchedError::Storage(format!("job not accepted: {e}"))));
            return;
        }
        let id = spec.id.clone();
        match self.core.submit(self.clock.now(), spec) {
            Ok(receipt) => {
                self.waiters.push(Waiter {
                    receipt,
                    reply,
                    deadline: Instant::now() + DURABLE_WAIT,
                });
            }
            Err(e) => {
                let _ = self.store.remove_job(&id);
                let refusal = match e {
                    shoal_scheduler::SubmitError::NeverFits(e) => {
                        SchedError::NeverFits(e.to_string())
                    }
                    other => SchedError::Refused(other.to_string()),
                };
                let _ = reply.send(Err(refusal));
            }
        }
    }

    async fn drain(&mut self) {
        if !self.dirty && self.core.tables().clock() != &self.snapshot_clock {
            self.dirty = true;
        }
        while let Some(out) = self.core.poll_message() {
            let bytes = out.message.encode();
            for to in &out.to {
                self.peers.send(to, bytes.clone());
            }
        }
        while let Some(cmd) = self.core.poll_command() {
            match cmd {
                ExecCommand::Kill { task, .. } => self.runner.kill(task),
                start @ ExecCommand::Start { .. } => self.runner.start(start),
            }
        }
        self.answer_waiters();
        if self.dirty && self.last_snapshot.elapsed() >= SNAPSHOT_EVERY {
            self.write_snapshot();
        }
    }

    fn answer_waiters(&mut self) {
        let now = Instant::now();
        let mut keep = Vec::new();
        for w in std::mem::take(&mut self.waiters) {
            if self.core.is_durable(&w.receipt) {
                let _ = w.reply.send(Ok(w.receipt));
            } else if now >= w.deadline {
                let job = w.receipt.job.clone();
                let _ = w
                    .reply
                    .send(Err(SchedError::NotReplicated(job, DURABLE_WAIT)));
            } else {
                keep.push(w);
            }
        }
        self.waiters = keep;
    }

    /// Writes the tables; jobs accepted before this snapshot no longer need their own record.
    fn write_snapshot(&mut self) {
        let bytes = self.core.snapshot();
        match self.store.put_snapshot(&bytes) {
            Ok(()) => {
                self.dirty = false;
                self.snapshot_clock = self.core.tables().clock().clone();
                if let Ok(jobs) = self.store.jobs() {
                    for (id, _) in jobs {
                        let _ = self.store.remove_job(&id);
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot write the table snapshot; will retry"),
        }
        self.last_snapshot = Instant::now();
    }
}
