//! The executor: tasks are real processes on this host.
//!
//! # What it promises
//! - A task is one scheduler attempt ([`AttemptId`]), named on disk by its job key
//!   `{job}.{incarnation}.{placer}`, slot and attempt (`executor/disk_name.rs` converts both
//!   ways, and refuses an attempt with [`ExecError::InvalidTask`] when the key would be over
//!   [`MAX_JOB_KEY_BYTES`] or unsafe as a path).
//! - Each task runs as its own process group (`setpgid(0, 0)` at spawn), stdin `/dev/null`,
//!   stdout and stderr appended to `<data_dir>/tasks/<job key>/<slot>/<attempt>/{stdout,stderr}`,
//!   with the spec's environment plus `SHOAL_JOB` (the job key), `SHOAL_SLOT`, `SHOAL_ATTEMPT`
//!   and `SHOAL_TASK_DIR` (the agent's own environment is not inherited beyond
//!   [`ExecutorConfig::pass_env`]).
//! - For every [`Executor::start`] that returns `Ok`, exactly one terminal event follows on the
//!   bounded event channel: [`ExecEvent::Failed`] (nothing ran, or setup failed and what ran was
//!   killed), or [`ExecEvent::Started`] and later [`ExecEvent::Exited`]. `Err` means the request
//!   was refused and nothing follows.
//! - When the agent runs as root, tasks run as an unprivileged user ([`ExecutorConfig::task_user`],
//!   `nobody` by default), or as a user the job names if [`ExecutorConfig::allowed_task_users`]
//!   lists it; otherwise as the agent's own user. A job naming a user the agent does not allow
//!   fails with a reason naming the flag that allows it.
//! - When a task's main process exits, whatever is left in its process group and its cgroup is
//!   SIGKILLed, its cgroup removed and its pid file deleted, so its resources are free when
//!   `Exited` arrives.
//! - [`Executor::kill`] sends SIGTERM to the group and to every process in the task's cgroup,
//!   then SIGKILL to all of them after the grace period if any is still alive: a child that left
//!   the process group (`setsid`) is still in the cgroup. Killing an unknown or finished task
//!   does nothing.
//! - Limits (cpu, memory, process count) are enforced through cgroups when the host allows;
//!   [`Executor::enforcement`] says exactly what is enforced, and says "not enforced" otherwise.
//! - A restarted agent finds the processes of its previous incarnation with
//!   [`Executor::recover`] (pid, process group, start time and boot id are persisted, so a reused
//!   pid is never mistaken for a task), then [`Executor::adopt`]s or kills them, or lets
//!   [`Executor::reconcile`] do both against the set of tasks it should be running.
//!
//! # How to drive it
//! Create it inside a tokio runtime with [`Executor::new`], keep the event receiver in the
//! agent's task loop, call `start`/`kill` from anywhere (the handle is `Clone`), and drain the
//! receiver continuously: a full channel delays only the per-task watchers, never the callers.

mod anchor;
pub(crate) mod cgroup;
mod check_command;
mod collect;
pub(crate) mod disk_name;
mod enforcement;
mod entry;
mod fd_limit;
mod launch;
mod logs;
pub(crate) mod pidfile;
mod pool;
pub(crate) mod procfs;
mod spares;
mod spawn;
#[cfg(test)]
pub(crate) mod testing;
mod users;
mod watcher;

use std::collections::{BTreeMap, BTreeSet};
use std::num::NonZeroUsize;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use shoal_scheduler::{AttemptId, TaskEvent};
use tokio::sync::{Notify, mpsc, watch};
use tokio::time::Instant;

use self::anchor::{Anchor, Under};
use self::cgroup::{Hierarchy, TaskCgroup};
pub use self::check_command::CheckCommand;
pub use self::collect::{FinishedDir, RemoveError};
use self::disk_name::{DiskName, attempt_id, disk_name};
pub use self::disk_name::{MAX_JOB_KEY_BYTES, NameError};
use self::enforcement::detect_enforcement;
pub use self::enforcement::{
    CpuEnforcement, Enforcement, KillEnforcement, MemoryEnforcement, PidsEnforcement,
};
use self::launch::run_task;
use self::logs::read_range;
pub use self::logs::{LogError, LogPaths, LogStream, LogTrim};
use self::pidfile::PidRecord;
use self::spares::Spares;
use self::users::Users;
pub(crate) use self::watcher::signal_group;
use self::watcher::watch_adopted;

