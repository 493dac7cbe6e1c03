//! The six ECS actions and their §3 validation rules.

mod support;

use ecs_sim::config::{DiskConfig, DiskType};
use ecs_sim::testkit::Scheme;
use serde_json::Value;
use support::*;

fn csg(c: &ecs_sim::testkit::EcsClient, p: &[(&str, &str)]) -> ecs_sim::testkit::HttpResponse {
    let mut all = vec![("RegionId", REGION)];
    all.extend_from_slice(p);
    c.call("CreateSnapshotGroup", &all).unwrap()
}

#[test]
fn describe_disks_fields_and_filters() {
    let w = world();
    let h = start(&w);
    let c = client(&h, Scheme::V3);
    let v = ok(&c
        .call(
            "DescribeDisks",
            &[("RegionId", REGION), ("InstanceId", INSTANCE)],
        )
        .unwrap());
    let disks = v["Disks"]["Disk"].as_array().unwrap();
    assert_eq!(disks.len(), 3);
    let d = disks.iter().find(|d| d["DiskId"] == DATA1).unwrap();
    assert_eq!(d["SerialNumber"], "bp1data100000000000");
    assert_eq!(d["Category"], "cloud_essd");
    assert_eq!(d["MultiAttach"], "Disabled");
    assert_eq!(d["Status"], "In_use");
    assert_eq!(d["Type"], "data");
    assert_eq!(d["InstanceId"], INSTANCE);
    assert_eq!(d["Size"], 40);
    let sys = disks.iter().find(|d| d["DiskId"] == SYS).unwrap();
    assert_eq!(sys["Type"], "system");

    let ids = format!("[\"{DATA2}\",\"{MULTI}\"]");
    let v = ok(&c
        .call("DescribeDisks", &[("RegionId", REGION), ("DiskIds", &ids)])
        .unwrap());
    let got: Vec<&str> = v["Disks"]["Disk"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["DiskId"].as_str().unwrap())
        .collect();
    assert_eq!(got, [DATA2, MULTI]);
    let m = &v["Disks"]["Disk"][1];
    assert_eq!(m["MultiAttach"], "Enabled");
    assert_eq!(m["Status"], "Available");

    let v = ok(&c
        .call(
            "DescribeDisks",
            &[("RegionId", REGION), ("DiskType", "system")],
        )
        .unwrap());
    assert_eq!(v["TotalCount"], 1);
    let v = ok(&c
        .call(
            "DescribeDisks",
            &[("RegionId", REGION), ("Category", "cloud_efficiency")],
        )
        .unwrap());
    assert_eq!(v["Disks"]["Disk"][0]["DiskId"], OLDCAT);
    assert_error(
        &c.call(
            "DescribeDisks",
            &[("RegionId", REGION), ("DiskIds", "d-1,d-2")],
        )
        .unwrap(),
        400,
        "InvalidParameter",
    );
}

#[test]
fn describe_disks_pages_with_next_token() {
    let mut w = world();
    for i in 0..12 {
        let id = format!("d-bp1page{i:011}");
        let backing = w.path(&format!("{id}.raw"));
        std::fs::write(&backing, b"").unwrap();
        w.cfg.disks.push(DiskConfig {
            id,
            serial: None,
            category: "cloud_auto".into(),
            disk_type: DiskType::Data,
            multi_attach: false,
            size_gib: 20,
            instance_id: None,
            status: None,
            zone_id: None,
            backing,
            probe_mounts: vec![],
            tags: Default::default(),
        });
    }
    let h = start(&w);
    let c = client(&h, Scheme::V1);
    let base = [
        ("RegionId", REGION),
        ("InstanceId", INSTANCE),
        ("MaxResults", "10"),
    ];
    let p1 = ok(&c.call("DescribeDisks", &base).unwrap());
    assert_eq!(p1["Disks"]["Disk"].as_array().unwrap().len(), 10);
    assert_eq!(p1["TotalCount"], 15);
    let tok = p1["NextToken"].as_str().unwrap().to_string();
    assert!(!tok.is_empty());
    let mut p = base.to_vec();
    p.push(("NextToken", &tok));
    let p2 = ok(&c.call("DescribeDisks", &p).unwrap());
    assert_eq!(p2["Disks"]["Disk"].as_array().unwrap().len(), 5);
    assert_eq!(p2["NextToken"], "");
    let mut all: Vec<String> = [&p1, &p2]
        .iter()
        .flat_map(|v| {
            v["Disks"]["Disk"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["DiskId"].as_str().unwrap().to_string())
        })
        .collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 15);
    // Out of range is clamped (alibaba-api.md §0 item 12), not refused.
    let v = ok(&c
        .call(
            "DescribeDisks",
            &[
                ("RegionId", REGION),
                ("InstanceId", INSTANCE),
                ("MaxResults", "5"),
            ],
        )
        .unwrap());
    assert_eq!(v["Disks"]["Disk"].as_array().unwrap().len(), 10, "{v}");
    let v = ok(&c
        .call(
            "DescribeDisks",
            &[
                ("RegionId", REGION),
                ("InstanceId", INSTANCE),
                ("MaxResults", "900"),
            ],
        )
        .unwrap());
    assert_eq!(v["Disks"]["Disk"].as_array().unwrap().len(), 15, "{v}");
    assert_eq!(v["NextToken"], "", "{v}");
    assert_error(
        &c.call(
            "DescribeDisks",
            &[("RegionId", REGION), ("MaxResults", "five")],
        )
        .unwrap(),
        400,
        "InvalidParameter.MaxResults",
    );
    assert_error(
        &c.call(
            "DescribeDisks",
            &[("RegionId", REGION), ("NextToken", "garbage")],
        )
        .unwrap(),
        400,
        "InvalidParameter.NextToken",
    );
}

