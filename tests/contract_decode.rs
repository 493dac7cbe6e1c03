//! appsnap's ECS decoders against answers built from the official SDK's
//! response models (alibabacloud-ecs20140526 7.11.8): every field present,
//! lists of two, tags on everything. A decoder whose field type disagrees
//! with the model (a bool where the model says string, a missing `TagKey`
//! alias, ...) fails here rather than on the first real answer.
//!
//! Besides the maximal answers, two files come from the lane's live run of
//! a restore drill's disk actions against the emulator:
//! `DescribeDisks.created.json` (the SDK's own `to_map()` of a DescribeDisks
//! answer for two disks CreateDisk made, one attached) and `DiskErrors.json`
//! (the error codes the SDK raised for the documented refusals).
//!
//! `tests/fixtures/sdk_models/` holds one generated set (regenerate:
//! `APPSNAP_CONTRACT_UPDATE_FIXTURES=1 tests/contract/run` copies a passing
//! run's files there; the maximal answers alone also come from
//! `python3 tests/contract/drive.py --maximal-out tests/fixtures/sdk_models`
//! in the SDK venv). The ignored test reads a fresh set from
//! `APPSNAP_CONTRACT_DIR` (the contract lane sets it).

use std::path::{Path, PathBuf};

use appsnap::cloud::ecs::{
    is_category_unsupported, Disk, Snapshot, SnapshotGroup, DISK_NOT_FOUND_CODES,
    NOT_ATTACHED_CODES,
};
use serde::de::DeserializeOwned;
use serde_json::Value;

