//! `appsnap plan JOB [--json]`: disks → devices → file systems in freeze
//! order, with what is skipped and why, and warnings.
//!
//! A job that lists its disks is planned offline: each disk's serial is its
//! ID without `d-`. A job with `disks = "all"` needs the instance's disk
//! list, so `plan` asks ECS (DescribeDisks) and selects as a run does,
//! serials included, like `run --dry-run`.

use std::time::Duration;

use appsnap::cloud::Cloud;
use appsnap::host::{self, DiskRequest, HostPaths, HostView, PlanError};
use appsnap::job::disks::{refusal_outcome, select_disks};
use appsnap::job::outcome::Outcome;
use appsnap::policy::{self, DiskId, DiskSelection, Job, Policy};

use super::args::{Cli, PlanArgs};
use super::cloud::{block_on, outcome};

/// How long the DescribeDisks call may take, retries included.
const PLAN_API_DEADLINE: Duration = Duration::from_secs(60);

/// The disks `disks = "all"` selects on this instance now, with the serials
/// ECS reports; or, having said why on stderr, the exit code.
async fn disks_from_ecs(policy: &Policy, job: &Job) -> Result<Vec<DiskRequest>, Outcome> {
    let why = |e: &dyn std::fmt::Display| {
        eprintln!(
            "appsnap: plan: job {} uses disks = \"all\", so its disks come from ECS DescribeDisks, which failed: {e}; `appsnap check` says what is wrong (list the disks in the job to plan offline)",
            job.name
        );
    };
    let cloud = match Cloud::connect(&policy.cloud).await {
        Ok(c) => c,
        Err(e) => {
            why(&e);
            return Err(outcome(&e));
        }
    };
    let deadline = tokio::time::Instant::now() + PLAN_API_DEADLINE;
    let disks = match cloud
        .ecs
        .describe_disks(&cloud.instance_id, &[], deadline)
        .await
    {
        Ok(d) => d,
        Err(e) => {
            let e = e.into();
            why(&e);
            return Err(outcome(&e));
        }
    };
    let max = policy.cloud.max_disks_per_group;
    let sel = match select_disks(&job.disks, &cloud.instance_id, &disks, max) {
        Ok(sel) => sel,
        Err(problems) => {
            for p in &problems {
                eprintln!("appsnap: plan: job {}: {p}", job.name);
            }
            return Err(refusal_outcome(&job.disks, &problems));
        }
    };
    for w in sel.warnings.iter().chain(&sel.skipped).chain(&sel.notes) {
        eprintln!("appsnap: plan: job {}: {w}", job.name);
    }
    Ok(sel
        .disks
        .into_iter()
        .filter_map(|d| {
            Some(DiskRequest::listed(
                DiskId::parse(&d.disk_id).ok()?,
                &d.serial_number,
            ))
        })
        .collect())
}

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
        DiskSelection::All { .. } => match block_on(disks_from_ecs(&policy, job)) {
            Ok(Ok(requests)) => requests,
            Ok(Err(code)) => return code.code(),
            Err(e) => {
                eprintln!("appsnap: plan: {e:#}");
                return Outcome::Unknown.code();
            }
        },
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
