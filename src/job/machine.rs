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
use crate::cloud::ecs::{
    ClientToken, CreateSnapshotGroup, Disk, EcsClient, EcsError, GroupDisks, SnapshotFilter,
    SnapshotGroup, SnapshotGroupFilter, Tag,
};
use crate::cloud::{TAG_INSTANCE, TAG_JOB};
use crate::host::{self, DiskRequest, Frozen, HostPaths, HostView, Plan, ThawCause};
use crate::policy::types::ThawAfter;
use crate::policy::{DiskId, Job};

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
    /// This installation's owner ID, tagged on every group it creates so that
    /// retention deletes only its own (`None`: it could not be read or
    /// created; groups go untagged and retention deletes nothing).
    pub owner: Option<crate::owner::OwnerId>,
}

/// How long a run waits for its snapshots to be usable, by default.
pub const DEFAULT_AWAIT_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// The longest pause between two questions meanwhile, by default.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(5);
/// The first pause after the thaw: the vendor saw members listed ~0.7 s after
/// the answer, and ESSD snapshots are usable within seconds.
const FIRST_POLL: Duration = Duration::from_millis(250);
/// Between two questions while frozen: every round trip here lengthens the
/// application's pause by at most this much.
const FROZEN_POLL: Duration = Duration::from_millis(50);
/// How long a group may stay unlisted after ECS accepted it before the run
/// gives up on it: DescribeSnapshotGroups can briefly miss a new group (Alibaba's
/// own CSI driver caches created groups for this reason).
const LISTING_GRACE: Duration = Duration::from_secs(120);
/// How long, after CreateSnapshotGroup timed out, the run looks for a group
/// that ECS may have made anyway (at most the await timeout). A guess: a
/// request ECS processes at all is seen within seconds; waiting the whole
/// await timeout (30 min) would hold `appsnap run`, the vendor plugin's
/// command and the job's next run for nothing in the common case where the
/// request was never processed.
const LATE_GROUP_WAIT: Duration = Duration::from_secs(30);

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

/// How long a running pre-script may go on once the daemon is asked to stop;
/// the run is abandoned before the freeze anyway, so there is little to wait for.
const PRESCRIPT_STOP_GRACE: Duration = Duration::from_secs(10);
/// The same for the post-script, which undoes the pre-script's work and so gets
/// longer; both stay well inside the unit's TimeoutStopSec.
const POSTSCRIPT_STOP_GRACE: Duration = Duration::from_secs(60);

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
            Step::PostScript(..) => Stage::PostScript,
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
    /// Accepted.
    Accepted {
        id: String,
        /// When ECS accepted it (grace for a group not yet listed).
        at: Instant,
        /// Seen usable (or failed) while frozen.
        seen: Option<Box<SnapshotGroup>>,
    },
}

/// Slack kept between giving up on CreateSnapshotGroup and the guard's own deadline,
/// so that appsnap, not the deadline, ends the freeze.
fn api_margin(freeze_timeout: Duration) -> Duration {
    (freeze_timeout / 5).clamp(Duration::from_millis(300), Duration::from_secs(2))
}

/// Deadline for the calls made before and after the freeze.
const CALL_BUDGET: Duration = Duration::from_secs(60);

/// Runs `job` once and reports what happened; never panics while anything is frozen.
pub async fn run(env: &RunEnv, job: &Job, opts: RunOptions) -> RunReport {
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
    job: &'a Job,
    opts: RunOptions,
    report: RunReport,
    /// The first failure's code (a thaw failure overrides everything).
    failure: Option<Outcome>,
    /// What the snapshot can still claim; lowered as steps fall short.
    consistency: Consistency,
    /// Present from the pre-script to the end of the run.
    critical: Option<CriticalSection>,
    /// Errors seen while frozen, logged after the thaw.
    frozen_errors: Vec<(Outcome, String)>,
    /// The group as last seen, for the report's upload.
    last_seen: Option<SnapshotGroup>,
}

