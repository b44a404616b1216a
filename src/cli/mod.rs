//! The subcommands of the `shoal` binary.

pub mod agent;
pub mod client;
pub mod dev;
pub mod drain;
pub mod events;
pub mod job;
pub mod keyring;
pub mod local;
pub mod node;
pub mod service;
pub mod top;

use std::path::PathBuf;
use std::process::ExitCode;

use shoal_node::keys::ClusterKey;

/// `shoal keygen`.
pub fn keygen() -> anyhow::Result<ExitCode> {
    println!("{}", ClusterKey::generate());
    Ok(ExitCode::SUCCESS)
}

/// `shoal ca`: the cluster CA certificate (PEM) that HTTPS clients of the API trust.
pub fn ca(cluster_key_file: &PathBuf) -> anyhow::Result<ExitCode> {
    let key = ClusterKey::load(cluster_key_file)?;
    print!("{}", shoal_node::tls::cluster_ca_pem(&key)?);
    Ok(ExitCode::SUCCESS)
}

/// `n` and the noun, plural unless one: `counted(1, "task")` is "1 task", `counted(2, "task")`
/// "2 tasks".
pub(crate) fn counted<N: std::fmt::Display + PartialEq + From<u8>>(n: N, one: &str) -> String {
    let plural = if n == N::from(1) { "" } else { "s" };
    format!("{n} {one}{plural}")
}

/// Logs to stderr, filtered by `RUST_LOG` (default `default`).
pub fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Resolves when SIGINT or SIGTERM arrives.
pub async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        // Without signal handlers the process still dies on the default action.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
}
