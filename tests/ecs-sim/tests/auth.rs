//! Signature, timestamp, nonce, key and STS-token checks over real HTTP.

mod support;

use ecs_sim::testkit::sign::{fresh_nonce, now_stamp};
use ecs_sim::testkit::{Creds, EcsClient, RawRequest, Scheme};
use support::*;

const DESCRIBE: &[(&str, &str)] = &[("RegionId", REGION), ("InstanceId", INSTANCE)];

#[test]
fn both_schemes_are_accepted_and_logged() {
    let w = world();
    let h = start(&w);
    for scheme in [Scheme::V1, Scheme::V3] {
        let v = ok(&client(&h, scheme).call("DescribeDisks", DESCRIBE).unwrap());
        assert_eq!(v["TotalCount"], 3);
    }
    let lines = w.log_lines();
    let versions: Vec<&str> = lines
        .iter()
        .map(|l| l["signature_version"].as_str().unwrap())
        .collect();
    assert_eq!(versions, ["v1-hmac-sha1", "v3-acs3-hmac-sha256"]);
    assert!(lines.iter().all(|l| l["verdict"] == "accepted"));
    assert!(lines.iter().all(|l| l["action"] == "DescribeDisks"));
}

#[test]
fn reference_vector_inputs_are_accepted_over_http() {
    // The vectors' credentials and parameters, signed now (the vectors'
    // own timestamp is long outside the 15-minute window).
    let w = world();
    let h = start(&w);
    let text = include_str!("fixtures/sig_vectors.json");
    let v: serde_json::Value = serde_json::from_str(text).unwrap();
    for vec in v["sdk_vectors"].as_array().unwrap() {
        let input = &vec["input"];
        if input["security_token"].is_string() {
            continue; // STS keys only exist once issued by the metadata service
        }
        let params: Vec<(String, String)> = vec["flat_params"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
            .collect();
        let p: Vec<(&str, &str)> = params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        for scheme in [Scheme::V1, Scheme::V3] {
            let r = client(&h, scheme)
                .call(input["action"].as_str().unwrap(), &p)
                .unwrap();
            // Authentication passed: whatever the action says, it is not an
            // authentication error (the vectors name disks that do not exist).
            let code = r.code().unwrap_or_default();
            assert!(
                !code.starts_with("Signature")
                    && !code.starts_with("InvalidAccessKeyId")
                    && !code.starts_with("InvalidTimeStamp")
                    && !code.starts_with("Incomplete"),
                "{} {scheme:?}: {}",
                vec["id"],
                r.text()
            );
        }
    }
    let log = w.log_lines();
    assert!(log.len() >= 16);
    assert!(log.iter().all(|l| l["verdict"] != "rejected"), "{log:?}");
}

/// Changes one byte of one query parameter's value on the wire.
fn tamper_query(req: &RawRequest, key: &str) -> RawRequest {
    let (path, q) = req.target.split_once('?').unwrap();
    let parts: Vec<String> = q
        .split('&')
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap();
            if k == key {
                let mut v = v.to_string();
                let last = v.pop().unwrap_or('A');
                v.push(if last == 'Z' { 'Y' } else { 'Z' });
                format!("{k}={v}")
            } else {
                kv.to_string()
            }
        })
        .collect();
    RawRequest {
        target: format!("{path}?{}", parts.join("&")),
        ..req.clone()
    }
}

