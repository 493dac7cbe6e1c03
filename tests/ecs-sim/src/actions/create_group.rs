//! CreateSnapshotGroup: validation, disk selection, the reservation that
//! makes a busy disk visible, then the point in time (probe and copy):
//! before the answer, or `pit_delay_ms` after it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;

use super::Outcome;
use crate::config::DiskConfig;
use crate::diskcopy::{copy_disk, CopyMethod};
use crate::error::ApiError;
use crate::params::Params;
use crate::state::{
    new_group_id, new_snapshot_id, Group, Inner, ProbeResult, Sim, Snapshot, TokenUse,
};
use crate::util::log_time;
use crate::validate;

/// What happened when a group was accepted (logged and kept in the state).
#[derive(Debug, Clone, Serialize)]
pub struct AcceptInfo {
    /// The group.
    pub snapshot_group_id: String,
    /// True when the answer replays an earlier request's ClientToken.
    pub idempotent_replay: bool,
    /// Per disk: image path and how it was made (empty when the point in
    /// time comes after the answer: see the `point_in_time` log line).
    pub images: BTreeMap<String, (PathBuf, CopyMethod)>,
    /// When the point in time was taken (RFC 3339, ms); `None` when it is
    /// deferred past the answer or this is a replay.
    pub pit_at: Option<String>,
    /// How long after the answer the point in time is (or will be) taken;
    /// negative when the copy came first.
    pub pit_after_answer_ms: Option<i64>,
    /// Per disk: freeze probe results at the point in time.
    pub frozen_at_pit: BTreeMap<String, Vec<ProbeResult>>,
    /// Same as `frozen_at_pit`, under the name tests read before the point
    /// in time could be deferred.
    pub frozen_at_accept: BTreeMap<String, Vec<ProbeResult>>,
}

/// The outcome of one point-in-time copy.
struct PitResult {
    pit_at: DateTime<Utc>,
    images: BTreeMap<String, (PathBuf, CopyMethod)>,
    frozen: BTreeMap<String, Vec<ProbeResult>>,
}

fn not_found_disk(id: &str) -> ApiError {
    ApiError::new(
        404,
        "InvalidDiskId.NotFound",
        format!("The specified disk {id} does not exist."),
    )
}

