//! Assembling the copies: probe each restored device, bring up its
//! partitions and clone VGs, check every file system and mount the good
//! ones under the drill's root. Every step that creates something is
//! recorded first; a failure tears down whatever was made.

use std::collections::BTreeMap;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::check;
use super::error::DrillError;
use super::lvm;
use super::probe;
use super::record::{self, DrillRecord};
use super::teardown;
use super::tools::{Run, Tools};
use super::types::{CopyFs, DrillLayout, FsCheck, FsType, Leftovers, RestoredDisk, Skipped};

/// How long the kernel gets to show a restored disk's partitions before the
/// drill adds them itself (no udev, or no partition parser), and after.
const PARTITIONS_SETTLE: Duration = Duration::from_secs(2);
const PARTITIONS_ADDED: Duration = Duration::from_secs(5);

/// The assembled copies. Tear them down with [`Assembly::teardown`]; if it
/// is dropped instead, the drop tears down as well (best effort, logged),
/// and after a crash `cleanup_from_record` does.
#[derive(Debug)]
pub struct Assembly {
    rec: DrillRecord,
    record_path: PathBuf,
    tools: Tools,
    filesystems: Vec<CopyFs>,
    skipped: Vec<Skipped>,
    torn_down: bool,
}

impl Assembly {
    /// Every file system found, checked, and (when it passed) mounted.
    pub fn filesystems(&self) -> &[CopyFs] {
        &self.filesystems
    }

    /// What the restored disks hold that is not checked (and why).
    pub fn skipped(&self) -> &[Skipped] {
        &self.skipped
    }

    /// The private directory the copies are mounted under.
    pub fn root(&self) -> &Path {
        &self.rec.root
    }

    /// Unmounts, deactivates and removes the clone VGs, removes the
    /// partitions the drill added and the directories, then deletes the
    /// record. A busy mount is reported ([`DrillError::Leftover`]) and the
    /// record kept, never lazily unmounted.
    pub fn teardown(mut self) -> Result<(), DrillError> {
        self.torn_down = true;
        teardown::undo(&self.rec, &self.record_path, &self.tools).map(|_| ())
    }
}

impl Drop for Assembly {
    fn drop(&mut self) {
        if self.torn_down {
            return;
        }
        if let Err(e) = teardown::undo(&self.rec, &self.record_path, &self.tools) {
            tracing::warn!(error = %e, record = %self.record_path.display(), "drill copies dropped without teardown; tearing down left things behind");
        }
    }
}

/// Undoes what a crashed drill's record names (see the module docs);
/// nothing to do when there is no record.
pub fn cleanup_from_record(record: &Path, tools: &Tools) -> Result<Leftovers, DrillError> {
    teardown::from_record(record, tools)
}

/// Assembles the restored disks' copies under `layout.root` (see the module
/// docs). On `Err`, everything already built has been torn down (or the
/// error says what was left).
pub fn assemble(
    disks: &[RestoredDisk],
    layout: &DrillLayout,
    tools: &Tools,
    deadline: Instant,
) -> Result<Assembly, DrillError> {
    let disks = validate(disks)?;
    if record::exists(&layout.record) {
        return Err(DrillError::RecordExists {
            path: layout.record.clone(),
        });
    }
    if std::fs::symlink_metadata(&layout.root).is_ok() {
        return Err(DrillError::RootExists {
            path: layout.root.clone(),
        });
    }
    if !layout.root.is_absolute() || layout.root.parent().is_none() {
        return Err(DrillError::Io {
            what: "drill root must be an absolute path below /:",
            path: layout.root.clone(),
            source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
        });
    }
    let mut b = Builder {
        rec: DrillRecord::new(&layout.root),
        record_path: layout.record.clone(),
        tools,
        deadline,
        found: Vec::new(),
        filesystems: Vec::new(),
        skipped: Vec::new(),
    };
    b.save()?;
    match b.build(&disks) {
        Ok(()) => Ok(Assembly {
            rec: b.rec,
            record_path: b.record_path,
            tools: tools.clone(),
            filesystems: b.filesystems,
            skipped: b.skipped,
            torn_down: false,
        }),
        Err(cause) => match teardown::undo(&b.rec, &b.record_path, tools) {
            Ok(_) => Err(cause),
            Err(t) => Err(DrillError::Aborted {
                cause: Box::new(cause),
                teardown: Box::new(t),
            }),
        },
    }
}

