//! Prometheus metrics in node_exporter's textfile-collector convention: the
//! policy's `[metrics] textfile` (a `*.prom` file in the collector's
//! directory, Debian's `/var/lib/prometheus/node-exporter/`) is rewritten
//! atomically after every run and at daemon start, from the job records,
//! the per-job totals kept here (`<state_dir>/metrics/<job>.json`, so
//! counters survive restarts and `appsnap run` adds to the daemon's) and the
//! sink log. Names and units follow the Prometheus naming rules (`_seconds`,
//! `_timestamp_seconds`, `_total` for counters). The job is the label
//! `appsnap_job`, not `job`: Prometheus sets `job` (and `instance`) on every
//! scraped series itself and would rename ours to `exported_job`.
//!
//! **Where it may write.** Debian's collector directory is root's, but its
//! parent `/var/lib/prometheus` belongs to the `prometheus` user, so
//! [`crate::securefs`]'s rule (every directory on the way root's) would
//! refuse it. The file is written through a descriptor of the directory
//! itself instead: opened with `openat2(RESOLVE_NO_SYMLINKS)` (no symlink on
//! the way, so a parent's owner cannot point it elsewhere), then checked on
//! the descriptor (a directory, root's, writable by no one else), then the
//! temp file is created and renamed *in that descriptor*. A parent's owner
//! can at most move that root-owned directory, never make appsnap write
//! anywhere else.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use nix::fcntl::{openat, openat2, renameat, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstat, Mode};
use serde::{Deserialize, Serialize};

use crate::job::execute::Retention;
use crate::notify::{RunFacts, SinkLog};
use crate::policy::Policy;
use crate::securefs::{self, STATE_FILE_LIMIT};
use crate::state::{Consistency, StateStore};

/// The schema of the per-job totals file.
pub const TOTALS_SCHEMA: u32 = 1;

/// A job's running totals, kept between runs and restarts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobTotals {
    /// [`TOTALS_SCHEMA`].
    pub schema: u32,
    /// The job.
    pub job: String,
    /// Runs by outcome: `success`, `degraded`, `failure`.
    pub runs: BTreeMap<String, u64>,
    /// Runs whose thaw was forced (deadline, lost freeze).
    pub forced_thaws: u64,
    /// Groups retention deleted.
    pub retention_deletions: u64,
    /// Groups of the job retention kept, as of the last retention.
    pub groups_kept: Option<u64>,
    /// When the last successful run ended.
    pub last_success: Option<DateTime<Utc>>,
    /// Whether the last run was a quiet downgrade.
    pub last_degraded: bool,
    /// Scheduled times that passed with no run, in all.
    #[serde(default)]
    pub missed_runs: u64,
    /// The latest missed time already reported (so a restart does not
    /// report it again).
    #[serde(default)]
    pub missed_until: Option<DateTime<Utc>>,
}

/// Why metrics could not be kept or written.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The state directory is not trusted or not writable.
    #[error(transparent)]
    Trust(#[from] securefs::TrustError),
    /// The textfile's directory cannot be used.
    #[error("metrics textfile {}: {why}", path.display())]
    Textfile {
        /// The configured file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The job name cannot name a file.
    #[error("job name {0:?} cannot name a file")]
    BadName(String),
}

fn file_name(job: &str) -> Result<String, MetricsError> {
    if job.is_empty() || job.starts_with('.') || job.contains('/') || job.contains('\0') {
        return Err(MetricsError::BadName(job.to_string()));
    }
    Ok(format!("{job}.json"))
}

/// The totals of `job` (zero when none or unreadable).
pub fn load_totals(state_dir: &Path, job: &str) -> JobTotals {
    let dir = state_dir.join("metrics");
    let fresh = JobTotals {
        schema: TOTALS_SCHEMA,
        job: job.to_string(),
        ..JobTotals::default()
    };
    let Ok(name) = file_name(job) else {
        return fresh;
    };
    if securefs::check_trusted_dir(&dir).is_err() {
        return fresh;
    }
    securefs::read_bounded_regular(&dir.join(name), STATE_FILE_LIMIT)
        .ok()
        .and_then(|b| serde_json::from_slice::<JobTotals>(&b).ok())
        .filter(|t| t.schema == TOTALS_SCHEMA && t.job == job)
        .unwrap_or(fresh)
}

/// The outcome label of a run: `failure` (non-zero exit), `degraded`
/// (success below the consistency the job wanted) or `success`.
pub fn outcome_label(f: &RunFacts) -> &'static str {
    let rank = |c: Consistency| match c {
        Consistency::App => 3,
        Consistency::Fs => 2,
        Consistency::Crash => 1,
        Consistency::None => 0,
    };
    if f.exit_code != 0 {
        "failure"
    } else if rank(f.consistency) < rank(f.wanted) {
        "degraded"
    } else {
        "success"
    }
}