/// CreateSnapshotGroup, §3.1 rules. The point in time (probes + copy) is
/// taken before the answer, or `pit_delay_ms` after it when that is set
/// (real ECS does not document which; tests need both). With
/// `copy_images = false` nothing is copied: benchmarks want the answer after
/// exactly the injected latency.
pub async fn create_snapshot_group(sim: Arc<Sim>, p: Params) -> Result<Outcome, ApiError> {
    let disk_ids = p.list("DiskId", 128)?;
    let excluded = p.list("ExcludeDiskId", 128)?;
    let instance = p
        .get("InstanceId")
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    if !disk_ids.is_empty() && !excluded.is_empty() {
        return Err(ApiError::invalid(
            "DiskId.N and ExcludeDiskId.N cannot be specified at the same time.",
        ));
    }
    let name = p.get("Name").unwrap_or_default().to_string();
    if !name.is_empty() {
        validate::name(&name)?;
    }
    let description = p.get("Description").unwrap_or_default().to_string();
    if !description.is_empty() {
        validate::description(&description)?;
    }
    let tags = validate::tags(&p.tags()?)?;
    let token = p
        .get("ClientToken")
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    if let Some(t) = &token {
        validate::client_token(t)?;
    }
    let fingerprint = super::fingerprint(&p);
    let tta = sim.cfg.time_to_accomplish_secs;

    // Decide and reserve under the lock; copy outside it.
    let (group_id, dir, chosen) = {
        let mut inner = sim.lock();
        if let Some(t) = &token {
            if let Some(u) = inner.client_tokens.get(t) {
                if u.fingerprint != fingerprint {
                    return Err(ApiError::new(
                        403,
                        "IdempotentParameterMismatch",
                        "The request uses the same client token as a previous, but non-identical request.",
                    ));
                }
                return match &u.group_id {
                    None => Err(ApiError::new(
                        403,
                        "IdempotentProcessing",
                        "The previous idempotent request(s) is still processing.",
                    )),
                    Some(id) => Ok(Outcome {
                        body: json!({"SnapshotGroupId": id}),
                        accept: Some(AcceptInfo {
                            snapshot_group_id: id.clone(),
                            idempotent_replay: true,
                            images: BTreeMap::new(),
                            pit_at: None,
                            pit_after_answer_ms: None,
                            frozen_at_pit: BTreeMap::new(),
                            frozen_at_accept: BTreeMap::new(),
                        }),
                    }),
                };
            }
        }
        let chosen = select_disks(&sim, &inner, instance.as_deref(), &disk_ids, &excluded)?;
        for d in &chosen {
            check_disk(&inner, d, tta, sim.cfg.snapshot_quota_per_disk)?;
        }
        let regional = chosen
            .iter()
            .filter(|d| d.category == validate::REGIONAL_ESSD)
            .count();
        if regional > 0 && regional < chosen.len() {
            return Err(ApiError::new(
                403,
                "InvalidDiskCategory.NotSupported",
                "Regional ESSD disks can only be grouped with other Regional ESSD disks.",
            ));
        }
        let group_id = new_group_id();
        let dir = sim.cfg.snapshot_dir.join(&group_id);
        let instances: std::collections::BTreeSet<String> =
            chosen.iter().map(|d| sim.disk_instance(d)).collect();
        let now = inner.now();
        let group = Group {
            id: group_id.clone(),
            name: name.clone(),
            description: description.clone(),
            instance_id: if instances.len() == 1 {
                instances.into_iter().next().unwrap_or_default()
            } else {
                String::new()
            },
            resource_group_id: p.get("ResourceGroupId").unwrap_or_default().to_string(),
            created: now,
            tags,
            snapshots: chosen
                .iter()
                .map(|d| Snapshot {
                    id: new_snapshot_id(),
                    disk_id: d.id.clone(),
                    disk_type: d.disk_type.as_str().to_string(),
                    disk_size: d.size_gib,
                    image: dir.join(format!("{}.img", d.id)),
                    tags: Vec::new(),
                })
                .collect(),
            dir: dir.clone(),
            copying: true,
            failed: false,
            fail_at_end: false,
            answered_at: None,
            pit_at: None,
            available_delay_ms: inner
                .faults
                .plan()
                .available_delay_ms
                .unwrap_or(sim.cfg.available_delay_ms),
            frozen_at_pit: BTreeMap::new(),
        };
        inner.groups.push(group);
        if let Some(t) = &token {
            inner.client_tokens.insert(
                t.clone(),
                TokenUse {
                    fingerprint: fingerprint.clone(),
                    group_id: None,
                },
            );
        }
        (group_id, dir, chosen)
    };

    let (accept_delay, pit_delay) = {
        let inner = sim.lock();
        let plan = inner.faults.plan();
        (
            plan.accept_delay_ms,
            plan.pit_delay_ms.unwrap_or(sim.cfg.pit_delay_ms),
        )
    };
    if accept_delay > 0 {
        tokio::time::sleep(Duration::from_millis(accept_delay)).await;
    }

    if pit_delay > 0 {
        // Answer now; the point in time comes `pit_delay` later.
        let answered = {
            let mut inner = sim.lock();
            let now = inner.now();
            let fail = inner.faults.take_group_failure();
            if let Some(g) = inner.groups.iter_mut().find(|g| g.id == group_id) {
                g.answered_at = Some(now);
                g.fail_at_end = fail;
            }
            if let Some(t) = &token {
                if let Some(u) = inner.client_tokens.get_mut(t) {
                    u.group_id = Some(group_id.clone());
                }
            }
            now
        };
        let task_sim = sim.clone();
        let task_id = group_id.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(pit_delay)).await;
            deferred_point_in_time(task_sim, task_id, dir, chosen, answered).await;
        });
        return Ok(Outcome {
            body: json!({"SnapshotGroupId": group_id}),
            accept: Some(AcceptInfo {
                snapshot_group_id: group_id,
                idempotent_replay: false,
                images: BTreeMap::new(),
                pit_at: None,
                pit_after_answer_ms: Some(pit_delay as i64),
                frozen_at_pit: BTreeMap::new(),
                frozen_at_accept: BTreeMap::new(),
            }),
        });
    }

    let result = point_in_time(&sim, dir.clone(), chosen).await;
    let mut inner = sim.lock();
    match result {
        Ok(r) => {
            let now = inner.now();
            let fail = inner.faults.take_group_failure();
            let mut after = None;
            if let Some(g) = inner.groups.iter_mut().find(|g| g.id == group_id) {
                g.copying = false;
                g.fail_at_end = fail;
                g.created = r.pit_at;
                g.pit_at = Some(r.pit_at);
                g.answered_at = Some(now);
                g.frozen_at_pit = r.frozen.clone();
                after = g.pit_after_answer_ms();
            }
            if let Some(t) = &token {
                if let Some(u) = inner.client_tokens.get_mut(t) {
                    u.group_id = Some(group_id.clone());
                }
            }
            Ok(Outcome {
                body: json!({"SnapshotGroupId": group_id}),
                accept: Some(AcceptInfo {
                    snapshot_group_id: group_id,
                    idempotent_replay: false,
                    images: r.images,
                    pit_at: Some(log_time(r.pit_at)),
                    pit_after_answer_ms: after,
                    frozen_at_pit: r.frozen.clone(),
                    frozen_at_accept: r.frozen,
                }),
            })
        }
        Err(msg) => {
            inner.groups.retain(|g| g.id != group_id);
            if let Some(t) = &token {
                inner.client_tokens.remove(t);
            }
            drop(inner);
            let _ = std::fs::remove_dir_all(&dir);
            tracing::error!("snapshot copy failed: {msg}");
            Err(ApiError::new(
                500,
                "InternalError",
                format!("The request processing has failed due to some unknown error: {msg}"),
            ))
        }
    }
}

