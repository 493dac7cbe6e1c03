//! Cloud disk serial → block device → partitions and dm/LVM/md holders, from sysfs.
//!
//! The whole block graph is read once from `<sys>/class/block` (and btrfs's
//! `<sys>/fs/btrfs/<uuid>/devices`) into memory, so the plan is computed from
//! one consistent view and unit tests can feed a fixture tree. Device nodes
//! under `/dev` are never needed: in containers they may not exist.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use thiserror::Error;

use super::mounts::MountInfo;

/// The by-id link prefix udev gives an NVMe Alibaba Cloud disk.
pub const NVME_BY_ID_PREFIX: &str = "nvme-Alibaba_Cloud_Elastic_Block_Storage_";
/// The by-id link prefix udev gives a virtio-blk disk.
pub const VIRTIO_BY_ID_PREFIX: &str = "virtio-";
/// virtio-blk serials are cut to this many bytes by the hypervisor.
const VIRTIO_SERIAL_MAX: usize = 20;

/// One block device as sysfs describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockDevice {
    /// Kernel name (`vdb`, `vdb1`, `dm-0`, `nvme0n1`, `loop3`).
    pub name: String,
    /// Device number.
    pub major: u32,
    /// Device number.
    pub minor: u32,
    /// For a partition: the whole disk it lives on.
    pub partition_of: Option<String>,
    /// Devices this one is built from (dm/md `slaves/`).
    pub slaves: Vec<String>,
    /// Devices built on this one (dm/md `holders/`).
    pub holders: Vec<String>,
    /// The disk serial (`serial` or `device/serial`, trimmed), when the device has one.
    pub serial: Option<String>,
    /// The device-mapper name (`dm/name`), e.g. `vg-lv`.
    pub dm_name: Option<String>,
}

/// How a disk serial was matched to a block device (shown in the plan).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FoundBy {
    /// Through a link in the by-id directory (the link's path).
    ByIdLink(PathBuf),
    /// Through the serial file in sysfs (udev links missing).
    SysfsSerial,
}

/// Why the block graph could not be read.
#[derive(Debug, Error)]
pub enum DevicesError {
    /// A sysfs directory or file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// What was being read.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A `dev` file did not hold `major:minor`.
    #[error("{path}: not major:minor: {text:?}")]
    BadDev {
        /// The `dev` file.
        path: PathBuf,
        /// Its content.
        text: String,
    },
}

/// Every block device and btrfs file system on the host, with their links.
#[derive(Debug, Clone, Default)]
pub struct BlockGraph {
    devices: BTreeMap<String, BlockDevice>,
    /// btrfs file systems: uuid → member device names.
    btrfs: BTreeMap<String, Vec<String>>,
}

fn read_dir_names(path: &Path) -> Vec<String> {
    match std::fs::read_dir(path) {
        Ok(rd) => {
            let mut v: Vec<String> = rd
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        }
        Err(_) => Vec::new(),
    }
}

fn read_trimmed(path: &Path) -> Option<String> {
    let s = std::fs::read_to_string(path).ok()?;
    let t = s.trim().to_string();
    if t.is_empty() {
        None
    } else {
        Some(t)
    }
}

impl BlockGraph {
    /// Reads `<sys_root>/class/block` and `<sys_root>/fs/btrfs`.
    pub fn read(sys_root: &Path) -> Result<BlockGraph, DevicesError> {
        let class = sys_root.join("class/block");
        let names = std::fs::read_dir(&class).map_err(|source| DevicesError::Read {
            path: class.clone(),
            source,
        })?;
        let mut devices = BTreeMap::new();
        let mut names: Vec<String> = names
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        for name in &names {
            let dir = class.join(name);
            let dev_path = dir.join("dev");
            // A device can vanish between listing and reading (hot-unplug): skip it.
            let Ok(text) = std::fs::read_to_string(&dev_path) else {
                continue;
            };
            let (major, minor) = text
                .trim()
                .split_once(':')
                .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
                .ok_or_else(|| DevicesError::BadDev {
                    path: dev_path.clone(),
                    text: text.clone(),
                })?;
            devices.insert(
                name.clone(),
                BlockDevice {
                    name: name.clone(),
                    major,
                    minor,
                    partition_of: None,
                    slaves: read_dir_names(&dir.join("slaves")),
                    holders: read_dir_names(&dir.join("holders")),
                    serial: read_trimmed(&dir.join("serial"))
                        .or_else(|| read_trimmed(&dir.join("device/serial"))),
                    dm_name: read_trimmed(&dir.join("dm/name")),
                },
            );
        }
        // A partition is a subdirectory of its disk that has a `partition` file.
        for name in &names {
            if dir_has_partition_file(&class.join(name)) {
                continue;
            }
            for sub in read_dir_names(&class.join(name)) {
                if devices.contains_key(&sub)
                    && class.join(name).join(&sub).join("partition").is_file()
                {
                    if let Some(d) = devices.get_mut(&sub) {
                        d.partition_of = Some(name.clone());
                    }
                }
            }
        }
        let mut btrfs = BTreeMap::new();
        let bdir = sys_root.join("fs/btrfs");
        for uuid in read_dir_names(&bdir) {
            let devs = bdir.join(&uuid).join("devices");
            if devs.is_dir() {
                btrfs.insert(uuid, read_dir_names(&devs));
            }
        }
        Ok(BlockGraph { devices, btrfs })
    }