/// What retention did, as (deleted, kept), when it ran.
pub fn retention_counts(r: &Retention) -> Option<(u64, u64)> {
    match r {
        Retention::Done(p) => Some((p.deleted.len() as u64, p.kept.len() as u64)),
        _ => None,
    }
}

/// Adds one finished run to its job's totals (after the run's record);
/// `retention` is [`retention_counts`].
pub fn record_run(
    state_dir: &Path,
    f: &RunFacts,
    retention: Option<(u64, u64)>,
) -> Result<JobTotals, MetricsError> {
    let dir = state_dir.join("metrics");
    securefs::ensure_trusted_dir(state_dir)?;
    securefs::ensure_trusted_dir(&dir)?;
    let mut t = load_totals(state_dir, &f.job);
    let label = outcome_label(f);
    *t.runs.entry(label.to_string()).or_insert(0) += 1;
    if f.forced_thaw.is_some() {
        t.forced_thaws += 1;
    }
    if let Some((deleted, kept)) = retention {
        t.retention_deletions += deleted;
        t.groups_kept = Some(kept);
    }
    if f.exit_code == 0 {
        t.last_success = Some(f.finished_at);
    }
    t.last_degraded = label == "degraded";
    let mut json = serde_json::to_vec_pretty(&t).unwrap_or_default();
    json.push(b'\n');
    securefs::write_atomic_nofollow(&dir, &file_name(&f.job)?, &json, 0o644)?;
    Ok(t)
}

/// Adds `count` missed times of `job`, the latest `last`, to its totals.
pub fn record_missed(
    state_dir: &Path,
    job: &str,
    count: u64,
    last: Option<DateTime<Utc>>,
) -> Result<JobTotals, MetricsError> {
    let dir = state_dir.join("metrics");
    securefs::ensure_trusted_dir(state_dir)?;
    securefs::ensure_trusted_dir(&dir)?;
    let mut t = load_totals(state_dir, job);
    t.missed_runs += count;
    t.missed_until = t.missed_until.max(last);
    let mut json = serde_json::to_vec_pretty(&t).unwrap_or_default();
    json.push(b'\n');
    securefs::write_atomic_nofollow(&dir, &file_name(job)?, &json, 0o644)?;
    Ok(t)
}

