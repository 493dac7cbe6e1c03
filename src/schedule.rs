//! When jobs run: cron (croner) read in each job's zone, and a small tokio
//! loop that fires them.
//!
//! Why our own loop instead of a scheduler crate: see the README's design
//! notes. The rules it keeps, each tested below:
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
//!   [`FreezeGate`] (the job's) the runner takes around its freeze window.
//! * **Jitter** is drawn uniformly from `[0, job.jitter]` per run.
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

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, OwnedMutexGuard, OwnedRwLockReadGuard, OwnedRwLockWriteGuard, RwLock};

use crate::job::freeze_gate::FreezeGate;
use crate::policy::{DiskId, DiskSelection, Job, JobName, JobZone, Policy};

/// A boxed, sendable future: the shape of the injectable runner and clock.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The longest single sleep: how late a wall-clock step or a resume from
/// suspend can be noticed (and so the idle wake-up rate: once a minute).
pub const MAX_SLEEP_CHUNK: Duration = Duration::from_secs(60);

/// Shortest sleep, so rounding between the wall clock and the monotonic
/// timer can never turn the loop into a busy spin.
const MIN_SLEEP: Duration = Duration::from_millis(1);

/// How many missed scheduled times the loop walks through one by one
/// (keeping croner's DST semantics) before it restarts the search from now.
const MAX_CATCH_UP_STEPS: usize = 10_000;

/// The first scheduled time of `job` strictly after `after`, read in the
/// job's zone and returned in UTC; `None` if the cron can never fire.
///
/// Pass the previous *scheduled* time (not "now") when iterating: croner's
/// Vixie-cron DST rules (a run in the skipped hour happens right after the
/// gap; a run in the repeated hour happens once) depend on the start point.
pub fn next_fire(job: &Job, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    match job.zone {
        JobZone::Local => job
            .schedule
            .next_after(&after.with_timezone(&chrono::Local))
            .map(|t| t.with_timezone(&Utc)),
        JobZone::Named(tz) => job
            .schedule
            .next_after(&after.with_timezone(&tz))
            .map(|t| t.with_timezone(&Utc)),
    }
}

/// A random delay uniform in `[0, max]` (millisecond resolution), drawn
/// from `random` so tests can pin it; fleets use it to spread API load.
pub fn jitter_delay(max: Duration, random: &mut dyn FnMut() -> u64) -> Duration {
    let span = max.as_millis().min(u128::from(u64::MAX - 1)) as u64;
    if span == 0 {
        return Duration::ZERO;
    }
    // Rejection sampling: no modulo bias, whatever the span.
    let n = span + 1;
    let zone = u64::MAX - (u64::MAX % n);
    loop {
        let r = random();
        if r < zone {
            return Duration::from_millis(r % n);
        }
    }
}

/// 64 random bits from the OS (for jitter and run IDs). Falls back to the
/// clock's nanoseconds if the OS source fails, which it does not on Linux
/// after boot; jitter is not a security feature.
pub fn os_random_u64() -> u64 {
    getrandom::u64().unwrap_or_else(|_| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
    })
}

/// Where the scheduler reads time from: the wall clock for "when is it"
/// and a monotonic sleep for "wait". Injectable so tests run on paused
/// tokio time with a wall clock they can step.
pub trait Clock: Send + Sync + 'static {
    /// The current wall-clock time.
    fn now(&self) -> DateTime<Utc>;
    /// Sleeps for `d` of monotonic time.
    fn sleep(&self, d: Duration) -> BoxFuture<'static, ()>;
}

/// The real clocks: `Utc::now()` and `tokio::time::sleep`.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
    fn sleep(&self, d: Duration) -> BoxFuture<'static, ()> {
        Box::pin(tokio::time::sleep(d))
    }
}

/// A wall clock that follows tokio's (pausable) monotonic time from a fixed
/// start, plus steps added by [`ManualClock::jump`]: deterministic tests and
/// simulations of NTP steps and suspend without real waiting.
#[derive(Debug, Clone)]
pub struct ManualClock {
    inner: Arc<ManualInner>,
}

#[derive(Debug)]
struct ManualInner {
    start_wall: DateTime<Utc>,
    start_mono: tokio::time::Instant,
    offset: Mutex<chrono::Duration>,
}

impl ManualClock {
    /// A clock reading `start` now; must be created inside a tokio runtime.
    pub fn new(start: DateTime<Utc>) -> ManualClock {
        ManualClock {
            inner: Arc::new(ManualInner {
                start_wall: start,
                start_mono: tokio::time::Instant::now(),
                offset: Mutex::new(chrono::Duration::zero()),
            }),
        }
    }

    /// Steps the wall clock by `d` (negative: backwards) without any
    /// monotonic time passing, as an NTP step or a resume does.
    pub fn jump(&self, d: chrono::Duration) {
        *lock(&self.inner.offset) += d;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        let mono = tokio::time::Instant::now() - self.inner.start_mono;
        let mono = chrono::Duration::from_std(mono).unwrap_or(chrono::Duration::MAX);
        self.inner.start_wall + mono + *lock(&self.inner.offset)
    }
    fn sleep(&self, d: Duration) -> BoxFuture<'static, ()> {
        Box::pin(tokio::time::sleep(d))
    }
}

