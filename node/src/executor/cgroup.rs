//! CPU, memory and process-count limits through cgroups, and stops that reach every process of
//! a task, when this host lets the agent use them.
//!
//! [`detect`] looks for a cgroup2 mount whose root offers the `cpu` and `memory` controllers
//! (and `pids` when offered) and sets up `<mount>/shoal/<instance>` with them enabled for its
//! children; failing that, cgroup v1 `cpu` and `memory` hierarchies (plus `pids` and `freezer`
//! when mounted), under the agent's own cgroup in each (so limits a supervisor put on the agent
//! still hold for its tasks). Detection creates the parent directories for real, so "usable"
//! means "it worked here", not "a file exists".
//!
//! Per task, [`Hierarchy::create`] makes `<parent>/<job>.<slot>.<attempt>` and writes the limits
//! before the spawn; with v1 the child enters it before `exec` ([`TaskCgroup::entry`]), with v2
//! [`TaskCgroup::add`] moves the pid in right after the spawn; [`kill_until_empty`]
//! SIGKILLs every process in it (v2 `cgroup.kill`, else the v1 freezer around a kill of each
//! member, else a kill of each member) until none is left; [`TaskCgroup::remove`] deletes the
//! directories once they are empty.

use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::anchor::{Anchor, Under};
use super::entry::Entry;
use crate::backoff::Backoff;

/// CFS period used for CPU quotas: 100 ms, the kernel default.
const CPU_PERIOD_US: u64 = 100_000;
/// The kernel refuses quotas under 1 ms, so 10 millicores is the smallest enforceable rate.
const CPU_MIN_QUOTA_US: u64 = 1_000;

/// A cgroup hierarchy the executor can create task cgroups in. Each parent is held open
/// (`anchor.rs`): a task cgroup's files are reached from it, two components deep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Hierarchy {
    /// Unified hierarchy: one directory per task holds `cpu.max`, `memory.max` and, when the
    /// `pids` controller is enabled, `pids.max`.
    V2 { parent: Anchor, pids: bool },
    /// Legacy hierarchies: one directory per task in each of `cpu` and `memory`, and in `pids`
    /// and `freezer` when those are mounted and writable.
    V1 {
        cpu_parent: Anchor,
        memory_parent: Anchor,
        pids_parent: Option<Anchor>,
        freezer_parent: Option<Anchor>,
    },
}

/// How a stop reaches every process of a task in this hierarchy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KillMethod {
    /// v2 `cgroup.kill`: one write SIGKILLs every member at once.
    CgroupKill,
    /// v1 freezer: freeze, SIGKILL each member, thaw (nothing forks in between).
    Freezer,
    /// SIGKILL each member listed in `cgroup.procs`, again until none is left.
    EachMember,
}

/// The outcome of [`detect`]: the hierarchy to use, if any, and why, in words.
#[derive(Debug, Clone)]
pub(crate) struct Detected {
    pub hierarchy: Option<Hierarchy>,
    pub kill: KillMethod,
    pub note: String,
}

/// The cgroup of one task: one directory (v2) or one per hierarchy (v1: cpu, memory, and pids
/// and freezer when used).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TaskCgroup {
    dirs: Vec<Under>,
    /// The limits this executor wrote, when it made the cgroup in this life.
    limits: Option<Limits>,
}

/// Finds a usable hierarchy and creates `shoal/<instance>` in it.
pub(crate) fn detect(instance: &str) -> Detected {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")
        .map(|t| parse_mountinfo(&t))
        .unwrap_or_default();
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let why_not_v2 = match try_v2(&mounts, instance) {
        Ok((h, kill)) => return found(h, kill, String::new()),
        Err(why) => why,
    };
    match try_v1(&mounts, &own, instance) {
        Ok((h, optional)) => {
            let kill = match &h {
                Hierarchy::V1 {
                    freezer_parent: Some(_),
                    ..
                } => KillMethod::Freezer,
                _ => KillMethod::EachMember,
            };
            found(
                h,
                kill,
                format!("{optional}; cgroup v2 not used: {why_not_v2}"),
            )
        }
        Err(why_not_v1) => Detected {
            hierarchy: None,
            kill: KillMethod::EachMember,
            note: format!("no usable cgroups: v2: {why_not_v2}; v1: {why_not_v1}"),
        },
    }
}