/// Parameters, expected HTTP status, expected code.
type Case<'a> = (Vec<(&'a str, &'a str)>, u16, &'a str);

#[test]
fn create_snapshot_group_validation_errors() {
    let w = world();
    let h = start(&w);
    let c = client(&h, Scheme::V3);
    let i = ("InstanceId", INSTANCE);
    let d1 = ("DiskId.1", DATA1);
    let long_token = "x".repeat(65);
    let cases: Vec<Case> = vec![
        (
            vec![i, d1, ("ExcludeDiskId.1", DATA2)],
            400,
            "InvalidParameter",
        ),
        (vec![], 400, "MissingParameter"),
        (
            vec![("InstanceId", "i-bp1nosuchinstance000"), d1],
            404,
            "InvalidInstanceId.NotFound",
        ),
        (
            vec![i, ("DiskId.1", "d-bp1nosuchdisk000000")],
            404,
            "InvalidDiskId.NotFound",
        ),
        (
            vec![i, ("DiskId.1", OTHER)],
            403,
            "InvalidDiskId.NotBelongToInstance",
        ),
        (
            vec![("DiskId.1", MULTI)],
            403,
            "InvalidOperation.MultiAttachDisk",
        ),
        (
            vec![("DiskId.1", OLDCAT)],
            403,
            "InvalidDiskCategory.NotSupported",
        ),
        (
            vec![i, ("ExcludeDiskId.1", OTHER)],
            403,
            "InvalidDiskId.NotBelongToInstance",
        ),
        (
            vec![
                i,
                ("ExcludeDiskId.1", SYS),
                ("ExcludeDiskId.2", DATA1),
                ("ExcludeDiskId.3", DATA2),
            ],
            400,
            "InvalidParameter",
        ),
        (
            vec![i, d1, ("Name", "1starts-with-digit")],
            400,
            "InvalidParameter.Name",
        ),
        (vec![i, d1, ("Name", "a")], 400, "InvalidParameter.Name"),
        (
            vec![i, d1, ("Name", "http://x")],
            400,
            "InvalidParameter.Name",
        ),
        (
            vec![i, d1, ("Name", "has space")],
            400,
            "InvalidParameter.Name",
        ),
        (
            vec![i, d1, ("Description", "https://example")],
            404,
            "InvalidDescription.Malformed",
        ),
        (
            vec![i, d1, ("Description", "x")],
            404,
            "InvalidDescription.Malformed",
        ),
        (
            vec![i, d1, ("Tag.1.Key", "aliyun-x"), ("Tag.1.Value", "v")],
            400,
            "InvalidTagKey.Malformed",
        ),
        (
            vec![i, d1, ("Tag.1.Key", "acs:x")],
            400,
            "InvalidTagKey.Malformed",
        ),
        (
            vec![i, d1, ("Tag.1.Key", "")],
            400,
            "InvalidTagKey.Malformed",
        ),
        (
            vec![i, d1, ("Tag.1.Value", "orphan")],
            400,
            "InvalidTagKey.Malformed",
        ),
        (
            vec![i, d1, ("Tag.1.Key", "k"), ("Tag.1.Value", "acs:v")],
            400,
            "InvalidTagValue.Malformed",
        ),
        (
            vec![i, d1, ("Tag.1.Key", "k"), ("Tag.2.Key", "k")],
            400,
            "Duplicate.TagKey",
        ),
        (
            vec![i, d1, ("ClientToken", long_token.as_str())],
            400,
            "InvalidClientToken.Malformed",
        ),
    ];
    for (p, status, code) in &cases {
        let r = csg(&c, p);
        assert_eq!(r.code().as_deref(), Some(*code), "{p:?}: {}", r.text());
        assert_error(&r, *status, code);
    }
    let long_key = "k".repeat(129);
    assert_error(
        &csg(&c, &[i, d1, ("Tag.1.Key", &long_key)]),
        400,
        "InvalidTagKey.Malformed",
    );
    let long_val = "v".repeat(129);
    assert_error(
        &csg(&c, &[i, d1, ("Tag.1.Key", "k"), ("Tag.1.Value", &long_val)]),
        400,
        "InvalidTagValue.Malformed",
    );
    let keys: Vec<String> = (1..=21).map(|n| format!("Tag.{n}.Key")).collect();
    let vals: Vec<String> = (1..=21).map(|n| format!("k{n}")).collect();
    let mut p = vec![i, d1];
    p.extend(
        keys.iter()
            .map(String::as_str)
            .zip(vals.iter().map(String::as_str)),
    );
    assert_error(&csg(&c, &p), 403, "QuotaExceed.Tags");
    // Nothing above created a group.
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
}

