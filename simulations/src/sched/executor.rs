//! One node's part of the scheduling world: its scheduler core, its simulated executor (a
//! process table) and its disk, which outlives a crash.

use std::collections::BTreeMap;

use bytes::Bytes;
use shoal_gossip::{Millis, Resources};
use shoal_scheduler::{
    ExecCommand, Message, Receipt, Scheduler, SchedulerConfig, TaskEvent, TaskKey,
};

/// One node's scheduler, executor and disk.
#[derive(Debug, Default)]
pub struct NodeSched {
    /// The production scheduler core, while the process exists (boxed, like the membership
    /// core: the world moves it out and back once per event).
    pub core: Option<Box<Scheduler>>,
    /// Simulated processes: task → reserved resources.
    pub running: BTreeMap<TaskKey, Resources>,
    /// The snapshot kept across a crash (the agent's data dir).
    pub disk: Option<Vec<u8>>,
    /// The job log kept across a crash (`Scheduler::poll_job_records`), by job.
    pub log: BTreeMap<String, Vec<u8>>,
    /// Submissions accepted here and not yet durable.
    pub receipts: Vec<Receipt>,
    /// When the core's next wake-up is queued for.
    pub(super) next_wake: Option<Millis>,
    /// Whether a feed is queued.
    pub(super) feed_armed: bool,
    /// Whether the membership view changed since the last feed.
    pub(super) members_dirty: bool,
}

impl NodeSched {
    /// The process went (crash or leave): the core's snapshot becomes the disk, the processes
    /// and the pending receipts die with it.
    pub(super) fn stop(&mut self) {
        if let Some(core) = self.core.take() {
            self.disk = Some(core.snapshot());
        }
        self.running.clear();
        self.receipts.clear();
        self.next_wake = None;
    }
}

/// What the simulated executor did with one command.
#[derive(Debug)]
pub(super) enum Executed {
    /// A process started; it exits by itself after the given time (batch) or never.
    Started(TaskKey, Option<u64>),
    /// A process was killed (or was not running).
    Killed(TaskKey),
}

/// Runs one executor command against a node's process table; `run_time` says how long a
/// started task runs before exiting by itself.
pub(super) fn execute(
    node: &mut NodeSched,
    cmd: ExecCommand,
    run_time: impl FnOnce(&TaskKey) -> Option<u64>,
) -> Executed {
    match cmd {
        ExecCommand::Start {
            task, resources, ..
        } => {
            let after = run_time(&task);
            node.running.insert(task.clone(), resources);
            Executed::Started(task, after)
        }
        ExecCommand::Kill { task, .. } => {
            node.running.remove(&task);
            Executed::Killed(task)
        }
    }
}

/// The event the executor reports for what it did.
#[must_use]
pub(super) fn report_of(executed: &Executed) -> (TaskKey, TaskEvent) {
    match executed {
        Executed::Started(task, _) => (task.clone(), TaskEvent::Started { pid: 1 }),
        Executed::Killed(task) => (task.clone(), TaskEvent::Killed),
    }
}

/// Sum of what node's processes reserve.
#[must_use]
pub fn reserved(node: &NodeSched) -> Resources {
    node.running
        .values()
        .fold(Resources::default(), |a, r| a.saturating_add(r))
}

/// Decodes a scheduler message as the receiving shell would. The ops keep their bytes as
/// slices of `bytes`, which every recipient of one broadcast shares.
pub(super) fn decode(bytes: &Bytes, config: &SchedulerConfig) -> Option<Message> {
    Message::decode_shared(bytes, &config.wire).ok()
}
