//! Fault injection from the config and through the control endpoint.

mod support;

use std::time::{Duration, Instant};

use ecs_sim::faults::{ActionFault, ErrorFault};
use ecs_sim::testkit::Scheme;
use support::*;

const DD: &[(&str, &str)] = &[("RegionId", REGION)];

#[test]
fn error_n_times_from_config_then_normal() {
    let mut w = world();
    w.cfg.faults.actions.insert(
        "DescribeDisks".into(),
        ActionFault {
            error: Some(ErrorFault {
                code: "ServiceUnavailable".into(),
                status: 503,
                message: None,
                times: Some(2),
            }),
            ..Default::default()
        },
    );
    let h = start(&w);
    let c = client(&h, Scheme::V3);
    assert_error(
        &c.call("DescribeDisks", DD).unwrap(),
        503,
        "ServiceUnavailable",
    );
    assert_error(
        &c.call("DescribeDisks", DD).unwrap(),
        503,
        "ServiceUnavailable",
    );
    ok(&c.call("DescribeDisks", DD).unwrap());
    // Other actions are untouched.
    ok(&c.call("DescribeSnapshotGroups", DD).unwrap());
    let log = w.log_lines();
    assert_eq!(log.iter().filter(|l| l["verdict"] == "fault").count(), 2);
}

