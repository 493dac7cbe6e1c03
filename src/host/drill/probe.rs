//! What a restored device holds, read only: `blkid -p` (low-level probing,
//! no cache), the partition numbers of its table (`partx -g`, read from the
//! device), and the kernel's partitions of it in sysfs.

use std::collections::BTreeMap;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::error::DrillError;
use super::tools::{Run, Tools};
use crate::host::mounts;

const SYS_BLOCK: &str = "/sys/class/block";

/// `blkid -p -o export` of a device as key/value pairs; empty when it holds
/// nothing `blkid` recognises (its exit 2).
pub fn blkid(
    tools: &Tools,
    dev: &Path,
    deadline: Instant,
) -> Result<BTreeMap<String, String>, DrillError> {
    let run = Run::new("blkid", &tools.blkid)
        .args(["-p", "-o", "export"])
        .path_arg(dev);
    let out = run.output(tools, deadline)?;
    match out.exit {
        0 => Ok(parse_export(&out.stdout)),
        2 => Ok(BTreeMap::new()),
        _ => Err(run.failed(&out)),
    }
}

/// Parses `KEY=value` lines (`blkid -o export`).
pub fn parse_export(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// The partition numbers in the device's table, as `partx` reads them.
pub fn table_numbers(tools: &Tools, dev: &Path, deadline: Instant) -> Result<Vec<u32>, DrillError> {
    let run = Run::new("partx", &tools.partx)
        .args(["-g", "-o", "NR"])
        .path_arg(dev);
    let out = run.check(tools, deadline)?;
    out.stdout
        .split_whitespace()
        .map(|w| {
            w.parse::<u32>().map_err(|_| DrillError::Parse {
                tool: "partx",
                detail: format!("partition number {w:?}"),
            })
        })
        .collect()
}

/// The device's kernel name (`vdb`, `nvme1n1`, `loop3`).
pub fn kernel_name(dev: &Path) -> String {
    dev.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The kernel's partitions of a device: number -> `/dev/<name>`.
pub fn kernel_partitions(name: &str) -> BTreeMap<u32, PathBuf> {
    let mut out = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(Path::new(SYS_BLOCK).join(name)) else {
        return out;
    };
    for e in entries.flatten() {
        let child = e.file_name().to_string_lossy().into_owned();
        if !child.starts_with(name) {
            continue;
        }
        if let Some(n) = std::fs::read_to_string(e.path().join("partition"))
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
        {
            out.insert(n, Path::new("/dev").join(child));
        }
    }
    out
}

/// Waits until the kernel shows every wanted partition and its `/dev` node;
/// returns the first one still missing after `wait`.
pub fn wait_partitions(
    name: &str,
    wanted: &[u32],
    wait: Duration,
) -> Result<BTreeMap<u32, PathBuf>, u32> {
    let start = Instant::now();
    loop {
        let have = kernel_partitions(name);
        let missing = wanted
            .iter()
            .find(|n| !have.get(n).is_some_and(|p| is_block(p)));
        match missing {
            None => return Ok(have),
            Some(&n) if start.elapsed() >= wait => return Err(n),
            Some(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// True for a block device node.
pub fn is_block(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.file_type().is_block_device())
}

/// `major:minor` of a kernel block device.
fn dev_number(name: &str) -> Option<String> {
    std::fs::read_to_string(Path::new(SYS_BLOCK).join(name).join("dev"))
        .ok()
        .map(|s| s.trim().to_string())
}

/// Refuses a restored device that is mounted, or held (by device mapper,
/// md, …), itself or through a partition: a fresh copy is neither, and one
/// that is may be live storage.
pub fn ensure_unused(dev: &Path) -> Result<(), DrillError> {
    let name = kernel_name(dev);
    let mut names = vec![name.clone()];
    names.extend(kernel_partitions(&name).values().map(|p| kernel_name(p)));
    let table = mounts::read(Path::new("/proc/self/mountinfo")).map_err(|e| DrillError::InUse {
        device: dev.to_path_buf(),
        what: format!("cannot tell: {e}"),
    })?;
    for n in &names {
        let holders: Vec<String> = std::fs::read_dir(Path::new(SYS_BLOCK).join(n).join("holders"))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        if !holders.is_empty() {
            return Err(DrillError::InUse {
                device: dev.to_path_buf(),
                what: format!("/dev/{n} is held by {}", holders.join(", ")),
            });
        }
        if let Some(num) = dev_number(n) {
            if let Some(m) = table.iter().find(|m| m.dev_string() == num) {
                return Err(DrillError::InUse {
                    device: dev.to_path_buf(),
                    what: format!("/dev/{n} is mounted on {}", m.mount_point.display()),
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_lines() {
        let m = parse_export("DEVNAME=/dev/loop3\nUUID=ab-cd\nTYPE=ext4\nUSAGE=filesystem\n\n");
        assert_eq!(m.get("TYPE").map(String::as_str), Some("ext4"));
        assert_eq!(m.get("UUID").map(String::as_str), Some("ab-cd"));
        assert_eq!(m.len(), 4);
    }
}
