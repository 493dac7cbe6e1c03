//! Shared test setup: a temp world with backing files, an in-process
//! emulator, and signing clients.
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use ecs_sim::config::{AccessKey, DiskConfig, DiskType, HttpTokens, SimConfig};
use ecs_sim::testkit::http::{send, HttpResponse, RawRequest};
use ecs_sim::testkit::{Creds, EcsClient, Scheme};
use ecs_sim::SimHandle;
use serde_json::Value;

pub const REGION: &str = "cn-hangzhou";
pub const INSTANCE: &str = "i-bp1abcdefghijklmnop0";
pub const ROLE: &str = "AppSnapshotRoleName";
pub const AK: &str = "testid";
pub const SECRET: &str = "testsecret";
/// A configured but disabled long-lived key.
pub const INACTIVE_AK: &str = "testid-disabled";

/// Disk ids used by `world()`.
pub const SYS: &str = "d-bp1sys0000000000000";
pub const DATA1: &str = "d-bp1data100000000000";
pub const DATA2: &str = "d-bp1data200000000000";
pub const OTHER: &str = "d-bp1other0000000000";
pub const MULTI: &str = "d-bp1multi0000000000";
pub const OLDCAT: &str = "d-bp1oldcat000000000";

/// A temp dir plus a config whose disks are 1 MiB files inside it.
pub struct World {
    pub dir: tempfile::TempDir,
    pub cfg: SimConfig,
}

