//! The freeze plan: which file systems a job's disks carry, in what order to
//! freeze them, what is skipped and why, and what looks dangerous.
//!
//! The plan is a pure function of a [`HostView`] (mountinfo + sysfs + by-id,
//! all read from injectable paths) and the job's disks, so it is unit-tested on
//! fixture trees and printed verbatim by `appsnap plan`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Serialize;
use thiserror::Error;

use super::devices::{BlockGraph, DevicesError, FoundBy};
use super::mounts::{self, MountInfo, MountsError};
use crate::policy::types::DiskId;

/// Where the host layer reads the machine's state; tests point these at fixtures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPaths {
    /// Normally `/proc/self/mountinfo`.
    pub mountinfo: PathBuf,
    /// Normally `/sys`.
    pub sys_root: PathBuf,
    /// Normally `/dev/disk/by-id` (the policy's `host.by_id_dir`).
    pub by_id_dir: PathBuf,
    /// Normally `/proc` (other freezers are looked for in `<proc>/<pid>/comm`).
    pub proc_root: PathBuf,
}

impl HostPaths {
    /// The real machine, with the by-id directory from the policy.
    pub fn system(by_id_dir: &Path) -> HostPaths {
        HostPaths {
            mountinfo: PathBuf::from("/proc/self/mountinfo"),
            sys_root: PathBuf::from("/sys"),
            by_id_dir: by_id_dir.to_path_buf(),
            proc_root: PathBuf::from("/proc"),
        }
    }
}

/// One consistent snapshot of what the plan depends on.
#[derive(Debug, Clone)]
pub struct HostView {
    /// Mount table, in mount order.
    pub mounts: Vec<MountInfo>,
    /// Block devices and btrfs members.
    pub graph: BlockGraph,
    /// Where by-id links are looked up.
    pub by_id_dir: PathBuf,
    /// `uname -r`, to warn about kernels where blocked writers cannot be killed.
    pub kernel_release: Option<String>,
    /// appsnap's own executable, to warn when it sits on a file system to be frozen.
    pub self_exe: Option<PathBuf>,
    /// (pid, comm) of running processes, to spot other freezers.
    pub processes: Vec<(u32, String)>,
    /// Whether journald keeps its journal on disk (`/var/log/journal` exists).
    pub journald_persistent: bool,
}

/// Where persistent journald storage lives.
pub const JOURNAL_DIR: &str = "/var/log/journal";

/// Process names of other tools known to freeze file systems.
pub const OTHER_FREEZERS: &[&str] = &[
    "qemu-ga",
    "qemu-guest-agen",
    "vmtoolsd",
    "hv_vss_daemon",
    "safefreeze",
    "fsfreeze",
    "xfs_freeze",
];

impl HostView {
    /// Reads the host through `paths`.
    pub fn read(paths: &HostPaths) -> Result<HostView, PlanError> {
        let mounts = mounts::read(&paths.mountinfo)?;
        let graph = BlockGraph::read(&paths.sys_root)?;
        let kernel_release = std::fs::read_to_string(paths.proc_root.join("sys/kernel/osrelease"))
            .ok()
            .map(|s| s.trim().to_string());
        let mut processes = Vec::new();
        if let Ok(rd) = std::fs::read_dir(&paths.proc_root) {
            for e in rd.flatten() {
                let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                    continue;
                };
                if let Ok(comm) = std::fs::read_to_string(e.path().join("comm")) {
                    processes.push((pid, comm.trim().to_string()));
                }
            }
        }
        processes.sort();
        Ok(HostView {
            mounts,
            graph,
            by_id_dir: paths.by_id_dir.clone(),
            kernel_release,
            self_exe: std::env::current_exe().ok(),
            processes,
            journald_persistent: Path::new(JOURNAL_DIR).is_dir(),
        })
    }
}

