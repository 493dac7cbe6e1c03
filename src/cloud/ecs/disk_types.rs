//! Request models and error codes of the disk calls a restore drill makes
//! (CreateDisk, AttachDisk, DetachDisk, DeleteDisk).
//!
//! Parameter names are those of the official SDK's request models
//! (`alibabacloud_ecs20140526` 7.11.8: `CreateDiskRequest.to_map()` sends
//! `ZoneId`, `SnapshotId`, `DiskCategory`, `PerformanceLevel`, `DiskName`,
//! `Description`, `Tag.N.Key`/`Tag.N.Value`, `ClientToken`; `AttachDiskRequest`
//! `InstanceId`, `DiskId`, `DeleteWithInstance`; `DetachDiskRequest` and
//! `DeleteDiskRequest` `DiskId` (and `InstanceId`)). Error codes are from the
//! API pages' error tables (github:AlibabaCloudDocs/ecs, `intl.en-US/API
//! Reference/Disk/*.md`, and <https://www.alibabacloud.com/help/en/ecs/api-deletedisk>,
//! <https://www.alibabacloud.com/help/en/ecs/developer-reference/api-ecs-2014-05-26-detachdisk>).

use super::error::EcsError;
use super::types::{push_tags, ClientToken, Tag, MAX_TAGS};
use crate::policy::types::VerifyCategory;

/// A disk category and, for `cloud_essd`, its performance level.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DrillCategory {
    /// `DiskCategory`, e.g. `cloud_essd`.
    pub category: String,
    /// `PerformanceLevel` (`PL0`..`PL3`; only meaningful for `cloud_essd`).
    pub performance_level: Option<String>,
}

impl DrillCategory {
    /// Convenience constructor.
    pub fn new(category: &str, performance_level: Option<&str>) -> DrillCategory {
        DrillCategory {
            category: category.to_string(),
            performance_level: performance_level.map(str::to_string),
        }
    }
}

/// A job's `verify_category`: that category alone (no fallback).
impl From<&VerifyCategory> for DrillCategory {
    fn from(v: &VerifyCategory) -> DrillCategory {
        DrillCategory {
            category: v.category.clone(),
            performance_level: v.performance_level.clone(),
        }
    }
}

impl std::fmt::Display for DrillCategory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.performance_level {
            Some(pl) => write!(f, "{}:{pl}", self.category),
            None => f.write_str(&self.category),
        }
    }
}

/// The categories a drill disk is created in, cheapest-that-works first; the
/// next is tried only when CreateDisk answers a [`CATEGORY_UNSUPPORTED_CODES`]
/// code. Why this order:
///
/// 1. `cloud_essd` at `PL0`: the cheapest ESSD level (the 2021 billing page's
///    Hangzhou example: USD 0.0160 per 100 GiB per hour pay-as-you-go, half of
///    PL1), accepts any size a snapshot can have (SDK `Size` doc: PL0 1..65,536
///    GiB, where PL1 starts at 20 and PL2 at 461), and goes wherever ESSDs go:
///    the instance-family pages (AlibabaCloudDocs/ecs, `Instance families.md`)
///    state ESSD support per family with no level restriction, and an
///    instance whose disk is in a snapshot group has an ESSD-kind disk.
/// 2. `cloud_auto` (ESSD AutoPL, 1..65,536 GiB): for a zone that refuses PL0.
/// 3. `cloud_essd_entry` (SDK `Size` doc: 10..32,768 GiB, so it refuses
///    smaller and larger snapshots): Alibaba positions it as the low-cost
///    ESSD, but which zones and instance families take it was not confirmed
///    from a document here, so it comes last and is never the reason a drill
///    fails.
///
/// An unsupported category may also only show at AttachDisk (an instance
/// family that does not take it); the caller deletes that disk and tries the
/// next category, using [`is_category_unsupported`] on the attach error too.
pub fn default_drill_categories() -> Vec<DrillCategory> {
    vec![
        DrillCategory::new("cloud_essd", Some("PL0")),
        DrillCategory::new("cloud_auto", None),
        DrillCategory::new("cloud_essd_entry", None),
    ]
}

