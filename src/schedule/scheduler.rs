//! The scheduling loop: fires due jobs, never overlapping a job with itself,
//! and takes reloads and shutdown from its handle.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;

use super::clock::Clock;
use super::cron::{jitter_delay, next_fire, os_random_u64};
use super::disks::DiskLocks;
use super::spread::spread_offset;
use super::{lock, BoxFuture};
use crate::job::freeze_gate::FreezeGate;
use crate::policy::{Job, JobName, Policy};

/// The longest single sleep: how late a wall-clock step or a resume from
/// suspend can be noticed (and so the idle wake-up rate: once a minute).
pub const MAX_SLEEP_CHUNK: Duration = Duration::from_secs(60);

/// Shortest sleep, so rounding between the wall clock and the monotonic
/// timer can never turn the loop into a busy spin.
const MIN_SLEEP: Duration = Duration::from_millis(1);

/// How many missed scheduled times the loop walks through one by one
/// (keeping croner's DST semantics) before it restarts the search from now.
const MAX_CATCH_UP_STEPS: usize = 10_000;

/// How many skipped times one [`OnSkipped`] call lists (the count is whole).
const MAX_SKIPPED_LISTED: usize = 100;

/// Told of scheduled times that passed with no run while the loop ran (a
/// wall-clock jump forward, a resume from suspend): the job, the first 100
/// times, and how many in all. The daemon plugs its notifier in here; the
/// scheduler does not know who listens.
pub type OnSkipped = Arc<dyn Fn(&Job, &[DateTime<Utc>], u64) + Send + Sync>;

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
}

/// Controls a running [`Scheduler`] from elsewhere (signal handlers, tests).
#[derive(Clone)]
pub struct SchedulerHandle {
    tx: mpsc::UnboundedSender<Command>,
    shared: Arc<Shared>,
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
    on_skipped: Option<OnSkipped>,
    /// What the fleet spread hashes with the job name: the instance ID.
    spread_key: String,
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
            freeze_gate,
            disk_locks: DiskLocks::new(),
            on_skipped: None,
            spread_key: String::new(),
        };
        s.apply_policy(policy);
        let handle = SchedulerHandle { tx, shared };
        (s, handle)
    }

    /// Sets what each job's spread offset is derived from (the instance ID;
    /// see [`spread_offset`]) and reschedules every job with it.
    pub fn with_spread_key(mut self, key: &str) -> Scheduler {
        self.spread_key = key.to_string();
        self.reschedule_all();
        self
    }

    /// This instance's spread offset for `job`'s run at `scheduled`.
    pub fn spread_of(&self, job: &Job, scheduled: DateTime<Utc>) -> Duration {
        offset_at(&self.spread_key, job, scheduled)
    }

    /// Calls `f` with the scheduled times each job skips while the loop runs.
    pub fn with_on_skipped(mut self, f: OnSkipped) -> Scheduler {
        self.on_skipped = Some(f);
        self
    }

    /// Runs each listed job once as soon as the loop starts, as the run for
    /// the given (missed) scheduled time; its schedule then goes on from now.
    /// `catch_up = true` at daemon start, like systemd's `Persistent=true`.
    pub fn with_catch_up(mut self, runs: &[(JobName, DateTime<Utc>)]) -> Scheduler {
        let now = self.clock.now();
        for (name, missed) in runs {
            if let Some(e) = self.entries.get_mut(name) {
                e.next = Some(*missed);
                e.due = Some(now);
            }
        }
        self.publish_status();
        self
    }

    #[cfg(test)]
    /// Replaces the random source used for jitter and run IDs (tests pin it).
    pub fn with_random(mut self, random: impl FnMut() -> u64 + Send + 'static) -> Scheduler {
        self.random = Box::new(random);
        self.reschedule_all();
        self
    }

    /// Every job's next run from now again (after what a due time depends on changed).
    fn reschedule_all(&mut self) {
        let now = self.clock.now();
        let names: Vec<JobName> = self.entries.keys().cloned().collect();
        for name in names {
            self.reschedule_from(&name, now);
        }
        self.publish_status();
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
                    run_id: crate::job::report::run_id(scheduled, (self.random)()),
                    scheduled_for: scheduled,
                    freeze_gate: self.freeze_gate.clone(),
                };
                let running = entry.running.clone();
                let runner = self.runner.clone();
                let locks = self.disk_locks.clone();
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
        // Times the spread and a jitter could still have reached are not missed.
        let reach = chrono::Duration::from_std(entry.job.jitter + entry.job.spread)
            .unwrap_or(chrono::Duration::zero());
        let mut missed: Vec<DateTime<Utc>> = Vec::new();
        let mut missed_count = 0u64;
        while let Some(t) = next {
            if t > now {
                break;
            }
            if t + reach < now {
                missed_count += 1;
                if missed.len() < MAX_SKIPPED_LISTED {
                    missed.push(t);
                }
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
        if let (Some(f), true) = (&self.on_skipped, missed_count > 0) {
            f(&entry.job, &missed, missed_count);
        }
        let jitter = jitter(&entry.job, &mut self.random);
        entry.due = next.map(|t| t + spread(&self.spread_key, &entry.job, t) + jitter);
        entry.next = next;
    }

    /// Sets a job's next run to the first cron time after `now`.
    fn reschedule_from(&mut self, name: &JobName, now: DateTime<Utc>) {
        let entry = self.entries.get_mut(name).expect("caller checked");
        entry.next = next_fire(&entry.job, now);
        let jitter = jitter(&entry.job, &mut self.random);
        let key = &self.spread_key;
        entry.due = entry.next.map(|t| t + spread(key, &entry.job, t) + jitter);
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
                    && e.job.spread == job.spread
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

/// The spread window for `job`'s run at `scheduled`: `job.spread`, but at
/// most half the time to the run after it, so a frequent schedule is never
/// spread past its own next run (`*/10 * * * * *` gets 5 s, a daily job 60 s).
fn spread_window(job: &Job, scheduled: DateTime<Utc>) -> Duration {
    let gap = next_fire(job, scheduled)
        .and_then(|n| (n - scheduled).to_std().ok())
        .unwrap_or(Duration::MAX);
    job.spread.min(gap / 2)
}

/// The fixed offset of the instance `key` for `job`'s run at `scheduled`.
fn offset_at(key: &str, job: &Job, scheduled: DateTime<Utc>) -> Duration {
    spread_offset(key, &job.name, spread_window(job, scheduled))
}

/// [`offset_at`] as a chrono duration.
fn spread(key: &str, job: &Job, scheduled: DateTime<Utc>) -> chrono::Duration {
    chrono::Duration::from_std(offset_at(key, job, scheduled)).unwrap_or(chrono::Duration::zero())
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
