//! Typed ECS OpenAPI (2014-05-26) calls with signing, retries and error codes.
//!
//! Every call takes a `deadline` (`tokio::time::Instant`): retries with
//! exponential backoff and jitter happen only while the next attempt can start
//! before it, so the job can pass its freeze deadline and know the API will not
//! keep I/O suspended longer. `CreateSnapshotGroup` always carries a
//! [`ClientToken`] generated once per logical request, so a retry can never
//! create a second group.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;
use tokio::time::Instant;

use super::credentials::{AccessKey, Credentials, CredentialsError};
use super::retry::{next_attempt_at, RetryPolicy};
use super::secret::{scrub, Secret, REDACTED};
use super::sign::{self, RequestParts, ECS_API_VERSION};
use crate::policy::types::{CloudSettings, DiskId, SignatureVersion};

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
/// Guard against a server that keeps returning a `NextToken`.
const MAX_PAGES: usize = 1000;

/// Why an ECS call failed. Messages never contain credentials: the server's
/// echoed string-to-sign is cut off and any echoed secret is replaced.
#[derive(Debug, thiserror::Error)]
pub enum EcsError {
    /// The endpoint is not usable (bad URL, or plain http to a non-loopback host).
    #[error("invalid ECS endpoint {endpoint:?}: {reason}")]
    Endpoint {
        /// As configured.
        endpoint: String,
        /// What is wrong.
        reason: String,
    },
    /// The request is invalid before sending (e.g. more than 20 tags).
    #[error("invalid {action} request: {reason}")]
    InvalidRequest {
        /// API action.
        action: String,
        /// What is wrong.
        reason: String,
    },
    /// ECS answered with an error code.
    #[error("ECS {action} failed: {code}: {message}{} (HTTP {http_status}, RequestId {})", code_hint(.code), .request_id.as_deref().unwrap_or("none"))]
    Api {
        /// API action.
        action: String,
        /// ECS error `Code`, e.g. `QuotaExceed.Snapshot`.
        code: String,
        /// ECS `Message`, redacted.
        message: String,
        /// ECS `RequestId`, for support tickets.
        request_id: Option<String>,
        /// HTTP status.
        http_status: u16,
    },
    /// No answer: refused, reset, timed out.
    #[error("ECS {action}: no answer: {}", super::error_chain(.error))]
    Transport {
        /// API action.
        action: String,
        /// Underlying error, URL stripped (a v1 URL carries the STS token);
        /// its causes are in the message.
        error: reqwest::Error,
    },
    /// An answer that is not the JSON expected.
    #[error("ECS {action}: unreadable answer (HTTP {http_status}): {reason}")]
    Decode {
        /// API action.
        action: String,
        /// HTTP status.
        http_status: u16,
        /// What was wrong.
        reason: String,
    },
    /// The answer was larger than [`super::body::ECS_BODY_LIMIT`]; reading
    /// stopped there (a broken or hostile server must not exhaust memory).
    #[error("ECS {action}: answer (HTTP {http_status}) larger than the {} limit; refused", crate::securefs::human_size(*.limit))]
    TooLarge {
        /// API action.
        action: String,
        /// HTTP status.
        http_status: u16,
        /// The limit, bytes.
        limit: u64,
    },
    /// The caller's deadline came before the call could succeed; no request was
    /// sent after it (nor one that would have started after it).
    #[error("ECS {action}: deadline reached after {attempts} attempt(s){}", last_suffix(.last))]
    DeadlineExceeded {
        /// API action.
        action: String,
        /// Requests sent.
        attempts: u32,
        /// The error that caused the last retry, if any.
        last: Option<Box<EcsError>>,
    },
    /// No usable credentials.
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
}

/// What an operator should know about codes whose server message does not
/// say what to do (documented 403 codes of CreateSnapshotGroup).
fn code_hint(code: &str) -> &'static str {
    match code {
        "NumberExceed.TooManyDisks" => " — more disks than ECS accepts in one snapshot group in this region (16 in older regions, up to 128 in newer ones): split the job's disks over several jobs, and set cloud.max_disks_per_group to that limit so appsnap refuses before freezing",
        "CapacityExceed.TooManyDisks" => " — the disks' total size is more than ECS accepts in one snapshot group (32 TiB in older regions, 256 TiB in newer ones): split the job's disks over several jobs",
        "InvalidDisk.DiskCategoryInconsistent" => " — Regional ESSD (cloud_regional_disk_auto) disks can only be grouped with other Regional ESSDs: split them into their own job",
        _ => "",
    }
}

