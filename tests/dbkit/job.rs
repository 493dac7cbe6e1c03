//! The appsnap side of a database restore test: the world (ext4 + xfs loop
//! disks, emulator, policy) under this lane's scratch prefix, the shipped
//! example hooks installed as an operator would, one `appsnap run`, the
//! copied images mounted back, and a restore drill (`appsnap verify`) with the
//! shipped example verify script.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use super::timeline::Timeline;
use crate::common::appsnap_bin;
use crate::common::world::{has_tag, run_bounded, snapshot_tags, text, Setup, World};
use crate::common::world::{EXT_DISK, XFS_DISK};
use serde_json::Value;

/// Scratch files of this lane live under `/tmp/appsnap-db-*`.
pub const PREFIX: &str = "/tmp/appsnap-db";

/// Loop disks (data on ext4, WAL / redo on xfs), emulator, policy.
pub fn world(tag: &str) -> World {
    World::new(
        tag,
        Setup {
            lab_prefix: PREFIX,
            lab_timeout: Duration::from_secs(500),
            // The emulator restores disks for `appsnap verify`.
            restore_device_delay_ms: Some(300),
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
    let out = run_job_with(w, "", env, 0);
    let tl = Timeline::from_json_log(&String::from_utf8_lossy(&out.stderr))
        .unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    (out, tl)
}

/// One `appsnap --log-format json run db` with the job's keys `extra` (TOML
/// lines) and `env` added, requiring exit code `want`. The policy the world
/// and the hooks set up is kept aside the first time, so that every run
/// adds only its own lines.
pub fn run_job_with(w: &World, extra: &str, env: &[(&str, String)], want: i32) -> Output {
    let base_file = w.lab.dir.join("policy.base");
    if !base_file.exists() {
        std::fs::copy(&w.policy, &base_file).unwrap();
    }
    // Scripts see only what the job's `script_env` passes of appsnap's environment.
    let names: Vec<String> = env.iter().map(|(k, _)| format!("{k:?}")).collect();
    let policy = std::fs::read_to_string(&base_file).unwrap()
        + extra
        + &format!("\nscript_env = [{}]\n", names.join(", "));
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
    assert_eq!(out.status.code(), Some(want), "appsnap run: {}", text(&out));
    out
}

/// The messages of appsnap's JSON log lines.
pub fn log_messages(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["message"].as_str().map(str::to_string))
        .collect()
}

/// The tags on a group as the emulator holds them.
pub fn group_tags(group: &Value) -> Vec<(String, String)> {
    crate::common::world::tag_pairs(&group["tags"])
}

/// The value of tag `key` on the group, required to be the same on each of
/// its snapshots (appsnap tags both); `None` when the group lacks it.
pub fn recorded_tag(group: &Value, key: &str) -> Option<String> {
    let on_group = group_tags(group)
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v);
    for t in snapshot_tags(group) {
        let on_snapshot = t.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
        assert_eq!(
            on_snapshot, on_group,
            "tag {key}: the group and its snapshot differ: {group:#}"
        );
    }
    on_group
}

/// The ids of the groups the emulator holds now.
pub fn group_ids(w: &World) -> Vec<String> {
    w.groups()
        .iter()
        .filter_map(|g| g["id"].as_str().map(str::to_string))
        .collect()
}

/// The groups the emulator holds that are not in `seen` (by id).
pub fn new_groups(w: &World, seen: &[String]) -> Vec<Value> {
    w.groups()
        .into_iter()
        .filter(|g| !seen.iter().any(|s| g["id"] == s.as_str()))
        .collect()
}

/// The run's one group: not failed (a run ends once its snapshots are
/// usable, possibly before the upload is accomplished), every snapshot
/// `AppConsistent:True` and `appsnap:consistency=app` in the emulator's
/// state. Returns its id.
pub fn app_consistent_group(w: &World) -> String {
    let groups = w.groups();
    assert_eq!(groups.len(), 1, "{groups:?}");
    assert_app_consistent(&groups[0])
}

/// `g` is not failed and each of its two snapshots is tagged
/// application-consistent; returns its id.
pub fn assert_app_consistent(g: &Value) -> String {
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
    mount_copies_as(w, group, "restored")
}

/// [`mount_copies`] at `<name>-ext` and `<name>-xfs`, so that copies of
/// several groups can be mounted side by side.
pub fn mount_copies_as(w: &World, group: &str, name: &str) -> (PathBuf, PathBuf) {
    let dir = w.lab.dir.join("snapshots").join(group);
    let ext = w.lab.attach(&dir.join(format!("{EXT_DISK}.img")));
    let xfs = w.lab.attach(&dir.join(format!("{XFS_DISK}.img")));
    (
        w.lab.mount_opts(&ext, &format!("{name}-ext"), "rw"),
        w.lab.mount_opts(&xfs, &format!("{name}-xfs"), "nouuid"),
    )
}

