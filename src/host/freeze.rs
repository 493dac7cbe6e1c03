//! FIFREEZE / FITHAW on opened directory fds, and the identity check that
//! makes sure an fd is the mount we planned (never `/` because a mount vanished).

use std::ffi::CString;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::errno::Errno;
use thiserror::Error;

use super::mounts;
use super::protocol::Target;

/// The raw ioctls, as nix generates them (kept private: the safe wrappers
/// below are the API).
mod raw {
    nix::ioctl_readwrite!(fifreeze_raw, b'X', 119, libc::c_int);
    nix::ioctl_readwrite!(fithaw_raw, b'X', 120, libc::c_int);
}
use raw::{fifreeze_raw, fithaw_raw};

/// Freezes the file system of `fd`. EBUSY = already frozen (by someone else, or a
/// bind mount of something we froze); EOPNOTSUPP = the type cannot freeze.
pub fn freeze(fd: BorrowedFd<'_>) -> Result<(), Errno> {
    let mut arg: libc::c_int = 0;
    // SAFETY: `fd` is an open descriptor; the kernel ignores the argument.
    unsafe { fifreeze_raw(fd.as_raw_fd(), &mut arg) }.map(|_| ())
}

/// Result of a successful thaw call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Thawed {
    /// It was frozen and is now thawed.
    Thawed,
    /// It was not frozen (EINVAL): success for a thaw.
    NotFrozen,
}

/// Thaws the file system of `fd`; EINVAL ("not frozen") is reported as [`Thawed::NotFrozen`].
pub fn thaw(fd: BorrowedFd<'_>) -> Result<Thawed, Errno> {
    let mut arg: libc::c_int = 0;
    // SAFETY: `fd` is an open descriptor; the kernel ignores the argument.
    match unsafe { fithaw_raw(fd.as_raw_fd(), &mut arg) } {
        Ok(_) => Ok(Thawed::Thawed),
        Err(Errno::EINVAL) => Ok(Thawed::NotFrozen),
        Err(e) => Err(e),
    }
}

/// Flushes the file system before freezing, so the freeze itself (which also
/// flushes, with writers already blocked) is short.
pub fn syncfs(fd: BorrowedFd<'_>) -> Result<(), Errno> {
    // SAFETY: plain syscall on an open fd.
    Errno::result(unsafe { libc::syncfs(fd.as_raw_fd()) }).map(|_| ())
}

/// Opens a mount point's root directory read-only (no following a final symlink).
pub fn open_dir(path: &Path) -> Result<OwnedFd, Errno> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(|_| Errno::EINVAL)?;
    // SAFETY: valid C string; the returned fd is owned below.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC | libc::O_NOFOLLOW,
        )
    };
    Errno::result(fd)?;
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Why an opened directory is not the planned mount.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum IdentityError {
    /// The mount point could not be opened.
    #[error("cannot open {path}: {errno}")]
    Open {
        /// The mount point.
        path: String,
        /// The error.
        errno: Errno,
    },
    /// statx failed.
    #[error("statx {path}: {errno}")]
    Stat {
        /// The mount point.
        path: String,
        /// The error.
        errno: Errno,
    },
    /// The directory belongs to another mount (the planned one was unmounted or over-mounted).
    #[error("{path} is mount {found}, expected mount {expected}: the file system was unmounted or replaced since planning")]
    WrongMount {
        /// The mount point.
        path: String,
        /// Mount id found.
        found: u64,
        /// Mount id planned.
        expected: u64,
    },
    /// The directory is not the root of a mount.
    #[error("{path} is not a mount root: its file system is no longer mounted there")]
    NotMountRoot {
        /// The mount point.
        path: String,
    },
    /// The device differs.
    #[error("{path} is on device {found}, expected {expected}")]
    WrongDevice {
        /// The mount point.
        path: String,
        /// Device found.
        found: String,
        /// Device planned.
        expected: String,
    },
}

