//! Finishing drills that did not finish: at daemon start, before each drill
//! and by `appsnap verify --cleanup`. Every record's host side is undone
//! (mounts, the LVM clone), then its disks — and any disk carrying this
//! installation's drill tags on this instance, since a crash between
//! CreateDisk's answer and the record's update loses an ID — are detached
//! and deleted. Called with the drill lock held (never beside a live drill).

use std::time::Duration;

use tokio::time::Instant;
use tracing::{info, warn};

use super::cloud_disks::CloudSide;
use super::drill::VerifyEnv;
use super::lock::DrillLock;
use super::record::DrillRecord;
use crate::host::drill::{self as host_drill, Tools};
use crate::owner::OwnerId;

/// What a cleanup did.
#[derive(Debug, Default)]
pub struct CleanupReport {
    /// Drill records found.
    pub records: usize,
    /// Disks detached and deleted.
    pub released: Vec<String>,
    /// What is still there, each with why.
    pub problems: Vec<String>,
}

/// `appsnap verify --cleanup` and the daemon's start: takes the drill lock,
/// then [`release_leftovers`].
pub async fn cleanup(env: &VerifyEnv) -> CleanupReport {
    let Some(owner) = env.owner.clone() else {
        return CleanupReport {
            problems: vec!["no owner id: drill disks cannot be proven this installation's, so none are touched".into()],
            ..CleanupReport::default()
        };
    };
    let _lock = match DrillLock::acquire(&env.run_dir) {
        Ok(l) => l,
        Err(e) => {
            return CleanupReport {
                problems: vec![e.to_string()],
                ..CleanupReport::default()
            }
        }
    };
    release_leftovers(env, &owner).await
}

/// Undoes every drill record and releases every drill disk of this
/// installation on this instance. The caller holds the drill lock.
pub async fn release_leftovers(env: &VerifyEnv, owner: &OwnerId) -> CleanupReport {
    let mut out = CleanupReport::default();
    let records = DrillRecord::load_all(&env.state_dir);
    out.records = records.len();
    let deadline = Instant::now() + env.cloud_timeout;
    let cloud = CloudSide {
        ecs: &env.ecs,
        instance_id: &env.instance_id,
        owner,
        state_dir: &env.state_dir,
        by_id_dir: &env.by_id_dir,
        sys_root: &env.sys_root,
        categories: &[],
    };
    let mut ids: Vec<String> = Vec::new();
    let mut done: Vec<DrillRecord> = Vec::new();
    // Disks of records whose host side is still up: never released by tag.
    let mut kept: Vec<String> = Vec::new();
    for r in records {
        match r {
            Err(e) => out.problems.push(format!("{e} (left as it is)")),
            Ok(rec) if rec.instance_id != env.instance_id => out.problems.push(format!(
                "drill record {} is of instance {}, not this one ({}): left as it is",
                rec.run_id, rec.instance_id, env.instance_id
            )),
            Ok(rec) => {
                let host = host_side(&env.tools, &rec).await;
                if host.is_empty() {
                    ids.extend(rec.disks.iter().filter_map(|d| d.disk_id.clone()));
                    done.push(rec);
                } else {
                    // Never detach a disk that may still be mounted.
                    out.problems.extend(host);
                    kept.extend(rec.disks.iter().filter_map(|d| d.disk_id.clone()));
                }
            }
        }
    }
    match cloud.tagged_leftovers(None, deadline).await {
        Ok(tagged) => {
            ids.extend(tagged.into_iter().filter(|t| !kept.contains(t)));
        }
        Err(e) => out.problems.push(format!(
            "listing this installation's drill disks by tag: {e}"
        )),
    }
    ids.sort();
    ids.dedup();
    if !ids.is_empty() {
        let r = cloud.release(&ids, deadline).await;
        out.released = r.deleted;
        out.problems.extend(r.problems);
    }
    if out.problems.is_empty() {
        for rec in &done {
            if let Err(e) = unguard_udev(&env.tools, rec).await {
                out.problems.push(e);
            } else if let Err(e) = rec.remove(&env.state_dir) {
                out.problems.push(e.to_string());
            }
        }
    }
    if out.records > 0 || !out.released.is_empty() {
        info!(records = out.records, released = ?out.released, "restore drill cleanup");
    }
    for p in &out.problems {
        warn!("restore drill cleanup: {p}");
    }
    out
}

/// Undoes a record's host side (unmount, remove the LVM clone); returns what
/// could not be undone.
pub async fn host_side(tools: &Tools, rec: &DrillRecord) -> Vec<String> {
    if !rec.host_record.exists() {
        return Vec::new();
    }
    let tools = tools.clone();
    let path = rec.host_record.clone();
    match tokio::task::spawn_blocking(move || host_drill::cleanup_from_record(&path, &tools)).await
    {
        Ok(Ok(_)) => Vec::new(),
        Ok(Err(e)) => vec![format!(
            "undoing the copies' mounts of drill {}: {e}",
            rec.run_id
        )],
        Err(e) => vec![format!(
            "undoing the copies' mounts of drill {}: {e}",
            rec.run_id
        )],
    }
}

/// Removes the drill's udev rule (its disks are detached by now).
pub async fn unguard_udev(tools: &Tools, rec: &DrillRecord) -> Result<(), String> {
    let Some(path) = rec.udev_rule.clone() else {
        return Ok(());
    };
    let tools = tools.clone();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    match tokio::task::spawn_blocking(move || host_drill::udev::unguard(&tools, &path, deadline))
        .await
    {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("removing the drill's udev rule: {e}")),
        Err(e) => Err(format!("removing the drill's udev rule: {e}")),
    }
}

/// The drill's disks that the kernel still maps something onto (a
/// device-mapper holder: an LV activated on the copy), each with what: such
/// a disk is never detached (the mapping would point at a vanished disk).
pub fn held_devices(
    rec: &DrillRecord,
    sys_root: &std::path::Path,
    by_id_dir: &std::path::Path,
) -> Vec<(String, String)> {
    let Ok(graph) = crate::host::devices::BlockGraph::read(sys_root) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for d in &rec.disks {
        let Some(id) = d.disk_id.as_deref() else {
            continue;
        };
        let Some((name, _)) = graph.find_serial(by_id_dir, id.trim_start_matches("d-")) else {
            continue;
        };
        let mut holders: Vec<String> = Vec::new();
        let mut names = vec![name.clone()];
        names.extend(graph.descendants(&name));
        for n in names {
            if let Ok(rd) = std::fs::read_dir(sys_root.join("class/block").join(&n).join("holders"))
            {
                holders.extend(
                    rd.flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned()),
                );
            }
        }
        holders.sort();
        holders.dedup();
        if !holders.is_empty() {
            out.push((id.to_string(), holders.join(", ")));
        }
    }
    out
}