/// A label value escaped as the exposition format wants (`\`, `"`, newline).
fn label(v: &str) -> String {
    v.replace('\\', r"\\")
        .replace('"', r#"\""#)
        .replace('\n', r"\n")
}

fn ts(t: DateTime<Utc>) -> String {
    format!("{:.3}", t.timestamp_millis() as f64 / 1000.0)
}

/// The whole textfile for `policy`'s jobs as of `now`.
pub fn render(policy: &Policy, now: DateTime<Utc>) -> String {
    let state_dir = &policy.host.state_dir;
    let store = StateStore::new(state_dir);
    let sinks = SinkLog::new(state_dir);
    let mut out = String::new();
    let family = |out: &mut String, name: &str, kind: &str, help: &str| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    };
    family(
        &mut out,
        "appsnap_build_info",
        "gauge",
        "appsnap's version (always 1).",
    );
    let _ = writeln!(
        out,
        "appsnap_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    family(
        &mut out,
        "appsnap_metrics_written_timestamp_seconds",
        "gauge",
        "When appsnap wrote this file.",
    );
    let _ = writeln!(out, "appsnap_metrics_written_timestamp_seconds {}", ts(now));

    struct Row {
        job: String,
        rec: Option<crate::state::JobResult>,
        totals: JobTotals,
        next: Option<DateTime<Utc>>,
        sinks: BTreeMap<String, crate::notify::SinkResult>,
        drill: Option<crate::job::verify::last::LastDrill>,
    }
    let rows: Vec<Row> = policy
        .jobs
        .iter()
        .map(|j| Row {
            job: label(j.name.as_str()),
            rec: store.read(j.name.as_str()),
            totals: load_totals(state_dir, j.name.as_str()),
            next: crate::schedule::next_fire(j, now),
            sinks: sinks.load(j.name.as_str()),
            drill: crate::job::verify::last::load(state_dir, j.name.as_str()),
        })
        .collect();

    type Getter = fn(&Row) -> Option<String>;
    let gauges: [(&str, &str, Getter); 10] = [
        (
            "appsnap_job_last_run_timestamp_seconds",
            "When the job's last run ended.",
            |r| r.rec.as_ref().map(|x| ts(x.finished_at)),
        ),
        (
            "appsnap_job_last_success_timestamp_seconds",
            "When the job's last successful run ended.",
            |r| {
                r.totals
                    .last_success
                    .or_else(|| {
                        r.rec
                            .as_ref()
                            .filter(|x| x.exit_code == 0)
                            .map(|x| x.finished_at)
                    })
                    .map(ts)
            },
        ),
        (
            "appsnap_job_last_exit_code",
            "The vendor exit code of the job's last run (0 success).",
            |r| r.rec.as_ref().map(|x| x.exit_code.to_string()),
        ),
        (
            "appsnap_job_last_io_suspended_seconds",
            "How long I/O was suspended in the job's last run.",
            |r| {
                r.rec
                    .as_ref()
                    .map(|x| format!("{:.3}", x.frozen_ms.unwrap_or(0) as f64 / 1000.0))
            },
        ),
        (
            "appsnap_job_last_degraded",
            "1 if the job's last run succeeded below the consistency it was set up for.",
            |r| {
                r.rec
                    .as_ref()
                    .map(|_| u8::from(r.totals.last_degraded).to_string())
            },
        ),
        (
            "appsnap_verify_last_timestamp_seconds",
            "When the job's last restore drill (appsnap verify) ended.",
            |r| r.drill.as_ref().map(|d| ts(d.finished)),
        ),
        (
            "appsnap_verify_last_success_timestamp_seconds",
            "When a restore drill of the job last passed.",
            |r| r.drill.as_ref().and_then(|d| d.last_passed).map(ts),
        ),
        (
            "appsnap_verify_last_passed",
            "1 if the job's last restore drill passed, 0 if it failed or could not run.",
            |r| {
                r.drill
                    .as_ref()
                    .map(|d| u8::from(d.verdict == crate::job::verify::Verdict::Passed).to_string())
            },
        ),
        (
            "appsnap_job_next_run_timestamp_seconds",
            "The job's next scheduled time (before jitter).",
            |r| r.next.map(ts),
        ),
        (
            "appsnap_job_groups_kept",
            "The job's snapshot groups retention kept at its last pass.",
            |r| r.totals.groups_kept.map(|n| n.to_string()),
        ),
    ];
    for (name, help, get) in gauges {
        family(&mut out, name, "gauge", help);
        for r in &rows {
            if let Some(v) = get(r) {
                let _ = writeln!(out, "{name}{{appsnap_job=\"{}\"}} {v}", r.job);
            }
        }
    }
    family(
        &mut out,
        "appsnap_job_last_consistency",
        "gauge",
        "1 for the consistency the job's last run achieved (app, fs, crash, none).",
    );
    for r in &rows {
        if let Some(rec) = &r.rec {
            for c in [
                Consistency::App,
                Consistency::Fs,
                Consistency::Crash,
                Consistency::None,
            ] {
                let _ = writeln!(
                    out,
                    "appsnap_job_last_consistency{{appsnap_job=\"{}\",consistency=\"{}\"}} {}",
                    r.job,
                    c.as_str(),
                    u8::from(rec.consistency == c)
                );
            }
        }
    }
    family(
        &mut out,
        "appsnap_job_runs_total",
        "counter",
        "Runs by outcome (success, degraded, failure).",
    );
    for r in &rows {
        for o in ["success", "degraded", "failure"] {
            let n = r.totals.runs.get(o).copied().unwrap_or(0);
            let _ = writeln!(
                out,
                "appsnap_job_runs_total{{appsnap_job=\"{}\",outcome=\"{o}\"}} {n}",
                r.job
            );
        }
    }
    family(
        &mut out,
        "appsnap_job_forced_thaws_total",
        "counter",
        "Runs whose thaw was forced (the guard's deadline, a lost freeze).",
    );
    for r in &rows {
        let _ = writeln!(
            out,
            "appsnap_job_forced_thaws_total{{appsnap_job=\"{}\"}} {}",
            r.job, r.totals.forced_thaws
        );
    }
    family(
        &mut out,
        "appsnap_job_missed_runs_total",
        "counter",
        "Scheduled times that passed with no run (daemon down, suspend, clock jump).",
    );
    for r in &rows {
        let _ = writeln!(
            out,
            "appsnap_job_missed_runs_total{{appsnap_job=\"{}\"}} {}",
            r.job, r.totals.missed_runs
        );
    }
    family(
        &mut out,
        "appsnap_job_retention_deletions_total",
        "counter",
        "Snapshot groups retention deleted.",
    );
    for r in &rows {
        let _ = writeln!(
            out,
            "appsnap_job_retention_deletions_total{{appsnap_job=\"{}\"}} {}",
            r.job, r.totals.retention_deletions
        );
    }
    family(
        &mut out,
        "appsnap_notifications_total",
        "counter",
        "Notification deliveries by sink and result (sent, failed).",
    );
    for r in &rows {
        for (sink, s) in &r.sinks {
            for (result, n) in [("sent", s.sent_total), ("failed", s.failed_total)] {
                let _ = writeln!(
                    out,
                    "appsnap_notifications_total{{appsnap_job=\"{}\",sink=\"{}\",result=\"{result}\"}} {n}",
                    r.job,
                    label(sink)
                );
            }
        }
    }
    out
}

