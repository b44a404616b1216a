//! `shoal events`: one agent's event stream (`GET /v1/events`, `docs/observability.md`).
//!
//! Without `--follow` it prints the events the agent keeps and ends; with it, it keeps
//! printing and, when the connection drops, reconnects with `since` set to the last index
//! printed (and the agent's generation, so a restarted agent's stream is read from its start,
//! after a `Restarted` notice), so nothing still in the agent's ring is missed (a `Missed`
//! notice says when something was not).

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use shoal_node::events::{Event, Topic};

use super::client::{Api, ApiArgs};

/// How long `--follow` waits before reconnecting after the stream broke.
const RECONNECT_AFTER: Duration = Duration::from_millis(500);

/// `shoal events`
#[derive(Debug, Args)]
pub struct EventsArgs {
    #[command(flatten)]
    api: ApiArgs,
    /// Keep printing new events until Ctrl-C (reconnecting with --since on a broken stream).
    #[arg(long, short)]
    follow: bool,
    /// Print each event's JSON, one per line.
    #[arg(long)]
    json: bool,
    /// Only these topics (repeatable or comma-separated): Node, Job, Placement, Attempt,
    /// Task, Service.
    #[arg(long, value_delimiter = ',')]
    topic: Vec<Topic>,
    /// Only events after this index (default: every event the agent keeps).
    #[arg(long)]
    since: Option<u64>,
    /// The agent generation `--since` came from (each event carries it): if the agent has
    /// restarted since, its stream is read from the start, after a `Restarted` notice.
    #[arg(long, requires = "since")]
    generation: Option<u64>,
}

/// Runs `shoal events`.
pub async fn run(args: EventsArgs) -> anyhow::Result<ExitCode> {
    let api = Api::new(&args.api)?;
    let mut cursor = Cursor {
        since: args.since,
        generation: args.generation,
    };
    loop {
        let path = events_path(&args.topic, &cursor, args.follow);
        let result = stream(&api, &path, args.json, &mut cursor).await;
        match result {
            Ok(()) if !args.follow => return Ok(ExitCode::SUCCESS),
            // The agent closed the stream (it stops) or the connection broke: resume.
            Ok(()) => {}
            Err(e) if e.is::<Closed>() => return Ok(ExitCode::SUCCESS),
            // A refusal (a bad query, an agent that restarted) does not heal by retrying.
            Err(e) if !args.follow || e.is::<Refused>() => return Err(e),
            Err(e) => eprintln!("events: {e:#}; reconnecting after index {:?}", cursor.since),
        }
        tokio::time::sleep(RECONNECT_AFTER).await;
    }
}

/// Standard output was closed.
#[derive(Debug)]
struct Closed;

impl std::fmt::Display for Closed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("standard output is closed")
    }
}

impl std::error::Error for Closed {}

/// The agent answered with an error status, or could not be reached (not worth retrying).
#[derive(Debug)]
struct Refused(String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

/// Where a reader is: the last index printed and the generation of the agent it came from
/// (so a reconnect to a restarted agent starts again rather than skipping its first events).
#[derive(Debug, Clone, Copy)]
struct Cursor {
    since: Option<u64>,
    generation: Option<u64>,
}

fn events_path(topics: &[Topic], cursor: &Cursor, follow: bool) -> String {
    let mut path = format!("/v1/events?follow={follow}");
    if !topics.is_empty() {
        let names: Vec<&str> = topics.iter().map(|t| t.as_str()).collect();
        path.push_str(&format!("&topic={}", names.join(",")));
    }
    if let Some(since) = cursor.since {
        path.push_str(&format!("&since={since}"));
    }
    if let Some(generation) = cursor.generation {
        path.push_str(&format!("&generation={generation}"));
    }
    path
}

/// Reads one connection's events, printing each and moving `since` past it.
async fn stream(api: &Api, path: &str, json: bool, cursor: &mut Cursor) -> anyhow::Result<()> {
    let mut resp = api
        .get_stream(path)
        .await
        .map_err(|e| anyhow::Error::new(Refused(format!("{e:#}"))))?;
    let mut buf = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        buf.extend_from_slice(&chunk);
        while let Some(end) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line);
            let Some(data) = line.trim_end().strip_prefix("data:") else {
                continue; // `id:`, keep-alive comments and blank separators
            };
            let data = data.trim_start();
            let event: Event = serde_json::from_str(data).map_err(|e| {
                anyhow::anyhow!("the agent sent an event that is not JSON ({e}): {data}")
            })?;
            let text = if json {
                data.to_string()
            } else {
                line_of(&event)
            };
            if writeln!(std::io::stdout(), "{text}").is_err() {
                // The reader went away (`shoal events | head`): nothing more to do.
                return Err(Closed.into());
            }
            *cursor = Cursor {
                since: Some(event.index),
                generation: Some(event.generation),
            };
        }
    }
    Ok(())
}

/// One event as a line: index, time, topic, type, and the payload's fields.
fn line_of(e: &Event) -> String {
    let secs = e.time_ms / 1000;
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    let fields = match &e.payload {
        serde_json::Value::Object(map) => map
            .iter()
            // `task` (job[slot]#attempt@placer) already says what these fields say.
            .filter(|(k, v)| {
                let named_by_task = map.contains_key("task")
                    && matches!(
                        k.as_str(),
                        "job" | "incarnation" | "slot" | "attempt" | "placer"
                    );
                !v.is_null() && !named_by_task
            })
            .map(|(k, v)| match v {
                serde_json::Value::String(s) => format!("{k}={s}"),
                other => format!("{k}={other}"),
            })
            .collect::<Vec<_>>()
            .join(" "),
        other => other.to_string(),
    };
    format!(
        "{:>6} {h:02}:{m:02}:{s:02}.{:03}Z {:<9} {:<20} {fields}",
        e.index,
        e.time_ms % 1000,
        e.topic.as_str(),
        e.kind
    )
}
