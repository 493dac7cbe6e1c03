//! Loop devices for attached disks: the emulator's AttachDisk makes a
//! created disk's image a block device with its partitions, as a real virtio
//! disk shows up, and DetachDisk takes it away.
//!
//! Devices are set up with `LOOP_CONFIGURE` and `LO_FLAGS_AUTOCLEAR |
//! LO_FLAGS_PARTSCAN`, and the emulator keeps the device open: if the
//! emulator dies, even by SIGKILL, its descriptor closes and the kernel
//! detaches the device as soon as nobody else holds it (at the latest when
//! the last mount on it goes). The by-id links it made are listed in
//! `<disk_dir>/.links`, so [`sweep`] can remove them after a crash.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LOOP_CLR_FD: libc::c_ulong = 0x4C01;
const LO_FLAGS_AUTOCLEAR: u32 = 4;
const LO_FLAGS_PARTSCAN: u32 = 8;

/// `struct loop_info64` (linux/loop.h).
#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; 64],
    lo_crypt_name: [u8; 64],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

/// `struct loop_config` (linux/loop.h, `LOOP_CONFIGURE`, Linux 5.8+).
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

/// A loop-device operation that failed, naming the file or device.
#[derive(Debug, thiserror::Error)]
#[error("{op} {path}: {source}")]
pub struct LoopError {
    /// What was being done.
    pub op: &'static str,
    /// The image or device.
    pub path: String,
    /// The OS error.
    pub source: std::io::Error,
}

/// An attached loop device, held open by the emulator.
#[derive(Debug)]
pub struct LoopDevice {
    file: File,
    /// `loopN`.
    pub name: String,
    /// Partitions were added from user space (`partx -a`), so they are
    /// removed the same way before the detach.
    partx_added: bool,
}

impl LoopDevice {
    /// `/dev/loopN`.
    pub fn path(&self) -> PathBuf {
        Path::new("/dev").join(&self.name)
    }

    /// Detaches the device. If something still holds it open (a mount),
    /// the kernel defers the detach to the last close (autoclear).
    pub fn detach(self) {
        if self.partx_added {
            let _ = partx("-d", &self.path());
        }
        // SAFETY: LOOP_CLR_FD takes no argument; the fd is open.
        let r = unsafe { libc::ioctl(self.file.as_raw_fd(), LOOP_CLR_FD as _, 0) };
        if r < 0 {
            tracing::warn!(
                "LOOP_CLR_FD {}: {} (autoclear detaches it on last close)",
                self.name,
                std::io::Error::last_os_error()
            );
        }
    }
}

fn err(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> LoopError {
    let path = path.display().to_string();
    move |source| LoopError { op, path, source }
}

/// Attaches `image` read-write to a free loop device with partition
/// scanning and autoclear (`losetup --find --show --partscan`, plus
/// autoclear so a killed emulator leaves no device behind).
pub fn attach(image: &Path) -> Result<LoopDevice, LoopError> {
    let backing = OpenOptions::new()
        .read(true)
        .write(true)
        .open(image)
        .map_err(err("open", image))?;
    let ctl_path = Path::new("/dev/loop-control");
    let ctl = OpenOptions::new()
        .read(true)
        .write(true)
        .open(ctl_path)
        .map_err(err("open", ctl_path))?;
    let mut last = None;
    for _ in 0..16 {
        // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a number.
        let n = unsafe { libc::ioctl(ctl.as_raw_fd(), LOOP_CTL_GET_FREE as _, 0) };
        if n < 0 {
            return Err(err("LOOP_CTL_GET_FREE", ctl_path)(
                std::io::Error::last_os_error(),
            ));
        }
        let name = format!("loop{n}");
        let dev = Path::new("/dev").join(&name);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&dev)
            .map_err(err("open", &dev))?;
        // SAFETY: an all-zero loop_config is valid (plain integers and arrays).
        let mut cfg: LoopConfig = unsafe { std::mem::zeroed() };
        cfg.fd = backing.as_raw_fd() as u32;
        cfg.info.lo_flags = LO_FLAGS_AUTOCLEAR | LO_FLAGS_PARTSCAN;
        let name_bytes = image.as_os_str().as_encoded_bytes();
        let len = name_bytes.len().min(63);
        cfg.info.lo_file_name[..len].copy_from_slice(&name_bytes[..len]);
        // SAFETY: cfg is a valid loop_config that outlives the call; both
        // fds are open.
        let r = unsafe { libc::ioctl(file.as_raw_fd(), LOOP_CONFIGURE as _, &cfg) };
        if r == 0 {
            let mut d = LoopDevice {
                file,
                name,
                partx_added: false,
            };
            d.show_partitions();
            return Ok(d);
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EBUSY) {
            return Err(err("LOOP_CONFIGURE", &dev)(e));
        }
        last = Some(e); // another process took it first: try the next free one
    }
    Err(err("LOOP_CONFIGURE", image)(last.unwrap_or_else(|| {
        std::io::Error::other("no free loop device")
    })))
}

