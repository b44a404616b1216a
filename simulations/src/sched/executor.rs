//! One node's part of the scheduling world: its scheduler core, the machine's processes (which
//! outlive the agent until its watchdog stops them) and its disk, which outlives a crash.

use std::collections::BTreeMap;

use bytes::Bytes;
use shoal_gossip::{Millis, Resources};
use shoal_scheduler::{AttemptId, Message, Receipt, Scheduler, SchedulerConfig, VersionVector};

/// The agent writes its snapshot at most this often (`node/src/sched_driver.rs`,
/// `SNAPSHOT_EVERY`): a crash loses what changed since.
pub const SNAPSHOT_EVERY_MS: u64 = 2_000;

/// How long a task outlives an agent that stopped renewing its watchdog lease (crashed or
/// stopped) before the watchdog kills it (`docs/faults.md`, `orphan_grace`).
pub const ORPHAN_GRACE_MS: u64 = 10_000;

/// One simulated process on a machine.
#[derive(Debug, Clone)]
pub struct Proc {
    /// Distinguishes this process from an earlier one of the same task (events name it).
    pub pid: u64,
    /// What it reserves.
    pub resources: Resources,
    /// When the executor was asked to start it.
    pub started_at: Millis,
    /// The executor has reported it `Started` (the start is asynchronous).
    pub reported: bool,
    /// It was the only process of its slot anywhere when it started (not a replacement
    /// started while another copy still ran).
    pub sole: bool,
    /// Another copy of its slot started before this one's start was reported: the two
    /// coordinators placed the slot at once (views that disagree while a cluster forms), and
    /// neither copy was a running incumbent when the other was placed.
    pub raced: bool,
    /// Its agent is gone (crashed): only the watchdog can stop it now.
    pub orphan: bool,
    /// It runs a bad version of a service (`[workload.updates] bad_fraction`): it exits
    /// with code 1 a second after it starts, or fails its checks when the services have some.
    pub fails: bool,
    /// The host ports it holds (`SHOAL_PORT_*` of its start).
    pub ports: Vec<u16>,
    /// It hangs (the `hang` fault): alive, but its checks time out.
    pub hung: bool,
    /// It hung at some time (a restart for its failed checks may come after it answers again).
    pub was_hung: bool,
    /// Since when it serves (started, not failing, not hung): what discovery may list.
    pub serving_since: Option<Millis>,
    /// Grows whenever its checks are (re)started or stopped: older probes are dropped.
    pub probe_gen: u64,
}

impl Proc {
    /// Whether it answers: started and reported, not a bad version, not hung.
    #[must_use]
    pub fn serving(&self) -> bool {
        self.serving_since.is_some()
    }
}

/// One probe of one check of one process.
#[derive(Debug, Clone, Copy)]
pub struct ProbeRef {
    /// The process.
    pub(super) pid: u64,
    /// The process's `probe_gen` when its checks started.
    pub(super) generation: u64,
    /// The check's index.
    pub(super) check: u8,
    /// Its interval.
    pub(super) interval_ms: u64,
    /// Its timeout.
    pub(super) timeout_ms: u64,
    /// When this probe started (the next starts `interval_ms` after it).
    pub(super) started: Millis,
}

/// One node's scheduler, processes and disk.
#[derive(Debug, Default)]
pub struct NodeSched {
    /// The production scheduler core, while the process exists (boxed, like the membership
    /// core: the world moves it out and back once per event).
    pub core: Option<Box<Scheduler>>,
    /// The machine's processes: task → process. They belong to the machine, not to the
    /// agent: a crashed agent's processes run on until the watchdog stops them.
    pub running: BTreeMap<AttemptId, Proc>,
    /// When a process of this machine last ended or was killed (its free room grew).
    pub(super) released_at: Option<Millis>,
    /// The last snapshot written (the agent's data dir), and the tables' clock it holds.
    pub disk: Option<(Vec<u8>, VersionVector)>,
    /// The start whose last act that snapshot was (a graceful leave), as the agent's store
    /// marks it (`Store::put_final_snapshot`): the next start writes on as it.
    pub(super) final_writer: Option<u64>,
    /// When the last snapshot was written.
    pub(super) snapshot_at: Option<Millis>,
    /// A snapshot write is queued.
    pub(super) snapshot_armed: bool,
    /// The job log kept across a crash (`Scheduler::poll_job_records`), by job: written at
    /// once, as the agent fsyncs it before acknowledging.
    pub log: BTreeMap<String, Vec<u8>>,
    /// Submissions accepted here and not yet durable.
    pub receipts: Vec<Receipt>,
    /// Grows at every start and resume of the agent: a watchdog deadline armed under an older
    /// value was renewed in time.
    pub(super) lease: u64,
    /// Task events the executor observed while the agent was paused, reported at the resume.
    pub(super) unreported: Vec<(AttemptId, shoal_scheduler::TaskEvent)>,
    /// The highest counter of this incarnation's own ops already looked at
    /// (`always_minority_condemns_nobody`).
    pub(super) own_ops_seen: u64,
    /// When the core's next wake-up is queued for.
    pub(super) next_wake: Option<Millis>,
    /// Whether a feed is queued.
    pub(super) feed_armed: bool,
    /// Whether the membership view changed since the last feed.
    pub(super) members_dirty: bool,
    /// The service catalog this node's agent would serve (DNS, `/v1/services`), brought up to
    /// date at every sample (`discovery.rs`).
    pub(super) catalog: shoal_scheduler::CatalogBuilder,
    /// When the agent last started or resumed.
    pub(super) up_since: Millis,
    /// Per member: since when the core's view has shown it alive without a break.
    pub(super) alive_since: BTreeMap<String, Millis>,
}

impl NodeSched {
    /// The agent went. A crash leaves the last snapshot written on the disk (up to
    /// [`SNAPSHOT_EVERY_MS`] old) and the processes running as orphans; a graceful leave
    /// (whose processes `agent_stopped` has stopped already, their ends written) writes a
    /// last snapshot, marked as this start's last act. Pending receipts die either way.
    /// Returns the processes stopped.
    pub(super) fn stop(&mut self, graceful: bool) -> Vec<AttemptId> {
        let mut stopped = Vec::new();
        if let Some(core) = self.core.take()
            && graceful
        {
            self.disk = Some((core.snapshot(), core.tables().clock().clone()));
            self.final_writer = Some(core.actor().start);
        }
        if graceful {
            stopped = std::mem::take(&mut self.running).into_keys().collect();
        } else {
            // A start the executor had not completed dies with the agent.
            self.running.retain(|task, p| {
                if !p.reported {
                    stopped.push(task.clone());
                }
                p.reported
            });
            for p in self.running.values_mut() {
                p.orphan = true;
                // Its checks ran in the agent: they stop with it.
                p.probe_gen += 1;
            }
        }
        self.receipts.clear();
        self.unreported.clear();
        self.next_wake = None;
        self.snapshot_armed = false;
        stopped
    }
}

/// Sum of what node's processes reserve.
#[must_use]
pub fn reserved(node: &NodeSched) -> Resources {
    node.running
        .values()
        .fold(Resources::default(), |a, p| a.saturating_add(&p.resources))
}

/// Decodes a scheduler message as the receiving shell would. The ops keep their bytes as
/// slices of `bytes`, which every recipient of one broadcast shares.
pub(super) fn decode(bytes: &Bytes, config: &SchedulerConfig) -> Option<Message> {
    Message::decode_shared(bytes, &config.wire).ok()
}
