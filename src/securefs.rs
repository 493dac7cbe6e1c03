//! Files a root daemon may believe: who may have written them, and reads and
//! writes that a local user cannot redirect, stall or blow up.
//!
//! **Whom appsnap trusts.** A file or directory is trusted when it is owned by
//! root, or by the effective uid appsnap runs as (the same person: when
//! appsnap runs as root that is root only; a developer running the tests as
//! themself may use their own files, which gives them nothing they did not
//! have), and nobody else can write it.
//!
//! **The way to it.** Every directory passed through on the way, symlinks
//! followed one hop at a time, must be trusted too, except that a directory
//! writable by group or others is allowed when it has the sticky bit (like
//! `/tmp`: others can add names there, but not rename or delete ours). A
//! symlink is followed only from a directory that passed, so whoever could
//! change it is already trusted. The last directory holding a *policy* or
//! *state* file must itself not be writable by anyone else (sticky or not):
//! otherwise anyone could add a drop-in or a file beside ours.
//!
//! **Reads** open with `O_NONBLOCK` (a FIFO never blocks) and `O_NOFOLLOW`,
//! check on the opened descriptor that it is a regular file, and read at most
//! a limit: a 1 GB file or `/dev/zero` is an error, not memory.
//!
//! **Writes** go to a fresh temp file (`O_EXCL | O_NOFOLLOW`) beside the
//! target, fsync, rename over the target, fsync the directory; a target that
//! is a symlink or not a regular file is refused and left untouched.
//!
//! This module imports nothing else from appsnap, so `policy` (which imports
//! nothing) may still use it.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

/// Size limit of a policy file (main or drop-in).
pub const POLICY_FILE_LIMIT: u64 = 1024 * 1024;
/// Size limit of a state file (`jobs/<job>.json` and others under `state_dir`).
pub const STATE_FILE_LIMIT: u64 = 1024 * 1024;
/// Size limit of the frozen-set record (`frozen.json`).
pub const RECORD_FILE_LIMIT: u64 = 1024 * 1024;

/// How many symlinks one path may go through (as the kernel's `ELOOP` limit).
const MAX_SYMLINK_HOPS: u32 = 40;

