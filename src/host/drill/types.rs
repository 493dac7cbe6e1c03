//! What a drill is given and what it reports.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// A disk created from one snapshot of the group and attached to this instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoredDisk {
    /// The new disk's ID (`d-…`): names its mount points.
    pub disk_id: String,
    /// The disk the snapshot was taken of: what the operator knows it as.
    pub source_disk_id: String,
    /// Its block device (a `/dev/disk/by-id` link is resolved).
    pub device: PathBuf,
}

/// Where a drill puts things.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrillLayout {
    /// The private directory the copies are mounted under (created 0700 by
    /// the drill, must not exist yet), e.g. `/run/appsnap/verify/<run-id>`.
    pub root: PathBuf,
    /// The crash record (JSON, written atomically before each step that
    /// creates something); its directory must exist and be root's only.
    pub record: PathBuf,
}

/// A file system the drill checks and mounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsType {
    /// ext4 (`e2fsck -fn` before mounting).
    Ext4,
    /// XFS (mounted `nouuid` to replay its log, then `xfs_repair -n`).
    Xfs,
    /// btrfs (`btrfs check --readonly` before mounting).
    Btrfs,
}

impl FsType {
    /// As `blkid` names it; `None` for types a drill does not check.
    pub fn from_blkid(t: &str) -> Option<FsType> {
        match t {
            "ext4" => Some(FsType::Ext4),
            "xfs" => Some(FsType::Xfs),
            "btrfs" => Some(FsType::Btrfs),
            _ => None,
        }
    }

    /// The name `mount -t` and `blkid` use.
    pub fn as_str(self) -> &'static str {
        match self {
            FsType::Ext4 => "ext4",
            FsType::Xfs => "xfs",
            FsType::Btrfs => "btrfs",
        }
    }
}

impl fmt::Display for FsType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The verdict on one copy. Only a `Passed` copy is mounted: a verify
/// script must never run on a broken one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FsCheck {
    /// The checker found nothing wrong and the copy is mounted.
    Passed,
    /// The checker (or the mount that replays a log) failed.
    Failed {
        /// `e2fsck`, `xfs_repair`, `btrfs check` or `mount`.
        tool: String,
        /// Its exit code (-1: killed).
        exit: i32,
        /// The end of its output.
        output_tail: String,
    },
    /// Not checked, and not mounted.
    NotRun {
        /// Why (e.g. a btrfs spanning several disks).
        why: String,
    },
}

/// One file system of the restored group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyFs {
    /// The restored disk it is on (for an LV: the disk of its VG's first PV).
    pub disk_id: String,
    /// The disk the snapshot was taken of.
    pub source_disk_id: String,
    /// The block device: the whole disk, a partition or an LV's device.
    pub device: PathBuf,
    /// Its type.
    pub fstype: FsType,
    /// The file system UUID (the live one's: it is a copy).
    pub uuid: String,
    /// For a file system on an LV: the clone VG's private name and the LV.
    pub lvm: Option<(String, String)>,
    /// Where it is mounted (`nodev,nosuid`), when its check passed.
    pub mount_point: Option<PathBuf>,
    /// The check's verdict.
    pub check: FsCheck,
}

/// Something on a restored disk that is not a file system the drill checks
/// (a swap area, an EFI partition, an empty disk, a PV when lvm2 is missing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The restored disk.
    pub disk_id: String,
    /// The device.
    pub device: PathBuf,
    /// What it holds and why it is not checked.
    pub why: String,
}

/// What `cleanup_from_record` found and undid.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Leftovers {
    /// A record was there (a drill did not finish its teardown).
    pub record_found: bool,
    /// Mount points that were still mounted and are now unmounted.
    pub unmounted: Vec<PathBuf>,
    /// Clone VGs deactivated and removed.
    pub removed_vgs: Vec<String>,
    /// Restored devices whose partitions the drill had added and removed again.
    pub partitions_removed: Vec<PathBuf>,
    /// Directories removed (mount points and the root).
    pub removed_dirs: Vec<PathBuf>,
}
