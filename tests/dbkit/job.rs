//! The appsnap side of a database restore test: the world (ext4 + xfs loop
//! disks, emulator, policy) under this lane's scratch prefix, the shipped
//! example hooks installed as an operator would, one `appsnap run`, and the
//! copied images mounted back.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use super::timeline::Timeline;
use crate::common::appsnap_bin;
use crate::common::world::{has_tag, run_bounded, snapshot_tags, text, Setup, World};
use crate::common::world::{EXT_DISK, XFS_DISK};

/// Scratch files of this lane live under `/tmp/appsnap-db-*`.
pub const PREFIX: &str = "/tmp/appsnap-db";

/// Loop disks (data on ext4, WAL / redo on xfs), emulator, policy.
pub fn world(tag: &str) -> World {
    World::new(
        tag,
        Setup {
            lab_prefix: PREFIX,
            lab_timeout: Duration::from_secs(400),
            ..Setup::default()
        },
    )
}

/// Copies `packaging/examples/<kind>/{prescript,postscript}.sh` into a
/// root-owned 0755 directory, mode 0700, and points the job at them.
pub fn install_example_hooks(w: &World, kind: &str) -> (PathBuf, PathBuf) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("packaging/examples")
        .join(kind);
    let dir = w.lab.dir.join("hooks");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let install = |name: &str| {
        let dst = dir.join(name);
        std::fs::copy(src.join(name), &dst).unwrap();
        std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o700)).unwrap();
        dst
    };
    let (pre, post) = (install("prescript.sh"), install("postscript.sh"));
    w.use_hooks(&pre, &post);
    (pre, post)
}

/// `appsnap --log-format json run db` with `env` added (the hooks' settings,
/// listed in the job's `script_env` so the hooks get them);
/// requires exit 0 and returns the output and the run's timeline.
pub fn run_job(w: &World, env: &[(&str, String)]) -> (Output, Timeline) {
    // Scripts see only what the job's `script_env` passes of appsnap's environment.
    let names: Vec<String> = env.iter().map(|(k, _)| format!("{k:?}")).collect();
    let policy = std::fs::read_to_string(&w.policy).unwrap()
        + &format!("script_env = [{}]\n", names.join(", "));
    std::fs::write(&w.policy, policy).unwrap();
    let mut cmd = Command::new(appsnap_bin());
    cmd.arg("-c")
        .arg(&w.policy)
        .args([
            "--config-dir",
            "/nonexistent",
            "--log-format",
            "json",
            "run",
            "db",
        ])
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    let out = run_bounded(cmd, Duration::from_secs(180));
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "appsnap run: {t}");
    let tl = Timeline::from_json_log(&String::from_utf8_lossy(&out.stderr))
        .unwrap_or_else(|e| panic!("{e}: {t}"));
    (out, tl)
}

/// The run's one group: not failed (a run ends once its snapshots are
/// usable, possibly before the upload is accomplished), every snapshot
/// `AppConsistent:True` and `appsnap:consistency=app` in the emulator's
/// state. Returns its id.
pub fn app_consistent_group(w: &World) -> String {
    let groups = w.groups();
    assert_eq!(groups.len(), 1, "{groups:?}");
    let g = &groups[0];
    assert_ne!(g["status"], "failed", "{g}");
    let tags = snapshot_tags(g);
    assert_eq!(tags.len(), 2, "two snapshots, one per disk: {g}");
    for t in &tags {
        assert!(has_tag(t, "AppConsistent", "True"), "{t:?}");
        assert!(has_tag(t, "appsnap:consistency", "app"), "{t:?}");
    }
    g["id"].as_str().unwrap().to_string()
}

/// Attaches the emulator's copies of both disks as new loop devices and
/// mounts them at fresh places (xfs with `nouuid`: the original is still
/// mounted). Mounting replays the file systems' own journals.
pub fn mount_copies(w: &World, group: &str) -> (PathBuf, PathBuf) {
    let dir = w.lab.dir.join("snapshots").join(group);
    let ext = w.lab.attach(&dir.join(format!("{EXT_DISK}.img")));
    let xfs = w.lab.attach(&dir.join(format!("{XFS_DISK}.img")));
    (
        w.lab.mount_opts(&ext, "restored-ext", "rw"),
        w.lab.mount_opts(&xfs, "restored-xfs", "nouuid"),
    )
}

/// Removes a directory (the hooks' state dir under /run) when dropped.
pub struct RemoveOnDrop(pub PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
