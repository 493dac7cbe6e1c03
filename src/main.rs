//! The `appsnap` binary: parses the command line and hands off to `cli`.

mod cli;

use clap::Parser;

fn main() -> std::process::ExitCode {
    cli::dispatch(cli::args::Cli::parse())
}