    #[cfg(test)]
    /// Builds a graph directly (tests, and callers that already hold the data).
    pub fn from_parts(
        devices: Vec<BlockDevice>,
        btrfs: BTreeMap<String, Vec<String>>,
    ) -> BlockGraph {
        BlockGraph {
            devices: devices.into_iter().map(|d| (d.name.clone(), d)).collect(),
            btrfs,
        }
    }

    /// Looks a device up by kernel name.
    pub fn get(&self, name: &str) -> Option<&BlockDevice> {
        self.devices.get(name)
    }

    /// Looks a device up by number.
    pub fn by_devno(&self, major: u32, minor: u32) -> Option<&BlockDevice> {
        self.devices
            .values()
            .find(|d| d.major == major && d.minor == minor)
    }

    /// Finds the whole disk with this cloud serial: by-id links first (what udev
    /// published), then the serial files in sysfs (udev links can be missing).
    pub fn find_serial(&self, by_id_dir: &Path, serial: &str) -> Option<(String, FoundBy)> {
        let mut candidates = vec![
            format!("{VIRTIO_BY_ID_PREFIX}{serial}"),
            format!("{NVME_BY_ID_PREFIX}{serial}"),
        ];
        if serial.len() > VIRTIO_SERIAL_MAX && serial.is_char_boundary(VIRTIO_SERIAL_MAX) {
            candidates.push(format!(
                "{VIRTIO_BY_ID_PREFIX}{}",
                &serial[..VIRTIO_SERIAL_MAX]
            ));
        }
        for link in candidates {
            let path = by_id_dir.join(&link);
            if let Ok(target) = std::fs::read_link(&path) {
                if let Some(name) = target.file_name().map(|n| n.to_string_lossy().into_owned()) {
                    if self.devices.contains_key(&name) {
                        return Some((name, FoundBy::ByIdLink(path)));
                    }
                }
            }
        }
        self.devices
            .values()
            .find(|d| {
                d.partition_of.is_none()
                    && d.serial.as_deref().is_some_and(|s| {
                        s == serial || (s.len() == VIRTIO_SERIAL_MAX && serial.starts_with(s))
                    })
            })
            .map(|d| (d.name.clone(), FoundBy::SysfsSerial))
    }

