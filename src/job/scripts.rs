//! Running pre/post-scripts: the file [`open_script`] opened and checked is
//! executed by its descriptor (`execveat(fd, "", AT_EMPTY_PATH)`, the shebang
//! counts), never by path again, in a process group of its own and a clean
//! environment, with a bounded output tail, a timeout that kills the whole
//! tree, and "lock holders" — background children a pre-script leaves behind
//! (e.g. a `mysql` session holding FLUSH TABLES WITH READ LOCK) kept alive
//! until the post-script has run.
//!
//! [`open_script`]: super::script_check::open_script

use std::collections::{BTreeMap, VecDeque};
use std::ffi::{CString, OsStr, OsString};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;
use tokio::time::Instant;

use super::script_check::OpenedScript;

/// Which hook is running; scripts see it as `APPSNAP_PHASE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Before the freeze: quiesce the application.
    Pre,
    /// After the thaw: resume the application.
    Post,
}

impl Phase {
    /// The value of `APPSNAP_PHASE`.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pre => "pre",
            Phase::Post => "post",
        }
    }
}

/// What a script is told about the run, through its environment.
#[derive(Debug, Clone, Default)]
pub struct ScriptContext {
    /// `APPSNAP_JOB`.
    pub job: String,
    /// `APPSNAP_DISK_IDS` (space-separated).
    pub disk_ids: Vec<String>,
    /// `APPSNAP_MOUNTPOINTS` (newline-separated: mount points may contain spaces).
    pub mountpoints: Vec<PathBuf>,
    /// `APPSNAP_FREEZE_DEADLINE`: epoch seconds by which I/O will be thawed at the latest.
    pub freeze_deadline_epoch: u64,
    /// Names of appsnap's own environment variables passed through (the
    /// policy's `script_env`, validated there).
    pub pass_env: Vec<String>,
    /// `APPSNAP_TAGS_FILE`, for the pre-script only: where it may write
    /// `key=value` tags for the snapshot (see `script_tags`).
    pub tags_file: Option<PathBuf>,
}

/// `PATH` as scripts see it: root's usual search path, never the daemon's.
pub const SCRIPT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// `LANG` as scripts see it unless `script_env` passes the daemon's: a UTF-8
/// locale that exists everywhere, so tools' messages are predictable.
pub const SCRIPT_LANG: &str = "C.UTF-8";
/// `HOME` as scripts see it: root's (clients such as `mysql` read their
/// option files from it), not whatever the service manager set.
pub const SCRIPT_HOME: &str = "/root";

/// The whole environment a script gets: `PATH`, `LANG`, `HOME`, the
/// variables `ctx.pass_env` names that `lookup` (appsnap's environment) has,
/// then the `APPSNAP_*` variables. Nothing else: appsnap's environment may
/// hold `ALIBABA_CLOUD_ACCESS_KEY_SECRET` and systemd's sockets.
pub fn script_environment(
    phase: Phase,
    ctx: &ScriptContext,
    lookup: impl Fn(&str) -> Option<OsString>,
) -> BTreeMap<OsString, OsString> {
    let mut env = base_environment(&ctx.pass_env, lookup);
    for (k, v) in [
        ("APPSNAP_JOB", ctx.job.clone()),
        ("APPSNAP_PHASE", phase.as_str().to_string()),
        ("APPSNAP_DISK_IDS", ctx.disk_ids.join(" ")),
        ("APPSNAP_MOUNTPOINTS", join_paths(&ctx.mountpoints)),
        (
            "APPSNAP_FREEZE_DEADLINE",
            ctx.freeze_deadline_epoch.to_string(),
        ),
    ] {
        env.insert(k.into(), v.into());
    }
    if let (Phase::Pre, Some(f)) = (phase, &ctx.tags_file) {
        env.insert("APPSNAP_TAGS_FILE".into(), f.into());
    }
    env
}

