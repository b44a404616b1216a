//! An in-memory cluster of [`Scheduler`]s for tests: a fake clock, a FIFO network that can lose
//! messages, a fake membership service and a fake executor per node.
//!
//! Every message goes through [`Message::encode`] / [`Message::decode_shared`], so the codec is
//! exercised on every hop. Everything is deterministic from the seed.
//!
//! ```
//! use shoal_scheduler::testing::Cluster;
//! use shoal_scheduler::{JobSpec, TaskState};
//!
//! let mut c = Cluster::new(3, 4000, 4096, 1);
//! let spec = JobSpec::from_json_str(r#"{"id": "web", "type": "service", "count": 6,
//!     "command": "sleep", "args": ["600"], "resources": {"cpu": 100, "memory": 32}}"#).unwrap();
//! c.submit("n1", spec).unwrap();
//! assert!(c.run_until(10_000, |c| c.view("n1", "web").is_some_and(|v| v.count_in(TaskState::Running) == 6)));
//! ```

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{Ipv4Addr, SocketAddr};

use shoal_gossip::{MemberInfo, MemberStatus, Millis, NodeId, Quorum, ResourceAd, Resources};

use crate::config::SchedulerConfig;
use crate::drain_intent::{NodeChange, NodeError};
use crate::durability::Receipt;
use crate::hash::Rng;
use crate::ids::AttemptId;
use crate::jobs::{Prepared, SubmitError};
use crate::message::Message;
use crate::scheduler::{ExecCommand, Scheduler, TaskEvent};
use crate::spec::JobSpec;
use crate::view::JobView;

/// How a fake process behaves once started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behavior {
    /// Runs until killed.
    RunForever,
    /// Still launching: no event until the test reports one ([`Cluster::report`]); a kill is
    /// only noted ([`Node::held_kills`]), as by an executor whose launch the kill raced.
    Held,
    /// Exits by itself after `ms` with `code`.
    ExitAfter {
        /// Run time.
        ms: u64,
        /// Exit code.
        code: i32,
    },
}

/// A record of one fake process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessRecord {
    /// The task.
    pub task: AttemptId,
    /// The node it ran on.
    pub node: String,
    /// How it ended (`None` while running).
    pub outcome: Option<TaskEvent>,
    /// The arguments it was started with.
    pub args: Vec<String>,
    /// The environment it was started with.
    pub env: BTreeMap<String, String>,
}

/// One simulated agent.
#[derive(Debug)]
pub struct Node {
    /// The core under test.
    pub sched: Scheduler,
    /// Advertised capacity.
    pub capacity: Resources,
    /// Advertised attributes.
    pub attributes: BTreeMap<String, String>,
    /// Crashed nodes process nothing.
    pub up: bool,
    /// Running fake processes and their reservations.
    pub running: BTreeMap<AttemptId, Resources>,
    /// Health checks the core asked this node's executor to run, by task (the harness runs
    /// none: tests report results with [`Cluster::check_result`]).
    pub checks: BTreeMap<AttemptId, Vec<crate::health::ResolvedCheck>>,
    exits: BTreeSet<(Millis, AttemptId, i32)>,
    /// Tasks started with [`Behavior::Held`] that no event was reported for yet.
    held: BTreeSet<AttemptId>,
    /// Kills the core asked for while the task was held.
    pub held_kills: BTreeSet<AttemptId>,
    /// The node's job log (what [`Scheduler::poll_job_records`] asked to keep), by job: it
    /// survives a crash and is handed back on restart.
    pub log: BTreeMap<String, Vec<u8>>,
    /// Batches handed to a stalled disk ([`Cluster::stall_disk`]): not logged, not reported
    /// persisted, lost if the node crashes before [`Cluster::finish_disk_writes`].
    stalled: Option<Vec<crate::durability::JobRecords>>,
    last_members: Vec<MemberInfo>,
    last_quorum: Option<Quorum>,
    ad_version: u64,
    generation: u64,
    /// The ad's `draining` flag, mirroring the node's intent as the agent does.
    mirrored: bool,
}