/// Locks a std mutex, ignoring poisoning: the data behind these locks stays
/// consistent even if a holder panicked (plain values, no invariants).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Serializes runs whose disk sets may intersect: two snapshot groups of the
/// same disk at once are refused by ECS (exit 16), and their scripts and
/// freezes would interleave. `disks = "all"` conflicts with every run.
///
/// Deadlock-free by lock ordering: the instance-wide lock first (shared for
/// a disk list, exclusive for "all"), then per-disk locks in ID order.
#[derive(Debug, Clone, Default)]
pub struct DiskLocks {
    all: Arc<RwLock<()>>,
    disks: Arc<Mutex<HashMap<DiskId, Arc<tokio::sync::Mutex<()>>>>>,
}

/// Held for a whole run; dropping it releases the run's disks.
#[derive(Debug)]
pub struct DiskLease {
    _all: AllGuard,
    _disks: Vec<OwnedMutexGuard<()>>,
}

#[derive(Debug)]
enum AllGuard {
    Shared(#[allow(dead_code)] OwnedRwLockReadGuard<()>),
    Exclusive(#[allow(dead_code)] OwnedRwLockWriteGuard<()>),
}

impl DiskLocks {
    /// Empty lock table.
    pub fn new() -> DiskLocks {
        DiskLocks::default()
    }

    /// Waits until no run holding an intersecting disk set is in progress.
    pub async fn acquire(&self, disks: &DiskSelection) -> DiskLease {
        match disks {
            // Conservative: the exclusions of "all" are resolved only at run
            // time against the instance, so treat it as every disk.
            DiskSelection::All { .. } => DiskLease {
                _all: AllGuard::Exclusive(self.all.clone().write_owned().await),
                _disks: Vec::new(),
            },
            DiskSelection::List(list) => {
                let all = AllGuard::Shared(self.all.clone().read_owned().await);
                let mut ids: Vec<&DiskId> = list.iter().collect();
                ids.sort();
                ids.dedup();
                let mutexes: Vec<_> = {
                    let mut table = lock(&self.disks);
                    ids.iter()
                        .map(|id| table.entry((*id).clone()).or_default().clone())
                        .collect()
                };
                let mut guards = Vec::with_capacity(mutexes.len());
                for m in mutexes {
                    guards.push(m.lock_owned().await);
                }
                DiskLease {
                    _all: all,
                    _disks: guards,
                }
            }
        }
    }
}

/// What the scheduler hands the runner for one run.
#[derive(Debug, Clone)]
pub struct RunRequest {
    /// The job as the policy in force at fire time defines it.
    pub job: Job,
    /// That whole policy (cloud and host settings for the run).
    pub policy: Arc<Policy>,
    /// A fresh ID for this run (16 hex digits); goes into every log event as `APPSNAP_RUN_ID`.
    pub run_id: String,
    /// The cron time this run is for (before jitter), UTC.
    pub scheduled_for: DateTime<Utc>,
    /// The instance-wide freeze gate: take it around FIFREEZE..FITHAW.
    pub freeze_gate: FreezeGate,
}

/// Performs one run of a job (the daemon plugs `job::machine` in here).
/// Any `Fn(RunRequest) -> BoxFuture<'static, ()>` closure is a runner.
pub trait Runner: Send + Sync + 'static {
    /// Runs the job to completion; the scheduler already holds the job's disks.
    fn run(&self, request: RunRequest) -> BoxFuture<'static, ()>;
}

impl<F> Runner for F
where
    F: Fn(RunRequest) -> BoxFuture<'static, ()> + Send + Sync + 'static,
{
    fn run(&self, request: RunRequest) -> BoxFuture<'static, ()> {
        self(request)
    }
}

/// One job's place in the schedule, as [`SchedulerHandle::status`] reports it
/// (for sd_notify `STATUS=` and logs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobStatus {
    /// The job.
    pub name: JobName,
    /// The next cron time, UTC (`None`: the cron never fires again).
    pub next_scheduled: Option<DateTime<Utc>>,
    /// When it will actually start: `next_scheduled` plus this run's jitter.
    pub next_due: Option<DateTime<Utc>>,
    /// Whether a run of this job is in progress now.
    pub running: bool,
}

/// Messages from handles to the loop.
enum Command {
    Reload(Box<Policy>),
    Shutdown,
}

/// One job's schedule state inside the loop.
struct Entry {
    job: Job,
    next: Option<DateTime<Utc>>,
    due: Option<DateTime<Utc>>,
    /// Shared with the in-flight run task; survives reloads by name.
    running: Arc<AtomicBool>,
}

/// State the handle can read without messaging the loop.
#[derive(Default)]
struct Shared {
    status: Mutex<Vec<JobStatus>>,
    runs_started: AtomicU64,
}

/// Controls a running [`Scheduler`] from elsewhere (signal handlers, tests).
#[derive(Clone)]
pub struct SchedulerHandle {
    tx: mpsc::UnboundedSender<Command>,
    shared: Arc<Shared>,
    freeze_gate: FreezeGate,
}

impl SchedulerHandle {
    /// Replaces the policy (SIGHUP, after the new one validated). Jobs whose
    /// schedule, zone and jitter are unchanged keep their next run; changed
    /// and new jobs are rescheduled from now; removed jobs stop being
    /// scheduled. In-flight runs continue, and a renamed-in-place job still
    /// cannot overlap its running predecessor.
    pub fn reload(&self, policy: Policy) {
        let _ = self.tx.send(Command::Reload(Box::new(policy)));
    }

