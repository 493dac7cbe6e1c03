//! The freeze guard process (`appsnap freeze-guard`, hidden from `--help`).
//!
//! It exists so that file systems are thawed even when the daemon hangs,
//! panics or is SIGKILLed (ARCHITECTURE.md §2). Sequence: read the request on
//! stdin; open every mount root and check its identity; write the frozen-set
//! record; `mlockall`; report `armed`; on `freeze`: syncfs (twice, in
//! parallel, so FIFREEZE has little left to flush), arm the deadline (a
//! dedicated thaw thread owning dup'ed fds), FIFREEZE independent file
//! systems in parallel, children before parents ([`super::stages`]); report
//! `frozen` (or the failing mount after thawing); wait for `thaw`, stdin EOF
//! or the deadline; FITHAW in reverse; remove the record (kept if a FITHAW
//! failed, for `thaw --all`), so it is gone when the parent hears; report
//! per-fs suspension. Between the first FIFREEZE and the last FITHAW it does no file
//! I/O, no logging and no allocation; SIGTERM, SIGINT, SIGHUP and SIGPIPE are
//! ignored.
//!
//! A FIFREEZE that hangs (D state) cannot stop the deadline: the thaw thread
//! thaws every target already frozen; the hung one is thawed by the freezing
//! thread itself the moment its FIFREEZE returns.
//!
//! **A lost freeze.** Anyone with CAP_SYS_ADMIN can thaw a file system the
//! guard froze (`fsfreeze -u`, another tool). The kernel offers no query for
//! "is this superblock frozen", so `check` probes with FIFREEZE itself: EBUSY
//! means still frozen (nothing changes); success means someone had thawed it
//! — it is now frozen again, which is harmless because the guard holds it
//! only until its own thaw that follows, and the target is reported lost. Any
//! other error is reported lost too (pessimistic). FITHAW answering EINVAL at
//! the thaw also means lost. What the probe cannot see: a thaw followed by a
//! freeze from someone else before the check (EBUSY either way); the guard's
//! FITHAW then ends that other freeze, as before.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{
    AtomicBool, AtomicI32, AtomicU64, AtomicU8, AtomicUsize, Ordering::SeqCst,
};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use nix::errno::Errno;
use nix::sys::signal::{signal, SigHandler, Signal};

use super::freeze::{self, Thawed};
use super::protocol::{FsThaw, GuardEvent, GuardRequest, ThawCause, VERSION};
use super::record::{self, FrozenRecord};
use super::round_pool::{Round, RoundPool};
use super::stages::freeze_stages;

/// Exit status: thawed cleanly (or never froze).
pub const EXIT_OK: u8 = 0;
/// Exit status: a request or preparation error; nothing was frozen.
pub const EXIT_PREPARE: u8 = 2;
/// Exit status: a freeze failed, or one was lost (thawed by someone else
/// while held) (vendor "cannot suspend I/O").
pub const EXIT_FREEZE_FAILED: u8 = 11;
/// Exit status: a thaw failed (vendor "cannot resume I/O").
pub const EXIT_THAW_FAILED: u8 = 12;

const NOT_FROZEN: u8 = 0;
const FREEZING: u8 = 1;
const FROZEN: u8 = 2;
const THAWING: u8 = 3;
const DONE: u8 = 4;

const NO_ERRNO: i32 = 0;
const CAUSE_NONE: u8 = 0;
const CAUSE_WOKEN: u8 = 1;
const CAUSE_DEADLINE: u8 = 2;
const NO_FAILURE: usize = usize::MAX;

/// State shared by the freezing thread and the thaw thread; all preallocated,
/// touched only with atomics while frozen.
struct Shared {
    base: Instant,
    state: Vec<AtomicU8>,
    freeze_start_ns: Vec<AtomicU64>,
    freeze_end_ns: Vec<AtomicU64>,
    thaw_end_ns: Vec<AtomicU64>,
    thaw_errno: Vec<AtomicI32>,
    /// Set by the thaw thread before it thaws: no more freezes may start.
    abort: AtomicBool,
    cause: AtomicU8,
    /// The first target whose FIFREEZE failed ([`NO_FAILURE`] if none): no more freezes start.
    failed: AtomicUsize,
    failed_errno: AtomicI32,
    /// Per target: `check` found it thawed by someone else.
    lost: Vec<AtomicBool>,
}

impl Shared {
    fn now_ns(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64
    }

