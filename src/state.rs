//! What appsnap remembers between runs: the last result of each job (under
//! `state_dir`), and the daemon's lock (under `run_dir`) that tells
//! `appsnap status` whether the daemon is running.
//!
//! **Layout.** One JSON file per job, `<state_dir>/jobs/<job>.json`, holding
//! a [`JobResult`]. One file per job so that writing one job's result never
//! rewrites (or risks) another's, and a reader needs no lock.
//!
//! **Trusted places only.** `state_dir`, its `jobs/` and `run_dir` must be
//! owned by root (or the user appsnap runs as) and writable by nobody else,
//! as must every directory on the way (sticky ones like `/tmp` excepted); a
//! symlink or FIFO planted at a file's path is refused, never followed or
//! waited on; files are read up to 1 MiB ([`crate::securefs`]).
//!
//! **Atomic writes.** Write a fresh temp file (`O_EXCL | O_NOFOLLOW`) beside
//! it, fsync it, rename over the old file, fsync the directory: after a crash or power
//! loss the file is the old result or the new one, never a torn mix. The
//! job machine writes only after thaw (the state dir may be on a disk that
//! was frozen).
//!
//! **Tolerant reads.** A missing file is "no result yet"; a corrupt one, one
//! for another job, or one from a newer schema is reported (warning) and
//! treated as no result: `status` and the daemon never fail because of it.
//!
//! **The daemon lock.** The daemon holds an exclusive `flock(2)` on
//! `<run_dir>/daemon.lock` (which also holds its pid) for its whole life.
//! The kernel drops the lock when the process dies however it dies, so a
//! stale pid file can never claim a dead daemon is running.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::securefs::{self, TrustError, STATE_FILE_LIMIT};

/// The schema version written into every result file; a reader refuses
/// (as "no result") files from a newer schema rather than misreading them.
pub const STATE_SCHEMA: u32 = 1;

/// The lock file's name under `run_dir`.
pub const DAEMON_LOCK_FILE: &str = "daemon.lock";

/// How consistent a run's snapshots are (also the tag appsnap sets).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Consistency {
    /// Scripts quiesced the application and file systems were frozen.
    App,
    /// File systems were frozen, no (valid) scripts.
    Fs,
    /// Neither: what a power cut would leave.
    Crash,
    /// No snapshot was made.
    None,
}

impl Consistency {
    /// The spelling used in state files, logs (`APPSNAP_CONSISTENCY`) and `status`.
    pub fn as_str(self) -> &'static str {
        match self {
            Consistency::App => "app",
            Consistency::Fs => "fs",
            Consistency::Crash => "crash",
            Consistency::None => "none",
        }
    }
}

/// Where a group's upload stands. A run ends once its snapshots are usable
/// (`Available`: seconds on ESSD, thanks to instant access); the upload behind
/// them can take hours for a first full snapshot, so it is followed afterwards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Upload {
    /// The group's status: `progressing`, `accomplished` or `failed`.
    pub status: String,
    /// The snapshots' progress as ECS reports it (e.g. `"40%"`), the lowest of them.
    pub progress: String,
    /// When ECS was last asked.
    pub checked_at: DateTime<Utc>,
}

impl Upload {
    /// Still to follow.
    pub fn is_pending(&self) -> bool {
        self.status == "progressing"
    }
}

/// How long one phase of a run took.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhaseTime {
    /// The phase (`preflight`, `prescript`, `freeze`, `snapshot`, ...).
    pub phase: String,
    /// Milliseconds spent in it.
    pub ms: u64,
}

/// The last result of one job, as stored and as `status --json` prints it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobResult {
    /// [`STATE_SCHEMA`] when written.
    pub schema: u32,
    /// The job's name (must match the file name).
    pub job: String,
    /// The run's ID (as in the journal's `APPSNAP_RUN_ID`).
    pub run_id: String,
    /// The cron time the run was for; `None` for `appsnap run` by hand.
    pub scheduled_for: Option<DateTime<Utc>>,
    /// When the run started.
    pub started_at: DateTime<Utc>,
    /// When it ended.
    pub finished_at: DateTime<Utc>,
    /// The vendor exit code (0 success, ...).
    pub exit_code: u8,
    /// What was achieved.
    pub consistency: Consistency,
    /// The snapshot group, if one was created.
    pub snapshot_group_id: Option<String>,
    /// How long I/O was suspended, if it was.
    pub frozen_ms: Option<u64>,
    /// Time per phase, in order.
    pub phases: Vec<PhaseTime>,
    /// A one-line human summary (the vendor message, or why it failed).
    pub message: String,
    /// The group's upload, as last seen (absent in records of older versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload: Option<Upload>,
}

