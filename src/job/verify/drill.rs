//! One drill, start to finish; whatever happens in the middle, it ends by
//! releasing what it made (host side first, then the disks) and forgetting
//! its record only once everything is gone.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{info, warn};

use super::cleanup;
use super::cloud_disks::{CloudSide, DiskStepError};
use super::lock::DrillLock;
use super::pick::pick;
use super::record::{DrillDisk, DrillRecord, DRILL_SCHEMA};
use super::report::{FsOutcome, Verdict, VerifyReport, TAG_VERIFIED_AT, TAG_VERIFY_RESULT};
use super::script::{run_verify_script, ScriptResult, VerifyContext};
use crate::cloud::ecs::{default_drill_categories, ClientToken, DrillCategory, EcsClient, Tag};
use crate::host::drill::{self as host_drill, Assembly, DrillLayout, FsCheck, RestoredDisk, Tools};
use crate::owner::OwnerId;
use crate::policy::{DiskId, Job};

/// What a drill needs from outside the job.
pub struct VerifyEnv {
    /// The ECS client.
    pub ecs: Arc<EcsClient>,
    /// This instance.
    pub instance_id: String,
    /// This installation (`None`: no drill, since its disks could not be
    /// proven ours for cleanup).
    pub owner: Option<OwnerId>,
    /// Drill records live under it.
    pub state_dir: PathBuf,
    /// The lock and the copies' mounts live under it.
    pub run_dir: PathBuf,
    /// Where by-id links appear.
    pub by_id_dir: PathBuf,
    /// sysfs.
    pub sys_root: PathBuf,
    /// The external programs the host side runs.
    pub tools: Tools,
    /// How long disks may take to be created, attached, detached.
    pub cloud_timeout: Duration,
    /// How long an attached disk's block device may take to appear.
    pub device_timeout: Duration,
}

/// One drill asked for.
pub struct VerifyRequest<'a> {
    /// The job whose group is restored.
    pub job: &'a Job,
    /// A group to restore instead of the job's newest restore point.
    pub group: Option<String>,
    /// The drill's run ID.
    pub run_id: String,
    /// Becomes `true` when the drill should stop early (SIGTERM): it then
    /// cleans up and reports `not-run`.
    pub cancel: watch::Receiver<bool>,
}

