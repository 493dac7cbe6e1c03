//! Root-test lab: loop devices, file systems and mounts that the test itself
//! creates under a unique `/tmp/appsnap-host-*` directory, torn down in the
//! only safe order (thaw, unmount, detach) even when the test fails, plus an
//! outer watchdog that thaws everything if a test wedges.
#![allow(dead_code)]

pub mod alerts;
pub mod skip;
pub mod world;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

nix::ioctl_readwrite!(fithaw, b'X', 120, libc::c_int);

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// The built appsnap binary.
pub fn appsnap_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_appsnap"))
}

/// `Some(reason)` when root tests cannot run here.
pub fn skip_reason() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("not root: root tests need loop devices and FIFREEZE".into());
    }
    for tool in [
        "losetup",
        "mkfs.ext4",
        "mkfs.xfs",
        "mkfs.btrfs",
        "sfdisk",
        "partx",
        "fsfreeze",
    ] {
        let ok = Command::new("sh")
            .args([
                "-c",
                &format!("command -v {tool} || PATH=$PATH:/usr/sbin:/sbin command -v {tool}"),
            ])
            .stdout(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            return Some(format!("{tool} missing (scripts/test installs it)"));
        }
    }
    None
}

/// Skips the calling test when not root or a tool is missing: counted as
/// skipped by scripts/test, a failure under CI (see `skip`).
#[macro_export]
macro_rules! root_or_skip {
    () => {
        if let Some(reason) = common::skip_reason() {
            common::skip::missing(&reason);
            return;
        }
    };
}