/// Why a file or directory is not used; every variant names the culprit.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// An operating-system call failed (not found, permission, ...).
    #[error("{}: cannot {what}: {source}", path.display())]
    Io {
        /// What was being done (`open`, `read`, `inspect`, ...).
        what: &'static str,
        /// On which path.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A symlink, directory, FIFO, device... where a regular file is needed.
    #[error("{}: is not a regular file (it is a {kind})", path.display())]
    NotRegular {
        /// The path.
        path: PathBuf,
        /// What it is instead.
        kind: &'static str,
    },
    /// A file is not a directory where one is needed.
    #[error("{}: is not a directory (it is a {kind})", path.display())]
    NotDirectory {
        /// The path.
        path: PathBuf,
        /// What it is instead.
        kind: &'static str,
    },
    /// Owned by someone appsnap does not trust.
    #[error("{}: is owned by uid {uid}; appsnap only trusts files owned by {}", path.display(), trusted_owners())]
    Owner {
        /// The file or directory.
        path: PathBuf,
        /// Its owner.
        uid: u32,
    },
    /// Writable by group or others.
    #[error("{}: has mode {mode:04o}: writable by group or others, so someone other than its owner could change it", path.display())]
    Writable {
        /// The file or directory.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A directory on the way lets someone else replace what is below it.
    #[error("{}: directory {} on the way {why}", path.display(), dir.display())]
    UnsafeDirectory {
        /// What was being opened.
        path: PathBuf,
        /// The directory.
        dir: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// More than the limit.
    #[error("{}: is larger than the {} limit", path.display(), human_size(*limit))]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The limit, bytes.
        limit: u64,
    },
    /// Too many symlinks, or a loop.
    #[error("{}: too many levels of symbolic links", path.display())]
    SymlinkLoop {
        /// The path.
        path: PathBuf,
    },
}

impl TrustError {
    /// True when the file (or a directory on the way) does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, TrustError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }
}

/// `1 MiB`, `64 KiB`, `123 bytes`.
pub fn human_size(n: u64) -> String {
    if n >= 1024 * 1024 && n.is_multiple_of(1024 * 1024) {
        format!("{} MiB", n / (1024 * 1024))
    } else if n >= 1024 && n.is_multiple_of(1024) {
        format!("{} KiB", n / 1024)
    } else {
        format!("{n} bytes")
    }
}

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Whether `uid` may own a file appsnap trusts: root, or the uid appsnap runs as.
pub fn trusted_owner(uid: u32) -> bool {
    uid == 0 || uid == euid()
}

fn trusted_owners() -> String {
    match euid() {
        0 => "root".to_string(),
        me => format!("root or uid {me} (the user appsnap runs as)"),
    }
}

fn kind(ft: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_symlink() {
        "symbolic link"
    } else if ft.is_dir() {
        "directory"
    } else if ft.is_fifo() {
        "FIFO"
    } else if ft.is_socket() {
        "socket"
    } else if ft.is_char_device() {
        "character device"
    } else if ft.is_block_device() {
        "block device"
    } else if ft.is_file() {
        "regular file"
    } else {
        "special file"
    }
}

/// A directory passed through: trusted owner, and group/other-writable only
/// with the sticky bit.
fn check_passage(target: &Path, dir: &Path, meta: &std::fs::Metadata) -> Result<(), TrustError> {
    let unsafe_dir = |why: String| TrustError::UnsafeDirectory {
        path: target.to_path_buf(),
        dir: dir.to_path_buf(),
        why,
    };
    if !meta.is_dir() {
        return Err(TrustError::NotDirectory {
            path: dir.to_path_buf(),
            kind: kind(meta.file_type()),
        });
    }
    if !trusted_owner(meta.uid()) {
        return Err(unsafe_dir(format!(
            "is owned by uid {}, so its owner could replace what is below it",
            meta.uid()
        )));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 && mode & 0o1000 == 0 {
        return Err(unsafe_dir(format!(
            "has mode {mode:04o} (writable by group or others, without the sticky bit), so others could replace what is below it"
        )));
    }
    Ok(())
}

/// The owner and mode of the thing itself: trusted owner, writable by nobody else.
fn check_owned(path: &Path, meta: &std::fs::Metadata) -> Result<(), TrustError> {
    if !trusted_owner(meta.uid()) {
        return Err(TrustError::Owner {
            path: path.to_path_buf(),
            uid: meta.uid(),
        });
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(TrustError::Writable {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

/// Resolves `path` one component at a time, as the kernel would, checking
/// every directory passed through (and each one a symlink is read from) by
/// the passage rule. Returns the physical path; its last component is not a
/// symlink (it may not exist: the error then says so).
pub fn resolve_trusted(path: &Path) -> Result<PathBuf, TrustError> {
    // I/O errors name the path asked for (a missing intermediate directory
    // reads as the file missing, as the operator expects).
    let io = |what, _at: &Path| {
        let p = path.to_path_buf();
        move |source| TrustError::Io {
            what,
            path: p,
            source,
        }
    };
    let start = if path.is_absolute() {
        PathBuf::from("/")
    } else {
        std::env::current_dir().map_err(io("find the working directory of", path))?
    };
    // Directories of `start` are checked like any other passage: they are
    // pushed last, so popped first.
    let mut pending: Vec<OsString> = Vec::new();
    let mut current = PathBuf::from("/");
    push_components(&mut pending, path);
    push_components(&mut pending, &start);
    let root = std::fs::metadata("/").map_err(io("inspect", Path::new("/")))?;
    check_passage(path, Path::new("/"), &root)?;
    let mut hops = 0;
    // `pending` is a stack: the next component is at the end.
    while let Some(name) = pending.pop() {
        if name == ".." {
            current.pop();
            continue;
        }
        let next = current.join(&name);
        let meta = std::fs::symlink_metadata(&next).map_err(io("inspect", &next))?;
        if meta.file_type().is_symlink() {
            hops += 1;
            if hops > MAX_SYMLINK_HOPS {
                return Err(TrustError::SymlinkLoop {
                    path: path.to_path_buf(),
                });
            }
            let target = std::fs::read_link(&next).map_err(io("read the symbolic link", &next))?;
            if target.is_absolute() {
                current = PathBuf::from("/");
            }
            push_components(&mut pending, &target);
            continue;
        }
        current = next;
        if !pending.is_empty() {
            check_passage(path, &current, &meta)?;
        }
    }
    Ok(current)
}

/// Pushes `p`'s components onto the stack so that its first is popped next.
fn push_components(stack: &mut Vec<OsString>, p: &Path) {
    let parts: Vec<OsString> = p
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
        })
        .collect();
    stack.extend(parts.into_iter().rev());
}

/// Checks that `dir` (and the way to it) is trusted and that nobody else can
/// add, rename or delete files in it; returns its physical path.
pub fn check_trusted_dir(dir: &Path) -> Result<PathBuf, TrustError> {
    let real = resolve_trusted(dir)?;
    let meta = std::fs::metadata(&real).map_err(|source| TrustError::Io {
        what: "inspect",
        path: dir.to_path_buf(),
        source,
    })?;
    if !meta.is_dir() {
        return Err(TrustError::NotDirectory {
            path: dir.to_path_buf(),
            kind: kind(meta.file_type()),
        });
    }
    check_owned(dir, &meta)?;
    Ok(real)
}

/// Creates `dir` (mode 0755, parents as needed) if missing, then
/// [`check_trusted_dir`]s it.
pub fn ensure_trusted_dir(dir: &Path) -> Result<PathBuf, TrustError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .map_err(|source| TrustError::Io {
            what: "create directory",
            path: dir.to_path_buf(),
            source,
        })?;
    check_trusted_dir(dir)
}

/// Opens an existing regular file without following a final symlink and
/// without blocking on a FIFO, checking the type on the opened descriptor.
pub fn open_regular_nofollow(path: &Path) -> Result<(File, std::fs::Metadata), TrustError> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|source| {
            if source.raw_os_error() == Some(libc::ELOOP) {
                TrustError::NotRegular {
                    path: path.to_path_buf(),
                    kind: "symbolic link",
                }
            } else {
                TrustError::Io {
                    what: "open",
                    path: path.to_path_buf(),
                    source,
                }
            }
        })?;
    let meta = file.metadata().map_err(|source| TrustError::Io {
        what: "inspect",
        path: path.to_path_buf(),
        source,
    })?;
    if !meta.is_file() {
        return Err(TrustError::NotRegular {
            path: path.to_path_buf(),
            kind: kind(meta.file_type()),
        });
    }
    Ok((file, meta))
}

/// Reads at most `limit` bytes of an open file; more is [`TrustError::TooLarge`].
fn read_limited(path: &Path, file: File, size: u64, limit: u64) -> Result<Vec<u8>, TrustError> {
    let too_large = || TrustError::TooLarge {
        path: path.to_path_buf(),
        limit,
    };
    if size > limit {
        return Err(too_large());
    }
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    // One byte more than allowed tells a file that grew since fstat.
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| TrustError::Io {
            what: "read",
            path: path.to_path_buf(),
            source,
        })?;
    if bytes.len() as u64 > limit {
        return Err(too_large());
    }
    Ok(bytes)
}

