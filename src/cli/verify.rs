//! `appsnap verify --job J [--group ssg-...]` and `appsnap verify --cleanup`:
//! one restore drill now (or only the cleanup of earlier ones), with the
//! report on stdout. SIGTERM and SIGINT end the drill early; it still
//! releases everything it made before exiting.

use std::sync::Arc;

use appsnap::alerts;
use appsnap::cloud::Cloud;
use appsnap::job::report::fresh_run_id;
use appsnap::job::verify::cleanup;
use appsnap::job::verify::{verify, Verdict, VerifyEnv, VerifyReport, VerifyRequest};
use appsnap::notify::{HostIdentity, Notifier, SystemFrozenProbe};
use appsnap::policy;
use tokio::signal::unix::{signal, SignalKind};

use super::args::{Cli, VerifyArgs};
use super::cloud::block_on;

/// The longest `appsnap verify` waits for its notifications.
const DELIVERY_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Exit code when something a drill made could not be released.
const LEFTOVERS: u8 = 3;

/// Runs the subcommand; 0 passed, 1 failed, 2 not run, 3 leftovers remain.
pub fn run(cli: &Cli, args: &VerifyArgs) -> u8 {
    let policy = match policy::load(&cli.config, &cli.config_dir) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{}", super::check::policy_failure(&e));
            return Verdict::NotRun.exit_code();
        }
    };
    let job = match &args.job {
        None => None,
        Some(name) => match policy.job(name) {
            Some(j) => Some(j.clone()),
            None => {
                let names: Vec<&str> = policy.jobs.iter().map(|j| j.name.as_str()).collect();
                eprintln!(
                    "appsnap: verify: no job named {name:?} (jobs: {})",
                    names.join(", ")
                );
                return Verdict::NotRun.exit_code();
            }
        },
    };
    let done = block_on(async {
        let cloud = match Cloud::connect(&policy.cloud).await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("appsnap: verify: cannot reach the cloud: {e}");
                return Verdict::NotRun.exit_code();
            }
        };
        let mut env = VerifyEnv::from_policy(&policy, Arc::new(cloud.ecs), cloud.instance_id);
        env.device_timeout = std::time::Duration::from_secs(args.device_timeout_secs);
        let Some(job) = job else {
            let r = cleanup::cleanup(&env).await;
            println!(
                "cleanup: {} drill record(s), released {} disk(s){}{}",
                r.records,
                r.released.len(),
                if r.released.is_empty() { "" } else { ": " },
                r.released.join(", ")
            );
            for p in &r.problems {
                eprintln!("cleanup: not done: {p}");
            }
            return if r.problems.is_empty() { 0 } else { LEFTOVERS };
        };
        let (tx, rx) = tokio::sync::watch::channel(false);
        // Installed before the drill starts, so a signal during it is ours.
        if let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            tokio::spawn(async move {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
                eprintln!("appsnap: verify: stopping; releasing what the drill made");
                let _ = tx.send(true);
            });
        }
        let req = VerifyRequest {
            job: &job,
            group: args.group.clone(),
            run_id: fresh_run_id(),
            cancel: rx,
        };
        let report = verify(&env, req).await;
        print_report(&report, args.json);
        // The job's sinks hear of a failed drill; the metrics show the result.
        let notifier = Notifier::new(
            HostIdentity::local(Some(env.instance_id.clone())),
            &policy.host.state_dir,
            Box::new(SystemFrozenProbe {
                run_dir: policy.host.run_dir.clone(),
            }),
        );
        alerts::drill_finished(&notifier, &policy, &job, &report).await;
        let left = notifier.drain(DELIVERY_WAIT).await;
        if left > 0 {
            eprintln!(
                "appsnap: warning: {left} notification(s) still undelivered after {}s; given up",
                DELIVERY_WAIT.as_secs()
            );
        }
        if report.leftovers.is_empty() {
            report.verdict.exit_code()
        } else {
            LEFTOVERS
        }
    });
    done.unwrap_or_else(|e| {
        eprintln!("appsnap: verify: cannot start the runtime: {e:#}");
        Verdict::NotRun.exit_code()
    })
}

fn print_report(r: &VerifyReport, json: bool) {
    if json {
        match serde_json::to_string_pretty(r) {
            Ok(s) => println!("{s}"),
            Err(e) => eprintln!("appsnap: verify: cannot print the report: {e}"),
        }
        return;
    }
    for f in &r.filesystems {
        println!(
            "  {} {} on {} (copy of {}{}): {}",
            f.fstype,
            f.uuid,
            f.device,
            f.source_disk_id,
            f.live_mount_point
                .as_ref()
                .map(|m| format!(", live at {m}"))
                .unwrap_or_default(),
            f.check
        );
    }
    if let Some(out) = r.script_output.as_deref().filter(|o| !o.is_empty()) {
        println!("  verify_script output (its end):");
        for line in out.lines() {
            println!("    {line}");
        }
    }
    for e in &r.errors {
        eprintln!("error: {e}");
    }
    for l in &r.leftovers {
        eprintln!("not cleaned up: {l} (retried at the next daemon start, or run `appsnap verify --cleanup`)");
    }
    println!("{}", r.summary());
}
