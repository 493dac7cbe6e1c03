//! LVM on the restored disks. A clone's PVs carry the live PVs' UUIDs, so
//! every LVM command of the drill runs with a configuration that accepts the
//! clone's devices and rejects everything else (`filter` and `global_filter`,
//! the system devices file off): LVM never sees the live PVs next to their
//! duplicates, so it can never pick a clone for the live VG, and nothing the
//! drill runs can change a live VG. `vgimportclone` then gives the copy new
//! PV/VG UUIDs and a private name ([`PREFIX`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::error::DrillError;
use super::tools::{Run, Tools};

/// Every clone VG's name starts with this; teardown refuses any other name.
pub const PREFIX: &str = "appsnap_verify_";

/// The `--config` string that shows LVM only `devices`. Paths with a
/// character that cannot sit in an LVM filter string are refused.
pub fn restriction(devices: &[PathBuf]) -> Result<String, DrillError> {
    let mut accept = Vec::new();
    for d in devices {
        let s = d.to_str().unwrap_or("");
        if s.is_empty() || s.contains(['|', '"', '\\', '\n']) {
            return Err(DrillError::Parse {
                tool: "lvm",
                detail: format!("device path {d:?} cannot be named in an LVM filter"),
            });
        }
        accept.push(format!("\"a|^{}$|\"", regex_escape(s)));
    }
    accept.push("\"r|.*|\"".to_string());
    let list = accept.join(", ");
    Ok(format!(
        "devices {{ use_devicesfile=0 filter=[ {list} ] global_filter=[ {list} ] }}"
    ))
}

fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "^$.*+?()[]{}".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// `lvm <command> --config <restriction to devices> …`.
fn restricted<'a>(
    lvm: &'a Path,
    command: &str,
    devices: &[PathBuf],
) -> Result<Run<'a>, DrillError> {
    Ok(Run::new("lvm", lvm).args([
        command.to_string(),
        "--config".to_string(),
        restriction(devices)?,
    ]))
}

/// A PV as the restricted `pvs` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pv {
    /// Its device.
    pub device: PathBuf,
    /// Its VG's name (empty for an orphan PV).
    pub vg_name: String,
    /// Its VG's UUID.
    pub vg_uuid: String,
    /// How many PVs the VG has in all.
    pub pv_count: usize,
}

/// The clone's PVs, seen only through the restriction.
pub fn pvs(
    tools: &Tools,
    lvm: &Path,
    devices: &[PathBuf],
    deadline: Instant,
) -> Result<Vec<Pv>, DrillError> {
    let run = restricted(lvm, "pvs", devices)?.args([
        "--noheadings",
        "--separator",
        "|",
        "-o",
        "pv_name,vg_name,vg_uuid,pv_count",
    ]);
    let out = run.check(tools, deadline)?;
    parse_pvs(&out.stdout)
}

/// Parses `pvs --noheadings --separator '|' -o pv_name,vg_name,vg_uuid,pv_count`.
pub fn parse_pvs(text: &str) -> Result<Vec<Pv>, DrillError> {
    let mut out = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let f: Vec<&str> = line.split('|').map(str::trim).collect();
        let [name, vg, uuid, count] = f[..] else {
            return Err(DrillError::Parse {
                tool: "lvm pvs",
                detail: format!("line {line:?}"),
            });
        };
        out.push(Pv {
            device: std::fs::canonicalize(name).unwrap_or_else(|_| PathBuf::from(name)),
            vg_name: vg.to_string(),
            vg_uuid: uuid.to_string(),
            pv_count: count.parse().unwrap_or(0),
        });
    }
    Ok(out)
}

/// Groups PVs by VG UUID (orphans left out).
pub fn by_vg(pvs: &[Pv]) -> BTreeMap<String, Vec<Pv>> {
    let mut out: BTreeMap<String, Vec<Pv>> = BTreeMap::new();
    for p in pvs.iter().filter(|p| !p.vg_uuid.is_empty()) {
        out.entry(p.vg_uuid.clone()).or_default().push(p.clone());
    }
    out
}

