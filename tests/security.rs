//! The API's defences on real agents (`docs/security.md`): no change without the token, no
//! request from a foreign page (`Origin`, `Host`, content type), HTTPS off loopback verified by
//! the CLI, task logs redirected across nodes with the token kept, and a CLI that finds a local
//! agent's token by itself (also for `shoal dev`).
//!
//! HTTPS needs an address that is not loopback. The tests create their own network namespace
//! (inside a user namespace, so no privilege is needed: `unshare --user --map-root-user --net`)
//! and give its loopback device the addresses 10.77.0.1 and 10.77.0.2, which are not loopback
//! addresses (only 127.0.0.0/8 and ::1 are), so the agents bound there behave exactly as on a
//! server's network interface, and nothing leaves the namespace. 127.0.0.2 would not do: it is
//! loopback, where the API speaks plain HTTP. Where user namespaces are disabled these tests fail
//! and say so; they are never skipped.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{Agent, AgentSpec, TempDir, keygen, run, run_in, wait_for};
use serde_json::{Value, json};

const DEADLINE: Duration = Duration::from_secs(60);

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One HTTP/1.1 request over std's TcpStream; `Host` is the agent's address unless `headers`
/// name one. Returns the status and the body.
fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        head.push_str(&format!("Host: {addr}\r\n"));
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    s.write_all(head.as_bytes()).unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

/// A single agent on loopback whose node is up with its resources.
fn one_agent(tag: &str) -> (Agent, TempDir) {
    let dir = TempDir::new(tag);
    let key = keygen(&dir.0, "cluster.key");
    let agent = Agent::start(AgentSpec::new("n1", &key, &dir.0));
    wait_for(DEADLINE, "n1 sees itself with its resources", || {
        let nodes = agent.nodes()?;
        (nodes[0]["resources"]["capacity"]["cpu_millicores"] == 2000).then_some(())
    });
    (agent, dir)
}

/// A batch job whose only effect is to create `marker`.
fn marker_job(id: &str, marker: &Path) -> String {
    json!({
        "id": id, "type": "batch", "count": 1, "command": "touch",
        "args": [marker], "resources": {"cpu": 1, "memory": 1}
    })
    .to_string()
}

fn job_ids(agent: &Agent) -> Vec<String> {
    let (status, body) = send(agent.http, "GET", "/v1/jobs", &[], "");
    assert_eq!(status, 200, "{body}");
    let jobs: Vec<Value> = serde_json::from_str(&body).unwrap();
    jobs.iter()
        .map(|j| j["id"].as_str().unwrap().to_string())
        .collect()
}

/// A request that must be refused: (job id, headers, status, words the answer must contain).
type Refused<'a> = (&'a str, Vec<(&'a str, &'a str)>, u16, Vec<&'a str>);

