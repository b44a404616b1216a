//! The scheduling world: the production scheduler cores (`shoal_scheduler::Scheduler`), one per
//! node, each with a simulated executor and disk, and the measurements of their placement.
//!
//! Scheduling runs only in scenarios with a `[workload]`. Per node: the scheduler is fed the
//! membership core's `quorum()` at every change and before every members view, and its own
//! `members()` view (at most every [`FEED_MS`], as the agent would batch it), exactly as
//! `node/src/sched_driver.rs` does; its messages travel as reliable FIFO streams over the
//! simulated network (dropped while a partition cuts the pair; lost datagrams become
//! retransmission delay), and its executor commands start and kill simulated processes. A
//! start is asynchronous (`Started` comes after a drawn delay); a batch task exits with code 0
//! after the run time the workload drew for it; a service runs until killed. Placement counts
//! what the replicated tables hold on each node; the resource ad carries capacity, not
//! allocation.
//!
//! Processes belong to the machine: when the agent crashes (or is paused) they run on, and
//! the agent's watchdog kills them once its lease has not been renewed for
//! [`executor::ORPHAN_GRACE_MS`]. The disk holds the last snapshot written (at most every
//! [`executor::SNAPSHOT_EVERY_MS`], so a crash loses the last changes) and the job log
//! (written at once, as the agent fsyncs it before an acknowledgement); the restart restores
//! both and reports the processes that survived.
//!
//! # How the engine drives it
//!
//! The engine owns the clock, the event queue, the network and the nodes' ground truth. At
//! every call it lends them through a [`Host`]; the world never sees the engine itself and
//! answers only through the host (events to schedule, checker violations). The calls, all on
//! [`Workbench`]:
//!
//! - [`Workbench::new`] when the run is prepared, then [`Workbench::schedule_arrivals`] once;
//! - [`Workbench::handle_process_started`] when a node's process starts (first start or
//!   restart), [`Workbench::handle_process_stopped`] when it crashes or leaves,
//!   [`Workbench::handle_paused`] and [`Workbench::handle_resumed`] around a pause;
//! - [`Workbench::handle_members_changed`] when the node's membership core reported a change:
//!   **this is where membership enters the scheduler cores.** It marks the node's view stale
//!   and arms a feed; when the feed fires (`drive.rs`, `Workbench::feed`), the scheduler core
//!   gets the membership core's quorum ([`Host::quorum`], `handle_quorum`) and then its
//!   `members()` ([`Host::members`], `handle_members`);
//! - [`Workbench::handle_quorum_changed`] when the membership core's quorum changed: it is
//!   handed over at once, as the agent's watch channel does;
//! - [`Workbench::handle_event`] with each [`SchedEvent`] the world scheduled, when it is due;
//! - [`Workbench::sample`] at every sample of the run.
//!
//! The rooms: `executor.rs` (a node's scheduler, processes and disk), `drive.rs` (driving one
//! scheduler core: feed, outputs, messages, timers, submissions), `processes.rs` (the
//! simulated executor: asynchronous starts, exits, kills, orphans and the watchdog, the
//! restart path, snapshots), `watch.rs` (what the fault checkers watch: copies of each slot,
//! kills on the majority side, condemnations, services back at count), `sample.rs` (what is
//! looked at every sample), `tally.rs` (what is measured: starts, waits, utilization,
//! acknowledged jobs, and [`Quality`] from them), `probes.rs` (the executor's health checks
//! and the `hang` fault), `discovery.rs` (each node's service catalog against the truth:
//! `always_discovery_live_healthy`, `eventually_discovery_complete`), `drain.rs` (the
//! operator's node commands and the drain checkers) with what they remember in
//! `drain_watch.rs`.

mod discovery;
mod drain;
mod drain_watch;
mod drive;
mod executor;
mod probes;
mod processes;
mod sample;
mod serving;
mod tally;
pub(crate) mod trace;
mod watch;

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use rand::{RngExt, SeedableRng, rngs::StdRng};
use shoal_gossip::{MemberInfo, Millis, Quorum, Resources};
use shoal_scheduler::{AttemptId, Reconcile, SchedulerConfig};

use crate::scenario::{NodeShape, QuorumFeed, Services, Workload};
use crate::shared::{Quality, derive_seed};
use crate::workload::{self, JobArrival};

