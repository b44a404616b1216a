//! Health checks of local tasks (`docs/services.md`, §2): the probes the scheduler core asks
//! for with `ExecCommand::Checks`, each on its own timer, results sent back to the scheduler
//! task, which hands them to the core (`handle_check_result`). The core decides what a result
//! means; this module only probes.
//!
//! # What it promises
//! - One tokio task per check: it probes at once, then every `interval_ms` (a probe that runs
//!   late delays the next, never stacks), and sends each result on the channel given to
//!   [`Checker::new`].
//! - Every probe is bounded by the check's `timeout_ms` and then fails with
//!   `timed out after N ms`:
//!   - `http`: `GET http://IP:PORT/PATH`, no proxy, no redirects followed, a fresh connection
//!     each time; passes on the check's `status` if set, else on 200..=399, and fails with
//!     `HTTP 503` or the connection's error (`connection refused`);
//!   - `tcp`: a connect to `IP:PORT`;
//!   - `command`: run by the executor as the task's user, in the task's environment and
//!     directory, its process group killed at the timeout ([`Executor::run_check`]); exit 0
//!     passes, anything else fails with `exit 2: FIRST LINE OF OUTPUT`.
//! - [`Checker::start`] replaces the task's checks; [`Checker::stop`] ends them at once (a
//!   probe in flight is dropped, a command's process group is killed).
//!
//! # How to drive it
//! The scheduler task owns the [`Checker`], calls `start`/`stop` for the core's `Checks` and
//! `StopChecks` commands, and drains the result receiver into the core.

use std::collections::BTreeMap;
use std::error::Error as _;
use std::time::Duration;

use shoal_scheduler::{AttemptId, CheckResult, Probe, ResolvedCheck};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::executor::{CheckCommand, Executor};

/// How much later than its timeout a probe is abandoned if it did not end itself.
const SLACK: Duration = Duration::from_millis(500);

/// One probe's result, for the scheduler core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckReport {
    /// The task.
    pub task: AttemptId,
    /// The check's index in the job's `[[checks]]`.
    pub check: u8,
    /// What the probe found.
    pub result: CheckResult,
}

/// The running checks of this node's tasks.
#[derive(Debug)]
pub struct Checker {
    running: BTreeMap<AttemptId, Vec<JoinHandle<()>>>,
    http: reqwest::Client,
    executor: Option<Executor>,
    results: mpsc::Sender<CheckReport>,
}

impl Checker {
    /// A checker sending results on `results`; `command` checks run through `executor`
    /// (without one they fail, saying so).
    pub fn new(
        executor: Option<Executor>,
        results: mpsc::Sender<CheckReport>,
    ) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(0)
            .user_agent("shoal-health-check")
            .build()?;
        Ok(Checker {
            running: BTreeMap::new(),
            http,
            executor,
            results,
        })
    }

    /// Runs `checks` for `task`, replacing any it had.
    pub fn start(&mut self, task: AttemptId, checks: Vec<ResolvedCheck>) {
        self.stop(&task);
        let handles = checks
            .into_iter()
            .map(|check| {
                let probe = Prober {
                    task: task.clone(),
                    http: self.http.clone(),
                    executor: self.executor.clone(),
                };
                tokio::spawn(probe.run(check, self.results.clone()))
            })
            .collect();
        self.running.insert(task, handles);
    }

    /// Stops `task`'s checks, if any run.
    pub fn stop(&mut self, task: &AttemptId) {
        for handle in self.running.remove(task).into_iter().flatten() {
            handle.abort();
        }
    }

    /// Tasks whose checks run, sorted.
    #[must_use]
    pub fn tasks(&self) -> Vec<AttemptId> {
        self.running.keys().cloned().collect()
    }
}

impl Drop for Checker {
    fn drop(&mut self) {
        for handle in self.running.values().flatten() {
            handle.abort();
        }
    }
}

/// What one check's task needs.
struct Prober {
    task: AttemptId,
    http: reqwest::Client,
    executor: Option<Executor>,
}

