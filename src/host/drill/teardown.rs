//! Undoing what a record names, in the reverse order of making it: unmount
//! and remove the mount points, deactivate and remove the clone VGs, remove
//! the partitions the drill added, remove the root, delete the record.
//! Everything is checked against the record's own bounds first (a mount point
//! must be a direct child of the root, a VG name must carry the private
//! prefix), and whatever is already gone is skipped, so it can run again.

use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use super::check;
use super::error::DrillError;
use super::lvm;
use super::probe;
use super::record::{self, DrillRecord};
use super::tools::{Run, Tools};
use super::types::Leftovers;

/// How long teardown may take in all (each tool also has its own timeout).
const TEARDOWN_TIME: Duration = Duration::from_secs(300);

/// True when `p` is `root/<one normal component>`.
fn directly_under(root: &Path, p: &Path) -> bool {
    let Ok(rest) = p.strip_prefix(root) else {
        return false;
    };
    let parts: Vec<Component<'_>> = rest.components().collect();
    matches!(parts[..], [Component::Normal(_)]) && root.is_absolute()
}

/// Refuses a record that names anything not the drill's.
pub fn vet(rec: &DrillRecord, record_path: &Path) -> Result<(), DrillError> {
    let foreign = |what: String, why| DrillError::Foreign {
        record: record_path.to_path_buf(),
        what,
        why,
    };
    if !rec.root.is_absolute() || rec.root.parent().is_none() {
        return Err(foreign(
            rec.root.display().to_string(),
            "the root is not an absolute path below /",
        ));
    }
    for mp in &rec.mount_points {
        if !directly_under(&rec.root, mp) {
            return Err(foreign(
                mp.display().to_string(),
                "mount point not directly under the drill's root",
            ));
        }
    }
    for vg in &rec.clone_vgs {
        if !vg.starts_with(lvm::PREFIX) || vg.len() == lvm::PREFIX.len() {
            return Err(foreign(
                format!("VG {vg}"),
                "VG name without the drill's private prefix",
            ));
        }
    }
    Ok(())
}

fn rmdir(p: &Path, done: &mut Leftovers, problems: &mut Vec<String>) {
    match std::fs::remove_dir(p) {
        Ok(()) => done.removed_dirs.push(p.to_path_buf()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => problems.push(format!("cannot remove {}: {e}", p.display())),
    }
}

/// Undoes what `rec` names; on success deletes the record at `record_path`.
/// Any problem leaves the record in place and is returned as
/// [`DrillError::Leftover`], one line per thing left.
pub fn undo(rec: &DrillRecord, record_path: &Path, tools: &Tools) -> Result<Leftovers, DrillError> {
    vet(rec, record_path)?;
    let deadline = Instant::now() + TEARDOWN_TIME;
    let mut done = Leftovers {
        record_found: true,
        ..Leftovers::default()
    };
    let mut problems = Vec::new();

    let mut busy_mount = false;
    for mp in rec.mount_points.iter().rev() {
        match check::is_mounted(mp) {
            Ok(false) => {}
            Ok(true) => match check::umount(tools, mp, deadline) {
                Ok(()) => done.unmounted.push(mp.clone()),
                Err(e) => {
                    busy_mount = true;
                    problems.push(format!("{} is still mounted (busy?): {e}", mp.display()));
                    continue;
                }
            },
            Err(e) => {
                busy_mount = true;
                problems.push(e.to_string());
                continue;
            }
        }
        rmdir(mp, &mut done, &mut problems);
    }

    if !rec.clone_vgs.is_empty() && !busy_mount {
        match &tools.lvm {
            None => problems.push(format!(
                "clone VGs {} need lvm, which is not installed",
                rec.clone_vgs.join(", ")
            )),
            Some(lvm_path) => {
                // Only devices still there: a detached disk has nothing left to remove.
                let devices: Vec<PathBuf> = rec
                    .lvm_devices
                    .iter()
                    .filter(|d| probe::is_block(d))
                    .cloned()
                    .collect();
                if !devices.is_empty() {
                    match lvm::vg_names(tools, lvm_path, &devices, deadline) {
                        Err(e) => problems.push(e.to_string()),
                        Ok(present) => {
                            for vg in rec.clone_vgs.iter().rev().filter(|v| present.contains(v)) {
                                match lvm::remove(tools, lvm_path, vg, &devices, deadline) {
                                    Ok(()) => done.removed_vgs.push(vg.clone()),
                                    Err(e) => problems.push(format!("clone VG {vg}: {e}")),
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    if !busy_mount && problems.is_empty() {
        for dev in rec.partitioned.iter().rev().filter(|d| probe::is_block(d)) {
            let name = probe::kernel_name(dev);
            if probe::kernel_partitions(&name).is_empty() {
                continue;
            }
            let run = Run::new("partx", &tools.partx).args(["-d"]).path_arg(dev);
            match run.check(tools, deadline) {
                Ok(_) => done.partitions_removed.push(dev.clone()),
                Err(e) => problems.push(e.to_string()),
            }
        }
    }

    if !busy_mount {
        rmdir(&rec.root, &mut done, &mut problems);
    }
    if problems.is_empty() {
        record::remove(record_path)?;
        Ok(done)
    } else {
        Err(DrillError::Leftover { problems })
    }
}

/// [`undo`] of the record at `path`, if there is one.
pub fn from_record(path: &Path, tools: &Tools) -> Result<Leftovers, DrillError> {
    match record::read(path)? {
        None => Ok(Leftovers::default()),
        Some(rec) => undo(&rec, path, tools),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_naming_foreign_things_is_refused() {
        let p = Path::new("/run/x/verify.json");
        let mut rec = DrillRecord::new(Path::new("/run/appsnap/verify/r1"));
        rec.mount_points = vec![PathBuf::from("/run/appsnap/verify/r1/d-1")];
        rec.clone_vgs = vec!["appsnap_verify_r1_0".into()];
        assert!(vet(&rec, p).is_ok());
        for bad in [
            "/var/lib/mysql",
            "/run/appsnap/verify/r1/../../../etc",
            "/run/appsnap/verify/r1/a/b",
            "/run/appsnap/verify/r1",
        ] {
            let mut r = rec.clone();
            r.mount_points = vec![PathBuf::from(bad)];
            assert!(
                matches!(vet(&r, p), Err(DrillError::Foreign { .. })),
                "{bad}"
            );
        }
        let mut r = rec.clone();
        r.clone_vgs = vec!["vg_live".into()];
        assert!(matches!(vet(&r, p), Err(DrillError::Foreign { .. })));
        r.clone_vgs = vec![lvm::PREFIX.into()];
        assert!(vet(&r, p).is_err());
        let mut r = rec;
        r.root = PathBuf::from("/");
        assert!(vet(&r, p).is_err());
    }
}