/// What to run and with which limits.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskSpec {
    /// Program: a path, or a name looked up on the task's `PATH`.
    pub command: String,
    /// Arguments after the program name.
    pub args: Vec<String>,
    /// Extra environment; `SHOAL_*` task variables override entries of the same name.
    pub env: BTreeMap<String, String>,
    /// Working directory; the task directory when `None`.
    pub workdir: Option<PathBuf>,
    /// CPU rate limit in millicores; 0 means unlimited.
    pub cpu_millicores: u64,
    /// Memory limit in MiB; 0 means unlimited.
    pub memory_mib: u64,
    /// The user to run as; `None`: the executor's default task user.
    pub user: Option<String>,
}

/// The reason a task the kernel's OOM killer ended fails with. The count the agent reads
/// does not say whose limit ran out (the task's, or the host's memory), so the reason names
/// both.
pub const OOM_KILLED: &str = "out of memory: the kernel's OOM killer ended it (at its memory \
     limit, resources.memory, or the host ran out)";

/// The reason an adopted task's end is given when its memory cgroup counted an OOM kill: its
/// exit status is unknown (it is not the agent's child), so the count is the only evidence.
pub const ADOPTED_OOM_KILLED: &str = "out of memory, most likely: its memory cgroup counted an \
     OOM kill when it ended (its exit status is unknown: it was adopted after an agent restart)";

/// What happened to a task. Per task: `Failed`, or `Started` then `Exited`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExecEvent {
    /// The process runs (and is in its cgroup, when limits are enforced).
    Started {
        /// The task.
        task: AttemptId,
        /// Its pid, which is also its process group id.
        pid: u32,
    },
    /// The main process is gone and the task's resources are released.
    Exited {
        /// The task.
        task: AttemptId,
        /// Exit code, when it exited normally and was our child (unknown for adopted tasks).
        code: Option<i32>,
        /// The signal that ended it, when known.
        signal: Option<i32>,
        /// Whether [`Executor::kill`] was asked to stop it before it exited.
        killed: bool,
        /// The kernel's OOM killer ended it: it died by a `SIGKILL` the agent did not send,
        /// and its memory cgroup counted an OOM kill (only known where limits are enforced).
        oom_killed: bool,
    },
    /// The task could not be started; `reason` names what was wrong (command, path, cgroup).
    Failed {
        /// The task.
        task: AttemptId,
        /// Human-readable cause.
        reason: String,
    },
}

impl ExecEvent {
    /// The task the event is about.
    #[must_use]
    pub fn task(&self) -> &AttemptId {
        match self {
            ExecEvent::Started { task, .. }
            | ExecEvent::Exited { task, .. }
            | ExecEvent::Failed { task, .. } => task,
        }
    }

    /// The event as the scheduler hears it: the attempt and what happened to it.
    #[must_use]
    pub fn into_task_event(self) -> (AttemptId, TaskEvent) {
        match self {
            ExecEvent::Started { task, pid } => (task, TaskEvent::Started { pid }),
            ExecEvent::Exited {
                task, killed: true, ..
            } => (task, TaskEvent::Killed),
            ExecEvent::Exited {
                task,
                oom_killed: true,
                code: None,
                signal: None,
                ..
            } => (
                task,
                TaskEvent::Failed {
                    reason: ADOPTED_OOM_KILLED.into(),
                },
            ),
            ExecEvent::Exited {
                task,
                oom_killed: true,
                ..
            } => (
                task,
                TaskEvent::Failed {
                    reason: OOM_KILLED.into(),
                },
            ),
            ExecEvent::Exited {
                task,
                code: Some(code),
                ..
            } => (task, TaskEvent::Exited { code }),
            ExecEvent::Exited {
                task,
                signal: Some(signal),
                ..
            } => (task, TaskEvent::Exited { code: -signal }),
            ExecEvent::Exited { task, .. } => (
                task,
                TaskEvent::Failed {
                    reason: "exit status unknown: the process was adopted after an agent restart"
                        .into(),
                },
            ),
            ExecEvent::Failed { task, reason } => (task, TaskEvent::Failed { reason }),
        }
    }
}

