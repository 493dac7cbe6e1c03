//! The drill's crash record: everything the drill is about to create, written
//! atomically (temp file, fsync, rename; mode 0600) *before* each step that
//! creates it, so that after a crash `cleanup_from_record` undoes exactly
//! what was made, and nothing else.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::DrillError;
use crate::securefs;

/// Format version of the record.
pub const VERSION: u32 = 1;

/// A record larger than this is not ours.
const MAX_BYTES: u64 = 1 << 20;

/// What a drill made, or was about to make, in creation order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrillRecord {
    /// Format version (1).
    pub version: u32,
    /// The process that assembled (for the operator).
    pub pid: u32,
    /// The private root directory (made by the drill).
    pub root: PathBuf,
    /// Restored devices whose partitions the drill asked the kernel to add
    /// (`partx -a`) because it had not (no partition parser, no udev).
    #[serde(default)]
    pub partitioned: Vec<PathBuf>,
    /// The clone's devices: every LVM command of the drill sees only these.
    #[serde(default)]
    pub lvm_devices: Vec<PathBuf>,
    /// Clone VG names (all with the private prefix), recorded before `vgimportclone`.
    #[serde(default)]
    pub clone_vgs: Vec<String>,
    /// Mount points under `root`, recorded before `mkdir`; each may be mounted.
    #[serde(default)]
    pub mount_points: Vec<PathBuf>,
}

impl DrillRecord {
    /// A fresh record for a drill under `root`.
    pub fn new(root: &Path) -> DrillRecord {
        DrillRecord {
            version: VERSION,
            pid: std::process::id(),
            root: root.to_path_buf(),
            ..DrillRecord::default()
        }
    }
}

fn split(path: &Path) -> Result<(&Path, &str), DrillError> {
    let bad = |reason: &str| DrillError::Record {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .ok_or_else(|| bad("has no directory"))?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| bad("has no UTF-8 file name"))?;
    Ok((dir, name))
}

/// Writes (replaces) the record atomically, mode 0600, in a directory only root can write.
pub fn write(path: &Path, rec: &DrillRecord) -> Result<(), DrillError> {
    let (dir, name) = split(path)?;
    let body = serde_json::to_vec_pretty(rec).map_err(|e| DrillError::Record {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    securefs::write_atomic_nofollow(dir, name, &body, 0o600).map_err(|e| DrillError::Record {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// True when a record (or anything) is at `path`.
pub fn exists(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}

/// Reads the record; `Ok(None)` when there is none. The directory must be
/// root's only; the record a regular file (no symlink, no FIFO) of at most 1 MiB.
pub fn read(path: &Path) -> Result<Option<DrillRecord>, DrillError> {
    let (dir, _) = split(path)?;
    if !exists(path) {
        return Ok(None);
    }
    let fail = |reason: String| DrillError::Record {
        path: path.to_path_buf(),
        reason,
    };
    securefs::check_trusted_dir(dir).map_err(|e| fail(e.to_string()))?;
    let bytes = securefs::read_bounded_regular(path, MAX_BYTES).map_err(|e| fail(e.to_string()))?;
    let rec: DrillRecord =
        serde_json::from_slice(&bytes).map_err(|e| fail(format!("not a drill record: {e}")))?;
    if rec.version != VERSION {
        return Err(fail(format!(
            "version {} (expected {VERSION})",
            rec.version
        )));
    }
    Ok(Some(rec))
}

/// Removes the record (gone already is fine).
pub fn remove(path: &Path) -> Result<(), DrillError> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(DrillError::Io {
                what: "remove drill record",
                path: path.to_path_buf(),
                source,
            })
        }
    }
    if let Ok((dir, _)) = split(path) {
        let _ = securefs::sync_dir(dir);
    }
    Ok(())
}