/// Why state could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// A job name that cannot be a file name (validated names always can).
    #[error("job name {0:?} cannot name a state file")]
    BadName(String),
    /// A filesystem operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// On which path.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A place appsnap does not trust or a file it will not read: a directory
    /// others can write, a planted symlink or FIFO, a file over its limit.
    #[error(transparent)]
    Untrusted(TrustError),
    /// The file exists but is not a result we can use.
    #[error("{path}: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Another daemon holds the lock.
    #[error("another appsnap daemon is running (pid {pid}; lock {path})", pid = pid.map_or("unknown".to_string(), |p| p.to_string()))]
    AlreadyRunning {
        /// Its pid, as written in the lock file.
        pid: Option<u32>,
        /// The lock file.
        path: PathBuf,
    },
}

impl From<TrustError> for StateError {
    fn from(e: TrustError) -> StateError {
        match e {
            TrustError::Io { what, path, source } => StateError::Io { what, path, source },
            other => StateError::Untrusted(other),
        }
    }
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StateError {
    let path = path.to_path_buf();
    move |source| StateError::Io { what, path, source }
}

/// Last results on disk, one file per job under `<state_dir>/jobs/`.
#[derive(Debug, Clone)]
pub struct StateStore {
    jobs_dir: PathBuf,
}

impl StateStore {
    /// A store under `state_dir` (the policy's `host.state_dir`); nothing is
    /// created until the first write.
    pub fn new(state_dir: &Path) -> StateStore {
        StateStore {
            jobs_dir: state_dir.join("jobs"),
        }
    }

    /// Where `job`'s result lives.
    pub fn path_for(&self, job: &str) -> Result<PathBuf, StateError> {
        if job.is_empty() || job.starts_with('.') || job.contains('/') || job.contains('\0') {
            return Err(StateError::BadName(job.to_string()));
        }
        Ok(self.jobs_dir.join(format!("{job}.json")))
    }

    /// Replaces the job's last result atomically (temp file, fsync, rename,
    /// fsync of the directory), in a directory only root could write.
    pub fn write(&self, result: &JobResult) -> Result<(), StateError> {
        let path = self.path_for(&result.job)?;
        let existed = self.jobs_dir.is_dir();
        if let Some(state_dir) = self.jobs_dir.parent() {
            securefs::ensure_trusted_dir(state_dir)?;
        }
        securefs::ensure_trusted_dir(&self.jobs_dir)?;
        if !existed {
            if let Some(state_dir) = self.jobs_dir.parent() {
                securefs::sync_dir(state_dir)?;
            }
        }
        let mut json = serde_json::to_vec_pretty(result).map_err(|e| StateError::Corrupt {
            path: path.clone(),
            reason: format!("cannot serialize: {e}"),
        })?;
        json.push(b'\n');
        let name = format!("{}.json", result.job);
        securefs::write_atomic_nofollow(&self.jobs_dir, &name, &json, 0o644)?;
        Ok(())
    }

