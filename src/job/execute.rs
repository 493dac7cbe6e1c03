//! A run after the cloud connection, the same for the daemon and `appsnap
//! run`: the machine, then the job's retention (successful runs only), then
//! the record. Connecting stays with the caller (the daemon keeps its
//! connection across runs), but a run that could not connect is recorded
//! here too ([`connect_failed`]), so both entry points leave the same trace.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tracing::{error, info, warn};

use super::machine::{self, RunEnv, RunOptions};
use super::outcome::{cloud_outcome, Outcome};
use super::report::{RunReport, Stage};
use super::retention::{self, NotSuccessful, PruneReport, RetentionError, SuccessfulRun};
use super::spec::RunSpec;
use crate::cloud::CloudError;
use crate::policy::{Job, JobName};
use crate::state::{JobResult, StateStore};

/// How long retention may take after a run, listing and deleting included.
pub const PRUNE_BUDGET: Duration = Duration::from_secs(300);

/// Where the run's result is written, and how.
pub struct Recording<'a> {
    /// The state store (`host.state_dir`).
    pub store: &'a StateStore,
    /// Held while writing: the daemon's runs and upload followers write the
    /// same records.
    pub lock: Option<&'a tokio::sync::Mutex<()>>,
    /// When the scheduler meant the run to start (`None`: run by hand).
    pub scheduled_for: Option<DateTime<Utc>>,
}

/// What follows the machine.
pub struct After<'a> {
    /// The policy job whose retention applies after a successful run
    /// (`None`: no pruning, as with `--no-prune` or a plugin run). Dry runs
    /// and plugin runs never prune, whatever this says.
    pub prune: Option<&'a Job>,
    /// Write the result (`None`: nothing is recorded, as for dry runs).
    pub record: Option<Recording<'a>>,
}

/// What became of retention after the run.
#[derive(Debug)]
pub enum Retention {
    /// Not asked: the job keeps everything, the caller said not to prune,
    /// the run was a dry run or a plugin run, or it never reached the cloud.
    NotAsked,
    /// The run did not succeed, so nothing may be deleted.
    NotSuccessful(NotSuccessful),
    /// No owner ID: no group can be proven this installation's.
    NoOwner,
    /// Retention ran (some deletions may have failed: see the report).
    Done(PruneReport),
    /// Retention could not run at all.
    Failed(RetentionError),
}

/// The whole outcome of one run.
#[derive(Debug)]
pub struct Executed {
    /// What the machine reported (or why it never ran).
    pub report: RunReport,
    /// What retention did.
    pub retention: Retention,
    /// The result as recorded (`None`: the caller asked for no record).
    pub record: Option<JobResult>,
    /// The group exists and its upload was still going when the run ended:
    /// the daemon follows it.
    pub upload_pending: bool,
}

/// Runs `job` through the machine, prunes after a successful run when
/// asked, and records the result.
pub async fn execute(env: &RunEnv, spec: &RunSpec, opts: RunOptions, after: After<'_>) -> Executed {
    let prune = after.prune.filter(|_| !opts.dry_run && !opts.plugin);
    if let Err(e) = std::fs::create_dir_all(&env.run_dir) {
        let message = format!("cannot create {}: {e}", env.run_dir.display());
        error!(
            APPSNAP_EXIT_CODE = Outcome::ConditionsNotMet.code(),
            "{message}"
        );
        let report = not_run(&spec.name, opts.run_id, Outcome::ConditionsNotMet, message);
        return finish(report, Retention::NotAsked, after.record).await;
    }
    let mut report = machine::run(env, spec, opts).await;
    let retention = if let Some(job) = prune {
        let started = std::time::Instant::now();
        crate::logging::set_phase(&tracing::Span::current(), Stage::Prune.as_str());
        let r = prune_after(env, job, &report).await;
        // Timed only when it talked to the cloud.
        if matches!(r, Retention::Done(_) | Retention::Failed(_)) {
            report.add_stage(Stage::Prune, started.elapsed());
        }
        r
    } else {
        Retention::NotAsked
    };
    finish(report, retention, after.record).await
}

/// The run that could not connect to the cloud: reported and recorded the
/// same way for both callers.
pub async fn connect_failed(
    job: &JobName,
    run_id: Option<String>,
    e: &CloudError,
    record: Option<Recording<'_>>,
) -> Executed {
    let outcome = cloud_outcome(e);
    let message = format!("cannot reach the cloud: {e}");
    error!(APPSNAP_EXIT_CODE = outcome.code(), "{message}");
    finish(
        not_run(job, run_id, outcome, message),
        Retention::NotAsked,
        record,
    )
    .await
}

