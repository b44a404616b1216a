//! A chaos run: real `shoal agent` processes, one per network namespace ([`crate::net`]), the
//! recorder and its `/proc` sampler ([`crate::history`]), the faults, and the end of the run:
//! final views, the checkers, the history file and the figure line.
//!
//! Driving it, like an operator's script: [`Cluster::start`], submit jobs and wait for them
//! ([`Cluster::wait_at_count`]), inject faults (each recorded with its time), then
//! [`Cluster::finish`] with what the scenario promises. Every wait has a deadline; the waits
//! that judge the system (not the setup) never panic: what they wait for is judged afterwards
//! by the checkers, over the history, with the measured figure.
//!
//! The agents' HTTP APIs listen on 127.0.0.1 inside their namespaces (no token needed, and
//! unreachable from the other nodes, so a partition never cuts the test off from an agent): a
//! request runs on a short-lived thread that first enters the node's namespace (`setns`).
//!
//! Teardown ([`Drop`], also on panic): the sampler stops, every process in the run's
//! namespaces is SIGKILLed by pid, the namespaces and tmpfs mounts go, and the run's directory
//! (agent logs, `history.json`) is removed only when the test passed; otherwise its path is
//! printed.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sched::CloneFlags;
use serde_json::{Value, json};

use crate::checkers::{
    Bounds, Expect, Recovery, at_count_since, finally_views_match_processes, judge,
};
use crate::common::{HttpAnswer, http_request_with_token};
use crate::history::{FinalView, History, JobSeen, NodeInfo, Op, Recorder, Request, Sampler};
use crate::net::{Net, NodeNs, check_prerequisites};

/// Gossip port of every agent (each namespace has its own stack, so one port fits all).
const GOSSIP_PORT: u16 = 7946;
/// Setup steps (an agent starting, the cluster forming, a job starting) that take longer than
/// this are a broken setup, reported as such.
pub const SETUP: Duration = Duration::from_secs(60);
/// How long the services must hold their count before a run ends ([`Bounds::stable_ms`]).
pub const STABLE: Duration = Duration::from_millis(Bounds::STABLE_MS);
/// How long a run watches after the last fault or heal, at least.
pub const OBSERVE: Duration = Duration::from_secs(10);

/// How a run's nodes are made.
#[derive(Debug, Clone)]
pub struct Options {
    /// Number of agents.
    pub nodes: usize,
    /// `--cpu` of every agent.
    pub cpu_millicores: u64,
    /// `--memory` of every agent.
    pub memory_mib: u64,
    /// Nodes whose data dir is a tmpfs of this many MiB (the full-disk scenario).
    pub tmpfs_mib: Vec<(usize, u64)>,
    /// Every agent binds gossip to `0.0.0.0` and advertises its namespace's address
    /// (`--bind 0.0.0.0:P --advertise ADDR:P`), as hosts with several interfaces are set up.
    pub bind_every_address: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            nodes: 5,
            cpu_millicores: 2000,
            memory_mib: 2048,
            tmpfs_mib: Vec::new(),
            bind_every_address: false,
        }
    }
}

/// One agent of the run.
#[derive(Debug)]
pub struct Node {
    /// `n1-<run>`, `n2-<run>`, … ([`node_name`]).
    pub name: String,
    /// Its namespace and address.
    pub ns: NodeNs,
    /// `--data-dir`.
    pub data_dir: PathBuf,
    /// The running agent (`None` after a `kill -9`, until a restart).
    pub child: Option<Child>,
    /// Its HTTP API inside the namespace.
    pub http: Option<SocketAddr>,
    /// SIGSTOPped and not yet continued.
    pub paused: bool,
}

impl Node {
    /// The agent's pid, while it runs.
    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.id() as i32)
    }

    fn gossip(&self) -> SocketAddr {
        SocketAddr::new(self.ns.addr.into(), GOSSIP_PORT)
    }
}

