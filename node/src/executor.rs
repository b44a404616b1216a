//! The executor: tasks are real processes on this host.
//!
//! # What it promises
//! - Each task runs as its own process group (`setpgid(0, 0)` at spawn), stdin `/dev/null`,
//!   stdout and stderr appended to `<data_dir>/tasks/<job>/<slot>/<attempt>/{stdout,stderr}`,
//!   with the spec's environment plus `SHOAL_JOB`, `SHOAL_SLOT`, `SHOAL_ATTEMPT` and
//!   `SHOAL_TASK_DIR` (the agent's own environment is not inherited beyond
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

pub(crate) mod cgroup;
pub(crate) mod pidfile;
pub(crate) mod procfs;
#[cfg(test)]
pub(crate) mod testing;
mod users;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io::{ErrorKind, SeekFrom};
use std::num::NonZeroUsize;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::{Notify, Semaphore, mpsc, watch};
use tokio::time::Instant;

use self::cgroup::{Hierarchy, TaskCgroup};
use self::pidfile::PidRecord;
use self::users::{Account, Users};

/// `PATH` for tasks whose environment has none (glibc's `execvp` default).
const DEFAULT_PATH: &str = "/bin:/usr/bin";

/// Longest executor job key (a directory and cgroup name component).
pub const MAX_JOB_KEY_BYTES: usize = 160;

/// One attempt of one slot of one job: the unit the executor runs.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TaskKey {
    /// Job id: 1–160 of `[A-Za-z0-9_.-]`, starting with a letter or digit (it names a directory;
    /// the scheduler's longest attempt key, `{job}.{incarnation}.{placer}`, is 148 bytes).
    pub job: String,
    /// Slot within the job.
    pub slot: u32,
    /// Attempt of that slot.
    pub attempt: u32,
}

impl fmt::Display for TaskKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.job, self.slot, self.attempt)
    }
}

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

/// What happened to a task. Per task: `Failed`, or `Started` then `Exited`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExecEvent {
    /// The process runs (and is in its cgroup, when limits are enforced).
    Started {
        /// The task.
        task: TaskKey,
        /// Its pid, which is also its process group id.
        pid: u32,
    },
    /// The main process is gone and the task's resources are released.
    Exited {
        /// The task.
        task: TaskKey,
        /// Exit code, when it exited normally and was our child (unknown for adopted tasks).
        code: Option<i32>,
        /// The signal that ended it, when known.
        signal: Option<i32>,
        /// Whether [`Executor::kill`] was asked to stop it before it exited.
        killed: bool,
    },
    /// The task could not be started; `reason` names what was wrong (command, path, cgroup).
    Failed {
        /// The task.
        task: TaskKey,
        /// Human-readable cause.
        reason: String,
    },
}

impl ExecEvent {
    /// The task the event is about.
    #[must_use]
    pub fn task(&self) -> &TaskKey {
        match self {
            ExecEvent::Started { task, .. }
            | ExecEvent::Exited { task, .. }
            | ExecEvent::Failed { task, .. } => task,
        }
    }
}

/// How CPU limits are enforced on this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CpuEnforcement {
    /// cgroup v2 `cpu.max`: a rate limit (CFS bandwidth, 100 ms period).
    CgroupV2CpuMax,
    /// cgroup v1 `cpu.cfs_quota_us`: the same rate limit on the legacy hierarchy.
    CgroupV1CfsQuota,
    /// Nothing limits CPU; requests are bookkeeping only.
    NotEnforced,
}

/// How memory limits are enforced on this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemoryEnforcement {
    /// cgroup v2 `memory.max`: the task is OOM-killed above it (swap is not limited).
    CgroupV2MemoryMax,
    /// cgroup v1 `memory.limit_in_bytes`: the same on the legacy hierarchy.
    CgroupV1LimitInBytes,
    /// Nothing limits memory; requests are bookkeeping only.
    NotEnforced,
}

/// How the number of processes of a task is limited on this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PidsEnforcement {
    /// cgroup v2 `pids.max`: `fork` fails with `EAGAIN` at the limit.
    CgroupV2PidsMax,
    /// cgroup v1 `pids.max` in the `pids` hierarchy: the same.
    CgroupV1PidsMax,
    /// Nothing limits the process count (no `pids` controller, or no cgroups).
    NotEnforced,
}

