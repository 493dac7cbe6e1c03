//! Where the parts of each running PostgreSQL cluster live, for `check`: a
//! snapshot group is consistent across its own disks only, so a cluster whose
//! data directory is in a job while `pg_wal` or a tablespace is on a disk
//! outside it restores into a copy that does not start (or misses data).
//!
//! Read-only and script-free: running postmasters are found in `/proc` (a
//! `postgres` process whose parent is not one; the postmaster's working
//! directory is its data directory), their layout from the data directory's
//! `pg_wal` and `pg_tblspc/*` links, and each part's disks from the freeze
//! plan's mount points.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::plan::Plan;

/// One part of a cluster: what it is and where it really is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// `data directory`, `pg_wal`, `tablespace 16384`.
    pub what: String,
    /// The resolved path.
    pub path: PathBuf,
}

/// A running cluster's parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    /// The postmaster's pid.
    pub pid: u32,
    /// Its data directory.
    pub data_dir: PathBuf,
    /// The data directory, pg_wal and each tablespace.
    pub parts: Vec<Part>,
}

/// The running PostgreSQL clusters under `proc_root` (`/proc`). A process
/// that vanishes meanwhile, or whose directory cannot be read, is skipped.
pub fn running_clusters(proc_root: &Path) -> Vec<Cluster> {
    let Ok(entries) = std::fs::read_dir(proc_root) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if comm(proc_root, pid).as_deref() != Some("postgres") {
            continue;
        }
        let parent_is_postgres = parent(proc_root, pid)
            .and_then(|p| comm(proc_root, p))
            .is_some_and(|c| c == "postgres");
        if parent_is_postgres {
            continue;
        }
        let Ok(data_dir) = std::fs::read_link(proc_root.join(pid.to_string()).join("cwd")) else {
            continue;
        };
        if !data_dir.join("PG_VERSION").is_file() {
            continue;
        }
        out.push(Cluster {
            pid,
            parts: parts_of(&data_dir),
            data_dir,
        });
    }
    out.sort_by_key(|c| c.pid);
    out
}

/// A small `/proc/<pid>/<file>`, read with a bound like every read appsnap makes.
fn proc_file(proc_root: &Path, pid: u32, file: &str) -> Option<String> {
    let bytes =
        crate::securefs::read_bounded_regular(&proc_root.join(pid.to_string()).join(file), 4096)
            .ok()?;
    String::from_utf8(bytes).ok()
}

/// A process's short name (`comm`, at most 16 bytes).
fn comm(proc_root: &Path, pid: u32) -> Option<String> {
    Some(proc_file(proc_root, pid, "comm")?.trim_end().to_string())
}

