//! Starting a task: its directory, log files, environment, cgroup and process, on the
//! executor's threads (`pool.rs`).

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::io::ErrorKind;
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::fcntl::OFlag;
use shoal_scheduler::AttemptId;
use tokio::sync::watch;
use tokio::time::Instant;

use super::anchor::Under;
use super::cgroup::{self, TaskCgroup};
use super::disk_name::DiskName;
use super::entry::Entry;
use super::pidfile::{self, PidRecord};
use super::pool::{Lane, Turn};
use super::spawn::{self, SpawnError, Step, TaskChild};
use super::users::Account;
use super::watcher::watch_child;
use super::{ExecEvent, Inner, TaskSpec, procfs};

/// `PATH` for tasks whose environment has none (glibc's `execvp` default).
const DEFAULT_PATH: &str = "/bin:/usr/bin";

/// A spawned process and what the watcher needs to see it through.
pub(super) struct Launched {
    pub(super) child: TaskChild,
    pub(super) pid: u32,
    pub(super) cgroup: Option<TaskCgroup>,
    /// Set when setup after the spawn failed: the watcher kills the group and reports this.
    pub(super) setup_error: Option<String>,
}

impl Inner {
    /// Creates the task directory and log files, prepares the cgroup and spawns the process.
    /// Errors are the `Failed` reason; nothing is left running when one is returned.
    fn launch(&self, name: &DiskName, spec: &TaskSpec) -> Result<Launched, String> {
        let account = self.users.for_task(spec.user.as_deref())?;
        let dir = self.task_dir(name);
        let under = self.task_under(name);
        let fresh = make_task_dir(&under, account)?;
        let stdout = open_log(&under.join("stdout"))?;
        let stderr = open_log(&under.join("stderr"))?;
        if !fresh {
            pidfile::remove(&dir)?;
        }
        let workdir = spec.workdir.clone().unwrap_or_else(|| dir.clone());
        if spec.workdir.is_some() || !fresh {
            check_workdir(&workdir)?;
        }
        let env = self.task_env(name, spec, &dir);
        let path = env.get(OsStr::new("PATH"));
        let program = self.programs.resolve(&spec.command, path, &workdir)?;
        // The agent found the command; a task user may not reach it (root's `PATH` can lead
        // through root's home): the child goes on to the later places, as `execvp` would.
        let fallbacks = if account.is_some() {
            later_on_path(&spec.command, path, &workdir, &program)
        } else {
            Vec::new()
        };
        let limits = cgroup::Limits {
            cpu_millicores: spec.cpu_millicores,
            memory_mib: spec.memory_mib,
            max_pids: self.config.task_max_pids,
        };
        let cgroup = match &self.cgroups {
            Some(h) => Some(self.make_cgroup(h, name, limits)?),
            None => None,
        };
        let entry = match (&self.cgroups, &cgroup) {
            (Some(h), Some(c)) if h.enters_before_exec() => {
                Some(c.entry().inspect_err(|_| remove_cgroup_now(Some(c)))?)
            }
            _ => None,
        };
        let entered = entry.is_some();
        let cgroup_procs = entry.as_ref().map(Entry::fds).unwrap_or_default();
        let plan = spawn::Plan {
            program: &program,
            fallbacks: &fallbacks,
            args: &spec.args,
            env: env
                .iter()
                .map(|(k, v)| (k.as_os_str(), v.as_os_str()))
                .collect(),
            workdir: &workdir,
            user: account.map(|a| (a.uid, a.gid)),
            stdin: self.dev_null.as_fd(),
            stdout: stdout.into(),
            stderr: stderr.into(),
            cgroup_procs: &cgroup_procs,
        };
        let child = spawn::spawn(plan)
            .map_err(|e| spawn_error(spec, account, &workdir, &e))
            .inspect_err(|_| remove_cgroup_now(cgroup.as_ref()))?;
        drop(entry);
        let pid = child.id();
        let to_add = cgroup.as_ref().filter(|_| !entered);
        let setup_error = self.after_spawn(name, pid, to_add).err();
        Ok(Launched {
            child,
            pid,
            cgroup,
            setup_error,
        })
    }

