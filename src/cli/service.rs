//! `shoal service list|show`: what the service catalog of one agent answers
//! (`GET /v1/services`, `docs/services.md` §3).

use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;
use comfy_table::{Table, presets::NOTHING};
use shoal_node::api_services::{ServiceAnswer, ServiceSummary};

use super::client::{Api, ApiArgs};

/// How long one `--watch` query blocks: below the client's 30 s request timeout.
const WATCH_WAIT: &str = "20s";
/// `--watch` sends at most two queries in this window (a catalog changing constantly is
/// printed at most twice a second).
const WATCH_BURST_WINDOW: Duration = Duration::from_secs(1);

/// `shoal service ...`
#[derive(Debug, Subcommand)]
pub enum ServiceCommand {
    /// Every service: instances, healthy instances, tags.
    List {
        #[command(flatten)]
        api: ApiArgs,
        /// Print the JSON of `GET /v1/services`.
        #[arg(long)]
        json: bool,
    },
    /// One service's instances: node, address, ports, health.
    Show {
        /// The service name.
        name: String,
        #[command(flatten)]
        api: ApiArgs,
        /// Only instances discovery answers with (healthy).
        #[arg(long)]
        healthy: bool,
        /// Only instances with this tag.
        #[arg(long)]
        tag: Option<String>,
        /// Print again on every change, until Ctrl-C (blocking queries).
        #[arg(long, short)]
        watch: bool,
        /// Print the JSON of `GET /v1/services/NAME` (one line per answer with --watch).
        #[arg(long)]
        json: bool,
    },
}

/// Runs a `service` subcommand.
pub async fn run(cmd: ServiceCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ServiceCommand::List { api, json } => {
            let body = Api::new(&api)?.get("/v1/services").await?;
            if json {
                println!("{body}");
            } else {
                let services: Vec<ServiceSummary> = serde_json::from_str(&body)?;
                print!("{}", list_table(&services));
            }
            Ok(ExitCode::SUCCESS)
        }
        ServiceCommand::Show {
            name,
            api,
            healthy,
            tag,
            watch,
            json,
        } => {
            show(
                &Api::new(&api)?,
                &name,
                healthy,
                tag.as_deref(),
                watch,
                json,
            )
            .await
        }
    }
}

async fn show(
    api: &Api,
    name: &str,
    healthy: bool,
    tag: Option<&str>,
    watch: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let mut path = format!("/v1/services/{name}?healthy={healthy}");
    if let Some(tag) = tag {
        path.push_str(&format!("&tag={tag}"));
    }
    let mut index = None;
    let mut sent: Vec<tokio::time::Instant> = Vec::new();
    loop {
        let query = match index {
            Some(i) => format!("{path}&index={i}&wait={WATCH_WAIT}"),
            None => path.clone(),
        };
        sent.retain(|at| at.elapsed() < WATCH_BURST_WINDOW);
        if sent.len() >= 2 {
            tokio::time::sleep_until(sent[0] + WATCH_BURST_WINDOW).await;
        }
        sent.push(tokio::time::Instant::now());
        let body = api.get(&query).await?;
        let answer: ServiceAnswer = serde_json::from_str(&body)?;
        if index != Some(answer.index) {
            if json {
                println!("{body}");
            } else {
                if index.is_some() {
                    println!();
                }
                print!("{}", show_table(&answer));
            }
        }
        if !watch {
            return Ok(ExitCode::SUCCESS);
        }
        index = Some(answer.index);
    }
}

fn list_table(services: &[ServiceSummary]) -> String {
    let mut t = Table::new();
    t.load_preset(NOTHING);
    t.set_header(["NAME", "INSTANCES", "HEALTHY", "TAGS", "JOBS"]);
    for s in services {
        t.add_row([
            s.name.clone(),
            s.instances.to_string(),
            s.healthy.to_string(),
            s.tags.join(","),
            s.jobs.join(","),
        ]);
    }
    format!("{t}\n")
}

fn show_table(answer: &ServiceAnswer) -> String {
    let mut out = format!(
        "service {}: {} (index {}, hash {})\n",
        answer.name,
        super::counted(answer.instances.len(), "instance"),
        answer.index,
        answer.hash,
    );
    if answer.instances.is_empty() {
        return out;
    }
    let mut t = Table::new();
    t.load_preset(NOTHING);
    t.set_header(["JOB", "SLOT", "NODE", "ADDRESS", "PORTS", "HEALTH", "TAGS"]);
    for i in &answer.instances {
        let ports: Vec<String> = i.ports.iter().map(|(n, p)| format!("{n}={p}")).collect();
        t.add_row([
            i.job.clone(),
            i.slot.to_string(),
            i.node.clone(),
            i.address.clone(),
            ports.join(","),
            i.health.as_str().to_string(),
            i.tags.join(","),
        ]);
    }
    out.push_str(&format!("{t}\n"));
    out
}