/// `vgimportclone --basevgname <name>` of one VG's clone PVs, seeing only them.
pub fn import_clone(
    tools: &Tools,
    lvm: &Path,
    name: &str,
    pvs: &[PathBuf],
    deadline: Instant,
) -> Result<(), DrillError> {
    let mut run = restricted(lvm, "vgimportclone", pvs)?.args(["--basevgname", name]);
    for p in pvs {
        run = run.path_arg(p);
    }
    run.check(tools, deadline).map(|_| ())
}

/// `vgchange -ay <vg>`, seeing only the clone's devices.
pub fn activate(
    tools: &Tools,
    lvm: &Path,
    vg: &str,
    devices: &[PathBuf],
    deadline: Instant,
) -> Result<(), DrillError> {
    restricted(lvm, "vgchange", devices)?
        .args(["-ay", vg])
        .check(tools, deadline)
        .map(|_| ())
}

/// The LVs of a clone VG that have a device path: (name, path).
pub fn lvs(
    tools: &Tools,
    lvm: &Path,
    vg: &str,
    devices: &[PathBuf],
    deadline: Instant,
) -> Result<Vec<(String, PathBuf)>, DrillError> {
    let out = restricted(lvm, "lvs", devices)?
        .args([
            "--noheadings",
            "--separator",
            "|",
            "-o",
            "lv_name,lv_path",
            vg,
        ])
        .check(tools, deadline)?;
    Ok(out
        .stdout
        .lines()
        .filter_map(|l| l.trim().split_once('|'))
        .filter(|(_, p)| !p.trim().is_empty())
        .map(|(n, p)| (n.trim().to_string(), PathBuf::from(p.trim())))
        .collect())
}

/// The VG names the restricted view shows.
pub fn vg_names(
    tools: &Tools,
    lvm: &Path,
    devices: &[PathBuf],
    deadline: Instant,
) -> Result<Vec<String>, DrillError> {
    let out = restricted(lvm, "vgs", devices)?
        .args(["--noheadings", "-o", "vg_name"])
        .check(tools, deadline)?;
    Ok(out.stdout.split_whitespace().map(str::to_string).collect())
}

/// `vgchange -an` then `vgremove -f` of a clone VG, seeing only the clone's devices.
pub fn remove(
    tools: &Tools,
    lvm: &Path,
    vg: &str,
    devices: &[PathBuf],
    deadline: Instant,
) -> Result<(), DrillError> {
    restricted(lvm, "vgchange", devices)?
        .args(["-an", vg])
        .check(tools, deadline)?;
    restricted(lvm, "vgremove", devices)?
        .args(["-f", vg])
        .check(tools, deadline)
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restriction_accepts_only_the_clone_devices() {
        let cfg =
            restriction(&[PathBuf::from("/dev/vdc1"), PathBuf::from("/dev/nvme2n1")]).unwrap();
        assert_eq!(
            cfg,
            "devices { use_devicesfile=0 filter=[ \"a|^/dev/vdc1$|\", \"a|^/dev/nvme2n1$|\", \"r|.*|\" ] \
             global_filter=[ \"a|^/dev/vdc1$|\", \"a|^/dev/nvme2n1$|\", \"r|.*|\" ] }"
        );
        assert!(restriction(&[PathBuf::from("/dev/x|y")]).is_err());
        assert!(restriction(&[PathBuf::from("/dev/mapper/a.b")])
            .unwrap()
            .contains("a\\.b"));
    }

    #[test]
    fn pvs_lines_group_by_vg() {
        let pvs = parse_pvs(
            "  /dev/nonexist1|data|U1|2\n  /dev/nonexist2|data|U1|2\n /dev/nonexist3|||0\n",
        )
        .unwrap();
        let groups = by_vg(&pvs);
        assert_eq!(groups.len(), 1);
        assert_eq!(groups["U1"].len(), 2);
        assert_eq!(groups["U1"][0].pv_count, 2);
        assert!(parse_pvs("/dev/x|y\n").is_err());
    }
}
