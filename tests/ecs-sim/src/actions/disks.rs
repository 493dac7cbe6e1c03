//! DescribeDisks: the configured disks and the ones CreateDisk made, with
//! one set of fields (the 7.11.8 `DescribeDisksResponseBody` model's).

use serde_json::{json, Value};

use super::{tag_list, tags_match, TagStyle};
use crate::config::DiskConfig;
use crate::error::ApiError;
use crate::params::{page, Params};
use crate::state::{CreatedDisk, Sim};
use crate::util::fmt_time;

/// Statuses the request's `Status` may name (model docstring).
const STATUSES: &[&str] = &[
    "In_use",
    "Available",
    "Attaching",
    "Detaching",
    "Creating",
    "ReIniting",
];

/// A fixed time for configured disks (they exist before the emulator).
const CONFIGURED_TIME: &str = "2025-01-01T00:00:00Z";

/// DescribeDisks: filters InstanceId, DiskIds (JSON array), ZoneId,
/// Category, Status, DiskType, MultiAttach, SnapshotId, DiskName,
/// Tag.N.Key/Value; NextToken/MaxResults paging (10..=500).
pub fn describe_disks(sim: &Sim, p: &Params) -> Result<Value, ApiError> {
    let ids = p.json_list("DiskIds", 100)?;
    let instance = p.get("InstanceId").filter(|s| !s.is_empty());
    let zone = p.get("ZoneId").filter(|s| !s.is_empty());
    let category = p.get("Category").filter(|s| !s.is_empty() && *s != "all");
    let status = p.get("Status").filter(|s| !s.is_empty() && *s != "All");
    if let Some(s) = status {
        if !STATUSES.contains(&s) {
            return Err(ApiError::invalid(format!(
                "The specified Status {s} is invalid."
            )));
        }
    }
    let dtype = p.get("DiskType").filter(|s| !s.is_empty() && *s != "all");
    if let Some(t) = dtype {
        if t != "system" && t != "data" {
            return Err(ApiError::invalid(format!(
                "The specified DiskType {t} is invalid."
            )));
        }
    }
    let multi = p.get("MultiAttach").filter(|s| !s.is_empty());
    let snapshot = p.get("SnapshotId").filter(|s| !s.is_empty());
    let name = p.get("DiskName").filter(|s| !s.is_empty());
    let tag_filters = p.tags()?;
    let max = p.max_results_clamped(10, 500, 10)?;
    let start = p.next_token()?;
    let inner = sim.lock();
    let rows = inner.disks.iter().map(|d| configured_row(sim, d)).chain(
        inner
            .created
            .iter()
            .filter(|d| !d.deleted)
            .map(|d| created_row(sim, d)),
    );
    let mut out = Vec::new();
    for (row, tags) in rows {
        let s = |k: &str| row[k].as_str().unwrap_or_default().to_string();
        if ids.as_ref().is_some_and(|ids| !ids.contains(&s("DiskId")))
            || instance.is_some_and(|i| i != attached_instance(&row))
            || zone.is_some_and(|z| z != s("ZoneId"))
            || category.is_some_and(|c| c != s("Category"))
            || status.is_some_and(|st| st != s("Status"))
            || dtype.is_some_and(|t| t != s("Type"))
            || multi.is_some_and(|m| m != s("MultiAttach"))
            || snapshot.is_some_and(|x| x != s("SourceSnapshotId"))
            || name.is_some_and(|n| n != s("DiskName"))
            || !tags_match(&tag_filters, &tags)
        {
            continue;
        }
        out.push(row);
    }
    let total = out.len();
    let (items, token) = page(&out, start, max);
    Ok(json!({
        "TotalCount": total,
        "NextToken": token,
        "PageNumber": 1,
        "PageSize": max,
        "Disks": {"Disk": items},
    }))
}

/// The instance a row is attached to (multi-attach rows carry it only in
/// `Attachments`).
fn attached_instance(row: &Value) -> String {
    row["Attachments"]["Attachment"]
        .as_array()
        .and_then(|a| a.first())
        .and_then(|a| a["InstanceId"].as_str())
        .unwrap_or_default()
        .to_string()
}

fn configured_row(sim: &Sim, d: &DiskConfig) -> (Value, Vec<(String, String)>) {
    let inst = sim.disk_instance(d);
    let st = d.status.clone().unwrap_or_else(|| {
        if inst.is_empty() {
            "Available"
        } else {
            "In_use"
        }
        .to_string()
    });
    let attachments: Vec<Value> = if inst.is_empty() {
        vec![]
    } else {
        vec![json!({"InstanceId": inst, "Device": "", "AttachedTime": CONFIGURED_TIME})]
    };
    let tags: Vec<(String, String)> = d.tags.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let row = json!({
        "DiskId": d.id,
        "DiskName": "",
        "Description": "",
        "SerialNumber": d.serial(),
        "Category": d.category,
        "Type": d.disk_type.as_str(),
        "Size": d.size_gib,
        "Status": st,
        "InstanceId": if d.multi_attach { String::new() } else { inst.clone() },
        "Device": "",
        "MultiAttach": if d.multi_attach { "Enabled" } else { "Disabled" },
        "Attachments": {"Attachment": attachments},
        "ZoneId": sim.disk_zone(d),
        "RegionId": sim.cfg.region_id,
        "Encrypted": false,
        "Portable": d.disk_type.as_str() == "data",
        "PerformanceLevel": "PL1",
        "OperationLocks": {"OperationLock": []},
        "Tags": tag_list(&tags, TagStyle::TagKeyValue),
        "SourceSnapshotId": "",
        "DeleteWithInstance": d.disk_type.as_str() == "system",
        "DiskChargeType": "PostPaid",
        "CreationTime": CONFIGURED_TIME,
        "AttachedTime": if inst.is_empty() { "" } else { CONFIGURED_TIME },
        "DetachedTime": "",
        "ResourceGroupId": "",
    });
    (row, tags)
}

fn created_row(sim: &Sim, d: &CreatedDisk) -> (Value, Vec<(String, String)>) {
    let attached = !d.instance_id.is_empty();
    let attachments: Vec<Value> = if attached {
        vec![json!({
            "InstanceId": d.instance_id,
            "Device": "",
            "AttachedTime": d.attached_at.map(fmt_time).unwrap_or_default(),
        })]
    } else {
        vec![]
    };
    let row = json!({
        "DiskId": d.id,
        "DiskName": d.name,
        "Description": d.description,
        "SerialNumber": d.serial(),
        "Category": d.category,
        "Type": "data",
        "Size": d.size_gib,
        "Status": d.status.as_str(),
        "InstanceId": d.instance_id,
        "Device": "",
        "MultiAttach": "Disabled",
        "Attachments": {"Attachment": attachments},
        "ZoneId": d.zone_id,
        "RegionId": sim.cfg.region_id,
        "Encrypted": d.encrypted,
        "Portable": true,
        "PerformanceLevel": d.performance_level,
        "OperationLocks": {"OperationLock": []},
        "Tags": tag_list(&d.tags, TagStyle::TagKeyValue),
        "SourceSnapshotId": d.snapshot_id,
        "DeleteWithInstance": d.delete_with_instance,
        "DiskChargeType": "PostPaid",
        "CreationTime": fmt_time(d.created),
        "AttachedTime": if attached { d.attached_at.map(fmt_time).unwrap_or_default() } else { String::new() },
        "DetachedTime": d.detached_at.map(fmt_time).unwrap_or_default(),
        "ResourceGroupId": d.resource_group_id,
    });
    (row, d.tags.clone())
}
