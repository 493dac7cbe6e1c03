//! Why an ECS call failed, and which failures are worth another attempt.

use crate::cloud::credentials::CredentialsError;
use crate::cloud::secret::REDACTED;

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
    #[error("ECS {action}: no answer: {}", crate::cloud::error_chain(.error))]
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
    /// The answer was larger than [`crate::cloud::body::ECS_BODY_LIMIT`]; reading
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

/// ECS's "the caller may not do this" codes (`Forbidden.RAM`,
/// `Forbidden.NotAuthorized`, `NoPermission`, ...).
pub fn is_permission_denied(code: &str) -> bool {
    code.starts_with("Forbidden") || code.contains("NoPermission")
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
}
