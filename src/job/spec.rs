//! What one run reads from its job. A scheduled job and the vendor plugin's
//! parameters both make one, so the plugin needs no schedule, zone or
//! retention it does not have; retention stays with the policy's [`Job`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::policy::{
    DiskSelection, HooksWhileThrottled, Job, JobName, OnPrescriptFailure, ThawAfter,
};

/// The settings of one run, as the machine reads them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSpec {
    /// The job's name (group name prefix, `appsnap:job` or `appsnap:plugin` tag).
    pub name: JobName,
    /// Which disks the group covers.
    pub disks: DiskSelection,
    /// Runs before the freeze (quiesces the application).
    pub prescript: Option<PathBuf>,
    /// Runs after the thaw (resumes it).
    pub postscript: Option<PathBuf>,
    /// Variables passed through to the scripts by name.
    pub script_env: Vec<String>,
    /// The group's description.
    pub description: Option<String>,
    /// Extra tags on the group and its snapshots.
    pub tags: BTreeMap<String, String>,
    /// Freeze the file systems (`EnableFsFreeze`).
    pub fs_freeze: bool,
    /// The longest I/O may stay suspended (`TimeoutInSeconds`).
    pub freeze_timeout: Duration,
    /// The longest a script may run (`ScriptTimeoutInSeconds`).
    pub script_timeout: Duration,
    /// When the file systems are thawed.
    pub thaw_after: ThawAfter,
    /// What a failed pre-script (or unusable hooks) leads to.
    pub on_prescript_failure: OnPrescriptFailure,
    /// The pre-script's lock while a throttled run waits outside the window.
    pub hooks_while_throttled: HooksWhileThrottled,
}

impl From<&Job> for RunSpec {
    fn from(job: &Job) -> RunSpec {
        RunSpec {
            name: job.name.clone(),
            disks: job.disks.clone(),
            prescript: job.prescript.clone(),
            postscript: job.postscript.clone(),
            script_env: job.script_env.clone(),
            description: job.description.clone(),
            tags: job.tags.clone(),
            fs_freeze: job.fs_freeze,
            freeze_timeout: job.freeze_timeout,
            script_timeout: job.script_timeout,
            thaw_after: job.thaw_after,
            on_prescript_failure: job.on_prescript_failure,
            hooks_while_throttled: job.hooks_while_throttled,
        }
    }
}