/// A disk the job asked for, with the serial DescribeDisks gave (if known).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskRequest {
    /// The ECS disk ID.
    pub id: DiskId,
    /// `SerialNumber` from DescribeDisks; `None` means "the ID without `d-`".
    pub serial: Option<String>,
}

impl DiskRequest {
    /// A request with the default serial (offline: no DescribeDisks).
    pub fn offline(id: DiskId) -> DiskRequest {
        DiskRequest { id, serial: None }
    }

    /// A request for a disk DescribeDisks listed with `serial_number`
    /// (empty when ECS gave none: then the ID without `d-`).
    pub fn listed(id: DiskId, serial_number: &str) -> DiskRequest {
        DiskRequest {
            id,
            serial: (!serial_number.is_empty()).then(|| serial_number.to_string()),
        }
    }

    /// The serial to look for.
    pub fn serial(&self) -> &str {
        self.serial.as_deref().unwrap_or(self.id.default_serial())
    }
}

/// A job disk found on this machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedDisk {
    /// ECS disk ID.
    pub id: String,
    /// The serial searched for.
    pub serial: String,
    /// Kernel name of the whole disk.
    pub device: String,
    /// How it was found.
    pub found_by: FoundBy,
}

/// One file system (superblock) to freeze.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlanEntry {
    /// The mount point the guard opens and freezes through.
    pub mount_point: PathBuf,
    /// That mount's id; the guard checks `statx(STATX_MNT_ID)` of the opened fd against it.
    pub mount_id: u64,
    /// Superblock device number from mountinfo (`major:minor`; anonymous for btrfs).
    pub dev: String,
    /// File system type.
    pub fs_type: String,
    /// Mount source as mountinfo shows it.
    pub source: String,
    /// Device chain from the file system's device down to the whole disks.
    pub devices: Vec<String>,
    /// The job's disks under it (ECS IDs).
    pub disks: Vec<String>,
    /// Other mounts of the same superblock (bind mounts, btrfs subvolumes): not frozen again.
    pub also_mounted_at: Vec<PathBuf>,
}

/// A mount on the job's disks that will not be frozen, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skipped {
    /// Where it is mounted.
    pub mount_point: PathBuf,
    /// File system type.
    pub fs_type: String,
    /// Why it is not frozen.
    pub reason: String,
}

/// The freeze plan for one job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// The job's disks as found on this machine.
    pub disks: Vec<PlannedDisk>,
    /// File systems in freeze order (children before parents); thaw runs in reverse.
    pub entries: Vec<PlanEntry>,
    /// Mounts on the job's disks that are not frozen.
    pub skipped: Vec<Skipped>,
    /// Hazards worth an operator's attention; none of them stops the job.
    pub warnings: Vec<String>,
}

/// One file system that spans disks inside and outside the job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spanning {
    /// Its mount point.
    pub mount_point: PathBuf,
    /// Its type.
    pub fs_type: String,
    /// Job disks under it.
    pub inside: Vec<String>,
    /// Other disks under it (kernel name and serial when known).
    pub outside: Vec<String>,
}

