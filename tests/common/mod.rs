//! A harness that runs real `shoal` processes on 127.0.0.1 with OS-chosen ports, like an
//! operator would: every wait has a deadline, every process is stopped by its PID.
#![allow(dead_code)] // each test binary uses a different part of the harness

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The binary under test.
pub fn shoal() -> Command {
    Command::new(env!("CARGO_BIN_EXE_shoal"))
}

/// The task ports of this test process's agents (`--port-range`): a block of 1,000 of the
/// agents' default range, 20000–32000, that no other test process on this host holds at the
/// same time, taken with `flock` on one file per block and held until the process exits
/// (however it exits). `None` when all twelve are held: the agents then use the whole range.
///
/// nextest runs tests as concurrent processes whose clusters share this host's ports. With
/// the whole default range each, two clusters could hand the same port to two tasks, and the
/// task that finds its port taken exits 1: that failed `services::failed_update_auto_reverts`
/// once in CI (slot 0 of the first version exited "Address already in use", so that
/// version's rollout failed, and a first version has nothing to revert to).
///
/// The agents of one process split the block further: [`agent_ports`].
pub fn port_block() -> Option<u16> {
    static BLOCK: OnceLock<Option<(u16, nix::fcntl::Flock<std::fs::File>)>> = OnceLock::new();
    BLOCK
        .get_or_init(|| {
            let dir = std::env::temp_dir().join("shoal-test-port-blocks");
            std::fs::create_dir_all(&dir).ok()?;
            let range = &shoal_scheduler::DEFAULT_PORT_RANGE;
            let blocks = (range.end() - range.start() + 1) / 1_000;
            (0..blocks).find_map(|n| {
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(dir.join(format!("{n}.lock")))
                    .ok()?;
                let held =
                    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
                        .ok()?;
                let low = *shoal_scheduler::DEFAULT_PORT_RANGE.start() + n * 1_000;
                Some((low, held))
            })
        })
        .as_ref()
        .map(|(low, _)| *low)
}

/// The `--port-range` of the agent named `name`: an eighth of this process's [`port_block`],
/// the same one each time the name is started, the names in the order first started (the
/// ninth name shares the first's). `None` when no block could be had.
///
/// The agents of a test cluster are nodes of their own but share this host's ports, which no
/// agent of another node sees in its host scan until a task listens: two agents admitting at
/// once could each draw the same port from one range, and the later task exits "Address
/// already in use". (`failed_update_auto_reverts` timed out once more in CI after the blocks
/// came, its first version never complete; its logs were lost, and this race, 6 ports drawn
/// by three agents from one block of 1,000, is the one way known to fail it so.) `shoal dev`
/// splits its range among its nodes the same way (`src/cli/dev.rs`, `task_ports`).
pub fn agent_ports(name: &str) -> Option<String> {
    const SHARES: u16 = 8;
    static NAMES: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let low = port_block()?;
    let mut names = NAMES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let at = match names.iter().position(|n| n == name) {
        Some(at) => at,
        None => {
            names.push(name.to_string());
            names.len() - 1
        }
    };
    let share = 1_000 / SHARES;
    let start = low + (at as u16 % SHARES) * share;
    Some(format!("{start}-{}", start + share - 1))
}

/// Agents, and the file their tasks append their pids to (`pids` in the cluster's directory):
/// on drop the agents are stopped, then every task process listed there is killed by its pid
/// (an agent stopped by a test does not stop its tasks).
pub struct TaskCluster {
    pub agents: Vec<Agent>,
    pub pids: PathBuf,
    pub dir: TempDir,
}

impl TaskCluster {
    pub fn new(dir: TempDir, agents: Vec<Agent>) -> Self {
        let pids = dir.0.join("pids");
        TaskCluster { agents, pids, dir }
    }

    /// Submits `spec` (a job's JSON) at the first agent without waiting for it to run:
    /// [`TaskCluster::run_job`] with `--detach`.
    pub fn submit(&self, spec: &Value) {
        self.run_job(spec, &["--detach"]);
    }

