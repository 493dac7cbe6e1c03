//! Client for the ECS instance metadata service (IMDS, `100.100.100.200`).
//!
//! Hardened mode first: a session token from `PUT /latest/api/token` rides on
//! every GET, so appsnap keeps working on instances set to `HttpTokens=required`.
//! The token is reused until shortly before its TTL ends and re-acquired on 401.
//! Only when the token API is *absent* (404/405 to the PUT) does the client
//! read in normal mode (no token), with a warning, as the official credentials
//! library does; `ALIBABA_CLOUD_IMDSV1_DISABLED=true` or `[cloud]
//! imds_v1_fallback = false` forbid that. A timeout or 5xx is never "absent":
//! falling back on those would let a flaky service downgrade the instance.
//! IMDS is link-local plain HTTP: the client never uses a proxy (a proxy would
//! receive role credentials), never sends `X-Forwarded-For` (IMDS answers 403),
//! and has short timeouts because the service is either there at once or not at all.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::access_key::AccessKey;
use super::retry::{drive_attempts, Backoff, Failure};
use super::secret::Secret;
use crate::policy::types::CloudSettings;

/// Header carrying the requested token lifetime on `PUT /latest/api/token`.
pub const TOKEN_TTL_HEADER: &str = "X-aliyun-ecs-metadata-token-ttl-seconds";
/// Header carrying the session token on every GET.
pub const TOKEN_HEADER: &str = "X-aliyun-ecs-metadata-token";
/// Token lifetime requested by default: the maximum IMDS allows (6 h).
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(21_600);
/// The official credentials library's switch that forbids normal mode.
pub const IMDSV1_DISABLED_ENV: &str = "ALIBABA_CLOUD_IMDSV1_DISABLED";
/// How long "the token API is absent" is believed before asking again, so an
/// instance switched to hardened mode is noticed without a restart.
const NORMAL_MODE_RECHECK: Duration = Duration::from_secs(300);

/// Whether the environment forbids normal mode (`ALIBABA_CLOUD_IMDSV1_DISABLED=true`,
/// case-insensitive, as the official library reads it).
pub fn imds_v1_disabled_by_env() -> bool {
    std::env::var(IMDSV1_DISABLED_ENV).is_ok_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

/// Why a metadata read failed; never carries a token or credential.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    /// The configured base URL is not a usable http(s) URL.
    #[error("invalid metadata endpoint {endpoint:?}: {reason}")]
    Endpoint {
        /// What was configured.
        endpoint: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No HTTP answer (refused, reset, timed out) after every try.
    #[error("metadata service unreachable for {path} after {tries} tries: {}", super::error_chain(.error))]
    Unreachable {
        /// Path under `/latest/`.
        path: String,
        /// How many requests were sent.
        tries: u32,
        /// The last transport error (URL stripped; its causes are in the message).
        error: reqwest::Error,
    },
    /// The service answered with an unexpected status.
    #[error("metadata service answered HTTP {status} for {path}")]
    Status {
        /// Path under `/latest/`.
        path: String,
        /// HTTP status code.
        status: u16,
    },
    /// The item does not exist (e.g. no RAM role attached to the instance).
    #[error("metadata item {path} does not exist (HTTP 404)")]
    NotFound {
        /// Path under `/latest/`.
        path: String,
    },
    /// The token request was refused (400: bad TTL, 403: forwarded request).
    #[error("metadata service refused a session token: HTTP {status}")]
    TokenRefused {
        /// HTTP status code.
        status: u16,
    },
    /// The service has no token API and normal mode is forbidden.
    #[error("metadata service has no session-token API (HTTP {status} to PUT /latest/api/token) and normal mode (no token) is forbidden by ALIBABA_CLOUD_IMDSV1_DISABLED=true or [cloud] imds_v1_fallback = false")]
    TokenApiAbsent {
        /// HTTP status code (404 or 405).
        status: u16,
    },
    /// The answer was larger than [`super::body::IMDS_BODY_LIMIT`]; reading
    /// stopped there.
    #[error("metadata service answer for {path} is larger than the {} limit; refused", crate::securefs::human_size(*.limit))]
    TooLarge {
        /// Path under `/latest/`.
        path: String,
        /// The limit, bytes.
        limit: u64,
    },
    /// No RAM role is attached to this instance.
    #[error(
        "no RAM role is attached to this instance (metadata ram/security-credentials/ is empty)"
    )]
    NoRole,
    /// The role credentials document is unusable.
    #[error("credentials of RAM role {role:?} from the metadata service are unusable: {reason}")]
    BadCredentials {
        /// Role name.
        role: String,
        /// What is wrong (never the values).
        reason: String,
    },
}

