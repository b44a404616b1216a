//! `shoal top`: the cluster map and the busiest jobs in a terminal, redrawn as the agent's
//! event stream reports changes (`docs/observability.md`, "shoal top").
//!
//! One frame is `GET /v1/nodes` and `GET /v1/jobs` drawn as text ([`frame`], a pure function).
//! Live, a task follows `GET /v1/events` and every event marks the frame stale; stale frames
//! are redrawn at most every [`REDRAW_EVERY`]. Nothing polls: a quiet cluster is not re-read.
//! `--once` prints one frame and ends (for scripts and tests). Into a pipe or a file the frames
//! follow one another, a blank line apart, without the terminal's clear-screen escapes.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use serde_json::Value;
use shoal_node::api::NodeView;

use super::client::{Api, ApiArgs};

/// Stale frames are redrawn at most this often.
const REDRAW_EVERY: Duration = Duration::from_millis(500);
/// Above this many nodes, the map shows one row per group (`--group`) instead of per node.
const NODE_ROWS: usize = 40;
/// Jobs listed, busiest (most cpu reserved by live tasks) first.
const JOB_ROWS: usize = 10;

/// `shoal top`
#[derive(Debug, Args)]
pub struct TopArgs {
    #[command(flatten)]
    api: ApiArgs,
    /// Print one frame and end.
    #[arg(long)]
    once: bool,
    /// The node attribute that groups nodes when there are many (one row per value).
    #[arg(long, default_value = "rack")]
    group: String,
}

/// Runs `shoal top`.
pub async fn run(args: TopArgs) -> anyhow::Result<ExitCode> {
    let api = Arc::new(Api::new(&args.api)?);
    if args.once {
        print!("{}", read_frame(&api, &args.group).await?);
        return Ok(ExitCode::SUCCESS);
    }
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let stale = Arc::new(tokio::sync::Notify::new());
    tokio::spawn(follow(api.clone(), stale.clone()));
    loop {
        let text = read_frame(&api, &args.group).await?;
        if terminal {
            // Home, clear, then the frame: no terminal library, no alternate screen.
            print!("\x1b[H\x1b[2J{text}");
        } else {
            println!("{text}");
        }
        stale.notified().await;
        tokio::time::sleep(REDRAW_EVERY).await;
    }
}

