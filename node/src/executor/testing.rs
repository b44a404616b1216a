//! Guards for tests that start real processes: whatever a test started is killed when the
//! guard drops, so a test that fails halfway (a panic unwinds past its own cleanup) leaves no
//! `sleep 600` behind to hold the test runner's pipes or the machine.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command};

use nix::sys::signal::Signal;

use super::{Executor, signal_group};
use crate::watchdog::{Hello, kill_everything};

/// Kills, when dropped, every task an executor left running: every recorded process group and
/// every process in its task cgroups, as the watchdog does for an agent that is gone (and with
/// the same care for reused pids). Declare it after the scratch directory it reads, so that it
/// drops first.
#[derive(Debug)]
pub(crate) struct Reaper(Hello);

impl Reaper {
    pub fn new(exec: &Executor) -> Reaper {
        Reaper(Hello {
            agent_pid: std::process::id(),
            orphan_grace_ms: 0,
            tasks_dir: exec.tasks_dir().to_owned(),
            cgroups: exec.cgroup_parents(),
        })
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        kill_everything(&self.0);
    }
}

/// A child of the test in a process group of its own, which it leads. Dropping it SIGKILLs the
/// whole group and then reaps the child: until it is reaped, the child's pid (a zombie's too)
/// names this group and no other, so the kill cannot reach a reused pid. For that reason it
/// offers no `wait`: the child is reaped only in `drop`, after the kill.
#[derive(Debug)]
pub(crate) struct ChildGroup(Child);

impl ChildGroup {
    /// Spawns `command` as the leader of a new process group.
    pub fn spawn(command: &mut Command) -> ChildGroup {
        ChildGroup(command.process_group(0).spawn().unwrap())
    }

    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    /// The child's stdout, when the command piped it.
    pub fn take_stdout(&mut self) -> Option<std::process::ChildStdout> {
        self.0.stdout.take()
    }
}

impl Drop for ChildGroup {
    fn drop(&mut self) {
        signal_group(self.0.id(), Signal::SIGKILL);
        let _ = self.0.wait();
    }
}