impl Prober {
    async fn run(self, check: ResolvedCheck, results: mpsc::Sender<CheckReport>) {
        let mut every = tokio::time::interval(Duration::from_millis(check.interval_ms.max(1)));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            let timeout = Duration::from_millis(check.timeout_ms.max(1));
            // Each probe enforces the timeout itself (a command's group is killed then); this
            // outer bound, a little later, only catches a probe stuck elsewhere.
            let bound = timeout + SLACK;
            let result = match tokio::time::timeout(bound, self.probe(&check.probe, timeout)).await
            {
                Ok(Ok(())) => CheckResult::Pass,
                Ok(Err(why)) => CheckResult::Fail(why),
                Err(_) => CheckResult::Fail(format!("timed out after {} ms", check.timeout_ms)),
            };
            let report = CheckReport {
                task: self.task.clone(),
                check: check.index,
                result,
            };
            if results.send(report).await.is_err() {
                return; // the scheduler task is gone
            }
        }
    }

    async fn probe(&self, probe: &Probe, timeout: Duration) -> Result<(), String> {
        match probe {
            Probe::Http {
                ip,
                port,
                path,
                status,
            } => {
                let url = format!("http://{}{path}", std::net::SocketAddr::new(*ip, *port));
                http_probe(&self.http, &url, *status, timeout).await
            }
            Probe::Tcp { ip, port } => {
                match tokio::time::timeout(timeout, tokio::net::TcpStream::connect((*ip, *port)))
                    .await
                {
                    Ok(connected) => connected.map(drop).map_err(|e| io_reason(&e)),
                    Err(_) => Err(format!("timed out after {} ms", timeout.as_millis())),
                }
            }
            Probe::Command {
                command,
                args,
                env,
                workdir,
                user,
            } => {
                let Some(executor) = &self.executor else {
                    return Err("command checks need the process executor".into());
                };
                let check = CheckCommand {
                    command: command.clone(),
                    args: args.clone(),
                    env: env.clone(),
                    workdir: workdir.clone(),
                    user: user.clone(),
                };
                executor.run_check(&self.task, check, timeout).await
            }
        }
    }
}

/// `GET url`: passes on `status` if set, else on 200..=399.
async fn http_probe(
    client: &reqwest::Client,
    url: &str,
    status: Option<u16>,
    timeout: Duration,
) -> Result<(), String> {
    let response = client
        .get(url)
        .timeout(timeout)
        .send()
        .await
        .map_err(|e| reqwest_reason(&e, timeout))?;
    let got = response.status().as_u16();
    let passes = match status {
        Some(want) => got == want,
        None => (200..=399).contains(&got),
    };
    if passes {
        Ok(())
    } else {
        Err(format!("HTTP {got}"))
    }
}

/// The innermost cause of a request error (`connection refused`), which is what a reader
/// needs; reqwest's own message names only the URL.
fn reqwest_reason(e: &reqwest::Error, timeout: Duration) -> String {
    if e.is_timeout() {
        return format!("timed out after {} ms", timeout.as_millis());
    }
    let mut source: Option<&dyn std::error::Error> = e.source();
    let mut last = None;
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return io_reason(io);
        }
        last = Some(s.to_string());
        source = s.source();
    }
    last.unwrap_or_else(|| e.to_string())
}

