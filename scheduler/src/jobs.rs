//! Job writes from the shell: a submission or stop is checked, prepared as one write of the
//! jobs table with the record the shell logs, and committed (`docs/faults.md`, "Acknowledgements
//! mean what they say").

use shoal_gossip::Millis;

use crate::durability::{JobRecord, JobRows, Receipt};
use crate::hash::StableHasher;
use crate::ids::Stamp;
use crate::scheduler::Scheduler;
use crate::spec::{JobSpec, NeverFitsError, SpecError};
use crate::table::{JobEntry, OpBody};

/// A checked submission or stop, before it is applied (see [`Scheduler::prepare_submit`]).
#[derive(Debug, Clone)]
pub enum Prepared {
    /// Nothing to write: the job is already so.
    Unchanged(Receipt),
    /// Log [`JobWrite::record`], then [`Scheduler::commit`].
    Write(Box<JobWrite>),
}

/// A job write (or a node intent: `drain_intent.rs`) prepared but not applied.
#[derive(Debug, Clone)]
pub struct JobWrite {
    /// The op to write.
    pub(crate) body: OpBody,
    /// What the receipt names: the job id, or a node's record key.
    pub(crate) key: String,
    /// The write's stamp (the receipt's version).
    pub(crate) stamp: Stamp,
    /// The job's record as it will be after the write: log it before committing.
    pub record: JobRecord,
    /// The counter the write will take (a commit checks nothing came in between).
    pub(crate) counter: u64,
}

/// Why a submission was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// The spec is invalid.
    #[error(transparent)]
    Invalid(#[from] SpecError),
    /// No current member could ever host one task.
    #[error(transparent)]
    NeverFits(#[from] NeverFitsError),
}

/// Why a stop was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StopError {
    /// No such job.
    #[error("no job `{0}`")]
    NotFound(String),
}

impl Scheduler {
    /// Submit (or update) a job. Writes it locally and replicates it; placement starts at once.
    /// Re-submitting an identical spec of a running job changes nothing. The shell logs the
    /// write afterwards ([`Scheduler::poll_job_records`]); an agent that must refuse a
    /// submission it cannot log uses [`Scheduler::prepare_submit`] and
    /// [`Scheduler::commit`] instead.
    pub fn submit(&mut self, now: Millis, spec: JobSpec) -> Result<Receipt, SubmitError> {
        match self.prepare_submit(now, spec)? {
            Prepared::Unchanged(receipt) => Ok(receipt),
            Prepared::Write(write) => Ok(self.apply_write(now, *write, false)),
        }
    }

    /// Check a submission and compute its write without applying it: log
    /// [`JobWrite::record`] durably, then [`Scheduler::commit`] it, with no other call on
    /// this scheduler in between.
    pub fn prepare_submit(&mut self, now: Millis, spec: JobSpec) -> Result<Prepared, SubmitError> {
        self.tick(now);
        spec.validate_with(&self.config.spec_limits)?;
        spec.check_can_ever_fit(self.members.all.values())?;
        let existing = self.tables().job(&spec.id).map(|(inc, e)| (inc, e.clone()));
        if let Some((_, e)) = existing
            .as_ref()
            .filter(|(_, e)| e.spec == spec && !e.stopped)
        {
            return Ok(Prepared::Unchanged(Receipt {
                job: spec.id,
                version: e.stamp.clone(),
                dot: self.last_dot(),
            }));
        }
        let stamp = self.stamp();
        let incarnation = match &existing {
            Some((inc, _)) => *inc,
            None => incarnation_of(&spec.id, &stamp),
        };
        // Only a change of what runs (or a restart after stop) starts a new epoch; scaling and
        // the other in-place fields (`JobSpec::same_but_in_place`) keep the running slots.
        let entry = match &existing {
            Some((_, e)) if !e.stopped && e.spec.same_but_in_place(&spec) => JobEntry {
                stamp,
                spec,
                stopped: false,
                ..e.clone()
            },
            // A new epoch starts a deployment and a new version (`docs/services.md`, §4).
            _ => JobEntry {
                epoch: stamp.clone(),
                deployment: stamp.clone(),
                stamp,
                version: self.next_version(&spec.id, incarnation),
                spec,
                stopped: false,
                skip_canary: false,
            },
        };
        Ok(Prepared::Write(Box::new(
            self.job_write(incarnation, entry),
        )))
    }

