//! `appsnap daemon`: what systemd runs (Type=notify) for months without
//! attention. It recovers anything a crash left frozen, schedules the jobs,
//! runs them through the job machine, records results, reloads the policy on
//! SIGHUP and stops safely on SIGTERM.
//!
//! Stopping: a run that has not reached its pre-script gives up; a run
//! between its pre-script and the end of its post-script finishes that part
//! (thaw, post-script, lock holders ended) before the daemon exits; a run
//! that is only waiting for ECS to finish a group is abandoned (the group
//! completes anyway). The freeze guard is a separate process that thaws on
//! its deadline or when the daemon's pipe closes, whatever happens here.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use tokio::signal::unix::{signal, SignalKind};
use tracing::{error, info, warn, Instrument};

use crate::alerts;
use crate::cloud::ecs::EcsClient;
use crate::cloud::{Cloud, CloudError};
use crate::host::record;
use crate::job::execute::{self, After, Recording};
use crate::job::machine::{RunEnv, RunOptions, Shutdown};
use crate::job::outcome::Outcome;
use crate::job::upload;
use crate::job::verify::{cleanup as verify_cleanup, verify, Verdict, VerifyEnv, VerifyRequest};
use crate::logging;
use crate::notify::{HostIdentity, Notifier, SystemFrozenProbe};
use crate::policy::{self, CloudSettings, Policy};
use crate::schedule::{
    BoxFuture, DrillRunner, Drills, RunRequest, Scheduler, SchedulerHandle, SystemClock,
};
use crate::state::{DaemonLock, JobResult, StateStore};

/// Where the policy comes from (re-read on SIGHUP).
#[derive(Debug, Clone)]
pub struct PolicyFiles {
    /// The main file (`-c`).
    pub main: PathBuf,
    /// The drop-in directory (`--config-dir`).
    pub dropin_dir: PathBuf,
}

impl PolicyFiles {
    fn load(&self) -> Result<Policy, policy::PolicyError> {
        policy::load(&self.main, &self.dropin_dir)
    }
}

/// The cloud connection, made lazily and remade when `[cloud]` changes, so a
/// metadata service that is down at boot only fails the runs that need it.
struct Connected {
    settings: CloudSettings,
    ecs: Arc<EcsClient>,
    instance_id: String,
    refresher: tokio::task::JoinHandle<()>,
}

impl Drop for Connected {
    fn drop(&mut self) {
        self.refresher.abort();
    }
}

/// What every run shares.
struct Daemon {
    cloud: tokio::sync::Mutex<Option<Arc<Connected>>>,
    shutdown: Shutdown,
    handle: OnceLock<SchedulerHandle>,
    /// Serializes writes of job records between runs and upload followers.
    records: Arc<tokio::sync::Mutex<()>>,
    /// Events, pings and their results.
    notifier: Notifier,
    /// The policy in force, for the metrics written after a delivery.
    current: Arc<std::sync::Mutex<Arc<Policy>>>,
    /// The restore-drill loops of the policy in force (replaced on reload).
    drills: std::sync::Mutex<Option<Drills>>,
    /// Set at stop: a drill in progress releases what it made and ends.
    drill_cancel: tokio::sync::watch::Sender<bool>,
    /// Held (shared) by every drill in progress; stop takes it exclusively
    /// to wait, bounded, for their cleanup.
    drills_running: Arc<tokio::sync::RwLock<()>>,
}

impl Daemon {
    async fn cloud(&self, settings: &CloudSettings) -> Result<Arc<Connected>, CloudError> {
        let mut slot = self.cloud.lock().await;
        if let Some(c) = slot.as_ref().filter(|c| &c.settings == settings) {
            return Ok(c.clone());
        }
        let cloud = Cloud::connect(settings).await?;
        // The refresher keeps role credentials fresh for the daemon's life.
        let refresher = cloud.credentials.spawn_refresher();
        info!(instance = %cloud.instance_id, region = %cloud.region_id, "connected to the cloud");
        let c = Arc::new(Connected {
            settings: settings.clone(),
            ecs: Arc::new(cloud.ecs),
            instance_id: cloud.instance_id,
            refresher,
        });
        *slot = Some(c.clone());
        Ok(c)
    }