/// Reads a regular file of at most `limit` bytes: `O_NOFOLLOW` (a symlink is
/// refused), `O_NONBLOCK` (a FIFO is refused, never waited on). For files in
/// a directory already checked with [`check_trusted_dir`].
pub fn read_bounded_regular(path: &Path, limit: u64) -> Result<Vec<u8>, TrustError> {
    let (file, meta) = open_regular_nofollow(path)?;
    read_limited(path, file, meta.len(), limit)
}

/// Reads a file appsnap takes orders from (a policy file): the way to it and
/// every symlink on it trusted ([`resolve_trusted`]), the file itself regular,
/// owned by a trusted owner, writable by nobody else, at most `limit` bytes.
pub fn read_trusted_file(path: &Path, limit: u64) -> Result<Vec<u8>, TrustError> {
    let real = resolve_trusted(path)?;
    let (file, meta) = open_regular_nofollow(&real).map_err(|e| rename_path(e, path))?;
    check_owned(path, &meta)?;
    read_limited(path, file, meta.len(), limit)
}

/// Errors name the path the operator wrote, not where its symlinks led.
fn rename_path(e: TrustError, path: &Path) -> TrustError {
    match e {
        TrustError::NotRegular { kind, .. } => TrustError::NotRegular {
            path: path.to_path_buf(),
            kind,
        },
        TrustError::Io { what, source, .. } => TrustError::Io {
            what,
            path: path.to_path_buf(),
            source,
        },
        other => other,
    }
}

