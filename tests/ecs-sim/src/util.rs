//! Small shared helpers: random ids and the emulator's time format.

use chrono::{DateTime, Utc};

/// `n` random bytes as lower-case hex; ids and secrets need no more.
pub fn rand_hex(n: usize) -> String {
    let mut buf = vec![0u8; n];
    getrandom::fill(&mut buf).expect("OS random source");
    hex::encode(buf)
}

/// A random ECS-looking id: `prefix` + 20 lower-case alphanumerics.
pub fn new_id(prefix: &str) -> String {
    const ALPHA: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut buf = [0u8; 20];
    getrandom::fill(&mut buf).expect("OS random source");
    let s: String = buf
        .iter()
        .map(|b| ALPHA[*b as usize % ALPHA.len()] as char)
        .collect();
    format!("{prefix}{s}")
}

/// A request id in the vendor's UUID-like upper-case form.
pub fn request_id() -> String {
    let h = rand_hex(16).to_uppercase();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// `%Y-%m-%dT%H:%M:%SZ`, the format of ECS timestamps and IMDS expirations.
pub fn fmt_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Parses `%Y-%m-%dT%H:%M:%SZ` strictly (no fractions, UTC only).
pub fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%SZ")
        .ok()
        .map(|n| n.and_utc())
}

/// RFC 3339 with milliseconds, for request-log lines (finer than the API's
/// second-granular timestamps, so tests can order events).
pub fn log_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