/// How stopping a task reaches every process it started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KillEnforcement {
    /// cgroup v2 `cgroup.kill`: every process of the task cgroup at once, `setsid` or not.
    CgroupKill,
    /// cgroup v1 freezer: the task cgroup is frozen, each member SIGKILLed, then thawed.
    CgroupFreezer,
    /// Each process listed in the task cgroup, again until none is left.
    CgroupMembers,
    /// The task's process group only: a child that called `setsid` or `setpgid` escapes.
    ProcessGroup,
}

/// What this executor enforces, and why, for operators and `GET /v1/node`-style reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enforcement {
    /// CPU rate limits.
    pub cpu: CpuEnforcement,
    /// Memory limits.
    pub memory: MemoryEnforcement,
    /// Process-count limits ([`ExecutorConfig::task_max_pids`]).
    pub pids: PidsEnforcement,
    /// How a stop reaches every process of a task.
    pub kill: KillEnforcement,
    /// Who tasks run as when the job names no user.
    pub task_user: String,
    /// The users a job's `user` may name here.
    pub allowed_task_users: Vec<String>,
    /// How detection went, e.g. which cgroup paths are used or why none is.
    pub note: String,
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
    /// How many launches (directory, log files, cgroup, spawn) run at once on the blocking pool.
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
                .unwrap_or(NonZeroUsize::MIN),
            task_user: None,
            allowed_task_users: BTreeSet::new(),
            task_max_pids: 4096,
        }
    }
}

/// Refusals of `new`, `start` and `adopt`.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The task key cannot name a directory safely.
    #[error("invalid task {task}: {reason}")]
    InvalidTask {
        /// The key as given.
        task: String,
        /// What was wrong.
        reason: &'static str,
    },
    /// The instance name cannot name a cgroup safely.
    #[error("invalid executor instance name `{0}` (1-64 of A-Z a-z 0-9 _ . -)")]
    InvalidInstance(String),
    /// The task is already running (or being adopted) here.
    #[error("task {0} is already running")]
    AlreadyRunning(TaskKey),
    /// `shutdown` was called.
    #[error("executor is shutting down")]
    ShuttingDown,
    /// No pid file for the task (nothing to adopt).
    #[error("no pid record for task {0}")]
    NoPidRecord(TaskKey),
    /// The task user settings cannot be honoured (unknown user, or not root).
    #[error("{0}")]
    TaskUser(String),
    /// A setting is out of range.
    #[error("invalid executor setting: {0}")]
    Config(&'static str),
    /// The data directory could not be prepared.
    #[error("cannot create {}: {source}", path.display())]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Failures of [`Executor::read_log`].
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The task key is invalid.
    #[error(transparent)]
    InvalidTask(#[from] ExecError),
    /// No such log (the task never ran here, or its files were removed).
    #[error("no log at {}", .0.display())]
    NotFound(PathBuf),
    /// The log exists but reading failed.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The log file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Which output stream of a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// Where a task's output goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogPaths {
    /// Standard output file.
    pub stdout: PathBuf,
    /// Standard error file.
    pub stderr: PathBuf,
}

/// A task process left by a previous incarnation of the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoveredTask {
    /// The task.
    pub task: TaskKey,
    /// Its pid (and process group id).
    pub pid: u32,
    /// Whether that very process (same boot, same start time) still runs.
    pub alive: bool,
}

/// What [`Executor::reconcile`] did. Every list is sorted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reconciled {
    /// Alive and wanted: watched again; `Exited { code: None }` when they end.
    pub adopted: Vec<TaskKey>,
    /// Alive but not wanted: being killed; `Exited` follows.
    pub killed: Vec<TaskKey>,
    /// Had a pid file but the process is gone: `Exited { code: None }` follows.
    pub gone: Vec<TaskKey>,
    /// Wanted but no pid file at all: never started here, or the record was lost. No event.
    pub missing: Vec<TaskKey>,
}

/// Handle to the executor; cheap to clone.
#[derive(Debug, Clone)]
pub struct Executor {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    tasks_dir: PathBuf,
    config: ExecutorConfig,
    events: mpsc::Sender<ExecEvent>,
    cgroups: Option<Hierarchy>,
    enforcement: Enforcement,
    users: Users,
    boot_id: Option<String>,
    state: Mutex<State>,
    idle: Notify,
    launch_slots: Semaphore,
}

#[derive(Debug, Default)]
struct State {
    running: BTreeMap<TaskKey, Running>,
    shutting_down: bool,
}

