//! The daemon's side of the freeze guard: spawn it, tell it to freeze, tell it
//! to thaw. Dropping a [`FreezeGuard`] closes its stdin, which makes the guard
//! thaw at once, so an early return or a panic in the job cannot leave
//! anything frozen. The guard is never killed: a guard killed in the middle of
//! a hung FIFREEZE would leave that file system frozen with nobody to thaw it.

use std::io::Write;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use thiserror::Error;

use super::freeze::describe_freeze_errno;
use super::plan::Plan;
use super::protocol::{FsThaw, GuardEvent, GuardRequest, Target, ThawCause, VERSION};

/// How long opening/verifying targets and writing the record may take.
const ARM_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the pre-freeze syncfs of every target may take.
const SYNC_TIMEOUT: Duration = Duration::from_secs(300);
/// Slack after the deadline before a silent guard counts as hung.
const GRACE: Duration = Duration::from_secs(5);

/// Could not suspend I/O: the vendor's exit code 11. Nothing of ours is left
/// frozen, except for [`FreezeError::Hung`], where the guard's deadline and
/// the record (`appsnap thaw --all`) take over.
#[derive(Debug, Error)]
pub enum FreezeError {
    /// The guard process could not be started.
    #[error("cannot start the freeze guard {exe}: {source}")]
    Spawn {
        /// The binary.
        exe: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The guard refused before freezing anything (identity mismatch, record not writable, …).
    #[error("freeze guard could not prepare ({stage}): {message}")]
    Prepare {
        /// Which step.
        stage: String,
        /// Why.
        message: String,
    },
    /// FIFREEZE failed on a file system; whatever the guard had frozen was thawed.
    #[error("cannot freeze {}: {}", .mount_point.display(), describe_freeze_errno(*.errno))]
    Freeze {
        /// The file system that failed.
        mount_point: PathBuf,
        /// The errno (EBUSY: frozen by someone else).
        errno: Errno,
        /// What was thawed again.
        thawed: Vec<FsThaw>,
    },
    /// The deadline passed before every FIFREEZE returned; everything was thawed.
    #[error("the freeze deadline passed while still freezing; everything was thawed")]
    DeadlineWhileFreezing,
    /// The guard stopped answering while freezing (a FIFREEZE may hang in the kernel).
    /// Its deadline thaws what it froze; the record lets `appsnap thaw --all` finish the job.
    #[error("the freeze guard did not answer within {0:?} (a FIFREEZE may be hanging); its deadline thread thaws what it froze")]
    Hung(Duration),
    /// The guard broke the protocol or died.
    #[error("freeze guard: {0}")]
    Guard(String),
}

/// Could not resume I/O (or cannot prove it): the vendor's exit code 12.
#[derive(Debug, Error)]
pub enum ThawError {
    /// FITHAW failed on some file systems.
    #[error("cannot thaw {}", .failed.iter().map(|f| format!("{} (errno {})", f.mount_point.display(), f.errno.unwrap_or(0))).collect::<Vec<_>>().join(", "))]
    Thaw {
        /// The failures.
        failed: Vec<FsThaw>,
        /// The whole report.
        report: ThawReport,
    },
    /// The guard did not confirm the thaw; its deadline and the record remain as safety nets.
    #[error("the freeze guard did not confirm the thaw within {0:?}")]
    Timeout(Duration),
    /// The guard broke the protocol or died before confirming.
    #[error("freeze guard: {0}")]
    Guard(String),
}

/// Proof that everything is frozen, and until when the guard keeps it so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frozen {
    /// When the parent learned the file systems were frozen.
    pub at: Instant,
    /// At the latest, the guard thaws by itself then (measured from just before the first FIFREEZE).
    pub thaw_by: Instant,
}

/// What the thaw did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThawReport {
    /// Why the guard thawed; [`ThawCause::Deadline`] means the snapshot may postdate the thaw.
    pub cause: ThawCause,
    /// Per file system, in thaw order, with how long its writers were held.
    pub filesystems: Vec<FsThaw>,
    /// First FIFREEZE to last FITHAW, in microseconds.
    pub window_us: u64,
}

impl ThawReport {
    /// File systems someone else thawed while the guard held them (`check`
    /// or FITHAW's EINVAL): their I/O was not suspended throughout.
    pub fn lost(&self) -> Vec<&Path> {
        self.filesystems
            .iter()
            .filter(|f| f.lost)
            .map(|f| f.mount_point.as_path())
            .collect()
    }
}

/// A running freeze guard.
#[derive(Debug)]
pub struct FreezeGuard {
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    stdout: LineReader,
    deadline: Duration,
    /// An event read by [`FreezeGuard::check`] that belongs to the thaw (the
    /// guard's deadline thawed before the check arrived).
    pending: Option<GuardEvent>,
}

