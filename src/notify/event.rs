//! The events appsnap tells an operator about, as sinks receive them: one
//! JSON object per event, versioned by [`EVENT_SCHEMA`] (fields are only
//! added within a version; a removal or a change of meaning bumps it).
//!
//! Which events a run produces is decided here, from plain facts about the
//! run ([`RunFacts`]), so the rules are tested without a cloud or a freeze.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::state::Consistency;

/// The version of the event object; receivers should check it.
pub const EVENT_SCHEMA: u32 = 1;

/// The longest text field an event carries (characters); longer ones are
/// cut, so a script's chatty error cannot make a webhook body unbounded.
pub const MAX_TEXT_CHARS: usize = 2048;

/// The longest list of missed times one `missed` event names.
pub const MAX_MISSED_TIMES: usize = 100;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// The run ended with a non-zero exit code.
    Failure,
    /// The run succeeded but its snapshots are less consistent than the job
    /// was set up for (application consistency wanted, file-system or crash got).
    Degraded,
    /// The file systems were thawed by the guard's deadline, or a freeze was
    /// lost (thawed by someone else) before the point in time was fixed.
    ForcedThaw,
    /// Scheduled times passed with no run (daemon down, suspend, clock jump).
    Missed,
    /// Retention could not run, or some deletions failed.
    RetentionError,
    /// The first success after one or more failures.
    Recovered,
    /// A successful run; sent only when the sink asks for it (`success = true`).
    Success,
    /// A restore drill (`appsnap verify`) failed or could not run.
    VerifyFailed,
}

impl EventKind {
    /// The name as in the JSON, the `X-Appsnap-Event` header and `APPSNAP_EVENT`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Failure => "failure",
            EventKind::Degraded => "degraded",
            EventKind::ForcedThaw => "forced_thaw",
            EventKind::Missed => "missed",
            EventKind::RetentionError => "retention_error",
            EventKind::Recovered => "recovered",
            EventKind::Success => "success",
            EventKind::VerifyFailed => "verify_failed",
        }
    }
}

/// Which machine sent it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostIdentity {
    /// The ECS instance ID, when known (from the policy or the metadata service).
    pub instance_id: Option<String>,
    /// The kernel's host name.
    pub hostname: String,
}

impl HostIdentity {
    /// This machine: `instance_id` as the caller knows it, the kernel's host
    /// name (the UTS namespace's, as `uname -n` prints it).
    pub fn local(instance_id: Option<String>) -> HostIdentity {
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_default();
        HostIdentity {
            instance_id,
            hostname,
        }
    }
}

/// One event, as sent (the README's "Events" section documents it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// [`EVENT_SCHEMA`].
    pub schema: u32,
    /// What happened.
    pub event: EventKind,
    /// A unique ID for this event (`<run id>:<event>`, or `missed:<job>:<time>`),
    /// so a receiver can drop duplicates of a retried delivery.
    pub id: String,
    /// When appsnap emitted it.
    pub time: DateTime<Utc>,
    /// The job.
    pub job: String,
    /// The run (absent for `missed`).
    pub run_id: Option<String>,
    /// The vendor exit code (0 success; the README's table).
    pub exit_code: Option<u8>,
    /// The vendor's message for that code.
    pub message: Option<String>,
    /// Why: the run's first error, what degraded it, what forced the thaw,
    /// what retention said, which times were missed.
    pub detail: Option<String>,
    /// The consistency the snapshots have (`app`, `fs`, `crash`, `none`).
    pub consistency: Option<Consistency>,
    /// The consistency the job was set up for.
    pub wanted_consistency: Option<Consistency>,
    /// The snapshot group, if one was created.
    pub snapshot_group_id: Option<String>,
    /// The cron time the run was for (absent: run by hand).
    pub scheduled_for: Option<DateTime<Utc>>,
    /// When the run started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it ended.
    pub finished_at: Option<DateTime<Utc>>,
    /// How long the run took, milliseconds.
    pub duration_ms: Option<u64>,
    /// How long I/O was suspended, milliseconds.
    pub frozen_ms: Option<u64>,
    /// For `missed`: the scheduled times that passed with no run (at most
    /// [`MAX_MISSED_TIMES`], the earliest first).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missed: Vec<DateTime<Utc>>,
    /// For `missed`: how many times passed in all (may exceed the list).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missed_count: Option<u64>,
    /// The machine.
    pub host: HostIdentity,
    /// appsnap's version.
    pub appsnap_version: String,
}