    /// Thaws target `i` if it is frozen and nobody else is thawing it.
    fn thaw_one(&self, i: usize, fd: BorrowedFd<'_>) {
        if self.state[i]
            .compare_exchange(FROZEN, THAWING, SeqCst, SeqCst)
            .is_ok()
        {
            let errno = match freeze::thaw(fd) {
                Ok(Thawed::Thawed) => NO_ERRNO,
                Ok(Thawed::NotFrozen) => Errno::EINVAL as i32,
                Err(e) => e as i32,
            };
            self.thaw_errno[i].store(errno, SeqCst);
            self.thaw_end_ns[i].store(self.now_ns(), SeqCst);
            self.state[i].store(DONE, SeqCst);
        }
    }

    /// `check` for target `i`: probes with FIFREEZE (module doc) and returns
    /// whether someone else had thawed it. Marked FREEZING meanwhile so the
    /// deadline thread skips it; if the deadline passed during the probe, it
    /// is thawed here, as in [`Self::freeze_one`].
    fn probe_one(&self, i: usize, fd: BorrowedFd<'_>) -> bool {
        if self.state[i]
            .compare_exchange(FROZEN, FREEZING, SeqCst, SeqCst)
            .is_err()
        {
            // Not frozen by us (never, or already thawed by our deadline): nothing to probe.
            return false;
        }
        let lost = !matches!(freeze::freeze(fd), Err(Errno::EBUSY));
        if lost {
            self.lost[i].store(true, SeqCst);
        }
        self.state[i].store(FROZEN, SeqCst);
        if self.abort.load(SeqCst) {
            self.thaw_one(i, fd);
        }
        lost
    }

    /// Freezes target `i` unless freezing was abandoned; runs on any pool thread.
    fn freeze_one(&self, i: usize, fd: BorrowedFd<'_>) {
        if self.abort.load(SeqCst) || self.failed.load(SeqCst) != NO_FAILURE {
            return;
        }
        self.freeze_start_ns[i].store(self.now_ns(), SeqCst);
        self.state[i].store(FREEZING, SeqCst);
        let frozen = freeze::freeze(fd);
        self.freeze_end_ns[i].store(self.now_ns(), SeqCst);
        match frozen {
            Ok(()) => {
                self.state[i].store(FROZEN, SeqCst);
                if self.abort.load(SeqCst) {
                    // The deadline passed while this FIFREEZE was running: thaw it here.
                    self.thaw_one(i, fd);
                }
            }
            Err(e) => {
                self.state[i].store(NOT_FROZEN, SeqCst);
                if self
                    .failed
                    .compare_exchange(NO_FAILURE, i, SeqCst, SeqCst)
                    .is_ok()
                {
                    self.failed_errno.store(e as i32, SeqCst);
                }
            }
        }
    }
}

fn write_all(fd: RawFd, mut buf: &[u8]) -> bool {
    while !buf.is_empty() {
        // SAFETY: writing from a valid buffer to an fd we hold.
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            if Errno::last() == Errno::EINTR {
                continue;
            }
            return false;
        }
        buf = &buf[n as usize..];
    }
    true
}

fn emit(ev: &GuardEvent) -> bool {
    write_all(libc::STDOUT_FILENO, &ev.to_line())
}

/// Reads one line from fd 0 byte by byte (no read-ahead: later reads poll fd 0 directly).
fn read_line_stdin() -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let mut b = [0u8; 1];
        // SAFETY: 1-byte read into a stack buffer.
        let n = unsafe { libc::read(libc::STDIN_FILENO, b.as_mut_ptr().cast(), 1) };
        if n < 0 {
            if Errno::last() == Errno::EINTR {
                continue;
            }
            return None;
        }
        if n == 0 {
            return if out.is_empty() { None } else { Some(out) };
        }
        if b[0] == b'\n' {
            return Some(out);
        }
        out.push(b[0]);
        if out.len() > 16 << 20 {
            return None;
        }
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd), Errno> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
}

fn poll_in(fds: &mut [libc::pollfd], timeout_ms: i32) -> i32 {
    // SAFETY: valid pollfd array.
    unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) }
}

fn fail(stage: &str, message: String) -> u8 {
    emit(&GuardEvent::Error {
        stage: stage.to_string(),
        message,
    });
    EXIT_PREPARE
}

/// Entry point of `appsnap freeze-guard`; returns the process exit status.
pub fn run() -> u8 {
    run_with_mountinfo(Path::new("/proc/self/mountinfo"))
}