/// Probes and copies every chosen disk: the point in time. The probes start
/// first and are read after the copy (all against one deadline), so what
/// they report is the state at the moment the copy began.
async fn point_in_time(
    sim: &Arc<Sim>,
    dir: PathBuf,
    chosen: Vec<DiskConfig>,
) -> Result<PitResult, String> {
    let probe_timeout = Duration::from_millis(sim.cfg.freeze_probe_timeout_ms);
    let copy_images = sim.cfg.copy_images;
    let clock = sim.clone();
    let work = tokio::task::spawn_blocking(move || {
        let pending: Vec<(String, Vec<crate::probe::Pending>)> = chosen
            .iter()
            .filter(|d| !d.probe_mounts.is_empty())
            .map(|d| {
                (
                    d.id.clone(),
                    d.probe_mounts
                        .iter()
                        .map(|m| crate::probe::start(m))
                        .collect(),
                )
            })
            .collect();
        let deadline = std::time::Instant::now() + probe_timeout;
        let pit_at = clock.now();
        let mut images = BTreeMap::new();
        let copied = (|| {
            if !copy_images {
                return Ok(());
            }
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            for d in &chosen {
                let dst = dir.join(format!("{}.img", d.id));
                let m = copy_disk(&d.backing, &dst).map_err(|e| e.to_string())?;
                images.insert(d.id.clone(), (dst, m));
            }
            Ok::<_, String>(())
        })();
        // Always collect the probes, so no probe thread outlives its record.
        let mut frozen = BTreeMap::new();
        for (id, ps) in pending {
            let r: Vec<ProbeResult> = ps.into_iter().map(|p| p.finish(deadline)).collect();
            frozen.insert(id, r);
        }
        copied.map(|()| PitResult {
            pit_at,
            images,
            frozen,
        })
    })
    .await;
    work.unwrap_or_else(|e| Err(format!("copy task failed: {e}")))
}

/// The point in time of a group that was answered `answered` ago: copies,
/// records the result (or marks the group failed) and logs one
/// `point_in_time` line.
async fn deferred_point_in_time(
    sim: Arc<Sim>,
    group_id: String,
    dir: PathBuf,
    chosen: Vec<DiskConfig>,
    answered: DateTime<Utc>,
) {
    if !sim.lock().groups.iter().any(|g| g.id == group_id) {
        return;
    }
    let result = point_in_time(&sim, dir, chosen).await;
    let mut entry = json!({
        "time": log_time(sim.now()),
        "service": "ecs-sim",
        "event": "point_in_time",
        "snapshot_group_id": group_id,
    });
    {
        let mut inner = sim.lock();
        let g = inner.groups.iter_mut().find(|g| g.id == group_id);
        match (result, g) {
            (Ok(r), Some(g)) => {
                g.copying = false;
                g.pit_at = Some(r.pit_at);
                g.frozen_at_pit = r.frozen.clone();
                entry["pit_at"] = json!(log_time(r.pit_at));
                entry["pit_after_answer_ms"] = json!((r.pit_at - answered).num_milliseconds());
                entry["images"] = json!(r.images);
                entry["frozen_at_pit"] = json!(r.frozen);
            }
            (Err(msg), Some(g)) => {
                tracing::error!("snapshot copy of {group_id} failed: {msg}");
                g.copying = false;
                g.failed = true;
                entry["error"] = json!(msg);
            }
            (_, None) => entry["error"] = json!("group vanished before its point in time"),
        }
    }
    sim.log.write(&entry);
}