/// Whether to look for cgroups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CgroupMode {
    /// Use cgroup v2, else v1, else enforce nothing (and say so).
    #[default]
    Auto,
    /// Never touch cgroups; limits are reported as not enforced.
    Off,
}

/// Launches in flight per core by default. A launch spends most of its time off the CPU: its
/// thread waits in `clone` until the child has entered its cgroups and reached `execve` (2.4 ms
/// per launch in a batch, against ~0.4 ms of its own work; `BENCHMARKS.md`, "What holds a batch
/// back now"), and on cgroupfs locks. With one launch per core the cores were idle a fifth of a
/// batch; four per core keep them busier (`BENCHMARKS.md`, "Four launches per core").
pub const LAUNCHES_PER_CORE: NonZeroUsize = NonZeroUsize::new(4).unwrap();

/// At most this many launches in flight by default, whatever the core count: each holds about
/// seven descriptors (log files, four `cgroup.procs`, the pidfd) and a
/// thread of the executor's pool, and the agent's descriptor limit is the host's default (often
/// 1,024).
pub const MAX_DEFAULT_LAUNCHES: NonZeroUsize = NonZeroUsize::new(32).unwrap();

/// Executor settings.
#[derive(Debug, Clone)]
pub struct ExecutorConfig {
    /// Capacity of the event channel.
    pub event_capacity: NonZeroUsize,
    /// Upper bound on one [`Executor::read_log`] call, whatever the caller asks for.
    pub max_log_read_bytes: NonZeroUsize,
    /// How often adopted processes (not our children, so no SIGCHLD) are checked for exit.
    pub adopt_poll_interval: Duration,
    /// How often a killed group is checked for members after its leader exited.
    pub group_poll_interval: Duration,
    /// cgroup use.
    pub cgroups: CgroupMode,
    /// Names this agent's cgroup subtree (`shoal/<instance>`), so agents sharing a host don't
    /// share task cgroups. 1–64 of `[A-Za-z0-9_.-]`.
    pub instance: String,
    /// Variables copied from the agent's environment into every task (when set).
    pub pass_env: Vec<String>,
    /// How many launches (directory, log files, cgroup, spawn, pid record) run at once on the
    /// executor's pool (`pool.rs`, which has as many threads again for task clean-ups; default
    /// [`LAUNCHES_PER_CORE`] per core, at most [`MAX_DEFAULT_LAUNCHES`]).
    pub max_parallel_launches: NonZeroUsize,
    /// Who tasks run as when the agent is root and the job names no user; `None`: `nobody`.
    /// An agent that is not root runs tasks as itself and accepts only its own name here.
    pub task_user: Option<String>,
    /// Users a job may name in its `user` field (root agents only).
    pub allowed_task_users: BTreeSet<String>,
    /// Most processes (and threads) one task may have, through the `pids` controller where
    /// there is one; `0`: unlimited.
    pub task_max_pids: u64,
}

impl Default for ExecutorConfig {
    fn default() -> Self {
        Self {
            event_capacity: NonZeroUsize::new(1024).unwrap(),
            max_log_read_bytes: NonZeroUsize::new(1 << 20).unwrap(),
            adopt_poll_interval: Duration::from_millis(250),
            group_poll_interval: Duration::from_millis(20),
            cgroups: CgroupMode::Auto,
            instance: "agent".to_owned(),
            pass_env: ["PATH", "LANG", "TZ"].map(str::to_owned).to_vec(),
            max_parallel_launches: std::thread::available_parallelism()
                .unwrap_or(NonZeroUsize::MIN)
                .saturating_mul(LAUNCHES_PER_CORE)
                .min(MAX_DEFAULT_LAUNCHES),
            task_user: None,
            allowed_task_users: BTreeSet::new(),
            task_max_pids: 4096,
        }
    }
}

