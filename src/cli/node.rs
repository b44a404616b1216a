//! `shoal node list|status`: read-only views of the cluster through any agent's API.

use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use comfy_table::{Table, presets::NOTHING};
use shoal_node::api::NodeView;

/// Where the CLI finds an agent.
#[derive(Debug, Args)]
pub struct ApiArgs {
    /// Any agent's HTTP API.
    #[arg(long, env = "SHOAL_ADDR", default_value = "http://127.0.0.1:4646")]
    pub addr: String,
    /// Bearer token, when the agent requires one.
    #[arg(long, env = "SHOAL_HTTP_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

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
}

/// Runs a `node` subcommand.
pub async fn run(cmd: NodeCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        NodeCommand::List { api, json } => {
            let body = get(&api, "/v1/nodes").await?;
            if json {
                println!("{body}");
                return Ok(ExitCode::SUCCESS);
            }
            let nodes: Vec<NodeView> =
                serde_json::from_str(&body).context("unexpected /v1/nodes body")?;
            print!("{}", table(&nodes));
            Ok(ExitCode::SUCCESS)
        }
        NodeCommand::Status { name, api, json } => {
            let body = get(&api, &format!("/v1/nodes/{name}")).await?;
            if json {
                println!("{body}");
                return Ok(ExitCode::SUCCESS);
            }
            let node: NodeView = serde_json::from_str(&body).context("unexpected node body")?;
            print!("{}", detail(&node));
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// GETs `path` from the agent; errors say which agent and why.
pub async fn get(api: &ApiArgs, path: &str) -> anyhow::Result<String> {
    request(api, reqwest::Method::GET, path, None).await
}

/// Sends a request with an optional JSON body; a non-2xx answer becomes an error carrying the
/// agent's `{"error": ...}` message.
pub async fn request(
    api: &ApiArgs,
    method: reqwest::Method,
    path: &str,
    json_body: Option<String>,
) -> anyhow::Result<String> {
    let resp = send(api, method, path, json_body).await?;
    let url = resp.url().to_string();
    let body = resp
        .text()
        .await
        .with_context(|| format!("reading the answer of {url}"))?;
    Ok(body)
}

/// GETs raw bytes plus the `x-shoal-next-offset` header (task logs).
pub async fn get_bytes(api: &ApiArgs, path: &str) -> anyhow::Result<(Vec<u8>, Option<u64>)> {
    let resp = send(api, reqwest::Method::GET, path, None).await?;
    let next = resp
        .headers()
        .get("x-shoal-next-offset")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    Ok((resp.bytes().await?.to_vec(), next))
}

async fn send(
    api: &ApiArgs,
    method: reqwest::Method,
    path: &str,
    json_body: Option<String>,
) -> anyhow::Result<reqwest::Response> {
    let url = format!("{}{path}", api.addr.trim_end_matches('/'));
    let mut req = reqwest::Client::new()
        .request(method, &url)
        .timeout(std::time::Duration::from_secs(30));
    if let Some(token) = &api.token {
        req = req.bearer_auth(token);
    }
    if let Some(body) = json_body {
        req = req
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
    }
    let resp = req
        .send()
        .await
        .with_context(|| format!("cannot reach the Shoal agent at {}", api.addr))?;
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let body = resp.text().await.unwrap_or_default();
    let message = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
        .unwrap_or(body);
    bail!("{url}: {status}: {message}")
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
