//! The target side: proposals addressed to this node are admitted in arrival order while they
//! fit its capacity (the local ledger) and get their host ports, deferred while their job
//! (version) has not arrived, a superseded attempt of their slot holds a static port or a
//! restored node is still catching up, and rejected otherwise.

use std::collections::BTreeMap;

use shoal_gossip::Resources;

use crate::events::SchedEvent;
use crate::ids::{AttemptId, Name};
use crate::ports::{Picked, PortState};
use crate::roles::LocalTask;
use crate::scheduler::{ExecCommand, Scheduler};
use crate::spec::{JobSpec, TaskVars, fmt_resources, interpolate};
use crate::table::{Assignment, AttemptState, Binding, JobEntry, OpBody};

/// Why a target turns down an attempt that is not its slot's current one: it holds
/// another attempt current (`Tables::current_attempt`), which the placer may not have heard of.
pub(crate) const SUPERSEDED: &str = "superseded by another attempt of the slot";

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
                Verdict::Admit(entry, binding) => {
                    self.counters.admissions += 1;
                    if self.events.is_on() {
                        self.events.push(SchedEvent::Admitted { task: id.clone() });
                    }
                    self.admit(id, &a, &entry, binding);
                }
                Verdict::Defer => {
                    self.target.deferred.insert(id);
                }
                Verdict::Reject(reason) => {
                    self.counters.rejections += 1;
                    if self.events.is_on() {
                        self.events.push(SchedEvent::Rejected {
                            task: id.clone(),
                            reason: reason.clone(),
                        });
                    }
                    self.write_state_if_mine(&id, AttemptState::Rejected { reason });
                }
            }
        }
    }

    fn admission_verdict(&mut self, id: &AttemptId, a: &Assignment) -> Verdict {
        if self.catching_up() {
            // A restored node's tables may hold a proposal of its earlier life without what
            // followed (its catch-up arrives in several messages, one actor's ops after
            // another's): starting it could run a copy of a slot that was re-placed since.
            return Verdict::Defer;
        }
        let me = self.generation_of(&self.node);
        if a.generation != 0 && me != 0 && a.generation < me {
            // Placed on an earlier start of this node, which never admitted it (this start
            // found it proposed). Its placer condemns it once it sees that start down
            // (`Scheduler::attempt_target_down`), and this start cannot know whether it has:
            // started here, the task could be killed as `Lost` a moment later while its slot
            // is re-placed elsewhere (simulator, `workload-churn-reap` seed 19). Refused, it is
            // re-placed at once.
            return Verdict::Reject(format!(
                "placed on an earlier start of {} (generation {}, now {me})",
                self.node, a.generation
            ));
        }
        let Some((inc, entry)) = self.tables().job(&id.job) else {
            return Verdict::Defer; // the job write has not arrived yet
        };
        if inc != id.incarnation || entry.stopped || id.slot >= entry.spec.count {
            return Verdict::Reject("job stopped, replaced or scaled down".into());
        }
        if a.epoch != entry.epoch {
            // A newer epoch that no version row names yet was placed for a job write that
            // has not arrived: wait for it. Any other epoch is not the current one (a revert
            // makes an older epoch current again: `docs/services.md`, §4).
            let known = a.epoch < entry.epoch
                || self
                    .tables()
                    .versions(&id.job, inc)
                    .any(|(_, v)| v.row.as_ref().is_some_and(|r| r.epoch == a.epoch));
            if !known {
                return Verdict::Defer;
            }
            return Verdict::Reject("placed for another version of the job".into());
        }
        let current = self
            .tables()
            .current_attempt(&id.slot_key())
            .map(|(k, _)| k);
        if current != Some(id) {
            return Verdict::Reject(SUPERSEDED.into());
        }
        if entry.spec.wants_distinct_hosts()
            && let Some(other) = self.local_sibling(id)
        {
            return Verdict::Reject(format!(
                "distinct_hosts: {} already runs slot {other} of job {}",
                self.node, id.job
            ));
        }
        if let Err(reason) = self.fits_here(entry, a.resources) {
            return Verdict::Reject(reason);
        }
        let entry = Box::new(entry.clone());
        if entry.spec.ports.is_empty() {
            return Verdict::Admit(entry, None);
        }
        match self.pick_ports(id, &entry.spec) {
            Picked::Bound(ports) => {
                let binding = Binding {
                    ip: self.config.service_ip,
                    ports,
                };
                Verdict::Admit(entry, Some(binding))
            }
            Picked::Wait => Verdict::Defer,
            Picked::Busy(reason) => Verdict::Reject(reason),
        }
    }

    /// This node's ports for attempt `id`: the ledger's (tasks being killed still hold
    /// theirs), reserved and host ports are taken; dynamic ones come from the range.
    fn pick_ports(&mut self, id: &AttemptId, spec: &JobSpec) -> Picked {
        let held: BTreeMap<u16, &AttemptId> = self
            .target
            .ledger
            .iter()
            .flat_map(|(k, t)| t.ports.iter().map(move |p| (*p, k)))
            .collect();
        let state = PortState {
            node: &self.node,
            held,
            reserved: &self.config.reserved_ports,
            host: &self.target.host_ports,
            range: self.config.port_range.clone(),
        };
        state.pick(id, &spec.ports, &mut self.rng)
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
        // The intent in the tables decides. This node's own ad only mirrors it for the others
        // (and the view of one's own ad can lag what was published), so its flag is not read.
        let row = self.tables().node(&self.node);
        let refuses = row.is_some_and(crate::table::NodeRow::refuses_work);
        if ad.left || row.is_some_and(|r| r.drain().is_some()) {
            return Err(format!("{} is draining", self.node));
        }
        if refuses {
            return Err(format!("{} is ineligible for new work", self.node));
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

    fn admit(&mut self, id: AttemptId, a: &Assignment, entry: &JobEntry, binding: Option<Binding>) {
        let ports = binding
            .as_ref()
            .map(|b| b.ports.iter().map(|(_, p)| *p).collect())
            .unwrap_or_default();
        self.target.ledger.insert(
            id.clone(),
            LocalTask::admitted(a.resources, ports, self.now),
        );
        // The ports first, from the same actor: a replica that sees the attempt admitted or
        // running has them.
        if let Some(binding) = &binding {
            self.write(OpBody::Binding {
                id: id.clone(),
                binding: binding.clone(),
            });
        }
        self.write_state_if_mine(&id, AttemptState::Admitted);
        self.arm_healthy_deadline(&id);
        if !self.reach.quorum.majority {
            self.arm_disconnect_stop();
        }
        let spec = &entry.spec;
        let (args, env) = self.task_argv(spec, binding);
        self.commands.push_back(ExecCommand::Start {
            task: id,
            command: spec.command.clone(),
            args,
            env,
            workdir: spec.workdir.clone(),
            resources: a.resources,
            user: spec.user.clone(),
        });
    }

    /// The task's arguments and environment with `${SHOAL_…}` replaced; a task with ports also
    /// gets `SHOAL_IP`, `SHOAL_PORT_<NAME>` and `SHOAL_ADDR_<NAME>` (over the job's own `env`).
    pub(crate) fn task_argv(
        &self,
        spec: &JobSpec,
        binding: Option<Binding>,
    ) -> (Vec<String>, BTreeMap<String, String>) {
        let vars = self.task_vars(binding);
        let args = spec.args.iter().map(|s| interpolate(s, &vars)).collect();
        let mut env: BTreeMap<String, String> = spec
            .env
            .iter()
            .map(|(k, v)| (k.clone(), interpolate(v, &vars)))
            .collect();
        if !spec.ports.is_empty() {
            env.extend(vars.env());
        }
        (args, env)
    }

    /// What `${SHOAL_…}` stands for in an attempt with `binding` (none: no ports).
    pub(crate) fn task_vars(&self, binding: Option<Binding>) -> TaskVars {
        TaskVars {
            ip: binding.as_ref().map_or(self.config.service_ip, |b| b.ip),
            ports: binding
                .map(|b| {
                    b.ports
                        .into_iter()
                        .map(|(n, p)| (n.to_string(), p))
                        .collect()
                })
                .unwrap_or_default(),
        }
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
    Admit(Box<JobEntry>, Option<Binding>),
    Defer,
    Reject(String),
}