fn last_suffix(last: &Option<Box<EcsError>>) -> String {
    last.as_ref()
        .map(|e| format!("; last error: {e}"))
        .unwrap_or_default()
}

impl EcsError {
    /// The ECS error code, also through a deadline error (for exit-code mapping).
    pub fn code(&self) -> Option<&str> {
        match self {
            EcsError::Api { code, .. } => Some(code),
            EcsError::DeadlineExceeded { last: Some(l), .. } => l.code(),
            _ => None,
        }
    }

    /// Whether the same request may succeed if sent again: throttling, server
    /// errors, 5xx, resets and timeouts.
    pub fn is_retryable(&self) -> bool {
        match self {
            EcsError::Api {
                code, http_status, ..
            } => {
                code.starts_with("Throttling")
                    || code.starts_with("ServiceUnavailable")
                    || matches!(
                        code.as_str(),
                        "InternalError" | "UnknownError" | "IdempotentProcessing"
                    )
                    || *http_status >= 500
            }
            EcsError::Transport { .. } => true,
            EcsError::Decode { http_status, .. } => *http_status >= 500,
            _ => false,
        }
    }

    /// Throttling gets the longer backoff.
    pub fn is_throttling(&self) -> bool {
        matches!(self, EcsError::Api { code, .. } if code.starts_with("Throttling"))
    }
}

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

fn push_list<'a>(p: &mut Vec<(String, String)>, name: &str, items: impl Iterator<Item = &'a str>) {
    for (i, v) in items.enumerate() {
        p.push((format!("{name}.{}", i + 1), v.to_string()));
    }
}

fn push_tags(p: &mut Vec<(String, String)>, tags: &[Tag]) {
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

/// The ECS API client: one HTTP client (keep-alive) and the shared credentials.
pub struct EcsClient {
    http: reqwest::Client,
    endpoint: reqwest::Url,
    host: String,
    region_id: String,
    credentials: Credentials,
    signature_version: SignatureVersion,
    retry: RetryPolicy,
}

impl std::fmt::Debug for EcsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EcsClient")
            .field("endpoint", &self.endpoint.as_str())
            .field("region_id", &self.region_id)
            .field("signature_version", &self.signature_version)
            .field("credentials", &self.credentials)
            .finish_non_exhaustive()
    }
}

/// The default endpoint: the region's VPC endpoint, reachable without internet.
pub fn default_endpoint(region_id: &str) -> String {
    format!("https://ecs-vpc.{region_id}.aliyuncs.com")
}