impl MetadataError {
    /// Whether the failure means no ECS metadata service is there at all:
    /// nothing answered, the token API is missing, or the service lacks the
    /// identity items every instance has. `check` then says "not an ECS
    /// instance" in words rather than quoting a transport error.
    pub fn suggests_not_ecs(&self) -> bool {
        match self {
            MetadataError::Unreachable { .. } | MetadataError::TokenApiAbsent { .. } => true,
            MetadataError::NotFound { path } => matches!(
                path.as_str(),
                "meta-data/instance-id" | "meta-data/region-id" | "meta-data/zone-id"
            ),
            _ => false,
        }
    }
}

/// Identity of the instance appsnap runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceIdentity {
    /// `i-...`
    pub instance_id: String,
    /// e.g. `cn-hangzhou`
    pub region_id: String,
    /// e.g. `cn-hangzhou-i`
    pub zone_id: String,
}

/// The session token, or `None` while the token API is absent (normal mode).
struct CachedToken {
    value: Option<Secret>,
    renew_at: Instant,
}

/// What the token PUT gave: a token, or proof that the API does not exist.
enum TokenAnswer {
    Token(Secret),
    Absent { status: u16 },
}

/// IMDS client; cheap to share behind an `Arc`, safe to call concurrently.
pub struct MetadataClient {
    http: reqwest::Client,
    base: String,
    token_ttl: Duration,
    tries: u32,
    backoff: Backoff,
    v1_fallback: bool,
    warned_normal_mode: std::sync::atomic::AtomicBool,
    token: Mutex<Option<CachedToken>>,
}

impl std::fmt::Debug for MetadataClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetadataClient")
            .field("base", &self.base)
            .field("token_ttl", &self.token_ttl)
            .field("v1_fallback", &self.v1_fallback)
            .finish_non_exhaustive()
    }
}

impl MetadataClient {
    /// A client for `settings.metadata_endpoint` with the production defaults
    /// (6 h token, 3 tries, 1 s connect / 2 s read timeouts); normal mode only
    /// if both `imds_v1_fallback` and the environment allow it.
    pub fn new(settings: &CloudSettings) -> Result<MetadataClient, MetadataError> {
        Ok(MetadataClient::with_endpoint(&settings.metadata_endpoint)?
            .with_v1_fallback(settings.imds_v1_fallback && !imds_v1_disabled_by_env()))
    }

    /// A client for an explicit base URL (`http://100.100.100.200` in production);
    /// normal-mode fallback as the environment says (allowed by default).
    pub fn with_endpoint(endpoint: &str) -> Result<MetadataClient, MetadataError> {
        let bad = |reason: &str| MetadataError::Endpoint {
            endpoint: endpoint.to_string(),
            reason: reason.to_string(),
        };
        let url = reqwest::Url::parse(endpoint).map_err(|e| bad(&e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(bad("must be an http:// or https:// URL with a host"));
        }
        super::tls::install_provider();
        let http = reqwest::Client::builder()
            .no_proxy()
            // A redirect would carry the IMDS token (and the STS credentials it
            // guards) to whatever the Location names: a 3xx is an error.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(1))
            .read_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| bad(&e.without_url().to_string()))?;
        Ok(MetadataClient {
            http,
            base: endpoint.trim_end_matches('/').to_string(),
            token_ttl: DEFAULT_TOKEN_TTL,
            tries: 3,
            backoff: Backoff {
                initial: Duration::from_millis(200),
                max: Duration::from_secs(1),
            },
            v1_fallback: !imds_v1_disabled_by_env(),
            warned_normal_mode: std::sync::atomic::AtomicBool::new(false),
            token: Mutex::new(None),
        })
    }

    /// Allows or forbids normal mode when the token API is absent.
    pub fn with_v1_fallback(mut self, allowed: bool) -> MetadataClient {
        self.v1_fallback = allowed;
        self
    }