#[test]
fn a_refused_request_runs_nothing_and_the_token_opens_the_door() {
    let (agent, dir) = one_agent("refused");
    let token = agent.token();
    let bearer = format!("Bearer {token}");
    let foreign_host = format!("evil.example:{}", agent.http.port());
    let json_type = ("Content-Type", "application/json");
    let auth = ("Authorization", bearer.as_str());
    let wrong = "0".repeat(64);
    let wrong_bearer = format!("Bearer {wrong}");
    let token_file = agent.token_file.display().to_string();
    let refused: Vec<Refused> = vec![
        (
            "no-token",
            vec![json_type],
            401,
            vec!["Authorization: Bearer TOKEN", "X-Shoal-Token", &token_file],
        ),
        (
            "wrong-bearer",
            vec![json_type, ("Authorization", &wrong_bearer)],
            403,
            vec!["wrong token"],
        ),
        (
            "wrong-header",
            vec![json_type, ("X-Shoal-Token", &wrong)],
            403,
            vec!["wrong token"],
        ),
        (
            "foreign-origin",
            vec![json_type, auth, ("Origin", "http://evil.example")],
            403,
            vec!["origin \\\"http://evil.example\\\""],
        ),
        (
            "foreign-host",
            vec![json_type, auth, ("Host", &foreign_host)],
            403,
            vec!["DNS rebinding"],
        ),
        (
            "text-plain",
            vec![("Content-Type", "text/plain"), auth],
            415,
            vec!["application/json or application/toml", "text/plain"],
        ),
        (
            "form",
            vec![("Content-Type", "application/x-www-form-urlencoded"), auth],
            415,
            vec!["application/x-www-form-urlencoded"],
        ),
        ("untyped", vec![auth], 415, vec!["untyped"]),
        // The request of issue 13, as a web page would send it.
        (
            "pwn",
            vec![
                ("Content-Type", "text/plain"),
                ("Origin", "http://evil.example"),
            ],
            403,
            vec!["origin"],
        ),
    ];
    for (id, headers, status, words) in &refused {
        let body = marker_job(id, &dir.0.join(format!("{id}.marker")));
        let (got, answer) = send(agent.http, "POST", "/v1/jobs", headers, &body);
        assert_eq!(got, *status, "{id}: {answer}");
        for w in words {
            assert!(answer.contains(w), "{id}: {w:?} not in {answer}");
        }
    }

    // With the token the same request works, and the job runs: so the refused ones would have
    // run too, had they been accepted.
    let accepted = dir.0.join("accepted.marker");
    let (got, answer) = send(
        agent.http,
        "POST",
        "/v1/jobs",
        &[json_type, auth, ("Origin", &agent.api())],
        &marker_job("accepted", &accepted),
    );
    // One agent alone: persisted here only, so 202 (docs/faults.md), never 200; with the
    // write's stamp, which `job run` follows.
    assert_eq!(got, 202, "{answer}");
    assert!(answer.contains("\"stamp\":\""), "{answer}");
    wait_for(DEADLINE, "the accepted job created its marker", || {
        accepted.exists().then_some(())
    });
    assert_eq!(
        job_ids(&agent),
        ["accepted"],
        "only the accepted job is known"
    );
    for (id, ..) in &refused {
        assert!(
            !dir.0.join(format!("{id}.marker")).exists(),
            "refused job {id} ran"
        );
    }

    // Stopping is a change too.
    let (got, answer) = send(agent.http, "DELETE", "/v1/jobs/accepted", &[], "");
    assert_eq!(got, 401, "{answer}");
    let (got, answer) = send(agent.http, "GET", "/v1/jobs/accepted", &[], "");
    assert_eq!(got, 200, "reads stay open on loopback: {answer}");
    assert_ne!(
        serde_json::from_str::<Value>(&answer).unwrap()["status"],
        "stopped"
    );
    let (got, answer) = send(
        agent.http,
        "DELETE",
        "/v1/jobs/accepted",
        &[("X-Shoal-Token", &token)],
        "",
    );
    // Alone: the stop is persisted here only, so 202 (docs/faults.md).
    assert_eq!(got, 202, "{answer}");
}

