//! The simulated executor and the agent's lifecycle around it: asynchronous starts, exits and
//! kills; processes that outlive a crashed or paused agent until its watchdog stops them; the
//! restart path (restore, then report the surviving processes); snapshots written at most
//! every [`SNAPSHOT_EVERY_MS`].

use rand::RngExt;
use shoal_scheduler::{AttemptId, ExecCommand, KillReason, Scheduler, TaskEvent};

use super::executor::{ORPHAN_GRACE_MS, Proc, SNAPSHOT_EVERY_MS};
use super::{Host, ProcessState, SchedEvent, Workbench};

/// A start takes this long, drawn uniformly, from the command to `Started` (fork, exec, a
/// cgroup to set up).
const START_DELAY_MS: (u64, u64) = (5, 80);

/// How long a bad version's task runs before it exits with code 1 (below the scenarios'
/// `min_healthy_ms`, so it never settles).
const BAD_VERSION_RUN_MS: u64 = 1000;
impl Workbench {
    /// Runs one executor command of node `i`'s core (taken out of the node while it drains).
    pub(super) fn execute(
        &mut self,
        host: &mut dyn Host,
        i: usize,
        core: &mut Scheduler,
        cmd: ExecCommand,
    ) {
        let now = host.now();
        match cmd {
            ExecCommand::Start {
                task,
                resources,
                env,
                ..
            } => {
                if self.nodes[i].running.contains_key(&task) {
                    return;
                }
                self.check_start(host, i, core, &task);
                let sole = self.copy_added(now, &task);
                if !sole {
                    self.mark_raced(&task);
                }
                self.next_pid += 1;
                let pid = self.next_pid;
                let ports: Vec<u16> = env
                    .iter()
                    .filter(|(k, _)| k.starts_with("SHOAL_PORT_"))
                    .filter_map(|(_, v)| v.parse().ok())
                    .collect();
                self.check_ports(host, i, &task, &ports);
                let p = Proc {
                    pid,
                    resources,
                    started_at: now,
                    reported: false,
                    sole,
                    raced: false,
                    orphan: false,
                    fails: env.get("BAD").is_some_and(|v| v == "1"),
                    ports,
                    hung: false,
                    was_hung: false,
                    serving_since: None,
                    probe_gen: 0,
                };
                self.nodes[i].running.insert(task.clone(), p);
                self.tally.started(now, &task);
                self.check_capacity(host, i, &task);
                let delay = self
                    .exec_rng
                    .random_range(START_DELAY_MS.0..=START_DELAY_MS.1);
                host.schedule(
                    now.plus_ms(delay),
                    SchedEvent::TaskStarted { node: i, task, pid },
                );
            }
            ExecCommand::Kill { task, reason } => {
                if host.invert_fencing() && reason == KillReason::Superseded {
                    self.kill_the_other_copies(host, &task);
                } else if let Some(p) = self.nodes[i].running.remove(&task) {
                    // Superseded by an attempt of another version (the job's, or the slot's
                    // current attempt's when that assignment arrived before the job write):
                    // a rolling update replaced it, as it must.
                    let tables = core.tables();
                    let epoch = tables.assignment(&task).map(|a| &a.epoch);
                    let newer = tables
                        .current_attempt(&task.slot_key())
                        .map(|(_, a)| &a.epoch)
                        .into_iter()
                        .chain(tables.job(&task.job).map(|(_, e)| &e.epoch));
                    let updated = reason == KillReason::Superseded
                        && epoch.is_some_and(|mine| newer.into_iter().any(|e| e != mine));
                    self.check_kill(host, i, &task, &p, reason, updated);
                    if reason == KillReason::Drained {
                        self.drain_stop(host, i, core, &task, &p);
                    }
                    self.copy_removed(host, i, &task);
                }
                core.handle_task_event(now, task, TaskEvent::Killed);
            }
            ExecCommand::Checks { task, checks } => self.start_probes(host, i, task, &checks),
            ExecCommand::StopChecks { task } => self.stop_probes(i, &task),
        }
    }

    /// A copy of `task`'s slot starts while others run: those whose start is not reported
    /// yet raced it (no core knew they ran when it was placed).
    fn mark_raced(&mut self, task: &AttemptId) {
        for node in &mut self.nodes {
            for (t, p) in &mut node.running {
                if same_slot(t, task) && !p.reported {
                    p.raced = true;
                }
            }
        }
    }

