//! This installation's owner identity: a random ID generated once and kept in
//! `<state_dir>/owner-id`. Every snapshot group appsnap creates carries it as
//! the group tag `appsnap:owner`, and retention deletes only groups that carry
//! it: the job and instance tags alone are not proof of ownership, since a
//! second installation (or policy) with the same job name, the vendor plugin
//! or anyone tagging a group by hand can set them too.
//!
//! The file is written once (temp file, fsync, then a hard link that fails if
//! another writer got there first) and never rewritten: a lost or altered ID
//! only means retention deletes nothing, never that it deletes another's groups.
//! (The state directory's ownership checks belong to the state module; this
//! file is written with the same care but does not duplicate them.)

use std::fmt;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use thiserror::Error;

/// Group tag carrying the owner ID.
pub const TAG_OWNER: &str = "appsnap:owner";
/// Group tag carrying the vendor plugin's `Name` for groups `appsnap plugin`
/// made; such groups have no `appsnap:job` tag and no job ever prunes them.
pub const TAG_PLUGIN: &str = "appsnap:plugin";
/// File name under `state_dir`.
pub const OWNER_FILE: &str = "owner-id";
/// Hex digits in an ID (128 random bits).
const ID_HEX_LEN: usize = 32;

/// A validated owner ID (32 lowercase hex digits).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerId(String);

impl OwnerId {
    /// The tag value.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Parses an ID as stored (surrounding whitespace ignored).
    pub fn parse(s: &str) -> Option<OwnerId> {
        let s = s.trim();
        (s.len() == ID_HEX_LEN && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
            .then(|| OwnerId(s.to_string()))
    }
}

impl fmt::Display for OwnerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why the owner ID could not be read or created.
#[derive(Debug, Error)]
pub enum OwnerError {
    /// File system error.
    #[error("owner id {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The state directory is not one only root could write, or the file is
    /// a link, not a regular file, or too large: an ID another user could
    /// plant would steer retention.
    #[error("owner id: {0}")]
    Untrusted(crate::securefs::TrustError),
    /// The file holds something else than an ID; it is left as it is.
    #[error("owner id {path}: not an appsnap owner id (32 hex digits); retention deletes nothing until it is fixed")]
    Corrupt {
        /// The file.
        path: PathBuf,
    },
}

/// Path of the owner file for a state dir.
pub fn owner_path(state_dir: &Path) -> PathBuf {
    state_dir.join(OWNER_FILE)
}

/// Reads the ID; `Ok(None)` when this installation has none yet.
pub fn load(state_dir: &Path) -> Result<Option<OwnerId>, OwnerError> {
    let path = owner_path(state_dir);
    // Not followed through a link, a regular file, at most a few hundred bytes.
    let bytes = match crate::securefs::read_bounded_regular(&path, 256) {
        Ok(b) => b,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(OwnerError::Untrusted(e)),
    };
    std::str::from_utf8(&bytes)
        .ok()
        .and_then(OwnerId::parse)
        .map(Some)
        .ok_or(OwnerError::Corrupt { path })
}

/// Reads the ID, generating and storing it first if there is none.
pub fn load_or_create(state_dir: &Path) -> Result<OwnerId, OwnerError> {
    if let Some(id) = load(state_dir)? {
        return Ok(id);
    }
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| OwnerError::Io { path, source }
    };
    crate::securefs::ensure_trusted_dir(state_dir).map_err(OwnerError::Untrusted)?;
    let mut b = [0u8; ID_HEX_LEN / 2];
    getrandom::fill(&mut b).map_err(|e| OwnerError::Io {
        path: owner_path(state_dir),
        source: std::io::Error::other(e.to_string()),
    })?;
    let id = OwnerId(hex::encode(b));
    let tmp = state_dir.join(format!(".{OWNER_FILE}.{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)
        .map_err(io(&tmp))?;
    let written = f
        .write_all(format!("{id}\n").as_bytes())
        .and_then(|()| f.sync_all());
    drop(f);
    let linked = written.and_then(|()| std::fs::hard_link(&tmp, owner_path(state_dir)));
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            if let Ok(d) = std::fs::File::open(state_dir) {
                let _ = d.sync_all();
            }
            Ok(id)
        }
        // Another process created it first: theirs is the installation's ID.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            load(state_dir)?.ok_or(OwnerError::Corrupt {
                path: owner_path(state_dir),
            })
        }
        Err(e) => Err(io(&owner_path(state_dir))(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_id_is_created_in_a_directory_others_may_write() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        std::fs::create_dir(&state).unwrap();
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = load_or_create(&state).unwrap_err();
        assert!(matches!(e, OwnerError::Untrusted(_)), "{e}");
        assert!(!owner_path(&state).exists());
    }

    #[test]
    fn generated_once_then_read_back() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path()).unwrap().is_none());
        let a = load_or_create(dir.path()).unwrap();
        let b = load_or_create(dir.path()).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.as_str().len(), 32);
        let other = tempfile::tempdir().unwrap();
        assert_ne!(load_or_create(other.path()).unwrap(), a);
    }

    #[test]
    fn a_corrupt_file_is_an_error_and_is_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(owner_path(dir.path()), "not-an-id\n").unwrap();
        assert!(matches!(
            load_or_create(dir.path()),
            Err(OwnerError::Corrupt { .. })
        ));
        assert_eq!(
            std::fs::read_to_string(owner_path(dir.path())).unwrap(),
            "not-an-id\n"
        );
    }

    #[test]
    fn a_symlink_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("elsewhere");
        std::fs::write(&target, "0123456789abcdef0123456789abcdef\n").unwrap();
        std::os::unix::fs::symlink(&target, owner_path(dir.path())).unwrap();
        assert!(load(dir.path()).is_err());
    }
}