    /// Changes the requested token lifetime (whole seconds, 1..=21600).
    pub fn with_token_ttl(mut self, ttl: Duration) -> MetadataClient {
        self.token_ttl = ttl.clamp(Duration::from_secs(1), DEFAULT_TOKEN_TTL);
        self
    }

    /// Changes how often and how patiently a failing request is retried.
    pub fn with_retries(mut self, tries: u32, backoff: Backoff) -> MetadataClient {
        self.tries = tries.max(1);
        self.backoff = backoff;
        self
    }

    /// `meta-data/instance-id`.
    pub async fn instance_id(&self) -> Result<String, MetadataError> {
        self.get_value("meta-data/instance-id").await
    }

    /// `meta-data/region-id`.
    pub async fn region_id(&self) -> Result<String, MetadataError> {
        self.get_value("meta-data/region-id").await
    }

    /// `meta-data/zone-id`.
    pub async fn zone_id(&self) -> Result<String, MetadataError> {
        self.get_value("meta-data/zone-id").await
    }

    /// Instance, region and zone in one call, for startup and `check`.
    pub async fn identity(&self) -> Result<InstanceIdentity, MetadataError> {
        Ok(InstanceIdentity {
            instance_id: self.instance_id().await?,
            region_id: self.region_id().await?,
            zone_id: self.zone_id().await?,
        })
    }

    /// Name of the RAM role attached to the instance.
    pub async fn role_name(&self) -> Result<String, MetadataError> {
        let body = match self.get("meta-data/ram/security-credentials/").await {
            Err(MetadataError::NotFound { .. }) => return Err(MetadataError::NoRole),
            other => other?,
        };
        body.lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .map(|l| l.trim_end_matches('/').to_string())
            .ok_or(MetadataError::NoRole)
    }

    /// The role's current STS credentials; rejects anything but `Code: Success`.
    pub async fn role_credentials(&self, role: &str) -> Result<AccessKey, MetadataError> {
        let path = format!("meta-data/ram/security-credentials/{role}");
        let body = self.get(&path).await?;
        parse_role_credentials(role, &body)
    }

    /// A trimmed single-value item.
    async fn get_value(&self, path: &str) -> Result<String, MetadataError> {
        Ok(self.get(path).await?.trim().to_string())
    }

    /// GET `/latest/<path>` with the session token; retries transport errors and
    /// 5xx, and re-acquires the token once on 401.
    pub async fn get(&self, path: &str) -> Result<String, MetadataError> {
        let url = format!("{}/latest/{}", self.base, path);
        let retoken_done = AtomicBool::new(false);
        drive_attempts(
            self.tries,
            |_| {},
            |attempt| self.get_once(&url, path, attempt, &retoken_done),
        )
        .await
    }

    /// One try of [`Self::get`]; a token rejected for the first time in the
    /// call is replaced and the request resent within the same try.
    async fn get_once(
        &self,
        url: &str,
        path: &str,
        attempt: u32,
        retoken_done: &AtomicBool,
    ) -> Result<String, Failure<MetadataError>> {
        loop {
            let token = self.token().await.map_err(Failure::Fatal)?;
            let mut req = self.http.get(url);
            if let Some(t) = &token {
                req = req.header(TOKEN_HEADER, t.expose());
            }
            let resp = match req.send().await {
                Ok(resp) => resp,
                Err(e) => {
                    tracing::debug!(path, attempt, error = %e.without_url_ref(), "metadata GET failed");
                    return Err(self.retry(MetadataError::Unreachable {
                        path: path.to_string(),
                        tries: attempt,
                        error: e.without_url(),
                    }));
                }
            };
            let status = resp.status().as_u16();
            return match status {
                200..=299 => body_text(resp, path, attempt).await.map_err(Failure::Fatal),
                // 401: the token expired. 403 in normal mode: the
                // instance may have been switched to hardened-only.
                401 | 403
                    if (status == 401 || token.is_none())
                        && !retoken_done.swap(true, Ordering::Relaxed) =>
                {
                    tracing::debug!(path, "metadata token rejected (401); acquiring a new one");
                    *self.token.lock().await = None;
                    continue;
                }
                404 => Err(Failure::Fatal(MetadataError::NotFound {
                    path: path.to_string(),
                })),
                500..=599 => {
                    tracing::debug!(path, attempt, status, "metadata GET answered 5xx");
                    Err(self.retry(MetadataError::Status {
                        path: path.to_string(),
                        status,
                    }))
                }
                _ => Err(Failure::Fatal(MetadataError::Status {
                    path: path.to_string(),
                    status,
                })),
            };
        }
    }

