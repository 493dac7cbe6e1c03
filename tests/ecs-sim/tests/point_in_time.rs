//! The image copied at accept time is the disk's content at that moment.

mod support;

use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;

use ecs_sim::diskcopy::{copy_disk, CopyMethod};
use ecs_sim::testkit::Scheme;
use support::*;

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
fn image_equals_content_at_accept_not_after() {
    let w = world();
    let h = start(&w);
    let c = client(&h, Scheme::V3);
    let a1 = pattern(1, 1 << 20);
    let a2 = pattern(2, 1 << 20);
    std::fs::write(w.backing(DATA1), &a1).unwrap();
    std::fs::write(w.backing(DATA2), &a2).unwrap();
    let id = create_group(&c, &[]);
    // Overwrite right after the answer.
    std::fs::write(w.backing(DATA1), pattern(9, 1 << 20)).unwrap();
    std::fs::write(w.backing(DATA2), pattern(9, 1 << 20)).unwrap();
    let dir = w.cfg.snapshot_dir.join(&id);
    assert_eq!(std::fs::read(dir.join(format!("{DATA1}.img"))).unwrap(), a1);
    assert_eq!(std::fs::read(dir.join(format!("{DATA2}.img"))).unwrap(), a2);
    // The log records where each image went and how it was made.
    let log = w.log_lines();
    let acc = log
        .iter()
        .find(|l| l["action"] == "CreateSnapshotGroup")
        .unwrap();
    assert_eq!(acc["accept"]["snapshot_group_id"], id.as_str());
    assert!(acc["accept"]["images"][DATA1].is_array());
    // And the control endpoint shows the same.
    let st = control(&h, "GET", "/_sim/state", "").json();
    assert_eq!(st["groups"][0]["id"], id.as_str());
    assert_eq!(st["groups"][0]["snapshots"].as_array().unwrap().len(), 2);
}

#[test]
fn sparse_file_stays_sparse_and_identical() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("disk.raw");
    let mut f = std::fs::File::create(&src).unwrap();
    f.set_len(64 << 20).unwrap();
    f.seek(SeekFrom::Start(4096)).unwrap();
    f.write_all(&pattern(3, 8192)).unwrap();
    f.seek(SeekFrom::Start(40 << 20)).unwrap();
    f.write_all(&pattern(4, 4096)).unwrap();
    f.sync_all().unwrap();
    drop(f);
    let dst = dir.path().join("disk.img");
    let m = copy_disk(&src, &dst).unwrap();
    assert!(matches!(m, CopyMethod::Reflink | CopyMethod::SparseCopy));
    assert_eq!(std::fs::read(&src).unwrap(), std::fs::read(&dst).unwrap());
    let meta = std::fs::metadata(&dst).unwrap();
    assert_eq!(meta.len(), 64 << 20);
    // 512-byte blocks: far less than the 64 MiB apparent size.
    assert!(
        meta.blocks() * 512 < (8 << 20),
        "image not sparse: {} blocks",
        meta.blocks()
    );
    // Never overwrites an existing image.
    assert!(copy_disk(&src, &dst).is_err());
}

#[test]
fn copy_failure_answers_internal_error_and_leaves_no_group() {
    let mut w = world();
    let gone = w.path("missing.raw");
    w.cfg
        .disks
        .iter_mut()
        .find(|d| d.id == DATA2)
        .unwrap()
        .backing = gone;
    let h = start(&w);
    let c = client(&h, Scheme::V1);
    let r = c
        .call(
            "CreateSnapshotGroup",
            &[
                ("RegionId", REGION),
                ("InstanceId", INSTANCE),
                ("DiskId.1", DATA1),
                ("DiskId.2", DATA2),
            ],
        )
        .unwrap();
    assert_error(&r, 500, "InternalError");
    let v = ok(&c
        .call("DescribeSnapshotGroups", &[("RegionId", REGION)])
        .unwrap());
    assert_eq!(
        v["SnapshotGroups"]["SnapshotGroup"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    // The disks are not left busy.
    ok(&c
        .call(
            "CreateSnapshotGroup",
            &[
                ("RegionId", REGION),
                ("InstanceId", INSTANCE),
                ("DiskId.1", DATA1),
            ],
        )
        .unwrap());
}

#[test]
fn without_image_copies_the_group_is_recorded_but_nothing_is_read() {
    // copy_images = false (benchmarks): a backing file that would fail the
    // copy is never opened, and the group still exists with its snapshots.
    let mut w = world();
    w.cfg.copy_images = false;
    let gone = w.path("missing.raw");
    w.cfg
        .disks
        .iter_mut()
        .find(|d| d.id == DATA2)
        .unwrap()
        .backing = gone;
    let h = start(&w);
    let c = client(&h, Scheme::V3);
    let id = create_group(&c, &[]);
    assert!(!w.cfg.snapshot_dir.join(&id).exists());
    let v = ok(&c
        .call("DescribeSnapshotGroups", &[("RegionId", REGION)])
        .unwrap());
    let groups = v["SnapshotGroups"]["SnapshotGroup"].as_array().unwrap();
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0]["SnapshotGroupId"], id.as_str());
    let log = w.log_lines();
    let acc = log
        .iter()
        .find(|l| l["action"] == "CreateSnapshotGroup")
        .unwrap();
    assert_eq!(acc["accept"]["images"], serde_json::json!({}));
}

#[test]
fn probe_on_a_writable_directory_reports_not_frozen() {
    let mut w = world();
    let mnt = w.path("mnt");
    std::fs::create_dir(&mnt).unwrap();
    w.cfg
        .disks
        .iter_mut()
        .find(|d| d.id == DATA1)
        .unwrap()
        .probe_mounts = vec![mnt.clone()];
    let h = start(&w);
    let c = client(&h, Scheme::V3);
    create_group(&c, &[]);
    let st = control(&h, "GET", "/_sim/state", "").json();
    let probes = &st["groups"][0]["frozen_at_accept"][DATA1];
    assert_eq!(probes[0]["frozen"], false, "{st}");
    // The probe left nothing behind.
    assert_eq!(std::fs::read_dir(&mnt).unwrap().count(), 0);
}