/// Replaces `dir/name` atomically with `bytes` (mode `mode`): `dir` must pass
/// [`check_trusted_dir`]; an existing `dir/name` that is not a regular file
/// (a planted symlink, a FIFO) is refused and left as it is.
pub fn write_atomic_nofollow(
    dir: &Path,
    name: &str,
    bytes: &[u8],
    mode: u32,
) -> Result<(), TrustError> {
    let real_dir = check_trusted_dir(dir)?;
    let target = dir.join(name);
    let io = |what, p: &Path| {
        let p = p.to_path_buf();
        move |source| TrustError::Io {
            what,
            path: p,
            source,
        }
    };
    match std::fs::symlink_metadata(real_dir.join(name)) {
        Ok(m) if !m.is_file() => {
            return Err(TrustError::NotRegular {
                path: target,
                kind: kind(m.file_type()),
            })
        }
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("inspect", &target)(e)),
    }
    let tmp = real_dir.join(format!(".{name}.tmp-{}-{}", std::process::id(), nonce()));
    let written = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)
            .map_err(io("create", &tmp))?;
        f.write_all(bytes).map_err(io("write", &tmp))?;
        f.sync_all().map_err(io("fsync", &tmp))?;
        std::fs::rename(&tmp, real_dir.join(name)).map_err(io("rename into place", &target))?;
        sync_dir(&real_dir)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// fsyncs a directory so a rename or create in it is durable.
pub fn sync_dir(dir: &Path) -> Result<(), TrustError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| TrustError::Io {
            what: "fsync directory",
            path: dir.to_path_buf(),
            source,
        })
}