    /// A failure worth another try, on this client's schedule.
    fn retry(&self, error: MetadataError) -> Failure<MetadataError> {
        Failure::Retry {
            error,
            backoff: self.backoff,
            after: None,
        }
    }

    /// The cached session token, or a new one when none is cached or it is
    /// about to end; `None` in normal mode (token API absent, fallback allowed).
    async fn token(&self) -> Result<Option<Secret>, MetadataError> {
        let mut guard = self.token.lock().await;
        if let Some(t) = guard.as_ref() {
            if Instant::now() < t.renew_at {
                return Ok(t.value.clone());
            }
        }
        let requested_at = Instant::now();
        let cached = match self.fetch_token().await? {
            TokenAnswer::Token(value) => {
                // Renew a little before the TTL ends, so a token never expires in flight.
                let margin = (self.token_ttl / 4).min(Duration::from_secs(60));
                CachedToken {
                    value: Some(value),
                    renew_at: requested_at + self.token_ttl - margin,
                }
            }
            TokenAnswer::Absent { status } if self.v1_fallback => {
                use std::sync::atomic::Ordering;
                if !self.warned_normal_mode.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        status,
                        "the metadata service has no session-token API (HTTP {status} to PUT /latest/api/token): reading it in normal mode (no token); set {IMDSV1_DISABLED_ENV}=true or [cloud] imds_v1_fallback = false to forbid this"
                    );
                }
                CachedToken {
                    value: None,
                    renew_at: requested_at + NORMAL_MODE_RECHECK,
                }
            }
            TokenAnswer::Absent { status } => return Err(MetadataError::TokenApiAbsent { status }),
        };
        let value = cached.value.clone();
        *guard = Some(cached);
        Ok(value)
    }

    async fn fetch_token(&self) -> Result<TokenAnswer, MetadataError> {
        let url = format!("{}/latest/api/token", self.base);
        drive_attempts(
            self.tries,
            |_| {},
            |attempt| self.fetch_token_once(&url, attempt),
        )
        .await
    }

    /// One try of [`Self::fetch_token`].
    async fn fetch_token_once(
        &self,
        url: &str,
        attempt: u32,
    ) -> Result<TokenAnswer, Failure<MetadataError>> {
        let path = "api/token";
        let sent = self
            .http
            .put(url)
            .header(TOKEN_TTL_HEADER, self.token_ttl.as_secs().to_string())
            .send()
            .await;
        let resp = match sent {
            Ok(resp) => resp,
            Err(e) => {
                tracing::debug!(attempt, error = %e.without_url_ref(), "metadata token request failed");
                return Err(self.retry(MetadataError::Unreachable {
                    path: path.into(),
                    tries: attempt,
                    error: e.without_url(),
                }));
            }
        };
        let status = resp.status().as_u16();
        match status {
            200..=299 => {
                let body = body_text(resp, path, attempt)
                    .await
                    .map_err(Failure::Fatal)?;
                let token = Secret::new(body.trim());
                if token.is_empty() {
                    return Err(Failure::Fatal(MetadataError::TokenRefused { status }));
                }
                Ok(TokenAnswer::Token(token))
            }
            // The API itself does not exist (an IMDS that predates
            // hardened mode); anything else is not proof of that.
            404 | 405 => Ok(TokenAnswer::Absent { status }),
            500..=599 => {
                tracing::debug!(attempt, status, "metadata token request answered 5xx");
                Err(self.retry(MetadataError::Status {
                    path: path.into(),
                    status,
                }))
            }
            _ => Err(Failure::Fatal(MetadataError::TokenRefused { status })),
        }
    }
}

/// A 2xx body as text, at most [`super::body::IMDS_BODY_LIMIT`] bytes.
async fn body_text(
    resp: reqwest::Response,
    path: &str,
    attempt: u32,
) -> Result<String, MetadataError> {
    use super::body::{read_capped, BodyError, IMDS_BODY_LIMIT};
    match read_capped(resp, IMDS_BODY_LIMIT).await {
        Ok(b) => Ok(String::from_utf8_lossy(&b).into_owned()),
        Err(BodyError::Transport(e)) => Err(MetadataError::Unreachable {
            path: path.to_string(),
            tries: attempt,
            error: e.without_url(),
        }),
        Err(BodyError::TooLarge) => Err(MetadataError::TooLarge {
            path: path.to_string(),
            limit: IMDS_BODY_LIMIT,
        }),
    }
}