pub use drain_watch::{DrainSabotage, DrainWatch};
pub use executor::{NodeSched, Proc, reserved};
pub use serving::{DETECTION_MS, Discovery, DiscoverySabotage, REPLICATION_MS};
pub use tally::{DUPLICATE_SLACK_MS, OPS_IN_FLIGHT_MS, ROOM_SETTLE_MS, Tally, Watch};

/// Members and ad changes are handed over at most this often per node.
pub const FEED_MS: u64 = 500;

/// Whether a node's process runs, as the scheduling world needs to know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessState {
    /// Running.
    Running,
    /// Running but frozen: inputs are held.
    Paused,
    /// Not started, crashed or left.
    Down,
}

impl ProcessState {
    /// Running or paused: the process exists.
    #[must_use]
    pub fn is_up(self) -> bool {
        matches!(self, ProcessState::Running | ProcessState::Paused)
    }
}

/// A node's process as the engine sees it now.
#[derive(Debug, Clone, Copy)]
pub struct Process {
    /// Running, paused or down.
    pub state: ProcessState,
    /// Grows at every crash, restart and pause: events scheduled under an older era are stale.
    pub era: u64,
    /// Extra delay of everything the node does while it is slowed down.
    pub slow_ms: u64,
}

/// What the engine lends the scheduling world at each call.
pub trait Host {
    /// Virtual now.
    fn now(&self) -> Millis;
    /// Node `node`'s process.
    fn process(&self, node: usize) -> Process;
    /// The `members()` view of node `node`'s membership core, while that core exists.
    fn members(&self, node: usize) -> Option<Vec<MemberInfo>>;
    /// The `quorum()` of node `node`'s membership core, while that core exists.
    fn quorum(&self, node: usize) -> Option<Quorum>;
    /// Ground truth: node `node` runs (not paused) and reaches, both ways, a majority of the
    /// nodes the cluster knows (started once and not left; at exactly half, the half with the
    /// lowest index), as it does at every instant since `since`.
    fn majority_side_since(&self, node: usize, since: Millis) -> bool;
    /// Ground truth: node `node` exists but is not on the majority side now (cut off,
    /// paused).
    fn minority_side(&self, node: usize) -> bool;
    /// Ground truth: some partition was in force at some time in `[since, now]`.
    fn partitioned_since(&self, since: Millis) -> bool;
    /// Delay of one message on a reliable stream, or `None` while a partition cuts the pair.
    fn reliable_delay(&mut self, from: usize, to: usize) -> Option<u64>;
    /// Queues `event` for `at`; it comes back through [`Workbench::handle_event`].
    fn schedule(&mut self, at: Millis, event: SchedEvent);
    /// Records a violation of an `always_*` checker (the first one per checker is kept).
    fn violate(&mut self, check: &str, event: String);
    /// Tests only (`Sabotage::InvertFencing`): a superseded copy's kill order kills the slot's
    /// other copies instead.
    fn invert_fencing(&self) -> bool {
        false
    }
    /// Tests only (`Sabotage::DeafScheduler`): node `node`'s core hears no peer now.
    fn scheduler_deaf(&self, _node: usize) -> bool {
        false
    }
}

