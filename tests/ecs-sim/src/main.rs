//! `ecs-sim --config sim.toml [--ready-file F]`: runs the emulator until
//! SIGINT/SIGTERM, printing `imds=... ecs=...` once both ports are bound.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    name = "ecs-sim",
    about = "Local ECS snapshot API + metadata service emulator (loopback only)"
)]
struct Args {
    /// The emulator's configuration file.
    #[arg(long)]
    config: PathBuf,
    /// Where to write `imds=URL ecs=URL` once ready (written atomically).
    #[arg(long)]
    ready_file: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ECS_SIM_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let cfg = match ecs_sim::SimConfig::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ecs-sim: {e}");
            return ExitCode::from(2);
        }
    };
    let started = match ecs_sim::start(cfg).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ecs-sim: {e}");
            return ExitCode::from(2);
        }
    };
    let line = started.ready_line();
    println!("{line}");
    if let Some(f) = &args.ready_file {
        let tmp = f.with_extension("tmp");
        if let Err(e) =
            std::fs::write(&tmp, format!("{line}\n")).and_then(|_| std::fs::rename(&tmp, f))
        {
            eprintln!("ecs-sim: cannot write ready file {}: {e}", f.display());
            return ExitCode::from(2);
        }
    }
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ecs-sim: cannot install SIGTERM handler: {e}");
            return ExitCode::from(2);
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
    tracing::info!("ecs-sim stopping");
    // Detach the loop devices AttachDisk made and remove their links.
    started.sim.release_devices();
    ExitCode::SUCCESS
}