/// Follows the event stream, waking the drawing loop on every event; reconnects after the
/// last index seen when the stream breaks.
async fn follow(api: Arc<Api>, stale: Arc<tokio::sync::Notify>) {
    let mut since: Option<u64> = None;
    loop {
        // The first connection replays the ring: one redraw more, after which only news.
        let path = match since {
            Some(i) => format!("/v1/events?since={i}"),
            None => "/v1/events".to_string(),
        };
        if let Ok(mut resp) = api.get_stream(&path).await {
            let mut buf = Vec::new();
            while let Ok(Some(chunk)) = resp.chunk().await {
                buf.extend_from_slice(&chunk);
                while let Some(end) = buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=end).collect();
                    let line = String::from_utf8_lossy(&line);
                    if let Some(id) = line.trim_end().strip_prefix("id:") {
                        since = id.trim().parse().ok().or(since);
                        stale.notify_one();
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn read_frame(api: &Api, group: &str) -> anyhow::Result<String> {
    let nodes: Vec<NodeView> = serde_json::from_str(&api.get("/v1/nodes").await?)?;
    let jobs: Vec<Value> = serde_json::from_str(&api.get("/v1/jobs").await?)?;
    Ok(frame(&nodes, &jobs, group))
}

fn bar(used: u64, cap: u64) -> String {
    const WIDTH: u64 = 10;
    let filled = (used.saturating_mul(WIDTH))
        .checked_div(cap)
        .unwrap_or(0)
        .min(WIDTH);
    let pct = (used.saturating_mul(100)).checked_div(cap).unwrap_or(0);
    format!(
        "[{}{}] {pct:>3}%",
        "#".repeat(filled as usize),
        ".".repeat((WIDTH - filled) as usize)
    )
}

/// Live tasks (running or placed) per node, from the jobs' task views.
fn tasks_by_node(jobs: &[Value]) -> BTreeMap<String, usize> {
    let mut by = BTreeMap::new();
    for t in jobs
        .iter()
        .flat_map(|j| j["tasks"].as_array().into_iter().flatten())
    {
        if matches!(t["state"].as_str(), Some("running" | "proposed"))
            && let Some(node) = t["node"].as_str()
        {
            *by.entry(node.to_string()).or_default() += 1;
        }
    }
    by
}

/// One frame: a summary line, the nodes (or groups of them), the busiest jobs.
#[must_use]
pub fn frame(nodes: &[NodeView], jobs: &[Value], group: &str) -> String {
    let mut out = String::new();
    let count = |s: &str| nodes.iter().filter(|n| n.status == s).count();
    let tasks = tasks_by_node(jobs);
    out.push_str(&format!(
        "shoal top · {}: {} alive, {} suspect, {} down, {} left · {} · {}\n\n",
        super::counted(nodes.len(), "node"),
        count("alive"),
        count("suspect"),
        count("down"),
        count("left"),
        super::counted(jobs.len(), "job"),
        super::counted(tasks.values().sum::<usize>(), "live task")
    ));
    if nodes.len() <= NODE_ROWS {
        out.push_str(&format!(
            "{:<20} {:<8} {:<20} {:<20} {:>5}\n",
            "NODE", "STATUS", "CPU", "MEMORY", "TASKS"
        ));
        for n in nodes {
            let (cap, used) = (&n.resources.capacity, &n.resources.allocated);
            let status = if n.draining {
                format!("{}*", n.status)
            } else {
                n.status.clone()
            };
            out.push_str(&format!(
                "{:<20} {:<8} {:<20} {:<20} {:>5}\n",
                n.name,
                status,
                bar(used.cpu_millicores, cap.cpu_millicores),
                bar(used.memory_mib, cap.memory_mib),
                tasks.get(&n.name).copied().unwrap_or(0)
            ));
        }
    } else {
        out.push_str(&groups(nodes, &tasks, group));
    }
    out.push('\n');
    out.push_str(&busiest(jobs));
    out
}

/// One row per value of attribute `group`: nodes by status, summed use, tasks.
fn groups(nodes: &[NodeView], tasks: &BTreeMap<String, usize>, group: &str) -> String {
    #[derive(Default)]
    struct Row {
        nodes: usize,
        alive: usize,
        not_alive: usize,
        cpu: (u64, u64),
        mem: (u64, u64),
        tasks: usize,
    }
    let mut rows: BTreeMap<String, Row> = BTreeMap::new();
    for n in nodes {
        let key = n
            .attributes
            .get(group)
            .cloned()
            .unwrap_or_else(|| format!("(no {group})"));
        let r = rows.entry(key).or_default();
        r.nodes += 1;
        if n.status == "alive" {
            r.alive += 1;
        } else {
            r.not_alive += 1;
        }
        r.cpu.0 += n.resources.allocated.cpu_millicores;
        r.cpu.1 += n.resources.capacity.cpu_millicores;
        r.mem.0 += n.resources.allocated.memory_mib;
        r.mem.1 += n.resources.capacity.memory_mib;
        r.tasks += tasks.get(&n.name).copied().unwrap_or(0);
    }
    let mut out = format!(
        "{:<20} {:>5} {:>5} {:>9} {:<20} {:<20} {:>6}\n",
        group.to_uppercase(),
        "NODES",
        "ALIVE",
        "NOT ALIVE",
        "CPU",
        "MEMORY",
        "TASKS"
    );
    for (key, r) in rows {
        out.push_str(&format!(
            "{key:<20} {:>5} {:>5} {:>9} {:<20} {:<20} {:>6}\n",
            r.nodes,
            r.alive,
            r.not_alive,
            bar(r.cpu.0, r.cpu.1),
            bar(r.mem.0, r.mem.1),
            r.tasks
        ));
    }
    out
}

/// The jobs reserving the most cpu with live tasks, with their state counts.
fn busiest(jobs: &[Value]) -> String {
    let mut rows: Vec<(u64, String)> = jobs
        .iter()
        .map(|j| {
            let tasks = j["tasks"].as_array().map(Vec::as_slice).unwrap_or(&[]);
            let running = tasks.iter().filter(|t| t["state"] == "running").count();
            let healthy = tasks.iter().filter(|t| t["health"] == "healthy").count();
            let pending = tasks.iter().filter(|t| t["state"] == "pending").count();
            let line = format!(
                "{:<24} {:<9} {:>7} {:>7} {:>7} {:>7}\n",
                j["id"].as_str().unwrap_or("?"),
                j["status"].as_str().unwrap_or("?"),
                format!("{running}/{}", j["count"]),
                healthy,
                pending,
                j["type"].as_str().unwrap_or("?"),
            );
            // Without the spec's resources in the view, weight by running tasks.
            (running as u64, line)
        })
        .collect();
    rows.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    let mut out = format!(
        "{:<24} {:<9} {:>7} {:>7} {:>7} {:>7}\n",
        "JOB", "STATUS", "RUNNING", "HEALTHY", "PENDING", "TYPE"
    );
    for (_, line) in rows.into_iter().take(JOB_ROWS) {
        out.push_str(&line);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, status: &str, rack: &str, cpu_used: u64) -> NodeView {
        serde_json::from_value(serde_json::json!({
            "name": name, "addr": "127.0.0.1:1", "status": status, "generation": 1,
            "resources": {
                "capacity": {"cpu_millicores": 1000, "memory_mib": 1000, "disk_mib": 0},
                "allocated": {"cpu_millicores": cpu_used, "memory_mib": 0, "disk_mib": 0}},
            "attributes": {"rack": rack}, "draining": false, "last_update_ms": 0,
            "quic_addr": null, "http_addr": null
        }))
        .unwrap()
    }

    fn job(id: &str, running: usize) -> Value {
        let tasks: Vec<Value> = (0..running)
            .map(|s| serde_json::json!({"slot": s, "node": "n1", "state": "running", "health": "healthy"}))
            .collect();
        serde_json::json!({"id": id, "type": "service", "status": "running", "count": running, "tasks": tasks})
    }

    #[test]
    fn a_small_cluster_shows_every_node_and_the_busiest_jobs_first() {
        let nodes = vec![node("n1", "alive", "r1", 500), node("n2", "down", "r1", 0)];
        let text = frame(&nodes, &[job("small", 1), job("big", 3)], "rack");
        assert!(
            text.starts_with(
                "shoal top · 2 nodes: 1 alive, 0 suspect, 1 down, 0 left · 2 jobs · 4 live tasks"
            ),
            "{text}"
        );
        let one = frame(&nodes[..1], &[job("small", 1)], "rack");
        assert!(
            one.starts_with(
                "shoal top · 1 node: 1 alive, 0 suspect, 0 down, 0 left · 1 job · 1 live task\n"
            ),
            "{one}"
        );
        assert!(
            text.contains("n1                   alive    [#####.....]  50%"),
            "{text}"
        );
        assert!(text.contains("n2                   down"), "{text}");
        let big = text.find("big ").unwrap();
        let small = text.find("small ").unwrap();
        assert!(big < small, "{text}");
        assert!(text.contains("3/3"), "{text}");
    }

    #[test]
    fn many_nodes_are_shown_per_group() {
        let nodes: Vec<NodeView> = (0..50)
            .map(|i| {
                node(
                    &format!("n{i}"),
                    if i == 0 { "down" } else { "alive" },
                    &format!("r{}", i % 2),
                    100,
                )
            })
            .collect();
        let text = frame(&nodes, &[], "rack");
        assert!(text.contains("RACK"), "{text}");
        assert!(!text.contains("n10 "), "{text}");
        let r0 = text.lines().find(|l| l.starts_with("r0 ")).unwrap();
        let cols: Vec<&str> = r0.split_whitespace().collect();
        assert_eq!(&cols[1..4], ["25", "24", "1"], "{r0}");
    }
}
