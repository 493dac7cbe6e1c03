//! Accept-time "is this file system frozen?" probe. Linux exposes no frozen
//! flag, so the probe tries the cheapest write that leaves no trace: an
//! unnamed `O_TMPFILE` in the mount's root. On a frozen file system that open
//! blocks until thaw; if it has not returned within the timeout, the file
//! system is reported frozen. The blocked thread finishes (and closes the
//! unnamed file, which vanishes) after the thaw.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::state::ProbeResult;

/// A probe under way: the thread has started its `O_TMPFILE` open.
#[derive(Debug)]
pub struct Pending {
    mount: PathBuf,
    rx: Option<mpsc::Receiver<std::io::Result<()>>>,
    early: Option<ProbeResult>,
}

/// Starts probing one mount point; all probes of a group start together so
/// they observe the same moment.
pub fn start(mount: &Path) -> Pending {
    let early = |error: &str| Pending {
        mount: mount.to_path_buf(),
        rx: None,
        early: Some(ProbeResult {
            mount: mount.to_path_buf(),
            frozen: None,
            error: Some(error.to_string()),
        }),
    };
    let c = match CString::new(mount.as_os_str().as_bytes()) {
        Ok(c) => c,
        Err(_) => return early("path contains NUL"),
    };
    if !mount.is_dir() {
        return early("not a directory");
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
        return early(&format!("cannot start probe thread: {e}"));
    }
    Pending {
        mount: mount.to_path_buf(),
        rx: Some(rx),
        early: None,
    }
}

impl Pending {
    /// Waits until `deadline` for the probe's answer.
    pub fn finish(self, deadline: Instant) -> ProbeResult {
        if let Some(r) = self.early {
            return r;
        }
        let res = |frozen, error| ProbeResult {
            mount: self.mount.clone(),
            frozen,
            error,
        };
        let Some(rx) = self.rx else {
            return res(None, Some("probe not started".into()));
        };
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(Ok(())) => res(Some(false), None),
            Ok(Err(e)) => res(None, Some(format!("O_TMPFILE probe failed: {e}"))),
            Err(_) => res(Some(true), None),
        }
    }
}

/// Probes one mount point, waiting at most `timeout`.
pub fn probe_frozen(mount: &Path, timeout: Duration) -> ProbeResult {
    start(mount).finish(Instant::now() + timeout)
}