/// Writes `policy`'s textfile, if it has one (see the module's note on
/// where it may write).
pub fn write_textfile(policy: &Policy, now: DateTime<Utc>) -> Result<(), MetricsError> {
    let Some(path) = &policy.metrics.textfile else {
        return Ok(());
    };
    write_atomic_in_dir(path, render(policy, now).as_bytes())
}

/// Whether the textfile can be written (its directory opened and checked
/// as [`write_atomic_in_dir`] does), without writing it: for `appsnap check`.
pub fn check_textfile(path: &Path) -> Result<(), MetricsError> {
    open_dir_of(path).map(|_| ())
}

/// Opens `path`'s directory without following symlinks and checks it on
/// the descriptor: a directory, a trusted owner's, writable by no one else.
fn open_dir_of(path: &Path) -> Result<(OwnedFd, &std::ffi::OsStr), MetricsError> {
    let fail = |why: String| MetricsError::Textfile {
        path: path.to_path_buf(),
        why,
    };
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(fail("not a file path".into()));
    };
    let how = OpenHow::new()
        .flags(OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_NO_SYMLINKS);
    let dirfd: OwnedFd = openat2(nix::fcntl::AT_FDCWD, dir, how).map_err(|e| {
        fail(format!(
            "cannot open directory {} without following symlinks: {e}",
            dir.display()
        ))
    })?;
    let st = fstat(&dirfd).map_err(|e| fail(format!("cannot inspect {}: {e}", dir.display())))?;
    if !securefs::trusted_owner(st.st_uid) {
        return Err(fail(format!(
            "directory {} is owned by uid {}; it must be root's",
            dir.display(),
            st.st_uid
        )));
    }
    if st.st_mode & 0o022 != 0 {
        return Err(fail(format!(
            "directory {} has mode {:04o}: others could replace the file",
            dir.display(),
            st.st_mode & 0o7777
        )));
    }
    Ok((dirfd, name))
}