/// Runs one drill and reports it; never leaves its lock, mounts or disks
/// behind unless cleanup itself failed (then `leftovers` says what, and the
/// record stays for the next cleanup).
pub async fn verify(env: &VerifyEnv, req: VerifyRequest<'_>) -> VerifyReport {
    let started = Utc::now();
    let t0 = Instant::now();
    let mut report = VerifyReport {
        run_id: req.run_id.clone(),
        job: req.job.name.as_str().to_string(),
        group_id: None,
        verdict: Verdict::NotRun,
        started,
        duration_ms: 0,
        disks: Vec::new(),
        filesystems: Vec::new(),
        script: None,
        script_output: None,
        errors: Vec::new(),
        leftovers: Vec::new(),
    };
    let finish = |mut r: VerifyReport| {
        r.duration_ms = t0.elapsed().as_millis() as u64;
        r
    };
    let Some(owner) = env.owner.clone() else {
        report.errors.push("no owner id could be read or created under the state directory: drill disks could not be proven this installation's, so none are made".into());
        return finish(report);
    };
    let _lock = match DrillLock::acquire(&env.run_dir) {
        Ok(l) => l,
        Err(e) => {
            report.errors.push(e.to_string());
            return finish(report);
        }
    };
    // A drill cut short earlier is finished first: its disks are billed.
    let earlier = cleanup::release_leftovers(env, &owner).await;
    if !earlier.released.is_empty() {
        info!(disks = ?earlier.released, "released disks an earlier drill left behind");
    }
    report.leftovers.extend(earlier.problems);

    let deadline = Instant::now() + env.cloud_timeout;
    let chosen = match pick(
        &env.ecs,
        req.job,
        &env.instance_id,
        &owner,
        req.group.as_deref(),
        deadline,
    )
    .await
    {
        Ok(c) => c,
        Err(e) => {
            report.errors.push(e.to_string());
            return finish(report);
        }
    };
    let group_id = chosen.group.snapshot_group_id.clone();
    report.group_id = Some(group_id.clone());
    let host_root = env.run_dir.join("verify").join(&req.run_id);
    let mut rec = DrillRecord {
        schema: DRILL_SCHEMA,
        run_id: req.run_id.clone(),
        job: report.job.clone(),
        group_id: group_id.clone(),
        instance_id: env.instance_id.clone(),
        disks: chosen
            .group
            .snapshots
            .iter()
            .map(|s| DrillDisk {
                snapshot_id: s.snapshot_id.clone(),
                source_disk_id: s.source_disk_id.clone(),
                client_token: ClientToken::generate().as_str().to_string(),
                disk_id: None,
            })
            .collect(),
        host_record: DrillRecord::dir(&env.state_dir).join(format!(
            "{}{}",
            req.run_id,
            super::record::HOST_SUFFIX
        )),
        host_root: host_root.clone(),
        udev_rule: None,
    };
    if let Err(e) = rec.save(&env.state_dir) {
        report.errors.push(format!("{e}; nothing was created"));
        return finish(report);
    }
    info!(job = %report.job, run_id = %report.run_id, group = %group_id, "restore drill: restoring {} snapshot(s)", rec.disks.len());

    let cloud = CloudSide {
        ecs: &env.ecs,
        instance_id: &env.instance_id,
        owner: &owner,
        state_dir: &env.state_dir,
        by_id_dir: &env.by_id_dir,
        sys_root: &env.sys_root,
        categories: &categories(req.job),
    };
    let mut cancel = req.cancel.clone();
    let drove = drive(env, &req, &cloud, &mut rec, &mut report, &mut cancel).await;
    if let Err(e) = drove {
        report.errors.push(e);
    }

    // Release: host side (already torn down on the normal path; this undoes
    // what a failure in the middle left), then the disks.
    let host_left = cleanup::host_side(&env.tools, &rec).await;
    let still_held = cleanup::held_devices(&rec, &env.sys_root, &env.by_id_dir);
    report.leftovers.extend(host_left);
    let ids: Vec<String> = rec
        .disks
        .iter()
        .filter_map(|d| d.disk_id.clone())
        .filter(|id| !still_held.iter().any(|(held, _)| held == id))
        .collect();
    for (id, holders) in &still_held {
        report.leftovers.push(format!(
            "disk {id} not detached: the kernel still maps {holders} on it"
        ));
    }
    report.disks = ids.clone();
    let release_deadline = Instant::now() + env.cloud_timeout;
    let mut problems = cloud.release(&ids, release_deadline).await.problems;
    // A disk whose CreateDisk answer was lost is found by its run tag.
    match cloud
        .tagged_leftovers(Some(&rec.run_id), release_deadline)
        .await
    {
        Ok(more) => {
            // Never a disk held back above because the kernel maps onto it.
            let more: Vec<String> = more
                .into_iter()
                .filter(|m| !ids.contains(m) && !still_held.iter().any(|(h, _)| h == m))
                .collect();
            if !more.is_empty() {
                problems.extend(cloud.release(&more, release_deadline).await.problems);
            }
        }
        Err(e) => problems.push(format!("listing the drill's disks by tag: {e}")),
    }
    if problems.is_empty() && report.leftovers.is_empty() {
        if let Err(e) = cleanup::unguard_udev(&env.tools, &rec).await {
            problems.push(e);
        }
    }
    if problems.is_empty() && report.leftovers.is_empty() {
        if let Err(e) = rec.remove(&env.state_dir) {
            warn!("{e}");
        }
    }
    report.leftovers.extend(problems);

    if report.verdict != Verdict::NotRun {
        tag_result(&env.ecs, &chosen.group, report.verdict, &mut report).await;
    }
    let report = finish(report);
    if let Err(e) = super::last::save(&env.state_dir, &report, Utc::now()) {
        warn!("the drill's result is not kept for status and metrics: {e}");
    }
    report
}

