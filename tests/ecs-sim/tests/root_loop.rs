//! Root-only: a real loop device with ext4, frozen while the group is
//! accepted. Shows the block-device copy path and the freeze probe. Skips
//! with a printed reason when not root or when the tools are missing.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use ecs_sim::testkit::Scheme;
use support::*;

fn run(cmd: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new("timeout")
        .arg("60")
        .arg(cmd)
        .args(args)
        .output()
        .map_err(|e| format!("{cmd}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Undoes, in order, thaw -> umount -> losetup -d, even on panic.
struct LoopFs {
    dev: String,
    mnt: PathBuf,
    frozen: bool,
    mounted: bool,
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        let m = self.mnt.to_string_lossy().to_string();
        if self.frozen {
            let _ = run("fsfreeze", &["-u", &m]);
        }
        if self.mounted {
            let _ = run("umount", &[&m]);
        }
        let _ = run("losetup", &["-d", &self.dev]);
    }
}

fn skip_reason() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root".into());
    }
    for t in ["losetup", "mkfs.ext4", "e2fsck", "fsfreeze", "timeout"] {
        if Command::new("sh")
            .args(["-c", &format!("command -v {t}")])
            .output()
            .map(|o| !o.status.success())
            .unwrap_or(true)
        {
            return Some(format!("{t} not installed"));
        }
    }
    None
}

fn setup(dir: &Path) -> Result<LoopFs, String> {
    let img = dir.join("ext4.raw");
    let f = std::fs::File::create(&img).map_err(|e| e.to_string())?;
    f.set_len(64 << 20).map_err(|e| e.to_string())?;
    let dev = run("losetup", &["-f", "--show", &img.to_string_lossy()])?;
    let mnt = dir.join("mnt");
    std::fs::create_dir_all(&mnt).map_err(|e| e.to_string())?;
    let mut fs = LoopFs {
        dev: dev.clone(),
        mnt: mnt.clone(),
        frozen: false,
        mounted: false,
    };
    run("mkfs.ext4", &["-q", "-F", &dev])?;
    run("mount", &[&dev, &mnt.to_string_lossy()])?;
    fs.mounted = true;
    Ok(fs)
}

#[test]
fn frozen_loop_device_is_copied_and_seen_frozen() {
    if let Some(why) = skip_reason() {
        eprintln!("SKIP frozen_loop_device_is_copied_and_seen_frozen: {why}");
        return;
    }
    let mut w = world();
    let mut fs = setup(w.dir.path()).expect("loop fs");
    let mnt = fs.mnt.clone();
    std::fs::write(mnt.join("marker"), b"before").unwrap();
    {
        let d = w.cfg.disks.iter_mut().find(|d| d.id == DATA1).unwrap();
        d.backing = PathBuf::from(&fs.dev);
        d.probe_mounts = vec![mnt.clone()];
    }
    let plain = w.path("plain");
    std::fs::create_dir(&plain).unwrap();
    w.cfg
        .disks
        .iter_mut()
        .find(|d| d.id == DATA2)
        .unwrap()
        .probe_mounts = vec![plain];
    w.cfg.freeze_probe_timeout_ms = 500;
    let h = start(&w);
    let mut c = client(&h, Scheme::V3);
    c.timeout = Duration::from_secs(60);

    run("fsfreeze", &["-f", &mnt.to_string_lossy()]).unwrap();
    fs.frozen = true;
    let r = c.call(
        "CreateSnapshotGroup",
        &[
            ("RegionId", REGION),
            ("InstanceId", INSTANCE),
            ("DiskId.1", DATA1),
            ("DiskId.2", DATA2),
        ],
    );
    run("fsfreeze", &["-u", &mnt.to_string_lossy()]).unwrap();
    fs.frozen = false;
    let v = ok(&r.unwrap());
    let id = v["SnapshotGroupId"].as_str().unwrap().to_string();
    std::fs::write(mnt.join("marker"), b"after").unwrap();

    let st = control(&h, "GET", "/_sim/state", "").json();
    let g = &st["groups"][0];
    assert_eq!(g["frozen_at_accept"][DATA1][0]["frozen"], true, "{g}");
    assert_eq!(g["frozen_at_accept"][DATA2][0]["frozen"], false, "{g}");
    let img = w.cfg.snapshot_dir.join(&id).join(format!("{DATA1}.img"));
    let log = w.log_lines();
    let acc = log
        .iter()
        .find(|l| l["action"] == "CreateSnapshotGroup")
        .unwrap();
    assert_eq!(acc["accept"]["images"][DATA1][1], "block_read");
    // The image of the frozen file system is clean and holds the old data.
    run("e2fsck", &["-fn", &img.to_string_lossy()]).expect("image checks clean");
    let content = run("debugfs", &["-R", "cat /marker", &img.to_string_lossy()])
        .expect("debugfs reads the image");
    assert_eq!(content, "before");
}

/// `pit_delay_ms`: the answer comes while frozen, the file system is thawed,
/// written and frozen again before the deferred point in time. The image
/// holds the write made after the answer, and the probe reports the state
/// at the point in time, not at the answer.
#[test]
fn deferred_point_in_time_copies_what_was_written_after_the_answer() {
    if let Some(why) = skip_reason() {
        eprintln!("SKIP deferred_point_in_time_copies_what_was_written_after_the_answer: {why}");
        return;
    }
    let mut w = world();
    w.cfg.pit_delay_ms = 3_000;
    let mut fs = setup(w.dir.path()).expect("loop fs");
    let mnt = fs.mnt.clone();
    let m = mnt.to_string_lossy().to_string();
    std::fs::write(mnt.join("marker"), b"before").unwrap();
    {
        let d = w.cfg.disks.iter_mut().find(|d| d.id == DATA1).unwrap();
        d.backing = PathBuf::from(&fs.dev);
        d.probe_mounts = vec![mnt.clone()];
    }
    let h = start(&w);
    let c = client(&h, Scheme::V3);

    run("fsfreeze", &["-f", &m]).unwrap();
    fs.frozen = true;
    let r = c.call(
        "CreateSnapshotGroup",
        &[
            ("RegionId", REGION),
            ("InstanceId", INSTANCE),
            ("DiskId.1", DATA1),
        ],
    );
    run("fsfreeze", &["-u", &m]).unwrap();
    fs.frozen = false;
    let id = ok(&r.unwrap())["SnapshotGroupId"]
        .as_str()
        .unwrap()
        .to_string();
    std::fs::write(mnt.join("marker"), b"after").unwrap();
    run("fsfreeze", &["-f", &m]).unwrap();
    fs.frozen = true;
    // Wait (bounded) for the point in time, then thaw.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let g = loop {
        let st = control(&h, "GET", "/_sim/state", "").json();
        let g = st["groups"][0].clone();
        if g["copying"] == false || std::time::Instant::now() > deadline {
            break g;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    run("fsfreeze", &["-u", &m]).unwrap();
    fs.frozen = false;
    assert_eq!(g["copying"], false, "no point in time: {g}");
    assert_eq!(g["frozen_at_pit"][DATA1][0]["frozen"], true, "{g}");
    assert!(g["pit_after_answer_ms"].as_i64().unwrap() >= 3_000, "{g}");
    let img = w.cfg.snapshot_dir.join(&id).join(format!("{DATA1}.img"));
    run("e2fsck", &["-fn", &img.to_string_lossy()]).expect("image checks clean");
    let content = run("debugfs", &["-R", "cat /marker", &img.to_string_lossy()])
        .expect("debugfs reads the image");
    assert_eq!(content, "after");
}