/// CreateDisk's documented "this category (or level) is not available here"
/// codes (CreateDisk error table), plus AttachDisk's "this instance does not
/// take that disk" (`DiskId.ValueNotSupported`, AttachDisk error table): on
/// these a drill tries the next category. Anything else (quota, balance,
/// snapshot not ready, permissions) fails the drill: another category would
/// fail the same way.
pub const CATEGORY_UNSUPPORTED_CODES: &[&str] = &[
    "InvalidDataDiskCategory.NotSupported",
    "InvalidDataDiskCategory.ValueNotSupported",
    "InvalidDiskCategory.NotSupported",
    "InvalidDiskCategory.ValueNotSupported",
    "InvalidDiskCategory.ValueUnauthorized",
    "InvalidDiskSizeOrCategory",
    "InvalidPerformanceLevel.Malformed",
    "InvalidDataDiskSize.ValueNotSupported",
    "InvalidDiskSize.NotSupported",
    "DiskId.ValueNotSupported",
];

/// Whether `code` says the category (or its size range) is not accepted here.
pub fn is_category_unsupported(code: &str) -> bool {
    CATEGORY_UNSUPPORTED_CODES.contains(&code)
}

/// The code by which ECS says a disk id does not exist. The DeleteDisk page
/// says a missing disk is "ignored" (a success); the emulator and other
/// actions answer this code. Either way the disk is gone.
pub const DISK_NOT_FOUND_CODES: &[&str] = &["InvalidDiskId.NotFound"];

/// DetachDisk's "the disk is not attached to that instance"
/// (`DependencyViolation`: "The specified disk has not been attached on the
/// specified instance", DetachDisk error table), `InvalidDisk.AlreadyDetached`
/// ("The specified disk has been detached", the same table; the official SDK
/// parses it, see the contract lane) and a disk that no longer exists: for
/// cleanup, all mean there is nothing to detach.
pub const NOT_ATTACHED_CODES: &[&str] = &[
    "DependencyViolation",
    "InvalidDisk.AlreadyDetached",
    "InvalidDiskId.NotFound",
];

/// A CreateDisk request for a drill: a pay-as-you-go data disk in this
/// instance's zone, from one snapshot.
///
/// No `Size`: "If you specify SnapshotId, Size is ignored and the disk has the
/// snapshot's size" (CreateDisk page, AlibabaCloudDocs/ecs `zh-CN`); the SDK's
/// `Size` doc agrees that a larger snapshot wins, and the page requires only
/// one of the two (`MissingParameter`: "either SnapshotId or Size"). No
/// `InstanceId` either: with it the call creates a subscription disk and
/// ignores `Tag.N` and `ClientToken`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateDisk {
    /// `ZoneId` (this instance's zone: AttachDisk needs the same zone).
    pub zone_id: String,
    /// `SnapshotId` (`s-...`).
    pub snapshot_id: String,
    /// `DiskCategory`.
    pub category: String,
    /// `PerformanceLevel` (ESSD only).
    pub performance_level: Option<String>,
    /// `DiskName` (2-128 chars, starts with a letter).
    pub disk_name: String,
    /// `Description` (2-256 chars).
    pub description: String,
    /// `Tag.N.Key` / `Tag.N.Value` (at most 20): what lets crash cleanup find it.
    pub tags: Vec<Tag>,
    /// `ClientToken`, the same on every retry.
    pub client_token: ClientToken,
}

