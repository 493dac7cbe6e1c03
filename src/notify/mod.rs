//! Telling the operator: events ([`event`]) sent to the policy's sinks — a
//! webhook ([`webhook`]), a root-owned command ([`exec`]) — and health-check
//! pings ([`ping`]); the last result per sink is kept for `status`
//! ([`SinkLog`]).
//!
//! **Off the run's path.** Events are emitted after the run's record is
//! written; each sink is delivered by a task of its own with a timeout per
//! attempt and a bounded number of retries, so a hanging or failing sink
//! never delays a run, a thaw or a post-script, and never fails a run (it is
//! logged and counted). A delivery attempt never starts while file systems
//! are frozen (a frozen-set record exists under `run_dir`): an `exec` sink
//! could block on a frozen file system, and nothing but the snapshot may
//! happen in that window.
//!
//! Layering: `notify` reads `job`'s report and runs `job`'s hooks; `job`,
//! `cloud`, `host` and `policy` never name `notify` (the daemon and the CLI
//! call it after [`crate::job::execute`]).

pub mod event;
pub mod exec;
pub mod missed;
pub mod ping;
pub mod sinklog;
pub mod webhook;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use tracing::{info, warn};

pub use event::{DrillFacts, Event, EventKind, HostIdentity, MissedCause, RunFacts};
pub use sinklog::{SinkLog, SinkResult};

use crate::job::execute::{Executed, Retention};
use crate::policy::{Job, NotifySettings};
use crate::state::Consistency;

/// The longest a delivery waits for file systems to be thawed before it
/// gives up (the longest freeze the policy allows is 600 s).
pub const MAX_FROZEN_WAIT: Duration = Duration::from_secs(660);

/// First pause between attempts; doubled each time, up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// Longest pause between attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The sink kinds, as `status` and the metrics name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SinkKind {
    /// `webhook_url`.
    Webhook,
    /// `exec`.
    Exec,
    /// `ping_url`.
    Ping,
}

impl SinkKind {
    /// The name in `status` and the `sink` label.
    pub fn as_str(self) -> &'static str {
        match self {
            SinkKind::Webhook => "webhook",
            SinkKind::Exec => "exec",
            SinkKind::Ping => "ping",
        }
    }
}

/// Why one delivery attempt failed, and whether another may succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptError {
    /// What went wrong (never a key or a credential).
    pub message: String,
    /// Worth another attempt (timeouts, connection errors, 5xx, 429).
    pub retry: bool,
}

impl AttemptError {
    /// A failure another attempt may fix.
    pub fn transient(message: impl Into<String>) -> AttemptError {
        AttemptError {
            message: message.into(),
            retry: true,
        }
    }
    /// A failure that will not change by retrying (4xx, a bad key file).
    pub fn permanent(message: impl Into<String>) -> AttemptError {
        AttemptError {
            message: message.into(),
            retry: false,
        }
    }
}

/// Tells whether file systems may be frozen right now.
pub trait FrozenProbe: Send + Sync + 'static {
    /// True while a freeze may be in progress.
    fn frozen(&self) -> bool;
}

/// The real probe: a frozen-set record exists under `run_dir`. The freeze
/// guard (of this process or of an `appsnap run` beside the daemon) writes
/// it before its first FIFREEZE and removes it after its last FITHAW, so it
/// covers every freeze on the machine that appsnap made.
#[derive(Debug, Clone)]
pub struct SystemFrozenProbe {
    /// `host.run_dir`.
    pub run_dir: PathBuf,
}

impl FrozenProbe for SystemFrozenProbe {
    fn frozen(&self) -> bool {
        std::fs::symlink_metadata(crate::host::record::record_path(&self.run_dir)).is_ok()
    }
}

/// Sends events and pings in the background and remembers how each went.
#[derive(Clone)]
pub struct Notifier {
    inner: Arc<Inner>,
}

struct Inner {
    host: Mutex<HostIdentity>,
    /// For receivers elsewhere: the environment's proxies apply.
    http: Option<reqwest::Client>,
    /// For loopback receivers: never through a proxy.
    http_direct: Option<reqwest::Client>,
    log: SinkLog,
    probe: Box<dyn FrozenProbe>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    first_backoff: Duration,
    /// Called after each kept result (off the runtime's threads): the
    /// caller rewrites the metrics, whose delivery counters then include it.
    after_record: Option<Box<dyn Fn() + Send + Sync>>,
}

