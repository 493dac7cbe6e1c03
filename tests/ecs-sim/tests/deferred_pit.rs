//! `pit_delay_ms`: CreateSnapshotGroup answers first and takes its point in
//! time later; until then the group has no members. `available_delay_ms`:
//! members are listed unusable for a while after the point in time.

mod support;

use std::time::{Duration, Instant};

use ecs_sim::testkit::{EcsClient, Scheme};
use ecs_sim::SimHandle;
use serde_json::Value;
use support::*;

fn pattern(seed: u8) -> Vec<u8> {
    (0..1usize << 20)
        .map(|i| (i as u8).wrapping_mul(29).wrapping_add(seed))
        .collect()
}

/// The group's entry in `/_sim/state`.
fn state_of(h: &SimHandle, id: &str) -> Value {
    let st = control(h, "GET", "/_sim/state", "").json();
    st["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("group {id} not in state: {st}"))
}

/// Polls (bounded, generous) until the group's point in time is recorded.
fn wait_pit(h: &SimHandle, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let g = state_of(h, id);
        if !g["copying"].as_bool().unwrap() {
            return g;
        }
        assert!(Instant::now() < deadline, "no point in time: {g}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn group(c: &EcsClient, id: &str) -> Value {
    let v = ok(&c
        .call(
            "DescribeSnapshotGroups",
            &[("RegionId", REGION), ("SnapshotGroupId.1", id)],
        )
        .unwrap());
    v["SnapshotGroups"]["SnapshotGroup"][0].clone()
}

fn snapshots_of(c: &EcsClient, disk: &str) -> Vec<Value> {
    let v = ok(&c
        .call(
            "DescribeSnapshots",
            &[("RegionId", REGION), ("DiskId", disk)],
        )
        .unwrap());
    v["Snapshots"]["Snapshot"].as_array().unwrap().clone()
}

#[test]
fn answer_comes_first_and_the_image_holds_what_was_written_until_the_point_in_time() {
    let mut w = world();
    w.cfg.pit_delay_ms = 2_000;
    let h = start(&w);
    let c = client(&h, Scheme::V3);
    std::fs::write(w.backing(DATA1), pattern(1)).unwrap();
    let id = create_group(&c, &[]);
    // Written after the answer, before the point in time: in the image.
    std::fs::write(w.backing(DATA1), pattern(2)).unwrap();
    let image = w.cfg.snapshot_dir.join(&id).join(format!("{DATA1}.img"));
    assert!(!image.exists(), "copied before the answer");
    let g = state_of(&h, &id);
    assert_eq!(g["copying"], true, "{g}");
    assert!(g["pit_at"].is_null(), "{g}");
    assert!(g["answered_at"].is_string(), "{g}");
    // Listed progressing, without members; its snapshots do not exist yet.
    let listed = group(&c, &id);
    assert_eq!(listed["Status"], "progressing", "{listed}");
    assert_eq!(
        listed["Snapshots"]["Snapshot"],
        serde_json::json!([]),
        "{listed}"
    );
    assert!(snapshots_of(&c, DATA1).is_empty());
    // The disks are busy meanwhile.
    let busy = c
        .call(
            "CreateSnapshotGroup",
            &[
                ("RegionId", REGION),
                ("InstanceId", INSTANCE),
                ("DiskId.1", DATA1),
            ],
        )
        .unwrap();
    assert_error(&busy, 403, "IncorrectDiskStatus.CreatingSnapshot");

    let g = wait_pit(&h, &id);
    // Written after the copy: not in the image.
    std::fs::write(w.backing(DATA1), pattern(3)).unwrap();
    assert_eq!(std::fs::read(&image).unwrap(), pattern(2));
    assert!(g["pit_at"].is_string(), "{g}");
    assert!(g["pit_after_answer_ms"].as_i64().unwrap() >= 2_000, "{g}");
    let listed = group(&c, &id);
    let members = listed["Snapshots"]["Snapshot"].as_array().unwrap();
    assert_eq!(members.len(), 2, "{listed}");
    assert_eq!(snapshots_of(&c, DATA1).len(), 1);
    // The request log has the answer, then one point_in_time line.
    let log = w.log_lines();
    let answer = log
        .iter()
        .find(|l| l["action"] == "CreateSnapshotGroup" && l["status"] == 200)
        .unwrap();
    assert!(answer["accept"]["pit_at"].is_null(), "{answer}");
    assert_eq!(answer["accept"]["pit_after_answer_ms"], 2_000, "{answer}");
    let pit = log
        .iter()
        .find(|l| l["event"] == "point_in_time")
        .expect("point_in_time line");
    assert_eq!(pit["snapshot_group_id"], id.as_str());
    assert_eq!(pit["pit_at"], g["pit_at"], "{pit}");
    assert!(pit["images"][DATA1].is_array(), "{pit}");
}

#[test]
fn immediate_point_in_time_is_before_the_answer() {
    let w = world();
    let h = start(&w);
    let c = client(&h, Scheme::V1);
    let id = create_group(&c, &[]);
    let g = state_of(&h, &id);
    assert_eq!(g["copying"], false, "{g}");
    assert!(g["pit_at"].is_string(), "{g}");
    assert!(g["pit_after_answer_ms"].as_i64().unwrap() <= 0, "{g}");
    assert_eq!(
        group(&c, &id)["Snapshots"]["Snapshot"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

#[test]
fn available_flips_after_the_delay_and_is_true_once_accomplished() {
    let w = world();
    let h = start(&w);
    let c = client(&h, Scheme::V3);
    // Run-time knobs: the plan's values win over the config's zeros.
    control(
        &h,
        "POST",
        "/_sim/faults",
        r#"{"pit_delay_ms": 10, "available_delay_ms": 20000}"#,
    );
    let id = create_group(&c, &[]);
    wait_pit(&h, &id);
    let listed = group(&c, &id);
    assert_eq!(listed["Status"], "progressing");
    for s in listed["Snapshots"]["Snapshot"].as_array().unwrap() {
        assert_eq!(s["Available"], false, "{listed}");
    }
    assert_eq!(snapshots_of(&c, DATA1)[0]["Available"], false);
    // 30 s later (emulator clock): usable, still uploading (60 s to go).
    advance_clock(&h, 30);
    let listed = group(&c, &id);
    assert_eq!(listed["Status"], "progressing");
    for s in listed["Snapshots"]["Snapshot"].as_array().unwrap() {
        assert_eq!(s["Available"], true, "{listed}");
    }
    assert_eq!(snapshots_of(&c, DATA1)[0]["Available"], true);

    // A delay longer than the upload: accomplished means available.
    control(
        &h,
        "POST",
        "/_sim/faults",
        r#"{"pit_delay_ms": 10, "available_delay_ms": 100000000}"#,
    );
    let id2 = c
        .call(
            "CreateSnapshotGroup",
            &[
                ("RegionId", REGION),
                ("InstanceId", INSTANCE),
                ("DiskId.1", SYS),
            ],
        )
        .unwrap()
        .json()["SnapshotGroupId"]
        .as_str()
        .unwrap()
        .to_string();
    wait_pit(&h, &id2);
    assert_eq!(
        group(&c, &id2)["Snapshots"]["Snapshot"][0]["Available"],
        false
    );
    advance_clock(&h, 120);
    let listed = group(&c, &id2);
    assert_eq!(listed["Status"], "accomplished", "{listed}");
    assert_eq!(
        listed["Snapshots"]["Snapshot"][0]["Available"], true,
        "{listed}"
    );
}

#[test]
fn delete_waits_for_the_point_in_time() {
    let mut w = world();
    w.cfg.pit_delay_ms = 1_500;
    let h = start(&w);
    let c = client(&h, Scheme::V3);
    let id = create_group(&c, &[]);
    let del = || {
        c.call(
            "DeleteSnapshotGroup",
            &[("RegionId", REGION), ("SnapshotGroupId", &id)],
        )
        .unwrap()
    };
    // Pessimistic: refused while the point in time is pending.
    let r = del();
    if state_of(&h, &id)["copying"] == true {
        assert_error(&r, 409, "OperationConflict");
    }
    wait_pit(&h, &id);
    let v = ok(&del());
    assert_eq!(
        v["OperationProgressSet"]["OperationProgress"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

#[test]
fn a_copy_that_fails_after_the_answer_marks_the_group_failed() {
    let mut w = world();
    w.cfg.pit_delay_ms = 10;
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
    let g = wait_pit(&h, &id);
    assert_eq!(g["status"], "failed", "{g}");
    let listed = group(&c, &id);
    assert_eq!(listed["Status"], "failed", "{listed}");
    for s in listed["Snapshots"]["Snapshot"].as_array().unwrap() {
        assert_eq!(s["Available"], false, "{listed}");
    }
    let log = w.log_lines();
    let pit = log
        .iter()
        .find(|l| l["event"] == "point_in_time")
        .expect("point_in_time line");
    assert!(
        pit["error"].as_str().unwrap().contains("missing.raw"),
        "{pit}"
    );
    // A failed group does not keep its disks busy.
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
