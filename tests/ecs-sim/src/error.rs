//! The vendor's error answer: HTTP status plus a JSON body with `RequestId`,
//! `HostId`, `Code`, `Message` and `Recommend`, so clients parse what ECS sends.

use serde_json::{json, Value};

/// One ECS error: what the client sees, minus the per-request ids that the
/// server adds when it answers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status} {code}: {message}")]
pub struct ApiError {
    /// HTTP status.
    pub status: u16,
    /// The vendor's `Code`.
    pub code: String,
    /// The vendor's `Message`.
    pub message: String,
}

impl ApiError {
    /// An error with explicit status, code and message.
    pub fn new(status: u16, code: &str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code: code.to_string(),
            message: message.into(),
        }
    }

    /// 400 `MissingParameter` naming the parameter, as ECS words it.
    pub fn missing(param: &str) -> Self {
        Self::new(
            400,
            "MissingParameter",
            format!("The input parameter \"{param}\" that is mandatory for processing this request is not supplied."),
        )
    }

    /// 400 `InvalidParameter` with a message naming what was wrong.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(400, "InvalidParameter", message)
    }

    /// The JSON body for this error.
    pub fn body(&self, request_id: &str, host_id: &str) -> Value {
        json!({
            "RequestId": request_id,
            "HostId": host_id,
            "Code": self.code,
            "Message": self.message,
            "Recommend": format!("https://api.aliyun.com/troubleshoot?q={}&product=Ecs", self.code),
        })
    }
}
