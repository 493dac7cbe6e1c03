//! Restore drills end to end: the real `appsnap` binary, the emulator over
//! real HTTP restoring its snapshot images as new disks (loop devices with
//! by-id links, as a real attach shows them), and the real checkers
//! (e2fsck, xfs_repair). Root only; skips with a reason.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::appsnap_bin;
use common::skip_reason;
use common::world::*;
use serde_json::Value;

macro_rules! root_or_skip {
    () => {
        if let Some(why) = skip_reason() {
            common::skip::missing(&why);
            return;
        }
    };
}

/// A world whose emulator can attach restored disks into the lab's by-id
/// directory, with one group made by a real run (a marker file in each fs).
fn world_with_group(tag: &str, job_extra: &str) -> (World, Unmounter) {
    world_with_faults(tag, job_extra, "")
}

/// [`world_with_group`] with emulator faults (`[faults]` keys).
fn world_with_faults(tag: &str, job_extra: &str, faults: &str) -> (World, Unmounter) {
    let w = World::new(
        tag,
        Setup {
            job_extra: job_extra.to_string(),
            lab_prefix: "/tmp/appsnap-verify",
            lab_timeout: Duration::from_secs(300),
            sim_extra: if faults.is_empty() {
                String::new()
            } else {
                format!("\n[faults]\n{faults}\n")
            },
            restore_device_delay_ms: Some(300),
            ..Setup::default()
        },
    );
    let guard = Unmounter(w.lab.run_dir());
    std::fs::write(w.ext.join("marker"), "ext4 marker\n").unwrap();
    std::fs::write(w.xfs.join("marker"), "xfs marker\n").unwrap();
    let out = w.appsnap(&["run", "db"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // A drill restores only an accomplished group.
    let t = Instant::now();
    while w.groups()[0]["status"] != "accomplished" {
        assert!(t.elapsed() < Duration::from_secs(30), "{:#}", w.groups()[0]);
        std::thread::sleep(Duration::from_millis(100));
    }
    (w, guard)
}

/// Unmounts whatever a failed drill left mounted under the lab's run
/// directory (appsnap mounted it there for this test), so the lab's own
/// teardown can detach its devices.
struct Unmounter(PathBuf);

impl Drop for Unmounter {
    fn drop(&mut self) {
        let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
            return;
        };
        let mut ours: Vec<String> = info
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
            .filter(|mp| Path::new(mp).starts_with(&self.0))
            .collect();
        ours.reverse();
        for mp in ours {
            let _ = Command::new("umount").arg(&mp).status();
        }
    }
}

/// Starts `appsnap verify --job db --json` with a verify_script that writes
/// its pid to the returned file and then sleeps (as `sleep`, same pid), and
/// waits until the script runs: copies mounted, disks attached.
fn drill_held_in_its_script(w: &World) -> (std::process::Child, PathBuf) {
    let started = w.lab.dir.join("script-started");
    let script = w.script(
        "verify.sh",
        &format!("echo $$ > {}\nexec sleep 60", started.display()),
    );
    let policy = std::fs::read_to_string(&w.policy).unwrap()
        + &format!("verify_script = \"{}\"\n", script.display());
    std::fs::write(&w.policy, policy).unwrap();
    let mut drill = Command::new(appsnap_bin())
        .arg("-c")
        .arg(&w.policy)
        .args([
            "--config-dir",
            "/nonexistent",
            "verify",
            "--job",
            "db",
            "--json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while std::fs::read_to_string(&started).map_or(true, |s| s.trim().is_empty()) {
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "the drill never reached its script"
        );
        assert!(drill.try_wait().unwrap().is_none(), "the drill ended early");
        std::thread::sleep(Duration::from_millis(100));
    }
    (drill, started)
}

/// The emulator's disks that a drill created (not configured ones).
fn drill_disks(w: &World) -> Vec<Value> {
    w.state()["created_disks"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn assert_no_drill_disk_left(w: &World) {
    for d in drill_disks(w) {
        assert!(
            d["deleted"].as_bool() == Some(true),
            "a drill disk is still there: {d:#}"
        );
    }
    let left: Vec<String> = std::fs::read_dir(w.lab.by_id_dir())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.contains("e2eext") && !n.contains("e2exfs"))
        .collect();
    assert!(left.is_empty(), "by-id links left: {left:?}");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let run = w.lab.run_dir();
    assert!(
        !mounts.lines().any(|l| l
            .split(' ')
            .nth(4)
            .is_some_and(|mp| Path::new(mp).starts_with(&run))),
        "a copy is still mounted under {}",
        run.display()
    );
}

fn verify_json(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(out)))
}

