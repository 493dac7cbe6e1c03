//! What follows a run and a daemon start for the operator, the same for the
//! daemon and `appsnap run`: the run's totals, its events and pings
//! ([`crate::notify`]), and the metrics textfile ([`crate::metrics`]).
//!
//! Everything here happens after the run's record is written (the file
//! systems are thawed and the post-script has run); deliveries go on in
//! the background and never change the run's outcome.

use chrono::{DateTime, Utc};
use tracing::{info, warn};

use crate::job::execute::Executed;
use crate::metrics;
use crate::notify::missed::{self, Missed};
use crate::notify::{self, MissedCause, Notifier};
use crate::policy::{Job, JobName, Policy};
use crate::state::StateStore;

/// The job's previous exit code, read before a run (for `recovered`).
pub fn previous_exit(policy: &Policy, job: &Job) -> Option<u8> {
    StateStore::new(&policy.host.state_dir)
        .read(job.name.as_str())
        .map(|r| r.exit_code)
}

/// Before a run: the health-check `/start` ping.
pub fn run_starting(notifier: &Notifier, job: &Job, run_id: &str) {
    notifier.run_starting(job, run_id);
}

/// After a run's record: events and pings (in the background), then the
/// totals and the textfile, written once nothing is frozen and off the
/// runtime's threads (another job of the daemon may be frozen, and the
/// textfile's directory may be on one of its file systems).
pub async fn run_finished(
    notifier: &Notifier,
    policy: &Policy,
    job: &Job,
    done: &Executed,
    previous_exit: Option<u8>,
) {
    let facts = notify::facts(job, done, previous_exit);
    notifier.run_finished(job, &facts);
    if !notifier.thawed().await {
        warn!(APPSNAP_JOB = %job.name, "run totals and metrics not written: file systems stayed frozen");
        return;
    }
    let retention = metrics::retention_counts(&done.retention);
    let policy = policy.clone();
    let name = job.name.clone();
    let written = tokio::task::spawn_blocking(move || {
        if let Err(e) = metrics::record_run(&policy.host.state_dir, &facts, retention) {
            warn!(APPSNAP_JOB = %name, "run totals not kept: {e}");
        }
        write_metrics(&policy);
    })
    .await;
    if let Err(e) = written {
        warn!("metrics not written: {e}");
    }
}

/// Rewrites the textfile, logging (never failing) when it cannot.
pub fn write_metrics(policy: &Policy) {
    if let Err(e) = metrics::write_textfile(policy, Utc::now()) {
        warn!("metrics not written: {e}");
    }
}

/// At daemon start: every job's scheduled times that passed with no run
/// since its last run (or the last ones reported), reported once and
/// remembered; returns the jobs to run once now (`catch_up = true`), each
/// with the latest time it missed (the catch-up run is the run for it).
pub fn at_start(notifier: &Notifier, policy: &Policy) -> Vec<(JobName, DateTime<Utc>)> {
    let now = Utc::now();
    let store = StateStore::new(&policy.host.state_dir);
    let mut catch_up = Vec::new();
    for job in &policy.jobs {
        let totals = metrics::load_totals(&policy.host.state_dir, job.name.as_str());
        let last = store.read(job.name.as_str());
        let Some(since) = missed::reference(last.as_ref(), totals.missed_until) else {
            continue;
        };
        let m = missed::missed_since(job, since, now);
        if m.count == 0 {
            continue;
        }
        report_missed(notifier, policy, job, &m, MissedCause::AtStart);
        if let (true, Some(last)) = (job.catch_up, m.last) {
            info!(APPSNAP_JOB = %job.name, "catch_up = true: running the missed job once now");
            catch_up.push((job.name.clone(), last));
        }
    }
    write_metrics(policy);
    catch_up
}

/// Scheduled times of `job` skipped while the daemon ran (a clock jump):
/// the event and the totals, in the background (the scheduler's loop calls
/// this and must not wait on a file system).
pub fn skipped(
    notifier: &Notifier,
    policy: &Policy,
    job: &Job,
    times: &[DateTime<Utc>],
    count: u64,
) {
    if count == 0 {
        return;
    }
    let m = Missed {
        times: times
            .iter()
            .take(notify::event::MAX_MISSED_TIMES)
            .copied()
            .collect(),
        count,
        last: times.last().copied(),
    };
    notifier.missed(job, &m.times, m.count, MissedCause::ClockJump);
    let (n, policy, name) = (notifier.clone(), policy.clone(), job.name.clone());
    tokio::spawn(async move {
        if !n.thawed().await {
            return;
        }
        let _ = tokio::task::spawn_blocking(move || {
            if let Err(e) =
                metrics::record_missed(&policy.host.state_dir, name.as_str(), m.count, m.last)
            {
                warn!(APPSNAP_JOB = %name, "missed runs not kept: {e}");
            }
            write_metrics(&policy);
        })
        .await;
    });
}

fn report_missed(notifier: &Notifier, policy: &Policy, job: &Job, m: &Missed, cause: MissedCause) {
    notifier.missed(job, &m.times, m.count, cause);
    if let Err(e) =
        metrics::record_missed(&policy.host.state_dir, job.name.as_str(), m.count, m.last)
    {
        warn!(APPSNAP_JOB = %job.name, "missed runs not kept: {e}");
    }
}

/// After a restore drill: a `verify_failed` event when it did not pass, and
/// the textfile rewritten (the drill's gauges). Off the runtime's threads.
pub async fn drill_finished(
    notifier: &Notifier,
    policy: &Policy,
    job: &Job,
    report: &crate::job::verify::VerifyReport,
) {
    let facts = notify::DrillFacts {
        job: report.job.clone(),
        run_id: report.run_id.clone(),
        group_id: report.group_id.clone(),
        verdict: report.verdict.as_str().to_string(),
        errors: report.errors.clone(),
        started_at: report.started,
        duration_ms: report.duration_ms,
    };
    notifier.drill_finished(job, &facts);
    let policy = policy.clone();
    if let Err(e) = tokio::task::spawn_blocking(move || write_metrics(&policy)).await {
        warn!("metrics not written: {e}");
    }
}