/// A run in progress.
#[derive(Debug)]
pub struct Cluster {
    /// The test's name.
    pub scenario: String,
    /// The history and its clock.
    pub rec: Recorder,
    /// The agents, in order (`nodes[0]` is `n1-<run>`, called n1 in the scenarios' words).
    pub nodes: Vec<Node>,
    /// Scenario-specific violations (a wrong status, a restarted agent), judged with the rest.
    pub findings: Vec<String>,
    options: Options,
    sampler: Option<Sampler>,
    net: Option<Net>,
    dir: PathBuf,
    key: PathBuf,
    pub(crate) mounts: Vec<PathBuf>,
    pub(crate) fillers: BTreeMap<usize, PathBuf>,
    /// What the last [`Cluster::settle`] measured: from the fault's end it was given to merged
    /// views.
    views_merged: Recovery,
    finished: bool,
}

impl Cluster {
    /// Creates the namespaces, starts the agents and waits until every agent sees every node
    /// alive with its resources.
    pub fn start(scenario: &str, options: Options) -> Cluster {
        if let Err(e) = check_prerequisites() {
            panic!("{e}");
        }
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "chaos-{scenario}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let key = crate::common::keygen(&dir, "cluster.key");
        let net = Net::create(options.nodes);
        let nodes: Vec<Node> = net
            .nodes
            .iter()
            .enumerate()
            .map(|(i, ns)| Node {
                name: node_name(i, &net.run),
                ns: ns.clone(),
                data_dir: dir.join(node_name(i, &net.run)),
                child: None,
                http: None,
                paused: false,
            })
            .collect();
        let infos = nodes
            .iter()
            .map(|n| NodeInfo {
                name: n.name.clone(),
                addr: n.ns.addr.to_string(),
                cpu_millicores: options.cpu_millicores,
                memory_mib: options.memory_mib,
            })
            .collect();
        let rec = Recorder::new(scenario, infos);
        let namespaces = nodes.iter().map(|n| (n.ns.inode, n.name.clone())).collect();
        let sampler = Sampler::start(rec.clone(), namespaces);
        let mut c = Cluster {
            scenario: scenario.to_string(),
            rec,
            nodes,
            findings: Vec::new(),
            options: options.clone(),
            sampler: Some(sampler),
            net: Some(net),
            dir,
            key,
            mounts: Vec::new(),
            fillers: BTreeMap::new(),
            views_merged: Recovery::NotMeasured,
            finished: false,
        };
        eprintln!("chaos run {scenario}: {}", c.dir.display());
        for &(i, mib) in &options.tmpfs_mib {
            c.mount_tmpfs(i, mib);
        }
        for i in 0..options.nodes {
            c.spawn_agent(i);
        }
        for i in 0..options.nodes {
            c.require(
                &format!("{} sees every node alive", c.nodes[i].name),
                || c.alive_seen_by(i).filter(|n| *n == options.nodes),
            );
        }
        c.rec.event("cluster formed");
        c
    }

    pub(crate) fn net(&self) -> &Net {
        self.net.as_ref().expect("the network lives until the end")
    }

