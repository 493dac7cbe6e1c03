//! The ECS actions the emulator implements, dispatched by name after
//! authentication. Each returns the success body (without `RequestId`) or
//! the vendor's error.

mod attach;
mod create_disk;
mod create_group;
mod disks;
mod groups;
mod snapshots;
mod tags;

use std::sync::Arc;

use serde_json::Value;

use crate::error::ApiError;
use crate::params::Params;
use crate::state::Sim;

pub use create_group::AcceptInfo;

/// The only API version ECS's snapshot actions have.
pub const API_VERSION: &str = "2014-05-26";

/// Actions whose request model has no `RegionId`.
const REGIONLESS: &[&str] = &["AttachDisk", "DetachDisk", "DeleteDisk"];

/// What an action produced, plus accept-time details for the log.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The answer body, without `RequestId`.
    pub body: Value,
    /// Set by CreateSnapshotGroup when it accepted a group.
    pub accept: Option<AcceptInfo>,
}

/// Runs `action` with `params`.
pub async fn dispatch(
    sim: Arc<Sim>,
    action: &str,
    api_version: &str,
    params: Params,
) -> Result<Outcome, ApiError> {
    let known = [
        "DescribeDisks",
        "CreateSnapshotGroup",
        "DescribeSnapshotGroups",
        "DescribeSnapshots",
        "TagResources",
        "DeleteSnapshotGroup",
        "CreateDisk",
        "AttachDisk",
        "DetachDisk",
        "DeleteDisk",
    ];
    if !known.contains(&action) || api_version != API_VERSION {
        return Err(ApiError::new(
            404,
            "InvalidAction.NotFound",
            format!("Specified api {action} (version {api_version}) is not found, please check your url and method."),
        ));
    }
    // AttachDisk, DetachDisk and DeleteDisk have no RegionId in their
    // request models (7.11.8 and the Go SDK): the SDK does not send it, the
    // endpoint names the region. A RegionId sent anyway must still match.
    let region = if REGIONLESS.contains(&action) {
        params.get("RegionId").filter(|r| !r.is_empty())
    } else {
        Some(params.required("RegionId")?)
    };
    if let Some(region) = region.filter(|r| *r != sim.cfg.region_id) {
        return Err(ApiError::new(
            404,
            "InvalidRegionId.NotFound",
            format!("The specified RegionId {region} does not exist."),
        ));
    }
    let body = match action {
        "DescribeDisks" => disks::describe_disks(&sim, &params)?,
        "CreateSnapshotGroup" => return create_group::create_snapshot_group(sim, params).await,
        "DescribeSnapshotGroups" => groups::describe_snapshot_groups(&sim, &params)?,
        "DeleteSnapshotGroup" => groups::delete_snapshot_group(&sim, &params)?,
        "DescribeSnapshots" => snapshots::describe_snapshots(&sim, &params)?,
        "TagResources" => tags::tag_resources(&sim, &params)?,
        "CreateDisk" => return create_disk::create_disk(sim, params).await,
        "AttachDisk" => attach::attach_disk(&sim, &params)?,
        "DetachDisk" => attach::detach_disk(&sim, &params)?,
        "DeleteDisk" => create_disk::delete_disk(&sim, &params)?,
        _ => unreachable!("checked above"),
    };
    Ok(Outcome { body, accept: None })
}

/// A request's operation parameters minus its ClientToken, sorted: two
/// requests with one token must match on this (`IdempotentParameterMismatch`).
pub fn fingerprint(p: &Params) -> String {
    let mut fp: Vec<String> =
        p.0.iter()
            .filter(|(k, _)| k != "ClientToken")
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
    fp.sort();
    fp.join("&")
}

/// How an action spells a tag: the official 7.11.8 response models differ per
/// action, and a client must cope with exactly what each one sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagStyle {
    /// `{Key, Value}`: DescribeSnapshotGroups (group and member tags).
    KeyValue,
    /// `{TagKey, TagValue}`: DescribeSnapshots, DescribeDisks.
    TagKeyValue,
}

/// `{"Tag": [..]}` as ECS nests tag lists, spelled the way `style` says.
pub fn tag_list(tags: &[(String, String)], style: TagStyle) -> Value {
    let (k_name, v_name) = match style {
        TagStyle::KeyValue => ("Key", "Value"),
        TagStyle::TagKeyValue => ("TagKey", "TagValue"),
    };
    let list: Vec<Value> = tags
        .iter()
        .map(|(k, v)| {
            let mut m = serde_json::Map::new();
            m.insert(k_name.into(), Value::String(k.clone()));
            m.insert(v_name.into(), Value::String(v.clone()));
            Value::Object(m)
        })
        .collect();
    serde_json::json!({ "Tag": list })
}

/// True if every `(key, value)` filter matches `tags` (a filter without a
/// value matches any value).
pub fn tags_match(filters: &[(String, Option<String>)], tags: &[(String, String)]) -> bool {
    filters.iter().all(|(k, v)| {
        tags.iter()
            .any(|(tk, tv)| tk == k && v.as_ref().is_none_or(|v| v == tv))
    })
}
