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
    Guard(GuardFault),
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
    Guard(GuardFault),
}

/// How the conversation with the guard broke down (other than a refusal,
/// which is [`FreezeError::Prepare`]).
#[derive(Debug, Error)]
pub enum GuardFault {
    /// The child was started without the pipes asked for.
    #[error("no pipes to the guard")]
    NoPipes,
    /// The request could not be encoded.
    #[error("{0}")]
    Encode(serde_json::Error),
    /// Writing a command to the guard's stdin failed (it has exited).
    #[error("sending {what}: {source}")]
    Send {
        /// Which command.
        what: &'static str,
        /// The pipe's error.
        source: std::io::Error,
    },
    /// A message the protocol does not allow at this point.
    #[error("unexpected {event:?}{when}")]
    Unexpected {
        /// What the guard said.
        event: Box<GuardEvent>,
        /// At which point (empty, or " before armed", " answering check").
        when: &'static str,
    },
    /// No message could be read.
    #[error(transparent)]
    Read(#[from] ReadError),
}

/// Why no message came from the guard.
#[derive(Debug, Error)]
pub enum ReadError {
    /// Nothing within the wait; the caller decides what that means (hung,
    /// not confirmed, …).
    #[error("timeout")]
    Timeout,
    /// Its stdout closed.
    #[error("the guard exited without answering")]
    Exited,
    /// A line that is not a protocol message.
    #[error("bad message {line:?}: {source}")]
    BadMessage {
        /// The line, lossily decoded.
        line: String,
        /// Why it does not parse.
        source: serde_json::Error,
    },
    /// Reading the pipe failed.
    #[error("{0}")]
    Io(std::io::Error),
}

/// How long the parent waits for each answer. The constants in production;
/// tests of the mapping from silence to error shorten them.
#[derive(Debug, Clone, Copy)]
struct Waits {
    sync: Duration,
    grace: Duration,
}

const WAITS: Waits = Waits {
    sync: SYNC_TIMEOUT,
    grace: GRACE,
};

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
    waits: Waits,
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
            return Err(FreezeError::Guard(GuardFault::NoPipes));
        };
        let mut g = FreezeGuard {
            child: Some(child),
            stdin: Some(stdin),
            stdout,
            deadline,
            waits: WAITS,
            pending: None,
        };
        let req = GuardRequest {
            version: VERSION,
            run_dir: run_dir.to_path_buf(),
            deadline_ms: deadline.as_millis() as u64,
            targets,
        };
        let mut line =
            serde_json::to_vec(&req).map_err(|e| FreezeError::Guard(GuardFault::Encode(e)))?;
        line.push(b'\n');
        g.send(&line, "the request").map_err(FreezeError::Guard)?;
        match g.next_event(ARM_TIMEOUT) {
            Ok(GuardEvent::Armed { .. }) => Ok(g),
            Ok(GuardEvent::Error { stage, message }) => {
                Err(FreezeError::Prepare { stage, message })
            }
            Ok(other) => Err(FreezeError::Guard(unexpected(other, " before armed"))),
            Err(e) => Err(FreezeError::Guard(e.into())),
        }
    }

    /// The guard's pid. Nothing in the daemon reads it; the guard tests use it
    /// to kill the guard or to match it with the record.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    fn send(&mut self, bytes: &[u8], what: &'static str) -> Result<(), GuardFault> {
        let sent = match self.stdin.as_mut() {
            Some(s) => s.write_all(bytes).and_then(|()| s.flush()),
            None => Err(std::io::Error::from(std::io::ErrorKind::BrokenPipe)),
        };
        sent.map_err(|source| GuardFault::Send { what, source })
    }

    fn next_event(&mut self, timeout: Duration) -> Result<GuardEvent, ReadError> {
        match self.stdout.read_line(timeout) {
            Ok(Some(line)) => {
                serde_json::from_slice(&line).map_err(|source| ReadError::BadMessage {
                    line: String::from_utf8_lossy(&line).into_owned(),
                    source,
                })
            }
            Ok(None) => Err(ReadError::Exited),
            Err(LineError::Timeout) => Err(ReadError::Timeout),
            Err(LineError::Io(e)) => Err(ReadError::Io(e)),
        }
    }

    /// Freezes every target in plan order. On error nothing of ours stays frozen
    /// (see [`FreezeError::Hung`] for the one exception the deadline covers).
    pub fn freeze(&mut self) -> Result<Frozen, FreezeError> {
        self.send(b"freeze\n", "freeze")
            .map_err(FreezeError::Guard)?;
        let waits = self.waits;
        match self.next_event(waits.sync) {
            Ok(GuardEvent::Freezing) => {}
            Ok(GuardEvent::Error { stage, message }) => {
                return Err(FreezeError::Prepare { stage, message })
            }
            Ok(other) => return Err(FreezeError::Guard(unexpected(other, ""))),
            Err(ReadError::Timeout) => {
                // Stuck in syncfs: closing stdin makes it give up before freezing anything.
                self.stdin = None;
                return Err(FreezeError::Hung(waits.sync));
            }
            Err(e) => return Err(FreezeError::Guard(e.into())),
        }
        let started = Instant::now();
        match self.next_event(self.deadline + waits.grace) {
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
            Ok(other) => Err(FreezeError::Guard(unexpected(other, ""))),
            Err(ReadError::Timeout) => {
                // Close stdin so the guard thaws the moment its FIFREEZE returns.
                self.stdin = None;
                Err(FreezeError::Hung(self.deadline + waits.grace))
            }
            Err(e) => Err(FreezeError::Guard(e.into())),
        }
    }

    /// Asks the guard whether every file system is still frozen, i.e. nobody
    /// thawed one behind its back; returns those that were (the guard has
    /// frozen them again until [`Self::thaw`]). Asked once the point in time
    /// is fixed, right before the thaw. If the guard has already thawed at its
    /// deadline, returns no file system and [`Self::thaw`] reports the deadline.
    pub fn check(&mut self) -> Result<Vec<PathBuf>, ThawError> {
        self.send(b"check\n", "check").map_err(ThawError::Guard)?;
        let wait = self.waits.grace + self.waits.grace;
        let mut lost = Vec::new();
        loop {
            match self.next_event(wait) {
                Ok(GuardEvent::Lost { mount_point, .. }) => lost.push(mount_point),
                Ok(GuardEvent::Checked) => return Ok(lost),
                Ok(ev @ GuardEvent::Thawed { .. }) => {
                    self.pending = Some(ev);
                    return Ok(lost);
                }
                Ok(other) => return Err(ThawError::Guard(unexpected(other, " answering check"))),
                Err(ReadError::Timeout) => return Err(ThawError::Timeout(wait)),
                Err(e) => return Err(ThawError::Guard(e.into())),
            }
        }
    }

    /// Thaws (in reverse plan order) and returns how long each file system was
    /// suspended. If the guard already thawed at its deadline, the report says so.
    pub fn thaw(mut self) -> Result<ThawReport, ThawError> {
        let wait = self.waits.grace + self.waits.grace;
        let ev = match self.pending.take() {
            Some(ev) => Ok(ev),
            None => {
                // The guard may already have thawed at its deadline and exited: a broken pipe is fine.
                let _ = self.send(b"thaw\n", "thaw");
                self.next_event(wait)
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
            Ok(other) => Err(ThawError::Guard(unexpected(other, ""))),
            Err(ReadError::Timeout) => Err(ThawError::Timeout(wait)),
            Err(e) => Err(ThawError::Guard(e.into())),
        }
    }
}