/// Why no plan could be made. All of these mean "conditions not met" (exit 1).
#[derive(Debug, Error)]
pub enum PlanError {
    /// mountinfo unreadable.
    #[error(transparent)]
    Mounts(#[from] MountsError),
    /// sysfs unreadable.
    #[error(transparent)]
    Devices(#[from] DevicesError),
    /// A job disk is not attached here (or has no serial visible to the guest).
    #[error("disk {id} (serial {serial}) not found: no by-id link in {by_id_dir} and no block device with that serial in sysfs{}", no_serial_hint(*.no_serial))]
    DiskNotFound {
        /// The disk ID.
        id: String,
        /// The serial searched for.
        serial: String,
        /// Where links were looked for.
        by_id_dir: PathBuf,
        /// No serial came from ECS, so `serial` is the ID-without-`d-` fallback.
        no_serial: bool,
    },
    /// File systems whose snapshot cannot be consistent because part of them is not snapshotted.
    #[error("refusing: {}", describe_spanning(.0))]
    SpansOutsideJob(Vec<Spanning>),
}

fn describe_spanning(v: &[Spanning]) -> String {
    v.iter()
        .map(|s| {
            format!(
                "file system {} ({}) spans job disks [{}] and disks outside the job [{}], so its snapshot cannot be consistent",
                s.mount_point.display(),
                s.fs_type,
                s.inside.join(", "),
                s.outside.join(", ")
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Types that cannot be frozen, or must not be (network, stacked, pseudo), with the reason.
fn unfreezable(fs_type: &str) -> Option<&'static str> {
    let t = fs_type;
    if t.starts_with("fuse") {
        return Some("FUSE file systems cannot be frozen");
    }
    match t {
        "tmpfs" | "ramfs" | "devtmpfs" | "proc" | "sysfs" | "cgroup" | "cgroup2" | "debugfs"
        | "tracefs" | "securityfs" | "pstore" | "bpf" | "configfs" | "devpts" | "mqueue"
        | "hugetlbfs" | "autofs" | "binfmt_misc" => {
            Some("memory or pseudo file system: nothing to freeze")
        }
        "overlay" | "aufs" => Some("stacked file system: freeze the file system under it instead"),
        "nfs" | "nfs4" | "cifs" | "smb3" | "smbfs" | "ceph" | "glusterfs" | "9p" => {
            Some("network file system: not on a cloud disk, cannot be frozen safely")
        }
        "squashfs" | "iso9660" | "erofs" | "udf" => Some("read-only by design"),
        "vfat" | "msdos" | "exfat" => Some(
            "its kernel driver cannot freeze (EOPNOTSUPP): its snapshot is crash-consistent only",
        ),
        "swap" => Some("swap"),
        _ => None,
    }
}

/// Identifies a superblock: mountinfo's `major:minor` for real devices; for
/// anonymous devices (btrfs) the type plus member devices, which is stable.
fn sb_key(m: &MountInfo, devices: &[String]) -> String {
    if m.major == 0 && !devices.is_empty() {
        format!("{}:{}", m.fs_type, devices.join(","))
    } else {
        m.dev_string()
    }
}

/// Why the ID-without-`d-` fallback was used and what to do when it failed:
/// without a serial the guest cannot tell which device a disk is.
fn no_serial_hint(no_serial: bool) -> &'static str {
    if no_serial {
        ". The disk has no serial number known to appsnap (ECS reports none for disks created before 2020-06-10 and for disks of instances that are not I/O optimized; `appsnap plan` does not ask ECS), so its ID without \"d-\" was tried as the serial and no device carries it: appsnap cannot tell which device this disk is. Check that it is attached to this instance; if it has no serial, re-create the disk from a snapshot (new disks get a serial number) or exclude it from the job"
    } else {
        ""
    }
}

/// Builds the plan for `disks` on `view`. `run_dir` is only used for warnings.
pub fn build(view: &HostView, disks: &[DiskRequest], run_dir: &Path) -> Result<Plan, PlanError> {
    let graph = &view.graph;
    // 1. Job disks → whole block devices.
    let mut planned = Vec::new();
    let mut disk_of: BTreeMap<String, String> = BTreeMap::new(); // kernel name → disk ID
    for d in disks {
        let serial = d.serial().to_string();
        let (name, found_by) =
            graph
                .find_serial(&view.by_id_dir, &serial)
                .ok_or_else(|| PlanError::DiskNotFound {
                    id: d.id.to_string(),
                    serial: serial.clone(),
                    by_id_dir: view.by_id_dir.clone(),
                    no_serial: d.serial.is_none(),
                })?;
        disk_of.insert(name.clone(), d.id.to_string());
        planned.push(PlannedDisk {
            id: d.id.to_string(),
            serial,
            device: name,
            found_by,
        });
    }
    let mut below: BTreeSet<String> = BTreeSet::new();
    for name in disk_of.keys() {
        below.extend(graph.descendants(name));
    }

    // 2. Mounts on those devices, grouped by superblock (mountinfo order kept).
    struct Group<'a> {
        mounts: Vec<(usize, &'a MountInfo)>,
        devices: Vec<String>,
    }
    let mut groups: Vec<(String, Group)> = Vec::new();
    let mut skipped = Vec::new();
    for (idx, m) in view.mounts.iter().enumerate() {
        let devs = graph.mount_devices(m);
        if devs.is_empty() || !devs.iter().any(|d| below.contains(d)) {
            continue;
        }
        if let Some(reason) = unfreezable(&m.fs_type) {
            skipped.push(Skipped {
                mount_point: m.mount_point.clone(),
                fs_type: m.fs_type.clone(),
                reason: reason.to_string(),
            });
            continue;
        }
        let key = sb_key(m, &devs);
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, g)) => g.mounts.push((idx, m)),
            None => groups.push((
                key,
                Group {
                    mounts: vec![(idx, m)],
                    devices: devs,
                },
            )),
        }
    }

    // 3. One entry per superblock; refuse file systems that leave the job's disks.
    let shadowed = |idx: usize, m: &MountInfo| {
        view.mounts[idx + 1..]
            .iter()
            .any(|later| later.mount_point == m.mount_point)
    };
    let mut entries: Vec<(usize, PlanEntry)> = Vec::new();
    let mut spanning = Vec::new();
    for (_, g) in &groups {
        let first = g.mounts[0].1;
        if first.super_read_only() {
            for (_, m) in &g.mounts {
                skipped.push(Skipped {
                    mount_point: m.mount_point.clone(),
                    fs_type: m.fs_type.clone(),
                    reason: "read-only file system: nothing can change while the snapshot is taken"
                        .into(),
                });
            }
            continue;
        }
        let mut leaves = BTreeSet::new();
        for d in &g.devices {
            leaves.extend(graph.leaf_disks(d));
        }
        let inside: Vec<String> = leaves
            .iter()
            .filter_map(|l| disk_of.get(l).cloned())
            .collect();
        let outside: Vec<String> = leaves
            .iter()
            .filter(|l| !disk_of.contains_key(*l))
            .map(|l| match graph.get(l).and_then(|d| d.serial.clone()) {
                Some(s) => format!("{l} (serial {s})"),
                None => l.clone(),
            })
            .collect();
        if !outside.is_empty() {
            spanning.push(Spanning {
                mount_point: first.mount_point.clone(),
                fs_type: first.fs_type.clone(),
                inside,
                outside,
            });
            continue;
        }
        let visible: Vec<&(usize, &MountInfo)> =
            g.mounts.iter().filter(|(i, m)| !shadowed(*i, m)).collect();
        let rank = |m: &MountInfo| (m.is_fs_root() as u8) * 2 + (!m.mount_read_only() as u8);
        let Some(&&(rep_idx, rep)) = visible.iter().max_by(|a, b| {
            rank(a.1).cmp(&rank(b.1)).then(b.0.cmp(&a.0)) // best rank, then earliest mount
        }) else {
            skipped.push(Skipped {
                mount_point: first.mount_point.clone(),
                fs_type: first.fs_type.clone(),
                reason: "every mount of it is hidden under a later mount: cannot be opened by path"
                    .into(),
            });
            continue;
        };
        let mut chain = Vec::new();
        for d in &g.devices {
            for c in graph.chain(d) {
                if !chain.contains(&c) {
                    chain.push(c);
                }
            }
        }
        let order_idx = g.mounts.iter().map(|(i, _)| *i).max().unwrap_or(rep_idx);
        entries.push((
            order_idx,
            PlanEntry {
                mount_point: rep.mount_point.clone(),
                mount_id: rep.mount_id,
                dev: rep.dev_string(),
                fs_type: rep.fs_type.clone(),
                source: rep.source.clone(),
                devices: chain,
                disks: inside,
                also_mounted_at: g
                    .mounts
                    .iter()
                    .filter(|(i, _)| *i != rep_idx)
                    .map(|(_, m)| m.mount_point.clone())
                    .collect(),
            },
        ));
    }
    if !spanning.is_empty() {
        return Err(PlanError::SpansOutsideJob(spanning));
    }
    // 4. Children before parents: deeper mount points first, then later mounts first.
    entries.sort_by(|(ia, a), (ib, b)| {
        let da = a.mount_point.components().count();
        let db = b.mount_point.components().count();
        db.cmp(&da).then(ib.cmp(ia))
    });
    let entries: Vec<PlanEntry> = entries.into_iter().map(|(_, e)| e).collect();
    let warnings = warnings(view, &entries, run_dir);
    Ok(Plan {
        disks: planned,
        entries,
        skipped,
        warnings,
    })
}

fn planned_fs_of<'a>(
    view: &HostView,
    entries: &'a [PlanEntry],
    path: &Path,
) -> Option<&'a PlanEntry> {
    let m = mounts::containing_mount(&view.mounts, path)?;
    let devs = view.graph.mount_devices(m);
    let key = sb_key(m, &devs);
    entries.iter().find(|e| {
        view.mounts
            .iter()
            .find(|x| x.mount_id == e.mount_id)
            .is_some_and(|x| sb_key(x, &view.graph.mount_devices(x)) == key)
    })
}

