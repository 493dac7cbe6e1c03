//! The ECS client: endpoint checks, the typed calls, paging and the retry
//! loop around each signed attempt.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::time::Instant;

use super::error::{is_permission_denied, EcsError};
use super::types::*;
use super::wire::Failed;
use crate::cloud::credentials::Credentials;
use crate::cloud::retry::{drive, Failure, GaveUp, Limits, Next, RetryPolicy};
use crate::policy::types::{CloudSettings, DiskId, SignatureVersion};

/// Guard against a server that keeps returning a `NextToken`.
const MAX_PAGES: usize = 1000;

/// The ECS API client: one HTTP client (keep-alive) and the shared credentials.
pub struct EcsClient {
    pub(super) http: reqwest::Client,
    pub(super) endpoint: reqwest::Url,
    pub(super) host: String,
    pub(super) region_id: String,
    pub(super) credentials: Credentials,
    pub(super) signature_version: SignatureVersion,
    pub(super) retry: RetryPolicy,
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
        crate::cloud::tls::install_provider();
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
        self.create_group(req, deadline, false)
            .await
            .map_err(Throttled::into_error)
    }

    /// CreateSnapshotGroup as a frozen window needs it: failures a quick
    /// retry can mend (5xx, resets) are retried as usual, but a throttled
    /// answer returns at once, with the server's `x-acs-retry-after`, so
    /// that the caller can thaw before it waits: backing off inside the
    /// freeze would stretch the application's pause by the whole wait. ECS
    /// did not process a throttled request, so asking again later with the
    /// same ClientToken cannot make two groups.
    pub async fn create_snapshot_group_unthrottled(
        &self,
        req: &CreateSnapshotGroup,
        deadline: Instant,
    ) -> Result<String, Throttled> {
        self.create_group(req, deadline, true).await
    }

    async fn create_group(
        &self,
        req: &CreateSnapshotGroup,
        deadline: Instant,
        return_throttled: bool,
    ) -> Result<String, Throttled> {
        let params = req.params(&self.region_id).map_err(Throttled::No)?;
        let v = self
            .call_with("CreateSnapshotGroup", &params, deadline, return_throttled)
            .await?;
        v.get("SnapshotGroupId")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .ok_or_else(|| {
                Throttled::No(EcsError::Decode {
                    action: "CreateSnapshotGroup".into(),
                    http_status: 200,
                    reason: "no SnapshotGroupId in the answer".into(),
                })
            })
    }

    /// DescribeSnapshotGroups, all pages.
    pub async fn describe_snapshot_groups(
        &self,
        filter: &SnapshotGroupFilter,
        deadline: Instant,
    ) -> Result<Vec<SnapshotGroup>, EcsError> {
        self.snapshot_groups(filter, deadline, false)
            .await
            .map_err(Throttled::into_error)
    }

    /// DescribeSnapshotGroups as a frozen window needs it: a throttled answer
    /// returns at once instead of being retried after a backoff, so that the
    /// window decides (it asks again at its own short cadence: a backoff
    /// while frozen would stretch the application's pause by the whole wait).
    pub async fn describe_snapshot_groups_unthrottled(
        &self,
        filter: &SnapshotGroupFilter,
        deadline: Instant,
    ) -> Result<Vec<SnapshotGroup>, Throttled> {
        self.snapshot_groups(filter, deadline, true).await
    }

    async fn snapshot_groups(
        &self,
        filter: &SnapshotGroupFilter,
        deadline: Instant,
        return_throttled: bool,
    ) -> Result<Vec<SnapshotGroup>, Throttled> {
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
        self.paged_with(
            "DescribeSnapshotGroups",
            p,
            "SnapshotGroups",
            "SnapshotGroup",
            deadline,
            return_throttled,
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

    pub(super) async fn paged<T: DeserializeOwned>(
        &self,
        action: &str,
        base: Vec<(String, String)>,
        outer: &str,
        inner: &str,
        deadline: Instant,
    ) -> Result<Vec<T>, EcsError> {
        self.paged_with(action, base, outer, inner, deadline, false)
            .await
            .map_err(Throttled::into_error)
    }

    /// [`paged`](Self::paged); with `return_throttled`, a throttled page
    /// ends the call at once (see [`call_with`](Self::call_with)).
    async fn paged_with<T: DeserializeOwned>(
        &self,
        action: &str,
        base: Vec<(String, String)>,
        outer: &str,
        inner: &str,
        deadline: Instant,
        return_throttled: bool,
    ) -> Result<Vec<T>, Throttled> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let mut p = base.clone();
            if let Some(t) = &token {
                p.push(("NextToken".into(), t.clone()));
            }
            let v = self
                .call_with(action, &p, deadline, return_throttled)
                .await?;
            let items = v
                .get(outer)
                .and_then(|o| o.get(inner))
                .cloned()
                .unwrap_or(Value::Array(Vec::new()));
            let page: Vec<T> = serde_json::from_value(items).map_err(|e| {
                Throttled::No(EcsError::Decode {
                    action: action.into(),
                    http_status: 200,
                    reason: format!("{outer}.{inner}: {e}"),
                })
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
        Err(Throttled::No(EcsError::Decode {
            action: action.into(),
            http_status: 200,
            reason: format!("more than {MAX_PAGES} pages"),
        }))
    }

    /// Calls `action` with operation `params`, retrying retryable errors with
    /// backoff while the next attempt can start before `deadline`.
    pub async fn call(
        &self,
        action: &str,
        params: &[(String, String)],
        deadline: Instant,
    ) -> Result<Value, EcsError> {
        self.call_with(action, params, deadline, false)
            .await
            .map_err(Throttled::into_error)
    }

    /// [`call`](Self::call); with `return_throttled`, a throttled answer
    /// ends the call at once (with the server's wait) instead of being retried.
    async fn call_with(
        &self,
        action: &str,
        params: &[(String, String)],
        deadline: Instant,
        return_throttled: bool,
    ) -> Result<Value, Throttled> {
        let limits = Limits {
            max_attempts: self.retry.max_attempts,
            deadline,
        };
        let observe = |next: Next<'_, Throttled>| match next {
            Next::Retrying {
                attempts,
                error,
                delay,
            } => {
                tracing::warn!(action, attempts, %error, delay_ms = delay.as_millis() as u64, "retrying")
            }
            Next::LastAttempt { attempts, error } => {
                tracing::warn!(action, attempts, %error, "giving up after the last allowed attempt")
            }
            Next::NoTimeLeft {
                attempts,
                error,
                delay,
            } => {
                tracing::warn!(action, attempts, %error, delay_ms = delay.as_millis() as u64, "no time left before the deadline for another attempt")
            }
        };
        let result = drive(limits, observe, |_| async {
            self.attempt(action, params, deadline).await.map_err(|f| {
                if return_throttled && f.error.is_throttling() {
                    return Failure::Fatal(Throttled::Yes {
                        error: f.error,
                        retry_after: f.retry_after,
                    });
                }
                match self.classify(f) {
                    Failure::Fatal(e) => Failure::Fatal(Throttled::No(e)),
                    Failure::Retry {
                        error,
                        backoff,
                        after,
                    } => Failure::Retry {
                        error: Throttled::No(error),
                        backoff,
                        after,
                    },
                }
            })
        })
        .await;
        result.map_err(|gave_up| match gave_up {
            GaveUp::Failed(t) => t,
            GaveUp::Deadline { attempts, last } => Throttled::No(EcsError::DeadlineExceeded {
                action: action.into(),
                attempts,
                last: last.map(|t| Box::new(t.into_error())),
            }),
        })
    }

    /// Which failures are retried, and on which schedule: throttling waits
    /// longer; the server's `x-acs-retry-after` is a floor (retrying sooner
    /// only earns another throttle).
    fn classify(&self, f: Failed) -> Failure<EcsError> {
        if !f.error.is_retryable() {
            return Failure::Fatal(f.error);
        }
        let backoff = if f.error.is_throttling() {
            self.retry.throttling
        } else {
            self.retry.normal
        };
        Failure::Retry {
            error: f.error,
            backoff,
            after: f.retry_after,
        }
    }
}

/// How a call that returns throttled answers at once
/// ([`EcsClient::create_snapshot_group_unthrottled`],
/// [`EcsClient::describe_snapshot_groups_unthrottled`]) failed.
#[derive(Debug)]
pub enum Throttled {
    /// ECS throttled the request (it was not processed); ask again after
    /// `retry_after` at the earliest, when the server said.
    Yes {
        /// The `Throttling*` answer.
        error: EcsError,
        /// The server's `x-acs-retry-after`.
        retry_after: Option<Duration>,
    },
    /// Any other failure, as [`EcsClient::call`] reports it.
    No(EcsError),
}

impl std::fmt::Display for Throttled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Throttled::Yes { error, .. } | Throttled::No(error) => error.fmt(f),
        }
    }
}

impl Throttled {
    /// The ECS error either way.
    pub fn into_error(self) -> EcsError {
        match self {
            Throttled::Yes { error, .. } | Throttled::No(error) => error,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_detection() {
        for h in ["127.0.0.1", "127.9.9.9", "localhost", "[::1]", "LOCALHOST"] {
            assert!(is_loopback_host(h), "{h}");
        }
        for h in ["10.0.0.1", "ecs.aliyuncs.com", "100.100.100.200", "[::2]"] {
            assert!(!is_loopback_host(h), "{h}");
        }
    }
}
