//! Root-only: AttachDisk makes a created disk a loop device with its
//! partitions and a `virtio-<serial>` by-id link; DetachDisk, dropping the
//! handle, and SIGKILL of the emulator (autoclear + `loopdev::sweep`) all
//! leave no device and no link. Skips with a printed reason when not root.
//! Only loop devices backed by images under this test's temp dir are touched.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ecs_sim::testkit::{wait_ready_file, Creds, EcsClient, Scheme};
use support::*;

fn skip_reason() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root".into());
    }
    if !Path::new("/dev/loop-control").exists() {
        return Some("no /dev/loop-control".into());
    }
    None
}

macro_rules! root_or_skip {
    () => {
        if let Some(r) = skip_reason() {
            eprintln!("skipped: {r}");
            return;
        }
    };
}

/// Detaches whatever the emulator left under `disk_dir`, even on panic.
struct Sweep(PathBuf);
impl Drop for Sweep {
    fn drop(&mut self) {
        ecs_sim::loopdev::sweep(&self.0);
    }
}

/// An 8 MiB image with an MBR holding one Linux partition (sectors
/// 2048..16383) and a recognisable pattern in it.
fn partitioned_image(path: &Path) {
    let mut img = vec![0u8; 8 << 20];
    let e = &mut img[0x1BE..0x1CE];
    e[4] = 0x83;
    e[8..12].copy_from_slice(&2048u32.to_le_bytes());
    e[12..16].copy_from_slice(&(16384u32 - 2048).to_le_bytes());
    img[510] = 0x55;
    img[511] = 0xAA;
    for (i, b) in img[1 << 20..(1 << 20) + 4096].iter_mut().enumerate() {
        *b = (i % 251) as u8;
    }
    std::fs::write(path, img).unwrap();
}

