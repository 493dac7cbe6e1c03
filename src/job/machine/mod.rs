//! One run of a job as an explicit state machine:
//! Preflight → PreScript → Freeze → Snapshot [→ listed] → Thaw → PostScript →
//! AwaitGroup (usable) → Tag.
//!
//! Every step returns the next one; a failure records the vendor's exit code
//! and routes the run through Thaw and PostScript, never around them. While
//! file systems are frozen the machine does one thing — CreateSnapshotGroup,
//! then (with `thaw_after = "listed"`, the default) asking DescribeSnapshotGroups
//! until the group lists one snapshot per disk — and logs nothing (journald may
//! live on a frozen file system; events are held in memory); what happened is
//! logged right after the thaw. If this process dies anyway, the freeze guard
//! thaws on stdin EOF or at its deadline.
//!
//! Here: the run's environment and options, the steps and the data each
//! carries, and the loop. The steps: `preflight`, `hooks` (pre- and
//! post-script), `window` (freeze, snapshot, thaw), `group` (await, tag).

mod group;
mod hooks;
mod preflight;
mod window;

pub use group::upload_of;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tracing::{info, warn};

use super::disks::{refusal_outcome, select_disks};
use super::freeze_stage::{FreezeStage, GuardProcess, GuardSpawn, StageGuard};
use super::outcome::ecs_outcome;
use super::outcome::Outcome;
use super::report::{vendor_tag, weakest, Consistency, RunReport, Stage};
use super::script_check::{open_script, OpenedScript};
use super::scripts::{
    run_script_until, Phase, ProcessGroup, ScriptContext, ScriptRun, DEFAULT_KILL_GRACE,
};
use super::spec::RunSpec;
use crate::cloud::ecs::{
    ClientToken, CreateSnapshotGroup, Disk, EcsClient, EcsError, GroupDisks, SnapshotFilter,
    SnapshotGroup, SnapshotGroupFilter, Tag,
};
use crate::cloud::{TAG_INSTANCE, TAG_JOB};
use crate::host::{self, DiskRequest, Frozen, HostPaths, HostView, Plan, ThawCause};
use crate::policy::types::{HooksWhileThrottled, OnPrescriptFailure, ThawAfter};
use crate::policy::DiskId;

/// Tag key with the consistency appsnap achieved (`app`, `fs`, `crash`).
pub const TAG_CONSISTENCY: &str = "appsnap:consistency";

/// What a run needs from outside the job: the cloud, this host, and limits.
pub struct RunEnv {
    /// The ECS client (shared credentials, warm connection).
    pub ecs: Arc<EcsClient>,
    /// This instance.
    pub instance_id: String,
    /// Where to look for mounts, sysfs and by-id links.
    pub host_paths: HostPaths,
    /// Where the guard writes the frozen-set record.
    pub run_dir: PathBuf,
    /// The binary to start as `freeze-guard` (None: this very binary).
    pub guard_exe: Option<PathBuf>,
    /// Starts the freeze guard: [`GuardProcess`] (the real one) everywhere
    /// but in tests of the failure routes.
    pub freeze_stage: Arc<dyn FreezeStage>,
    /// Cap on disks per group.
    pub max_disks_per_group: u32,
    /// How long to wait, after the thaw, for the group's snapshots to be usable.
    pub await_timeout: Duration,
    /// The longest pause between two questions meanwhile (polling starts
    /// faster and backs off to this).
    pub poll_interval: Duration,
    /// The wait outside the window after ECS throttled CreateSnapshotGroup
    /// while frozen ([`THROTTLED_BACKOFF`] but in tests).
    pub throttled_backoff: crate::cloud::retry::Backoff,
    /// This installation's owner ID, tagged on every group it creates so that
    /// retention deletes only its own (`None`: it could not be read or
    /// created; groups go untagged and retention deletes nothing).
    pub owner: Option<crate::owner::OwnerId>,
}