    /// The task's whole environment: [`ExecutorConfig::pass_env`] from the agent, then the
    /// spec's, then the `SHOAL_*` task variables.
    pub(super) fn task_env(
        &self,
        name: &DiskName,
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
            ("SHOAL_JOB", OsString::from(name.job_key())),
            ("SHOAL_SLOT", name.slot().to_string().into()),
            ("SHOAL_ATTEMPT", name.attempt().to_string().into()),
            ("SHOAL_TASK_DIR", dir.as_os_str().to_owned()),
        ];
        env.extend(task_vars.into_iter().map(|(k, v)| (OsString::from(k), v)));
        env
    }

    /// Moves the pid into `cgroup` first, when it is not there yet (v2: the sooner, the fewer
    /// forks escape it), then persists the pid record that recovery depends on.
    fn after_spawn(
        &self,
        name: &DiskName,
        pid: u32,
        cgroup: Option<&TaskCgroup>,
    ) -> Result<(), String> {
        if let Some(cgroup) = cgroup {
            cgroup.add(pid)?;
        }
        let record = PidRecord {
            task: name.clone(),
            pid,
            pgid: pid,
            start_time_ticks: procfs::stat(pid).map(|s| s.start_time),
            boot_id: self.boot_id.clone(),
        };
        pidfile::write_in(&self.task_under(name), &record)
    }
}

/// Launches on the executor's threads (directory, files, cgroup and spawn are blocking
/// syscalls, a millisecond or two per task; `pool.rs`), at most
/// [`ExecutorConfig::max_parallel_launches`] at a time, then watches the child. A task killed
/// while it waits for its turn is never launched: it ends `Exited` (killed) without a
/// `Started`, so a superseded copy queued behind a batch never runs, never reports running,
/// and costs no launch.
///
/// [`ExecutorConfig::max_parallel_launches`]: super::ExecutorConfig::max_parallel_launches
pub(super) async fn run_task(
    inner: Arc<Inner>,
    task: AttemptId,
    name: DiskName,
    spec: TaskSpec,
    mut kill_rx: watch::Receiver<Option<Instant>>,
) {
    let launched = if kill_rx.borrow().is_some() {
        None
    } else {
        let turn = DropIfQueued(Arc::new(Turn::default()));
        let (launcher, disk) = (inner.clone(), name.clone());
        let mut result = inner
            .pool
            .run_unless_dropped(Lane::Launch, turn.0.clone(), move || {
                launcher.launch(&disk, &spec)
            });
        let mut kill_seen = false;
        loop {
            tokio::select! {
                biased;
                () = kill_requested(&mut kill_rx), if !kill_seen => {
                    if turn.0.drop_queued() {
                        break None;
                    }
                    // Its launch has begun: the watcher kills what it starts.
                    kill_seen = true;
                }
                // `None`: dropped above, never launched; an error: the job panicked.
                done = &mut result => break done
                    .unwrap_or_else(|_| Some(Err("launch did not complete".to_owned()))),
            }
        }
    };
    match launched {
        Some(Ok(launched)) => watch_child(inner, task, name, launched, kill_rx).await,
        Some(Err(reason)) => {
            inner.release(&task);
            inner.emit(ExecEvent::Failed { task, reason }).await;
        }
        None => {
            inner.release(&task);
            let event = ExecEvent::Exited {
                task,
                code: None,
                signal: None,
                killed: true,
                oom_killed: false,
            };
            inner.emit(event).await;
        }
    }
}

/// Drops a launch still queued when `run_task` is dropped (the runtime going away): a process
/// started for a caller that no longer waits would run with no watcher.
struct DropIfQueued(Arc<Turn>);

impl Drop for DropIfQueued {
    fn drop(&mut self) {
        self.0.drop_queued();
    }
}