/// The scheduling world's own events, queued through [`Host::schedule`].
#[derive(Debug)]
pub enum SchedEvent {
    /// Arrival `k` of the workload is submitted to a running node.
    Submit(usize),
    /// Service `k` is re-submitted as this version (a rolling update).
    Update(usize, u32),
    /// Hand the node's scheduler core its membership view, if it changed.
    Feed {
        /// Node index.
        node: usize,
        /// The node's era when the feed was armed.
        era: u64,
    },
    /// The node's scheduler core asked to be woken now (`poll_timeout`).
    Wake {
        /// Node index.
        node: usize,
        /// The node's era when the wake-up was armed.
        era: u64,
    },
    /// A scheduler message arrives.
    Message {
        /// Receiving node.
        to: usize,
        /// Sending node.
        from: usize,
        /// Shared by every recipient of one broadcast.
        bytes: Bytes,
    },
    /// The executor has started a process (`Started` is reported now).
    TaskStarted {
        /// Node index.
        node: usize,
        /// The task.
        task: AttemptId,
        /// The process.
        pid: u64,
    },
    /// A simulated process exits by itself (a batch task, or a bad version's task).
    TaskExit {
        /// Node index.
        node: usize,
        /// The task.
        task: AttemptId,
        /// The process.
        pid: u64,
        /// Its exit code.
        code: i32,
    },
    /// The agent's watchdog lease runs out unless it was renewed since.
    Watchdog {
        /// Node index.
        node: usize,
        /// The lease it was armed under.
        lease: u64,
    },
    /// The agent writes its snapshot.
    Snapshot {
        /// Node index.
        node: usize,
        /// The lease (agent run) it was armed under.
        lease: u64,
    },
    /// A health check probes a task (`probes.rs`), or its result is in (`result`).
    Probe {
        /// Node index.
        node: usize,
        /// The task.
        task: AttemptId,
        /// The probe, and its result once it is in.
        probe: executor::ProbeRef,
        /// `None`: the probe starts; `Some`: its result is reported.
        result: Option<shoal_scheduler::CheckResult>,
    },
    /// A hung task answers again (`hang` with `for_s`).
    Unhang {
        /// Node index.
        node: usize,
        /// The task.
        task: AttemptId,
        /// The process.
        pid: u64,
    },
}

/// The scheduling world: every node's scheduler core, executor and disk, and the measurements.
#[derive(Debug)]
pub struct Workbench {
    /// The arrivals.
    pub jobs: Vec<JobArrival>,
    by_name: BTreeMap<String, usize>,
    /// Per node.
    pub nodes: Vec<NodeSched>,
    /// Scheduler configuration every node runs with.
    pub config: SchedulerConfig,
    /// What was measured.
    pub tally: Tally,
    /// The run's seed (scheduler cores' seeds derive from it).
    seed: u64,
    /// What every node really has (not what it advertises).
    capacity: Resources,
    /// Picks the running node each arrival is submitted to.
    submit_rng: StdRng,
    /// FIFO: last delivery time per (from, to). Looked up once per message (200 times per
    /// broadcast at 200 nodes), never iterated.
    link_clock: rustc_hash::FxHashMap<(usize, usize), Millis>,
    /// How the quorum reaches the cores.
    quorum_feed: QuorumFeed,
    /// Every job's `disconnect.stop_after_ms`, if the workload sets it.
    stop_after_ms: Option<u64>,
    /// Every job's `disconnect.reconcile`, if the workload sets it.
    reconcile: Option<Reconcile>,
    /// Rolling updates of the services, if the workload sets them.
    updates: Option<crate::scenario::Updates>,
    /// Sabotage: see [`Setup::ignore_window`].
    ignore_window: bool,
    /// Per arrival: the version last submitted (1 at arrival).
    versions: Vec<u32>,
    /// (arrival, version) pairs whose tasks fail (`[workload.updates] bad_fraction`).
    bad: BTreeSet<(usize, u32)>,
    /// Per node: whether it may restart, so its snapshots are written (nobody reads the
    /// others').
    keep_snapshots: Vec<bool>,
    /// Draws executor start delays.
    exec_rng: StdRng,
    /// The next process id.
    next_pid: u64,
    /// What the fault checkers watch.
    pub watch: Watch,
    /// Per arrival: its job's `disconnect.stop_after_ms` as the core reads it (`None`: the
    /// job keeps running when cut off).
    bounds: Vec<Option<u64>>,
    /// Ports and checks of the services, if the workload gives them.
    services: Option<Services>,
    /// Every service's `placement`, if the workload sets it.
    service_placement: Option<shoal_scheduler::PlacementStrategy>,
    /// Draws the tasks a `hang` fault hangs.
    hang_rng: StdRng,
    /// What `always_discovery_live_healthy` and `always_ports_unique` watch (with services).
    pub discovery: Discovery,
    /// What the drain checkers watch (with node commands in the script).
    pub drains: DrainWatch,
}

