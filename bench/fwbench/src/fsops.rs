//! FIFREEZE / FITHAW / syncfs on a mount point's root directory, for the
//! floor (the bench's own minimal freezer, independent of appsnap's code).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// `_IOWR('X', 119, int)`.
const FIFREEZE: libc::c_ulong = 0xC004_5877;
/// `_IOWR('X', 120, int)`.
const FITHAW: libc::c_ulong = 0xC004_5878;

/// Opens a mount point's root directory.
pub fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: valid C string; the fd is owned below.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn ioctl(fd: &OwnedFd, req: libc::c_ulong) -> io::Result<()> {
    let mut arg: libc::c_int = 0;
    // SAFETY: open fd; the kernel ignores the int argument of FIFREEZE/FITHAW.
    if unsafe { libc::ioctl(fd.as_raw_fd(), req as _, &mut arg) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Freezes the file system of `fd`.
pub fn freeze(fd: &OwnedFd) -> io::Result<()> {
    ioctl(fd, FIFREEZE)
}

/// Thaws the file system of `fd`; "not frozen" (EINVAL) counts as success.
pub fn thaw(fd: &OwnedFd) -> io::Result<()> {
    match ioctl(fd, FITHAW) {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(()),
        r => r,
    }
}

/// Flushes the file system of `fd`, as appsnap's guard does before freezing.
pub fn syncfs(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: plain syscall on an open fd.
    if unsafe { libc::syncfs(fd.as_raw_fd()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