/// What a finished run tells the event rules (built by the caller from the
/// run's report and retention result).
#[derive(Debug, Clone, PartialEq)]
pub struct RunFacts {
    /// The job.
    pub job: String,
    /// The run.
    pub run_id: String,
    /// The cron time it was for.
    pub scheduled_for: Option<DateTime<Utc>>,
    /// Start and end.
    pub started_at: DateTime<Utc>,
    /// End.
    pub finished_at: DateTime<Utc>,
    /// The vendor exit code.
    pub exit_code: u8,
    /// The vendor's message for it.
    pub vendor_message: String,
    /// The run's errors, in order.
    pub errors: Vec<String>,
    /// The run's warnings, in order.
    pub warnings: Vec<String>,
    /// What the snapshots have.
    pub consistency: Consistency,
    /// What the job was set up for.
    pub wanted: Consistency,
    /// The group.
    pub group_id: Option<String>,
    /// I/O suspension.
    pub frozen_ms: Option<u64>,
    /// Why the thaw was forced (deadline, lost freeze), if it was.
    pub forced_thaw: Option<String>,
    /// Why retention failed (wholly or partly), if it did.
    pub retention_error: Option<String>,
    /// The exit code of the job's previous recorded run, if any.
    pub previous_exit: Option<u8>,
}

/// How the levels rank (stronger is larger).
fn rank(c: Consistency) -> u8 {
    match c {
        Consistency::App => 3,
        Consistency::Fs => 2,
        Consistency::Crash => 1,
        Consistency::None => 0,
    }
}

/// The events one finished run produces, in the order they are sent.
pub fn run_events(f: &RunFacts, success_wanted: bool) -> Vec<EventKind> {
    let ok = f.exit_code == 0;
    let mut out = Vec::new();
    if f.forced_thaw.is_some() {
        out.push(EventKind::ForcedThaw);
    }
    if !ok {
        out.push(EventKind::Failure);
    }
    if ok && rank(f.consistency) < rank(f.wanted) {
        out.push(EventKind::Degraded);
    }
    if f.retention_error.is_some() {
        out.push(EventKind::RetentionError);
    }
    if ok && f.previous_exit.is_some_and(|c| c != 0) {
        out.push(EventKind::Recovered);
    }
    if ok && success_wanted {
        out.push(EventKind::Success);
    }
    out
}

/// Cuts `s` to [`MAX_TEXT_CHARS`] characters (marking the cut).
pub fn bounded(s: &str) -> String {
    if s.chars().count() <= MAX_TEXT_CHARS {
        return s.to_string();
    }
    let mut out: String = s.chars().take(MAX_TEXT_CHARS).collect();
    out.push_str(" […]");
    out
}

/// The event of `kind` for a finished run.
pub fn run_event(kind: EventKind, f: &RunFacts, host: &HostIdentity, now: DateTime<Utc>) -> Event {
    let detail = match kind {
        EventKind::ForcedThaw => f.forced_thaw.clone(),
        EventKind::RetentionError => f.retention_error.clone(),
        EventKind::Degraded => Some(if why_degraded(&f.warnings).is_empty() {
            format!(
                "{} consistency wanted, {} achieved",
                f.wanted.as_str(),
                f.consistency.as_str()
            )
        } else {
            format!(
                "{} consistency wanted, {} achieved: {}",
                f.wanted.as_str(),
                f.consistency.as_str(),
                why_degraded(&f.warnings).join("; ")
            )
        }),
        _ => f.errors.first().cloned(),
    };
    Event {
        schema: EVENT_SCHEMA,
        event: kind,
        id: format!("{}:{}", f.run_id, kind.as_str()),
        time: now,
        job: f.job.clone(),
        run_id: Some(f.run_id.clone()),
        exit_code: Some(f.exit_code),
        message: Some(bounded(&f.vendor_message)),
        detail: detail.as_deref().map(bounded),
        consistency: Some(f.consistency),
        wanted_consistency: Some(f.wanted),
        snapshot_group_id: f.group_id.clone(),
        scheduled_for: f.scheduled_for,
        started_at: Some(f.started_at),
        finished_at: Some(f.finished_at),
        duration_ms: (f.finished_at - f.started_at)
            .num_milliseconds()
            .try_into()
            .ok(),
        frozen_ms: f.frozen_ms,
        missed: Vec::new(),
        missed_count: None,
        host: host.clone(),
        appsnap_version: env!("CARGO_PKG_VERSION").to_string(),
    }
}

