//! CreateDisk (a pay-as-you-go data disk from a snapshot's image, or an
//! empty one) and DeleteDisk. Request fields and codes: the 7.11.8 /
//! Go SDK `CreateDiskRequest`/`DeleteDiskRequest` models and the API
//! reference's error tables (NOTES.md "Disk lifecycle").

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::Outcome;
use crate::error::ApiError;
use crate::params::Params;
use crate::state::{new_disk_id, CreatedDisk, DiskStatus, Sim};
use crate::util::log_time;
use crate::validate;

/// Categories CreateDisk accepts in the emulated zones.
const CATEGORIES: &[&str] = &[
    "cloud_efficiency",
    "cloud_ssd",
    "cloud_essd",
    "cloud_auto",
    "cloud_essd_entry",
    validate::REGIONAL_ESSD,
];

/// Documented categories that are refused: basic disks (the model's default,
/// no longer sold in most zones: pessimistic) and elastic ephemeral disks
/// (the model: "cannot be created from snapshots").
const REFUSED: &[&str] = &[
    "cloud",
    "elastic_ephemeral_disk_standard",
    "elastic_ephemeral_disk_premium",
];

/// Minimum size in GiB per category (and ESSD performance level), from the
/// model's `Size` doc.
fn min_size(category: &str, pl: &str) -> u64 {
    match (category, pl) {
        ("cloud_essd", "PL0") => 1,
        ("cloud_essd", "PL2") => 461,
        ("cloud_essd", "PL3") => 1261,
        ("cloud_essd", _) => 20,
        ("cloud_auto", _) => 1,
        ("cloud_efficiency" | "cloud_ssd", _) => 20,
        _ => 10, // cloud_essd_entry, cloud_regional_disk_auto
    }
}

fn max_size(category: &str) -> u64 {
    match category {
        "cloud_efficiency" | "cloud_ssd" | "cloud_essd_entry" => 32_768,
        _ => 65_536,
    }
}

fn bad_category() -> ApiError {
    ApiError::new(
        400,
        "InvalidDiskCategory.ValueNotSupported",
        "The specified parameter \"DiskCategory\" is not valid.",
    )
}

