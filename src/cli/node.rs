//! `shoal node list|status|forget|drain|eligibility`: views of the cluster through any
//! agent's API, telling the cluster that a node is gone for good, and keeping work off a node
//! (`drain.rs`).

use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use comfy_table::{Table, presets::NOTHING};
use shoal_gossip::Quorum;
use shoal_node::api::{AgentSelf, JoinView, NodeView};
use shoal_node::gossip_driver::{seconds, seed_list};

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
    /// Move a node's tasks off and keep new work away: services a few at a time (their
    /// `update.max_parallel`) while they stay healthy, batch tasks at the deadline. Follows
    /// the drain until it completes (Ctrl-C stops following, not the drain). Needs the token.
    Drain {
        /// The node's name.
        name: String,
        /// Stop whatever is left after this long (`90s`, `5m`, `1h`); default 1h.
        #[arg(long, value_parser = crate::cli::drain::parse_duration_ms, conflicts_with_all = ["no_deadline", "disable"])]
        deadline: Option<u64>,
        /// No deadline: batch tasks finish, however long they take.
        #[arg(long, conflicts_with = "disable")]
        no_deadline: bool,
        /// Stop draining (the node stays ineligible until `eligibility --enable`).
        #[arg(long)]
        disable: bool,
        /// Return once the drain is written, without following it.
        #[arg(long)]
        detach: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Allow (`--enable`) or refuse (`--disable`) new placements on a node; what runs there
    /// stays. Enabling also ends a drain. Needs the token.
    Eligibility {
        /// The node's name.
        name: String,
        /// Take no new work.
        #[arg(long, required_unless_present = "enable", conflicts_with = "enable")]
        disable: bool,
        /// Take new work again.
        #[arg(long)]
        enable: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
}

/// Runs a `node` subcommand.
pub async fn run(cmd: NodeCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        NodeCommand::Drain {
            name,
            deadline,
            no_deadline,
            disable,
            detach,
            api,
        } => {
            let deadline_ms = match (deadline, no_deadline) {
                (_, true) => None,
                (d, false) => Some(d.unwrap_or(crate::cli::drain::DEFAULT_DEADLINE_MS)),
            };
            let api = Api::new(&api)?;
            crate::cli::drain::drain(&api, &name, deadline_ms, disable, detach).await
        }
        NodeCommand::Eligibility {
            name, enable, api, ..
        } => crate::cli::drain::eligibility(&Api::new(&api)?, &name, enable).await,
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
                if let Some(join) = me.join.as_ref().filter(|j| j.not_joined()) {
                    println!("{}", join_text(join));
                }
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
                if let Some(join) = me.join.as_ref().filter(|j| j.not_joined()) {
                    println!("Join        {}", join_text(join));
                }
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

/// `NOT JOINED: no answer from seed 10.0.0.1:7946 for 12 s (7 attempts, retrying); counts
/// itself a cluster of one`, for an agent given seeds that has heard from nobody yet (its
/// quorum line alone reads like a healthy one-node cluster).
fn join_text(j: &JoinView) -> String {
    let mut why = Vec::new();
    if !j.seeds.is_empty() {
        why.push(format!(
            "no answer from {} for {} ({} attempts, retrying)",
            seed_list(&j.seeds),
            seconds(j.waited_ms),
            j.attempts
        ));
    }
    if !j.unresolved.is_empty() {
        let verb = if j.unresolved.len() == 1 {
            "does"
        } else {
            "do"
        };
        why.push(format!(
            "{} {verb} not resolve (retrying)",
            seed_list(&j.unresolved)
        ));
    }
    format!(
        "NOT JOINED: {}; counts itself a cluster of one",
        why.join("; ")
    )
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
        match &n.drain {
            Some(d) if d.complete => status.push_str(",drained"),
            Some(_) => status.push_str(",draining"),
            None if n.draining => status.push_str(",draining"),
            None if !n.eligible => status.push_str(",ineligible"),
            None => {}
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

/// `yes`, `no`, or the drain's progress.
fn eligibility(n: &NodeView) -> String {
    match &n.drain {
        Some(d) if d.complete => "no (drained: none of its tasks is live)".to_string(),
        Some(d) => format!(
            "no (draining: {} still live{})",
            super::counted(d.live_tasks, "task"),
            d.deadline_ms
                .map_or(String::new(), |ms| format!(", deadline {} s", ms / 1000))
        ),
        None if n.eligible => "yes".to_string(),
        None => "no (disabled)".to_string(),
    }
}

fn detail(n: &NodeView) -> String {
    let r = &n.resources;
    let opt = |a: Option<std::net::SocketAddr>| a.map_or("-".to_string(), |a| a.to_string());
    format!(
        "Name        {}\nStatus      {}{}\nEligible    {}\nGossip      {}\nQUIC        {}\nHTTP        {}\nGeneration  {}\n\
         CPU         {} of {} millicores allocated\nMemory      {} of {} MiB allocated\n\
         Disk        {} of {} MiB allocated\nAttributes  {}\nLast update {}\n",
        n.name,
        n.status,
        if n.draining { " (draining)" } else { "" },
        eligibility(n),
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
        i64::try_from(n.last_update_ms)
            .ok()
            .and_then(super::job::utc_time)
            .map_or_else(
                || format!("{} ms since epoch", n.last_update_ms),
                |t| format!("{t} UTC")
            ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn not_joined(seeds: &[&str], unresolved: &[&str]) -> JoinView {
        JoinView {
            seeds: seeds.iter().map(|s| s.parse().unwrap()).collect(),
            unresolved: unresolved.iter().map(ToString::to_string).collect(),
            joined: false,
            attempts: 7,
            since: Some(1_000),
            joined_at: None,
            waited_ms: 12_600,
            retry_ms: 12_800,
            first_member: None,
        }
    }

    #[test]
    fn the_join_line_names_the_silent_and_the_unresolved_seeds() {
        let j = not_joined(&["10.0.0.1:7946"], &[]);
        assert!(j.not_joined());
        assert_eq!(
            join_text(&j),
            "NOT JOINED: no answer from seed 10.0.0.1:7946 for 12 s (7 attempts, retrying); \
             counts itself a cluster of one"
        );
        let j = not_joined(&["10.0.0.1:7946", "10.0.0.2:7946"], &["seed.example:7946"]);
        assert_eq!(
            join_text(&j),
            "NOT JOINED: no answer from seeds 10.0.0.1:7946, 10.0.0.2:7946 for 12 s (7 \
             attempts, retrying); seed seed.example:7946 does not resolve (retrying); counts \
             itself a cluster of one"
        );
        // No seeds at all: the first node of a cluster, nothing to say.
        assert!(!not_joined(&[], &[]).not_joined());
        let joined = JoinView {
            joined: true,
            ..not_joined(&["10.0.0.1:7946"], &[])
        };
        assert!(!joined.not_joined());
    }
}