    /// Stops scheduling; [`Scheduler::run`] then waits for in-flight runs and returns.
    pub fn shutdown(&self) {
        let _ = self.tx.send(Command::Shutdown);
    }

    /// Every job's next run and whether it is running, as of the loop's last wake-up.
    pub fn status(&self) -> Vec<JobStatus> {
        lock(&self.shared.status).clone()
    }

    /// How many runs have been started since the scheduler began.
    pub fn runs_started(&self) -> u64 {
        self.shared.runs_started.load(Ordering::Relaxed)
    }

    /// The instance-wide freeze gate (also passed in each [`RunRequest`]),
    /// for freezes started outside the schedule.
    pub fn freeze_gate(&self) -> FreezeGate {
        self.freeze_gate.clone()
    }
}

/// The scheduling loop: build it with a policy, a runner and a clock, keep a
/// [`SchedulerHandle`], and `.run().await` it on the daemon's runtime.
pub struct Scheduler {
    policy: Arc<Policy>,
    entries: BTreeMap<JobName, Entry>,
    runner: Arc<dyn Runner>,
    clock: Arc<dyn Clock>,
    random: Box<dyn FnMut() -> u64 + Send>,
    rx: mpsc::UnboundedReceiver<Command>,
    shared: Arc<Shared>,
    freeze_gate: FreezeGate,
    disk_locks: DiskLocks,
}

impl Scheduler {
    /// A scheduler for `policy`'s jobs; first runs are the first cron times
    /// after the clock's now (nothing missed while down is replayed).
    pub fn new(
        policy: &Policy,
        runner: Arc<dyn Runner>,
        clock: Arc<dyn Clock>,
    ) -> (Scheduler, SchedulerHandle) {
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared::default());
        let freeze_gate = FreezeGate::new();
        let mut s = Scheduler {
            policy: Arc::new(policy.clone()),
            entries: BTreeMap::new(),
            runner,
            clock,
            random: Box::new(os_random_u64),
            rx,
            shared: shared.clone(),
            freeze_gate: freeze_gate.clone(),
            disk_locks: DiskLocks::new(),
        };
        s.apply_policy(policy);
        let handle = SchedulerHandle {
            tx,
            shared,
            freeze_gate,
        };
        (s, handle)
    }

    /// Replaces the random source used for jitter and run IDs (tests pin it).
    pub fn with_random(mut self, random: impl FnMut() -> u64 + Send + 'static) -> Scheduler {
        self.random = Box::new(random);
        let now = self.clock.now();
        let names: Vec<JobName> = self.entries.keys().cloned().collect();
        for name in names {
            self.reschedule_from(&name, now);
        }
        self.publish_status();
        self
    }

    /// Runs until [`SchedulerHandle::shutdown`] (or every handle is dropped),
    /// then waits for in-flight runs to finish.
    pub async fn run(mut self) {
        let mut tasks = tokio::task::JoinSet::new();
        let mut open = true;
        while open {
            let now = self.clock.now();
            self.fire_due(now, &mut tasks);
            self.publish_status();

            let wait = self
                .entries
                .values()
                .filter_map(|e| e.due)
                .min()
                .map(|due| (due - now).to_std().unwrap_or(Duration::ZERO))
                .unwrap_or(MAX_SLEEP_CHUNK)
                .clamp(MIN_SLEEP, MAX_SLEEP_CHUNK);
            tokio::select! {
                _ = self.clock.sleep(wait) => {}
                cmd = self.rx.recv() => match cmd {
                    Some(Command::Reload(policy)) => self.apply_policy(&policy),
                    Some(Command::Shutdown) | None => open = false,
                },
                // A run ended: reap it (so `status` shows it idle at once).
                Some(done) = tasks.join_next(), if !tasks.is_empty() => log_join(done),
            }
        }
        tracing::info!(
            in_flight = tasks.len(),
            "scheduler stopped; waiting for in-flight runs"
        );
        while let Some(done) = tasks.join_next().await {
            log_join(done);
        }
    }

    /// Fires every job whose due time has come, then advances it.
    fn fire_due(&mut self, now: DateTime<Utc>, tasks: &mut tokio::task::JoinSet<()>) {
        let due: Vec<JobName> = self
            .entries
            .iter()
            .filter(|(_, e)| e.due.is_some_and(|d| d <= now))
            .map(|(n, _)| n.clone())
            .collect();
        for name in due {
            let entry = self.entries.get_mut(&name).expect("listed above");
            let scheduled = entry.next.expect("due implies next");
            if entry.running.swap(true, Ordering::AcqRel) {
                tracing::warn!(
                    APPSNAP_JOB = %name,
                    APPSNAP_PHASE = "schedule",
                    scheduled = %scheduled.to_rfc3339(),
                    "skipping this run: the previous run of the job is still in progress"
                );
            } else {
                let request = RunRequest {
                    job: entry.job.clone(),
                    policy: self.policy.clone(),
                    run_id: format!("{:016x}", (self.random)()),
                    scheduled_for: scheduled,
                    freeze_gate: self.freeze_gate.clone(),
                };
                let running = entry.running.clone();
                let runner = self.runner.clone();
                let locks = self.disk_locks.clone();
                self.shared.runs_started.fetch_add(1, Ordering::Relaxed);
                tasks.spawn(async move {
                    // Clears `running` even if the runner panics.
                    let _reset = ResetOnDrop(running);
                    let _lease = locks.acquire(&request.job.disks).await;
                    runner.run(request).await;
                });
            }
            self.advance(&name, scheduled, now);
        }
    }

    /// Moves a job past `scheduled` to its first cron time after `now`,
    /// iterating from the scheduled time so DST rules hold, and logs any
    /// scheduled times skipped (wall-clock jump, suspend, long run).
    fn advance(&mut self, name: &JobName, scheduled: DateTime<Utc>, now: DateTime<Utc>) {
        let entry = self.entries.get_mut(name).expect("caller checked");
        let mut next = next_fire(&entry.job, scheduled);
        let mut skipped = 0usize;
        while let Some(t) = next {
            if t > now {
                break;
            }
            skipped += 1;
            if skipped >= MAX_CATCH_UP_STEPS {
                next = next_fire(&entry.job, now);
                break;
            }
            next = next_fire(&entry.job, t);
        }
        if skipped > 0 {
            tracing::warn!(
                APPSNAP_JOB = %name,
                APPSNAP_PHASE = "schedule",
                skipped,
                "scheduled times passed while the clock jumped or a run was due; not replaying them"
            );
        }
        let due = next.map(|t| t + jitter(&entry.job, &mut self.random));
        entry.next = next;
        entry.due = due;
    }

    /// Sets a job's next run to the first cron time after `now`.
    fn reschedule_from(&mut self, name: &JobName, now: DateTime<Utc>) {
        let entry = self.entries.get_mut(name).expect("caller checked");
        entry.next = next_fire(&entry.job, now);
        entry.due = entry.next.map(|t| t + jitter(&entry.job, &mut self.random));
    }

    /// Installs `policy`'s jobs, keeping the timing of unchanged ones and
    /// the running flag of every job that keeps its name.
    fn apply_policy(&mut self, policy: &Policy) {
        let now = self.clock.now();
        self.policy = Arc::new(policy.clone());
        let mut old = std::mem::take(&mut self.entries);
        for job in &policy.jobs {
            let name = job.name.clone();
            let kept = old.remove(&name);
            let same_timing = kept.as_ref().is_some_and(|e| {
                e.job.schedule == job.schedule
                    && e.job.zone == job.zone
                    && e.job.jitter == job.jitter
            });
            match kept {
                Some(e) if same_timing => {
                    self.entries.insert(
                        name,
                        Entry {
                            job: job.clone(),
                            ..e
                        },
                    );
                }
                other => {
                    let running = other
                        .map(|e| e.running)
                        .unwrap_or_else(|| Arc::new(AtomicBool::new(false)));
                    self.entries.insert(
                        name.clone(),
                        Entry {
                            job: job.clone(),
                            next: None,
                            due: None,
                            running,
                        },
                    );
                    self.reschedule_from(&name, now);
                }
            }
        }
        for name in old.keys() {
            tracing::info!(
                APPSNAP_JOB = %name,
                APPSNAP_PHASE = "schedule",
                "job removed from the policy; no longer scheduled"
            );
        }
        self.publish_status();
    }

    /// Copies every entry's timing where the handle can read it.
    fn publish_status(&self) {
        let status = self
            .entries
            .iter()
            .map(|(name, e)| JobStatus {
                name: name.clone(),
                next_scheduled: e.next,
                next_due: e.due,
                running: e.running.load(Ordering::Acquire),
            })
            .collect();
        *lock(&self.shared.status) = status;
    }
}

