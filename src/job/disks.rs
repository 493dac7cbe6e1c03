//! Which of the instance's disks a job would snapshot, and why any of its
//! disks cannot be: shared by `appsnap check` and the job's own preflight, so
//! both refuse for the same reasons, before anything is frozen.

use crate::cloud::TAG_VERIFY_GROUP;
use std::fmt;

use super::outcome::Outcome;
use crate::cloud::ecs::{Disk, REGIONAL_ESSD_CATEGORY, SUPPORTED_CATEGORIES};
use crate::policy::types::{DiskId, DiskSelection};

/// One reason a job's disk set is not usable (or worth a warning).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskProblem {
    /// The disk concerned, if the problem is about one disk.
    pub disk: Option<String>,
    /// Operator-facing reason.
    pub reason: String,
}

impl fmt::Display for DiskProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.disk {
            Some(d) => write!(f, "disk {d}: {}", self.reason),
            None => f.write_str(&self.reason),
        }
    }
}

/// The disks a job would put in its group, plus harmless oddities.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    /// Disks for `DiskId.N`, in the order DescribeDisks listed them.
    pub disks: Vec<Disk>,
    /// Things worth saying that do not stop the job (e.g. an excluded disk that is not attached).
    pub warnings: Vec<DiskProblem>,
    /// Disks skipped because `disks = "all"` only takes supported ones.
    pub skipped: Vec<DiskProblem>,
    /// Selected disks ECS reports without a serial number: fine while the
    /// guest shows their ID without `d-`, the reason if it does not (`check`
    /// prints these; a run's plan error repeats the reason when it matters).
    pub notes: Vec<DiskProblem>,
}

/// Why a disk without a serial number may not be found on this machine, and what to do.
pub const NO_SERIAL_REASON: &str = "ECS reports no serial number for it (DescribeDisks SerialNumber is empty: disks created before 2020-06-10 and disks of instances that are not I/O optimized have none)";

/// Why a disk cannot be in a snapshot group, if it cannot.
pub fn unsupported_reason(d: &Disk) -> Option<String> {
    if d.is_multi_attach() {
        return Some("multi-attach disks cannot be in a snapshot group".into());
    }
    if !d.supports_snapshot_group() {
        return Some(format!(
            "category {} does not support snapshot groups (supported: {})",
            if d.category.is_empty() {
                "unknown"
            } else {
                &d.category
            },
            SUPPORTED_CATEGORIES.join(", ")
        ));
    }
    None
}