    /// The job's last result: `Ok(None)` if it has none yet, `Err` with the
    /// reason if the file is unreadable or unusable.
    pub fn load(&self, job: &str) -> Result<Option<JobResult>, StateError> {
        let path = self.path_for(job)?;
        match securefs::check_trusted_dir(&self.jobs_dir) {
            Ok(_) => {}
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        let bytes = match securefs::read_bounded_regular(&path, STATE_FILE_LIMIT) {
            Ok(b) => b,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let corrupt = |reason: String| StateError::Corrupt {
            path: path.clone(),
            reason,
        };
        // Look at the schema first, so a newer file is named as such rather
        // than as "missing field".
        let value: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| corrupt(format!("not JSON: {e}")))?;
        match value.get("schema").and_then(|s| s.as_u64()) {
            Some(s) if s == u64::from(STATE_SCHEMA) => {}
            Some(s) => {
                return Err(corrupt(format!(
                    "schema {s} (this appsnap reads schema {STATE_SCHEMA})"
                )))
            }
            None => return Err(corrupt("no schema number".to_string())),
        }
        let result: JobResult =
            serde_json::from_value(value).map_err(|e| corrupt(format!("not a job result: {e}")))?;
        if result.job != job {
            return Err(corrupt(format!("holds job {:?}", result.job)));
        }
        Ok(Some(result))
    }

    /// [`load`](Self::load), with any problem logged as a warning and
    /// treated as "no result": what the daemon wants.
    pub fn read(&self, job: &str) -> Option<JobResult> {
        match self.load(job) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(APPSNAP_JOB = job, "ignoring the last result: {e}");
                None
            }
        }
    }
}

/// Held by the daemon for its whole life: an exclusive `flock` on
/// `<run_dir>/daemon.lock`, which also holds its pid. Dropping it (or the
/// process dying) releases it.
#[derive(Debug)]
pub struct DaemonLock {
    _file: File,
    path: PathBuf,
}

impl DaemonLock {
    /// Takes the lock, creating `run_dir` if needed, and writes our pid.
    /// Fails with [`StateError::AlreadyRunning`] if another daemon has it.
    /// May sleep up to half a second (blocking): call it at startup, before
    /// the runtime starts or from `spawn_blocking`.
    pub fn acquire(run_dir: &Path) -> Result<DaemonLock, StateError> {
        securefs::ensure_trusted_dir(run_dir)?;
        let path = run_dir.join(DAEMON_LOCK_FILE);
        // Never through a planted symlink (root would write its pid into
        // the target); O_NONBLOCK so a planted FIFO cannot stall the start.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(&path)
            .map_err(|e| lock_open_error(&path, e))?;
        let meta = file.metadata().map_err(io_err("inspect", &path))?;
        if !meta.is_file() {
            return Err(StateError::Untrusted(TrustError::NotRegular {
                path,
                kind: "special file",
            }));
        }
        // `status` takes a shared lock for an instant to test liveness; retry
        // briefly so that instant can never look like a second daemon.
        let mut tries = 0;
        loop {
            match flock(&file, libc::LOCK_EX | libc::LOCK_NB) {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && tries < 20 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(25));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Err(StateError::AlreadyRunning {
                        pid: read_pid(&mut file),
                        path,
                    })
                }
                Err(e) => return Err(io_err("lock", &path)(e)),
            }
        }
        file.set_len(0).map_err(io_err("truncate", &path))?;
        file.rewind().map_err(io_err("seek", &path))?;
        writeln!(file, "{}", std::process::id()).map_err(io_err("write", &path))?;
        Ok(DaemonLock { _file: file, path })
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// `ELOOP` from `O_NOFOLLOW` means a symlink sits where the lock should be.
fn lock_open_error(path: &Path, e: io::Error) -> StateError {
    if e.raw_os_error() == Some(libc::ELOOP) {
        StateError::Untrusted(TrustError::NotRegular {
            path: path.to_path_buf(),
            kind: "symbolic link",
        })
    } else {
        io_err("open", path)(e)
    }
}

/// Whether a daemon is running, as `status` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DaemonState {
    /// Someone holds the lock; the pid it wrote, if readable.
    Running {
        /// The daemon's pid.
        pid: Option<u32>,
    },
    /// Nobody holds the lock (or it was never created).
    Stopped,
    /// We could not tell (e.g. not allowed to open the lock file).
    Unknown {
        /// Why.
        reason: String,
    },
}