/// Removes a directory (the hooks' state dir under /run) when dropped.
pub struct RemoveOnDrop(pub PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Waits until every group is accomplished (a drill restores only those).
pub fn wait_accomplished(w: &World) {
    let t = std::time::Instant::now();
    while let Some(g) = w
        .groups()
        .into_iter()
        .find(|g| g["status"] != "accomplished")
    {
        assert!(t.elapsed() < Duration::from_secs(60), "{g:#}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Installs `packaging/examples/<kind>/verify.sh` as an operator would
/// (root-owned, 0700, beside the hooks) and makes the job's `verify_script` a
/// wrapper that sets the example's knobs (`knobs`: its settings at the top,
/// e.g. `LIVE_DATADIR`), has it run `query` on the copy, and keeps a copy of
/// its output in the returned file (the drill's report holds only how the
/// script ended).
pub fn install_example_verify(
    w: &World,
    kind: &str,
    knobs: &[(&str, String)],
    query: &str,
) -> PathBuf {
    let dir = w.lab.dir.join("hooks");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let example = dir.join(format!("{kind}-verify.sh"));
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("packaging/examples")
            .join(kind)
            .join("verify.sh"),
        &example,
    )
    .unwrap();
    std::fs::set_permissions(&example, std::fs::Permissions::from_mode(0o700)).unwrap();
    let query_file = dir.join(format!("{kind}-verify.sql"));
    std::fs::write(&query_file, query).unwrap();
    let out = w.lab.dir.join(format!("{kind}-verify.out"));
    let mut exports: Vec<String> = knobs
        .iter()
        .map(|(k, v)| format!("export {k}='{v}'"))
        .collect();
    exports.push(format!("export QUERY_FILE='{}'", query_file.display()));
    let wrapper = dir.join(format!("{kind}-verify-wrapper.sh"));
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/bash\nset -euo pipefail\n{}\n/bin/bash '{}' 2>&1 | tee '{}'\n",
            exports.join("\n"),
            example.display(),
            out.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o700)).unwrap();
    let policy = std::fs::read_to_string(&w.policy).unwrap()
        + &format!("verify_script = \"{}\"\n", wrapper.display());
    std::fs::write(&w.policy, policy).unwrap();
    out
}

/// Replaces the SQL the installed example verify script of `kind` runs.
pub fn set_verify_query(w: &World, kind: &str, query: &str) {
    let file = w.lab.dir.join("hooks").join(format!("{kind}-verify.sql"));
    assert!(file.exists(), "install_example_verify first");
    std::fs::write(file, query).unwrap();
}

/// Processes whose command line names one of the example verify scripts'
/// private directories (a server they started and did not stop).
pub fn verify_servers_left() -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains("/run/appsnap-verify-"))
        .collect()
}

/// `appsnap verify --job db --json`: its exit code and report.
pub fn verify(w: &World) -> (Option<i32>, Value, String) {
    let mut cmd = Command::new(appsnap_bin());
    cmd.arg("-c").arg(&w.policy).args([
        "--config-dir",
        "/nonexistent",
        "verify",
        "--job",
        "db",
        "--json",
    ]);
    let out = run_bounded(cmd, Duration::from_secs(300));
    let report = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("verify --json: {e}: {}", text(&out)));
    (out.status.code(), report, text(&out))
}

/// The `query: ` lines the example verify script printed, each split into
/// its columns (tab- or `|`-separated).
pub fn query_lines(out: &Path) -> Vec<Vec<String>> {
    std::fs::read_to_string(out)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix("query: "))
        .map(|l| l.split(['\t', '|']).map(|c| c.trim().to_string()).collect())
        .collect()
}

/// Nothing of the drill is left: every disk it created deleted, no by-id
/// link but the job's disks', nothing mounted under the run directory, and
/// no private directory of the example verify scripts under /run.
pub fn assert_drill_left_nothing(w: &World) {
    let disks = w.state()["created_disks"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(!disks.is_empty(), "the drill created no disk");
    for d in &disks {
        assert_eq!(d["deleted"], true, "a drill disk is still there: {d:#}");
    }
    let links: Vec<String> = std::fs::read_dir(w.lab.by_id_dir())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.contains("e2eext") && !n.contains("e2exfs"))
        .collect();
    assert!(links.is_empty(), "by-id links left: {links:?}");
    let run = w.lab.run_dir();
    assert!(
        mounts_under(&run).is_empty(),
        "still mounted under {}: {:?}",
        run.display(),
        mounts_under(&run)
    );
    let private: Vec<String> = std::fs::read_dir("/run")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("appsnap-verify-"))
        .collect();
    assert!(
        private.is_empty(),
        "verify script directories left in /run: {private:?}"
    );
}

/// Mount points at or below `dir`, deepest last.
fn mounts_under(dir: &Path) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .filter(|mp| Path::new(mp).starts_with(dir))
        .collect()
}

/// Unmounts whatever a failed drill left mounted under the lab's run
/// directory (appsnap mounted it there for this test), so the lab's own
/// teardown can detach its devices.
pub struct Unmounter(pub PathBuf);

impl Drop for Unmounter {
    fn drop(&mut self) {
        for mp in mounts_under(&self.0).iter().rev() {
            let _ = Command::new("umount").arg(mp).status();
        }
    }
}