#[test]
fn the_cli_finds_a_local_agents_token_and_says_how_to_pass_one() {
    let (agent, dir) = one_agent("cli-token");
    let file = dir.0.join("job.json");
    let marker = dir.0.join("cli.marker");
    std::fs::write(&file, marker_job("cli", &marker)).unwrap();
    let file = file.to_str().unwrap();

    // In the directory of the agent's data: no flags.
    let out = agent.cli(&["job", "run", file]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(marker.exists(), "job run returns once the batch task ran");

    // Elsewhere, with nothing to find: refused, and told what to do.
    let elsewhere = TempDir::new("cli-elsewhere");
    let api = agent.api();
    let cli = |env: &[(&str, &str)], args: &[&str]| {
        let mut cmd = common::shoal();
        cmd.current_dir(&elsewhere.0)
            .args(args)
            .args(["--addr", &api])
            .env_remove("SHOAL_HTTP_TOKEN")
            .env_remove("SHOAL_HTTP_TOKEN_FILE")
            .envs(env.iter().copied());
        cmd.output().unwrap()
    };
    let out = cli(&[], &["job", "stop", "cli"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("401"), "{err}");
    assert!(
        err.contains("the CLI sent no token") && err.contains("./shoal-data/*/"),
        "{err}"
    );
    assert!(
        err.contains(&agent.token_file.display().to_string()),
        "{err}"
    );
    let wrong = "f".repeat(64);
    let out = cli(&[("SHOAL_HTTP_TOKEN", &wrong)], &["job", "stop", "cli"]);
    assert!(stderr(&out).contains("403") && stderr(&out).contains("wrong token"));
    let token_file = agent.token_file.display().to_string();
    let out = cli(
        &[("SHOAL_HTTP_TOKEN_FILE", &token_file)],
        &["job", "stop", "cli"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    // Reads need nothing on loopback.
    let out = cli(&[], &["job", "list", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

/// The word after `name` in a line of `shoal dev`'s banner (`api http://…`, `gossip …`).
fn banner_field(line: &str, name: &str) -> Option<String> {
    line.split_whitespace()
        .skip_while(|w| *w != name)
        .nth(1)
        .map(str::to_string)
}

/// `shoal dev` as a child process, stopped by its PID.
struct Dev {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Dev {
    fn start(runtime_dir: &Path) -> (Dev, Vec<String>) {
        let (dev, banner) =
            Dev::start_with(runtime_dir, &["--http-port", "0", "--gossip-port", "0"]);
        let apis = banner
            .iter()
            .filter_map(|l| banner_field(l, "api"))
            .collect();
        (dev, apis)
    }

    /// `shoal dev --nodes 2` with `args`; returns its banner's lines.
    fn start_with(runtime_dir: &Path, args: &[&str]) -> (Dev, Vec<String>) {
        let mut child = common::shoal()
            .args(["dev", "--nodes", "2"])
            .args(args)
            .env("XDG_RUNTIME_DIR", runtime_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let dev = Dev { child, lines };
        let end = Instant::now() + DEADLINE;
        let mut banner = Vec::new();
        while !banner.iter().any(|l: &String| l.contains("Ctrl-C stops")) {
            let left = end.saturating_duration_since(Instant::now());
            match dev.lines.recv_timeout(left) {
                Ok(line) => banner.push(line),
                Err(_) => panic!("shoal dev printed no banner in {DEADLINE:?}: {banner:?}"),
            }
        }
        (dev, banner)
    }

    fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let end = Instant::now() + Duration::from_secs(20);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        panic!("shoal dev did not stop within 20 s of SIGTERM");
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// README: a port `shoal dev` is asked for that is already taken is replaced by one the OS
/// picks, and the banner prints what each node got.
#[test]
fn shoal_dev_replaces_a_taken_port_and_says_which_it_got() {
    let http_taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let gossip_taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let (http, gossip) = (
        http_taken.local_addr().unwrap().port(),
        gossip_taken.local_addr().unwrap().port(),
    );
    let runtime = TempDir::new("dev-taken");
    let (mut dev, banner) = Dev::start_with(
        &runtime.0,
        &[
            "--http-port",
            &http.to_string(),
            "--gossip-port",
            &gossip.to_string(),
        ],
    );
    let first = banner
        .iter()
        .find(|l| l.trim_start().starts_with("dev-1 "))
        .unwrap_or_else(|| panic!("no dev-1 line: {banner:#?}"))
        .clone();
    let api = banner_field(&first, "api").expect("dev-1's api");
    let gossip_got = banner_field(&first, "gossip").expect("dev-1's gossip");
    assert!(
        !api.ends_with(&format!(":{http}")),
        "dev-1 says it has the taken API port: {first}"
    );
    assert!(
        !gossip_got.ends_with(&format!(":{gossip}")),
        "dev-1 says it has the taken gossip port: {first}"
    );
    // The ports it printed are the ones it answers on.
    let addr: std::net::SocketAddr = api.trim_start_matches("http://").parse().unwrap();
    let answer = wait_for(DEADLINE, "dev-1 answers at the printed port", || {
        common::http_request(addr, "GET", "/v1/nodes", None, Duration::from_secs(5)).ok()
    });
    assert_eq!(answer.status, 200, "{}", answer.body);
    dev.stop();
    drop((http_taken, gossip_taken));
}

#[test]
fn the_cli_works_against_shoal_dev_with_no_flags() {
    let runtime = TempDir::new("dev-runtime");
    let (mut dev, apis) = Dev::start(&runtime.0);
    assert_eq!(apis.len(), 2, "{apis:?}");
    let cluster_dir = runtime.0.join("shoal-dev").join(dev.child.id().to_string());
    assert!(cluster_dir.join("http.token").exists());

    // An operator in some other directory, in the same session (same XDG_RUNTIME_DIR): only
    // the address, which `shoal dev` chose at random here (it is 127.0.0.1:4646 by default).
    let work = TempDir::new("dev-work");
    let marker = work.0.join("dev.marker");
    std::fs::write(work.0.join("job.json"), marker_job("devjob", &marker)).unwrap();
    let cli = |args: &[&str], api: &str| {
        common::shoal()
            .current_dir(&work.0)
            .env("XDG_RUNTIME_DIR", &runtime.0)
            .env_remove("SHOAL_HTTP_TOKEN")
            .env_remove("SHOAL_HTTP_TOKEN_FILE")
            .args(args)
            .args(["--addr", api])
            .output()
            .unwrap()
    };
    let out = cli(&["job", "run", "job.json"], &apis[0]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(marker.exists());
    // The second node, once it knows the job, takes changes with the same token.
    wait_for(DEADLINE, "dev-2 knows the job", || {
        cli(&["job", "status", "devjob"], &apis[1])
            .status
            .success()
            .then_some(())
    });
    let out = cli(&["job", "stop", "devjob"], &apis[1]);
    assert!(out.status.success(), "{}", stderr(&out));

    dev.stop();
    assert!(!cluster_dir.exists(), "shoal dev removes its directory");
}

/// A network namespace the test creates (see the module doc), held by a `sleep` it stops by
/// PID; every address in it is on its loopback device but none is a loopback address.
struct NetNs {
    holder: Child,
}

impl NetNs {
    fn new(ips: &[&str]) -> NetNs {
        let adds: Vec<String> = ips
            .iter()
            .map(|ip| format!("ip addr add {ip}/32 dev lo"))
            .collect();
        let script = format!(
            "ip link set lo up && {} && echo ready && exec sleep 900",
            adds.join(" && ")
        );
        let mut holder = Command::new("unshare")
            .args(["--user", "--map-root-user", "--net", "sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("`unshare` (util-linux) runs");
        let mut first = String::new();
        let read = BufReader::new(holder.stdout.take().unwrap()).read_line(&mut first);
        if read.is_err() || first.trim() != "ready" {
            let _ = holder.kill();
            let mut err = String::new();
            let _ = holder.stderr.take().unwrap().read_to_string(&mut err);
            let _ = holder.wait();
            panic!(
                "cannot create a network namespace with `unshare --user --map-root-user --net` \
                 ({err}): these tests need unprivileged user namespaces"
            );
        }
        NetNs { holder }
    }

    /// The command prefix that runs a program inside the namespace.
    fn launcher(&self) -> Vec<String> {
        [
            "nsenter",
            "-t",
            &self.holder.id().to_string(),
            "-U",
            "-n",
            "--preserve-credentials",
            "--",
        ]
        .map(str::to_string)
        .to_vec()
    }

    /// `shoal ARGS` inside the namespace, in `dir`, with no token in the environment.
    fn shoal(&self, dir: &Path, args: &[&str]) -> Output {
        let launcher = self.launcher();
        Command::new(&launcher[0])
            .args(&launcher[1..])
            .arg(env!("CARGO_BIN_EXE_shoal"))
            .args(args)
            .current_dir(dir)
            .env_remove("SHOAL_HTTP_TOKEN")
            .env_remove("SHOAL_HTTP_TOKEN_FILE")
            .env_remove("SHOAL_CA_FILE")
            .env_remove("SHOAL_CLUSTER_KEY_FILE")
            .output()
            .unwrap()
    }

    /// Sends `request` as raw bytes over a TCP connection to `addr` from inside the namespace
    /// (bash's `/dev/tcp`) and returns every byte that came back before the agent closed the
    /// connection (at most 10 s of reading).
    fn raw_exchange(&self, addr: SocketAddr, request: &str) -> Vec<u8> {
        let launcher = self.launcher();
        let script = "exec 3<>\"/dev/tcp/$0/$1\" && cat >&3; exec timeout 10 cat <&3";
        let mut child = Command::new(&launcher[0])
            .args(&launcher[1..])
            .args(["bash", "-c", script])
            .args([addr.ip().to_string(), addr.port().to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("bash runs in the namespace");
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(request.as_bytes()).unwrap();
        drop(stdin);
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "no connection to {addr}, or it was not closed within 10 s: {out:?}"
        );
        out.stdout
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

/// Two agents on 10.77.0.1 and 10.77.0.2 in a namespace, sharing one token file.
struct TlsCluster {
    agents: Vec<Agent>,
    key: PathBuf,
    token_file: PathBuf,
    ns: NetNs,
    dir: TempDir,
}

impl TlsCluster {
    fn start(tag: &str) -> TlsCluster {
        let dir = TempDir::new(tag);
        let key = keygen(&dir.0, "cluster.key");
        let token_file = dir.0.join("api.token");
        std::fs::write(&token_file, format!("{}\n", "7e".repeat(32))).unwrap();
        std::fs::set_permissions(
            &token_file,
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap();
        let ns = NetNs::new(&["10.77.0.1", "10.77.0.2"]);
        let spec = |name: &'static str, ip: &str, join: Option<SocketAddr>| AgentSpec {
            bind: format!("{ip}:0").parse().unwrap(),
            http: format!("{ip}:0").parse().unwrap(),
            join,
            extra: vec![
                "--http-token-file".to_string(),
                token_file.display().to_string(),
            ],
            launcher: Some(ns.launcher()),
            ..AgentSpec::new(name, &key, &dir.0)
        };
        let n1 = Agent::start(spec("n1", "10.77.0.1", None));
        let n2 = Agent::start(spec("n2", "10.77.0.2", Some(n1.gossip)));
        let c = TlsCluster {
            agents: vec![n1, n2],
            key,
            token_file,
            ns,
            dir,
        };
        for a in &c.agents {
            assert!(a.api().starts_with("https://10.77.0."), "{}", a.api());
            wait_for(DEADLINE, "both nodes alive with their API address", || {
                let out = c.cli(&["node", "list", "--json", "--addr", &a.api()]);
                let nodes: Vec<Value> = serde_json::from_slice(&out.stdout).ok()?;
                let ready = nodes
                    .iter()
                    .filter(|n| n["status"] == "alive" && n["http_addr"].is_string())
                    .count();
                (ready == 2).then_some(())
            });
        }
        c
    }

    /// The CLI in the namespace, in the agents' directory (it finds token and CA there).
    fn cli(&self, args: &[&str]) -> Output {
        self.ns.shoal(&self.dir.0, args)
    }
}

impl Drop for TlsCluster {
    fn drop(&mut self) {
        for a in &mut self.agents {
            a.stop();
        }
    }
}

#[test]
fn off_loopback_the_api_speaks_https_that_the_cli_verifies() {
    let c = TlsCluster::start("https");
    let api = c.agents[0].api();
    let elsewhere = TempDir::new("https-elsewhere");
    let in_elsewhere = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--addr", api.as_str()]);
        c.ns.shoal(&elsewhere.0, &all)
    };
    let ca = elsewhere.0.join("ca.pem");
    let out = run(&["ca", "--cluster-key-file", c.key.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).starts_with("-----BEGIN CERTIFICATE-----"));
    std::fs::write(&ca, &out.stdout).unwrap();
    let (ca, key, token) = (
        ca.to_str().unwrap(),
        c.key.to_str().unwrap(),
        c.token_file.to_str().unwrap(),
    );

    // In the agents' directory the CLI needs nothing but the address.
    let out = c.cli(&["job", "list", "--json", "--addr", &api]);
    assert!(out.status.success(), "{}", stderr(&out));
    // Elsewhere: the CA from `shoal ca` or derived from the key, and the token.
    for trust in [["--ca-file", ca], ["--cluster-key-file", key]] {
        let out = in_elsewhere(&["job", "list", "--token-file", token, trust[0], trust[1]]);
        assert!(out.status.success(), "{trust:?}: {}", stderr(&out));
    }
    // Off loopback reads need the token too.
    let out = in_elsewhere(&["job", "list", "--ca-file", ca]);
    let err = stderr(&out);
    assert!(
        err.contains("401") && err.contains("listens off loopback"),
        "{err}"
    );
    // No CA: the CLI says how to give one.
    let out = in_elsewhere(&["job", "list", "--token-file", token]);
    assert!(stderr(&out).contains("--ca-file"), "{}", stderr(&out));
    // Another cluster's CA: the agent's certificate is refused.
    let other = keygen(&elsewhere.0, "other.key");
    let out = in_elsewhere(&[
        "job",
        "list",
        "--token-file",
        token,
        "--cluster-key-file",
        other.to_str().unwrap(),
    ]);
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(err.contains("UnknownIssuer"), "{err}");
    // Plain HTTP to an agent off loopback: refused before anything is sent.
    let plain = api.replace("https://", "http://");
    let out = c.ns.shoal(
        &elsewhere.0,
        &["job", "list", "--token-file", token, "--addr", &plain],
    );
    assert!(
        stderr(&out).contains(&format!("use {api}")),
        "{}",
        stderr(&out)
    );
    // The agent's side: its listener serves no plain HTTP either, not even a read with the
    // right token. It answers the bytes `GET …` with one TLS record, a fatal alert, and closes
    // the connection: nothing in clear text comes back, and no handler ran.
    let listener = c.agents[0].http;
    let token = std::fs::read_to_string(&c.token_file).unwrap();
    let request = format!(
        "GET /v1/jobs HTTP/1.1\r\nHost: {listener}\r\nAuthorization: Bearer {}\r\n\
         Connection: close\r\n\r\n",
        token.trim()
    );
    let answer = c.ns.raw_exchange(listener, &request);
    let text = String::from_utf8_lossy(&answer);
    assert!(!text.contains("HTTP/"), "plain HTTP was answered: {text:?}");
    // A TLS record: type 21 (alert), version, length 2, then level 2 (fatal) and the
    // description (50, decode_error, from rustls today).
    assert!(
        answer.len() == 7 && answer[0] == 21 && answer[3..5] == [0, 2] && answer[5] == 2,
        "expected exactly one fatal TLS alert record, got {answer:02x?}"
    );
}

#[test]
fn task_logs_are_redirected_to_the_running_node_with_the_token() {
    let c = TlsCluster::start("logs");
    let job = json!({
        "id": "talk", "type": "service", "count": 1, "command": "sh",
        "args": ["-c", "echo hello-from-slot-$SHOAL_SLOT; exec sleep 120"],
        "constraints": ["node == n2"],
        "resources": {"cpu": 10, "memory": 8}
    });
    std::fs::write(c.dir.0.join("talk.json"), job.to_string()).unwrap();
    let n1 = c.agents[0].api();
    let out = c.cli(&["job", "run", "talk.json", "--addr", &n1]);
    assert!(out.status.success(), "{}", stderr(&out));
    // Asked at n1, answered by n2: n1 redirects, the CLI checks n2 is a member and keeps the
    // token, which n2 (off loopback) needs for a read.
    let logs = wait_for(DEADLINE, "the task's output through n1", || {
        let out = c.cli(&["task", "logs", "talk", "0", "--addr", &n1]);
        assert!(out.status.success(), "{}", stderr(&out));
        let text = stdout(&out);
        text.contains("hello-from-slot-0").then_some(text)
    });
    assert_eq!(logs.trim(), "hello-from-slot-0");
    let out = c.cli(&["job", "stop", "talk", "--addr", &n1]);
    assert!(out.status.success(), "{}", stderr(&out));
}

/// A fake agent: answers a task-log request with a redirect to `target`, and `/v1/nodes` with
/// a cluster that does not contain it.
fn fake_redirecting_agent(target: SocketAddr) -> (SocketAddr, std::thread::JoinHandle<()>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        // The CLI makes two requests: the logs and the member list.
        for _ in 0..2 {
            let (mut s, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(s.try_clone().unwrap());
            let mut request_line = String::new();
            reader.read_line(&mut request_line).unwrap();
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let answer = if request_line.contains("/logs") {
                format!(
                    "HTTP/1.1 307 Temporary Redirect\r\nLocation: http://{target}/v1/tasks/j/0/logs\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                )
            } else {
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n[]".to_string()
            };
            s.write_all(answer.as_bytes()).unwrap();
        }
    });
    (addr, server)
}

#[test]
fn the_cli_follows_no_redirect_to_a_stranger() {
    let stranger = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    stranger.set_nonblocking(true).unwrap();
    let (fake, server) = fake_redirecting_agent(stranger.local_addr().unwrap());
    let out = run(&[
        "task",
        "logs",
        "j",
        "0",
        "--token",
        "secret-that-must-stay-home",
        "--addr",
        &format!("http://{fake}"),
    ]);
    server.join().unwrap();
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(
        err.contains("not the API of a member of the cluster"),
        "{err}"
    );
    assert!(
        stranger.accept().is_err(),
        "the CLI connected to the redirect's target"
    );
}

#[test]
fn a_token_file_open_to_others_is_refused_at_start() {
    let dir = TempDir::new("exposed-token");
    let key = keygen(&dir.0, "cluster.key");
    let token = dir.0.join("t");
    std::fs::write(&token, "a".repeat(64)).unwrap();
    std::fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let out = run_in(
        &dir.0,
        &[
            "agent",
            "--name",
            "x",
            "--bind",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
            "--dns",
            "127.0.0.1:0",
            "--cluster-key-file",
            key.to_str().unwrap(),
            "--http-token-file",
            token.to_str().unwrap(),
        ],
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("chmod 600"), "{}", stderr(&out));
}

/// Writes `text` as the token file at `path`, mode `mode`, in one rename (as an operator's
/// tooling would).
fn write_token_file(path: &Path, text: &str, mode: u32) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// `docs/security.md`, "Rotation": the agent re-reads its token file within seconds, accepts
/// every token in it, and keeps the tokens it had when the new file cannot be used; the CLI
/// sends the first line's.
#[test]
fn the_token_file_is_reloaded_without_a_restart() {
    let dir = TempDir::new("token-reload");
    let key = keygen(&dir.0, "cluster.key");
    let file = dir.0.join("api.token");
    let (old, new) = ("0a".repeat(32), "1b".repeat(32));
    write_token_file(&file, &format!("{old}\n"), 0o600);
    let agent = Agent::start(AgentSpec {
        extra: vec!["--http-token-file".into(), file.display().to_string()],
        ..AgentSpec::new("n1", &key, &dir.0)
    });
    // A change with the token: 404 for a job that does not exist, 403 with a wrong token.
    let stop = |token: &str| {
        send(
            agent.http,
            "DELETE",
            "/v1/jobs/nothing-here",
            &[("X-Shoal-Token", token)],
            "",
        )
        .0
    };
    assert_eq!((stop(&old), stop(&new)), (404, 403));

    write_token_file(&file, &format!("{new}\n{old}\n"), 0o600);
    wait_for(DEADLINE, "the new token is accepted", || {
        (stop(&new) == 404).then_some(())
    });
    assert_eq!(stop(&old), 404, "the old one too, until it is removed");
    // The CLI sends a token file's first line: a change with a file whose first line is the
    // accepted token goes through (404: no such job), one whose first line is not is refused.
    let bogus = "2c".repeat(32);
    for (name, text, refused) in [
        ("first-ok", format!("{new}\n{bogus}\n"), false),
        ("first-bogus", format!("{bogus}\n{new}\n"), true),
    ] {
        let path = dir.0.join(name);
        write_token_file(&path, &text, 0o600);
        let out = run(&[
            "job",
            "stop",
            "nothing-here",
            "--addr",
            &agent.api(),
            "--token-file",
            path.to_str().unwrap(),
        ]);
        assert!(!out.status.success());
        assert_eq!(
            stderr(&out).contains("wrong token"),
            refused,
            "{name}: {}",
            stderr(&out)
        );
    }

    write_token_file(&file, &format!("{new}\n"), 0o600);
    wait_for(DEADLINE, "the old token is refused", || {
        (stop(&old) == 403).then_some(())
    });
    assert_eq!(stop(&new), 404);

    // A file others may read is not taken: the agent says so and keeps the token it has.
    write_token_file(&file, &format!("{old}\n"), 0o644);
    let log = dir.0.join("n1.log");
    wait_for(DEADLINE, "the agent refuses the exposed file", || {
        std::fs::read_to_string(&log)
            .ok()?
            .contains("chmod 600")
            .then_some(())
    });
    assert_eq!((stop(&old), stop(&new)), (403, 404));
}
