//! The accept-time copy of a disk's bytes: this is what makes the emulator's
//! snapshot a real point in time. Regular files are reflinked (FICLONE) when
//! the file system allows, else copied range by range with `copy_file_range`
//! over the data extents only (holes stay holes). Block devices are read
//! through, skipping all-zero chunks so the image stays sparse.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::Path;

use serde::Serialize;

/// How an image was made (reported in `/_sim/state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CopyMethod {
    /// FICLONE reflink.
    Reflink,
    /// `copy_file_range` over data extents.
    SparseCopy,
    /// Read from a block device.
    BlockRead,
}

/// A copy that failed, naming both ends.
#[derive(Debug, thiserror::Error)]
#[error("copying {src} to {dst}: {source}")]
pub struct CopyError {
    /// Source path.
    pub src: String,
    /// Destination path.
    pub dst: String,
    /// The OS error.
    pub source: std::io::Error,
}

const FICLONE: libc::c_ulong = 0x4004_9409;
const BLKGETSIZE64: libc::c_ulong = 0x8008_1272;
const CHUNK: usize = 1 << 20;

/// Copies `src` (file or block device) to a new file `dst`.
pub fn copy_disk(src: &Path, dst: &Path) -> Result<CopyMethod, CopyError> {
    let wrap = |source| CopyError {
        src: src.display().to_string(),
        dst: dst.display().to_string(),
        source,
    };
    let input = File::open(src).map_err(wrap)?;
    let meta = input.metadata().map_err(wrap)?;
    let mut out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dst)
        .map_err(wrap)?;
    let method = if meta.file_type().is_block_device() {
        copy_block(src, &input, &mut out)
    } else if meta.is_file() {
        copy_file(&input, &out, meta.len())
    } else {
        Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "backing is neither a regular file nor a block device",
        ))
    }
    .map_err(wrap)?;
    out.sync_all().map_err(wrap)?;
    Ok(method)
}

fn cvt(r: libc::c_int) -> std::io::Result<libc::c_int> {
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn copy_file(input: &File, out: &File, len: u64) -> std::io::Result<CopyMethod> {
    // SAFETY: both fds are open for the duration of the call; FICLONE takes
    // the source fd as its argument.
    let r = unsafe { libc::ioctl(out.as_raw_fd(), FICLONE as _, input.as_raw_fd()) };
    if r == 0 {
        return Ok(CopyMethod::Reflink);
    }
    out.set_len(len)?;
    let (ifd, ofd) = (input.as_raw_fd(), out.as_raw_fd());
    let mut pos: i64 = 0;
    let end = len as i64;
    while pos < end {
        // SAFETY: plain lseek on an open fd.
        let data = unsafe { libc::lseek(ifd, pos, libc::SEEK_DATA) };
        if data < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENXIO) {
                break; // only a hole remains
            }
            return Err(e);
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(ifd, data, libc::SEEK_HOLE) };
        let hole = if hole < 0 { end } else { hole.min(end) };
        copy_range(ifd, ofd, data, hole)?;
        pos = hole;
    }
    Ok(CopyMethod::SparseCopy)
}

fn copy_range(ifd: i32, ofd: i32, start: i64, end: i64) -> std::io::Result<()> {
    let (mut off_in, mut off_out) = (start, start);
    while off_in < end {
        let want = (end - off_in).min(1 << 30) as usize;
        // SAFETY: offsets are valid pointers to locals; fds are open.
        let n = unsafe { libc::copy_file_range(ifd, &mut off_in, ofd, &mut off_out, want, 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::EXDEV)
                | Some(libc::ENOSYS)
                | Some(libc::EINVAL)
                | Some(libc::EOPNOTSUPP) => rw_range(ifd, ofd, off_in, end),
                _ => Err(e),
            };
        }
        if n == 0 {
            break; // source shrank under us
        }
    }
    Ok(())
}

fn rw_range(ifd: i32, ofd: i32, mut off: i64, end: i64) -> std::io::Result<()> {
    let mut buf = vec![0u8; CHUNK];
    while off < end {
        let want = ((end - off) as usize).min(CHUNK);
        // SAFETY: buf has `want` bytes of space.
        let n = cvt(unsafe { libc::pread(ifd, buf.as_mut_ptr().cast(), want, off) as i32 })?;
        if n == 0 {
            break;
        }
        let mut done = 0usize;
        while done < n as usize {
            // SAFETY: the slice is within buf.
            let w = cvt(unsafe {
                libc::pwrite(
                    ofd,
                    buf[done..].as_ptr().cast(),
                    n as usize - done,
                    off + done as i64,
                ) as i32
            })?;
            done += w as usize;
        }
        off += n as i64;
    }
    Ok(())
}

fn copy_block(path: &Path, input: &File, out: &mut File) -> std::io::Result<CopyMethod> {
    let mut size: u64 = 0;
    // SAFETY: BLKGETSIZE64 writes one u64 through the pointer.
    cvt(unsafe { libc::ioctl(input.as_raw_fd(), BLKGETSIZE64 as _, &mut size as *mut u64) })?;
    // Read with O_DIRECT so the copy sees what the file system wrote through
    // bios, never a stale page of the device's own cache; fall back to a
    // buffered read after dropping that cache if O_DIRECT is refused.
    let direct = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .ok();
    if direct.is_none() {
        // SAFETY: advisory call on an open fd.
        unsafe { libc::posix_fadvise(input.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    }
    let fd = direct.as_ref().unwrap_or(input).as_raw_fd();
    // A 4 KiB-aligned window into an over-allocated buffer, as O_DIRECT needs.
    let mut raw = vec![0u8; CHUNK + 4096];
    let pad = raw.as_ptr().align_offset(4096);
    let buf = &mut raw[pad..pad + CHUNK];
    let mut off: u64 = 0;
    while off < size {
        let want = ((size - off) as usize).min(CHUNK);
        let mut got = 0usize;
        while got < want {
            // SAFETY: buf has CHUNK bytes; got < want <= CHUNK.
            let n = unsafe {
                libc::pread(
                    fd,
                    buf[got..].as_mut_ptr().cast(),
                    want - got,
                    (off + got as u64) as i64,
                )
            };
            if n < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if n == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "block device ended early",
                ));
            }
            got += n as usize;
        }
        if buf[..want].iter().all(|b| *b == 0) {
            out.seek(SeekFrom::Current(want as i64))?;
        } else {
            out.write_all(&buf[..want])?;
        }
        off += want as u64;
    }
    out.set_len(size)?;
    Ok(CopyMethod::BlockRead)
}
