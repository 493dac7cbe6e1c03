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

/// True when the copy must be mounted once (and unmounted) before its
/// offline check: XFS always (its log is replayed only by a mount); ext4
/// when its superblock says the journal needs recovery or it has orphan
/// inodes. A frozen ext4 is clean but keeps its orphan list (files unlinked
/// while open: a database's temporary files), which `e2fsck -n` does not
/// process and reports as errors; the mount processes it, as it would for
/// the application.
pub fn replay_first(fstype: FsType, dev: &Path) -> Result<bool, DrillError> {
    match fstype {
        FsType::Xfs => Ok(true),
        FsType::Btrfs => Ok(false),
        FsType::Ext4 => ext4_pending(dev),
    }
}

/// Reads the ext4 superblock (1024 bytes at offset 1024): journal
/// `needs_recovery`, an orphan list head, or `orphan_present`.
fn ext4_pending(dev: &Path) -> Result<bool, DrillError> {
    use std::os::unix::fs::FileExt;
    let io = |source| DrillError::Io {
        what: "read the ext4 superblock of",
        path: dev.to_path_buf(),
        source,
    };
    let f = std::fs::File::open(dev).map_err(io)?;
    let mut sb = [0u8; 1024];
    f.read_exact_at(&mut sb, 1024).map_err(io)?;
    Ok(ext4_sb_pending(&sb))
}

/// See [`replay_first`]; `sb` is the 1024-byte superblock.
fn ext4_sb_pending(sb: &[u8; 1024]) -> bool {
    let u16_at = |o: usize| u16::from_le_bytes([sb[o], sb[o + 1]]);
    let u32_at = |o: usize| u32::from_le_bytes([sb[o], sb[o + 1], sb[o + 2], sb[o + 3]]);
    const MAGIC: u16 = 0xEF53;
    const INCOMPAT_RECOVER: u32 = 0x4;
    const RO_COMPAT_ORPHAN_PRESENT: u32 = 0x1_0000;
    if u16_at(0x38) != MAGIC {
        return false;
    }
    u32_at(0x60) & INCOMPAT_RECOVER != 0
        || u32_at(0x64) & RO_COMPAT_ORPHAN_PRESENT != 0
        || u32_at(0xE8) != 0
}

/// The offline check of an unmounted copy: `e2fsck -fn` (ext4),
/// `xfs_repair -n` (XFS, after its log was replayed), `btrfs check --readonly`.
pub fn offline(
    tools: &Tools,
    fstype: FsType,
    dev: &Path,
    deadline: Instant,
) -> Result<FsCheck, DrillError> {
    let (tool, path, args): (&str, &Path, &[&str]) = match fstype {
        FsType::Ext4 => ("e2fsck", &tools.e2fsck, &["-f", "-n"]),
        FsType::Xfs => ("xfs_repair", &tools.xfs_repair, &["-n"]),
        FsType::Btrfs => ("btrfs check", &tools.btrfs, &["check", "--readonly"]),
    };
    let short = match fstype {
        FsType::Ext4 => "e2fsck",
        FsType::Xfs => "xfs_repair",
        FsType::Btrfs => "btrfs",
    };
    let out = Run::new(short, path)
        .args(args.iter().copied())
        .path_arg(dev)
        .output(tools, deadline)?;
    Ok(verdict(tool, &out))
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
    let attempt = || {
        if fstype == FsType::Btrfs {
            forget_btrfs(tools, dev, deadline);
        }
        Run::new("mount", &tools.mount)
            .args(["-t", fstype.as_str(), "-o", opts])
            .path_arg(dev)
            .path_arg(mount_point)
            .output(tools, deadline)
    };
    let mut out = attempt()?;
    // A btrfs copy that some scan registered as its own device set mounts
    // under the live one's fsid and the kernel refuses it (EEXIST from
    // sysfs); forgotten and mounted again, the kernel gives it a temp fsid.
    if fstype == FsType::Btrfs && !out.ok() && out.tail.contains("File exists") {
        out = attempt()?;
    }
    Ok(verdict("mount", &out))
}

/// `btrfs device scan --forget DEV`: drops the kernel's registration of an
/// unmounted copy (never of a mounted device: the kernel refuses that), so
/// the mount scans it afresh. Best effort.
fn forget_btrfs(tools: &Tools, dev: &Path, deadline: Instant) {
    let _ = Run::new("btrfs", &tools.btrfs)
        .args(["device", "scan", "--forget"])
        .path_arg(dev)
        .output(tools, deadline);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ext4_superblock_flags_that_need_a_mount_first() {
        let mut sb = [0u8; 1024];
        assert!(!ext4_sb_pending(&sb), "not ext4");
        sb[0x38..0x3A].copy_from_slice(&0xEF53u16.to_le_bytes());
        assert!(!ext4_sb_pending(&sb), "clean");
        sb[0xE8..0xEC].copy_from_slice(&13u32.to_le_bytes());
        assert!(ext4_sb_pending(&sb), "orphan list");
        sb[0xE8..0xEC].copy_from_slice(&0u32.to_le_bytes());
        sb[0x60] = 0x4 | 0x40;
        assert!(ext4_sb_pending(&sb), "needs_recovery");
        sb[0x60] = 0x40;
        sb[0x66] = 0x1;
        assert!(ext4_sb_pending(&sb), "orphan_present");
    }
}