/// CreateDisk: validates, records the disk `Creating` and answers its id;
/// the image copy and `Available` follow in the background.
pub async fn create_disk(sim: Arc<Sim>, p: Params) -> Result<Outcome, ApiError> {
    let zone = p
        .get("ZoneId")
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    let instance = p.get("InstanceId").filter(|s| !s.is_empty());
    if zone.is_some() && instance.is_some() {
        return Err(ApiError::new(
            400,
            "InvalidParameter.Conflict",
            "ZoneId and InstanceId cannot be specified at the same time.",
        ));
    }
    if instance.is_some() {
        // A subscription disk for a subscription instance; the emulated
        // instance is pay-as-you-go.
        return Err(ApiError::new(
            403,
            "InvalidPayMethod",
            "The specified pay method is not valid.",
        ));
    }
    let category = p
        .get("DiskCategory")
        .filter(|s| !s.is_empty())
        .unwrap_or("cloud");
    if REFUSED.contains(&category) {
        return Err(if category == "cloud" {
            ApiError::new(
                403,
                "InvalidDataDiskCategory.NotSupported",
                "Specified disk category is not supported.",
            )
        } else {
            ApiError::new(
                403,
                "InvalidDiskCategory.NotSupported",
                "The specified disk category is not supported.",
            )
        });
    }
    if !CATEGORIES.contains(&category) {
        return Err(bad_category());
    }
    let zone = match zone {
        Some(z) => z,
        None if category == validate::REGIONAL_ESSD => sim.cfg.zone_id.clone(),
        None => return Err(ApiError::missing("ZoneId")),
    };
    let known_zone = zone == sim.cfg.zone_id
        || sim
            .cfg
            .disks
            .iter()
            .any(|d| d.zone_id.as_deref() == Some(zone.as_str()));
    if !known_zone {
        return Err(ApiError::new(
            404,
            "InvalidZoneId.NotFound",
            "The specified zone does not exist.",
        ));
    }
    let pl = match (
        category,
        p.get("PerformanceLevel").filter(|s| !s.is_empty()),
    ) {
        ("cloud_essd", None) => "PL1".to_string(),
        ("cloud_essd", Some(l)) if ["PL0", "PL1", "PL2", "PL3"].contains(&l) => l.to_string(),
        (_, None) => String::new(),
        _ => {
            return Err(ApiError::new(
                400,
                "InvalidPerformanceLevel.Malformed",
                "The specified parameter PerformanceLevel is not valid.",
            ))
        }
    };
    let size: Option<u64> = match p.get("Size").filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(s.parse().map_err(|_| {
            ApiError::new(
                400,
                "InvalidSize.ValueNotSupported",
                "The specified parameter Size is not valid.",
            )
        })?),
    };
    let snapshot_id = p
        .get("SnapshotId")
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    if snapshot_id.is_none() && size.is_none() {
        return Err(ApiError::new(
            400,
            "MissingParameter",
            "The input parameter either \"SnapshotId\" or \"Size\" should be specified.",
        ));
    }
    let name = p.get("DiskName").unwrap_or_default().to_string();
    if !name.is_empty() && validate::name(&name).is_err() {
        return Err(ApiError::new(
            400,
            "InvalidDiskName.Malformed",
            "The specified disk name is wrongly formed.",
        ));
    }
    let description = p.get("Description").unwrap_or_default().to_string();
    if !description.is_empty() && validate::description(&description).is_err() {
        return Err(ApiError::new(
            400,
            "InvalidDescription.Malformed",
            "The specified description is wrongly formed.",
        ));
    }
    let tags = validate::tags(&p.tags()?)?;
    let token = p
        .get("ClientToken")
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    if let Some(t) = &token {
        validate::client_token(t)?;
    }
    let encrypted = super::attach::bool_param(&p, "Encrypted")?.unwrap_or(false);
    let fingerprint = super::fingerprint(&p);
    let tta = sim.cfg.time_to_accomplish_secs;

    let (id, source, image, generation) = {
        let mut inner = sim.lock();
        if let Some(t) = &token {
            if let Some((fp, id)) = inner.disk_tokens.get(t) {
                if *fp != fingerprint {
                    return Err(ApiError::new(
                        403,
                        "IdempotentParameterMismatch",
                        "The request uses the same client token as a previous, but non-identical request.",
                    ));
                }
                return Ok(Outcome {
                    body: json!({"DiskId": id, "OrderId": ""}),
                    accept: None,
                });
            }
        }
        let (source, snap_size) = match &snapshot_id {
            None => (None, 0),
            Some(sid) => {
                let found = inner.groups.iter().find_map(|g| {
                    g.snapshots
                        .iter()
                        .find(|s| &s.id == sid && !g.copying)
                        .map(|s| (g, s))
                });
                let Some((g, s)) = found else {
                    return Err(ApiError::new(
                        404,
                        "InvalidSnapshotId.NotFound",
                        "The specified SnapshotId does not exist.",
                    ));
                };
                if !inner.members_available(g, tta) {
                    return Err(ApiError::new(
                        403,
                        "InvalidSnapshot.NotReady",
                        "The specified snapshot creation is not completed yet.",
                    ));
                }
                if !s.image.exists() {
                    return Err(ApiError::new(
                        403,
                        "OperationDenied",
                        "The specified snapshot is not allowed to create disk.",
                    ));
                }
                (Some(s.image.clone()), s.disk_size)
            }
        };
        let size_gib = size.unwrap_or(0).max(snap_size);
        if size_gib < min_size(category, &pl) || size_gib > max_size(category) {
            return Err(
                if category == "cloud_essd" && size_gib <= max_size(category) {
                    ApiError::new(
                        403,
                        "OperationDenied.PerformanceLevelNotMatch",
                        "The specified PerformanceLevel and disk size do not match.",
                    )
                } else {
                    ApiError::new(
                        400,
                        "InvalidDiskSize.NotSupported",
                        "The specified parameter size is not valid.",
                    )
                },
            );
        }
        let id = new_disk_id();
        let image = sim.cfg.disk_dir().join(format!("{id}.img"));
        let now = inner.now();
        inner.created.push(CreatedDisk {
            id: id.clone(),
            name,
            description,
            zone_id: zone,
            category: category.to_string(),
            performance_level: pl,
            size_gib,
            snapshot_id: snapshot_id.clone().unwrap_or_default(),
            resource_group_id: p.get("ResourceGroupId").unwrap_or_default().to_string(),
            encrypted,
            image: image.clone(),
            copy_method: None,
            tags,
            status: DiskStatus::Creating,
            instance_id: String::new(),
            delete_with_instance: false,
            created: now,
            attached_at: None,
            detached_at: None,
            device: None,
            link: None,
            hotplugged: false,
            deleted: false,
            last_error: None,
            generation: 0,
        });
        if let Some(t) = &token {
            inner
                .disk_tokens
                .insert(t.clone(), (fingerprint, id.clone()));
        }
        (id, source, image, 0)
    };
    let delay = Duration::from_millis(sim.cfg.restore.create_delay_ms);
    let task_sim = sim.clone();
    let task_id = id.clone();
    let size_bytes = {
        let inner = sim.lock();
        inner
            .created
            .iter()
            .find(|d| d.id == id)
            .map(|d| d.size_gib << 30)
            .unwrap_or(0)
    };
    tokio::spawn(async move {
        let started = tokio::time::Instant::now();
        let copy = tokio::task::spawn_blocking(move || make_image(source, &image, size_bytes))
            .await
            .unwrap_or_else(|e| Err(format!("copy task failed: {e}")));
        tokio::time::sleep_until(started + delay).await;
        finish_create(&task_sim, &task_id, generation, copy);
    });
    Ok(Outcome {
        body: json!({"DiskId": id, "OrderId": ""}),
        accept: None,
    })
}

