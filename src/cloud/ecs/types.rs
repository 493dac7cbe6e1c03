//! Request and answer models of the ECS calls appsnap makes, and how they
//! decode (field names as in the official SDK's response models).

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

use super::error::EcsError;
use crate::cloud::sign;
use crate::policy::types::DiskId;

/// Regional ESSD: accepted in snapshot groups, but only with its own kind.
pub const REGIONAL_ESSD_CATEGORY: &str = "cloud_regional_disk_auto";
/// Disk categories that snapshot groups accept (ESSD, ESSD AutoPL, ESSD
/// Entry, and Regional ESSD, the last only grouped with its own kind).
pub const SUPPORTED_CATEGORIES: &[&str] = &[
    "cloud_essd",
    "cloud_auto",
    "cloud_essd_entry",
    REGIONAL_ESSD_CATEGORY,
];
/// Most tags one CreateSnapshotGroup / TagResources call takes.
pub const MAX_TAGS: usize = 20;
/// Most resources one TagResources call takes.
pub const MAX_TAG_RESOURCES: usize = 50;
/// The codes by which DeleteSnapshotGroup says the group itself does not
/// exist. `InvalidSnapshotGroup.NotFound` (404) is documented for the
/// sibling ModifySnapshotGroup ("The SnapshotGroupId provided does not exist
/// in our records"); the DeleteSnapshotGroup page lists no not-found code, so
/// `InvalidSnapshotGroupId.NotFound` (ECS's `Invalid<Param>.NotFound` pattern,
/// what the emulator answers) is accepted too. Any other `*.NotFound` (a wrong
/// region, a key) is a real failure, never "already deleted".
pub const GROUP_NOT_FOUND_CODES: &[&str] = &[
    "InvalidSnapshotGroup.NotFound",
    "InvalidSnapshotGroupId.NotFound",
];

/// An idempotency token for CreateSnapshotGroup (≤ 64 ASCII characters).
/// Generate it once per logical request and reuse it on every retry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientToken(String);

impl ClientToken {
    /// `appsnap-` + 32 random hex digits.
    pub fn generate() -> ClientToken {
        ClientToken(format!("appsnap-{}", sign::nonce()))
    }

    /// Wraps an existing token (e.g. one recorded before a restart).
    pub fn parse(s: &str) -> Result<ClientToken, String> {
        if s.is_empty() || s.len() > 64 || !s.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(format!(
                "client token {s:?} must be 1-64 printable ASCII characters"
            ));
        }
        Ok(ClientToken(s.to_string()))
    }

    /// A token built here from a valid one (no re-check needed).
    pub(super) fn from_trusted(s: String) -> ClientToken {
        ClientToken(s)
    }

    /// As sent.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A resource tag.
///
/// ECS spells tags differently per action (official SDK response models):
/// DescribeSnapshotGroups uses `{Key, Value}`, DescribeSnapshots and
/// DescribeDisks `{TagKey, TagValue}`. Both decode here.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Tag {
    /// Key (not empty, must not start with `aliyun` or `acs:`).
    #[serde(alias = "TagKey")]
    pub key: String,
    /// Value (may be empty).
    #[serde(default, alias = "TagValue")]
    pub value: String,
}

impl Tag {
    /// Convenience constructor.
    pub fn new(key: impl Into<String>, value: impl Into<String>) -> Tag {
        Tag {
            key: key.into(),
            value: value.into(),
        }
    }
}

/// Which disks of the instance a group takes (`DiskId.N` or `ExcludeDiskId.N`;
/// the API refuses both together).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupDisks {
    /// Exactly these disks (`DiskId.N`).
    Only(Vec<DiskId>),
    /// Every disk of the instance, system disk included, minus these (`ExcludeDiskId.N`).
    AllExcept(Vec<DiskId>),
}

/// A CreateSnapshotGroup request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateSnapshotGroup {
    /// `InstanceId`.
    pub instance_id: String,
    /// `DiskId.N` / `ExcludeDiskId.N`.
    pub disks: GroupDisks,
    /// `Name` (2-128 chars, starts with a letter).
    pub name: String,
    /// `Description`.
    pub description: Option<String>,
    /// `Tag.N.Key` / `Tag.N.Value` (at most 20).
    pub tags: Vec<Tag>,
    /// `ResourceGroupId`.
    pub resource_group_id: Option<String>,
    /// `ClientToken`, the same on every retry.
    pub client_token: ClientToken,
}

