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
//! - LVM: every command sees only the clone's devices (a `--config` filter;
//!   see [`lvm`](self) module docs); `vgimportclone` renames each VG to
//!   `appsnap_verify_<run>_<n>` with new UUIDs before it is activated.
//! - Checks: ext4 `e2fsck -fn`; XFS mounted `nouuid` (log replay), unmounted,
//!   `xfs_repair -n`, mounted again; btrfs `btrfs check --readonly`. A copy
//!   that fails is not mounted; the caller fails the drill naming it.
//! - Mounts: `<root>/<disk_id>[-pN|-<lv>]`, `nodev,nosuid`, never via fstab.
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

pub use assemble::{assemble, cleanup_from_record, Assembly};
pub use error::DrillError;
pub use lvm::PREFIX as CLONE_VG_PREFIX;
pub use record::DrillRecord;
pub use tools::Tools;
pub use types::{CopyFs, DrillLayout, FsCheck, FsType, Leftovers, RestoredDisk, Skipped};