/// Disk IDs name directories: ECS's `d-…` alphabet only.
fn valid_disk_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// The disks with their devices resolved, each a block device, unused, once.
fn validate(disks: &[RestoredDisk]) -> Result<Vec<RestoredDisk>, DrillError> {
    let mut out: Vec<RestoredDisk> = Vec::new();
    for d in disks {
        let bad = |reason: String| DrillError::BadDisk {
            disk_id: d.disk_id.clone(),
            device: d.device.clone(),
            reason,
        };
        if !valid_disk_id(&d.disk_id) {
            return Err(bad(
                "the disk ID may hold only letters, digits, '-' and '_'".into(),
            ));
        }
        let dev = std::fs::canonicalize(&d.device).map_err(|e| bad(e.to_string()))?;
        if !probe::is_block(&dev) {
            return Err(bad(format!("{} is not a block device", dev.display())));
        }
        if let Some(o) = out
            .iter()
            .find(|o| o.device == dev || o.disk_id == d.disk_id)
        {
            return Err(bad(format!("same disk or device as {}", o.disk_id)));
        }
        probe::ensure_unused(&dev)?;
        out.push(RestoredDisk {
            device: dev,
            ..d.clone()
        });
    }
    Ok(out)
}

/// A file system found on a copy, not yet checked.
struct Found {
    disk: usize,
    device: PathBuf,
    /// Appended to the disk ID to name its mount point: "", "-p1", "-<lv>".
    suffix: String,
    fstype: FsType,
    uuid: String,
    lvm: Option<(String, String)>,
}

struct Builder<'a> {
    rec: DrillRecord,
    record_path: PathBuf,
    tools: &'a Tools,
    deadline: Instant,
    found: Vec<Found>,
    filesystems: Vec<CopyFs>,
    skipped: Vec<Skipped>,
}