/// The cluster harness.
pub struct Cluster {
    /// Virtual time.
    pub now: Millis,
    /// Nodes by name.
    pub nodes: BTreeMap<String, Node>,
    /// Every process ever started, in start order.
    pub processes: Vec<ProcessRecord>,
    /// Node names each node believes down (`declared_down[observer]`).
    pub declared_down: BTreeSet<String>,
    /// Per-observer disagreement: `believes_down[observer]` are shown as down to that observer
    /// only (a membership split without a network split).
    pub believes_down: BTreeMap<String, BTreeSet<String>>,
    /// Per-observer stale generations: `stale_generation[observer][name]` is the generation of
    /// `name` shown to that observer instead of the current one (it has not heard of a
    /// restart yet).
    pub stale_generation: BTreeMap<String, BTreeMap<String, u64>>,
    /// Directed links that drop every message: `(from, to)`.
    pub cut: BTreeSet<(String, String)>,
    /// Probability (per mille) that a message is lost.
    pub loss_permille: u64,
    /// Messages delivered so far.
    pub delivered: u64,
    /// Step length.
    pub tick_ms: u64,
    /// Decides what each started process does.
    pub behavior: Box<dyn Fn(&AttemptId) -> Behavior>,
    /// The quorum's `settle_ms` every node is given (0: act on a down member at once).
    pub settle_ms: u64,
    network: VecDeque<(String, String, Vec<u8>)>,
    rng: Rng,
    config: SchedulerConfig,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("now", &self.now)
            .field("nodes", &self.nodes.len())
            .finish()
    }
}

/// Test config: short periods so scenarios finish in little virtual time.
#[must_use]
pub fn fast_config() -> SchedulerConfig {
    use std::time::Duration;
    SchedulerConfig {
        anti_entropy_interval: Duration::from_millis(200),
        rejection_backoff_base: Duration::from_millis(10),
        rejection_backoff_max: Duration::from_millis(500),
        pending_retry_interval: Duration::from_millis(20),
        gc_grace: Duration::from_secs(5),
        tombstone_retention: Duration::from_secs(10),
        tombstone_check_interval: Duration::from_secs(1),
        release_hold: Duration::from_millis(50),
        // Short, so every harness test also runs with logs dropped under it.
        quiet_log_drop: Duration::from_secs(2),
        ..SchedulerConfig::default()
    }
}

impl Cluster {
    /// `n` nodes `n1..=n` with equal capacity (cpu millicores, memory MiB), every process
    /// running forever unless `behavior` is replaced.
    #[must_use]
    pub fn new(n: usize, cpu: u64, memory_mib: u64, seed: u64) -> Self {
        Self::with_config(n, cpu, memory_mib, seed, fast_config())
    }

    /// Like [`Cluster::new`] with a given scheduler config.
    #[must_use]
    pub fn with_config(
        n: usize,
        cpu: u64,
        memory_mib: u64,
        seed: u64,
        config: SchedulerConfig,
    ) -> Self {
        let mut rng = Rng::new(seed);
        let mut nodes = BTreeMap::new();
        for i in 1..=n {
            let name = format!("n{i}");
            let sched = Scheduler::new(name.clone(), config.clone(), rng.next_u64());
            nodes.insert(
                name,
                Node {
                    sched,
                    capacity: Resources {
                        cpu_millicores: cpu,
                        memory_mib,
                        disk_mib: 0,
                    },
                    attributes: BTreeMap::new(),
                    up: true,
                    running: BTreeMap::new(),
                    checks: BTreeMap::new(),
                    exits: BTreeSet::new(),
                    held: BTreeSet::new(),
                    held_kills: BTreeSet::new(),
                    log: BTreeMap::new(),
                    stalled: None,
                    last_members: Vec::new(),
                    last_quorum: None,
                    ad_version: 0,
                    generation: 1,
                    mirrored: false,
                },
            );
        }
        let mut c = Self {
            now: Millis(1_000),
            nodes,
            processes: Vec::new(),
            declared_down: BTreeSet::new(),
            believes_down: BTreeMap::new(),
            stale_generation: BTreeMap::new(),
            cut: BTreeSet::new(),
            loss_permille: 0,
            delivered: 0,
            tick_ms: 5,
            behavior: Box::new(|_| Behavior::RunForever),
            settle_ms: 0,
            network: VecDeque::new(),
            rng,
            config,
        };
        c.sync_members();
        c
    }

    /// Submit on one node.
    pub fn submit(&mut self, node: &str, spec: JobSpec) -> Result<Receipt, SubmitError> {
        let now = self.now;
        let n = self.nodes.get_mut(node).expect("unknown node");
        n.sched.submit(now, spec)
    }