/// The report of a run that never reached the machine.
fn not_run(job: &JobName, run_id: Option<String>, outcome: Outcome, message: String) -> RunReport {
    let run_id = run_id.unwrap_or_else(super::report::fresh_run_id);
    let mut report = RunReport::started(job.as_str(), run_id, Utc::now());
    report.exit_code = outcome.code();
    report.errors.push(message);
    report
}

/// Retention after a successful run only (a failed run cannot prune):
/// this job's groups beyond `keep_last` or older than `max_age_days`.
async fn prune_after(env: &RunEnv, job: &Job, report: &RunReport) -> Retention {
    if job.keep_last.is_none() && job.max_age_days.is_none() {
        return Retention::NotAsked;
    }
    let run = match SuccessfulRun::from_report(report) {
        Ok(run) => run,
        Err(why) => return Retention::NotSuccessful(why),
    };
    let Some(owner) = env.owner.as_ref() else {
        warn!("retention skipped: no owner id, so no group can be proven this installation's");
        return Retention::NoOwner;
    };
    let deadline = tokio::time::Instant::now() + PRUNE_BUDGET;
    match retention::prune(
        &env.ecs,
        job,
        &env.instance_id,
        owner,
        &run,
        Utc::now(),
        deadline,
    )
    .await
    {
        Ok(r) => {
            info!(
                deleted = r.deleted.len(),
                kept = r.kept.len(),
                failed = r.failed.len(),
                "retention done"
            );
            Retention::Done(r)
        }
        Err(e) => {
            warn!("retention skipped: {e}");
            Retention::Failed(e)
        }
    }
}

/// Writes the record (under the caller's lock) and assembles the outcome.
async fn finish(
    report: RunReport,
    retention: Retention,
    record: Option<Recording<'_>>,
) -> Executed {
    let upload_pending =
        report.group_id.is_some() && report.upload.as_ref().is_some_and(|u| u.is_pending());
    let record = match record {
        None => None,
        Some(rec) => {
            let result = report.to_job_result(rec.scheduled_for);
            let _held = match rec.lock {
                Some(l) => Some(l.lock().await),
                None => None,
            };
            if let Err(e) = rec.store.write(&result) {
                error!("result of run {} not recorded: {e}", result.run_id);
            }
            Some(result)
        }
    };
    Executed {
        report,
        retention,
        record,
        upload_pending,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::metadata::MetadataError;

    fn job() -> Job {
        let text = "[[job]]\nname = \"db\"\nschedule = \"30 2 * * *\"\ndisks = [\"d-bp1a\"]\n";
        crate::policy::parse_str(std::path::Path::new("t.toml"), text)
            .unwrap()
            .jobs
            .remove(0)
    }

    /// The daemon's failed connection: recorded under its run ID and
    /// scheduled time, with the vendor code for the cause, and only once the
    /// records lock (held by an upload follower, say) is free.
    #[tokio::test]
    async fn a_failed_connection_is_recorded_under_the_callers_lock() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path());
        let lock = std::sync::Arc::new(tokio::sync::Mutex::new(()));
        let scheduled: DateTime<Utc> = "2026-01-02T02:30:00Z".parse().unwrap();
        let held = lock.clone().lock_owned().await;
        let task = {
            let (store, lock) = (store.clone(), lock.clone());
            tokio::spawn(async move {
                let record = Recording {
                    store: &store,
                    lock: Some(&lock),
                    scheduled_for: Some(scheduled),
                };
                let e = CloudError::Metadata(MetadataError::NoRole);
                connect_failed(&job().name, Some("run-1".into()), &e, Some(record)).await
            })
        };
        // The current-thread runtime runs the task until it waits for the lock.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert_eq!(store.load("db").unwrap(), None, "written under the lock");
        drop(held);
        let done = task.await.unwrap();
        let rec = store.load("db").unwrap().expect("recorded");
        assert_eq!(Some(&rec), done.record.as_ref());
        assert_eq!(rec.run_id, "run-1");
        assert_eq!(rec.scheduled_for, Some(scheduled));
        assert_eq!(rec.exit_code, Outcome::NoRamRole.code());
        assert!(
            rec.message.starts_with("cannot reach the cloud: "),
            "{}",
            rec.message
        );
        assert!(matches!(done.retention, Retention::NotAsked));
        assert!(!done.upload_pending);
    }
}