impl CreateSnapshotGroup {
    /// The exact operation parameters sent, `RegionId` first (also for `--dry-run`).
    pub fn params(&self, region_id: &str) -> Result<Vec<(String, String)>, EcsError> {
        let invalid = |reason: String| EcsError::InvalidRequest {
            action: "CreateSnapshotGroup".into(),
            reason,
        };
        let mut p = vec![
            ("RegionId".to_string(), region_id.to_string()),
            ("InstanceId".to_string(), self.instance_id.clone()),
        ];
        match &self.disks {
            GroupDisks::Only(ids) if ids.is_empty() => {
                return Err(invalid("no disk selected".into()));
            }
            GroupDisks::Only(ids) => push_list(&mut p, "DiskId", ids.iter().map(DiskId::as_str)),
            GroupDisks::AllExcept(ids) => {
                push_list(&mut p, "ExcludeDiskId", ids.iter().map(DiskId::as_str))
            }
        }
        p.push(("Name".into(), self.name.clone()));
        if let Some(d) = &self.description {
            p.push(("Description".into(), d.clone()));
        }
        if let Some(rg) = &self.resource_group_id {
            p.push(("ResourceGroupId".into(), rg.clone()));
        }
        if self.tags.len() > MAX_TAGS {
            return Err(invalid(format!(
                "{} tags, at most {MAX_TAGS} allowed",
                self.tags.len()
            )));
        }
        push_tags(&mut p, &self.tags);
        p.push(("ClientToken".into(), self.client_token.as_str().into()));
        Ok(p)
    }
}

pub(super) fn push_list<'a>(
    p: &mut Vec<(String, String)>,
    name: &str,
    items: impl Iterator<Item = &'a str>,
) {
    for (i, v) in items.enumerate() {
        p.push((format!("{name}.{}", i + 1), v.to_string()));
    }
}

pub(super) fn push_tags(p: &mut Vec<(String, String)>, tags: &[Tag]) {
    for (i, t) in tags.iter().enumerate() {
        p.push((format!("Tag.{}.Key", i + 1), t.key.clone()));
        p.push((format!("Tag.{}.Value", i + 1), t.value.clone()));
    }
}

/// A disk as DescribeDisks reports it (the fields appsnap uses).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct Disk {
    /// `d-...`
    pub disk_id: String,
    /// e.g. `cloud_essd`.
    pub category: String,
    /// `system` or `data`.
    #[serde(rename = "Type")]
    pub disk_type: String,
    /// GiB.
    pub size: u64,
    /// e.g. `In_use`.
    pub status: String,
    /// Attached instance (empty for multi-attach disks).
    pub instance_id: String,
    /// Serial the guest sees (empty for disks created before 2020-06-10).
    pub serial_number: String,
    /// `Enabled` for multi-attach disks.
    pub multi_attach: String,
    /// Zone.
    pub zone_id: String,
    /// Name.
    pub disk_name: String,
    /// Description.
    pub description: String,
    /// RFC 3339 UTC.
    pub creation_time: String,
    /// The snapshot it was created from (empty if none): how a drill disk
    /// names what it restores.
    pub source_snapshot_id: String,
    /// `PL0`..`PL3` for ESSDs, else empty.
    pub performance_level: String,
    /// Released with the instance it is attached to.
    pub delete_with_instance: bool,
    /// `{TagKey, TagValue}` tags (DescribeDisks' `Tags.Tag`).
    #[serde(deserialize_with = "de_tags")]
    pub tags: Vec<Tag>,
}

impl Disk {
    /// Whether snapshot groups accept this disk's category.
    pub fn supports_snapshot_group(&self) -> bool {
        SUPPORTED_CATEGORIES.contains(&self.category.as_str())
    }

    /// Multi-attach disks cannot be in a group.
    pub fn is_multi_attach(&self) -> bool {
        self.multi_attach.eq_ignore_ascii_case("Enabled")
    }

    /// The value of tag `key`, if present.
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags
            .iter()
            .find(|t| t.key == key)
            .map(|t| t.value.as_str())
    }
}

/// One snapshot inside a group (DescribeSnapshotGroups has no per-snapshot Status).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct GroupSnapshot {
    /// `s-...`
    pub snapshot_id: String,
    /// Disk it was taken from.
    pub source_disk_id: String,
    /// `system` / `data`.
    pub source_disk_type: String,
    /// A string with a percent sign, e.g. `"100%"`.
    pub progress: String,
    /// Usable to create or roll back a disk.
    pub available: bool,
}

/// A snapshot group as DescribeSnapshotGroups reports it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct SnapshotGroup {
    /// `ssg-...`
    pub snapshot_group_id: String,
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Set when all snapshots come from one instance.
    pub instance_id: String,
    /// RFC 3339 UTC.
    pub creation_time: String,
    /// `progressing`, `accomplished`, `failed`.
    pub status: String,
    /// Tags.
    #[serde(deserialize_with = "de_tags")]
    pub tags: Vec<Tag>,
    /// Member snapshots.
    #[serde(deserialize_with = "de_group_snapshots")]
    pub snapshots: Vec<GroupSnapshot>,
}