    /// One scheduled run: connect (the cached connection), then
    /// [`execute`]: the machine, retention, the record.
    async fn run_one(self: Arc<Self>, req: RunRequest) {
        let job = &req.job;
        notify_status(&format!("running job {}", job.name));
        let policy = &req.policy;
        let store = StateStore::new(&policy.host.state_dir);
        let record = Recording {
            store: &store,
            lock: Some(&*self.records),
            scheduled_for: Some(req.scheduled_for),
        };
        let previous = alerts::previous_exit(policy, job);
        alerts::run_starting(&self.notifier, job, &req.run_id);
        let done = match self.cloud(&policy.cloud).await {
            Err(e) => {
                execute::connect_failed(&job.name, Some(req.run_id.clone()), &e, Some(record)).await
            }
            Ok(c) => {
                self.notifier.set_instance_id(&c.instance_id);
                let env = RunEnv::from_policy(policy, c.ecs.clone(), c.instance_id.clone());
                let opts = RunOptions {
                    run_id: Some(req.run_id.clone()),
                    freeze_gate: Some(req.freeze_gate.clone()),
                    shutdown: Some(self.shutdown.clone()),
                    ..RunOptions::default()
                };
                let after = After {
                    prune: Some(job),
                    record: Some(record),
                };
                let done = execute::execute(&env, &job.into(), opts, after).await;
                // Usable is not uploaded: keep the record's upload progress current.
                if let (true, Some(rec)) = (done.upload_pending, &done.record) {
                    self.follow_upload(c.ecs.clone(), &store, rec);
                }
                done
            }
        };
        alerts::run_finished(&self.notifier, policy, job, &done, previous).await;
        self.notify_idle();
    }

    /// One restore drill of `job` (its `verify_schedule` came): connect, drill,
    /// log the result.
    async fn drill(self: Arc<Self>, job: policy::Job) {
        let _running = self.drills_running.clone().read_owned().await;
        let policy = self.policy_now();
        let c = match self.cloud(&policy.cloud).await {
            Ok(c) => c,
            Err(e) => {
                error!(job = %job.name, "restore drill not run: cannot reach the cloud: {e}");
                return;
            }
        };
        let env = VerifyEnv::from_policy(&policy, c.ecs.clone(), c.instance_id.clone());
        let req = VerifyRequest {
            job: &job,
            group: None,
            run_id: crate::job::report::fresh_run_id(),
            cancel: self.drill_cancel.subscribe(),
        };
        let report = verify(&env, req).await;
        alerts::drill_finished(&self.notifier, &policy, &job, &report).await;
        match report.verdict {
            Verdict::Passed => info!(job = %job.name, "{}", report.summary()),
            _ => error!(job = %job.name, errors = ?report.errors, "{}", report.summary()),
        }
        if !report.leftovers.is_empty() {
            error!(job = %job.name, "restore drill left: {}; retried at the next start or with `appsnap verify --cleanup`", report.leftovers.join("; "));
        }
    }

    /// (Re)starts the drill loops for `policy`.
    fn start_drills(self: &Arc<Self>, policy: &Policy) {
        let d = self.clone();
        let runner: DrillRunner = Arc::new(move |job| -> BoxFuture<'static, ()> {
            let span = logging::run_span(job.name.as_str(), "verify");
            Box::pin(d.clone().drill(job).instrument(span))
        });
        let drills = Drills::start(policy, runner, Arc::new(SystemClock));
        if !drills.is_empty() {
            info!(jobs = drills.len(), "restore drills scheduled");
        }
        *self.drills.lock().unwrap_or_else(|e| e.into_inner()) = Some(drills);
    }

    /// Uploads still in progress when the daemon last stopped are followed again.
    fn resume_following(&self, c: &Connected, policy: &Policy) {
        let store = StateStore::new(&policy.host.state_dir);
        for job in &policy.jobs {
            if let Some(rec) = store.read(job.name.as_str()) {
                self.follow_upload(c.ecs.clone(), &store, &rec);
            }
        }
    }

    /// Follows the upload of `rec`'s group in the background, if it is still going.
    fn follow_upload(&self, ecs: Arc<EcsClient>, store: &StateStore, rec: &JobResult) {
        let (Some(group_id), Some(true)) = (
            rec.snapshot_group_id.clone(),
            rec.upload.as_ref().map(|u| u.is_pending()),
        ) else {
            return;
        };
        tokio::spawn(upload::follow(
            ecs,
            store.clone(),
            self.records.clone(),
            upload::Followed {
                job: rec.job.clone(),
                run_id: rec.run_id.clone(),
                group_id,
            },
            upload::FollowPace::default(),
        ));
    }

    /// The policy in force now.
    fn policy_now(&self) -> Arc<Policy> {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn notify_idle(&self) {
        let Some(h) = self.handle.get() else { return };
        let next = h
            .status()
            .into_iter()
            .filter_map(|s| s.next_due.map(|t| (t, s.name)))
            .min_by_key(|(t, _)| *t);
        match next {
            Some((t, name)) => notify_status(&format!(
                "idle; next: job {name} at {}",
                t.format("%Y-%m-%d %H:%M:%S UTC")
            )),
            None => notify_status("idle; no job scheduled"),
        }
    }
}

fn notify_status(s: &str) {
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Status(s)]);
}

/// How long a stopping daemon waits for restore drills to release their disks.
const DRILL_CLEANUP_AT_STOP: std::time::Duration = std::time::Duration::from_secs(60);

