//! `appsnap status [--json]`: every job's last result and next run, and
//! whether the daemon is running. Reads only files (the policy, the state
//! dir, the daemon lock), so it works whether or not the daemon runs.

use std::collections::BTreeMap;

use appsnap::job::outcome::Outcome;
use appsnap::notify::{SinkLog, SinkResult};
use appsnap::policy::{self, Job, Policy};
use appsnap::schedule::next_fire;
use appsnap::state::{daemon_state, DaemonState, JobResult, StateStore};
use chrono::{DateTime, Utc};
use serde::Serialize;

use appsnap::job::verify::last::LastDrill;

use super::args::{Cli, JsonArgs};
use super::printable::{printable, printable_lines};

/// `status --json` output (documented in the README; fields only added).
#[derive(Debug, Serialize)]
struct StatusReport {
    daemon: DaemonReport,
    jobs: Vec<JobReport>,
}

#[derive(Debug, Serialize)]
struct DaemonReport {
    /// `running`, `stopped` or `unknown`.
    state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

#[derive(Debug, Serialize)]
struct JobReport {
    name: String,
    schedule: String,
    timezone: String,
    /// The next cron time in the job's zone (RFC 3339 with offset), before jitter.
    next_run: Option<String>,
    last_result: Option<JobResult>,
    /// Why the stored result could not be used, if it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    last_result_error: Option<String>,
    /// The last notification result per sink (`webhook`, `exec`, `ping`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    notifications: BTreeMap<String, SinkResult>,
    /// The last restore drill (`appsnap verify`), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    last_drill: Option<LastDrill>,
}

/// Runs `status`; exit 0, or 2 if the policy is invalid.
pub fn run(cli: &Cli, args: &JsonArgs) -> u8 {
    let policy = match policy::load(&cli.config, &cli.config_dir) {
        Ok(p) => p,
        Err(e) => {
            eprintln!(
                "appsnap: policy rejected:\n{}",
                printable_lines(&format!("{e:#}"))
            );
            return Outcome::InvalidParameters.code();
        }
    };
    let report = report(&policy, Utc::now());
    for j in &report.jobs {
        if let Some(e) = &j.last_result_error {
            eprintln!(
                "appsnap: warning: job {:?}: ignoring the last result: {}",
                j.name,
                printable(e)
            );
        }
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("status serializes")
        );
    } else {
        print!("{}", render(&report));
    }
    Outcome::Success.code()
}

fn report(policy: &Policy, now: DateTime<Utc>) -> StatusReport {
    let store = StateStore::new(&policy.host.state_dir);
    let sinks = SinkLog::new(&policy.host.state_dir);
    let daemon = match daemon_state(&policy.host.run_dir) {
        DaemonState::Running { pid } => DaemonReport {
            state: "running",
            pid,
            reason: None,
        },
        DaemonState::Stopped => DaemonReport {
            state: "stopped",
            pid: None,
            reason: None,
        },
        DaemonState::Unknown { reason } => DaemonReport {
            state: "unknown",
            pid: None,
            reason: Some(reason),
        },
    };
    let jobs = policy
        .jobs
        .iter()
        .map(|job| {
            let (last_result, last_result_error) = match store.load(job.name.as_str()) {
                Ok(r) => (r, None),
                Err(e) => (None, Some(e.to_string())),
            };
            JobReport {
                name: job.name.to_string(),
                schedule: job.schedule.as_str().to_string(),
                timezone: job.zone.to_string(),
                next_run: next_in_zone(job, now),
                last_result,
                last_result_error,
                notifications: sinks.load(job.name.as_str()),
                last_drill: appsnap::job::verify::last::load(
                    &policy.host.state_dir,
                    job.name.as_str(),
                ),
            }
        })
        .collect();
    StatusReport { daemon, jobs }
}

/// The next run as RFC 3339 in the job's own zone, so operators see the
/// wall time they wrote the cron for.
fn next_in_zone(job: &Job, now: DateTime<Utc>) -> Option<String> {
    next_fire(job, now)?;
    job.next_runs(now, 1).first().map(|t| t.to_rfc3339())
}

