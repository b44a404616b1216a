//! Fencing: a local task whose attempt is no longer current (superseded, lost, stopped,
//! scaled down, purged) is killed, or, lost but still running here, reclaimed.

use crate::disconnect::LostFate;
use crate::ids::{AttemptId, SlotKey};
use crate::scheduler::{ExecCommand, KillReason, Scheduler};
use crate::table::AttemptState;

impl Scheduler {
    /// Kill local tasks of `job` that are no longer current.
    pub(crate) fn check_ledger(&mut self, job: &str) {
        // The ledger holds this node's tasks only (a few dozen), ordered by incarnation first:
        // the tasks of one job id across its incarnations are not contiguous, so scan it.
        let fates: Vec<(AttemptId, Fate)> = self
            .target
            .ledger
            .iter()
            .filter(|(id, t)| !t.killing && id.job == job)
            .filter_map(|(id, _)| self.fate(id).map(|f| (id.clone(), f)))
            .collect();
        self.apply_fates(fates);
    }

    /// Kill local tasks of these slots that are no longer current. Every replica asks this
    /// for every slot change it hears of, and this node almost never runs the slot: a range
    /// lookup per slot instead of a scan of the ledger. `keys` are distinct and sorted, so
    /// the kills come in ledger order, as from [`Scheduler::check_ledger`].
    pub(crate) fn check_ledger_slots(&mut self, keys: &[SlotKey]) {
        if self.target.ledger.is_empty() {
            return;
        }
        let mut fates: Vec<(AttemptId, Fate)> = Vec::new();
        for key in keys {
            for (id, t) in self
                .target
                .ledger
                .range(key.first_attempt()..key.end_attempt())
            {
                if !t.killing
                    && let Some(fate) = self.fate(id)
                {
                    fates.push((id.clone(), fate));
                }
            }
        }
        self.apply_fates(fates);
    }

    fn apply_fates(&mut self, fates: Vec<(AttemptId, Fate)>) {
        let mut doomed = Vec::new();
        for (id, fate) in fates {
            match fate {
                Fate::Kill(reason) => doomed.push((id, reason)),
                Fate::Reclaim(state) => self.write_state_if_mine(&id, state),
            }
        }
        self.kill_doomed(doomed);
    }

    pub(crate) fn kill_doomed(&mut self, doomed: Vec<(AttemptId, KillReason)>) {
        for (task, reason) in doomed {
            if let Some(t) = self.target.ledger.get_mut(&task) {
                t.killing = true;
            }
            self.stop_checks(&task);
            self.commands.push_back(ExecCommand::Kill { task, reason });
        }
    }

    /// What a local task that the tables may no longer want needs (`None`: keep it).
    fn fate(&self, id: &AttemptId) -> Option<Fate> {
        let tables = self.tables();
        let Some((inc, entry)) = tables.job(&id.job) else {
            return Some(Fate::Kill(KillReason::JobGone));
        };
        if inc != id.incarnation {
            return Some(Fate::Kill(KillReason::JobGone));
        }
        if entry.stopped {
            return Some(Fate::Kill(KillReason::Stopped));
        }
        if id.slot >= entry.spec.count {
            return Some(Fate::Kill(KillReason::ScaledDown));
        }
        let state = tables.state(id);
        if state.is_lost() {
            let outdated = tables
                .assignment(id)
                .is_some_and(|a| a.epoch != entry.epoch);
            if outdated {
                return Some(Fate::Kill(KillReason::Lost));
            }
            return match self.lost_fate(id, &state, &entry.spec) {
                LostFate::Reclaim(next) => Some(Fate::Reclaim(next)),
                LostFate::Kill(reason) => Some(Fate::Kill(reason)),
                LostFate::Wait => None,
            };
        }
        let current = tables.current_attempt(&id.slot_key()).map(|(k, _)| k);
        (current != Some(id)).then_some(Fate::Kill(KillReason::Superseded))
    }
}

/// What a local task needs (see [`Scheduler::fate`]).
enum Fate {
    Kill(KillReason),
    /// Write this state: reclaim the task after a loss.
    Reclaim(AttemptState),
}
