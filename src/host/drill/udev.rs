//! Keeping udev's LVM event activation off a drill's disks. A restored disk
//! holding a PV of a live VG is a duplicate PV: when it appears, Debian's
//! `69-lvm.rules` runs `pvscan --cache` and may *activate an inactive LV of
//! the live VG on the copy* (seen in the VM lane: `vmvg/spare` mapped onto the
//! restored disk, then left pointing at a detached disk). So before the
//! disks are attached, a runtime rule (`/run/udev/rules.d`, after
//! `60-persistent-storage` has set `ID_SERIAL` and `ID_FS_TYPE`, before
//! `69-lvm`) flags their PVs the way device-mapper flags its own private
//! devices, and `69-lvm.rules` skips them. Removed once they are detached.
//! Where udev does not run (`/run/udev/control` absent) there is nothing to
//! guard against and nothing is written.

use std::path::{Path, PathBuf};
use std::time::Instant;

use super::error::DrillError;
use super::tools::{Run, Tools};

/// Where udev reads runtime rules.
pub const RUNTIME_RULES_DIR: &str = "/run/udev/rules.d";

/// The rules text for `serials` (each as udev's `ID_SERIAL` and
/// `ID_SERIAL_SHORT`: NVMe's `ID_SERIAL` is `<model>_<serial>`).
pub fn rules_text(serials: &[String]) -> String {
    let mut out = String::from(
        "# appsnap restore drill: udev's LVM activation keeps off these restored disks\n",
    );
    for s in serials {
        for key in ["ID_SERIAL", "ID_SERIAL_SHORT"] {
            out.push_str(&format!(
                "SUBSYSTEM==\"block\", ENV{{ID_FS_TYPE}}==\"LVM2_member\", ENV{{{key}}}==\"{s}\", ENV{{DM_UDEV_DISABLE_OTHER_RULES_FLAG}}=\"1\"\n"
            ));
        }
    }
    out
}

/// Whether a serial is safe inside a udev match (ECS serials are
/// alphanumeric; anything else is refused rather than quoted).
fn plain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The rule file of a drill run.
pub fn rule_path(rules_dir: &Path, run: &str) -> PathBuf {
    rules_dir.join(format!("65-appsnap-verify-{run}.rules"))
}

/// Writes the guard for `serials` at `path` and makes udev read it; `false`
/// when udev is not running here (nothing written).
pub fn guard(
    tools: &Tools,
    path: &Path,
    serials: &[String],
    deadline: Instant,
) -> Result<bool, DrillError> {
    if !udev_running() {
        return Ok(false);
    }
    if let Some(bad) = serials.iter().find(|s| !plain(s)) {
        return Err(DrillError::Io {
            what: "write a udev rule for serial",
            path: PathBuf::from(bad),
            source: std::io::Error::other("not a plain serial"),
        });
    }
    let io = |what| {
        move |source| DrillError::Io {
            what,
            path: path.to_path_buf(),
            source,
        }
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io("create the directory of"))?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, rules_text(serials)).map_err(io("write"))?;
    std::fs::rename(&tmp, path).map_err(io("rename into place"))?;
    reload(tools, deadline);
    Ok(true)
}

/// Removes the guard (if there) and makes udev forget it.
pub fn unguard(tools: &Tools, path: &Path, deadline: Instant) -> Result<(), DrillError> {
    match std::fs::remove_file(path) {
        Ok(()) => {
            reload(tools, deadline);
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(DrillError::Io {
            what: "remove",
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn udev_running() -> bool {
    Path::new("/run/udev/control").exists()
}

/// `udevadm control --reload`; best effort (udev also notices new rule
/// files on its own, just later).
fn reload(tools: &Tools, deadline: Instant) {
    if let Some(udevadm) = &tools.udevadm {
        let _ = Run::new("udevadm", udevadm)
            .args(["control", "--reload"])
            .output(tools, deadline);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_serial_is_guarded_under_both_names_and_only_lvm_members() {
        let text = rules_text(&["bp1abc".into(), "bp1def".into()]);
        let rules: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(rules.len(), 4, "{text}");
        assert!(rules
            .iter()
            .all(|r| r.contains("ENV{ID_FS_TYPE}==\"LVM2_member\"")
                && r.ends_with("ENV{DM_UDEV_DISABLE_OTHER_RULES_FLAG}=\"1\"")));
        assert!(rules[0].contains("ENV{ID_SERIAL}==\"bp1abc\""));
        assert!(rules[1].contains("ENV{ID_SERIAL_SHORT}==\"bp1abc\""));
        assert!(
            rule_path(Path::new("/run/udev/rules.d"), "r1").ends_with("65-appsnap-verify-r1.rules")
        );
    }

    #[test]
    fn a_serial_that_could_change_a_rule_is_refused() {
        assert!(plain("bp1abcDEF-0_9"));
        assert!(!plain("x\", RUN+=\"/bin/sh"));
        assert!(!plain(""));
    }
}
