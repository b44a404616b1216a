//! The web UI in a real browser (`node/src/ui/`, `docs/observability.md`): headless Chromium
//! (Debian's `chromium`; `.ci/run` installs it) opens `/ui` of a 3-agent cluster. The rendered
//! DOM shows every node and a submitted job's tasks; after a `kill -9` of one agent, the open
//! page shows it `down` without a reload.
//!
//! How the live page is read, deterministically: the page writes a summary of what it drew
//! (read back from its own DOM) into `document.title`, with the number of loads of the tab;
//! Chromium's DevTools HTTP endpoint (`/json/list`) reports every page's title, so the test
//! polls it with a deadline. The simulation viewer needs a file chosen in the page: that test
//! drives the DevTools protocol (`DOM.setFileInputFiles`) over a small WebSocket client.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Agent, run, start_agents, wait_for};
use serde_json::Value;

const DEADLINE: Duration = Duration::from_secs(60);

fn chromium() -> Command {
    let found = Command::new("sh")
        .args(["-c", "command -v chromium"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "chromium not found: install Debian's `chromium` package (.ci/run does)"
    );
    let mut c = Command::new("chromium");
    // --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
    ]);
    c.stdout(Stdio::null()).stderr(Stdio::null());
    c
}

/// The DOM of `url` once its scripts ran for 3 s of virtual time.
fn dump_dom(profile: &Path, url: &str) -> String {
    let out = chromium()
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(["--virtual-time-budget=3000", "--dump-dom", url])
        .stdout(Stdio::piped())
        .output()
        .expect("chromium runs");
    assert!(out.status.success(), "chromium --dump-dom failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A headless Chromium showing one page, stopped by its PID when dropped.
struct Browser {
    child: Child,
    devtools: std::net::SocketAddr,
}

impl Browser {
    fn open(profile: &Path, url: &str) -> Self {
        let child = chromium()
            .arg(format!("--user-data-dir={}", profile.display()))
            .args(["--remote-debugging-port=0", url])
            .spawn()
            .expect("chromium runs");
        let port_file = profile.join("DevToolsActivePort");
        let port: u16 = wait_for(DEADLINE, "Chromium's DevTools port", || {
            std::fs::read_to_string(&port_file)
                .ok()?
                .lines()
                .next()?
                .parse()
                .ok()
        });
        Browser {
            child,
            devtools: format!("127.0.0.1:{port}").parse().unwrap(),
        }
    }

    /// The DevTools entry of the page whose URL contains `/ui`.
    fn page(&self) -> Option<Value> {
        let pages = devtools_get(self.devtools, "/json/list")?;
        pages.as_array()?.iter().find_map(|p| {
            (p["type"] == "page" && p["url"].as_str()?.contains("/ui")).then(|| p.clone())
        })
    }

    /// The title of that page.
    fn title(&self) -> Option<String> {
        self.page()?["title"].as_str().map(str::to_string)
    }

    /// Waits until the title satisfies `pred`; panics with the last title at the deadline.
    fn wait_title(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let end = Instant::now() + DEADLINE;
        let mut last = None;
        while Instant::now() < end {
            last = self.title();
            if last.as_deref().is_some_and(&pred) {
                return last.unwrap();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("the page never showed {what} within {DEADLINE:?}; its last title: {last:?}");
    }

    /// A DevTools protocol session with that page.
    fn devtools(&self) -> Cdp {
        let ws = self.page().unwrap()["webSocketDebuggerUrl"]
            .as_str()
            .unwrap()
            .to_string();
        Cdp::connect(&ws)
    }
}

/// A DevTools protocol session with one page over a WebSocket (RFC 6455, text frames only):
/// the few commands the tests need.
struct Cdp {
    socket: std::net::TcpStream,
    next_id: u64,
}

impl Cdp {
    fn connect(ws_url: &str) -> Self {
        use std::io::{Read, Write};
        let rest = ws_url.strip_prefix("ws://").expect("a ws:// URL");
        let (host, path) = rest.split_once('/').unwrap();
        let mut socket = std::net::TcpStream::connect(host).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        // No Origin header: Chromium accepts DevTools connections from non-browser clients.
        write!(
            socket,
            "GET /{path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: c2hvYWwtdWktdGVzdC1rZXk=\r\n\
             Sec-WebSocket-Version: 13\r\n\r\n"
        )
        .unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            socket.read_exact(&mut byte).unwrap();
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head);
        assert!(head.starts_with("HTTP/1.1 101"), "no WebSocket: {head}");
        Cdp { socket, next_id: 1 }
    }

    /// Sends one command and returns its result (events in between are skipped).
    fn call(&mut self, method: &str, params: Value) -> Value {
        use std::io::Write;
        let id = self.next_id;
        self.next_id += 1;
        let text = serde_json::json!({ "id": id, "method": method, "params": params }).to_string();
        // A client frame: FIN + text, masked (a zero mask leaves the payload as is).
        let mut frame = vec![0x81u8];
        let len = text.len();
        if len < 126 {
            frame.push(0x80 | len as u8);
        } else if len <= 0xffff {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(len as u64).to_be_bytes());
        }
        frame.extend_from_slice(&[0, 0, 0, 0]);
        frame.extend_from_slice(text.as_bytes());
        self.socket.write_all(&frame).unwrap();
        loop {
            let answer: Value = serde_json::from_slice(&self.read_message()).unwrap();
            if answer["id"] == id {
                assert!(answer["error"].is_null(), "{method}: {answer}");
                return answer["result"].clone();
            }
        }
    }

    /// One whole message from the browser (unmasked frames, continuations joined).
    fn read_message(&mut self) -> Vec<u8> {
        use std::io::Read;
        let mut message = Vec::new();
        loop {
            let mut head = [0u8; 2];
            self.socket.read_exact(&mut head).unwrap();
            let len = match head[1] & 0x7f {
                126 => {
                    let mut b = [0u8; 2];
                    self.socket.read_exact(&mut b).unwrap();
                    u64::from(u16::from_be_bytes(b))
                }
                127 => {
                    let mut b = [0u8; 8];
                    self.socket.read_exact(&mut b).unwrap();
                    u64::from_be_bytes(b)
                }
                n => u64::from(n),
            };
            let mut payload = vec![0u8; usize::try_from(len).unwrap()];
            self.socket.read_exact(&mut payload).unwrap();
            message.extend_from_slice(&payload);
            if head[0] & 0x80 != 0 {
                return message;
            }
        }
    }

    /// The value of a JavaScript expression in the page.
    fn eval(&mut self, expression: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            serde_json::json!({ "expression": expression, "returnByValue": true }),
        );
        r["result"]["value"].clone()
    }

    /// Gives the page the API token as a user does: typed into the token field, then `Use`.
    fn sign_in(&mut self, token: &str) {
        self.eval(&format!(
            "document.getElementById('token').value = {}; \
             document.querySelector('#auth button').click(); true",
            serde_json::to_string(token).unwrap()
        ));
    }
}

/// A GET to Chromium's DevTools HTTP endpoint, which keeps the connection open after its
/// answer: the body is read by its `Content-Length`.
fn devtools_get(addr: std::net::SocketAddr, path: &str) -> Option<Value> {
    use std::io::{BufRead, BufReader, Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut r = BufReader::new(s);
    let mut length = None;
    loop {
        let mut line = String::new();
        r.read_line(&mut line).ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            length = v.trim().parse().ok();
        }
    }
    let mut body = vec![0; length?];
    r.read_exact(&mut body).ok()?;
    serde_json::from_slice(&body).ok()
}

impl Drop for Browser {
    fn drop(&mut self) {
        // SIGTERM lets Chromium stop its helper processes; SIGKILL if it does not end.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn submit(agent: &Agent, dir: &Path, spec: &Value) {
    let file = dir.join("job.json");
    std::fs::write(&file, spec.to_string()).unwrap();
    let out = agent.cli(&["job", "run", file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_map_shows_every_node_and_a_jobs_tasks_and_a_killed_agent_goes_down_live() {
    let (dir, mut agents) = start_agents(3, "ui", &["--attr", "rack=r1"], DEADLINE, |x| {
        x["status"] == "alive" && !x["resources"].is_null()
    });
    let spec = serde_json::json!({
        "id": "web", "type": "service", "count": 3, "command": "sleep", "args": ["600"],
        "resources": {"cpu": 10, "memory": 8}
    });
    submit(&agents[0], &dir.0, &spec);
    wait_for(DEADLINE, "web runs 3 tasks", || {
        let out = run(&["job", "status", "web", "--json", "--addr", &agents[0].api()]);
        let view: Value = serde_json::from_slice(&out.stdout).ok()?;
        let running = view["tasks"]
            .as_array()?
            .iter()
            .filter(|t| t["state"] == "running")
            .count();
        (running == 3).then_some(())
    });
    let url = format!("{}/ui#/map", agents[0].api());

    // The rendered DOM: a tile per node, alive, and the job's three tasks.
    let dom = dump_dom(&dir.0.join("chromium-dump"), &url);
    for a in &agents {
        let tile = format!(r#"data-node="{}" data-status="alive""#, a.name);
        assert!(dom.contains(&tile), "no alive tile for {}:\n{dom}", a.name);
    }
    assert_eq!(
        dom.matches(r#"data-job="web""#).count(),
        3,
        "three task marks of web on the map:\n{dom}"
    );
    assert!(dom.contains("rack = r1"), "the map groups by rack:\n{dom}");

    // A live page: it shows the cluster, then n3 down after a kill -9, without a reload.
    let browser = Browser::open(&dir.0.join("chromium-live"), &url);
    browser.wait_title("3 alive nodes, web's 3 tasks, the stream live", |t| {
        t.contains("nodes=n1:alive,n2:alive,n3:alive")
            && t.contains("tasks=web:3 ·")
            && t.contains("live=1")
    });
    agents[2].kill9();
    let title = browser.wait_title("n3 down", |t| t.contains("n3:down"));
    assert!(title.contains("loads=1"), "the page was reloaded: {title}");
    assert!(title.contains("n1:alive,n2:alive"), "{title}");
    drop(browser);
    for a in &mut agents {
        a.stop();
    }
}

#[test]
fn the_simulation_viewer_shows_a_reports_checkers_and_timeline() {
    let (dir, mut agents) = start_agents(1, "ui-sim", &[], DEADLINE, |x| {
        x["status"] == "alive" && !x["resources"].is_null()
    });
    // A real report: a small run of a library scenario.
    let scenario =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("simulations/scenarios/steady-state.toml");
    let out_dir = dir.0.join("sim");
    let out = run(&[
        "simulate",
        scenario.to_str().unwrap(),
        "--nodes",
        "5",
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report_file = out_dir.join("report.json");
    let report: Value = serde_json::from_slice(&std::fs::read(&report_file).unwrap()).unwrap();

    let url = format!("{}/ui#/sim", agents[0].api());
    let browser = Browser::open(&dir.0.join("chromium-sim"), &url);
    browser.wait_title("the page ready", |t| t.contains("live=1"));
    let mut cdp = browser.devtools();
    // Choose the file as a user would: the input's files are set, its change event fires.
    let root = cdp.call("DOM.getDocument", serde_json::json!({}))["root"]["nodeId"].clone();
    let input = cdp.call(
        "DOM.querySelector",
        serde_json::json!({ "nodeId": root, "selector": "#sim-file" }),
    )["nodeId"]
        .clone();
    cdp.call(
        "DOM.setFileInputFiles",
        serde_json::json!({ "nodeId": input, "files": [report_file.to_str().unwrap()] }),
    );
    let shown = wait_for(DEADLINE, "the report drawn", || {
        let text = cdp.eval("document.getElementById('sim').innerText");
        let text = text.as_str()?.to_string();
        text.contains("Checkers").then_some(text)
    });
    assert!(
        shown.contains(report["scenario"].as_str().unwrap()),
        "{shown}"
    );
    assert!(
        shown.contains(report["replay"].as_str().unwrap()),
        "{shown}"
    );
    let checks = report["checks"].as_array().unwrap();
    assert!(!checks.is_empty());
    for c in checks {
        assert!(
            shown.contains(c["name"].as_str().unwrap()),
            "{c} missing:\n{shown}"
        );
    }
    let rows = cdp.eval("document.querySelectorAll('#sim table:first-of-type tbody tr').length");
    assert_eq!(rows.as_u64(), Some(checks.len() as u64));
    // The timeline chart: five step series over every sample.
    let paths = cdp.eval("document.querySelectorAll('#sim svg.chart path').length");
    assert_eq!(paths.as_u64(), Some(5));
    let steps = cdp.eval(
        "document.querySelector('#sim svg.chart path').getAttribute('d').split(/[MH]/).length - 1",
    );
    assert_eq!(
        steps.as_u64(),
        Some(report["timeline"].as_array().unwrap().len() as u64),
        "one step per sample of the timeline"
    );
    drop(cdp);
    drop(browser);
    for a in &mut agents {
        a.stop();
    }
}

#[test]
fn the_ui_submits_and_stops_a_job_with_the_token_the_user_gives_it() {
    let (dir, mut agents) = start_agents(1, "ui-token", &[], DEADLINE, |x| {
        x["status"] == "alive" && !x["resources"].is_null()
    });
    let n1 = &agents[0];
    let url = format!("{}/ui#/jobs", n1.api());
    let browser = Browser::open(&dir.0.join("chromium-token"), &url);
    browser.wait_title("the page ready", |t| t.contains("live=1"));
    let mut cdp = browser.devtools();
    let spec = r#"{"id": "from-ui", "type": "service", "count": 2, "command": "sleep", "args": ["600"], "resources": {"cpu": 10, "memory": 8}}"#;
    let submit = format!(
        "document.getElementById('submit-result').textContent = ''; \
         document.getElementById('spec').value = {}; \
         document.getElementById('submit').click(); true",
        serde_json::to_string(spec).unwrap()
    );
    let result = |cdp: &mut Cdp| {
        let r = cdp.eval("document.getElementById('submit-result').textContent");
        r.as_str().filter(|s| !s.is_empty()).map(str::to_string)
    };
    // Without the token, a change is refused, and the page says why.
    cdp.eval(&submit);
    let refused = wait_for(DEADLINE, "the refusal shown", || result(&mut cdp));
    assert!(refused.starts_with("401"), "{refused}");
    assert!(refused.contains("token"), "{refused}");
    // The user gives the token: kept in sessionStorage, sent with every call.
    let token = n1.token();
    cdp.sign_in(&token);
    let kept = cdp.eval("sessionStorage.getItem('shoal-token')");
    assert_eq!(kept.as_str(), Some(token.as_str()));
    cdp.eval(&submit);
    let accepted = wait_for(DEADLINE, "the acceptance shown", || result(&mut cdp));
    assert!(accepted.starts_with("accepted"), "{accepted}");
    // The jobs list shows it, live; then the job's page stops it.
    wait_for(DEADLINE, "the job listed and running", || {
        let text = cdp.eval("document.getElementById('jobs').innerText");
        let text = text.as_str()?;
        text.lines()
            .any(|l| l.starts_with("from-ui") && l.contains("running"))
            .then_some(())
    });
    cdp.eval("window.confirm = () => true; location.hash = '#/jobs/from-ui'; true");
    wait_for(DEADLINE, "the stop button", || {
        cdp.eval("!!document.getElementById('stop-job')")
            .as_bool()
            .filter(|b| *b)
    });
    cdp.eval("document.getElementById('stop-job').click(); true");
    wait_for(DEADLINE, "the job stopped", || {
        let out = run(&["job", "status", "from-ui", "--json", "--addr", &n1.api()]);
        let view: Value = serde_json::from_slice(&out.stdout).ok()?;
        (view["stopped"] == true).then_some(())
    });
    drop(cdp);
    drop(browser);
    for a in &mut agents {
        a.stop();
    }
}

/// The job page of a job with an `[update]` block: its versions and the rollout's progress,
/// updated from the event stream; promote and revert with the token the user gave.
#[test]
fn the_job_page_shows_versions_and_a_rollout_and_promotes_and_reverts_it() {
    let (dir, mut agents) = start_agents(1, "ui-rollout", &[], DEADLINE, |x| {
        x["status"] == "alive" && !x["resources"].is_null()
    });
    let n1 = &agents[0];
    let spec = |tag: &str| {
        serde_json::json!({
            "id": "web", "type": "service", "count": 2, "command": "sleep", "args": ["600"],
            "env": {"TAG": tag}, "resources": {"cpu": 10, "memory": 8},
            "update": {"max_parallel": 1, "canary": 1, "min_healthy_ms": 200}
        })
    };
    let deployment = |field: &str| {
        let out = run(&["job", "status", "web", "--json", "--addr", &n1.api()]);
        let view: Value = serde_json::from_slice(&out.stdout).ok()?;
        view["deployment"][field].as_str().map(str::to_string)
    };
    submit(n1, &dir.0, &spec("v1"));
    wait_for(DEADLINE, "version 1 complete", || {
        (deployment("status")? == "complete").then_some(())
    });
    let url = format!("{}/ui#/jobs/web", n1.api());
    let browser = Browser::open(&dir.0.join("chromium-rollout"), &url);
    browser.wait_title("the page ready", |t| t.contains("live=1"));
    let mut cdp = browser.devtools();
    cdp.eval("window.confirm = () => true; true");
    cdp.sign_in(&n1.token());
    // What the page drew: the deployment line and the versions table, newest first.
    let drawn = |cdp: &mut Cdp| {
        let v = cdp.eval(
            "JSON.stringify({ deploy: (document.getElementById('deploy') || {}).dataset || null, \
             summary: (document.getElementById('deploy') || {}).textContent || '', \
             versions: [...document.querySelectorAll('#versions tr[data-version]')]\
               .map((r) => r.dataset.version + ':' + r.dataset.status), \
             promote: !!document.getElementById('promote'), \
             result: (document.getElementById('job-result') || {}).textContent || '' })",
        );
        serde_json::from_str::<Value>(v.as_str().unwrap_or("{}")).unwrap()
    };
    let wait_drawn = |cdp: &mut Cdp, what: &str, pred: &dyn Fn(&Value) -> bool| {
        let mut last = Value::Null;
        let end = Instant::now() + DEADLINE;
        while Instant::now() < end {
            last = drawn(cdp);
            if pred(&last) {
                return last;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("the job page never showed {what}; it last showed {last}");
    };
    wait_drawn(&mut cdp, "version 1 complete", &|d| {
        d["deploy"]["status"] == "complete" && d["versions"] == serde_json::json!(["1:complete"])
    });
    // Version 2 from the CLI: the open page follows it live to its canary, then waits.
    submit(n1, &dir.0, &spec("v2"));
    let waiting = wait_drawn(&mut cdp, "version 2 waiting for promote", &|d| {
        d["deploy"]["status"] == "awaiting promotion" && d["promote"] == true
    });
    assert_eq!(
        waiting["versions"],
        serde_json::json!(["2:awaiting promotion", "1:complete"]),
        "{waiting}"
    );
    assert!(
        waiting["summary"]
            .as_str()
            .unwrap()
            .contains("version 2 · waiting for promote (1 of 1 canaries healthy)"),
        "{waiting}"
    );
    cdp.eval("document.getElementById('promote').click(); true");
    let done = wait_drawn(&mut cdp, "version 2 complete", &|d| {
        d["deploy"]["status"] == "complete" && d["deploy"]["version"] == "2"
    });
    assert_eq!(
        done["versions"],
        serde_json::json!(["2:complete", "1:complete"]),
        "{done}"
    );
    // Reverting to version 1 from the page: version 3, no canaries.
    cdp.eval("document.querySelector('button[data-revert=\"1\"]').click(); true");
    let reverted = wait_drawn(&mut cdp, "version 3 (a revert) complete", &|d| {
        d["deploy"]["status"] == "complete" && d["deploy"]["version"] == "3"
    });
    assert!(
        reverted["summary"]
            .as_str()
            .unwrap()
            .contains("(revert to version 1)"),
        "{reverted}"
    );
    assert_eq!(
        deployment("summary")
            .as_deref()
            .map(|s| s.contains("version 3")),
        Some(true)
    );
    // The rollout's events reached the page through the stream.
    let told = cdp.eval(
        "S.events.filter((e) => e.topic === 'Deployment' && e.payload.job === 'web')\
           .map((e) => e.payload.version + ':' + e.type).join(',')",
    );
    let told = told.as_str().unwrap();
    for step in [
        "2:Started",
        "2:AwaitingPromotion",
        "2:Promoted",
        "2:Completed",
        "3:Reverted",
        "3:Completed",
    ] {
        assert!(told.contains(step), "{step} missing from {told}");
    }
    drop(cdp);
    drop(browser);
    for a in &mut agents {
        a.stop();
    }
}

/// The port range every agent of the ports-and-drain test hands out (100 ports).
const PORT_RANGE: (u64, u64) = (24000, 24099);

/// Per node, the ports of `web`'s running tasks inside [`PORT_RANGE`] as the map's tiles
/// write them (`data-ports`: in use / range size), from `job status` at `agent`.
fn expected_ports(
    agent: &Agent,
    nodes: &[&str],
) -> Option<std::collections::BTreeMap<String, String>> {
    let out = agent.cli(&["job", "status", "web", "--json"]);
    let view: Value = serde_json::from_slice(&out.stdout).ok()?;
    let mut used: std::collections::BTreeMap<String, u64> =
        nodes.iter().map(|n| ((*n).to_string(), 0)).collect();
    for t in view["tasks"].as_array()? {
        if t["state"] != "running" {
            continue;
        }
        let ports = t["ports"].as_object()?;
        for p in ports.values() {
            let p = p.as_u64()?;
            assert!(
                (PORT_RANGE.0..=PORT_RANGE.1).contains(&p),
                "{p} outside the range"
            );
            *used.get_mut(t["node"].as_str()?)? += 1;
        }
    }
    let size = PORT_RANGE.1 - PORT_RANGE.0 + 1;
    Some(
        used.into_iter()
            .map(|(n, u)| (n, format!("{u}/{size}")))
            .collect(),
    )
}

/// What the open map shows of each node: `ports|drain|text` by node name.
fn map_tiles(cdp: &mut Cdp) -> Value {
    let v = cdp.eval(
        "JSON.stringify(Object.fromEntries([...document.querySelectorAll('#map .tile[data-node]')]\
           .map((t) => [t.dataset.node, { ports: t.dataset.ports, drain: t.dataset.drain, \
                                          text: t.innerText }])))",
    );
    serde_json::from_str(v.as_str().unwrap_or("{}")).unwrap_or(Value::Null)
}

/// Ports on the map, and a drain driven from the node page: every tile's ports in use match
/// the running tasks' ports against the agents' `--port-range`; the node page's Drain button
/// (no deadline) makes the open map show the node `draining` while a batch task holds it,
/// `drained` once that task is stopped, and nothing once its Make eligible button is used,
/// all without a reload.
#[test]
fn the_map_shows_ports_in_use_and_a_drain_driven_from_the_node_page() {
    let range = format!("{}-{}", PORT_RANGE.0, PORT_RANGE.1);
    let (dir, mut agents) = start_agents(
        3,
        "ui-drain",
        &["--attr", "rack=r1", "--port-range", &range],
        DEADLINE,
        |x| x["status"] == "alive" && !x["resources"].is_null(),
    );
    let names = ["n1", "n2", "n3"];
    submit(
        &agents[0],
        &dir.0,
        &serde_json::json!({
            "id": "web", "type": "service", "count": 4, "command": "sleep", "args": ["600"],
            "resources": {"cpu": 10, "memory": 8},
            "ports": [{"name": "http"}, {"name": "admin"}]
        }),
    );
    // A batch task on n3 that runs on through a drain without a deadline.
    submit(
        &agents[0],
        &dir.0,
        &serde_json::json!({
            "id": "crunch", "type": "batch", "count": 1, "command": "sleep", "args": ["600"],
            "resources": {"cpu": 10, "memory": 8}, "constraints": ["node == n3"]
        }),
    );
    let running = |job: &str| {
        let out = run(&["job", "status", job, "--json", "--addr", &agents[0].api()]);
        let view: Value = serde_json::from_slice(&out.stdout).ok()?;
        let tasks = view["tasks"].as_array()?;
        Some(tasks.iter().filter(|t| t["state"] == "running").count())
    };
    wait_for(DEADLINE, "web runs 4 tasks and crunch 1", || {
        (running("web")? == 4 && running("crunch")? == 1).then_some(())
    });

    let url = format!("{}/ui#/map", agents[0].api());
    let browser = Browser::open(&dir.0.join("chromium-drain"), &url);
    browser.wait_title("the page ready", |t| t.contains("live=1"));
    let mut cdp = browser.devtools();
    cdp.eval("window.confirm = () => true; true");
    cdp.sign_in(&agents[0].token());

    // Every tile's ports in use match the running tasks' ports, in numbers and in words.
    let ports_match = |cdp: &mut Cdp| {
        let want = expected_ports(&agents[0], &names)?;
        let tiles = map_tiles(cdp);
        let shown: std::collections::BTreeMap<String, String> = names
            .iter()
            .map(|n| {
                let p = tiles[n]["ports"].as_str().unwrap_or("").to_string();
                (n.to_string(), p)
            })
            .collect();
        let worded = names.iter().all(|n| {
            let (used, size) = want[*n].split_once('/').unwrap();
            tiles[n]["text"]
                .as_str()
                .is_some_and(|t| t.contains(&format!("ports {used} / {size}")))
        });
        (shown == want && worded).then_some(want)
    };
    let before = wait_for(DEADLINE, "tiles showing web's ports", || {
        ports_match(&mut cdp)
    });
    let total: u64 = before
        .values()
        .map(|p| p.split_once('/').unwrap().0.parse::<u64>().unwrap())
        .sum();
    assert_eq!(total, 8, "4 tasks with 2 ports each: {before:?}");

    // The node page of n3: Drain without a deadline.
    cdp.eval("location.hash = '#/nodes/n3'; true");
    wait_for(DEADLINE, "n3's page with its Drain button", || {
        cdp.eval(
            "document.getElementById('node-head')?.dataset.node === 'n3' && \
             !document.getElementById('drain-form').hidden",
        )
        .as_bool()
        .filter(|b| *b)
    });
    cdp.eval(
        "document.getElementById('drain-no-deadline').checked = true; \
         document.getElementById('drain').click(); true",
    );
    let result = wait_for(DEADLINE, "the drain accepted", || {
        let r = cdp.eval("document.getElementById('node-result').textContent");
        r.as_str()
            .filter(|s| !s.is_empty() && *s != "sending…")
            .map(str::to_string)
    });
    assert!(result.starts_with("accepted"), "{result}");
    wait_for(DEADLINE, "n3's page showing it draining", || {
        let v = cdp.eval(
            "document.getElementById('node-head').dataset.drain + '|' + \
             document.getElementById('node').innerText",
        );
        let v = v.as_str()?.to_string();
        (v.starts_with("draining|") && v.contains("no deadline")).then_some(())
    });

    // The map: n3 draining while the batch task runs, its services moved off.
    cdp.eval("location.hash = '#/map'; true");
    let draining = wait_for(DEADLINE, "n3 draining on the map, one task left", || {
        let tiles = map_tiles(&mut cdp);
        let n3 = &tiles["n3"];
        // "1 task left", or "1 of N tasks left" when the page saw more before.
        let text = n3["text"].as_str()?;
        let one_left = text.contains("1 task left") || text.contains("1 of ");
        (n3["drain"] == "draining" && one_left).then_some(tiles)
    });
    assert!(
        draining["n3"]["text"]
            .as_str()
            .unwrap()
            .contains("no deadline"),
        "{draining}"
    );
    assert_eq!(draining["n1"]["drain"], "", "{draining}");
    // Stopping the batch job lets the drain complete.
    let out = agents[0].cli(&["job", "stop", "crunch"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for(DEADLINE, "n3 drained on the map", || {
        (map_tiles(&mut cdp)["n3"]["drain"] == "drained").then_some(())
    });
    // The moved tasks' ports are counted where they run now; none on n3.
    let after = wait_for(
        DEADLINE,
        "tiles showing web's ports after the drain",
        || ports_match(&mut cdp),
    );
    assert_eq!(after["n3"], "0/100", "{after:?}");

    // Make eligible (it ends the drain): the map shows n3 taking work again.
    cdp.eval("location.hash = '#/nodes/n3'; true");
    wait_for(DEADLINE, "n3's Make eligible button", || {
        cdp.eval("!document.getElementById('eligible-on').hidden && document.getElementById('node-head')?.dataset.node === 'n3'")
            .as_bool()
            .filter(|b| *b)
    });
    cdp.eval(
        "document.getElementById('node-result').textContent = ''; \
         document.getElementById('eligible-on').click(); true",
    );
    cdp.eval("location.hash = '#/map'; true");
    wait_for(DEADLINE, "n3 eligible again on the map", || {
        (map_tiles(&mut cdp)["n3"]["drain"] == "").then_some(())
    });
    let title = browser.title().unwrap_or_default();
    assert!(title.contains("loads=1"), "the page was reloaded: {title}");
    drop(cdp);
    drop(browser);
    for a in &mut agents {
        a.stop();
    }
}