#[test]
fn one_byte_change_to_any_signed_parameter_is_rejected() {
    let w = world();
    let h = start(&w);
    for scheme in [Scheme::V1, Scheme::V3] {
        // One disk per scheme: the V1 group keeps DATA1 busy.
        let disk = if scheme == Scheme::V1 { DATA1 } else { DATA2 };
        let params = [
            ("RegionId", REGION),
            ("InstanceId", INSTANCE),
            ("DiskId.1", disk),
            ("Name", "nightly-1"),
            ("Description", "a*b~c/d+e=f&g'h(i)!j %k"),
            ("Tag.1.Key", "appsnap:job"),
            ("Tag.1.Value", "db"),
        ];
        let c = client(&h, scheme);
        let req = c.build("CreateSnapshotGroup", &params);
        let keys: Vec<String> = req
            .target
            .split_once('?')
            .unwrap()
            .1
            .split('&')
            .map(|kv| kv.split_once('=').unwrap().0.to_string())
            .filter(|k| k != "Signature")
            .collect();
        assert!(keys.len() >= params.len());
        for k in &keys {
            let r = c.send(&tamper_query(&req, k)).unwrap();
            let code = r.code().unwrap_or_default();
            // A changed AccessKeyId is an unknown key; a changed timestamp
            // may be unparseable; everything else is a signature mismatch.
            match k.as_str() {
                "AccessKeyId" => assert_error(&r, 404, "InvalidAccessKeyId.NotFound"),
                "Timestamp" if code == "InvalidTimeStamp.Format" => {}
                "SignatureMethod" => assert_error(&r, 400, "InvalidSignatureMethod"),
                "SignatureVersion" => assert_error(&r, 400, "InvalidSignatureVersion"),
                _ => assert_error(&r, 400, "SignatureDoesNotMatch"),
            }
        }
        if scheme == Scheme::V3 {
            for hname in [
                "host",
                "x-acs-action",
                "x-acs-date",
                "x-acs-signature-nonce",
                "x-acs-version",
            ] {
                let mut t = req.clone();
                for (k, v) in t.headers.iter_mut() {
                    if k == hname {
                        v.push('1');
                    }
                }
                let r = c.send(&t).unwrap();
                assert_error(&r, 400, "SignatureDoesNotMatch");
            }
            // A body the signature did not cover.
            let mut t = req.clone();
            t.body = b"x".to_vec();
            assert_error(&c.send(&t).unwrap(), 400, "SignatureDoesNotMatch");
        }
        // The untampered request still goes through afterwards.
        let ok_r = c.send(&req).unwrap();
        assert_eq!(ok_r.status, 200, "{}", ok_r.text());
    }
}

#[test]
fn signature_mismatch_echoes_server_string_to_sign() {
    let w = world();
    let h = start(&w);
    for scheme in [Scheme::V1, Scheme::V3] {
        let c = EcsClient::new(
            &h.started.ecs_url,
            Creds {
                access_key_id: AK.into(),
                secret: "wrong".into(),
                token: None,
            },
            scheme,
        );
        let r = c.call("DescribeDisks", DESCRIBE).unwrap();
        assert_error(&r, 400, "SignatureDoesNotMatch");
        let msg = r.json()["Message"].as_str().unwrap().to_string();
        assert!(msg.contains("server string to sign is:"), "{msg}");
    }
    // The wrong secret never reaches the log.
    let raw = std::fs::read_to_string(w.path("requests.jsonl")).unwrap();
    assert!(raw.contains("SignatureDoesNotMatch"));
    assert!(!raw.contains(SECRET));
}

#[test]
fn unknown_access_key_is_not_found() {
    let w = world();
    let h = start(&w);
    for scheme in [Scheme::V1, Scheme::V3] {
        let c = EcsClient::new(
            &h.started.ecs_url,
            Creds {
                access_key_id: "LTAInobody".into(),
                secret: SECRET.into(),
                token: None,
            },
            scheme,
        );
        assert_error(
            &c.call("DescribeDisks", DESCRIBE).unwrap(),
            404,
            "InvalidAccessKeyId.NotFound",
        );
    }
}

#[test]
fn disabled_access_key_is_inactive() {
    let w = world();
    let h = start(&w);
    for scheme in [Scheme::V1, Scheme::V3] {
        let c = EcsClient::new(
            &h.started.ecs_url,
            Creds {
                access_key_id: INACTIVE_AK.into(),
                secret: SECRET.into(),
                token: None,
            },
            scheme,
        );
        assert_error(
            &c.call("DescribeDisks", DESCRIBE).unwrap(),
            403,
            "InvalidAccessKeyId.Inactive",
        );
    }
}