/// Replaces `path` with `bytes` through a descriptor of its directory.
pub fn write_atomic_in_dir(path: &Path, bytes: &[u8]) -> Result<(), MetricsError> {
    let fail = |why: String| MetricsError::Textfile {
        path: path.to_path_buf(),
        why,
    };
    let (dirfd, name) = open_dir_of(path)?;
    let tmp = format!(".{}.tmp-{}", name.to_string_lossy(), std::process::id());
    let fd = openat(
        &dirfd,
        tmp.as_str(),
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_TRUNC | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o644),
    )
    .map_err(|e| fail(format!("cannot create {tmp}: {e}")))?;
    let mut f = std::fs::File::from(fd);
    let written = f
        .write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| fail(format!("cannot write {tmp}: {e}")))
        .and_then(|()| {
            renameat(&dirfd, tmp.as_str(), &dirfd, name)
                .map_err(|e| fail(format!("cannot rename {tmp} into place: {e}")))
        });
    if written.is_err() {
        let _ = nix::unistd::unlinkat(
            &dirfd,
            tmp.as_str(),
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        );
    }
    written?;
    let _ = nix::unistd::fsync(&dirfd);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(exit: u8, c: Consistency) -> RunFacts {
        RunFacts {
            job: "db".into(),
            run_id: "r".into(),
            scheduled_for: None,
            started_at: "2026-01-01T02:30:00Z".parse().unwrap(),
            finished_at: "2026-01-01T02:30:05Z".parse().unwrap(),
            exit_code: exit,
            vendor_message: String::new(),
            errors: vec![],
            warnings: vec![],
            consistency: c,
            wanted: Consistency::App,
            group_id: None,
            frozen_ms: Some(1500),
            forced_thaw: None,
            retention_error: None,
            previous_exit: None,
        }
    }

    #[test]
    fn totals_add_up_across_runs() {
        let dir = tempfile::tempdir().unwrap();
        record_run(dir.path(), &facts(9, Consistency::None), None).unwrap();
        record_run(dir.path(), &facts(0, Consistency::Fs), None).unwrap();
        let mut f = facts(6, Consistency::Crash);
        f.forced_thaw = Some("deadline".into());
        let t = record_run(dir.path(), &f, None).unwrap();
        assert_eq!(t.runs.get("failure"), Some(&2));
        assert_eq!(t.runs.get("degraded"), Some(&1));
        assert_eq!(t.forced_thaws, 1);
        assert_eq!(
            t.last_success,
            Some("2026-01-01T02:30:05Z".parse().unwrap())
        );
        assert!(!t.last_degraded);
        assert_eq!(load_totals(dir.path(), "db"), t);
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), r#"a\"b\\c\nd"#);
    }

    #[test]
    fn a_directory_reached_through_a_symlink_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::create_dir(&real).unwrap();
        std::os::unix::fs::symlink(&real, dir.path().join("link")).unwrap();
        let e = write_atomic_in_dir(&dir.path().join("link/x.prom"), b"x 1\n").unwrap_err();
        assert!(e.to_string().contains("without following symlinks"), "{e}");
        write_atomic_in_dir(&real.join("x.prom"), b"x 1\n").unwrap();
        assert_eq!(std::fs::read(real.join("x.prom")).unwrap(), b"x 1\n");
        assert!(
            std::fs::read_dir(&real).unwrap().count() == 1,
            "no temp file left"
        );
    }

    /// Debian's layout: the collector directory is root's, its parent the
    /// `prometheus` user's. Writing goes through; a collector directory
    /// someone else owns or can write is refused.
    #[test]
    fn debians_layout_is_accepted_and_a_foreign_directory_is_not() {
        use std::os::unix::fs::PermissionsExt;
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIPPED: needs root to chown");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let parent = dir.path().join("prometheus");
        let collector = parent.join("node-exporter");
        std::fs::create_dir_all(&collector).unwrap();
        let nobody = Some(nix::unistd::Uid::from_raw(65534));
        nix::unistd::chown(&parent, nobody, None).unwrap();
        write_atomic_in_dir(&collector.join("appsnap.prom"), b"a 1\n").unwrap();
        nix::unistd::chown(&collector, nobody, None).unwrap();
        let e = write_atomic_in_dir(&collector.join("appsnap.prom"), b"a 2\n").unwrap_err();
        assert!(e.to_string().contains("owned by uid 65534"), "{e}");
        nix::unistd::chown(&collector, Some(nix::unistd::Uid::from_raw(0)), None).unwrap();
        std::fs::set_permissions(&collector, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = write_atomic_in_dir(&collector.join("appsnap.prom"), b"a 3\n").unwrap_err();
        assert!(e.to_string().contains("mode 0777"), "{e}");
        assert_eq!(
            std::fs::read(collector.join("appsnap.prom")).unwrap(),
            b"a 1\n"
        );
    }
}
