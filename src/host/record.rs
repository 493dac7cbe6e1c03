//! The frozen-set record: `<run_dir>/frozen.json`, written by the guard before
//! its first FIFREEZE and removed after its thaw. If it exists, appsnap may
//! have died with file systems frozen; `appsnap thaw --all` (and every daemon
//! start) thaws what it names, by identity, and removes it.

use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::freeze::{self, IdentityError, Thawed};
use super::protocol::Target;
use crate::securefs;

/// File name of the record inside `run_dir`.
pub const RECORD_FILE: &str = "frozen.json";

/// What the record holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrozenRecord {
    /// Format version ([`crate::host::protocol::VERSION`]).
    pub version: u32,
    /// The guard that wrote it (to tell an operator who froze).
    pub guard_pid: u32,
    /// Wall-clock time of writing, Unix milliseconds.
    pub written_unix_ms: u64,
    /// The guard's start time in clock ticks since boot (`/proc/<pid>/stat`
    /// field 22), so `thaw --all` can tell the guard from a process that
    /// reuses its pid; absent in records of older versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guard_start_ticks: Option<u64>,
    /// The guard's deadline, milliseconds from its first FIFREEZE.
    pub deadline_ms: u64,
    /// Everything the guard may freeze, in freeze order (a superset of what is frozen).
    pub targets: Vec<Target>,
}

/// Why the record could not be written, read or removed.
#[derive(Debug, Error)]
pub enum RecordError {
    /// File system error.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A record is already there: another freeze is in progress, or a crash
    /// left file systems frozen and `appsnap thaw --all` has not run since.
    #[error("{path} already exists{holder}: another freeze is in progress or one was never recovered; run `appsnap thaw --all` first")]
    Exists {
        /// The record.
        path: PathBuf,
        /// Who wrote it, when readable.
        holder: String,
    },
    /// The guard that wrote the record still runs: it holds the freeze and
    /// thaws it itself (on `thaw`, its parent's exit, or its deadline).
    #[error("{path}: freeze guard pid {pid} is still running and holds this freeze (an `appsnap run` or the daemon is snapshotting); not thawing it. It thaws by itself at its deadline or when its parent exits; `appsnap thaw --all --force` thaws anyway and that run's snapshot becomes crash-consistent")]
    GuardAlive {
        /// The record.
        path: PathBuf,
        /// The guard.
        pid: u32,
    },
    /// The run dir is not one only root could write, or the record is not a
    /// regular file of sane size (a planted FIFO must not hang `thaw --all`).
    #[error(transparent)]
    Untrusted(crate::securefs::TrustError),
    /// The file is not a record we understand.
    #[error("{path}: not a frozen-set record: {message}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The decoding error.
        message: String,
    },
}

/// Path of the record for a run dir.
pub fn record_path(run_dir: &Path) -> PathBuf {
    run_dir.join(RECORD_FILE)
}

/// Writes the record atomically (temp file, fsync, then a hard link that fails
/// if a record already exists, fsync dir). An existing record means another
/// guard is running or a crash was not recovered: it is never overwritten.
pub fn write(run_dir: &Path, rec: &FrozenRecord) -> Result<(), RecordError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| RecordError::Io { path, source }
    };
    securefs::ensure_trusted_dir(run_dir).map_err(RecordError::Untrusted)?;
    let final_path = record_path(run_dir);
    let tmp = run_dir.join(format!(".{RECORD_FILE}.{}", std::process::id()));
    // A stale temp file of a dead guard with our pid: ours to replace.
    let _ = std::fs::remove_file(&tmp);
    // Never through a planted symlink: a fresh file or nothing.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&tmp)
        .map_err(io(&tmp))?;
    let body = serde_json::to_vec_pretty(rec).unwrap_or_default();
    f.write_all(&body).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    drop(f);
    let linked = std::fs::hard_link(&tmp, &final_path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let holder = read(run_dir)
                .ok()
                .flatten()
                .map(|r| format!(" (written by freeze guard pid {})", r.guard_pid))
                .unwrap_or_default();
            return Err(RecordError::Exists {
                path: final_path,
                holder,
            });
        }
        Err(source) => {
            return Err(RecordError::Io {
                path: final_path,
                source,
            })
        }
    }
    if let Ok(d) = std::fs::File::open(run_dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Reads the record; `Ok(None)` when there is none. The run dir must be one
/// only root could write; the record a regular file (`O_NOFOLLOW`,
/// `O_NONBLOCK`: a FIFO is refused, never waited on) of at most 1 MiB.
pub fn read(run_dir: &Path) -> Result<Option<FrozenRecord>, RecordError> {
    let path = record_path(run_dir);
    match securefs::check_trusted_dir(run_dir) {
        Ok(_) => {}
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(RecordError::Untrusted(e)),
    }
    let bytes = match securefs::read_bounded_regular(&path, securefs::RECORD_FILE_LIMIT) {
        Ok(b) => b,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(RecordError::Untrusted(e)),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| RecordError::Corrupt {
            path,
            message: e.to_string(),
        })
}

/// Removes the record; a missing record is fine.
pub fn remove(run_dir: &Path) -> Result<(), RecordError> {
    let path = record_path(run_dir);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(RecordError::Io { path, source }),
    }
}