/// [`run`] with an explicit mountinfo path (used only on kernels without STATX_MNT_ID).
pub fn run_with_mountinfo(mountinfo: &Path) -> u8 {
    for sig in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGPIPE,
    ] {
        // SAFETY: installing SIG_IGN has no handler code to be unsafe.
        let _ = unsafe { signal(sig, SigHandler::SigIgn) };
    }
    let Some(line) = read_line_stdin() else {
        return fail("request", "stdin closed before the request".into());
    };
    let req: GuardRequest = match serde_json::from_slice(&line) {
        Ok(r) => r,
        Err(e) => return fail("request", format!("bad request: {e}")),
    };
    if req.version != VERSION {
        return fail(
            "request",
            format!(
                "protocol version {} not supported (want {VERSION})",
                req.version
            ),
        );
    }
    // 1. Open and verify every target before anything is frozen.
    let mut fds = Vec::with_capacity(req.targets.len());
    let mut recorded = req.targets.clone();
    for t in recorded.iter_mut() {
        let opened = freeze::open_verified(t, mountinfo)
            .and_then(|fd| freeze::st_dev(fd.as_fd(), t).map(|dev| (fd, dev)));
        match opened {
            Ok((fd, dev)) => {
                t.st_dev = Some(dev);
                fds.push(fd);
            }
            Err(e) => return fail("identity", e.to_string()),
        }
    }
    let mut thaw_fds = Vec::with_capacity(fds.len());
    for fd in &fds {
        match fd.try_clone() {
            Ok(d) => thaw_fds.push(d),
            Err(e) => return fail("dup", e.to_string()),
        }
    }
    // 2. The record, before the first FIFREEZE.
    let rec = FrozenRecord {
        version: VERSION,
        guard_pid: std::process::id(),
        written_unix_ms: SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
        guard_start_ticks: record::own_start_ticks(),
        deadline_ms: req.deadline_ms,
        targets: recorded,
    };
    if let Err(e) = record::write(&req.run_dir, &rec) {
        return fail("record", e.to_string());
    }
    let code = armed_phase(&req, fds, thaw_fds);
    // Only reached once nothing of ours is frozen, unless a FITHAW failed: then
    // the record stays for `appsnap thaw --all` to retry.
    if code != EXIT_THAW_FAILED {
        let _ = record::remove(&req.run_dir);
    }
    code
}

/// From the record written to the process exit: prepare everything the
/// frozen window needs, wait for `freeze`, freeze, wait for the thaw, report.
/// The numbered steps continue [`run_with_mountinfo`]'s.
fn armed_phase(req: &GuardRequest, fds: Vec<OwnedFd>, thaw_fds: Vec<OwnedFd>) -> u8 {
    // 3. Everything the frozen window needs is allocated now.
    let shared = Arc::new(Shared::new(fds.len()));
    // Threads for the parallel rounds exist before anything is frozen.
    let stages = freeze_stages(&req.targets);
    let fds = Arc::new(fds);
    let pool = match spawn_pool(&stages, &shared, &fds) {
        Ok(p) => p,
        Err(e) => return fail("thread", e.to_string()),
    };
    let (wake_r, wake_w) = match pipe() {
        Ok(p) => p,
        Err(e) => return fail("pipe", e.to_string()),
    };
    let (done_r, done_w) = match pipe() {
        Ok(p) => p,
        Err(e) => return fail("pipe", e.to_string()),
    };
    let lines = Lines::new(req);
    // SAFETY: mlockall has no memory-safety preconditions.
    let mlocked = unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE) } == 0;
    if !emit(&GuardEvent::Armed { mlocked }) {
        return EXIT_PREPARE;
    }
    // 4. Wait for `freeze` (EOF: the parent gave up; nothing was frozen).
    if let Err(code) = await_freeze() {
        return code;
    }
    // The second pass flushes only what writers dirtied during the first.
    pool.run(Round::All);
    pool.run(Round::All);
    // syncfs can take long: if the parent gave up meanwhile (stdin closed or
    // anything sent early), do not start freezing at all.
    if stdin_ready() {
        return fail(
            "protocol",
            "parent went away or spoke before the freeze; nothing frozen".into(),
        );
    }
    // 5. Arm the deadline: the thaw thread owns its own fds and needs nobody to thaw.
    let deadline = Instant::now() + Duration::from_millis(req.deadline_ms);
    let th_shared = Arc::clone(&shared);
    let thaw_thread = std::thread::Builder::new()
        .name("thaw".into())
        .spawn(move || thaw_thread(th_shared, thaw_fds, wake_r, done_w, deadline));
    let thaw_thread = match thaw_thread {
        Ok(h) => h,
        Err(e) => return fail("thread", e.to_string()),
    };
    write_all(libc::STDOUT_FILENO, &lines.freezing);

    // 6. FIFREEZE, stage by stage. ---- no allocation, no file I/O from here ----
    freeze_in_stages(&shared, &pool, stages.len());
    let failed = match shared.failed.load(SeqCst) {
        NO_FAILURE => None,
        i => Some((i, Errno::from_raw(shared.failed_errno.load(SeqCst)))),
    };
    let interrupted = shared.abort.load(SeqCst);
    if failed.is_none() && !interrupted {
        write_all(libc::STDOUT_FILENO, &lines.frozen);
        // 7. Wait for `thaw`, stdin EOF, or the thaw thread's deadline.
        let cause = wait_for_thaw(&shared, &fds, &done_r, &lines);
        stop_thaw_thread(&wake_w, thaw_thread);
        // ---- everything is thawed: allocation and I/O are fine again ----
        return finish_after_thaw(&shared, req, cause);
    }
    // A freeze failed or the deadline interrupted freezing: thaw what we froze.
    stop_thaw_thread(&wake_w, thaw_thread);
    finish_after_failed_freeze(&shared, req, failed)
}