/// Tests the daemon lock under `run_dir` without disturbing the daemon.
pub fn daemon_state(run_dir: &Path) -> DaemonState {
    let path = run_dir.join(DAEMON_LOCK_FILE);
    let mut file = match securefs::open_regular_nofollow(&path) {
        Ok((f, _)) => f,
        Err(e) if e.is_not_found() => return DaemonState::Stopped,
        Err(e) => {
            return DaemonState::Unknown {
                reason: e.to_string(),
            }
        }
    };
    match flock(&file, libc::LOCK_SH | libc::LOCK_NB) {
        // We got it, so nobody holds it exclusively; closing releases it.
        Ok(()) => DaemonState::Stopped,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => DaemonState::Running {
            pid: read_pid(&mut file),
        },
        Err(e) => DaemonState::Unknown {
            reason: format!("flock {}: {e}", path.display()),
        },
    }
}

fn read_pid(file: &mut File) -> Option<u32> {
    let mut s = String::new();
    file.rewind().ok()?;
    file.take(32).read_to_string(&mut s).ok()?;
    s.trim().parse().ok()
}

fn flock(file: &File, op: libc::c_int) -> io::Result<()> {
    // SAFETY: flock only reads the fd, which `file` keeps open for the call.
    let rc = unsafe { libc::flock(file.as_raw_fd(), op) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn result(job: &str) -> JobResult {
        JobResult {
            schema: STATE_SCHEMA,
            job: job.to_string(),
            run_id: "00c0ffee00c0ffee".to_string(),
            scheduled_for: Some("2026-11-23T02:30:00Z".parse().unwrap()),
            started_at: "2026-11-23T02:30:00.120Z".parse().unwrap(),
            finished_at: "2026-11-23T02:31:04Z".parse().unwrap(),
            exit_code: 0,
            consistency: Consistency::App,
            snapshot_group_id: Some("ssg-bp1abc".to_string()),
            frozen_ms: Some(212),
            phases: vec![
                PhaseTime {
                    phase: "prescript".to_string(),
                    ms: 1500,
                },
                PhaseTime {
                    phase: "freeze".to_string(),
                    ms: 212,
                },
            ],
            message: "Finish whole Processes of Snapshot successfully".to_string(),
            upload: None,
        }
    }

    #[test]
    fn write_then_read_round_trips_and_leaves_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path());
        assert_eq!(store.load("mysql").unwrap(), None, "no result yet");
        let mut r = result("mysql");
        store.write(&r).unwrap();
        assert_eq!(store.load("mysql").unwrap(), Some(r.clone()));
        r.exit_code = 11;
        r.consistency = Consistency::None;
        r.snapshot_group_id = None;
        store.write(&r).unwrap();
        assert_eq!(store.read("mysql"), Some(r));
        let names: Vec<_> = fs::read_dir(dir.path().join("jobs"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, ["mysql.json"]);
    }

    #[test]
    fn the_file_format_is_stable_json() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path());
        store.write(&result("web.1:a")).unwrap();
        let text = fs::read_to_string(dir.path().join("jobs/web.1:a.json")).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["schema"], 1);
        assert_eq!(v["job"], "web.1:a");
        assert_eq!(v["consistency"], "app");
        assert_eq!(v["exit_code"], 0);
        assert_eq!(v["snapshot_group_id"], "ssg-bp1abc");
        assert_eq!(v["frozen_ms"], 212);
        assert_eq!(v["started_at"], "2026-11-23T02:30:00.120Z");
        assert_eq!(v["phases"][1]["phase"], "freeze");
    }

    #[test]
    fn unusable_files_are_reported_and_read_as_no_result() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path());
        fs::create_dir_all(dir.path().join("jobs")).unwrap();
        let put = |name: &str, text: &str| {
            fs::write(dir.path().join("jobs").join(format!("{name}.json")), text).unwrap()
        };
        put("empty", "");
        put("torn", "{\"schema\": 1, \"job\": \"torn\", \"run_");
        put("future", "{\"schema\": 2, \"job\": \"future\"}");
        put("partial", "{\"schema\": 1, \"job\": \"partial\"}");
        let mut other = result("someone-else");
        other.job = "someone-else".to_string();
        put("stolen", &serde_json::to_string(&other).unwrap());
        for (job, want) in [
            ("empty", "not JSON"),
            ("torn", "not JSON"),
            ("future", "schema 2"),
            ("partial", "not a job result"),
            ("stolen", "holds job"),
        ] {
            let e = store.load(job).unwrap_err();
            assert!(matches!(e, StateError::Corrupt { .. }), "{job}: {e:?}");
            assert!(e.to_string().contains(want), "{job}: {e}");
            assert_eq!(store.read(job), None, "{job}");
        }
        // A newer appsnap may add fields: they are ignored, not fatal.
        let mut v = serde_json::to_value(result("newer")).unwrap();
        v["added_later"] = serde_json::json!(true);
        put("newer", &v.to_string());
        assert_eq!(store.read("newer"), Some(result("newer")));
    }

    #[test]
    fn names_that_are_not_file_names_are_refused() {
        let store = StateStore::new(Path::new("/nonexistent"));
        for bad in ["", ".hidden", "a/b", "../x"] {
            assert!(
                matches!(store.path_for(bad), Err(StateError::BadName(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn write_failure_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("state");
        fs::write(&blocker, "a file where the state dir should be").unwrap();
        let e = StateStore::new(&blocker)
            .write(&result("mysql"))
            .unwrap_err();
        assert!(matches!(e, StateError::Io { .. }), "{e:?}");
    }

    #[test]
    fn daemon_lock_tells_status_whether_the_daemon_runs() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        assert_eq!(daemon_state(&run), DaemonState::Stopped, "never started");
        let lock = DaemonLock::acquire(&run).unwrap();
        assert_eq!(
            daemon_state(&run),
            DaemonState::Running {
                pid: Some(std::process::id())
            }
        );
        match DaemonLock::acquire(&run) {
            Err(StateError::AlreadyRunning { pid, .. }) => {
                assert_eq!(pid, Some(std::process::id()))
            }
            other => panic!("second daemon must be refused: {other:?}"),
        }
        drop(lock);
        // The pid is still in the file, but nobody holds the lock.
        assert_eq!(daemon_state(&run), DaemonState::Stopped);
        let again = DaemonLock::acquire(&run).unwrap();
        assert_eq!(again.path(), run.join(DAEMON_LOCK_FILE));
    }

    #[test]
    fn a_planted_symlink_at_the_state_path_is_refused_and_its_target_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, "precious").unwrap();
        fs::create_dir_all(dir.path().join("jobs")).unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join("jobs/mysql.json")).unwrap();
        let store = StateStore::new(dir.path());
        let e = store.write(&result("mysql")).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
        let e = store.load("mysql").unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
    }

    #[test]
    fn a_planted_symlink_at_the_lock_path_is_refused_and_its_target_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, "precious").unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join(DAEMON_LOCK_FILE)).unwrap();
        let e = DaemonLock::acquire(dir.path()).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
        assert!(
            matches!(daemon_state(dir.path()), DaemonState::Unknown { ref reason } if reason.contains("symbolic link")),
            "{:?}",
            daemon_state(dir.path())
        );
    }

    #[test]
    fn state_and_run_dirs_others_can_write_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let open = dir.path().join("open");
        fs::create_dir(&open).unwrap();
        fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
        let e = DaemonLock::acquire(&open).unwrap_err();
        assert!(e.to_string().contains("has mode 0777"), "{e}");
        assert!(!open.join(DAEMON_LOCK_FILE).exists());
        let e = StateStore::new(&open).write(&result("mysql")).unwrap_err();
        assert!(e.to_string().contains("has mode 0777"), "{e}");
    }

    #[test]
    fn fifos_and_oversized_state_files_are_refused_not_waited_on() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("jobs")).unwrap();
        nix::unistd::mkfifo(
            &dir.path().join("jobs/fifo.json"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        let store = StateStore::new(dir.path());
        let e = store.load("fifo").unwrap_err();
        assert!(e.to_string().contains("FIFO"), "{e}");
        fs::write(
            dir.path().join("jobs/big.json"),
            vec![b' '; 1024 * 1024 + 1],
        )
        .unwrap();
        let e = store.load("big").unwrap_err();
        assert!(e.to_string().contains("larger than the 1 MiB limit"), "{e}");
    }
}