impl<'a> Run<'a> {
    fn new(env: &'a RunEnv, job: &'a Job, opts: RunOptions) -> Run<'a> {
        let now = chrono::Utc::now();
        // The caller's ID when it chose one (the daemon's journal span carries it).
        let run_id = opts.run_id.clone().unwrap_or_else(|| {
            let mut nonce = crate::cloud::sign::nonce();
            nonce.truncate(8);
            format!("{}-{nonce}", now.format("%Y%m%dT%H%M%SZ"))
        });
        Run {
            env,
            job,
            opts,
            report: RunReport {
                job: job.name.to_string(),
                run_id,
                started_at: now,
                exit_code: 0,
                group_id: None,
                group_name: None,
                consistency: Consistency::None,
                frozen_ms: None,
                stages: Vec::new(),
                warnings: Vec::new(),
                errors: Vec::new(),
                upload: None,
            },
            failure: None,
            consistency: Consistency::App,
            critical: None,
            frozen_errors: Vec::new(),
            last_seen: None,
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

    // ---- Preflight: nothing is touched before every check has passed.

    async fn preflight(&mut self) -> Step {
        let job = self.job;
        let ecs = &self.env.ecs;
        // Credentials that outlive the freeze window and the API call.
        let validity = job.freeze_timeout + CALL_BUDGET;
        if let Err(e) = ecs.credentials().ensure_valid_for(validity).await {
            self.fail(Outcome::NoRamRole, format!("no usable credentials: {e}"));
            return Step::Done;
        }
        let disks = match ecs
            .describe_disks(&self.env.instance_id, &[], Self::call_deadline())
            .await
        {
            Ok(d) => d,
            Err(e) => {
                let outcome = ecs_outcome(&e, Outcome::ConditionsNotMet);
                self.fail(outcome, format!("DescribeDisks: {e}"));
                return Step::Done;
            }
        };
        let selected = match select_disks(
            &job.disks,
            &self.env.instance_id,
            &disks,
            self.env.max_disks_per_group,
        ) {
            Ok(s) => s,
            Err(problems) => {
                let outcome = refusal_outcome(&job.disks, &problems);
                for p in &problems {
                    self.fail(outcome, p.to_string());
                }
                return Step::Done;
            }
        };
        for w in selected.warnings.iter().chain(&selected.skipped) {
            self.warn(w.to_string());
        }
        let selected: Vec<(DiskId, Disk)> = selected
            .disks
            .into_iter()
            .filter_map(|d| DiskId::parse(&d.disk_id).ok().map(|id| (id, d)))
            .collect();

        // A snapshot still being created on one of our disks and not yet usable
        // (the vendor's code 16: "being created and the instant access feature
        // is disabled"), before any freeze. An Available one is no obstacle.
        let filter = SnapshotFilter {
            instance_id: Some(self.env.instance_id.clone()),
            status: Some("progressing".into()),
            ..SnapshotFilter::default()
        };
        match ecs.describe_snapshots(&filter, Self::call_deadline()).await {
            Ok(progressing) => {
                let busy: Vec<String> = progressing
                    .iter()
                    .filter(|s| {
                        !s.available
                            && selected
                                .iter()
                                .any(|(id, _)| id.as_str() == s.source_disk_id)
                    })
                    .map(|s| format!("{} on {}", s.snapshot_id, s.source_disk_id))
                    .collect();
                if !busy.is_empty() {
                    self.fail(
                        Outcome::PreviousSnapshotInProgress,
                        format!(
                            "a previous snapshot is still being created and not yet usable: {}",
                            busy.join(", ")
                        ),
                    );
                    return Step::Done;
                }
            }
            Err(e) => {
                let outcome = ecs_outcome(&e, Outcome::ConditionsNotMet);
                self.fail(outcome, format!("DescribeSnapshots: {e}"));
                return Step::Done;
            }
        }

        // The freeze plan (refusals: code 1).
        let requests: Vec<DiskRequest> = selected
            .iter()
            .map(|(id, d)| DiskRequest {
                id: id.clone(),
                serial: (!d.serial_number.is_empty()).then(|| d.serial_number.clone()),
            })
            .collect();
        let plan = match HostView::read(&self.env.host_paths)
            .and_then(|view| host::build_plan(&view, &requests, &self.env.run_dir))
        {
            Ok(p) => p,
            Err(e) => {
                self.fail(Outcome::ConditionsNotMet, format!("freeze plan: {e}"));
                return Step::Done;
            }
        };
        for w in &plan.warnings {
            self.warn(format!("plan: {w}"));
        }
        for s in &plan.skipped {
            info!(job = %job.name, "not frozen: {} ({}): {}", s.mount_point.display(), s.fs_type, s.reason);
        }

        // Hooks: both configured and valid, or neither runs (never lock without a way to unlock).
        let prescript = self.check_hooks();
        let hooks = prescript.is_some();
        if !hooks {
            self.consistency = Consistency::Fs;
        }
        if !job.fs_freeze || plan.entries.is_empty() {
            if !job.fs_freeze {
                info!(job = %job.name, "fs_freeze = false: file systems will not be frozen");
            }
            if !hooks {
                self.consistency = Consistency::Crash;
            }
        }

        // The request, built once with its ClientToken, so a retry never makes two groups.
        let name = self.opts.group_name.clone().unwrap_or_else(|| {
            format!(
                "{}-{}",
                job.name,
                chrono::Utc::now().format("%Y%m%dT%H%M%SZ")
            )
        });
        let mut tags = vec![
            self.job_tag(),
            Tag::new(TAG_INSTANCE, self.env.instance_id.as_str()),
        ];
        if let Some(owner) = &self.env.owner {
            tags.push(Tag::new(crate::owner::TAG_OWNER, owner.as_str()));
        }
        tags.extend(
            job.tags
                .iter()
                .map(|(k, v)| Tag::new(k.as_str(), v.as_str())),
        );
        let request = CreateSnapshotGroup {
            instance_id: self.env.instance_id.clone(),
            disks: GroupDisks::Only(selected.iter().map(|(id, _)| id.clone()).collect()),
            name: name.clone(),
            description: job.description.clone(),
            tags,
            resource_group_id: None,
            client_token: ClientToken::generate(),
        };
        if let Err(e) = request.params(ecs.region_id()) {
            self.fail(Outcome::InvalidParameters, e.to_string());
            return Step::Done;
        }
        self.report.group_name = Some(name);
        let script_ctx = ScriptContext {
            job: job.name.to_string(),
            disk_ids: selected.iter().map(|(id, _)| id.to_string()).collect(),
            mountpoints: plan.entries.iter().map(|e| e.mount_point.clone()).collect(),
            freeze_deadline_epoch: 0,
            pass_env: job.script_env.clone(),
        };

        if self.opts.dry_run {
            self.print_dry_run(&plan, &request, &script_ctx, hooks);
            return Step::Done;
        }
        // The connection is opened now, so the frozen window is one round trip.
        if let Err(e) = ecs.warm(Self::call_deadline()).await {
            self.fail(Outcome::ConditionsNotMet, format!("cannot reach ECS: {e}"));
            return Step::Done;
        }
        let prepared = Prepared {
            plan,
            request,
            script_ctx,
            hooks,
            lock_holders: None,
        };
        Step::PreScript(prepared, prescript)
    }

    /// Opens and checks both hooks; the pre-script's descriptor is returned
    /// (that file runs) when both are usable, so the hooks are on exactly
    /// when it is `Some`; the post-script is opened and checked again at its start.
    fn check_hooks(&mut self) -> Option<OpenedScript> {
        let (pre, post) = (self.job.prescript.clone(), self.job.postscript.clone());
        let mut ok = true;
        let mut prescript = None;
        for (what, path) in [("prescript", &pre), ("postscript", &post)] {
            match path {
                None => {
                    ok = false;
                }
                Some(p) => match open_script(p) {
                    Ok(opened) => {
                        if what == "prescript" {
                            prescript = Some(opened);
                        }
                    }
                    Err(e) => {
                        self.warn(format!(
                            "{what} not used, snapshot will be file-system-consistent: {e}"
                        ));
                        ok = false;
                    }
                },
            }
        }
        if !ok && (pre.is_some() || post.is_some()) && (pre.is_none() || post.is_none()) {
            self.warn(
                "application-consistent snapshots need both prescript and postscript; neither runs"
                    .to_string(),
            );
        }
        prescript.filter(|_| ok)
    }

    fn print_dry_run(
        &self,
        plan: &Plan,
        request: &CreateSnapshotGroup,
        script_ctx: &ScriptContext,
        hooks: bool,
    ) {
        println!(
            "dry run of job {:?}: nothing is frozen, created or run",
            self.job.name.as_str()
        );
        println!("disks: {}", script_ctx.disk_ids.join(", "));
        print!("{}", plan.render());
        if hooks {
            println!(
                "would run prescript {}",
                self.job
                    .prescript
                    .as_ref()
                    .map_or(String::new(), |p| p.display().to_string())
            );
        }
        if self.job.fs_freeze && !plan.entries.is_empty() {
            println!(
                "would freeze {} file system(s) for at most {}s",
                plan.entries.len(),
                self.job.freeze_timeout.as_secs()
            );
        }
        println!("would call CreateSnapshotGroup:");
        if let Ok(params) = request.params(self.env.ecs.region_id()) {
            for (k, v) in params {
                println!("  {k}={v}");
            }
        }
        if hooks {
            println!(
                "would run postscript {}",
                self.job
                    .postscript
                    .as_ref()
                    .map_or(String::new(), |p| p.display().to_string())
            );
        }
        println!("consistency: {}", self.consistency.as_str());
    }

    // ---- PreScript

    async fn pre_script(&mut self, mut prep: Prepared, script: Option<OpenedScript>) -> Step {
        if let Some(sd) = &self.opts.shutdown {
            if sd.is_requested() {
                self.fail(
                    Outcome::Unknown,
                    "the daemon is stopping: run abandoned before the pre-script".into(),
                );
                return Step::Done;
            }
            self.critical = Some(sd.enter());
        }
        let Some(script) = script else {
            return Step::Freeze(prep);
        };
        let path = script.path().to_path_buf();
        prep.script_ctx.freeze_deadline_epoch =
            epoch_after(self.job.script_timeout + self.job.freeze_timeout);
        let run = run_script_until(
            &script,
            Phase::Pre,
            &prep.script_ctx,
            self.job.script_timeout,
            DEFAULT_KILL_GRACE,
            self.stop_requested_for(PRESCRIPT_STOP_GRACE),
        )
        .await;
        self.log_script(Phase::Pre, &run);
        if !run.status.succeeded() {
            self.consistency = weakest(self.consistency, Consistency::Fs);
            self.fail(
                Outcome::PreScriptFailed,
                format!(
                    "prescript {}: {}; snapshot will be file-system-consistent",
                    path.display(),
                    describe(&run)
                ),
            );
        }
        prep.lock_holders = run.leftovers;
        if let Some(g) = &prep.lock_holders {
            info!(job = %self.job.name, "prescript left process group {} running (lock holders); ended after the postscript", g.id());
        }
        Step::Freeze(prep)
    }

    /// Completes `grace` after the daemon is asked to stop; never without a daemon.
    fn stop_requested_for(&self, grace: Duration) -> impl std::future::Future<Output = ()> {
        let sd = self.opts.shutdown.clone();
        async move {
            match sd {
                Some(sd) => sd.requested_for(grace).await,
                None => std::future::pending().await,
            }
        }
    }

    /// Logs how a script ended and its output, with the credentials in use
    /// redacted: a script may print its environment or a config file holding them.
    fn log_script(&self, phase: Phase, run: &ScriptRun) {
        let key = self.env.ecs.credentials().current();
        let secrets: Vec<&crate::cloud::secret::Secret> = key
            .iter()
            .flat_map(|k| std::iter::once(&k.access_key_secret).chain(&k.security_token))
            .collect();
        let output = crate::cloud::secret::scrub(run.output.trim_end(), &secrets);
        info!(
            job = %self.job.name, run_id = %self.report.run_id, phase = phase.as_str(),
            took_ms = run.duration.as_millis() as u64,
            "{} script: {}; output: {output}", phase.as_str(), describe(run)
        );
    }

    // ---- Freeze

    async fn freeze(&mut self, mut prep: Prepared) -> Step {
        if self
            .opts
            .shutdown
            .as_ref()
            .is_some_and(Shutdown::is_requested)
        {
            self.fail(
                Outcome::Unknown,
                "the daemon is stopping: run abandoned before the freeze".into(),
            );
            return Step::PostScript(prep, Creation::Nothing);
        }
        if !self.job.fs_freeze || prep.plan.entries.is_empty() {
            return Step::Snapshot(prep, None);
        }
        let permit = match &self.opts.freeze_gate {
            Some(gate) => Some(gate.acquire().await),
            None => None,
        };
        // Credentials must not expire inside the window (the pre-script may have taken long).
        if let Err(e) = self
            .env
            .ecs
            .credentials()
            .ensure_valid_for(self.job.freeze_timeout + CALL_BUDGET)
            .await
        {
            self.fail(
                Outcome::NoRamRole,
                format!("credentials before freezing: {e}"),
            );
            return Step::PostScript(prep, Creation::Nothing);
        }
        let deadline = self.job.freeze_timeout;
        let spawned = self.env.freeze_stage.spawn(GuardSpawn {
            plan: &prep.plan,
            deadline,
            run_dir: &self.env.run_dir,
            exe: self.env.guard_exe.as_deref(),
        });
        let mut guard = match spawned {
            Ok(g) => g,
            Err(e) => {
                self.fail(Outcome::FreezeFailed, format!("cannot suspend I/O: {e}"));
                return Step::PostScript(prep, Creation::Nothing);
            }
        };
        prep.script_ctx.freeze_deadline_epoch = epoch_after(deadline);
        let hold = crate::logging::hold();
        // The guard's protocol is blocking I/O on a pipe: keep it off the async workers.
        let joined = tokio::task::spawn_blocking(move || {
            let r = guard.freeze();
            (guard, r)
        })
        .await;
        let (guard, result) = match joined {
            Ok(x) => x,
            Err(e) => {
                // The guard moved into the failed task was dropped: its stdin closed, so it thawed.
                drop(hold);
                drop(permit);
                self.fail(Outcome::FreezeFailed, format!("freeze task failed: {e}"));
                return Step::PostScript(prep, Creation::Nothing);
            }
        };
        match result {
            Ok(frozen) => {
                let window = Window {
                    guard,
                    frozen,
                    hold,
                    permit,
                };
                Step::Snapshot(prep, Some(window))
            }
            Err(e) => {
                drop(guard);
                drop(hold);
                drop(permit);
                self.fail(Outcome::FreezeFailed, format!("cannot suspend I/O: {e}"));
                self.consistency = weakest(self.consistency, Consistency::Fs);
                Step::PostScript(prep, Creation::Nothing)
            }
        }
    }

    // ---- Snapshot: the only thing done while frozen. Events are held, not written.

    async fn snapshot(&mut self, prep: Prepared, window: Option<Window>) -> Step {
        let deadline = match &window {
            Some(w) => Instant::from_std(w.frozen.thaw_by) - api_margin(self.job.freeze_timeout),
            None => Instant::now() + self.job.freeze_timeout,
        };
        let id = match self
            .env
            .ecs
            .create_snapshot_group(&prep.request, deadline)
            .await
        {
            Ok(id) => id,
            Err(e) => {
                let outcome = create_outcome(&e);
                let creation = if outcome == Outcome::GroupCreateTimeout {
                    Creation::TimedOut
                } else {
                    Creation::Nothing
                };
                self.frozen_errors
                    .push((outcome, format!("CreateSnapshotGroup: {e}")));
                return Step::Thaw(prep, window, creation);
            }
        };
        let at = Instant::now();
        self.report.group_id = Some(id.clone());
        let seen = if window.is_some() && self.job.thaw_after == ThawAfter::Listed {
            self.await_listed_while_frozen(&prep, &id, deadline)
                .await
                .map(Box::new)
        } else {
            None
        };
        Step::Thaw(prep, window, Creation::Accepted { id, at, seen })
    }

    /// Holds the freeze until ECS lists the group with one usable snapshot per
    /// disk: only then is its point in time known to be inside the window. If
    /// that cannot be seen before `deadline`, the snapshots may have been taken
    /// after the thaw: the group is crash-consistent at best.
    async fn await_listed_while_frozen(
        &mut self,
        prep: &Prepared,
        id: &str,
        deadline: Instant,
    ) -> Option<SnapshotGroup> {
        let filter = SnapshotGroupFilter {
            ids: vec![id.to_string()],
            ..SnapshotGroupFilter::default()
        };
        loop {
            match self
                .env
                .ecs
                .describe_snapshot_groups(&filter, deadline)
                .await
            {
                Ok(groups) => {
                    if let Some(g) = groups.into_iter().find(|g| g.snapshot_group_id == id) {
                        match usability(&g, prep.wanted()) {
                            Usability::Usable => return Some(g),
                            Usability::Failed => {
                                self.consistency = Consistency::Crash;
                                self.frozen_errors.push((
                                    Outcome::GroupBadState,
                                    format!(
                                        "snapshot group {id} failed while file systems were frozen"
                                    ),
                                ));
                                return Some(g);
                            }
                            Usability::NotYet => {}
                        }
                    }
                }
                Err(e) => {
                    self.consistency = Consistency::Crash;
                    let outcome = ecs_outcome(&e, Outcome::GroupCreateTimeout);
                    self.frozen_errors.push((
                        outcome,
                        format!(
                            "DescribeSnapshotGroups while frozen: {e}; thawed without seeing the group's snapshots, so it is crash-consistent at best"
                        ),
                    ));
                    return None;
                }
            }
            if Instant::now() + FROZEN_POLL >= deadline {
                self.consistency = Consistency::Crash;
                self.frozen_errors.push((
                    Outcome::GroupCreateTimeout,
                    format!(
                        "ECS did not list the snapshots of group {id} within the freeze window ({}s); its point in time may be after the thaw, so it is crash-consistent at best",
                        self.job.freeze_timeout.as_secs()
                    ),
                ));
                return None;
            }
            tokio::time::sleep(FROZEN_POLL).await;
        }
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

    /// A usable group must hold one snapshot per disk, each complete or
    /// Available (vendor code 7 otherwise): an `accomplished` group is usable
    /// whatever its members say, so they are checked here.
    fn check_members(&mut self, wanted: &[DiskId], g: &SnapshotGroup) {
        for d in wanted {
            match g.snapshots.iter().find(|s| s.source_disk_id == d.as_str()) {
                None => self.fail(
                    Outcome::GroupSnapshotBadState,
                    format!("group {} has no snapshot of disk {d}", g.snapshot_group_id),
                ),
                Some(s) if !s.available && s.progress != "100%" => self.fail(
                    Outcome::GroupSnapshotBadState,
                    format!(
                        "snapshot {} of group {} is not complete ({})",
                        s.snapshot_id, g.snapshot_group_id, s.progress
                    ),
                ),
                Some(_) => {}
            }
        }
    }

    // ---- Thaw: once the point in time is known to be inside the window
    // (`listed`), or at the answer (`accepted`).

    async fn thaw(&mut self, prep: Prepared, window: Option<Window>, creation: Creation) -> Step {
        let Some(Window {
            guard,
            frozen: _,
            hold,
            permit,
        }) = window
        else {
            self.after_window(&creation);
            return Step::PostScript(prep, creation);
        };
        // First ask whether someone thawed a file system behind the guard's
        // back (`fsfreeze -u`, another tool): then the point in time may be
        // on an unfrozen file system. The check costs one FIFREEZE per file
        // system (EBUSY) before the thaw.
        let joined = tokio::task::spawn_blocking(move || {
            let mut guard = guard;
            let checked = guard.check();
            (checked, guard.thaw())
        })
        .await;
        // Thawed (or the guard is gone and its deadline rules): logging is safe again.
        drop(hold);
        drop(permit);
        self.after_window(&creation);
        let (checked, joined) = match joined {
            Ok((checked, thawed)) => (Some(checked), Ok(thawed)),
            Err(e) => (None, Err(e)),
        };
        let mut lost: Vec<PathBuf> = Vec::new();
        match checked {
            Some(Ok(l)) => lost.extend(l),
            Some(Err(e)) => {
                self.consistency = Consistency::Crash;
                self.warn(format!(
                    "could not confirm that the file systems stayed frozen until the point in time ({e}); the group is crash-consistent at best"
                ));
            }
            None => {}
        }
        if let Ok(Ok(report)) = &joined {
            for p in report.lost() {
                if !lost.iter().any(|l| l == p) {
                    lost.push(p.to_path_buf());
                }
            }
        }
        if !lost.is_empty() {
            self.consistency = Consistency::Crash;
            let names = lost
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ");
            self.warn(format!(
                "freeze lost: {names} was thawed by someone else (fsfreeze -u, appsnap thaw --all --force, another tool) while the snapshot was taken; the group is crash-consistent at best"
            ));
            self.fail(
                Outcome::FreezeFailed,
                format!("cannot prove I/O was suspended: the freeze of {names} was lost"),
            );
        }
        match joined {
            Ok(Ok(report)) => {
                self.report.frozen_ms = Some(report.window_us / 1000);
                for fs in &report.filesystems {
                    info!(job = %self.job.name, "thawed {} after {} ms", fs.mount_point.display(), fs.suspended_us / 1000);
                }
                if report.cause == ThawCause::Deadline {
                    self.consistency = Consistency::Crash;
                    self.fail(
                        Outcome::GroupCreateTimeout,
                        format!(
                            "the freeze deadline ({}s) thawed the file systems before ECS answered; the group is crash-consistent at best",
                            self.job.freeze_timeout.as_secs()
                        ),
                    );
                }
            }
            Ok(Err(e)) => self.fail(Outcome::ThawFailed, format!("cannot resume I/O: {e}")),
            Err(e) => self.fail(Outcome::ThawFailed, format!("thaw task failed: {e}")),
        }
        Step::PostScript(prep, creation)
    }

    /// Logs what happened inside the window, now that logging is safe.
    fn after_window(&mut self, creation: &Creation) {
        for (outcome, msg) in std::mem::take(&mut self.frozen_errors) {
            if outcome == Outcome::GroupCreateTimeout {
                self.consistency = Consistency::Crash;
            }
            self.fail(outcome, msg);
        }
        if let Creation::Accepted { id, .. } = creation {
            info!(job = %self.job.name, run_id = %self.report.run_id, snapshot_group = %id, "snapshot group accepted");
        }
    }

    // ---- PostScript, then the lock holders end.

    async fn post_script(&mut self, mut prep: Prepared, creation: Creation) -> Step {
        // Opened and checked again now: the path may lead elsewhere than at the start.
        let script = match self.job.postscript.as_deref().filter(|_| prep.hooks) {
            None => None,
            Some(path) => match open_script(path) {
                Ok(s) => Some(s),
                Err(e) => {
                    self.consistency = weakest(self.consistency, Consistency::Fs);
                    self.fail(
                        Outcome::PostScriptFailed,
                        format!("postscript not run: {e}; snapshot will be at most file-system-consistent"),
                    );
                    None
                }
            },
        };
        if let Some(script) = script {
            let path = script.path().to_path_buf();
            let run = run_script_until(
                &script,
                Phase::Post,
                &prep.script_ctx,
                self.job.script_timeout,
                DEFAULT_KILL_GRACE,
                self.stop_requested_for(POSTSCRIPT_STOP_GRACE),
            )
            .await;
            self.log_script(Phase::Post, &run);
            if !run.status.succeeded() {
                self.fail(
                    Outcome::PostScriptFailed,
                    format!("postscript {}: {}", path.display(), describe(&run)),
                );
            }
            if let Some(left) = run.leftovers {
                self.warn(format!(
                    "postscript left process group {} running; ending it",
                    left.id()
                ));
                left.terminate(DEFAULT_KILL_GRACE).await;
            }
        }
        if let Some(holders) = prep.lock_holders.take() {
            let id = holders.id();
            if holders.terminate(DEFAULT_KILL_GRACE).await {
                self.warn(format!(
                    "lock holders (process group {id}) ignored SIGTERM and were killed"
                ));
            }
        }
        match creation {
            Creation::Nothing => Step::Done,
            c @ (Creation::TimedOut | Creation::Accepted { .. }) => Step::AwaitGroup(prep, c),
        }
    }

    // ---- AwaitGroup: until the snapshots are usable, not until they are uploaded.

    async fn await_group(&mut self, prep: Prepared, creation: Creation) -> Step {
        let (id, accepted_at) = match creation {
            Creation::Nothing => return Step::Done,
            // Seen usable (or failed) while frozen: nothing more to wait for.
            Creation::Accepted { seen: Some(g), .. } => {
                let failed = g.status == "failed";
                if !failed {
                    self.check_members(prep.wanted(), &g);
                }
                self.last_seen = Some((*g).clone());
                return if failed { Step::Done } else { Step::Tag(*g) };
            }
            Creation::Accepted { id, at, seen: None } => (id, at),
            // The call timed out: a group with our name may appear anyway, late.
            Creation::TimedOut => {
                let wait = self.env.await_timeout.min(LATE_GROUP_WAIT);
                match self.find_late_group(Instant::now() + wait).await {
                    Some(id) => (id, Instant::now()),
                    None => return Step::Done,
                }
            }
        };
        let ecs = &self.env.ecs;
        let until = Instant::now() + self.env.await_timeout;
        let filter = SnapshotGroupFilter {
            ids: vec![id.clone()],
            ..SnapshotGroupFilter::default()
        };
        let listed_by = accepted_at + LISTING_GRACE;
        let mut pause = FIRST_POLL.min(self.env.poll_interval);
        loop {
            match ecs
                .describe_snapshot_groups(&filter, Self::call_deadline().min(until))
                .await
            {
                Ok(groups) => match groups.into_iter().find(|g| g.snapshot_group_id == id) {
                    Some(g) => match usability(&g, prep.wanted()) {
                        Usability::Usable => {
                            self.check_members(prep.wanted(), &g);
                            self.last_seen = Some(g.clone());
                            return Step::Tag(g);
                        }
                        Usability::Failed => {
                            self.fail(
                                Outcome::GroupBadState,
                                format!("snapshot group {id} failed"),
                            );
                            self.last_seen = Some(g);
                            return Step::Done;
                        }
                        Usability::NotYet => {}
                    },
                    None if Instant::now() >= listed_by => {
                        self.fail(
                            Outcome::GroupBadState,
                            format!(
                                "snapshot group {id} is still not listed by DescribeSnapshotGroups {}s after ECS accepted it",
                                LISTING_GRACE.as_secs()
                            ),
                        );
                        return Step::Done;
                    }
                    // Still being created: a new group can be missing from the list for a while.
                    None => {}
                },
                // An answer that will not change by asking again (refused, unreadable) ends the wait.
                Err(e) if Instant::now() >= until || !e.is_retryable() => {
                    let outcome = ecs_outcome(&e, Outcome::GroupBadState);
                    self.fail(outcome, format!("waiting for group {id}: {e}"));
                    return Step::Done;
                }
                Err(e) => warn!(job = %self.job.name, "waiting for group {id}: {e}; retrying"),
            }
            if Instant::now() + pause > until {
                self.fail(
                    Outcome::GroupSnapshotBadState,
                    format!(
                        "the snapshots of group {id} were not usable within {}s",
                        self.env.await_timeout.as_secs()
                    ),
                );
                return Step::Done;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(self.env.poll_interval);
        }
    }

    /// After CreateSnapshotGroup timed out, ECS may still process the request
    /// and the group appear later: it is looked for by name until `until`. A
    /// group found is crash-consistent at best (its point in time may be after
    /// the thaw) and is tagged so, as the README promises.
    async fn find_late_group(&mut self, until: Instant) -> Option<String> {
        let filter = SnapshotGroupFilter {
            instance_id: Some(self.env.instance_id.clone()),
            name: self.report.group_name.clone(),
            ..SnapshotGroupFilter::default()
        };
        let mut pause = FIRST_POLL.min(self.env.poll_interval);
        loop {
            match self
                .env
                .ecs
                .describe_snapshot_groups(&filter, Self::call_deadline().min(until))
                .await
            {
                Ok(groups) => {
                    if let Some(g) = groups.into_iter().next() {
                        let id = g.snapshot_group_id.clone();
                        self.warn(format!(
                            "group {id} appeared after CreateSnapshotGroup timed out; tagged crash-consistent"
                        ));
                        self.consistency = Consistency::Crash;
                        self.report.group_id = Some(id.clone());
                        return Some(id);
                    }
                }
                Err(e) if !e.is_retryable() => {
                    self.warn(format!(
                        "looking for a group named {} after the timeout: {e}",
                        self.report.group_name.as_deref().unwrap_or("")
                    ));
                    return None;
                }
                Err(e) => warn!(job = %self.job.name, "looking for a late group: {e}; retrying"),
            }
            if Instant::now() + pause > until {
                info!(
                    job = %self.job.name,
                    "no group named {} appeared within {}s of the timeout",
                    self.report.group_name.as_deref().unwrap_or(""),
                    self.env.await_timeout.min(LATE_GROUP_WAIT).as_secs()
                );
                return None;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(self.env.poll_interval);
        }
    }

    // ---- Tag the snapshots with the consistency achieved.

    async fn tag(&mut self, group: SnapshotGroup) -> Step {
        let ids: Vec<String> = group
            .snapshots
            .iter()
            .map(|s| s.snapshot_id.clone())
            .collect();
        if ids.is_empty() {
            self.fail(
                Outcome::GroupSnapshotBadState,
                format!("group {} lists no snapshots", group.snapshot_group_id),
            );
            return Step::Done;
        }
        let mut tags = vec![
            self.job_tag(),
            Tag::new(TAG_CONSISTENCY, self.consistency.as_str()),
        ];
        if let Some((k, v)) = vendor_tag(self.consistency) {
            tags.push(Tag::new(k, v));
        }
        let mut failed = None;
        for chunk in ids.chunks(crate::cloud::ecs::MAX_TAG_RESOURCES) {
            if let Err(e) = self
                .env
                .ecs
                .tag_resources("snapshot", chunk, &tags, Self::call_deadline())
                .await
            {
                failed = Some(e);
                break;
            }
        }
        if let Some(e) = failed {
            let outcome = ecs_outcome(&e, Outcome::TagFailed);
            self.fail(outcome, format!("TagResources: {e}"));
        }
        Step::Done
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

/// Whether a listed group can be used yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Usability {
    /// One snapshot per wanted disk, each `Available`, or the group `accomplished`.
    Usable,
    /// Not yet: members missing or still unavailable.
    NotYet,
    /// The group failed.
    Failed,
}

/// Whether `g`, made of the disks `wanted`, can be used to create or roll back
/// disks (ESSD snapshots are, within seconds, long before the upload ends).
fn usability(g: &SnapshotGroup, wanted: &[DiskId]) -> Usability {
    match g.status.as_str() {
        "failed" => return Usability::Failed,
        "accomplished" => return Usability::Usable,
        _ => {}
    }
    let each_listed = wanted.iter().all(|d| {
        g.snapshots
            .iter()
            .any(|s| s.source_disk_id == d.as_str() && s.available)
    });
    if !wanted.is_empty() && each_listed && g.snapshots.len() == wanted.len() {
        Usability::Usable
    } else {
        Usability::NotYet
    }
}

/// Where `g`'s upload stands: its status and its slowest snapshot's progress.
pub fn upload_of(g: &SnapshotGroup) -> crate::state::Upload {
    let progress = g
        .snapshots
        .iter()
        .filter_map(|s| s.progress.trim_end_matches('%').trim().parse::<u32>().ok())
        .min()
        .map(|p| format!("{p}%"))
        .unwrap_or_default();
    crate::state::Upload {
        status: g.status.clone(),
        progress,
        checked_at: chrono::Utc::now(),
    }
}

/// Epoch seconds `d` from now (what scripts see as the freeze deadline).
fn epoch_after(d: Duration) -> u64 {
    (std::time::SystemTime::now() + d)
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |t| t.as_secs())
}

fn describe(run: &ScriptRun) -> String {
    use super::scripts::ScriptStatus::*;
    match &run.status {
        Exited(0) => "succeeded".into(),
        Exited(c) => format!("exited with {c}"),
        Signaled(s) => format!("killed by signal {s}"),
        TimedOut => format!(
            "timed out after {}s; its process group was killed",
            run.duration.as_secs()
        ),
        SpawnFailed(e) => format!("could not be started: {e}"),
        Cancelled => format!(
            "cancelled after {}s because the daemon is stopping; its process group was killed",
            run.duration.as_secs()
        ),
    }
}

/// Vendor codes for CreateSnapshotGroup failures: running out of the freeze
/// window is "timed out" (6) unless ECS said something more specific.
fn create_outcome(e: &EcsError) -> Outcome {
    let o = ecs_outcome(e, Outcome::GroupCreateFailed);
    if o == Outcome::GroupCreateFailed && matches!(e, EcsError::DeadlineExceeded { .. }) {
        Outcome::GroupCreateTimeout
    } else {
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: &str) -> EcsError {
        EcsError::Api {
            action: "CreateSnapshotGroup".into(),
            code: code.into(),
            message: String::new(),
            request_id: None,
            http_status: 403,
        }
    }

    #[test]
    fn create_failures_map_to_the_vendor_codes() {
        assert_eq!(
            create_outcome(&api("QuotaExceed.Snapshot")),
            Outcome::QuotaExceeded
        );
        assert_eq!(
            create_outcome(&api("IncorrectDiskStatus.CreatingSnapshot")),
            Outcome::PreviousSnapshotInProgress
        );
        assert_eq!(
            create_outcome(&api("Forbidden.RAM")),
            Outcome::NoDisksOrPermission
        );
        assert_eq!(
            create_outcome(&api("InternalError")),
            Outcome::GroupCreateFailed
        );
        let late = EcsError::DeadlineExceeded {
            action: "CreateSnapshotGroup".into(),
            attempts: 3,
            last: Some(Box::new(api("Throttling.User"))),
        };
        assert_eq!(create_outcome(&late), Outcome::GroupCreateTimeout);
        let quota_late = EcsError::DeadlineExceeded {
            action: "CreateSnapshotGroup".into(),
            attempts: 1,
            last: Some(Box::new(api("QuotaExceed.Snapshot"))),
        };
        assert_eq!(create_outcome(&quota_late), Outcome::QuotaExceeded);
    }

    fn group(status: &str, members: &[(&str, bool, &str)]) -> SnapshotGroup {
        SnapshotGroup {
            snapshot_group_id: "ssg-1".into(),
            status: status.into(),
            snapshots: members
                .iter()
                .map(
                    |(disk, available, progress)| crate::cloud::ecs::GroupSnapshot {
                        snapshot_id: format!("s-{disk}"),
                        source_disk_id: disk.to_string(),
                        available: *available,
                        progress: progress.to_string(),
                        ..Default::default()
                    },
                )
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn a_group_is_usable_once_every_disk_has_an_available_snapshot() {
        let wanted = [DiskId::parse("d-a").unwrap(), DiskId::parse("d-b").unwrap()];
        let u = |g: &SnapshotGroup| usability(g, &wanted);
        // Listed without members, as right after the answer.
        assert_eq!(u(&group("progressing", &[])), Usability::NotYet);
        // One of two disks ("Unexpected length of the snapshot group").
        assert_eq!(
            u(&group("progressing", &[("d-a", true, "0%")])),
            Usability::NotYet
        );
        // Both listed, one not yet Available.
        assert_eq!(
            u(&group(
                "progressing",
                &[("d-a", true, "3%"), ("d-b", false, "0%")]
            )),
            Usability::NotYet
        );
        // A snapshot of another disk does not count.
        assert_eq!(
            u(&group(
                "progressing",
                &[("d-a", true, "3%"), ("d-c", true, "0%")]
            )),
            Usability::NotYet
        );
        assert_eq!(
            u(&group(
                "progressing",
                &[("d-a", true, "3%"), ("d-b", true, "0%")]
            )),
            Usability::Usable
        );
        assert_eq!(u(&group("accomplished", &[])), Usability::Usable);
        assert_eq!(
            u(&group("failed", &[("d-a", true, "3%")])),
            Usability::Failed
        );
        // Nothing wanted (never for appsnap's own requests) is never usable by members alone.
        assert_eq!(
            usability(&group("progressing", &[]), &[]),
            Usability::NotYet
        );
    }

    #[test]
    fn upload_reports_the_slowest_snapshot() {
        let g = group("progressing", &[("d-a", true, "80%"), ("d-b", true, "35%")]);
        let u = upload_of(&g);
        assert_eq!(
            (u.status.as_str(), u.progress.as_str()),
            ("progressing", "35%")
        );
        assert!(u.is_pending());
        assert!(!upload_of(&group("accomplished", &[("d-a", true, "100%")])).is_pending());
    }

    #[test]
    fn margin_leaves_room_before_the_guard_deadline() {
        assert_eq!(api_margin(Duration::from_secs(30)), Duration::from_secs(2));
        assert_eq!(api_margin(Duration::from_secs(5)), Duration::from_secs(1));
        assert_eq!(
            api_margin(Duration::from_secs(1)),
            Duration::from_millis(300)
        );
    }
}
