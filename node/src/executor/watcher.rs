//! Seeing a task through once it runs: kill requests (SIGTERM, grace, SIGKILL), the exit, and
//! the cleanup of whatever it left in its process group and cgroup.

use std::os::unix::process::ExitStatusExt;
use std::sync::Arc;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use shoal_scheduler::AttemptId;
use tokio::sync::watch;
use tokio::time::Instant;

use super::cgroup::TaskCgroup;
use super::disk_name::DiskName;
use super::launch::Launched;
use super::pidfile::PidRecord;
use super::{ExecEvent, Inner, procfs};

/// Sees a spawned child through: `Started`, kill requests, exit, group cleanup, `Exited`.
pub(super) async fn watch_child(
    inner: Arc<Inner>,
    task: AttemptId,
    name: DiskName,
    mut launched: Launched,
    mut kill_rx: watch::Receiver<Option<Instant>>,
) {
    let pid = launched.pid;
    let target = KillTarget {
        pgid: pid,
        cgroup: launched.cgroup.clone(),
    };
    if let Some(reason) = launched.setup_error.take() {
        target.signal(Signal::SIGKILL);
        let _ = launched.child.wait().await;
        target.kill_group();
        let event = ExecEvent::Failed {
            task: task.clone(),
            reason,
        };
        return inner.finish(task, &name, launched.cgroup, event).await;
    }
    inner
        .emit(ExecEvent::Started {
            task: task.clone(),
            pid,
        })
        .await;
    let mut kill = KillState::default();
    // A kill that came while the task was launching: `run_task` saw it (which marks it seen, so
    // `changed` below would not report it) and found the launch already begun.
    kill.request(&target, *kill_rx.borrow_and_update());
    let status = loop {
        tokio::select! {
            status = launched.child.wait() => break status,
            changed = kill_rx.changed(), if kill.listening => {
                kill.listening = changed.is_ok();
                kill.request(&target, *kill_rx.borrow_and_update());
            }
            () = sleep_until(kill.deadline), if kill.deadline.is_some() => kill.expire(&target),
        }
    };
    // A kill requested before the first poll is seen here too.
    kill.request(&target, *kill_rx.borrow());
    clear_group(&inner, &target, &kill).await;
    let (code, signal) = match &status {
        Ok(s) => (s.code(), s.signal()),
        Err(e) => {
            tracing::warn!(%task, error = %e, "waiting for task failed; exit status unknown");
            (None, None)
        }
    };
    let event = ExecEvent::Exited {
        task: task.clone(),
        code,
        signal,
        killed: kill.termed,
        oom_killed: false,
    };
    inner.finish(task, &name, launched.cgroup, event).await;
}

/// Watches a process we did not spawn: poll for exit, honour kills, clean up.
pub(super) async fn watch_adopted(
    inner: Arc<Inner>,
    task: AttemptId,
    record: PidRecord,
    alive: bool,
    mut kill_rx: watch::Receiver<Option<Instant>>,
) {
    let cgroup = inner
        .cgroups
        .as_ref()
        .map(|h| h.task_cgroup(&record.task.cgroup()));
    let target = KillTarget {
        pgid: record.pgid,
        cgroup: cgroup.clone(),
    };
    // A previous incarnation killed at the wrong moment may have left the cgroup frozen.
    if let Some(cgroup) = &cgroup {
        cgroup.thaw();
    }
    let mut kill = KillState::default();
    let boot_id = inner.boot_id.clone();
    let still_alive = || record.leader_alive(boot_id.as_deref());
    let mut poll = tokio::time::interval(inner.config.adopt_poll_interval);
    while alive && still_alive() {
        tokio::select! {
            _ = poll.tick() => {}
            changed = kill_rx.changed(), if kill.listening => {
                kill.listening = changed.is_ok();
                kill.request(&target, *kill_rx.borrow_and_update());
            }
            () = sleep_until(kill.deadline), if kill.deadline.is_some() => kill.expire(&target),
        }
    }
    if alive {
        kill.request(&target, *kill_rx.borrow());
        clear_group(&inner, &target, &kill).await;
    }
    let event = ExecEvent::Exited {
        task: task.clone(),
        code: None,
        signal: None,
        killed: kill.termed,
        oom_killed: false,
    };
    inner.finish(task, &record.task, cgroup, event).await;
}

/// Every process of one task: its process group, and its cgroup where there is one (which also
/// holds the children that left the group with `setsid` or `setpgid`).
#[derive(Debug, Clone)]
struct KillTarget {
    pgid: u32,
    cgroup: Option<TaskCgroup>,
}

impl KillTarget {
    /// One signal to the group and to each process in the cgroup now.
    fn signal(&self, signal: Signal) {
        signal_group(self.pgid, signal);
        if let Some(cgroup) = &self.cgroup {
            cgroup.signal_members(signal);
        }
    }

    /// Whether any process of the task is left.
    fn has_members(&self) -> bool {
        !procfs::group_members(self.pgid).is_empty()
            || self.cgroup.as_ref().is_some_and(|c| !c.procs().is_empty())
    }

    /// SIGKILLs the process group. What is left in the cgroup is killed where the task ends,
    /// off the runtime's thread ([`super::Inner::finish`]).
    fn kill_group(&self) {
        signal_group(self.pgid, Signal::SIGKILL);
    }
}

/// Kill progress of one task.
#[derive(Debug)]
struct KillState {
    /// SIGTERM was sent.
    termed: bool,
    /// When to SIGKILL, until it is sent.
    deadline: Option<Instant>,
    /// SIGKILL was sent.
    killed: bool,
    /// The kill channel is open.
    listening: bool,
}

impl Default for KillState {
    fn default() -> Self {
        Self {
            termed: false,
            deadline: None,
            killed: false,
            listening: true,
        }
    }
}

impl KillState {
    fn request(&mut self, target: &KillTarget, deadline: Option<Instant>) {
        let Some(deadline) = deadline else { return };
        if !self.termed {
            self.termed = true;
            target.signal(Signal::SIGTERM);
        }
        if !self.killed {
            self.deadline = Some(self.deadline.map_or(deadline, |d| d.min(deadline)));
        }
    }

    fn expire(&mut self, target: &KillTarget) {
        target.signal(Signal::SIGKILL);
        self.killed = true;
        self.deadline = None;
    }
}

/// After the leader is gone: on a kill, give the rest of the task until the deadline to exit on
/// SIGTERM; then (and always on a natural exit) SIGKILL whatever is left in the group. The
/// cgroup's members are killed where the task ends ([`super::Inner::finish`]).
async fn clear_group(inner: &Inner, target: &KillTarget, kill: &KillState) {
    if let Some(deadline) = kill.deadline {
        while Instant::now() < deadline && target.has_members() {
            tokio::time::sleep(inner.config.group_poll_interval).await;
        }
    }
    target.kill_group();
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Signals every process in group `pgid`; a group that is already gone is not an error.
pub(crate) fn signal_group(pgid: u32, signal: Signal) {
    let Ok(raw) = i32::try_from(pgid) else { return };
    if raw <= 1 {
        return; // never signal "every process" or init's group
    }
    match killpg(Pid::from_raw(raw), signal) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
        Err(e) => tracing::warn!(pgid, ?signal, error = %e, "cannot signal process group"),
    }
}