#[test]
fn faults_changed_mid_run_through_control_endpoint() {
    let w = world();
    let h = start(&w);
    let c = client(&h, Scheme::V1);
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
    let r = control(
        &h,
        "POST",
        "/_sim/faults",
        r#"{"actions":{"CreateSnapshotGroup":{"error":{"code":"InternalError","status":500,"times":1}}}}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let p = [
        ("RegionId", REGION),
        ("InstanceId", INSTANCE),
        ("DiskId.1", DATA2),
    ];
    assert_error(
        &c.call("CreateSnapshotGroup", &p).unwrap(),
        500,
        "InternalError",
    );
    ok(&c.call("CreateSnapshotGroup", &p).unwrap());
    // The plan shows the consumed counter.
    let plan = control(&h, "GET", "/_sim/faults", "").json();
    assert_eq!(plan["actions"]["CreateSnapshotGroup"]["error"]["times"], 0);
    // A malformed plan is refused and the old one kept.
    assert_eq!(
        control(&h, "POST", "/_sim/faults", r#"{"bogus":1}"#).status,
        400
    );
}

#[test]
fn wildcard_error_applies_to_every_action() {
    let w = world();
    let h = start(&w);
    let c = client(&h, Scheme::V3);
    control(
        &h,
        "POST",
        "/_sim/faults",
        r#"{"actions":{"*":{"error":{"code":"Throttling","status":400}}}}"#,
    );
    assert_error(&c.call("DescribeDisks", DD).unwrap(), 400, "Throttling");
    assert_error(&c.call("DescribeSnapshots", DD).unwrap(), 400, "Throttling");
    control(&h, "DELETE", "/_sim/faults", "");
    ok(&c.call("DescribeSnapshots", DD).unwrap());
}

#[test]
fn latency_delays_the_answer() {
    let w = world();
    let h = start(&w);
    let c = client(&h, Scheme::V3);
    control(
        &h,
        "POST",
        "/_sim/faults",
        r#"{"actions":{"DescribeDisks":{"latency_ms":400}}}"#,
    );
    let t = Instant::now();
    ok(&c.call("DescribeDisks", DD).unwrap());
    // Only a lower bound: a busy machine may be slower, never faster.
    assert!(t.elapsed() >= Duration::from_millis(400));
}

#[test]
fn hang_makes_a_short_timeout_client_give_up_once() {
    let w = world();
    let h = start(&w);
    let mut c = client(&h, Scheme::V3);
    control(
        &h,
        "POST",
        "/_sim/faults",
        r#"{"actions":{"DescribeDisks":{"hang_secs":5,"hang_times":1}}}"#,
    );
    c.timeout = Duration::from_millis(500);
    let r = c.call("DescribeDisks", DD);
    assert!(r.is_err(), "expected a client timeout, got {r:?}");
    c.timeout = Duration::from_secs(30);
    ok(&c.call("DescribeDisks", DD).unwrap());
}

#[test]
fn throttling_per_access_key() {
    let w = world();
    let h = start(&w);
    control(&h, "POST", "/_sim/faults", r#"{"throttle_rps_per_key":1}"#);
    let c = client(&h, Scheme::V1);
    // Within one second at most 1 passes; a burst of 10 must see throttling.
    let mut codes = Vec::new();
    for _ in 0..10 {
        codes.push(c.call("DescribeDisks", DD).unwrap().code());
    }
    assert!(
        codes
            .iter()
            .any(|c| c.as_deref() == Some("Throttling.User")),
        "{codes:?}"
    );
    let throttled = c.call("DescribeDisks", DD).unwrap();
    if throttled.code().is_some() {
        assert_error(&throttled, 400, "Throttling.User");
    }
    // Another key is counted separately.
    let (sts, _) = sts_creds(&h);
    let other = ecs_sim::testkit::EcsClient::new(&h.started.ecs_url, sts, Scheme::V3);
    ok(&other.call("DescribeDisks", DD).unwrap());
    // After a quiet second the first key passes again.
    std::thread::sleep(Duration::from_millis(1100));
    ok(&c.call("DescribeDisks", DD).unwrap());
}

#[test]
fn lost_answer_then_client_token_retry_returns_the_same_group() {
    let w = world();
    let h = start(&w);
    let mut c = client(&h, Scheme::V3);
    control(
        &h,
        "POST",
        "/_sim/faults",
        r#"{"actions":{"CreateSnapshotGroup":{"answer_delay_secs":5}}}"#,
    );
    let p = [
        ("RegionId", REGION),
        ("InstanceId", INSTANCE),
        ("DiskId.1", DATA1),
        ("ClientToken", "appsnap-retry-1"),
    ];
    c.timeout = Duration::from_millis(500);
    assert!(
        c.call("CreateSnapshotGroup", &p).is_err(),
        "answer should be late"
    );
    c.timeout = Duration::from_secs(30);
    // The group was accepted (and copied) even though the answer was lost.
    let v = ok(&c
        .call("DescribeSnapshotGroups", &[("RegionId", REGION)])
        .unwrap());
    let groups = v["SnapshotGroups"]["SnapshotGroup"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(groups.len(), 1);
    // Retrying with the same ClientToken gives the same group, not a new one
    // and not IncorrectDiskStatus.CreatingSnapshot.
    let v = ok(&c.call("CreateSnapshotGroup", &p).unwrap());
    assert_eq!(v["SnapshotGroupId"], groups[0]["SnapshotGroupId"]);
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
}

#[test]
fn fail_next_group_ends_failed_and_frees_the_disks() {
    let w = world();
    let h = start(&w);
    let c = client(&h, Scheme::V3);
    control(&h, "POST", "/_sim/faults", r#"{"fail_next_groups":1}"#);
    let bad = create_group(&c, &[]);
    let dsg = |id: &str| {
        let v = ok(&c
            .call(
                "DescribeSnapshotGroups",
                &[("RegionId", REGION), ("SnapshotGroupId.1", id)],
            )
            .unwrap());
        v["SnapshotGroups"]["SnapshotGroup"][0]["Status"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(dsg(&bad), "progressing");
    advance_clock(&h, 61);
    assert_eq!(dsg(&bad), "failed");
    let v = ok(&c
        .call(
            "DescribeSnapshots",
            &[("RegionId", REGION), ("Status", "failed")],
        )
        .unwrap());
    assert_eq!(v["TotalCount"], 2);
    // Only one group fails; the disks are free again.
    let good = create_group(&c, &[]);
    advance_clock(&h, 61);
    assert_eq!(dsg(&good), "accomplished");
}

#[test]
fn retry_while_the_first_request_is_still_accepting() {
    let w = world();
    let h = start(&w);
    control(&h, "POST", "/_sim/faults", r#"{"accept_delay_ms":3000}"#);
    let c = client(&h, Scheme::V3);
    let p = [
        ("RegionId", REGION),
        ("InstanceId", INSTANCE),
        ("DiskId.1", DATA1),
        ("ClientToken", "appsnap-slow-1"),
    ];
    let c2 = c.clone();
    let first = std::thread::spawn(move || {
        c2.call(
            "CreateSnapshotGroup",
            &[
                ("RegionId", REGION),
                ("InstanceId", INSTANCE),
                ("DiskId.1", DATA1),
                ("ClientToken", "appsnap-slow-1"),
            ],
        )
        .unwrap()
    });
    // Wait (bounded) until the first request holds its reservation.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let st = control(&h, "GET", "/_sim/state", "").json();
        if st["groups"][0]["copying"] == true {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "first request never reserved its group"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_error(
        &c.call("CreateSnapshotGroup", &p).unwrap(),
        403,
        "IdempotentProcessing",
    );
    let other = [
        ("RegionId", REGION),
        ("InstanceId", INSTANCE),
        ("DiskId.1", DATA1),
    ];
    assert_error(
        &c.call("CreateSnapshotGroup", &other).unwrap(),
        403,
        "IncorrectDiskStatus.CreatingSnapshot",
    );
    let r = first.join().unwrap();
    let id = ok(&r)["SnapshotGroupId"].as_str().unwrap().to_string();
    control(&h, "DELETE", "/_sim/faults", "");
    let again = ok(&c.call("CreateSnapshotGroup", &p).unwrap());
    assert_eq!(again["SnapshotGroupId"], id.as_str());
}

/// A client that gives up while its CreateSnapshotGroup is being accepted
/// (here during `accept_delay_ms`) does not stop ECS: the accepted request
/// is processed to the end, and the group gets its snapshots. An emulator
/// that dropped the work with the connection left a group `progressing`
/// with no snapshots forever, which real ECS never does.
#[test]
fn a_client_hanging_up_mid_accept_still_gets_a_finished_group() {
    let w = world();
    let h = start(&w);
    control(&h, "POST", "/_sim/faults", r#"{"accept_delay_ms":600}"#);
    let mut c = client(&h, Scheme::V3);
    c.timeout = Duration::from_millis(150);
    let r = c.call(
        "CreateSnapshotGroup",
        &[
            ("RegionId", REGION),
            ("InstanceId", INSTANCE),
            ("DiskId.1", DATA1),
        ],
    );
    assert!(r.is_err(), "the client timed out: {r:?}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let st = control(&h, "GET", "/_sim/state", "").json();
        let g = &st["groups"][0];
        if g["copying"] == false && g["pit_at"].is_string() {
            assert_eq!(g["snapshots"].as_array().map(Vec::len), Some(1), "{g}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the group stayed half-made after the client hung up: {g}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
