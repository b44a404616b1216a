//! Health checks, the pure part (`docs/services.md`, §2): the state machine that turns one
//! task's check results into its readiness and its restart, the checks as the shell runs
//! them, and the one rule every reader uses for "is this attempt healthy" ([`task_health`]).
//!
//! # The machine
//!
//! A [`HealthMachine`] is made when the task's process starts (`Started`), with the job's
//! `[[checks]]`, and is fed every result with [`HealthMachine::record`]. It promises:
//! - **Readiness** (what discovery uses) is `Unknown` until every check has passed once, then
//!   `Passing` while every check's last result passed, and `Critical` from the first failure
//!   of a check that has passed once (or whose grace ran out) until that check passes again.
//!   A failure inside a check's grace, before its first pass, leaves readiness `Unknown`.
//! - **Liveness** (what restarts) counts a check's consecutive failures only after its first
//!   pass or once `grace_ms` after the start has run out (nomad#23661); a pass resets the
//!   count. When a check with `failures = n > 0` counts its n-th failure, `record` returns the
//!   restart reason `check ready failed 3 times: HTTP 503`, and the machine is finished.
//! - **Ops on transitions only:** `record` returns the [`Observed`] health only when it
//!   differs from the last one returned (a fresh machine counts as having returned
//!   `Unknown` with no failures), so a steadily passing or steadily failing-in-grace check
//!   writes nothing, and a flapping one at most one op per result.
//!
//! Time is an input (`now`, the same clock as `Started`); nothing here reads one.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use shoal_gossip::Millis;

use crate::ids::AttemptId;
use crate::spec::{CheckKind, CheckSpec};
use crate::table::{AttemptState, HealthStatus, Tables, clip_note};

/// What one probe found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CheckResult {
    /// The check passed.
    Pass,
    /// The check failed; why (`HTTP 503`, `connection refused`, `timed out after 2000 ms`).
    Fail(String),
}

/// A check as the shell runs it: ports, address and arguments filled in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolvedCheck {
    /// Position in the job's `[[checks]]` (what results name).
    pub index: u8,
    /// The check's name (`ready`, or its default `http-0`).
    pub name: String,
    /// What to probe.
    pub probe: Probe,
    /// Time between probes.
    pub interval_ms: u64,
    /// Time one probe may take; a probe still running then fails.
    pub timeout_ms: u64,
}

/// What a check probes, resolved for one attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Probe {
    /// `GET http://ip:port/path`; passes on `status` if set, else on any of 200..=399.
    Http {
        /// The task's service address.
        ip: IpAddr,
        /// The host port bound to the check's port name.
        port: u16,
        /// Path, starting with `/`.
        path: String,
        /// The one status that passes, if the check names one.
        status: Option<u16>,
    },
    /// A TCP connect to `ip:port`.
    Tcp {
        /// The task's service address.
        ip: IpAddr,
        /// The host port bound to the check's port name.
        port: u16,
    },
    /// A program run as the task's user in the task's environment; exit 0 passes.
    Command {
        /// Program.
        command: String,
        /// Arguments, `${SHOAL_…}` replaced.
        args: Vec<String>,
        /// The task's environment (as its `Start` had it).
        env: std::collections::BTreeMap<String, String>,
        /// The task's working directory, if the job set one.
        workdir: Option<String>,
        /// The task's user, if the job names one.
        user: Option<String>,
    },
}

impl Probe {
    /// The kind of check this probe runs.
    #[must_use]
    pub fn kind(&self) -> CheckKind {
        match self {
            Probe::Http { .. } => CheckKind::Http,
            Probe::Tcp { .. } => CheckKind::Tcp,
            Probe::Command { .. } => CheckKind::Command,
        }
    }
}

/// The health a machine reports: a `Health` row without its stamp.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// Readiness.
    pub status: HealthStatus,
    /// The last failure, `check NAME: REASON`, clipped; empty when every check passes.
    pub note: String,
    /// Consecutive counted failures of the check closest to its limit.
    pub failures: u32,
    /// That check's limit (0: no check restarts the task).
    pub limit: u32,
}

/// What one result changed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Step {
    /// The new health, when it differs from the last one reported.
    pub changed: Option<Observed>,
    /// The task must be restarted, for this reason (the machine is finished).
    pub restart: Option<String>,
}

