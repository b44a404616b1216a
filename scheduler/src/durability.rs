//! What an acknowledgement promises (`docs/faults.md`, "Acknowledgements mean what they
//! say"): every change to the jobs table is handed to the shell as a [`JobRecord`] to log
//! durably before anything acknowledges it. Acks to peers' writes are held until the shell
//! reports the batch that holds them logged ([`Scheduler::handle_persisted`]), and a local
//! write is [`Durability::Durable`] once it is logged here and a live peer acknowledged it
//! after logging it too.
//!
//! On restart the shell loads the snapshot, then hands every logged record back with
//! [`Scheduler::restore_job_records`]: the same entries with the same stamps are joined into
//! the tables, never submitted anew.

use serde::{Deserialize, Serialize};

use crate::ids::{Dot, Stamp};
use crate::message::{Message, Outgoing};
use crate::roles::Inflight;
use crate::scheduler::Scheduler;
use crate::table::{JobEntry, JobRowsV1, JobRowsV3, OpBody};

/// Proof of a local write, to wait for its durability with [`Scheduler::is_durable`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// Job id.
    pub job: String,
    /// The job write's stamp (its version).
    pub version: Stamp,
    /// The write's dot.
    pub dot: Dot,
}

/// The rows of one job in the jobs table, to log before they are acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRecord {
    /// Job id: the log's key (a newer record of a job replaces the older one).
    pub job: String,
    /// [`JobRows`] encoded; empty when the job has no live incarnation left (the shell then
    /// deletes the job's record).
    pub bytes: Vec<u8>,
}

/// A batch of records to log together (one fsync), named so the shell can report it done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRecords {
    /// Pass to [`Scheduler::handle_persisted`] once every record is durable.
    pub batch: u64,
    /// The records, one per job whose rows changed.
    pub records: Vec<JobRecord>,
}

/// Every live incarnation's newest write of one job, as logged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRows {
    /// `(incarnation, entry)`.
    pub rows: Vec<(u64, JobEntry)>,
}

/// How far a local write has gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// Logged here and held by another live node that logged it too.
    Durable,
    /// Logged here, and no other node is alive to hold it: only this node has it.
    LocalOnly,
    /// Not logged here yet, or no live peer has confirmed it yet.
    Pending,
}

impl Scheduler {
    /// The next batch of job records to log, if any job changed or an ack waits. Log them
    /// (replacing older records of the same jobs; an empty `bytes` deletes), make them durable,
    /// then call [`Scheduler::handle_persisted`] with the batch.
    pub fn poll_job_records(&mut self) -> Option<JobRecords> {
        if self.log.unlogged.is_empty() && self.log.held_acks.is_empty() {
            return None;
        }
        let jobs = std::mem::take(&mut self.log.unlogged);
        let records = jobs
            .into_iter()
            .map(|job| {
                if let Some(record) = self.node_record_now(&job) {
                    return record;
                }
                let rows: Vec<(u64, JobEntry)> = self
                    .tables()
                    .incarnations(&job)
                    .map(|(inc, e)| (inc, e.clone()))
                    .collect();
                let bytes = if rows.is_empty() {
                    Vec::new()
                } else {
                    postcard::to_stdvec(&JobRows { rows }).unwrap_or_default()
                };
                JobRecord {
                    job: job.to_string(),
                    bytes,
                }
            })
            .collect();
        let batch = self.log.next_batch;
        self.log.next_batch += 1;
        self.log.inflight.push_back(Inflight {
            batch,
            acks: std::mem::take(&mut self.log.held_acks),
            own_counter: self.repl.counter,
        });
        Some(JobRecords { batch, records })
    }

    /// Every record of `batch` (and of the batches before it) is durable: release the acks
    /// they held and count our own writes in them as logged.
    pub fn handle_persisted(&mut self, now: shoal_gossip::Millis, batch: u64) {
        self.tick(now);
        while self.log.inflight.front().is_some_and(|b| b.batch <= batch) {
            let Some(done) = self.log.inflight.pop_front() else {
                break;
            };
            self.log.logged_counter = self.log.logged_counter.max(done.own_counter);
            for (to, actor, counter) in done.acks {
                self.outbox
                    .push_back(Outgoing::one(&to, Message::Ack { actor, counter }));
            }
        }
    }

    /// Whether a write is as durable as it can be now: logged here and held by a live peer
    /// that logged it, or logged here with no live peer (see [`Scheduler::durability`]).
    #[must_use]
    pub fn is_durable(&self, receipt: &Receipt) -> bool {
        self.durability(receipt) != crate::durability::Durability::Pending
    }