impl Builder<'_> {
    fn save(&self) -> Result<(), DrillError> {
        record::write(&self.record_path, &self.rec)
    }

    fn build(&mut self, disks: &[RestoredDisk]) -> Result<(), DrillError> {
        self.make_root()?;
        let mut pvs: Vec<(usize, PathBuf)> = Vec::new();
        for (i, d) in disks.iter().enumerate() {
            self.probe_disk(disks, i, &d.device.clone(), &mut pvs)?;
        }
        if !pvs.is_empty() {
            self.clone_vgs(disks, &pvs)?;
        }
        self.check_all(disks)
    }

    fn make_root(&self) -> Result<(), DrillError> {
        let root = &self.rec.root;
        let io = |what| {
            move |source| DrillError::Io {
                what,
                path: root.clone(),
                source,
            }
        };
        // Traverse-only (0711), not 0700: a verify script starts the
        // database as its own user (mysql, postgres), who must reach the
        // copy; nobody but root may list or create anything here. The copies
        // keep their own permissions, the live file systems' own.
        if let Some(parent) = root.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o711)
                .create(parent)
                .map_err(io("create the parent of"))?;
        }
        std::fs::DirBuilder::new()
            .mode(0o711)
            .create(root)
            .map_err(io("create"))?;
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o711))
            .map_err(io("chmod 0711"))
    }

    /// Sorts what one restored device holds into file systems, PVs and skips.
    fn probe_disk(
        &mut self,
        disks: &[RestoredDisk],
        i: usize,
        dev: &Path,
        pvs: &mut Vec<(usize, PathBuf)>,
    ) -> Result<(), DrillError> {
        let tags = probe::blkid(self.tools, dev, self.deadline)?;
        if tags.contains_key("PTTYPE") && !tags.contains_key("TYPE") {
            let numbers = probe::table_numbers(self.tools, dev, self.deadline)?;
            let parts = self.partitions(dev, &numbers)?;
            for n in numbers {
                if let Some(p) = parts.get(&n) {
                    let tags = probe::blkid(self.tools, p, self.deadline)?;
                    self.sort(disks, i, p, format!("-p{n}"), &tags, None, pvs);
                }
            }
        } else {
            self.sort(disks, i, dev, String::new(), &tags, None, pvs);
        }
        Ok(())
    }

    /// The kernel's partitions of a restored device; if the kernel has not
    /// shown them (no partition parser, no udev), asks it to (`partx -a`,
    /// that device only), recorded first so teardown removes them.
    fn partitions(
        &mut self,
        dev: &Path,
        numbers: &[u32],
    ) -> Result<BTreeMap<u32, PathBuf>, DrillError> {
        let name = probe::kernel_name(dev);
        if let Ok(p) = probe::wait_partitions(&name, numbers, PARTITIONS_SETTLE) {
            return Ok(p);
        }
        self.rec.partitioned.push(dev.to_path_buf());
        self.save()?;
        Run::new("partx", &self.tools.partx)
            .args(["-a"])
            .path_arg(dev)
            .check(self.tools, self.deadline)?;
        probe::wait_partitions(&name, numbers, PARTITIONS_ADDED).map_err(|number| {
            DrillError::PartitionMissing {
                device: dev.to_path_buf(),
                number,
                secs: PARTITIONS_ADDED.as_secs(),
            }
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn sort(
        &mut self,
        disks: &[RestoredDisk],
        disk: usize,
        device: &Path,
        suffix: String,
        tags: &BTreeMap<String, String>,
        lvm: Option<(String, String)>,
        pvs: &mut Vec<(usize, PathBuf)>,
    ) {
        let kind = tags.get("TYPE").map(String::as_str);
        match kind.map(|k| (k, FsType::from_blkid(k))) {
            Some((_, Some(fstype))) => self.found.push(Found {
                disk,
                device: device.to_path_buf(),
                suffix,
                fstype,
                uuid: tags.get("UUID").cloned().unwrap_or_default(),
                lvm,
            }),
            Some(("LVM2_member", None)) if lvm.is_none() => pvs.push((disk, device.to_path_buf())),
            other => self.skipped.push(Skipped {
                disk_id: disks[disk].disk_id.clone(),
                device: device.to_path_buf(),
                why: match other {
                    Some((k, _)) => format!("holds {k}, which a drill does not check"),
                    None => "holds nothing blkid recognises".into(),
                },
            }),
        }
    }

    /// Renames each complete VG on the clone's PVs into a private VG and
    /// activates it; every LVM command sees only the clone's devices.
    fn clone_vgs(
        &mut self,
        disks: &[RestoredDisk],
        pvs: &[(usize, PathBuf)],
    ) -> Result<(), DrillError> {
        let skip = |why: String, this: &mut Self| {
            for (d, p) in pvs {
                this.skipped.push(Skipped {
                    disk_id: disks[*d].disk_id.clone(),
                    device: p.clone(),
                    why: why.clone(),
                });
            }
        };
        let Some(lvm_path) = self.tools.lvm.clone() else {
            skip("an LVM physical volume; lvm2 is not installed".into(), self);
            return Ok(());
        };
        let devices: Vec<PathBuf> = pvs.iter().map(|(_, p)| p.clone()).collect();
        self.rec.lvm_devices = devices.clone();
        self.save()?;
        let seen = lvm::pvs(self.tools, &lvm_path, &devices, self.deadline)?;
        let disk_of = |p: &Path| pvs.iter().find(|(_, d)| d == p).map(|(i, _)| *i);
        for pv in seen.iter().filter(|p| p.vg_uuid.is_empty()) {
            if let Some(d) = disk_of(&pv.device) {
                self.skipped.push(Skipped {
                    disk_id: disks[d].disk_id.clone(),
                    device: pv.device.clone(),
                    why: "an LVM physical volume in no VG".into(),
                });
            }
        }
        let short = short_id(&self.rec.root);
        for (n, (_, group)) in lvm::by_vg(&seen).into_iter().enumerate() {
            let members: Vec<PathBuf> = group.iter().map(|p| p.device.clone()).collect();
            let mut first_disk = members
                .iter()
                .filter_map(|m| disk_of(m))
                .collect::<Vec<_>>();
            first_disk.sort_unstable();
            let Some(&disk) = first_disk.first() else {
                continue;
            };
            let total = group.first().map(|p| p.pv_count).unwrap_or(0);
            if members.len() < total {
                for m in &members {
                    self.skipped.push(Skipped {
                        disk_id: disks[disk_of(m).unwrap_or(disk)].disk_id.clone(),
                        device: m.clone(),
                        why: format!(
                            "PV of VG {} which has {total} PVs; only {} were restored",
                            group[0].vg_name,
                            members.len()
                        ),
                    });
                }
                continue;
            }
            let name = format!("{}{short}_{n}", lvm::PREFIX);
            self.rec.clone_vgs.push(name.clone());
            self.save()?;
            lvm::import_clone(self.tools, &lvm_path, &name, &members, self.deadline)?;
            // vgimportclone may number the name if it were taken; keep the real one.
            let now = lvm::pvs(self.tools, &lvm_path, &members, self.deadline)?;
            let actual = now
                .first()
                .map(|p| p.vg_name.clone())
                .unwrap_or_else(|| name.clone());
            if actual != name {
                if !actual.starts_with(lvm::PREFIX) {
                    return Err(DrillError::Parse {
                        tool: "lvm vgimportclone",
                        detail: format!("the clone VG is named {actual}, not {name}"),
                    });
                }
                self.rec.clone_vgs.push(actual.clone());
                self.save()?;
            }
            lvm::activate(self.tools, &lvm_path, &actual, &devices, self.deadline)?;
            for (lv, path) in lvm::lvs(self.tools, &lvm_path, &actual, &devices, self.deadline)? {
                let tags = probe::blkid(self.tools, &path, self.deadline)?;
                let lvm = Some((actual.clone(), lv.clone()));
                let mut none = Vec::new();
                self.sort(disks, disk, &path, format!("-{lv}"), &tags, lvm, &mut none);
            }
        }
        Ok(())
    }

    fn check_all(&mut self, disks: &[RestoredDisk]) -> Result<(), DrillError> {
        let found = std::mem::take(&mut self.found);
        for f in &found {
            let d = &disks[f.disk];
            let shared = f.fstype == FsType::Btrfs
                && found
                    .iter()
                    .filter(|o| o.fstype == FsType::Btrfs && o.uuid == f.uuid)
                    .count()
                    > 1;
            let (check, mount_point) = if shared {
                let why = "a btrfs spanning several disks; a drill checks single-device btrfs only"
                    .into();
                (FsCheck::NotRun { why }, None)
            } else {
                let mp = self.rec.root.join(format!("{}{}", d.disk_id, f.suffix));
                self.check_and_mount(f, &mp)?
            };
            self.filesystems.push(CopyFs {
                disk_id: d.disk_id.clone(),
                source_disk_id: d.source_disk_id.clone(),
                device: f.device.clone(),
                fstype: f.fstype,
                uuid: f.uuid.clone(),
                lvm: f.lvm.clone(),
                mount_point,
                check,
            });
        }
        Ok(())
    }

    /// Checks one copy and mounts it at `mp` when the check passed. A copy
    /// whose log or orphan list only a mount processes is mounted once
    /// first ([`check::replay_first`]); a refused mount is its verdict.
    fn check_and_mount(
        &mut self,
        f: &Found,
        mp: &Path,
    ) -> Result<(FsCheck, Option<PathBuf>), DrillError> {
        let (tools, deadline) = (self.tools, self.deadline);
        let replay = check::replay_first(f.fstype, &f.device)?;
        if replay {
            self.add_mount_point(mp)?;
            let v = check::mount(tools, f.fstype, &f.device, mp, deadline)?;
            if v != FsCheck::Passed {
                let _ = std::fs::remove_dir(mp);
                return Ok((v, None));
            }
            check::umount(tools, mp, deadline)?;
        }
        let v = check::offline(tools, f.fstype, &f.device, deadline)?;
        if v != FsCheck::Passed {
            if replay {
                let _ = std::fs::remove_dir(mp);
            }
            return Ok((v, None));
        }
        if !replay {
            self.add_mount_point(mp)?;
        }
        let v = check::mount(tools, f.fstype, &f.device, mp, deadline)?;
        if v != FsCheck::Passed {
            let _ = std::fs::remove_dir(mp);
            return Ok((v, None));
        }
        Ok((FsCheck::Passed, Some(mp.to_path_buf())))
    }

    /// Records the mount point, then creates it (0700).
    fn add_mount_point(&mut self, mp: &Path) -> Result<(), DrillError> {
        self.rec.mount_points.push(mp.to_path_buf());
        self.save()?;
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(mp)
            .map_err(|source| DrillError::Io {
                what: "create mount point",
                path: mp.to_path_buf(),
                source,
            })
    }
}

/// Up to 8 lower-case letters and digits from the end of the root's name
/// (the random part of a run ID), so clone VG names are short and unique per run.
fn short_id(root: &Path) -> String {
    let name = root
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    let alnum: Vec<char> = name.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    let tail: String = alnum[alnum.len().saturating_sub(8)..].iter().collect();
    if tail.is_empty() {
        "run".into()
    } else {
        tail
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_ids_and_disk_ids() {
        assert_eq!(
            short_id(Path::new("/run/appsnap/verify/20261202T023000Z-9f3a0c1e")),
            "9f3a0c1e"
        );
        assert_eq!(short_id(Path::new("/run/x/a-B")), "ab");
        assert_eq!(short_id(Path::new("/")), "run");
        assert!(valid_disk_id("d-bp1abc_2"));
        assert!(!valid_disk_id("d/../x") && !valid_disk_id("") && !valid_disk_id(".."));
    }
}
