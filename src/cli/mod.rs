//! One function per subcommand; this is the only place that uses `anyhow`
//! and turns typed errors into operator messages and exit codes.

pub mod args;
mod assets;
mod check;
mod cloud;
mod doc_tables;
mod freeze_guard;
mod list;
mod plan;
mod printable;
mod run;
mod status;
mod thaw;
mod verify;

use std::process::ExitCode;

use appsnap::logging::{self, LogConfig, LogFormat};
use args::{Cli, Command, LogFormatArg};

/// Dispatches the parsed command line; returns the process exit code.
pub fn dispatch(cli: Cli) -> ExitCode {
    // The freeze guard logs nothing and opens nothing it does not need;
    // generate-assets runs at package build time, where there is nothing to log to.
    if !matches!(
        cli.command,
        Command::FreezeGuard | Command::GenerateAssets(_)
    ) {
        init_logging(&cli);
    }
    let code = match &cli.command {
        Command::Check(a) => check::run(&cli, a),
        Command::Daemon => appsnap::daemon::run(appsnap::daemon::PolicyFiles {
            main: cli.config.clone(),
            dropin_dir: cli.config_dir.clone(),
        }),
        Command::Run(a) => run::run(&cli, a),
        Command::Plan(a) => plan::run(&cli, a),
        Command::Status(a) => status::run(&cli, a),
        Command::List(a) => list::run(&cli, a),
        Command::Thaw(a) => thaw::run(&cli, a),
        Command::Verify(a) => verify::run(&cli, a),
        Command::Plugin(a) => run::plugin(&cli, a),
        Command::FreezeGuard => freeze_guard::run(),
        Command::GenerateAssets(a) => assets::run(a),
    };
    ExitCode::from(code)
}

/// Sets up tracing per `--log-format` and `$APPSNAP_LOG` (journald when
/// systemd connected stderr to the journal); a bad filter is reported and
/// replaced by `info` rather than losing the logs.
fn init_logging(cli: &Cli) {
    let config = LogConfig {
        format: match cli.log_format {
            LogFormatArg::Human => LogFormat::Human,
            LogFormatArg::Json => LogFormat::Json,
        },
        ..LogConfig::default()
    };
    if let Err(e) = logging::init(&config) {
        eprintln!("appsnap: {e}; logging at level info");
        let fallback = LogConfig {
            filter: Some("info".to_string()),
            ..config
        };
        let _ = logging::init(&fallback);
    }
}