/// True for 127.0.0.0/8, ::1 and `localhost`: the only hosts plain http may reach.
pub fn is_loopback_host(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl EcsClient {
    /// A client for `settings.endpoint` (default: [`default_endpoint`]) in `region_id`.
    /// https is required except for loopback endpoints (tests, local emulators).
    pub fn new(
        settings: &CloudSettings,
        region_id: &str,
        credentials: Credentials,
    ) -> Result<EcsClient, EcsError> {
        let endpoint = settings
            .endpoint
            .clone()
            .unwrap_or_else(|| default_endpoint(region_id));
        let bad = |reason: &str| EcsError::Endpoint {
            endpoint: endpoint.clone(),
            reason: reason.to_string(),
        };
        let mut url = reqwest::Url::parse(&endpoint).map_err(|e| bad(&e.to_string()))?;
        let host = url.host_str().ok_or_else(|| bad("no host"))?.to_string();
        match url.scheme() {
            "https" => {}
            "http" if is_loopback_host(&host) => {}
            "http" => {
                return Err(bad(
                    "plain http is only allowed to loopback addresses; use https",
                ))
            }
            _ => return Err(bad("must be an https:// URL")),
        }
        // A loopback endpoint (emulator, tests) is never reached through a proxy.
        let loopback = is_loopback_host(&host);
        let host_header = match url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host,
        };
        url.set_path("/");
        url.set_query(None);
        super::tls::install_provider();
        let mut builder = reqwest::Client::builder()
            // Never follow a redirect: it would replay the signed request (V1's
            // whole query, in `Referer`, and the STS token) to another server.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_keepalive(Duration::from_secs(30))
            .user_agent(concat!("appsnap/", env!("CARGO_PKG_VERSION")));
        if loopback {
            builder = builder.no_proxy();
        }
        let http = builder
            .build()
            .map_err(|e| bad(&e.without_url().to_string()))?;
        Ok(EcsClient {
            http,
            endpoint: url,
            host: host_header,
            region_id: region_id.to_string(),
            credentials,
            signature_version: settings.signature_version,
            retry: RetryPolicy::default(),
        })
    }

    /// Replaces the retry policy (tests use short backoffs).
    pub fn with_retry_policy(mut self, retry: RetryPolicy) -> EcsClient {
        self.retry = retry;
        self
    }

    /// The region every call is made in.
    pub fn region_id(&self) -> &str {
        &self.region_id
    }

    /// The endpoint URL.
    pub fn endpoint(&self) -> &str {
        self.endpoint.as_str()
    }

    /// The shared credentials this client signs with.
    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    /// Opens (and keeps alive) the TLS connection ahead of time, so the call made
    /// while file systems are frozen is one round trip. Any HTTP answer counts.
    pub async fn warm(&self, deadline: Instant) -> Result<(), EcsError> {
        let timeout = deadline.saturating_duration_since(Instant::now());
        self.http
            .head(self.endpoint.clone())
            .timeout(timeout)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| EcsError::Transport {
                action: "warm".into(),
                error: e.without_url(),
            })
    }

    /// DescribeDisks for one instance (optionally only `disk_ids`), all pages.
    pub async fn describe_disks(
        &self,
        instance_id: &str,
        disk_ids: &[DiskId],
        deadline: Instant,
    ) -> Result<Vec<Disk>, EcsError> {
        let mut base = vec![
            ("RegionId".to_string(), self.region_id.clone()),
            ("InstanceId".to_string(), instance_id.to_string()),
            ("MaxResults".to_string(), "100".to_string()),
        ];
        if !disk_ids.is_empty() {
            let ids: Vec<&str> = disk_ids.iter().map(DiskId::as_str).collect();
            base.push((
                "DiskIds".into(),
                serde_json::to_string(&ids).expect("strings serialize"),
            ));
        }
        self.paged("DescribeDisks", base, "Disks", "Disk", deadline)
            .await
    }

    /// CreateSnapshotGroup; returns the new `ssg-...` id. Retries reuse the request's
    /// ClientToken, so at most one group is created.
    pub async fn create_snapshot_group(
        &self,
        req: &CreateSnapshotGroup,
        deadline: Instant,
    ) -> Result<String, EcsError> {
        let params = req.params(&self.region_id)?;
        let v = self.call("CreateSnapshotGroup", &params, deadline).await?;
        v.get("SnapshotGroupId")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .ok_or_else(|| EcsError::Decode {
                action: "CreateSnapshotGroup".into(),
                http_status: 200,
                reason: "no SnapshotGroupId in the answer".into(),
            })
    }

    /// DescribeSnapshotGroups, all pages.
    pub async fn describe_snapshot_groups(
        &self,
        filter: &SnapshotGroupFilter,
        deadline: Instant,
    ) -> Result<Vec<SnapshotGroup>, EcsError> {
        let mut p = vec![("RegionId".to_string(), self.region_id.clone())];
        if let Some(i) = &filter.instance_id {
            p.push(("InstanceId".into(), i.clone()));
        }
        push_list(
            &mut p,
            "SnapshotGroupId",
            filter.ids.iter().map(String::as_str),
        );
        push_list(&mut p, "Status", filter.statuses.iter().map(String::as_str));
        if let Some(n) = &filter.name {
            p.push(("Name".into(), n.clone()));
        }
        push_tags(&mut p, &filter.tags);
        p.push(("MaxResults".into(), "100".into()));
        self.paged(
            "DescribeSnapshotGroups",
            p,
            "SnapshotGroups",
            "SnapshotGroup",
            deadline,
        )
        .await
    }

    /// DescribeSnapshots, all pages.
    pub async fn describe_snapshots(
        &self,
        filter: &SnapshotFilter,
        deadline: Instant,
    ) -> Result<Vec<Snapshot>, EcsError> {
        let mut p = vec![("RegionId".to_string(), self.region_id.clone())];
        if let Some(i) = &filter.instance_id {
            p.push(("InstanceId".into(), i.clone()));
        }
        if let Some(d) = &filter.disk_id {
            p.push(("DiskId".into(), d.as_str().into()));
        }
        if !filter.snapshot_ids.is_empty() {
            p.push((
                "SnapshotIds".into(),
                serde_json::to_string(&filter.snapshot_ids).expect("strings serialize"),
            ));
        }
        if let Some(s) = &filter.status {
            p.push(("Status".into(), s.clone()));
        }
        push_tags(&mut p, &filter.tags);
        p.push(("MaxResults".into(), "100".into()));
        self.paged("DescribeSnapshots", p, "Snapshots", "Snapshot", deadline)
            .await
    }

    /// TagResources on up to 50 resources of `resource_type` (e.g. `snapshot`;
    /// `snapshotgroup` is not a documented type: tag groups at creation).
    pub async fn tag_resources(
        &self,
        resource_type: &str,
        resource_ids: &[String],
        tags: &[Tag],
        deadline: Instant,
    ) -> Result<(), EcsError> {
        let invalid = |reason: String| EcsError::InvalidRequest {
            action: "TagResources".into(),
            reason,
        };
        if resource_ids.is_empty() || resource_ids.len() > MAX_TAG_RESOURCES {
            return Err(invalid(format!(
                "{} resources, 1..={MAX_TAG_RESOURCES} allowed",
                resource_ids.len()
            )));
        }
        if tags.is_empty() || tags.len() > MAX_TAGS {
            return Err(invalid(format!(
                "{} tags, 1..={MAX_TAGS} allowed",
                tags.len()
            )));
        }
        let mut p = vec![
            ("RegionId".to_string(), self.region_id.clone()),
            ("ResourceType".to_string(), resource_type.to_string()),
        ];
        push_list(
            &mut p,
            "ResourceId",
            resource_ids.iter().map(String::as_str),
        );
        push_tags(&mut p, tags);
        self.call("TagResources", &p, deadline).await.map(|_| ())
    }

    /// DeleteSnapshotGroup; a group that no longer exists counts as deleted.
    pub async fn delete_snapshot_group(
        &self,
        snapshot_group_id: &str,
        deadline: Instant,
    ) -> Result<DeleteOutcome, EcsError> {
        let p = vec![
            ("RegionId".to_string(), self.region_id.clone()),
            ("SnapshotGroupId".to_string(), snapshot_group_id.to_string()),
        ];
        let v = match self.call("DeleteSnapshotGroup", &p, deadline).await {
            Ok(v) => v,
            Err(e) if e.code().is_some_and(|c| GROUP_NOT_FOUND_CODES.contains(&c)) => {
                return Ok(DeleteOutcome::AlreadyGone);
            }
            Err(e) => return Err(e),
        };
        let failed: Vec<(String, String, String)> = v
            .pointer("/OperationProgressSet/OperationProgress")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|op| op.get("OperationStatus").and_then(Value::as_str) != Some("Success"))
            .map(|op| {
                let s = |k: &str| op.get(k).and_then(Value::as_str).unwrap_or("").to_string();
                let snapshot = op
                    .pointer("/RelatedItemSet/RelatedItem")
                    .and_then(Value::as_array)
                    .and_then(|items| items.first())
                    .and_then(|i| i.get("Value"))
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                (snapshot, s("ErrorCode"), s("ErrorMsg"))
            })
            .collect();
        Ok(if failed.is_empty() {
            DeleteOutcome::Deleted
        } else {
            DeleteOutcome::Partial(failed)
        })
    }

    /// Asks ECS whether these credentials may delete snapshot groups, without
    /// deleting anything: DeleteSnapshotGroup of [`PROBE_GROUP_ID`]. RAM is
    /// checked before the group is looked up, so `Forbidden*`/`NoPermission`
    /// means denied and the group's not-found code means allowed; any other
    /// answer is returned as the error it is (nothing can be concluded).
    pub async fn probe_delete_permission(
        &self,
        deadline: Instant,
    ) -> Result<DeletePermission, EcsError> {
        match self.delete_snapshot_group(PROBE_GROUP_ID, deadline).await {
            Ok(DeleteOutcome::AlreadyGone) => Ok(DeletePermission::Allowed),
            Ok(other) => Err(EcsError::Decode {
                action: "DeleteSnapshotGroup".into(),
                http_status: 200,
                reason: format!(
                    "the probe group {PROBE_GROUP_ID} cannot exist, yet ECS answered {other:?}"
                ),
            }),
            Err(e) => match e.code() {
                Some(c) if is_permission_denied(c) => Ok(DeletePermission::Denied(c.to_string())),
                _ => Err(e),
            },
        }
    }

    async fn paged<T: DeserializeOwned>(
        &self,
        action: &str,
        base: Vec<(String, String)>,
        outer: &str,
        inner: &str,
        deadline: Instant,
    ) -> Result<Vec<T>, EcsError> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let mut p = base.clone();
            if let Some(t) = &token {
                p.push(("NextToken".into(), t.clone()));
            }
            let v = self.call(action, &p, deadline).await?;
            let items = v
                .get(outer)
                .and_then(|o| o.get(inner))
                .cloned()
                .unwrap_or(Value::Array(Vec::new()));
            let page: Vec<T> = serde_json::from_value(items).map_err(|e| EcsError::Decode {
                action: action.into(),
                http_status: 200,
                reason: format!("{outer}.{inner}: {e}"),
            })?;
            out.extend(page);
            let next = v
                .get("NextToken")
                .and_then(Value::as_str)
                .filter(|t| !t.is_empty())
                .map(str::to_string);
            if next.is_none() || next == token {
                return Ok(out);
            }
            token = next;
        }
        Err(EcsError::Decode {
            action: action.into(),
            http_status: 200,
            reason: format!("more than {MAX_PAGES} pages"),
        })
    }

    /// Calls `action` with operation `params`, retrying retryable errors with
    /// backoff while the next attempt can start before `deadline`.
    pub async fn call(
        &self,
        action: &str,
        params: &[(String, String)],
        deadline: Instant,
    ) -> Result<Value, EcsError> {
        let mut attempts: u32 = 0;
        let mut last: Option<Box<EcsError>> = None;
        loop {
            if Instant::now() >= deadline {
                return Err(EcsError::DeadlineExceeded {
                    action: action.into(),
                    attempts,
                    last,
                });
            }
            attempts += 1;
            let (err, retry_after) = match self.attempt(action, params, deadline).await {
                Ok(v) => return Ok(v),
                Err(f) => (f.error, f.retry_after),
            };
            if !err.is_retryable() {
                return Err(err);
            }
            if attempts >= self.retry.max_attempts {
                tracing::warn!(action, attempts, error = %err, "giving up after the last allowed attempt");
                return Err(err);
            }
            let backoff = if err.is_throttling() {
                self.retry.throttling
            } else {
                self.retry.normal
            };
            // The server's own wait, when it names one, is a floor: retrying
            // sooner only earns another throttle.
            let delay = backoff
                .delay(attempts - 1)
                .max(retry_after.unwrap_or(Duration::ZERO));
            let Some(at) = next_attempt_at(Instant::now(), delay, deadline) else {
                tracing::warn!(action, attempts, error = %err, delay_ms = delay.as_millis() as u64, "no time left before the deadline for another attempt");
                return Err(EcsError::DeadlineExceeded {
                    action: action.into(),
                    attempts,
                    last: Some(Box::new(err)),
                });
            };
            tracing::warn!(action, attempts, error = %err, delay_ms = delay.as_millis() as u64, "retrying");
            last = Some(Box::new(err));
            tokio::time::sleep_until(at).await;
        }
    }

    /// One signed request.
    async fn attempt(
        &self,
        action: &str,
        params: &[(String, String)],
        deadline: Instant,
    ) -> Result<Value, Failed> {
        let key = self.credentials.get().await.map_err(EcsError::from)?;
        let timestamp = sign::timestamp(chrono::Utc::now());
        let nonce = sign::nonce();
        let parts = RequestParts {
            method: "POST",
            host: &self.host,
            action,
            version: ECS_API_VERSION,
            params,
            timestamp: &timestamp,
            nonce: &nonce,
        };
        let mut url = self.endpoint.clone();
        let mut headers: Vec<(String, String)> = Vec::new();
        match self.signature_version {
            SignatureVersion::V3 => {
                let signed = sign::sign_v3(&parts, &key.signing_key());
                if !signed.canonical_query.is_empty() {
                    url.set_query(Some(&signed.canonical_query));
                }
                headers = signed.headers;
            }
            SignatureVersion::V1 => {
                let signed = sign::sign_v1(&parts, &key.signing_key());
                url.set_query(Some(&signed.wire_query));
            }
        }
        let timeout = self
            .retry
            .attempt_timeout
            .min(deadline.saturating_duration_since(Instant::now()));
        // The RPC API answers XML unless asked otherwise (V1 asks with
        // `Format=JSON`); the official SDK sends this header on every call.
        let mut req = self
            .http
            .post(url)
            .timeout(timeout)
            .header(reqwest::header::ACCEPT, "application/json");
        for (k, v) in &headers {
            req = req.header(k.as_str(), v.as_str());
        }
        tracing::debug!(action, "sending ECS request");
        let transport = |e: reqwest::Error| EcsError::Transport {
            action: action.into(),
            error: e.without_url(),
        };
        let resp = req.send().await.map_err(transport)?;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let content_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let body = match super::body::read_capped(resp, super::body::ECS_BODY_LIMIT).await {
            Ok(b) => b,
            Err(super::body::BodyError::Transport(e)) => return Err(transport(e).into()),
            Err(super::body::BodyError::TooLarge) => {
                return Err(EcsError::TooLarge {
                    action: action.into(),
                    http_status: status,
                    limit: super::body::ECS_BODY_LIMIT,
                }
                .into())
            }
        };
        let parsed: Result<Value, _> = serde_json::from_slice(&body);
        if (200..300).contains(&status) {
            let v = parsed.map_err(|e| EcsError::Decode {
                action: action.into(),
                http_status: status,
                reason: not_json(&content_type, &body, &e),
            })?;
            tracing::debug!(
                action,
                request_id = v
                    .get("RequestId")
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or(""),
                "ECS request succeeded"
            );
            return Ok(v);
        }
        Err(Failed {
            error: decode_error(action, status, &body, parsed.ok(), &key),
            retry_after,
        })
    }
}

