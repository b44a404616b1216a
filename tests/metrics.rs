//! Prometheus metrics on real agents (`node/src/metrics.rs`, `docs/observability.md`):
//! `promtool check metrics` (Debian's `prometheus` package; `.ci/run` installs it) accepts
//! `GET /v1/metrics` in the classic format and the OpenMetrics reference parser (Python's
//! `prometheus_client`, installed there too) in OpenMetrics, the counters move when a job
//! runs, and probe round trips are timed.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{http_request, run, start_agents, wait_for};

const DEADLINE: Duration = Duration::from_secs(90);

/// The exposition, as `name{labels}` → value (comments and `# EOF` left out).
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            Some((key.to_string(), value.parse().ok()?))
        })
        .collect()
}

fn scrape(addr: std::net::SocketAddr) -> String {
    let answer = http_request(addr, "GET", "/v1/metrics", None, Duration::from_secs(10))
        .expect("GET /v1/metrics");
    assert_eq!(answer.status, 200, "{}", answer.body);
    answer.body
}

/// `promtool check metrics` on `text`: its findings, or `None` when it has none.
fn promtool_findings(text: &str) -> Option<String> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool not found: install Debian's `prometheus` package (.ci/run does)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (!out.status.success() || !said.trim().is_empty()).then_some(said)
}

/// `GET /v1/metrics` asked for as Prometheus asks first (`Accept: application/openmetrics-text`),
/// read by the OpenMetrics reference parser (Python's `prometheus_client`; `.ci/run` installs
/// it): the number of metric families, or what went wrong.
fn openmetrics_families(addr: std::net::SocketAddr) -> Result<usize, String> {
    const SCRIPT: &str = r#"
import sys, urllib.request
from prometheus_client.openmetrics.parser import text_string_to_metric_families
req = urllib.request.Request(sys.argv[1], headers={
    "Accept": "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"})
with urllib.request.urlopen(req, timeout=10) as r:
    ctype, text = r.headers["Content-Type"], r.read().decode()
if not ctype.startswith("application/openmetrics-text"):
    sys.exit("answered " + ctype)
print(len(list(text_string_to_metric_families(text))))
"#;
    let out = Command::new("python3")
        .args(["-c", SCRIPT, &format!("http://{addr}/v1/metrics")])
        .output()
        .map_err(|e| format!("python3: {e}"))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(if stderr.contains("No module named 'prometheus_client'") {
            format!("pip install prometheus_client (.ci/run does): {stderr}")
        } else {
            stderr.into_owned()
        });
    }
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .map_err(|e| format!("{e}: {stderr}"))
}

fn value(s: &BTreeMap<String, f64>, key: &str) -> f64 {
    *s.get(key)
        .unwrap_or_else(|| panic!("{key} is missing from /v1/metrics: {s:#?}"))
}

#[test]
fn promtool_accepts_the_metrics_and_the_counters_move_when_a_job_runs() {
    let (dir, mut agents) = start_agents(2, "metrics", &[], DEADLINE, |x| {
        x["status"] == "alive" && !x["resources"].is_null()
    });
    let addr = agents[0].http;
    let before = scrape(addr);
    if let Some(findings) = promtool_findings(&before) {
        panic!("promtool check metrics: {findings}\n{before}");
    }
    let b = samples(&before);
    assert_eq!(value(&b, r#"shoal_members{status="alive"}"#), 2.0);
    assert_eq!(value(&b, "shoal_quorum_majority"), 1.0);
    assert_eq!(
        value(&b, r#"shoal_dns_queries_total{rcode="nxdomain"}"#),
        0.0
    );

    // Six batch tasks, submitted to n1: n1 coordinates some slots, runs some tasks.
    let spec = serde_json::json!({
        "id": "counted", "type": "batch", "count": 6, "command": "true",
        "resources": {"cpu": 10, "memory": 8}
    });
    let file = dir.0.join("counted.json");
    std::fs::write(&file, spec.to_string()).unwrap();
    let out = agents[0].cli(&["job", "run", file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for(DEADLINE, "the batch completes", || {
        let out = run(&[
            "job",
            "status",
            "counted",
            "--json",
            "--addr",
            &agents[0].api(),
        ]);
        let job: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        (job["status"] == "complete").then_some(())
    });

    // Summed over both agents, every counter saw all six tasks; n1's own API saw the submit.
    let after: Vec<BTreeMap<String, f64>> = agents
        .iter()
        .map(|a| {
            let text = scrape(a.http);
            if let Some(findings) = promtool_findings(&text) {
                panic!("promtool check metrics on {}: {findings}\n{text}", a.name);
            }
            samples(&text)
        })
        .collect();
    // Prometheus asks for OpenMetrics first: the reference parser reads what n1 answers.
    match openmetrics_families(agents[0].http) {
        Ok(n) => assert!(n >= 40, "{n} metric families in the OpenMetrics answer"),
        Err(e) => panic!("the OpenMetrics exposition: {e}"),
    }
    // A node that ran none of the tasks has no `exited_ok` series yet: it counts as 0.
    let sum = |key: &str| after.iter().filter_map(|s| s.get(key)).sum::<f64>();
    assert!(sum("shoal_scheduler_placements_total") >= 6.0);
    assert!(sum("shoal_scheduler_admissions_total") >= 6.0);
    assert!(sum("shoal_executor_starts_total") >= 6.0);
    assert!(sum(r#"shoal_executor_tasks_ended_total{outcome="exited_ok"}"#) >= 6.0);
    assert!(sum("shoal_executor_start_duration_seconds_count") >= 6.0);
    assert!(sum("shoal_scheduler_submit_to_running_seconds_count") >= 6.0);
    assert!(sum("shoal_replication_ops_applied_total") > 0.0);
    // The event stream recorded the placements and starts; nothing was evicted yet.
    assert!(
        value(&after[0], "shoal_events_emitted_total") > value(&b, "shoal_events_emitted_total")
    );
    assert_eq!(value(&after[0], "shoal_events_dropped_total"), 0.0);
    assert!(
        value(
            &after[0],
            r#"shoal_api_requests_total{route="/v1/jobs",method="POST",status="200"}"#
        ) >= 1.0
    );
    assert!(
        value(&after[0], "shoal_gossip_datagrams_received_total")
            > value(&b, "shoal_gossip_datagrams_received_total")
    );
    // Each agent probes the other every probe period; their acks are timed. The histogram
    // was in the first scrape (promtool checked it) and its count moves.
    let rtt_count = "shoal_gossip_probe_rtt_seconds_count";
    let first = value(&b, rtt_count);
    let moved = wait_for(DEADLINE, "a probe round trip is recorded", || {
        let s = samples(&scrape(addr));
        (value(&s, rtt_count) > first).then_some(s)
    });
    assert_eq!(
        value(
            &moved,
            r#"shoal_gossip_probe_rtt_seconds_bucket{le="+Inf"}"#
        ),
        value(&moved, rtt_count)
    );
    assert!(value(&moved, "shoal_gossip_probe_rtt_seconds_sum") > 0.0);
    for a in &mut agents {
        a.stop();
    }
}