/// What every script appsnap runs starts from: `PATH`, `LANG`, `HOME`, then
/// the variables `pass_env` names that `lookup` (appsnap's environment) has.
pub fn base_environment(
    pass_env: &[String],
    lookup: impl Fn(&str) -> Option<OsString>,
) -> BTreeMap<OsString, OsString> {
    let mut env: BTreeMap<OsString, OsString> = [
        ("PATH", SCRIPT_PATH),
        ("LANG", SCRIPT_LANG),
        ("HOME", SCRIPT_HOME),
    ]
    .into_iter()
    .map(|(k, v)| (k.into(), v.into()))
    .collect();
    for name in pass_env {
        if let Some(v) = lookup(name) {
            env.insert(name.into(), v);
        }
    }
    env
}

/// How long a timed-out or leftover process group gets between SIGTERM and SIGKILL.
pub const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(5);
/// How much of a script's combined output is kept for the log.
pub const OUTPUT_TAIL_BYTES: usize = 16 * 1024;
/// How long to keep reading output after the script exits (lock holders may keep the pipe open).
const OUTPUT_DRAIN: Duration = Duration::from_millis(200);

/// How a script ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScriptStatus {
    /// It exited with this code.
    Exited(i32),
    /// A signal killed it (not ours).
    Signaled(i32),
    /// It ran past the script timeout; its whole group was killed.
    TimedOut,
    /// The daemon is stopping and the script did not finish within the stop
    /// grace; its whole group was killed.
    Cancelled,
    /// It could not be started.
    SpawnFailed(String),
}

impl ScriptStatus {
    /// Exit code 0 — the only success.
    pub fn succeeded(&self) -> bool {
        *self == ScriptStatus::Exited(0)
    }
}

/// The result of one script run.
#[derive(Debug)]
pub struct ScriptRun {
    /// How it ended.
    pub status: ScriptStatus,
    /// The last [`OUTPUT_TAIL_BYTES`] of stdout and stderr, interleaved as written.
    pub output: String,
    /// Wall time from spawn to exit.
    pub duration: Duration,
    /// Processes the script left running in its group (lock holders), if any.
    pub leftovers: Option<ProcessGroup>,
}

/// A process group appsnap started, left running by a script that exited;
/// terminating it ends every process in it.
///
/// Once the script (the group's leader) is reaped, its PGID is only ours while
/// some process we saw in the group is still in it: an empty group's id can
/// be handed to another program's group. So the members alive when the script
/// exited are held by pidfd; each signal goes to each of them by pidfd, and to
/// the whole group by PGID only after [`ProcessGroup::is_ours`] confirmed it.
#[derive(Debug)]
pub struct ProcessGroup {
    pgid: Pid,
    /// (pid, pidfd) of the members seen when the script exited.
    members: Vec<(i32, OwnedFd)>,
}

impl ProcessGroup {
    /// The live members of `pgid` now, each held by a pidfd; `None` when there
    /// are none.
    fn adopt(pgid: Pid) -> Option<ProcessGroup> {
        let members: Vec<(i32, OwnedFd)> = group_members(pgid)
            .into_iter()
            .filter_map(|pid| Some((pid, pidfd_open(pid)?)))
            // Opened after the scan: confirm the pid still is that member.
            .filter(|(pid, fd)| {
                member_confirmed(
                    read_stat(*pid).as_deref(),
                    pgid.as_raw(),
                    pidfd_unreaped(fd),
                )
            })
            .collect();
        (!members.is_empty()).then_some(ProcessGroup { pgid, members })
    }

    /// The group id (the script's pid).
    pub fn id(&self) -> i32 {
        self.pgid.as_raw()
    }

    /// Whether the PGID still names the group we started: one of the members
    /// we hold is, by its pidfd, not yet reaped and (read before that) still
    /// in the group. While a member is in it, the id cannot be reused.
    pub fn is_ours(&self) -> bool {
        self.members.iter().any(|(pid, fd)| {
            let stat = read_stat(*pid);
            member_confirmed(stat.as_deref(), self.pgid.as_raw(), pidfd_unreaped(fd))
        })
    }

