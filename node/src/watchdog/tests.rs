//! The watchdog in a thread of the test process, guarding tasks of a real executor: an expired
//! lease kills every task (by cgroup and by process group), a lease taken over in time kills
//! nothing, a clean stop ends it, and a reused pid is never signalled. Waits have deadlines;
//! every process a test starts is killed by a guard when the test ends, even by a panic.

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::*;
use crate::executor::disk_name::disk_name;
use crate::executor::testing::{ChildGroup, Reaper};
use crate::executor::{CgroupMode, ExecEvent, Executor, ExecutorConfig, KillEnforcement, TaskSpec};
use shoal_scheduler::AttemptId;

const DEADLINE: Duration = Duration::from_secs(20);
const GRACE: Duration = Duration::from_millis(600);
const RENEW: Duration = Duration::from_millis(50);

struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn scratch(name: &str) -> Scratch {
    let dir = std::env::temp_dir().join(format!("shoal-wd-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    Scratch(dir)
}

fn config() -> WatchdogConfig {
    WatchdogConfig {
        // Never started: the test runs the watchdog in a thread before the lease connects.
        program: PathBuf::from("/nonexistent/shoal"),
        orphan_grace: GRACE,
        renew_interval: RENEW,
        start_timeout: Duration::from_secs(1),
        stop_timeout: Duration::from_secs(10),
    }
}

fn sh(script: &str) -> TaskSpec {
    TaskSpec {
        command: "sh".to_owned(),
        args: vec!["-c".to_owned(), script.to_owned()],
        ..TaskSpec::default()
    }
}

/// Attempt 0 of `slot` of `job` (incarnation 1, placed by `n`).
fn key(job: &str, slot: u32) -> AttemptId {
    AttemptId {
        job: job.into(),
        incarnation: 1,
        slot,
        attempt: 0,
        placer: "n".into(),
    }
}

fn gone(pid: u32) -> bool {
    procfs::stat(pid).is_none_or(|s| !s.is_live())
}

async fn eventually(mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + DEADLINE;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cond()
}

/// An executor on `dir` plus the watchdog serving `dir` in a thread.
fn guarded(
    dir: &Path,
    name: &str,
    cgroups: CgroupMode,
) -> (
    Executor,
    mpsc::Receiver<ExecEvent>,
    std::thread::JoinHandle<()>,
) {
    let exec_config = ExecutorConfig {
        cgroups,
        // Unique to this process: the watchdog empties every cgroup under its instance.
        instance: format!("wd-{name}-{}", std::process::id()),
        ..ExecutorConfig::default()
    };
    let (exec, events) = Executor::new(dir.to_owned(), exec_config).unwrap();
    let (data_dir, socket) = (dir.to_owned(), dir.join(SOCKET));
    let watchdog = std::thread::spawn(move || serve(&data_dir, &socket).unwrap());
    (exec, events, watchdog)
}

async fn lease(exec: &Executor, dir: &Path) -> Lease {
    let deadline = Instant::now() + DEADLINE;
    loop {
        // The thread may not listen yet; `attach` would then try the (absent) program. The
        // socket appears only once the watchdog accepts connections (`listen`).
        if dir.join(SOCKET).exists() {
            return attach(config(), dir, exec.tasks_dir(), exec.cgroup_parents())
                .await
                .unwrap();
        }
        assert!(Instant::now() < deadline, "the watchdog never listened");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Starts `script` and returns the pids it prints on its first line, once all are live.
async fn start(
    exec: &Executor,
    events: &mut mpsc::Receiver<ExecEvent>,
    task: AttemptId,
    script: &str,
    expect: usize,
) -> Vec<u32> {
    exec.start(task.clone(), sh(script)).unwrap();
    let leader = match tokio::time::timeout(DEADLINE, events.recv()).await {
        Ok(Some(ExecEvent::Started { pid, .. })) => pid,
        other => panic!("expected Started, got {other:?}"),
    };
    let stdout = exec.log_paths(&task).unwrap().stdout;
    let mut pids = vec![leader];
    let printed = eventually(|| {
        let text = std::fs::read_to_string(&stdout).unwrap_or_default();
        let more: Vec<u32> = text
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        if more.len() == expect - 1 && more.iter().all(|p| !gone(*p)) {
            pids.extend(more);
            return true;
        }
        false
    })
    .await;
    assert!(printed, "task {task} never printed its {} pids", expect - 1);
    pids
}

async fn an_expired_lease_kills_every_task(mode: CgroupMode, name: &str) {
    let dir = scratch(name);
    let (exec, mut events, watchdog) = guarded(&dir.0, name, mode);
    let _reaper = Reaper::new(&exec);
    let escapes = exec.enforcement().kill != KillEnforcement::ProcessGroup;
    let held = lease(&exec, &dir.0).await;
    let mut pids = start(&exec, &mut events, key(name, 0), "echo; sleep 600", 1).await;
    // The background sleep stays in the group; with cgroups, a setsid child also leaves it.
    let script = if escapes {
        "sleep 600 & b=$!; setsid sleep 600 & echo $b $!; wait"
    } else {
        "sleep 600 & echo $!; wait"
    };
    pids.extend(
        start(
            &exec,
            &mut events,
            key(name, 1),
            script,
            if escapes { 3 } else { 2 },
        )
        .await,
    );

    let crashed = Instant::now();
    held.abandon();
    assert!(
        eventually(|| pids.iter().all(|p| gone(*p))).await,
        "task processes survived the expired lease: {:?}",
        pids.iter().filter(|p| !gone(**p)).collect::<Vec<_>>()
    );
    eprintln!(
        "killed {:?} after the last renewal stopped",
        crashed.elapsed()
    );
    assert!(
        eventually(|| watchdog.is_finished()).await,
        "the watchdog did not exit after the kill"
    );
    assert!(
        !dir.0.join(SOCKET).exists(),
        "the socket outlived the watchdog"
    );
}

#[tokio::test]
async fn an_expired_lease_kills_every_task_by_process_group() {
    an_expired_lease_kills_every_task(CgroupMode::Off, "pgroup").await;
}

#[tokio::test]
async fn an_expired_lease_kills_every_task_by_cgroup() {
    let dir = scratch("probe");
    let probe = ExecutorConfig {
        instance: format!("wd-probe-{}", std::process::id()),
        ..ExecutorConfig::default()
    };
    let (exec, _events) = Executor::new(dir.0.clone(), probe).unwrap();
    if exec.enforcement().kill == KillEnforcement::ProcessGroup {
        assert!(
            std::env::var_os("SHOAL_REQUIRE_CGROUPS").is_none(),
            "SHOAL_REQUIRE_CGROUPS is set but {}",
            exec.enforcement().note
        );
        eprintln!(
            "SKIPPED an_expired_lease_kills_every_task_by_cgroup: no cgroups ({})",
            exec.enforcement().note
        );
        return;
    }
    an_expired_lease_kills_every_task(CgroupMode::Auto, "cgroup").await;
}

#[tokio::test]
async fn a_lease_taken_over_within_the_grace_kills_nothing() {
    let dir = scratch("takeover");
    let (exec, mut events, watchdog) = guarded(&dir.0, "takeover", CgroupMode::Auto);
    let _reaper = Reaper::new(&exec);
    let first = lease(&exec, &dir.0).await;
    let pids = start(&exec, &mut events, key("takeover", 0), "echo; sleep 600", 1).await;
    first.abandon();
    // The "restarted agent" connects to the same watchdog well within the grace.
    let second = lease(&exec, &dir.0).await;
    let until = Instant::now() + GRACE * 3;
    while Instant::now() < until {
        assert!(
            pids.iter().all(|p| !gone(*p)),
            "a task died while the lease was held"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!watchdog.is_finished());
    // A clean stop: the watchdog kills what is left and exits.
    second.release().await;
    assert!(
        eventually(|| watchdog.is_finished()).await,
        "the watchdog did not exit on stop"
    );
    assert!(eventually(|| pids.iter().all(|p| gone(*p))).await);
}

#[tokio::test]
async fn a_reused_pid_is_never_killed() {
    let dir = scratch("reuse");
    let (exec, _events, watchdog) = guarded(&dir.0, "reuse", CgroupMode::Off);
    // A process that is not a task, in a group of its own, named by a record whose start time
    // is not its own: the record's task ended and its pid was reused.
    let bystander = ChildGroup::spawn(Command::new("sleep").arg("600"));
    let pid = bystander.pid();
    let record = pidfile::PidRecord {
        task: disk_name(&key("old", 0)).unwrap(),
        pid,
        pgid: pid,
        start_time_ticks: Some(procfs::stat(pid).unwrap().start_time + 1),
        boot_id: procfs::boot_id(),
    };
    record_pid(exec.tasks_dir(), &record);
    let held = lease(&exec, &dir.0).await;
    held.abandon();
    assert!(
        eventually(|| watchdog.is_finished()).await,
        "the lease never expired"
    );
    assert!(
        !gone(pid),
        "the watchdog killed a process a stale record named"
    );
}

#[tokio::test]
async fn a_group_whose_leader_is_a_zombie_is_killed() {
    // A task whose leader has exited but is not reaped yet (the agent is stopped, so nothing
    // reaps it) and whose background child is still running in its group.
    let dir = scratch("zombie");
    let tasks_dir = dir.0.join("tasks");
    let mut task = ChildGroup::spawn(
        Command::new("sh")
            .args(["-c", "sleep 600 & echo $!"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped()),
    );
    let leader = task.pid();
    let record = pidfile::PidRecord {
        task: disk_name(&key("zombie", 0)).unwrap(),
        pid: leader,
        pgid: leader,
        start_time_ticks: Some(procfs::stat(leader).unwrap().start_time),
        boot_id: procfs::boot_id(),
    };
    record_pid(&tasks_dir, &record);
    let mut line = String::new();
    std::io::BufReader::new(task.take_stdout().unwrap())
        .read_line(&mut line)
        .unwrap();
    let child: u32 = line.trim().parse().unwrap();
    assert!(
        eventually(|| procfs::stat(leader).is_some_and(|s| !s.is_live())).await,
        "the leader {leader} never exited"
    );
    assert!(!gone(child), "the background child {child} is not running");
    let reused = pidfile::PidRecord {
        start_time_ticks: record.start_time_ticks.map(|t| t + 1),
        ..record.clone()
    };
    assert!(
        !reused.group_alive(procfs::boot_id().as_deref()),
        "the group of a zombie that is not the recorded leader was taken for the task's"
    );
    let hello = Hello {
        agent_pid: std::process::id(),
        orphan_grace_ms: 0,
        tasks_dir,
        cgroups: Vec::new(),
    };
    let report = kill_everything(&hello);
    assert!(
        gone(child),
        "the child {child} of a zombie leader survived: {report}"
    );
}

/// Writes `record` as the pid file of its task, as the executor does at spawn.
fn record_pid(tasks_dir: &Path, record: &pidfile::PidRecord) {
    let task_dir = record.task.dir(tasks_dir);
    std::fs::create_dir_all(&task_dir).unwrap();
    pidfile::write(&task_dir, record).unwrap();
}

#[test]
fn log_times_are_utc_dates() {
    assert_eq!(utc(Duration::ZERO), "1970-01-01T00:00:00.000Z");
    assert_eq!(
        utc(Duration::from_millis(951_782_400_123)),
        "2000-02-29T00:00:00.123Z"
    );
    assert_eq!(
        utc(Duration::from_secs(1_796_229_716)),
        "2026-12-02T16:41:56.000Z"
    );
}