/// How long a stopping daemon waits for notifications still being delivered.
const NOTIFY_DRAIN_AT_STOP: std::time::Duration = std::time::Duration::from_secs(10);

/// Runs the daemon until SIGTERM/SIGINT; returns the process exit code.
pub fn run(files: PolicyFiles) -> u8 {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            error!("cannot start the runtime: {e}");
            return Outcome::Unknown.code();
        }
    };
    let code = rt.block_on(serve(files));
    // Runs still awaiting a group are abandoned; nothing is frozen by now.
    rt.shutdown_background();
    code
}

async fn serve(files: PolicyFiles) -> u8 {
    let policy = match files.load() {
        Ok(p) => p,
        Err(e) => {
            error!("policy rejected:\n{e}");
            return Outcome::InvalidParameters.code();
        }
    };
    let run_dir = policy.host.run_dir.clone();
    if let Err(e) = std::fs::create_dir_all(&run_dir) {
        error!("cannot create {}: {e}", run_dir.display());
        return Outcome::ConditionsNotMet.code();
    }
    let _lock = match DaemonLock::acquire(&run_dir) {
        Ok(l) => l,
        Err(e) => {
            error!("{e}");
            return Outcome::ConditionsNotMet.code();
        }
    };
    recover(&run_dir);

    let current = Arc::new(std::sync::Mutex::new(Arc::new(policy.clone())));
    let notifier = {
        let current = current.clone();
        let probe = SystemFrozenProbe {
            run_dir: run_dir.clone(),
        };
        let host = HostIdentity::local(policy.cloud.instance_id.clone());
        Notifier::new(host, &policy.host.state_dir, Box::new(probe)).with_after_record(move || {
            let p = current.lock().unwrap_or_else(|e| e.into_inner()).clone();
            alerts::write_metrics(&p);
        })
    };
    let daemon = Arc::new(Daemon {
        cloud: tokio::sync::Mutex::new(None),
        shutdown: Shutdown::new(),
        handle: OnceLock::new(),
        records: Arc::new(tokio::sync::Mutex::new(())),
        notifier,
        current,
        drills: std::sync::Mutex::new(None),
        drill_cancel: tokio::sync::watch::channel(false).0,
        drills_running: Arc::new(tokio::sync::RwLock::new(())),
    });
    let connected_instance = match daemon.cloud(&policy.cloud).await {
        Ok(c) => {
            daemon.notifier.set_instance_id(&c.instance_id);
            daemon.resume_following(&c, &policy);
            finish_drills(&c, &policy);
            Some(c.instance_id.clone())
        }
        Err(e) => {
            warn!("cloud not reachable yet ({e}); each run will try again");
            None
        }
    };
    // Scheduled times missed while the daemon was down: told, and with
    // `catch_up = true` run once now; the metrics textfile is written.
    let catch_up = alerts::at_start(&daemon.notifier, &policy);
    let runner_daemon = daemon.clone();
    let runner = Arc::new(move |req: RunRequest| -> BoxFuture<'static, ()> {
        let span = logging::run_span(req.job.name.as_str(), &req.run_id);
        Box::pin(runner_daemon.clone().run_one(req).instrument(span))
    });
    let skipped_daemon = daemon.clone();
    let on_skipped = Arc::new(
        move |job: &policy::Job, times: &[chrono::DateTime<chrono::Utc>], n: u64| {
            let p = skipped_daemon.policy_now();
            alerts::skipped(&skipped_daemon.notifier, &p, job, times, n);
        },
    );
    let (scheduler, handle) = Scheduler::new(&policy, runner, Arc::new(SystemClock));
    let key = spread_key(&policy, connected_instance);
    let scheduler = scheduler
        .with_spread_key(&key)
        .with_on_skipped(on_skipped)
        .with_catch_up(&catch_up);
    for status in handle.status() {
        let (Some(job), Some(next)) = (policy.job(status.name.as_str()), status.next_scheduled)
        else {
            continue;
        };
        info!(
            job = %job.name,
            "spread offset {:.3} s after each scheduled time (spread_secs = {})",
            scheduler.spread_of(job, next).as_secs_f64(),
            job.spread.as_secs()
        );
    }
    let _ = daemon.handle.set(handle.clone());
    let scheduler_task = tokio::spawn(scheduler.run());
    daemon.start_drills(&policy);

    info!(jobs = policy.jobs.len(), "appsnap daemon ready");
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    daemon.notify_idle();
    let watchdog = sd_notify::watchdog_enabled().map(|period| {
        // Pinged from the runtime, so a wedged runtime is noticed; never from the freeze guard.
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period / 2);
            loop {
                tick.tick().await;
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
            }
        })
    });

    let code = signals(&files, &handle, &daemon).await;

    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    daemon.shutdown.request();
    handle.shutdown();
    info!("stopping: waiting for any run between its pre-script and post-script");
    daemon.shutdown.critical_sections_done().await;
    // Drills in progress release their disks and mounts before we go; one
    // that takes too long is finished at the next start from its record.
    daemon
        .drills
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    let _ = daemon.drill_cancel.send(true);
    if tokio::time::timeout(DRILL_CLEANUP_AT_STOP, daemon.drills_running.write())
        .await
        .is_err()
    {
        warn!("a restore drill is still releasing its disks; the next start finishes it");
    }
    // Deliveries still going get a little time, then are abandoned.
    let left = daemon.notifier.drain(NOTIFY_DRAIN_AT_STOP).await;
    if left > 0 {
        warn!("{left} notification(s) abandoned at stop");
    }
    if let Some(w) = watchdog {
        w.abort();
    }
    scheduler_task.abort();
    info!("appsnap daemon stopped");
    code
}