/// A runner must not panic; if one does, say so loudly (the job's
/// `running` flag was already cleared by its drop guard).
fn log_join(done: Result<(), tokio::task::JoinError>) {
    if let Err(e) = done {
        if e.is_panic() {
            tracing::error!("a job run panicked; the scheduler carries on: {e}");
        }
    }
}

/// This run's jitter as a chrono duration.
fn jitter(job: &Job, random: &mut dyn FnMut() -> u64) -> chrono::Duration {
    chrono::Duration::from_std(jitter_delay(job.jitter, random)).unwrap_or(chrono::Duration::zero())
}

/// Clears a job's running flag when its run task ends, however it ends.
struct ResetOnDrop(Arc<AtomicBool>);

impl Drop for ResetOnDrop {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::parse_str;
    use chrono::Datelike;
    use std::path::Path;

    fn policy(text: &str) -> Policy {
        parse_str(Path::new("/test/appsnap.toml"), text).expect("test policy is valid")
    }

    fn job(schedule: &str, zone: &str) -> Job {
        policy(&format!(
            "[[job]]\nname = \"jj\"\nschedule = \"{schedule}\"\ntimezone = \"{zone}\"\ndisks = [\"d-a\"]\n"
        ))
        .jobs
        .remove(0)
    }

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().expect("RFC 3339 test time")
    }

    fn walk(job: &Job, from: &str, n: usize) -> Vec<DateTime<Utc>> {
        let mut out = Vec::new();
        let mut at = t(from);
        for _ in 0..n {
            at = next_fire(job, at).expect("fires");
            out.push(at);
        }
        out
    }

    #[test]
    fn five_field_is_minute_first() {
        let j = job("30 2 * * *", "UTC");
        assert_eq!(
            walk(&j, "2026-05-01T00:00:00Z", 2),
            [t("2026-05-01T02:30:00Z"), t("2026-05-02T02:30:00Z")]
        );
    }

    #[test]
    fn six_field_is_seconds_first() {
        let j = job("*/20 * * * * *", "UTC");
        assert_eq!(
            walk(&j, "2026-05-01T00:00:05Z", 3),
            [
                t("2026-05-01T00:00:20Z"),
                t("2026-05-01T00:00:40Z"),
                t("2026-05-01T00:01:00Z")
            ]
        );
    }

    #[test]
    fn named_zone_is_honoured() {
        let j = job("30 2 * * *", "Asia/Shanghai");
        assert_eq!(
            next_fire(&j, t("2026-05-01T00:00:00Z")),
            Some(t("2026-05-01T18:30:00Z"))
        );
    }

    #[test]
    fn berlin_spring_forward_runs_once_right_after_the_gap() {
        // 2026-03-29 02:00 CET -> 03:00 CEST: 02:30 does not exist that day.
        let j = job("30 2 * * *", "Europe/Berlin");
        assert_eq!(
            walk(&j, "2026-03-27T12:00:00Z", 4),
            [
                t("2026-03-28T01:30:00Z"), // 02:30 CET
                t("2026-03-29T01:00:00Z"), // 03:00 CEST, right after the gap
                t("2026-03-30T00:30:00Z"), // 02:30 CEST
                t("2026-03-31T00:30:00Z"),
            ]
        );
    }

    #[test]
    fn berlin_fall_back_runs_once_in_the_repeated_hour() {
        // 2026-10-25 03:00 CEST -> 02:00 CET: 02:30 happens twice on the wall.
        let j = job("30 2 * * *", "Europe/Berlin");
        assert_eq!(
            walk(&j, "2026-10-24T12:00:00Z", 3),
            [
                t("2026-10-25T00:30:00Z"), // 02:30 CEST, the first 02:30
                t("2026-10-26T01:30:00Z"), // 02:30 CET next day; no second run on the 25th
                t("2026-10-27T01:30:00Z"),
            ]
        );
    }

    #[test]
    fn daily_schedules_fire_exactly_once_per_local_day_through_dst() {
        // Every hour and a few minutes, in zones whose transitions differ:
        // 02:00 (Berlin, New York), midnight (Santiago), 30 minutes (Lord Howe).
        for zone in [
            "Europe/Berlin",
            "America/New_York",
            "America/Santiago",
            "Australia/Lord_Howe",
        ] {
            let tz: chrono_tz::Tz = zone.parse().unwrap();
            for hour in 0..24 {
                for minute in [0, 15, 30, 45] {
                    let j = job(&format!("{minute} {hour} * * *"), zone);
                    let mut at = t("2025-12-30T12:00:00Z");
                    let mut days = Vec::new();
                    loop {
                        at = next_fire(&j, at).expect("fires");
                        let local = at.with_timezone(&tz).date_naive();
                        if local.year() > 2026 {
                            break;
                        }
                        if local.year() == 2026 {
                            days.push(local);
                        }
                    }
                    let mut unique = days.clone();
                    unique.dedup();
                    assert_eq!(
                        unique.len(),
                        days.len(),
                        "{zone} {hour}:{minute}: a day ran twice"
                    );
                    assert_eq!(days.len(), 365, "{zone} {hour}:{minute}: a day was missed");
                }
            }
        }
    }

    #[test]
    fn jitter_is_within_bounds() {
        let max = Duration::from_secs(30);
        assert_eq!(jitter_delay(max, &mut || 0), Duration::ZERO);
        assert_eq!(
            jitter_delay(Duration::ZERO, &mut || u64::MAX),
            Duration::ZERO
        );
        // The largest value accepted by rejection sampling maps into range.
        let n = 30_001u64;
        let top = u64::MAX - (u64::MAX % n) - 1;
        assert_eq!(
            jitter_delay(max, &mut || top),
            Duration::from_millis(top % n)
        );
        // Values in the rejected tail are redrawn, never folded in.
        let mut draws = vec![5u64, u64::MAX];
        assert_eq!(
            jitter_delay(max, &mut || draws.pop().expect("draw")),
            Duration::from_millis(5)
        );
        let mut seen_low = false;
        let mut seen_high = false;
        for _ in 0..20_000 {
            let d = jitter_delay(max, &mut os_random_u64);
            assert!(d <= max, "{d:?} > {max:?}");
            seen_low |= d < Duration::from_secs(3);
            seen_high |= d > Duration::from_secs(27);
        }
        assert!(seen_low && seen_high, "draws cover both ends of [0, 30 s]");
    }

    // ---- the loop, on paused tokio time and a manual wall clock ----

    #[derive(Debug, Clone)]
    struct Record {
        job: String,
        scheduled: DateTime<Utc>,
        started: DateTime<Utc>,
        ended: DateTime<Utc>,
        frozen_from: Option<DateTime<Utc>>,
    }

    #[derive(Clone, Default)]
    struct Log {
        records: Arc<Mutex<Vec<Record>>>,
        active: Arc<AtomicU64>,
        max_active: Arc<AtomicU64>,
    }

    impl Log {
        fn all(&self) -> Vec<Record> {
            lock(&self.records).clone()
        }
        fn starts(&self, job: &str) -> Vec<DateTime<Utc>> {
            self.all()
                .into_iter()
                .filter(|r| r.job == job)
                .map(|r| r.started)
                .collect()
        }
    }

    /// A runner that records each run, works for `work` (paused time), and
    /// takes the freeze gate for the whole run when `freeze` is set.
    fn runner(clock: ManualClock, log: Log, work: Duration, freeze: bool) -> Arc<dyn Runner> {
        Arc::new(move |req: RunRequest| -> BoxFuture<'static, ()> {
            let clock = clock.clone();
            let log = log.clone();
            Box::pin(async move {
                let started = clock.now();
                let permit = if freeze {
                    Some(req.freeze_gate.acquire().await)
                } else {
                    None
                };
                let frozen_from = permit.as_ref().map(|_| clock.now());
                let now = log.active.fetch_add(1, Ordering::SeqCst) + 1;
                log.max_active.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(work).await;
                log.active.fetch_sub(1, Ordering::SeqCst);
                drop(permit);
                lock(&log.records).push(Record {
                    job: req.job.name.to_string(),
                    scheduled: req.scheduled_for,
                    started,
                    ended: clock.now(),
                    frozen_from,
                });
            })
        })
    }

    struct Sim {
        clock: ManualClock,
        log: Log,
        handle: SchedulerHandle,
        task: tokio::task::JoinHandle<()>,
    }

    fn start(p: &Policy, at: &str, work: Duration, freeze: bool, random: Option<u64>) -> Sim {
        let clock = ManualClock::new(t(at));
        let log = Log::default();
        let (s, handle) = Scheduler::new(
            p,
            runner(clock.clone(), log.clone(), work, freeze),
            Arc::new(clock.clone()),
        );
        let s = match random {
            Some(r) => s.with_random(move || r),
            None => s,
        };
        let task = tokio::spawn(s.run());
        Sim {
            clock,
            log,
            handle,
            task,
        }
    }

    impl Sim {
        async fn stop(self) -> Log {
            self.handle.shutdown();
            self.task.await.expect("scheduler task");
            self.log
        }
    }

    async fn sleep(secs: u64) {
        tokio::time::sleep(Duration::from_secs(secs)).await;
    }

    const ONE_JOB_EVERY_10S: &str =
        "[[job]]\nname = \"fast\"\nschedule = \"*/10 * * * * *\"\ntimezone = \"UTC\"\ndisks = [\"d-a\"]\n";

    #[tokio::test(start_paused = true)]
    async fn six_field_schedule_fires_on_time_without_drift() {
        let sim = start(
            &policy(ONE_JOB_EVERY_10S),
            "2026-05-01T00:00:03Z",
            Duration::from_secs(3),
            false,
            None,
        );
        sleep(60).await;
        let log = sim.stop().await;
        let want: Vec<_> = (1..=6)
            .map(|i| t("2026-05-01T00:00:00Z") + chrono::Duration::seconds(10 * i))
            .collect();
        assert_eq!(log.starts("fast"), want);
        assert!(log.all().iter().all(|r| r.scheduled == r.started));
    }

    #[tokio::test(start_paused = true)]
    async fn five_field_schedule_fires_each_minute() {
        let p = policy(
            "[[job]]\nname = \"mm\"\nschedule = \"* * * * *\"\ntimezone = \"UTC\"\ndisks = [\"d-a\"]\n",
        );
        let sim = start(
            &p,
            "2026-05-01T00:00:30Z",
            Duration::from_secs(1),
            false,
            None,
        );
        sleep(3 * 60).await;
        let log = sim.stop().await;
        assert_eq!(
            log.starts("mm"),
            [
                t("2026-05-01T00:01:00Z"),
                t("2026-05-01T00:02:00Z"),
                t("2026-05-01T00:03:00Z")
            ]
        );
    }

    fn berlin_nightly() -> Policy {
        policy(
            "[[job]]\nname = \"db\"\nschedule = \"30 2 * * *\"\ntimezone = \"Europe/Berlin\"\ndisks = [\"d-a\"]\n",
        )
    }

    #[tokio::test(start_paused = true)]
    async fn berlin_spring_forward_in_the_loop_no_missed_no_doubled() {
        let sim = start(
            &berlin_nightly(),
            "2026-03-27T12:00:00Z",
            Duration::from_secs(600),
            false,
            None,
        );
        sleep(4 * 86_400).await;
        let log = sim.stop().await;
        assert_eq!(
            log.starts("db"),
            [
                t("2026-03-28T01:30:00Z"),
                t("2026-03-29T01:00:00Z"), // 03:00 CEST, once
                t("2026-03-30T00:30:00Z"),
                t("2026-03-31T00:30:00Z"),
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn berlin_fall_back_in_the_loop_no_missed_no_doubled() {
        // The run lasts 90 min, so it ends inside the repeated hour: the next
        // run must still come from the scheduled time, not from "now".
        let sim = start(
            &berlin_nightly(),
            "2026-10-23T12:00:00Z",
            Duration::from_secs(90 * 60),
            false,
            None,
        );
        sleep(4 * 86_400).await;
        let log = sim.stop().await;
        assert_eq!(
            log.starts("db"),
            [
                t("2026-10-24T00:30:00Z"),
                t("2026-10-25T00:30:00Z"), // 02:30 CEST, once
                t("2026-10-26T01:30:00Z"), // 02:30 CET
                t("2026-10-27T01:30:00Z"),
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn jitter_delays_start_within_bounds() {
        let p = policy(
            "[[job]]\nname = \"jj\"\nschedule = \"0 * * * *\"\ntimezone = \"UTC\"\ndisks = [\"d-a\"]\njitter_secs = 30\n",
        );
        // Pinned at the top of the range: every run starts exactly 30 s late.
        let sim = start(
            &p,
            "2026-05-01T00:00:00Z",
            Duration::from_secs(1),
            false,
            Some(30_000),
        );
        sleep(3 * 3600 + 60).await;
        let log = sim.stop().await;
        assert_eq!(
            log.starts("jj"),
            [
                t("2026-05-01T01:00:30Z"),
                t("2026-05-01T02:00:30Z"),
                t("2026-05-01T03:00:30Z")
            ]
        );
        // With OS randomness: each start within [scheduled, scheduled + 30 s].
        let sim = start(
            &p,
            "2026-05-01T00:00:00Z",
            Duration::from_secs(1),
            false,
            None,
        );
        sleep(24 * 3600 + 60).await;
        let log = sim.stop().await;
        let all = log.all();
        assert_eq!(all.len(), 24);
        for r in all {
            let late = r.started - r.scheduled;
            assert!(
                late >= chrono::Duration::zero() && late <= chrono::Duration::seconds(30),
                "{late:?}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn slow_run_skips_ticks_instead_of_queueing() {
        let sim = start(
            &policy(ONE_JOB_EVERY_10S),
            "2026-05-01T00:00:05Z",
            Duration::from_secs(25),
            false,
            None,
        );
        sleep(63).await;
        let log = sim.stop().await;
        // 00:10 runs until 00:35 (00:20 and 00:30 skipped), 00:40 runs until
        // 01:05 (00:50 and 01:00 skipped): no queued catch-up runs at 00:35.
        assert_eq!(
            log.starts("fast"),
            [t("2026-05-01T00:00:10Z"), t("2026-05-01T00:00:40Z")]
        );
        assert_eq!(log.max_active.load(Ordering::SeqCst), 1);
    }

    const TWO_DISJOINT: &str = "
[[job]]
name = \"aa\"
schedule = \"0 * * * *\"
timezone = \"UTC\"
disks = [\"d-a\"]

[[job]]
name = \"bb\"
schedule = \"0 * * * *\"
timezone = \"UTC\"
disks = [\"d-b\"]
";

    #[tokio::test(start_paused = true)]
    async fn freezes_are_serialized_across_jobs() {
        let sim = start(
            &policy(TWO_DISJOINT),
            "2026-05-01T00:30:00Z",
            Duration::from_secs(20),
            true,
            None,
        );
        sleep(3600).await;
        let log = sim.stop().await;
        assert_eq!(log.max_active.load(Ordering::SeqCst), 1);
        let mut frozen: Vec<_> = log
            .all()
            .iter()
            .map(|r| r.frozen_from.expect("took the gate"))
            .collect();
        frozen.sort();
        assert_eq!(
            frozen,
            [t("2026-05-01T01:00:00Z"), t("2026-05-01T01:00:20Z")]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn disjoint_jobs_without_freezes_run_side_by_side() {
        // The control for the test above: the serialization comes from the
        // freeze gate, not from the scheduler running one job at a time.
        let sim = start(
            &policy(TWO_DISJOINT),
            "2026-05-01T00:30:00Z",
            Duration::from_secs(20),
            false,
            None,
        );
        sleep(3600).await;
        let log = sim.stop().await;
        assert_eq!(log.all().len(), 2);
        assert_eq!(log.max_active.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn jobs_sharing_disks_never_run_together() {
        let p = policy(
            "
[[job]]
name = \"aa\"
schedule = \"0 * * * *\"
timezone = \"UTC\"
disks = [\"d-a\", \"d-shared\"]

[[job]]
name = \"bb\"
schedule = \"0 * * * *\"
timezone = \"UTC\"
disks = [\"d-shared\", \"d-b\"]

[[job]]
name = \"everything\"
schedule = \"0 * * * *\"
timezone = \"UTC\"
disks = \"all\"
",
        );
        let sim = start(
            &p,
            "2026-05-01T00:30:00Z",
            Duration::from_secs(20),
            false,
            None,
        );
        sleep(3600).await;
        let log = sim.stop().await;
        let mut spans: Vec<_> = log.all().iter().map(|r| (r.started, r.ended)).collect();
        assert_eq!(spans.len(), 3);
        assert_eq!(log.max_active.load(Ordering::SeqCst), 1);
        spans.sort();
        // All three were due at 01:00; each waited for the previous one.
        assert!(spans.windows(2).all(|w| w[0].1 <= w[1].0), "{spans:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn wall_clock_jump_forward_fires_each_job_at_most_once() {
        let p = policy(
            "
[[job]]
name = \"minutely\"
schedule = \"* * * * *\"
timezone = \"UTC\"
disks = [\"d-a\"]

[[job]]
name = \"hourly\"
schedule = \"0 * * * *\"
timezone = \"Europe/Berlin\"
disks = [\"d-b\"]
",
        );
        let sim = start(
            &p,
            "2026-05-01T00:00:30Z",
            Duration::from_secs(1),
            false,
            None,
        );
        sleep(60).await; // minutely ran at 00:01:00
        sim.clock.jump(chrono::Duration::hours(5)); // suspend / NTP step
        sleep(59).await; // the loop notices within one chunk
        let after_jump = sim.log.all();
        sleep(120).await;
        let log = sim.stop().await;
        let count = |recs: &[Record], job: &str| recs.iter().filter(|r| r.job == job).count();
        assert_eq!(count(&after_jump, "minutely"), 2, "{after_jump:?}");
        assert_eq!(count(&after_jump, "hourly"), 1, "{after_jump:?}");
        // Then the normal cadence resumes from the new wall time.
        let minutely = log.starts("minutely");
        assert_eq!(minutely.len(), 4, "{minutely:?}");
        assert_eq!(minutely[2], t("2026-05-01T05:03:00Z"));
        assert_eq!(minutely[3], t("2026-05-01T05:04:00Z"));
        assert_eq!(count(&log.all(), "hourly"), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn wall_clock_jump_backward_does_not_repeat_a_run() {
        let p = policy(
            "[[job]]\nname = \"hh\"\nschedule = \"0 * * * *\"\ntimezone = \"UTC\"\ndisks = [\"d-a\"]\n",
        );
        let sim = start(
            &p,
            "2026-05-01T00:59:00Z",
            Duration::from_secs(1),
            false,
            None,
        );
        sleep(120).await; // ran at 01:00
        sim.clock.jump(chrono::Duration::minutes(-30)); // now 00:31 on the wall
        sleep(3600).await; // wall reaches 01:31: 01:00 must not run again
        let log = sim.stop().await;
        assert_eq!(log.starts("hh"), [t("2026-05-01T01:00:00Z")]);
    }

    #[tokio::test(start_paused = true)]
    async fn reload_reschedules_without_disturbing_in_flight_runs() {
        let sim = start(
            &policy(ONE_JOB_EVERY_10S),
            "2026-05-01T00:00:05Z",
            Duration::from_secs(30),
            false,
            None,
        );
        sleep(10).await; // 00:10 run in flight until 00:40
        assert!(sim.handle.status()[0].running);
        // New policy: "fast" now every 15 s, plus a new job.
        sim.handle.reload(policy(
            "
[[job]]
name = \"fast\"
schedule = \"*/15 * * * * *\"
timezone = \"UTC\"
disks = [\"d-a\"]

[[job]]
name = \"new\"
schedule = \"*/20 * * * * *\"
timezone = \"UTC\"
disks = [\"d-b\"]
",
        ));
        sleep(1).await;
        let status = sim.handle.status();
        assert_eq!(status.len(), 2);
        // Reloaded at 00:15 exactly: the next cron time strictly after it.
        assert_eq!(status[0].next_scheduled, Some(t("2026-05-01T00:00:30Z")));
        assert!(status[0].running, "in-flight run survives the reload");
        sleep(49).await; // wall 00:01:05
        let log = sim.stop().await;
        // The in-flight run finished; 00:30 was skipped (still running),
        // then the new 15 s schedule took over at 00:45 (01:00 skipped: the
        // 00:45 run lasts until 01:15).
        assert_eq!(
            log.starts("fast"),
            [t("2026-05-01T00:00:10Z"), t("2026-05-01T00:00:45Z")]
        );
        assert_eq!(log.all()[0].ended, t("2026-05-01T00:00:40Z"));
        assert_eq!(log.starts("new")[0], t("2026-05-01T00:00:20Z"));
        assert!(log.max_active.load(Ordering::SeqCst) <= 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_panicking_run_does_not_stop_the_schedule() {
        let clock = ManualClock::new(t("2026-05-01T00:00:05Z"));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (s, handle) = {
            let run_clock = clock.clone();
            let seen = seen.clone();
            Scheduler::new(
                &policy(ONE_JOB_EVERY_10S),
                Arc::new(move |req: RunRequest| -> BoxFuture<'static, ()> {
                    let now = run_clock.now();
                    let seen = seen.clone();
                    Box::pin(async move {
                        // The request carries the policy in force.
                        assert_eq!(req.policy.jobs.len(), 1);
                        lock(&seen).push(now);
                        if lock(&seen).len() == 1 {
                            panic!("runner bug");
                        }
                    })
                }),
                Arc::new(clock.clone()),
            )
        };
        let task = tokio::spawn(s.run());
        sleep(20).await; // wall 00:25
        handle.shutdown();
        task.await.expect("the scheduler survives a runner panic");
        assert_eq!(
            *lock(&seen),
            [t("2026-05-01T00:00:10Z"), t("2026-05-01T00:00:20Z")]
        );
        assert!(!handle.status()[0].running);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_waits_for_in_flight_runs() {
        let sim = start(
            &policy(ONE_JOB_EVERY_10S),
            "2026-05-01T00:00:05Z",
            Duration::from_secs(30),
            false,
            None,
        );
        sleep(6).await;
        let log = sim.stop().await; // returns only after the 00:10 run ended
        let all = log.all();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].ended, t("2026-05-01T00:00:40Z"));
    }
}