/// Refusals of `new`, `start` and `adopt`.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The attempt has no name on disk (a directory and cgroup name).
    #[error("invalid task {task}: {source}")]
    InvalidTask {
        /// The attempt as given (escaped).
        task: String,
        /// What was wrong.
        source: NameError,
    },
    /// The instance name cannot name a cgroup safely.
    #[error("invalid executor instance name `{0}` (1-64 of A-Z a-z 0-9 _ . -)")]
    InvalidInstance(String),
    /// The task is already running (or being adopted) here.
    #[error("task {0} is already running")]
    AlreadyRunning(AttemptId),
    /// `shutdown` was called.
    #[error("executor is shutting down")]
    ShuttingDown,
    /// No pid file for the task (nothing to adopt).
    #[error("no pid record for task {0}")]
    NoPidRecord(AttemptId),
    /// The task user settings cannot be honoured (unknown user, or not root).
    #[error("{0}")]
    TaskUser(String),
    /// `/dev/null`, every task's standard input, could not be opened.
    #[error("cannot open /dev/null (every task's standard input): {0}")]
    DevNull(std::io::Error),
    /// The data directory could not be prepared.
    #[error("cannot create {}: {source}", path.display())]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// A task process left by a previous incarnation of the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoveredTask {
    /// The task.
    pub task: AttemptId,
    /// Its pid (and process group id).
    pub pid: u32,
    /// Whether that very process (same boot, same start time) still runs.
    pub alive: bool,
}

/// What [`Executor::reconcile`] did. Every list is sorted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reconciled {
    /// Alive and wanted: watched again; `Exited { code: None }` when they end.
    pub adopted: Vec<AttemptId>,
    /// Alive but not wanted: being killed; `Exited` follows.
    pub killed: Vec<AttemptId>,
    /// Had a pid file but the process is gone: `Exited { code: None }` follows.
    pub gone: Vec<AttemptId>,
    /// Wanted but no pid file at all: never started here, or the record was lost. No event.
    pub missing: Vec<AttemptId>,
}

/// Handle to the executor; cheap to clone.
#[derive(Debug, Clone)]
pub struct Executor {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    tasks_dir: PathBuf,
    /// `tasks_dir`, held open: a launch's directories and files are reached from it.
    tasks: Anchor,
    config: ExecutorConfig,
    events: mpsc::Sender<ExecEvent>,
    cgroups: Option<Hierarchy>,
    /// Emptied task cgroups kept for the next tasks (cgroup v1).
    spares: Option<Arc<Spares>>,
    enforcement: Enforcement,
    users: Users,
    boot_id: Option<String>,
    state: Mutex<State>,
    idle: Notify,
    /// The threads launches and clean-ups run on, at most
    /// [`ExecutorConfig::max_parallel_launches`] launches at once (`pool.rs`).
    pool: pool::Pool,
    /// Commands found on tasks' `PATH`s lately (`launch.rs`).
    programs: launch::ProgramCache,
    /// Every task's standard input, opened once (close-on-exec: the child `dup2`s it to 0).
    dev_null: std::os::fd::OwnedFd,
}

#[derive(Debug, Default)]
struct State {
    running: BTreeMap<AttemptId, Running>,
    shutting_down: bool,
}

#[derive(Debug)]
struct Running {
    /// Latest kill deadline; the watcher SIGTERMs on the first and SIGKILLs at the earliest.
    kill: watch::Sender<Option<Instant>>,
}