/// `reqwest::Error::without_url` takes `self`; this formats a borrowed error without its URL.
trait WithoutUrlRef {
    fn without_url_ref(&self) -> String;
}

impl WithoutUrlRef for reqwest::Error {
    fn without_url_ref(&self) -> String {
        let s = self.to_string();
        match self.url() {
            Some(u) => s.replace(u.as_str(), "<url>"),
            None => s,
        }
    }
}

/// The JSON document IMDS serves for a role; secrets go straight into `Secret`.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawRoleCredentials {
    code: Option<String>,
    access_key_id: Option<String>,
    access_key_secret: Option<Secret>,
    security_token: Option<Secret>,
    expiration: Option<String>,
}

/// Parses and checks the role credentials document (`Code` must be `Success`,
/// `Expiration` is RFC 3339 UTC). Error messages never quote values.
pub fn parse_role_credentials(role: &str, body: &str) -> Result<AccessKey, MetadataError> {
    let bad = |reason: String| MetadataError::BadCredentials {
        role: role.to_string(),
        reason,
    };
    // serde_json's message can quote the offending value; report only its position.
    let raw: RawRoleCredentials = serde_json::from_str(body).map_err(|e| {
        bad(format!(
            "not the expected JSON (line {}, column {})",
            e.line(),
            e.column()
        ))
    })?;
    match raw.code.as_deref() {
        Some("Success") => {}
        Some(code) => return Err(bad(format!("Code is {code:?}, not \"Success\""))),
        None => return Err(bad("no Code field".into())),
    }
    let access_key_id = raw
        .access_key_id
        .filter(|s| !s.is_empty())
        .ok_or_else(|| bad("no AccessKeyId".into()))?;
    let access_key_secret = raw
        .access_key_secret
        .filter(|s| !s.is_empty())
        .ok_or_else(|| bad("no AccessKeySecret".into()))?;
    let security_token = raw
        .security_token
        .filter(|s| !s.is_empty())
        .ok_or_else(|| bad("no SecurityToken".into()))?;
    let exp = raw.expiration.ok_or_else(|| bad("no Expiration".into()))?;
    let expiration: DateTime<Utc> = DateTime::parse_from_rfc3339(&exp)
        .map_err(|e| bad(format!("Expiration {exp:?} is not RFC 3339: {e}")))?
        .with_timezone(&Utc);
    Ok(AccessKey {
        access_key_id,
        access_key_secret,
        security_token: Some(security_token),
        expiration: Some(expiration),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_document() {
        let body = r#"{"AccessKeyId": "STS.abc", "AccessKeySecret": "s3cr3t-value",
            "Expiration": "2024-11-08T09:44:50Z", "SecurityToken": "tok-value-123",
            "LastUpdated": "2024-11-08T03:44:50Z", "Code": "Success"}"#;
        let k = parse_role_credentials("r", body).unwrap();
        assert_eq!(k.access_key_id, "STS.abc");
        assert_eq!(k.access_key_secret.expose(), "s3cr3t-value");
        assert_eq!(
            k.expiration.unwrap().to_rfc3339(),
            "2024-11-08T09:44:50+00:00"
        );
        assert!(!format!("{k:?}").contains("s3cr3t"));
    }

    #[test]
    fn rejects_failure_codes_and_garbage_without_quoting_values() {
        let e =
            parse_role_credentials("r", r#"{"Code":"Failed","AccessKeySecret":"s3cr3t-value"}"#)
                .unwrap_err()
                .to_string();
        assert!(e.contains("Failed") && !e.contains("s3cr3t"), "{e}");
        let e =
            parse_role_credentials("r", r#"{"Code":"Success","AccessKeySecret":"s3cr3t-value""#)
                .unwrap_err()
                .to_string();
        assert!(!e.contains("s3cr3t"), "{e}");
        let e = parse_role_credentials(
            "r",
            r#"{"Code":"Success","AccessKeyId":"a","AccessKeySecret":"s3cr3t-value","SecurityToken":"t"}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("Expiration"), "{e}");
    }
}
