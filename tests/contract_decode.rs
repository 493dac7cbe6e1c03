//! appsnap's ECS decoders against answers built from the official SDK's
//! response models (alibabacloud-ecs20140526 7.11.8): every field present,
//! lists of two, tags on everything. A decoder whose field type disagrees
//! with the model (a bool where the model says string, a missing `TagKey`
//! alias, ...) fails here rather than on the first real answer.
//!
//! `tests/fixtures/sdk_models/` holds one generated answer per action
//! (regenerate: `tests/contract/run` writes them to a temp dir; copy with
//! `python3 tests/contract/drive.py --maximal-out tests/fixtures/sdk_models`
//! from the SDK venv). The ignored test reads a fresh set from
//! `APPSNAP_CONTRACT_DIR` (the contract lane sets it).

use std::path::{Path, PathBuf};

use appsnap::cloud::ecs::{Disk, Snapshot, SnapshotGroup};
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
