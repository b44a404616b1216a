//! The API's JSON field names, pinned (README, "HTTP API": "field names are a public
//! contract"; `node/src/api.rs`: "add, never rename"). Scripts, the CLI of another version, the
//! web UI and dashboards read these names; renaming or dropping one breaks them silently, since
//! JSON has no schema a client would be compiled against. So this test starts two agents, runs
//! a small service with a port and an `[update]` block, waits until the cluster is at rest, and
//! compares every key path of the main read endpoints with `tests/golden/api-fields.txt`.
//!
//! A path is the keys from the root, `.`-separated, with `[]` for "every element of an array",
//! e.g. `GET /v1/jobs [].tasks[].ports.{name}`; values are ignored. Objects whose keys are data
//! (port names, attributes, environment variables, node names, job ids) have their keys
//! replaced by a placeholder, so the file does not depend on this run's names. Fields that are
//! absent in some states (a drain in force, a failed deployment, a health note) are absent at
//! rest and so not pinned here.
//!
//! After an intended change (a new field), regenerate the file and review its diff:
//! `SHOAL_BLESS=1 cargo nextest run -p shoal --test api_surface`.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Agent, TaskCluster, http_request, start_agents, wait_for};
use serde_json::{Value, json};

const DEADLINE: Duration = Duration::from_secs(90);

/// The golden file.
fn golden_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/api-fields.txt")
}

/// Keys of objects under these names are data, not field names.
const DATA_KEYED: &[(&str, &str)] = &[
    ("ports", "{port name}"),
    ("attributes", "{attribute}"),
    ("env", "{variable}"),
];

/// Adds the key paths of `value`, below `prefix`, to `out`. `names` maps data values that
/// appear as keys (node names, the job id) to their placeholder.
fn key_paths(
    value: &Value,
    prefix: &str,
    parent_key: &str,
    names: &[(&str, &str)],
    out: &mut BTreeSet<String>,
) {
    match value {
        Value::Object(map) => {
            let data_keyed = DATA_KEYED.iter().find(|(k, _)| *k == parent_key);
            for (key, child) in map {
                let shown = match data_keyed {
                    Some((_, placeholder)) => placeholder,
                    None => names
                        .iter()
                        .find(|(name, _)| name == key)
                        .map_or(key.as_str(), |(_, placeholder)| placeholder),
                };
                let path = if prefix.is_empty() {
                    shown.to_string()
                } else {
                    format!("{prefix}.{shown}")
                };
                out.insert(path.clone());
                key_paths(child, &path, key, names, out);
            }
        }
        Value::Array(items) => {
            let path = format!("{prefix}[]");
            for item in items {
                key_paths(item, &path, "", names, out);
            }
        }
        _ => {}
    }
}

fn get_json(agent: &Agent, path: &str) -> Value {
    let answer = http_request(agent.http, "GET", path, None, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    assert_eq!(answer.status, 200, "GET {path}: {}", answer.body);
    serde_json::from_str(&answer.body)
        .unwrap_or_else(|e| panic!("GET {path}: {e}: {}", answer.body))
}

/// The events of `GET /v1/events?follow=false`: each `data:` line's JSON.
fn events(agent: &Agent) -> Vec<Value> {
    let answer = http_request(
        agent.http,
        "GET",
        "/v1/events?follow=false",
        None,
        Duration::from_secs(10),
    )
    .expect("GET /v1/events");
    assert_eq!(answer.status, 200, "{}", answer.body);
    answer
        .body
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|d| serde_json::from_str(d.trim()).unwrap())
        .collect()
}

/// Whether `job` (from `GET /v1/jobs/web`) is at rest: running, every task running and
/// healthy with its port, and its deployment complete.
fn at_rest(job: &Value) -> bool {
    let tasks = job["tasks"].as_array().map_or(&[][..], Vec::as_slice);
    job["status"] == "running"
        && tasks.len() == 2
        && tasks.iter().all(|t| {
            t["state"] == "running" && t["health"] == "healthy" && t["ports"]["http"].is_u64()
        })
        && job["deployment"]["status"] == "complete"
}