    fn mount_tmpfs(&mut self, i: usize, mib: u64) {
        let path = self.nodes[i].data_dir.clone();
        std::fs::create_dir_all(&path).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(&path)
            .output()
            .expect("mount runs");
        assert!(
            out.status.success(),
            "cannot mount a {mib} MiB tmpfs on {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        self.mounts.push(path);
    }

    /// Starts node `i`'s agent in its namespace on its data dir, joining the other nodes,
    /// and waits until it wrote its addresses.
    pub(crate) fn spawn_agent(&mut self, i: usize) {
        let node = &self.nodes[i];
        let addresses = node.data_dir.join("addresses.json");
        let _ = std::fs::remove_file(&addresses);
        let log_path = self.dir.join(format!("{}.log", node.name));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .unwrap();
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", node.ns.path().display()))
            .arg(env!("CARGO_BIN_EXE_shoal"))
            .args(["agent", "--name", &node.name]);
        if self.options.bind_every_address {
            cmd.args(["--bind", &format!("0.0.0.0:{GOSSIP_PORT}")])
                .args(["--advertise", &node.gossip().to_string()]);
        } else {
            cmd.args(["--bind", &node.gossip().to_string()]);
        }
        cmd.args(["--http", "127.0.0.1:0"])
            .args(["--dns", "127.0.0.1:0"])
            .args(["--cpu", &self.options.cpu_millicores.to_string()])
            .args(["--memory", &self.options.memory_mib.to_string()])
            .arg("--cluster-key-file")
            .arg(&self.key)
            .arg("--data-dir")
            .arg(&node.data_dir)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        // Join through every running agent: the first one starts alone, a restarted one may
        // find any of the others.
        for other in self.nodes.iter().filter(|o| o.child.is_some()) {
            cmd.args(["--join", &other.gossip().to_string()]);
        }
        let child = cmd.spawn().expect("nsenter starts the agent");
        let pid = child.id();
        self.nodes[i].child = Some(child);
        self.nodes[i].paused = false;
        let end = Instant::now() + SETUP;
        let info: Value = loop {
            if let Some(info) = std::fs::read_to_string(&addresses)
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok())
            {
                break info;
            }
            let exited = self.nodes[i]
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() > end {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                panic!(
                    "agent {} not ready within {SETUP:?} (exit: {exited:?}); its log:\n{log}",
                    self.nodes[i].name
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        self.nodes[i].http = info["http"].as_str().and_then(|a| a.parse().ok());
        self.rec.event(format!(
            "agent {} started (pid {pid}, generation {})",
            self.nodes[i].name, info["generation"]
        ));
    }

    // ---- requests -------------------------------------------------------------------------

    /// An HTTP request to node `i`'s API, from inside its namespace.
    pub fn http(
        &self,
        i: usize,
        method: &str,
        path: &str,
        body: Option<&str>,
        timeout: Duration,
    ) -> Result<HttpAnswer, String> {
        let addr = self.nodes[i]
            .http
            .ok_or_else(|| format!("{} has no API address", self.nodes[i].name))?;
        // The agent created its API token at its first start; mutating requests need it.
        let token = std::fs::read_to_string(self.nodes[i].data_dir.join("http.token"))
            .ok()
            .map(|t| t.trim().to_string());
        in_netns(&self.nodes[i].ns.path(), || {
            http_request_with_token(addr, method, path, body, timeout, token.as_deref())
        })
    }

    /// Whether node `i` says it reaches a majority (`shoal_quorum_majority` in its metrics).
    pub fn holds_majority(&self, i: usize) -> Option<bool> {
        let a = self
            .http(i, "GET", "/v1/metrics", None, Duration::from_secs(5))
            .ok()?;
        let value = a
            .body
            .lines()
            .find_map(|l| l.strip_prefix("shoal_quorum_majority "))?;
        Some(value.trim() == "1")
    }

    fn get_json(&self, i: usize, path: &str) -> Option<Value> {
        let a = self
            .http(i, "GET", path, None, Duration::from_secs(5))
            .ok()?;
        (a.status == 200)
            .then(|| serde_json::from_str(&a.body).ok())
            .flatten()
    }

    /// `POST /v1/jobs` at node `i`, recorded with its answer.
    pub fn submit(&self, i: usize, spec: &Value) -> Request {
        let job = spec["id"].as_str().unwrap_or_default().to_string();
        self.request(i, Op::Submit, &job, Some(spec.clone()))
    }

    /// `DELETE /v1/jobs/{id}` at node `i`, recorded with its answer.
    pub fn stop_job(&self, i: usize, job: &str) -> Request {
        self.request(i, Op::Stop, job, None)
    }

    fn request(&self, i: usize, op: Op, job: &str, spec: Option<Value>) -> Request {
        let sent_ms = self.rec.now_ms();
        // A submission may wait 10 s for a peer's acknowledgement before answering 202.
        let timeout = Duration::from_secs(30);
        let answer = match op {
            Op::Submit => {
                let body = spec.as_ref().map(Value::to_string);
                self.http(i, "POST", "/v1/jobs", body.as_deref(), timeout)
            }
            Op::Stop => self.http(i, "DELETE", &format!("/v1/jobs/{job}"), None, timeout),
        };
        let r = Request {
            op,
            node: self.nodes[i].name.clone(),
            job: job.to_string(),
            spec,
            sent_ms,
            answered_ms: self.rec.now_ms(),
            status: answer.as_ref().ok().map(|a| a.status),
            body: match &answer {
                Ok(a) => a.body.clone(),
                Err(e) => e.clone(),
            },
        };
        self.rec.event(format!(
            "{:?} {job} at {} -> {} {}",
            op,
            r.node,
            r.status.map_or("no answer".to_string(), |s| s.to_string()),
            r.body.trim()
        ));
        self.rec.request(r.clone());
        r
    }

    /// `GET /v1/jobs/{id}` at node `i`.
    pub fn job_view(&self, i: usize, job: &str) -> Option<Value> {
        self.get_json(i, &format!("/v1/jobs/{job}"))
    }

    /// Every agent that answers lists every agent that answers as alive.
    pub fn views_merged(&self) -> bool {
        let seen: Vec<usize> = (0..self.nodes.len())
            .filter_map(|i| self.alive_seen_by(i))
            .collect();
        !seen.is_empty() && seen.iter().all(|&n| n == seen.len())
    }

    /// How many nodes node `i` lists as alive with this run's capacity.
    pub fn alive_seen_by(&self, i: usize) -> Option<usize> {
        let nodes = self.get_json(i, "/v1/nodes")?;
        Some(
            nodes
                .as_array()?
                .iter()
                .filter(|n| {
                    n["status"] == "alive"
                        && n["resources"]["capacity"]["cpu_millicores"]
                            == self.options.cpu_millicores
                })
                .count(),
        )
    }

    // ---- what runs --------------------------------------------------------------------------

    /// The task processes alive at the latest sample: (node, job, slot, pid).
    pub fn live_tasks(&self) -> Vec<(String, String, u32, i32)> {
        let h = self.rec.lock();
        let end = h.end_ms();
        h.tasks
            .iter()
            .filter(|t| t.last_ms == end)
            .map(|t| (t.node.clone(), t.job.clone(), t.slot, t.pid))
            .collect()
    }

    /// Live processes of `job`, per node.
    pub fn per_node(&self, job: &str) -> BTreeMap<String, usize> {
        let mut per = BTreeMap::new();
        for (node, j, _, _) in self.live_tasks() {
            if j == job {
                *per.entry(node).or_default() += 1;
            }
        }
        per
    }

    /// Waits (≤ `deadline`) until every job in `jobs` has run one process per slot, and no
    /// more, for the last `stable` of the samples (the same measure the checkers use), judged
    /// only on samples taken after this call. Returns whether it happened; never panics (the
    /// checkers judge the history).
    pub fn wait_at_count(
        &self,
        jobs: &[(&str, u32)],
        stable: Duration,
        deadline: Duration,
    ) -> bool {
        let now = self.rec.now_ms();
        self.wait_stable(jobs, stable, now, now + deadline.as_millis() as u64)
    }

    /// Waits until the services have settled after a fault or heal at `from_ms`: at count for
    /// the last [`STABLE`], and observed for at least [`OBSERVE`] after `from_ms` (a fencing
    /// kill comes seconds after a heal, so a run must not end before it would). Gives up at
    /// `from_ms` + the back-to-count bound + [`STABLE`]: past that the checkers fail the run
    /// anyway. Returns whether it settled.
    pub fn settle(&mut self, jobs: &[(&str, u32)], from_ms: u64) -> bool {
        let bounds = Bounds::default();
        let give_up_merge = Duration::from_millis(bounds.back_to_count_ms);
        // Fencing after a heal happens once the sides' views have merged again, which can take
        // longer than OBSERVE (members marked down come back through announces): observe at
        // least until every running agent lists every running agent alive, plus STABLE.
        let merged = self.wait_until(give_up_merge, || {
            self.views_merged().then(|| self.rec.now_ms())
        });
        self.views_merged = merged.map_or(Recovery::Never, |at| {
            Recovery::After(at.saturating_sub(from_ms))
        });
        let merged_at = merged.unwrap_or(0);
        let not_before =
            (from_ms + OBSERVE.as_millis() as u64).max(merged_at + STABLE.as_millis() as u64);
        let give_up = (from_ms + bounds.back_to_count_ms + STABLE.as_millis() as u64)
            .max(not_before + STABLE.as_millis() as u64);
        self.wait_stable(jobs, STABLE, not_before, give_up)
    }

    fn wait_stable(
        &self,
        jobs: &[(&str, u32)],
        stable: Duration,
        not_before_ms: u64,
        give_up_ms: u64,
    ) -> bool {
        let stable_ms = stable.as_millis() as u64;
        // Every loop sleeps one sample period, and the clock passes `give_up_ms`.
        loop {
            let done = {
                let h = self.rec.lock();
                h.end_ms() > not_before_ms
                    && jobs.iter().all(|(job, count)| {
                        at_count_since(&h, job, *count).is_some_and(|s| h.end_ms() - s >= stable_ms)
                    })
            };
            if done {
                return true;
            }
            if self.rec.now_ms() >= give_up_ms {
                return false;
            }
            std::thread::sleep(crate::history::SAMPLE_PERIOD);
        }
    }

    /// Like [`Cluster::wait_at_count`], for the setup: panics when the jobs do not start.
    pub fn require_at_count(&self, jobs: &[(&str, u32)]) {
        let ok = self.wait_at_count(jobs, Duration::from_secs(2), SETUP);
        assert!(
            ok,
            "setup: {jobs:?} not at count within {SETUP:?}; running: {:?}; history kept in {}",
            self.live_tasks(),
            self.dir.display()
        );
        self.rec.event(format!("at count: {jobs:?}"));
    }

    /// Polls `probe` every 100 ms until it returns `Some`, or `None` at the deadline.
    pub fn wait_until<T>(
        &self,
        deadline: Duration,
        mut probe: impl FnMut() -> Option<T>,
    ) -> Option<T> {
        let end = Instant::now() + deadline;
        loop {
            if let Some(v) = probe() {
                return Some(v);
            }
            if Instant::now() >= end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// [`Cluster::wait_until`] for the setup: panics with `what` at the deadline.
    pub fn require<T>(&self, what: &str, probe: impl FnMut() -> Option<T>) -> T {
        match self.wait_until(SETUP, probe) {
            Some(v) => v,
            None => panic!(
                "setup: timed out after {SETUP:?} waiting until {what}; run dir {}",
                self.dir.display()
            ),
        }
    }

    /// Lets the fault last: the scenario's own duration, not a wait for a condition.
    pub fn hold(&self, d: Duration) {
        std::thread::sleep(d);
    }

    /// Records a scenario-specific violation when `ok` is false.
    pub fn check(&mut self, ok: bool, violation: impl Into<String>) {
        if !ok {
            let v = violation.into();
            self.rec.event(format!("VIOLATION: {v}"));
            self.findings.push(v);
        }
    }

    /// Whether node `i`'s agent is still the process the test started (not exited).
    pub fn agent_alive(&mut self, i: usize) -> bool {
        matches!(
            self.nodes[i].child.as_mut().map(|c| c.try_wait()),
            Some(Ok(None))
        )
    }

    // ---- the end ----------------------------------------------------------------------------

    /// Collects every running agent's jobs (waiting ≤ 20 s for the views to agree on the
    /// acknowledged jobs and with the processes), stops the sampler, judges the history, writes `history.json`,
    /// prints the figure line and panics with every violation.
    pub fn finish(mut self, expect: Expect, bounds: Bounds) {
        let live: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].child.is_some() && !self.nodes[i].paused)
            .collect();
        let wanted = self.settled_jobs(expect.accepted_is_acknowledged);
        // A view may lag the processes by a moment: give the views 20 s to agree with the
        // acknowledgements and with what runs before they are judged.
        let views = self
            .wait_until(Duration::from_secs(20), || {
                let views = self.final_views(&live);
                let mut h = self.rec.snapshot();
                h.final_views = views.clone();
                (views.values().all(|v| agrees(v, &wanted))
                    && finally_views_match_processes(&h).is_empty())
                .then_some(views)
            })
            .unwrap_or_else(|| self.final_views(&live));
        self.rec.event("final views collected");
        let sampler_ok = self.sampler.take().is_none_or(|mut s| s.stop());
        self.check(sampler_ok, "the /proc sampler died: the history ends early");
        let mut history = self.rec.snapshot();
        history.final_views = views;
        let mut verdict = judge(&history, &expect, &bounds);
        verdict.figures.views_merged = self.views_merged;
        verdict.violations.extend(self.findings.iter().cloned());
        let line = verdict.figure_line(&self.scenario);
        let path = self.write_history(&history, &verdict.violations, &line);
        println!("{line}");
        eprintln!("{line}");
        append_figure_line(&line);
        self.finished = true;
        if !verdict.violations.is_empty() {
            panic!(
                "{} violation(s) in {}:\n- {}\nhistory: {}",
                verdict.violations.len(),
                self.scenario,
                verdict.violations.join("\n- "),
                path.display()
            );
        }
    }

    /// Acknowledged, unstopped jobs (must be listed, not stopped) and `200`-stopped jobs
    /// (must be absent or stopped): what the final views should agree on.
    fn settled_jobs(&self, accepted_too: bool) -> BTreeMap<String, bool> {
        let h = self.rec.lock();
        let mut wanted = BTreeMap::new();
        for r in &h.requests {
            let ok = r.status == Some(200) || (accepted_too && r.status == Some(202));
            match r.op {
                Op::Submit if ok && h.stop_sent_ms(&r.job).is_none() => {
                    wanted.insert(r.job.clone(), false);
                }
                Op::Stop if r.status == Some(200) => {
                    wanted.insert(r.job.clone(), true);
                }
                _ => {}
            }
        }
        wanted
    }

    fn final_views(&self, live: &[usize]) -> BTreeMap<String, FinalView> {
        live.iter()
            .map(|&i| {
                let view = match self.http(i, "GET", "/v1/jobs", None, Duration::from_secs(5)) {
                    Ok(a) if a.status == 200 => match serde_json::from_str::<Vec<Value>>(&a.body) {
                        Ok(jobs) => FinalView::Jobs(jobs.iter().map(job_seen).collect()),
                        Err(e) => FinalView::NoAnswer(format!("unreadable job list: {e}")),
                    },
                    Ok(a) => FinalView::NoAnswer(format!("{} {}", a.status, a.body)),
                    Err(e) => FinalView::NoAnswer(e),
                };
                (self.nodes[i].name.clone(), view)
            })
            .collect()
    }

    fn write_history(&self, h: &History, violations: &[String], line: &str) -> PathBuf {
        let path = self.dir.join("history.json");
        let doc = json!({
            "figures": line,
            "violations": violations,
            "history": h,
        });
        let _ = std::fs::write(
            &path,
            serde_json::to_string_pretty(&doc).unwrap_or_default(),
        );
        path
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(mut s) = self.sampler.take() {
            let _ = s.stop();
        }
        let failed = std::thread::panicking();
        if failed && !self.finished {
            let h = self.rec.snapshot();
            let path = self.write_history(&h, &self.findings, "(the run did not finish)");
            eprintln!(
                "chaos run {} failed; history: {}",
                self.scenario,
                path.display()
            );
        }
        // Every process in the run's namespaces, then the namespaces.
        drop(self.net.take());
        for n in &mut self.nodes {
            if let Some(mut c) = n.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        for m in &self.mounts {
            let _ = Command::new("umount").arg("-l").arg(m).status();
        }
        if failed {
            eprintln!("chaos run {} kept in {}", self.scenario, self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A job of a `GET /v1/jobs` answer, as the history keeps it.
fn job_seen(j: &Value) -> JobSeen {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let running = j["tasks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["state"] == "running")
        .filter_map(|t| Some((t["slot"].as_u64()? as u32, text(&t["node"]))))
        .collect();
    JobSeen {
        id: text(&j["id"]),
        stopped: j["stopped"].as_bool().unwrap_or(false),
        status: text(&j["status"]),
        running,
    }
}

/// Whether a final view lists every wanted job in the wanted way (`true`: stopped or absent).
fn agrees(view: &FinalView, wanted: &BTreeMap<String, bool>) -> bool {
    let FinalView::Jobs(jobs) = view else {
        return false;
    };
    wanted.iter().all(
        |(id, stopped)| match (jobs.iter().find(|j| j.id == *id), stopped) {
            (Some(j), false) => !j.stopped,
            (None, false) => false,
            (Some(j), true) => j.stopped,
            (None, true) => true,
        },
    )
}

/// Runs `f` on a thread inside the network namespace at `ns`.
fn in_netns<T: Send>(ns: &Path, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            let file = std::fs::File::open(ns)
                .unwrap_or_else(|e| panic!("cannot open {}: {e}", ns.display()));
            nix::sched::setns(&file, CloneFlags::CLONE_NEWNET)
                .unwrap_or_else(|e| panic!("cannot enter {}: {e}", ns.display()));
            f()
        })
        .join()
        .expect("the request thread does not panic")
    })
}

/// Appends the figure line to `target/tmp/chaos-figures.txt`, so a whole suite's figures can
/// be read in one place after `cargo nextest run --test chaos`.
fn append_figure_line(line: &str) {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("chaos-figures.txt");
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = writeln!(f, "{line}");
    }
}

/// `n1-<run>`, `n2-<run>`, …: unique on the host, because the executor names its cgroup
/// subtree after the node (`shoal/<name>`) and kills tasks by cgroup; two test runs with a
/// node `n1` each would share, and kill, each other's tasks.
fn node_name(i: usize, run: &str) -> String {
    format!("n{}-{run}", i + 1)
}

/// A spread service of `count` sleeping tasks.
pub fn service(id: &str, count: u32, cpu: u64, memory: u64) -> Value {
    json!({
        "id": id, "type": "service", "count": count,
        "command": "sleep", "args": ["3600"],
        "resources": {"cpu": cpu, "memory": memory},
        "placement": "spread",
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::parse_http_answer;

    #[test]
    fn http_answers_are_parsed_plain_and_chunked() {
        let plain = b"HTTP/1.1 507 Insufficient Storage\r\ncontent-length: 9\r\n\r\n{\"a\":1}\r\n";
        let a = parse_http_answer(plain).unwrap();
        assert_eq!((a.status, a.body.as_str()), (507, "{\"a\":1}\r\n"));
        let chunked =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n3;x=y\r\n:1}\r\n0\r\n\r\n";
        let a = parse_http_answer(chunked).unwrap();
        assert_eq!((a.status, a.body.as_str()), (200, "{\"a\":1}"));
        assert_eq!(parse_http_answer(b"garbage"), None);
        let truncated = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nff\r\nabc";
        assert_eq!(parse_http_answer(truncated), None);
    }

    #[test]
    fn a_final_view_agrees_only_when_it_lists_what_was_acknowledged() {
        let seen = |id: &str, stopped| JobSeen {
            id: id.into(),
            stopped,
            status: String::new(),
            running: Vec::new(),
        };
        let wanted = BTreeMap::from([("kept".to_string(), false), ("gone".to_string(), true)]);
        let ok = FinalView::Jobs(vec![seen("kept", false)]);
        assert!(agrees(&ok, &wanted));
        let ok = FinalView::Jobs(vec![seen("kept", false), seen("gone", true)]);
        assert!(agrees(&ok, &wanted));
        for bad in [
            FinalView::Jobs(vec![]),
            FinalView::Jobs(vec![seen("kept", true)]),
            FinalView::Jobs(vec![seen("kept", false), seen("gone", false)]),
            FinalView::NoAnswer("timeout".into()),
        ] {
            assert!(!agrees(&bad, &wanted), "{bad:?}");
        }
    }
}
