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
//! - When a task's main process exits, whatever is left in its process group is SIGKILLed, its
//!   cgroup removed and its pid file deleted, so its resources are free when `Exited` arrives.
//! - [`Executor::kill`] sends SIGTERM to the group, then SIGKILL to the group after the grace
//!   period if any member is still alive. Killing an unknown or finished task does nothing.
//! - Limits are enforced through cgroups when the host allows; [`Executor::enforcement`] says
//!   exactly what is enforced, and says "not enforced" otherwise.
//! - A restarted agent finds the processes of its previous incarnation with
//!   [`Executor::recover`] (pid, process group, start time and boot id are persisted, so a reused
//!   pid is never mistaken for a task), then [`Executor::adopt`]s or kills them, or lets
//!   [`Executor::reconcile`] do both against the set of tasks it should be running.
//!
//! # How to drive it
//! Create it inside a tokio runtime with [`Executor::new`], keep the event receiver in the
//! agent's task loop, call `start`/`kill` from anywhere (the handle is `Clone`), and drain the
//! receiver continuously: a full channel delays only the per-task watchers, never the callers.

mod cgroup;
mod procfs;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io::{ErrorKind, SeekFrom};
use std::num::NonZeroUsize;
use std::os::unix::fs::PermissionsExt;
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

/// What this executor enforces, and why, for operators and `GET /v1/node`-style reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enforcement {
    /// CPU rate limits.
    pub cpu: CpuEnforcement,
    /// Memory limits.
    pub memory: MemoryEnforcement,
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

/// What the pid file of a task holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct PidRecord {
    task: TaskKey,
    pid: u32,
    pgid: u32,
    start_time_ticks: Option<u64>,
    boot_id: Option<String>,
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
        let tasks_dir = data_dir.join("tasks");
        std::fs::create_dir_all(&tasks_dir).map_err(|source| ExecError::DataDir {
            path: tasks_dir.clone(),
            source,
        })?;
        let (cgroups, enforcement) = detect_enforcement(&config);
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
        let mut found: Vec<RecoveredTask> = self
            .inner
            .pid_files()
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
        let dir = self.task_dir(task);
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create task directory {}: {e}", dir.display()))?;
        let stdout = open_log(&dir.join("stdout"))?;
        let stderr = open_log(&dir.join("stderr"))?;
        let workdir = spec.workdir.clone().unwrap_or_else(|| dir.clone());
        check_workdir(&workdir)?;
        let env = self.task_env(task, spec, &dir);
        let program = resolve_program(&spec.command, env.get(OsStr::new("PATH")), &workdir)?;
        let cgroup = match &self.cgroups {
            Some(h) => Some(h.create(&cgroup_name(task), spec.cpu_millicores, spec.memory_mib)?),
            None => None,
        };
        let mut command = tokio::process::Command::new(program);
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
        let (child, pid) = command
            .spawn()
            .map_err(|e| spawn_error(spec, &e))
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
        write_pid_record(&self.task_dir(task), &record)
    }

    fn remove_pid_file(&self, task: &TaskKey) {
        let path = self.task_dir(task).join("pid");
        if let Err(e) = std::fs::remove_file(&path)
            && e.kind() != ErrorKind::NotFound
        {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove pid file");
        }
    }

    /// `tasks/*/*/*/pid`.
    fn pid_files(&self) -> Vec<PathBuf> {
        let mut level = vec![self.tasks_dir.clone()];
        for _ in 0..3 {
            level = level.iter().flat_map(|d| subdirs(d)).collect();
        }
        level
            .into_iter()
            .map(|d| d.join("pid"))
            .filter(|p| p.is_file())
            .collect()
    }

    fn read_pid_record(&self, path: &Path) -> Option<PidRecord> {
        let text = std::fs::read(path).ok()?;
        match serde_json::from_slice(&text) {
            Ok(record) => Some(record),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "unreadable pid file skipped");
                None
            }
        }
    }

    /// Same boot, same pid, same start time, not a zombie.
    fn is_alive(&self, record: &PidRecord) -> bool {
        let same_boot = record.boot_id.is_some() && record.boot_id == self.boot_id;
        same_boot
            && record
                .start_time_ticks
                .is_some_and(|t| procfs::is_same_live_process(record.pid, t))
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
    if let Some(reason) = launched.setup_error.take() {
        signal_group(pid, Signal::SIGKILL);
        let _ = launched.child.wait().await;
        signal_group(pid, Signal::SIGKILL);
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
                kill.request(pid, *kill_rx.borrow_and_update());
            }
            () = sleep_until(kill.deadline), if kill.deadline.is_some() => kill.expire(pid),
        }
    };
    // A kill requested before the first poll is seen here too.
    kill.request(pid, *kill_rx.borrow());
    clear_group(&inner, pid, &kill).await;
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
    let PidRecord {
        task,
        pid,
        pgid,
        start_time_ticks,
        ..
    } = record;
    let mut kill = KillState::default();
    let still_alive = || start_time_ticks.is_some_and(|t| procfs::is_same_live_process(pid, t));
    let mut poll = tokio::time::interval(inner.config.adopt_poll_interval);
    while alive && still_alive() {
        tokio::select! {
            _ = poll.tick() => {}
            changed = kill_rx.changed(), if kill.listening => {
                kill.listening = changed.is_ok();
                kill.request(pgid, *kill_rx.borrow_and_update());
            }
            () = sleep_until(kill.deadline), if kill.deadline.is_some() => kill.expire(pgid),
        }
    }
    if alive {
        kill.request(pgid, *kill_rx.borrow());
        clear_group(&inner, pgid, &kill).await;
    }
    let cgroup = inner
        .cgroups
        .as_ref()
        .map(|h| h.task_cgroup(&cgroup_name(&task)));
    let event = ExecEvent::Exited {
        task: task.clone(),
        code: None,
        signal: None,
        killed: kill.termed,
    };
    inner.finish(task, cgroup, event).await;
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
    fn request(&mut self, pgid: u32, deadline: Option<Instant>) {
        let Some(deadline) = deadline else { return };
        if !self.termed {
            self.termed = true;
            signal_group(pgid, Signal::SIGTERM);
        }
        if !self.killed {
            self.deadline = Some(self.deadline.map_or(deadline, |d| d.min(deadline)));
        }
    }

    fn expire(&mut self, pgid: u32) {
        signal_group(pgid, Signal::SIGKILL);
        self.killed = true;
        self.deadline = None;
    }
}

