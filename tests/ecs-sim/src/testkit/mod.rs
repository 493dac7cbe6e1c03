//! Client side for tests and the demo: a request signer written separately
//! from the server's verifier (its own encoder and canonicalisation, checked
//! against the reference vectors on its own), a tiny blocking HTTP/1.1
//! client that sends exactly the bytes a test wants, and helpers to start
//! the emulator and read its ready file.

pub mod http;
pub mod sign;

pub use http::{HttpResponse, RawRequest};
pub use sign::{Creds, EcsClient, Scheme};

use std::path::Path;
use std::time::{Duration, Instant};

/// Parses `imds=URL ecs=URL` as printed by `ecs-sim`.
pub fn parse_ready_line(line: &str) -> Option<(String, String)> {
    let mut imds = None;
    let mut ecs = None;
    for part in line.split_whitespace() {
        if let Some(v) = part.strip_prefix("imds=") {
            imds = Some(v.to_string());
        } else if let Some(v) = part.strip_prefix("ecs=") {
            ecs = Some(v.to_string());
        }
    }
    Some((imds?, ecs?))
}

/// Waits (bounded) until `path` holds a complete ready line.
pub fn wait_ready_file(path: &Path, timeout: Duration) -> Option<(String, String)> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(s) = std::fs::read_to_string(path) {
            if let Some(r) = parse_ready_line(s.trim()) {
                return Some(r);
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}
