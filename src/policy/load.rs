//! Reading the policy from disk: the main file, then `*.toml` drop-ins in
//! name order (so `10-db.toml` comes before `20-web.toml`).
//!
//! The policy tells a root daemon what to freeze, which endpoint to trust and
//! where to write: every file and the drop-in directory must be ones only
//! root could have written ([`crate::securefs`]), or the load fails naming
//! the file and why. Symlinks (the main file or a drop-in) are followed only
//! through trusted directories.

use std::path::{Path, PathBuf};

use super::error::PolicyError;
use super::types::Policy;
use super::validate::{validate, Source};
use crate::securefs::{self, TrustError, POLICY_FILE_LIMIT};

/// Loads and validates `main` plus every `*.toml` in `dropin_dir` (a missing
/// directory means no drop-ins; a missing main file is an error).
pub fn load(main: &Path, dropin_dir: &Path) -> Result<Policy, PolicyError> {
    let mut sources = vec![read(main, true)?];
    for path in dropins(dropin_dir)? {
        sources.push(read(&path, false)?);
    }
    validate(&sources).map_err(PolicyError::Invalid)
}

/// Validates one policy text as if it were the main file (tests, `-c -`-like uses).
pub fn parse_str(path: &Path, text: &str) -> Result<Policy, PolicyError> {
    validate(&[Source {
        path: path.to_path_buf(),
        text: text.to_string(),
        is_main: true,
    }])
    .map_err(PolicyError::Invalid)
}

/// The files [`load`] would read, in order (shown by `check`).
pub fn sources(main: &Path, dropin_dir: &Path) -> Result<Vec<PathBuf>, PolicyError> {
    let mut v = vec![main.to_path_buf()];
    v.extend(dropins(dropin_dir)?);
    Ok(v)
}

/// A trust failure as a policy error: plain I/O stays "cannot read policy".
fn policy_error(e: TrustError) -> PolicyError {
    match e {
        TrustError::Io { path, source, .. } => PolicyError::Read { path, source },
        other => PolicyError::Untrusted(other),
    }
}

fn read(path: &Path, is_main: bool) -> Result<Source, PolicyError> {
    let bytes = securefs::read_trusted_file(path, POLICY_FILE_LIMIT).map_err(|e| {
        if is_main && e.is_not_found() {
            PolicyError::NotFound {
                path: path.to_path_buf(),
            }
        } else {
            policy_error(e)
        }
    })?;
    let text = String::from_utf8(bytes).map_err(|_| PolicyError::Read {
        path: path.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text"),
    })?;
    Ok(Source {
        path: path.to_path_buf(),
        text,
        is_main,
    })
}

/// The visible `*.toml` entries of a trusted drop-in directory. Each is
/// checked when read; one that is not a regular file is refused then, not
/// skipped, so a planted FIFO or directory is noticed.
fn dropins(dir: &Path) -> Result<Vec<PathBuf>, PolicyError> {
    match securefs::check_trusted_dir(dir) {
        Ok(_) => {}
        Err(e) if e.is_not_found() => return Ok(Vec::new()),
        Err(TrustError::Io { path, source, .. }) => {
            return Err(PolicyError::ReadDir { path, source })
        }
        Err(e) => return Err(PolicyError::Untrusted(e)),
    }
    let entries = std::fs::read_dir(dir).map_err(|source| PolicyError::ReadDir {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| PolicyError::ReadDir {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = entry.path();
        let visible = !entry.file_name().to_string_lossy().starts_with('.');
        if visible && path.extension().is_some_and(|e| e == "toml") {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}