#[derive(Debug)]
struct Running {
    /// Latest kill deadline; the watcher SIGTERMs on the first and SIGKILLs at the earliest.
    kill: watch::Sender<Option<Instant>>,
}

/// A spawned process and what the watcher needs to see it through.
struct Launched {
    child: tokio::process::Child,
    pid: u32,
    cgroup: Option<TaskCgroup>,
    /// Set when setup after the spawn failed: the watcher kills the group and reports this.
    setup_error: Option<String>,
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
        if config.task_max_pids == 1 {
            // The launching thread sits in the task's cgroup while it forks (cgroup v1).
            return Err(ExecError::Config(
                "task_max_pids must be 0 (unlimited) or at least 2",
            ));
        }
        let users = Users::new(
            nix::unistd::geteuid().as_raw(),
            config.task_user.as_deref(),
            &config.allowed_task_users,
        )
        .map_err(ExecError::TaskUser)?;
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
        let (events, receiver) = mpsc::channel(config.event_capacity.get());
        let inner = Inner {
            launch_slots: Semaphore::new(config.max_parallel_launches.get()),
            tasks_dir,
            config,
            events,
            cgroups,
            enforcement,
            users,
            boot_id: procfs::boot_id(),
            state: Mutex::new(State::default()),
            idle: Notify::new(),
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
    pub fn start(&self, task: TaskKey, spec: TaskSpec) -> Result<(), ExecError> {
        validate(&task)?;
        let kill_rx = self.inner.reserve(&task)?;
        tokio::spawn(run_task(self.inner.clone(), task, spec, kill_rx));
        Ok(())
    }

    /// Stops `task`: SIGTERM to its process group now, SIGKILL to the group after `grace` if
    /// anything in it is still alive. Returns whether the task was running here; a second kill
    /// can only shorten the grace period.
    pub fn kill(&self, task: &TaskKey, grace: Duration) -> bool {
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
    pub fn running(&self) -> Vec<TaskKey> {
        self.inner.lock().running.keys().cloned().collect()
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

    /// The task's directory: `<data_dir>/tasks/<job>/<slot>/<attempt>`.
    #[must_use]
    pub fn task_dir(&self, task: &TaskKey) -> PathBuf {
        self.inner.task_dir(task)
    }

    /// Where the task's stdout and stderr are (or will be) written.
    #[must_use]
    pub fn log_paths(&self, task: &TaskKey) -> LogPaths {
        let dir = self.task_dir(task);
        LogPaths {
            stdout: dir.join("stdout"),
            stderr: dir.join("stderr"),
        }
    }

    /// Reads at most `max_bytes` (capped by [`ExecutorConfig::max_log_read_bytes`]) of a log
    /// from `offset`; returns the bytes and the offset to continue from. Past the end it returns
    /// nothing and the current length, so a follower polls with the returned offset.
    pub async fn read_log(
        &self,
        task: &TaskKey,
        stream: LogStream,
        offset: u64,
        max_bytes: usize,
    ) -> Result<(Vec<u8>, u64), LogError> {
        validate(task)?;
        let paths = self.log_paths(task);
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
            .filter(|record| !running.contains(&record.task))
            .map(|record| RecoveredTask {
                alive: self.inner.is_alive(&record),
                pid: record.pid,
                task: record.task,
            })
            .collect();
        found.sort_by(|a, b| a.task.cmp(&b.task));
        found
    }

    /// Watches a recovered task again. `Ok(true)`: it is alive and now in [`Executor::running`];
    /// `kill` works on it and `Exited { code: None, signal: None }` arrives when it ends (it is
    /// not our child, so its status is unknowable). `Ok(false)`: it was already gone; its
    /// record and cgroup are cleaned up and the same `Exited` event follows at once.
    pub fn adopt(&self, task: &TaskKey) -> Result<bool, ExecError> {
        validate(task)?;
        let path = self.task_dir(task).join("pid");
        let record = self
            .inner
            .read_pid_record(&path)
            .filter(|r| &r.task == task)
            .ok_or_else(|| ExecError::NoPidRecord(task.clone()))?;
        let kill_rx = self.inner.reserve(task)?;
        let alive = self.inner.is_alive(&record);
        tokio::spawn(watch_adopted(self.inner.clone(), record, alive, kill_rx));
        Ok(alive)
    }

    /// Brings the processes on this host in line with `wanted` after a restart: adopts the live
    /// wanted ones, kills (with `grace`) the live unwanted ones, cleans up dead records, and
    /// reports wanted tasks that have no process at all.
    pub fn reconcile(&self, wanted: &BTreeSet<TaskKey>, grace: Duration) -> Reconciled {
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

    fn task_dir(&self, task: &TaskKey) -> PathBuf {
        self.tasks_dir
            .join(&task.job)
            .join(task.slot.to_string())
            .join(task.attempt.to_string())
    }

    /// Claims `task` in the running table before anything is spawned, so a concurrent start of
    /// the same key is refused and a kill that arrives during setup is not lost.
    fn reserve(&self, task: &TaskKey) -> Result<watch::Receiver<Option<Instant>>, ExecError> {
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

    fn release(&self, task: &TaskKey) {
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

    /// Creates the task directory and log files, prepares the cgroup and spawns the process.
    /// Errors are the `Failed` reason; nothing is left running when one is returned.
    fn launch(&self, task: &TaskKey, spec: &TaskSpec) -> Result<Launched, String> {
        let account = self.users.for_task(spec.user.as_deref())?;
        let dir = self.task_dir(task);
        make_task_dir(&dir, account)?;
        let stdout = open_log(&dir.join("stdout"))?;
        let stderr = open_log(&dir.join("stderr"))?;
        pidfile::remove(&dir)?;
        let workdir = spec.workdir.clone().unwrap_or_else(|| dir.clone());
        check_workdir(&workdir)?;
        let env = self.task_env(task, spec, &dir);
        let program = resolve_program(&spec.command, env.get(OsStr::new("PATH")), &workdir)?;
        let limits = cgroup::Limits {
            cpu_millicores: spec.cpu_millicores,
            memory_mib: spec.memory_mib,
            max_pids: self.config.task_max_pids,
        };
        let cgroup = match &self.cgroups {
            Some(h) => Some(h.create(&cgroup_name(task), limits)?),
            None => None,
        };
        let mut command = tokio::process::Command::new(program);
        if let Some(account) = account {
            // std sets the gid, drops the supplementary groups (we are root), then the uid.
            command.uid(account.uid).gid(account.gid);
        }
        command
            .args(&spec.args)
            .env_clear()
            .envs(&env)
            .current_dir(&workdir)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .process_group(0)
            .kill_on_drop(false);
        let spawned = match &self.cgroups {
            Some(h) => h
                .spawn_inside(&cgroup_name(task), || command.spawn())
                .inspect_err(|_| remove_cgroup_now(cgroup.as_ref()))?,
            None => command.spawn(),
        };
        let (child, pid) = spawned
            .map_err(|e| spawn_error(spec, account, &workdir, &e))
            .and_then(|child| with_pid(child, spec))
            .inspect_err(|_| remove_cgroup_now(cgroup.as_ref()))?;
        let setup_error = self.after_spawn(task, pid, cgroup.as_ref()).err();
        Ok(Launched {
            child,
            pid,
            cgroup,
            setup_error,
        })
    }

    /// The task's whole environment: [`ExecutorConfig::pass_env`] from the agent, then the
    /// spec's, then the `SHOAL_*` task variables.
    fn task_env(
        &self,
        task: &TaskKey,
        spec: &TaskSpec,
        dir: &Path,
    ) -> BTreeMap<OsString, OsString> {
        let mut env = BTreeMap::new();
        for name in &self.config.pass_env {
            if let Some(value) = std::env::var_os(name) {
                env.insert(OsString::from(name), value);
            }
        }
        env.extend(spec.env.iter().map(|(k, v)| (k.into(), v.into())));
        let task_vars = [
            ("SHOAL_JOB", OsString::from(&task.job)),
            ("SHOAL_SLOT", task.slot.to_string().into()),
            ("SHOAL_ATTEMPT", task.attempt.to_string().into()),
            ("SHOAL_TASK_DIR", dir.as_os_str().to_owned()),
        ];
        env.extend(task_vars.into_iter().map(|(k, v)| (OsString::from(k), v)));
        env
    }

    /// Moves the pid into its cgroup first (the sooner, the fewer forks escape it), then
    /// persists the pid record that recovery depends on.
    fn after_spawn(
        &self,
        task: &TaskKey,
        pid: u32,
        cgroup: Option<&TaskCgroup>,
    ) -> Result<(), String> {
        if let Some(cgroup) = cgroup {
            cgroup.add(pid)?;
        }
        let record = PidRecord {
            task: task.clone(),
            pid,
            pgid: pid,
            start_time_ticks: procfs::stat(pid).map(|s| s.start_time),
            boot_id: self.boot_id.clone(),
        };
        pidfile::write(&self.task_dir(task), &record)
    }

    fn remove_pid_file(&self, task: &TaskKey) {
        let path = self.task_dir(task).join("pid");
        if let Err(e) = std::fs::remove_file(&path)
            && e.kind() != ErrorKind::NotFound
        {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove pid file");
        }
    }

    /// Reads a pid record, trusting only one the agent wrote; others are logged and skipped.
    fn read_pid_record(&self, path: &Path) -> Option<PidRecord> {
        pidfile::read(path, self.users.agent_uid)
            .inspect_err(|e| tracing::warn!(error = %e, "pid file skipped"))
            .ok()
    }

    /// Same boot, same pid, same start time, not a zombie.
    fn is_alive(&self, record: &PidRecord) -> bool {
        record.leader_alive(self.boot_id.as_deref())
    }

    /// Frees what an ended task held, then reports it.
    async fn finish(&self, task: TaskKey, cgroup: Option<TaskCgroup>, event: ExecEvent) {
        if let Some(cgroup) = cgroup {
            cgroup.remove().await;
        }
        self.remove_pid_file(&task);
        self.release(&task);
        self.emit(event).await;
    }
}

/// Launches on the blocking pool (directory, files, cgroup and spawn are blocking syscalls, a
/// millisecond or two per task), at most [`ExecutorConfig::max_parallel_launches`] at a time,
/// then watches the child.
async fn run_task(
    inner: Arc<Inner>,
    task: TaskKey,
    spec: TaskSpec,
    kill_rx: watch::Receiver<Option<Instant>>,
) {
    let launched = match inner.launch_slots.acquire().await {
        Ok(_permit) => {
            let (launcher, key) = (inner.clone(), task.clone());
            tokio::task::spawn_blocking(move || launcher.launch(&key, &spec))
                .await
                .unwrap_or_else(|e| Err(format!("launch did not complete: {e}")))
        }
        Err(_) => Err("executor launch queue is closed".to_owned()),
    };
    match launched {
        Ok(launched) => watch_child(inner, task, launched, kill_rx).await,
        Err(reason) => {
            inner.release(&task);
            inner.emit(ExecEvent::Failed { task, reason }).await;
        }
    }
}

/// Sees a spawned child through: `Started`, kill requests, exit, group cleanup, `Exited`.
async fn watch_child(
    inner: Arc<Inner>,
    task: TaskKey,
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
        target.kill_all().await;
        let event = ExecEvent::Failed {
            task: task.clone(),
            reason,
        };
        return inner.finish(task, launched.cgroup, event).await;
    }
    inner
        .emit(ExecEvent::Started {
            task: task.clone(),
            pid,
        })
        .await;
    let mut kill = KillState::default();
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
    };
    inner.finish(task, launched.cgroup, event).await;
}

/// Watches a process we did not spawn: poll for exit, honour kills, clean up.
async fn watch_adopted(
    inner: Arc<Inner>,
    record: PidRecord,
    alive: bool,
    mut kill_rx: watch::Receiver<Option<Instant>>,
) {
    let cgroup = inner
        .cgroups
        .as_ref()
        .map(|h| h.task_cgroup(&cgroup_name(&record.task)));
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
    let task = record.task;
    let event = ExecEvent::Exited {
        task: task.clone(),
        code: None,
        signal: None,
        killed: kill.termed,
    };
    inner.finish(task, cgroup, event).await;
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

    /// SIGKILLs the group, then the cgroup round after round until it is empty (≤ 2 s; the
    /// rounds block, so they run on the blocking pool, and only when a member is left).
    async fn kill_all(&self) {
        signal_group(self.pgid, Signal::SIGKILL);
        let Some(cgroup) = self.cgroup.clone().filter(|c| !c.procs().is_empty()) else {
            return;
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        let left =
            tokio::task::spawn_blocking(move || cgroup::kill_until_empty(&cgroup, &[], deadline))
                .await
                .unwrap_or_default();
        if !left.is_empty() {
            tracing::warn!(
                pgid = self.pgid,
                ?left,
                "task processes survived SIGKILL for 2 s"
            );
        }
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
/// SIGTERM; then (and always on a natural exit) SIGKILL whatever is left, in the group and in
/// the cgroup.
async fn clear_group(inner: &Inner, target: &KillTarget, kill: &KillState) {
    if let Some(deadline) = kill.deadline {
        while Instant::now() < deadline && target.has_members() {
            tokio::time::sleep(inner.config.group_poll_interval).await;
        }
    }
    target.kill_all().await;
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

fn detect_enforcement(config: &ExecutorConfig, users: &Users) -> (Option<Hierarchy>, Enforcement) {
    let detected = match config.cgroups {
        CgroupMode::Off => cgroup::Detected {
            hierarchy: None,
            kill: cgroup::KillMethod::EachMember,
            note: "cgroups disabled by configuration".to_owned(),
        },
        CgroupMode::Auto => cgroup::detect(&config.instance),
    };
    let (cpu, memory, pids) = match &detected.hierarchy {
        Some(Hierarchy::V2 { pids, .. }) => (
            CpuEnforcement::CgroupV2CpuMax,
            MemoryEnforcement::CgroupV2MemoryMax,
            if *pids {
                PidsEnforcement::CgroupV2PidsMax
            } else {
                PidsEnforcement::NotEnforced
            },
        ),
        Some(Hierarchy::V1 { pids_parent, .. }) => (
            CpuEnforcement::CgroupV1CfsQuota,
            MemoryEnforcement::CgroupV1LimitInBytes,
            if pids_parent.is_some() {
                PidsEnforcement::CgroupV1PidsMax
            } else {
                PidsEnforcement::NotEnforced
            },
        ),
        None => (
            CpuEnforcement::NotEnforced,
            MemoryEnforcement::NotEnforced,
            PidsEnforcement::NotEnforced,
        ),
    };
    let kill = match (&detected.hierarchy, detected.kill) {
        (None, _) => KillEnforcement::ProcessGroup,
        (Some(_), cgroup::KillMethod::CgroupKill) => KillEnforcement::CgroupKill,
        (Some(_), cgroup::KillMethod::Freezer) => KillEnforcement::CgroupFreezer,
        (Some(_), cgroup::KillMethod::EachMember) => KillEnforcement::CgroupMembers,
    };
    let enforcement = Enforcement {
        cpu,
        memory,
        pids,
        kill,
        task_user: users.default_name(),
        allowed_task_users: users.accepted().into_iter().collect(),
        note: detected.note,
    };
    (detected.hierarchy, enforcement)
}

/// Whether the executor accepts this task key (it names directories and cgroups).
pub fn validate_task_key(task: &TaskKey) -> Result<(), ExecError> {
    validate(task)
}

fn validate(task: &TaskKey) -> Result<(), ExecError> {
    if is_safe_name(&task.job, MAX_JOB_KEY_BYTES) {
        Ok(())
    } else {
        Err(ExecError::InvalidTask {
            task: task.to_string().escape_default().to_string(),
            reason: "job must be 1-160 of A-Z a-z 0-9 _ . - and start with a letter or digit",
        })
    }
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

/// `<job>.<slot>.<attempt>`: unique because slot and attempt are numbers read from the right.
fn cgroup_name(task: &TaskKey) -> String {
    format!("{}.{}.{}", task.job, task.slot, task.attempt)
}

/// Opens a log for appending without following a symlink: a directory reused from an earlier
/// run of the same attempt may hold what its task user left there.
fn open_log(path: &Path) -> Result<std::fs::File, String> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| format!("cannot open log file {}: {e}", path.display()))
}

/// Creates the task directory; when the task runs as another user, hands it to that user
/// (`0700`) and makes its parents searchable (`0711`: enter, not list).
fn make_task_dir(dir: &Path, account: Option<&Account>) -> Result<(), String> {
    std::fs::create_dir_all(dir)
        .map_err(|e| format!("cannot create task directory {}: {e}", dir.display()))?;
    let Some(account) = account else {
        return Ok(());
    };
    let chmod = |path: &Path, mode| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| format!("cannot set the mode of {}: {e}", path.display()))
    };
    for parent in dir.ancestors().skip(1).take(2) {
        chmod(parent, 0o711)?;
    }
    std::os::unix::fs::chown(dir, Some(account.uid), Some(account.gid)).map_err(|e| {
        format!(
            "cannot give task directory {} to user {}: {e}",
            dir.display(),
            account.name
        )
    })?;
    chmod(dir, 0o700)
}

/// Checked before the spawn because a missing workdir and a missing command both surface as
/// `ENOENT` from the spawn.
fn check_workdir(workdir: &Path) -> Result<(), String> {
    match std::fs::metadata(workdir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(format!("workdir {} is not a directory", workdir.display())),
        Err(e) if e.kind() == ErrorKind::NotFound => {
            Err(format!("workdir {} does not exist", workdir.display()))
        }
        Err(e) => Err(format!("workdir {}: {e}", workdir.display())),
    }
}

/// Finds `command` on the task's `PATH` (relative entries count from `workdir`) the way
/// `execvp` would, so the spawn gets an absolute path: that lets std use `posix_spawn` instead
/// of `fork` (it cannot when the child's `PATH` differs from ours), and names the problem
/// precisely when the command is missing.
fn resolve_program(
    command: &str,
    path: Option<&OsString>,
    workdir: &Path,
) -> Result<PathBuf, String> {
    let shown = command.escape_default();
    if command.is_empty() {
        return Err("command is empty".to_owned());
    }
    if command.contains('/') {
        return Ok(PathBuf::from(command));
    }
    let search = path.map_or(OsStr::new(DEFAULT_PATH), OsString::as_os_str);
    let mut not_executable = None;
    for entry in std::env::split_paths(search) {
        let dir = if entry.as_os_str().is_empty() {
            workdir.to_owned()
        } else {
            workdir.join(entry)
        };
        let candidate = dir.join(command);
        match std::fs::metadata(&candidate) {
            Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => return Ok(candidate),
            Ok(m) if m.is_file() => not_executable = not_executable.or(Some(candidate)),
            _ => {}
        }
    }
    match not_executable {
        Some(p) => Err(format!(
            "command `{shown}` at {} is not executable",
            p.display()
        )),
        None => Err(format!(
            "command `{shown}` not found on PATH {}",
            search.to_string_lossy()
        )),
    }
}

fn spawn_error(
    spec: &TaskSpec,
    account: Option<&Account>,
    workdir: &Path,
    error: &std::io::Error,
) -> String {
    let command = spec.command.escape_default();
    match (error.kind(), account) {
        (ErrorKind::NotFound, _) => format!("command `{command}` not found"),
        (ErrorKind::PermissionDenied, Some(a)) => format!(
            "cannot start command `{command}` as user {}: permission denied (that user needs \
             execute permission on the command and search permission on every directory up \
             to the workdir {})",
            a.name,
            workdir.display()
        ),
        (ErrorKind::PermissionDenied, None) => {
            format!("command `{command}` is not executable (permission denied)")
        }
        _ => format!("cannot start command `{command}`: {error}"),
    }
}

fn with_pid(
    child: tokio::process::Child,
    spec: &TaskSpec,
) -> Result<(tokio::process::Child, u32), String> {
    match child.id() {
        Some(pid) => Ok((child, pid)),
        // Only a reaped child has no pid, and nothing has waited on this one yet.
        None => Err(format!(
            "command `{}` vanished before it could be watched",
            spec.command
        )),
    }
}

fn remove_cgroup_now(cgroup: Option<&TaskCgroup>) {
    if let Some(Err(e)) = cgroup.map(TaskCgroup::remove_now) {
        tracing::warn!(error = %e, "cannot remove unused task cgroup");
    }
}

async fn read_range(path: &Path, offset: u64, limit: usize) -> Result<(Vec<u8>, u64), LogError> {
    let read_error = |source| LogError::Read {
        path: path.to_owned(),
        source,
    };
    // The task user may replace its log with a link or a FIFO: read only a regular file.
    let opened = pidfile::open_regular(path).map(tokio::fs::File::from_std);
    let mut file = match opened {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Err(LogError::NotFound(path.to_owned()));
        }
        Err(e) => return Err(read_error(e)),
    };
    let len = file.metadata().await.map_err(read_error)?.len();
    let start = offset.min(len);
    let want = usize::try_from(len - start)
        .unwrap_or(usize::MAX)
        .min(limit);
    file.seek(SeekFrom::Start(start))
        .await
        .map_err(read_error)?;
    let mut buf = Vec::with_capacity(want);
    (&mut file)
        .take(want as u64)
        .read_to_end(&mut buf)
        .await
        .map_err(read_error)?;
    let next = start + buf.len() as u64;
    Ok((buf, next))
}

#[cfg(test)]
mod tests;
