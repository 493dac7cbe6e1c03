//! TagResources for snapshots and snapshot groups.

use serde_json::{json, Value};

use crate::error::ApiError;
use crate::params::Params;
use crate::state::Sim;
use crate::validate;

/// TagResources: ResourceType `snapshot` (the only type of ours the API
/// documents; `snapshotgroup` is not one), ResourceId.N (1..=50), Tag.N
/// (1..=20). Existing keys are overwritten.
pub fn tag_resources(sim: &Sim, p: &Params) -> Result<Value, ApiError> {
    let rtype = p.required("ResourceType")?.to_string();
    if rtype != "snapshot" {
        // alibaba-api.md §0 item 12: the real code for an unsupported type.
        return Err(ApiError::new(
            404,
            "InvalidResourceType.NotFound",
            format!("The specified ResourceType {rtype} is not found."),
        ));
    }
    let ids = p.list("ResourceId", 50)?;
    if ids.is_empty() {
        return Err(ApiError::missing("ResourceId.1"));
    }
    let raw = p.tags()?;
    if raw.is_empty() {
        return Err(ApiError::missing("Tag.1.Key"));
    }
    let tags = validate::tags(&raw)?;
    let mut inner = sim.lock();
    // Check every id first so a failure changes nothing.
    for id in &ids {
        // Snapshots do not exist before their point in time.
        let found = inner
            .groups
            .iter()
            .any(|g| !g.copying && g.snapshots.iter().any(|s| &s.id == id));
        if !found {
            return Err(ApiError::new(
                404,
                "InvalidResourceId.NotFound",
                format!("The specified resource {id} does not exist."),
            ));
        }
    }
    for g in inner.groups.iter_mut() {
        for s in g.snapshots.iter_mut().filter(|s| ids.contains(&s.id)) {
            merge(&mut s.tags, &tags)?;
        }
    }
    Ok(json!({}))
}

fn merge(into: &mut Vec<(String, String)>, tags: &[(String, String)]) -> Result<(), ApiError> {
    for (k, v) in tags {
        match into.iter_mut().find(|(ek, _)| ek == k) {
            Some(e) => e.1 = v.clone(),
            None => into.push((k.clone(), v.clone())),
        }
    }
    if into.len() > 20 {
        return Err(ApiError::new(
            403,
            "QuotaExceed.Tags",
            "The maximum number of tags is exceeded (20).",
        ));
    }
    Ok(())
}