fn warnings(view: &HostView, entries: &[PlanEntry], run_dir: &Path) -> Vec<String> {
    let mut w = Vec::new();
    if let Some(rel) = &view.kernel_release {
        if kernel_older_than(rel, 5, 17) {
            w.push(format!(
                "kernel {rel} is older than 5.17: processes blocked on a frozen file system cannot be killed until it thaws"
            ));
        }
    }
    match mounts::containing_mount(&view.mounts, run_dir) {
        Some(m) if m.fs_type != "tmpfs" => w.push(format!(
            "run_dir {} is on {} ({}), not tmpfs: the frozen-set record should live in memory so writing it never blocks and a reboot clears it",
            run_dir.display(),
            m.mount_point.display(),
            m.fs_type
        )),
        _ => {}
    }
    if let Some(e) =
        planned_fs_of(view, entries, Path::new(JOURNAL_DIR)).filter(|_| view.journald_persistent)
    {
        w.push(format!(
            "journald's persistent storage /var/log/journal is on {}, which will be frozen: journald and every service logging through it can stall until thaw",
            e.mount_point.display()
        ));
    }
    if let Some(exe) = &view.self_exe {
        if let Some(e) = planned_fs_of(view, entries, exe) {
            w.push(format!(
                "appsnap's own binary {} is on {}, which will be frozen (the guard locks itself in memory, but other appsnap activity may stall)",
                exe.display(),
                e.mount_point.display()
            ));
        }
    }
    for (pid, comm) in &view.processes {
        if OTHER_FREEZERS.contains(&comm.as_str()) {
            w.push(format!(
                "another freezer is running ({comm}, pid {pid}): a file system it froze makes our freeze fail with EBUSY"
            ));
        }
    }
    if entries.iter().any(|e| e.mount_point == Path::new("/")) {
        w.push(
            "the root file system / is in the plan: everything writing to / waits until thaw"
                .into(),
        );
    }
    w
}