impl FreezeGuard {
    /// Starts `appsnap freeze-guard` from this very binary for the plan's file
    /// systems. It execs `/proc/self/exe`, which is the running image even if
    /// the package was upgraded (the path replaced) since the daemon started.
    pub fn spawn(
        plan: &Plan,
        deadline: Duration,
        run_dir: &Path,
    ) -> Result<FreezeGuard, FreezeError> {
        Self::spawn_exe(
            Path::new("/proc/self/exe"),
            plan.targets(),
            deadline,
            run_dir,
        )
    }

    /// Starts the guard from `exe` (tests pass the built `appsnap`), and waits
    /// until it has opened and verified every target, written the record and
    /// locked its memory.
    pub fn spawn_exe(
        exe: &Path,
        targets: Vec<Target>,
        deadline: Duration,
        run_dir: &Path,
    ) -> Result<FreezeGuard, FreezeError> {
        let mut child = Command::new(exe)
            .arg("freeze-guard")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            // Its own process group: a terminal's Ctrl-C or a group kill aimed at
            // the daemon must not reach the guard.
            .process_group(0)
            .spawn()
            .map_err(|source| FreezeError::Spawn {
                exe: exe.to_path_buf(),
                source,
            })?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().map(LineReader::new);
        let (Some(stdin), Some(stdout)) = (stdin, stdout) else {
            return Err(FreezeError::Guard("no pipes to the guard".into()));
        };
        let mut g = FreezeGuard {
            child: Some(child),
            stdin: Some(stdin),
            stdout,
            deadline,
            pending: None,
        };
        let req = GuardRequest {
            version: VERSION,
            run_dir: run_dir.to_path_buf(),
            deadline_ms: deadline.as_millis() as u64,
            targets,
        };
        let mut line = serde_json::to_vec(&req).map_err(|e| FreezeError::Guard(e.to_string()))?;
        line.push(b'\n');
        g.send(&line)
            .map_err(|e| FreezeError::Guard(format!("sending the request: {e}")))?;
        match g.next_event(ARM_TIMEOUT) {
            Ok(GuardEvent::Armed { .. }) => Ok(g),
            Ok(GuardEvent::Error { stage, message }) => {
                Err(FreezeError::Prepare { stage, message })
            }
            Ok(other) => Err(FreezeError::Guard(format!(
                "unexpected {other:?} before armed"
            ))),
            Err(e) => Err(FreezeError::Guard(e)),
        }
    }

