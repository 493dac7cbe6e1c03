//! When jobs run: cron (croner) read in each job's zone, and a small tokio
//! loop that fires them.
//!
//! Why our own loop instead of a scheduler crate: see the README's design
//! notes. The rules it keeps, each tested in `schedule/tests.rs`:
//!
//! * **No polling ticks.** The loop sleeps until the earliest due job, in
//!   chunks of at most [`MAX_SLEEP_CHUNK`], re-reading the *wall* clock after
//!   each chunk: monotonic sleeps do not notice an NTP step or a suspend.
//! * **No drift, DST-correct.** The next scheduled time is found by iterating
//!   croner from the previous *scheduled* time (croner's DST rules depend on
//!   the start point), never from "now + interval".
//! * **No replay, no burst.** Runs missed while the daemon was down are not
//!   replayed; after a wall-clock jump forward a job fires at most once, and
//!   the skipped times are logged.
//! * **No overlap.** A job whose previous run is still going skips the tick
//!   with a warning instead of queueing.
//! * **Serialization.** Runs whose disk sets intersect wait for each other
//!   ([`DiskLocks`]); any two freezes on the instance are serialized by the
//!   [`FreezeGate`](crate::job::freeze_gate::FreezeGate) (the job's) the runner
//!   takes around its freeze window.
//! * **Spread**: a scheduled run starts [`spread_offset`] after its cron
//!   time, fixed per instance and job within `job.spread`; **jitter**, drawn
//!   uniformly from `[0, job.jitter]` per run, is added on top.
//! * **Reload** ([`SchedulerHandle::reload`]) swaps the policy without
//!   touching in-flight runs.
//!
//! How the daemon plugs its job runner in:
//!
//! ```no_run
//! # async fn daemon(policy: appsnap::policy::Policy, new_policy: appsnap::policy::Policy) {
//! use std::sync::Arc;
//! use appsnap::schedule::{BoxFuture, RunRequest, Scheduler, SystemClock};
//! use tracing::Instrument;
//!
//! let runner = Arc::new(|req: RunRequest| -> BoxFuture<'static, ()> {
//!     let span = appsnap::logging::run_span(req.job.name.as_str(), &req.run_id);
//!     Box::pin(
//!         async move {
//!             // preflight, pre-script ...
//!             let permit = req.freeze_gate.acquire().await; // one freeze at a time
//!             let hold = appsnap::logging::hold(); // nothing is written until thaw
//!             // FIFREEZE, CreateSnapshotGroup, FITHAW ...
//!             drop(hold);
//!             drop(permit);
//!             // post-script, tag, prune, state::StateStore::write ...
//!         }
//!         .instrument(span),
//!     )
//! });
//! let (scheduler, handle) = Scheduler::new(&policy, runner, Arc::new(SystemClock));
//! let task = tokio::spawn(scheduler.run());
//! handle.reload(new_policy); // on SIGHUP, after the new policy validated
//! handle.shutdown(); // on SIGTERM; then await the task
//! task.await.unwrap();
//! # }
//! ```
//!
//! One concern per file: `cron` the next scheduled time and jitter, `spread`
//! the fleet's fixed offsets, `clock`
//! where time is read from, `disks` the per-disk run serialization,
//! `scheduler` the loop and its handle; tests in `schedule/tests.rs`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;

mod clock;
mod cron;
mod disks;
mod drills;
mod scheduler;
mod spread;
#[cfg(test)]
mod tests;

pub use clock::{Clock, SystemClock};
pub use cron::{jitter_delay, next_fire, next_in_zone, os_random_u64};
pub use disks::{DiskLease, DiskLocks};
pub use drills::{DrillRunner, Drills};
pub use scheduler::{
    JobStatus, OnSkipped, RunRequest, Runner, Scheduler, SchedulerHandle, MAX_SLEEP_CHUNK,
};
pub use spread::spread_offset;

/// A boxed, sendable future: the shape of the injectable runner and clock.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Locks a std mutex, ignoring poisoning: the data behind these locks stays
/// consistent even if a holder panicked (plain values, no invariants).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