/// Every endpoint's key paths at `agent`, as `GET PATH KEY-PATH` lines.
fn surface(agent: &Agent) -> BTreeSet<String> {
    // Node names and the job id, wherever they appear as keys.
    let names = [("n1", "{node}"), ("n2", "{node}"), ("web", "{job}")];
    let mut lines = BTreeSet::new();
    // Each endpoint as the README names it, and the path asked for it.
    let endpoints = [
        ("/v1/health", "/v1/health"),
        ("/v1/nodes", "/v1/nodes"),
        ("/v1/nodes/{name}", "/v1/nodes/n1"),
        ("/v1/agent/self", "/v1/agent/self"),
        ("/v1/jobs", "/v1/jobs"),
        ("/v1/jobs/{id}", "/v1/jobs/web"),
        ("/v1/jobs/{id}/versions", "/v1/jobs/web/versions"),
        ("/v1/services", "/v1/services"),
        ("/v1/services/{name}", "/v1/services/web"),
        ("/v1/keyring", "/v1/keyring"),
    ];
    for (endpoint, asked) in endpoints {
        let mut paths = BTreeSet::new();
        key_paths(&get_json(agent, asked), "", "", &names, &mut paths);
        lines.extend(paths.iter().map(|p| format!("GET {endpoint} {p}")));
    }
    // Events: the envelope only. Which events a run records depends on timing, and each type
    // has its own payload.
    for event in events(agent) {
        for key in event.as_object().unwrap().keys() {
            lines.insert(format!("GET /v1/events data.{key}"));
        }
    }
    lines
}

#[test]
fn the_apis_json_field_names_match_the_golden_file() {
    let (dir, agents) = start_agents(2, "api-surface", &[], DEADLINE, |n| {
        n["status"] == "alive" && n["port_range"].is_object()
    });
    let c = TaskCluster::new(dir, agents);
    let spec = json!({
        "id": "web", "type": "service", "count": 2, "command": "sh",
        "args": ["-c", format!("echo $$ >> {}; exec sleep 600", c.pids.display())],
        "resources": {"cpu": 10, "memory": 8}, "ports": [{"name": "http"}], "tags": ["blue"],
        "update": {"max_parallel": 1, "min_healthy_ms": 100}
    });
    c.submit(&spec);
    let n1 = &c.agents[0];
    wait_for(DEADLINE, "web is at rest with 2 healthy instances", || {
        let services = get_json(n1, "/v1/services/web");
        let healthy = services["instances"]
            .as_array()
            .is_some_and(|i| i.len() == 2 && i.iter().all(|i| i["health"] == "healthy"));
        (healthy && at_rest(&get_json(n1, "/v1/jobs/web"))).then_some(())
    });

    let got = surface(n1);
    let header = "# The API's JSON key paths (tests/api_surface.rs). Regenerate after an intended\n\
                  # change with `SHOAL_BLESS=1 cargo nextest run -p shoal --test api_surface`.\n";
    if std::env::var_os("SHOAL_BLESS").is_some() {
        let body: String = got.iter().map(|l| format!("{l}\n")).collect();
        std::fs::create_dir_all(golden_path().parent().unwrap()).unwrap();
        std::fs::write(golden_path(), format!("{header}{body}")).unwrap();
        eprintln!("wrote {} ({} paths)", golden_path().display(), got.len());
        return;
    }
    let golden: BTreeSet<String> = std::fs::read_to_string(golden_path())
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(str::to_string)
        .collect();
    let added: Vec<&String> = got.difference(&golden).collect();
    let removed: Vec<&String> = golden.difference(&got).collect();
    assert!(
        added.is_empty() && removed.is_empty(),
        "the API's JSON fields differ from {}.\nadded:\n  {}\nremoved:\n  {}\n\
         Field names are a public contract: renaming or removing one breaks clients. If the \
         change is intended (an added field), regenerate the file with \
         `SHOAL_BLESS=1 cargo nextest run -p shoal --test api_surface` and review its diff.",
        golden_path().display(),
        added
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n  "),
        removed
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n  "),
    );
}
