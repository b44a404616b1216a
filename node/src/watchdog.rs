//! The watchdog: one small process per agent that kills the agent's tasks when the agent is
//! gone, so a crashed agent's tasks stop within a bound even if the agent never comes back.
//!
//! # What it promises
//! - While the agent renews its lease (a line `renew` every second over a unix socket at
//!   `DATA_DIR/watchdog.sock`), the watchdog does nothing. The socket appears only once the
//!   watchdog accepts connections on it.
//! - When no renewal arrives for the orphan grace (the agent was `kill -9`ed, crashed, or is
//!   stopped), it SIGKILLs every task of that agent: every process in each task cgroup, round
//!   after round until the cgroups are empty (v2 `cgroup.kill`, or the v1 freezer, where there
//!   are), and every process group recorded in `DATA_DIR/tasks/*/*/*/pid` whose leader is still
//!   the recorded process (same boot id, same start time) or whose leader has exited (gone, or
//!   its zombie unreaped because the agent is stopped) but whose members remain. A reused pid
//!   is never signalled. Then it exits.
//! - An agent restarted within the grace connects, says `hello`, and holds the lease from then
//!   on: nothing is killed and the tasks are adopted as usual. A watchdog whose lease expired
//!   removes its socket before it kills, so a new agent never takes over a watchdog that is
//!   killing; it starts a new one, which waits for the old one's lock (`DATA_DIR/watchdog.lock`)
//!   before it listens, so the old one has finished before the new agent adopts anything.
//! - A clean agent shutdown says `stop`: the watchdog kills what is left (normally nothing: the
//!   agent stopped its tasks first), answers `bye` and exits.
//! - It survives the agent: the agent starts it as `shoal watchdog --data-dir DIR` (its own
//!   binary, [`WatchdogConfig::program`]); it makes itself a session leader (no terminal signal
//!   of the agent's reaches it), holds none of the agent's sockets (Rust opens every descriptor
//!   close-on-exec), has an empty environment, and logs to `DATA_DIR/watchdog.log`.
//!
//! # How to drive it
//! The agent calls [`attach`] once its executor exists (it needs the task cgroup parents) and
//! before it adopts the processes of a previous incarnation; it keeps the returned [`Lease`]
//! and calls [`Lease::release`] after its executor has stopped every task. The `shoal` binary
//! calls [`run`] for its hidden `watchdog` subcommand.

mod lease;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};

use crate::executor::{cgroup, pidfile, procfs, signal_group};

pub use self::lease::{Lease, WatchdogConfig, attach};

/// The socket's file name in the data dir.
pub const SOCKET: &str = "watchdog.sock";
/// The lock a live watchdog holds, in the data dir.
pub const LOCK: &str = "watchdog.lock";
/// The watchdog's log, in the data dir.
pub const LOG: &str = "watchdog.log";

/// Longest protocol line; a `hello` with its cgroup paths is well under 4 KiB.
const MAX_LINE_BYTES: u64 = 64 * 1024;
/// Connections open at once (the agent, a restarted agent, and a spare); more are closed.
const MAX_CONNECTIONS: usize = 4;
/// A watchdog that is never told what to guard exits after this.
const HELLO_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the kill goes on for processes that keep reappearing (a fork bomb without a pids
/// limit); they are logged when it gives up.
const KILL_DEADLINE: Duration = Duration::from_secs(30);

/// What the agent tells the watchdog when it takes the lease: the first line on a connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The agent's pid: never signalled (a stopped agent may have a launcher thread inside a
    /// task cgroup, on cgroup v1).
    pub agent_pid: u32,
    /// How long without a renewal before the tasks are killed.
    pub orphan_grace_ms: u64,
    /// `DATA_DIR/tasks`, where the pid records are.
    pub tasks_dir: PathBuf,
    /// The directories holding the task cgroups, one per hierarchy (none without cgroups).
    pub cgroups: Vec<PathBuf>,
}

/// Runs the watchdog for the agent whose data dir is `data_dir` until the lease ends. Called by
/// `shoal watchdog`; it changes this process's session and working directory.
pub fn run(data_dir: &Path) -> anyhow::Result<()> {
    // A session of its own: the agent's terminal (Ctrl-C) and process group signals miss it.
    // Fails only if this process already leads a group, and then it is detached anyway.
    let _ = nix::unistd::setsid();
    std::env::set_current_dir(data_dir)
        .with_context(|| format!("cannot enter the data dir {}", data_dir.display()))?;
    // Relative: the socket path is then short whatever the data dir (sun_path holds 107 bytes).
    serve(Path::new("."), Path::new(SOCKET))
}

/// The watchdog proper, on an explicit data dir and socket path (tests run it in a thread).
pub fn serve(data_dir: &Path, socket: &Path) -> anyhow::Result<()> {
    let lock_path = data_dir.join(LOCK);
    let lock_file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("cannot open {}", lock_path.display()))?;
    // Waits for a previous watchdog that is still killing; held until this process exits.
    let _lock = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| anyhow::anyhow!("cannot lock {}: {e}", lock_path.display()))?;
    let listener = listen(socket)?;
    log(&format!(
        "listening on {} (pid {})",
        socket.display(),
        std::process::id()
    ));
    let (events, inbox) = mpsc::channel();
    std::thread::spawn(move || accept_loop(&listener, &events));
    let outcome = Watch::default().run(&inbox, socket);
    let _ = std::fs::remove_file(socket);
    log(&outcome);
    Ok(())
}