    /// An operator's node command (`shoal node drain` / `eligibility`) accepted by `node`
    /// about node `name`: prepared, then committed (the harness logs its record with the
    /// next batch).
    pub fn node_command(
        &mut self,
        node: &str,
        name: &str,
        change: NodeChange,
    ) -> Result<(), NodeError> {
        let now = self.now;
        let n = self.nodes.get_mut(node).expect("unknown node");
        if let Prepared::Write(w) = n.sched.prepare_node(now, name, change)? {
            n.sched.commit(now, *w);
        }
        Ok(())
    }

    /// Stop a job on one node.
    pub fn stop(&mut self, node: &str, job: &str) {
        let now = self.now;
        let n = self.nodes.get_mut(node).expect("unknown node");
        n.sched.stop_job(now, job).expect("stop");
    }

    /// The view of a job from one node.
    #[must_use]
    pub fn view(&self, node: &str, job: &str) -> Option<JobView> {
        self.nodes.get(node)?.sched.job(job)
    }

    /// Crash a node: it stops processing, its processes vanish, messages to it are lost.
    pub fn crash(&mut self, name: &str) {
        if let Some(n) = self.nodes.get_mut(name) {
            n.up = false;
            n.running.clear();
            n.checks.clear();
            n.exits.clear();
            n.held.clear();
            n.held_kills.clear();
            // What a stalled disk had not written is gone; the disk comes back working.
            n.stalled = None;
        }
    }

    /// From now on `name`'s job-log writes do not finish: the core's batches wait, unlogged
    /// and not reported persisted, until [`Cluster::finish_disk_writes`] (a disk stuck in
    /// `fsync`).
    pub fn stall_disk(&mut self, name: &str) {
        if let Some(n) = self.nodes.get_mut(name) {
            n.stalled.get_or_insert_with(Vec::new);
        }
    }

    /// `name`'s stalled writes finish, in order, and its disk works at once again.
    pub fn finish_disk_writes(&mut self, name: &str) {
        let now = self.now;
        let Some(n) = self.nodes.get_mut(name) else {
            return;
        };
        for batch in n.stalled.take().unwrap_or_default() {
            Self::write_log(n, now, batch);
        }
    }

    fn write_log(n: &mut Node, now: Millis, batch: crate::durability::JobRecords) {
        for r in batch.records {
            if r.bytes.is_empty() {
                n.log.remove(&r.job);
            } else {
                n.log.insert(r.job, r.bytes);
            }
        }
        n.sched.handle_persisted(now, batch.batch);
    }

    /// Let SWIM declare a node down on every other node.
    pub fn declare_down(&mut self, name: &str) {
        self.declared_down.insert(name.to_string());
        self.sync_members();
    }

    /// Split the network: nodes of different groups neither exchange messages nor see each
    /// other alive (nodes in no group form one more group).
    pub fn partition(&mut self, groups: &[&[&str]]) {
        let group_of = |n: &str| {
            groups
                .iter()
                .position(|g| g.contains(&n))
                .unwrap_or(groups.len())
        };
        let names: Vec<String> = self.nodes.keys().cloned().collect();
        for a in &names {
            for b in &names {
                if group_of(a) != group_of(b) {
                    self.cut.insert((a.clone(), b.clone()));
                    self.believes_down
                        .entry(a.clone())
                        .or_default()
                        .insert(b.clone());
                }
            }
        }
        self.sync_members();
    }

    /// Undo every partition: all links work, every node sees every other alive again.
    pub fn heal(&mut self) {
        self.cut.clear();
        self.believes_down.clear();
        self.sync_members();
    }

    /// Restart a crashed node from a snapshot (or empty when `snapshot` is `None`).
    pub fn restart(&mut self, name: &str, snapshot: Option<&[u8]>) {
        self.restart_node(name, snapshot, false, false);
    }

    /// Restart a crashed node as an agent with a lost data dir starts (no snapshot, no job
    /// log), given a cluster to join (`joins`: it catches up first) or not (on first contact).
    pub fn restart_empty(&mut self, name: &str, joins: bool) {
        if let Some(n) = self.nodes.get_mut(name) {
            n.log.clear();
        }
        self.restart_node(name, None, false, joins);
    }

    /// Restart a node's agent from a snapshot while its processes run on: the restarted
    /// scheduler adopts them (`handle_recovered_tasks`).
    pub fn restart_agent(&mut self, name: &str, snapshot: &[u8]) {
        self.restart_node(name, Some(snapshot), true, false);
    }