fn found(hierarchy: Hierarchy, kill: KillMethod, more: String) -> Detected {
    let mut note = match &hierarchy {
        Hierarchy::V2 { parent, pids } => format!(
            "cgroup v2 under {}{}",
            parent.display(),
            if *pids { "" } else { " (no pids controller)" }
        ),
        Hierarchy::V1 {
            cpu_parent,
            memory_parent,
            ..
        } => format!(
            "cgroup v1 under {} and {}",
            cpu_parent.display(),
            memory_parent.display()
        ),
    };
    note.push_str(&more);
    Detected {
        hierarchy: Some(hierarchy),
        kill,
        note,
    }
}

impl Hierarchy {
    /// Every parent directory task cgroups are made in, one per hierarchy.
    pub fn parents(&self) -> Vec<PathBuf> {
        self.anchors().iter().map(|a| a.path().to_owned()).collect()
    }

    /// The parents, held open.
    fn anchors(&self) -> Vec<Anchor> {
        match self {
            Hierarchy::V2 { parent, .. } => vec![parent.clone()],
            Hierarchy::V1 {
                cpu_parent,
                memory_parent,
                pids_parent,
                freezer_parent,
            } => [
                Some(cpu_parent),
                Some(memory_parent),
                pids_parent.as_ref(),
                freezer_parent.as_ref(),
            ]
            .into_iter()
            .flatten()
            .cloned()
            .collect(),
        }
    }

    /// Where the task named `name` lives (whether or not it exists yet).
    pub fn task_cgroup(&self, name: &str) -> TaskCgroup {
        TaskCgroup {
            dirs: self.anchors().iter().map(|p| p.under(name)).collect(),
            limits: None,
        }
    }

    /// The memory limit file of the task named `name`.
    pub fn memory_file(&self, name: &str) -> Under {
        match self {
            Hierarchy::V2 { parent, .. } => parent.under(name).join("memory.max"),
            Hierarchy::V1 { memory_parent, .. } => {
                memory_parent.under(name).join("memory.limit_in_bytes")
            }
        }
    }

