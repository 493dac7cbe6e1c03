//! Reading the policy from disk: the main file, then `*.toml` drop-ins in
//! name order (so `10-db.toml` comes before `20-web.toml`).

use std::path::{Path, PathBuf};

use super::error::PolicyError;
use super::types::Policy;
use super::validate::{validate, Source};

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

fn read(path: &Path, is_main: bool) -> Result<Source, PolicyError> {
    let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(Source {
        path: path.to_path_buf(),
        text,
        is_main,
    })
}

fn dropins(dir: &Path) -> Result<Vec<PathBuf>, PolicyError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(PolicyError::ReadDir {
                path: dir.to_path_buf(),
                source,
            })
        }
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| PolicyError::ReadDir {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = entry.path();
        let visible = !entry.file_name().to_string_lossy().starts_with('.');
        if visible && path.extension().is_some_and(|e| e == "toml") && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}
