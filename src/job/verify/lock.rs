//! One drill (or cleanup) at a time on an instance: an exclusive `flock` on
//! `<run_dir>/verify.lock`. Cleanup deletes every drill disk of this
//! installation it finds by tag, so it must never run beside a live drill.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use thiserror::Error;

use crate::securefs;

/// Lock file name under `run_dir`.
pub const VERIFY_LOCK_FILE: &str = "verify.lock";

/// Held for a whole drill or cleanup.
#[derive(Debug)]
pub struct DrillLock {
    _lock: Flock<File>,
}

/// Why the lock was not taken.
#[derive(Debug, Error)]
pub enum LockError {
    /// Another drill or cleanup holds it.
    #[error("another restore drill or cleanup is running on this instance ({path} is locked)")]
    Busy {
        /// The lock file.
        path: PathBuf,
    },
    /// The run directory or the file could not be used.
    #[error("cannot lock {path}: {reason}")]
    Io {
        /// The lock file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

impl DrillLock {
    /// Takes the lock without waiting.
    pub fn acquire(run_dir: &Path) -> Result<DrillLock, LockError> {
        let path = run_dir.join(VERIFY_LOCK_FILE);
        let io = |reason: String| LockError::Io {
            path: path.clone(),
            reason,
        };
        securefs::ensure_trusted_dir(run_dir).map_err(|e| io(e.to_string()))?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(&path)
            .map_err(|e| io(e.to_string()))?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(DrillLock { _lock: lock }),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Err(LockError::Busy { path }),
            Err((_, e)) => Err(io(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_drill_is_refused_until_the_first_ends() {
        let tmp = tempfile::tempdir().unwrap();
        let first = DrillLock::acquire(tmp.path()).unwrap();
        let second = DrillLock::acquire(tmp.path()).unwrap_err();
        assert!(matches!(second, LockError::Busy { .. }), "{second}");
        drop(first);
        DrillLock::acquire(tmp.path()).unwrap();
    }
}