/// ECS's "the caller may not do this" codes (`Forbidden.RAM`,
/// `Forbidden.NotAuthorized`, `NoPermission`, ...).
pub fn is_permission_denied(code: &str) -> bool {
    code.starts_with("Forbidden") || code.contains("NoPermission")
}

/// Header by which a throttled answer says how long to wait before retrying.
pub const RETRY_AFTER_HEADER: &str = "x-acs-retry-after";

/// Reads `x-acs-retry-after`: whole **milliseconds** (the official
/// tea-openapi `Utils.get_throttling_time_left` takes it as an int and the
/// retry policy sleeps it as milliseconds, capped at 120 s). Absent, empty,
/// unparsable or non-positive values mean "no hint", as there. Capped at
/// 120 s like the SDK, so a garbled value cannot park a retry for days.
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    let ms: i64 = v.trim().parse().ok()?;
    (ms > 0).then(|| Duration::from_millis(ms.unsigned_abs()).min(MAX_RETRY_AFTER))
}

/// The SDK's cap on any single retry wait (`MAX_DELAY_TIME`, 120 s).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(120);

/// A failed attempt: the error, plus the server's retry hint if it gave one.
struct Failed {
    error: EcsError,
    retry_after: Option<Duration>,
}

impl From<EcsError> for Failed {
    fn from(error: EcsError) -> Failed {
        Failed {
            error,
            retry_after: None,
        }
    }
}

