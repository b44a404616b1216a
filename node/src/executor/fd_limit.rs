//! The agent's descriptor limit, and its tasks'.
//!
//! Every running task holds a pidfd in the agent, and every launch in flight about seven
//! descriptors (its log files, four `cgroup.procs`, the pidfd), so under a host's default soft
//! limit (often 1,024) a node could run only about a thousand tasks before launches failed with
//! `EMFILE`. The executor raises the agent's soft limit to its hard limit when it starts, as Go
//! programs do, and its tasks get back the soft limit the agent was started with
//! ([`for_tasks`], restored in the child before `execve`): a task sees the host's default, not
//! the agent's, just as it would have before.

use std::sync::OnceLock;

use nix::sys::resource::{Resource, getrlimit, setrlimit};

/// The soft and hard limits the agent was started with, once [`raise`] raised them.
static STARTED_WITH: OnceLock<(u64, u64)> = OnceLock::new();

/// Raises this process's soft `RLIMIT_NOFILE` to its hard limit, the first time; returns the
/// soft limit before and after, or `None` when it was already at the hard limit.
pub(crate) fn raise() -> nix::Result<Option<(u64, u64)>> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft >= hard {
        return Ok(None);
    }
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    STARTED_WITH.get_or_init(|| (soft, hard));
    Ok(Some((soft, hard)))
}

/// The limit a task is started with: the soft limit the agent was started with, when [`raise`]
/// changed it (`None`: the task inherits the agent's, which was not raised).
pub(super) fn for_tasks() -> Option<libc::rlimit64> {
    STARTED_WITH.get().map(|&(soft, hard)| libc::rlimit64 {
        rlim_cur: soft,
        rlim_max: hard,
    })
}
