//! The metadata service: hardened token flow, identity items, credentials.

mod support;

use ecs_sim::config::HttpTokens;
use ecs_sim::SimHandle;
use support::*;

const TTL: &str = "X-aliyun-ecs-metadata-token-ttl-seconds";
const TOK: &str = "X-aliyun-ecs-metadata-token";

#[test]
fn token_ttl_must_be_1_to_21600() {
    let w = world();
    let h = start(&w);
    for bad in ["0", "21601", "-1", "abc", ""] {
        let r = imds(&h, "PUT", "/latest/api/token", &[(TTL, bad)]);
        assert_eq!(r.status, 400, "ttl {bad:?}");
    }
    assert_eq!(imds(&h, "PUT", "/latest/api/token", &[]).status, 400);
    for good in ["1", "21600"] {
        let r = imds(&h, "PUT", "/latest/api/token", &[(TTL, good)]);
        assert_eq!(r.status, 200, "ttl {good}");
        assert!(r.text().len() >= 32);
    }
}

#[test]
fn token_put_with_x_forwarded_for_is_forbidden() {
    let w = world();
    let h = start(&w);
    let r = imds(
        &h,
        "PUT",
        "/latest/api/token",
        &[(TTL, "60"), ("X-Forwarded-For", "10.0.0.1")],
    );
    assert_eq!(r.status, 403);
}

#[test]
fn token_required_mode_bad_and_expired_tokens() {
    let w = world();
    let h = start(&w);
    assert_eq!(
        imds(&h, "GET", "/latest/meta-data/instance-id", &[]).status,
        403
    );
    assert_eq!(
        imds(
            &h,
            "GET",
            "/latest/meta-data/instance-id",
            &[(TOK, "forged")]
        )
        .status,
        401
    );
    let r = imds(&h, "PUT", "/latest/api/token", &[(TTL, "5")]);
    let t = r.text();
    assert_eq!(
        imds(&h, "GET", "/latest/meta-data/instance-id", &[(TOK, &t)]).status,
        200
    );
    advance_clock(&h, 6);
    assert_eq!(
        imds(&h, "GET", "/latest/meta-data/instance-id", &[(TOK, &t)]).status,
        401
    );
}

#[test]
fn optional_mode_serves_tokenless_but_still_checks_a_sent_token() {
    let mut w = world();
    w.cfg.http_tokens = HttpTokens::Optional;
    let h = start(&w);
    let r = imds(&h, "GET", "/latest/meta-data/region-id", &[]);
    assert_eq!((r.status, r.text().as_str()), (200, REGION));
    assert_eq!(
        imds(&h, "GET", "/latest/meta-data/region-id", &[(TOK, "forged")]).status,
        401
    );
}

#[test]
fn identity_items_and_document() {
    let w = world();
    let h = start(&w);
    let t = imds_token(&h);
    let get = |p: &str| imds(&h, "GET", p, &[(TOK, &t)]);
    assert_eq!(get("/latest/meta-data/instance-id").text(), INSTANCE);
    assert_eq!(get("/latest/meta-data/region-id").text(), REGION);
    assert_eq!(get("/latest/meta-data/zone-id").text(), "cn-hangzhou-i");
    let doc = get("/latest/dynamic/instance-identity/document").json();
    assert_eq!(doc["instance-id"], INSTANCE);
    assert_eq!(doc["region-id"], REGION);
    assert_eq!(doc["zone-id"], "cn-hangzhou-i");
    assert!(doc["owner-account-id"].is_string());
    assert_eq!(
        get("/latest/meta-data/ram/security-credentials/").text(),
        ROLE
    );
    assert_eq!(
        get("/latest/meta-data/ram/security-credentials/NoSuchRole").status,
        404
    );
    let disks = get("/latest/meta-data/disks/").text();
    assert!(
        disks.lines().any(|l| l == "bp1data100000000000/"),
        "{disks}"
    );
    assert_eq!(
        get("/latest/meta-data/disks/bp1data100000000000/id").text(),
        DATA1
    );
    assert_eq!(get("/latest/meta-data/nothing-here").status, 404);
    // Proxy-form request target (what an SDK behind HTTP_PROXY sends).
    let r = get("http://100.100.100.200/latest/meta-data/instance-id");
    assert_eq!(r.text(), INSTANCE);
}