fn state_disk(h: &ecs_sim::SimHandle, id: &str) -> serde_json::Value {
    sim_state(h)["created_disks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == id)
        .unwrap()
        .clone()
}

/// Waits (10 s at most) until the emulator reports the disk's device, as
/// a client waits for the by-id link after `In_use`.
fn wait_device(h: &ecs_sim::SimHandle, id: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let sd = state_disk(h, id);
        if !sd["loop_device"].is_null() {
            return sd;
        }
        assert!(Instant::now() < deadline, "no device for {id}: {sd}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_unbound(name: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while ecs_sim::loopdev::backing_file(name).is_some() {
        assert!(Instant::now() < deadline, "{name} still attached");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn loop_name(dev: &str) -> String {
    Path::new(dev)
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

#[test]
fn attach_shows_partitioned_device_by_serial_then_detach_and_delete() {
    root_or_skip!();
    let mut w = restore_world();
    w.cfg.restore.device_delay_ms = 1500;
    partitioned_image(&w.backing(DATA1));
    let _sweep = Sweep(w.cfg.disk_dir());
    let h = start(&w);
    let c = client(&h, Scheme::V3);
    let g = create_group(&c, &[]);
    let (snap, snap_img) = snapshot_of(&h, &g);
    let id = create_disk(
        &c,
        &snap,
        &[("Tag.1.Key", "appsnap:verify"), ("Tag.1.Value", &g)],
    );
    wait_status(&c, &id, "Available");
    ok(&disk_call(&c, "AttachDisk", &id));
    wait_status(&c, &id, "In_use");
    // In_use comes first; the device follows (device_delay_ms).
    let early = w.path("by-id").join(format!("virtio-{}", &id[2..]));
    assert!(
        early.symlink_metadata().is_err(),
        "link before the device delay"
    );

    let sd = wait_device(&h, &id);
    let dev = sd["loop_device"].as_str().expect("loop device").to_string();
    let link = PathBuf::from(sd["link"].as_str().expect("link"));
    assert_eq!(link, w.path("by-id").join(format!("virtio-{}", &id[2..])));
    assert_eq!(std::fs::read_link(&link).unwrap(), PathBuf::from(&dev));
    let name = loop_name(&dev);
    let image = PathBuf::from(sd["image"].as_str().unwrap());
    assert_eq!(ecs_sim::loopdev::backing_file(&name), Some(image.clone()));
    // Partition scanning: the partition shows, as on a virtio disk.
    let part = format!("/sys/block/{name}/{name}p1");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !Path::new(&part).exists() {
        assert!(Instant::now() < deadline, "{part} never appeared");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The device's bytes are the snapshot's.
    assert_eq!(
        std::fs::read(&link).unwrap(),
        std::fs::read(&snap_img).unwrap()
    );

    ok(&disk_call(&c, "DetachDisk", &id));
    assert!(
        !link.exists() && link.symlink_metadata().is_err(),
        "link removed at detach"
    );
    wait_unbound(&name);
    wait_status(&c, &id, "Available");
    ok(&disk_call(&c, "DeleteDisk", &id));
    assert!(!image.exists());
    let sd = state_disk(&h, &id);
    assert_eq!(sd["deleted"], true);
    assert!(sd["loop_device"].is_null() && sd["link"].is_null());
    let lines = w.log_lines();
    let att = lines
        .iter()
        .find(|l| l["event"] == "disk_attached")
        .unwrap();
    assert_eq!(att["no_device"], false);
    let appeared = lines
        .iter()
        .find(|l| l["event"] == "device_appeared")
        .unwrap();
    assert_eq!(appeared["loop_device"], dev.as_str());
}

#[test]
fn dropping_the_handle_detaches_and_unlinks() {
    root_or_skip!();
    let w = restore_world();
    let _sweep = Sweep(w.cfg.disk_dir());
    let h = start(&w);
    let c = client(&h, Scheme::V3);
    let g = create_group(&c, &[]);
    let (snap, _) = snapshot_of(&h, &g);
    let id = create_disk(&c, &snap, &[]);
    wait_status(&c, &id, "Available");
    ok(&disk_call(&c, "AttachDisk", &id));
    wait_status(&c, &id, "In_use");
    let sd = wait_device(&h, &id);
    let name = loop_name(sd["loop_device"].as_str().unwrap());
    let link = PathBuf::from(sd["link"].as_str().unwrap());
    drop(h);
    assert!(link.symlink_metadata().is_err(), "link removed");
    wait_unbound(&name);
}

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn sigkill_leaves_no_device_and_sweep_removes_the_link() {
    root_or_skip!();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    std::fs::write(dir.path().join("d1.raw"), vec![9u8; 1 << 20]).unwrap();
    let cfg = format!(
        r#"
region_id = "{REGION}"
zone_id = "cn-hangzhou-i"
instance_id = "{INSTANCE}"
snapshot_dir = "{d}/snapshots"
time_to_accomplish_secs = 0.0
[[access_keys]]
id = "{AK}"
secret = "{SECRET}"
[restore]
by_id_dir = "{d}/by-id"
create_delay_ms = 50
attach_delay_ms = 50
detach_delay_ms = 50
[[disk]]
id = "{DATA1}"
backing = "{d}/d1.raw"
"#
    );
    std::fs::write(dir.path().join("sim.toml"), cfg).unwrap();
    let disk_dir = dir.path().join("snapshots/disks");
    let _sweep = Sweep(disk_dir.clone());
    let ready = dir.path().join("ready");
    let child = Command::new(env!("CARGO_BIN_EXE_ecs-sim"))
        .arg("--config")
        .arg(dir.path().join("sim.toml"))
        .arg("--ready-file")
        .arg(&ready)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut sim = Kill(child);
    let (_, ecs) = wait_ready_file(&ready, Duration::from_secs(30)).expect("ready");
    let creds = Creds {
        access_key_id: AK.into(),
        secret: SECRET.into(),
        token: None,
    };
    let c = EcsClient::new(&ecs, creds, Scheme::V3);
    let g = ok(&c
        .call(
            "CreateSnapshotGroup",
            &[("RegionId", REGION), ("InstanceId", INSTANCE)],
        )
        .unwrap())["SnapshotGroupId"]
        .as_str()
        .unwrap()
        .to_string();
    let v = ok(&c
        .call(
            "DescribeSnapshotGroups",
            &[("RegionId", REGION), ("SnapshotGroupId.1", &g)],
        )
        .unwrap());
    let snap = v["SnapshotGroups"]["SnapshotGroup"][0]["Snapshots"]["Snapshot"][0]["SnapshotId"]
        .as_str()
        .unwrap()
        .to_string();
    let id = create_disk(&c, &snap, &[]);
    wait_status(&c, &id, "Available");
    ok(&disk_call(&c, "AttachDisk", &id));
    wait_status(&c, &id, "In_use");
    let link = dir
        .path()
        .join("by-id")
        .join(format!("virtio-{}", &id[2..]));
    // The device follows In_use; wait for the link as a client does.
    let deadline = Instant::now() + Duration::from_secs(10);
    while link.symlink_metadata().is_err() {
        assert!(Instant::now() < deadline, "link never appeared");
        std::thread::sleep(Duration::from_millis(20));
    }
    let dev = std::fs::read_link(&link).expect("link made");
    let name = loop_name(&dev.to_string_lossy());
    assert!(ecs_sim::loopdev::backing_file(&name).is_some());

    sim.0.kill().unwrap(); // SIGKILL: no handler runs
    sim.0.wait().unwrap();
    // Autoclear: the kernel detached the device when the emulator's fd closed.
    wait_unbound(&name);
    // The link dangles until a sweep (or the next emulator start) removes it.
    assert!(link.symlink_metadata().is_ok());
    let done = ecs_sim::loopdev::sweep(&disk_dir);
    assert!(done.iter().any(|l| l.contains("removed link")), "{done:?}");
    assert!(link.symlink_metadata().is_err());
}