/// The warnings that say why consistency dropped (the machine's say
/// "...-consistent"), or all of them when none does.
fn why_degraded(warnings: &[String]) -> Vec<&str> {
    let about: Vec<&str> = warnings
        .iter()
        .filter(|w| w.contains("consistent"))
        .map(String::as_str)
        .collect();
    if about.is_empty() {
        warnings.iter().map(String::as_str).collect()
    } else {
        about
    }
}

/// Why scheduled times were missed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MissedCause {
    /// Found at daemon start: the daemon was down (or the machine off or suspended).
    AtStart,
    /// Found while running: the wall clock jumped forward (suspend, NTP step).
    ClockJump,
}

/// The `missed` event for `times` (earliest first; `count` in all) of `job`.
pub fn missed_event(
    job: &str,
    times: &[DateTime<Utc>],
    count: u64,
    cause: MissedCause,
    catch_up: bool,
    host: &HostIdentity,
    now: DateTime<Utc>,
) -> Event {
    let first = times.first().copied().unwrap_or(now);
    let why = match cause {
        MissedCause::AtStart => "the daemon was not running (stopped, machine off or suspended)",
        MissedCause::ClockJump => "the wall clock jumped forward (suspend or time step)",
    };
    let list = times
        .iter()
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .collect::<Vec<_>>()
        .join(", ");
    let then = if catch_up {
        "; catch_up = true: running it once now"
    } else {
        ""
    };
    Event {
        schema: EVENT_SCHEMA,
        event: EventKind::Missed,
        id: format!(
            "missed:{job}:{}",
            first.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ),
        time: now,
        job: job.to_string(),
        run_id: None,
        exit_code: None,
        message: None,
        detail: Some(bounded(&format!(
            "{count} scheduled time(s) passed with no run ({why}): {list}{then}"
        ))),
        consistency: None,
        wanted_consistency: None,
        snapshot_group_id: None,
        scheduled_for: None,
        started_at: None,
        finished_at: None,
        duration_ms: None,
        frozen_ms: None,
        missed: times.iter().take(MAX_MISSED_TIMES).copied().collect(),
        missed_count: Some(count),
        host: host.clone(),
        appsnap_version: env!("CARGO_PKG_VERSION").to_string(),
    }
}

/// What a restore drill tells the event rules.
#[derive(Debug, Clone)]
pub struct DrillFacts {
    /// The job.
    pub job: String,
    /// The drill's run ID.
    pub run_id: String,
    /// The group it restored, if it got that far.
    pub group_id: Option<String>,
    /// `failed` or `not-run`.
    pub verdict: String,
    /// Its errors (the first ones go into `detail`).
    pub errors: Vec<String>,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// How long it took.
    pub duration_ms: u64,
}