#[test]
fn a_drill_of_an_ext4_and_xfs_group_passes_and_leaves_nothing_behind() {
    root_or_skip!();
    let (w, _guard) = world_with_group("pass", "");
    // The verify script sees both copies, each with its live counterpart.
    let script = w.script(
        "verify.sh",
        r#"set -eu
echo "copies: $APPSNAP_MOUNTPOINTS"
echo "live: $APPSNAP_SOURCE_MOUNTPOINTS"
n=0
for m in $APPSNAP_MOUNTPOINTS; do grep -q marker "$m/marker"; n=$((n+1)); done
test "$n" = 2
test "$APPSNAP_PHASE" = verify"#,
    );
    let policy = std::fs::read_to_string(&w.policy).unwrap()
        + &format!("verify_script = \"{}\"\n", script.display());
    std::fs::write(&w.policy, policy).unwrap();

    let out = w.appsnap(&["verify", "--job", "db", "--json"]);
    let report = verify_json(&out);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(report["verdict"], "passed", "{report:#}");
    let fs: Vec<&str> = report["filesystems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["fstype"].as_str().unwrap())
        .collect();
    assert_eq!(fs.len(), 2, "{report:#}");
    assert!(fs.contains(&"ext4") && fs.contains(&"xfs"), "{fs:?}");
    for f in report["filesystems"].as_array().unwrap() {
        assert!(
            f["live_mount_point"].is_string(),
            "live counterpart named: {f:#}"
        );
    }
    assert_no_drill_disk_left(&w);
    // The group's snapshots carry the result.
    let group = &w.groups()[0];
    for tags in snapshot_tags(group) {
        assert!(has_tag(&tags, "appsnap:verify", "ok"), "{tags:?}");
        assert!(
            tags.iter().any(|(k, _)| k == "appsnap:verified"),
            "{tags:?}"
        );
    }
    // The live file systems were never touched: still mounted, writable, same data.
    assert_writable(&w.ext);
    assert_writable(&w.xfs);
    assert_eq!(
        std::fs::read_to_string(w.ext.join("marker")).unwrap(),
        "ext4 marker\n"
    );
    // `status` shows the drill.
    let status = w.appsnap(&["status"]);
    let shown = String::from_utf8_lossy(&status.stdout);
    assert!(
        shown.contains("last restore drills:") && shown.contains("db passed at"),
        "{shown}"
    );
}

#[test]
fn a_drill_of_a_damaged_copy_fails_naming_the_file_system() {
    root_or_skip!();
    let (w, _guard) = world_with_group("damaged", "");
    // Damage the ext4 snapshot image (what CreateDisk copies) past its
    // superblock, so it is still ext4 but its metadata is broken.
    let group = &w.groups()[0];
    let ext_image = group["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["disk_id"] == EXT_DISK)
        .and_then(|s| s["image"].as_str())
        .map(PathBuf::from)
        .expect("the ext4 snapshot's image");
    damage_ext4(&ext_image);
    // The failed drill reaches the job's sinks and the metrics.
    let event = w.lab.dir.join("event.json");
    let sink = w.script("sink.sh", &format!("cat > {}", event.display()));
    let metrics_dir = w.lab.dir.join("metrics");
    std::fs::create_dir_all(&metrics_dir).unwrap();
    let policy = std::fs::read_to_string(&w.policy).unwrap()
        + &format!(
            "\n[notify]\nexec = \"{}\"\n\n[metrics]\ntextfile = \"{}/appsnap.prom\"\n",
            sink.display(),
            metrics_dir.display()
        );
    std::fs::write(&w.policy, policy).unwrap();

    let out = w.appsnap(&["verify", "--job", "db", "--json"]);
    let report = verify_json(&out);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(report["verdict"], "failed", "{report:#}");
    let errors = report["errors"].to_string();
    assert!(
        errors.contains("ext4") && errors.contains(EXT_DISK),
        "{errors}"
    );
    let xfs_ok = report["filesystems"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["fstype"] == "xfs" && f["ok"] == true);
    assert!(xfs_ok, "the undamaged xfs still checks clean: {report:#}");
    assert_no_drill_disk_left(&w);
    for tags in snapshot_tags(&w.groups()[0]) {
        assert!(has_tag(&tags, "appsnap:verify", "failed"), "{tags:?}");
    }
    let e: Value = serde_json::from_slice(&std::fs::read(&event).unwrap()).unwrap();
    assert_eq!(e["event"], "verify_failed", "{e:#}");
    assert!(e["detail"].as_str().unwrap().contains("ext4"), "{e:#}");
    let prom = std::fs::read_to_string(metrics_dir.join("appsnap.prom")).unwrap();
    assert!(
        prom.lines()
            .any(|l| l == "appsnap_verify_last_passed{appsnap_job=\"db\"} 0"),
        "{prom}"
    );
    let status = w.appsnap(&["status"]);
    let shown = String::from_utf8_lossy(&status.stdout);
    assert!(
        shown.contains("db failed at") && shown.contains("never passed"),
        "{shown}"
    );
}

/// Overwrites the first block group's descriptors and inode table region
/// (blocks 1.. of a 4 KiB-block ext4, after its superblock) with garbage.
fn damage_ext4(image: &Path) {
    use std::io::{Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new().write(true).open(image).unwrap();
    f.seek(SeekFrom::Start(4096)).unwrap();
    f.write_all(&vec![0xA5u8; 4096 * 64]).unwrap();
    f.sync_all().unwrap();
}

#[test]
fn a_drill_killed_mid_way_is_finished_by_the_next_daemon_start() {
    root_or_skip!();
    let (w, _guard) = world_with_group("killed", "");
    let (mut drill, started) = drill_held_in_its_script(&w);
    // Mid-drill: copies mounted, disks attached.
    let attached = drill_disks(&w)
        .iter()
        .filter(|d| d["status"] == "In_use")
        .count();
    assert_eq!(attached, 2, "{:#}", w.state()["created_disks"]);
    drill.kill().unwrap();
    drill.wait().unwrap();
    // The script (now `sleep`, same pid) outlives appsnap in its own
    // process group: end it.
    let pid = std::fs::read_to_string(&started).unwrap();
    let _ = Command::new("kill").arg(pid.trim()).status();

    let daemon_log = w.lab.dir.join("daemon.log");
    let daemon = KillOnDrop(
        Command::new(appsnap_bin())
            .arg("-c")
            .arg(&w.policy)
            .args(["--config-dir", "/nonexistent", "daemon"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&daemon_log).unwrap())
            .spawn()
            .unwrap(),
    );
    let records = || -> Vec<PathBuf> {
        std::fs::read_dir(w.lab.dir.join("state/verify"))
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    };
    let t = Instant::now();
    loop {
        let left = drill_disks(&w)
            .iter()
            .filter(|d| d["deleted"].as_bool() != Some(true))
            .count();
        if left == 0 && records().is_empty() {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "the daemon did not finish the drill: records {:?}, disks {:#}\n{}",
            records(),
            w.state()["created_disks"],
            std::fs::read_to_string(&daemon_log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    drop(daemon);
    assert_no_drill_disk_left(&w);
}

#[test]
fn sigterm_mid_drill_releases_everything_and_is_no_verdict() {
    root_or_skip!();
    let (w, _guard) = world_with_group("sigterm", "");
    let (drill, _started) = drill_held_in_its_script(&w);
    let pid = drill.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let out = drill.wait_with_output().unwrap();
    let report = verify_json(&out);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert_eq!(report["verdict"], "not-run", "{report:#}");
    assert!(
        report["errors"].to_string().contains("cancelled"),
        "{report:#}"
    );
    assert_no_drill_disk_left(&w);
    // No verdict, so no result tag on the group.
    for tags in snapshot_tags(&w.groups()[0]) {
        assert!(!tags.iter().any(|(k, _)| k == "appsnap:verify"), "{tags:?}");
    }
}

#[test]
fn a_disk_that_never_shows_a_device_is_released_and_named() {
    root_or_skip!();
    let (w, _guard) = world_with_faults("nodev", "", "attach_no_device = { times = 1 }");
    let out = w.appsnap(&[
        "verify",
        "--job",
        "db",
        "--json",
        "--device-timeout-secs",
        "3",
    ]);
    let report = verify_json(&out);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let errors = report["errors"].to_string();
    assert!(errors.contains("no block device with serial"), "{report:#}");
    assert_no_drill_disk_left(&w);
}

#[test]
fn a_failed_detach_is_reported_and_finished_by_cleanup() {
    root_or_skip!();
    let (w, _guard) = world_with_faults(
        "detach",
        "",
        "detach_fails = { code = \"IncorrectInstanceStatus\", status = 403, times = 1 }",
    );
    let out = w.appsnap(&["verify", "--job", "db", "--json"]);
    let report = verify_json(&out);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert_eq!(
        report["verdict"], "passed",
        "the group itself was fine: {report:#}"
    );
    assert!(
        report["leftovers"].to_string().contains("DetachDisk"),
        "{report:#}"
    );
    let left = drill_disks(&w)
        .iter()
        .filter(|d| d["deleted"].as_bool() != Some(true))
        .count();
    assert_eq!(left, 1, "the disk whose detach failed is still there");
    // By hand, once the cloud lets go.
    let out = w.appsnap(&["verify", "--cleanup"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("released 1 disk"),
        "{}",
        text(&out)
    );
    assert_no_drill_disk_left(&w);
    let records: Vec<_> = std::fs::read_dir(w.lab.dir.join("state/verify"))
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(records.is_empty(), "{records:?}");
}