/// A few random hex digits so two writers never share a temp name.
fn nonce() -> String {
    let mut b = [0u8; 4];
    if getrandom::fill(&mut b).is_err() {
        // Uniqueness is also given by the pid and O_EXCL; randomness is a bonus.
        return "0".to_string();
    }
    hex::encode(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};

    fn chmod(p: &Path, mode: u32) {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn a_plain_file_in_a_private_dir_is_read() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("a.toml");
        std::fs::write(&f, "x = 1\n").unwrap();
        chmod(&f, 0o644);
        assert_eq!(read_trusted_file(&f, 100).unwrap(), b"x = 1\n");
    }

    #[test]
    fn group_or_other_writable_files_and_dirs_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("a.toml");
        std::fs::write(&f, "x = 1\n").unwrap();
        chmod(&f, 0o666);
        let e = read_trusted_file(&f, 100).unwrap_err();
        assert!(matches!(e, TrustError::Writable { mode: 0o666, .. }), "{e}");
        assert!(e.to_string().contains("a.toml") && e.to_string().contains("0666"));
        chmod(&f, 0o644);
        let sub = d.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        std::fs::write(sub.join("b.toml"), "").unwrap();
        chmod(&sub, 0o777);
        let e = read_trusted_file(&sub.join("b.toml"), 100).unwrap_err();
        assert!(matches!(e, TrustError::UnsafeDirectory { .. }), "{e}");
        assert!(e.to_string().contains("0777"), "{e}");
        // Sticky, like /tmp: passing through it is fine...
        chmod(&sub, 0o1777);
        read_trusted_file(&sub.join("b.toml"), 100).unwrap();
        // ...but it cannot be a directory whose every file is trusted.
        assert!(matches!(
            check_trusted_dir(&sub),
            Err(TrustError::Writable { .. })
        ));
    }

    #[test]
    fn symlinks_are_followed_only_through_trusted_directories() {
        let d = tempfile::tempdir().unwrap();
        let real = d.path().join("real");
        std::fs::create_dir(&real).unwrap();
        std::fs::write(real.join("p.toml"), "ok").unwrap();
        symlink(real.join("p.toml"), d.path().join("link.toml")).unwrap();
        assert_eq!(
            read_trusted_file(&d.path().join("link.toml"), 10).unwrap(),
            b"ok"
        );
        // The same link into a directory anyone could write: refused.
        chmod(&real, 0o777);
        let e = read_trusted_file(&d.path().join("link.toml"), 10).unwrap_err();
        assert!(
            matches!(&e, TrustError::UnsafeDirectory { dir, .. } if dir.ends_with("real")),
            "{e}"
        );
        // A loop ends.
        symlink("loop2", d.path().join("loop1")).unwrap();
        symlink("loop1", d.path().join("loop2")).unwrap();
        assert!(matches!(
            read_trusted_file(&d.path().join("loop1"), 10),
            Err(TrustError::SymlinkLoop { .. })
        ));
    }

    #[test]
    fn fifos_devices_and_big_files_are_refused_without_blocking() {
        let d = tempfile::tempdir().unwrap();
        let fifo = d.path().join("fifo.toml");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let e = read_trusted_file(&fifo, 10).unwrap_err();
        assert!(
            matches!(e, TrustError::NotRegular { kind: "FIFO", .. }),
            "{e}"
        );
        let e = read_bounded_regular(&fifo, 10).unwrap_err();
        assert!(
            matches!(e, TrustError::NotRegular { kind: "FIFO", .. }),
            "{e}"
        );
        let e = read_trusted_file(Path::new("/dev/zero"), 10).unwrap_err();
        assert!(e.to_string().contains("character device"), "{e}");
        let big = d.path().join("big");
        std::fs::write(&big, vec![b'x'; 11]).unwrap();
        let e = read_bounded_regular(&big, 10).unwrap_err();
        assert!(
            e.to_string().contains("larger than the 10 bytes limit"),
            "{e}"
        );
        assert_eq!(read_bounded_regular(&big, 11).unwrap().len(), 11);
    }

    #[test]
    fn atomic_writes_refuse_a_planted_symlink_and_leave_its_target_alone() {
        let d = tempfile::tempdir().unwrap();
        let victim = d.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        symlink(&victim, d.path().join("state.json")).unwrap();
        let e = write_atomic_nofollow(d.path(), "state.json", b"new", 0o644).unwrap_err();
        assert!(
            matches!(
                e,
                TrustError::NotRegular {
                    kind: "symbolic link",
                    ..
                }
            ),
            "{e}"
        );
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        std::fs::remove_file(d.path().join("state.json")).unwrap();
        write_atomic_nofollow(d.path(), "state.json", b"new", 0o644).unwrap();
        write_atomic_nofollow(d.path(), "state.json", b"newer", 0o644).unwrap();
        assert_eq!(
            std::fs::read(d.path().join("state.json")).unwrap(),
            b"newer"
        );
        let names: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 2, "no temp files left: {names:?}");
        // Into a directory others can write: refused.
        chmod(d.path(), 0o777);
        assert!(matches!(
            write_atomic_nofollow(d.path(), "state.json", b"x", 0o644),
            Err(TrustError::Writable { .. })
        ));
        chmod(d.path(), 0o700);
    }

    #[test]
    fn sizes_read_as_operators_write_them() {
        assert_eq!(human_size(1024 * 1024), "1 MiB");
        assert_eq!(human_size(64 * 1024), "64 KiB");
        assert_eq!(human_size(10), "10 bytes");
    }
}