impl Shared {
    /// The state of `n` targets, all preallocated: the frozen window only
    /// touches it through atomics.
    fn new(n: usize) -> Shared {
        Shared {
            base: Instant::now(),
            state: (0..n).map(|_| AtomicU8::new(NOT_FROZEN)).collect(),
            freeze_start_ns: (0..n).map(|_| AtomicU64::new(0)).collect(),
            freeze_end_ns: (0..n).map(|_| AtomicU64::new(0)).collect(),
            thaw_end_ns: (0..n).map(|_| AtomicU64::new(0)).collect(),
            thaw_errno: (0..n).map(|_| AtomicI32::new(NO_ERRNO)).collect(),
            abort: AtomicBool::new(false),
            cause: AtomicU8::new(CAUSE_NONE),
            failed: AtomicUsize::new(NO_FAILURE),
            failed_errno: AtomicI32::new(NO_ERRNO),
            lost: (0..n).map(|_| AtomicBool::new(false)).collect(),
        }
    }
}

/// Every line the guard may write between FIFREEZE and FITHAW, serialized
/// before the freeze: nothing is allocated while frozen.
struct Lines {
    freezing: Vec<u8>,
    frozen: Vec<u8>,
    /// The end of an answer to `check`.
    checked: Vec<u8>,
    /// Per target: the answer to `check` when it was found thawed.
    lost: Vec<Vec<u8>>,
}

impl Lines {
    fn new(req: &GuardRequest) -> Lines {
        Lines {
            freezing: GuardEvent::Freezing.to_line(),
            frozen: GuardEvent::Frozen.to_line(),
            checked: GuardEvent::Checked.to_line(),
            lost: req
                .targets
                .iter()
                .enumerate()
                .map(|(index, t)| {
                    GuardEvent::Lost {
                        index,
                        mount_point: t.mount_point.clone(),
                    }
                    .to_line()
                })
                .collect(),
        }
    }
}

/// The threads that run syncfs on every target and each stage's FIFREEZEs
/// in parallel; spawned before anything is frozen.
fn spawn_pool(
    stages: &[Vec<usize>],
    shared: &Arc<Shared>,
    fds: &Arc<Vec<OwnedFd>>,
) -> std::io::Result<RoundPool> {
    let (shared, fds) = (Arc::clone(shared), Arc::clone(fds));
    let work = Arc::new(move |round: Round, i: usize| match round {
        Round::All => {
            let _ = freeze::syncfs(fds[i].as_fd());
        }
        Round::Stage(_) => shared.freeze_one(i, fds[i].as_fd()),
    });
    RoundPool::spawn(stages, work)
}

/// Reads the parent's next line: `Ok` on `freeze`; otherwise the exit status
/// (a protocol error, or `EXIT_OK` on EOF: the parent gave up, nothing frozen).
fn await_freeze() -> Result<(), u8> {
    match read_line_stdin() {
        Some(l) if l.trim_ascii() == b"freeze" => Ok(()),
        Some(l) => Err(fail(
            "protocol",
            format!("expected `freeze`, got {:?}", String::from_utf8_lossy(&l)),
        )),
        None => Err(EXIT_OK),
    }
}

