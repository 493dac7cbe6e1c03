//! The external programs a drill runs, and the one way it runs them: no
//! stdin, a fixed environment (`LC_ALL=C`, a system `PATH`), output captured
//! up to a bound (the tail is kept, where tools print their verdict), and a
//! timeout after which the program's whole process group is killed.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::error::DrillError;

/// The system `PATH` the tools run with (mount helpers, `lvm` forks).
const SYSTEM_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Paths of the external programs and the bounds they run under.
#[derive(Debug, Clone)]
pub struct Tools {
    /// `blkid` (util-linux): what a device holds.
    pub blkid: PathBuf,
    /// `partx` (util-linux): the partition numbers of a table; adds the kernel's
    /// partitions of a restored device when the kernel did not.
    pub partx: PathBuf,
    /// `mount` (util-linux).
    pub mount: PathBuf,
    /// `umount` (util-linux).
    pub umount: PathBuf,
    /// `e2fsck` (e2fsprogs).
    pub e2fsck: PathBuf,
    /// `xfs_repair` (xfsprogs).
    pub xfs_repair: PathBuf,
    /// `btrfs` (btrfs-progs).
    pub btrfs: PathBuf,
    /// `udevadm` (udev), to make udev read the drill's runtime rule; `None`
    /// where it is not installed (then udev is not running either).
    pub udevadm: Option<PathBuf>,
    /// `lvm` (lvm2), run as `lvm <command>`; `None` when lvm2 is not installed
    /// (then LVM physical volumes on restored disks are reported as skipped).
    pub lvm: Option<PathBuf>,
    /// The longest any one program may run (also bounded by the drill's deadline).
    pub timeout: Duration,
    /// The most output kept per program (its tail).
    pub output_limit: usize,
}

impl Tools {
    /// Looks each program up in `PATH` and the system directories once, at
    /// startup; a program not found keeps its usual `/usr/sbin` path, so the
    /// error names it when the drill needs it.
    pub fn discover() -> Tools {
        let find = |name: &str| lookup(name).unwrap_or_else(|| Path::new("/usr/sbin").join(name));
        Tools {
            blkid: find("blkid"),
            partx: find("partx"),
            mount: find("mount"),
            umount: find("umount"),
            e2fsck: find("e2fsck"),
            xfs_repair: find("xfs_repair"),
            btrfs: find("btrfs"),
            lvm: lookup("lvm"),
            udevadm: lookup("udevadm"),
            timeout: Duration::from_secs(600),
            output_limit: 16 * 1024,
        }
    }
}

/// The first executable `name` in `PATH`, then the system directories.
fn lookup(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(std::env::split_paths(SYSTEM_PATH))
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// What a finished program did.
#[derive(Debug, Clone)]
pub struct Output {
    /// Exit code; -1 when killed by a signal.
    pub exit: i32,
    /// Standard output (its tail when longer than the bound).
    pub stdout: String,
    /// Standard output and error together, their tail: for reports.
    pub tail: String,
}

impl Output {
    /// True on exit code 0.
    pub fn ok(&self) -> bool {
        self.exit == 0
    }
}

/// One program run: its short name (for errors), path and arguments.
pub struct Run<'a> {
    pub(crate) tool: &'static str,
    pub(crate) path: &'a Path,
    pub(crate) args: Vec<String>,
}