/// How the world is set up, beside the workload.
#[derive(Debug, Clone)]
pub struct Setup {
    /// Every node's real capacity.
    pub shape: NodeShape,
    /// Sample period.
    pub sample_ms: u64,
    /// How the quorum reaches the cores.
    pub quorum_feed: QuorumFeed,
    /// Per node: whether it may restart (its snapshots are then written).
    pub restarting: Vec<bool>,
    /// Sabotage: services are submitted with `max_parallel = 0` (everything at once) while
    /// `always_max_parallel` holds them to the scenario's.
    pub ignore_window: bool,
    /// When the `eventually_*` checkers are judged.
    pub check_from_ms: u64,
    /// Tests only: a deliberate bug in how catalogs are built or checks reported.
    pub discovery_sabotage: DiscoverySabotage,
    /// The script issues node commands (drains, eligibility): the drain checkers watch.
    pub drains: bool,
    /// Tests only: a deliberate bug in the drains.
    pub drain_sabotage: DrainSabotage,
}

impl Workbench {
    /// The world for `n` nodes running the arrivals `workload` draws from `seed`.
    #[must_use]
    pub fn new(n: usize, workload: &Workload, seed: u64, setup: Setup) -> Self {
        let Setup {
            shape,
            sample_ms,
            quorum_feed,
            restarting,
            ignore_window,
            check_from_ms,
            discovery_sabotage,
            drains,
            drain_sabotage,
        } = setup;
        let jobs = workload::generate(workload, seed);
        let by_name = jobs
            .iter()
            .enumerate()
            .map(|(k, j)| (j.name.clone(), k))
            .collect();
        let mut bench = Self {
            jobs,
            by_name,
            nodes: (0..n).map(|_| NodeSched::default()).collect(),
            config: SchedulerConfig::default(),
            tally: Tally::new(sample_ms),
            seed,
            capacity: Resources {
                cpu_millicores: shape.cpu_millicores,
                memory_mib: shape.memory_mib,
                disk_mib: shape.disk_mib,
            },
            submit_rng: StdRng::seed_from_u64(derive_seed(seed, 7, 0, 0)),
            link_clock: rustc_hash::FxHashMap::default(),
            quorum_feed,
            stop_after_ms: workload.stop_after_ms,
            reconcile: workload.reconcile,
            updates: workload.updates.clone(),
            ignore_window,
            versions: Vec::new(),
            bad: BTreeSet::new(),
            keep_snapshots: restarting,
            exec_rng: StdRng::seed_from_u64(derive_seed(seed, 8, 0, 0)),
            next_pid: 0,
            watch: Watch::new(),
            bounds: Vec::new(),
            services: workload.services.clone(),
            service_placement: workload.service_placement,
            hang_rng: StdRng::seed_from_u64(derive_seed(seed, 10, 0, 0)),
            discovery: Discovery::default(),
            drains: DrainWatch::default(),
        };
        bench.drains.enabled = drains;
        bench.drains.sabotage = drain_sabotage;
        bench.discovery.track = drains;
        bench.versions = vec![1; bench.jobs.len()];
        if let Some(s) = &bench.services {
            bench.discovery.enabled = true;
            bench.discovery.check_from_ms = check_from_ms;
            bench.discovery.sabotage = discovery_sabotage;
            bench.discovery.base_ms = s.interval_ms + s.timeout_ms + serving::REPLICATION_MS;
            bench.discovery.figures.bound_ms = bench.discovery.base_ms;
        }
        if let Some(u) = &bench.updates {
            for (k, _) in bench.jobs.iter().enumerate().filter(|(_, j)| j.service) {
                for (_, version) in u.schedule() {
                    let seed = derive_seed(seed, 9, k as u64, u64::from(version));
                    if StdRng::seed_from_u64(seed).random_bool(u.bad_fraction.clamp(0.0, 1.0)) {
                        bench.bad.insert((k, version));
                    }
                }
            }
        }
        bench.bounds = (0..bench.jobs.len())
            .map(|k| bench.spec(k).and_then(|s| s.stop_after_disconnect_ms()))
            .collect();
        bench
    }

    /// Queues every arrival's submission.
    pub fn schedule_arrivals(&self, host: &mut dyn Host) {
        for (k, job) in self.jobs.iter().enumerate() {
            host.schedule(Millis(job.at_ms), SchedEvent::Submit(k));
            if let Some(u) = self.updates.as_ref().filter(|_| job.service) {
                for (after, version) in u.schedule() {
                    let at = job.at_ms + after;
                    host.schedule(Millis(at), SchedEvent::Update(k, version));
                }
            }
        }
    }

