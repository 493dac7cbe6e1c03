//! One signed attempt on the wire, and how its answer is read: the retry
//! hint, JSON or not, and error answers redacted of anything we sent.

use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;

use super::client::EcsClient;
use super::error::{redact_string_to_sign, EcsError};
use crate::cloud::credentials::AccessKey;
use crate::cloud::secret::{scrub, Secret};
use crate::cloud::sign::{self, RequestParts, ECS_API_VERSION};
use crate::policy::types::SignatureVersion;

impl EcsClient {
    /// One signed request.
    pub(super) async fn attempt(
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
        let body =
            match crate::cloud::body::read_capped(resp, crate::cloud::body::ECS_BODY_LIMIT).await {
                Ok(b) => b,
                Err(crate::cloud::body::BodyError::Transport(e)) => return Err(transport(e).into()),
                Err(crate::cloud::body::BodyError::TooLarge) => {
                    return Err(EcsError::TooLarge {
                        action: action.into(),
                        http_status: status,
                        limit: crate::cloud::body::ECS_BODY_LIMIT,
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
pub(super) struct Failed {
    pub(super) error: EcsError,
    pub(super) retry_after: Option<Duration>,
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
