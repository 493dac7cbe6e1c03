//! The floor: what the kernel alone costs. syncfs every file system (as
//! appsnap's guard does, outside the window), then FIFREEZE all of them
//! (one after the other, or all at once from pre-started threads), hold
//! exactly L, FITHAW all (reverse order, or all at once). No client, no
//! process start-up, no API call inside the window.
//!
//! A watchdog thread thaws everything at a deadline if the main path is
//! stuck; the harness also thaws its own mounts on every exit path.

use std::io;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use crate::clock::now_ns;
use crate::fsops;

/// What `fwbench floor` was asked to do.
#[derive(Debug, Clone)]
pub struct FloorArgs {
    /// How long to hold everything frozen once the last FIFREEZE returned.
    pub hold_ms: u64,
    /// Freeze and thaw all file systems at once instead of one after the other.
    pub parallel: bool,
    /// Thaw everything after this long whatever happens.
    pub watchdog_ms: u64,
    /// Mount points.
    pub mounts: Vec<PathBuf>,
}

/// Timings of one floor run, microseconds.
#[derive(Debug, Clone, Copy)]
pub struct FloorResult {
    /// First FIFREEZE start to last FITHAW end.
    pub suspension_us: u64,
    /// First FIFREEZE start to last FIFREEZE end.
    pub freeze_us: u64,
    /// First FITHAW start to last FITHAW end.
    pub thaw_us: u64,
}

fn open_all(mounts: &[PathBuf]) -> io::Result<Vec<Arc<OwnedFd>>> {
    mounts
        .iter()
        .map(|m| {
            fsops::open_dir(m)
                .map(Arc::new)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", m.display())))
        })
        .collect()
}

fn watchdog(fds: Vec<Arc<OwnedFd>>, done: Arc<AtomicBool>, after: Duration) {
    std::thread::spawn(move || {
        std::thread::sleep(after);
        if !done.load(Ordering::SeqCst) {
            eprintln!("fwbench floor: watchdog thawing everything");
            for fd in &fds {
                let _ = fsops::thaw(fd);
            }
        }
    });
}

/// One floor run. SIGINT/SIGTERM are ignored for its fraction of a second:
/// dying between FIFREEZE and FITHAW would leave the file systems frozen
/// (and the watchdog with them) until the harness's own cleanup.
pub fn run(a: &FloorArgs) -> io::Result<FloorResult> {
    // SAFETY: setting a signal disposition to SIG_IGN has no preconditions.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGTERM, libc::SIG_IGN);
    }
    let fds = open_all(&a.mounts)?;
    for fd in &fds {
        fsops::syncfs(fd)?;
    }
    let done = Arc::new(AtomicBool::new(false));
    watchdog(
        fds.clone(),
        done.clone(),
        Duration::from_millis(a.watchdog_ms),
    );
    let hold = Duration::from_millis(a.hold_ms);
    let times = if a.parallel {
        parallel(&fds, hold)
    } else {
        sequential(&fds, hold)
    };
    done.store(true, Ordering::SeqCst);
    let t = times?;
    let first_freeze = t.iter().map(|x| x.0).min().unwrap_or(0);
    let last_frozen = t.iter().map(|x| x.1).max().unwrap_or(0);
    let first_thaw = t.iter().map(|x| x.2).min().unwrap_or(0);
    let last_thawed = t.iter().map(|x| x.3).max().unwrap_or(0);
    Ok(FloorResult {
        suspension_us: (last_thawed - first_freeze) / 1000,
        freeze_us: (last_frozen - first_freeze) / 1000,
        thaw_us: (last_thawed - first_thaw) / 1000,
    })
}

/// Per file system: freeze start, freeze end, thaw start, thaw end (ns).
type Times = (u64, u64, u64, u64);

fn sequential(fds: &[Arc<OwnedFd>], hold: Duration) -> io::Result<Vec<Times>> {
    let mut t = vec![(0, 0, 0, 0); fds.len()];
    for (i, fd) in fds.iter().enumerate() {
        t[i].0 = now_ns();
        if let Err(e) = fsops::freeze(fd) {
            for prev in fds[..i].iter().rev() {
                let _ = fsops::thaw(prev);
            }
            return Err(e);
        }
        t[i].1 = now_ns();
    }
    std::thread::sleep(hold);
    let mut err = None;
    for (i, fd) in fds.iter().enumerate().rev() {
        t[i].2 = now_ns();
        if let Err(e) = fsops::thaw(fd) {
            err.get_or_insert(e);
        }
        t[i].3 = now_ns();
    }
    err.map_or(Ok(t), Err)
}

fn parallel(fds: &[Arc<OwnedFd>], hold: Duration) -> io::Result<Vec<Times>> {
    let n = fds.len();
    // Three meeting points: start freezing, all frozen (or failed), start thawing.
    let go = Arc::new(Barrier::new(n + 1));
    let frozen = Arc::new(Barrier::new(n + 1));
    let thaw = Arc::new(Barrier::new(n + 1));
    let handles: Vec<_> = fds
        .iter()
        .map(|fd| {
            let (fd, go, frozen, thaw) = (fd.clone(), go.clone(), frozen.clone(), thaw.clone());
            std::thread::spawn(move || {
                go.wait();
                let t0 = now_ns();
                let r = fsops::freeze(&fd);
                let t1 = now_ns();
                frozen.wait();
                thaw.wait();
                let t2 = now_ns();
                let r2 = if r.is_ok() { fsops::thaw(&fd) } else { Ok(()) };
                let t3 = now_ns();
                (r.and(r2), (t0, t1, t2, t3))
            })
        })
        .collect();
    go.wait();
    frozen.wait();
    std::thread::sleep(hold);
    thaw.wait();
    let mut out = Vec::with_capacity(n);
    let mut err = None;
    for h in handles {
        let (r, t) = h
            .join()
            .map_err(|_| io::Error::other("freeze thread panicked"))?;
        if let Err(e) = r {
            err.get_or_insert(e);
        }
        out.push(t);
    }
    err.map_or(Ok(out), Err)
}