/// One check's memory.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Track {
    name: String,
    grace_ms: u64,
    limit: u32,
    passed_once: bool,
    /// The last result was a failure that counts (after the first pass or the grace).
    critical: bool,
    /// Consecutive counted failures.
    failures: u32,
}

/// The health of one running task (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthMachine {
    started: Millis,
    checks: Vec<Track>,
    /// The job's checks this machine was made from (a job write that changes them makes a
    /// new machine).
    specs: Vec<CheckSpec>,
    /// The last failure seen, `check NAME: REASON`.
    note: String,
    reported: Observed,
    finished: bool,
}

impl HealthMachine {
    /// A machine for a task whose process started at `started`, with the job's checks.
    #[must_use]
    pub fn new(started: Millis, specs: &[CheckSpec]) -> Self {
        let checks: Vec<Track> = specs
            .iter()
            .enumerate()
            .map(|(i, c)| Track {
                name: c.name_or_default(i),
                grace_ms: c.grace_ms,
                limit: c.failures,
                passed_once: false,
                critical: false,
                failures: 0,
            })
            .collect();
        let mut m = HealthMachine {
            started,
            checks,
            specs: specs.to_vec(),
            note: String::new(),
            reported: Observed {
                status: HealthStatus::Unknown,
                note: String::new(),
                failures: 0,
                limit: 0,
            },
            finished: false,
        };
        m.reported = m.observe();
        m
    }

    /// The checks this machine runs.
    #[must_use]
    pub fn specs(&self) -> &[CheckSpec] {
        &self.specs
    }

    /// Current readiness.
    #[must_use]
    pub fn status(&self) -> HealthStatus {
        self.reported.status
    }

    /// Whether a result asked for a restart (later results are ignored).
    #[must_use]
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Feeds the result of check `index` at `now`. Unknown indexes and results after a
    /// restart was asked for change nothing.
    pub fn record(&mut self, now: Millis, index: u8, result: &CheckResult) -> Step {
        let started = self.started;
        let Some(track) = self
            .checks
            .get_mut(usize::from(index))
            .filter(|_| !self.finished)
        else {
            return Step::default();
        };
        let mut restart = None;
        match result {
            CheckResult::Pass => {
                track.passed_once = true;
                track.critical = false;
                track.failures = 0;
            }
            CheckResult::Fail(reason) => {
                let counts = track.passed_once || now.0 >= started.0.saturating_add(track.grace_ms);
                self.note = clip_note(&format!("check {}: {reason}", track.name));
                if counts {
                    track.critical = true;
                    track.failures = track.failures.saturating_add(1);
                    if track.limit > 0 && track.failures >= track.limit {
                        restart = Some(format!(
                            "check {} failed {} times: {reason}",
                            track.name, track.failures
                        ));
                        self.finished = true;
                    }
                }
            }
        }
        let now_observed = self.observe();
        let changed = (now_observed != self.reported).then(|| now_observed.clone());
        self.reported = now_observed;
        Step { changed, restart }
    }

    fn observe(&self) -> Observed {
        let status = if self.checks.iter().any(|c| c.critical) {
            HealthStatus::Critical
        } else if self.checks.iter().all(|c| c.passed_once) {
            HealthStatus::Passing
        } else {
            HealthStatus::Unknown
        };
        // The check closest to restarting the task; without limits, the longest streak.
        let closest = self
            .checks
            .iter()
            .filter(|c| c.limit > 0)
            .min_by_key(|c| c.limit.saturating_sub(c.failures));
        let (failures, limit) = match closest {
            Some(c) => (c.failures, c.limit),
            None => (self.checks.iter().map(|c| c.failures).max().unwrap_or(0), 0),
        };
        Observed {
            status,
            note: if status == HealthStatus::Passing {
                String::new()
            } else {
                self.note.clone()
            },
            failures,
            limit,
        }
    }
}

/// An attempt's health as users and discovery see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskHealth {
    /// Running, and its checks pass (or the job has none).
    Healthy,
    /// Running, and a check fails (readiness `Critical`).
    Unhealthy,
    /// Not running, or its checks have not all passed yet.
    Unknown,
}

