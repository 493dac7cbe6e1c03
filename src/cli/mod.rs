//! One function per subcommand; this is the only place that uses `anyhow`
//! and turns typed errors into operator messages and exit codes.

pub mod args;
mod check;
mod cloud;
mod freeze_guard;
mod list;
mod plan;
mod thaw;

use std::process::ExitCode;

use args::{Cli, Command};

/// Exit code for a subcommand that has not been built yet (the vendor's "unknown").
const NOT_AVAILABLE: u8 = 255;

/// Dispatches the parsed command line; returns the process exit code.
pub fn dispatch(cli: Cli) -> ExitCode {
    let code = match &cli.command {
        Command::Check(a) => check::run(&cli, a),
        Command::Daemon => not_available("daemon"),
        Command::Run(_) => not_available("run"),
        Command::Plan(a) => plan::run(&cli, a),
        Command::Status(_) => not_available("status"),
        Command::List(a) => list::run(&cli, a),
        Command::Thaw(a) => thaw::run(&cli, a),
        Command::Plugin(_) => not_available("plugin"),
        Command::FreezeGuard => freeze_guard::run(),
    };
    ExitCode::from(code)
}

/// Says plainly that a subcommand is not built yet, rather than pretending.
fn not_available(name: &str) -> u8 {
    eprintln!("appsnap: `{name}` is not available yet in this build");
    NOT_AVAILABLE
}