fn select_disks(
    sim: &Sim,
    inner: &Inner,
    instance: Option<&str>,
    disk_ids: &[String],
    excluded: &[String],
) -> Result<Vec<DiskConfig>, ApiError> {
    if let Some(i) = instance {
        if sim.instance(i).is_none() {
            return Err(ApiError::new(
                404,
                "InvalidInstanceId.NotFound",
                format!("The specified InstanceId {i} does not exist."),
            ));
        }
    } else if disk_ids.is_empty() {
        return Err(ApiError::missing("InstanceId"));
    }
    let find = |id: &str| inner.disks.iter().find(|d| d.id == id).cloned();
    let mut chosen: Vec<DiskConfig> = Vec::new();
    if !disk_ids.is_empty() {
        for id in disk_ids {
            let d = find(id).ok_or_else(|| not_found_disk(id))?;
            if chosen.iter().any(|c| c.id == d.id) {
                return Err(ApiError::invalid(format!(
                    "The disk {id} is specified more than once."
                )));
            }
            if let Some(i) = instance {
                if sim.disk_instance(&d) != i {
                    return Err(ApiError::new(
                        403,
                        "InvalidDiskId.NotBelongToInstance",
                        format!("The specified disk {id} is not attached to instance {i}."),
                    ));
                }
            }
            chosen.push(d);
        }
        let zones: std::collections::BTreeSet<String> =
            chosen.iter().map(|d| sim.disk_zone(d)).collect();
        if zones.len() > 1 {
            return Err(ApiError::invalid(
                "The specified disks are not in the same zone.",
            ));
        }
    } else {
        let i = instance.unwrap_or_default();
        for id in excluded {
            let d = find(id).ok_or_else(|| not_found_disk(id))?;
            if sim.disk_instance(&d) != i {
                return Err(ApiError::new(
                    403,
                    "InvalidDiskId.NotBelongToInstance",
                    format!("The excluded disk {id} is not attached to instance {i}."),
                ));
            }
        }
        chosen = inner
            .disks
            .iter()
            .filter(|d| sim.disk_instance(d) == i && !excluded.contains(&d.id))
            .cloned()
            .collect();
    }
    if chosen.is_empty() {
        return Err(ApiError::invalid(
            "No disk is selected for the snapshot group.",
        ));
    }
    if chosen.len() > sim.cfg.max_disks_per_group {
        return Err(ApiError::invalid(format!(
            "A snapshot group can contain at most {} disks.",
            sim.cfg.max_disks_per_group
        )));
    }
    Ok(chosen)
}

fn check_disk(inner: &Inner, d: &DiskConfig, tta: f64, quota: usize) -> Result<(), ApiError> {
    if d.multi_attach {
        return Err(ApiError::new(
            403,
            "InvalidOperation.MultiAttachDisk",
            format!(
                "The disk {} has multi-attach enabled, which is not supported.",
                d.id
            ),
        ));
    }
    if !validate::SUPPORTED_CATEGORIES.contains(&d.category.as_str()) {
        return Err(ApiError::new(
            403,
            "InvalidDiskCategory.NotSupported",
            format!(
                "The specified disk category {} is not supported.",
                d.category
            ),
        ));
    }
    let status = d.status.as_deref().unwrap_or("In_use");
    if status != "In_use" && status != "Available" {
        return Err(ApiError::new(
            403,
            "IncorrectDiskStatus",
            format!(
                "The current status of the disk {} ({status}) does not support this action.",
                d.id
            ),
        ));
    }
    if inner.disk_busy(&d.id, tta) {
        return Err(ApiError::new(
            403,
            "IncorrectDiskStatus.CreatingSnapshot",
            "A previous snapshot creation is in process.",
        ));
    }
    if inner.snapshots_of(&d.id) >= quota {
        return Err(ApiError::new(
            403,
            "QuotaExceed.Snapshot",
            "The snapshot quota exceeds.",
        ));
    }
    Ok(())
}
