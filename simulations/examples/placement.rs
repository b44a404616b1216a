//! The placement bench (`docs/placement-bench.md`): the production scheduler cores of N
//! simulated nodes with a static all-alive view, fed a stream of submissions:
//! `cargo run --release -p shoal-simulations --example placement -- --nodes 5000`.
//! `bench/placement.py` runs it three times and prints the medians.

use clap::Parser;

/// mimalloc, as the `shoal` binary uses for `shoal simulate`: millions of small messages and
/// table rows per simulated minute.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "placement",
    about = "Placement at scale: N scheduler cores, a static view, a stream of submissions"
)]
struct Cli {
    #[command(flatten)]
    args: shoal_simulations::PlacementArgs,
}

fn main() -> anyhow::Result<std::process::ExitCode> {
    shoal_simulations::run_placement(Cli::parse().args)
}
