//! `[restore] attach_command` / `detach_command`: the VM lane's hot-plug hook
//! (tests/vm/hotplug). Without root: the commands are small shell scripts
//! that record their arguments.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use ecs_sim::testkit::Scheme;
use serde_json::Value;
use support::*;

/// A script that appends its arguments (one line) to `log`, prints `say` on
/// stderr and exits `rc`.
fn script(dir: &Path, name: &str, log: &Path, say: &str, rc: i32) -> String {
    let p = dir.join(name);
    std::fs::write(
        &p,
        format!(
            "#!/bin/sh\necho \"$@\" >>'{}'\necho '{say}' >&2\nexit {rc}\n",
            log.display()
        ),
    )
    .unwrap();
    std::process::Command::new("chmod")
        .arg("0755")
        .arg(&p)
        .status()
        .unwrap();
    p.to_string_lossy().into_owned()
}

/// The created disk `id` in `/_sim/state`, once `pred` holds (10 s at most).
fn wait_created(h: &ecs_sim::SimHandle, id: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let st = sim_state(h);
        let d = st["created_disks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["id"] == id)
            .cloned()
            .expect("created disk in state");
        if pred(&d) {
            return d;
        }
        assert!(Instant::now() < deadline, "{id}: condition never held: {d}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn attach_and_detach_run_the_commands_with_image_serial_and_id() {
    let mut w = restore_world();
    w.cfg.restore.by_id_dir = None; // the commands alone suffice
    let (att, det) = (w.path("attach.log"), w.path("detach.log"));
    let dir = w.path("");
    w.cfg.restore.attach_command = Some(vec![script(&dir, "plug", &att, "", 0), "--plug".into()]);
    w.cfg.restore.detach_command = Some(vec![script(&dir, "unplug", &det, "", 0)]);
    let h = start(&w);
    let c = client(&h, Scheme::V3);
    let g = create_group(&c, &[]);
    let (snap, _) = snapshot_of(&h, &g);
    let id = create_disk(&c, &snap, &[]);
    wait_status(&c, &id, "Available");
    ok(&disk_call(&c, "AttachDisk", &id));
    wait_status(&c, &id, "In_use");
    let d = wait_created(&h, &id, |d| d["hotplugged"] == true);
    let image = d["image"].as_str().unwrap().to_string();
    let serial = &id[2..];
    assert_eq!(serial.len(), 20);
    assert_eq!(lines(&att), [format!("--plug {image} {serial} {id}")]);
    assert!(lines(&det).is_empty(), "nothing unplugged yet");
    assert!(d["loop_device"].is_null() && d["link"].is_null(), "{d}");
    assert!(d["last_error"].is_null(), "{d}");
    assert!(w
        .log_lines()
        .iter()
        .any(|l| l["event"] == "device_appeared" && l["disk_id"] == id.as_str()));

    ok(&disk_call(&c, "DetachDisk", &id));
    wait_status(&c, &id, "Available");
    assert_eq!(lines(&det), [format!("{image} {serial} {id}")]);
    let d = wait_created(&h, &id, |_| true);
    assert_eq!(d["hotplugged"], false);
    ok(&disk_call(&c, "DeleteDisk", &id));
    // A second attach runs the command again.
    assert_eq!(lines(&att).len(), 1);
}

#[test]
fn a_failing_attach_command_fails_the_attach_with_last_error() {
    let mut w = restore_world();
    let (att, det) = (w.path("attach.log"), w.path("detach.log"));
    let dir = w.path("");
    w.cfg.restore.attach_command = Some(vec![script(&dir, "plug", &att, "no free root port", 3)]);
    w.cfg.restore.detach_command = Some(vec![script(&dir, "unplug", &det, "", 0)]);
    let h = start(&w);
    let c = client(&h, Scheme::V3);
    let g = create_group(&c, &[]);
    let (snap, _) = snapshot_of(&h, &g);
    let id = create_disk(&c, &snap, &[]);
    wait_status(&c, &id, "Available");
    ok(&disk_call(&c, "AttachDisk", &id));
    let d = wait_created(&h, &id, |d| !d["last_error"].is_null());
    let e = d["last_error"].as_str().unwrap();
    assert!(e.contains("plug") && e.contains(&id), "{e}");
    assert!(e.contains("exit status: 3"), "{e}");
    assert!(e.contains("no free root port"), "{e}");
    assert_eq!(d["hotplugged"], false);
    // by_id_dir is set too: the command wins, no link is made.
    assert!(d["link"].is_null() && d["loop_device"].is_null(), "{d}");
    assert_eq!(lines(&att).len(), 1);
    let failed = w
        .log_lines()
        .into_iter()
        .find(|l| l["event"] == "attach_failed" && l["disk_id"] == id.as_str())
        .expect("attach_failed line");
    assert!(failed["error"]
        .as_str()
        .unwrap()
        .contains("no free root port"));
    // No device was made, so detaching runs no unplug.
    ok(&disk_call(&c, "DetachDisk", &id));
    wait_status(&c, &id, "Available");
    assert!(lines(&det).is_empty(), "{:?}", lines(&det));
}

#[test]
fn a_failing_detach_command_leaves_the_disk_detaching() {
    let mut w = restore_world();
    let (att, det) = (w.path("attach.log"), w.path("detach.log"));
    let dir = w.path("");
    w.cfg.restore.attach_command = Some(vec![script(&dir, "plug", &att, "", 0)]);
    w.cfg.restore.detach_command = Some(vec![script(&dir, "unplug", &det, "device busy", 1)]);
    let h = start(&w);
    let c = client(&h, Scheme::V3);
    let g = create_group(&c, &[]);
    let (snap, _) = snapshot_of(&h, &g);
    let id = create_disk(&c, &snap, &[]);
    wait_status(&c, &id, "Available");
    ok(&disk_call(&c, "AttachDisk", &id));
    wait_created(&h, &id, |d| d["hotplugged"] == true);
    ok(&disk_call(&c, "DetachDisk", &id));
    let d = wait_created(&h, &id, |d| !d["last_error"].is_null());
    assert!(
        d["last_error"].as_str().unwrap().contains("device busy"),
        "{d}"
    );
    std::thread::sleep(Duration::from_millis(500)); // well past detach_delay_ms
    assert_eq!(describe_disk(&c, &id).unwrap()["Status"], "Detaching");
    assert_eq!(lines(&det).len(), 1);
    assert!(w
        .log_lines()
        .iter()
        .any(|l| l["event"] == "detach_failed" && l["disk_id"] == id.as_str()));
}

#[test]
fn an_attach_command_past_its_timeout_is_killed_and_fails() {
    let mut w = restore_world();
    let dir = w.path("");
    let slow = dir.join("slow");
    std::fs::write(&slow, "#!/bin/sh\nexec sleep 30\n").unwrap();
    std::process::Command::new("chmod")
        .arg("0755")
        .arg(&slow)
        .status()
        .unwrap();
    w.cfg.restore.attach_command = Some(vec![slow.to_string_lossy().into_owned()]);
    w.cfg.restore.detach_command = Some(vec!["/bin/true".into()]);
    w.cfg.restore.command_timeout_ms = 500;
    let h = start(&w);
    let c = client(&h, Scheme::V3);
    let g = create_group(&c, &[]);
    let (snap, _) = snapshot_of(&h, &g);
    let id = create_disk(&c, &snap, &[]);
    wait_status(&c, &id, "Available");
    let t = Instant::now();
    ok(&disk_call(&c, "AttachDisk", &id));
    let d = wait_created(&h, &id, |d| !d["last_error"].is_null());
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    let e = d["last_error"].as_str().unwrap();
    assert!(e.contains("timed out after 500 ms"), "{e}");
    assert_eq!(d["hotplugged"], false);
}

#[test]
fn attach_command_without_detach_command_is_refused() {
    let mut w = restore_world();
    w.cfg.restore.attach_command = Some(vec!["/bin/true".into()]);
    let e = w.cfg.validate().unwrap_err().to_string();
    assert!(e.contains("detach_command"), "{e}");
    w.cfg.restore.detach_command = Some(vec![]);
    let e = w.cfg.validate().unwrap_err().to_string();
    assert!(e.contains("must name a program"), "{e}");
    w.cfg.restore.detach_command = Some(vec!["/bin/true".into()]);
    w.cfg.validate().unwrap();
}