/// Returns once a kill is requested; never when the executor drops the task's kill sender.
async fn kill_requested(kill_rx: &mut watch::Receiver<Option<Instant>>) {
    if kill_rx.wait_for(Option::is_some).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Opens a log for appending without following a symlink: a directory reused from an earlier
/// run of the same attempt may hold what its task user left there.
fn open_log(file: &Under) -> Result<std::fs::File, String> {
    let flags =
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_APPEND | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK;
    file.open(flags, 0o666)
        .map_err(|e| format!("cannot open log file {}: {e}", file.path().display()))
}

/// Creates the task directory `<tasks>/<job>/<slot>/<attempt>`, parents first (in a batch
/// every slot is new: one `mkdir` each, none that fails); when the task runs as another user,
/// hands it to that user (`0700`) and makes its parents searchable (`0711`: enter, not list),
/// also a parent left with another mode before (the job directory of a launch that crashed
/// between its `mkdir` and its `chmod` under a 077 umask is `0700`, which the task user could
/// not pass). Returns whether the directory is new: one that an earlier run of the same
/// attempt left (an agent restart) may hold that run's pid record, and a new one holds nothing.
///
/// Each directory is made with its mode and given it by `chmod` only where it has another
/// (read with `fstatat` first): a batch's launch changes no mode, where it wrote three inodes
/// before (`chmod` writes one even when the mode is the same).
fn make_task_dir(dir: &Under, account: Option<&Account>) -> Result<bool, String> {
    let cannot = |e: std::io::Error| {
        let path = dir.path();
        format!("cannot create task directory {}: {e}", path.display())
    };
    let (parent_mode, own_mode) = match account {
        Some(_) => (PARENT_MODE, OWN_MODE),
        None => (0o777, 0o777),
    };
    let slot = dir.parent();
    // The collection of finished task directories removes a slot's (and a job's) directory
    // once it is empty (`collect.rs`): one removed between our two `mkdir`s is made again.
    let mut tries = 0;
    let fresh = loop {
        tries += 1;
        if let Some(slot) = &slot {
            match slot.mkdir(parent_mode) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    // The job's directory too (with the default mode; set below).
                    std::fs::create_dir_all(slot.path()).map_err(cannot)?;
                }
                Err(e) => return Err(cannot(e)),
            }
        }
        match dir.mkdir(own_mode) {
            Ok(()) => break true,
            Err(e) if e.kind() == ErrorKind::AlreadyExists && dir.path().is_dir() => break false,
            Err(e) if e.kind() == ErrorKind::NotFound && tries < 3 => {}
            Err(e) => return Err(cannot(e)),
        }
    };
    let Some(account) = account else {
        return Ok(fresh);
    };
    // Each mode is read, and set where it differs: `mkdir`'s mode is not the last word (a
    // default ACL on the data directory or a setgid parent overrides the umask), and a
    // directory there before may have another. A `stat` writes nothing; a `chmod` writes the
    // inode even when it changes nothing.
    let set_mode = |under: &Under, mode: u32| {
        if under.mode().is_ok_and(|m| m == mode) {
            return Ok(());
        }
        under.chmod(mode).map_err(|e| {
            let path = under.path();
            format!("cannot set the mode of {}: {e}", path.display())
        })
    };
    // The slot's directory and the job's.
    let job = slot.as_ref().and_then(Under::parent);
    for parent in slot.iter().chain(job.iter()) {
        set_mode(parent, PARENT_MODE)?;
    }
    dir.chown(account.uid, account.gid).map_err(|e| {
        format!(
            "cannot give task directory {} to user {}: {e}",
            dir.path().display(),
            account.name
        )
    })?;
    set_mode(dir, OWN_MODE)?;
    Ok(fresh)
}

/// A task user's slot and job directories: enter, not list.
const PARENT_MODE: u32 = 0o711;
/// A task user's own directory.
const OWN_MODE: u32 = 0o700;

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

/// Commands found on a `PATH` lately, so a batch of tasks of one command does not search the
/// whole `PATH` for every task (up to one `statx` per entry: 14 per task with the bench's
/// `PATH`). An entry is used for at most [`ProgramCache::FRESH`], and only after one `statx`
/// finds it still an executable file; a command that appears earlier on the `PATH` is found
/// within that time, the way a shell's command hash would find it only after `hash -r`.
/// Only `PATH`s whose entries are all absolute are cached (a relative entry depends on the
/// workdir). Bounded: the whole map is dropped when it reaches [`ProgramCache::MAX`].
#[derive(Debug)]
pub(super) struct ProgramCache {
    found: std::sync::Mutex<HashMap<(String, OsString), (PathBuf, std::time::Instant)>>,
    fresh: std::time::Duration,
}

impl Default for ProgramCache {
    fn default() -> Self {
        Self::fresh_for(Self::FRESH)
    }
}

impl ProgramCache {
    const FRESH: std::time::Duration = std::time::Duration::from_secs(1);
    const MAX: usize = 256;

    /// A cache whose entries are used for at most `fresh` (tests use other spans than
    /// [`ProgramCache::FRESH`]).
    pub(super) fn fresh_for(fresh: std::time::Duration) -> Self {
        ProgramCache {
            found: std::sync::Mutex::default(),
            fresh,
        }
    }

