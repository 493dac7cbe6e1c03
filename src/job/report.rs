//! What one run did: the outcome, the consistency it achieved, and the
//! figures an operator (and `appsnap status`) wants afterwards.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::outcome::Outcome;

pub use crate::state::Consistency;

/// A run ID: the UTC time the run started (or was scheduled for) to the
/// second, then 8 hex digits of `random`,
/// so IDs sort by time and two runs started in one second still differ
/// (`20261202T023000Z-9f3a0c1e`). The daemon's journal span, the record and
/// `appsnap run`'s output all carry the same one.
pub fn run_id(at: DateTime<Utc>, random: u64) -> String {
    format!("{}-{:08x}", at.format("%Y%m%dT%H%M%SZ"), random as u32)
}

/// A run ID for now, from the OS's random source (the time's nanoseconds
/// if that fails: an ID must differ, not be secret).
pub fn fresh_run_id() -> String {
    let now = Utc::now();
    let random =
        getrandom::u64().unwrap_or_else(|_| now.timestamp_nanos_opt().unwrap_or_default() as u64);
    run_id(now, random)
}

/// Ranks consistency levels so a run keeps the weakest of its steps.
pub fn weakest(a: Consistency, b: Consistency) -> Consistency {
    let rank = |c: Consistency| match c {
        Consistency::App => 3,
        Consistency::Fs => 2,
        Consistency::Crash => 1,
        Consistency::None => 0,
    };
    if rank(a) <= rank(b) {
        a
    } else {
        b
    }
}

/// The vendor's tag for a level (`AppConsistent:True`, `FsConsistent:True`), if any.
pub fn vendor_tag(c: Consistency) -> Option<(&'static str, &'static str)> {
    match c {
        Consistency::App => Some((crate::cloud::TAG_APP_CONSISTENT, "True")),
        Consistency::Fs => Some((crate::cloud::TAG_FS_CONSISTENT, "True")),
        Consistency::Crash | Consistency::None => None,
    }
}

/// The named steps of a run, for durations and `APPSNAP_PHASE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Checks before anything is touched.
    Preflight,
    /// The pre-script.
    PreScript,
    /// FIFREEZE.
    Freeze,
    /// CreateSnapshotGroup while frozen.
    Snapshot,
    /// FITHAW.
    Thaw,
    /// The post-script.
    PostScript,
    /// Waiting for the group to be accomplished.
    AwaitGroup,
    /// Tagging the snapshots.
    Tag,
    /// Deleting the job's groups beyond its retention (after a successful run).
    Prune,
}

impl Stage {
    /// The name as logged.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Preflight => "preflight",
            Stage::PreScript => "prescript",
            Stage::Freeze => "freeze",
            Stage::Snapshot => "snapshot",
            Stage::Thaw => "thaw",
            Stage::PostScript => "postscript",
            Stage::AwaitGroup => "await_group",
            Stage::Tag => "tag",
            Stage::Prune => "prune",
        }
    }
}

/// The result of one run.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RunReport {
    /// The job (or plugin group name).
    pub job: String,
    /// Unique per run, to correlate log lines.
    pub run_id: String,
    /// When the run started.
    pub started_at: chrono::DateTime<chrono::Utc>,
    /// Exit code and meaning.
    pub exit_code: u8,
    /// The snapshot group, when one was created.
    pub group_id: Option<String>,
    /// The group's name.
    pub group_name: Option<String>,
    /// The consistency it has (`None` when no group was made).
    pub consistency: Consistency,
    /// I/O suspension: first FIFREEZE to last FITHAW, in milliseconds (None: no freeze).
    pub frozen_ms: Option<u64>,
    /// How long each step took, in milliseconds, in order.
    pub stages: Vec<(Stage, u64)>,
    /// Things the operator should know that did not fail the run.
    pub warnings: Vec<String>,
    /// What failed, in order.
    pub errors: Vec<String>,
    /// The group's upload as last seen by the run.
    pub upload: Option<crate::state::Upload>,
    /// Why the file systems were thawed by force — the guard's deadline, or
    /// someone else's thaw (a lost freeze) — if they were: the operator's
    /// `forced_thaw` event and counter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forced_thaw: Option<String>,
    /// The tags the pre-script asked for through `APPSNAP_TAGS_FILE` and the
    /// run put on the group and its snapshots (e.g. `appsnap:binlog`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub script_tags: Vec<(String, String)>,
}

impl RunReport {
    /// A report of a run that has just started: nothing done, nothing claimed.
    pub fn started(job: &str, run_id: String, at: DateTime<Utc>) -> RunReport {
        RunReport {
            job: job.to_string(),
            run_id,
            started_at: at,
            exit_code: 0,
            group_id: None,
            group_name: None,
            consistency: Consistency::None,
            frozen_ms: None,
            stages: Vec::new(),
            warnings: Vec::new(),
            errors: Vec::new(),
            upload: None,
            forced_thaw: None,
            script_tags: Vec::new(),
        }
    }

    /// The outcome as the vendor's enum.
    pub fn outcome(&self) -> Outcome {
        Outcome::from_code(self.exit_code).unwrap_or(Outcome::Unknown)
    }

    /// The vendor's closing line.
    pub fn result_line(&self) -> String {
        self.outcome().result_line(self.group_id.as_deref())
    }

    /// The state record `appsnap status` shows; `finished_at` is now.
    pub fn to_job_result(
        &self,
        scheduled_for: Option<chrono::DateTime<chrono::Utc>>,
    ) -> crate::state::JobResult {
        crate::state::JobResult {
            schema: crate::state::STATE_SCHEMA,
            job: self.job.clone(),
            run_id: self.run_id.clone(),
            scheduled_for,
            started_at: self.started_at,
            finished_at: chrono::Utc::now(),
            exit_code: self.exit_code,
            consistency: self.consistency,
            snapshot_group_id: self.group_id.clone(),
            frozen_ms: self.frozen_ms,
            phases: self
                .stages
                .iter()
                .map(|(s, ms)| crate::state::PhaseTime {
                    phase: s.as_str().to_string(),
                    ms: *ms,
                })
                .collect(),
            message: self
                .errors
                .first()
                .cloned()
                .unwrap_or_else(|| self.outcome().message().to_string()),
            upload: self.upload.clone(),
        }
    }

    pub(crate) fn add_stage(&mut self, stage: Stage, took: Duration) {
        self.stages.push((stage, took.as_millis() as u64));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_sort_by_time_and_differ_within_a_second() {
        let at: DateTime<Utc> = "2026-12-02T02:30:00Z".parse().unwrap();
        assert_eq!(
            run_id(at, 0x1234_5678_9abc_def0),
            "20261202T023000Z-9abcdef0"
        );
        assert!(run_id(at, 1) < run_id(at + chrono::Duration::seconds(1), 0));
        let (a, b) = (fresh_run_id(), fresh_run_id());
        assert_ne!(a, b);
        assert_eq!(a.len(), "20261202T023000Z-9abcdef0".len());
    }

    #[test]
    fn weakest_consistency_wins() {
        assert_eq!(weakest(Consistency::App, Consistency::Fs), Consistency::Fs);
        assert_eq!(
            weakest(Consistency::Crash, Consistency::Fs),
            Consistency::Crash
        );
        assert_eq!(
            weakest(Consistency::App, Consistency::App),
            Consistency::App
        );
        assert_eq!(vendor_tag(Consistency::Crash), None);
        assert_eq!(
            vendor_tag(Consistency::App),
            Some(("AppConsistent", "True"))
        );
        assert_eq!(vendor_tag(Consistency::Fs), Some(("FsConsistent", "True")));
    }
}