    /// Whether any process is still in the group.
    pub fn is_alive(&self) -> bool {
        self.is_ours() && group_alive(self.pgid)
    }

    /// Sends `sig` to every member we hold and, when confirmed ours, to the group.
    fn signal(&self, sig: Signal) {
        for (_, fd) in &self.members {
            pidfd_send_signal(fd, sig as i32);
        }
        if self.is_ours() {
            let _ = killpg(self.pgid, sig);
        }
    }

    /// SIGTERM the group, wait up to `grace`, then SIGKILL; true if the group
    /// had to be SIGKILLed.
    pub async fn terminate(self, grace: Duration) -> bool {
        self.signal(Signal::SIGTERM);
        let until = Instant::now() + grace;
        while Instant::now() < until {
            if !self.is_alive() {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.signal(Signal::SIGKILL);
        let until = Instant::now() + Duration::from_secs(5);
        while self.is_alive() && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }
}

/// The verification behind [`ProcessGroup::is_ours`]: `stat` (a member's
/// `/proc/<pid>/stat`, read first) shows it in `pgid` and alive, and its
/// pidfd said afterwards that it was not reaped — so the pid was not reused
/// in between and the stat was our process's.
fn member_confirmed(stat: Option<&str>, pgid: i32, unreaped_after: bool) -> bool {
    unreaped_after && stat.is_some_and(|s| live_member(s, pgid))
}

fn read_stat(pid: i32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()
}

/// `pidfd_open(2)`; `None` when the process is gone (or the kernel is older than 5.3).
fn pidfd_open(pid: i32) -> Option<OwnedFd> {
    // SAFETY: a plain syscall; on success it returns a new descriptor we own.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// `pidfd_send_signal(2)`; true when delivered (the process is not reaped yet).
fn pidfd_send_signal(fd: &OwnedFd, sig: i32) -> bool {
    // SAFETY: a plain syscall on a descriptor we own; no siginfo.
    unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        ) == 0
    }
}

/// Signal 0 by pidfd: whether the process it names has not been reaped.
fn pidfd_unreaped(fd: &OwnedFd) -> bool {
    pidfd_send_signal(fd, 0)
}

/// Pids of the live (not zombie) processes in `pgid`.
fn group_members(pgid: Pid) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| read_stat(*pid).is_some_and(|s| live_member(&s, pgid.as_raw())))
        .collect()
}

/// Whether a live (not zombie) process is in the group. A lock holder whose
/// script exited is re-parented to init, and how soon init reaps it after it
/// dies is not ours to control, so zombies do not count.
fn group_alive(pgid: Pid) -> bool {
    if matches!(killpg(pgid, None), Err(Errno::ESRCH)) {
        return false;
    }
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return true;
    };
    entries
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .any(|stat| live_member(&stat, pgid.as_raw()))
}

/// Parses `/proc/<pid>/stat`: true when the process is in `pgid` and not a zombie.
fn live_member(stat: &str, pgid: i32) -> bool {
    // "pid (comm) state ppid pgrp ..." — comm may contain spaces and parentheses.
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return false;
    };
    let mut fields = rest.split_whitespace();
    let state = fields.next();
    let pgrp = fields.nth(1).and_then(|f| f.parse::<i32>().ok());
    pgrp == Some(pgid) && !matches!(state, Some("Z") | Some("X"))
}

