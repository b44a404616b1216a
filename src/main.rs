//! `shoal`: the agent, the CLI, the local dev cluster and the simulator in one binary.

mod cli;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc instead of the system allocator: the simulator allocates and frees millions of small
/// datagrams and ads per simulated minute, and glibc's allocator (with the page faults of its
/// trimmed heap) was a seventh of a 1,000-node run's profile (docs/simulator.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Shoal — a masterless datacenter operating system.
#[derive(Debug, Parser)]
#[command(name = "shoal", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print a new random cluster key (hex) for `--cluster-key-file`.
    Keygen,
    /// Run an agent: join the cluster, offer this machine's resources.
    Agent(Box<cli::agent::AgentArgs>),
    /// Inspect the cluster's nodes.
    #[command(subcommand)]
    Node(cli::node::NodeCommand),
    /// Submit, inspect and stop jobs.
    #[command(subcommand)]
    Job(cli::job::JobCommand),
    /// Inspect tasks.
    #[command(subcommand)]
    Task(cli::job::TaskCommand),
    /// Run a local 3-node cluster on loopback with a throwaway key.
    Dev(cli::dev::DevArgs),
    /// Run a failure simulation: thousands of nodes, one process, one seed.
    Simulate(shoal_simulations::SimulateArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Simulate(args) = cli.command {
        // The simulator is synchronous and single-threaded by design: no runtime.
        return shoal_simulations::run(args).unwrap_or_else(|e| {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        });
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Keygen => cli::keygen(),
            Command::Agent(args) => cli::agent::run(*args).await,
            Command::Node(cmd) => cli::node::run(cmd).await,
            Command::Dev(args) => cli::dev::run(args).await,
            Command::Job(cmd) => cli::job::run(cmd).await,
            Command::Task(cmd) => cli::job::run_task(cmd).await,
            Command::Simulate(_) => unreachable!("handled before the runtime starts"),
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