impl SnapshotGroup {
    /// The value of tag `key`, if present.
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags
            .iter()
            .find(|t| t.key == key)
            .map(|t| t.value.as_str())
    }
}

/// A snapshot as DescribeSnapshots reports it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct Snapshot {
    /// `s-...`
    pub snapshot_id: String,
    /// Disk it was taken from.
    pub source_disk_id: String,
    /// `progressing`, `accomplished`, `failed`.
    pub status: String,
    /// e.g. `"42%"`.
    pub progress: String,
    /// Usable to create or roll back a disk.
    pub available: bool,
    /// RFC 3339 UTC (may be empty for group snapshots).
    pub creation_time: String,
    /// Name.
    pub snapshot_name: String,
    /// Description.
    pub description: String,
    /// Tags.
    #[serde(deserialize_with = "de_tags")]
    pub tags: Vec<Tag>,
}

fn de_wrapped<'de, D, T>(d: D, inner: &str) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: DeserializeOwned,
{
    let v = Value::deserialize(d)?;
    match v.get(inner) {
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| serde_json::from_value(i.clone()).map_err(serde::de::Error::custom))
            .collect(),
        _ => Ok(Vec::new()),
    }
}

fn de_tags<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Tag>, D::Error> {
    de_wrapped(d, "Tag")
}

fn de_group_snapshots<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Vec<GroupSnapshot>, D::Error> {
    de_wrapped(d, "Snapshot")
}

/// Filters for DescribeSnapshotGroups (ANDed by the server).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotGroupFilter {
    /// `InstanceId`.
    pub instance_id: Option<String>,
    /// `SnapshotGroupId.N` (≤ 10).
    pub ids: Vec<String>,
    /// `Status.N`.
    pub statuses: Vec<String>,
    /// `Name`.
    pub name: Option<String>,
    /// `Tag.N` (≤ 20).
    pub tags: Vec<Tag>,
}

/// Filters for DescribeSnapshots.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotFilter {
    /// `InstanceId`.
    pub instance_id: Option<String>,
    /// `DiskId`.
    pub disk_id: Option<DiskId>,
    /// `SnapshotIds` (a JSON array string, ≤ 100).
    pub snapshot_ids: Vec<String>,
    /// `Status` (`progressing`, `accomplished`, `failed`, `all`).
    pub status: Option<String>,
    /// `Tag.N`.
    pub tags: Vec<Tag>,
}

/// What DeleteSnapshotGroup did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeleteOutcome {
    /// The group and its snapshots are gone.
    Deleted,
    /// It did not exist (any more): deleting is idempotent for appsnap.
    AlreadyGone,
    /// Some snapshots were kept (e.g. used by an image): `(snapshot, code, message)`.
    Partial(Vec<(String, String, String)>),
}

/// A snapshot-group id that is well-formed but can never exist: deleting it
/// changes nothing, and the answer tells whether the role may delete at all.
pub const PROBE_GROUP_ID: &str = "ssg-appsnapprobe000000000";

/// Whether the credentials may call DeleteSnapshotGroup (what retention needs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeletePermission {
    /// ECS got past authorisation and said the probe group does not exist.
    Allowed,
    /// ECS refused on permission grounds; the code it answered.
    Denied(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_snapshot_group_params_are_exact() {
        let req = CreateSnapshotGroup {
            instance_id: "i-1".into(),
            disks: GroupDisks::Only(vec![
                DiskId::parse("d-a").unwrap(),
                DiskId::parse("d-b").unwrap(),
            ]),
            name: "mysql-1".into(),
            description: Some("d".into()),
            tags: vec![Tag::new("appsnap:job", "mysql")],
            resource_group_id: None,
            client_token: ClientToken::parse("tok").unwrap(),
        };
        let p = req.params("cn-hangzhou").unwrap();
        let want: Vec<(String, String)> = [
            ("RegionId", "cn-hangzhou"),
            ("InstanceId", "i-1"),
            ("DiskId.1", "d-a"),
            ("DiskId.2", "d-b"),
            ("Name", "mysql-1"),
            ("Description", "d"),
            ("Tag.1.Key", "appsnap:job"),
            ("Tag.1.Value", "mysql"),
            ("ClientToken", "tok"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(p, want);
        let empty = CreateSnapshotGroup {
            disks: GroupDisks::Only(vec![]),
            ..req
        };
        assert!(matches!(
            empty.params("r"),
            Err(EcsError::InvalidRequest { .. })
        ));
    }

    #[test]
    fn client_tokens_are_unique_and_short() {
        let a = ClientToken::generate();
        assert!(a.as_str().len() <= 64 && a.as_str().starts_with("appsnap-"));
        assert_ne!(a, ClientToken::generate());
        assert!(ClientToken::parse(&"x".repeat(65)).is_err());
    }
}