    /// How far a local write has gone: logged here, and held by a live peer that logged it.
    #[must_use]
    pub fn durability(&self, receipt: &Receipt) -> Durability {
        if receipt.dot.actor != self.actor || self.log.logged_counter < receipt.dot.counter {
            return Durability::Pending;
        }
        let peers = self.live_peers();
        if peers.is_empty() {
            return Durability::LocalOnly;
        }
        if peers.iter().any(|p| {
            self.repl
                .acks
                .get(p)
                .is_some_and(|c| *c >= receipt.dot.counter)
        }) {
            Durability::Durable
        } else {
            Durability::Pending
        }
    }

    /// After [`Scheduler::restore`] from a snapshot that was the last act of this node's
    /// scheduler start `start` (a clean shutdown; the shell's store pairs the two): write on as
    /// that start's actor instead of a new one. Every op it wrote is in the snapshot, so its
    /// next dot is new to everyone; a start that crashed may have sent ops its last snapshot
    /// lacks, which is why a restored node writes as a new actor otherwise. Every start that
    /// writes is one more entry in every version vector, for good (`docs/scheduler.md`,
    /// "Actors are per start"); a clean restart (an upgrade, a reboot) no longer is one.
    ///
    /// The switch waits for the catch-up: it is made when a peer's answer arrives, if the
    /// node has written nothing as its new actor by then and the answer brought no op of
    /// `start` beyond the snapshot (which only a data dir restored from a copy could cause).
    /// Otherwise the node goes on as the new actor. Call it right after the restore.
    pub fn continue_writing_as(&mut self, start: u64) {
        let actor = crate::ids::ActorId {
            node: self.node.as_str().into(),
            start,
        };
        let counter = self.tables().clock().get(&actor);
        self.repl.resume = Some((actor, counter));
    }

    /// The catch-up ended: a peer answered (`answered`), or nobody did in time.
    pub(crate) fn resume_or_not(&mut self, answered: bool) {
        let Some((actor, counter)) = self.repl.resume.take() else {
            return;
        };
        let start = actor.start;
        let held = self.tables().clock().get(&actor);
        if held != counter {
            tracing::warn!(
                start,
                counter,
                held,
                "not writing on as the last start: a peer holds ops of it that its final \
                 snapshot lacks (a data dir restored from a copy?)"
            );
            return;
        }
        if !answered || self.repl.counter > 0 {
            let why = if answered {
                "this start wrote before the catch-up ended"
            } else {
                "no peer answered the catch-up"
            };
            tracing::info!(start, "not writing on as the last start: {why}");
            return;
        }
        tracing::info!(
            start,
            counter,
            "the last snapshot was this node's last act: writing on as its actor"
        );
        self.actor = actor;
        self.repl.counter = counter;
        self.log.logged_own(counter);
    }

    /// After [`Scheduler::restore`], or on a new core when the node crashed before its
    /// first snapshot: join the job records logged after the snapshot. They are the same
    /// writes with the same stamps, so a job stopped or updated elsewhere since stays as the
    /// newer write says. Returns how many records could not be read.
    ///
    /// A record means this node lived before, so it catches up with a peer before it acts,
    /// as a restored one does: its view of the slots is at best as old as its last snapshot,
    /// and placing from it would start copies of slots that run elsewhere, and could reuse an
    /// attempt id it gave out in its first life for another target.
    pub fn restore_job_records<'a>(
        &mut self,
        records: impl IntoIterator<Item = &'a [u8]>,
    ) -> usize {
        let mut unreadable = 0;
        for bytes in records {
            if let Some(body) = crate::table::decode_node_record(bytes) {
                self.replica.join_local(&body);
                self.must_catch_up();
                continue;
            }
            let Some(rows) = decode_rows(bytes) else {
                unreadable += 1;
                continue;
            };
            for (incarnation, entry) in rows {
                self.repl.hlc.observe(entry.stamp.hlc);
                self.replica.join_local(&OpBody::Job { incarnation, entry });
                self.must_catch_up();
            }
        }
        self.work.everything = true;
        self.count_restored_drains_told();
        unreadable
    }
}

/// A job record's rows: as written now, or in an older encoding (records logged before job
/// entries carried their deployment, or before the spec's service fields). Each must use every byte, which tells the two apart.
fn decode_rows(bytes: &[u8]) -> Option<Vec<(u64, JobEntry)>> {
    if let Ok((JobRows { rows }, [])) = postcard::take_from_bytes::<JobRows>(bytes) {
        return Some(rows);
    }
    if let Ok((old, [])) = postcard::take_from_bytes::<JobRowsV3>(bytes) {
        return Some(
            old.rows
                .into_iter()
                .map(|(inc, e)| (inc, e.into()))
                .collect(),
        );
    }
    match postcard::take_from_bytes::<JobRowsV1>(bytes) {
        Ok((old, [])) => Some(
            old.rows
                .into_iter()
                .map(|(inc, e)| (inc, e.into()))
                .collect(),
        ),
        _ => None,
    }
}
