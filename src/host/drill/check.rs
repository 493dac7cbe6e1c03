//! Checking and mounting one copy. Each checker's verdict becomes an
//! [`FsCheck`]; the mounts carry `nodev,nosuid` (XFS also `nouuid`: the copy
//! shares the live file system's UUID) and are made with both source and
//! target given, so fstab is never read.

use std::path::Path;
use std::time::{Duration, Instant};

use super::error::DrillError;
use super::tools::{Output, Run, Tools};
use super::types::{FsCheck, FsType};
use crate::host::mounts;

/// How often an unmount is tried before the mount is reported busy.
const UMOUNT_TRIES: u32 = 5;

fn verdict(tool: &str, out: &Output) -> FsCheck {
    if out.ok() {
        FsCheck::Passed
    } else {
        FsCheck::Failed {
            tool: tool.to_string(),
            exit: out.exit,
            output_tail: out.tail.trim().to_string(),
        }
    }
}

/// The check that runs before the copy is mounted: `e2fsck -fn` (ext4),
/// `btrfs check --readonly` (btrfs); XFS has none (its log must be
/// replayed by a mount first: see [`xfs_repair`]).
pub fn before_mount(
    tools: &Tools,
    fstype: FsType,
    dev: &Path,
    deadline: Instant,
) -> Result<FsCheck, DrillError> {
    match fstype {
        FsType::Ext4 => {
            let out = Run::new("e2fsck", &tools.e2fsck)
                .args(["-f", "-n"])
                .path_arg(dev)
                .output(tools, deadline)?;
            Ok(verdict("e2fsck", &out))
        }
        FsType::Btrfs => {
            let out = Run::new("btrfs", &tools.btrfs)
                .args(["check", "--readonly"])
                .path_arg(dev)
                .output(tools, deadline)?;
            Ok(verdict("btrfs check", &out))
        }
        FsType::Xfs => Ok(FsCheck::Passed),
    }
}

/// `xfs_repair -n` of an unmounted XFS whose log a mount has replayed.
pub fn xfs_repair(tools: &Tools, dev: &Path, deadline: Instant) -> Result<FsCheck, DrillError> {
    let out = Run::new("xfs_repair", &tools.xfs_repair)
        .args(["-n"])
        .path_arg(dev)
        .output(tools, deadline)?;
    Ok(verdict("xfs_repair", &out))
}

/// Mounts the copy; a refused mount is the copy's verdict, not an error.
pub fn mount(
    tools: &Tools,
    fstype: FsType,
    dev: &Path,
    mount_point: &Path,
    deadline: Instant,
) -> Result<FsCheck, DrillError> {
    let opts = match fstype {
        FsType::Xfs => "nodev,nosuid,nouuid",
        FsType::Ext4 | FsType::Btrfs => "nodev,nosuid",
    };
    let out = Run::new("mount", &tools.mount)
        .args(["-t", fstype.as_str(), "-o", opts])
        .path_arg(dev)
        .path_arg(mount_point)
        .output(tools, deadline)?;
    Ok(verdict("mount", &out))
}

/// True when something is mounted exactly at `path`.
pub fn is_mounted(path: &Path) -> Result<bool, DrillError> {
    let table = mounts::read(Path::new("/proc/self/mountinfo")).map_err(|e| DrillError::Io {
        what: "read mountinfo for",
        path: path.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    })?;
    Ok(table.iter().any(|m| m.mount_point == path))
}

/// Unmounts `path` (everything stacked there), retrying a busy mount a few
/// times; never lazily: a busy mount is reported, not hidden.
pub fn umount(tools: &Tools, path: &Path, deadline: Instant) -> Result<(), DrillError> {
    let mut last = None;
    for attempt in 0..UMOUNT_TRIES {
        if !is_mounted(path)? {
            return Ok(());
        }
        if attempt > 0 {
            std::thread::sleep(Duration::from_millis(200 * u64::from(attempt)));
        }
        let run = Run::new("umount", &tools.umount).path_arg(path);
        let out = run.output(tools, deadline)?;
        if !out.ok() {
            last = Some(run.failed(&out));
        }
    }
    if !is_mounted(path)? {
        return Ok(());
    }
    Err(last.unwrap_or_else(|| DrillError::ToolFailed {
        tool: "umount",
        args: path.display().to_string(),
        exit: 0,
        output_tail: "still mounted after unmounting".into(),
    }))
}
