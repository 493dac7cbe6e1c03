//! What a drill found, for the terminal, the log, the snapshots' tags and
//! `appsnap status`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Snapshot tag with the drill's result (`ok` / `failed`).
pub const TAG_VERIFY_RESULT: &str = "appsnap:verify";
/// Snapshot tag with the time of the drill (RFC 3339, UTC).
pub const TAG_VERIFIED_AT: &str = "appsnap:verified";

/// The drill's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Every file system checked clean and the script (if any) succeeded.
    Passed,
    /// The group was restored and something about the copy is wrong.
    Failed,
    /// The drill could not get as far as judging the group.
    NotRun,
}

impl Verdict {
    /// `appsnap verify`'s exit code: 0 passed, 1 failed, 2 not run.
    pub fn exit_code(self) -> u8 {
        match self {
            Verdict::Passed => 0,
            Verdict::Failed => 1,
            Verdict::NotRun => 2,
        }
    }

    /// The word for logs and tags.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Passed => "passed",
            Verdict::Failed => "failed",
            Verdict::NotRun => "not-run",
        }
    }
}

/// One file system of the copy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FsOutcome {
    /// The restored disk holding it.
    pub disk_id: String,
    /// The live disk it is a copy of.
    pub source_disk_id: String,
    /// The device it was found on (partition or LV).
    pub device: String,
    /// ext4, xfs, btrfs.
    pub fstype: String,
    /// Its UUID.
    pub uuid: String,
    /// Where the copy was mounted (none when its check failed).
    pub mount_point: Option<String>,
    /// Where the live file system is mounted, if it is.
    pub live_mount_point: Option<String>,
    /// `passed`, or what failed and how.
    pub check: String,
    /// Whether the check passed.
    pub ok: bool,
}

/// The whole drill.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VerifyReport {
    /// The drill's run ID.
    pub run_id: String,
    /// The job.
    pub job: String,
    /// The group restored (none when no group could be chosen).
    pub group_id: Option<String>,
    /// The result.
    pub verdict: Verdict,
    /// Started.
    pub started: DateTime<Utc>,
    /// How long the whole drill took, cleanup included.
    pub duration_ms: u64,
    /// The disks made.
    pub disks: Vec<String>,
    /// The file systems found.
    pub filesystems: Vec<FsOutcome>,
    /// How the verify script ended (none when there is none or it did not run).
    pub script: Option<String>,
    /// The end of the script's output (stdout and stderr, at most 2000
    /// bytes); the script's environment holds none of appsnap's secrets.
    #[serde(default)]
    pub script_output: Option<String>,
    /// Why the drill failed or did not run.
    pub errors: Vec<String>,
    /// What could not be cleaned up (a disk, a mount): retried at the next
    /// daemon start or by `appsnap verify --cleanup`.
    pub leftovers: Vec<String>,
}

impl VerifyReport {
    /// One line for the terminal and the journal.
    pub fn summary(&self) -> String {
        let fs: Vec<String> = self
            .filesystems
            .iter()
            .map(|f| format!("{} {} on {}: {}", f.fstype, f.uuid, f.disk_id, f.check))
            .collect();
        format!(
            "verify job {:?} run {}: {} (group {}, {} disk(s), {} ms){}{}",
            self.job,
            self.run_id,
            self.verdict.as_str(),
            self.group_id.as_deref().unwrap_or("none"),
            self.disks.len(),
            self.duration_ms,
            if fs.is_empty() {
                String::new()
            } else {
                format!("; {}", fs.join("; "))
            },
            self.script
                .as_ref()
                .map(|s| format!("; verify_script {s}"))
                .unwrap_or_default()
        )
    }
}
