//! What a slot needs, computed purely from the tables: the single source of truth shared by the
//! coordinator (what to do), the views (what to show) and garbage collection (is it finished).

use crate::ids::{AttemptId, Name, SlotKey};
use crate::spec::JobType;
use crate::table::{AttemptState, JobEntry, Tables};

/// Back-off after rejections, from the scheduler config.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RejectionBackoff {
    pub(crate) base_ms: u64,
    pub(crate) max_ms: u64,
}

impl RejectionBackoff {
    fn delay(&self, consecutive: u32) -> u64 {
        let exp = consecutive.saturating_sub(1).min(20);
        self.base_ms.saturating_mul(1 << exp).min(self.max_ms)
    }
}

/// The condition of one slot of the visible job incarnation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SlotStatus {
    /// Never placed (or every attempt was garbage-collected).
    Empty,
    /// The newest attempt is proposed, admitted or running.
    Live {
        /// The attempt.
        id: AttemptId,
        /// Its target.
        target: Name,
        /// Its state.
        state: AttemptState,
        /// Placed for an older job epoch: replace it.
        outdated: bool,
    },
    /// The newest attempt ended and the slot must be placed again after `delay_ms`.
    Retry {
        /// The ended attempt.
        id: AttemptId,
        /// Its target.
        target: Name,
        /// How it ended.
        state: AttemptState,
        /// Wait this long (from when the coordinator notices) before placing again.
        delay_ms: u64,
    },
    /// A batch slot exited 0.
    Done {
        /// The successful attempt.
        id: AttemptId,
        /// Where it ran.
        target: Name,
    },
    /// Out of retries (batch) or restart attempts (service).
    GaveUp {
        /// The last attempt.
        id: AttemptId,
        /// Where it ran.
        target: Name,
        /// How it ended.
        state: AttemptState,
    },
}

impl SlotStatus {
    /// Whether nothing more will happen to this slot.
    pub(crate) fn is_final(&self) -> bool {
        matches!(self, SlotStatus::Done { .. } | SlotStatus::GaveUp { .. })
    }
}

/// A failure for retry accounting (rejections are not failures: the task never ran).
fn is_failure(state: &AttemptState, job_type: JobType) -> bool {
    match state {
        AttemptState::Exited { code: 0 } => job_type == JobType::Service,
        AttemptState::Exited { .. }
        | AttemptState::Failed { .. }
        | AttemptState::Lost { .. }
        | AttemptState::Killed => true,
        _ => false,
    }
}