impl TaskHealth {
    /// Stable lowercase name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            TaskHealth::Healthy => "healthy",
            TaskHealth::Unhealthy => "unhealthy",
            TaskHealth::Unknown => "unknown",
        }
    }

    /// Whether discovery should answer with this attempt.
    #[must_use]
    pub fn is_healthy(self) -> bool {
        self == TaskHealth::Healthy
    }
}

/// The one rule for "is this attempt healthy" (`docs/services.md`, §2 and §3): `Healthy` when
/// it runs (any round) and its readiness is `Passing`, or it runs and `has_checks` is false
/// (the job declares no `[[checks]]`); `Unhealthy` when it runs and its readiness is
/// `Critical`; `Unknown` otherwise. Pure: every node with the same tables answers the same.
#[must_use]
pub fn task_health(tables: &Tables, id: &AttemptId, has_checks: bool) -> TaskHealth {
    if !matches!(tables.state(id), AttemptState::Running { .. }) {
        return TaskHealth::Unknown;
    }
    if !has_checks {
        return TaskHealth::Healthy;
    }
    match tables.health(id).map(|h| h.status) {
        Some(HealthStatus::Passing) => TaskHealth::Healthy,
        Some(HealthStatus::Critical) => TaskHealth::Unhealthy,
        Some(HealthStatus::Unknown) | None => TaskHealth::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(name: &str, grace_ms: u64, failures: u32) -> CheckSpec {
        CheckSpec {
            name: Some(name.into()),
            kind: CheckKind::Tcp,
            port: Some("http".into()),
            path: None,
            status: None,
            command: None,
            args: Vec::new(),
            interval_ms: 100,
            timeout_ms: 100,
            grace_ms,
            failures,
        }
    }

    fn fail(why: &str) -> CheckResult {
        CheckResult::Fail(why.into())
    }

    #[test]
    fn unknown_until_every_check_passed_once_then_passing() {
        let mut m = HealthMachine::new(Millis(0), &[check("a", 1000, 3), check("b", 1000, 3)]);
        assert_eq!(m.status(), HealthStatus::Unknown);
        let s = m.record(Millis(10), 0, &CheckResult::Pass);
        assert_eq!(
            s,
            Step::default(),
            "one of two passed: still unknown, no op"
        );
        let s = m.record(Millis(20), 1, &CheckResult::Pass);
        assert_eq!(s.changed.unwrap().status, HealthStatus::Passing);
        // Passing again writes nothing.
        assert_eq!(m.record(Millis(30), 0, &CheckResult::Pass), Step::default());
    }

    #[test]
    fn failures_in_grace_before_the_first_pass_are_ignored() {
        let mut m = HealthMachine::new(Millis(1000), &[check("ready", 500, 1)]);
        let s = m.record(Millis(1200), 0, &fail("connection refused"));
        assert!(s.restart.is_none(), "inside grace");
        let seen = s.changed.expect("the note changed");
        assert_eq!(seen.status, HealthStatus::Unknown);
        assert_eq!(seen.note, "check ready: connection refused");
        assert_eq!(seen.failures, 0);
        // The same failure again changes nothing: no op.
        assert_eq!(
            m.record(Millis(1300), 0, &fail("connection refused")),
            Step::default()
        );
        // Grace over (1000 + 500): the failure counts, and one is the limit.
        let s = m.record(Millis(1500), 0, &fail("connection refused"));
        assert_eq!(
            s.restart.as_deref(),
            Some("check ready failed 1 times: connection refused")
        );
        assert_eq!(s.changed.unwrap().status, HealthStatus::Critical);
        assert!(m.is_finished());
        assert_eq!(
            m.record(Millis(1600), 0, &CheckResult::Pass),
            Step::default()
        );
    }

    #[test]
    fn after_the_first_pass_failures_count_at_once_and_critical_is_immediate() {
        let mut m = HealthMachine::new(Millis(0), &[check("ready", 60_000, 3)]);
        m.record(Millis(1), 0, &CheckResult::Pass);
        let s = m.record(Millis(2), 0, &fail("HTTP 503"));
        let seen = s.changed.unwrap();
        assert_eq!(
            (seen.status, seen.failures, seen.limit),
            (HealthStatus::Critical, 1, 3)
        );
        assert_eq!(seen.note, "check ready: HTTP 503");
        assert!(s.restart.is_none());
        let s = m.record(Millis(3), 0, &fail("HTTP 503"));
        assert_eq!(
            s.changed.unwrap().failures,
            2,
            "the counter is a transition"
        );
        let s = m.record(Millis(4), 0, &fail("HTTP 503"));
        assert_eq!(
            s.restart.as_deref(),
            Some("check ready failed 3 times: HTTP 503")
        );
    }

    #[test]
    fn a_pass_resets_the_count_and_clears_critical() {
        let mut m = HealthMachine::new(Millis(0), &[check("ready", 0, 3)]);
        m.record(Millis(1), 0, &CheckResult::Pass);
        m.record(Millis(2), 0, &fail("HTTP 500"));
        m.record(Millis(3), 0, &fail("HTTP 500"));
        let s = m.record(Millis(4), 0, &CheckResult::Pass);
        let seen = s.changed.unwrap();
        assert_eq!(
            (seen.status, seen.failures, seen.note.as_str()),
            (HealthStatus::Passing, 0, "")
        );
        // Two more failures do not restart: the streak started again.
        m.record(Millis(5), 0, &fail("HTTP 500"));
        let s = m.record(Millis(6), 0, &fail("HTTP 500"));
        assert!(s.restart.is_none());
    }

    #[test]
    fn zero_failures_never_restarts_and_counts_the_streak() {
        let mut m = HealthMachine::new(Millis(0), &[check("ready", 0, 0)]);
        for t in 1..200 {
            let s = m.record(Millis(t), 0, &fail("down"));
            assert!(s.restart.is_none());
        }
        assert_eq!(m.status(), HealthStatus::Critical);
        assert_eq!(m.reported.failures, 199);
        assert_eq!(m.reported.limit, 0);
    }

    #[test]
    fn the_counter_shown_is_the_check_closest_to_its_limit() {
        let mut m = HealthMachine::new(Millis(0), &[check("slow", 0, 10), check("fast", 0, 2)]);
        let s = m.record(Millis(1), 0, &fail("x"));
        let seen = s.changed.unwrap();
        assert_eq!(
            (seen.failures, seen.limit),
            (0, 2),
            "fast is closer: 2 left"
        );
        let s = m.record(Millis(2), 1, &fail("y"));
        let seen = s.changed.unwrap();
        assert_eq!((seen.failures, seen.limit), (1, 2));
        // An unknown check index changes nothing.
        assert_eq!(m.record(Millis(3), 7, &fail("z")), Step::default());
    }

    #[test]
    fn task_health_follows_state_checks_and_readiness() {
        use crate::ids::{Dot, Hlc, Stamp};
        use crate::table::{Health, OpBody};
        let id = AttemptId {
            job: "web".into(),
            incarnation: 1,
            slot: 0,
            attempt: 1,
            placer: "n1".into(),
        };
        let mut t = Tables::default();
        assert_eq!(
            task_health(&t, &id, false),
            TaskHealth::Unknown,
            "not running"
        );
        t.join_body(&OpBody::State {
            id: id.clone(),
            state: AttemptState::running(crate::ids::Hlc::default()),
        });
        assert_eq!(task_health(&t, &id, false), TaskHealth::Healthy);
        assert_eq!(task_health(&t, &id, true), TaskHealth::Unknown);
        let health = |wall_ms, status| OpBody::Health {
            id: id.clone(),
            health: Health {
                stamp: Stamp {
                    hlc: Hlc {
                        wall_ms,
                        logical: 0,
                    },
                    actor: Dot::new(
                        crate::ids::ActorId {
                            node: "n1".into(),
                            start: 1,
                        },
                        1,
                    )
                    .actor,
                },
                status,
                note: String::new(),
                failures: 0,
                limit: 3,
            },
        };
        t.join_body(&health(2, HealthStatus::Critical));
        assert_eq!(task_health(&t, &id, true), TaskHealth::Unhealthy);
        // An older write loses.
        t.join_body(&health(1, HealthStatus::Passing));
        assert_eq!(task_health(&t, &id, true), TaskHealth::Unhealthy);
        t.join_body(&health(3, HealthStatus::Passing));
        assert!(task_health(&t, &id, true).is_healthy());
        t.join_body(&OpBody::State {
            id: id.clone(),
            state: AttemptState::Killed,
        });
        assert_eq!(task_health(&t, &id, true), TaskHealth::Unknown, "ended");
    }
}
