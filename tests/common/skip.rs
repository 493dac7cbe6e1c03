//! Honest skips. libtest has no runtime skip: a test that returns early reads
//! "ok", so a root test on a machine without root would count as passed. Each
//! skip here prints its reason and appends one line to `$APPSNAP_SKIP_LOG`
//! (set by scripts/test per lane), which the lane subtracts from cargo's
//! "passed" and reports as skipped. Under CI (`CI` set) a missing root or
//! tool is a failure, not a skip: CI machines must run everything.
//!
//! Standalone (std only) so that test files without `mod common` can include
//! it with `#[path = "common/skip.rs"] mod skip;`.
#![allow(dead_code)]

use std::io::Write;

/// The calling test cannot run on this machine (no root, a tool missing):
/// records the skip, or panics under CI. The caller returns right after.
pub fn missing(reason: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("{}: cannot run under CI: {reason}", test_name());
    }
    record(reason);
}

/// The calling test could not run this time for a reason that is no fault
/// of the machine (e.g. a recycled pid was taken): recorded, never a failure.
pub fn by_chance(reason: &str) {
    record(reason);
}

/// Part of a test cannot run here (the rest did): printed, not counted, and
/// a failure under CI.
pub fn part_missing(reason: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("{}: cannot run under CI: {reason}", test_name());
    }
    eprintln!("SKIPPED part of {}: {reason}", test_name());
}

fn record(reason: &str) {
    let line = format!("{}: {reason}", test_name());
    eprintln!("SKIPPED {line}");
    if let Some(log) = std::env::var_os("APPSNAP_SKIP_LOG") {
        // One short write per line with O_APPEND: parallel tests do not interleave.
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap_or_else(|e| panic!("APPSNAP_SKIP_LOG {}: {e}", log.to_string_lossy()));
        f.write_all(format!("{line}\n").as_bytes())
            .unwrap_or_else(|e| panic!("APPSNAP_SKIP_LOG {}: {e}", log.to_string_lossy()));
    }
}

/// `binary::test`, e.g. `job_root_e2e::plugin_takes_the_vendor_sample_string`:
/// libtest runs each test on a thread named after it.
fn test_name() -> String {
    let exe = std::env::args().next().unwrap_or_default();
    let stem = std::path::Path::new(&exe)
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    // Cargo names test binaries `<target>-<16 hex digits>`.
    let bin = match stem.rsplit_once('-') {
        Some((b, h)) if h.len() == 16 && h.bytes().all(|c| c.is_ascii_hexdigit()) => b,
        _ => &stem,
    };
    let thread = std::thread::current();
    format!("{bin}::{}", thread.name().unwrap_or("?"))
}
