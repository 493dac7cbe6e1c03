//! Accept-time "is this file system frozen?" probe. Linux exposes no frozen
//! flag, so the probe tries the cheapest write that leaves no trace: an
//! unnamed `O_TMPFILE` in the mount's root. On a frozen file system that open
//! blocks until thaw; if it has not returned within the timeout, the file
//! system is reported frozen. The blocked thread finishes (and closes the
//! unnamed file, which vanishes) after the thaw.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use crate::state::ProbeResult;

/// Probes one mount point.
pub fn probe_frozen(mount: &Path, timeout: Duration) -> ProbeResult {
    let res = |frozen, error| ProbeResult {
        mount: mount.to_path_buf(),
        frozen,
        error,
    };
    let c = match CString::new(mount.as_os_str().as_bytes()) {
        Ok(c) => c,
        Err(_) => return res(None, Some("path contains NUL".into())),
    };
    if !mount.is_dir() {
        return res(None, Some("not a directory".into()));
    }
    let (tx, rx) = mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("freeze-probe".into())
        .spawn(move || {
            // SAFETY: c is a valid NUL-terminated path.
            let fd = unsafe { libc::open(c.as_ptr(), libc::O_TMPFILE | libc::O_RDWR, 0o600) };
            let r = if fd < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                // SAFETY: fd was just opened by us.
                unsafe { libc::close(fd) };
                Ok(())
            };
            let _ = tx.send(r);
        });
    if let Err(e) = spawned {
        return res(None, Some(format!("cannot start probe thread: {e}")));
    }
    match rx.recv_timeout(timeout) {
        Ok(Ok(())) => res(Some(false), None),
        Ok(Err(e)) => res(None, Some(format!("O_TMPFILE probe failed: {e}"))),
        Err(_) => res(Some(true), None),
    }
}
