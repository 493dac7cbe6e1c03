//! Whether a pre/post-script may run: the vendor's rule (a regular file owned
//! by root, mode exactly 0700) plus ours (nobody but root can replace it on
//! the way: every directory up to `/` is root-owned and not writable by group
//! or others, except a root-owned sticky directory such as `/tmp`, where only
//! the file's owner can rename or delete it).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Why a script does not count; the run downgrades to file-system-consistent
/// and the warning shows this text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScriptProblem {
    /// Nothing at the path.
    #[error("{}: does not exist", .0.display())]
    Missing(PathBuf),
    /// Not absolute (the policy rejects this; `plugin` parameters may not).
    #[error("{}: is not an absolute path", .0.display())]
    Relative(PathBuf),
    /// A symlink, directory, device...
    #[error("{}: is not a regular file (it is a {kind})", path.display())]
    NotRegular {
        /// The script.
        path: PathBuf,
        /// What it is instead.
        kind: &'static str,
    },
    /// Owned by someone other than root.
    #[error("{}: is owned by uid {uid}, must be owned by root", path.display())]
    NotRootOwned {
        /// The script.
        path: PathBuf,
        /// Its owner.
        uid: u32,
    },
    /// Mode other than 0700.
    #[error("{}: has mode {mode:04o}, must be exactly 0700", path.display())]
    WrongMode {
        /// The script.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A directory on the way lets someone else replace the script.
    #[error("{}: directory {} {why}, so someone other than root could replace the script", path.display(), dir.display())]
    UnsafeDirectory {
        /// The script.
        path: PathBuf,
        /// The directory.
        dir: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// stat failed for another reason.
    #[error("{}: cannot inspect: {reason}", path.display())]
    Unreadable {
        /// The script or directory.
        path: PathBuf,
        /// The OS error.
        reason: String,
    },
}

/// Checks one script; `Ok` means it may run as an application-consistency hook.
pub fn check_script(path: &Path) -> Result<(), ScriptProblem> {
    if !path.is_absolute() {
        return Err(ScriptProblem::Relative(path.to_path_buf()));
    }
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ScriptProblem::Missing(path.to_path_buf()))
        }
        Err(e) => {
            return Err(ScriptProblem::Unreadable {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })
        }
    };
    let ft = meta.file_type();
    if !ft.is_file() {
        let kind = if ft.is_symlink() {
            "symbolic link"
        } else if ft.is_dir() {
            "directory"
        } else {
            "special file"
        };
        return Err(ScriptProblem::NotRegular {
            path: path.to_path_buf(),
            kind,
        });
    }
    if meta.uid() != 0 {
        return Err(ScriptProblem::NotRootOwned {
            path: path.to_path_buf(),
            uid: meta.uid(),
        });
    }
    let mode = meta.mode() & 0o7777;
    if mode != 0o700 {
        return Err(ScriptProblem::WrongMode {
            path: path.to_path_buf(),
            mode,
        });
    }
    for dir in path.ancestors().skip(1) {
        check_directory(path, dir)?;
    }
    Ok(())
}

fn check_directory(script: &Path, dir: &Path) -> Result<(), ScriptProblem> {
    let meta = std::fs::metadata(dir).map_err(|e| ScriptProblem::Unreadable {
        path: dir.to_path_buf(),
        reason: e.to_string(),
    })?;
    let unsafe_dir = |why: String| ScriptProblem::UnsafeDirectory {
        path: script.to_path_buf(),
        dir: dir.to_path_buf(),
        why,
    };
    if meta.uid() != 0 {
        return Err(unsafe_dir(format!("is owned by uid {}", meta.uid())));
    }
    let mode = meta.mode();
    let sticky = mode & 0o1000 != 0;
    if mode & 0o022 != 0 && !sticky {
        return Err(unsafe_dir(format!(
            "has mode {:04o} (writable by group or others)",
            mode & 0o7777
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn is_root() -> bool {
        nix::unistd::geteuid().is_root()
    }

    /// A root-owned 0755 directory under a root-owned parent, as an operator would make.
    fn safe_dir() -> tempfile::TempDir {
        let d = tempfile::Builder::new()
            .prefix("appsnap-script")
            .tempdir_in("/var/tmp")
            .unwrap();
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        d
    }

    fn script(dir: &Path, mode: u32) -> PathBuf {
        let p = dir.join("pre.sh");
        std::fs::write(&p, "#!/bin/sh\nexit 0\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    #[test]
    fn vendor_rules() {
        if !is_root() {
            eprintln!("skipped: ownership rules need root");
            return;
        }
        let d = safe_dir();
        let p = script(d.path(), 0o700);
        assert_eq!(check_script(&p), Ok(()));

        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        let e = check_script(&p).unwrap_err();
        assert_eq!(
            e,
            ScriptProblem::WrongMode {
                path: p.clone(),
                mode: 0o755
            }
        );
        assert!(
            e.to_string()
                .ends_with("has mode 0755, must be exactly 0700"),
            "{e}"
        );

        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o700)).unwrap();
        nix::unistd::chown(&p, Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
        assert!(matches!(
            check_script(&p),
            Err(ScriptProblem::NotRootOwned { uid: 65534, .. })
        ));

        assert!(matches!(
            check_script(&d.path().join("absent.sh")),
            Err(ScriptProblem::Missing(_))
        ));
        assert!(matches!(
            check_script(Path::new("pre.sh")),
            Err(ScriptProblem::Relative(_))
        ));

        let link = d.path().join("link.sh");
        std::os::unix::fs::symlink(&p, &link).unwrap();
        assert!(matches!(
            check_script(&link),
            Err(ScriptProblem::NotRegular {
                kind: "symbolic link",
                ..
            })
        ));
    }

    #[test]
    fn group_writable_directory_is_refused_but_sticky_tmp_is_not() {
        if !is_root() {
            eprintln!("skipped: ownership rules need root");
            return;
        }
        let d = safe_dir();
        let p = script(d.path(), 0o700);
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o775)).unwrap();
        let e = check_script(&p).unwrap_err();
        assert!(
            matches!(&e, ScriptProblem::UnsafeDirectory { dir, .. } if dir == d.path()),
            "{e}"
        );

        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
        assert_eq!(
            check_script(&p),
            Ok(()),
            "a root-owned sticky dir is safe, like /tmp"
        );
    }
}
