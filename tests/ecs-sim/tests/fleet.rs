//! Many instances in one emulator (`[[instance]]`): each has its own
//! metadata service (address), identity, disks and role credentials, and
//! they share the account's flow control.

mod support;

use ecs_sim::config::InstanceConfig;
use ecs_sim::testkit::{Creds, EcsClient, Scheme};
use ecs_sim::SimHandle;
use support::*;

const B: &str = "i-bp1fleetmember00002";
const B_DISK: &str = "d-bp1fleetdiskb000000";
const TTL: &str = "X-aliyun-ecs-metadata-token-ttl-seconds";
const TOK: &str = "X-aliyun-ecs-metadata-token";

/// The standard world plus instance B (its metadata service at `ip`) with one disk.
fn fleet_world(ip: &str) -> World {
    let mut w = world();
    w.cfg.instances.push(InstanceConfig {
        id: B.into(),
        imds_listen: ip.into(),
        zone_id: Some("cn-hangzhou-j".into()),
        ram_role: None,
    });
    let mut d = w.cfg.disks[1].clone();
    d.id = B_DISK.into();
    d.instance_id = Some(B.into());
    d.backing = w.backing(B_DISK);
    std::fs::write(&d.backing, vec![0u8; 1 << 20]).unwrap();
    w.cfg.disks.push(d);
    w
}

/// B's metadata service: the first instance's URL with B's address.
fn b_url(h: &SimHandle, ip: &str) -> String {
    let port = h.started.imds_url.rsplit(':').next().unwrap();
    format!("http://{ip}:{port}")
}

fn token(url: &str) -> String {
    let r = imds_at(url, "PUT", "/latest/api/token", &[(TTL, "300")]);
    assert_eq!(r.status, 200);
    r.text()
}

fn role_creds(url: &str) -> Creds {
    let t = token(url);
    let r = imds_at(
        url,
        "GET",
        &format!("/latest/meta-data/ram/security-credentials/{ROLE}"),
        &[(TOK, &t)],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    let s = |k: &str| v[k].as_str().unwrap().to_string();
    Creds {
        access_key_id: s("AccessKeyId"),
        secret: s("AccessKeySecret"),
        token: Some(s("SecurityToken")),
    }
}

#[test]
fn each_instance_sees_its_own_identity_disks_tokens_and_credentials() {
    let ip = "127.0.7.1";
    let w = fleet_world(ip);
    let h = SimHandle::spawn(w.cfg.clone()).unwrap();
    let a = h.started.imds_url.clone();
    let b = b_url(&h, ip);
    let item = |url: &str, path: &str| {
        let t = token(url);
        let r = imds_at(url, "GET", path, &[(TOK, &t)]);
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        r.text()
    };
    assert_eq!(item(&a, "/latest/meta-data/instance-id"), INSTANCE);
    assert_eq!(item(&b, "/latest/meta-data/instance-id"), B);
    assert_eq!(item(&b, "/latest/meta-data/zone-id"), "cn-hangzhou-j");
    let doc = item(&b, "/latest/dynamic/instance-identity/document");
    assert!(doc.contains(B) && !doc.contains(INSTANCE), "{doc}");
    // Each lists only the disks attached to it.
    let b_disks = item(&b, "/latest/meta-data/disks/");
    assert_eq!(
        b_disks.trim(),
        format!("{}/", B_DISK.trim_start_matches("d-"))
    );
    let a_disks = item(&a, "/latest/meta-data/disks/");
    assert!(
        !a_disks.contains(B_DISK.trim_start_matches("d-")),
        "{a_disks}"
    );
    assert!(
        a_disks.contains(DATA1.trim_start_matches("d-")),
        "{a_disks}"
    );
    // A token is good only at the service that issued it.
    let ta = token(&a);
    let r = imds_at(&b, "GET", "/latest/meta-data/instance-id", &[(TOK, &ta)]);
    assert_eq!(r.status, 401, "{}", r.text());
    // Both inherit the first instance's role, with credentials of their own.
    let (ca, cb) = (role_creds(&a), role_creds(&b));
    assert_ne!(ca.access_key_id, cb.access_key_id);
    assert_eq!(
        role_creds(&b).access_key_id,
        cb.access_key_id,
        "B's credentials are stable until refreshed"
    );
    // The API knows B: its disk is its own (in its zone), A's disk is not.
    let ecs_b = EcsClient::new(&h.started.ecs_url, cb, Scheme::V3);
    let v = ok(&ecs_b
        .call("DescribeDisks", &[("RegionId", REGION), ("InstanceId", B)])
        .unwrap());
    let disks = v["Disks"]["Disk"].as_array().unwrap();
    assert_eq!(disks.len(), 1, "{v}");
    assert_eq!(disks[0]["DiskId"], B_DISK);
    assert_eq!(disks[0]["ZoneId"], "cn-hangzhou-j");
    let create = |disk: &str| {
        ecs_b
            .call(
                "CreateSnapshotGroup",
                &[("RegionId", REGION), ("InstanceId", B), ("DiskId.1", disk)],
            )
            .unwrap()
    };
    assert_error(&create(DATA1), 403, "InvalidDiskId.NotBelongToInstance");
    ok(&create(B_DISK));
}

#[test]
fn instances_share_the_accounts_flow_control_and_the_log_names_the_caller() {
    let ip = "127.0.7.2";
    let mut w = fleet_world(ip);
    w.cfg.faults.rate_limits.insert(
        "CreateSnapshotGroup".into(),
        ecs_sim::faults::RateLimit {
            rate: 0.01,
            burst: Some(1.0),
        },
    );
    let h = SimHandle::spawn(w.cfg.clone()).unwrap();
    let b = b_url(&h, ip);
    let ecs_b = EcsClient::new(&h.started.ecs_url, role_creds(&b), Scheme::V3);
    let ecs_a = EcsClient::new(
        &h.started.ecs_url,
        role_creds(&h.started.imds_url),
        Scheme::V3,
    );
    // B snapshots its own disk: the bucket's one token.
    let r = ecs_b
        .call(
            "CreateSnapshotGroup",
            &[
                ("RegionId", REGION),
                ("InstanceId", B),
                ("DiskId.1", B_DISK),
            ],
        )
        .unwrap();
    ok(&r);
    // A, another instance of the same account, finds the bucket empty.
    let r = ecs_a
        .call(
            "CreateSnapshotGroup",
            &[
                ("RegionId", REGION),
                ("InstanceId", INSTANCE),
                ("DiskId.1", DATA1),
            ],
        )
        .unwrap();
    assert_error(&r, 400, "Throttling.User");
    let callers: Vec<(String, String)> = w
        .log_lines()
        .iter()
        .filter(|l| l["service"] == "ecs")
        .map(|l| {
            (
                l["instance"].as_str().unwrap_or("").to_string(),
                l["code"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(callers[0], (B.to_string(), String::new()), "{callers:?}");
    assert_eq!(
        callers[1],
        (INSTANCE.to_string(), "Throttling.User".to_string()),
        "{callers:?}"
    );
}
