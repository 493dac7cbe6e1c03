//! CreateDisk / AttachDisk / DetachDisk / DeleteDisk and DescribeDisks of
//! created disks, without root: the device side uses `attach_no_device`
//! (the root test `root_disk_attach.rs` covers loop devices and links).

mod support;

use ecs_sim::testkit::Scheme;
use support::*;

fn call(
    c: &ecs_sim::testkit::EcsClient,
    action: &str,
    p: &[(&str, &str)],
) -> ecs_sim::testkit::HttpResponse {
    let mut all = vec![("RegionId", REGION)];
    all.extend_from_slice(p);
    c.call(action, &all).unwrap()
}

#[test]
fn create_describe_by_tag_and_delete() {
    let w = restore_world();
    let h = start(&w);
    let c = client(&h, Scheme::V3);
    std::fs::write(w.backing(DATA1), b"restore me".repeat(1000)).unwrap();
    let g = create_group(&c, &[]);
    let (snap, snap_img) = snapshot_of(&h, &g);
    let id = create_disk(
        &c,
        &snap,
        &[
            ("DiskName", "appsnap-verify-1"),
            ("Description", "restore drill"),
            ("Tag.1.Key", "appsnap:verify"),
            ("Tag.1.Value", &g),
        ],
    );
    assert!(id.starts_with("d-") && id.len() == 22, "{id}");
    let d = describe_disk(&c, &id).unwrap();
    assert_eq!(d["Status"], "Creating");
    let d = wait_status(&c, &id, "Available");
    assert_eq!(d["SourceSnapshotId"], snap.as_str());
    assert_eq!(d["Category"], "cloud_essd");
    assert_eq!(d["PerformanceLevel"], "PL0");
    assert_eq!(d["ZoneId"], "cn-hangzhou-i");
    assert_eq!(d["Size"], 40);
    assert_eq!(d["SerialNumber"], &id[2..]);
    assert_eq!(d["InstanceId"], "");
    assert_eq!(d["DiskName"], "appsnap-verify-1");
    assert_eq!(d["Type"], "data");
    assert_eq!(d["Portable"], true);
    assert_eq!(d["DeleteWithInstance"], false);
    assert!(d["CreationTime"].as_str().unwrap().ends_with('Z'));
    assert_eq!(d["Tags"]["Tag"][0]["TagKey"], "appsnap:verify");
    assert_eq!(d["Tags"]["Tag"][0]["TagValue"], g.as_str());
    // The new disk's bytes are the snapshot's.
    let st = sim_state(&h);
    let cd = &st["created_disks"][0];
    let img = std::path::PathBuf::from(cd["image"].as_str().unwrap());
    assert_eq!(
        std::fs::read(&img).unwrap(),
        std::fs::read(&snap_img).unwrap()
    );

    // Cleanup's query: by tag, no InstanceId; configured disks do not match.
    let v = ok(&call(
        &c,
        "DescribeDisks",
        &[("Tag.1.Key", "appsnap:verify"), ("Tag.1.Value", &g)],
    ));
    let ids: Vec<&str> = v["Disks"]["Disk"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["DiskId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [id.as_str()]);
    let v = ok(&call(
        &c,
        "DescribeDisks",
        &[
            ("Tag.1.Key", "appsnap:verify"),
            ("Tag.1.Value", "ssg-other"),
        ],
    ));
    assert_eq!(v["TotalCount"], 0);
    let v = ok(&call(
        &c,
        "DescribeDisks",
        &[("Status", "Available"), ("SnapshotId", &snap)],
    ));
    assert_eq!(v["TotalCount"], 1);
    // Not attached: not among the instance's disks.
    let v = ok(&call(&c, "DescribeDisks", &[("InstanceId", INSTANCE)]));
    assert!(v["Disks"]["Disk"]
        .as_array()
        .unwrap()
        .iter()
        .all(|d| d["DiskId"] != id.as_str()));

    ok(&disk_call(&c, "DeleteDisk", &id));
    assert!(describe_disk(&c, &id).is_none());
    assert!(!img.exists(), "image removed");
    let st = sim_state(&h);
    assert_eq!(st["created_disks"][0]["deleted"], true);
    assert_eq!(st["created_disks"][0]["image_exists"], false);
    // "If the specified disk does not exist, the request is ignored."
    ok(&disk_call(&c, "DeleteDisk", &id));
    ok(&disk_call(&c, "DeleteDisk", "d-bp1nosuchdisk000000"));
    // The request log has the calls, and the answer carries DiskId.
    let lines = w.log_lines();
    let create = lines.iter().find(|l| l["action"] == "CreateDisk").unwrap();
    assert_eq!(create["answer"]["DiskId"], id.as_str());
    assert_eq!(create["params"]["SnapshotId"], snap.as_str());
    assert!(lines
        .iter()
        .any(|l| l["event"] == "disk_available" && l["disk_id"] == id.as_str()));
}

#[test]
fn create_disk_errors() {
    let mut w = restore_world();
    w.cfg.restore.create_delay_ms = 60_000;
    let h = start(&w);
    let c = client(&h, Scheme::V3);
    let g = create_group(&c, &[]);
    let (snap, _) = snapshot_of(&h, &g);
    let base = |extra: &[(&'static str, &'static str)]| -> Vec<(&'static str, String)> {
        let mut p: Vec<(&str, String)> = vec![
            ("ZoneId", "cn-hangzhou-i".into()),
            ("SnapshotId", snap.clone()),
            ("DiskCategory", "cloud_essd".into()),
        ];
        for (k, v) in extra {
            p.retain(|(pk, _)| pk != k);
            if !v.is_empty() {
                p.push((k, v.to_string()));
            }
        }
        p
    };
    let run = |p: Vec<(&str, String)>| {
        let p: Vec<(&str, &str)> = p.iter().map(|(k, v)| (*k, v.as_str())).collect();
        call(&c, "CreateDisk", &p)
    };
    assert_error(
        &run(base(&[("SnapshotId", "s-bp1nosuchsnapshot000")])),
        404,
        "InvalidSnapshotId.NotFound",
    );
    assert_error(
        &run(base(&[("DiskCategory", "cloud_turbo")])),
        400,
        "InvalidDiskCategory.ValueNotSupported",
    );
    assert_error(
        &run(base(&[("DiskCategory", "")])),
        403,
        "InvalidDataDiskCategory.NotSupported",
    );
    assert_error(
        &run(base(&[("DiskCategory", "elastic_ephemeral_disk_standard")])),
        403,
        "InvalidDiskCategory.NotSupported",
    );
    assert_error(&run(base(&[("ZoneId", "")])), 400, "MissingParameter");
    assert_error(
        &run(base(&[("ZoneId", "cn-hangzhou-z")])),
        404,
        "InvalidZoneId.NotFound",
    );
    assert_error(
        &run(base(&[("PerformanceLevel", "PL9")])),
        400,
        "InvalidPerformanceLevel.Malformed",
    );
    assert_error(
        &run(base(&[
            ("DiskCategory", "cloud_auto"),
            ("PerformanceLevel", "PL0"),
        ])),
        400,
        "InvalidPerformanceLevel.Malformed",
    );
    assert_error(
        &run(base(&[("PerformanceLevel", "PL2")])),
        403,
        "OperationDenied.PerformanceLevelNotMatch",
    );
    assert_error(&run(base(&[("SnapshotId", "")])), 400, "MissingParameter");
    assert_error(
        &run(base(&[("DiskName", "1bad")])),
        400,
        "InvalidDiskName.Malformed",
    );
    assert_error(
        &run(base(&[("Description", "x")])),
        400,
        "InvalidDescription.Malformed",
    );
    assert_error(
        &run(base(&[("Tag.1.Key", "acs:x")])),
        400,
        "InvalidTagKey.Malformed",
    );
    assert_error(
        &run(base(&[("InstanceId", INSTANCE)])),
        400,
        "InvalidParameter.Conflict",
    );
    // The categories a drill would pick are accepted.
    for (cat, pl) in [
        ("cloud_essd", "PL0"),
        ("cloud_auto", ""),
        ("cloud_essd_entry", ""),
    ] {
        let r = run(base(&[("DiskCategory", cat), ("PerformanceLevel", pl)]));
        assert_eq!(r.status, 200, "{cat}: {}", r.text());
    }
    // ClientToken: same request -> same disk; other parameters -> mismatch.
    let a = ok(&run(base(&[("ClientToken", "tok-1")])));
    let b = ok(&run(base(&[("ClientToken", "tok-1")])));
    assert_eq!(a["DiskId"], b["DiskId"]);
    assert_error(
        &run(base(&[("ClientToken", "tok-1"), ("DiskName", "other")])),
        403,
        "IdempotentParameterMismatch",
    );
    // A disk still Creating cannot be attached or deleted.
    let id = a["DiskId"].as_str().unwrap();
    assert_error(&disk_call(&c, "AttachDisk", id), 403, "IncorrectDiskStatus");
    assert_error(&disk_call(&c, "DeleteDisk", id), 403, "IncorrectDiskStatus");
}

#[test]
fn snapshot_not_ready_yet() {
    let mut w = restore_world();
    w.cfg.available_delay_ms = 60_000;
    w.cfg.time_to_accomplish_secs = 600.0;
    let h = start(&w);
    let c = client(&h, Scheme::V3);
    let g = create_group(&c, &[]);
    let (snap, _) = snapshot_of(&h, &g);
    let r = call(
        &c,
        "CreateDisk",
        &[
            ("ZoneId", "cn-hangzhou-i"),
            ("SnapshotId", &snap),
            ("DiskCategory", "cloud_auto"),
        ],
    );
    assert_error(&r, 403, "InvalidSnapshot.NotReady");
}

#[test]
fn attach_detach_errors_and_faults() {
    let mut w = restore_world();
    // Without root there is no loop device: every attach shows none.
    w.cfg.faults.attach_no_device = Some(ecs_sim::faults::Times { times: None });
    w.cfg.faults.detach_fails = Some(ecs_sim::faults::DetachFault {
        code: "IncorrectInstanceStatus".into(),
        status: 403,
        times: Some(1),
    });
    let h = start(&w);
    let c = client(&h, Scheme::V3);
    let g = create_group(&c, &[]);
    let (snap, _) = snapshot_of(&h, &g);
    let id = create_disk(&c, &snap, &[]);
    wait_status(&c, &id, "Available");

    // Wrong zone: a disk in the region's other zone.
    let far = create_disk(&c, &snap, &[("ZoneId", OTHER_ZONE)]);
    wait_status(&c, &far, "Available");
    assert_error(
        &disk_call(&c, "AttachDisk", &far),
        403,
        "ResourcesNotInSameZone",
    );
    // Unknown disk, other instance, configured disks.
    assert_error(
        &disk_call(&c, "AttachDisk", "d-bp1nosuchdisk000000"),
        404,
        "InvalidDiskId.NotFound",
    );
    let r = call(
        &c,
        "AttachDisk",
        &[("InstanceId", "i-bp1someoneelse000000"), ("DiskId", &id)],
    );
    assert_error(&r, 404, "InvalidInstanceId.NotFound");
    assert_error(&disk_call(&c, "AttachDisk", SYS), 403, "DiskTypeViolation");
    assert_error(
        &disk_call(&c, "DetachDisk", &id),
        404,
        "InvalidDisk.AlreadyDetached",
    );
    let r = call(
        &c,
        "AttachDisk",
        &[
            ("InstanceId", INSTANCE),
            ("DiskId", &id),
            ("DeleteWithInstance", "maybe"),
        ],
    );
    assert_error(&r, 400, "InvalidParameter");
    // AttachDisk's Password never reaches the request log.
    let r = call(
        &c,
        "AttachDisk",
        &[
            ("InstanceId", INSTANCE),
            ("DiskId", &id),
            ("Bootable", "true"),
            ("Password", "Sekr3t!pw"),
        ],
    );
    assert_error(&r, 403, "IncorrectInstanceStatus");
    let logged = std::fs::read_to_string(w.path("requests.jsonl")).unwrap();
    assert!(!logged.contains("Sekr3t!pw"), "password logged");
    assert!(w
        .log_lines()
        .iter()
        .any(|l| l["params"]["Password"] == "***"));

    // attach_no_device: In_use, but no device and no link, ever.
    let r = call(
        &c,
        "AttachDisk",
        &[
            ("InstanceId", INSTANCE),
            ("DiskId", &id),
            ("DeleteWithInstance", "false"),
        ],
    );
    ok(&r);
    assert_eq!(describe_disk(&c, &id).unwrap()["Status"], "Attaching");
    assert_error(
        &disk_call(&c, "AttachDisk", &id),
        403,
        "IncorrectDiskStatus",
    );
    let d = wait_status(&c, &id, "In_use");
    assert_eq!(d["InstanceId"], INSTANCE);
    assert_eq!(d["Attachments"]["Attachment"][0]["InstanceId"], INSTANCE);
    assert!(!d["AttachedTime"].as_str().unwrap().is_empty());
    let st = sim_state(&h);
    let cd = st["created_disks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == id.as_str())
        .unwrap()
        .clone();
    assert!(cd["loop_device"].is_null() && cd["link"].is_null(), "{cd}");
    assert!(std::fs::read_dir(w.path("by-id"))
        .map(|d| d.count() == 0)
        .unwrap_or(true));
    // Attached now: listed among the instance's disks.
    let v = ok(&call(
        &c,
        "DescribeDisks",
        &[("InstanceId", INSTANCE), ("Status", "In_use")],
    ));
    assert!(v["Disks"]["Disk"]
        .as_array()
        .unwrap()
        .iter()
        .any(|d| d["DiskId"] == id.as_str()));

    assert_error(
        &disk_call(&c, "DeleteDisk", &id),
        403,
        "IncorrectDiskStatus",
    );
    let r = call(
        &c,
        "DetachDisk",
        &[("InstanceId", "i-bp1someoneelse000000"), ("DiskId", &id)],
    );
    assert_error(&r, 404, "InvalidInstanceId.NotFound");
    // detach_fails (once): a real code, and the disk stays In_use.
    assert_error(
        &disk_call(&c, "DetachDisk", &id),
        403,
        "IncorrectInstanceStatus",
    );
    assert_eq!(describe_disk(&c, &id).unwrap()["Status"], "In_use");
    ok(&disk_call(&c, "DetachDisk", &id));
    assert_eq!(describe_disk(&c, &id).unwrap()["Status"], "Detaching");
    assert_error(
        &disk_call(&c, "DetachDisk", &id),
        403,
        "IncorrectDiskStatus",
    );
    let d = wait_status(&c, &id, "Available");
    assert_eq!(d["InstanceId"], "");
    assert!(!d["DetachedTime"].as_str().unwrap().is_empty());
    ok(&disk_call(&c, "DeleteDisk", &id));
    assert!(describe_disk(&c, &id).is_none());
    // The fault plan shows the consumed counter.
    let f = control(&h, "GET", "/_sim/faults", "").json();
    assert_eq!(f["detach_fails"]["times"], 0);
}

#[test]
fn attach_without_by_id_dir_is_refused_naming_the_key() {
    let mut w = restore_world();
    w.cfg.restore.by_id_dir = None;
    let h = start(&w);
    let c = client(&h, Scheme::V3);
    let g = create_group(&c, &[]);
    let (snap, _) = snapshot_of(&h, &g);
    let id = create_disk(&c, &snap, &[]);
    wait_status(&c, &id, "Available");
    let r = disk_call(&c, "AttachDisk", &id);
    assert_error(&r, 403, "OperationDenied");
    assert!(r.text().contains("by_id_dir"), "{}", r.text());
}

#[test]
fn faults_set_through_the_control_endpoint() {
    let w = restore_world();
    let h = start(&w);
    let r = control(
        &h,
        "POST",
        "/_sim/faults",
        r#"{"attach_no_device":{"times":2},"detach_fails":{"code":"InternalError","status":500}}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let f = control(&h, "GET", "/_sim/faults", "").json();
    assert_eq!(f["attach_no_device"]["times"], 2);
    assert_eq!(f["detach_fails"]["code"], "InternalError");
    assert!(f["detach_fails"].get("times").is_none());
    let r = control(
        &h,
        "POST",
        "/_sim/faults",
        r#"{"attach_no_device":{"count":1}}"#,
    );
    assert_eq!(r.status, 400);
}

#[test]
fn region_id_only_where_the_model_has_it() {
    let w = restore_world();
    let h = start(&w);
    let c = client(&h, Scheme::V3);
    let g = create_group(&c, &[]);
    let (snap, _) = snapshot_of(&h, &g);
    // CreateDiskRequest has RegionId (required); the other three have none.
    let r = c
        .call(
            "CreateDisk",
            &[
                ("ZoneId", "cn-hangzhou-i"),
                ("SnapshotId", &snap),
                ("DiskCategory", "cloud_auto"),
            ],
        )
        .unwrap();
    assert_error(&r, 400, "MissingParameter");
    let id = create_disk(&c, &snap, &[]);
    wait_status(&c, &id, "Available");
    let r = c
        .call("DeleteDisk", &[("RegionId", "cn-beijing"), ("DiskId", &id)])
        .unwrap();
    assert_error(&r, 404, "InvalidRegionId.NotFound");
    ok(&c
        .call("DeleteDisk", &[("RegionId", REGION), ("DiskId", &id)])
        .unwrap());
    ok(&disk_call(&c, "DeleteDisk", "d-bp1nosuchdisk000000"));
}