    /// Creates the task's cgroup (reusing a stale one of the same name) and writes its limits;
    /// `0` means "no limit" for any resource.
    pub fn create(&self, name: &str, limits: Limits) -> Result<TaskCgroup, String> {
        let mut cgroup = self.task_cgroup(name);
        for dir in &cgroup.dirs {
            match dir.mkdir(0o755) {
                Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                    return Err(format!(
                        "cannot create cgroup {}: {e}",
                        dir.path().display()
                    ));
                }
                _ => {}
            }
        }
        self.write_limits(name, limits, Held::Nothing)?;
        cgroup.limits = Some(limits);
        Ok(cgroup)
    }

    /// Writes the limits of the task cgroup `name`, each but those it already `held`.
    pub fn write_limits(&self, name: &str, limits: Limits, held: Held) -> Result<(), String> {
        let quota = cpu_quota_us(limits.cpu_millicores);
        // A spare's memory cgroup still holds what the last task left charged to it: the
        // limit is raised by that much, so the task has all of its own room.
        let (held_pids, leftover) = match held {
            Held::Nothing => (None, 0),
            Held::Spare {
                max_pids,
                leftover_bytes,
            } => (Some(max_pids), leftover_bytes),
        };
        let memory = limits
            .memory_mib
            .checked_mul(1024 * 1024)
            .filter(|&b| b > 0)
            .map(|b| b.saturating_add(leftover));
        let pids = (limits.max_pids > 0).then_some(limits.max_pids);
        // The cpu quota is written even when a spare holds the same: the write refills the
        // cgroup's CFS runtime, which the last task may have spent in this period.
        let pids_changed = held_pids != Some(limits.max_pids);
        match self {
            Hierarchy::V2 {
                parent,
                pids: has_pids,
            } => {
                let dir = parent.under(name);
                let cpu = quota.map_or(format!("max {CPU_PERIOD_US}"), |q| {
                    format!("{q} {CPU_PERIOD_US}")
                });
                write(&dir.join("cpu.max"), &cpu)?;
                write(
                    &self.memory_file(name),
                    &memory.map_or("max".to_owned(), |b| b.to_string()),
                )?;
                if *has_pids && pids_changed {
                    write(
                        &dir.join("pids.max"),
                        &pids.map_or("max".to_owned(), |n| n.to_string()),
                    )?;
                }
            }
            Hierarchy::V1 {
                cpu_parent,
                pids_parent,
                ..
            } => {
                // cfs_period_us of a new cgroup is the kernel default, CPU_PERIOD_US, and only
                // this executor writes here: not rewritten, each write is a syscall per task.
                let cpu = quota.map_or("-1".to_owned(), |q| q.to_string());
                write(&cpu_parent.under(name).join("cpu.cfs_quota_us"), &cpu)?;
                write(
                    &self.memory_file(name),
                    &memory.map_or("-1".to_owned(), |b| b.to_string()),
                )?;
                if let Some(pids_parent) = pids_parent.as_ref().filter(|_| pids_changed) {
                    let max = pids.map_or("max".to_owned(), |n| n.to_string());
                    write(&pids_parent.under(name).join("pids.max"), &max)?;
                }
            }
        }
        Ok(())
    }

    /// The memory controller's directory of the task cgroup `name` (v1; with v2 there is one
    /// directory for every controller).
    pub fn memory_dir(&self, name: &str) -> Under {
        match self {
            Hierarchy::V2 { parent, .. } => parent.under(name),
            Hierarchy::V1 { memory_parent, .. } => memory_parent.under(name),
        }
    }

    /// What is charged to the memory cgroup of task cgroup `name` now, as `file` of it says
    /// (v1 `memory.usage_in_bytes` or `memory.memsw.usage_in_bytes`, v2 `memory.current`): with
    /// no process in it, what its tasks left behind.
    pub fn memory_charged(&self, name: &str, file: &str) -> Result<u64, String> {
        let file = self.memory_dir(name).join(file);
        let text = file
            .read_small()
            .map_err(|e| format!("cannot read {}: {e}", file.path().display()))?;
        text.trim()
            .parse()
            .map_err(|e| format!("{} holds `{}`: {e}", file.path().display(), text.trim()))
    }

    /// How many processes the kernel's OOM killer has killed in the memory cgroup of task
    /// cgroup `name` since it was made (`oom_kill` of v1 `memory.oom_control`, v2
    /// `memory.events`); `None` where the kernel does not say (before Linux 4.13) or the file
    /// cannot be read.
    pub fn oom_kills(&self, name: &str) -> Option<u64> {
        let file = match self {
            Hierarchy::V2 { .. } => "memory.events",
            Hierarchy::V1 { .. } => "memory.oom_control",
        };
        let text = self.memory_dir(name).join(file).read_small().ok()?;
        oom_kill_count(&text)
    }

    /// Whether a task's child enters its cgroup itself, between `fork` and `exec`
    /// ([`TaskCgroup::entry`]): with cgroup v1. With v2 the caller moves the pid in after the
    /// spawn ([`TaskCgroup::add`]), and a task that forks within that window can leave a child
    /// outside its cgroup (docs/executor.md, "The fork race at the start").
    pub fn enters_before_exec(&self) -> bool {
        matches!(self, Hierarchy::V1 { .. })
    }

    /// Removes the `shoal/<instance>` directories if they hold no task cgroup any more (a
    /// populated one refuses `rmdir`, so this is safe to try at any time).
    pub fn remove_parents(&self) {
        for parent in self.parents() {
            let _ = std::fs::remove_dir(parent);
        }
    }

    /// Removes task cgroups that have no process left, e.g. those of an agent that was
    /// SIGKILLed. A populated cgroup refuses `rmdir` (`EBUSY`), so live tasks keep theirs for
    /// recovery. Returns how many directories were removed.
    pub fn sweep_empty(&self) -> usize {
        self.parents()
            .iter()
            .flat_map(|p| task_dirs(p))
            .filter(|d| std::fs::remove_dir(d).is_ok())
            .count()
    }
}