/// After the leader is gone: on a kill, give the rest of the group until the deadline to exit
/// on SIGTERM; then (and always on a natural exit) SIGKILL whatever is left.
async fn clear_group(inner: &Inner, pgid: u32, kill: &KillState) {
    if let Some(deadline) = kill.deadline {
        while Instant::now() < deadline && !procfs::group_members(pgid).is_empty() {
            tokio::time::sleep(inner.config.group_poll_interval).await;
        }
    }
    signal_group(pgid, Signal::SIGKILL);
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Signals every process in group `pgid`; a group that is already gone is not an error.
fn signal_group(pgid: u32, signal: Signal) {
    let Ok(raw) = i32::try_from(pgid) else { return };
    if raw <= 1 {
        return; // never signal "every process" or init's group
    }
    match killpg(Pid::from_raw(raw), signal) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
        Err(e) => tracing::warn!(pgid, ?signal, error = %e, "cannot signal process group"),
    }
}

fn detect_enforcement(config: &ExecutorConfig) -> (Option<Hierarchy>, Enforcement) {
    let detected = match config.cgroups {
        CgroupMode::Off => cgroup::Detected {
            hierarchy: None,
            note: "cgroups disabled by configuration".to_owned(),
        },
        CgroupMode::Auto => cgroup::detect(&config.instance),
    };
    let (cpu, memory) = match &detected.hierarchy {
        Some(Hierarchy::V2 { .. }) => (
            CpuEnforcement::CgroupV2CpuMax,
            MemoryEnforcement::CgroupV2MemoryMax,
        ),
        Some(Hierarchy::V1 { .. }) => (
            CpuEnforcement::CgroupV1CfsQuota,
            MemoryEnforcement::CgroupV1LimitInBytes,
        ),
        None => (CpuEnforcement::NotEnforced, MemoryEnforcement::NotEnforced),
    };
    (
        detected.hierarchy,
        Enforcement {
            cpu,
            memory,
            note: detected.note,
        },
    )
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

fn open_log(path: &Path) -> Result<std::fs::File, String> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("cannot open log file {}: {e}", path.display()))
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

fn spawn_error(spec: &TaskSpec, error: &std::io::Error) -> String {
    let command = spec.command.escape_default();
    match error.kind() {
        ErrorKind::NotFound => format!("command `{command}` not found"),
        ErrorKind::PermissionDenied => {
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

/// Writes `pid` in one `write` of ~150 bytes. No temp file and rename: once `write` returns,
/// an agent crash cannot tear the record, and a power loss that could also kills the process
/// it names (and changes the boot id). Inode creation is the main per-task cost on ext4.
fn write_pid_record(dir: &Path, record: &PidRecord) -> Result<(), String> {
    let path = dir.join("pid");
    let bytes = serde_json::to_vec(record).map_err(|e| format!("cannot encode pid record: {e}"))?;
    std::fs::write(&path, bytes)
        .map_err(|e| format!("cannot write pid file {}: {e}", path.display()))
}

fn subdirs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect()
}

async fn read_range(path: &Path, offset: u64, limit: usize) -> Result<(Vec<u8>, u64), LogError> {
    let read_error = |source| LogError::Read {
        path: path.to_owned(),
        source,
    };
    let mut file = match tokio::fs::File::open(path).await {
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
