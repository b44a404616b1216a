//! The target side of rollouts (`docs/services.md`, §2): a local task of a job with an
//! `[update]` block is marked `settled` once it stayed healthy (passing, or running without
//! checks) for `update.min_healthy_ms`, and `deadline_missed` once it is still not settled
//! `update.healthy_deadline_ms` after its admission. Both are timed on this node's own clock
//! (no two clocks are compared) and written once each to the `milestones` component.
//!
//! Driven by [`Scheduler::track_settling`] after anything that may change a local task's
//! health (its start, a check result, an adoption after a restart) and by
//! `Wake::Settle` timers.

use crate::ids::AttemptId;
use crate::roles::Wake;
use crate::scheduler::Scheduler;
use crate::table::{AttemptState, HealthStatus, OpBody};

impl Scheduler {
    /// A local task's health may have changed: start or stop its `settled` clock.
    pub(crate) fn track_settling(&mut self, task: &AttemptId) {
        let Some(update) = self.update_of(task) else {
            return;
        };
        let healthy = self.locally_healthy(task);
        let now = self.now;
        let Some(t) = self.target.ledger.get_mut(task) else {
            return;
        };
        if t.killing || t.marks.settled {
            return;
        }
        match (healthy, t.healthy_since) {
            (true, None) => {
                t.healthy_since = Some(now);
                let at = now.plus_ms(update.min_healthy_ms);
                self.timers.insert((at, Wake::Settle(task.clone())));
            }
            (false, Some(_)) => t.healthy_since = None,
            _ => {}
        }
    }

    /// Arm the healthy deadline of a task admitted (or adopted) now.
    pub(crate) fn arm_healthy_deadline(&mut self, task: &AttemptId) {
        if let Some(update) = self.update_of(task) {
            let at = self.now.plus_ms(update.healthy_deadline_ms);
            self.timers.insert((at, Wake::Settle(task.clone())));
        }
        self.track_settling(task);
    }

    /// A `Wake::Settle` timer of a local task: write what its clocks say now.
    pub(crate) fn settle_due(&mut self, task: &AttemptId) {
        let Some(update) = self.update_of(task) else {
            return;
        };
        let now = self.now;
        let mine = self
            .tables()
            .assignment(task)
            .is_some_and(|a| a.target == self.node);
        let Some(t) = self.target.ledger.get_mut(task) else {
            return;
        };
        if t.killing || !mine {
            return;
        }
        let mut marks = t.marks;
        if t.healthy_since
            .is_some_and(|since| now.0 >= since.0.saturating_add(update.min_healthy_ms))
        {
            marks.settled = true;
        }
        if !marks.settled && now.0 >= t.since.0.saturating_add(update.healthy_deadline_ms) {
            marks.deadline_missed = true;
        }
        if marks != t.marks {
            t.marks = marks;
            self.write(OpBody::Milestones {
                id: task.clone(),
                marks,
            });
        }
    }

    /// The `[update]` block of a local task's job, when the task belongs to its visible
    /// incarnation.
    fn update_of(&self, task: &AttemptId) -> Option<crate::spec::UpdateSpec> {
        let (inc, entry) = self.tables().job(&task.job)?;
        if inc != task.incarnation {
            return None;
        }
        entry.spec.update.clone()
    }

    /// Running here, and passing its checks (or without checks).
    fn locally_healthy(&self, task: &AttemptId) -> bool {
        if !matches!(self.tables().state(task), AttemptState::Running { .. }) {
            return false;
        }
        let has_checks = self
            .tables()
            .job(&task.job)
            .is_some_and(|(_, e)| !e.spec.checks.is_empty());
        !has_checks
            || self
                .target
                .checks
                .get(task)
                .is_some_and(|m| m.status() == HealthStatus::Passing)
    }
}

#[cfg(test)]
mod tests {
    use crate::table::Milestones;

    #[test]
    fn marks_join_by_or() {
        let mut m = Milestones::default();
        assert!(m.join(Milestones {
            settled: true,
            deadline_missed: false
        }));
        assert!(!m.join(Milestones::default()));
        assert!(m.settled && !m.deadline_missed);
    }
}