/// Create, attach, assemble, check, run the script, tear the host side down.
/// Sets the verdict; an `Err` is why the drill could not judge the group.
async fn drive(
    env: &VerifyEnv,
    req: &VerifyRequest<'_>,
    cloud: &CloudSide<'_>,
    rec: &mut DrillRecord,
    report: &mut VerifyReport,
    cancel: &mut watch::Receiver<bool>,
) -> Result<(), String> {
    let cancelled = |c: &watch::Receiver<bool>| -> Result<(), String> {
        if *c.borrow() {
            Err("cancelled (appsnap is stopping): everything made so far is released".into())
        } else {
            Ok(())
        }
    };
    let deadline = Instant::now() + env.cloud_timeout;
    let sources: Vec<DiskId> = rec
        .disks
        .iter()
        .filter_map(|d| DiskId::parse(&d.source_disk_id).ok())
        .collect();
    let live = env
        .ecs
        .describe_disks(&env.instance_id, &sources, deadline)
        .await
        .map_err(|e| format!("DescribeDisks of the group's source disks: {e}"))?;
    let zone = live
        .iter()
        .map(|d| d.zone_id.clone())
        .find(|z| !z.is_empty())
        .ok_or("none of the group's source disks is attached to this instance any more: cannot tell the zone to restore into")?;
    cancelled(cancel)?;
    cloud
        .create_all(rec, &zone, deadline)
        .await
        .map_err(|e| e.to_string())?;
    let ids: Vec<String> = rec.disks.iter().filter_map(|d| d.disk_id.clone()).collect();
    report.disks = ids.clone();
    let available = cloud
        .wait_status(&ids, "Available", deadline)
        .await
        .map_err(|e| e.to_string())?;
    cancelled(cancel)?;
    guard_udev(env, rec, &available)?;
    cloud
        .attach_all(&ids, deadline)
        .await
        .map_err(|e| e.to_string())?;
    let listed = cloud
        .wait_status(&ids, "In_use", deadline)
        .await
        .map_err(|e| e.to_string())?;
    let device_deadline = deadline.min(Instant::now() + env.device_timeout);
    let restored = cloud
        .devices(rec, &listed, device_deadline)
        .await
        .map_err(|e: DiskStepError| e.to_string())?;
    cancelled(cancel)?;

    let timeout = req.job.verify.timeout;
    let layout = DrillLayout {
        root: rec.host_root.clone(),
        record: rec.host_record.clone(),
    };
    let assembly = assemble(env.tools.clone(), restored, layout, timeout).await?;
    report.filesystems = outcomes(&assembly, &env.tools.blkid, &rec.host_root).await;
    let all_ok = !report.filesystems.is_empty() && report.filesystems.iter().all(|f| f.ok);
    if report.filesystems.is_empty() {
        report.errors.push("the restored disks hold no file system appsnap can check (ext4, xfs, btrfs, directly, in partitions or in LVM)".into());
    }
    for f in report.filesystems.iter().filter(|f| !f.ok) {
        report.errors.push(format!(
            "{} file system {} on {} (copy of {}): {}",
            f.fstype, f.uuid, f.disk_id, f.source_disk_id, f.check
        ));
    }
    let mut script_ok = true;
    if let (true, Some(path)) = (all_ok, req.job.verify.script.as_deref()) {
        let ctx = VerifyContext {
            job: report.job.clone(),
            group_id: rec.group_id.clone(),
            disk_ids: ids.clone(),
            mounts: report
                .filesystems
                .iter()
                .filter_map(|f| {
                    f.mount_point.as_ref().map(|m| {
                        (
                            PathBuf::from(m),
                            f.live_mount_point.as_ref().map(PathBuf::from),
                        )
                    })
                })
                .collect(),
            root: rec.host_root.clone(),
            pass_env: req.job.script_env.clone(),
        };
        let mut c = cancel.clone();
        let stop = async move {
            let _ = c.wait_for(|v| *v).await;
        };
        match run_verify_script(path, &ctx, timeout, stop).await {
            ScriptResult::Refused(why) => {
                script_ok = false;
                report.script = Some(why.clone());
                report.errors.push(why);
            }
            ScriptResult::Ran(run) => {
                // Like the hooks' output: a script may print credentials.
                let output = env.ecs.credentials().scrub(&run.output);
                script_ok = run.status.succeeded();
                let how = format!("{:?} after {} ms", run.status, run.duration.as_millis());
                info!(job = %report.job, run_id = %report.run_id, "verify_script {}: {how}; output: {}", path.display(), output.trim_end());
                if !script_ok {
                    report.errors.push(format!(
                        "verify_script {} failed: {how}; output: {}",
                        path.display(),
                        tail(&output)
                    ));
                }
                report.script = Some(how);
                report.script_output = Some(tail(&output));
            }
        }
    }
    match teardown(assembly).await {
        Ok(()) => {}
        Err(e) => report.leftovers.push(e),
    }
    // A script ended by the stop is no verdict on the group.
    cancelled(cancel)?;
    report.verdict = if all_ok && script_ok {
        Verdict::Passed
    } else {
        Verdict::Failed
    };
    Ok(())
}