impl CreateDisk {
    /// The exact operation parameters sent, `RegionId` first.
    pub fn params(&self, region_id: &str) -> Result<Vec<(String, String)>, EcsError> {
        let invalid = |reason: String| EcsError::InvalidRequest {
            action: "CreateDisk".into(),
            reason,
        };
        if self.zone_id.is_empty() || self.snapshot_id.is_empty() || self.category.is_empty() {
            return Err(invalid(
                "ZoneId, SnapshotId and DiskCategory are required".into(),
            ));
        }
        if self.tags.len() > MAX_TAGS {
            return Err(invalid(format!(
                "{} tags, at most {MAX_TAGS} allowed",
                self.tags.len()
            )));
        }
        let mut p = vec![
            ("RegionId".to_string(), region_id.to_string()),
            ("ZoneId".to_string(), self.zone_id.clone()),
            ("SnapshotId".to_string(), self.snapshot_id.clone()),
            ("DiskCategory".to_string(), self.category.clone()),
        ];
        if let Some(pl) = &self.performance_level {
            p.push(("PerformanceLevel".into(), pl.clone()));
        }
        p.push(("DiskName".into(), self.disk_name.clone()));
        p.push(("Description".into(), self.description.clone()));
        push_tags(&mut p, &self.tags);
        p.push(("ClientToken".into(), self.client_token.as_str().into()));
        Ok(p)
    }

    /// The same request in another category, with its own token (a retry of a
    /// token with other parameters would be refused as a mismatch).
    pub fn in_category(&self, category: &DrillCategory, attempt: usize) -> CreateDisk {
        let base = self.client_token.as_str();
        let suffix = format!("-{attempt}");
        let keep = base.len().min(64 - suffix.len());
        let token = ClientToken::from_trusted(format!("{}{suffix}", &base[..keep]));
        CreateDisk {
            category: category.category.clone(),
            performance_level: category.performance_level.clone(),
            client_token: token,
            ..self.clone()
        }
    }
}

/// What DeleteDisk did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskDeleted {
    /// ECS accepted the release.
    Deleted,
    /// ECS said the disk does not exist (any more): nothing is billed.
    AlreadyGone,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req() -> CreateDisk {
        CreateDisk {
            zone_id: "cn-hangzhou-h".into(),
            snapshot_id: "s-1".into(),
            category: "cloud_essd".into(),
            performance_level: Some("PL0".into()),
            disk_name: "appsnap-verify-1".into(),
            description: "drill".into(),
            tags: vec![Tag::new("appsnap:verify", "run-1")],
            client_token: ClientToken::parse(&"t".repeat(64)).unwrap(),
        }
    }

    #[test]
    fn create_disk_params_are_exact_and_have_no_size() {
        let p = req().params("cn-hangzhou").unwrap();
        let keys: Vec<&str> = p.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "RegionId",
                "ZoneId",
                "SnapshotId",
                "DiskCategory",
                "PerformanceLevel",
                "DiskName",
                "Description",
                "Tag.1.Key",
                "Tag.1.Value",
                "ClientToken"
            ]
        );
        let mut r = req();
        r.tags = vec![Tag::new("k", "v"); 21];
        assert!(matches!(
            r.params("x"),
            Err(EcsError::InvalidRequest { .. })
        ));
    }

    #[test]
    fn another_category_gets_its_own_token_within_64_chars() {
        let r = req();
        let b = r.in_category(&DrillCategory::new("cloud_auto", None), 2);
        assert_eq!(b.category, "cloud_auto");
        assert_eq!(b.performance_level, None);
        assert_ne!(b.client_token, r.client_token);
        assert_eq!(b.client_token.as_str().len(), 64);
        assert!(b.client_token.as_str().ends_with("-2"));
        let c = r.in_category(&DrillCategory::new("cloud_auto", None), 3);
        assert_ne!(b.client_token, c.client_token);
    }

    #[test]
    fn default_order_starts_with_pl0() {
        let d = default_drill_categories();
        assert_eq!(d[0].to_string(), "cloud_essd:PL0");
        assert_eq!(d[1].to_string(), "cloud_auto");
        assert_eq!(d[2].to_string(), "cloud_essd_entry");
        assert!(is_category_unsupported(
            "InvalidDataDiskCategory.NotSupported"
        ));
        assert!(!is_category_unsupported("QuotaExceed.PostPaidDisk"));
    }

    #[test]
    fn a_policy_category_maps_one_to_one() {
        let v = VerifyCategory::parse("cloud_essd:PL1").unwrap();
        let d = DrillCategory::from(&v);
        assert_eq!(d, DrillCategory::new("cloud_essd", Some("PL1")));
        assert_eq!(d.to_string(), v.to_string());
    }
}