    /// `shoal job run FILE` of `spec` at the first agent, followed (not detached), killed
    /// and failing the test after `deadline`: its output, whether it succeeded or not.
    pub fn run_followed(&self, spec: &Value, deadline: Duration) -> Output {
        let id = spec["id"].as_str().expect("a job spec has an id");
        let file = self.dir.0.join(format!("{id}.json"));
        std::fs::write(&file, spec.to_string()).unwrap();
        self.agents[0].cli_within(&["job", "run", file.to_str().unwrap()], deadline)
    }

    /// Writes `spec` to `ID.json` in the cluster's directory and runs `shoal job run FILE
    /// EXTRA…` at the first agent, which must succeed.
    pub fn run_job(&self, spec: &Value, extra: &[&str]) {
        let id = spec["id"].as_str().expect("a job spec has an id");
        let file = self.dir.0.join(format!("{id}.json"));
        std::fs::write(&file, spec.to_string()).unwrap();
        let mut args = vec!["job", "run", file.to_str().unwrap()];
        args.extend_from_slice(extra);
        let out = self.agents[0].cli(&args);
        assert!(
            out.status.success(),
            "shoal {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for TaskCluster {
    fn drop(&mut self) {
        for a in &mut self.agents {
            a.stop();
        }
        for pid in std::fs::read_to_string(&self.pids)
            .unwrap_or_default()
            .lines()
        {
            let _ = Command::new("kill")
                .args(["-9", pid.trim()])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Runs `shoal ARGS` to completion.
pub fn run(args: &[&str]) -> Output {
    shoal().args(args).output().expect("shoal runs")
}

/// Runs `shoal ARGS` to completion in `dir`, as an operator in the directory that holds the
/// agents' `shoal-data/` would: the CLI finds a local agent's token there by itself.
pub fn run_in(dir: &Path, args: &[&str]) -> Output {
    shoal()
        .current_dir(dir)
        .args(args)
        .output()
        .expect("shoal runs")
}

/// `shoal ARGS` in `dir`, killed by its PID and failing the test when it has not exited by
/// `deadline`: for a command that would follow something forever if it regressed.
pub fn run_in_within(dir: &Path, args: &[&str], deadline: Duration) -> Output {
    use std::io::Read;
    let mut child = shoal()
        .current_dir(dir)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("shoal runs");
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.read_to_end(&mut buf);
            buf
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("piped")));
    let stderr = drain(Box::new(child.stderr.take().expect("piped")));
    let until = Instant::now() + deadline;
    let status = loop {
        if let Some(status) = child.try_wait().expect("shoal is waited on") {
            break status;
        }
        if Instant::now() > until {
            let _ = child.kill();
            let _ = child.wait();
            let out = stdout.join().unwrap_or_default();
            let err = stderr.join().unwrap_or_default();
            panic!(
                "shoal {args:?} did not exit within {deadline:?}; it said:\n{}{}",
                String::from_utf8_lossy(&out),
                String::from_utf8_lossy(&err)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Output {
        status,
        stdout: stdout.join().expect("stdout is read"),
        stderr: stderr.join().expect("stderr is read"),
    }
}

/// A fresh directory under the target dir, removed when dropped.
#[derive(Debug)]
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let unique = format!("{tag}-{}-{n}", std::process::id());
        let dir = base.join(unique);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // Like /tmp: an agent running as root runs tasks as nobody, and tests have tasks
        // write files here (their pids, markers).
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // A failed test keeps its agents' logs and data dirs for the post-mortem.
            eprintln!("test failed: kept {} (agent logs: *.log)", self.0.display());
            return;
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes a new cluster key from `shoal keygen` into `dir/name`.
pub fn keygen(dir: &Path, name: &str) -> PathBuf {
    let out = run(&["keygen"]);
    assert!(out.status.success(), "keygen failed: {out:?}");
    let path = dir.join(name);
    std::fs::write(&path, &out.stdout).unwrap();
    path
}

/// A running agent process.
#[derive(Debug)]
pub struct Agent {
    pub name: String,
    pub child: Option<Child>,
    /// The directory the agent was started in; its data dir is `root/shoal-data/NAME`.
    pub root: PathBuf,
    pub data_dir: PathBuf,
    pub gossip: SocketAddr,
    pub http: SocketAddr,
    /// `http://ADDR` on loopback, `https://ADDR` off loopback (from `addresses.json`).
    pub http_url: String,
    /// The file holding the API token.
    pub token_file: PathBuf,
    pub generation: u64,
}

/// How to start an agent.
#[derive(Debug, Clone)]
pub struct AgentSpec<'a> {
    pub name: &'a str,
    pub key: &'a Path,
    pub root: &'a Path,
    pub join: Option<SocketAddr>,
    pub bind: SocketAddr,
    /// `--http`.
    pub http: SocketAddr,
    pub extra: Vec<String>,
    /// A command the agent runs under (e.g. `nsenter ... --`), `None` = run directly.
    pub launcher: Option<Vec<String>>,
    /// Leave `--cpu` and `--memory` to the agent's defaults (what the machine has) instead
    /// of the tests' 2000 m and 2048 MiB.
    pub machine_resources: bool,
    /// Give no `--name`: the agent names itself (after the host); `name` then names only its
    /// data dir and log.
    pub host_name: bool,
}

impl<'a> AgentSpec<'a> {
    pub fn new(name: &'a str, key: &'a Path, root: &'a Path) -> Self {
        AgentSpec {
            name,
            key,
            root,
            join: None,
            bind: "127.0.0.1:0".parse().unwrap(),
            http: "127.0.0.1:0".parse().unwrap(),
            extra: vec![],
            launcher: None,
            machine_resources: false,
            host_name: false,
        }
    }
}

impl Agent {
    /// Starts an agent and waits (≤ 30 s) until it wrote its addresses.
    pub fn start(spec: AgentSpec<'_>) -> Agent {
        let data_dir = spec.root.join("shoal-data").join(spec.name);
        let addresses = data_dir.join("addresses.json");
        let _ = std::fs::remove_file(&addresses);
        // Appended, so that a restarted agent's log follows its first life's.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(spec.root.join(format!("{}.log", spec.name)))
            .unwrap();
        let mut cmd = match &spec.launcher {
            Some(launcher) => {
                let mut cmd = Command::new(&launcher[0]);
                cmd.args(&launcher[1..]).arg(env!("CARGO_BIN_EXE_shoal"));
                cmd
            }
            None => shoal(),
        };
        cmd.current_dir(spec.root)
            .args(["agent", "--bind", &spec.bind.to_string()])
            .args(["--http", &spec.http.to_string()]);
        if !spec.host_name {
            cmd.args(["--name", spec.name]);
        }
        // Many agents share this host: each answers DNS on a port of its own, unless the spec
        // says where (or `off`) itself.
        if !spec.extra.iter().any(|a| a == "--dns") {
            cmd.args(["--dns", "127.0.0.1:0"]);
        }
        if !spec.machine_resources {
            cmd.args(["--cpu", "2000", "--memory", "2048"]);
        }
        cmd.arg("--cluster-key-file")
            .arg(spec.key)
            .arg("--data-dir")
            .arg(&data_dir)
            .args(&spec.extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        if let Some(seed) = spec.join {
            cmd.args(["--join", &seed.to_string()]);
        }
        if let Some(range) =
            agent_ports(spec.name).filter(|_| !spec.extra.iter().any(|a| a == "--port-range"))
        {
            cmd.args(["--port-range", &range]);
        }
        let child = cmd.spawn().expect("agent starts");
        let mut agent = Agent {
            name: spec.name.to_string(),
            child: Some(child),
            root: spec.root.to_path_buf(),
            data_dir,
            gossip: "0.0.0.0:0".parse().unwrap(),
            http: "0.0.0.0:0".parse().unwrap(),
            http_url: String::new(),
            token_file: PathBuf::new(),
            generation: 0,
        };
        let log_path = spec.root.join(format!("{}.log", spec.name));
        let end = std::time::Instant::now() + Duration::from_secs(30);
        let info: Value = loop {
            if let Some(info) = std::fs::read_to_string(&addresses)
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok())
            {
                break info;
            }
            let exited = agent
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || std::time::Instant::now() > end {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                let holders = holders_of(&agent.data_dir);
                panic!(
                    "agent {} not ready in 30 s (exit: {exited:?}); holding its data dir: {holders:?}; its log:\n{log}",
                    agent.name
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        agent.gossip = info["gossip"].as_str().unwrap().parse().unwrap();
        agent.http = info["http"].as_str().unwrap().parse().unwrap();
        agent.http_url = info["http_url"].as_str().unwrap().to_string();
        agent.token_file = PathBuf::from(info["token_file"].as_str().unwrap());
        agent.generation = info["generation"].as_u64().unwrap();
        agent
    }

    pub fn api(&self) -> String {
        self.http_url.clone()
    }

    /// The agent's API token.
    pub fn token(&self) -> String {
        // The first line: the token clients send (`docs/security.md`, "Rotation").
        std::fs::read_to_string(&self.token_file)
            .unwrap()
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or_default()
            .to_string()
    }

    /// Runs `shoal ARGS --addr API` in the agent's directory: no token flag, the CLI finds it.
    pub fn cli(&self, args: &[&str]) -> Output {
        let api = self.api();
        let mut all = args.to_vec();
        all.extend(["--addr", api.as_str()]);
        run_in(&self.root, &all)
    }

    /// [`Self::cli`], killed and failing the test after `deadline` ([`run_in_within`]).
    pub fn cli_within(&self, args: &[&str], deadline: Duration) -> Output {
        let api = self.api();
        let mut all = args.to_vec();
        all.extend(["--addr", api.as_str()]);
        run_in_within(&self.root, &all, deadline)
    }

    pub fn pid(&self) -> i32 {
        self.child
            .as_ref()
            .map(|c| c.id() as i32)
            .expect("agent is running")
    }

    /// `kill -9`.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then wait (≤ 10 s) for a clean exit; SIGKILL after that. Returns the status.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        unsafe_free_sigterm(child.id() as i32);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        child.wait().ok()
    }

    /// `GET /v1/nodes` through the CLI (`shoal node list --json`).
    pub fn nodes(&self) -> Option<Vec<Value>> {
        let out = run(&["node", "list", "--json", "--addr", &self.api()]);
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    /// `GET /v1/agent/self` through curl-free HTTP (std only).
    pub fn agent_self(&self) -> Option<Value> {
        http_get(self.http, "/v1/agent/self")
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Sends SIGTERM through the `kill` command (tests keep `unsafe` out too).
fn unsafe_free_sigterm(pid: i32) {
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
}

/// Starts `n` agents `n1…n{n}` in a fresh temp dir named after `tag`, all with `extra` flags,
/// the others joining through `n1`, and waits (each within `deadline`) until every agent lists
/// `n` members for which `ready` holds.
pub fn start_agents(
    n: usize,
    tag: &str,
    extra: &[&str],
    deadline: Duration,
    ready: impl Fn(&Value) -> bool,
) -> (TempDir, Vec<Agent>) {
    let dir = TempDir::new(tag);
    let key = keygen(&dir.0, "cluster.key");
    let extra: Vec<String> = extra.iter().map(ToString::to_string).collect();
    let seed = Agent::start(AgentSpec {
        extra: extra.clone(),
        ..AgentSpec::new("n1", &key, &dir.0)
    });
    let seed_addr = seed.gossip;
    let mut agents = vec![seed];
    for i in 2..=n {
        let name = format!("n{i}");
        agents.push(Agent::start(AgentSpec {
            join: Some(seed_addr),
            extra: extra.clone(),
            ..AgentSpec::new(&name, &key, &dir.0)
        }));
    }
    for a in &agents {
        wait_for(
            deadline,
            &format!("{} sees {n} ready nodes", a.name),
            || {
                let nodes = a.nodes()?;
                (nodes.iter().filter(|x| ready(x)).count() == n).then_some(())
            },
        );
    }
    (dir, agents)
}

/// A minimal HTTP/1.1 GET over std's TcpStream, JSON body.
pub fn http_get(addr: SocketAddr, path: &str) -> Option<Value> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let body = text.split_once("\r\n\r\n")?.1;
    serde_json::from_str(body).ok()
}

/// Polls `probe` every 100 ms until it returns `Some`, panicking with `what` at the deadline.
pub fn wait_for<T>(deadline: Duration, what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + deadline;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(
            Instant::now() < end,
            "timed out after {deadline:?} waiting until {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The status of `name` in a `/v1/nodes` listing.
pub fn status_of<'a>(nodes: &'a [Value], name: &str) -> Option<&'a Value> {
    nodes.iter().find(|n| n["name"] == name)
}

/// Processes with an open file under `dir` (pid, command line), for diagnosing lock errors.
pub fn holders_of(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for proc_entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let pid = proc_entry.file_name().to_string_lossy().to_string();
        if !pid.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        let fds = std::fs::read_dir(proc_entry.path().join("fd"))
            .into_iter()
            .flatten()
            .flatten();
        if fds
            .filter_map(|fd| std::fs::read_link(fd.path()).ok())
            .any(|target| target.starts_with(dir))
        {
            let cmd = std::fs::read_to_string(proc_entry.path().join("cmdline"))
                .unwrap_or_default()
                .replace('\0', " ");
            out.push((pid, cmd));
        }
    }
    out
}

/// The answer to an HTTP request: status code and body (chunked bodies decoded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpAnswer {
    pub status: u16,
    pub body: String,
}

/// A minimal HTTP/1.1 request over std's TcpStream (`Connection: close`), with a JSON body
/// when `body` is given. `timeout` bounds the connect and every read; an error says which step
/// failed, so a history can record it next to the request.
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
    timeout: Duration,
) -> Result<HttpAnswer, String> {
    http_request_with_token(addr, method, path, body, timeout, None)
}

/// [`http_request`] with the API token (`X-Shoal-Token`), which every request that changes
/// something needs.
pub fn http_request_with_token(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
    timeout: Duration,
    token: Option<&str>,
) -> Result<HttpAnswer, String> {
    http_request_typed(addr, method, path, body, "application/json", timeout, token)
}

/// [`http_request_with_token`] with the body's `Content-Type`.
pub fn http_request_typed(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
    content_type: &str,
    timeout: Duration,
    token: Option<&str>,
) -> Result<HttpAnswer, String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| format!("connect to {addr}: {e}"))?;
    s.set_read_timeout(Some(timeout))
        .and_then(|()| s.set_write_timeout(Some(timeout)))
        .map_err(|e| format!("socket timeouts: {e}"))?;
    let body = body.unwrap_or("");
    let token = token.map_or(String::new(), |t| format!("X-Shoal-Token: {t}\r\n"));
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{token}\
         Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .map_err(|e| format!("send {method} {path}: {e}"))?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .map_err(|e| format!("read the answer to {method} {path}: {e}"))?;
    parse_http_answer(&raw).ok_or_else(|| {
        format!(
            "malformed answer to {method} {path}: {:?}",
            String::from_utf8_lossy(&raw)
        )
    })
}

/// Parses a whole HTTP/1.1 response: status line, headers, body (plain or chunked).
pub fn parse_http_answer(raw: &[u8]) -> Option<HttpAnswer> {
    let text = String::from_utf8_lossy(raw);
    let (head, rest) = text.split_once("\r\n\r\n")?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let chunked = lines.any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = if chunked {
        decode_chunked(rest)?
    } else {
        rest.to_string()
    };
    Some(HttpAnswer { status, body })
}

fn decode_chunked(mut rest: &str) -> Option<String> {
    let mut out = String::new();
    // Each chunk is at least its size line, so this many rounds always suffice.
    for _ in 0..=rest.len() {
        let (size_line, after) = rest.split_once("\r\n")?;
        let size = usize::from_str_radix(size_line.split(';').next()?.trim(), 16).ok()?;
        if size == 0 {
            return Some(out);
        }
        out.push_str(after.get(..size)?);
        rest = after.get(size..)?.strip_prefix("\r\n")?;
    }
    None
}