/// Checks that `fd` is the root directory of the planned mount: same mount id
/// (`statx` STATX_MNT_ID, or mountinfo on kernels before 5.8), a mount root, and
/// for real block devices the same `st_dev`. btrfs reports anonymous devices
/// that differ between mountinfo and st_dev, so only the mount id counts there.
pub fn verify(fd: BorrowedFd<'_>, t: &Target, mountinfo: &Path) -> Result<(), IdentityError> {
    let path = t.mount_point.display().to_string();
    let stx = statx_fd(fd, &path, libc::STATX_BASIC_STATS | libc::STATX_MNT_ID)?;
    if stx.stx_mask & libc::STATX_MNT_ID != 0 {
        if stx.stx_mnt_id != t.mount_id {
            return Err(IdentityError::WrongMount {
                path,
                found: stx.stx_mnt_id,
                expected: t.mount_id,
            });
        }
    } else {
        // Old kernel: the topmost mount at that path must still be the planned one.
        let found = mounts::read(mountinfo)
            .ok()
            .and_then(|ms| {
                ms.iter()
                    .rev()
                    .find(|m| m.mount_point == t.mount_point)
                    .map(|m| m.mount_id)
            })
            .unwrap_or(0);
        if found != t.mount_id {
            return Err(IdentityError::WrongMount {
                path,
                found,
                expected: t.mount_id,
            });
        }
    }
    let root_flag = libc::STATX_ATTR_MOUNT_ROOT as u64;
    if stx.stx_attributes_mask & root_flag != 0 && stx.stx_attributes & root_flag == 0 {
        return Err(IdentityError::NotMountRoot { path });
    }
    if t.dev_major != 0 && (stx.stx_dev_major, stx.stx_dev_minor) != (t.dev_major, t.dev_minor) {
        return Err(IdentityError::WrongDevice {
            path,
            found: format!("{}:{}", stx.stx_dev_major, stx.stx_dev_minor),
            expected: format!("{}:{}", t.dev_major, t.dev_minor),
        });
    }
    Ok(())
}

fn statx_fd(fd: BorrowedFd<'_>, path: &str, mask: u32) -> Result<libc::statx, IdentityError> {
    // SAFETY: zeroed statx is a valid out-parameter.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    let empty = c"";
    // SAFETY: valid fd, empty path with AT_EMPTY_PATH, valid out pointer.
    let r = unsafe {
        libc::statx(
            fd.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_EMPTY_PATH,
            mask,
            &mut stx,
        )
    };
    Errno::result(r).map_err(|errno| IdentityError::Stat {
        path: path.to_string(),
        errno,
    })?;
    Ok(stx)
}

/// `st_dev` of an opened mount root: names its superblock in every mount namespace.
pub fn st_dev(fd: BorrowedFd<'_>, t: &Target) -> Result<(u32, u32), IdentityError> {
    let stx = statx_fd(
        fd,
        &t.mount_point.display().to_string(),
        libc::STATX_BASIC_STATS,
    )?;
    Ok((stx.stx_dev_major, stx.stx_dev_minor))
}

/// The check `thaw --all` falls back to when the mount id differs because it
/// runs in another mount namespace than the guard that froze: the directory
/// must be a mount root (the kernel must say so) on the very superblock the
/// guard recorded (`st_dev`). Freezing is per superblock, so that is the
/// identity that matters for a thaw.
pub fn verify_same_superblock(fd: BorrowedFd<'_>, t: &Target) -> Result<(), IdentityError> {
    let path = t.mount_point.display().to_string();
    let Some(recorded) = t.st_dev else {
        return Err(IdentityError::NotMountRoot { path });
    };
    let stx = statx_fd(fd, &path, libc::STATX_BASIC_STATS)?;
    let root_flag = libc::STATX_ATTR_MOUNT_ROOT as u64;
    if stx.stx_attributes_mask & root_flag == 0 || stx.stx_attributes & root_flag == 0 {
        return Err(IdentityError::NotMountRoot { path });
    }
    let found = (stx.stx_dev_major, stx.stx_dev_minor);
    if found != recorded {
        return Err(IdentityError::WrongDevice {
            path,
            found: format!("{}:{}", found.0, found.1),
            expected: format!("{}:{}", recorded.0, recorded.1),
        });
    }
    Ok(())
}

/// Opens a target and verifies its identity in one step.
pub fn open_verified(t: &Target, mountinfo: &Path) -> Result<OwnedFd, IdentityError> {
    let fd = open_dir(&t.mount_point).map_err(|errno| IdentityError::Open {
        path: t.mount_point.display().to_string(),
        errno,
    })?;
    use std::os::fd::AsFd;
    verify(fd.as_fd(), t, mountinfo)?;
    Ok(fd)
}

/// `EBUSY` → a readable hint, since it usually means another tool froze it first.
pub fn describe_freeze_errno(e: Errno) -> String {
    match e {
        Errno::EBUSY => "EBUSY: already frozen (by another tool, or through another mount of the same file system)".into(),
        Errno::EOPNOTSUPP => "EOPNOTSUPP: this file system type cannot be frozen".into(),
        Errno::EPERM => "EPERM: freezing needs CAP_SYS_ADMIN".into(),
        other => format!("{}: {}", other, other.desc()),
    }
}