fn render(r: &StatusReport) -> String {
    let mut out = match (&r.daemon.state, r.daemon.pid, &r.daemon.reason) {
        (&"running", Some(pid), _) => format!("daemon: running (pid {pid})\n"),
        (&"unknown", _, Some(why)) => format!("daemon: unknown ({})\n", printable(why)),
        (state, _, _) => format!("daemon: {state}\n"),
    };
    if r.jobs.is_empty() {
        out.push_str("no jobs in the policy\n");
        return out;
    }
    let mut rows = vec![[
        "JOB",
        "LAST RUN (UTC)",
        "RESULT",
        "CONSISTENCY",
        "GROUP",
        "FROZEN",
        "UPLOAD",
        "NEXT RUN",
    ]
    .map(String::from)];
    for j in &r.jobs {
        let next = j
            .next_run
            .as_deref()
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            .map(|t| format!("{} ({})", t.format("%Y-%m-%d %H:%M:%S %:z"), j.timezone))
            .unwrap_or_else(|| "never".to_string());
        let row = match (&j.last_result, &j.last_result_error) {
            (Some(l), _) => [
                j.name.clone(),
                l.finished_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                result_word(l.exit_code),
                l.consistency.as_str().to_string(),
                l.snapshot_group_id
                    .as_deref()
                    .map_or_else(|| "-".into(), |g| printable(g).into_owned()),
                l.frozen_ms
                    .map(|ms| format!("{ms}ms"))
                    .unwrap_or_else(|| "-".into()),
                printable(&upload_word(l.upload.as_ref())).into_owned(),
                next,
            ],
            (None, err) => [
                j.name.clone(),
                if err.is_some() { "unreadable" } else { "never" }.to_string(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                next,
            ],
        };
        rows.push(row);
    }
    let widths: Vec<usize> = (0..8)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  ", w = widths[c]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    let notes: Vec<String> = r
        .jobs
        .iter()
        .flat_map(|j| {
            j.notifications
                .iter()
                .map(move |(sink, s)| format!("  {} {sink}: {}", j.name, notification_line(s)))
        })
        .collect();
    let drills: Vec<String> = r
        .jobs
        .iter()
        .filter_map(|j| {
            j.last_drill
                .as_ref()
                .map(|d| format!("  {} {}", j.name, drill_line(d)))
        })
        .collect();
    if !drills.is_empty() {
        out.push_str("\nlast restore drills:\n");
        for d in drills {
            out.push_str(&printable(&d));
            out.push('\n');
        }
    }
    if !notes.is_empty() {
        out.push_str("\nlast notifications:\n");
        for n in notes {
            out.push_str(&printable(&n));
            out.push('\n');
        }
    }
    out
}

/// `passed at 2026-... (group ssg-...)`, or why not, and when one last passed.
fn drill_line(d: &LastDrill) -> String {
    let mut line = format!(
        "{} at {} (group {}, run {})",
        d.verdict.as_str(),
        d.finished.format("%Y-%m-%d %H:%M:%S UTC"),
        d.group_id.as_deref().unwrap_or("none"),
        d.run_id
    );
    if let Some(why) = &d.detail {
        line.push_str(&format!(": {why}"));
    }
    if d.verdict != appsnap::job::verify::Verdict::Passed {
        match d.last_passed {
            Some(t) => line.push_str(&format!(
                "; last passed {}",
                t.format("%Y-%m-%d %H:%M:%S UTC")
            )),
            None => line.push_str("; never passed"),
        }
    }
    if d.leftovers > 0 {
        line.push_str(&format!(
            "; {} thing(s) not cleaned up: run `appsnap verify --cleanup`",
            d.leftovers
        ));
    }
    line
}

/// `ok: failure at 2026-... (1 attempt; 3 sent, 0 failed)` or `FAILED: ...`.
fn notification_line(s: &SinkResult) -> String {
    let head = if s.ok { "ok" } else { "FAILED" };
    let why = s
        .error
        .as_deref()
        .map(|e| format!(": {e}"))
        .unwrap_or_default();
    format!(
        "{head}: {} at {} ({} attempt{}; {} sent, {} failed in all){why}",
        s.event,
        s.at.format("%Y-%m-%d %H:%M:%S UTC"),
        s.attempts,
        if s.attempts == 1 { "" } else { "s" },
        s.sent_total,
        s.failed_total
    )
}

/// Where the group's upload stands: `done`, `35%`, `FAILED`, or `-`.
fn upload_word(u: Option<&appsnap::state::Upload>) -> String {
    match u {
        None => "-".into(),
        Some(u) if u.status == "accomplished" => "done".into(),
        Some(u) if u.status == "failed" => "FAILED".into(),
        Some(u) if u.progress.is_empty() => u.status.clone(),
        Some(u) => u.progress.clone(),
    }
}

/// `0 ok`, `11 failed`: the code first (scripts grep it), then a word.
fn result_word(code: u8) -> String {
    if code == Outcome::Success.code() {
        "0 ok".to_string()
    } else {
        format!("{code} failed")
    }
}