/// Writes (recorded first) the udev rule that keeps LVM event activation
/// off the disks about to be attached.
fn guard_udev(
    env: &VerifyEnv,
    rec: &mut DrillRecord,
    listed: &[crate::cloud::ecs::Disk],
) -> Result<(), String> {
    let serials: Vec<String> = rec
        .disks
        .iter()
        .filter_map(|d| d.disk_id.as_deref())
        .map(|id| super::cloud_disks::serial_of(listed, id))
        .collect();
    let path = host_drill::udev::rule_path(
        std::path::Path::new(host_drill::udev::RUNTIME_RULES_DIR),
        &rec.run_id,
    );
    rec.udev_rule = Some(path.clone());
    rec.save(&env.state_dir).map_err(|e| e.to_string())?;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    host_drill::udev::guard(&env.tools, &path, &serials, deadline)
        .map(|_| ())
        .map_err(|e| format!("keeping udev's LVM activation off the restored disks: {e}"))
}

async fn assemble(
    tools: Tools,
    restored: Vec<RestoredDisk>,
    layout: DrillLayout,
    timeout: Duration,
) -> Result<Assembly, String> {
    let deadline = std::time::Instant::now() + timeout;
    tokio::task::spawn_blocking(move || host_drill::assemble(&restored, &layout, &tools, deadline))
        .await
        .map_err(|e| format!("assembling the copies: {e}"))?
        .map_err(|e| format!("assembling the copies: {e}"))
}

async fn teardown(a: Assembly) -> Result<(), String> {
    tokio::task::spawn_blocking(move || a.teardown())
        .await
        .map_err(|e| format!("tearing down the copies: {e}"))?
        .map_err(|e| format!("tearing down the copies: {e}"))
}

/// Each file system of the copy, with where its live original is mounted.
async fn outcomes(
    a: &Assembly,
    blkid: &std::path::Path,
    copies: &std::path::Path,
) -> Vec<FsOutcome> {
    let live = live_mounts_by_uuid(blkid, copies).await;
    a.filesystems()
        .iter()
        .map(|f| {
            let (ok, check) = match &f.check {
                FsCheck::Passed => (true, "passed".to_string()),
                FsCheck::Failed {
                    tool,
                    exit,
                    output_tail,
                } => (
                    false,
                    format!("{tool} failed (exit {exit}): {}", tail(output_tail)),
                ),
                FsCheck::NotRun { why } => (false, format!("not checked: {why}")),
            };
            FsOutcome {
                disk_id: f.disk_id.clone(),
                source_disk_id: f.source_disk_id.clone(),
                device: f.device.display().to_string(),
                fstype: f.fstype.to_string(),
                uuid: f.uuid.clone(),
                mount_point: f.mount_point.as_ref().map(|m| m.display().to_string()),
                live_mount_point: live.get(&f.uuid).map(|m| m.display().to_string()),
                check,
                ok,
            }
        })
        .collect()
}