/// Whether stdin has something to read (or is closed) right now, without waiting.
fn stdin_ready() -> bool {
    let mut pfd = [libc::pollfd {
        fd: libc::STDIN_FILENO,
        events: libc::POLLIN,
        revents: 0,
    }];
    poll_in(&mut pfd, 0) > 0
}

/// FIFREEZE stage by stage, stopping at the first failure or when the
/// deadline aborted freezing. Runs while frozen: no allocation, no I/O.
fn freeze_in_stages(shared: &Shared, pool: &RoundPool, stages: usize) {
    for stage in 0..stages {
        if shared.abort.load(SeqCst) || shared.failed.load(SeqCst) != NO_FAILURE {
            break;
        }
        pool.run(Round::Stage(stage));
    }
}

/// Waits for `thaw`, stdin EOF, or the thaw thread finishing (the deadline),
/// answering `check` in place. Runs while frozen: no allocation, no file
/// I/O; reads go into a stack buffer.
fn wait_for_thaw(shared: &Shared, fds: &[OwnedFd], done_r: &OwnedFd, lines: &Lines) -> ThawCause {
    let mut buf = [0u8; 256];
    let mut fill = 0usize;
    loop {
        let mut pfd = [
            libc::pollfd {
                fd: libc::STDIN_FILENO,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: done_r.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        if poll_in(&mut pfd, -1) < 0 {
            continue;
        }
        if pfd[1].revents != 0 {
            return ThawCause::Deadline;
        }
        if pfd[0].revents != 0 {
            // SAFETY: read into the unused tail of a stack buffer.
            let r = unsafe {
                libc::read(
                    libc::STDIN_FILENO,
                    buf[fill..].as_mut_ptr().cast(),
                    buf.len() - fill,
                )
            };
            if r < 0 && Errno::last() == Errno::EINTR {
                continue;
            }
            if r <= 0 {
                return ThawCause::StdinClosed;
            }
            fill += r as usize;
            if answer_lines(&mut buf, &mut fill, shared, fds, lines) {
                return ThawCause::Requested;
            }
        }
    }
}

/// Handles what the parent sent so far (`buf[..*fill]`): answers each
/// complete `check` line and drops it; returns true as soon as a line, or
/// the incomplete tail, asks for `thaw`. A full buffer without a line end
/// is discarded. Runs while frozen: no allocation, no file I/O.
fn answer_lines(
    buf: &mut [u8],
    fill: &mut usize,
    shared: &Shared,
    fds: &[OwnedFd],
    lines: &Lines,
) -> bool {
    // Complete lines first: `check` is answered in place.
    while let Some(nl) = buf[..*fill].iter().position(|b| *b == b'\n') {
        if buf[..nl].trim_ascii() == b"check" {
            for (i, fd) in fds.iter().enumerate() {
                if shared.probe_one(i, fd.as_fd()) {
                    write_all(libc::STDOUT_FILENO, &lines.lost[i]);
                }
            }
            write_all(libc::STDOUT_FILENO, &lines.checked);
        } else if buf[..nl].windows(4).any(|w| w == b"thaw") {
            return true;
        }
        buf.copy_within(nl + 1..*fill, 0);
        *fill -= nl + 1;
    }
    if buf[..*fill].windows(4).any(|w| w == b"thaw") {
        return true;
    }
    if *fill == buf.len() {
        *fill = 0;
    }
    false
}

/// Wakes the thaw thread (it thaws whatever is still frozen, in reverse)
/// and waits until it is done.
fn stop_thaw_thread(wake_w: &OwnedFd, thaw_thread: std::thread::JoinHandle<()>) {
    write_all(wake_w.as_raw_fd(), b"t");
    let _ = thaw_thread.join();
}

/// Whether a FITHAW failed (EINVAL, "not frozen", means lost, not failed).
fn thaw_failed(fs: &[FsThaw]) -> bool {
    fs.iter()
        .any(|f| f.errno.is_some_and(|e| e != Errno::EINVAL as i32))
}

/// After a complete freeze window, everything thawed: removes the record
/// (unless a FITHAW failed), reports `thawed`, returns the exit status.
fn finish_after_thaw(shared: &Shared, req: &GuardRequest, waited: ThawCause) -> u8 {
    let cause = if shared.cause.load(SeqCst) == CAUSE_DEADLINE {
        ThawCause::Deadline
    } else {
        waited
    };
    let fs = report(shared, req);
    let bad = thaw_failed(&fs);
    let lost = fs.iter().any(|f| f.lost);
    // Gone before the parent hears `thawed`, so its next run can write its own.
    if !bad {
        let _ = record::remove(&req.run_dir);
    }
    emit(&GuardEvent::Thawed {
        cause,
        filesystems: fs,
        window_us: window_us(shared),
    });
    if bad {
        EXIT_THAW_FAILED
    } else if lost {
        EXIT_FREEZE_FAILED
    } else {
        EXIT_OK
    }
}

/// After a FIFREEZE failed (`failed`: which target, and why) or the
/// deadline interrupted freezing, everything thawed: reports
/// `freeze-failed` and returns the exit status.
fn finish_after_failed_freeze(
    shared: &Shared,
    req: &GuardRequest,
    failed: Option<(usize, Errno)>,
) -> u8 {
    let thawed = report(shared, req);
    let thaw_failed = thaw_failed(&thawed);
    if !thaw_failed {
        let _ = record::remove(&req.run_dir);
    }
    let (index, mount_point, errno) = match failed {
        Some((i, e)) => (
            Some(i),
            Some(req.targets[i].mount_point.clone()),
            Some(e as i32),
        ),
        None => (None, None, None),
    };
    emit(&GuardEvent::FreezeFailed {
        index,
        mount_point,
        errno,
        thawed,
    });
    // A failed thaw is the graver news (and keeps the record for `thaw --all`).
    if thaw_failed {
        EXIT_THAW_FAILED
    } else {
        EXIT_FREEZE_FAILED
    }
}

fn report(shared: &Shared, req: &GuardRequest) -> Vec<FsThaw> {
    let done = |i: &usize| shared.state[*i].load(SeqCst) == DONE;
    let first = (0..req.targets.len())
        .filter(done)
        .map(|i| shared.freeze_start_ns[i].load(SeqCst))
        .min()
        .unwrap_or(0);
    (0..req.targets.len())
        .rev()
        .filter(done)
        .map(|i| {
            let start = shared.freeze_start_ns[i].load(SeqCst);
            let frozen = shared.freeze_end_ns[i].load(SeqCst);
            let end = shared.thaw_end_ns[i].load(SeqCst);
            let e = shared.thaw_errno[i].load(SeqCst);
            FsThaw {
                mount_point: PathBuf::from(&req.targets[i].mount_point),
                suspended_us: end.saturating_sub(start) / 1000,
                errno: (e != NO_ERRNO).then_some(e),
                freeze_began_us: start.saturating_sub(first) / 1000,
                freeze_took_us: frozen.saturating_sub(start) / 1000,
                lost: e == Errno::EINVAL as i32 || shared.lost[i].load(SeqCst),
            }
        })
        .collect()
}

/// First FIFREEZE start to last FITHAW end over the targets that were frozen.
fn window_us(shared: &Shared) -> u64 {
    let done = (0..shared.state.len()).filter(|&i| shared.state[i].load(SeqCst) == DONE);
    let first = done
        .clone()
        .map(|i| shared.freeze_start_ns[i].load(SeqCst))
        .min();
    let last = done.map(|i| shared.thaw_end_ns[i].load(SeqCst)).max();
    match (first, last) {
        (Some(a), Some(b)) => b.saturating_sub(a) / 1000,
        _ => 0,
    }
}

/// Waits for a wake byte or the deadline, then thaws every frozen target in reverse.
fn thaw_thread(
    shared: Arc<Shared>,
    fds: Vec<OwnedFd>,
    wake_r: OwnedFd,
    done_w: OwnedFd,
    deadline: Instant,
) {
    loop {
        let now = Instant::now();
        if now >= deadline {
            shared.cause.store(CAUSE_DEADLINE, SeqCst);
            break;
        }
        let left = (deadline - now).as_millis().min(i32::MAX as u128) as i32;
        let mut pfd = [libc::pollfd {
            fd: wake_r.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        let r = poll_in(&mut pfd, left.max(1));
        if r > 0 {
            shared.cause.store(CAUSE_WOKEN, SeqCst);
            break;
        }
    }
    shared.abort.store(true, SeqCst);
    for i in (0..fds.len()).rev() {
        shared.thaw_one(i, fds[i].as_fd());
    }
    write_all(done_w.as_raw_fd(), b"d");
}