/// What `thaw --all` did to one recorded file system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecoveryAction {
    /// It was frozen; now thawed.
    Thawed,
    /// It was not frozen (EINVAL).
    NotFrozen,
    /// The mount point is no longer that mount; nothing was touched (it is not ours to thaw).
    NotThatMount(IdentityError),
    /// FITHAW failed.
    ThawFailed(Errno),
}

/// The result of a recovery pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// Pid of the guard that wrote the record.
    pub guard_pid: u32,
    /// Per recorded target, in thaw (reverse) order.
    pub actions: Vec<(Target, RecoveryAction)>,
    /// Whether the record was removed (kept when a thaw failed, so it can be retried).
    pub record_removed: bool,
}

/// Opens a recorded target for thawing: by the guard's own identity check, or,
/// when only the mount id differs (another mount namespace: a unit's
/// ExecStopPost, a daemon restarted under different sandboxing), by the
/// recorded superblock.
fn open_for_recovery(t: &Target, mountinfo: &Path) -> Result<OwnedFd, IdentityError> {
    match freeze::open_verified(t, mountinfo) {
        Err(IdentityError::WrongMount { .. }) if t.st_dev.is_some() => {
            let fd = freeze::open_dir(&t.mount_point).map_err(|errno| IdentityError::Open {
                path: t.mount_point.display().to_string(),
                errno,
            })?;
            freeze::verify_same_superblock(fd.as_fd(), t)?;
            Ok(fd)
        }
        other => other,
    }
}

/// Fields of `/proc/<pid>/stat` after the command name: (state, starttime ticks).
fn proc_stat(proc_root: &Path, pid: u32) -> Option<(char, u64)> {
    let s = std::fs::read_to_string(proc_root.join(pid.to_string()).join("stat")).ok()?;
    // The command name may hold spaces and parentheses: split after the last ')'.
    let rest = &s[s.rfind(')')? + 1..];
    let mut f = rest.split_whitespace();
    let state = f.next()?.chars().next()?;
    // Field 3 is the state; field 22 the start time, 19 fields further.
    let start = f.nth(18)?.parse().ok()?;
    Some((state, start))
}

/// This process's start time in clock ticks since boot (for the record).
pub fn own_start_ticks() -> Option<u64> {
    proc_stat(Path::new("/proc"), std::process::id()).map(|(_, t)| t)
}

/// Slack when only wall-clock times can be compared (records without
/// `guard_start_ticks`): `btime` has one-second resolution.
const WALL_CLOCK_SLACK_MS: u64 = 5_000;

/// Whether the guard that wrote `rec` still runs: its pid is a live (not
/// zombie) root process whose command line is `… freeze-guard` and which
/// started when the guard did (the recorded start ticks; for older records,
/// no later than the record was written). Anything else — pid gone, reused by
/// another program, a zombie — means the freeze has nobody left to thaw it.
pub fn guard_alive(rec: &FrozenRecord, proc_root: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let pid = rec.guard_pid;
    if pid == 0 {
        return false;
    }
    let Some((state, start)) = proc_stat(proc_root, pid) else {
        return false;
    };
    if matches!(state, 'Z' | 'X' | 'x') {
        return false;
    }
    let dir = proc_root.join(pid.to_string());
    if !std::fs::metadata(&dir).is_ok_and(|m| m.uid() == 0) {
        return false;
    }
    let cmdline = std::fs::read(dir.join("cmdline")).unwrap_or_default();
    if cmdline.split(|b| *b == 0).nth(1) != Some(b"freeze-guard".as_slice()) {
        return false;
    }
    match rec.guard_start_ticks {
        Some(t) => t == start,
        None => started_unix_ms(proc_root, start)
            .is_some_and(|ms| ms <= rec.written_unix_ms + WALL_CLOCK_SLACK_MS),
    }
}

