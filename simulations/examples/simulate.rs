//! `shoal simulate` without the `shoal` binary:
//! `cargo run --release -p shoal-simulations --example simulate -- scenarios/steady-state.toml`.

use clap::Parser;

#[derive(Debug, Parser)]
#[command(name = "simulate", about = "Run a Shoal failure simulation")]
struct Cli {
    #[command(flatten)]
    args: shoal_simulations::SimulateArgs,
}

fn main() -> anyhow::Result<std::process::ExitCode> {
    shoal_simulations::run(Cli::parse().args)
}