/// The wait outside the window after the first throttled answer while frozen;
/// it doubles (with jitter, so a fleet does not come back in step) up to the cap.
pub const THROTTLED_BACKOFF: crate::cloud::retry::Backoff = crate::cloud::retry::Backoff {
    initial: Duration::from_secs(1),
    max: Duration::from_secs(30),
};
/// How long a run waits for its snapshots to be usable, by default.
pub const DEFAULT_AWAIT_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// The longest pause between two questions meanwhile, by default.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(5);
/// The first pause after the thaw: the vendor saw members listed ~0.7 s after
/// the answer, and ESSD snapshots are usable within seconds.
impl RunEnv {
    /// The environment the policy describes, with the default waits; the
    /// guard is this very binary.
    pub fn from_policy(
        policy: &crate::policy::Policy,
        ecs: Arc<EcsClient>,
        instance_id: String,
    ) -> RunEnv {
        let owner = match crate::owner::load_or_create(&policy.host.state_dir) {
            Ok(o) => Some(o),
            Err(e) => {
                warn!(
                    "{e}; groups are created without the {} tag and retention deletes none of them",
                    crate::owner::TAG_OWNER
                );
                None
            }
        };
        RunEnv {
            owner,
            ecs,
            instance_id,
            host_paths: HostPaths::system(&policy.host.by_id_dir),
            run_dir: policy.host.run_dir.clone(),
            guard_exe: None,
            freeze_stage: Arc::new(GuardProcess),
            max_disks_per_group: policy.cloud.max_disks_per_group,
            await_timeout: DEFAULT_AWAIT_TIMEOUT,
            poll_interval: DEFAULT_POLL_INTERVAL,
            throttled_backoff: THROTTLED_BACKOFF,
        }
    }
}

/// How this run differs from a one-off `appsnap run`.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Check and plan everything; freeze nothing, create nothing, run no script.
    pub dry_run: bool,
    /// Use exactly this group name (the vendor plugin's `Name`) instead of `<job>-<time>`.
    pub group_name: Option<String>,
    /// The run's ID, when the caller (the scheduler) already chose one.
    pub run_id: Option<String>,
    /// Held from before FIFREEZE to after FITHAW: one freeze at a time on the instance.
    pub freeze_gate: Option<super::freeze_gate::FreezeGate>,
    /// The daemon's shutdown signal and its count of runs that must finish first.
    pub shutdown: Option<Shutdown>,
    /// `appsnap plugin`: the group is tagged `appsnap:plugin=<Name>` instead of
    /// `appsnap:job`, so no job's retention ever counts it as its own.
    pub plugin: bool,
}

/// Lets the daemon stop safely: a run that has not frozen yet gives up before
/// the freeze; a run between its pre-script and the end of its post-script
/// finishes that part before the daemon exits (so nothing stays locked or frozen).
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    requested: Arc<tokio::sync::watch::Sender<bool>>,
    critical: Arc<tokio::sync::watch::Sender<usize>>,
}

impl Shutdown {
    /// A fresh signal with no run in its critical section.
    pub fn new() -> Shutdown {
        Shutdown::default()
    }

    /// Asks runs to stop before freezing.
    pub fn request(&self) {
        self.requested.send_replace(true);
    }

    /// Whether stopping was asked for.
    pub fn is_requested(&self) -> bool {
        *self.requested.borrow()
    }

    /// Completes `grace` after stopping was asked for: how long a running
    /// script may still take before it is cancelled.
    async fn requested_for(&self, grace: Duration) {
        let mut rx = self.requested.subscribe();
        if rx.wait_for(|r| *r).await.is_err() {
            return std::future::pending().await;
        }
        tokio::time::sleep(grace).await;
    }

    /// Waits until no run is between its pre-script and the end of its post-script.
    pub async fn critical_sections_done(&self) {
        let mut rx = self.critical.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
    }

    fn enter(&self) -> CriticalSection {
        self.critical.send_modify(|n| *n += 1);
        CriticalSection(self.critical.clone())
    }
}

/// Marks a run as inside its critical section until dropped.
#[derive(Debug)]
struct CriticalSection(Arc<tokio::sync::watch::Sender<usize>>);