    /// `Sabotage::InvertFencing`: every other copy of `task`'s slot is killed as superseded,
    /// the order's own copy runs on.
    fn kill_the_other_copies(&mut self, host: &mut dyn Host, task: &AttemptId) {
        for j in 0..self.nodes.len() {
            let others: Vec<AttemptId> = self.nodes[j]
                .running
                .keys()
                .filter(|t| same_slot(t, task) && *t != task)
                .cloned()
                .collect();
            for other in others {
                if let Some(p) = self.nodes[j].running.remove(&other) {
                    self.check_kill(host, j, &other, &p, KillReason::Superseded, false);
                    self.copy_removed(host, j, &other);
                }
                if let Some(core) = self.nodes[j].core.as_mut() {
                    core.handle_task_event(host.now(), other, TaskEvent::Killed);
                }
            }
        }
    }

    /// `always_no_node_overcommitted`, after a process started on node `i`.
    fn check_capacity(&mut self, host: &mut dyn Host, i: usize, task: &AttemptId) {
        let reserved = super::reserved(&self.nodes[i]);
        if reserved.fits_in(&self.capacity) {
            return;
        }
        let event = format!(
            "n{i} started {}/{} (attempt {}) and now reserves {} m CPU, {} MiB of {} m, {} MiB",
            task.job,
            task.slot,
            task.attempt,
            reserved.cpu_millicores,
            reserved.memory_mib,
            self.capacity.cpu_millicores,
            self.capacity.memory_mib
        );
        host.violate("always_no_node_overcommitted", event);
    }

    /// `always_ports_unique`, before a process of `task` starts on node `i` with `ports`: no
    /// other process there holds one of them.
    fn check_ports(&mut self, host: &mut dyn Host, i: usize, task: &AttemptId, ports: &[u16]) {
        if ports.is_empty() {
            return;
        }
        self.discovery.figures.port_bindings += ports.len() as u64;
        let clash = self.nodes[i].running.iter().find_map(|(other, p)| {
            let port = p.ports.iter().find(|q| ports.contains(q))?;
            Some((other.clone(), *port))
        });
        if let Some((other, port)) = clash {
            let event = format!(
                "n{i} started {}/{} (attempt {}) on port {port}, which {}/{} (attempt {}) holds",
                task.job, task.slot, task.attempt, other.job, other.slot, other.attempt
            );
            host.violate("always_ports_unique", event);
        }
    }

    /// Hands node `i`'s core an executor report, at once if its agent runs, at the resume if
    /// it is paused, never if it is gone.
    fn report(&mut self, host: &mut dyn Host, i: usize, task: AttemptId, event: TaskEvent) {
        match host.process(i).state {
            ProcessState::Running => {
                if let Some(core) = self.nodes[i].core.as_mut() {
                    core.handle_task_event(host.now(), task, event);
                }
                self.drain(host, i);
            }
            ProcessState::Paused => self.nodes[i].unreported.push((task, event)),
            ProcessState::Down => {}
        }
    }

    /// The executor reports what it saw while the agent was paused.
    pub(super) fn report_unreported(&mut self, host: &mut dyn Host, i: usize) {
        let now = host.now();
        let seen = std::mem::take(&mut self.nodes[i].unreported);
        if let Some(core) = self.nodes[i].core.as_mut() {
            for (task, event) in seen {
                core.handle_task_event(now, task, event);
            }
        }
    }

    /// A start completes: `Started` is reported and a batch task's exit is queued.
    pub(super) fn task_started(
        &mut self,
        host: &mut dyn Host,
        i: usize,
        task: AttemptId,
        pid: u64,
    ) {
        let Some(p) = self.nodes[i]
            .running
            .get_mut(&task)
            .filter(|p| p.pid == pid)
        else {
            return;
        };
        p.reported = true;
        let fails = p.fails;
        if !fails {
            p.serving_since = Some(host.now());
            // Two coordinators may number an attempt of one slot alike (the key has no
            // placer): a stop recorded for the other one is not this process's.
            self.discovery.serving_again(i, &task);
            self.drain_slot_served(i, &task);
        }
        // With checks, a bad version runs on and fails them (`probes.rs`).
        let exits_when_bad = self.services.is_none();
        let run_time = self
            .by_name
            .get(task.job.as_str())
            .and_then(|&k| self.jobs[k].durations_ms.get(task.slot as usize).copied());
        let exit = match (fails, run_time) {
            (true, _) if exits_when_bad => Some((BAD_VERSION_RUN_MS, 1)),
            (true, _) => None,
            (false, Some(ms)) => Some((ms, 0)),
            (false, None) => None,
        };
        if let Some((ms, code)) = exit {
            let exit = SchedEvent::TaskExit {
                node: i,
                task: task.clone(),
                pid,
                code,
            };
            host.schedule(host.now().plus_ms(ms), exit);
        }
        self.report(host, i, task, TaskEvent::Started { pid: 1 });
    }

