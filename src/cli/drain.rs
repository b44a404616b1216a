//! `shoal node drain` and `shoal node eligibility` (`docs/services.md`, §5): write the
//! node's intent through any agent, then (drain) follow it until the node reports that none
//! of its tasks is live. Ctrl-C stops following, never the drain.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use shoal_node::api::NodeView;

use super::client::Api;

/// The deadline of a drain given neither `--deadline` nor `--no-deadline` (Nomad's default).
pub const DEFAULT_DEADLINE_MS: u64 = 3_600_000;

/// `5m`, `90s`, `1h`, `250ms` (a bare number is seconds) as milliseconds.
pub fn parse_duration_ms(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration (use e.g. 90s, 5m, 1h)"))?;
    let scale = match unit {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(format!("`{s}`: unknown unit `{unit}` (use ms, s, m or h)")),
    };
    n.checked_mul(scale)
        .ok_or_else(|| format!("`{s}` is too long"))
}

/// Posts a node command; prints what the agent said about its durability.
async fn post(api: &Api, path: &str, body: serde_json::Value) -> anyhow::Result<()> {
    let answer = api
        .request(reqwest::Method::POST, path, Some(body.to_string()))
        .await?;
    let v: serde_json::Value = serde_json::from_str(&answer).unwrap_or_default();
    if v.get("durable").and_then(serde_json::Value::as_bool) == Some(false) {
        let reason = v.get("reason").and_then(|r| r.as_str()).unwrap_or("");
        eprintln!("warning: {reason}");
    }
    Ok(())
}

/// `shoal node drain NAME [--deadline D | --no-deadline | --disable] [--detach]`.
pub async fn drain(
    api: &Api,
    name: &str,
    deadline_ms: Option<u64>,
    disable: bool,
    detach: bool,
) -> anyhow::Result<ExitCode> {
    let path = format!("/v1/nodes/{name}/drain");
    if disable {
        post(api, &path, serde_json::json!({ "disable": true }))
            .await
            .with_context(|| format!("cannot stop the drain of {name}"))?;
        println!(
            "{name} no longer drains; it stays ineligible until `shoal node eligibility {name} --enable`"
        );
        return Ok(ExitCode::SUCCESS);
    }
    post(
        api,
        &path,
        serde_json::json!({ "deadline_ms": deadline_ms }),
    )
    .await
    .with_context(|| format!("cannot drain {name}"))?;
    match deadline_ms {
        Some(ms) => println!("draining {name} (deadline {} s)", ms / 1000),
        None => println!("draining {name} (no deadline: batch tasks finish)"),
    }
    if detach {
        return Ok(ExitCode::SUCCESS);
    }
    follow(api, name).await
}

/// Polls the node until its drain completes, printing the tasks still live there.
async fn follow(api: &Api, name: &str) -> anyhow::Result<ExitCode> {
    let mut last = None;
    loop {
        let body = api.get(&format!("/v1/nodes/{name}")).await?;
        let node: NodeView = serde_json::from_str(&body).context("unexpected node body")?;
        let Some(drain) = node.drain else {
            println!("the drain of {name} was cancelled");
            return Ok(ExitCode::FAILURE);
        };
        if drain.complete {
            println!(
                "{name} is drained: none of its tasks is live; it takes no new work until \
                 `shoal node eligibility {name} --enable`"
            );
            return Ok(ExitCode::SUCCESS);
        }
        if last != Some(drain.live_tasks) {
            println!(
                "{name}: {} still live there",
                super::counted(drain.live_tasks, "task")
            );
            last = Some(drain.live_tasks);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// `shoal node eligibility NAME --enable|--disable`.
pub async fn eligibility(api: &Api, name: &str, eligible: bool) -> anyhow::Result<ExitCode> {
    post(
        api,
        &format!("/v1/nodes/{name}/eligibility"),
        serde_json::json!({ "eligible": eligible }),
    )
    .await
    .with_context(|| format!("cannot change the eligibility of {name}"))?;
    if eligible {
        println!("{name} is eligible for new work");
    } else {
        println!("{name} takes no new work; what runs there stays");
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::parse_duration_ms;

    #[test]
    fn durations_parse_with_units_and_refuse_garbage() {
        assert_eq!(parse_duration_ms("5m"), Ok(300_000));
        assert_eq!(parse_duration_ms("90"), Ok(90_000));
        assert_eq!(parse_duration_ms("250ms"), Ok(250));
        assert_eq!(parse_duration_ms("1h"), Ok(3_600_000));
        assert!(parse_duration_ms("5 minutes").is_err());
        assert!(parse_duration_ms("m").is_err());
    }
}
