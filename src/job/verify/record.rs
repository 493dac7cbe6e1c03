//! The drill record: what a drill created in the cloud, written under
//! `<state_dir>/verify/` *before* each creation (the ClientTokens first, the
//! disk IDs as they are answered), so a drill cut short by SIGKILL, a crash
//! or a reboot is finished by the next daemon start or `appsnap verify
//! --cleanup`: no billed disk is left behind. The host side (mounts, the
//! LVM clone) keeps its own record, named here.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::securefs::{self, TrustError, RECORD_FILE_LIMIT};

/// The record format; a newer one is left alone, not misread.
pub const DRILL_SCHEMA: u32 = 1;
/// Directory under `state_dir`.
pub const DRILL_DIR: &str = "verify";
/// How the host side's record beside a drill record is named: `<run id>.host.json`.
pub const HOST_SUFFIX: &str = ".host.json";

/// One disk the drill creates from one snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrillDisk {
    /// The snapshot it is made from.
    pub snapshot_id: String,
    /// The live disk the snapshot was taken of.
    pub source_disk_id: String,
    /// CreateDisk's ClientToken: a retry after a lost answer makes no second disk.
    pub client_token: String,
    /// The new disk, once ECS answered.
    pub disk_id: Option<String>,
}

/// Everything a drill made or may have made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrillRecord {
    /// [`DRILL_SCHEMA`].
    pub schema: u32,
    /// The drill's run ID (also the `appsnap:verify-run` disk tag).
    pub run_id: String,
    /// The job.
    pub job: String,
    /// The group under test.
    pub group_id: String,
    /// The instance the disks are attached to.
    pub instance_id: String,
    /// The disks, one per snapshot of the group.
    pub disks: Vec<DrillDisk>,
    /// Where the copies are mounted (private, under `run_dir`).
    pub host_root: PathBuf,
    /// The host side's own record (mounts, LVM clone).
    pub host_record: PathBuf,
    /// The runtime udev rule keeping LVM activation off the drill's disks,
    /// once written (removed after they are detached).
    #[serde(default)]
    pub udev_rule: Option<PathBuf>,
}

/// Why a record could not be written or read.
#[derive(Debug, Error)]
pub enum RecordError {
    /// The directory or file is not one appsnap may trust, or I/O failed.
    #[error("drill record: {0}")]
    Trust(#[from] TrustError),
    /// The file holds something else.
    #[error("drill record {path}: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

impl DrillRecord {
    /// The directory holding drill records.
    pub fn dir(state_dir: &Path) -> PathBuf {
        state_dir.join(DRILL_DIR)
    }

    /// This record's file name.
    fn file_name(&self) -> String {
        format!("{}.json", self.run_id)
    }

    /// Writes (replaces) the record atomically.
    pub fn save(&self, state_dir: &Path) -> Result<(), RecordError> {
        securefs::ensure_trusted_dir(state_dir)?;
        let dir = Self::dir(state_dir);
        securefs::ensure_trusted_dir(&dir)?;
        let mut json = serde_json::to_vec_pretty(self).map_err(|e| RecordError::Corrupt {
            path: dir.join(self.file_name()),
            reason: format!("cannot serialize: {e}"),
        })?;
        json.push(b'\n');
        securefs::write_atomic_nofollow(&dir, &self.file_name(), &json, 0o600)?;
        Ok(())
    }

    /// Removes the record: everything it names is gone.
    pub fn remove(&self, state_dir: &Path) -> Result<(), RecordError> {
        let path = Self::dir(state_dir).join(self.file_name());
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(RecordError::Trust(TrustError::Io {
                what: "remove",
                path,
                source,
            })),
        }
    }

    /// Every record left under `state_dir` (oldest run first), each with
    /// the error that made it unreadable instead when it is.
    pub fn load_all(state_dir: &Path) -> Vec<Result<DrillRecord, RecordError>> {
        let dir = Self::dir(state_dir);
        let Ok(rd) = std::fs::read_dir(&dir) else {
            return Vec::new();
        };
        let mut paths: Vec<PathBuf> = rd
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                let name = p
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                // Not temp files, not the host side's own records.
                name.ends_with(".json") && !name.starts_with('.') && !name.ends_with(HOST_SUFFIX)
            })
            .collect();
        paths.sort();
        paths.into_iter().map(|p| Self::load(&p)).collect()
    }

    fn load(path: &Path) -> Result<DrillRecord, RecordError> {
        let bytes = securefs::read_trusted_file(path, RECORD_FILE_LIMIT)?;
        let rec: DrillRecord =
            serde_json::from_slice(&bytes).map_err(|e| RecordError::Corrupt {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?;
        if rec.schema != DRILL_SCHEMA {
            return Err(RecordError::Corrupt {
                path: path.to_path_buf(),
                reason: format!("schema {} (this appsnap reads {DRILL_SCHEMA})", rec.schema),
            });
        }
        Ok(rec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(run_id: &str) -> DrillRecord {
        DrillRecord {
            schema: DRILL_SCHEMA,
            run_id: run_id.into(),
            job: "db".into(),
            group_id: "ssg-1".into(),
            instance_id: "i-1".into(),
            disks: vec![DrillDisk {
                snapshot_id: "s-1".into(),
                source_disk_id: "d-1".into(),
                client_token: "t".into(),
                disk_id: None,
            }],
            host_root: "/run/appsnap/verify/x".into(),
            host_record: "/var/lib/appsnap/verify/x.host.json".into(),
            udev_rule: None,
        }
    }

    #[test]
    fn saved_records_load_back_and_go_away() {
        let tmp = tempfile::tempdir().unwrap();
        let mut a = sample("20261202T100000Z-aa");
        a.save(tmp.path()).unwrap();
        a.disks[0].disk_id = Some("d-new".into());
        a.save(tmp.path()).unwrap();
        sample("20261202T110000Z-bb").save(tmp.path()).unwrap();
        // The host side's record beside it is not a drill record.
        std::fs::write(
            DrillRecord::dir(tmp.path()).join(format!("20261202T100000Z-aa{HOST_SUFFIX}")),
            "{\"version\":1}",
        )
        .unwrap();
        let all: Vec<DrillRecord> = DrillRecord::load_all(tmp.path())
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0], a);
        a.remove(tmp.path()).unwrap();
        assert_eq!(DrillRecord::load_all(tmp.path()).len(), 1);
    }

    #[test]
    fn a_foreign_schema_is_reported_not_misread() {
        let tmp = tempfile::tempdir().unwrap();
        let mut a = sample("r");
        a.schema = 99;
        a.save(tmp.path()).unwrap();
        let all = DrillRecord::load_all(tmp.path());
        let err = all[0].as_ref().unwrap_err().to_string();
        assert!(err.contains("schema 99"), "{err}");
    }
}
