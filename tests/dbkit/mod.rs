//! Real database servers for the restore tests: MariaDB and PostgreSQL from
//! Debian's packages, each started by the test on file systems the test made,
//! with private unix sockets and no TCP. The system-wide instances, their data
//! directories, ports and sockets are never used.
#![allow(dead_code)]

pub mod hold;
pub mod job;
pub mod mariadb;
pub mod postgres;
pub mod timeline;
pub mod workload;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use crate::common::world::run_bounded;

/// A system user's uid and gid (`mysql`, `postgres`), from the packages.
pub fn user_ids(name: &str) -> (u32, u32) {
    let u = nix::unistd::User::from_name(name)
        .unwrap()
        .unwrap_or_else(|| panic!("user {name} missing: is its server package installed?"));
    (u.uid.as_raw(), u.gid.as_raw())
}

/// A directory owned by `user`, mode 0700 (servers insist on it).
pub fn private_dir(p: &Path, user: &str) {
    std::fs::create_dir_all(p).unwrap();
    let (uid, gid) = user_ids(user);
    std::os::unix::fs::chown(p, Some(uid), Some(gid)).unwrap();
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o700)).unwrap();
}

/// Runs `cmd` for at most `limit`; panics with its output unless it succeeds.
pub fn must(cmd: Command, what: &str, limit: Duration) -> String {
    let out = run_bounded(cmd, limit);
    assert!(out.status.success(), "{what} failed: {}", show(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Exit code and both streams, for failure messages.
pub fn show(o: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Polls `ready` every 100 ms until it holds; panics after `limit` (or at
/// once if the server process exited), with the server's log.
pub fn wait_ready(child: &mut Child, log: &Path, limit: Duration, mut ready: impl FnMut() -> bool) {
    let start = Instant::now();
    loop {
        if ready() {
            return;
        }
        let log_text = || std::fs::read_to_string(log).unwrap_or_default();
        if let Some(st) = child.try_wait().unwrap() {
            panic!("server exited ({st}) before it was ready:\n{}", log_text());
        }
        assert!(
            start.elapsed() < limit,
            "server not ready after {limit:?}:\n{}",
            log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Stops a server: `sig` (its fast, clean shutdown), then SIGKILL after 30 s.
pub fn stop_child(child: &mut Child, sig: i32) {
    if child.try_wait().ok().flatten().is_some() {
        return;
    }
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, sig) };
    let start = Instant::now();
    while child.try_wait().ok().flatten().is_none() {
        if start.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let _ = child.wait();
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The database tools these tests need, by path; as root a missing one is a
/// failure, never a skip (scripts/test installs them).
pub fn require(tools: &[&str]) {
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|t| !Path::new(t).exists())
        .collect();
    assert!(
        missing.is_empty(),
        "missing {missing:?}: scripts/test installs mariadb-server, mariadb-client, postgresql-15 and postgresql-client-15"
    );
}