    /// Node `i`'s process started as `generation`: its scheduler core starts from its disk
    /// (a fresh one on the first start) and learns which of its processes survived.
    pub fn handle_process_started(&mut self, host: &mut dyn Host, i: usize, generation: u64) {
        self.start_core(host, i, generation);
        self.arm_feed(host, i);
    }

    /// Node `i`'s process crashed (`graceful` false) or left: see [`NodeSched::stop`]; a
    /// crashed agent's processes run on until its watchdog stops them.
    pub fn handle_process_stopped(&mut self, host: &mut dyn Host, i: usize, graceful: bool) {
        self.agent_stopped(host, i, graceful);
    }

    /// Node `i`'s process was frozen: its tasks run on, its watchdog lease is not renewed.
    pub fn handle_paused(&mut self, host: &mut dyn Host, i: usize) {
        self.arm_watchdog(host, i);
    }

    /// Node `i`'s membership core has a new quorum: the scheduler core gets it at once (the
    /// agent's watch channel).
    pub fn handle_quorum_changed(&mut self, host: &mut dyn Host, i: usize) {
        if host.process(i).state != ProcessState::Running {
            return;
        }
        self.feed_quorum(host, i);
        self.drain(host, i);
    }

    /// Node `i`'s membership core reported a change: its scheduler core gets the new view at
    /// the next feed (at most [`FEED_MS`] from now). The membership feed enters here.
    pub fn handle_members_changed(&mut self, host: &mut dyn Host, i: usize) {
        self.nodes[i].members_dirty = true;
        self.arm_feed(host, i);
    }

    /// Node `i`'s pause ended: the watchdog lease is renewed, the executor reports what it
    /// saw meanwhile, and the scheduler core catches up on the time it missed.
    pub fn handle_resumed(&mut self, host: &mut dyn Host, i: usize) {
        self.nodes[i].lease += 1;
        self.nodes[i].up_since = host.now();
        self.nodes[i].snapshot_armed = false;
        self.report_unreported(host, i);
        self.wake_now(host, i);
        self.arm_feed(host, i);
    }

    /// One of the world's own events is due.
    pub fn handle_event(&mut self, host: &mut dyn Host, event: SchedEvent) {
        match event {
            SchedEvent::Submit(k) => self.submit(host, k),
            SchedEvent::Update(k, version) => self.update(host, k, version),
            SchedEvent::Feed { node, era } => self.feed(host, node, era),
            SchedEvent::Wake { node, era } => self.wake(host, node, era),
            SchedEvent::Message { to, from, bytes } => self.message(host, to, from, bytes),
            SchedEvent::TaskStarted { node, task, pid } => {
                self.task_started(host, node, task, pid);
            }
            SchedEvent::TaskExit {
                node,
                task,
                pid,
                code,
            } => self.task_exit(host, node, task, pid, code),
            SchedEvent::Watchdog { node, lease } => self.watchdog(host, node, lease),
            SchedEvent::Snapshot { node, lease } => self.snapshot_due(host, node, lease),
            SchedEvent::Probe {
                node,
                task,
                probe,
                result,
            } => self.probe(host, node, task, probe, result),
            SchedEvent::Unhang { node, task, pid } => self.unhang(host, node, &task, pid),
        }
    }

    /// One sample over the `up` nodes: utilization and pending work, submissions that became
    /// durable, the `always_acknowledged_jobs_kept` checker, duplicates that outlived their
    /// bound and services back at count after the last fault (`last_fault_ms`).
    pub fn sample(&mut self, host: &mut dyn Host, up: &[usize], last_fault_ms: u64) {
        let now = host.now();
        self.sample_load(now, up);
        self.acknowledge_durable(now, up);
        if let Some(event) = self.lost_acknowledged_job(host, up) {
            host.violate("always_acknowledged_jobs_kept", event);
        }
        self.check_duplicates(host);
        self.check_max_parallel(host);
        self.check_discovery(host);
        if now.0 > last_fault_ms {
            self.check_back_at_count(host, up);
        }
    }

    /// Shoal's placement quality over the run.
    #[must_use]
    pub fn quality(&self) -> Quality {
        self.tally.quality(&self.jobs)
    }
}