impl Executor {
    /// Prepares `<data_dir>/tasks`, detects cgroups and returns the handle plus the event stream.
    /// Must be called inside a tokio runtime (child processes are reaped by its signal driver).
    pub fn new(
        data_dir: PathBuf,
        config: ExecutorConfig,
    ) -> Result<(Executor, mpsc::Receiver<ExecEvent>), ExecError> {
        if !is_safe_name(&config.instance, 64) {
            return Err(ExecError::InvalidInstance(config.instance.clone()));
        }
        let users = Users::new(
            nix::unistd::geteuid().as_raw(),
            config.task_user.as_deref(),
            &config.allowed_task_users,
        )
        .map_err(ExecError::TaskUser)?;
        match fd_limit::raise() {
            Ok(Some((from, to))) => {
                tracing::info!(
                    from,
                    to,
                    "descriptor limit raised for the agent (tasks keep {from})"
                );
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "cannot raise the descriptor limit"),
        }
        let tasks_dir = data_dir.join("tasks");
        std::fs::create_dir_all(&tasks_dir).map_err(|source| ExecError::DataDir {
            path: tasks_dir.clone(),
            source,
        })?;
        if users.switches() {
            // Task users must be able to enter (not list) the way to their own directories.
            std::fs::set_permissions(&tasks_dir, std::fs::Permissions::from_mode(0o711)).map_err(
                |source| ExecError::DataDir {
                    path: tasks_dir.clone(),
                    source,
                },
            )?;
            for account in users.accounts() {
                if let Some(closed) = users::first_closed_dir(&tasks_dir, account) {
                    return Err(ExecError::TaskUser(format!(
                        "tasks run as user {} cannot reach their directories under {}: {} is \
                         closed to that user; give it search permission (chmod o+x {}) or use \
                         a --data-dir on an open path",
                        account.name,
                        tasks_dir.display(),
                        closed.display(),
                        closed.display()
                    )));
                }
            }
        }
        let (cgroups, enforcement) = detect_enforcement(&config, &users);
        if let Some(swept) = cgroups
            .as_ref()
            .map(Hierarchy::sweep_empty)
            .filter(|&n| n > 0)
        {
            tracing::info!(
                swept,
                "removed empty task cgroups left by a previous incarnation"
            );
        }
        tracing::info!(?enforcement, "executor limits");
        let dev_null = std::fs::File::open("/dev/null").map_err(ExecError::DevNull)?;
        let (events, receiver) = mpsc::channel(config.event_capacity.get());
        let inner = Inner {
            pool: pool::Pool::new(config.max_parallel_launches),
            tasks: Anchor::open(&tasks_dir),
            tasks_dir,
            config,
            events,
            spares: cgroups.as_ref().and_then(Spares::new).map(Arc::new),
            cgroups,
            enforcement,
            users,
            boot_id: procfs::boot_id(),
            state: Mutex::new(State::default()),
            idle: Notify::new(),
            programs: launch::ProgramCache::default(),
            dev_null: dev_null.into(),
        };
        Ok((
            Executor {
                inner: Arc::new(inner),
            },
            receiver,
        ))
    }

    /// What limits this host enforces.
    #[must_use]
    pub fn enforcement(&self) -> Enforcement {
        self.inner.enforcement.clone()
    }

    /// The names a job's `user` may take on this agent, sorted (the scheduler's admission
    /// refuses the others before anything is started).
    #[must_use]
    pub fn accepted_task_users(&self) -> BTreeSet<String> {
        self.inner.users.accepted()
    }

    /// The directories this agent's task cgroups are created in, one per hierarchy (empty
    /// without cgroups): what the watchdog empties when the agent is gone.
    #[must_use]
    pub fn cgroup_parents(&self) -> Vec<PathBuf> {
        self.inner
            .cgroups
            .as_ref()
            .map(Hierarchy::parents)
            .unwrap_or_default()
    }

    /// Where the pid records of this agent's tasks are: `<data_dir>/tasks`.
    #[must_use]
    pub fn tasks_dir(&self) -> &Path {
        &self.inner.tasks_dir
    }

    /// Starts `task`. `Err` only when refused (invalid key, already running, shutting down);
    /// otherwise problems starting it arrive as [`ExecEvent::Failed`].
    pub fn start(&self, task: AttemptId, spec: TaskSpec) -> Result<(), ExecError> {
        let name = name_of(&task)?;
        let kill_rx = self.inner.reserve(&task)?;
        tokio::spawn(run_task(self.inner.clone(), task, name, spec, kill_rx));
        Ok(())
    }

    /// Stops `task`: SIGTERM to its process group now, SIGKILL to the group after `grace` if
    /// anything in it is still alive. Returns whether the task was running here; a second kill
    /// can only shorten the grace period.
    pub fn kill(&self, task: &AttemptId, grace: Duration) -> bool {
        let state = self.inner.lock();
        let Some(running) = state.running.get(task) else {
            return false;
        };
        let deadline = Instant::now() + grace;
        running
            .kill
            .send_modify(|d| *d = Some(d.map_or(deadline, |d| d.min(deadline))));
        true
    }

    /// Tasks running (or being adopted) here, sorted.
    #[must_use]
    pub fn running(&self) -> Vec<AttemptId> {
        self.inner.lock().running.keys().cloned().collect()
    }

    /// How many tasks run (or are being adopted) here.
    #[must_use]
    pub fn running_count(&self) -> usize {
        self.inner.lock().running.len()
    }

