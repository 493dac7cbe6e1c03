//! The disk calls of a restore drill: create a disk from a snapshot (with the
//! category fallback), attach, detach, release, and find drill disks by id or
//! by tag. Each goes through [`EcsClient::call`]: the same signing, retries,
//! deadline and error codes as every other call.

use serde_json::Value;
use tokio::time::Instant;

use super::client::EcsClient;
use super::disk_types::{
    is_category_unsupported, CreateDisk, DiskDeleted, DrillCategory, DISK_NOT_FOUND_CODES,
};
use super::error::EcsError;
use super::types::{Disk, Tag};
use crate::policy::types::DiskId;

/// Most ids one DescribeDisks `DiskIds` takes (SDK: "up to 100 IDs").
const MAX_DISK_IDS: usize = 100;

impl EcsClient {
    /// CreateDisk; returns the new `d-...` id. Retries reuse the request's
    /// ClientToken, so at most one disk is created (and billed).
    pub async fn create_disk(
        &self,
        req: &CreateDisk,
        deadline: Instant,
    ) -> Result<String, EcsError> {
        let params = req.params(&self.region_id)?;
        let v = self.call("CreateDisk", &params, deadline).await?;
        v.get("DiskId")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .ok_or_else(|| EcsError::Decode {
                action: "CreateDisk".into(),
                http_status: 200,
                reason: "no DiskId in the answer".into(),
            })
    }

    /// CreateDisk in the first of `categories` ECS accepts (see
    /// [`super::default_drill_categories`] for the order and why): a
    /// category-unsupported answer moves to the next with its own token; any
    /// other error is returned at once. Returns the disk id and the category
    /// used; with every category refused, the last refusal.
    pub async fn create_disk_with_fallback(
        &self,
        req: &CreateDisk,
        categories: &[DrillCategory],
        deadline: Instant,
    ) -> Result<(String, DrillCategory), EcsError> {
        let mut last = None;
        for (i, category) in categories.iter().enumerate() {
            let attempt = req.in_category(category, i + 1);
            match self.create_disk(&attempt, deadline).await {
                Ok(id) => return Ok((id, category.clone())),
                Err(e) if e.code().is_some_and(is_category_unsupported) => {
                    tracing::info!(category = %category, error = %e, "category refused, trying the next");
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| EcsError::InvalidRequest {
            action: "CreateDisk".into(),
            reason: "no disk category to try".into(),
        }))
    }

    /// AttachDisk as a data disk with `DeleteWithInstance=true`.
    ///
    /// Why true: the AttachDisk doc says `false` (its default) keeps the disk
    /// when the instance is released, "converted to a pay-as-you-go data
    /// disk" — a drill disk left attached by a crash would then outlive the
    /// instance and be billed with nobody to clean it up. With `true` it goes
    /// with the instance. It does not survive a detach (DetachDisk: a detached
    /// data disk's `DeleteWithInstance` becomes false), so cleanup still
    /// releases it explicitly.
    pub async fn attach_disk(
        &self,
        instance_id: &str,
        disk_id: &str,
        deadline: Instant,
    ) -> Result<(), EcsError> {
        let p = vec![
            ("InstanceId".to_string(), instance_id.to_string()),
            ("DiskId".to_string(), disk_id.to_string()),
            ("DeleteWithInstance".to_string(), "true".to_string()),
        ];
        self.call("AttachDisk", &p, deadline).await.map(|_| ())
    }

    /// DetachDisk (asynchronous on ECS' side: the disk becomes `Available`
    /// about a minute later; poll [`EcsClient::describe_disks_by_id`]).
    /// [`super::NOT_ATTACHED_CODES`] say there was nothing to detach.
    pub async fn detach_disk(
        &self,
        instance_id: &str,
        disk_id: &str,
        deadline: Instant,
    ) -> Result<(), EcsError> {
        let p = vec![
            ("InstanceId".to_string(), instance_id.to_string()),
            ("DiskId".to_string(), disk_id.to_string()),
        ];
        self.call("DetachDisk", &p, deadline).await.map(|_| ())
    }

    /// DeleteDisk (the disk must be `Available`, i.e. detached). A disk that
    /// does not exist counts as gone: the page says such a request "is
    /// ignored", and `InvalidDiskId.NotFound` means the same.
    pub async fn delete_disk(
        &self,
        disk_id: &str,
        deadline: Instant,
    ) -> Result<DiskDeleted, EcsError> {
        let p = vec![("DiskId".to_string(), disk_id.to_string())];
        match self.call("DeleteDisk", &p, deadline).await {
            Ok(_) => Ok(DiskDeleted::Deleted),
            Err(e) if e.code().is_some_and(|c| DISK_NOT_FOUND_CODES.contains(&c)) => {
                Ok(DiskDeleted::AlreadyGone)
            }
            Err(e) => Err(e),
        }
    }

    /// DescribeDisks of these ids, attached or not (no `InstanceId` filter: a
    /// drill disk just created is attached nowhere). Ids that no longer exist
    /// are simply absent. No ids, no call (an unfiltered DescribeDisks would
    /// list the whole region).
    pub async fn describe_disks_by_id(
        &self,
        disk_ids: &[DiskId],
        deadline: Instant,
    ) -> Result<Vec<Disk>, EcsError> {
        let mut out = Vec::new();
        for chunk in disk_ids.chunks(MAX_DISK_IDS) {
            let ids: Vec<&str> = chunk.iter().map(DiskId::as_str).collect();
            let json = serde_json::to_string(&ids).map_err(|e| EcsError::InvalidRequest {
                action: "DescribeDisks".into(),
                reason: e.to_string(),
            })?;
            let base = vec![
                ("RegionId".to_string(), self.region_id.clone()),
                ("DiskIds".to_string(), json),
                ("MaxResults".to_string(), "100".to_string()),
            ];
            out.extend(
                self.paged::<Disk>("DescribeDisks", base, "Disks", "Disk", deadline)
                    .await?,
            );
        }
        Ok(out)
    }

    /// Every disk of the region carrying tag `key` (with `value`, if given):
    /// what crash cleanup looks for. `Tag.1.Key` alone matches any value.
    pub async fn describe_disks_tagged(
        &self,
        key: &str,
        value: Option<&str>,
        deadline: Instant,
    ) -> Result<Vec<Disk>, EcsError> {
        if key.is_empty() {
            return Err(EcsError::InvalidRequest {
                action: "DescribeDisks".into(),
                reason: "an empty tag key would list every disk".into(),
            });
        }
        let mut base = vec![
            ("RegionId".to_string(), self.region_id.clone()),
            ("Tag.1.Key".to_string(), key.to_string()),
        ];
        if let Some(v) = value {
            base.push(("Tag.1.Value".into(), v.to_string()));
        }
        base.push(("MaxResults".into(), "100".into()));
        let disks: Vec<Disk> = self
            .paged("DescribeDisks", base, "Disks", "Disk", deadline)
            .await?;
        // The server filters; this keeps a server that ignored the filter
        // from handing cleanup a disk that is not a drill's.
        let want = Tag::new(key, value.unwrap_or_default());
        Ok(disks
            .into_iter()
            .filter(|d| {
                d.tags
                    .iter()
                    .any(|t| t.key == want.key && (value.is_none() || t.value == want.value))
            })
            .collect())
    }
}
