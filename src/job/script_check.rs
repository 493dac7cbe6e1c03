//! Whether a pre/post-script may run: the vendor's rule (a regular file owned
//! by root, mode exactly 0700) plus ours (nobody but root can replace it on
//! the way: every directory up to `/` is root-owned and not writable by group
//! or others, except a root-owned sticky directory such as `/tmp`, where only
//! the file's owner can rename or delete it).
//!
//! "Root" is, exactly, the user appsnap runs as or root, as OpenSSH trusts
//! files owned by root or the user: appsnap runs as root, so in production
//! the two are one. Run as another user (the root-free route tests), a script
//! that user owns gives that user nothing it did not have.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, readlinkat, OFlag};
use nix::sys::stat::{fstat, Mode};

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
    #[error("{}: is owned by uid {uid}, must be owned by root{}", path.display(), or_self())]
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

/// How many symbolic links one resolution may follow (the kernel's own limit).
const MAX_SYMLINKS: usize = 40;

/// A script resolved, checked and opened once: what runs is this very file
/// (by its descriptor), whatever the path leads to later.
#[derive(Debug)]
pub struct OpenedScript {
    path: PathBuf,
    fd: OwnedFd,
}

impl OpenedScript {
    /// The path as configured (for messages and `argv[0]`).
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl AsFd for OpenedScript {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Resolves `path` one component at a time from `/` (every directory reached,
/// also through a symbolic link, must be safe; every link followed must be
/// root's), then opens the last component without following it and checks
/// the vendor's rule on that descriptor, so the check and the execution are
/// about the same file.
///
/// The descriptor is `O_PATH`: enough for `fstat` and `execveat`, and opening
/// it cannot block (a FIFO at the path) or count as reading the script.
pub fn open_script(path: &Path) -> Result<OpenedScript, ScriptProblem> {
    if !path.is_absolute() {
        return Err(ScriptProblem::Relative(path.to_path_buf()));
    }
    let Some(name) = path.file_name() else {
        return Err(ScriptProblem::NotRegular {
            path: path.to_path_buf(),
            kind: "directory",
        });
    };
    let dir = resolve_dir(path, path.parent().unwrap_or(Path::new("/")))?;
    let fd = open_component(path, &dir, Path::new(name), path)?;
    let st = fstat(&fd).map_err(|e| unreadable(path, e))?;
    let kind = st.st_mode & libc::S_IFMT;
    if kind != libc::S_IFREG {
        let kind = match kind {
            libc::S_IFLNK => "symbolic link",
            libc::S_IFDIR => "directory",
            _ => "special file",
        };
        return Err(ScriptProblem::NotRegular {
            path: path.to_path_buf(),
            kind,
        });
    }
    if !trusted_owner(st.st_uid) {
        return Err(ScriptProblem::NotRootOwned {
            path: path.to_path_buf(),
            uid: st.st_uid,
        });
    }
    let mode = st.st_mode & 0o7777;
    if mode != 0o700 {
        return Err(ScriptProblem::WrongMode {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(OpenedScript {
        path: path.to_path_buf(),
        fd,
    })
}

fn unreadable(path: &Path, e: Errno) -> ScriptProblem {
    ScriptProblem::Unreadable {
        path: path.to_path_buf(),
        reason: e.desc().to_string(),
    }
}

/// `openat(dir, name, O_PATH | O_NOFOLLOW)`; `shown` names it in errors.
fn open_component(
    script: &Path,
    dir: &OwnedFd,
    name: &Path,
    shown: &Path,
) -> Result<OwnedFd, ScriptProblem> {
    openat(
        dir,
        name,
        OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| match e {
        Errno::ENOENT => ScriptProblem::Missing(script.to_path_buf()),
        e => unreadable(shown, e),
    })
}

/// Walks `dir` from `/` like the kernel would, but by hand: each directory
/// reached is checked by [`check_directory`] on the descriptor that the next
/// step starts from, and each symbolic link followed must be owned by root
/// (in a sticky directory like `/tmp` anybody may create one). Returns the
/// directory's descriptor.
fn resolve_dir(script: &Path, dir: &Path) -> Result<OwnedFd, ScriptProblem> {
    let root = Path::new("/");
    let fd = nix::fcntl::open(
        root,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| unreadable(root, e))?;
    check_directory(script, root, &fd, None)?;
    // The directories walked so far (for ".."), with the path they were reached at.
    let mut stack: Vec<(OwnedFd, PathBuf)> = vec![(fd, root.to_path_buf())];
    let mut pending: VecDeque<OsString> = parts(dir);
    let mut via: Option<PathBuf> = None;
    let mut links = 0;
    while let Some(name) = pending.pop_front() {
        if name == ".." {
            if stack.len() > 1 {
                stack.pop();
            }
            continue;
        }
        let (cur, cur_path) = stack.last().expect("the root is never popped");
        let here = cur_path.join(&name);
        let fd = open_component(script, cur, Path::new(&name), &here)?;
        let st = fstat(&fd).map_err(|e| unreadable(&here, e))?;
        match st.st_mode & libc::S_IFMT {
            libc::S_IFLNK => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(unreadable(&here, Errno::ELOOP));
                }
                if !trusted_owner(st.st_uid) {
                    return Err(ScriptProblem::UnsafeDirectory {
                        path: script.to_path_buf(),
                        dir: here,
                        why: format!("is a symbolic link owned by uid {}", st.st_uid),
                    });
                }
                let target = readlinkat(&fd, "").map_err(|e| unreadable(&here, e))?;
                let target = PathBuf::from(target);
                if target.is_absolute() {
                    stack.truncate(1);
                }
                for part in parts(&target).into_iter().rev() {
                    pending.push_front(part);
                }
                via = Some(here);
            }
            libc::S_IFDIR => {
                check_directory(script, &here, &st, via.as_deref())?;
                stack.push((fd, here));
            }
            _ => return Err(unreadable(&here, Errno::ENOTDIR)),
        }
    }
    Ok(stack.pop().expect("the root is never popped").0)
}

/// The names in `p`, `.` dropped, `..` kept.
fn parts(p: &Path) -> VecDeque<OsString> {
    p.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
        })
        .collect()
}

/// What [`check_directory`] needs of a directory: its `fstat`.
trait DirStat {
    fn owner_mode(&self) -> Result<(u32, u32), Errno>;
}

impl DirStat for OwnedFd {
    fn owner_mode(&self) -> Result<(u32, u32), Errno> {
        fstat(self).map(|st| (st.st_uid, st.st_mode))
    }
}

impl DirStat for libc::stat {
    fn owner_mode(&self) -> Result<(u32, u32), Errno> {
        Ok((self.st_uid, self.st_mode))
    }
}

/// Root (uid 0) or the user appsnap runs as: who may own a script, the
/// directories above it and the links on the way.
fn trusted_owner(uid: u32) -> bool {
    uid == 0 || uid == nix::unistd::geteuid().as_raw()
}

/// ", or by uid N (appsnap's own)" when appsnap does not run as root.
fn or_self() -> String {
    let me = nix::unistd::geteuid();
    if me.is_root() {
        String::new()
    } else {
        format!(" or by uid {me} (the user appsnap runs as)")
    }
}

/// Root-owned and not writable by group or others, unless sticky (like
/// `/tmp`: there only a file's owner may rename or delete it).
fn check_directory(
    script: &Path,
    dir: &Path,
    st: &impl DirStat,
    via: Option<&Path>,
) -> Result<(), ScriptProblem> {
    let (uid, mode) = st.owner_mode().map_err(|e| unreadable(dir, e))?;
    let through = via.map_or(String::new(), |l| {
        format!(" (reached through the symbolic link {})", l.display())
    });
    let unsafe_dir = |why: String| ScriptProblem::UnsafeDirectory {
        path: script.to_path_buf(),
        dir: dir.to_path_buf(),
        why: why + &through,
    };
    if !trusted_owner(uid) {
        return Err(unsafe_dir(format!("is owned by uid {uid}")));
    }
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

    /// Checks one script; `Ok` means it may run as a hook.
    fn check_script(path: &Path) -> Result<(), ScriptProblem> {
        open_script(path).map(|_| ())
    }
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

    #[test]
    fn a_symlink_into_another_users_directory_is_refused_where_it_leads() {
        if !is_root() {
            eprintln!("skipped: ownership rules need root");
            return;
        }
        let d = safe_dir();
        let (real, evil) = (d.path().join("real"), d.path().join("evil"));
        for dir in [&real, &evil] {
            std::fs::create_dir(dir).unwrap();
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
            script(dir, 0o700);
        }
        // A relative link with "..": resolved like the kernel would.
        std::os::unix::fs::symlink("../real", real.join("self")).unwrap();
        std::os::unix::fs::symlink("real", d.path().join("hooks")).unwrap();
        let via_link = d.path().join("hooks/self/pre.sh");
        assert_eq!(
            check_script(&via_link),
            Ok(()),
            "root's links into root's dirs"
        );

        nix::unistd::chown(&evil, Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
        std::fs::remove_file(d.path().join("hooks")).unwrap();
        std::os::unix::fs::symlink(&evil, d.path().join("hooks")).unwrap();
        let e = check_script(&d.path().join("hooks/pre.sh")).unwrap_err();
        assert!(
            matches!(&e, ScriptProblem::UnsafeDirectory { dir, why, .. }
                if *dir == evil && why.starts_with("is owned by uid 65534 (reached through the symbolic link")),
            "{e}"
        );
    }

    #[test]
    fn a_link_not_owned_by_root_is_not_followed_even_in_a_sticky_directory() {
        if !is_root() {
            eprintln!("skipped: ownership rules need root");
            return;
        }
        let d = safe_dir();
        let real = d.path().join("real");
        std::fs::create_dir(&real).unwrap();
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o755)).unwrap();
        script(&real, 0o700);
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
        let link = d.path().join("users-link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        assert_eq!(check_script(&link.join("pre.sh")), Ok(()));
        nix::unistd::fchownat(
            nix::fcntl::AT_FDCWD,
            &link,
            Some(nix::unistd::Uid::from_raw(65534)),
            None,
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .unwrap();
        let e = check_script(&link.join("pre.sh")).unwrap_err();
        assert!(
            matches!(&e, ScriptProblem::UnsafeDirectory { dir, why, .. }
                if *dir == link && why == "is a symbolic link owned by uid 65534"),
            "{e}"
        );
    }

    #[test]
    fn a_file_in_the_way_of_a_directory_and_a_fifo_as_script() {
        if !is_root() {
            eprintln!("skipped: ownership rules need root");
            return;
        }
        let d = safe_dir();
        let p = script(d.path(), 0o700);
        assert!(matches!(
            check_script(&p.join("x.sh")),
            Err(ScriptProblem::Unreadable { .. })
        ));
        let fifo = d.path().join("fifo.sh");
        nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o700)).unwrap();
        // O_PATH: opening a FIFO to check it does not block.
        assert!(matches!(
            check_script(&fifo),
            Err(ScriptProblem::NotRegular {
                kind: "special file",
                ..
            })
        ));
    }
}