/// The new disk's bytes: a copy of the snapshot image (reflink or sparse
/// copy), or an empty sparse file of the disk's size. A copy keeps the
/// snapshot image's length even when `Size` is larger (tests keep images
/// small; DescribeDisks still reports the larger `Size`).
fn make_image(
    source: Option<PathBuf>,
    image: &std::path::Path,
    size_bytes: u64,
) -> Result<Option<crate::diskcopy::CopyMethod>, String> {
    if let Some(dir) = image.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let method = match source {
        Some(src) => Some(crate::diskcopy::copy_disk(&src, image).map_err(|e| e.to_string())?),
        None => None,
    };
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(image)
        .map_err(|e| format!("{}: {e}", image.display()))?;
    let len = f.metadata().map_err(|e| e.to_string())?.len();
    if len < size_bytes && method.is_none() {
        f.set_len(size_bytes).map_err(|e| e.to_string())?;
    }
    Ok(method)
}

fn finish_create(
    sim: &Sim,
    id: &str,
    generation: u64,
    copy: Result<Option<crate::diskcopy::CopyMethod>, String>,
) {
    let mut entry = json!({
        "time": log_time(sim.now()),
        "service": "ecs-sim",
        "disk_id": id,
    });
    {
        let mut inner = sim.lock();
        let Some(d) = inner
            .created
            .iter_mut()
            .find(|d| d.id == id && d.generation == generation && !d.deleted)
        else {
            return;
        };
        match copy {
            Ok(m) => {
                d.copy_method = m;
                d.status = DiskStatus::Available;
                d.generation += 1;
                entry["event"] = json!("disk_available");
                entry["image"] = json!(d.image);
                entry["copy_method"] = json!(m);
            }
            Err(e) => {
                // Pessimistic: a creation that fails leaves no disk.
                tracing::error!("creating {id}: {e}");
                d.deleted = true;
                d.last_error = Some(e.clone());
                d.generation += 1;
                entry["event"] = json!("disk_create_failed");
                entry["error"] = json!(e);
            }
        }
    }
    sim.log.write(&entry);
}

/// DeleteDisk: only an `Available` disk; an unknown id is ignored, as the
/// reference says ("If the specified disk does not exist, the request is
/// ignored").
pub fn delete_disk(sim: &Sim, p: &Params) -> Result<Value, ApiError> {
    let id = p.required("DiskId")?.to_string();
    let image = {
        let mut inner = sim.lock();
        if let Some(c) = inner.disks.iter().find(|d| d.id == id) {
            return Err(if c.disk_type == crate::config::DiskType::System {
                ApiError::new(
                    403,
                    "DiskTypeViolation",
                    "The specified disk is a system disk and cannot support the operation.",
                )
            } else {
                ApiError::new(
                    403,
                    "IncorrectDiskStatus",
                    "The current disk status does not support this operation.",
                )
            });
        }
        let Some(d) = inner.created.iter_mut().find(|d| d.id == id && !d.deleted) else {
            return Ok(json!({}));
        };
        if d.status != DiskStatus::Available {
            return Err(ApiError::new(
                403,
                "IncorrectDiskStatus",
                "The current disk status does not support this operation.",
            ));
        }
        d.deleted = true;
        d.generation += 1;
        d.image.clone()
    };
    if let Err(e) = std::fs::remove_file(&image) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!("removing {}: {e}", image.display());
        }
    }
    Ok(json!({}))
}