#[test]
fn timestamp_outside_15_minutes_is_expired_inside_is_fine() {
    let w = world();
    let h = start(&w);
    let fmt = |d: chrono::Duration| {
        (chrono::Utc::now() + d)
            .format("%Y-%m-%dT%H:%M:%SZ")
            .to_string()
    };
    for scheme in [Scheme::V1, Scheme::V3] {
        let c = client(&h, scheme);
        for mins in [-16i64, 16] {
            let req = c.build_at(
                "DescribeDisks",
                DESCRIBE,
                &fmt(chrono::Duration::minutes(mins)),
                &fresh_nonce(),
            );
            assert_error(&c.send(&req).unwrap(), 400, "InvalidTimeStamp.Expired");
        }
        for mins in [-14i64, 14] {
            let req = c.build_at(
                "DescribeDisks",
                DESCRIBE,
                &fmt(chrono::Duration::minutes(mins)),
                &fresh_nonce(),
            );
            ok(&c.send(&req).unwrap());
        }
        let req = c.build_at(
            "DescribeDisks",
            DESCRIBE,
            "2025-01-02 03:04:05",
            &fresh_nonce(),
        );
        assert_error(&c.send(&req).unwrap(), 400, "InvalidTimeStamp.Format");
    }
}

#[test]
fn reused_nonce_is_refused() {
    let w = world();
    let h = start(&w);
    for scheme in [Scheme::V1, Scheme::V3] {
        let c = client(&h, scheme);
        let nonce = fresh_nonce();
        let req = c.build_at("DescribeDisks", DESCRIBE, &now_stamp(), &nonce);
        ok(&c.send(&req).unwrap());
        assert_error(&c.send(&req).unwrap(), 400, "SignatureNonceUsed");
        // Same nonce, different (fresh) signature: still used.
        let again = c.build_at(
            "DescribeDisks",
            &[("RegionId", REGION)],
            &now_stamp(),
            &nonce,
        );
        assert_error(&c.send(&again).unwrap(), 400, "SignatureNonceUsed");
    }
}

#[test]
fn v3_unsigned_acs_header_is_incomplete() {
    let w = world();
    let h = start(&w);
    let c = client(&h, Scheme::V3);
    let mut req = c.build("DescribeDisks", DESCRIBE);
    req.headers.push(("x-acs-extra".into(), "1".into()));
    assert_error(&c.send(&req).unwrap(), 400, "IncompleteSignature");
    let mut req = c.build("DescribeDisks", DESCRIBE);
    req.headers.retain(|(k, _)| k != "x-acs-signature-nonce");
    // Removing a signed header makes the request incomplete.
    let r = c.send(&req).unwrap();
    assert_error(&r, 400, "MissingParameter");
}

#[test]
fn sts_credentials_from_imds_work_and_expire() {
    let w = world();
    let h = start(&w);
    let (creds, _) = sts_creds(&h);
    for scheme in [Scheme::V1, Scheme::V3] {
        let c = EcsClient::new(&h.started.ecs_url, creds.clone(), scheme);
        ok(&c.call("DescribeDisks", DESCRIBE).unwrap());
        // Without the token, or with another one.
        let mut no_tok = c.clone();
        no_tok.creds.token = None;
        assert_error(
            &no_tok.call("DescribeDisks", DESCRIBE).unwrap(),
            400,
            "MissingSecurityToken",
        );
        let mut bad_tok = c.clone();
        bad_tok.creds.token = Some("CAISforged".into());
        assert_error(
            &bad_tok.call("DescribeDisks", DESCRIBE).unwrap(),
            400,
            "InvalidSecurityToken.MismatchWithAccessKey",
        );
    }
    // Lifetime is 600 s: move past it (less than the 15-minute window).
    advance_clock(&h, 601);
    for scheme in [Scheme::V1, Scheme::V3] {
        let c = EcsClient::new(&h.started.ecs_url, creds.clone(), scheme);
        assert_error(
            &c.call("DescribeDisks", DESCRIBE).unwrap(),
            400,
            "InvalidSecurityToken.Expired",
        );
    }
    // Fresh credentials from IMDS work again.
    let (fresh, _) = sts_creds(&h);
    assert_ne!(fresh.access_key_id, creds.access_key_id);
    let c = EcsClient::new(&h.started.ecs_url, fresh, Scheme::V3);
    ok(&c.call("DescribeDisks", DESCRIBE).unwrap());
    // No secret or token in the log.
    let raw = std::fs::read_to_string(w.path("requests.jsonl")).unwrap();
    assert!(!raw.contains(&creds.secret));
    assert!(!raw.contains(creds.token.as_deref().unwrap()));
}