fn sh(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn quiet(cmd: &str, args: &[&str]) -> bool {
    Command::new(cmd)
        .args(args)
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// FITHAW through a directory fd; EINVAL (not frozen) and errors are ignored.
pub fn thaw_path(p: &Path) -> Option<i32> {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: valid C string.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return None;
    }
    // SAFETY: fresh fd.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut a = 0;
    // SAFETY: open fd, ignored argument.
    match unsafe { fithaw(fd.as_raw_fd(), &mut a) } {
        Ok(_) => Some(0),
        Err(e) => Some(e as i32),
    }
}

#[derive(Default)]
struct Inner {
    mounts: Vec<PathBuf>,
    loops: Vec<String>,
    partitioned: Vec<String>,
}

/// One test's private devices and mounts.
pub struct Lab {
    pub dir: PathBuf,
    inner: Arc<Mutex<Inner>>,
    watchdog_done: Arc<AtomicBool>,
}

impl Lab {
    /// A fresh lab whose watchdog thaws everything after `timeout` and aborts 20 s later.
    pub fn new(tag: &str, timeout: Duration) -> Lab {
        Lab::with_prefix("/tmp/appsnap-host", tag, timeout)
    }

    /// As [`Lab::new`], under `<prefix>-<tag>-...` (lanes that run beside
    /// others keep their scratch files under their own prefix).
    pub fn with_prefix(prefix: &str, tag: &str, timeout: Duration) -> Lab {
        let dir = PathBuf::from(format!(
            "{}-{}-{}-{}",
            prefix,
            tag,
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        for sub in ["img", "mnt", "by-id", "run"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        let inner = Arc::new(Mutex::new(Inner::default()));
        let done = Arc::new(AtomicBool::new(false));
        let (i2, d2, tag2) = (Arc::clone(&inner), Arc::clone(&done), tag.to_string());
        std::thread::spawn(move || {
            let start = Instant::now();
            while start.elapsed() < timeout {
                if d2.load(Ordering::SeqCst) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let mounts = i2.lock().map(|g| g.mounts.clone()).unwrap_or_default();
            eprintln!("WATCHDOG {tag2}: {timeout:?} passed; thawing {mounts:?}");
            // Mount order: a lower fs (holding a loop image) thaws before the fs on top of it.
            for m in mounts.iter() {
                thaw_path(m);
            }
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(20) {
                if d2.load(Ordering::SeqCst) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            eprintln!("WATCHDOG {tag2}: test still wedged after thaw; aborting");
            std::process::abort();
        });
        Lab {
            dir,
            inner,
            watchdog_done: done,
        }
    }

    pub fn by_id_dir(&self) -> PathBuf {
        self.dir.join("by-id")
    }

    pub fn run_dir(&self) -> PathBuf {
        self.dir.join("run")
    }

    /// A new loop device over a sparse file of `mb` MiB.
    pub fn loop_dev(&self, name: &str, mb: u64) -> String {
        self.loop_file(&self.dir.join("img").join(format!("{name}.img")), mb)
    }

    /// A new loop device over a sparse file at `img` (e.g. inside another lab mount).
    pub fn loop_file(&self, img: &Path, mb: u64) -> String {
        let f = std::fs::File::create(img).unwrap();
        f.set_len(mb << 20).unwrap();
        drop(f);
        let dev = sh("losetup", &["-f", "--show", img.to_str().unwrap()]);
        self.inner.lock().unwrap().loops.push(dev.clone());
        dev
    }

    /// A new loop device over an existing image file (left as it is).
    pub fn attach(&self, img: &Path) -> String {
        let dev = sh("losetup", &["-f", "--show", img.to_str().unwrap()]);
        self.inner.lock().unwrap().loops.push(dev.clone());
        dev
    }

    /// Mounts `dev` with `-o opts` at `<lab>/mnt/<rel>`.
    pub fn mount_opts(&self, dev: &str, rel: &str, opts: &str) -> PathBuf {
        let mp = self.dir.join("mnt").join(rel);
        std::fs::create_dir_all(&mp).unwrap();
        sh("mount", &["-o", opts, dev, mp.to_str().unwrap()]);
        self.inner.lock().unwrap().mounts.push(mp.clone());
        mp
    }

    /// GPT with partitions of these sizes (MiB; the last takes the rest), made
    /// visible with `partx -a` (this kernel has no partition-table parser).
    pub fn partition(&self, dev: &str, sizes_mb: &[u64]) -> Vec<String> {
        let n = sizes_mb.len();
        let mut script = String::from("label: gpt\n");
        for (i, mb) in sizes_mb.iter().enumerate() {
            if i + 1 == n {
                script.push_str(",,L\n");
            } else {
                script.push_str(&format!(",{mb}MiB,L\n"));
            }
        }
        let mut child = Command::new("sfdisk")
            .args(["-q", dev])
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success(), "sfdisk failed");
        self.inner.lock().unwrap().partitioned.push(dev.to_string());
        quiet("partx", &["-d", dev]);
        sh("partx", &["-a", dev]);
        let parts: Vec<String> = (1..=n).map(|i| format!("{dev}p{i}")).collect();
        for p in &parts {
            let start = Instant::now();
            while !Path::new(p).exists() && start.elapsed() < Duration::from_secs(5) {
                std::thread::sleep(Duration::from_millis(20));
            }
            assert!(Path::new(p).exists(), "{p} did not appear after partx -a");
        }
        parts
    }

    pub fn mkfs(&self, dev: &str, fs: &str) {
        match fs {
            "ext4" => sh("mkfs.ext4", &["-q", "-F", dev]),
            "xfs" => sh("mkfs.xfs", &["-q", "-f", dev]),
            "btrfs" => sh("mkfs.btrfs", &["-q", "-f", dev]),
            other => panic!("no mkfs for {other}"),
        };
    }

    /// Mounts `dev` at `<lab>/mnt/<rel>` (or a path under an existing lab mount).
    pub fn mount(&self, dev: &str, rel: &str) -> PathBuf {
        let mp = self.dir.join("mnt").join(rel);
        std::fs::create_dir_all(&mp).unwrap();
        sh("mount", &[dev, mp.to_str().unwrap()]);
        self.inner.lock().unwrap().mounts.push(mp.clone());
        mp
    }

    pub fn bind(&self, src: &Path, rel: &str) -> PathBuf {
        let mp = self.dir.join("mnt").join(rel);
        std::fs::create_dir_all(&mp).unwrap();
        sh(
            "mount",
            &["--bind", src.to_str().unwrap(), mp.to_str().unwrap()],
        );
        self.inner.lock().unwrap().mounts.push(mp.clone());
        mp
    }

    /// Unmounts one lab mount now (thawing first).
    pub fn umount(&self, mp: &Path) {
        thaw_path(mp);
        sh("umount", &[mp.to_str().unwrap()]);
        self.inner.lock().unwrap().mounts.retain(|m| m != mp);
    }

    /// `by-id/virtio-<serial>` → the device, as udev would for a cloud disk.
    pub fn link(&self, serial: &str, dev: &str) {
        std::os::unix::fs::symlink(dev, self.by_id_dir().join(format!("virtio-{serial}"))).unwrap();
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let inner = std::mem::take(&mut *self.inner.lock().unwrap_or_else(|e| e.into_inner()));
        // 1. thaw (EINVAL = was not frozen) in mount order, so a lower fs holding a
        // loop image thaws before the fs on top; 2. unmount (lazy as a fallback),
        // in reverse; 3. detach.
        for m in inner.mounts.iter() {
            thaw_path(m);
        }
        for m in inner.mounts.iter().rev() {
            let p = m.to_str().unwrap_or_default();
            if !quiet("umount", &[p]) {
                quiet("umount", &["-l", p]);
            }
        }
        for d in &inner.partitioned {
            quiet("partx", &["-d", d]);
        }
        for l in inner.loops.iter().rev() {
            quiet("losetup", &["-d", l]);
        }
        self.watchdog_done.store(true, Ordering::SeqCst);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A child process that creates and writes a file: it blocks while the fs is frozen.
pub fn writer(dir: &Path, name: &str) -> Child {
    let path = dir.join(name);
    Command::new("timeout")
        .args(["-s", "KILL", "120", "sh", "-c", "echo hello > \"$1\"", "sh"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// True when the child is still running after `d` (the write is blocked).
pub fn still_blocked_after(c: &mut Child, d: Duration) -> bool {
    std::thread::sleep(d);
    c.try_wait().unwrap().is_none()
}

/// True when the child exits successfully within `d`.
pub fn finishes_within(c: &mut Child, d: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < d {
        if let Some(st) = c.try_wait().unwrap() {
            return st.success();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Thaws a path when dropped: declared after the `Lab`, it runs before the lab's cleanup.
pub struct ThawOnDrop(pub PathBuf);

impl Drop for ThawOnDrop {
    fn drop(&mut self) {
        thaw_path(&self.0);
    }
}

/// `fsfreeze -f|-u <path>` (the "other tool" in tests); true on success.
pub fn fsfreeze(flag: &str, path: &Path) -> bool {
    Command::new("fsfreeze")
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .arg(flag)
        .arg(path)
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}