    fn restart_node(&mut self, name: &str, snapshot: Option<&[u8]>, adopt: bool, joins: bool) {
        let seed = self.rng.next_u64();
        let now = self.now;
        let config = self.config.clone();
        let Some(n) = self.nodes.get_mut(name) else {
            return;
        };
        // As `node::load_core` builds it.
        n.sched = match snapshot {
            Some(bytes) => Scheduler::restore(name.into(), config, seed, bytes).expect("restore"),
            None => Scheduler::new(name.to_string(), config, seed),
        };
        match (snapshot, joins) {
            (Some(_), _) => {}
            (None, true) => n.sched.catch_up_before_acting(),
            (None, false) => n.sched.catch_up_on_first_contact(),
        }
        let unreadable = n
            .sched
            .restore_job_records(n.log.values().map(Vec::as_slice));
        assert_eq!(unreadable, 0, "the harness logs only what the core gave it");
        n.up = true;
        n.generation += 1;
        n.last_members.clear();
        n.last_quorum = None;
        let found: Vec<AttemptId> = n.running.keys().filter(|_| adopt).cloned().collect();
        n.sched.handle_recovered_tasks(now, &found);
        self.declared_down.remove(name);
        self.sync_members();
    }

    fn member_list(&self, observer: &str) -> Vec<MemberInfo> {
        self.nodes
            .iter()
            .enumerate()
            .map(|(i, (name, n))| {
                let down = (self.declared_down.contains(name)
                    || self
                        .believes_down
                        .get(observer)
                        .is_some_and(|d| d.contains(name)))
                    && name != observer;
                let generation = self
                    .stale_generation
                    .get(observer)
                    .and_then(|g| g.get(name))
                    .copied()
                    .unwrap_or(n.generation);
                MemberInfo {
                    id: NodeId {
                        name: name.as_str().into(),
                        addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 7000 + i as u16)),
                        generation,
                    },
                    status: if down {
                        MemberStatus::Down
                    } else {
                        MemberStatus::Alive
                    },
                    ad: Some(ResourceAd {
                        node: name.as_str().into(),
                        generation,
                        version: n.ad_version,
                        capacity: n.capacity,
                        attributes: n.attributes.clone().into(),
                        draining: n.mirrored,
                        left: false,
                        quic_addr: None,
                        http_addr: None,
                        gossip_addr: None,
                        port_range: None,
                    }),
                    last_update: Millis(0),
                }
            })
            .collect()
    }

    /// Feed every live node the current membership if it changed.
    pub fn sync_members(&mut self) {
        // Each ad mirrors its node's intent, as the agent's does (a new ad version).
        for n in self.nodes.values_mut().filter(|n| n.up) {
            let refuses = n.sched.refuses_work();
            if refuses != n.mirrored {
                n.mirrored = refuses;
                n.ad_version += 1;
            }
        }
        let names: Vec<String> = self.nodes.keys().cloned().collect();
        for name in names {
            let list = self.member_list(&name);
            let now = self.now;
            let n = self.nodes.get_mut(&name).expect("node");
            if !n.up {
                continue;
            }
            if n.last_members != list {
                // The quorum first, as the agent's driver does: a view showing most members
                // down is never acted on under the quorum from before it.
                let quorum = quorum_of(&list, now, n.last_quorum.as_ref(), self.settle_ms);
                if n.last_quorum.as_ref() != Some(&quorum) {
                    n.sched.handle_quorum(now, &quorum);
                    n.last_quorum = Some(quorum);
                }
                n.sched.handle_members(now, &list);
                n.last_members = list;
            }
        }
    }

    /// One step: drain outputs, deliver messages, run the executors, advance time, fire timers.
    pub fn step(&mut self) {
        self.drain_outputs();
        self.deliver();
        self.drain_outputs();
        self.now = self.now.plus_ms(self.tick_ms);
        self.fire_exits();
        self.fire_timers();
        self.sync_members();
    }

    /// Step until `pred` holds or `max_ms` of virtual time passed. Returns whether it held.
    pub fn run_until(&mut self, max_ms: u64, mut pred: impl FnMut(&Cluster) -> bool) -> bool {
        let deadline = self.now.plus_ms(max_ms);
        while self.now < deadline {
            if pred(self) {
                return true;
            }
            self.step();
        }
        pred(self)
    }

    /// Step for `ms` of virtual time, checking `always` after every step.
    pub fn run_for(&mut self, ms: u64, mut always: impl FnMut(&Cluster)) {
        let deadline = self.now.plus_ms(ms);
        while self.now < deadline {
            self.step();
            always(self);
        }
    }

    fn drain_outputs(&mut self) {
        let names: Vec<String> = self.nodes.keys().cloned().collect();
        for name in names {
            loop {
                let now = self.now;
                let n = self.nodes.get_mut(&name).expect("node");
                if !n.up {
                    break;
                }
                if let Some(batch) = n.sched.poll_job_records() {
                    // Logged at once (the harness's disk never fails), unless it is stalled.
                    match n.stalled.as_mut() {
                        Some(waiting) => waiting.push(batch),
                        None => Self::write_log(n, now, batch),
                    }
                    continue;
                }
                if let Some(out) = n.sched.poll_message() {
                    let bytes = out.message.encode();
                    for to in out.to.iter() {
                        self.network
                            .push_back((name.clone(), to.to_string(), bytes.clone()));
                    }
                    continue;
                }
                let Some(cmd) = n.sched.poll_command() else {
                    break;
                };
                self.execute(&name, now, cmd);
            }
        }
    }

    fn execute(&mut self, name: &str, now: Millis, cmd: ExecCommand) {
        let behavior = match &cmd {
            ExecCommand::Start { task, .. } => Some((self.behavior)(task)),
            _ => None,
        };
        let n = self.nodes.get_mut(name).expect("node");
        match cmd {
            ExecCommand::Start {
                task,
                resources,
                args,
                env,
                ..
            } => {
                n.running.insert(task.clone(), resources);
                self.processes.push(ProcessRecord {
                    task: task.clone(),
                    node: name.to_string(),
                    outcome: None,
                    args,
                    env,
                });
                match behavior {
                    Some(Behavior::ExitAfter { ms, code }) => {
                        n.exits.insert((now.plus_ms(ms), task.clone(), code));
                    }
                    Some(Behavior::Held) => {
                        n.held.insert(task);
                        return;
                    }
                    _ => {}
                }
                n.sched
                    .handle_task_event(now, task, TaskEvent::Started { pid: 1000 });
            }
            ExecCommand::Kill { task, .. } if n.held.contains(&task) => {
                n.held_kills.insert(task);
            }
            ExecCommand::Kill { task, .. } => {
                if n.running.remove(&task).is_some() {
                    n.exits.retain(|(_, t, _)| *t != task);
                    record(&mut self.processes, name, &task, TaskEvent::Killed);
                }
                n.sched.handle_task_event(now, task, TaskEvent::Killed);
            }
            ExecCommand::Checks { task, checks } => {
                n.checks.insert(task, checks);
            }
            ExecCommand::StopChecks { task } => {
                n.checks.remove(&task);
            }
        }
    }

    /// Reports `event` for a task held on `node` ([`Behavior::Held`]), as its executor would
    /// once the launch ends; an event that ends the task releases it.
    pub fn report(&mut self, node: &str, task: AttemptId, event: TaskEvent) {
        let now = self.now;
        let n = self.nodes.get_mut(node).expect("node");
        if !matches!(event, TaskEvent::Started { .. }) {
            n.held.remove(&task);
            n.running.remove(&task);
            record(&mut self.processes, node, &task, event.clone());
        }
        n.sched.handle_task_event(now, task, event);
    }

    /// Reports a health check result for a task on `node`, as its executor would.
    pub fn check_result(
        &mut self,
        node: &str,
        task: &AttemptId,
        check: u8,
        result: crate::health::CheckResult,
    ) {
        let now = self.now;
        let n = self.nodes.get_mut(node).expect("node");
        n.sched
            .handle_check_result(now, task.clone(), check, result);
    }

    fn deliver(&mut self) {
        let batch: Vec<(String, String, Vec<u8>)> = self.network.drain(..).collect();
        for (from, to, bytes) in batch {
            if self.loss_permille > 0 && self.rng.below(1000) < self.loss_permille {
                continue;
            }
            let now = self.now;
            let limits = self.config.wire;
            let Some(n) = self.nodes.get_mut(&to) else {
                continue;
            };
            if !n.up
                || !self.nodes.get(&from).is_some_and(|f| f.up)
                || self.cut.contains(&(from.clone(), to.clone()))
            {
                continue;
            }
            let bytes = bytes::Bytes::from(bytes);
            let msg = Message::decode_shared(&bytes, &limits).expect("own messages decode");
            let n = self.nodes.get_mut(&to).expect("node");
            n.sched.handle_message(now, &from, msg);
            self.delivered += 1;
        }
    }

    fn fire_exits(&mut self) {
        let now = self.now;
        let names: Vec<String> = self.nodes.keys().cloned().collect();
        for name in names {
            let n = self.nodes.get_mut(&name).expect("node");
            while n.exits.first().is_some_and(|(at, _, _)| *at <= now) {
                let Some((_, task, code)) = n.exits.pop_first() else {
                    break;
                };
                n.running.remove(&task);
                n.sched
                    .handle_task_event(now, task.clone(), TaskEvent::Exited { code });
                record(
                    &mut self.processes,
                    &name,
                    &task,
                    TaskEvent::Exited { code },
                );
            }
        }
    }

    fn fire_timers(&mut self) {
        let now = self.now;
        for n in self.nodes.values_mut().filter(|n| n.up) {
            if n.sched.poll_timeout().is_some_and(|t| t <= now) {
                n.sched.handle_timeout(now);
            }
        }
    }

    /// Panics if any node holds more than its capacity, by its ledger, by its own replicated
    /// table, or by the fake processes actually running.
    pub fn assert_no_overcommit(&self) {
        for (name, n) in self.nodes.iter().filter(|(_, n)| n.up) {
            let ledger = n.sched.local_allocated();
            assert!(
                ledger.fits_in(&n.capacity),
                "{name}: ledger {ledger:?} > {:?}",
                n.capacity
            );
            let procs = n
                .running
                .values()
                .fold(Resources::default(), |a, r| a.saturating_add(r));
            assert!(
                procs.fits_in(&n.capacity),
                "{name}: processes {procs:?} > {:?}",
                n.capacity
            );
            let t = n.sched.tables();
            let admitted = t
                .assignments()
                .filter(|(id, a)| {
                    a.target == *name
                        && matches!(
                            t.state(id),
                            crate::table::AttemptState::Admitted
                                | crate::table::AttemptState::Running { .. }
                        )
                })
                .fold(Resources::default(), |acc, (_, a)| {
                    acc.saturating_add(&a.resources)
                });
            assert!(
                admitted.fits_in(&n.capacity),
                "{name}: table admits {admitted:?} > {:?}",
                n.capacity
            );
        }
    }

    /// Fake processes running now, over all live nodes.
    #[must_use]
    pub fn running_count(&self) -> usize {
        self.nodes
            .values()
            .filter(|n| n.up)
            .map(|n| n.running.len())
            .sum()
    }

    /// Whether every live node holds identical tables.
    #[must_use]
    pub fn converged(&self) -> bool {
        let mut tables = self
            .nodes
            .values()
            .filter(|n| n.up)
            .map(|n| n.sched.tables());
        let Some(first) = tables.next() else {
            return true;
        };
        tables.all(|t| t == first)
    }

    /// A digest of every node's tables, for determinism checks.
    #[must_use]
    pub fn digest(&self) -> u64 {
        let mut h = crate::hash::StableHasher::new();
        for (name, n) in &self.nodes {
            h = h
                .field(name.as_bytes())
                .field(&postcard::to_stdvec(n.sched.tables()).unwrap_or_default());
        }
        h.finish()
    }
}