impl Drop for CriticalSection {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// The steps, in order, each holding what it needs: data exists only from
/// the step that makes it, so no step reads a field that might not be set.
/// [`Step::stage`] names each one as reports and the journal do.
enum Step {
    Preflight,
    /// Preflight passed; the pre-script (when the hooks are on) runs next.
    PreScript(Prepared, Option<OpenedScript>),
    Freeze(Prepared),
    /// `None`: nothing is frozen (`fs_freeze = false`, nothing to freeze).
    Snapshot(Prepared, Option<Window>),
    Thaw(Prepared, Option<Window>, Creation),
    PostScript(Prepared, Creation),
    /// Throttled while frozen with the lock held (`hooks_while_throttled =
    /// "release"`): the post-script runs, the wait, then the pre-script again.
    Release(Prepared, Duration),
    AwaitGroup(Prepared, Creation),
    Tag(SnapshotGroup),
    Done,
}

impl Step {
    /// The report's stage for this step; `None` once the run is done.
    fn stage(&self) -> Option<Stage> {
        Some(match self {
            Step::Preflight => Stage::Preflight,
            Step::PreScript(..) => Stage::PreScript,
            Step::Freeze(..) => Stage::Freeze,
            Step::Snapshot(..) => Stage::Snapshot,
            Step::Thaw(..) => Stage::Thaw,
            Step::PostScript(..) | Step::Release(..) => Stage::PostScript,
            Step::AwaitGroup(..) => Stage::AwaitGroup,
            Step::Tag(..) => Stage::Tag,
            Step::Done => return None,
        })
    }
}

/// What preflight settled: the plan, the request (with its ClientToken), and
/// the hooks' context; carried to the end of the post-script.
struct Prepared {
    plan: Plan,
    request: CreateSnapshotGroup,
    script_ctx: ScriptContext,
    /// Both hooks configured and valid: they run.
    hooks: bool,
    /// What the pre-script left running (lock holders), ended after the post-script.
    lock_holders: Option<ProcessGroup>,
    /// The pre-script succeeded and the post-script has not run since: the
    /// application is quiesced (its lock held).
    locked: bool,
}

impl Prepared {
    /// The disks the group was asked for (appsnap always names them).
    fn wanted(&self) -> &[DiskId] {
        match &self.request.disks {
            GroupDisks::Only(ids) => ids,
            _ => &[],
        }
    }
}

/// Everything that exists only while file systems are frozen; dropping it
/// (an early return, a cancelled run) closes the guard, which thaws.
struct Window {
    guard: Box<dyn StageGuard>,
    frozen: Frozen,
    /// Holds every log line in memory from just before FIFREEZE to just after FITHAW.
    hold: crate::logging::OutputHold,
    /// The instance-wide freeze permit, from before FIFREEZE to after FITHAW.
    permit: Option<super::freeze_gate::FreezePermit>,
}

/// What CreateSnapshotGroup gave.
enum Creation {
    /// Not called, or refused.
    Nothing,
    /// Ran out of time: the group may exist anyway.
    TimedOut,
    /// ECS throttled it while frozen: the run thaws at once, waits outside
    /// the window, and freezes again (the request was not processed).
    Throttled {
        /// The server's `x-acs-retry-after`, a floor under the wait.
        retry_after: Option<Duration>,
        /// The answer, for the log.
        error: String,
    },
    /// Accepted.
    Accepted {
        id: String,
        /// When ECS accepted it (grace for a group not yet listed).
        at: Instant,
        /// Seen usable (or failed) while frozen.
        seen: Option<Box<SnapshotGroup>>,
    },
}

/// Deadline for the calls made before and after the freeze.
const CALL_BUDGET: Duration = Duration::from_secs(60);

/// Runs `job` once and reports what happened; never panics while anything is frozen.
pub async fn run(env: &RunEnv, job: &RunSpec, opts: RunOptions) -> RunReport {
    let mut r = Run::new(env, job, opts);
    let mut step = Step::Preflight;
    let span = tracing::Span::current();
    while let Some(stage) = step.stage() {
        let started = Instant::now();
        // Every journal line of the run carries the step it came from.
        crate::logging::set_phase(&span, stage.as_str());
        step = match step {
            Step::Preflight => r.preflight().await,
            Step::PreScript(p, script) => r.pre_script(p, script).await,
            Step::Freeze(p) => r.freeze(p).await,
            Step::Snapshot(p, w) => r.snapshot(p, w).await,
            Step::Thaw(p, w, c) => r.thaw(p, w, c).await,
            Step::PostScript(p, c) => r.post_script(p, c).await,
            Step::Release(p, wait) => r.release(p, wait).await,
            Step::AwaitGroup(p, c) => r.await_group(p, c).await,
            Step::Tag(g) => r.tag(g).await,
            Step::Done => Step::Done,
        };
        r.report.add_stage(stage, started.elapsed());
    }
    r.finish()
}

/// What the whole run shares; each step's own data travels in [`Step`].
struct Run<'a> {
    env: &'a RunEnv,
    job: &'a RunSpec,
    opts: RunOptions,
    report: RunReport,
    /// The first failure's code (a thaw failure overrides everything).
    failure: Option<Outcome>,
    /// What the snapshot can still claim; lowered as steps fall short.
    consistency: Consistency,
    /// Present from the pre-script to the end of the post-script.
    critical: Option<CriticalSection>,
    /// Errors seen while frozen, logged after the thaw.
    frozen_errors: Vec<(Outcome, String)>,
    /// The group as last seen, for the report's upload.
    last_seen: Option<SnapshotGroup>,
    /// Windows given up because ECS throttled CreateSnapshotGroup.
    throttled_windows: u32,
    /// DescribeSnapshotGroups answers throttled while frozen (asked again
    /// at the window's cadence, never after a backoff); told after the thaw.
    throttled_polls: u32,
}

