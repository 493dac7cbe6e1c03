//! DescribeSnapshotGroups and DeleteSnapshotGroup.

use serde_json::{json, Value};

use super::{tag_list, tags_match, TagStyle};
use crate::error::ApiError;
use crate::params::{page, Params};
use crate::state::{Group, Inner, Sim};
use crate::util::fmt_time;

/// One group as DescribeSnapshotGroups shows it.
pub fn group_json(inner: &Inner, g: &Group, tta: f64) -> Value {
    let progress = inner.progress(g, tta);
    let status = inner.group_status(g, tta);
    let available = inner.members_available(g, tta);
    // Before the point in time the group is listed without members (the
    // vendor plugin polls until one snapshot per disk shows up).
    let members: &[crate::state::Snapshot] = if g.copying { &[] } else { &g.snapshots };
    let snaps: Vec<Value> = members
        .iter()
        .map(|s| {
            json!({
                "SnapshotId": s.id,
                "SourceDiskId": s.disk_id,
                "SourceDiskType": s.disk_type,
                "Progress": format!("{progress}%"),
                "Available": available,
                "InstantAccess": false,
                "InstantAccessRetentionDays": 0,
                "Tags": tag_list(&s.tags, TagStyle::KeyValue),
            })
        })
        .collect();
    json!({
        "SnapshotGroupId": g.id,
        "Name": g.name,
        "Description": g.description,
        "InstanceId": g.instance_id,
        "CreationTime": fmt_time(g.created),
        "ResourceGroupId": g.resource_group_id,
        "Status": status,
        "ProgressStatus": "",
        "Tags": tag_list(&g.tags, TagStyle::KeyValue),
        "Snapshots": {"Snapshot": snaps},
    })
}

/// DescribeSnapshotGroups: filters ANDed; paging 1..=100, default 10.
pub fn describe_snapshot_groups(sim: &Sim, p: &Params) -> Result<Value, ApiError> {
    let ids = p.list("SnapshotGroupId", 10)?;
    let statuses = p.list("Status", 3)?;
    for s in &statuses {
        if !["progressing", "accomplished", "failed"].contains(&s.as_str()) {
            return Err(ApiError::new(
                403,
                "InvalidStatus.ValueNotSupported",
                format!("The specified Status {s} is not supported."),
            ));
        }
    }
    let instance = p.get("InstanceId").filter(|s| !s.is_empty());
    let name = p.get("Name").filter(|s| !s.is_empty());
    let rg = p.get("ResourceGroupId").filter(|s| !s.is_empty());
    let tag_filters = p.tags()?;
    let max = p.max_results(1, 100, 10)?;
    let start = p.next_token()?;
    let tta = sim.cfg.time_to_accomplish_secs;
    let inner = sim.lock();
    let all: Vec<Value> = inner
        .groups
        .iter()
        .filter(|g| {
            (ids.is_empty() || ids.contains(&g.id))
                && (statuses.is_empty() || statuses.iter().any(|s| s == inner.group_status(g, tta)))
                && instance.is_none_or(|i| i == g.instance_id)
                && name.is_none_or(|n| n == g.name)
                && rg.is_none_or(|r| r == g.resource_group_id)
                && tags_match(&tag_filters, &g.tags)
        })
        .map(|g| group_json(&inner, g, tta))
        .collect();
    let (items, token) = page(&all, start, max);
    Ok(json!({"NextToken": token, "SnapshotGroups": {"SnapshotGroup": items}}))
}

/// DeleteSnapshotGroup: removes the group, its snapshots and their images.
pub fn delete_snapshot_group(sim: &Sim, p: &Params) -> Result<Value, ApiError> {
    let id = p.required("SnapshotGroupId")?.to_string();
    let mut inner = sim.lock();
    let Some(pos) = inner.groups.iter().position(|g| g.id == id) else {
        return Err(ApiError::new(
            404,
            "InvalidSnapshotGroupId.NotFound",
            format!("The specified snapshot group {id} does not exist."),
        ));
    };
    // Pessimistic: a group whose point in time is still pending (or, with
    // an immediate point in time, whose copy is running) cannot be deleted
    // yet; the caller has to come back.
    if inner.groups[pos].copying {
        return Err(ApiError::new(
            409,
            "OperationConflict",
            "The snapshot group is still being created.",
        ));
    }
    let g = inner.groups.remove(pos);
    drop(inner);
    if let Err(e) = std::fs::remove_dir_all(&g.dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!("removing {}: {e}", g.dir.display());
        }
    }
    let progress: Vec<Value> = g
        .snapshots
        .iter()
        .map(|s| {
            json!({
                "OperationStatus": "Success",
                "ErrorCode": "",
                "ErrorMsg": "",
                "RelatedItemSet": {"RelatedItem": [{"Name": "SnapshotId", "Value": s.id}]},
            })
        })
        .collect();
    Ok(json!({"OperationProgressSet": {"OperationProgress": progress}}))
}