    /// The number a new version of job `id` (incarnation `incarnation`) takes: one above
    /// every number this replica knows (kept versions and the current write).
    pub(crate) fn next_version(&self, id: &str, incarnation: u64) -> u32 {
        let tables = self.tables();
        let kept = tables
            .versions(id, incarnation)
            .filter_map(|(_, v)| v.row.as_ref().map(|r| r.number));
        let current = tables
            .incarnations(id)
            .filter(|(inc, _)| *inc == incarnation)
            .map(|(_, e)| e.version);
        kept.chain(current).max().unwrap_or(0).saturating_add(1)
    }

    /// Stop a job: every task is killed, nothing is placed; the job is purged after
    /// `gc_grace`. Stopping a stopped job changes nothing.
    pub fn stop_job(&mut self, now: Millis, id: &str) -> Result<Receipt, StopError> {
        match self.prepare_stop(now, id)? {
            Prepared::Unchanged(receipt) => Ok(receipt),
            Prepared::Write(write) => Ok(self.apply_write(now, *write, false)),
        }
    }

    /// [`Scheduler::stop_job`] in two steps, like [`Scheduler::prepare_submit`].
    pub fn prepare_stop(&mut self, now: Millis, id: &str) -> Result<Prepared, StopError> {
        self.tick(now);
        let (incarnation, cur) = self
            .tables()
            .job(id)
            .map(|(inc, e)| (inc, e.clone()))
            .ok_or_else(|| StopError::NotFound(id.to_string()))?;
        if cur.stopped {
            return Ok(Prepared::Unchanged(Receipt {
                job: id.to_string(),
                version: cur.stamp,
                dot: self.last_dot(),
            }));
        }
        let entry = JobEntry {
            stamp: self.stamp(),
            stopped: true,
            ..cur
        };
        Ok(Prepared::Write(Box::new(
            self.job_write(incarnation, entry),
        )))
    }

    /// A prepared job write (a revert's).
    pub(crate) fn prepare_write(&self, incarnation: u64, entry: JobEntry) -> Prepared {
        Prepared::Write(Box::new(self.job_write(incarnation, entry)))
    }

    /// A job write and the record of the job as it will be after it.
    fn job_write(&self, incarnation: u64, entry: JobEntry) -> JobWrite {
        let mut rows: Vec<(u64, JobEntry)> = self
            .tables()
            .incarnations(&entry.spec.id)
            .filter(|(inc, _)| *inc != incarnation)
            .map(|(inc, e)| (inc, e.clone()))
            .collect();
        rows.push((incarnation, entry.clone()));
        rows.sort_by_key(|(inc, _)| *inc);
        let record = JobRecord {
            job: entry.spec.id.clone(),
            bytes: postcard::to_stdvec(&JobRows { rows }).unwrap_or_default(),
        };
        JobWrite {
            key: entry.spec.id.clone(),
            stamp: entry.stamp.clone(),
            body: OpBody::Job { incarnation, entry },
            record,
            counter: self.repl.counter + 1,
        }
    }

    /// Apply a write from [`Scheduler::prepare_submit`] or [`Scheduler::prepare_stop`] whose
    /// record the shell has logged durably.
    ///
    /// # Panics
    /// If another write happened on this scheduler since the write was prepared (a shell bug).
    pub fn commit(&mut self, now: Millis, write: JobWrite) -> Receipt {
        self.apply_write(now, write, true)
    }

    /// Apply a prepared write; `logged`: its record is durable already (otherwise the next
    /// batch of records logs it).
    fn apply_write(&mut self, now: Millis, write: JobWrite, logged: bool) -> Receipt {
        self.tick(now);
        assert_eq!(
            write.counter,
            self.repl.counter + 1,
            "a prepared write must be committed before any other input"
        );
        let (job, version) = (write.key, write.stamp);
        let dot = self.write(write.body);
        if logged {
            self.log.logged_own(dot.counter);
        }
        self.reconcile();
        Receipt { job, version, dot }
    }
}

/// A new incarnation id for a job created by this write.
fn incarnation_of(job: &str, stamp: &Stamp) -> u64 {
    StableHasher::new()
        .field(job.as_bytes())
        .int(stamp.hlc.wall_ms)
        .int(u64::from(stamp.hlc.logical))
        .field(stamp.actor.node.as_bytes())
        .int(stamp.actor.start)
        .finish()
}