/// The quorum an observer has with this member list: every node counts, the ones not shown
/// down are reached (`docs/faults.md`; the membership core's probe and stall rules are not
/// modelled here). `since` moves only when `majority` changes.
fn quorum_of(list: &[MemberInfo], now: Millis, before: Option<&Quorum>, settle_ms: u64) -> Quorum {
    let known = u32::try_from(list.len()).unwrap_or(u32::MAX);
    let reachable = u32::try_from(
        list.iter()
            .filter(|m| matches!(m.status, MemberStatus::Alive | MemberStatus::Suspect))
            .count(),
    )
    .unwrap_or(u32::MAX);
    let majority = reachable * 2 > known;
    let since = match before {
        Some(b) if b.majority == majority => b.since,
        _ => now,
    };
    Quorum {
        known,
        reachable,
        majority,
        since,
        reason: (!majority).then(|| format!("sees {reachable} of {known} members")),
        settle_ms,
        stalled: false,
        just_declared_down: false,
    }
}

fn record(processes: &mut [ProcessRecord], node: &str, task: &AttemptId, event: TaskEvent) {
    if let Some(p) = processes
        .iter_mut()
        .rev()
        .find(|p| p.task == *task && p.node == node && p.outcome.is_none())
    {
        p.outcome = Some(event);
    }
}