#[test]
fn valid_names_descriptions_and_tags_are_accepted() {
    let w = world();
    let h = start(&w);
    let c = client(&h, Scheme::V1);
    let id = create_group(
        &c,
        &[
            ("Name", "appsnap-mysql-2025-01-02T03:04:05Z"),
            ("Description", "app-consistent: fsfreeze /data; a*b~c"),
            ("Tag.1.Key", "appsnap:job"),
            ("Tag.1.Value", ""),
            ("Tag.2.Key", "env"),
            ("Tag.2.Value", "prod"),
        ],
    );
    let v = ok(&c
        .call(
            "DescribeSnapshotGroups",
            &[("RegionId", REGION), ("SnapshotGroupId.1", &id)],
        )
        .unwrap());
    let g = &v["SnapshotGroups"]["SnapshotGroup"][0];
    assert_eq!(g["Name"], "appsnap-mysql-2025-01-02T03:04:05Z");
    assert_eq!(g["InstanceId"], INSTANCE);
    assert_eq!(g["Tags"]["Tag"].as_array().unwrap().len(), 2);
    // Chinese names are allowed.
    let c3 = client(&h, Scheme::V3);
    let r = csg(
        &c3,
        &[
            ("InstanceId", INSTANCE),
            ("ExcludeDiskId.1", DATA1),
            ("ExcludeDiskId.2", DATA2),
            ("Name", "备份-nightly"),
        ],
    );
    ok(&r);
}

#[test]
fn instance_only_includes_the_system_disk_and_exclude_works() {
    let w = world();
    let h = start(&w);
    let c = client(&h, Scheme::V3);
    let v = ok(&csg(
        &c,
        &[("InstanceId", INSTANCE), ("ExcludeDiskId.1", DATA2)],
    ));
    let id = v["SnapshotGroupId"].as_str().unwrap();
    let v = ok(&c
        .call(
            "DescribeSnapshotGroups",
            &[("RegionId", REGION), ("SnapshotGroupId.1", id)],
        )
        .unwrap());
    let mut disks: Vec<&str> = v["SnapshotGroups"]["SnapshotGroup"][0]["Snapshots"]["Snapshot"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["SourceDiskId"].as_str().unwrap())
        .collect();
    disks.sort();
    assert_eq!(disks, [DATA1, SYS]);
}

