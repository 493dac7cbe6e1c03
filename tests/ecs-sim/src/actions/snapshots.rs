//! DescribeSnapshots: the per-snapshot view, with `Status` (so a client can
//! see `progressing` before it freezes again).

use serde_json::{json, Value};

use super::{tag_list, tags_match, TagStyle};
use crate::error::ApiError;
use crate::params::{page, Params};
use crate::state::Sim;
use crate::util::fmt_time;

/// DescribeSnapshots: InstanceId, DiskId, SnapshotIds (JSON array), Status
/// (`progressing`/`accomplished`/`failed`/`all`), SnapshotType, Tag.N;
/// paging 1..=100, default 10.
pub fn describe_snapshots(sim: &Sim, p: &Params) -> Result<Value, ApiError> {
    let ids = p.json_list("SnapshotIds", 100)?;
    let instance = p.get("InstanceId").filter(|s| !s.is_empty());
    let disk = p.get("DiskId").filter(|s| !s.is_empty());
    let status = p.get("Status").filter(|s| !s.is_empty() && *s != "all");
    if let Some(s) = status {
        if !["progressing", "accomplished", "failed"].contains(&s) {
            return Err(ApiError::invalid(format!(
                "The specified Status {s} is invalid."
            )));
        }
    }
    let stype = p
        .get("SnapshotType")
        .filter(|s| !s.is_empty() && *s != "all");
    let tag_filters = p.tags()?;
    let max = p.max_results(1, 100, 10)?;
    let start = p.next_token()?;
    let tta = sim.cfg.time_to_accomplish_secs;
    let inner = sim.lock();
    let mut all = Vec::new();
    // A group's snapshots exist only from its point in time on.
    for g in inner.groups.iter().filter(|g| !g.copying) {
        let st = inner.group_status(g, tta);
        let available = inner.members_available(g, tta);
        let progress = inner.progress(g, tta);
        let remain = if st == "progressing" {
            (tta * f64::from(100 - progress) / 100.0).ceil() as u64
        } else {
            0
        };
        for s in &g.snapshots {
            let disk_instance = inner
                .disks
                .iter()
                .find(|d| d.id == s.disk_id)
                .map(|d| sim.disk_instance(d))
                .unwrap_or_default();
            if ids.as_ref().is_some_and(|ids| !ids.contains(&s.id))
                || instance.is_some_and(|i| i != disk_instance)
                || disk.is_some_and(|d| d != s.disk_id)
                || status.is_some_and(|x| x != st)
                || stype.is_some_and(|t| t != "user")
                || !tags_match(&tag_filters, &s.tags)
            {
                continue;
            }
            all.push(json!({
                "SnapshotId": s.id,
                "SnapshotName": "",
                "Description": format!("Created_from_{}", g.id),
                "SourceDiskId": s.disk_id,
                "SourceDiskType": s.disk_type,
                "SourceDiskSize": s.disk_size.to_string(),
                "Status": st,
                "Progress": format!("{progress}%"),
                "RemainTime": remain,
                "Available": available,
                "CreationTime": fmt_time(g.pit_at.unwrap_or(g.created)),
                "SnapshotType": "user",
                "Usage": "none",
                "InstantAccess": false,
                "Tags": tag_list(&s.tags, TagStyle::TagKeyValue),
            }));
        }
    }
    let total = all.len();
    let (items, token) = page(&all, start, max);
    Ok(json!({
        "TotalCount": total,
        "NextToken": token,
        "Snapshots": {"Snapshot": items},
    }))
}