/// What a task cgroup's limit files hold before [`Hierarchy::write_limits`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Held {
    /// The kernel's defaults: a new cgroup.
    Nothing,
    /// An earlier task's cgroup (a spare, `spares.rs`): the pids limit written for it, and
    /// the memory its tasks left charged to it, which the memory limit is raised by. Its cpu
    /// quota is written again, which refills the runtime of the period.
    Spare { max_pids: u64, leftover_bytes: u64 },
}

/// The limits written into a task's cgroup; `0` is "unlimited" for each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Limits {
    pub cpu_millicores: u64,
    pub memory_mib: u64,
    pub max_pids: u64,
}

impl TaskCgroup {
    /// The cgroup made of these directories (the watchdog names tasks by directory), each
    /// walked whole at every use.
    pub fn from_dirs(dirs: Vec<PathBuf>) -> TaskCgroup {
        let dirs = dirs
            .iter()
            .map(|d| match (d.parent(), d.file_name()) {
                (Some(parent), Some(name)) => Anchor::unopened(parent).under(name),
                _ => Anchor::unopened(d).under(""),
            })
            .collect();
        TaskCgroup { dirs, limits: None }
    }

    /// The limits this executor wrote into it, if it made it in this life.
    pub fn limits(&self) -> Option<Limits> {
        self.limits
    }

    /// The same cgroup, known to hold `limits`.
    pub fn with_limits(mut self, limits: Limits) -> TaskCgroup {
        self.limits = Some(limits);
        self
    }

    /// Opens the cgroup's `cgroup.procs` files for the child of a spawn to enter them before
    /// `exec` ([`Entry`]).
    pub fn entry(&self) -> Result<Entry, String> {
        Entry::open(&self.dirs)
    }

    /// Moves `pid` (and so everything it forks from now on) into the cgroup.
    pub fn add(&self, pid: u32) -> Result<(), String> {
        self.dirs
            .iter()
            .try_for_each(|d| write(&d.join("cgroup.procs"), &pid.to_string()))
    }

    /// The task's directories, one per hierarchy in the order of [`Hierarchy::parents`].
    pub fn dirs(&self) -> &[Under] {
        &self.dirs
    }

    /// The members except `spare`, sorted.
    pub fn procs_except(&self, spare: &[u32]) -> Vec<u32> {
        let mut pids = self.procs();
        pids.retain(|p| !spare.contains(p));
        pids
    }

