//! Restore drills on each job's `verify_schedule`: one sleeping loop per job
//! that hands the job to the daemon's drill runner when its time comes. The
//! drill itself runs as its own task, so a reload (which replaces the loops)
//! never cuts a drill short; drills never overlap (the drill lock refuses a
//! second one). Missed drill times are not replayed: a drill is a check, the
//! next one comes soon enough.

use std::sync::Arc;
use std::time::Duration;

use tracing::info;

use super::cron::next_in_zone;
use super::{BoxFuture, Clock, MAX_SLEEP_CHUNK};
use crate::policy::{Job, Policy};

/// Runs one drill of the job (the daemon's: connect, verify, report).
pub type DrillRunner = Arc<dyn Fn(Job) -> BoxFuture<'static, ()> + Send + Sync>;

/// The loops of the policy in force.
pub struct Drills {
    loops: Vec<tokio::task::JoinHandle<()>>,
}

impl Drills {
    /// Starts one loop per job with a `verify_schedule`.
    pub fn start(policy: &Policy, runner: DrillRunner, clock: Arc<dyn Clock>) -> Drills {
        let loops = policy
            .jobs
            .iter()
            .filter(|j| j.verify.schedule.is_some())
            .map(|j| tokio::spawn(drill_loop(j.clone(), runner.clone(), clock.clone())))
            .collect();
        Drills { loops }
    }

    /// How many jobs have a drill schedule.
    pub fn len(&self) -> usize {
        self.loops.len()
    }

    /// Whether no job has one.
    pub fn is_empty(&self) -> bool {
        self.loops.is_empty()
    }
}

impl Drop for Drills {
    /// Ends the loops (not the drills they started).
    fn drop(&mut self) {
        for l in &self.loops {
            l.abort();
        }
    }
}

async fn drill_loop(job: Job, runner: DrillRunner, clock: Arc<dyn Clock>) {
    let Some(schedule) = job.verify.schedule.clone() else {
        return;
    };
    let mut after = clock.now();
    loop {
        let Some(due) = next_in_zone(&schedule, &job.zone, after) else {
            return;
        };
        info!(job = %job.name, "next restore drill at {}", due.format("%Y-%m-%d %H:%M:%S UTC"));
        // Sleep in chunks, re-reading the wall clock (NTP steps, suspend).
        loop {
            let now = clock.now();
            if now >= due {
                break;
            }
            let left = (due - now).to_std().unwrap_or(Duration::ZERO);
            clock.sleep(left.min(MAX_SLEEP_CHUNK)).await;
        }
        tokio::spawn(runner(job.clone()));
        // From the scheduled time (DST rules), but never from before now: a
        // clock that jumped over several times fires once, not in a burst.
        after = due.max(clock.now());
    }
}
