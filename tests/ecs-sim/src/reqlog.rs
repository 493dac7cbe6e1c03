//! The request log: one JSON object per line per request, so tests can assert
//! on exactly what a client sent and what it was told. Secrets never reach it.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use serde_json::{Map, Value};

/// Parameter names whose values are secrets or signatures (`Password`:
/// AttachDisk of a system disk).
const SECRET_PARAMS: &[&str] = &["SecurityToken", "Signature", "AccessKeySecret", "Password"];

/// Response fields that are secrets (IMDS credentials).
const SECRET_FIELDS: &[&str] = &["AccessKeySecret", "SecurityToken"];

/// Appends JSON lines to a file; a no-op when no file was configured.
#[derive(Debug)]
pub struct RequestLog {
    file: Option<Mutex<File>>,
}

impl RequestLog {
    /// Opens (appends to) `path`, or logs nowhere.
    pub fn open(path: Option<&Path>) -> std::io::Result<Self> {
        let file = match path {
            Some(p) => Some(Mutex::new(
                OpenOptions::new().create(true).append(true).open(p)?,
            )),
            None => None,
        };
        Ok(RequestLog { file })
    }

    /// Writes one entry; an I/O error is reported on stderr, never to the client.
    pub fn write(&self, entry: &Value) {
        if let Some(f) = &self.file {
            let mut line = entry.to_string();
            line.push('\n');
            let mut f = f.lock().unwrap_or_else(|e| e.into_inner());
            if let Err(e) = f.write_all(line.as_bytes()) {
                tracing::warn!("request log write failed: {e}");
            }
        }
    }
}

/// Request parameters as a JSON object, secrets replaced by `"***"`.
pub fn redact_params(params: &[(String, String)]) -> Value {
    let mut m = Map::new();
    for (k, v) in params {
        let v = if SECRET_PARAMS.contains(&k.as_str()) {
            "***".to_string()
        } else {
            v.clone()
        };
        m.insert(k.clone(), Value::String(v));
    }
    Value::Object(m)
}

/// A response body with secret fields replaced by `"***"`.
pub fn redact_answer(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| {
                    if SECRET_FIELDS.contains(&k.as_str()) {
                        (k.clone(), Value::String("***".into()))
                    } else {
                        (k.clone(), redact_answer(v))
                    }
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(redact_answer).collect()),
        other => other.clone(),
    }
}
