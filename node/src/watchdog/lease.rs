//! The agent's side of the watchdog: take over the running watchdog or start one, renew the
//! lease every [`WatchdogConfig::renew_interval`], start a new watchdog if the one it holds
//! goes away, and end the lease cleanly on shutdown.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::process::Child;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::{Hello, LOG, SOCKET};

/// How the agent runs its watchdog.
#[derive(Debug, Clone)]
pub struct WatchdogConfig {
    /// The program started as `PROGRAM watchdog --data-dir DIR`: the `shoal` binary.
    pub program: PathBuf,
    /// How long the agent may go without renewing before its tasks are killed.
    pub orphan_grace: Duration,
    /// How often the lease is renewed.
    pub renew_interval: Duration,
    /// How long to wait for a new watchdog to listen; it first waits for a previous one that
    /// is still killing (at most its 30 s kill deadline).
    pub start_timeout: Duration,
    /// How long a clean shutdown waits for the watchdog's `bye`.
    pub stop_timeout: Duration,
}

impl WatchdogConfig {
    /// The running binary as the watchdog, with `orphan_grace` and default periods.
    pub fn this_binary(orphan_grace: Duration) -> anyhow::Result<WatchdogConfig> {
        let program = std::env::current_exe()
            .context("cannot find this program's path to start the watchdog")?;
        Ok(WatchdogConfig {
            program,
            orphan_grace,
            renew_interval: Duration::from_secs(1),
            start_timeout: Duration::from_secs(40),
            stop_timeout: Duration::from_secs(40),
        })
    }
}

/// The lease, held for the agent's life. Dropping it stops renewing once the runtime stops;
/// [`Lease::release`] ends it cleanly.
#[derive(Debug)]
pub struct Lease {
    stop: oneshot::Sender<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Lease {
    /// Stops renewing without a word, as a crashed agent would (tests).
    #[cfg(test)]
    pub(crate) fn abandon(self) {
        self.task.abort();
    }

    /// Tells the watchdog the agent stops cleanly (it kills what is left and exits) and waits
    /// for its answer, at most [`WatchdogConfig::stop_timeout`].
    pub async fn release(self) {
        let (done, wait) = oneshot::channel();
        if self.stop.send(done).is_ok() {
            let _ = wait.await;
        }
        let _ = self.task.await;
    }
}

/// Takes over the watchdog of `data_dir` if one runs and holds no expired lease, or starts
/// one; then renews the lease in a task of its own. The watchdog guards the pid records under
/// `tasks_dir` and the task cgroups under `cgroups` (one parent per hierarchy).
pub async fn attach(
    config: WatchdogConfig,
    data_dir: &Path,
    tasks_dir: &Path,
    cgroups: Vec<PathBuf>,
) -> anyhow::Result<Lease> {
    let absolute = |p: &Path| {
        std::path::absolute(p).with_context(|| format!("cannot resolve {}", p.display()))
    };
    let data_dir = absolute(data_dir)?;
    let hello = Hello {
        agent_pid: std::process::id(),
        orphan_grace_ms: u64::try_from(config.orphan_grace.as_millis()).unwrap_or(u64::MAX),
        tasks_dir: absolute(tasks_dir)?,
        cgroups,
    };
    let line = serde_json::to_string(&hello)?;
    let (conn, child) = connect_or_start(&config, &data_dir, &line).await?;
    let (stop, stop_rx) = oneshot::channel();
    let task = tokio::spawn(renew(config, data_dir, line, conn, child, stop_rx));
    Ok(Lease { stop, task })
}

/// One lease connection.
#[derive(Debug)]
struct Connection {
    lines: Lines<BufReader<OwnedReadHalf>>,
    writer: OwnedWriteHalf,
}

impl Connection {
    async fn send(&mut self, line: &str) -> std::io::Result<()> {
        let bytes = format!("{line}\n");
        let write = self.writer.write_all(bytes.as_bytes());
        tokio::time::timeout(Duration::from_secs(2), write)
            .await
            .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
    }