/// A socket error as a short phrase: `connection refused`.
fn io_reason(e: &std::io::Error) -> String {
    use std::io::ErrorKind;
    match e.kind() {
        ErrorKind::ConnectionRefused => "connection refused".into(),
        ErrorKind::ConnectionReset => "connection reset".into(),
        ErrorKind::TimedOut => "connect timed out".into(),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn task() -> AttemptId {
        AttemptId {
            job: "web".into(),
            incarnation: 1,
            slot: 0,
            attempt: 1,
            placer: "n1".into(),
        }
    }

    /// A one-request-at-a-time HTTP server answering every request with `status`.
    async fn serve(status: u16) -> (u16, JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                // A redirect points at a port nobody listens on: followed, it would fail.
                let location = if (300..400).contains(&status) {
                    "location: http://127.0.0.1:1/\r\n"
                } else {
                    ""
                };
                let reply = format!(
                    "HTTP/1.1 {status} X\r\n{location}content-length: 0\r\nconnection: close\r\n\r\n"
                );
                let _ = s.write_all(reply.as_bytes()).await;
            }
        });
        (port, server)
    }

    fn check(index: u8, probe: Probe) -> ResolvedCheck {
        ResolvedCheck {
            index,
            name: format!("c{index}"),
            probe,
            interval_ms: 50,
            timeout_ms: 500,
        }
    }

    async fn next(rx: &mut mpsc::Receiver<CheckReport>, index: u8) -> CheckResult {
        loop {
            let r = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .expect("a result within 10 s")
                .expect("open");
            if r.check == index {
                return r.result;
            }
        }
    }

    #[tokio::test]
    async fn http_and_tcp_probes_pass_and_fail_with_a_reason() {
        let (ok_port, ok) = serve(204).await;
        let (bad_port, bad) = serve(503).await;
        let (moved_port, moved) = serve(302).await;
        let (missing_port, missing) = serve(404).await;
        // A port nobody listens on: bind, note it, close.
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let ip = std::net::IpAddr::from([127, 0, 0, 1]);
        let (tx, mut rx) = mpsc::channel(64);
        let mut checker = Checker::new(None, tx).unwrap();
        let http = |port, status| Probe::Http {
            ip,
            port,
            path: "/healthz".into(),
            status,
        };
        checker.start(
            task(),
            vec![
                check(0, http(ok_port, None)),
                check(1, http(bad_port, None)),
                check(2, http(ok_port, Some(200))),
                check(3, Probe::Tcp { ip, port: ok_port }),
                check(4, Probe::Tcp { ip, port: closed }),
                check(5, http(closed, None)),
                check(6, http(bad_port, Some(503))),
                check(7, http(moved_port, None)),
                check(8, http(missing_port, None)),
            ],
        );
        assert_eq!(next(&mut rx, 0).await, CheckResult::Pass);
        assert_eq!(next(&mut rx, 1).await, CheckResult::Fail("HTTP 503".into()));
        assert_eq!(next(&mut rx, 2).await, CheckResult::Fail("HTTP 204".into()));
        assert_eq!(next(&mut rx, 3).await, CheckResult::Pass);
        assert_eq!(
            next(&mut rx, 4).await,
            CheckResult::Fail("connection refused".into())
        );
        assert_eq!(
            next(&mut rx, 5).await,
            CheckResult::Fail("connection refused".into())
        );
        assert_eq!(next(&mut rx, 6).await, CheckResult::Pass);
        // 200..=399 by default: a redirect passes, and is not followed.
        assert_eq!(next(&mut rx, 7).await, CheckResult::Pass);
        assert_eq!(next(&mut rx, 8).await, CheckResult::Fail("HTTP 404".into()));
        assert_eq!(
            next(&mut rx, 7 - 7).await,
            CheckResult::Pass,
            "probes repeat"
        );
        // Stopping ends every probe: the channel closes once the tasks are gone.
        checker.stop(&task());
        assert!(checker.tasks().is_empty());
        drop(checker);
        let drained = tokio::time::timeout(Duration::from_secs(10), async {
            while rx.recv().await.is_some() {}
        })
        .await;
        assert!(drained.is_ok(), "every sender dropped after stop");
        for server in [ok, bad, moved, missing] {
            server.abort();
        }
    }

    #[tokio::test]
    async fn a_probe_slower_than_its_timeout_fails() {
        // Accepts and never answers.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, mut rx) = mpsc::channel(8);
        let mut checker = Checker::new(None, tx).unwrap();
        let mut slow = check(
            0,
            Probe::Http {
                ip: [127, 0, 0, 1].into(),
                port,
                path: "/".into(),
                status: None,
            },
        );
        slow.timeout_ms = 100;
        checker.start(task(), vec![slow]);
        assert_eq!(
            next(&mut rx, 0).await,
            CheckResult::Fail("timed out after 100 ms".into())
        );
        drop(listener);
    }
}