fn unexpected(event: GuardEvent, when: &'static str) -> GuardFault {
    GuardFault::Unexpected {
        event: Box::new(event),
        when,
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

#[cfg(test)]
mod tests {
    //! The mapping from what the guard says (or does not say) to the typed
    //! errors, against fake guards: shell scripts that speak the protocol.

    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const ARMED: &str = r#"{"event":"armed","mlocked":true}"#;
    const SHORT: Waits = Waits {
        sync: Duration::from_millis(300),
        grace: Duration::from_millis(150),
    };

    /// A fake guard running `body` after it has read the request and said
    /// armed. `cat >/dev/null` stands for "silent until stdin closes".
    fn fake(dir: &Path, body: &str) -> FreezeGuard {
        // A new file each time: a shell reads its script as it goes, so
        // rewriting one still running would feed it the new text.
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let exe = dir.join(format!("fake-guard-{n}"));
        let script = format!("#!/bin/sh\nread request\necho '{ARMED}'\n{body}\n");
        std::fs::write(&exe, script).unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        // Another test thread forking while the script was open for writing
        // makes exec fail with ETXTBSY for a moment.
        for _ in 0..50 {
            match FreezeGuard::spawn_exe(&exe, vec![], Duration::from_secs(1), dir) {
                Ok(mut g) => {
                    g.waits = SHORT;
                    return g;
                }
                Err(FreezeError::Spawn { source, .. })
                    if source.raw_os_error() == Some(libc::ETXTBSY) =>
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("fake guard: {e}"),
            }
        }
        panic!("fake guard: exec kept failing with ETXTBSY");
    }

    /// Waits (bounded) for the fake guard to leave `name` behind.
    fn wait_for(dir: &Path, name: &str) -> bool {
        for _ in 0..500 {
            if dir.join(name).exists() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    #[test]
    fn silence_during_syncfs_is_hung_and_closes_the_guards_stdin() {
        let dir = tempfile::tempdir().unwrap();
        let mut g = fake(
            dir.path(),
            "read cmd\ncat >/dev/null\ntouch \"$(dirname \"$0\")/stdin-closed\"",
        );
        let err = g.freeze().unwrap_err();
        assert!(
            matches!(err, FreezeError::Hung(d) if d == SHORT.sync),
            "{err:?}"
        );
        assert!(
            wait_for(dir.path(), "stdin-closed"),
            "the guard's stdin was closed so it gives up"
        );
    }

    #[test]
    fn silence_while_freezing_is_hung_past_the_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let mut g = fake(
            dir.path(),
            "read cmd\necho '{\"event\":\"freezing\"}'\ncat >/dev/null",
        );
        let err = g.freeze().unwrap_err();
        assert!(
            matches!(err, FreezeError::Hung(d) if d == Duration::from_secs(1) + SHORT.grace),
            "{err:?}"
        );
    }

    #[test]
    fn an_unconfirmed_check_or_thaw_is_a_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let mut g = fake(dir.path(), "cat >/dev/null");
        let err = g.check().unwrap_err();
        assert!(
            matches!(err, ThawError::Timeout(d) if d == SHORT.grace + SHORT.grace),
            "{err:?}"
        );
        let err = g.thaw().unwrap_err();
        assert!(
            matches!(err, ThawError::Timeout(d) if d == SHORT.grace + SHORT.grace),
            "{err:?}"
        );
    }

    #[test]
    fn a_guard_that_exits_or_talks_nonsense_is_a_guard_fault_not_a_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let g = fake(dir.path(), "read cmd\nexit 0");
        let err = g.thaw().unwrap_err();
        assert!(
            matches!(err, ThawError::Guard(GuardFault::Read(ReadError::Exited))),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "freeze guard: the guard exited without answering"
        );

        let mut g = fake(dir.path(), "read cmd\necho garbage\ncat >/dev/null");
        let err = g.freeze().unwrap_err();
        assert!(
            matches!(&err, FreezeError::Guard(GuardFault::Read(ReadError::BadMessage { line, .. })) if line == "garbage"),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .starts_with("freeze guard: bad message \"garbage\": "),
            "{err}"
        );

        let mut g = fake(
            dir.path(),
            "read cmd\necho '{\"event\":\"checked\"}'\ncat >/dev/null",
        );
        let err = g.freeze().unwrap_err();
        assert_eq!(err.to_string(), "freeze guard: unexpected Checked");
    }
}