/// Says what came back instead of JSON: XML (the API's default format when
/// no format is asked for), an HTML page (a proxy or captive portal), or
/// something else, with the first bytes (a success body holds no secret).
fn not_json(content_type: &str, body: &[u8], e: &serde_json::Error) -> String {
    let text = String::from_utf8_lossy(body);
    let head = text.trim_start();
    let lower: String = head
        .chars()
        .take(64)
        .collect::<String>()
        .to_ascii_lowercase();
    let kind = if lower.starts_with("<?xml") || content_type.contains("xml") {
        "an XML document (the API's default format; appsnap asks for JSON with Accept: application/json)"
    } else if lower.starts_with("<!doctype html")
        || lower.starts_with("<html")
        || content_type.contains("html")
    {
        "an HTML page (a proxy or a wrong endpoint?)"
    } else if head.is_empty() {
        "an empty body"
    } else {
        "not JSON"
    };
    let snippet: String = head.chars().take(120).collect();
    let ct = if content_type.is_empty() {
        "none"
    } else {
        content_type
    };
    format!("expected JSON, got {kind} (Content-Type {ct}; {e}): {snippet:?}")
}

/// Turns an error answer into [`EcsError::Api`] (or `Decode` when it has no
/// `Code`), redacting whatever the server echoed of our request.
fn decode_error(
    action: &str,
    status: u16,
    body: &[u8],
    parsed: Option<Value>,
    key: &AccessKey,
) -> EcsError {
    let field = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    let secrets: Vec<Secret> = std::iter::once(key.access_key_secret.clone())
        .chain(key.security_token.clone())
        .flat_map(|s| {
            let enc = Secret::new(sign::percent_encode(s.expose()));
            let enc2 = Secret::new(sign::percent_encode(enc.expose()));
            [s, enc, enc2]
        })
        .collect();
    let refs: Vec<&Secret> = secrets.iter().collect();
    match parsed
        .as_ref()
        .and_then(|v| field(v, "Code").map(|c| (v, c)))
    {
        Some((v, code)) => EcsError::Api {
            action: action.into(),
            message: scrub(
                &redact_string_to_sign(&field(v, "Message").unwrap_or_default()),
                &refs,
            ),
            request_id: field(v, "RequestId"),
            code,
            http_status: status,
        },
        None if (300..400).contains(&status) => EcsError::Decode {
            action: action.into(),
            http_status: status,
            reason: "a redirect, not followed (appsnap never follows redirects: they would replay the signed request elsewhere)".into(),
        },
        None => {
            let text = String::from_utf8_lossy(body);
            let snippet: String = text.chars().take(200).collect();
            EcsError::Decode {
                action: action.into(),
                http_status: status,
                reason: format!(
                    "error answer without a Code: {}",
                    scrub(&redact_string_to_sign(&snippet), &refs)
                ),
            }
        }
    }
}