    /// Refuses new tasks, kills all running ones with `grace`, and waits until every one has
    /// exited and released its resources (not until their events are consumed).
    pub async fn shutdown(&self, grace: Duration) {
        let tasks = {
            let mut state = self.inner.lock();
            state.shutting_down = true;
            state.running.keys().cloned().collect::<Vec<_>>()
        };
        for task in &tasks {
            self.kill(task, grace);
        }
        loop {
            let idle = self.inner.idle.notified();
            if self.inner.lock().running.is_empty() {
                return;
            }
            idle.await;
        }
    }

    /// Starts no task launch any more and waits up to `wait` for the launches under way to
    /// end (`pool.rs`, [`pool::Pool::close`]), so none is cut between its spawn and its pid
    /// record when the process exits. Returns whether none is under way. For the agent's stop
    /// after [`Executor::shutdown`], which leaves nothing under way unless it timed out.
    pub async fn close_launches(&self, wait: Duration) -> bool {
        let pool = self.inner.pool.clone();
        tokio::task::spawn_blocking(move || pool.close(wait))
            .await
            .unwrap_or(false)
    }

    /// The task's directory: `<data_dir>/tasks/<job>.<incarnation>.<placer>/<slot>/<attempt>`
    /// (`Err` for an attempt that has no name on disk).
    pub fn task_dir(&self, task: &AttemptId) -> Result<PathBuf, ExecError> {
        Ok(self.inner.task_dir(&name_of(task)?))
    }

    /// Where the task's stdout and stderr are (or will be) written.
    pub fn log_paths(&self, task: &AttemptId) -> Result<LogPaths, ExecError> {
        let dir = self.task_dir(task)?;
        Ok(LogPaths {
            stdout: dir.join("stdout"),
            stderr: dir.join("stderr"),
        })
    }

    /// Reads at most `max_bytes` (capped by [`ExecutorConfig::max_log_read_bytes`]) of a log
    /// from `offset`; returns the bytes and the offset to continue from. Past the end it returns
    /// nothing and the current length, so a follower polls with the returned offset.
    pub async fn read_log(
        &self,
        task: &AttemptId,
        stream: LogStream,
        offset: u64,
        max_bytes: usize,
    ) -> Result<(Vec<u8>, u64), LogError> {
        let paths = self.log_paths(task)?;
        let path = match stream {
            LogStream::Stdout => paths.stdout,
            LogStream::Stderr => paths.stderr,
        };
        let limit = max_bytes.min(self.inner.config.max_log_read_bytes.get());
        read_range(&path, offset, limit).await
    }

    /// Pid files of tasks not running here: processes of a previous agent incarnation, with
    /// whether each is still alive. Sorted by task. Unreadable records are logged and skipped.
    #[must_use]
    pub fn recover(&self) -> Vec<RecoveredTask> {
        let running = self
            .inner
            .lock()
            .running
            .keys()
            .cloned()
            .collect::<BTreeSet<_>>();
        let mut found: Vec<RecoveredTask> = pidfile::all(&self.inner.tasks_dir)
            .into_iter()
            .filter_map(|path| self.inner.read_pid_record(&path))
            .filter(|(task, _)| !running.contains(task))
            .map(|(task, record)| RecoveredTask {
                alive: self.inner.is_alive(&record),
                pid: record.pid,
                task,
            })
            .collect();
        found.sort_by(|a, b| a.task.cmp(&b.task));
        found
    }

    /// Watches a recovered task again. `Ok(true)`: it is alive and now in [`Executor::running`];
    /// `kill` works on it and `Exited { code: None, signal: None }` arrives when it ends (it is
    /// not our child, so its status is unknowable). `Ok(false)`: it was already gone; its
    /// record and cgroup are cleaned up and the same `Exited` event follows at once.
    pub fn adopt(&self, task: &AttemptId) -> Result<bool, ExecError> {
        let path = self.task_dir(task)?.join("pid");
        let (task, record) = self
            .inner
            .read_pid_record(&path)
            .filter(|(found, _)| found == task)
            .ok_or_else(|| ExecError::NoPidRecord(task.clone()))?;
        let kill_rx = self.inner.reserve(&task)?;
        let alive = self.inner.is_alive(&record);
        tokio::spawn(watch_adopted(
            self.inner.clone(),
            task,
            record,
            alive,
            kill_rx,
        ));
        Ok(alive)
    }