/// True when a `uname -r` release is older than `major.minor` (unparseable: false).
pub fn kernel_older_than(release: &str, major: u32, minor: u32) -> bool {
    let mut it = release.split(|c: char| !c.is_ascii_digit());
    let a = it.next().and_then(|s| s.parse::<u32>().ok());
    let b = it.next().and_then(|s| s.parse::<u32>().ok());
    match (a, b) {
        (Some(a), Some(b)) => (a, b) < (major, minor),
        _ => false,
    }
}

impl Plan {
    /// What the freeze guard needs: mount points with their identities, in freeze order.
    pub fn targets(&self) -> Vec<super::protocol::Target> {
        self.entries
            .iter()
            .map(|e| {
                let (maj, min) = e.dev.split_once(':').unwrap_or(("0", "0"));
                super::protocol::Target {
                    mount_point: e.mount_point.clone(),
                    mount_id: e.mount_id,
                    dev_major: maj.parse().unwrap_or(0),
                    dev_minor: min.parse().unwrap_or(0),
                    fs_type: e.fs_type.clone(),
                    st_dev: None,
                }
            })
            .collect()
    }

    /// The plan as operators read it: disks → devices → file systems in freeze order.
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ = writeln!(s, "disks:");
        for d in &self.disks {
            let how = match &d.found_by {
                FoundBy::ByIdLink(p) => format!("by-id link {}", p.display()),
                FoundBy::SysfsSerial => "sysfs serial".to_string(),
            };
            let _ = writeln!(
                s,
                "  {} (serial {}) -> /dev/{} [{}]",
                d.id, d.serial, d.device, how
            );
        }
        let _ = writeln!(s, "freeze order (thaw runs in reverse):");
        if self.entries.is_empty() {
            let _ = writeln!(s, "  (nothing to freeze)");
        }
        for (i, e) in self.entries.iter().enumerate() {
            let _ = writeln!(
                s,
                // Devices top-down (holder first, then what it sits on); siblings such
                // as an LV's physical volumes are side by side, not a chain.
                "  {}. {} {} ({}, mount id {}, dev {}) on devices {} -> disks {}",
                i + 1,
                e.mount_point.display(),
                e.fs_type,
                e.source,
                e.mount_id,
                e.dev,
                e.devices.join(", "),
                e.disks.join(", ")
            );
            for a in &e.also_mounted_at {
                let _ = writeln!(
                    s,
                    "     also mounted at {} (same file system, frozen once)",
                    a.display()
                );
            }
        }
        if !self.skipped.is_empty() {
            let _ = writeln!(s, "skipped:");
            for k in &self.skipped {
                let _ = writeln!(
                    s,
                    "  {} ({}): {}",
                    k.mount_point.display(),
                    k.fs_type,
                    k.reason
                );
            }
        }
        if !self.warnings.is_empty() {
            let _ = writeln!(s, "warnings:");
            for w in &self.warnings {
                let _ = writeln!(s, "  - {w}");
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_versions_compare() {
        assert!(kernel_older_than("5.10.0-23-amd64", 5, 17));
        assert!(kernel_older_than("4.19.91-26.al7.x86_64", 5, 17));
        assert!(!kernel_older_than("5.17.0", 5, 17));
        assert!(!kernel_older_than("6.18.44-fc-v769", 5, 17));
        assert!(!kernel_older_than("weird", 5, 17));
    }

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/host")
            .join(name)
    }

    fn view(name: &str) -> HostView {
        let dir = fixture(name);
        HostView::read(&HostPaths {
            mountinfo: dir.join("mountinfo"),
            sys_root: dir.join("sys"),
            by_id_dir: dir.join("by-id"),
            proc_root: dir.join("proc"),
        })
        .unwrap()
    }

    fn disks(ids: &[&str]) -> Vec<DiskRequest> {
        ids.iter()
            .map(|s| DiskRequest::offline(DiskId::parse(s).unwrap()))
            .collect()
    }

    fn mps(p: &Plan) -> Vec<String> {
        p.entries
            .iter()
            .map(|e| e.mount_point.display().to_string())
            .collect()
    }

    #[test]
    fn lvm_holders_nested_children_first_and_bind_dedup() {
        let v = view("lvm");
        let p = build(
            &v,
            &disks(&["d-bp1aaaa", "d-bp1bbbb"]),
            Path::new("/run/appsnap"),
        )
        .unwrap();
        assert_eq!(mps(&p), vec!["/data/logs", "/data"]);
        let data = &p.entries[1];
        assert_eq!(data.devices, vec!["dm-0", "vdb1", "vdb"]);
        assert_eq!(data.disks, vec!["d-bp1aaaa"]);
        assert_eq!(data.fs_type, "xfs");
        assert_eq!(data.mount_id, 30);
        assert_eq!(data.dev, "252:0");
        assert_eq!(data.also_mounted_at, vec![PathBuf::from("/srv/data bind")]);
        assert_eq!(p.entries[0].disks, vec!["d-bp1bbbb"]);
        assert!(matches!(p.disks[0].found_by, FoundBy::ByIdLink(_)));
        assert_eq!(p.disks[0].device, "vdb");
        // The tmpfs mounted inside /data is not on the job's disks: neither planned nor listed.
        assert!(p.skipped.is_empty(), "{:?}", p.skipped);
        let r = p.render();
        assert!(r.contains("1. /data/logs ext4"), "{r}");
        assert!(r.contains("also mounted at /srv/data bind"), "{r}");
    }

    #[test]
    fn fs_spanning_included_and_excluded_disks_is_refused_by_name() {
        let v = view("lvm");
        let err = build(&v, &disks(&["d-bp1cccc"]), Path::new("/run/appsnap")).unwrap_err();
        let PlanError::SpansOutsideJob(spans) = &err else {
            panic!("unexpected {err:?}");
        };
        assert_eq!(spans.len(), 1);
        assert_eq!(spans[0].mount_point, PathBuf::from("/span"));
        assert_eq!(spans[0].inside, vec!["d-bp1cccc"]);
        assert_eq!(spans[0].outside, vec!["vde (serial bp1dddd)"]);
        let msg = err.to_string();
        assert!(
            msg.contains("/span") && msg.contains("d-bp1cccc") && msg.contains("vde"),
            "{msg}"
        );
        // With both disks in the job the same file system is fine; vdd/vde are found by sysfs serial.
        let p = build(
            &v,
            &disks(&["d-bp1cccc", "d-bp1dddd"]),
            Path::new("/run/appsnap"),
        )
        .unwrap();
        assert_eq!(mps(&p), vec!["/span"]);
        assert_eq!(p.entries[0].disks, vec!["d-bp1cccc", "d-bp1dddd"]);
        assert_eq!(p.disks[0].found_by, FoundBy::SysfsSerial);
    }

    /// When ECS gave no serial and the ID-without-`d-` fallback finds nothing
    /// either, the message says the disk has no serial, why, and what to do;
    /// a disk whose real serial is missing keeps the plain message.
    #[test]
    fn missing_disk_without_serial_says_why() {
        let v = view("lvm");
        let no_serial = DiskRequest::offline(DiskId::parse("d-bp1zzzz").unwrap());
        let msg = build(&v, &[no_serial], Path::new("/run/appsnap"))
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("no serial number")
                && msg.contains("2020-06-10")
                && msg.contains("I/O optimized")
                && msg.contains("bp1zzzz")
                && msg.contains("re-create the disk from a snapshot"),
            "{msg}"
        );
        let with_serial = DiskRequest {
            id: DiskId::parse("d-bp1zzzz").unwrap(),
            serial: Some("bp1zzzz".into()),
        };
        let msg = build(&v, &[with_serial], Path::new("/run/appsnap"))
            .unwrap_err()
            .to_string();
        assert!(!msg.contains("no serial number"), "{msg}");
    }