fn load(dir: &Path, action: &str) -> Value {
    let p = dir.join(format!("{action}.json"));
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// `Outer.Inner` decoded the way `EcsClient::paged` does it.
fn items<T: DeserializeOwned>(body: &Value, outer: &str, inner: &str) -> Vec<T> {
    let list = body[outer][inner].clone();
    assert!(list.is_array(), "{outer}.{inner} is not a list in {body}");
    serde_json::from_value(list).unwrap_or_else(|e| panic!("{outer}.{inner}: {e}"))
}

fn decode_all(dir: &Path) {
    // DescribeDisks: {TagKey, TagValue} tags, Size an integer.
    let disks: Vec<Disk> = items(&load(dir, "DescribeDisks"), "Disks", "Disk");
    assert_eq!(disks.len(), 2);
    assert_ne!(disks[0].disk_id, disks[1].disk_id);
    for d in &disks {
        assert!(d.disk_id.starts_with("DiskId-"), "{d:?}");
        assert!(d.serial_number.starts_with("SerialNumber-"), "{d:?}");
        assert!(d.size > 0, "{d:?}");
        assert!(
            !d.multi_attach.is_empty() && !d.disk_type.is_empty(),
            "{d:?}"
        );
        // What a restore drill reads of its disks.
        assert!(
            d.source_snapshot_id.starts_with("SourceSnapshotId-"),
            "{d:?}"
        );
        assert!(
            d.performance_level.starts_with("PerformanceLevel-"),
            "{d:?}"
        );
        assert!(d.delete_with_instance, "{d:?}");
        assert_eq!(d.tags.len(), 2, "{d:?}");
        assert!(d.tags.iter().all(|t| t.key.starts_with("TagKey-")), "{d:?}");
    }

    // CreateSnapshotGroup: the id.
    let created = load(dir, "CreateSnapshotGroup");
    assert!(created["SnapshotGroupId"].is_string(), "{created}");

    // DescribeSnapshotGroups: {Key, Value} tags on groups and members,
    // `Available` a bool, `Progress` a string.
    let groups: Vec<SnapshotGroup> = items(
        &load(dir, "DescribeSnapshotGroups"),
        "SnapshotGroups",
        "SnapshotGroup",
    );
    assert_eq!(groups.len(), 2);
    for g in &groups {
        assert!(g.snapshot_group_id.starts_with("SnapshotGroupId-"), "{g:?}");
        assert_eq!(g.tags.len(), 2, "{g:?}");
        assert!(g
            .tags
            .iter()
            .all(|t| t.key.starts_with("Key-") && t.value.starts_with("Value-")));
        assert_eq!(g.snapshots.len(), 2, "{g:?}");
        for s in &g.snapshots {
            assert!(s.available, "{s:?}");
            assert!(s.snapshot_id.starts_with("SnapshotId-"), "{s:?}");
            assert!(s.progress.starts_with("Progress-"), "{s:?}");
        }
    }

    // DescribeSnapshots: {TagKey, TagValue} tags.
    let snaps: Vec<Snapshot> = items(&load(dir, "DescribeSnapshots"), "Snapshots", "Snapshot");
    assert_eq!(snaps.len(), 2);
    for s in &snaps {
        assert!(s.available, "{s:?}");
        assert_eq!(s.tags.len(), 2, "{s:?}");
        assert!(s
            .tags
            .iter()
            .all(|t| t.key.starts_with("TagKey-") && t.value.starts_with("TagValue-")));
    }

    // DeleteSnapshotGroup: the pointers delete_snapshot_group reads.
    let deleted = load(dir, "DeleteSnapshotGroup");
    let ops = deleted
        .pointer("/OperationProgressSet/OperationProgress")
        .and_then(Value::as_array)
        .expect("OperationProgressSet.OperationProgress");
    assert_eq!(ops.len(), 2);
    for op in ops {
        for p in [
            "/OperationStatus",
            "/ErrorCode",
            "/ErrorMsg",
            "/RelatedItemSet/RelatedItem/0/Value",
        ] {
            assert!(op.pointer(p).is_some_and(Value::is_string), "{p} in {op}");
        }
    }

    // TagResources: nothing but the request id.
    assert!(load(dir, "TagResources")["RequestId"].is_string());

    // The drill's disk actions: CreateDisk's id (what `create_disk` reads),
    // the others nothing but the request id.
    let created = load(dir, "CreateDisk");
    assert!(
        created["DiskId"]
            .as_str()
            .is_some_and(|s| s.starts_with("DiskId-")),
        "{created}"
    );
    for action in ["AttachDisk", "DetachDisk", "DeleteDisk"] {
        assert!(load(dir, action)["RequestId"].is_string(), "{action}");
    }

    decode_drill_disks(dir);
    classify_drill_errors(dir);
}

/// What the lane's drill tagged its disks with (tests/contract/disks.py
/// `DRILL_TAGS`) and the instance it attached one to (tests/contract/run).
const DRILL_TAGS: [(&str, &str); 2] = [("appsnap:verify", "contract-run"), ("owner", "ops")];
const LANE_INSTANCE: &str = "i-bp1contract000000000";

/// `DescribeDisks.created.json`: the SDK's `to_map()` of a DescribeDisks
/// answer listing two disks CreateDisk made from the lane's group, one
/// attached (`DeleteWithInstance=true`, as appsnap attaches), one not. The
/// fields a drill reads must decode to what the SDK read.
fn decode_drill_disks(dir: &Path) {
    let body = load(dir, "DescribeDisks.created");
    let disks: Vec<Disk> = items(&body, "Disks", "Disk");
    assert_eq!(disks.len(), 2, "{body}");
    let sdk = body["Disks"]["Disk"].as_array().expect("Disks.Disk");
    for (d, raw) in disks.iter().zip(sdk) {
        // Every field a drill reads equals the SDK's own reading.
        for (field, got) in [
            ("DiskId", &d.disk_id),
            ("SourceSnapshotId", &d.source_snapshot_id),
            ("SerialNumber", &d.serial_number),
            ("Status", &d.status),
            ("InstanceId", &d.instance_id),
            ("Category", &d.category),
            ("PerformanceLevel", &d.performance_level),
            ("ZoneId", &d.zone_id),
        ] {
            assert_eq!(raw[field].as_str(), Some(got.as_str()), "{field} of {raw}");
        }
        assert_eq!(
            raw["DeleteWithInstance"].as_bool(),
            Some(d.delete_with_instance),
            "{raw}"
        );
        assert_eq!(raw["Size"].as_u64(), Some(d.size), "{raw}");
        assert!(d.disk_id.starts_with("d-"), "{d:?}");
        assert!(d.source_snapshot_id.starts_with("s-"), "{d:?}");
        assert!(!d.serial_number.is_empty() && d.size > 0, "{d:?}");
        assert_eq!(
            (
                d.category.as_str(),
                d.performance_level.as_str(),
                d.disk_type.as_str()
            ),
            ("cloud_essd", "PL0", "data"),
            "{d:?}"
        );
        let mut tags: Vec<(&str, &str)> = d
            .tags
            .iter()
            .map(|t| (t.key.as_str(), t.value.as_str()))
            .collect();
        tags.sort_unstable();
        assert_eq!(tags, DRILL_TAGS, "{d:?}");
        assert_eq!(d.tag("appsnap:verify"), Some("contract-run"));
    }
    assert_ne!(disks[0].source_snapshot_id, disks[1].source_snapshot_id);
    let attached = disks
        .iter()
        .find(|d| d.status == "In_use")
        .expect("an In_use disk");
    assert_eq!(attached.instance_id, LANE_INSTANCE, "{attached:?}");
    assert!(attached.delete_with_instance, "{attached:?}");
    let free = disks
        .iter()
        .find(|d| d.status == "Available")
        .expect("an Available disk");
    assert!(free.instance_id.is_empty(), "{free:?}");
    assert!(!free.delete_with_instance, "{free:?}");
}

/// `DiskErrors.json`: the codes the SDK raised for the drill's refusals.
/// The category refusals must move a drill to its next category, nothing
/// else may (a missing snapshot would fail the same way in every category).
fn classify_drill_errors(dir: &Path) {
    let codes = load(dir, "DiskErrors");
    let code = |case: &str| {
        codes[case]
            .as_str()
            .unwrap_or_else(|| panic!("{case} in {codes}"))
            .to_string()
    };
    for case in ["category_basic", "category_ephemeral", "category_unknown"] {
        assert!(is_category_unsupported(&code(case)), "{case}: {codes}");
    }
    for case in ["snapshot_not_found", "delete_attached", "detach_detached"] {
        assert!(!is_category_unsupported(&code(case)), "{case}: {codes}");
        assert!(
            !DISK_NOT_FOUND_CODES.contains(&code(case).as_str()),
            "{case}: {codes}"
        );
    }
    // DetachDisk of a disk already detached is done, not a failure: a
    // drill's cleanup must go on to delete it.
    assert!(
        NOT_ATTACHED_CODES.contains(&code("detach_detached").as_str()),
        "{codes}"
    );
    assert!(!NOT_ATTACHED_CODES.contains(&code("delete_attached").as_str()));
}

#[test]
fn decoders_accept_the_committed_maximal_sdk_answers() {
    decode_all(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sdk_models"));
}

/// The contract lane's fresh answers (`tests/contract/run`).
#[test]
#[ignore = "run by tests/contract/run with APPSNAP_CONTRACT_DIR"]
fn decoders_accept_freshly_generated_maximal_sdk_answers() {
    let dir = PathBuf::from(
        std::env::var_os("APPSNAP_CONTRACT_DIR").expect("APPSNAP_CONTRACT_DIR is set"),
    );
    decode_all(&dir);
}