    /// Every process in the cgroup (the union over its hierarchies), sorted.
    pub fn procs(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = self
            .dirs
            .iter()
            .filter_map(|d| d.join("cgroup.procs").read_small().ok())
            .flat_map(|text| {
                text.lines()
                    .filter_map(|l| l.trim().parse::<u32>().ok())
                    .collect::<Vec<_>>()
            })
            .collect();
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// Sends `signal` to every member now (those that forked since are not reached: use
    /// [`kill_until_empty`] for SIGKILL).
    pub fn signal_members(&self, signal: Signal) {
        for pid in self.procs() {
            signal_pid(pid, signal);
        }
    }

    /// Undoes a freeze a crashed agent may have left (it froze, then died before thawing).
    pub fn thaw(&self) {
        if let Some(state) = self.freezer_state() {
            let _ = state.write("THAWED");
        }
    }

    fn freezer_state(&self) -> Option<Under> {
        self.dirs
            .iter()
            .map(|d| d.join("freezer.state"))
            .find(Under::exists)
    }

    fn kill_file(&self) -> Option<Under> {
        self.dirs
            .iter()
            .map(|d| d.join("cgroup.kill"))
            .find(Under::exists)
    }

    /// One round of SIGKILL to every member; returns how many members there were before it.
    fn kill_round(&self, spare: &[u32]) -> usize {
        let before = self.procs_except(spare).len();
        if before == 0 {
            return 0;
        }
        if let Some(kill) = self.kill_file() {
            let _ = kill.write("1");
            return before;
        }
        let freezer = self.freezer_state();
        if let Some(state) = &freezer {
            freeze(state);
        }
        for pid in self.procs_except(spare) {
            signal_pid(pid, Signal::SIGKILL);
        }
        if let Some(state) = &freezer {
            let _ = state.write("THAWED");
        }
        before
    }

    /// Removes the directories now; fails with `EBUSY` while a member is still exiting.
    pub fn remove_now(&self) -> std::io::Result<()> {
        for dir in &self.dirs {
            match dir.rmdir() {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }

    /// Removes the directories, retrying for about a second while SIGKILLed members finish
    /// exiting; after that the directory is left behind and logged (reused on the same name).
    /// Each try runs on the blocking pool: an `rmdir` in cgroupfs takes the kernel's cgroup
    /// lock and can take milliseconds under load, which the runtime's thread must not wait.
    pub async fn remove(&self) {
        let mut result = self.remove_off_thread().await;
        // 2 ms, 4 ms, … 512 ms: nine pauses, about a second in all.
        let pauses = Backoff::new(Duration::from_millis(2), Duration::from_millis(512)).take(9);
        for pause in pauses {
            if result.is_ok() {
                break;
            }
            tokio::time::sleep(pause).await;
            result = self.remove_off_thread().await;
        }
        if let Err(e) = result {
            let dirs: Vec<PathBuf> = self.dirs.iter().map(Under::path).collect();
            tracing::warn!(?dirs, error = %e, "task cgroup left behind");
        }
    }

    /// [`Self::remove_now`] on the blocking pool.
    async fn remove_off_thread(&self) -> std::io::Result<()> {
        let cgroup = self.clone();
        tokio::task::spawn_blocking(move || cgroup.remove_now())
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)))
    }
}

/// SIGKILLs every process in `cgroup` but `spare`, round after round, until it is empty or
/// `deadline` passes; returns the processes still there at the deadline (none, normally). Blocking: a
/// round is a few reads and writes of cgroupfs plus one signal per member.
///
/// A member that forks during a round puts its child in the same cgroup, where the next round
/// finds it; a process with SIGKILL pending forks no more, so the rounds converge (the `pids`
/// limit bounds how many there can be). Where the kill is by member (no `cgroup.kill`, no
/// freezer), a member may exit and its pid be reused between the read of `cgroup.procs` and the
/// signal; the freezer and `cgroup.kill` close that window.
pub(crate) fn kill_until_empty(
    cgroup: &TaskCgroup,
    spare: &[u32],
    deadline: std::time::Instant,
) -> Vec<u32> {
    let mut pauses = Backoff::new(Duration::from_millis(1), Duration::from_millis(20));
    loop {
        if cgroup.kill_round(spare) == 0 {
            return Vec::new();
        }
        if std::time::Instant::now() >= deadline {
            return cgroup.procs_except(spare);
        }
        std::thread::sleep(pauses.next().unwrap_or_default());
    }
}

/// The task cgroups under `parent` (every child directory).
pub(crate) fn task_dirs(parent: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(parent)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect();
    dirs.sort();
    dirs
}

/// Writes `FROZEN` and waits (≤ 50 ms) until the kernel says every member is frozen; a member
/// stuck in an uninterruptible wait can keep it `FREEZING`, and then the round kills anyway.
fn freeze(state: &Under) {
    if state.write("FROZEN").is_err() {
        return;
    }
    let until = std::time::Instant::now() + Duration::from_millis(50);
    while std::time::Instant::now() < until {
        match state.read_small() {
            Ok(s) if s.trim() == "FROZEN" => return,
            Ok(_) => std::thread::sleep(Duration::from_micros(200)),
            Err(_) => return,
        }
    }
}