    /// The device and everything built on it: partitions, then dm/md holders, recursively.
    pub fn descendants(&self, name: &str) -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![name.to_string()];
        while let Some(n) = stack.pop() {
            if !seen.insert(n.clone()) {
                continue;
            }
            for d in self.devices.values() {
                if d.partition_of.as_deref() == Some(n.as_str()) {
                    stack.push(d.name.clone());
                }
            }
            if let Some(d) = self.devices.get(&n) {
                stack.extend(d.holders.iter().cloned());
            }
            for d in self.devices.values() {
                if d.slaves.iter().any(|s| s == &n) {
                    stack.push(d.name.clone());
                }
            }
        }
        seen
    }

    /// The whole disks under a device: through dm/md slaves and partition parents.
    pub fn leaf_disks(&self, name: &str) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let mut seen = BTreeSet::new();
        let mut stack = vec![name.to_string()];
        while let Some(n) = stack.pop() {
            if !seen.insert(n.clone()) {
                continue;
            }
            match self.devices.get(&n) {
                Some(d) if d.partition_of.is_some() => {
                    stack.push(d.partition_of.clone().unwrap_or_default())
                }
                Some(d) if !d.slaves.is_empty() => stack.extend(d.slaves.iter().cloned()),
                _ => {
                    out.insert(n);
                }
            }
        }
        out
    }

    /// The chain from a device down to its disks, for display (`dm-0 → vdb1 → vdb`).
    pub fn chain(&self, name: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![name.to_string()];
        let mut seen = BTreeSet::new();
        while let Some(n) = stack.pop() {
            if !seen.insert(n.clone()) {
                continue;
            }
            out.push(n.clone());
            if let Some(d) = self.devices.get(&n) {
                if let Some(p) = &d.partition_of {
                    stack.push(p.clone());
                }
                for s in d.slaves.iter().rev() {
                    stack.push(s.clone());
                }
            }
        }
        out
    }

    /// The block devices a mounted file system lives on. Uses the superblock's
    /// device number when it is real; btrfs shows an anonymous `0:N`, so it is
    /// resolved through the mount source and `/sys/fs/btrfs/<uuid>/devices`,
    /// which also covers btrfs spanning several devices. Empty when the file
    /// system is not on a block device (tmpfs, proc, nfs, …).
    pub fn mount_devices(&self, m: &MountInfo) -> Vec<String> {
        let mut first = None;
        if m.major != 0 {
            first = self.by_devno(m.major, m.minor).map(|d| d.name.clone());
        }
        if first.is_none() && m.source.starts_with('/') {
            first = self.resolve_source(&m.source);
        }
        let Some(first) = first else {
            return Vec::new();
        };
        if m.fs_type == "btrfs" {
            if let Some(members) = self.btrfs.values().find(|members| members.contains(&first)) {
                return members.clone();
            }
        }
        vec![first]
    }

    fn resolve_source(&self, source: &str) -> Option<String> {
        let base = Path::new(source)
            .file_name()?
            .to_string_lossy()
            .into_owned();
        if self.devices.contains_key(&base) {
            return Some(base);
        }
        if let Some(d) = self
            .devices
            .values()
            .find(|d| d.dm_name.as_deref() == Some(base.as_str()))
        {
            return Some(d.name.clone());
        }
        // /dev/<vg>/<lv> is dm name "<vg>-<lv>" (with '-' doubled inside names).
        let p = Path::new(source);
        if let (Some(vg), Some(lv)) = (p.parent().and_then(|x| x.file_name()), p.file_name()) {
            let dm = format!(
                "{}-{}",
                vg.to_string_lossy().replace('-', "--"),
                lv.to_string_lossy().replace('-', "--")
            );
            if let Some(d) = self
                .devices
                .values()
                .find(|d| d.dm_name.as_deref() == Some(dm.as_str()))
            {
                return Some(d.name.clone());
            }
        }
        // On a real host the source is a path to a device node or link.
        let target = std::fs::canonicalize(source).ok()?;
        let name = target.file_name()?.to_string_lossy().into_owned();
        self.devices.contains_key(&name).then_some(name)
    }
}

fn dir_has_partition_file(dir: &Path) -> bool {
    dir.join("partition").is_file()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(name: &str, major: u32, minor: u32) -> BlockDevice {
        BlockDevice {
            name: name.into(),
            major,
            minor,
            partition_of: None,
            slaves: vec![],
            holders: vec![],
            serial: None,
            dm_name: None,
        }
    }

    fn lvm_graph() -> BlockGraph {
        let mut vdb = dev("vdb", 253, 16);
        vdb.serial = Some("bp1aaaa".into());
        let mut vdb1 = dev("vdb1", 253, 17);
        vdb1.partition_of = Some("vdb".into());
        vdb1.holders = vec!["dm-0".into()];
        let mut vdc = dev("vdc", 253, 32);
        vdc.holders = vec!["dm-0".into()];
        let mut dm0 = dev("dm-0", 252, 0);
        dm0.slaves = vec!["vdb1".into(), "vdc".into()];
        dm0.dm_name = Some("data-lv".into());
        BlockGraph::from_parts(vec![vdb, vdb1, vdc, dm0], BTreeMap::new())
    }

    #[test]
    fn descendants_follow_partitions_and_holders() {
        let g = lvm_graph();
        let d: Vec<_> = g.descendants("vdb").into_iter().collect();
        assert_eq!(d, vec!["dm-0", "vdb", "vdb1"]);
    }

    #[test]
    fn leaf_disks_go_through_dm_and_partitions() {
        let g = lvm_graph();
        let l: Vec<_> = g.leaf_disks("dm-0").into_iter().collect();
        assert_eq!(l, vec!["vdb", "vdc"]);
        assert_eq!(g.chain("dm-0"), vec!["dm-0", "vdb1", "vdb", "vdc"]);
    }

    #[test]
    fn sysfs_serial_fallback_finds_whole_disk() {
        let g = lvm_graph();
        let (name, how) = g
            .find_serial(Path::new("/nonexistent-by-id"), "bp1aaaa")
            .unwrap();
        assert_eq!(name, "vdb");
        assert_eq!(how, FoundBy::SysfsSerial);
        assert!(g
            .find_serial(Path::new("/nonexistent-by-id"), "bp1zzzz")
            .is_none());
    }

    #[test]
    fn lvm_source_paths_resolve_to_dm_device() {
        let g = lvm_graph();
        assert_eq!(
            g.resolve_source("/dev/mapper/data-lv").as_deref(),
            Some("dm-0")
        );
        assert_eq!(g.resolve_source("/dev/data/lv").as_deref(), Some("dm-0"));
    }
}