/// Whether `pid` will be killed the moment this process ends: we run as the
/// systemd unit's `ExecStopPost` (systemd sets `SERVICE_RESULT` for it) and
/// the guard is in our own cgroup, i.e. the unit's. Its daemon is gone, and
/// systemd's final SIGKILL would leave whatever it still holds frozen (a
/// FIFREEZE hung in the kernel stops its own thaw), with nobody to thaw it.
/// A guard of an `appsnap run` started elsewhere is in another cgroup.
fn dies_with_the_stopping_unit(pid: u32, proc_root: &Path) -> bool {
    if std::env::var_os("SERVICE_RESULT").is_none() {
        return false;
    }
    let cgroup = |p: &str| std::fs::read(proc_root.join(p).join("cgroup")).ok();
    match (cgroup(&pid.to_string()), cgroup("self")) {
        (Some(theirs), Some(ours)) => theirs == ours,
        _ => false,
    }
}

/// A start time in ticks since boot, as Unix milliseconds (`btime` + ticks).
fn started_unix_ms(proc_root: &Path, ticks: u64) -> Option<u64> {
    let stat = std::fs::read_to_string(proc_root.join("stat")).ok()?;
    let btime: u64 = stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = u64::try_from(hz).ok().filter(|h| *h > 0)?;
    Some(btime * 1000 + ticks * 1000 / hz)
}

/// Thaws whatever the record names, in reverse order, each only after checking
/// by identity that the mount point is still the recorded mount. Returns
/// `Ok(None)` when there is no record. Refuses ([`RecordError::GuardAlive`])
/// while the guard that wrote the record still runs: that freeze is a run in
/// progress, not a leftover.
pub fn recover(run_dir: &Path, mountinfo: &Path) -> Result<Option<Recovery>, RecordError> {
    recover_with(run_dir, mountinfo, false)
}