/// ECS groups Regional ESSDs only with each other
/// (`InvalidDisk.DiskCategoryInconsistent`): a selection with both kinds is
/// refused before anything is frozen, naming both sides.
fn mixed_regional(disks: &[Disk], selection: &DiskSelection) -> Option<DiskProblem> {
    let (regional, zonal): (Vec<&Disk>, Vec<&Disk>) = disks
        .iter()
        .partition(|d| d.category == REGIONAL_ESSD_CATEGORY);
    if regional.is_empty() || zonal.is_empty() {
        return None;
    }
    let list = |ds: &[&Disk]| {
        ds.iter()
            .map(|d| format!("{} ({})", d.disk_id, d.category))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let fix = match selection {
        DiskSelection::List(_) => "split them into two jobs",
        DiskSelection::All { .. } => {
            "split them into two jobs, or leave one kind out with exclude_disks"
        }
    };
    Some(DiskProblem {
        disk: None,
        reason: format!(
            "Regional ESSD disks ({}) can only be in a snapshot group with other Regional ESSDs ({REGIONAL_ESSD_CATEGORY}), but this job also selects {}; ECS refuses the mix (InvalidDisk.DiskCategoryInconsistent): {fix}",
            list(&regional),
            list(&zonal)
        ),
    })
}

/// The vendor exit code for a refused disk set, the same for `check` and a
/// run: `disks = "all"` with nothing usable is "no supported disks" (3),
/// anything else is a condition not met (1).
pub fn refusal_outcome(selection: &DiskSelection, problems: &[DiskProblem]) -> Outcome {
    let none_usable = matches!(selection, DiskSelection::All { .. })
        && problems
            .iter()
            .any(|p| p.disk.is_none() && p.reason.starts_with("no disk"));
    if none_usable {
        Outcome::NoDisksOrPermission
    } else {
        Outcome::ConditionsNotMet
    }
}

/// Resolves `selection` against `instance_disks` (DescribeDisks for this
/// instance). Errors list every problem, one per disk.
pub fn select_disks(
    selection: &DiskSelection,
    instance_id: &str,
    instance_disks: &[Disk],
    max_disks: u32,
) -> Result<Selection, Vec<DiskProblem>> {
    let find = |id: &DiskId| instance_disks.iter().find(|d| d.disk_id == id.as_str());
    let mut problems = Vec::new();
    let mut out = Selection {
        disks: Vec::new(),
        warnings: Vec::new(),
        skipped: Vec::new(),
        notes: Vec::new(),
    };
    match selection {
        DiskSelection::List(ids) => {
            for id in ids {
                match find(id) {
                    None => problems.push(DiskProblem {
                        disk: Some(id.to_string()),
                        reason: format!(
                            "not attached to instance {instance_id} (or does not exist)"
                        ),
                    }),
                    Some(d) => match unsupported_reason(d) {
                        Some(reason) => problems.push(DiskProblem {
                            disk: Some(id.to_string()),
                            reason,
                        }),
                        None => out.disks.push(d.clone()),
                    },
                }
            }
        }
        DiskSelection::All { exclude } => {
            for id in exclude {
                if find(id).is_none() {
                    out.warnings.push(DiskProblem {
                        disk: Some(id.to_string()),
                        reason: format!("excluded, but not attached to instance {instance_id}"),
                    });
                }
            }
            for d in instance_disks {
                if exclude.iter().any(|e| e.as_str() == d.disk_id) {
                    continue;
                }
                // A restore drill's copy is attached here for minutes; it is
                // never part of the instance's own disks.
                if d.tag(TAG_VERIFY_GROUP).is_some() {
                    out.skipped.push(DiskProblem {
                        disk: Some(d.disk_id.clone()),
                        reason: format!(
                            "a restore drill's temporary copy ({TAG_VERIFY_GROUP} tag)"
                        ),
                    });
                    continue;
                }
                match unsupported_reason(d) {
                    Some(reason) => out.skipped.push(DiskProblem {
                        disk: Some(d.disk_id.clone()),
                        reason,
                    }),
                    None => out.disks.push(d.clone()),
                }
            }
            if out.disks.is_empty() {
                problems.push(DiskProblem {
                    disk: None,
                    reason: format!(
                        "no disk of instance {instance_id} supports snapshot groups (after exclusions)"
                    ),
                });
            }
        }
    }
    if let Some(p) = mixed_regional(&out.disks, selection) {
        problems.push(p);
    }
    if out.disks.len() > max_disks as usize {
        problems.push(DiskProblem {
            disk: None,
            reason: format!(
                "{} disks selected, more than cloud.max_disks_per_group = {max_disks} (your own cap; raise it, up to 128, or split the job)",
                out.disks.len()
            ),
        });
    }
    for d in &out.disks {
        if d.serial_number.trim().is_empty() {
            out.notes.push(DiskProblem {
                disk: Some(d.disk_id.clone()),
                reason: format!(
                    "{NO_SERIAL_REASON}; appsnap looks for its device by the ID without \"d-\" ({}) instead. If no device shows that serial, appsnap cannot tell which device it is: re-create the disk from a snapshot (new disks get a serial number) or exclude it",
                    d.disk_id.trim_start_matches("d-")
                ),
            });
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk(id: &str, category: &str, multi: bool) -> Disk {
        Disk {
            disk_id: id.into(),
            serial_number: id.trim_start_matches("d-").into(),
            category: category.into(),
            multi_attach: if multi { "Enabled" } else { "Disabled" }.into(),
            ..Default::default()
        }
    }

    fn id(s: &str) -> DiskId {
        DiskId::parse(s).unwrap()
    }

    fn instance() -> Vec<Disk> {
        vec![
            disk("d-sys", "cloud_essd", false),
            disk("d-data", "cloud_auto", false),
            disk("d-old", "cloud_efficiency", false),
            disk("d-shared", "cloud_essd", true),
        ]
    }

    #[test]
    fn list_reports_every_bad_disk() {
        let sel = DiskSelection::List(vec![
            id("d-data"),
            id("d-old"),
            id("d-shared"),
            id("d-gone"),
        ]);
        let problems = select_disks(&sel, "i-1", &instance(), 16).unwrap_err();
        let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert!(lines[0].starts_with("disk d-old: category cloud_efficiency"));
        assert!(lines[1].starts_with("disk d-shared: multi-attach"));
        assert!(lines[2].starts_with("disk d-gone: not attached to instance i-1"));
        let ok = select_disks(
            &DiskSelection::List(vec![id("d-data")]),
            "i-1",
            &instance(),
            16,
        )
        .unwrap();
        assert_eq!(ok.disks.len(), 1);
    }

    /// Regional ESSD is accepted, but ECS refuses a group that mixes it with
    /// zonal ESSDs (`InvalidDisk.DiskCategoryInconsistent`): refuse first, and say why.
    #[test]
    fn regional_essd_is_grouped_only_with_its_own_kind() {
        let disks = vec![
            disk("d-sys", "cloud_essd", false),
            disk("d-reg1", "cloud_regional_disk_auto", false),
            disk("d-reg2", "cloud_regional_disk_auto", false),
        ];
        let only_regional = DiskSelection::List(vec![id("d-reg1"), id("d-reg2")]);
        let s = select_disks(&only_regional, "i-1", &disks, 128).unwrap();
        assert_eq!(s.disks.len(), 2);
        let mixed = DiskSelection::List(vec![id("d-sys"), id("d-reg1")]);
        let p = select_disks(&mixed, "i-1", &disks, 128).unwrap_err();
        assert_eq!(p.len(), 1, "{p:?}");
        let msg = p[0].to_string();
        assert!(
            msg.contains("Regional ESSD")
                && msg.contains("cloud_regional_disk_auto")
                && msg.contains("d-reg1")
                && msg.contains("d-sys"),
            "{msg}"
        );
        let all = DiskSelection::All { exclude: vec![] };
        assert!(select_disks(&all, "i-1", &disks, 128).is_err());
        let all_but_sys = DiskSelection::All {
            exclude: vec![id("d-sys")],
        };
        assert_eq!(
            select_disks(&all_but_sys, "i-1", &disks, 128)
                .unwrap()
                .disks
                .len(),
            2
        );
    }

    /// A disk without a serial number (created before 2020-06-10, or on a
    /// non-I/O-optimized instance) gets a warning that says so and what to do.
    #[test]
    fn disks_without_a_serial_number_are_named() {
        let mut d = disk("d-bp1old", "cloud_essd", false);
        d.serial_number = String::new();
        let mut ok = disk("d-bp1new", "cloud_essd", false);
        ok.serial_number = "bp1new".into();
        let s = select_disks(
            &DiskSelection::All { exclude: vec![] },
            "i-1",
            &[d, ok],
            128,
        )
        .unwrap();
        assert!(s.warnings.is_empty(), "{:?}", s.warnings);
        assert_eq!(s.notes.len(), 1, "{:?}", s.notes);
        let w = s.notes[0].to_string();
        assert!(
            w.starts_with("disk d-bp1old: ")
                && w.contains("no serial number")
                && w.contains("2020-06-10")
                && w.contains("I/O optimized")
                && w.contains("bp1old"),
            "{w}"
        );
    }

    #[test]
    fn all_takes_supported_disks_minus_exclusions() {
        let sel = DiskSelection::All {
            exclude: vec![id("d-sys"), id("d-nothere")],
        };
        let s = select_disks(&sel, "i-1", &instance(), 16).unwrap();
        let ids: Vec<&str> = s.disks.iter().map(|d| d.disk_id.as_str()).collect();
        assert_eq!(ids, ["d-data"]);
        assert_eq!(s.skipped.len(), 2);
        assert_eq!(s.warnings.len(), 1);
        let none = DiskSelection::All {
            exclude: vec![id("d-sys"), id("d-data")],
        };
        assert!(select_disks(&none, "i-1", &instance(), 16).is_err());
        let all = DiskSelection::All { exclude: vec![] };
        let too_many = select_disks(&all, "i-1", &instance(), 1).unwrap_err();
        assert!(
            too_many[0]
                .reason
                .contains("more than cloud.max_disks_per_group = 1"),
            "{too_many:?}"
        );
    }

    #[test]
    fn all_never_takes_a_restore_drills_temporary_disk() {
        let mut copy = disk("d-copy", "cloud_essd", false);
        copy.tags = vec![crate::cloud::ecs::Tag::new(
            crate::cloud::TAG_VERIFY_GROUP,
            "ssg-1",
        )];
        let mut disks = instance();
        disks.push(copy);
        let all = DiskSelection::All { exclude: vec![] };
        let s = select_disks(&all, "i-1", &disks, 16).unwrap();
        assert!(s.disks.iter().all(|d| d.disk_id != "d-copy"), "{s:?}");
        assert!(
            s.skipped
                .iter()
                .any(|p| p.disk.as_deref() == Some("d-copy") && p.reason.contains("restore drill")),
            "{s:?}"
        );
    }
}
