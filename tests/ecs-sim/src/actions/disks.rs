//! DescribeDisks.

use serde_json::{json, Value};

use super::{tag_list, TagStyle};
use crate::error::ApiError;
use crate::params::{page, Params};
use crate::state::Sim;

/// DescribeDisks: filters InstanceId, DiskIds (JSON array), Category,
/// Status, DiskType, MultiAttach; NextToken/MaxResults paging (10..=500).
pub fn describe_disks(sim: &Sim, p: &Params) -> Result<Value, ApiError> {
    let ids = p.json_list("DiskIds", 100)?;
    let instance = p.get("InstanceId").filter(|s| !s.is_empty());
    let category = p.get("Category").filter(|s| !s.is_empty() && *s != "all");
    let status = p.get("Status").filter(|s| !s.is_empty() && *s != "All");
    let dtype = p.get("DiskType").filter(|s| !s.is_empty() && *s != "all");
    if let Some(t) = dtype {
        if t != "system" && t != "data" {
            return Err(ApiError::invalid(format!(
                "The specified DiskType {t} is invalid."
            )));
        }
    }
    let multi = p.get("MultiAttach").filter(|s| !s.is_empty());
    let max = p.max_results_clamped(10, 500, 10)?;
    let start = p.next_token()?;
    let inner = sim.lock();
    let mut out = Vec::new();
    for d in &inner.disks {
        let inst = sim.disk_instance(d);
        let st = d.status.clone().unwrap_or_else(|| {
            if inst.is_empty() {
                "Available"
            } else {
                "In_use"
            }
            .to_string()
        });
        if ids.as_ref().is_some_and(|ids| !ids.contains(&d.id))
            || instance.is_some_and(|i| i != inst)
            || category.is_some_and(|c| c != d.category)
            || status.is_some_and(|s| s != st)
            || dtype.is_some_and(|t| t != d.disk_type.as_str())
            || multi.is_some_and(|m| (m == "Enabled") != d.multi_attach)
        {
            continue;
        }
        let attachments: Vec<Value> = if inst.is_empty() {
            vec![]
        } else {
            vec![json!({"InstanceId": inst, "Device": "", "AttachedTime": "2025-01-01T00:00:00Z"})]
        };
        let tags: Vec<(String, String)> =
            d.tags.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        out.push(json!({
            "DiskId": d.id,
            "DiskName": "",
            "SerialNumber": d.serial(),
            "Category": d.category,
            "Type": d.disk_type.as_str(),
            "Size": d.size_gib,
            "Status": st,
            "InstanceId": if d.multi_attach { String::new() } else { inst.clone() },
            "Device": "",
            "MultiAttach": if d.multi_attach { "Enabled" } else { "Disabled" },
            "Attachments": {"Attachment": attachments},
            "ZoneId": d.zone_id.clone().unwrap_or_else(|| sim.cfg.zone_id.clone()),
            "RegionId": sim.cfg.region_id,
            "Encrypted": false,
            "Portable": d.disk_type.as_str() == "data",
            "PerformanceLevel": "PL1",
            "OperationLocks": {"OperationLock": []},
            "Tags": tag_list(&tags, TagStyle::TagKeyValue),
        }));
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