impl LoopDevice {
    /// Number of partitions the kernel shows for the device.
    pub fn partitions(&self) -> usize {
        std::fs::read_dir(format!("/sys/block/{}", self.name))
            .map(|d| {
                d.flatten()
                    .filter(|e| {
                        e.file_name()
                            .to_string_lossy()
                            .starts_with(&format!("{}p", self.name))
                    })
                    .count()
            })
            .unwrap_or(0)
    }

    /// A virtio disk shows its partitions. `LO_FLAGS_PARTSCAN` does that on
    /// a kernel with partition-table parsers; on one without (such as the
    /// CI's, see tests/common), the table is read in user space and the
    /// partitions added with `partx -a` (BLKPG), which a client cannot tell
    /// apart. An image without a table simply shows none.
    fn show_partitions(&mut self) {
        if self.partitions() > 0 {
            return;
        }
        match partx("-a", &self.path()) {
            Ok(()) => self.partx_added = self.partitions() > 0,
            Err(e) => tracing::debug!("partx -a {}: {e} (no partition table?)", self.name),
        }
    }
}

/// Runs `partx <op> <dev>` (bounded by `timeout`).
fn partx(op: &str, dev: &Path) -> Result<(), String> {
    let out = std::process::Command::new("timeout")
        .args(["30", "partx", op])
        .arg(dev)
        .output()
        .map_err(|e| format!("partx: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

fn links_file(disk_dir: &Path) -> PathBuf {
    disk_dir.join(".links")
}

/// Records a by-id link the emulator made, so [`sweep`] finds it after a crash.
pub fn record_link(disk_dir: &Path, link: &Path) -> std::io::Result<()> {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(links_file(disk_dir))?;
    writeln!(f, "{}", link.display())
}

/// The image a loop device is backed by, from sysfs (`None` when unbound).
pub fn backing_file(name: &str) -> Option<PathBuf> {
    let s = std::fs::read_to_string(format!("/sys/block/{name}/loop/backing_file")).ok()?;
    let s = s.trim_end();
    Some(PathBuf::from(s.strip_suffix(" (deleted)").unwrap_or(s)))
}

/// Cleans up after an emulator that could not (SIGKILL): removes the by-id
/// links recorded in `<disk_dir>/.links` and detaches every loop device
/// whose image is under `disk_dir` (only images an emulator made there).
/// Returns what it did, one line each. Safe to call any time no emulator
/// is using `disk_dir`.
pub fn sweep(disk_dir: &Path) -> Vec<String> {
    let mut done = Vec::new();
    if let Ok(text) = std::fs::read_to_string(links_file(disk_dir)) {
        for l in text.lines().filter(|l| !l.is_empty()) {
            let p = Path::new(l);
            if p.symlink_metadata()
                .is_ok_and(|m| m.file_type().is_symlink())
                && std::fs::remove_file(p).is_ok()
            {
                done.push(format!("removed link {l}"));
            }
        }
        let _ = std::fs::remove_file(links_file(disk_dir));
    }
    let Ok(dir) = disk_dir.canonicalize() else {
        return done;
    };
    let Ok(entries) = std::fs::read_dir("/sys/block") else {
        return done;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("loop") {
            continue;
        }
        if backing_file(&name).is_some_and(|b| b.starts_with(&dir)) {
            let dev = Path::new("/dev").join(&name);
            if let Ok(file) = OpenOptions::new().read(true).open(&dev) {
                LoopDevice {
                    file,
                    name: name.clone(),
                    partx_added: true,
                }
                .detach();
                done.push(format!("detached {}", dev.display()));
            }
        }
    }
    done
}