    #[test]
    fn read_only_skipped_missing_disk_refused_nvme_serial_trimmed() {
        let v = view("lvm");
        let p = build(&v, &disks(&["d-bp1eeee"]), Path::new("/run/appsnap")).unwrap();
        assert!(p.entries.is_empty());
        assert_eq!(p.skipped.len(), 1);
        assert!(p.skipped[0].reason.contains("read-only"));
        let err = build(&v, &disks(&["d-bp1zzzz"]), Path::new("/run/appsnap")).unwrap_err();
        assert!(matches!(err, PlanError::DiskNotFound { ref serial, .. } if serial == "bp1zzzz"));
        let p = build(&v, &disks(&["d-bp1nvme0000"]), Path::new("/run/appsnap")).unwrap();
        assert_eq!(mps(&p), vec!["/nvme"]);
        assert_eq!(p.disks[0].device, "nvme0n1");
        assert_eq!(p.disks[0].found_by, FoundBy::SysfsSerial);
        let p = build(&v, &disks(&["d-bp1nvme1111"]), Path::new("/run/appsnap")).unwrap();
        assert_eq!(mps(&p), vec!["/nvme1"]);
        assert!(
            matches!(&p.disks[0].found_by, FoundBy::ByIdLink(l) if l.ends_with("nvme-Alibaba_Cloud_Elastic_Block_Storage_bp1nvme1111"))
        );
    }

