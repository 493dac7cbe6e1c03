//! Running pre/post-scripts: by `execve` (the shebang counts) in a process
//! group of their own, with a bounded output tail, a timeout that kills the
//! whole tree, and "lock holders" — background children a pre-script leaves
//! behind (e.g. a `mysql` session holding FLUSH TABLES WITH READ LOCK) kept
//! alive until the post-script has run.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;
use tokio::time::Instant;

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

/// A process group appsnap started; terminating it ends every process in it.
#[derive(Debug)]
pub struct ProcessGroup {
    pgid: Pid,
}

impl ProcessGroup {
    /// The group id (the script's pid).
    pub fn id(&self) -> i32 {
        self.pgid.as_raw()
    }

    /// Whether any process is still in the group.
    pub fn is_alive(&self) -> bool {
        group_alive(self.pgid)
    }

    /// SIGTERM the group, wait up to `grace`, then SIGKILL; true if the group
    /// had to be SIGKILLed.
    pub async fn terminate(self, grace: Duration) -> bool {
        terminate_group(self.pgid, grace).await
    }
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
/// cancelled job never leaves a script running unsupervised.
struct KillOnDrop(Option<Pid>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(pgid) = self.0 {
            let _ = killpg(pgid, Signal::SIGKILL);
        }
    }
}

/// Runs `path` as `phase` with `ctx` in its environment; on `timeout` the
/// whole group gets SIGTERM, then SIGKILL after `grace`.
pub async fn run_script(
    path: &Path,
    phase: Phase,
    ctx: &ScriptContext,
    timeout: Duration,
    grace: Duration,
) -> ScriptRun {
    run_script_until(path, phase, ctx, timeout, grace, std::future::pending()).await
}

/// [`run_script`] that also ends the script's group when `cancel` completes
/// (the daemon is stopping: `systemctl stop` must not wait out a 30-minute
/// script timeout).
pub async fn run_script_until(
    path: &Path,
    phase: Phase,
    ctx: &ScriptContext,
    timeout: Duration,
    grace: Duration,
    cancel: impl std::future::Future<Output = ()>,
) -> ScriptRun {
    let started = Instant::now();
    let mut cmd = Command::new(path);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .current_dir("/")
        // systemd's notify/watchdog sockets are the daemon's, never a script's.
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
        .env_remove("LISTEN_FDS")
        .env_remove("LISTEN_PID")
        .env("APPSNAP_JOB", &ctx.job)
        .env("APPSNAP_PHASE", phase.as_str())
        .env("APPSNAP_DISK_IDS", ctx.disk_ids.join(" "))
        .env("APPSNAP_MOUNTPOINTS", join_paths(&ctx.mountpoints))
        .env(
            "APPSNAP_FREEZE_DEADLINE",
            ctx.freeze_deadline_epoch.to_string(),
        );
    if std::env::var_os("PATH").is_none() {
        cmd.env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        );
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return ScriptRun {
                status: ScriptStatus::SpawnFailed(e.to_string()),
                output: String::new(),
                duration: started.elapsed(),
                leftovers: None,
            }
        }
    };
    let pgid = Pid::from_raw(child.id().expect("a just-spawned child has a pid") as i32);
    let mut guard = KillOnDrop(Some(pgid));
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
            terminate_group(pgid, grace).await;
            let _ = child.wait().await;
            ended
        }
    };
    let duration = started.elapsed();

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
    guard.0 = None;
    let killed = matches!(status, ScriptStatus::TimedOut | ScriptStatus::Cancelled);
    let leftovers = (!killed && group_alive(pgid)).then_some(ProcessGroup { pgid });
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
    use super::live_member;

    #[test]
    fn stat_lines_are_read_past_odd_command_names() {
        assert!(live_member("42 (sleep) S 1 4242 4242 0 -1", 4242));
        assert!(!live_member("42 (sleep) Z 1 4242 4242 0 -1", 4242));
        assert!(!live_member("42 (sleep) S 1 4243 4243 0 -1", 4242));
        assert!(live_member("42 (a) b (c) R 1 7 7 0", 7));
    }
}