/// [`recover`]; with `force`, also while the guard still runs (`thaw --all
/// --force`: that run's snapshot is then crash-consistent, and its guard says so).
pub fn recover_with(
    run_dir: &Path,
    mountinfo: &Path,
    force: bool,
) -> Result<Option<Recovery>, RecordError> {
    let Some(rec) = read(run_dir)? else {
        return Ok(None);
    };
    let proc_root = Path::new("/proc");
    if !force
        && guard_alive(&rec, proc_root)
        && !dies_with_the_stopping_unit(rec.guard_pid, proc_root)
    {
        return Err(RecordError::GuardAlive {
            path: record_path(run_dir),
            pid: rec.guard_pid,
        });
    }
    let mut actions = Vec::new();
    let mut failed = false;
    for t in rec.targets.iter().rev() {
        let action = match open_for_recovery(t, mountinfo) {
            Err(e) => RecoveryAction::NotThatMount(e),
            Ok(fd) => match freeze::thaw(fd.as_fd()) {
                Ok(Thawed::Thawed) => RecoveryAction::Thawed,
                Ok(Thawed::NotFrozen) => RecoveryAction::NotFrozen,
                Err(e) => {
                    failed = true;
                    RecoveryAction::ThawFailed(e)
                }
            },
        };
        actions.push((t.clone(), action));
    }
    let record_removed = if failed {
        false
    } else {
        remove(run_dir)?;
        true
    };
    Ok(Some(Recovery {
        guard_pid: rec.guard_pid,
        actions,
        record_removed,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::protocol::VERSION;

    #[test]
    fn record_round_trips_and_missing_is_none() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read(dir.path()).unwrap().is_none());
        let rec = FrozenRecord {
            version: VERSION,
            guard_pid: 42,
            written_unix_ms: 1,
            guard_start_ticks: None,
            deadline_ms: 30_000,
            targets: vec![Target {
                mount_point: "/data".into(),
                mount_id: 40,
                dev_major: 253,
                dev_minor: 16,
                fs_type: "xfs".into(),
                st_dev: None,
            }],
        };
        write(dir.path(), &rec).unwrap();
        assert_eq!(read(dir.path()).unwrap(), Some(rec.clone()));
        // Never overwritten: a second writer is refused and the first record stays.
        let mut other = rec.clone();
        other.guard_pid = 7;
        let err = write(dir.path(), &other).unwrap_err();
        assert!(
            err.to_string().contains("pid 42") && err.to_string().contains("thaw --all"),
            "{err}"
        );
        assert_eq!(read(dir.path()).unwrap(), Some(rec));
        remove(dir.path()).unwrap();
        remove(dir.path()).unwrap();
        assert!(read(dir.path()).unwrap().is_none());
    }

    #[test]
    fn a_pid_that_is_not_a_running_freeze_guard_counts_as_gone() {
        let mut rec = plain_dir_record(Path::new("/"), None);
        // This test process: alive, but not `… freeze-guard`.
        rec.guard_pid = std::process::id();
        rec.guard_start_ticks = own_start_ticks();
        assert!(rec.guard_start_ticks.is_some());
        assert!(!guard_alive(&rec, Path::new("/proc")));
        // A pid that does not exist (above pid_max).
        rec.guard_pid = u32::MAX;
        assert!(!guard_alive(&rec, Path::new("/proc")));
        rec.guard_pid = 0;
        assert!(!guard_alive(&rec, Path::new("/proc")));
    }

    #[test]
    fn a_planted_symlink_or_oversized_record_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim.json");
        std::fs::write(&victim, b"{}").unwrap();
        std::os::unix::fs::symlink(&victim, record_path(dir.path())).unwrap();
        let e = read(dir.path()).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        std::fs::remove_file(record_path(dir.path())).unwrap();
        let big = vec![b' '; securefs::RECORD_FILE_LIMIT as usize + 1];
        std::fs::write(record_path(dir.path()), big).unwrap();
        let e = read(dir.path()).unwrap_err();
        assert!(e.to_string().contains("larger than the 1 MiB limit"), "{e}");
    }

    #[test]
    fn corrupt_record_is_an_error_not_silence() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(record_path(dir.path()), b"{nope").unwrap();
        assert!(matches!(read(dir.path()), Err(RecordError::Corrupt { .. })));
    }

    /// A record naming a plain directory (never a mount root) as a frozen target.
    fn plain_dir_record(dir: &Path, st_dev: Option<(u32, u32)>) -> FrozenRecord {
        FrozenRecord {
            version: VERSION,
            guard_pid: 1,
            written_unix_ms: 1,
            guard_start_ticks: None,
            deadline_ms: 1,
            targets: vec![Target {
                mount_point: dir.to_path_buf(),
                mount_id: u64::MAX,
                dev_major: 0,
                dev_minor: 0,
                fs_type: "ext4".into(),
                st_dev,
            }],
        }
    }

    #[test]
    fn the_namespace_fallback_still_needs_a_mount_root_on_the_recorded_device() {
        let dir = tempfile::tempdir().unwrap();
        use std::os::linux::fs::MetadataExt;
        let d = std::fs::metadata(dir.path()).unwrap().st_dev();
        // Same device as recorded, but a plain directory, not a mount root.
        let st_dev = (
            nix::sys::stat::major(d) as u32,
            nix::sys::stat::minor(d) as u32,
        );
        let rec = plain_dir_record(dir.path(), Some(st_dev));
        write(dir.path(), &rec).unwrap();
        let r = recover(dir.path(), Path::new("/proc/self/mountinfo"))
            .unwrap()
            .unwrap();
        assert!(
            matches!(
                r.actions[0].1,
                RecoveryAction::NotThatMount(IdentityError::NotMountRoot { .. })
            ),
            "{:?}",
            r.actions
        );
    }

    #[test]
    fn recovery_leaves_a_mount_that_is_not_the_recorded_one() {
        let dir = tempfile::tempdir().unwrap();
        // A plain directory: not a mount root with this id, so it must not be touched.
        let rec = plain_dir_record(dir.path(), None);
        write(dir.path(), &rec).unwrap();
        let r = recover(dir.path(), Path::new("/proc/self/mountinfo"))
            .unwrap()
            .unwrap();
        assert_eq!(r.actions.len(), 1);
        assert!(
            matches!(r.actions[0].1, RecoveryAction::NotThatMount(_)),
            "{:?}",
            r.actions
        );
        assert!(r.record_removed);
    }
}