/// SIGTERM, wait for the group to empty, then SIGKILL what is left.
async fn terminate_group(pgid: Pid, grace: Duration) -> bool {
    if killpg(pgid, Signal::SIGTERM) == Err(Errno::ESRCH) {
        return false;
    }
    let until = Instant::now() + grace;
    while Instant::now() < until {
        if !group_alive(pgid) {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = killpg(pgid, Signal::SIGKILL);
    let until = Instant::now() + Duration::from_secs(5);
    while group_alive(pgid) && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

/// Bounded interleaved output.
#[derive(Default)]
struct Tail(VecDeque<u8>);

impl Tail {
    fn push(&mut self, bytes: &[u8]) {
        self.0.extend(bytes);
        let excess = self.0.len().saturating_sub(OUTPUT_TAIL_BYTES);
        self.0.drain(..excess);
    }
}

async fn pump(mut r: impl AsyncRead + Unpin, tail: Arc<Mutex<Tail>>) {
    let mut buf = [0u8; 4096];
    while let Ok(n) = r.read(&mut buf).await {
        if n == 0 {
            break;
        }
        tail.lock().expect("tail lock").push(&buf[..n]);
    }
}

/// Kills the group if the run is abandoned (its future dropped) mid-way, so a
/// cancelled job never leaves a script running unsupervised. Armed only while
/// the script is not reaped (so its pid still holds the PGID), then by the
/// adopted group.
struct KillOnDrop {
    leader: Option<Pid>,
    adopted: Option<ProcessGroup>,
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(pgid) = self.leader {
            let _ = killpg(pgid, Signal::SIGKILL);
        }
        if let Some(g) = &self.adopted {
            g.signal(Signal::SIGKILL);
        }
    }
}

/// `argv` and `envp` for `execveat`, built before the fork: the child may not allocate.
struct ExecArgs {
    _strings: Vec<CString>,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
}

// SAFETY: the pointers point into `_strings`, owned by the same value and
// never mutated; the child only reads them.
unsafe impl Send for ExecArgs {}
// SAFETY: as above.
unsafe impl Sync for ExecArgs {}

impl ExecArgs {
    fn new(arg0: &OsStr, env: &BTreeMap<OsString, OsString>) -> Option<ExecArgs> {
        let c = |b: &[u8]| CString::new(b).ok();
        let arg0 = c(arg0.as_bytes())?;
        let envs = env
            .iter()
            .map(|(k, v)| c(&[k.as_bytes(), b"=", v.as_bytes()].concat()))
            .collect::<Option<Vec<_>>>()?;
        let argv = vec![arg0.as_ptr(), std::ptr::null()];
        let mut envp: Vec<_> = envs.iter().map(|e| e.as_ptr()).collect();
        envp.push(std::ptr::null());
        let mut strings = envs;
        strings.push(arg0);
        Some(ExecArgs {
            _strings: strings,
            argv,
            envp,
        })
    }
}

/// Runs `script` as `phase` with `ctx` in its environment; on `timeout` the
/// whole group gets SIGTERM, then SIGKILL after `grace`.
pub async fn run_script(
    script: &OpenedScript,
    phase: Phase,
    ctx: &ScriptContext,
    timeout: Duration,
    grace: Duration,
) -> ScriptRun {
    run_script_until(script, phase, ctx, timeout, grace, std::future::pending()).await
}

/// [`run_script`] that also ends the script's group when `cancel` completes
/// (the daemon is stopping: `systemctl stop` must not wait out a 30-minute
/// script timeout).
pub async fn run_script_until(
    script: &OpenedScript,
    phase: Phase,
    ctx: &ScriptContext,
    timeout: Duration,
    grace: Duration,
    cancel: impl std::future::Future<Output = ()>,
) -> ScriptRun {
    let env = script_environment(phase, ctx, |k| std::env::var_os(k));
    run_program(script, &env, None, timeout, grace, cancel).await
}

/// Runs `script` exactly as the hooks run (by its descriptor, own process
/// group, the timeout killing the tree) with the whole environment `env`
/// and, if given, `stdin` written to it and then closed; for commands that
/// are not hooks, such as the `exec` notification sink.
pub async fn run_program(
    script: &OpenedScript,
    env: &BTreeMap<OsString, OsString>,
    stdin: Option<Vec<u8>>,
    timeout: Duration,
    grace: Duration,
    cancel: impl std::future::Future<Output = ()>,
) -> ScriptRun {
    let started = Instant::now();
    let spawn_failed = |e: String| ScriptRun {
        status: ScriptStatus::SpawnFailed(e),
        output: String::new(),
        duration: started.elapsed(),
        leftovers: None,
    };
    let Some(exec) = ExecArgs::new(script.path().as_os_str(), env) else {
        return spawn_failed("a path or environment value contains a NUL byte".into());
    };
    let fd = script.as_fd().as_raw_fd();
    // The program name only labels the Command: what runs is `fd`.
    let mut cmd = Command::new(script.path());
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .process_group(0)
    .current_dir("/")
    .env_clear();
    // SAFETY: runs in the forked child after std has set up stdio, the
    // directory and the process group; it only calls fcntl and execveat
    // (async-signal-safe) on memory built before the fork.
    unsafe {
        cmd.pre_exec(move || {
            let exec = &exec;
            // For a `#!` script the kernel hands the interpreter `/dev/fd/N`,
            // which a close-on-exec descriptor would no longer name (the exec
            // fails with ENOENT): keep it open across this one exec, in the child only.
            if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            libc::syscall(
                libc::SYS_execveat,
                fd,
                c"".as_ptr(),
                exec.argv.as_ptr(),
                exec.envp.as_ptr(),
                libc::AT_EMPTY_PATH,
            );
            Err(std::io::Error::last_os_error())
        });
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return spawn_failed(e.to_string()),
    };
    let Some(pid) = child.id() else {
        return spawn_failed("the script exited before it could be supervised".into());
    };
    let pgid = Pid::from_raw(pid as i32);
    let mut guard = KillOnDrop {
        leader: Some(pgid),
        adopted: None,
    };
    if let (Some(bytes), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // Written beside the wait: a command that never reads cannot block the run.
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let _ = pipe.write_all(&bytes).await;
        });
    }
    let tail = Arc::new(Mutex::new(Tail::default()));
    let readers = [
        child
            .stdout
            .take()
            .map(|o| tokio::spawn(pump(o, tail.clone()))),
        child
            .stderr
            .take()
            .map(|e| tokio::spawn(pump(e, tail.clone()))),
    ];

    let waited = tokio::select! {
        w = tokio::time::timeout(timeout, child.wait()) => w.map_err(|_| ScriptStatus::TimedOut),
        () = cancel => Err(ScriptStatus::Cancelled),
    };
    let status = match waited {
        Ok(Ok(st)) => {
            use std::os::unix::process::ExitStatusExt;
            match (st.code(), st.signal()) {
                (Some(c), _) => ScriptStatus::Exited(c),
                (None, Some(s)) => ScriptStatus::Signaled(s),
                _ => ScriptStatus::Exited(-1),
            }
        }
        Ok(Err(e)) => ScriptStatus::SpawnFailed(e.to_string()),
        Err(ended) => {
            // The leader is not reaped yet: its pid still holds the PGID.
            terminate_group(pgid, grace).await;
            let _ = child.wait().await;
            ended
        }
    };
    let duration = started.elapsed();
    // The leader is reaped: from here the PGID is only ours through the members we hold.
    let killed = matches!(status, ScriptStatus::TimedOut | ScriptStatus::Cancelled);
    guard.leader = None;
    if !killed {
        guard.adopted = ProcessGroup::adopt(pgid);
    }

    let drain_until = Instant::now() + OUTPUT_DRAIN;
    for r in readers.into_iter().flatten() {
        let left = drain_until.saturating_duration_since(Instant::now());
        let abort = r.abort_handle();
        if tokio::time::timeout(left, r).await.is_err() {
            abort.abort();
        }
    }
    let output = {
        let t = tail.lock().expect("tail lock");
        String::from_utf8_lossy(&t.0.iter().copied().collect::<Vec<u8>>()).into_owned()
    };

    // From here on the caller owns whatever is left in the group.
    let leftovers = guard.adopted.take().filter(ProcessGroup::is_alive);
    ScriptRun {
        status,
        output,
        duration,
        leftovers,
    }
}