#[test]
fn credentials_json_is_exactly_the_reference_shape() {
    let w = world();
    let h = start(&w);
    let t = imds_token(&h);
    let r = imds(
        &h,
        "GET",
        &format!("/latest/meta-data/ram/security-credentials/{ROLE}"),
        &[(TOK, &t)],
    );
    assert_eq!(r.status, 200);
    let text = r.text();
    // Field order as in the reference.
    let keys = [
        "AccessKeyId",
        "AccessKeySecret",
        "Expiration",
        "SecurityToken",
        "LastUpdated",
        "Code",
    ];
    let pos: Vec<usize> = keys
        .iter()
        .map(|k| text.find(&format!("\"{k}\"")).unwrap())
        .collect();
    assert!(pos.windows(2).all(|w| w[0] < w[1]), "{text}");
    let v = r.json();
    assert_eq!(v.as_object().unwrap().len(), 6);
    assert_eq!(v["Code"], "Success");
    assert!(v["AccessKeyId"].as_str().unwrap().starts_with("STS."));
    let exp = ecs_sim::util::parse_time(v["Expiration"].as_str().unwrap()).unwrap();
    let upd = ecs_sim::util::parse_time(v["LastUpdated"].as_str().unwrap()).unwrap();
    assert_eq!((exp - upd).num_seconds(), 600);
    // The secrets are not in the log.
    let raw = std::fs::read_to_string(w.path("requests.jsonl")).unwrap();
    assert!(!raw.contains(v["AccessKeySecret"].as_str().unwrap()));
    assert!(!raw.contains(v["SecurityToken"].as_str().unwrap()));
    assert!(!raw.contains(&t), "IMDS token leaked to the log");
}

#[test]
fn credentials_rotate_before_expiry_and_old_ones_stay_valid_until_then() {
    let w = world();
    let h = start(&w);
    let (a, _) = sts_creds(&h);
    let (a2, _) = sts_creds(&h);
    assert_eq!(
        a.access_key_id, a2.access_key_id,
        "no rotation early in the lifetime"
    );
    advance_clock(&h, 450); // 150 s left of 600: in the last third
    let (b, _) = sts_creds(&h);
    assert_ne!(a.access_key_id, b.access_key_id);
    for c in [&a, &b] {
        let cl = ecs_sim::testkit::EcsClient::new(
            &h.started.ecs_url,
            c.clone(),
            ecs_sim::testkit::Scheme::V3,
        );
        // The client signs with real time; the emulator is 450 s ahead, within the window.
        ok(&cl.call("DescribeDisks", &[("RegionId", REGION)]).unwrap());
    }
}

#[test]
fn no_role_means_no_credentials() {
    let mut w = world();
    w.cfg.ram_role = None;
    let h = SimHandle::spawn(w.cfg.clone()).unwrap();
    let t = imds_token(&h);
    assert_eq!(
        imds(
            &h,
            "GET",
            "/latest/meta-data/ram/security-credentials/",
            &[(TOK, &t)]
        )
        .status,
        404
    );
}

#[test]
fn metadata_service_failure_from_config_and_at_run_time() {
    let mut w = world();
    w.cfg.faults.imds = Some(ecs_sim::faults::ImdsFault {
        status: 500,
        times: Some(2),
    });
    let h = start(&w);
    assert_eq!(
        imds(&h, "PUT", "/latest/api/token", &[(TTL, "60")]).status,
        500
    );
    assert_eq!(
        imds(&h, "PUT", "/latest/api/token", &[(TTL, "60")]).status,
        500
    );
    assert_eq!(
        imds(&h, "PUT", "/latest/api/token", &[(TTL, "60")]).status,
        200
    );
    let r = control(&h, "POST", "/_sim/faults", r#"{"imds":{"status":503}}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    for _ in 0..3 {
        assert_eq!(
            imds(&h, "PUT", "/latest/api/token", &[(TTL, "60")]).status,
            503
        );
    }
    assert_eq!(control(&h, "DELETE", "/_sim/faults", "").status, 200);
    assert_eq!(
        imds(&h, "PUT", "/latest/api/token", &[(TTL, "60")]).status,
        200
    );
}