    #[test]
    fn warnings_old_kernel_other_freezer_journald_run_dir_and_root() {
        let mut v = view("lvm");
        v.journald_persistent = true;
        let p = build(
            &v,
            &disks(&["d-bp1gggg", "d-bp1root"]),
            Path::new("/var/lib/appsnap-run"),
        )
        .unwrap();
        let w = p.warnings.join("\n");
        assert!(w.contains("5.10.0-23-amd64 is older than 5.17"), "{w}");
        assert!(w.contains("qemu-ga, pid 123"), "{w}");
        assert!(w.contains("/var/log/journal is on /var/log/journal"), "{w}");
        assert!(
            w.contains("run_dir /var/lib/appsnap-run is on / (ext4)"),
            "{w}"
        );
        assert!(w.contains("root file system / is in the plan"), "{w}");
        // Root was found through its partition: vda1 is mounted, vda is the disk.
        assert_eq!(mps(&p), vec!["/var/log/journal", "/"]);
        assert_eq!(p.entries[1].devices, vec!["vda1", "vda"]);
        // On tmpfs, no run_dir warning.
        let p = build(&v, &disks(&["d-bp1gggg"]), Path::new("/run/appsnap")).unwrap();
        assert!(
            !p.warnings.iter().any(|w| w.contains("run_dir")),
            "{:?}",
            p.warnings
        );
    }