fn join_paths(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_are_read_past_odd_command_names() {
        assert!(live_member("42 (sleep) S 1 4242 4242 0 -1", 4242));
        assert!(!live_member("42 (sleep) Z 1 4242 4242 0 -1", 4242));
        assert!(!live_member("42 (sleep) S 1 4243 4243 0 -1", 4242));
        assert!(live_member("42 (a) b (c) R 1 7 7 0", 7));
    }

    #[test]
    fn the_environment_is_fixed_plus_what_the_policy_passes() {
        let ctx = ScriptContext {
            job: "db".into(),
            pass_env: vec!["PATH".into(), "ORACLE_HOME".into(), "ABSENT".into()],
            ..ScriptContext::default()
        };
        let daemon = |k: &str| match k {
            "PATH" => Some("/opt/bin".into()),
            "ORACLE_HOME" => Some("/u01".into()),
            "ALIBABA_CLOUD_ACCESS_KEY_SECRET" => Some("s3cr3t".into()),
            _ => None,
        };
        let env = script_environment(Phase::Pre, &ctx, daemon);
        let get = |k: &str| env.get(OsStr::new(k)).and_then(|v| v.to_str());
        assert_eq!(
            get("PATH"),
            Some("/opt/bin"),
            "listed: the operator's choice"
        );
        assert_eq!(get("ORACLE_HOME"), Some("/u01"));
        assert_eq!(get("ABSENT"), None);
        assert_eq!(get("ALIBABA_CLOUD_ACCESS_KEY_SECRET"), None);
        assert_eq!(get("APPSNAP_PHASE"), Some("pre"));
        assert_eq!(get("LANG"), Some(SCRIPT_LANG));
        assert_eq!(env.len(), 3 + 1 + 5, "PATH replaced, ORACLE_HOME added");
        let unlisted = script_environment(Phase::Pre, &ScriptContext::default(), daemon);
        assert_eq!(unlisted.get(OsStr::new("PATH")).unwrap(), SCRIPT_PATH);
    }

    #[test]
    fn only_the_pre_script_is_told_where_to_write_tags() {
        let ctx = ScriptContext {
            tags_file: Some("/run/appsnap/pre-r1/tags".into()),
            ..ScriptContext::default()
        };
        let pre = script_environment(Phase::Pre, &ctx, |_| None);
        let post = script_environment(Phase::Post, &ctx, |_| None);
        assert_eq!(
            pre.get(OsStr::new("APPSNAP_TAGS_FILE"))
                .and_then(|v| v.to_str()),
            Some("/run/appsnap/pre-r1/tags")
        );
        assert_eq!(post.get(OsStr::new("APPSNAP_TAGS_FILE")), None);
    }

    /// Issue 14 item 11: a PGID is signalled only while a member we hold by
    /// pidfd is, by a stat read before the pidfd answered, still in it.
    #[test]
    fn a_group_is_ours_only_while_a_held_member_is_in_it_and_unreaped() {
        let in_group = "42 (mysql) S 1 4242 4242 0 -1";
        assert!(member_confirmed(Some(in_group), 4242, true));
        // Reaped since (the pid may now be anybody's), or the stat was unreadable.
        assert!(!member_confirmed(Some(in_group), 4242, false));
        assert!(!member_confirmed(None, 4242, true));
        // Moved to another group (setsid), or a zombie: it no longer holds ours.
        assert!(!member_confirmed(
            Some("42 (mysql) S 1 42 42 0 -1"),
            4242,
            true
        ));
        assert!(!member_confirmed(
            Some("42 (mysql) Z 1 4242 4242 0 -1"),
            4242,
            true
        ));
    }

    #[test]
    fn a_reaped_member_no_longer_vouches_for_its_pgid() {
        use std::os::unix::process::CommandExt;
        // A child of this test process in a group of its own, held by pidfd.
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let g = ProcessGroup::adopt(Pid::from_raw(pid)).expect("sleep is a live member");
        assert!(g.is_ours() && g.is_alive());
        child.kill().unwrap();
        child.wait().unwrap();
        // Reaped: the PGID is free for anyone; nothing confirms it is ours.
        assert!(!g.is_ours());
        assert!(!g.is_alive());
    }
}
