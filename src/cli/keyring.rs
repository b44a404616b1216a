//! `shoal keyring list|install|use|remove`: rotate the cluster key without downtime, like
//! `serf keys`. The CLI asks one agent; that agent applies the step and fans it out to every
//! reachable member, and the CLI prints each member's result. It exits non-zero unless every
//! member asked applied the step.
//!
//! Rotation: `install NEW` (every node accepts NEW, still sends with OLD), `use NEW` (every
//! node sends with NEW, still accepts OLD), `remove OLD`. Wait for each step to be complete
//! on every member before the next one.

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use comfy_table::{Table, presets::NOTHING};
use shoal_node::keyring::FanOut;

use super::client::{Api, ApiArgs};

/// `shoal keyring ...`
#[derive(Debug, Subcommand)]
pub enum KeyringCommand {
    /// Every member's keys, by label (the key itself is never shown).
    List {
        #[command(flatten)]
        api: ApiArgs,
        /// Print the JSON answer.
        #[arg(long)]
        json: bool,
    },
    /// Install a key on every member (accepted, not yet used to send).
    Install {
        /// The key, 64 hex characters (from `shoal keygen`).
        key: String,
        #[command(flatten)]
        api: ApiArgs,
        /// Print the JSON answer.
        #[arg(long)]
        json: bool,
    },
    /// Make an installed key primary on every member.
    Use {
        /// The key, or its 16-hex-character label.
        key: String,
        #[command(flatten)]
        api: ApiArgs,
        /// Print the JSON answer.
        #[arg(long)]
        json: bool,
    },
    /// Remove a key from every member (refused for the primary).
    Remove {
        /// The key, or its 16-hex-character label.
        key: String,
        #[command(flatten)]
        api: ApiArgs,
        /// Print the JSON answer.
        #[arg(long)]
        json: bool,
    },
}

/// Runs a `keyring` subcommand.
pub async fn run(cmd: KeyringCommand) -> anyhow::Result<ExitCode> {
    let (api, json, step) = match cmd {
        KeyringCommand::List { api, json } => (api, json, None),
        KeyringCommand::Install { key, api, json } => (api, json, Some(("install", key))),
        KeyringCommand::Use { key, api, json } => (api, json, Some(("use", key))),
        KeyringCommand::Remove { key, api, json } => (api, json, Some(("remove", key))),
    };
    let client = Api::new(&api)?;
    let body = match &step {
        None => client.get("/v1/keyring").await?,
        Some((op, key)) => {
            let body = serde_json::json!({ "key": key.trim() }).to_string();
            let path = format!("/v1/keyring/{op}");
            client
                .request(reqwest::Method::POST, &path, Some(body))
                .await?
        }
    };
    let fan_out: FanOut = serde_json::from_str(&body).context("unexpected /v1/keyring answer")?;
    if json {
        println!("{body}");
    } else {
        print!("{}", render(&fan_out));
    }
    Ok(if fan_out.complete {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn render(fan_out: &FanOut) -> String {
    let mut nodes = Table::new();
    nodes.load_preset(NOTHING);
    nodes.set_header(["NODE", "RESULT", "PRIMARY", "KEYS"]);
    for r in &fan_out.results {
        let (primary, keys) = r.keys.as_ref().map_or(("-".into(), "-".into()), |k| {
            (k.primary.clone(), k.keys.join(","))
        });
        let result = match (&r.error, r.keys.as_ref().is_some_and(|k| k.changed)) {
            (Some(e), _) => format!("error: {e}"),
            (None, true) => "changed".to_string(),
            (None, false) => "ok".to_string(),
        };
        nodes.add_row([r.node.clone(), result, primary, keys]);
    }
    let answered: Vec<_> = fan_out
        .results
        .iter()
        .filter_map(|r| r.keys.as_ref())
        .collect();
    let mut held: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for k in &answered {
        for label in &k.keys {
            let entry = held.entry(label.as_str()).or_default();
            entry.0 += 1;
            entry.1 += usize::from(*label == k.primary);
        }
    }
    let mut keys = Table::new();
    keys.load_preset(NOTHING);
    keys.set_header(["KEY (label)", "INSTALLED ON", "PRIMARY ON"]);
    for (label, (installed, primary)) in &held {
        keys.add_row([
            label.to_string(),
            format!("{installed}/{}", answered.len()),
            format!("{primary}/{}", answered.len()),
        ]);
    }
    let failed = fan_out.results.iter().filter(|r| !r.ok).count();
    let mut out = format!("{nodes}\n\n{keys}\n");
    if !fan_out.skipped.is_empty() {
        out.push_str(&format!(
            "not asked (down or left): {}\n",
            fan_out.skipped.join(", ")
        ));
    }
    out.push_str(&format!(
        "{}: {} of {} members ok{}\n",
        fan_out.op,
        fan_out.results.len() - failed,
        fan_out.results.len(),
        if fan_out.complete {
            ""
        } else {
            " — INCOMPLETE"
        }
    ));
    out
}