/// Cuts off the server's echoed string-to-sign (`SignatureDoesNotMatch`): it
/// contains the AccessKeyId and every parameter, the STS token included in v1.
pub fn redact_string_to_sign(message: &str) -> String {
    let lower = message.to_ascii_lowercase();
    match lower.find("string to sign") {
        Some(i) => {
            let after = &message[i..];
            let cut = after.find(':').map(|c| i + c + 1).unwrap_or(message.len());
            format!("{}{REDACTED}", &message[..cut])
        }
        None => message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_echoed_string_to_sign() {
        let m = "Specified signature is not matched with our calculation. server string to sign is:POST&%2F&AccessKeyId%3DSTS.x%26SecurityToken%3Dtok";
        let r = redact_string_to_sign(m);
        assert_eq!(
            r,
            "Specified signature is not matched with our calculation. server string to sign is:<redacted>"
        );
        assert_eq!(redact_string_to_sign("plain"), "plain");
    }

    #[test]
    fn retryable_classification() {
        let api = |code: &str, s: u16| EcsError::Api {
            action: "A".into(),
            code: code.into(),
            message: String::new(),
            request_id: None,
            http_status: s,
        };
        for (code, s) in [
            ("Throttling", 400),
            ("Throttling.User", 403),
            ("Throttling.Api", 400),
            ("ServiceUnavailable", 503),
            ("InternalError", 500),
            ("Whatever", 502),
        ] {
            assert!(api(code, s).is_retryable(), "{code}");
        }
        for (code, s) in [
            ("QuotaExceed.Snapshot", 403),
            ("SignatureDoesNotMatch", 400),
            ("IncorrectDiskStatus.CreatingSnapshot", 403),
            ("InvalidDiskId.NotFound", 404),
        ] {
            assert!(!api(code, s).is_retryable(), "{code}");
        }
        assert!(api("Throttling.User", 400).is_throttling());
    }

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
    fn retry_after_is_milliseconds_and_only_positive() {
        assert_eq!(parse_retry_after("1500"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_retry_after(" 20 "), Some(Duration::from_millis(20)));
        for v in ["", "0", "-5", "soon", "1.5"] {
            assert_eq!(parse_retry_after(v), None, "{v:?}");
        }
        assert_eq!(
            parse_retry_after("999999999999"),
            Some(Duration::from_secs(120))
        );
    }

    #[test]
    fn loopback_detection() {
        for h in ["127.0.0.1", "127.9.9.9", "localhost", "[::1]", "LOCALHOST"] {
            assert!(is_loopback_host(h), "{h}");
        }
        for h in ["10.0.0.1", "ecs.aliyuncs.com", "100.100.100.200", "[::2]"] {
            assert!(!is_loopback_host(h), "{h}");
        }
    }

    #[test]
    fn client_tokens_are_unique_and_short() {
        let a = ClientToken::generate();
        assert!(a.as_str().len() <= 64 && a.as_str().starts_with("appsnap-"));
        assert_ne!(a, ClientToken::generate());
        assert!(ClientToken::parse(&"x".repeat(65)).is_err());
    }
}