/// The result on every snapshot of the group (ECS cannot tag a group after
/// its creation; the consistency tags live there too).
async fn tag_result(
    ecs: &EcsClient,
    group: &crate::cloud::ecs::SnapshotGroup,
    verdict: Verdict,
    report: &mut VerifyReport,
) {
    let ids: Vec<String> = group
        .snapshots
        .iter()
        .map(|s| s.snapshot_id.clone())
        .collect();
    let value = if verdict == Verdict::Passed {
        "ok"
    } else {
        "failed"
    };
    let tags = vec![
        Tag::new(TAG_VERIFY_RESULT, value),
        Tag::new(
            TAG_VERIFIED_AT,
            Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        ),
    ];
    let deadline = Instant::now() + Duration::from_secs(60);
    // TagResources takes at most 50 resources per call.
    for chunk in ids.chunks(50) {
        if let Err(e) = ecs.tag_resources("snapshot", chunk, &tags, deadline).await {
            report.leftovers.push(format!(
                "tagging the group's snapshots with the result: {e}"
            ));
            break;
        }
    }
}

fn tail(s: &str) -> String {
    let s = s.trim_end();
    let start = s.len().saturating_sub(2000);
    let start = (start..=s.len())
        .find(|i| s.is_char_boundary(*i))
        .unwrap_or(s.len());
    s[start..].to_string()
}

/// How long an attached disk's device may take to show up by default: a
/// real attach shows it within seconds of `In_use`.
pub const DEFAULT_DEVICE_TIMEOUT: Duration = Duration::from_secs(120);

/// How long drill disks may take to be created, attached and detached by default.
pub const DEFAULT_CLOUD_TIMEOUT: Duration = Duration::from_secs(15 * 60);

impl VerifyEnv {
    /// The environment the policy describes. The owner ID is only read,
    /// never created: without one no group is this installation's.
    pub fn from_policy(
        policy: &crate::policy::Policy,
        ecs: Arc<EcsClient>,
        instance_id: String,
    ) -> VerifyEnv {
        let owner = match crate::owner::load(&policy.host.state_dir) {
            Ok(o) => o,
            Err(e) => {
                warn!("{e}");
                None
            }
        };
        VerifyEnv {
            ecs,
            instance_id,
            owner,
            state_dir: policy.host.state_dir.clone(),
            run_dir: policy.host.run_dir.clone(),
            by_id_dir: policy.host.by_id_dir.clone(),
            sys_root: PathBuf::from("/sys"),
            tools: Tools::discover(),
            cloud_timeout: DEFAULT_CLOUD_TIMEOUT,
            device_timeout: DEFAULT_DEVICE_TIMEOUT,
        }
    }
}

/// The categories a drill disk may be made in: the job's override alone, or
/// the built-in order (cheapest first).
fn categories(job: &Job) -> Vec<DrillCategory> {
    match &job.verify.category {
        Some(c) => vec![DrillCategory::from(c)],
        None => default_drill_categories(),
    }
}

/// Where each file system (by UUID) is mounted on the live system: read
/// with `blkid -p` from the mounted devices, so a copy can be named by its
/// original's mount point (the copies themselves, under `copies`, share
/// the UUIDs and are skipped). Best effort: an unreadable device is skipped.
pub async fn live_mounts_by_uuid(
    blkid: &std::path::Path,
    copies: &std::path::Path,
) -> std::collections::HashMap<String, PathBuf> {
    let mut out = std::collections::HashMap::new();
    let Ok(mounts) = crate::host::mounts::read(std::path::Path::new("/proc/self/mountinfo")) else {
        return out;
    };
    for m in mounts {
        if !matches!(m.fs_type.as_str(), "ext4" | "xfs" | "btrfs")
            || !m.source.starts_with("/dev/")
            || m.mount_point.starts_with(copies)
        {
            continue;
        }
        if out.values().any(|p: &PathBuf| p == &m.mount_point) {
            continue;
        }
        let probe = tokio::process::Command::new(blkid)
            .args(["-p", "-s", "UUID", "-o", "value"])
            .arg(&m.source)
            .kill_on_drop(true)
            .output();
        if let Ok(Ok(o)) = tokio::time::timeout(Duration::from_secs(5), probe).await {
            let uuid = String::from_utf8_lossy(&o.stdout).trim().to_string();
            if o.status.success() && !uuid.is_empty() {
                out.entry(uuid).or_insert(m.mount_point.clone());
            }
        }
    }
    out
}