/// Compute the status of `key` under job entry `entry`.
pub(crate) fn slot_status(
    tables: &Tables,
    entry: &JobEntry,
    key: &SlotKey,
    backoff: RejectionBackoff,
) -> SlotStatus {
    // The current attempt is the newest one unless an older one of the same job version runs
    // (`Tables::current_attempt`); that one is live, so everything below the early return
    // reads the newest attempt as before.
    let Some((cur, a)) = tables.current_attempt(key) else {
        return SlotStatus::Empty;
    };
    let state = tables.state(cur);
    // Another epoch, older or newer: a revert reuses an older epoch (`docs/services.md`, §4).
    let outdated = a.epoch != entry.epoch;
    if state.is_live() {
        return SlotStatus::Live {
            id: cur.clone(),
            target: a.target.clone(),
            state,
            outdated,
        };
    }
    let (cur, target) = (cur.clone(), a.target.clone());
    let attempts = tables.slot_attempts(key).rev();
    if outdated {
        return SlotStatus::Retry {
            id: cur,
            target,
            state,
            delay_ms: 0,
        };
    }
    let job_type = entry.spec.job_type;
    if job_type == JobType::Batch && state.is_success() {
        return SlotStatus::Done { id: cur, target };
    }
    let (mut consecutive_rejections, mut consecutive_failures, mut failures) = (0u32, 0u32, 0u32);
    let mut streak = true;
    for (id, a) in attempts {
        if a.epoch != entry.epoch {
            break;
        }
        let s = tables.state(id);
        if matches!(s, AttemptState::Rejected { .. }) {
            if streak && consecutive_failures == 0 {
                consecutive_rejections += 1;
            }
            continue;
        }
        let failed = is_failure(&s, job_type);
        failures += u32::from(failed);
        if streak && failed {
            consecutive_failures += 1;
        } else {
            streak = false;
        }
    }
    failures = failures.saturating_add(tables.floor(key).failures);
    let spec = &entry.spec;
    let gave_up = match job_type {
        JobType::Batch => failures > spec.retries,
        JobType::Service => {
            spec.restart.attempts > 0 && consecutive_failures > spec.restart.attempts
        }
    };
    if gave_up {
        return SlotStatus::GaveUp {
            id: cur,
            target,
            state,
        };
    }
    let delay_ms = match &state {
        AttemptState::Rejected { .. } => backoff.delay(consecutive_rejections),
        // A drained slot moves at once (`docs/services.md`, §5).
        AttemptState::Lost { .. } | AttemptState::Drained => 0,
        _ => spec.restart.delay_after(consecutive_failures.max(1)),
    };
    SlotStatus::Retry {
        id: cur,
        target,
        state,
        delay_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{ActorId, Hlc, Stamp};
    use crate::spec::JobSpec;
    use crate::table::{Assignment, OpBody};
    use shoal_gossip::Resources;

    pub(crate) fn stamp(t: u64) -> Stamp {
        Stamp {
            hlc: Hlc {
                wall_ms: t,
                logical: 0,
            },
            actor: ActorId {
                node: "n".into(),
                start: 0,
            },
        }
    }

    fn entry(kind: &str, extra: &str) -> JobEntry {
        let spec = JobSpec::from_toml_str(&format!(
            "id = \"j\"\ntype = \"{kind}\"\ncommand = \"x\"\nresources = {{ cpu = 1, memory = 1 }}\n{extra}"
        ))
        .unwrap();
        JobEntry {
            stamp: stamp(1),
            epoch: stamp(1),
            spec,
            stopped: false,
            deployment: stamp(1),
            version: 1,
            skip_canary: false,
        }
    }

    fn key() -> SlotKey {
        SlotKey {
            job: "j".into(),
            incarnation: 0,
            slot: 0,
        }
    }

    fn add(t: &mut Tables, n: u32, state: AttemptState) {
        let id = AttemptId {
            job: "j".into(),
            incarnation: 0,
            slot: 0,
            attempt: n,
            placer: "n".into(),
        };
        let assignment = Assignment {
            target: "t".into(),
            resources: Resources::default(),
            epoch: stamp(1),
            generation: 0,
        };
        t.join_body(&OpBody::Assign {
            id: id.clone(),
            assignment,
        });
        t.join_body(&OpBody::State { id, state });
    }

    const B: RejectionBackoff = RejectionBackoff {
        base_ms: 10,
        max_ms: 100,
    };

    #[test]
    fn batch_retries_then_gives_up() {
        let e = entry(
            "batch",
            "retries = 1\nrestart = { delay_ms = 5, max_delay_ms = 5 }",
        );
        let mut t = Tables::default();
        assert_eq!(slot_status(&t, &e, &key(), B), SlotStatus::Empty);
        add(&mut t, 1, AttemptState::Failed { reason: "x".into() });
        assert!(matches!(
            slot_status(&t, &e, &key(), B),
            SlotStatus::Retry { delay_ms: 5, .. }
        ));
        add(
            &mut t,
            2,
            AttemptState::Rejected {
                reason: "full".into(),
            },
        );
        assert!(matches!(
            slot_status(&t, &e, &key(), B),
            SlotStatus::Retry { delay_ms: 10, .. }
        ));
        add(
            &mut t,
            3,
            AttemptState::Rejected {
                reason: "full".into(),
            },
        );
        assert!(matches!(
            slot_status(&t, &e, &key(), B),
            SlotStatus::Retry { delay_ms: 20, .. }
        ));
        add(&mut t, 4, AttemptState::Exited { code: 2 });
        assert!(matches!(
            slot_status(&t, &e, &key(), B),
            SlotStatus::GaveUp { .. }
        ));
    }

    #[test]
    fn batch_success_is_done_and_services_restart_with_backoff() {
        let mut t = Tables::default();
        add(&mut t, 1, AttemptState::Exited { code: 0 });
        assert!(slot_status(&t, &entry("batch", ""), &key(), B).is_final());
        let s = entry(
            "service",
            "restart = { delay_ms = 100, backoff = 2.0, max_delay_ms = 1000, attempts = 2 }",
        );
        assert!(matches!(
            slot_status(&t, &s, &key(), B),
            SlotStatus::Retry { delay_ms: 100, .. }
        ));
        add(&mut t, 2, AttemptState::Failed { reason: "x".into() });
        assert!(matches!(
            slot_status(&t, &s, &key(), B),
            SlotStatus::Retry { delay_ms: 200, .. }
        ));
        add(&mut t, 3, AttemptState::Failed { reason: "x".into() });
        assert!(matches!(
            slot_status(&t, &s, &key(), B),
            SlotStatus::GaveUp { .. }
        ));
        add(&mut t, 4, AttemptState::running(Hlc::default()));
        assert!(matches!(
            slot_status(&t, &s, &key(), B),
            SlotStatus::Live {
                outdated: false,
                ..
            }
        ));
    }

    #[test]
    fn lost_is_replaced_at_once_and_new_epochs_rerun() {
        let mut t = Tables::default();
        add(&mut t, 1, AttemptState::Lost { round: 0 });
        assert!(matches!(
            slot_status(&t, &entry("service", ""), &key(), B),
            SlotStatus::Retry { delay_ms: 0, .. }
        ));
        let mut t = Tables::default();
        add(&mut t, 1, AttemptState::Exited { code: 0 });
        let mut e = entry("batch", "");
        e.epoch = stamp(9);
        assert!(matches!(
            slot_status(&t, &e, &key(), B),
            SlotStatus::Retry { delay_ms: 0, .. }
        ));
    }
}
