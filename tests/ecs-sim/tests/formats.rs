//! The RPC API answers XML unless the request asks for JSON; throttled
//! answers can carry `x-acs-retry-after`.

mod support;

use ecs_sim::testkit::Scheme;
use support::*;

const XML_TYPE: &str = "text/xml;charset=utf-8";
const JSON_TYPE: &str = "application/json;charset=utf-8";

#[test]
fn xml_unless_json_is_asked_for() {
    let w = world();
    let h = start(&w);
    let json_client = client(&h, Scheme::V3);
    create_group(
        &json_client,
        &[("Tag.1.Key", "appsnap:job"), ("Tag.1.Value", "db")],
    );
    for scheme in [Scheme::V3, Scheme::V1] {
        let mut c = client(&h, scheme);
        c.accept_json = false;
        let r = c
            .call("DescribeSnapshotGroups", &[("RegionId", REGION)])
            .unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("content-type"), Some(XML_TYPE), "{scheme:?}");
        let t = r.text();
        assert!(
            t.starts_with("<?xml version='1.0' encoding='UTF-8'?><DescribeSnapshotGroupsResponse>"),
            "{t}"
        );
        assert!(t.ends_with("</DescribeSnapshotGroupsResponse>"), "{t}");
        assert!(t.contains("<RequestId>"), "{t}");
        assert!(t.contains("<SnapshotGroups><SnapshotGroup>"), "{t}");
        // Lists repeat their element; two members, one tag.
        assert_eq!(t.matches("<Snapshot>").count(), 2, "{t}");
        assert!(
            t.contains("<Tags><Tag><Key>appsnap:job</Key><Value>db</Value></Tag></Tags>"),
            "{t}"
        );
        assert!(t.contains("<Available>true</Available>"), "{t}");
        // The log keeps both the JSON form and what was sent.
        let log = w.log_lines();
        let last = log.last().unwrap();
        assert_eq!(last["format"], "xml");
        assert_eq!(last["answer_xml"].as_str().unwrap(), t);
    }
    // Asked for JSON: JSON, either way of asking, any case.
    for scheme in [Scheme::V3, Scheme::V1] {
        let r = client(&h, scheme)
            .call("DescribeSnapshotGroups", &[("RegionId", REGION)])
            .unwrap();
        assert_eq!(r.header("content-type"), Some(JSON_TYPE), "{scheme:?}");
        assert!(r.json()["SnapshotGroups"]["SnapshotGroup"].is_array());
    }
    let mut c = client(&h, Scheme::V1);
    c.accept_json = false;
    let r = c
        .call("DescribeDisks", &[("RegionId", REGION), ("Format", "json")])
        .unwrap();
    assert_eq!(r.header("content-type"), Some(JSON_TYPE));
    let mut c = client(&h, Scheme::V3);
    c.accept_json = false;
    let r = c
        .call("DescribeDisks", &[("RegionId", REGION), ("Format", "JSON")])
        .unwrap();
    assert_eq!(r.header("content-type"), Some(JSON_TYPE));
}

#[test]
fn errors_are_xml_too_when_json_was_not_asked_for() {
    let w = world();
    let h = start(&w);
    let mut c = client(&h, Scheme::V3);
    c.accept_json = false;
    let r = c
        .call(
            "DeleteSnapshotGroup",
            &[("RegionId", REGION), ("SnapshotGroupId", "ssg-nosuchgroup")],
        )
        .unwrap();
    assert_eq!(r.status, 404);
    assert_eq!(r.header("content-type"), Some(XML_TYPE));
    let t = r.text();
    assert!(
        t.starts_with("<?xml version='1.0' encoding='UTF-8'?><Error><RequestId>"),
        "{t}"
    );
    assert!(t.ends_with("</Error>"), "{t}");
    assert_eq!(r.code().as_deref(), Some("InvalidSnapshotGroupId.NotFound"));
    assert_error(&r, 404, "InvalidSnapshotGroupId.NotFound");
    // An authentication failure before the action is known: XML as well.
    let mut bad = client(&h, Scheme::V1);
    bad.accept_json = false;
    bad.creds.secret = "wrong".into();
    let r = bad.call("DescribeDisks", &[("RegionId", REGION)]).unwrap();
    assert_eq!(r.header("content-type"), Some(XML_TYPE));
    assert_error(&r, 400, "SignatureDoesNotMatch");
}

#[test]
fn throttled_answers_carry_retry_after_when_set() {
    let w = world();
    let h = start(&w);
    let c = client(&h, Scheme::V3);
    control(
        &h,
        "POST",
        "/_sim/faults",
        r#"{"throttle_rps_per_key": 1, "retry_after_ms": 1500}"#,
    );
    // A burst: at most one per second passes, so one of these is throttled.
    let throttled = (0..10)
        .map(|_| c.call("DescribeDisks", &[("RegionId", REGION)]).unwrap())
        .find(|r| r.status != 200)
        .expect("a burst of 10 is throttled at 1 rps");
    assert_error(&throttled, 400, "Throttling.User");
    assert_eq!(throttled.header("x-acs-retry-after"), Some("1500"));
    // Without the key: no header.
    control(&h, "POST", "/_sim/faults", r#"{"throttle_rps_per_key": 1}"#);
    let throttled = (0..10)
        .map(|_| c.call("DescribeDisks", &[("RegionId", REGION)]).unwrap())
        .find(|r| r.status != 200)
        .expect("a burst of 10 is throttled at 1 rps");
    assert_eq!(throttled.header("x-acs-retry-after"), None);
}
