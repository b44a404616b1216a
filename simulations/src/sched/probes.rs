//! The simulated executor's health checks (`docs/services.md`, §2), as `node/src/checks.rs`
//! runs them: each check probes at once, then every `interval_ms` (a late probe delays the
//! next one, never stacks); a probe's result goes to the core with `handle_check_result`,
//! whose machine decides readiness, the health op and the restart. A task passes unless it
//! runs a bad version (an `HTTP 500` at once) or hangs (the `hang` fault: its probes time out
//! after `timeout_ms`, its process runs on). Probes belong to the agent: they stop with it,
//! wait while it is paused, and start again when the restarted core adopts the task.

use rand::RngExt;
use shoal_scheduler::{AttemptId, CheckResult, ResolvedCheck};

use super::executor::ProbeRef;
use super::{Host, ProcessState, SchedEvent, Workbench};

/// What a passing or refused probe takes, from its start to its result.
const PROBE_MS: u64 = 1;

impl Workbench {
    /// `ExecCommand::Checks`: `task`'s checks (re)start, each probing at once.
    pub(super) fn start_probes(
        &mut self,
        host: &mut dyn Host,
        i: usize,
        task: AttemptId,
        checks: &[ResolvedCheck],
    ) {
        let Some(p) = self.nodes[i].running.get_mut(&task) else {
            return;
        };
        p.probe_gen += 1;
        let (pid, generation) = (p.pid, p.probe_gen);
        let now = host.now();
        for c in checks {
            let probe = ProbeRef {
                pid,
                generation,
                check: c.index,
                interval_ms: c.interval_ms,
                timeout_ms: c.timeout_ms,
                started: now,
            };
            let event = SchedEvent::Probe {
                node: i,
                task: task.clone(),
                probe,
                result: None,
            };
            host.schedule(now, event);
        }
    }

    /// `ExecCommand::StopChecks`: the task's probes stop.
    pub(super) fn stop_probes(&mut self, i: usize, task: &AttemptId) {
        if let Some(p) = self.nodes[i].running.get_mut(task) {
            p.probe_gen += 1;
        }
    }

    /// A probe starts (`result` `None`) or its result is in.
    pub(super) fn probe(
        &mut self,
        host: &mut dyn Host,
        i: usize,
        task: AttemptId,
        mut probe: ProbeRef,
        result: Option<CheckResult>,
    ) {
        let Some(p) = self.nodes[i]
            .running
            .get(&task)
            .filter(|p| p.pid == probe.pid && p.probe_gen == probe.generation)
        else {
            return;
        };
        let now = host.now();
        let state = host.process(i).state;
        if state == ProcessState::Down {
            return;
        }
        let Some(result) = result else {
            // A paused agent's timers wait: the probe starts after the pause.
            if state == ProcessState::Paused {
                let again = SchedEvent::Probe {
                    node: i,
                    task,
                    probe,
                    result: None,
                };
                host.schedule(now.plus_ms(super::FEED_MS), again);
                return;
            }
            probe.started = now;
            let swallowed = self.drains.sabotage == super::DrainSabotage::HangsPass;
            let (after, result) = if p.hung && !swallowed {
                let why = format!("timed out after {} ms", probe.timeout_ms);
                (probe.timeout_ms, CheckResult::Fail(why))
            } else if self.discovery.sabotage == super::serving::DiscoverySabotage::AlwaysPass {
                (PROBE_MS, CheckResult::Pass)
            } else if p.fails {
                (PROBE_MS, CheckResult::Fail("HTTP 500".into()))
            } else {
                (PROBE_MS, CheckResult::Pass)
            };
            self.discovery.figures.probes += 1;
            let done = SchedEvent::Probe {
                node: i,
                task,
                probe,
                result: Some(result),
            };
            host.schedule(now.plus_ms(after), done);
            return;
        };
        if state == ProcessState::Running {
            if let Some(core) = self.nodes[i].core.as_mut() {
                core.handle_check_result(now, task.clone(), probe.check, result);
            }
            self.drain(host, i);
        }
        let next = probe.started.plus_ms(probe.interval_ms).max(now);
        let again = SchedEvent::Probe {
            node: i,
            task,
            probe,
            result: None,
        };
        host.schedule(next, again);
    }

    /// The `hang` fault: `k` running service tasks with checks, drawn from the seed among
    /// those of live agents, stop answering (for `for_ms`, or until they are killed).
    pub fn hang(&mut self, host: &mut dyn Host, k: usize, for_ms: Option<u64>) {
        let mut candidates: Vec<(usize, AttemptId)> = Vec::new();
        for (i, node) in self.nodes.iter().enumerate() {
            if host.process(i).state != ProcessState::Running {
                continue;
            }
            for (task, p) in &node.running {
                if p.serving() && p.probe_gen > 0 && !p.orphan {
                    candidates.push((i, task.clone()));
                }
            }
        }
        let now = host.now();
        for n in 0..k.min(candidates.len()) {
            let pick = self.hang_rng.random_range(n..candidates.len());
            candidates.swap(n, pick);
            let (i, task) = candidates[n].clone();
            let Some(p) = self.nodes[i].running.get_mut(&task) else {
                continue;
            };
            p.hung = true;
            p.was_hung = true;
            p.serving_since = None;
            let pid = p.pid;
            self.discovery.figures.hangs += 1;
            self.discovery.stopped_serving(now, i, &task);
            if let Some(ms) = for_ms {
                host.schedule(now.plus_ms(ms), SchedEvent::Unhang { node: i, task, pid });
            }
        }
    }

    /// A hung task answers again.
    pub(super) fn unhang(&mut self, host: &mut dyn Host, i: usize, task: &AttemptId, pid: u64) {
        if let Some(p) = self.nodes[i]
            .running
            .get_mut(task)
            .filter(|p| p.pid == pid && p.hung)
        {
            p.hung = false;
            if !p.fails {
                p.serving_since = Some(host.now());
                self.discovery.serving_again(i, task);
                self.drain_slot_served(i, task);
            }
        }
    }
}