    /// Brings the processes on this host in line with `wanted` after a restart: adopts the live
    /// wanted ones, kills (with `grace`) the live unwanted ones, cleans up dead records, and
    /// reports wanted tasks that have no process at all.
    pub fn reconcile(&self, wanted: &BTreeSet<AttemptId>, grace: Duration) -> Reconciled {
        let mut out = Reconciled::default();
        let mut seen = BTreeSet::new();
        for found in self.recover() {
            seen.insert(found.task.clone());
            match self.adopt(&found.task) {
                Ok(true) if wanted.contains(&found.task) => out.adopted.push(found.task),
                Ok(true) => {
                    self.kill(&found.task, grace);
                    out.killed.push(found.task);
                }
                Ok(false) => out.gone.push(found.task),
                Err(e) => tracing::warn!(task = %found.task, error = %e, "cannot adopt"),
            }
        }
        let running = self.running().into_iter().collect::<BTreeSet<_>>();
        out.missing = wanted
            .iter()
            .filter(|t| !seen.contains(*t) && !running.contains(*t))
            .cloned()
            .collect();
        out
    }
}

impl Drop for Inner {
    /// The last handle and the last watcher are gone: leave no empty cgroup directory behind
    /// (an agent that crashes never gets here, and its task cgroups stay for the watchdog).
    fn drop(&mut self) {
        if let Some(h) = &self.cgroups {
            h.sweep_empty();
            h.remove_parents();
        }
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock leaves only a map behind; keep using it.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn task_dir(&self, name: &DiskName) -> PathBuf {
        name.dir(&self.tasks_dir)
    }

    /// [`Self::task_dir`], reached from the open tasks directory.
    fn task_under(&self, name: &DiskName) -> Under {
        self.tasks.under(name.dir(Path::new("")))
    }

    /// Claims `task` in the running table before anything is spawned, so a concurrent start of
    /// the same key is refused and a kill that arrives during setup is not lost.
    fn reserve(&self, task: &AttemptId) -> Result<watch::Receiver<Option<Instant>>, ExecError> {
        let mut state = self.lock();
        if state.shutting_down {
            return Err(ExecError::ShuttingDown);
        }
        if state.running.contains_key(task) {
            return Err(ExecError::AlreadyRunning(task.clone()));
        }
        let (kill, kill_rx) = watch::channel(None);
        state.running.insert(task.clone(), Running { kill });
        Ok(kill_rx)
    }

    fn release(&self, task: &AttemptId) {
        let mut state = self.lock();
        state.running.remove(task);
        if state.running.is_empty() {
            self.idle.notify_waiters();
        }
    }

    async fn emit(&self, event: ExecEvent) {
        // A dropped receiver means the agent is going away; the event has no reader.
        let _ = self.events.send(event).await;
    }

    /// The task's cgroup: a spare renamed to it where there is one, else a new one.
    fn make_cgroup(
        &self,
        h: &Hierarchy,
        name: &DiskName,
        limits: cgroup::Limits,
    ) -> Result<TaskCgroup, String> {
        let cgroup_name = name.cgroup();
        match self
            .spares
            .as_ref()
            .and_then(|s| s.take(&cgroup_name, limits))
        {
            Some(cgroup) => Ok(cgroup),
            None => h.create(&cgroup_name, limits),
        }
    }

    /// Reads a pid record and the attempt it names, trusting only a record the agent wrote
    /// for an attempt; others are logged and skipped.
    fn read_pid_record(&self, path: &Path) -> Option<(AttemptId, PidRecord)> {
        let record = pidfile::read(path, self.users.agent_uid)
            .inspect_err(|e| tracing::warn!(error = %e, "pid file skipped"))
            .ok()?;
        let task = attempt_id(&record.task)
            .inspect_err(|e| {
                tracing::warn!(path = %path.display(), error = %e, "pid file skipped");
            })
            .ok()?;
        Some((task, record))
    }

    /// Same boot, same pid, same start time, not a zombie.
    fn is_alive(&self, record: &PidRecord) -> bool {
        record.leader_alive(self.boot_id.as_deref())
    }

    /// Frees what an ended task held, then reports it: kills what is left in its cgroup and
    /// keeps or removes the cgroup ([`end_cgroup`]), ends its pid record ([`pidfile::clear_in`]),
    /// all in one job of the executor's pool, ahead of queued launches (cgroupfs and
    /// file-system writes the runtime's thread must not wait for), then releases the key and
    /// sends `event`.
    async fn finish(
        &self,
        task: AttemptId,
        name: &DiskName,
        cgroup: Option<TaskCgroup>,
        event: ExecEvent,
    ) {
        let spares = self.spares.clone();
        let (cgroup_name, dir) = (name.cgroup(), self.task_under(name));
        let owner = self.users.agent_uid;
        let mut event = event;
        // A SIGKILL the agent did not send (or a shell's exit status for a child it killed,
        // 128 + 9), or an end whose status is unknown (an adopted task): the OOM killer's,
        // when the memory cgroup counted one (a spare's memory cgroup counts none when a task
        // takes it, `spares.rs`).
        let oom_check = match (&event, &cgroup, &self.cgroups) {
            (
                ExecEvent::Exited {
                    signal,
                    code,
                    killed: false,
                    ..
                },
                Some(_),
                Some(h),
            ) if *signal == Some(9)
                || *code == Some(128 + 9)
                || (code.is_none() && signal.is_none()) =>
            {
                Some(h.clone())
            }
            _ => None,
        };
        let mut ended = self.pool.run(pool::Lane::CleanUp, move || {
            let oom = oom_check.is_some_and(|h| h.oom_kills(&cgroup_name).unwrap_or(0) > 0);
            let left = cgroup.and_then(|c| end_cgroup(c, spares.as_deref(), &cgroup_name));
            let record = pidfile::clear_in(&dir, owner).map_err(|e| (dir.join("pid").path(), e));
            (left, record, oom)
        });
        // It waits for a busy thread of the pool; one stuck (a hung launch) or slow (kill
        // rounds) gets it a thread of its own.
        let ended = match tokio::time::timeout(pool::CLEAN_UP_WAIT, &mut ended).await {
            Ok(ended) => ended,
            Err(_) => {
                self.pool.nudge();
                ended.await
            }
        };
        match ended {
            Ok((left, record, oom)) => {
                if let ExecEvent::Exited { oom_killed, .. } = &mut event {
                    *oom_killed = oom;
                }
                if let Some(cgroup) = left {
                    cgroup.remove().await;
                }
                if let Err((path, e)) = record {
                    tracing::warn!(path = %path.display(), error = %e, "cannot end pid record");
                }
            }
            Err(e) => tracing::warn!(%task, error = %e, "task clean-up did not complete"),
        }
        self.release(&task);
        self.emit(event).await;
    }
}

/// Ends a task's cgroup: one that holds no process at the first look (no kill round, so never
/// frozen) is kept as a spare when there is room (`spares.rs`); otherwise every process left in
/// it is SIGKILLed round after round until it is empty (≤ 2 s, then logged), and it is removed.
/// Blocking. Returns the cgroup when its removal failed (a killed member still exiting), for
/// the caller to retry.
fn end_cgroup(cgroup: TaskCgroup, spares: Option<&Spares>, name: &str) -> Option<TaskCgroup> {
    let cgroup = if cgroup.procs().is_empty() {
        match spares {
            Some(spares) => match spares.keep(name, cgroup) {
                Ok(()) => return None,
                Err(not_kept) => not_kept,
            },
            None => cgroup,
        }
    } else {
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        let left = cgroup::kill_until_empty(&cgroup, &[], deadline);
        if !left.is_empty() {
            tracing::warn!(
                cgroup = name,
                ?left,
                "task processes survived SIGKILL for 2 s"
            );
        }
        cgroup
    };
    cgroup.remove_now().err().map(|_| cgroup)
}

/// The attempt's name on disk, or the refusal naming why it has none.
fn name_of(task: &AttemptId) -> Result<DiskName, ExecError> {
    disk_name(task).map_err(|source| ExecError::InvalidTask {
        task: task.to_string().escape_default().to_string(),
        source,
    })
}

/// A name safe as one path component and cgroup name: no `/`, no `..`, no leading dot.
fn is_safe_name(name: &str, max_len: usize) -> bool {
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
    name.len() <= max_len
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name.chars().all(ok)
}

#[cfg(test)]
mod tests;