    async fn answer(&mut self, within: Duration) -> Option<String> {
        tokio::time::timeout(within, self.lines.next_line())
            .await
            .ok()?
            .ok()?
    }
}

/// Renews until told to stop; a lost watchdog is replaced.
async fn renew(
    config: WatchdogConfig,
    data_dir: PathBuf,
    hello: String,
    mut conn: Connection,
    mut child: Option<Child>,
    mut stop: oneshot::Receiver<oneshot::Sender<()>>,
) {
    let mut tick = tokio::time::interval(config.renew_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stop_open = true;
    loop {
        let lost = tokio::select! {
            _ = tick.tick() => conn.send("renew").await.err().map(|e| e.to_string()),
            line = conn.lines.next_line() => match line {
                Ok(Some(_)) => None,
                Ok(None) => Some("it closed the connection".to_owned()),
                Err(e) => Some(e.to_string()),
            },
            status = wait_child(&mut child) => Some(format!("it exited ({status})")),
            asked = &mut stop, if stop_open => match asked {
                Ok(done) => {
                    let _ = conn.send("stop").await;
                    let bye = conn.answer(config.stop_timeout).await;
                    if bye.as_deref() != Some("bye") {
                        tracing::warn!("the watchdog did not confirm the clean stop");
                    }
                    let _ = done.send(());
                    return;
                }
                Err(_) => {
                    stop_open = false;
                    None
                }
            },
        };
        let Some(why) = lost else { continue };
        tracing::warn!(%why, "lost the watchdog; starting another");
        (conn, child) = loop {
            match connect_or_start(&config, &data_dir, &hello).await {
                Ok(found) => break found,
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "cannot start a watchdog; tasks are unguarded until one starts");
                    tokio::time::sleep(config.renew_interval).await;
                }
            }
        };
    }
}

async fn wait_child(child: &mut Option<Child>) -> String {
    match child.as_mut() {
        Some(c) => {
            let status = c.wait().await;
            *child = None;
            status.map_or_else(|e| e.to_string(), |s| s.to_string())
        }
        None => std::future::pending().await,
    }
}

/// Takes over a live watchdog, or starts one and waits until it listens.
async fn connect_or_start(
    config: &WatchdogConfig,
    data_dir: &Path,
    hello: &str,
) -> anyhow::Result<(Connection, Option<Child>)> {
    if let Some(conn) = connect(data_dir, hello).await {
        tracing::info!(
            "took over the running watchdog: tasks of the previous incarnation keep running"
        );
        return Ok((conn, None));
    }
    let mut child = spawn(config, data_dir)?;
    let until = tokio::time::Instant::now() + config.start_timeout;
    loop {
        if let Some(conn) = connect(data_dir, hello).await {
            tracing::info!(pid = child.id(), grace = ?config.orphan_grace, "watchdog started");
            return Ok((conn, Some(child)));
        }
        if let Ok(Some(status)) = child.try_wait() {
            bail!(
                "the watchdog exited at start ({status}); its log {}:\n{}",
                data_dir.join(LOG).display(),
                log_tail(&data_dir.join(LOG))
            );
        }
        if tokio::time::Instant::now() >= until {
            let _ = child.start_kill();
            bail!(
                "the watchdog did not listen within {:?}; its log {}:\n{}",
                config.start_timeout,
                data_dir.join(LOG).display(),
                log_tail(&data_dir.join(LOG))
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Connects and says hello; `Some` once the watchdog answered `ok`.
async fn connect(data_dir: &Path, hello: &str) -> Option<Connection> {
    let (path, _dir) = socket_path(data_dir);
    let stream = UnixStream::connect(&path).await.ok()?;
    let (reader, writer) = stream.into_split();
    let mut conn = Connection {
        lines: BufReader::new(reader).lines(),
        writer,
    };
    conn.send(hello).await.ok()?;
    (conn.answer(Duration::from_secs(5)).await.as_deref() == Some("ok")).then_some(conn)
}

/// `DATA_DIR/watchdog.sock`, or the same through `/proc/self/fd/N/` when the path is longer
/// than a unix socket address holds (the open directory is returned to keep N valid).
fn socket_path(data_dir: &Path) -> (PathBuf, Option<std::fs::File>) {
    let direct = data_dir.join(SOCKET);
    if direct.as_os_str().len() < 100 {
        return (direct, None);
    }
    match std::fs::File::open(data_dir) {
        Ok(dir) => (
            PathBuf::from(format!("/proc/self/fd/{}/{SOCKET}", dir.as_raw_fd())),
            Some(dir),
        ),
        Err(_) => (direct, None),
    }
}

/// Starts `PROGRAM watchdog --data-dir DIR` with an empty environment (but one allocator
/// setting), stdin from /dev/null and its output appended to `DATA_DIR/watchdog.log`.
fn spawn(config: &WatchdogConfig, data_dir: &Path) -> anyhow::Result<Child> {
    let log_path = data_dir.join(LOG);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("cannot open the watchdog log {}", log_path.display()))?;
    let log_err = log.try_clone()?;
    tokio::process::Command::new(&config.program)
        .arg("watchdog")
        .arg("--data-dir")
        .arg(data_dir)
        .env_clear()
        // mimalloc commits its arenas eagerly, and with transparent huge pages each thread's
        // heap then costs a 2 MiB page: 11 MiB resident instead of 5 MiB for three threads.
        .env("MIMALLOC_ARENA_EAGER_COMMIT", "0")
        .current_dir(data_dir)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .kill_on_drop(false)
        .spawn()
        .with_context(|| format!("cannot start the watchdog {}", config.program.display()))
}

/// The last lines of the watchdog's log, for errors.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(5)..].join("\n")
}
