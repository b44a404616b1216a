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
    /// Print the cluster CA certificate (PEM) derived from a cluster key; HTTPS clients of the
    /// API (curl --cacert, shoal --ca-file) verify agents with it.
    Ca {
        /// File holding the cluster key.
        #[arg(long, env = "SHOAL_CLUSTER_KEY_FILE")]
        cluster_key_file: std::path::PathBuf,
    },
    /// Run an agent: join the cluster, offer this machine's resources.
    Agent(Box<cli::agent::AgentArgs>),
    /// Inspect the cluster's nodes.
    #[command(subcommand)]
    Node(cli::node::NodeCommand),
    /// Submit, inspect and stop jobs.
    #[command(subcommand)]
    Job(cli::job::JobCommand),
    /// Find services: their instances' nodes, addresses and ports.
    #[command(subcommand)]
    Service(cli::service::ServiceCommand),
    /// Rotate the cluster key without downtime: list, install, use, remove.
    #[command(subcommand)]
    Keyring(cli::keyring::KeyringCommand),
    /// Inspect tasks.
    #[command(subcommand)]
    Task(cli::job::TaskCommand),
    /// What one agent's cores and executor did, as it happened (`GET /v1/events`).
    Events(cli::events::EventsArgs),
    /// The cluster map and the busiest jobs in the terminal, redrawn as events arrive.
    Top(cli::top::TopArgs),
    /// Run a local 3-node cluster on loopback with a throwaway key.
    Dev(cli::dev::DevArgs),
    /// Run a failure simulation: thousands of nodes, one process, one seed.
    Simulate(shoal_simulations::SimulateArgs),
    /// The watchdog an agent starts for itself (not for operators).
    #[command(hide = true)]
    Watchdog(WatchdogArgs),
}

/// Flags of the hidden `shoal watchdog`.
#[derive(Debug, clap::Args)]
struct WatchdogArgs {
    /// The data dir of the agent to guard.
    #[arg(long)]
    data_dir: std::path::PathBuf,
}

/// mimalloc's option for how long freed memory stays mapped before it goes back to the OS
/// (-1: never). mimalloc reads its options from the environment when the process starts.
const PURGE_DELAY_ENV: &str = "MIMALLOC_PURGE_DELAY";

/// mimalloc's option to commit a whole arena when it is reserved; on Linux it also asks for
/// transparent huge pages on it (`madvise(MADV_HUGEPAGE)`).
const ARENA_EAGER_COMMIT_ENV: &str = "MIMALLOC_ARENA_EAGER_COMMIT";

/// A simulation keeps every node's state in one process: gigabytes, touched at random, which
/// runs far faster on transparent huge pages (fewer TLB misses). mimalloc gives a page back to
/// the OS a second after it empties, which splits the huge page around it: at 1,000 nodes 0.9 of
/// 2.2 GB stayed on huge pages with that, 2.2 of 2.2 GB without, and the run took 68 s instead of
/// 48 s (BENCHMARKS.md). So `shoal simulate` re-executes itself (same PID, same arguments) with
/// purging off, unless the variable is already set, which lets anyone choose otherwise. The
/// agent keeps the default: a long-running daemon should give memory back.
fn keep_huge_pages_for_simulation() {
    reexec_with(PURGE_DELAY_ENV, "-1", "simulating");
}

/// The agent is the opposite case: a few MiB of heap, spread thinly. With its arena committed
/// eagerly and advised for huge pages, every 2 MiB region the heap touches becomes resident
/// in full: an idle agent at N = 32 held 14.7 MiB of anonymous memory, 10 MiB of it huge
/// pages, for 2.8 MiB of heap (BENCHMARKS.md, "A smaller agent"). So the agent re-executes
/// itself with eager commit off, as it already starts its watchdog (`watchdog/lease.rs`),
/// unless the variable is set. Its tasks never see the variable (they get a clean
/// environment). Rejected: mimalloc's `no_thp` build feature (the simulator wants huge
/// pages, and it is the same binary) and `MIMALLOC_ALLOW_THP=0` (a `prctl` that every task
/// would inherit).
fn keep_the_agent_heap_small() {
    reexec_with(ARENA_EAGER_COMMIT_ENV, "0", "running");
}

/// Re-executes this program (same PID, same arguments) with `var=value`, unless `var` is
/// already set. mimalloc reads its options once, before `main`, so this is the only way to
/// set them from the program itself without unsafe code.
fn reexec_with(var: &str, value: &str, doing: &str) {
    use std::os::unix::process::CommandExt;
    if std::env::var_os(var).is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let err = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env(var, value)
        .exec();
    // `exec` returns only when it failed; the program is the same, only its memory differs.
    eprintln!(
        "note: could not re-execute with {var}={value} ({err}); {doing} with the default allocator settings"
    );
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(
        cli.command,
        Command::Keygen
            | Command::Ca { .. }
            | Command::Node(_)
            | Command::Job(_)
            | Command::Service(_)
            | Command::Keyring(_)
            | Command::Task(_)
            | Command::Events(_)
    ) {
        exit_quietly_on_a_closed_pipe();
    }
    if let Command::Watchdog(args) = &cli.command {
        // Synchronous and small by design: no runtime, a thread per connection.
        return match shoal_node::watchdog::run(&args.data_dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    if let Command::Simulate(args) = cli.command {
        keep_huge_pages_for_simulation();
        // The simulator is synchronous and single-threaded by design: no runtime.
        return shoal_simulations::run(args).unwrap_or_else(|e| {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        });
    }
    if matches!(cli.command, Command::Agent(_)) {
        keep_the_agent_heap_small();
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
            Command::Ca { cluster_key_file } => cli::ca(&cluster_key_file),
            Command::Agent(args) => cli::agent::run(*args).await,
            Command::Node(cmd) => cli::node::run(cmd).await,
            Command::Dev(args) => cli::dev::run(args).await,
            Command::Job(cmd) => cli::job::run(cmd).await,
            Command::Service(cmd) => cli::service::run(cmd).await,
            Command::Task(cmd) => cli::job::run_task(cmd).await,
            Command::Events(args) => cli::events::run(args).await,
            Command::Top(args) => cli::top::run(args).await,
            Command::Keyring(cmd) => cli::keyring::run(cmd).await,
            Command::Simulate(_) | Command::Watchdog(_) => {
                unreachable!("handled before the runtime starts")
            }
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

/// A client command whose output goes to a pipe closed early (`shoal node list | head`) ends
/// quietly, like other Unix tools, instead of panicking in `println!` ("failed printing to
/// stdout: Broken pipe"): Rust ignores SIGPIPE by default, so the write fails with EPIPE.
/// Only for short-lived client commands: the agent, `dev`, `top` and the watchdog keep
/// ignoring it, so that a peer closing a socket is an error to handle, not a signal that kills.
#[allow(unsafe_code)]
fn exit_quietly_on_a_closed_pipe() {
    // SAFETY: setting a signal's disposition to its default before any other thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

#[cfg(test)]
mod tests {
    /// clap checks its definitions only when a command is parsed: a clash (an argument named
    /// `version` under `propagate_version`) would otherwise surface as a panic in one
    /// subcommand at run time.
    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