/// Sends `signal` to one pid; a pid that is gone is not an error. Never pid 0 or 1 or this
/// process.
fn signal_pid(pid: u32, signal: Signal) {
    let Ok(raw) = i32::try_from(pid) else { return };
    if raw <= 1 || pid == std::process::id() {
        return;
    }
    match nix::sys::signal::kill(Pid::from_raw(raw), signal) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
        Err(e) => tracing::warn!(pid, ?signal, error = %e, "cannot signal task process"),
    }
}

/// The CFS quota per [`CPU_PERIOD_US`] for a rate in millicores; `None` means unlimited.
/// The `oom_kill N` line of `memory.oom_control` or `memory.events`.
fn oom_kill_count(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|n| n.trim().parse().ok())
}

fn cpu_quota_us(cpu_millicores: u64) -> Option<u64> {
    (cpu_millicores > 0)
        .then(|| (cpu_millicores.saturating_mul(CPU_PERIOD_US) / 1000).max(CPU_MIN_QUOTA_US))
}

fn try_v2(mounts: &[Mount], instance: &str) -> Result<(Hierarchy, KillMethod), String> {
    let mount = mounts
        .iter()
        .find(|m| m.fstype == "cgroup2")
        .ok_or("no cgroup2 mount")?;
    let controllers =
        std::fs::read_to_string(mount.point.join("cgroup.controllers")).map_err(|e| {
            format!(
                "cannot read {}/cgroup.controllers: {e}",
                mount.point.display()
            )
        })?;
    let offered: Vec<&str> = controllers.split_whitespace().collect();
    if !(offered.contains(&"cpu") && offered.contains(&"memory")) {
        return Err(format!(
            "cgroup2 at {} offers [{}], needs cpu and memory",
            mount.point.display(),
            offered.join(" ")
        ));
    }
    let pids = offered.contains(&"pids");
    let enable = if pids {
        "+cpu +memory +pids"
    } else {
        "+cpu +memory"
    };
    let mut dir = mount.point.clone();
    for level in ["shoal", instance] {
        write_path(&dir.join("cgroup.subtree_control"), enable)?;
        dir.push(level);
        make_dir(&dir)?;
    }
    write_path(&dir.join("cgroup.subtree_control"), enable)?;
    let kill = if probe(&dir)?.contains(&"cgroup.kill".to_owned()) {
        KillMethod::CgroupKill
    } else {
        KillMethod::EachMember
    };
    let parent = Anchor::open(&dir);
    Ok((Hierarchy::V2 { parent, pids }, kill))
}

/// The v1 hierarchy plus a note on the optional controllers (`pids`, `freezer`) not used.
fn try_v1(mounts: &[Mount], own: &str, instance: &str) -> Result<(Hierarchy, String), String> {
    let parent = |controller: &str| -> Result<Anchor, String> {
        let mount = mounts
            .iter()
            .find(|m| m.fstype == "cgroup" && m.super_options.split(',').any(|o| o == controller))
            .ok_or(format!("no cgroup v1 `{controller}` mount"))?;
        let own_path = own_v1_path(own, controller).unwrap_or("/");
        let relative = own_path
            .strip_prefix(mount.root.as_str())
            .unwrap_or(own_path);
        let dir = mount
            .point
            .join(relative.trim_start_matches('/'))
            .join("shoal")
            .join(instance);
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        probe(&dir)?;
        Ok(Anchor::open(&dir))
    };
    let cpu_parent = parent("cpu")?;
    let memory_parent = parent("memory")?;
    let mut unused = String::new();
    let mut optional = |controller: &str| match parent(controller) {
        Ok(dir) => Some(dir),
        Err(why) => {
            unused.push_str(&format!("; {controller} not used: {why}"));
            None
        }
    };
    let pids_parent = optional("pids");
    let freezer_parent = optional("freezer");
    Ok((
        Hierarchy::V1 {
            cpu_parent,
            memory_parent,
            pids_parent,
            freezer_parent,
        },
        unused,
    ))
}