/// A process's parent pid, from `stat` (after the last `)`: the name may hold any byte).
fn parent(proc_root: &Path, pid: u32) -> Option<u32> {
    let s = proc_file(proc_root, pid, "stat")?;
    let rest = &s[s.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// The data directory, where `pg_wal` leads, and where each tablespace link leads.
pub fn parts_of(data_dir: &Path) -> Vec<Part> {
    let real = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let mut parts = vec![Part {
        what: "data directory".into(),
        path: real(data_dir),
    }];
    let wal = data_dir.join("pg_wal");
    if wal.exists() {
        parts.push(Part {
            what: "pg_wal".into(),
            path: real(&wal),
        });
    }
    if let Ok(links) = std::fs::read_dir(data_dir.join("pg_tblspc")) {
        let mut ts: Vec<Part> = links
            .flatten()
            .map(|l| Part {
                what: format!("tablespace {}", l.file_name().to_string_lossy()),
                path: real(&l.path()),
            })
            .collect();
        ts.sort_by(|a, b| a.what.cmp(&b.what));
        parts.extend(ts);
    }
    parts
}

/// The disks the file system holding `path` is on, by the plan's mount
/// points (the deepest one containing it); empty when it is on none of
/// them (not on a cloud disk appsnap can freeze).
pub fn disks_of(plan: &Plan, path: &Path) -> Vec<String> {
    plan.entries
        .iter()
        .flat_map(|e| {
            std::iter::once(&e.mount_point)
                .chain(e.also_mounted_at.iter())
                .map(move |m| (m, e))
        })
        .filter(|(m, _)| path.starts_with(m))
        .max_by_key(|(m, _)| m.components().count())
        .map(|(_, e)| e.disks.clone())
        .unwrap_or_default()
}

/// The warnings for one job (its disks `job_disks`) about `cluster`, whose
/// parts are on `part_disks` (same order as `cluster.parts`). Only a cluster
/// the job touches at all concerns it; then every part must be wholly on the
/// job's disks.
pub fn layout_warnings(
    cluster: &Cluster,
    part_disks: &[Vec<String>],
    job_disks: &BTreeSet<String>,
) -> Vec<String> {
    let touched = part_disks
        .iter()
        .any(|ds| ds.iter().any(|d| job_disks.contains(d)));
    if !touched {
        return Vec::new();
    }
    cluster
        .parts
        .iter()
        .zip(part_disks)
        .filter(|(_, ds)| ds.is_empty() || ds.iter().any(|d| !job_disks.contains(d)))
        .map(|(part, ds)| {
            let where_ = if ds.is_empty() {
                "on no cloud disk appsnap can snapshot".to_string()
            } else {
                let outside: Vec<&str> = ds
                    .iter()
                    .filter(|d| !job_disks.contains(*d))
                    .map(String::as_str)
                    .collect();
                format!("on {}, which the job does not snapshot", outside.join(", "))
            };
            format!(
                "PostgreSQL cluster {} (pid {}): its {} ({}) is {where_}; the job's group is consistent across its own disks only, so a copy restored from it would {}; put the cluster's data directory, pg_wal and tablespaces on the job's disks, or add the disk to the job",
                cluster.data_dir.display(),
                cluster.pid,
                part.what,
                part.path.display(),
                if part.what == "data directory" || part.what == "pg_wal" {
                    "not start"
                } else {
                    "miss that tablespace"
                }
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster() -> Cluster {
        Cluster {
            pid: 42,
            data_dir: "/data/pg".into(),
            parts: vec![
                Part {
                    what: "data directory".into(),
                    path: "/data/pg".into(),
                },
                Part {
                    what: "pg_wal".into(),
                    path: "/wal/pg_wal".into(),
                },
                Part {
                    what: "tablespace 16384".into(),
                    path: "/ts/a".into(),
                },
            ],
        }
    }

    fn set(ids: &[&str]) -> BTreeSet<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_cluster_wholly_in_the_job_or_wholly_outside_is_fine() {
        let disks = vec![
            vec!["d-a".to_string()],
            vec!["d-b".into()],
            vec!["d-b".into()],
        ];
        assert!(layout_warnings(&cluster(), &disks, &set(&["d-a", "d-b"])).is_empty());
        assert!(layout_warnings(&cluster(), &disks, &set(&["d-c"])).is_empty());
    }

    #[test]
    fn each_part_outside_the_job_is_named_with_its_disk_and_consequence() {
        let disks = vec![vec!["d-a".to_string()], vec!["d-b".into()], vec![]];
        let w = layout_warnings(&cluster(), &disks, &set(&["d-a"]));
        assert_eq!(w.len(), 2, "{w:#?}");
        assert!(
            w[0].contains("its pg_wal (/wal/pg_wal) is on d-b, which the job does not snapshot"),
            "{}",
            w[0]
        );
        assert!(w[0].contains("would not start"), "{}", w[0]);
        assert!(
            w[1].contains("tablespace 16384 (/ts/a) is on no cloud disk"),
            "{}",
            w[1]
        );
        assert!(w[1].contains("miss that tablespace"), "{}", w[1]);
        // The other way round: pg_wal in the job, the data directory not.
        let w = layout_warnings(
            &cluster(),
            &[vec!["d-a".into()], vec!["d-b".into()], vec!["d-b".into()]],
            &set(&["d-b"]),
        );
        assert_eq!(w.len(), 1, "{w:#?}");
        assert!(
            w[0].contains("data directory (/data/pg) is on d-a"),
            "{}",
            w[0]
        );
    }

    /// A fake postmaster: a copy of `sleep` named `postgres`, started in a
    /// "data directory" with PG_VERSION, a pg_wal link and a tablespace
    /// link; its child of the same name is not a cluster of its own.
    #[test]
    fn running_postmasters_are_found_by_name_parent_and_working_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let wal = tmp.path().join("wal");
        let ts = tmp.path().join("ts1");
        for d in [&data, &wal, &ts, &data.join("pg_tblspc")] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(data.join("PG_VERSION"), "15\n").unwrap();
        std::os::unix::fs::symlink(&wal, data.join("pg_wal")).unwrap();
        std::os::unix::fs::symlink(&ts, data.join("pg_tblspc/16384")).unwrap();
        // The postmaster: a script named `postgres` (its comm) that starts a
        // backend, a copy of `sleep` also named `postgres`, and waits.
        let backend_dir = tmp.path().join("bin");
        std::fs::create_dir(&backend_dir).unwrap();
        let backend = backend_dir.join("postgres");
        std::fs::copy("/bin/sleep", &backend).unwrap();
        let postmaster = tmp.path().join("postgres");
        std::fs::write(
            &postmaster,
            format!("#!/bin/sh\n'{}' 30 &\nwait\n", backend.display()),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&postmaster, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut child = std::process::Command::new(&postmaster)
            .current_dir(&data)
            .spawn()
            .unwrap();
        let pid = child.id();
        let backend_running = |ppid: u32| {
            std::fs::read_to_string(format!("/proc/{ppid}/task/{ppid}/children"))
                .is_ok_and(|c| !c.trim().is_empty())
        };
        for _ in 0..200 {
            if backend_running(pid) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(backend_running(pid), "the fake backend started");
        let found: Vec<Cluster> = running_clusters(Path::new("/proc"))
            .into_iter()
            .filter(|c| c.data_dir == data)
            .collect();
        let _ = std::process::Command::new("pkill")
            .arg("-P")
            .arg(pid.to_string())
            .status();
        let _ = child.kill();
        let _ = child.wait();
        // The backend shares the directory but its parent is a `postgres`.
        assert_eq!(found.len(), 1, "{found:#?}");
        let c = &found[0];
        assert_eq!(c.pid, pid);
        let what: Vec<(&str, &Path)> = c
            .parts
            .iter()
            .map(|p| (p.what.as_str(), p.path.as_path()))
            .collect();
        assert_eq!(
            what,
            vec![
                (
                    "data directory",
                    std::fs::canonicalize(&data).unwrap().as_path()
                ),
                ("pg_wal", std::fs::canonicalize(&wal).unwrap().as_path()),
                (
                    "tablespace 16384",
                    std::fs::canonicalize(&ts).unwrap().as_path()
                ),
            ]
        );
    }
}
