//! The `appsnap` binary: parses the command line and hands off to `cli`.

// Shipped code handles its errors; tests may unwrap (clippy.toml).
#![warn(clippy::unwrap_used)]

mod cli;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let argv = cli::args::effective_args(std::env::args_os().collect());
    cli::dispatch(cli::args::Cli::parse_from(argv))
}