    #[test]
    fn btrfs_multi_device_and_subvolumes_dedup() {
        let v = view("btrfs");
        let p = build(
            &v,
            &disks(&["d-bp1six", "d-bp1seven", "d-bp1two"]),
            Path::new("/run/appsnap"),
        )
        .unwrap();
        assert_eq!(mps(&p), vec!["/srv/inner", "/srv"]);
        assert_eq!(p.entries[1].also_mounted_at, vec![PathBuf::from("/srv2")]);
        assert_eq!(p.entries[1].disks, vec!["d-bp1six", "d-bp1seven"]);
        assert_eq!(p.entries[1].devices, vec!["loop6", "loop7"]);
        let err = build(
            &v,
            &disks(&["d-bp1six", "d-bp1two"]),
            Path::new("/run/appsnap"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("/srv (btrfs)"), "{err}");
        assert!(err.to_string().contains("loop7"), "{err}");
    }

    #[test]
    fn targets_carry_identity_in_freeze_order() {
        let v = view("lvm");
        let p = build(
            &v,
            &disks(&["d-bp1aaaa", "d-bp1bbbb"]),
            Path::new("/run/appsnap"),
        )
        .unwrap();
        let t = p.targets();
        assert_eq!(t.len(), 2);
        assert_eq!(
            (t[1].mount_id, t[1].dev_major, t[1].dev_minor),
            (30, 252, 0)
        );
        assert_eq!(t[0].mount_point, PathBuf::from("/data/logs"));
    }
}
