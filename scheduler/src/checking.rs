//! The target side of health checks (`docs/services.md`, §2): when a local task's process
//! starts, its checks are resolved (ports, address, arguments) and handed to the shell as
//! [`ExecCommand::Checks`]; each result the shell reports goes through the task's
//! [`HealthMachine`]; a change of health is written to the `health` component, and a check
//! that failed `failures` times in a row kills the task, which then ends `Failed` with the
//! check's reason so that its coordinator restarts it under the job's `restart` policy (the
//! path every failed task takes). Checks stop ([`ExecCommand::StopChecks`]) when the task is
//! killed or ends, and are replaced when a job write changes them (checks apply in place).

use crate::health::{CheckResult, HealthMachine, Probe, ResolvedCheck};
use crate::ids::AttemptId;
use crate::scheduler::{ExecCommand, KillReason, Scheduler};
use crate::spec::{CheckKind, CheckSpec, JobSpec, interpolate};
use crate::table::{AttemptState, Health, OpBody};

impl Scheduler {
    /// A local task's process started (or was adopted after a restart): run its job's checks.
    pub(crate) fn start_checks(&mut self, task: &AttemptId) {
        if self.target.ledger.get(task).is_none_or(|t| t.killing) {
            return;
        }
        let Some(spec) = self.spec_of(task) else {
            return;
        };
        if spec.checks.is_empty() {
            return;
        }
        let checks = self.resolve_checks(task, &spec);
        self.target
            .checks
            .insert(task.clone(), HealthMachine::new(self.now, &spec.checks));
        self.commands.push_back(ExecCommand::Checks {
            task: task.clone(),
            checks,
        });
    }

    /// The spec a local task was started under: its epoch's version (a task of an older
    /// version keeps that version's checks while a rolling update replaces it), else the
    /// job's current spec.
    fn spec_of(&self, task: &AttemptId) -> Option<JobSpec> {
        let tables = self.tables();
        let (inc, entry) = tables.job(&task.job)?;
        if inc != task.incarnation {
            return None;
        }
        let epoch = tables.assignment(task).map(|a| &a.epoch);
        if epoch.is_none_or(|e| *e == entry.epoch) {
            return Some(entry.spec.clone());
        }
        let kept = tables
            .versions(&task.job, inc)
            .rev()
            .filter_map(|(_, v)| v.row.as_ref())
            .find(|r| Some(&r.epoch) == epoch)
            .map(|r| r.spec.clone());
        Some(kept.unwrap_or_else(|| entry.spec.clone()))
    }

    /// Stop a local task's checks, if they run.
    pub(crate) fn stop_checks(&mut self, task: &AttemptId) {
        if self.target.checks.remove(task).is_some() {
            self.commands
                .push_back(ExecCommand::StopChecks { task: task.clone() });
        }
    }

    /// A job write may have changed the checks (in place): local running tasks of the job's
    /// current epoch whose checks differ get the new ones, with a fresh machine. Tasks of
    /// another epoch (being replaced by a rolling update) keep their version's checks.
    pub(crate) fn refresh_checks(&mut self, job: &str) {
        let Some((inc, entry)) = self.tables().job(job) else {
            return;
        };
        let wanted = &entry.spec.checks;
        let stale: Vec<AttemptId> = self
            .target
            .ledger
            .iter()
            .filter(|(id, t)| id.job == job && id.incarnation == inc && !t.killing)
            .filter(|(id, _)| {
                self.tables()
                    .assignment(id)
                    .is_some_and(|a| a.epoch == entry.epoch)
            })
            .filter(|(id, _)| matches!(self.tables().state(id), AttemptState::Running { .. }))
            .filter(|(id, _)| {
                self.target
                    .checks
                    .get(*id)
                    .map_or(!wanted.is_empty(), |m| m.specs() != wanted.as_slice())
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in stale {
            self.stop_checks(&id);
            self.start_checks(&id);
            self.track_settling(&id);
        }
    }

    /// One result through the task's machine: the health written on a change, the task
    /// killed when a check ran out of failures.
    pub(crate) fn record_check(&mut self, task: &AttemptId, check: u8, result: &CheckResult) {
        if self.target.ledger.get(task).is_none_or(|t| t.killing) {
            return;
        }
        let now = self.now;
        let Some(step) = self
            .target
            .checks
            .get_mut(task)
            .map(|m| m.record(now, check, result))
        else {
            return;
        };
        if let Some(seen) = step.changed {
            let mine = self
                .tables()
                .assignment(task)
                .is_some_and(|a| a.target == self.node);
            if mine {
                let health = Health {
                    stamp: self.stamp(),
                    status: seen.status,
                    note: seen.note,
                    failures: seen.failures,
                    limit: seen.limit,
                };
                self.write(OpBody::Health {
                    id: task.clone(),
                    health,
                });
            }
        }
        self.track_settling(task);
        if let Some(reason) = step.restart {
            tracing::info!(%task, %reason, "restarting an unhealthy task");
            if let Some(t) = self.target.ledger.get_mut(task) {
                t.unhealthy = Some(reason);
            }
            self.kill_doomed(vec![(task.clone(), KillReason::Unhealthy)]);
        }
    }

    /// The job's checks for one attempt, as the shell runs them: ports from the attempt's
    /// binding, `${SHOAL_…}` replaced in command arguments, the task's environment and user.
    fn resolve_checks(&self, task: &AttemptId, spec: &JobSpec) -> Vec<ResolvedCheck> {
        let binding = self.tables().binding(task).cloned();
        let ip = binding.as_ref().map_or(self.config.service_ip, |b| b.ip);
        let (_, env) = self.task_argv(spec, binding.clone());
        let vars = self.task_vars(binding.clone());
        let port = |c: &CheckSpec| {
            c.port
                .as_deref()
                .and_then(|name| binding.as_ref()?.port(name))
                .unwrap_or(0)
        };
        spec.checks
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let probe = match c.kind {
                    CheckKind::Http => Probe::Http {
                        ip,
                        port: port(c),
                        path: c.path.clone().unwrap_or_else(|| "/".into()),
                        status: c.status.and_then(|s| u16::try_from(s).ok()),
                    },
                    CheckKind::Tcp => Probe::Tcp { ip, port: port(c) },
                    CheckKind::Command => Probe::Command {
                        command: c.command.clone().unwrap_or_default(),
                        args: c.args.iter().map(|a| interpolate(a, &vars)).collect(),
                        env: env.clone(),
                        workdir: spec.workdir.clone(),
                        user: spec.user.clone(),
                    },
                };
                ResolvedCheck {
                    // At most `MAX_CHECKS` (8) checks: the index fits.
                    index: u8::try_from(i).unwrap_or(u8::MAX),
                    name: c.name_or_default(i),
                    probe,
                    interval_ms: c.interval_ms,
                    timeout_ms: c.timeout_ms,
                }
            })
            .collect()
    }
}
