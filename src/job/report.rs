//! What one run did: the outcome, the consistency it achieved, and the
//! figures an operator (and `appsnap status`) wants afterwards.

use std::time::Duration;

use super::outcome::Outcome;

pub use crate::state::Consistency;

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
    /// Writing the result.
    Record,
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
            Stage::Record => "record",
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
}

impl RunReport {
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