#[test]
fn unknown_action_and_region() {
    let w = world();
    let h = start(&w);
    let c = client(&h, Scheme::V3);
    assert_error(
        &c.call("RunInstances", DESCRIBE).unwrap(),
        404,
        "InvalidAction.NotFound",
    );
    assert_error(
        &c.call("DescribeDisks", &[("RegionId", "cn-beijing")])
            .unwrap(),
        404,
        "InvalidRegionId.NotFound",
    );
    assert_error(
        &c.call("DescribeDisks", &[]).unwrap(),
        400,
        "MissingParameter",
    );
}

#[test]
fn sdk_style_requests_are_accepted() {
    // The Python SDK signs every header it sends and encodes spaces as '+'.
    let w = world();
    let h = start(&w);
    let host = ecs_sim::testkit::http::authority(&h.started.ecs_url).to_string();
    let creds = static_creds();
    let query: Vec<(String, String)> = [
        ("RegionId", REGION),
        ("InstanceId", INSTANCE),
        ("DiskId.1", DATA1),
        ("Name", "nightly-backup"),
        ("Description", "app consistent: a*b~c"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let headers: Vec<(String, String)> = [
        ("accept", "application/json"),
        ("host", host.as_str()),
        (
            "user-agent",
            "AlibabaCloud (Linux; x86_64) Python/3.11.7 Core/0.4.3 TeaDSL/2",
        ),
        ("x-acs-action", "CreateSnapshotGroup"),
        (
            "x-acs-content-sha256",
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        ),
        ("x-acs-credentials-provider", "static_ak"),
        ("x-acs-date", &now_stamp()),
        ("x-acs-signature-nonce", &fresh_nonce()),
        ("x-acs-version", "2014-05-26"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let s = ecs_sim::testkit::sign::sign_v3_headers("POST", &query, b"", headers, &creds);
    // Wire query the way Python's urlencode writes it: '+' for spaces.
    let wire: Vec<String> = query
        .iter()
        .map(|(k, v)| {
            let enc = ecs_sim::testkit::sign::rfc3986(v).replace("%20", "+");
            format!("{k}={enc}")
        })
        .collect();
    let req = RawRequest {
        method: "POST".into(),
        target: format!("/?{}", wire.join("&")),
        headers: s.headers,
        body: vec![],
    };
    assert!(req.target.contains("app+consistent"));
    let r = client(&h, Scheme::V3).send(&req).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    // Same for V1 with '+' on the wire.
    let c = client(&h, Scheme::V1);
    let p = [("RegionId", REGION), ("Name", "x y z")];
    let mut req = c.build("DescribeSnapshotGroups", &p);
    req.target = req.target.replace("%20", "+");
    assert!(req.target.contains("x+y+z"));
    ok(&c.send(&req).unwrap());
}

#[test]
fn v1_get_requests_are_verified_with_the_get_method() {
    let w = world();
    let h = start(&w);
    let op = vec![("RegionId".to_string(), REGION.to_string())];
    let (all, _) = ecs_sim::testkit::sign::sign_v1(
        "GET",
        "DescribeDisks",
        &op,
        &static_creds(),
        &now_stamp(),
        &fresh_nonce(),
    );
    let q: Vec<String> = all
        .iter()
        .map(|(k, v)| format!("{k}={}", ecs_sim::testkit::sign::rfc3986(v)))
        .collect();
    let get = RawRequest {
        method: "GET".into(),
        target: format!("/?{}", q.join("&")),
        headers: vec![],
        body: vec![],
    };
    let c = client(&h, Scheme::V1);
    ok(&c.send(&get).unwrap());
    // The same signed parameters sent as POST do not verify: the method is signed.
    let (all, _) = ecs_sim::testkit::sign::sign_v1(
        "GET",
        "DescribeDisks",
        &op,
        &static_creds(),
        &now_stamp(),
        &fresh_nonce(),
    );
    let q: Vec<String> = all
        .iter()
        .map(|(k, v)| format!("{k}={}", ecs_sim::testkit::sign::rfc3986(v)))
        .collect();
    let post = RawRequest {
        method: "POST".into(),
        target: format!("/?{}", q.join("&")),
        headers: vec![],
        body: vec![],
    };
    assert_error(&c.send(&post).unwrap(), 400, "SignatureDoesNotMatch");
}