impl<'a> Run<'a> {
    /// A run of `path`, called `tool` in errors.
    pub fn new(tool: &'static str, path: &'a Path) -> Run<'a> {
        Run {
            tool,
            path,
            args: Vec::new(),
        }
    }

    /// Adds arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Adds a path argument.
    pub fn path_arg(mut self, p: &Path) -> Self {
        self.args.push(p.to_string_lossy().into_owned());
        self
    }

    /// The arguments as one line, for errors.
    pub fn shown(&self) -> String {
        self.args.join(" ")
    }

    /// Runs it to the end or until `limit` (the smaller of the tool timeout
    /// and what is left before `deadline`), whatever it exits with.
    pub fn output(&self, tools: &Tools, deadline: Instant) -> Result<Output, DrillError> {
        let left = deadline.saturating_duration_since(Instant::now());
        let limit = left.min(tools.timeout);
        if limit.is_zero() {
            return Err(DrillError::Deadline {
                step: format!("about to run {} {}", self.tool, self.shown()),
            });
        }
        let mut cmd = Command::new(self.path);
        cmd.args(&self.args)
            .env_clear()
            .env("PATH", SYSTEM_PATH)
            .env("LC_ALL", "C")
            .env("LVM_SUPPRESS_FD_WARNINGS", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = cmd.spawn().map_err(|source| DrillError::Spawn {
            tool: self.tool,
            path: self.path.to_path_buf(),
            source,
        })?;
        let both = Arc::new(Mutex::new(Tail::new(tools.output_limit)));
        let out_tail = Arc::new(Mutex::new(Tail::new(tools.output_limit)));
        let readers: Vec<_> = [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        ]
        .into_iter()
        .enumerate()
        .filter_map(|(i, s)| s.map(|s| (i, s)))
        .map(|(i, mut s)| {
            let both = Arc::clone(&both);
            let only = (i == 0).then(|| Arc::clone(&out_tail));
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    if let Ok(mut t) = both.lock() {
                        t.push(&buf[..n]);
                    }
                    if let Some(o) = &only {
                        if let Ok(mut t) = o.lock() {
                            t.push(&buf[..n]);
                        }
                    }
                }
            })
        })
        .collect();
        let start = Instant::now();
        let status = loop {
            match child.try_wait() {
                Ok(Some(st)) => break Some(st),
                Ok(None) => {}
                Err(_) => break None,
            }
            if start.elapsed() >= limit {
                kill_group(child.id());
                // A program stuck in the kernel may outlive SIGKILL a while;
                // wait a little, then leave it (its pipes close with it).
                let grace = Instant::now();
                while grace.elapsed() < Duration::from_secs(2) {
                    if let Ok(Some(_)) = child.try_wait() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                return Err(DrillError::Timeout {
                    tool: self.tool,
                    args: self.shown(),
                    secs: limit.as_secs(),
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        for r in readers {
            let _ = r.join();
        }
        let text = |t: &Arc<Mutex<Tail>>| t.lock().map(|t| t.text()).unwrap_or_default();
        Ok(Output {
            exit: status.and_then(|s| s.code()).unwrap_or(-1),
            stdout: text(&out_tail),
            tail: text(&both),
        })
    }

    /// Runs it; anything but exit 0 is [`DrillError::ToolFailed`].
    pub fn check(&self, tools: &Tools, deadline: Instant) -> Result<Output, DrillError> {
        let out = self.output(tools, deadline)?;
        if out.ok() {
            Ok(out)
        } else {
            Err(self.failed(&out))
        }
    }

    /// The error for a run that exited badly.
    pub fn failed(&self, out: &Output) -> DrillError {
        DrillError::ToolFailed {
            tool: self.tool,
            args: self.shown(),
            exit: out.exit,
            output_tail: out.tail.trim().to_string(),
        }
    }
}

fn kill_group(pid: u32) {
    if let Ok(pid) = i32::try_from(pid) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// The last `limit` bytes written to it.
struct Tail {
    limit: usize,
    buf: Vec<u8>,
    cut: bool,
}

impl Tail {
    fn new(limit: usize) -> Tail {
        Tail {
            limit: limit.max(1),
            buf: Vec::new(),
            cut: false,
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        if self.buf.len() > self.limit {
            let drop = self.buf.len() - self.limit;
            self.buf.drain(..drop);
            self.cut = true;
        }
    }

    fn text(&self) -> String {
        let body = String::from_utf8_lossy(&self.buf);
        if self.cut {
            format!("…{body}")
        } else {
            body.into_owned()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh_tools() -> Tools {
        Tools {
            timeout: Duration::from_millis(500),
            output_limit: 8,
            ..Tools::discover()
        }
    }

    #[test]
    fn keeps_the_tail_and_the_exit_code() {
        let sh = PathBuf::from("/bin/sh");
        let out = Run::new("sh", &sh)
            .args(["-c", "echo 0123456789abcdef; exit 3"])
            .output(&sh_tools(), Instant::now() + Duration::from_secs(5))
            .unwrap();
        assert_eq!(out.exit, 3);
        assert_eq!(out.tail, "…9abcdef\n");
    }

    #[test]
    fn kills_at_the_timeout() {
        let sh = PathBuf::from("/bin/sh");
        let start = Instant::now();
        let err = Run::new("sh", &sh)
            .args(["-c", "sleep 30"])
            .output(&sh_tools(), Instant::now() + Duration::from_secs(5))
            .unwrap_err();
        assert!(
            matches!(err, DrillError::Timeout { tool: "sh", .. }),
            "{err}"
        );
        assert!(start.elapsed() < Duration::from_secs(5));
    }
}
