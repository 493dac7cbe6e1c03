//! The last notification result of each job's sinks, for `status` and the
//! metrics: `<state_dir>/notify/<job>.json`, written atomically like the
//! job records ([`crate::securefs`]), one file per job so jobs never race.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::SinkKind;
use crate::securefs::{self, TrustError, STATE_FILE_LIMIT};

/// The schema of the file.
pub const SINKLOG_SCHEMA: u32 = 1;

/// How the last delivery to one sink went, with running totals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SinkResult {
    /// When it ended.
    pub at: DateTime<Utc>,
    /// The event (`failure`, ...) or ping (`start`, `success`, `fail`).
    pub event: String,
    /// Delivered.
    pub ok: bool,
    /// Attempts made.
    pub attempts: u32,
    /// Why it failed (never a key or credential).
    pub error: Option<String>,
    /// Deliveries that succeeded, in all.
    pub sent_total: u64,
    /// Deliveries that failed after their retries, in all.
    pub failed_total: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct File {
    schema: u32,
    job: String,
    sinks: BTreeMap<String, SinkResult>,
}

/// Reads and writes the per-job files.
#[derive(Debug)]
pub struct SinkLog {
    dir: PathBuf,
    /// Serializes this process's read-modify-writes.
    write: Mutex<()>,
}

/// Why a result could not be kept.
#[derive(Debug, thiserror::Error)]
pub enum SinkLogError {
    /// The directory or file is not trusted or not writable.
    #[error(transparent)]
    Trust(#[from] TrustError),
    /// The job name cannot name a file.
    #[error("job name {0:?} cannot name a file")]
    BadName(String),
}

impl SinkLog {
    /// Files under `<state_dir>/notify/`.
    pub fn new(state_dir: &Path) -> SinkLog {
        SinkLog {
            dir: state_dir.join("notify"),
            write: Mutex::new(()),
        }
    }

    fn name(job: &str) -> Result<String, SinkLogError> {
        if job.is_empty() || job.starts_with('.') || job.contains('/') || job.contains('\0') {
            return Err(SinkLogError::BadName(job.to_string()));
        }
        Ok(format!("{job}.json"))
    }

    /// Every sink's last result for `job` (empty when none or unreadable).
    pub fn load(&self, job: &str) -> BTreeMap<String, SinkResult> {
        let Ok(name) = Self::name(job) else {
            return BTreeMap::new();
        };
        if securefs::check_trusted_dir(&self.dir).is_err() {
            return BTreeMap::new();
        }
        securefs::read_bounded_regular(&self.dir.join(name), STATE_FILE_LIMIT)
            .ok()
            .and_then(|b| serde_json::from_slice::<File>(&b).ok())
            .filter(|f| f.schema == SINKLOG_SCHEMA && f.job == job)
            .map(|f| f.sinks)
            .unwrap_or_default()
    }

    /// Keeps `r` as `sink`'s last result for `job`, adding to its totals.
    pub fn record(&self, job: &str, sink: SinkKind, mut r: SinkResult) -> Result<(), SinkLogError> {
        let name = Self::name(job)?;
        let _held = self.write.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(parent) = self.dir.parent() {
            securefs::ensure_trusted_dir(parent)?;
        }
        securefs::ensure_trusted_dir(&self.dir)?;
        let mut sinks = self.load(job);
        let before = sinks.get(sink.as_str());
        r.sent_total = before.map_or(0, |b| b.sent_total) + u64::from(r.ok);
        r.failed_total = before.map_or(0, |b| b.failed_total) + u64::from(!r.ok);
        sinks.insert(sink.as_str().to_string(), r);
        let file = File {
            schema: SINKLOG_SCHEMA,
            job: job.to_string(),
            sinks,
        };
        let mut json = serde_json::to_vec_pretty(&file).unwrap_or_default();
        json.push(b'\n');
        securefs::write_atomic_nofollow(&self.dir, &name, &json, 0o644)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(ok: bool) -> SinkResult {
        SinkResult {
            at: Utc::now(),
            event: "failure".into(),
            ok,
            attempts: 1,
            error: (!ok).then(|| "HTTP 500".into()),
            sent_total: 0,
            failed_total: 0,
        }
    }

    #[test]
    fn keeps_the_last_result_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        let log = SinkLog::new(dir.path());
        assert!(log.load("db").is_empty());
        log.record("db", SinkKind::Webhook, result(false)).unwrap();
        log.record("db", SinkKind::Webhook, result(true)).unwrap();
        log.record("db", SinkKind::Ping, result(false)).unwrap();
        let got = log.load("db");
        let w = &got["webhook"];
        assert!(w.ok);
        assert_eq!((w.sent_total, w.failed_total), (1, 1));
        assert_eq!(got["ping"].failed_total, 1);
        assert!(log.load("other").is_empty());
        assert!(log.record("../x", SinkKind::Ping, result(true)).is_err());
    }
}