    /// The guard's pid (for the log, and for tests that kill it).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self.stdin.as_mut() {
            Some(s) => {
                s.write_all(bytes)?;
                s.flush()
            }
            None => Err(std::io::Error::from(std::io::ErrorKind::BrokenPipe)),
        }
    }

    fn next_event(&mut self, timeout: Duration) -> Result<GuardEvent, String> {
        match self.stdout.read_line(timeout) {
            Ok(Some(line)) => serde_json::from_slice(&line)
                .map_err(|e| format!("bad message {:?}: {e}", String::from_utf8_lossy(&line))),
            Ok(None) => Err("the guard exited without answering".into()),
            Err(LineError::Timeout) => Err("timeout".into()),
            Err(LineError::Io(e)) => Err(e.to_string()),
        }
    }

    /// Freezes every target in plan order. On error nothing of ours stays frozen
    /// (see [`FreezeError::Hung`] for the one exception the deadline covers).
    pub fn freeze(&mut self) -> Result<Frozen, FreezeError> {
        self.send(b"freeze\n")
            .map_err(|e| FreezeError::Guard(format!("sending freeze: {e}")))?;
        match self.next_event(SYNC_TIMEOUT) {
            Ok(GuardEvent::Freezing) => {}
            Ok(GuardEvent::Error { stage, message }) => {
                return Err(FreezeError::Prepare { stage, message })
            }
            Ok(other) => return Err(FreezeError::Guard(format!("unexpected {other:?}"))),
            Err(e) if e == "timeout" => {
                // Stuck in syncfs: closing stdin makes it give up before freezing anything.
                self.stdin = None;
                return Err(FreezeError::Hung(SYNC_TIMEOUT));
            }
            Err(e) => return Err(FreezeError::Guard(e)),
        }
        let started = Instant::now();
        match self.next_event(self.deadline + GRACE) {
            Ok(GuardEvent::Frozen) => Ok(Frozen {
                at: Instant::now(),
                thaw_by: started + self.deadline,
            }),
            Ok(GuardEvent::FreezeFailed {
                mount_point: Some(mount_point),
                errno: Some(errno),
                thawed,
                ..
            }) => Err(FreezeError::Freeze {
                mount_point,
                errno: Errno::from_raw(errno),
                thawed,
            }),
            Ok(GuardEvent::FreezeFailed { .. }) => Err(FreezeError::DeadlineWhileFreezing),
            Ok(other) => Err(FreezeError::Guard(format!("unexpected {other:?}"))),
            Err(e) if e == "timeout" => {
                // Close stdin so the guard thaws the moment its FIFREEZE returns.
                self.stdin = None;
                Err(FreezeError::Hung(self.deadline + GRACE))
            }
            Err(e) => Err(FreezeError::Guard(e)),
        }
    }

    /// Asks the guard whether every file system is still frozen, i.e. nobody
    /// thawed one behind its back; returns those that were (the guard has
    /// frozen them again until [`Self::thaw`]). Asked once the point in time
    /// is fixed, right before the thaw. If the guard has already thawed at its
    /// deadline, returns no file system and [`Self::thaw`] reports the deadline.
    pub fn check(&mut self) -> Result<Vec<PathBuf>, ThawError> {
        self.send(b"check\n")
            .map_err(|e| ThawError::Guard(format!("sending check: {e}")))?;
        let mut lost = Vec::new();
        loop {
            match self.next_event(GRACE + GRACE) {
                Ok(GuardEvent::Lost { mount_point, .. }) => lost.push(mount_point),
                Ok(GuardEvent::Checked) => return Ok(lost),
                Ok(ev @ GuardEvent::Thawed { .. }) => {
                    self.pending = Some(ev);
                    return Ok(lost);
                }
                Ok(other) => {
                    return Err(ThawError::Guard(format!(
                        "unexpected {other:?} answering check"
                    )))
                }
                Err(e) if e == "timeout" => return Err(ThawError::Timeout(GRACE + GRACE)),
                Err(e) => return Err(ThawError::Guard(e)),
            }
        }
    }

    /// Thaws (in reverse plan order) and returns how long each file system was
    /// suspended. If the guard already thawed at its deadline, the report says so.
    pub fn thaw(mut self) -> Result<ThawReport, ThawError> {
        let ev = match self.pending.take() {
            Some(ev) => Ok(ev),
            None => {
                // The guard may already have thawed at its deadline and exited: a broken pipe is fine.
                let _ = self.send(b"thaw\n");
                self.next_event(GRACE + GRACE)
            }
        };
        self.stdin = None;
        match ev {
            Ok(GuardEvent::Thawed {
                cause,
                filesystems,
                window_us,
            }) => {
                let report = ThawReport {
                    cause,
                    filesystems,
                    window_us,
                };
                let failed: Vec<FsThaw> = report
                    .filesystems
                    .iter()
                    .filter(|f| f.errno.is_some_and(|e| e != Errno::EINVAL as i32))
                    .cloned()
                    .collect();
                if failed.is_empty() {
                    Ok(report)
                } else {
                    Err(ThawError::Thaw { failed, report })
                }
            }
            Ok(other) => Err(ThawError::Guard(format!("unexpected {other:?}"))),
            Err(e) if e == "timeout" => Err(ThawError::Timeout(GRACE + GRACE)),
            Err(e) => Err(ThawError::Guard(e)),
        }
    }
}

impl Drop for FreezeGuard {
    fn drop(&mut self) {
        // EOF on its stdin makes the guard thaw (if frozen) and exit.
        self.stdin = None;
        if let Some(mut child) = self.child.take() {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            // Reap it without blocking the caller, and never kill it.
            let _ = std::thread::Builder::new()
                .name("guard-reaper".into())
                .spawn(move || {
                    let _ = child.wait();
                });
        }
    }
}

#[derive(Debug)]
enum LineError {
    Timeout,
    Io(std::io::Error),
}

/// Line reader over a pipe with a timeout per line (poll, then read).
#[derive(Debug)]
struct LineReader {
    out: ChildStdout,
    buf: Vec<u8>,
    eof: bool,
}

impl LineReader {
    fn new(out: ChildStdout) -> LineReader {
        LineReader {
            out,
            buf: Vec::new(),
            eof: false,
        }
    }

    fn fd(&self) -> RawFd {
        self.out.as_raw_fd()
    }

    fn read_line(&mut self, timeout: Duration) -> Result<Option<Vec<u8>>, LineError> {
        let end = Instant::now() + timeout;
        loop {
            if let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                return Ok(Some(line[..line.len() - 1].to_vec()));
            }
            if self.eof {
                return Ok(None);
            }
            let now = Instant::now();
            if now >= end {
                return Err(LineError::Timeout);
            }
            let ms = (end - now).as_millis().clamp(1, i32::MAX as u128) as i32;
            let mut pfd = [libc::pollfd {
                fd: self.fd(),
                events: libc::POLLIN,
                revents: 0,
            }];
            // SAFETY: valid pollfd array of length 1.
            let r = unsafe { libc::poll(pfd.as_mut_ptr(), 1, ms) };
            if r < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(LineError::Io(e));
            }
            if r == 0 {
                continue;
            }
            let mut chunk = [0u8; 4096];
            let n = std::io::Read::read(&mut self.out, &mut chunk).map_err(LineError::Io)?;
            if n == 0 {
                self.eof = true;
            } else {
                self.buf.extend_from_slice(&chunk[..n]);
            }
        }
    }
}