impl Notifier {
    /// A notifier for this host; results are kept under `state_dir`.
    pub fn new(host: HostIdentity, state_dir: &Path, probe: Box<dyn FrozenProbe>) -> Notifier {
        let client = |direct| match webhook::client(direct) {
            Ok(c) => Some(c),
            Err(e) => {
                warn!("notifications: no HTTP client ({e}); webhooks and pings will fail");
                None
            }
        };
        let (http, http_direct) = (client(false), client(true));
        Notifier {
            inner: Arc::new(Inner {
                host: Mutex::new(host),
                http,
                http_direct,
                log: SinkLog::new(state_dir),
                probe,
                tasks: Mutex::new(Vec::new()),
                first_backoff: FIRST_BACKOFF,
                after_record: None,
            }),
        }
    }

    /// The same notifier with another first backoff (tests); only before
    /// it is cloned (a shared one is returned unchanged).
    pub fn with_first_backoff(mut self, d: Duration) -> Notifier {
        if let Some(i) = Arc::get_mut(&mut self.inner) {
            i.first_backoff = d;
        }
        self
    }

    /// Calls `f` after each delivery result is kept (before the notifier is
    /// cloned; a shared one is returned unchanged).
    pub fn with_after_record(mut self, f: impl Fn() + Send + Sync + 'static) -> Notifier {
        if let Some(i) = Arc::get_mut(&mut self.inner) {
            i.after_record = Some(Box::new(f));
        }
        self
    }

    /// Who we are in events.
    pub fn host(&self) -> HostIdentity {
        lock(&self.inner.host).clone()
    }

    /// Sets the instance ID once the cloud connection knows it.
    pub fn set_instance_id(&self, id: &str) {
        lock(&self.inner.host).instance_id = Some(id.to_string());
    }

    /// Sends `events` to every sink in `settings` (each sink in order, sinks
    /// in parallel), in the background; returns at once.
    pub fn emit(&self, job: &str, settings: &NotifySettings, events: Vec<Event>) {
        if events.is_empty() {
            return;
        }
        let events = Arc::new(events);
        let mut sinks = Vec::new();
        if let Some(url) = &settings.webhook_url {
            sinks.push(Sink::Webhook {
                url: url.clone(),
                key_file: settings.webhook_key_file.clone(),
            });
        }
        if let Some(path) = &settings.exec {
            sinks.push(Sink::Exec(path.clone()));
        }
        for sink in sinks {
            let me = self.clone();
            let events = events.clone();
            let job = job.to_string();
            let (timeout, retries) = (settings.timeout, settings.retries);
            self.spawn(async move {
                for e in events.iter() {
                    me.deliver(&job, &sink, e, timeout, retries).await;
                }
            });
        }
    }

    /// Pings `url` (healthchecks.io convention) in the background.
    pub fn ping(
        &self,
        job: &str,
        url: &str,
        kind: ping::PingKind,
        settings: &NotifySettings,
        body: String,
    ) {
        let me = self.clone();
        let sink = Sink::Ping {
            url: url.to_string(),
            kind,
            body,
        };
        let job = job.to_string();
        let (timeout, retries) = (settings.timeout, settings.retries);
        self.spawn(async move {
            let label = kind.label();
            me.deliver_one(&job, &sink, label, timeout, retries).await;
        });
    }

    /// Waits up to `limit` for the deliveries started so far (the CLI, before
    /// it exits; the daemon, when it stops). Returns how many were still
    /// going and were abandoned.
    pub async fn drain(&self, limit: Duration) -> usize {
        let tasks: Vec<_> = std::mem::take(&mut *lock(&self.inner.tasks));
        let until = tokio::time::Instant::now() + limit;
        let mut left = 0;
        for t in tasks {
            let abort = t.abort_handle();
            if tokio::time::timeout_at(until, t).await.is_err() {
                abort.abort();
                left += 1;
            }
        }
        left
    }

    fn spawn(&self, fut: impl std::future::Future<Output = ()> + Send + 'static) {
        let handle = tokio::spawn(fut);
        let mut tasks = lock(&self.inner.tasks);
        tasks.retain(|t| !t.is_finished());
        tasks.push(handle);
    }

    /// One event to one sink, with retries; the result is logged and kept.
    async fn deliver(&self, job: &str, sink: &Sink, e: &Event, timeout: Duration, retries: u32) {
        self.deliver_event(job, sink, Some(e), e.event.as_str(), timeout, retries)
            .await
    }

    async fn deliver_one(
        &self,
        job: &str,
        sink: &Sink,
        label: &str,
        timeout: Duration,
        retries: u32,
    ) {
        self.deliver_event(job, sink, None, label, timeout, retries)
            .await
    }

