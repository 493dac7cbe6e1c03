//! The last drill of each job, kept for `appsnap status` and the metrics:
//! `<state_dir>/verify-last/<job>.json`, replaced atomically after every
//! drill. The time of the last drill that passed is carried over, so a
//! failing drill does not hide how long ago the group last proved restorable.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::record::RecordError;
use super::report::{Verdict, VerifyReport};
use crate::securefs::{self, STATE_FILE_LIMIT};

/// Directory under `state_dir`.
pub const LAST_DIR: &str = "verify-last";

/// What `status` and the metrics show of a job's drills.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastDrill {
    /// The drill's run ID.
    pub run_id: String,
    /// Its result.
    pub verdict: Verdict,
    /// The group it restored.
    pub group_id: Option<String>,
    /// When it ended.
    pub finished: DateTime<Utc>,
    /// When a drill of this job last passed (this one or an earlier one).
    pub last_passed: Option<DateTime<Utc>>,
    /// Its first error, if any.
    pub detail: Option<String>,
    /// How many things it could not clean up.
    pub leftovers: usize,
}

fn dir(state_dir: &Path) -> PathBuf {
    state_dir.join(LAST_DIR)
}

/// The job's last drill, if any (an unreadable file counts as none).
pub fn load(state_dir: &Path, job: &str) -> Option<LastDrill> {
    let bytes = securefs::read_trusted_file(
        &dir(state_dir).join(format!("{job}.json")),
        STATE_FILE_LIMIT,
    )
    .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Records `report` as the job's last drill.
pub fn save(
    state_dir: &Path,
    report: &VerifyReport,
    now: DateTime<Utc>,
) -> Result<(), RecordError> {
    let previous = load(state_dir, &report.job);
    let last = LastDrill {
        run_id: report.run_id.clone(),
        verdict: report.verdict,
        group_id: report.group_id.clone(),
        finished: now,
        last_passed: if report.verdict == Verdict::Passed {
            Some(now)
        } else {
            previous.and_then(|p| p.last_passed)
        },
        detail: report.errors.first().cloned(),
        leftovers: report.leftovers.len(),
    };
    securefs::ensure_trusted_dir(state_dir)?;
    let d = dir(state_dir);
    securefs::ensure_trusted_dir(&d)?;
    let mut json = serde_json::to_vec_pretty(&last).map_err(|e| RecordError::Corrupt {
        path: d.join(&report.job),
        reason: e.to_string(),
    })?;
    json.push(b'\n');
    securefs::write_atomic_nofollow(&d, &format!("{}.json", report.job), &json, 0o644)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(verdict: Verdict) -> VerifyReport {
        VerifyReport {
            run_id: "r".into(),
            job: "db".into(),
            group_id: Some("ssg-1".into()),
            verdict,
            started: Utc::now(),
            duration_ms: 1,
            disks: vec![],
            filesystems: vec![],
            script: None,
            script_output: None,
            errors: if verdict == Verdict::Passed {
                vec![]
            } else {
                vec!["ext4 file system u on d-1: e2fsck failed".into()]
            },
            leftovers: vec![],
        }
    }

    #[test]
    fn a_failed_drill_keeps_the_time_of_the_last_one_that_passed() {
        let tmp = tempfile::tempdir().unwrap();
        let t1 = Utc::now() - chrono::Duration::days(2);
        let t2 = Utc::now();
        save(tmp.path(), &report(Verdict::Passed), t1).unwrap();
        save(tmp.path(), &report(Verdict::Failed), t2).unwrap();
        let last = load(tmp.path(), "db").unwrap();
        assert_eq!(last.verdict, Verdict::Failed);
        assert_eq!(last.finished, t2);
        assert_eq!(last.last_passed, Some(t1));
        assert!(last.detail.unwrap().contains("e2fsck"));
        assert!(load(tmp.path(), "other").is_none());
    }
}