impl World {
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    pub fn backing(&self, disk: &str) -> PathBuf {
        self.path(&format!("{disk}.raw"))
    }
    pub fn log_lines(&self) -> Vec<Value> {
        std::fs::read_to_string(self.path("requests.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("log line is JSON"))
            .collect()
    }
}

fn disk(w: &tempfile::TempDir, id: &str, ty: DiskType) -> DiskConfig {
    let backing = w.path().join(format!("{id}.raw"));
    std::fs::write(&backing, vec![0u8; 1 << 20]).unwrap();
    DiskConfig {
        id: id.into(),
        serial: None,
        category: "cloud_essd".into(),
        disk_type: ty,
        multi_attach: false,
        size_gib: 40,
        instance_id: None,
        status: None,
        zone_id: None,
        backing,
        probe_mounts: vec![],
        tags: Default::default(),
    }
}

/// The standard world: system + two data disks on our instance, one disk on
/// another instance, one multi-attach disk, one unsupported category.
pub fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let mut disks = vec![
        disk(&dir, SYS, DiskType::System),
        disk(&dir, DATA1, DiskType::Data),
        disk(&dir, DATA2, DiskType::Data),
    ];
    let mut other = disk(&dir, OTHER, DiskType::Data);
    other.instance_id = Some("i-bp1someoneelse000000".into());
    let mut multi = disk(&dir, MULTI, DiskType::Data);
    multi.multi_attach = true;
    multi.instance_id = Some(String::new());
    let mut old = disk(&dir, OLDCAT, DiskType::Data);
    old.category = "cloud_efficiency".into();
    old.instance_id = Some("i-bp1someoneelse000000".into());
    disks.extend([other, multi, old]);
    let cfg = SimConfig {
        listen: "127.0.0.1".into(),
        imds_port: 0,
        ecs_port: 0,
        region_id: REGION.into(),
        zone_id: "cn-hangzhou-i".into(),
        instance_id: INSTANCE.into(),
        owner_account_id: "1234567890123456".into(),
        instance_type: "ecs.g7.large".into(),
        ram_role: Some(ROLE.into()),
        credential_lifetime_secs: 600,
        http_tokens: HttpTokens::Required,
        access_keys: vec![
            AccessKey {
                id: AK.into(),
                secret: SECRET.into(),
                active: true,
            },
            AccessKey {
                id: INACTIVE_AK.into(),
                secret: SECRET.into(),
                active: false,
            },
        ],
        snapshot_dir: dir.path().join("snapshots"),
        time_to_accomplish_secs: 60.0,
        snapshot_quota_per_disk: 256,
        max_disks_per_group: 16,
        request_log: Some(dir.path().join("requests.jsonl")),
        freeze_probe_timeout_ms: 300,
        copy_images: true,
        pit_delay_ms: 0,
        available_delay_ms: 0,
        faults: Default::default(),
        disks,
        restore: Default::default(),
        instances: vec![],
    };
    World { dir, cfg }
}

pub fn start(w: &World) -> SimHandle {
    SimHandle::spawn(w.cfg.clone()).expect("emulator starts")
}

pub fn static_creds() -> Creds {
    Creds {
        access_key_id: AK.into(),
        secret: SECRET.into(),
        token: None,
    }
}

pub fn client(h: &SimHandle, scheme: Scheme) -> EcsClient {
    let mut c = EcsClient::new(&h.started.ecs_url, static_creds(), scheme);
    c.timeout = Duration::from_secs(30);
    c
}

/// One request to the metadata service.
pub fn imds(h: &SimHandle, method: &str, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
    imds_at(&h.started.imds_url, method, path, headers)
}

/// One request to the metadata service at `url` (a fleet instance's own).
pub fn imds_at(url: &str, method: &str, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
    send(
        url,
        &RawRequest {
            method: method.into(),
            target: path.into(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: vec![],
        },
        Duration::from_secs(10),
    )
    .expect("metadata request")
}

pub fn imds_token(h: &SimHandle) -> String {
    let r = imds(
        h,
        "PUT",
        "/latest/api/token",
        &[("X-aliyun-ecs-metadata-token-ttl-seconds", "300")],
    );
    assert_eq!(r.status, 200);
    r.text()
}

/// STS credentials fetched the way appsnap will (token, role, credentials).
pub fn sts_creds(h: &SimHandle) -> (Creds, Value) {
    let t = imds_token(h);
    let r = imds(
        h,
        "GET",
        &format!("/latest/meta-data/ram/security-credentials/{ROLE}"),
        &[("X-aliyun-ecs-metadata-token", &t)],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    let s = |k: &str| v[k].as_str().unwrap().to_string();
    (
        Creds {
            access_key_id: s("AccessKeyId"),
            secret: s("AccessKeySecret"),
            token: Some(s("SecurityToken")),
        },
        v,
    )
}

/// A control-endpoint request.
pub fn control(h: &SimHandle, method: &str, path: &str, body: &str) -> HttpResponse {
    send(
        &h.started.ecs_url,
        &RawRequest {
            method: method.into(),
            target: path.into(),
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.as_bytes().to_vec(),
        },
        Duration::from_secs(10),
    )
    .expect("control request")
}

pub fn advance_clock(h: &SimHandle, secs: i64) {
    let r = control(
        h,
        "POST",
        "/_sim/clock",
        &format!("{{\"advance_secs\":{secs}}}"),
    );
    assert_eq!(r.status, 200, "{}", r.text());
}

/// Asserts an ECS error answer: status, code and the vendor's body shape.
pub fn assert_error(r: &HttpResponse, status: u16, code: &str) {
    assert_eq!(r.code().as_deref(), Some(code), "body: {}", r.text());
    assert_eq!(r.status, status, "body: {}", r.text());
    if r.header("content-type") == Some("text/xml;charset=utf-8") {
        // The request did not ask for JSON: the same fields, as XML.
        let t = r.text();
        assert!(t.contains("<Error>"), "{t}");
        for k in ["RequestId", "HostId", "Code", "Message", "Recommend"] {
            assert!(t.contains(&format!("<{k}>")), "error body lacks {k}: {t}");
        }
        return;
    }
    let v = r.json();
    for k in ["RequestId", "HostId", "Code", "Message", "Recommend"] {
        assert!(v.get(k).is_some(), "error body lacks {k}: {v}");
    }
    assert!(v["Recommend"].as_str().unwrap().contains(code));
}

/// Asserts success and returns the body.
pub fn ok(r: &HttpResponse) -> Value {
    assert_eq!(r.status, 200, "body: {}", r.text());
    let v = r.json();
    assert!(v["RequestId"].is_string(), "no RequestId: {v}");
    v
}

/// CreateSnapshotGroup over the two data disks; returns the group id.
pub fn create_group(c: &EcsClient, extra: &[(&str, &str)]) -> String {
    let mut p = vec![
        ("RegionId", REGION),
        ("InstanceId", INSTANCE),
        ("DiskId.1", DATA1),
        ("DiskId.2", DATA2),
    ];
    p.extend_from_slice(extra);
    let v = ok(&c.call("CreateSnapshotGroup", &p).unwrap());
    v["SnapshotGroupId"].as_str().unwrap().to_string()
}

/// A second zone the region knows (a configured disk lives there).
pub const OTHER_ZONE: &str = "cn-hangzhou-j";

/// The standard world plus what restore drills need: short lifecycle
/// delays, a by-id directory, and a disk in `OTHER_ZONE` (so it is a known zone).
pub fn restore_world() -> World {
    let mut w = world();
    w.cfg.restore.create_delay_ms = 100;
    w.cfg.restore.attach_delay_ms = 100;
    w.cfg.restore.device_delay_ms = 100;
    w.cfg.restore.detach_delay_ms = 100;
    w.cfg.restore.by_id_dir = Some(w.path("by-id"));
    w.cfg.time_to_accomplish_secs = 0.0;
    if let Some(d) = w.cfg.disks.iter_mut().find(|d| d.id == OTHER) {
        d.zone_id = Some(OTHER_ZONE.into());
    }
    w
}

/// The emulator's `/_sim/state`.
pub fn sim_state(h: &SimHandle) -> Value {
    let r = control(h, "GET", "/_sim/state", "");
    assert_eq!(r.status, 200);
    r.json()
}

/// The first snapshot of `group` (of DATA1): (id, image path).
pub fn snapshot_of(h: &SimHandle, group: &str) -> (String, PathBuf) {
    let st = sim_state(h);
    let g = st["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["id"] == group)
        .expect("group in state");
    let s = g["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["disk_id"] == DATA1)
        .expect("DATA1 snapshot");
    (
        s["id"].as_str().unwrap().to_string(),
        PathBuf::from(s["image"].as_str().unwrap()),
    )
}

/// One disk as DescribeDisks lists it (`None` if absent).
pub fn describe_disk(c: &EcsClient, id: &str) -> Option<Value> {
    let ids = format!("[\"{id}\"]");
    let v = ok(&c
        .call("DescribeDisks", &[("RegionId", REGION), ("DiskIds", &ids)])
        .unwrap());
    v["Disks"]["Disk"].as_array().unwrap().first().cloned()
}

/// Polls DescribeDisks until `id` has `status` (10 s at most).
pub fn wait_status(c: &EcsClient, id: &str, status: &str) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let d = describe_disk(c, id).expect("disk listed");
        if d["Status"] == status {
            return d;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{id} never reached {status}: {d}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// CreateDisk from `snapshot` in the instance's zone; returns the disk id.
pub fn create_disk(c: &EcsClient, snapshot: &str, extra: &[(&str, &str)]) -> String {
    let mut p = vec![
        ("RegionId", REGION),
        ("ZoneId", "cn-hangzhou-i"),
        ("SnapshotId", snapshot),
        ("DiskCategory", "cloud_essd"),
        ("PerformanceLevel", "PL0"),
    ];
    p.extend_from_slice(extra);
    let v = ok(&c.call("CreateDisk", &p).unwrap());
    v["DiskId"].as_str().unwrap().to_string()
}

/// AttachDisk/DetachDisk/DeleteDisk `disk` (on INSTANCE for the first two),
/// without RegionId, as the SDK sends them (their models have none).
pub fn disk_call(c: &EcsClient, action: &str, disk: &str) -> HttpResponse {
    let mut p = vec![("DiskId", disk)];
    if action != "DeleteDisk" {
        p.push(("InstanceId", INSTANCE));
    }
    c.call(action, &p).unwrap()
}