/// Waits for signals: SIGHUP reloads, SIGTERM/SIGINT end the loop.
async fn signals(files: &PolicyFiles, handle: &SchedulerHandle, daemon: &Arc<Daemon>) -> u8 {
    let (mut hup, mut term, mut int) = match (
        signal(SignalKind::hangup()),
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(h), Ok(t), Ok(i)) => (h, t, i),
        _ => {
            error!("cannot install signal handlers");
            return Outcome::Unknown.code();
        }
    };
    loop {
        tokio::select! {
            _ = hup.recv() => reload(files, handle, daemon),
            _ = term.recv() => return Outcome::Success.code(),
            _ = int.recv() => return Outcome::Success.code(),
        }
    }
}

/// SIGHUP: a valid new policy replaces the old; an invalid one is rejected
/// with its located errors and the old one keeps running.
fn reload(files: &PolicyFiles, handle: &SchedulerHandle, daemon: &Arc<Daemon>) {
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Reloading]);
    match files.load() {
        Ok(p) => {
            info!(jobs = p.jobs.len(), "policy reloaded");
            *daemon.current.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(p.clone());
            let for_metrics = p.clone();
            tokio::task::spawn_blocking(move || alerts::write_metrics(&for_metrics));
            daemon.start_drills(&p);
            handle.reload(p);
        }
        Err(e) => error!("reload rejected, keeping the running policy:\n{e}"),
    }
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    daemon.notify_idle();
}

/// Restore drills cut short (SIGKILL, a crash, a reboot) left a record: their
/// copies are unmounted and their disks detached and deleted now, in the
/// background, so no billed disk outlives the next start.
fn finish_drills(c: &Connected, policy: &Policy) {
    if crate::job::verify::record::DrillRecord::load_all(&policy.host.state_dir).is_empty() {
        return;
    }
    let env = VerifyEnv::from_policy(policy, c.ecs.clone(), c.instance_id.clone());
    tokio::spawn(async move {
        let r = verify_cleanup::cleanup(&env).await;
        if r.problems.is_empty() {
            info!(records = r.records, released = ?r.released, "unfinished restore drills cleaned up");
        } else {
            error!(records = r.records, released = ?r.released, "unfinished restore drills not fully cleaned up: {}; retried at the next start or with `appsnap verify --cleanup`", r.problems.join("; "));
        }
    });
}

/// What `appsnap thaw --all` does, at every start: a crash must not leave a
/// file system frozen past the next start.
fn recover(run_dir: &Path) {
    match record::recover(run_dir, Path::new("/proc/self/mountinfo")) {
        Ok(None) => {}
        Ok(Some(r)) => {
            for (t, action) in &r.actions {
                warn!(
                    "recovery: {} ({}): {action:?}",
                    t.mount_point.display(),
                    t.fs_type
                );
            }
            if !r.record_removed {
                error!("recovery could not thaw everything; the record is kept for `appsnap thaw --all`");
            }
        }
        Err(e) => error!("recovery: {e}"),
    }
}

/// What the fleet spread hashes: the instance ID (from the metadata service,
/// else `[cloud] instance_id`); when neither is known at start, the machine
/// ID, then the host name, so the daemon still spreads, told in the log.
fn spread_key(policy: &Policy, connected: Option<String>) -> String {
    if let Some(id) = connected.or_else(|| policy.cloud.instance_id.clone()) {
        return id;
    }
    let machine_id = crate::securefs::read_bounded_regular(Path::new("/etc/machine-id"), 256)
        .ok()
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .filter(|s| !s.is_empty());
    let (what, key) = match machine_id {
        Some(m) => ("/etc/machine-id", m),
        None => ("the host name", HostIdentity::local(None).hostname),
    };
    warn!("instance ID unknown at start: the spread offsets come from {what} until the daemon starts with the metadata service reachable");
    key
}