/// Listens on `socket`, which appears only once it accepts connections, with mode `0600`: the
/// listener is bound under a temporary name and renamed into place, so an agent that finds the
/// socket never meets the moment between `bind` and `listen` (its connection would be refused
/// and it would start a second watchdog).
fn listen(socket: &Path) -> anyhow::Result<UnixListener> {
    let mut binding = socket.as_os_str().to_owned();
    binding.push(".new");
    let binding = PathBuf::from(binding);
    let _ = std::fs::remove_file(&binding);
    let listener = UnixListener::bind(&binding)
        .with_context(|| format!("cannot listen on {}", binding.display()))?;
    std::fs::set_permissions(&binding, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot restrict {}", binding.display()))?;
    std::fs::rename(&binding, socket)
        .with_context(|| format!("cannot move {} to {}", binding.display(), socket.display()))?;
    Ok(listener)
}

/// What reaches the main loop from the connection threads.
#[derive(Debug)]
enum Event {
    Accepted(u64, UnixStream),
    Line(u64, String),
    Closed(u64),
}

/// The main loop's state.
#[derive(Debug, Default)]
struct Watch {
    guard: Option<Hello>,
    holder: Option<u64>,
    writers: BTreeMap<u64, UnixStream>,
    last_renewal: Option<Instant>,
}

impl Watch {
    /// Handles events until the lease ends; returns how it ended, for the log.
    fn run(mut self, inbox: &mpsc::Receiver<Event>, socket: &Path) -> String {
        let started = Instant::now();
        loop {
            let deadline = match (&self.guard, self.last_renewal) {
                (Some(g), Some(last)) => last + Duration::from_millis(g.orphan_grace_ms),
                _ => started + HELLO_TIMEOUT,
            };
            let wait = deadline.saturating_duration_since(Instant::now());
            match inbox.recv_timeout(wait) {
                Ok(event) => {
                    if let Some(done) = self.handle(event) {
                        return done;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => return self.expire(socket),
                Err(mpsc::RecvTimeoutError::Disconnected) => return self.expire(socket),
            }
        }
    }

    /// One event; `Some` when the watchdog should exit.
    fn handle(&mut self, event: Event) -> Option<String> {
        match event {
            Event::Accepted(id, stream) => {
                if self.writers.len() < MAX_CONNECTIONS {
                    self.writers.insert(id, stream);
                } else {
                    let _ = stream.shutdown(std::net::Shutdown::Both);
                }
                None
            }
            Event::Closed(id) => {
                self.writers.remove(&id);
                if self.holder == Some(id) {
                    self.holder = None;
                    log(
                        "the agent's connection closed; its tasks are killed if no agent takes the lease within the grace",
                    );
                }
                None
            }
            Event::Line(id, line) => self.handle_line(id, line.trim()),
        }
    }

    fn handle_line(&mut self, id: u64, line: &str) -> Option<String> {
        if self.holder == Some(id) {
            match line {
                "renew" => self.last_renewal = Some(Instant::now()),
                "stop" => {
                    let guard = self.guard.take()?;
                    let report = kill_everything(&guard);
                    self.reply(id, "bye");
                    return Some(format!("the agent stopped cleanly; {report}; exiting"));
                }
                other => log(&format!(
                    "ignored line {:?} from the agent",
                    other.escape_default().to_string()
                )),
            }
            return None;
        }
        match serde_json::from_str::<Hello>(line) {
            Ok(hello) => {
                if let Some(old) = self.holder.replace(id)
                    && let Some(w) = self.writers.remove(&old)
                {
                    let _ = w.shutdown(std::net::Shutdown::Both);
                }
                log(&format!(
                    "agent pid {} holds the lease (grace {} ms, {} cgroup parents)",
                    hello.agent_pid,
                    hello.orphan_grace_ms,
                    hello.cgroups.len()
                ));
                self.guard = Some(hello);
                self.last_renewal = Some(Instant::now());
                self.reply(id, "ok");
            }
            Err(e) => {
                log(&format!("a connection sent no valid hello ({e}); closed"));
                if let Some(w) = self.writers.remove(&id) {
                    let _ = w.shutdown(std::net::Shutdown::Both);
                }
            }
        }
        None
    }

    fn reply(&mut self, id: u64, line: &str) {
        if let Some(w) = self.writers.get_mut(&id) {
            let _ = writeln!(w, "{line}");
        }
    }

    /// The lease ran out (or no agent ever said hello): stop listening first, so no agent takes
    /// over a watchdog that is killing, then kill everything.
    fn expire(self, socket: &Path) -> String {
        let _ = std::fs::remove_file(socket);
        for w in self.writers.values() {
            let _ = w.shutdown(std::net::Shutdown::Both);
        }
        let Some(guard) = self.guard else {
            return "no agent said hello; nothing to guard; exiting".to_owned();
        };
        let silent = self.last_renewal.map_or(Duration::ZERO, |t| t.elapsed());
        log(&format!(
            "no renewal from agent pid {} for {} ms: killing its tasks",
            guard.agent_pid,
            silent.as_millis()
        ));
        let report = kill_everything(&guard);
        format!("{report}; exiting")
    }
}

/// Accepts connections and starts a reader thread for each.
fn accept_loop(listener: &UnixListener, events: &mpsc::Sender<Event>) {
    for (id, stream) in (0u64..).zip(listener.incoming()) {
        let Ok(stream) = stream else { continue };
        let Ok(writer) = stream.try_clone() else {
            continue;
        };
        if events.send(Event::Accepted(id, writer)).is_err() {
            return;
        }
        let events = events.clone();
        std::thread::spawn(move || read_lines(id, stream, &events));
    }
}

/// Forwards the lines of one connection; a line longer than [`MAX_LINE_BYTES`] ends it.
fn read_lines(id: u64, stream: UnixStream, events: &mpsc::Sender<Event>) {
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        match (&mut reader).take(MAX_LINE_BYTES).read_line(&mut line) {
            Ok(n) if n > 0 && line.ends_with('\n') => {
                if events.send(Event::Line(id, line)).is_err() {
                    return;
                }
            }
            _ => {
                let _ = events.send(Event::Closed(id));
                return;
            }
        }
    }
}

/// SIGKILLs every task of the agent described by `guard`, by cgroup and by recorded process
/// group, round after round until nothing is left or [`KILL_DEADLINE`] passes. Returns a
/// summary for the log.
pub(crate) fn kill_everything(guard: &Hello) -> String {
    let began = Instant::now();
    let deadline = began + KILL_DEADLINE;
    let cgroups = task_cgroups(&guard.cgroups);
    let own_uid = nix::unistd::geteuid().as_raw();
    let boot_id = procfs::boot_id();
    let records: Vec<pidfile::PidRecord> = pidfile::all(&guard.tasks_dir)
        .iter()
        .filter_map(|p| {
            pidfile::read(p, own_uid)
                .inspect_err(|e| log(&format!("pid file skipped: {e}")))
                .ok()
        })
        .collect();
    let spare = [guard.agent_pid];
    let mut signalled = 0usize;
    let mut rounds = 0usize;
    let left = loop {
        rounds += 1;
        for record in &records {
            if record.pgid != guard.agent_pid && record.group_alive(boot_id.as_deref()) {
                signal_group(record.pgid, Signal::SIGKILL);
                signalled += 1;
            }
        }
        let mut left: Vec<u32> = Vec::new();
        for cgroup in &cgroups {
            signalled += cgroup.procs_except(&spare).len();
            left.extend(cgroup::kill_until_empty(
                cgroup,
                &spare,
                Instant::now() + Duration::from_millis(200),
            ));
        }
        let groups_left = records
            .iter()
            .filter(|r| r.pgid != guard.agent_pid && r.group_alive(boot_id.as_deref()))
            .count();
        if (left.is_empty() && groups_left == 0) || Instant::now() >= deadline {
            break left;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    for cgroup in &cgroups {
        let _ = cgroup.remove_now();
    }
    format!(
        "{} task cgroups and {} recorded process groups: {signalled} signals in {rounds} rounds, {} ms{}",
        cgroups.len(),
        records.len(),
        began.elapsed().as_millis(),
        if left.is_empty() {
            String::new()
        } else {
            format!(
                "; still there after {} s: {left:?}",
                KILL_DEADLINE.as_secs()
            )
        }
    )
}

/// The task cgroups under the parents, one per name across the hierarchies.
fn task_cgroups(parents: &[PathBuf]) -> Vec<cgroup::TaskCgroup> {
    let mut by_name: BTreeMap<std::ffi::OsString, Vec<PathBuf>> = BTreeMap::new();
    for parent in parents {
        for dir in cgroup::task_dirs(parent) {
            if let Some(name) = dir.file_name() {
                by_name
                    .entry(name.to_owned())
                    .or_default()
                    .push(dir.clone());
            }
        }
    }
    by_name
        .into_values()
        .map(cgroup::TaskCgroup::from_dirs)
        .collect()
}

/// One log line on stderr (the agent points it at `DATA_DIR/watchdog.log`), stamped in UTC like
/// the agent's own log lines.
fn log(message: &str) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    eprintln!(
        "{} shoal watchdog[{}]: {message}",
        utc(now),
        std::process::id()
    );
}

/// `2026-12-02T17:05:16.175Z` for a time since the Unix epoch (the civil-from-days algorithm
/// of H. Hinnant's date library; no time crate for one log format).
fn utc(since_epoch: Duration) -> String {
    let secs = since_epoch.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let z = i64::try_from(days).unwrap_or(0) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60,
        since_epoch.subsec_millis()
    )
}

#[cfg(test)]
mod tests;
