//! The target side: proposals addressed to this node are admitted in arrival order while they
//! fit its capacity (the local ledger), deferred while their job (version) has not arrived,
//! and rejected otherwise.

use shoal_gossip::Resources;

use crate::ids::{AttemptId, Name};
use crate::roles::LocalTask;
use crate::scheduler::{ExecCommand, Scheduler};
use crate::spec::fmt_resources;
use crate::table::{Assignment, AttemptState, JobEntry, OpBody};

impl Scheduler {
    /// Admit or reject queued proposals, in arrival order.
    pub(crate) fn admit_queued(&mut self) {
        while let Some(id) = self.target.queue.pop_front() {
            let Some(a) = self.tables().assignment(&id).cloned() else {
                continue;
            };
            if a.target != self.node
                || self.tables().state(&id) != AttemptState::Proposed
                || self.target.ledger.contains_key(&id)
            {
                continue;
            }
            match self.admission_verdict(&id, &a) {
                Verdict::Admit(entry) => self.admit(id, &a, &entry),
                Verdict::Defer => {
                    self.target.deferred.insert(id);
                }
                Verdict::Reject(reason) => {
                    self.write_state_if_mine(&id, AttemptState::Rejected { reason });
                }
            }
        }
    }

    fn admission_verdict(&self, id: &AttemptId, a: &Assignment) -> Verdict {
        let Some((inc, entry)) = self.tables().job(&id.job) else {
            return Verdict::Defer; // the job write has not arrived yet
        };
        if inc != id.incarnation || entry.stopped || id.slot >= entry.spec.count {
            return Verdict::Reject("job stopped, replaced or scaled down".into());
        }
        if a.epoch > entry.epoch {
            return Verdict::Defer; // placed for a job version we have not received yet
        }
        if a.epoch < entry.epoch {
            return Verdict::Reject("placed for an older version of the job".into());
        }
        let current = self
            .tables()
            .current_attempt(&id.slot_key())
            .map(|(k, _)| k);
        if current != Some(id) {
            return Verdict::Reject("superseded by another attempt of the slot".into());
        }
        if entry.spec.wants_distinct_hosts()
            && let Some(other) = self.local_sibling(id)
        {
            return Verdict::Reject(format!(
                "distinct_hosts: {} already runs slot {other} of job {}",
                self.node, id.job
            ));
        }
        match self.fits_here(entry, a.resources) {
            Ok(()) => Verdict::Admit(Box::new(entry.clone())),
            Err(reason) => Verdict::Reject(reason),
        }
    }

    /// Another slot of the same job incarnation admitted here and not being killed: two
    /// coordinators that placed concurrently cannot both put a `distinct_hosts` job here.
    fn local_sibling(&self, id: &AttemptId) -> Option<u32> {
        let from = AttemptId {
            job: id.job.clone(),
            incarnation: id.incarnation,
            slot: 0,
            attempt: 0,
            placer: Name::default(),
        };
        self.target
            .ledger
            .range(from..)
            .take_while(|(k, _)| k.job == id.job && k.incarnation == id.incarnation)
            .find(|(k, t)| k.slot != id.slot && !t.killing)
            .map(|(k, _)| k.slot)
    }

    /// The hard check: this node's own attributes and its ledger against its capacity.
    fn fits_here(&self, entry: &JobEntry, want: Resources) -> Result<(), String> {
        let me = self.members.all.get(&self.node);
        let Some(ad) = me.and_then(|m| m.ad.as_ref()) else {
            return Err(format!("{} has not advertised its resources", self.node));
        };
        if ad.draining || ad.left {
            return Err(format!("{} is draining", self.node));
        }
        if let Some(c) = entry.spec.failed_constraint(&self.node, &ad.attributes) {
            return Err(format!("{} fails constraint {c}", self.node));
        }
        if let Some(user) = &entry.spec.user
            && !self.config.task_users.contains(user)
        {
            return Err(format!(
                "{} does not run tasks as user {user} (it allows: {}); allow it with the agent \
                 flag --allow-task-user {user} (the agent must run as root)",
                self.node,
                self.config
                    .task_users
                    .iter()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        let used = self.local_allocated();
        if used.saturating_add(&want).fits_in(&ad.capacity) {
            return Ok(());
        }
        let free = ad.capacity.saturating_sub(&used);
        Err(format!(
            "{} has {} free, needs {}",
            self.node,
            fmt_resources(&free),
            fmt_resources(&want)
        ))
    }

    fn admit(&mut self, id: AttemptId, a: &Assignment, entry: &JobEntry) {
        self.target
            .ledger
            .insert(id.clone(), LocalTask::admitted(a.resources));
        self.write_state_if_mine(&id, AttemptState::Admitted);
        if !self.reach.quorum.majority {
            self.arm_disconnect_stop();
        }
        let spec = &entry.spec;
        self.commands.push_back(ExecCommand::Start {
            task: id,
            command: spec.command.clone(),
            args: spec.args.clone(),
            env: spec.env.clone(),
            workdir: spec.workdir.clone(),
            resources: a.resources,
            user: spec.user.clone(),
        });
    }

    /// Write a state this node owns (it is the target), if it moves the lattice forward.
    pub(crate) fn write_state_if_mine(&mut self, id: &AttemptId, state: AttemptState) {
        let mine = self
            .tables()
            .assignment(id)
            .is_some_and(|a| a.target == self.node);
        if mine && self.tables().state(id) < state {
            self.write(OpBody::State {
                id: id.clone(),
                state,
            });
        }
    }

    pub(crate) fn requeue_deferred(&mut self, job: Option<&str>) {
        let ids: Vec<AttemptId> = self
            .target
            .deferred
            .iter()
            .filter(|id| job.is_none_or(|j| id.job == j))
            .cloned()
            .collect();
        for id in ids {
            self.target.deferred.remove(&id);
            self.target.queue.push_back(id);
        }
    }
}

/// Outcome of admission.
enum Verdict {
    Admit(Box<JobEntry>),
    Defer,
    Reject(String),
}
