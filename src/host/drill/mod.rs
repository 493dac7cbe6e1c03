//! The restore drill's host side: given the block devices of disks freshly
//! restored from a snapshot group and attached to this instance, assemble
//! what the group held **without touching the live storage**, check every
//! file system, mount the good copies under a private directory for the
//! verify script, and always tear everything down — after a crash too,
//! from a record.
//!
//! - Partitions are the kernel's partitions of the restored device itself
//!   (added with `partx -a <that device>` when the kernel has not shown them);
//!   never mappings of anything else.
//! - LVM: every command runs with `--config` whose `filter` and
//!   `global_filter` accept only the clone's devices (the system devices file
//!   off), so LVM never sees a live PV beside its duplicate; `vgimportclone`
//!   renames each complete VG to [`CLONE_VG_PREFIX`]`<run>_<n>` with new
//!   UUIDs before `vgchange -ay` of that VG only. Without lvm2, PVs are
//!   reported in [`Assembly::skipped`].
//! - Checks: ext4 `e2fsck -fn`; XFS mounted `nouuid` (log replay), unmounted,
//!   `xfs_repair -n`, mounted again; btrfs `btrfs check --readonly`. An ext4
//!   whose superblock names orphan inodes or a journal to recover (a frozen
//!   fs with open, unlinked files: `e2fsck -n` would call it broken) is first
//!   mounted and unmounted like XFS. A copy that fails is not mounted; the
//!   caller fails the drill naming it.
//! - Mounts: `<root>/<disk_id>[-pN|-<lv>]`, `nodev,nosuid`, never via fstab.
//!   Teardown retries a busy unmount a few times and then reports it
//!   ([`DrillError::Leftover`], record kept); it never unmounts lazily.
//! - Commands: [`Tools`] (paths found once; tests inject their own), each
//!   run with a timeout bounded by the drill's deadline, its process group
//!   killed at the end of it, and only the tail of its output kept.
//! - The record ([`DrillLayout::record`]) is written before each step that
//!   creates something; [`cleanup_from_record`] undoes exactly that, refusing
//!   mount points outside the root and VG names without the private prefix.
//!
//! This module is host layer: it names no job, daemon, schedule or cli.

mod assemble;
mod check;
mod error;
mod lvm;
mod probe;
mod record;
mod teardown;
mod tools;
mod types;
pub mod udev;

pub use assemble::{assemble, cleanup_from_record, Assembly};
pub use error::DrillError;
pub use lvm::PREFIX as CLONE_VG_PREFIX;
pub use record::DrillRecord;
pub use tools::Tools;
pub use types::{CopyFs, DrillLayout, FsCheck, FsType, Leftovers, RestoredDisk, Skipped};