    async fn deliver_event(
        &self,
        job: &str,
        sink: &Sink,
        e: Option<&Event>,
        label: &str,
        timeout: Duration,
        retries: u32,
    ) {
        let mut backoff = self.inner.first_backoff;
        let mut attempts = 0u32;
        let result = loop {
            attempts += 1;
            if let Err(err) = self.wait_thawed().await {
                break Err(err);
            }
            // The exec sink ends its own command at `timeout` (killing its
            // tree); the outer bound leaves it the kill grace to do so.
            let bound = match sink {
                Sink::Exec(_) => timeout + Duration::from_secs(5),
                _ => timeout,
            };
            let r = match tokio::time::timeout(bound, self.attempt(sink, e, timeout)).await {
                Ok(r) => r,
                Err(_) => Err(AttemptError::transient(format!(
                    "no answer within {}s",
                    bound.as_secs()
                ))),
            };
            match r {
                Ok(()) => break Ok(()),
                Err(err) if err.retry && attempts <= retries => {
                    warn!(
                        APPSNAP_JOB = job,
                        sink = sink.kind().as_str(),
                        event = label,
                        attempt = attempts,
                        "notification failed, retrying in {}s: {}",
                        backoff.as_secs_f32(),
                        err.message
                    );
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                Err(err) => break Err(err),
            }
        };
        match &result {
            Ok(()) => info!(
                APPSNAP_JOB = job,
                sink = sink.kind().as_str(),
                event = label,
                attempts,
                "notification sent"
            ),
            Err(err) => warn!(
                APPSNAP_JOB = job,
                sink = sink.kind().as_str(),
                event = label,
                attempts,
                "notification failed (the run is not affected): {}",
                err.message
            ),
        }
        let r = SinkResult {
            at: Utc::now(),
            event: label.to_string(),
            ok: result.is_ok(),
            attempts,
            error: result.err().map(|e| e.message),
            sent_total: 0,
            failed_total: 0,
        };
        // The state dir may be on a file system frozen since the attempt
        // began: wait, then write off the runtime's threads, so a freeze
        // that starts in between blocks a spare thread, never a run.
        if self.wait_thawed().await.is_err() {
            warn!(
                APPSNAP_JOB = job,
                "notification result not kept: file systems stayed frozen"
            );
            return;
        }
        let me = self.clone();
        let (job, kind) = (job.to_string(), sink.kind());
        let kept = tokio::task::spawn_blocking(move || {
            let kept = me.inner.log.record(&job, kind, r);
            if let Some(f) = &me.inner.after_record {
                f();
            }
            kept
        })
        .await;
        match kept {
            Ok(Ok(())) => {}
            Ok(Err(err)) => warn!("notification result not kept: {err}"),
            Err(err) => warn!("notification result not kept: {err}"),
        }
    }

    /// Waits until no file system is frozen (true), or gives up after
    /// [`MAX_FROZEN_WAIT`] (false): for writes that follow a run.
    pub async fn thawed(&self) -> bool {
        self.wait_thawed().await.is_ok()
    }

    /// Waits (polling) until nothing is frozen, or gives up after [`MAX_FROZEN_WAIT`].
    async fn wait_thawed(&self) -> Result<(), AttemptError> {
        let until = tokio::time::Instant::now() + MAX_FROZEN_WAIT;
        while self.inner.probe.frozen() {
            if tokio::time::Instant::now() >= until {
                return Err(AttemptError::permanent(format!(
                    "file systems stayed frozen (or a frozen-set record stayed) for {}s; not delivering while frozen",
                    MAX_FROZEN_WAIT.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    async fn attempt(
        &self,
        sink: &Sink,
        e: Option<&Event>,
        timeout: Duration,
    ) -> Result<(), AttemptError> {
        let http = |url: &str| {
            let c = if webhook::is_loopback(url) {
                &self.inner.http_direct
            } else {
                &self.inner.http
            };
            c.as_ref()
                .ok_or_else(|| AttemptError::permanent("no HTTP client"))
        };
        match (sink, e) {
            (Sink::Webhook { url, key_file }, Some(e)) => {
                webhook::send(http(url)?, url, key_file.as_deref(), e).await
            }
            (Sink::Exec(path), Some(e)) => exec::run(path, e, timeout).await,
            (Sink::Ping { url, kind, body }, _) => ping::send(http(url)?, url, *kind, body).await,
            (_, None) => Err(AttemptError::permanent("nothing to send")),
        }
    }

    /// After a run (the record written): the run's events to the job's
    /// sinks, and its health-check ping.
    pub fn run_finished(&self, job: &Job, facts: &RunFacts) {
        let kinds = event::run_events(facts, job.notify.success);
        let now = Utc::now();
        if job.notify.has_sinks() {
            let events = kinds
                .iter()
                .map(|k| event::run_event(*k, facts, &self.host(), now))
                .collect();
            self.emit(job.name.as_str(), &job.notify, events);
        }
        if let Some(url) = &job.ping_url {
            let kind = if facts.exit_code == 0 {
                ping::PingKind::Success
            } else {
                ping::PingKind::Fail
            };
            let body = format!(
                "appsnap job {} run {}: exit {} ({}), consistency {}{}",
                facts.job,
                facts.run_id,
                facts.exit_code,
                facts.vendor_message,
                facts.consistency.as_str(),
                facts
                    .errors
                    .first()
                    .map(|e| format!(": {}", event::bounded(e)))
                    .unwrap_or_default()
            );
            self.ping(job.name.as_str(), url, kind, &job.notify, body);
        }
    }

    /// Before a run: the `/start` ping, if the job has a ping URL.
    pub fn run_starting(&self, job: &Job, run_id: &str) {
        if let Some(url) = &job.ping_url {
            let body = format!("appsnap job {} run {run_id} starting", job.name);
            self.ping(
                job.name.as_str(),
                url,
                ping::PingKind::Start,
                &job.notify,
                body,
            );
        }
    }

    /// A restore drill of `job` ended: a `verify_failed` event unless it passed.
    pub fn drill_finished(&self, job: &Job, facts: &DrillFacts) {
        if facts.verdict == "passed" || !job.notify.has_sinks() {
            return;
        }
        let e = event::verify_failed_event(facts, &self.host(), Utc::now());
        self.emit(job.name.as_str(), &job.notify, vec![e]);
    }

    /// Scheduled times of `job` passed with no run.
    pub fn missed(
        &self,
        job: &Job,
        times: &[chrono::DateTime<Utc>],
        count: u64,
        cause: MissedCause,
    ) {
        if count == 0 {
            return;
        }
        warn!(
            APPSNAP_JOB = %job.name,
            APPSNAP_PHASE = "schedule",
            missed = count,
            "scheduled time(s) passed with no run: {}",
            times
                .iter()
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                .collect::<Vec<_>>()
                .join(", ")
        );
        if job.notify.has_sinks() {
            let e = event::missed_event(
                job.name.as_str(),
                times,
                count,
                cause,
                job.catch_up && cause == MissedCause::AtStart,
                &self.host(),
                Utc::now(),
            );
            self.emit(job.name.as_str(), &job.notify, vec![e]);
        }
    }
}

/// The consistency `job` is set up for: application with both hooks,
/// file-system with freezing, crash otherwise.
pub fn wanted_consistency(job: &Job) -> Consistency {
    if job.prescript.is_some() && job.postscript.is_some() {
        Consistency::App
    } else if job.fs_freeze {
        Consistency::Fs
    } else {
        Consistency::Crash
    }
}

/// The facts the event rules need, from what [`crate::job::execute`] returned.
pub fn facts(job: &Job, done: &Executed, previous_exit: Option<u8>) -> RunFacts {
    let r = &done.report;
    let started_at = r.started_at;
    let finished_at = done
        .record
        .as_ref()
        .map_or_else(Utc::now, |rec| rec.finished_at);
    let retention_error = match &done.retention {
        Retention::Failed(e) => Some(format!("retention could not run: {e}")),
        Retention::Done(p) if !p.failed.is_empty() => Some(format!(
            "retention: {} deletion(s) failed: {}",
            p.failed.len(),
            p.failed
                .iter()
                .map(|f| format!("{}: {}", f.id, f.error))
                .collect::<Vec<_>>()
                .join("; ")
        )),
        _ => None,
    };
    RunFacts {
        job: job.name.to_string(),
        run_id: r.run_id.clone(),
        scheduled_for: done.record.as_ref().and_then(|rec| rec.scheduled_for),
        started_at,
        finished_at,
        exit_code: r.exit_code,
        vendor_message: r.outcome().message().to_string(),
        errors: r.errors.clone(),
        warnings: r.warnings.clone(),
        consistency: r.consistency,
        wanted: wanted_consistency(job),
        group_id: r.group_id.clone(),
        frozen_ms: r.frozen_ms,
        forced_thaw: r.forced_thaw.clone(),
        retention_error,
        previous_exit,
    }
}

/// Where one event goes.
#[derive(Debug, Clone)]
enum Sink {
    Webhook {
        url: String,
        key_file: Option<PathBuf>,
    },
    Exec(PathBuf),
    Ping {
        url: String,
        kind: ping::PingKind,
        body: String,
    },
}

impl Sink {
    fn kind(&self) -> SinkKind {
        match self {
            Sink::Webhook { .. } => SinkKind::Webhook,
            Sink::Exec(_) => SinkKind::Exec,
            Sink::Ping { .. } => SinkKind::Ping,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_frozen_set_record_means_frozen() {
        let dir = tempfile::tempdir().unwrap();
        let probe = SystemFrozenProbe {
            run_dir: dir.path().to_path_buf(),
        };
        assert!(!probe.frozen());
        std::fs::write(crate::host::record::record_path(dir.path()), "{}").unwrap();
        assert!(probe.frozen());
    }
}