    /// A task's process exits by itself: a batch task with code 0, a bad version's with 1.
    pub(super) fn task_exit(
        &mut self,
        host: &mut dyn Host,
        i: usize,
        task: AttemptId,
        pid: u64,
        code: i32,
    ) {
        if self.nodes[i]
            .running
            .get(&task)
            .is_none_or(|p| p.pid != pid)
        {
            return;
        }
        self.nodes[i].running.remove(&task);
        self.copy_removed(host, i, &task);
        if code == 0 {
            self.tally.completed(&task);
        }
        self.report(host, i, task, TaskEvent::Exited { code });
    }

    /// The agent of node `i` went: see `NodeSched::stop`.
    pub(super) fn agent_stopped(&mut self, host: &mut dyn Host, i: usize, graceful: bool) {
        if graceful {
            // As the agent's clean stop: its tasks are killed first and their ends written,
            // so the last snapshot holds them (`RunningAgent::shutdown`).
            let tasks: Vec<AttemptId> = self.nodes[i].running.keys().cloned().collect();
            for task in tasks {
                self.nodes[i].running.remove(&task);
                self.copy_removed(host, i, &task);
                self.report(host, i, task, TaskEvent::Killed);
            }
        }
        let stopped = self.nodes[i].stop(graceful);
        for task in &stopped {
            self.copy_removed(host, i, task);
        }
        if !graceful {
            self.arm_watchdog(host, i);
        }
    }

    /// The watchdog of node `i` kills its tasks unless the lease is renewed within the grace.
    pub(super) fn arm_watchdog(&mut self, host: &mut dyn Host, i: usize) {
        let lease = self.nodes[i].lease;
        host.schedule(
            host.now().plus_ms(ORPHAN_GRACE_MS),
            SchedEvent::Watchdog { node: i, lease },
        );
    }

    /// The lease ran out: every process of node `i` is killed (a paused agent hears of it at
    /// the resume as a failure).
    pub(super) fn watchdog(&mut self, host: &mut dyn Host, i: usize, lease: u64) {
        if self.nodes[i].lease != lease {
            return;
        }
        let killed = std::mem::take(&mut self.nodes[i].running);
        let paused = host.process(i).state == ProcessState::Paused;
        for task in killed.into_keys() {
            self.watch.figures.watchdog_kills += 1;
            self.copy_removed(host, i, &task);
            if paused {
                let reason = "killed by the watchdog: the agent's lease ran out".to_string();
                self.nodes[i]
                    .unreported
                    .push((task, TaskEvent::Failed { reason }));
            }
        }
    }

    /// The restart path of node `i`'s new core: what survived is reported (the watchdog was
    /// taken over in time), the rest of the ledger is failed by the core.
    pub(super) fn recover(&mut self, host: &mut dyn Host, i: usize, core: &mut Scheduler) {
        let node = &mut self.nodes[i];
        node.lease += 1;
        let survivors: Vec<AttemptId> = node.running.keys().cloned().collect();
        for p in node.running.values_mut() {
            p.orphan = false;
        }
        self.watch.figures.survivors_reported += survivors.len() as u64;
        core.handle_recovered_tasks(host.now(), &survivors);
    }

    /// After node `i` drained: writes the snapshot when the tables moved and the last write
    /// is [`SNAPSHOT_EVERY_MS`] old, or queues the write for then.
    pub(super) fn maybe_snapshot(&mut self, host: &mut dyn Host, i: usize) {
        if !self.keep_snapshots.get(i).copied().unwrap_or(false) {
            return;
        }
        let now = host.now();
        let node = &mut self.nodes[i];
        let Some(core) = node.core.as_ref() else {
            return;
        };
        if node
            .disk
            .as_ref()
            .is_some_and(|(_, clock)| clock == core.tables().clock())
        {
            return;
        }
        match node.snapshot_at {
            Some(t) if now.since(t) < SNAPSHOT_EVERY_MS => {
                if !node.snapshot_armed {
                    node.snapshot_armed = true;
                    let lease = node.lease;
                    host.schedule(
                        t.plus_ms(SNAPSHOT_EVERY_MS),
                        SchedEvent::Snapshot { node: i, lease },
                    );
                }
            }
            _ => {
                node.disk = Some((core.snapshot(), core.tables().clock().clone()));
                node.final_writer = None;
                node.snapshot_at = Some(now);
            }
        }
    }

    /// A queued snapshot write is due (dropped if the agent restarted or resumed since; the
    /// next drain queues another).
    pub(super) fn snapshot_due(&mut self, host: &mut dyn Host, i: usize, lease: u64) {
        if self.nodes[i].lease != lease {
            return;
        }
        self.nodes[i].snapshot_armed = false;
        if host.process(i).state == ProcessState::Running {
            self.maybe_snapshot(host, i);
        }
    }
}

/// Whether two attempts are of one slot (without building either's `SlotKey`).
fn same_slot(a: &AttemptId, b: &AttemptId) -> bool {
    a.slot == b.slot && a.incarnation == b.incarnation && a.job == b.job
}
