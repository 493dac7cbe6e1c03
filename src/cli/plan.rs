//! `appsnap plan JOB [--json]`: disks → devices → file systems in freeze
//! order, with what is skipped and why, and warnings.
//!
//! Offline (no cloud client yet) each disk's serial is its ID without `d-`.
//! A job with `disks = "all"` needs the instance's disk list from
//! DescribeDisks, so `plan` says so and exits 1 rather than guess.

use appsnap::host::{self, DiskRequest, HostPaths, HostView, PlanError};
use appsnap::job::outcome::Outcome;
use appsnap::policy::{self, DiskSelection};

use super::args::{Cli, PlanArgs};

/// Runs `plan`: 0 plan printed, 1 no plan possible on this host, 2 bad policy or job.
pub fn run(cli: &Cli, args: &PlanArgs) -> u8 {
    let policy = match policy::load(&cli.config, &cli.config_dir) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{}", super::check::policy_failure(&e));
            return Outcome::InvalidParameters.code();
        }
    };
    let Some(job) = policy.job(&args.job) else {
        eprintln!("appsnap: plan: no job named {:?} in the policy", args.job);
        return Outcome::InvalidParameters.code();
    };
    let disks = match &job.disks {
        DiskSelection::List(ids) => ids
            .iter()
            .cloned()
            .map(DiskRequest::offline)
            .collect::<Vec<_>>(),
        DiskSelection::All { .. } => {
            eprintln!(
                "appsnap: plan: job {} uses disks = \"all\": the disk list comes from ECS DescribeDisks, which this build cannot call yet; list the disks explicitly to see the plan",
                job.name
            );
            return Outcome::ConditionsNotMet.code();
        }
    };
    let view = match HostView::read(&HostPaths::system(&policy.host.by_id_dir)) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("appsnap: plan: cannot read the host: {e}");
            return Outcome::ConditionsNotMet.code();
        }
    };
    let plan = match host::build_plan(&view, &disks, &policy.host.run_dir) {
        Ok(p) => p,
        Err(e @ PlanError::SpansOutsideJob(_)) | Err(e @ PlanError::DiskNotFound { .. }) => {
            eprintln!("appsnap: plan: job {}: {e}", job.name);
            return Outcome::ConditionsNotMet.code();
        }
        Err(e) => {
            eprintln!("appsnap: plan: {e}");
            return Outcome::ConditionsNotMet.code();
        }
    };
    if args.json {
        let v = serde_json::json!({
            "job": job.name.as_str(),
            "fs_freeze": job.fs_freeze,
            "freeze_timeout_secs": job.freeze_timeout.as_secs(),
            "plan": plan,
        });
        match serde_json::to_string_pretty(&v) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("appsnap: plan: {e}");
                return Outcome::Unknown.code();
            }
        }
    } else {
        println!(
            "job {} (freeze {}, at most {} s)",
            job.name,
            if job.fs_freeze {
                "on"
            } else {
                "off: nothing below is frozen"
            },
            job.freeze_timeout.as_secs()
        );
        print!("{}", plan.render());
    }
    Outcome::Success.code()
}