#[test]
fn group_lifecycle_progressing_then_accomplished_then_deleted() {
    let w = world();
    let h = start(&w);
    let c = client(&h, Scheme::V3);
    let id = create_group(&c, &[]);
    let dsg = |extra: &[(&str, &str)]| {
        let mut p = vec![("RegionId", REGION)];
        p.extend_from_slice(extra);
        ok(&c.call("DescribeSnapshotGroups", &p).unwrap())
    };
    let g = dsg(&[("SnapshotGroupId.1", &id)])["SnapshotGroups"]["SnapshotGroup"][0].clone();
    assert_eq!(g["Status"], "progressing");
    let snaps = g["Snapshots"]["Snapshot"].as_array().unwrap().clone();
    assert_eq!(snaps.len(), 2);
    for s in &snaps {
        assert!(
            s.get("Status").is_none(),
            "per-snapshot entries have no Status"
        );
        assert!(s["Progress"].as_str().unwrap().ends_with('%'));
        // Instant access (ESSD): usable as soon as the point in time is taken.
        assert_eq!(s["Available"], true);
    }
    // DescribeSnapshots shows them progressing.
    let v = ok(&c
        .call(
            "DescribeSnapshots",
            &[("RegionId", REGION), ("Status", "progressing")],
        )
        .unwrap());
    assert_eq!(v["Snapshots"]["Snapshot"].as_array().unwrap().len(), 2);
    let v = ok(&c
        .call(
            "DescribeSnapshots",
            &[
                ("RegionId", REGION),
                ("DiskId", DATA1),
                ("Status", "progressing"),
            ],
        )
        .unwrap());
    assert_eq!(v["Snapshots"]["Snapshot"][0]["SourceDiskId"], DATA1);
    assert_eq!(v["Snapshots"]["Snapshot"][0]["Status"], "progressing");
    // Filtering groups by status.
    let v = dsg(&[("Status.1", "accomplished")]);
    assert_eq!(
        v["SnapshotGroups"]["SnapshotGroup"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    assert_error(
        &c.call(
            "DescribeSnapshotGroups",
            &[("RegionId", REGION), ("Status.1", "done")],
        )
        .unwrap(),
        403,
        "InvalidStatus.ValueNotSupported",
    );

    advance_clock(&h, 61);
    let g = dsg(&[("InstanceId", INSTANCE)])["SnapshotGroups"]["SnapshotGroup"][0].clone();
    assert_eq!(g["Status"], "accomplished");
    for s in g["Snapshots"]["Snapshot"].as_array().unwrap() {
        assert_eq!(s["Progress"], "100%");
        assert_eq!(s["Available"], true);
    }
    let v = ok(&c
        .call(
            "DescribeSnapshots",
            &[("RegionId", REGION), ("Status", "accomplished")],
        )
        .unwrap());
    assert_eq!(v["TotalCount"], 2);
    let v = ok(&c
        .call(
            "DescribeSnapshots",
            &[("RegionId", REGION), ("Status", "progressing")],
        )
        .unwrap());
    assert_eq!(v["TotalCount"], 0);

    let dir = w.cfg.snapshot_dir.join(&id);
    assert!(dir.join(format!("{DATA1}.img")).exists());
    let v = ok(&c
        .call(
            "DeleteSnapshotGroup",
            &[("RegionId", REGION), ("SnapshotGroupId", &id)],
        )
        .unwrap());
    let items = v["OperationProgressSet"]["OperationProgress"]
        .as_array()
        .unwrap();
    assert_eq!(items.len(), 2);
    assert!(items.iter().all(|i| i["OperationStatus"] == "Success"));
    assert!(!dir.exists(), "images removed");
    assert_error(
        &c.call(
            "DeleteSnapshotGroup",
            &[("RegionId", REGION), ("SnapshotGroupId", &id)],
        )
        .unwrap(),
        404,
        "InvalidSnapshotGroupId.NotFound",
    );
    assert_error(
        &c.call("DeleteSnapshotGroup", &[("RegionId", REGION)])
            .unwrap(),
        400,
        "MissingParameter",
    );
    let v = dsg(&[]);
    assert_eq!(
        v["SnapshotGroups"]["SnapshotGroup"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
}

#[test]
fn second_group_on_a_busy_disk_is_refused_until_accomplished() {
    // Snapshots that are not usable before the upload ends (no instant access).
    let mut w = world();
    w.cfg.available_delay_ms = 3_600_000;
    let h = start(&w);
    let c = client(&h, Scheme::V1);
    create_group(&c, &[]);
    let r = csg(&c, &[("InstanceId", INSTANCE), ("DiskId.1", DATA2)]);
    assert_error(&r, 403, "IncorrectDiskStatus.CreatingSnapshot");
    // A disk outside the running group is fine.
    ok(&csg(&c, &[("InstanceId", INSTANCE), ("DiskId.1", SYS)]));
    advance_clock(&h, 61);
    ok(&csg(&c, &[("InstanceId", INSTANCE), ("DiskId.1", DATA2)]));
}

/// Instant access: a snapshot still uploading but already Available does not
/// block a new group on its disk (the vendor's exit 16 is "being created and
/// the instant access feature is disabled").
#[test]
fn an_available_snapshot_still_uploading_does_not_block_its_disk() {
    let w = world();
    let h = start(&w);
    let c = client(&h, Scheme::V3);
    create_group(&c, &[]);
    ok(&csg(&c, &[("InstanceId", INSTANCE), ("DiskId.1", DATA2)]));
}

#[test]
fn quota_exceeded() {
    let mut w = world();
    w.cfg.snapshot_quota_per_disk = 2;
    w.cfg.time_to_accomplish_secs = 0.0;
    let h = start(&w);
    let c = client(&h, Scheme::V3);
    create_group(&c, &[]);
    create_group(&c, &[]);
    assert_error(
        &csg(&c, &[("InstanceId", INSTANCE), ("DiskId.1", DATA1)]),
        403,
        "QuotaExceed.Snapshot",
    );
}

#[test]
fn client_token_idempotency() {
    let w = world();
    let h = start(&w);
    let c = client(&h, Scheme::V3);
    let a = create_group(&c, &[("ClientToken", "appsnap-run-1")]);
    // Same token, same parameters: the same group, even though the disks are busy.
    let b = create_group(&c, &[("ClientToken", "appsnap-run-1")]);
    assert_eq!(a, b);
    let r = csg(
        &c,
        &[
            ("InstanceId", INSTANCE),
            ("DiskId.1", DATA1),
            ("DiskId.2", DATA2),
            ("ClientToken", "appsnap-run-1"),
            ("Name", "other"),
        ],
    );
    assert_error(&r, 403, "IdempotentParameterMismatch");
    let v = ok(&c
        .call("DescribeSnapshotGroups", &[("RegionId", REGION)])
        .unwrap());
    assert_eq!(
        v["SnapshotGroups"]["SnapshotGroup"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let log = w.log_lines();
    let replay = log
        .iter()
        .filter(|l| l["accept"]["idempotent_replay"] == true)
        .count();
    assert_eq!(replay, 1);
}

#[test]
fn describe_snapshot_groups_paging_and_filters() {
    let mut w = world();
    w.cfg.time_to_accomplish_secs = 0.0;
    let h = start(&w);
    let c = client(&h, Scheme::V3);
    let mut ids = Vec::new();
    for n in 0..5 {
        let name = format!("job-{n}");
        ids.push(create_group(
            &c,
            &[
                ("Name", &name),
                ("Tag.1.Key", "appsnap:job"),
                ("Tag.1.Value", if n % 2 == 0 { "even" } else { "odd" }),
            ],
        ));
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let mut p = vec![("RegionId", REGION), ("MaxResults", "2")];
        if !token.is_empty() {
            p.push(("NextToken", &token));
        }
        let v = ok(&c.call("DescribeSnapshotGroups", &p).unwrap());
        let page = v["SnapshotGroups"]["SnapshotGroup"].as_array().unwrap();
        assert!(page.len() <= 2);
        seen.extend(
            page.iter()
                .map(|g| g["SnapshotGroupId"].as_str().unwrap().to_string()),
        );
        token = v["NextToken"].as_str().unwrap().to_string();
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(seen, ids);
    let v = ok(&c
        .call(
            "DescribeSnapshotGroups",
            &[
                ("RegionId", REGION),
                ("Tag.1.Key", "appsnap:job"),
                ("Tag.1.Value", "odd"),
            ],
        )
        .unwrap());
    assert_eq!(
        v["SnapshotGroups"]["SnapshotGroup"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let v = ok(&c
        .call(
            "DescribeSnapshotGroups",
            &[("RegionId", REGION), ("Name", "job-3")],
        )
        .unwrap());
    assert_eq!(
        v["SnapshotGroups"]["SnapshotGroup"][0]["SnapshotGroupId"],
        Value::String(ids[3].clone())
    );
    assert_error(
        &c.call(
            "DescribeSnapshotGroups",
            &[("RegionId", REGION), ("MaxResults", "101")],
        )
        .unwrap(),
        400,
        "InvalidParameter.MaxResults",
    );
}

#[test]
fn tag_resources_on_snapshots_and_groups() {
    let w = world();
    let h = start(&w);
    let c = client(&h, Scheme::V1);
    let id = create_group(&c, &[]);
    let v = ok(&c
        .call(
            "DescribeSnapshotGroups",
            &[("RegionId", REGION), ("SnapshotGroupId.1", &id)],
        )
        .unwrap());
    let snaps: Vec<String> = v["SnapshotGroups"]["SnapshotGroup"][0]["Snapshots"]["Snapshot"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["SnapshotId"].as_str().unwrap().to_string())
        .collect();
    let tr = |rt: &str, ids: &[&str], k: &str, val: &str| {
        let keys: Vec<String> = (1..=ids.len()).map(|n| format!("ResourceId.{n}")).collect();
        let mut p = vec![
            ("RegionId", REGION),
            ("ResourceType", rt),
            ("Tag.1.Key", k),
            ("Tag.1.Value", val),
        ];
        p.extend(keys.iter().map(String::as_str).zip(ids.iter().copied()));
        c.call("TagResources", &p).unwrap()
    };
    ok(&tr(
        "snapshot",
        &[&snaps[0], &snaps[1]],
        "APPConsistent",
        "True",
    ));
    // `snapshotgroup` is not a TagResources type (SDK 7.11.8 docstring).
    assert_error(
        &tr("snapshotgroup", &[&id], "appsnap:result", "ok"),
        404,
        "InvalidResourceType.NotFound",
    );
    let v = ok(&c
        .call(
            "DescribeSnapshots",
            &[
                ("RegionId", REGION),
                ("Tag.1.Key", "APPConsistent"),
                ("Tag.1.Value", "True"),
            ],
        )
        .unwrap());
    assert_eq!(v["TotalCount"], 2);
    let v = ok(&c
        .call(
            "DescribeSnapshotGroups",
            &[("RegionId", REGION), ("Tag.1.Key", "appsnap:result")],
        )
        .unwrap());
    assert_eq!(
        v["SnapshotGroups"]["SnapshotGroup"]
            .as_array()
            .unwrap()
            .len(),
        0,
        "the refused group tag was not applied"
    );
    assert_error(
        &tr("snapshot", &["s-bp1nosuchsnapshot0"], "k", "v"),
        404,
        "InvalidResourceId.NotFound",
    );
    assert_error(
        &tr("instance", &[INSTANCE], "k", "v"),
        404,
        "InvalidResourceType.NotFound",
    );
    assert_error(
        &tr("snapshot", &[&snaps[0]], "aliyun:x", "v"),
        400,
        "InvalidTagKey.Malformed",
    );
    // SnapshotIds JSON array filter.
    let ids = serde_json::to_string(&[&snaps[1]]).unwrap();
    let v = ok(&c
        .call(
            "DescribeSnapshots",
            &[("RegionId", REGION), ("SnapshotIds", &ids)],
        )
        .unwrap());
    assert_eq!(
        v["Snapshots"]["Snapshot"][0]["SnapshotId"],
        Value::String(snaps[1].clone())
    );
}

/// Regional ESSD is accepted in a group, but only with its own kind
/// (alibaba-api.md §0 item 7).
#[test]
fn regional_essd_groups_only_with_regional_essd() {
    let mut w = world();
    let template = w.cfg.disks.iter().find(|d| d.id == DATA1).unwrap().clone();
    for id in ["d-bp1regional0000001", "d-bp1regional0000002"] {
        let backing = w.path(&format!("{id}.raw"));
        std::fs::write(&backing, [0u8; 4096]).unwrap();
        let mut d = template.clone();
        d.id = id.into();
        d.category = "cloud_regional_disk_auto".into();
        d.backing = backing;
        w.cfg.disks.push(d);
    }
    let h = start(&w);
    let c = client(&h, Scheme::V3);
    let create = |disks: &[&str]| {
        let keys: Vec<String> = (1..=disks.len()).map(|n| format!("DiskId.{n}")).collect();
        let mut p = vec![("RegionId", REGION), ("InstanceId", INSTANCE)];
        p.extend(keys.iter().map(String::as_str).zip(disks.iter().copied()));
        c.call("CreateSnapshotGroup", &p).unwrap()
    };
    assert_error(
        &create(&["d-bp1regional0000001", DATA1]),
        403,
        "InvalidDiskCategory.NotSupported",
    );
    ok(&create(&["d-bp1regional0000001", "d-bp1regional0000002"]));
}