/// The agent's own cgroup path in the v1 hierarchy holding `controller`.
fn own_v1_path<'a>(proc_self_cgroup: &'a str, controller: &str) -> Option<&'a str> {
    proc_self_cgroup.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        controllers
            .split(',')
            .any(|c| c == controller)
            .then_some(path)
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Mount {
    root: String,
    point: PathBuf,
    fstype: String,
    super_options: String,
}

/// Parses `/proc/self/mountinfo`: `id parent dev root point opts [optional...] - fstype source superopts`.
fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let left: Vec<&str> = left.split(' ').collect();
            let right: Vec<&str> = right.split(' ').collect();
            Some(Mount {
                root: (*left.get(3)?).to_owned(),
                point: PathBuf::from(left.get(4)?),
                fstype: (*right.first()?).to_owned(),
                super_options: right.get(2).copied().unwrap_or("").to_owned(),
            })
        })
        .collect()
}

/// Creates and removes a child cgroup, and returns the names of the files the kernel put in
/// it: an existing parent (made by root, say) does not mean this agent may create task cgroups
/// in it, and which files a child gets says which interfaces it has.
fn probe(parent: &Path) -> Result<Vec<String>, String> {
    let child = parent.join(format!("probe-{}", std::process::id()));
    make_dir(&child)?;
    let mut files: Vec<String> = std::fs::read_dir(&child)
        .into_iter()
        .flatten()
        .filter_map(|e| Some(e.ok()?.file_name().to_str()?.to_owned()))
        .collect();
    files.sort();
    std::fs::remove_dir(&child).map_err(|e| format!("cannot remove {}: {e}", child.display()))?;
    Ok(files)
}

fn make_dir(dir: &Path) -> Result<(), String> {
    match std::fs::create_dir(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
            Err(format!("cannot create cgroup {}: {e}", dir.display()))
        }
        _ => Ok(()),
    }
}

fn write(file: &Under, value: &str) -> Result<(), String> {
    file.write(value)
        .map_err(|e| format!("cannot write `{value}` to {}: {e}", file.path().display()))
}

/// [`write`] to a whole path (detection, before the parents are anchored).
fn write_path(path: &Path, value: &str) -> Result<(), String> {
    std::fs::write(path, value)
        .map_err(|e| format!("cannot write `{value}` to {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime shared:7 - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn mountinfo_finds_both_versions() {
        let mounts = parse_mountinfo(MOUNTINFO);
        assert_eq!(mounts.len(), 4);
        assert_eq!(mounts[2].point, PathBuf::from("/sys/fs/cgroup/memory"));
        assert_eq!(mounts[2].super_options, "rw,memory");
        assert_eq!(mounts[3].fstype, "cgroup2");
        assert!(parse_mountinfo("garbage\n\n - \n").is_empty());
    }

    #[test]
    fn own_v1_path_matches_whole_controller_names() {
        let own = "4:memory:/process_api/abc\n2:cpuacct:/x\n1:cpu,cpuacct:/y\n0::/\n";
        assert_eq!(own_v1_path(own, "memory"), Some("/process_api/abc"));
        assert_eq!(own_v1_path(own, "cpu"), Some("/y"));
        assert_eq!(own_v1_path(own, "pids"), None);
    }

    #[test]
    fn oom_kill_counts_are_read_from_both_layouts() {
        let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n";
        let v2 = "low 0\nhigh 0\nmax 7\noom 1\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(oom_kill_count(v1), Some(2));
        assert_eq!(oom_kill_count(v2), Some(1));
        assert_eq!(oom_kill_count("oom_kill_disable 0\nunder_oom 0\n"), None);
    }

    #[test]
    fn cpu_quota_scales_and_clamps() {
        assert_eq!(cpu_quota_us(0), None);
        assert_eq!(cpu_quota_us(1), Some(CPU_MIN_QUOTA_US));
        assert_eq!(cpu_quota_us(250), Some(25_000));
        assert_eq!(cpu_quota_us(2000), Some(200_000));
        assert!(cpu_quota_us(u64::MAX).is_some());
    }
}