    /// [`resolve_program`], through the cache.
    pub(super) fn resolve(
        &self,
        command: &str,
        path: Option<&OsString>,
        workdir: &Path,
    ) -> Result<PathBuf, String> {
        let search = path.map_or(OsStr::new(DEFAULT_PATH), OsString::as_os_str);
        let cacheable = !command.contains('/')
            && std::env::split_paths(search).all(|entry| entry.is_absolute());
        if !cacheable {
            return resolve_program(command, path, workdir);
        }
        let key = (command.to_owned(), search.to_owned());
        // The OS clock, not tokio's: this runs on the executor's pool, and a paused test clock
        // would keep an entry fresh forever.
        let now = std::time::Instant::now();
        let cached = self
            .found
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&key)
            .filter(|(_, at)| now.saturating_duration_since(*at) < self.fresh)
            .map(|(program, _)| program.clone());
        if let Some(program) = cached.filter(|p| is_executable_file(p)) {
            return Ok(program);
        }
        let program = resolve_program(command, path, workdir)?;
        let mut found = self
            .found
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if found.len() >= Self::MAX {
            found.clear();
        }
        found.insert(key, (program.clone(), now));
        Ok(program)
    }
}

fn is_executable_file(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| is_executable(&m))
}

/// What `execvp` would run: a regular file with an execute bit (the search and the cache's
/// check ask the same).
fn is_executable(m: &std::fs::Metadata) -> bool {
    m.is_file() && m.permissions().mode() & 0o111 != 0
}

/// Finds `command` on the task's `PATH` (relative entries count from `workdir`) the way
/// `execvp` would, so the spawn gets an absolute path: that lets std use `posix_spawn` instead
/// of `fork` (it cannot when the child's `PATH` differs from ours), and names the problem
/// precisely when the command is missing.
pub(super) fn resolve_program(
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
    for candidate in candidates(command, search, workdir) {
        match std::fs::metadata(&candidate) {
            Ok(m) if is_executable(&m) => return Ok(candidate),
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

/// `command` in each entry of `search`, in order (relative entries count from `workdir`).
fn candidates<'a>(
    command: &'a str,
    search: &'a OsStr,
    workdir: &'a Path,
) -> impl Iterator<Item = PathBuf> + 'a {
    std::env::split_paths(search).map(move |entry| {
        let dir = if entry.as_os_str().is_empty() {
            workdir.to_owned()
        } else {
            workdir.join(entry)
        };
        dir.join(command)
    })
}

/// The places of `command` on `PATH` after `found` (where [`resolve_program`] found it), in
/// order, unchecked: the child tries them when the task's user is refused `found` (`spawn.rs`).
/// Empty for a command given as a path.
pub(super) fn later_on_path(
    command: &str,
    path: Option<&OsString>,
    workdir: &Path,
    found: &Path,
) -> Vec<PathBuf> {
    if command.contains('/') {
        return Vec::new();
    }
    let search = path.map_or(OsStr::new(DEFAULT_PATH), OsString::as_os_str);
    candidates(command, search, workdir)
        .skip_while(|c| c != found)
        .skip(1)
        .collect()
}

/// Words for a failed spawn, named after the step that failed.
fn spawn_error(
    spec: &TaskSpec,
    account: Option<&Account>,
    workdir: &Path,
    failed: &SpawnError,
) -> String {
    let command = spec.command.escape_default();
    let error = &failed.error;
    match (failed.step, error.kind(), account) {
        (Step::Exec, ErrorKind::NotFound, _) => format!("command `{command}` not found"),
        (Step::Exec, ErrorKind::PermissionDenied, Some(a)) => format!(
            "cannot start command `{command}` as user {}: permission denied (that user needs \
             execute permission on the command and search permission on every directory up \
             to the workdir {})",
            a.name,
            workdir.display()
        ),
        (Step::Exec, ErrorKind::PermissionDenied, None) => {
            format!("command `{command}` is not executable (permission denied)")
        }
        (Step::Workdir, ErrorKind::PermissionDenied, Some(a)) => format!(
            "cannot start command `{command}` as user {}: cannot enter the workdir {} \
             (permission denied)",
            a.name,
            workdir.display()
        ),
        _ => format!("cannot start command `{command}`: {failed}"),
    }
}

fn remove_cgroup_now(cgroup: Option<&TaskCgroup>) {
    if let Some(Err(e)) = cgroup.map(TaskCgroup::remove_now) {
        tracing::warn!(error = %e, "cannot remove unused task cgroup");
    }
}