impl<'a> Run<'a> {
    fn new(env: &'a RunEnv, job: &'a RunSpec, opts: RunOptions) -> Run<'a> {
        let now = chrono::Utc::now();
        // The caller's ID when it chose one (the daemon's journal span carries it).
        let run_id = opts
            .run_id
            .clone()
            .unwrap_or_else(super::report::fresh_run_id);
        Run {
            env,
            job,
            opts,
            report: RunReport::started(job.name.as_str(), run_id, now),
            failure: None,
            consistency: Consistency::App,
            critical: None,
            frozen_errors: Vec::new(),
            last_seen: None,
            throttled_windows: 0,
            throttled_polls: 0,
        }
    }

    fn fail(&mut self, outcome: Outcome, msg: String) {
        warn!(job = %self.job.name, run_id = %self.report.run_id, code = outcome.code(), "{msg}");
        self.report.errors.push(msg);
        if self.failure.is_none() || outcome == Outcome::ThawFailed {
            self.failure = Some(outcome);
        }
    }

    fn warn(&mut self, msg: String) {
        warn!(job = %self.job.name, run_id = %self.report.run_id, "{msg}");
        self.report.warnings.push(msg);
    }

    fn call_deadline() -> Instant {
        Instant::now() + CALL_BUDGET
    }

    /// `appsnap:job=<job>`, or `appsnap:plugin=<Name>` for a plugin run (no
    /// job's retention ever counts a plugin group as its own).
    fn job_tag(&self) -> Tag {
        let key = if self.opts.plugin {
            crate::owner::TAG_PLUGIN
        } else {
            TAG_JOB
        };
        Tag::new(key, self.job.name.as_str())
    }

    fn finish(mut self) -> RunReport {
        self.report.upload = self.last_seen.as_ref().map(upload_of);
        let outcome = self.failure.unwrap_or(Outcome::Success);
        self.report.exit_code = outcome.code();
        self.report.consistency = if self.report.group_id.is_some() {
            self.consistency
        } else {
            Consistency::None
        };
        info!(
            job = %self.job.name, run_id = %self.report.run_id,
            exit_code = outcome.code(),
            snapshot_group = self.report.group_id.as_deref().unwrap_or(""),
            consistency = self.report.consistency.as_str(),
            frozen_ms = self.report.frozen_ms.unwrap_or(0),
            "run finished: {}", outcome
        );
        self.report
    }
}

/// Epoch seconds `d` from now (what scripts see as the freeze deadline).
fn epoch_after(d: Duration) -> u64 {
    (std::time::SystemTime::now() + d)
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |t| t.as_secs())
}