/// The `verify_failed` event of a drill that did not pass.
pub fn verify_failed_event(f: &DrillFacts, host: &HostIdentity, now: DateTime<Utc>) -> Event {
    Event {
        schema: EVENT_SCHEMA,
        event: EventKind::VerifyFailed,
        id: format!("{}:verify_failed", f.run_id),
        time: now,
        job: f.job.clone(),
        run_id: Some(f.run_id.clone()),
        exit_code: None,
        message: Some(format!("restore drill {}", f.verdict)),
        detail: Some(bounded(&f.errors.join("; "))),
        consistency: None,
        wanted_consistency: None,
        snapshot_group_id: f.group_id.clone(),
        scheduled_for: None,
        started_at: Some(f.started_at),
        finished_at: Some(now),
        duration_ms: Some(f.duration_ms),
        frozen_ms: None,
        missed: Vec::new(),
        missed_count: None,
        host: host.clone(),
        appsnap_version: env!("CARGO_PKG_VERSION").to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> RunFacts {
        RunFacts {
            job: "db".into(),
            run_id: "r1".into(),
            scheduled_for: None,
            started_at: "2026-01-01T02:30:00Z".parse().unwrap(),
            finished_at: "2026-01-01T02:30:07Z".parse().unwrap(),
            exit_code: 0,
            vendor_message: "Finish whole Processes of Snapshot successfully".into(),
            errors: vec![],
            warnings: vec![],
            consistency: Consistency::App,
            wanted: Consistency::App,
            group_id: Some("ssg-1".into()),
            frozen_ms: Some(120),
            forced_thaw: None,
            retention_error: None,
            previous_exit: Some(0),
        }
    }

    #[test]
    fn a_plain_success_is_news_only_when_asked() {
        assert_eq!(run_events(&facts(), false), []);
        assert_eq!(run_events(&facts(), true), [EventKind::Success]);
    }

    #[test]
    fn failure_forced_thaw_and_retention_each_have_their_event() {
        let mut f = facts();
        f.exit_code = 6;
        f.consistency = Consistency::Crash;
        f.forced_thaw = Some("the freeze deadline (30s) thawed".into());
        assert_eq!(
            run_events(&f, true),
            [EventKind::ForcedThaw, EventKind::Failure],
            "a failed run is never also a success, nor degraded"
        );
        let mut f = facts();
        f.retention_error = Some("DeleteSnapshotGroup failed".into());
        assert_eq!(run_events(&f, false), [EventKind::RetentionError]);
    }

    #[test]
    fn a_quiet_downgrade_is_degraded_with_its_reason() {
        let mut f = facts();
        f.consistency = Consistency::Fs;
        f.warnings = vec![
            "plan: run_dir is not tmpfs".into(),
            "prescript not used, snapshot will be file-system-consistent: owned by uid 1000".into(),
        ];
        assert_eq!(run_events(&f, false), [EventKind::Degraded]);
        let e = run_event(
            EventKind::Degraded,
            &f,
            &HostIdentity::local(None),
            Utc::now(),
        );
        let detail = e.detail.unwrap();
        assert_eq!(
            detail,
            "app consistency wanted, fs achieved: prescript not used, snapshot will be file-system-consistent: owned by uid 1000",
            "only the warnings about consistency"
        );
        // What the job never asked for is no downgrade.
        f.wanted = Consistency::Fs;
        assert_eq!(run_events(&f, false), []);
    }

    #[test]
    fn recovered_only_after_a_failure() {
        let mut f = facts();
        f.previous_exit = Some(9);
        assert_eq!(run_events(&f, false), [EventKind::Recovered]);
        f.previous_exit = None;
        assert_eq!(
            run_events(&f, false),
            [],
            "a first run recovers from nothing"
        );
    }

    #[test]
    fn the_json_has_the_documented_shape() {
        let mut f = facts();
        f.exit_code = 9;
        f.errors = vec!["prescript exited 3".into()];
        let e = run_event(
            EventKind::Failure,
            &f,
            &HostIdentity {
                instance_id: Some("i-1".into()),
                hostname: "h".into(),
            },
            f.finished_at,
        );
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["schema"], 1);
        assert_eq!(v["event"], "failure");
        assert_eq!(v["id"], "r1:failure");
        assert_eq!(v["exit_code"], 9);
        assert_eq!(v["detail"], "prescript exited 3");
        assert_eq!(v["duration_ms"], 7000);
        assert_eq!(v["host"]["instance_id"], "i-1");
        assert!(v.get("missed").is_none(), "missed only on missed events");
    }

    #[test]
    fn long_texts_are_cut() {
        let mut f = facts();
        f.exit_code = 9;
        f.errors = vec!["x".repeat(100_000)];
        let e = run_event(
            EventKind::Failure,
            &f,
            &HostIdentity::local(None),
            Utc::now(),
        );
        assert!(e.detail.unwrap().chars().count() < MAX_TEXT_CHARS + 10);
    }

    #[test]
    fn missed_names_the_times() {
        let t: Vec<DateTime<Utc>> = ["2026-01-01T02:30:00Z", "2026-01-02T02:30:00Z"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let e = missed_event(
            "db",
            &t,
            2,
            MissedCause::AtStart,
            true,
            &HostIdentity::local(None),
            Utc::now(),
        );
        let d = e.detail.unwrap();
        assert!(
            d.contains("2026-01-01T02:30:00Z, 2026-01-02T02:30:00Z"),
            "{d}"
        );
        assert!(d.contains("catch_up"), "{d}");
        assert_eq!(e.missed, t);
        assert_eq!(e.id, "missed:db:2026-01-01T02:30:00Z");
    }

    #[test]
    fn a_failed_drill_is_one_verify_failed_event_naming_the_group_and_why() {
        let f = DrillFacts {
            job: "db".into(),
            run_id: "r9".into(),
            group_id: Some("ssg-1".into()),
            verdict: "failed".into(),
            errors: vec!["ext4 file system u on d-2 (copy of d-1): e2fsck failed (exit 4)".into()],
            started_at: "2026-01-01T03:00:00Z".parse().unwrap(),
            duration_ms: 42_000,
        };
        let host = HostIdentity {
            instance_id: Some("i-1".into()),
            hostname: "h".into(),
        };
        let e = verify_failed_event(&f, &host, "2026-01-01T03:00:42Z".parse().unwrap());
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["event"], "verify_failed");
        assert_eq!(v["id"], "r9:verify_failed");
        assert_eq!(v["snapshot_group_id"], "ssg-1");
        assert!(v["detail"].as_str().unwrap().contains("e2fsck"));
    }
}
