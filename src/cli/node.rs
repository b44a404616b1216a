//! `shoal node list|status|forget`: views of the cluster through any agent's API, and telling
//! the cluster that a node is gone for good.

use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use comfy_table::{Table, presets::NOTHING};
use shoal_gossip::Quorum;
use shoal_node::api::{AgentSelf, NodeView};

use super::client::{Api, ApiArgs};

/// `shoal node ...`
#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// Every node, its resources and its health, as one agent sees them.
    List {
        #[command(flatten)]
        api: ApiArgs,
        /// Print the JSON of `GET /v1/nodes`.
        #[arg(long)]
        json: bool,
    },
    /// One node in detail.
    Status {
        /// The node's name.
        name: String,
        #[command(flatten)]
        api: ApiArgs,
        /// Print the JSON of `GET /v1/nodes/NAME`.
        #[arg(long)]
        json: bool,
    },
    /// Say that nodes are gone for good (a lost rack): they stop counting toward the
    /// majority on the agent asked and on every agent it reaches. Refused for a node that
    /// is alive. Needs the API token.
    Forget {
        /// The node names.
        #[arg(required = true)]
        names: Vec<String>,
        #[command(flatten)]
        api: ApiArgs,
    },
}

/// Runs a `node` subcommand.
pub async fn run(cmd: NodeCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        NodeCommand::List { api, json } => {
            let body = Api::new(&api)?.get("/v1/nodes").await?;
            if json {
                println!("{body}");
                return Ok(ExitCode::SUCCESS);
            }
            let nodes: Vec<NodeView> =
                serde_json::from_str(&body).context("unexpected /v1/nodes body")?;
            print!("{}", table(&nodes));
            let client = Api::new(&api)?;
            if let Ok(me) = client.get("/v1/agent/self").await
                && let Ok(me) = serde_json::from_str::<AgentSelf>(&me)
                && let Some(q) = &me.quorum
            {
                println!("{}", quorum_line(&me.node.name, q));
            }
            Ok(ExitCode::SUCCESS)
        }
        NodeCommand::Forget { names, api } => {
            let client = Api::new(&api)?;
            for name in names {
                client
                    .request(
                        reqwest::Method::POST,
                        &format!("/v1/nodes/{name}/forget"),
                        Some("{}".to_string()),
                    )
                    .await
                    .with_context(|| format!("cannot forget {name}"))?;
                println!("forgot {name}");
            }
            let me: AgentSelf = serde_json::from_str(&client.get("/v1/agent/self").await?)
                .context("unexpected /v1/agent/self body")?;
            if let Some(q) = &me.quorum {
                println!("{}", quorum_line(&me.node.name, q));
            }
            Ok(ExitCode::SUCCESS)
        }
        NodeCommand::Status { name, api, json } => {
            let body = Api::new(&api)?.get(&format!("/v1/nodes/{name}")).await?;
            if json {
                println!("{body}");
                return Ok(ExitCode::SUCCESS);
            }
            let node: NodeView = serde_json::from_str(&body).context("unexpected node body")?;
            print!("{}", detail(&node));
            let client = Api::new(&api)?;
            if let Ok(me) = client.get("/v1/agent/self").await
                && let Ok(me) = serde_json::from_str::<AgentSelf>(&me)
                && me.node.name == node.name
                && let Some(q) = &me.quorum
            {
                println!("Quorum      {}", quorum_text(q));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `majority (sees 5 of 5 members)` or `NO MAJORITY: the last 2 probes failed (sees 4 of 5
/// members)`.
fn quorum_text(q: &Quorum) -> String {
    let seen = format!("sees {} of {} members", q.reachable, q.known);
    match (&q.reason, q.majority) {
        (_, true) => format!("majority ({seen})"),
        (Some(r), false) if r.starts_with("sees") => {
            format!("NO MAJORITY: {r}; places and condemns nothing")
        }
        (Some(r), false) => format!("NO MAJORITY: {r} ({seen}); places and condemns nothing"),
        (None, false) => format!("NO MAJORITY ({seen})"),
    }
}

fn quorum_line(agent: &str, q: &Quorum) -> String {
    format!("quorum as {agent} sees it: {}", quorum_text(q))
}

fn table(nodes: &[NodeView]) -> String {
    let mut t = Table::new();
    t.load_preset(NOTHING);
    t.set_header([
        "NAME",
        "STATUS",
        "ADDRESS",
        "GENERATION",
        "CPU (m)",
        "MEMORY (MiB)",
        "DISK (MiB)",
        "ATTRIBUTES",
    ]);
    for n in nodes {
        let r = &n.resources;
        let mut status = n.status.clone();
        if n.draining {
            status.push_str(",draining");
        }
        t.add_row([
            n.name.clone(),
            status,
            n.addr.to_string(),
            n.generation.to_string(),
            format!(
                "{}/{}",
                r.allocated.cpu_millicores, r.capacity.cpu_millicores
            ),
            format!("{}/{}", r.allocated.memory_mib, r.capacity.memory_mib),
            format!("{}/{}", r.allocated.disk_mib, r.capacity.disk_mib),
            attrs(n),
        ]);
    }
    let alive = nodes.iter().filter(|n| n.status == "alive").count();
    format!("{t}\n{} nodes, {alive} alive\n", nodes.len())
}

fn attrs(n: &NodeView) -> String {
    n.attributes
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn detail(n: &NodeView) -> String {
    let r = &n.resources;
    let opt = |a: Option<std::net::SocketAddr>| a.map_or("-".to_string(), |a| a.to_string());
    format!(
        "Name        {}\nStatus      {}{}\nGossip      {}\nQUIC        {}\nHTTP        {}\nGeneration  {}\n\
         CPU         {} of {} millicores allocated\nMemory      {} of {} MiB allocated\n\
         Disk        {} of {} MiB allocated\nAttributes  {}\nLast update {} ms since epoch\n",
        n.name,
        n.status,
        if n.draining { " (draining)" } else { "" },
        n.addr,
        opt(n.quic_addr),
        opt(n.http_addr),
        n.generation,
        r.allocated.cpu_millicores,
        r.capacity.cpu_millicores,
        r.allocated.memory_mib,
        r.capacity.memory_mib,
        r.allocated.disk_mib,
        r.capacity.disk_mib,
        if n.attributes.is_empty() {
            "-".to_string()
        } else {
            attrs(n)
        },
        n.last_update_ms,
    )
}
