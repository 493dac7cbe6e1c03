//! The ECS client against a local HTTP server that recomputes the signature of
//! every request, as ECS does.

mod cloud_support;

use std::time::Duration;

use appsnap::cloud::credentials::{AccessKey, Credentials};
use appsnap::cloud::ecs::{
    ClientToken, CreateSnapshotGroup, DeleteOutcome, EcsClient, EcsError, GroupDisks,
    SnapshotGroupFilter, Tag,
};
use appsnap::cloud::retry::{Backoff, RetryPolicy};
use appsnap::cloud::secret::Secret;
use appsnap::cloud::tls;
use appsnap::policy::types::{CloudSettings, DiskId, SignatureVersion};
use cloud_support::*;
use serde_json::json;
use tokio::time::Instant;
use wiremock::matchers::any;
use wiremock::{Mock, MockServer, ResponseTemplate};

const AK: &str = "STS.TestAccessKeyId1";
const SECRET: &str = "test-secret-3e1f0a7c";
const TOKEN: &str = "CAIS+test/token==secret-9d2b";

fn keys() -> KeyRing {
    KeyRing::new().with(AK, SECRET, Some(TOKEN))
}

fn sts_credentials() -> Credentials {
    Credentials::from_static(AccessKey {
        access_key_id: AK.into(),
        access_key_secret: Secret::new(SECRET),
        security_token: Some(Secret::new(TOKEN)),
        expiration: Some(chrono::Utc::now() + chrono::Duration::hours(6)),
    })
}

fn fast_retries() -> RetryPolicy {
    RetryPolicy {
        normal: Backoff {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(50),
        },
        throttling: Backoff {
            initial: Duration::from_millis(20),
            max: Duration::from_millis(100),
        },
        max_attempts: 8,
        attempt_timeout: Duration::from_secs(10),
    }
}

fn client(server: &MockServer, version: SignatureVersion) -> EcsClient {
    tls::install_provider();
    let settings = CloudSettings {
        endpoint: Some(server.uri()),
        signature_version: version,
        ..CloudSettings::default()
    };
    EcsClient::new(&settings, "cn-hangzhou", sts_credentials())
        .unwrap()
        .with_retry_policy(fast_retries())
}

fn disk(s: &str) -> DiskId {
    DiskId::parse(s).unwrap()
}

fn csg_request() -> CreateSnapshotGroup {
    CreateSnapshotGroup {
        instance_id: "i-bp1abcdefghijklmnop0".into(),
        disks: GroupDisks::Only(vec![disk("d-bp1aaaa"), disk("d-bp1bbbb")]),
        name: "mysql-20250102T030405Z".into(),
        description: Some("nightly MySQL: fsfreeze /data, /log; 100% *ok* ~ü".into()),
        tags: vec![
            Tag::new("appsnap:job", "mysql"),
            Tag::new("appsnap:consistency", "application"),
            Tag::new("env", ""),
        ],
        resource_group_id: None,
        client_token: ClientToken::parse("appsnap-0123456789abcdef0123456789abcdef").unwrap(),
    }
}

fn soon(secs: u64) -> Instant {
    Instant::now() + Duration::from_secs(secs)
}

async fn create_group_with_exact_params(version: SignatureVersion) {
    let server = MockServer::start().await;
    Mock::given(ActionIs("CreateSnapshotGroup"))
        .and(SignedBy(keys()))
        .respond_with(ecs_ok(json!({"SnapshotGroupId": "ssg-abc123"})))
        .expect(1)
        .mount(&server)
        .await;
    let id = client(&server, version)
        .create_snapshot_group(&csg_request(), soon(10))
        .await
        .unwrap();
    assert_eq!(id, "ssg-abc123");
    let seen = assert_all_signed(&server, &keys()).await;
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].action, "CreateSnapshotGroup");
    let want: std::collections::BTreeMap<String, String> = [
        ("RegionId", "cn-hangzhou"),
        ("InstanceId", "i-bp1abcdefghijklmnop0"),
        ("DiskId.1", "d-bp1aaaa"),
        ("DiskId.2", "d-bp1bbbb"),
        ("Name", "mysql-20250102T030405Z"),
        (
            "Description",
            "nightly MySQL: fsfreeze /data, /log; 100% *ok* ~ü",
        ),
        ("Tag.1.Key", "appsnap:job"),
        ("Tag.1.Value", "mysql"),
        ("Tag.2.Key", "appsnap:consistency"),
        ("Tag.2.Value", "application"),
        ("Tag.3.Key", "env"),
        ("Tag.3.Value", ""),
        ("ClientToken", "appsnap-0123456789abcdef0123456789abcdef"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(seen[0].params, want, "exact CreateSnapshotGroup parameters");
}

#[tokio::test]
async fn create_snapshot_group_v3_sends_exact_signed_parameters() {
    create_group_with_exact_params(SignatureVersion::V3).await;
}

#[tokio::test]
async fn create_snapshot_group_v1_sends_exact_signed_parameters() {
    create_group_with_exact_params(SignatureVersion::V1).await;
}

#[tokio::test]
async fn exclude_disks_use_exclude_disk_id() {
    let server = MockServer::start().await;
    Mock::given(ActionIs("CreateSnapshotGroup"))
        .respond_with(ecs_ok(json!({"SnapshotGroupId": "ssg-x"})))
        .mount(&server)
        .await;
    let mut req = csg_request();
    req.disks = GroupDisks::AllExcept(vec![disk("d-bp1cccc")]);
    client(&server, SignatureVersion::V3)
        .create_snapshot_group(&req, soon(10))
        .await
        .unwrap();
    let seen = assert_all_signed(&server, &keys()).await;
    let p = &seen[0].params;
    assert_eq!(
        p.get("ExcludeDiskId.1").map(String::as_str),
        Some("d-bp1cccc")
    );
    assert!(!p.keys().any(|k| k.starts_with("DiskId.")));
}

#[tokio::test]
async fn throttling_burst_is_retried_within_the_deadline_with_one_client_token() {
    let server = MockServer::start().await;
    Mock::given(ActionIs("CreateSnapshotGroup"))
        .and(SignedBy(keys()))
        .respond_with(Sequence::new(vec![
            ecs_error(
                400,
                "Throttling.User",
                "Request was denied due to user flow control.",
            ),
            ecs_error(
                403,
                "Throttling",
                "Request was denied due to user flow control.",
            ),
            ecs_error(
                503,
                "ServiceUnavailable",
                "The request has failed due to a temporary failure of the server.",
            ),
            ecs_error(
                400,
                "Throttling.Api",
                "Request was denied due to api flow control.",
            ),
            ecs_ok(json!({"SnapshotGroupId": "ssg-after-burst"})),
        ]))
        .expect(5)
        .mount(&server)
        .await;
    let id = client(&server, SignatureVersion::V3)
        .create_snapshot_group(&csg_request(), soon(30))
        .await
        .unwrap();
    assert_eq!(id, "ssg-after-burst");
    let seen = assert_all_signed(&server, &keys()).await; // also: fresh nonce per attempt
    assert_eq!(seen.len(), 5);
    for s in &seen {
        assert_eq!(
            s.params["ClientToken"], "appsnap-0123456789abcdef0123456789abcdef",
            "every retry reuses the ClientToken"
        );
    }
}

#[tokio::test]
async fn deadline_expiring_during_backoff_is_a_clean_error_and_sends_nothing_more() {
    let server = MockServer::start().await;
    Mock::given(ActionIs("CreateSnapshotGroup"))
        .respond_with(ecs_error(400, "Throttling.User", "flow control"))
        .expect(1)
        .mount(&server)
        .await;
    // Throttling backoff (>= 30 s) cannot fit in the 5 s left before the deadline.
    let policy = RetryPolicy {
        throttling: Backoff {
            initial: Duration::from_secs(60),
            max: Duration::from_secs(60),
        },
        ..fast_retries()
    };
    let ecs = client(&server, SignatureVersion::V3).with_retry_policy(policy);
    let err = ecs
        .create_snapshot_group(&csg_request(), soon(5))
        .await
        .unwrap_err();
    match &err {
        EcsError::DeadlineExceeded { attempts, last, .. } => {
            assert_eq!(*attempts, 1);
            assert!(
                matches!(last.as_deref(), Some(EcsError::Api { code, .. }) if code == "Throttling.User")
            );
        }
        other => panic!("expected DeadlineExceeded, got {other:?}"),
    }
    assert_eq!(err.code(), Some("Throttling.User"));
    assert!(err.to_string().contains("deadline"), "{err}");
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
}

#[tokio::test]
async fn deadline_already_past_sends_no_request() {
    let server = MockServer::start().await;
    Mock::given(any())
        .respond_with(ecs_ok(json!({})))
        .expect(0)
        .mount(&server)
        .await;
    let past = Instant::now();
    let err = client(&server, SignatureVersion::V3)
        .create_snapshot_group(&csg_request(), past)
        .await
        .unwrap_err();
    assert!(
        matches!(err, EcsError::DeadlineExceeded { attempts: 0, .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn slow_answer_times_out_within_the_deadline_and_is_retried() {
    let server = MockServer::start().await;
    Mock::given(ActionIs("DescribeDisks"))
        .respond_with(ecs_ok(json!({"Disks": {"Disk": []}})).set_delay(Duration::from_secs(5)))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(ActionIs("DescribeDisks"))
        .respond_with(ecs_ok(
            json!({"Disks": {"Disk": [{"DiskId": "d-x", "Category": "cloud_essd"}]}}),
        ))
        .mount(&server)
        .await;
    let policy = RetryPolicy {
        attempt_timeout: Duration::from_secs(1),
        ..fast_retries()
    };
    let disks = client(&server, SignatureVersion::V3)
        .with_retry_policy(policy)
        .describe_disks("i-1", &[], soon(20))
        .await
        .unwrap();
    assert_eq!(disks.len(), 1);
    // The slow first attempt was abandoned and retried (a very slow machine may retry more).
    assert!(assert_all_signed(&server, &keys()).await.len() >= 2);
}

#[tokio::test]
async fn quota_exceeded_is_not_retried_and_keeps_its_code() {
    let server = MockServer::start().await;
    Mock::given(ActionIs("CreateSnapshotGroup"))
        .respond_with(ecs_error(
            403,
            "QuotaExceed.Snapshot",
            "The snapshot quota exceeds.",
        ))
        .expect(1)
        .mount(&server)
        .await;
    let err = client(&server, SignatureVersion::V3)
        .create_snapshot_group(&csg_request(), soon(30))
        .await
        .unwrap_err();
    match &err {
        EcsError::Api {
            code,
            message,
            request_id,
            http_status,
            ..
        } => {
            assert_eq!(code, "QuotaExceed.Snapshot");
            assert_eq!(message, "The snapshot quota exceeds.");
            assert_eq!(request_id.as_deref(), Some("req-QuotaExceed.Snapshot"));
            assert_eq!(*http_status, 403);
        }
        other => panic!("expected Api, got {other:?}"),
    }
    assert!(!err.is_retryable());
    assert!(err.to_string().contains("QuotaExceed.Snapshot"));
}

#[tokio::test]
async fn connection_refused_is_retried_until_the_deadline() {
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    tls::install_provider();
    let settings = CloudSettings {
        endpoint: Some(format!("http://127.0.0.1:{port}")),
        ..CloudSettings::default()
    };
    let ecs = EcsClient::new(&settings, "cn-hangzhou", sts_credentials())
        .unwrap()
        .with_retry_policy(RetryPolicy {
            max_attempts: 3,
            ..fast_retries()
        });
    let err = ecs.describe_disks("i-1", &[], soon(20)).await.unwrap_err();
    assert!(matches!(err, EcsError::Transport { .. }), "{err:?}");
    assert!(err.is_retryable());
    // The one-line message says why, not just "error sending request".
    assert!(err.to_string().contains("Connection refused"), "{err}");
}

#[tokio::test]
async fn describe_disks_follows_next_token() {
    let server = MockServer::start().await;
    Mock::given(ActionIs("DescribeDisks"))
        .and(wiremock::matchers::query_param("NextToken", "page2"))
        .respond_with(ecs_ok(json!({
            "NextToken": "",
            "Disks": {"Disk": [{"DiskId": "d-b", "Category": "cloud", "Type": "data", "Size": 20,
                                "Status": "In_use", "InstanceId": "i-1", "MultiAttach": "Disabled"}]}
        })))
        .mount(&server)
        .await;
    Mock::given(ActionIs("DescribeDisks"))
        .respond_with(ecs_ok(json!({
            "NextToken": "page2",
            "Disks": {"Disk": [{"DiskId": "d-a", "Category": "cloud_essd", "Type": "system", "Size": 40,
                                "Status": "In_use", "InstanceId": "i-1", "SerialNumber": "bp1a",
                                "MultiAttach": "Disabled"}]}
        })))
        .mount(&server)
        .await;
    let disks = client(&server, SignatureVersion::V3)
        .describe_disks("i-1", &[disk("d-a"), disk("d-b")], soon(10))
        .await
        .unwrap();
    assert_eq!(disks.len(), 2);
    assert_eq!(disks[0].disk_id, "d-a");
    assert!(disks[0].supports_snapshot_group());
    assert!(!disks[1].supports_snapshot_group());
    assert_eq!(disks[0].serial_number, "bp1a");
    let seen = assert_all_signed(&server, &keys()).await;
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].params["DiskIds"], r#"["d-a","d-b"]"#);
    assert_eq!(seen[0].params["InstanceId"], "i-1");
    assert!(!seen[0].params.contains_key("NextToken"));
    assert_eq!(seen[1].params["NextToken"], "page2");
}

#[tokio::test]
async fn snapshot_groups_parse_tags_and_snapshots() {
    let server = MockServer::start().await;
    Mock::given(ActionIs("DescribeSnapshotGroups"))
        .respond_with(ecs_ok(json!({
            "NextToken": "",
            "SnapshotGroups": {"SnapshotGroup": [{
                "SnapshotGroupId": "ssg-1", "Name": "mysql-x", "Status": "accomplished",
                "InstanceId": "i-1", "CreationTime": "2025-01-02T03:04:05Z",
                "Tags": {"Tag": [{"Key": "appsnap:job", "Value": "mysql"}]},
                "Snapshots": {"Snapshot": [{"SnapshotId": "s-1", "SourceDiskId": "d-a",
                    "SourceDiskType": "data", "Progress": "100%", "Available": true}]}
            }]}
        })))
        .mount(&server)
        .await;
    let filter = SnapshotGroupFilter {
        instance_id: Some("i-1".into()),
        tags: vec![Tag::new("appsnap:job", "mysql")],
        ..Default::default()
    };
    let groups = client(&server, SignatureVersion::V1)
        .describe_snapshot_groups(&filter, soon(10))
        .await
        .unwrap();
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0].tag("appsnap:job"), Some("mysql"));
    assert_eq!(groups[0].snapshots[0].progress, "100%");
    assert!(groups[0].snapshots[0].available);
    let seen = assert_all_signed(&server, &keys()).await;
    assert_eq!(seen[0].params["Tag.1.Key"], "appsnap:job");
    assert_eq!(seen[0].params["InstanceId"], "i-1");
}

/// DescribeSnapshots spells tags `{TagKey, TagValue}` (official SDK model
/// `DescribeSnapshotsResponseBodySnapshotsSnapshotTagsTag`); a tagged
/// snapshot must decode, or retention and the exit-16 check break.
#[tokio::test]
async fn snapshots_decode_tagkey_tagvalue_tags() {
    let server = MockServer::start().await;
    Mock::given(ActionIs("DescribeSnapshots"))
        .respond_with(ecs_ok(json!({
            "NextToken": "",
            "Snapshots": {"Snapshot": [{
                "SnapshotId": "s-1", "SourceDiskId": "d-a", "Status": "progressing",
                "Progress": "40%", "Available": true,
                "Tags": {"Tag": [{"TagKey": "appsnap:consistency", "TagValue": "app"}]}
            }]}
        })))
        .mount(&server)
        .await;
    let snaps = client(&server, SignatureVersion::V3)
        .describe_snapshots(&Default::default(), soon(10))
        .await
        .unwrap();
    assert_eq!(snaps[0].tags, vec![Tag::new("appsnap:consistency", "app")]);
}

/// The RPC API answers XML unless asked for JSON: every V3 request asks.
#[tokio::test]
async fn every_request_asks_for_json() {
    let server = MockServer::start().await;
    Mock::given(ActionIs("TagResources"))
        .and(wiremock::matchers::header("accept", "application/json"))
        .respond_with(ecs_ok(json!({})))
        .mount(&server)
        .await;
    Mock::given(any())
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("content-type", "text/xml;charset=utf-8")
                .set_body_string("<?xml version='1.0' encoding='UTF-8'?><TagResourcesResponse><RequestId>r</RequestId></TagResourcesResponse>"),
        )
        .mount(&server)
        .await;
    for v in [SignatureVersion::V3, SignatureVersion::V1] {
        client(&server, v)
            .tag_resources("snapshot", &["s-1".into()], &[Tag::new("k", "v")], soon(10))
            .await
            .unwrap_or_else(|e| panic!("{v:?}: {e}"));
    }
}

/// An XML or HTML body is an error that says what came back.
#[tokio::test]
async fn xml_or_html_answers_say_what_came_back() {
    for (ct, body, want) in [
        (
            "text/xml",
            "<?xml version='1.0'?><DescribeDisksResponse/>",
            "XML",
        ),
        ("text/html", "<!DOCTYPE html><html>login</html>", "HTML"),
    ] {
        let server = MockServer::start().await;
        Mock::given(any())
            .respond_with(ResponseTemplate::new(200).set_body_raw(body, ct))
            .mount(&server)
            .await;
        let err = client(&server, SignatureVersion::V3)
            .describe_disks("i-1", &[], soon(10))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains(want) && err.contains(ct), "{err}");
    }
}

#[tokio::test]
async fn tag_and_delete() {
    let server = MockServer::start().await;
    Mock::given(ActionIs("TagResources"))
        .respond_with(ecs_ok(json!({})))
        .mount(&server)
        .await;
    Mock::given(ActionIs("DeleteSnapshotGroup"))
        .and(wiremock::matchers::query_param(
            "SnapshotGroupId",
            "ssg-gone",
        ))
        .respond_with(ecs_error(
            404,
            "InvalidSnapshotGroupId.NotFound",
            "not found",
        ))
        .mount(&server)
        .await;
    Mock::given(ActionIs("DeleteSnapshotGroup"))
        .respond_with(ecs_ok(json!({"OperationProgressSet": {"OperationProgress": [
            {"OperationStatus": "Success", "RelatedItemSet": {"RelatedItem": [{"Name": "SnapshotId", "Value": "s-1"}]}},
            {"OperationStatus": "Failed", "ErrorCode": "InvalidSnapshot.ImageUsing", "ErrorMsg": "used by image",
             "RelatedItemSet": {"RelatedItem": [{"Name": "SnapshotId", "Value": "s-2"}]}}
        ]}})))
        .mount(&server)
        .await;
    let ecs = client(&server, SignatureVersion::V3);
    ecs.tag_resources(
        "snapshot",
        &["s-1".to_string(), "s-2".to_string()],
        &[Tag::new("appsnap:job", "mysql")],
        soon(10),
    )
    .await
    .unwrap();
    assert_eq!(
        ecs.delete_snapshot_group("ssg-gone", soon(10))
            .await
            .unwrap(),
        DeleteOutcome::AlreadyGone
    );
    assert_eq!(
        ecs.delete_snapshot_group("ssg-1", soon(10)).await.unwrap(),
        DeleteOutcome::Partial(vec![(
            "s-2".into(),
            "InvalidSnapshot.ImageUsing".into(),
            "used by image".into()
        )])
    );
    let seen = assert_all_signed(&server, &keys()).await;
    assert_eq!(seen[0].params["ResourceType"], "snapshot");
    assert_eq!(seen[0].params["ResourceId.2"], "s-2");
    assert_eq!(seen[0].params["Tag.1.Value"], "mysql");
}

#[test]
fn https_is_required_except_for_loopback() {
    tls::install_provider();
    let creds = sts_credentials();
    let with = |e: &str| CloudSettings {
        endpoint: Some(e.to_string()),
        ..CloudSettings::default()
    };
    for bad in [
        "http://ecs.cn-hangzhou.aliyuncs.com",
        "http://10.0.0.1:8080",
        "ftp://x",
    ] {
        let err = EcsClient::new(&with(bad), "cn-hangzhou", creds.clone()).unwrap_err();
        assert!(matches!(err, EcsError::Endpoint { .. }), "{bad}: {err:?}");
    }
    for ok in [
        "http://127.0.0.1:9",
        "http://localhost:9",
        "http://[::1]:9",
        "https://ecs.example.com",
    ] {
        EcsClient::new(&with(ok), "cn-hangzhou", creds.clone()).unwrap();
    }
    let default = EcsClient::new(&CloudSettings::default(), "cn-beijing", creds).unwrap();
    assert_eq!(
        default.endpoint(),
        "https://ecs-vpc.cn-beijing.aliyuncs.com/"
    );
}

/// Secrets never reach logs or error strings, including the server's echo of
/// the string-to-sign (which in v1 contains the STS token).
#[tokio::test(flavor = "current_thread")]
async fn secrets_absent_from_logs_and_errors() {
    let (_guard, logs) = capture_logs();
    let server = MockServer::start().await;
    let echoed = format!(
        "Specified signature is not matched with our calculation. server string to sign is:POST&%2F&AccessKeyId%3D{AK}%26SecurityToken%3D{}",
        appsnap::cloud::sign::percent_encode(&appsnap::cloud::sign::percent_encode(TOKEN))
    );
    Mock::given(ActionIs("DescribeDisks"))
        .respond_with(ecs_error(400, "SignatureDoesNotMatch", &echoed))
        .mount(&server)
        .await;
    Mock::given(ActionIs("CreateSnapshotGroup"))
        .respond_with(ecs_error(
            403,
            "InvalidSecurityToken.Malformed",
            &format!("bad token {TOKEN} for secret {SECRET}"),
        ))
        .mount(&server)
        .await;
    Mock::given(ActionIs("DescribeSnapshots"))
        .respond_with(
            ResponseTemplate::new(502).set_body_string(format!("<html>proxy saw {TOKEN}</html>")),
        )
        .mount(&server)
        .await;
    let mut errors = Vec::new();
    for version in [SignatureVersion::V1, SignatureVersion::V3] {
        let ecs = client(&server, version).with_retry_policy(RetryPolicy {
            max_attempts: 2,
            ..fast_retries()
        });
        errors.push(ecs.describe_disks("i-1", &[], soon(10)).await.unwrap_err());
        errors.push(
            ecs.create_snapshot_group(&csg_request(), soon(10))
                .await
                .unwrap_err(),
        );
        errors.push(
            ecs.describe_snapshots(&Default::default(), soon(10))
                .await
                .unwrap_err(),
        );
        tracing::info!(client = ?ecs, "client state");
    }
    // A transport error on a v1 URL (which carries the token in its query).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dead = EcsClient::new(
        &CloudSettings {
            endpoint: Some(format!("http://127.0.0.1:{port}")),
            signature_version: SignatureVersion::V1,
            ..CloudSettings::default()
        },
        "cn-hangzhou",
        sts_credentials(),
    )
    .unwrap()
    .with_retry_policy(RetryPolicy {
        max_attempts: 2,
        ..fast_retries()
    });
    errors.push(dead.describe_disks("i-1", &[], soon(10)).await.unwrap_err());

    assert_eq!(errors[0].code(), Some("SignatureDoesNotMatch"));
    assert!(
        errors[0]
            .to_string()
            .contains("string to sign is:<redacted>"),
        "{}",
        errors[0]
    );
    let enc = appsnap::cloud::sign::percent_encode(TOKEN);
    let enc2 = appsnap::cloud::sign::percent_encode(&enc);
    let forbidden = [SECRET, TOKEN, enc.as_str(), enc2.as_str()];
    let log_text = logs.text();
    assert!(
        log_text.contains("retrying") || log_text.contains("ECS"),
        "logs were captured: {log_text}"
    );
    for e in &errors {
        let shown = format!("{e} | {e:?} | {:?}", std::error::Error::source(e));
        for f in forbidden {
            assert!(!shown.contains(f), "secret {f:?} in error: {shown}");
        }
    }
    for f in forbidden {
        assert!(!log_text.contains(f), "secret {f:?} in logs:\n{log_text}");
    }
}

/// The verifier is not a rubber stamp: a wrong secret, a tampered parameter or
/// a missing token are all rejected, in both schemes.
#[tokio::test]
async fn verifier_rejects_bad_signatures() {
    for version in [SignatureVersion::V3, SignatureVersion::V1] {
        let server = MockServer::start().await;
        Mock::given(any())
            .respond_with(ecs_ok(json!({"SnapshotGroupId": "ssg-1"})))
            .mount(&server)
            .await;
        client(&server, version)
            .create_snapshot_group(&csg_request(), soon(10))
            .await
            .unwrap();
        let req = &server.received_requests().await.unwrap()[0];
        assert!(verify(req, &keys()).is_ok());
        let wrong_secret = KeyRing::new().with(AK, "other-secret", Some(TOKEN));
        assert!(verify(req, &wrong_secret)
            .unwrap_err()
            .contains("SignatureDoesNotMatch"));
        let wrong_token = KeyRing::new().with(AK, SECRET, Some("other-token"));
        assert!(verify(req, &wrong_token).is_err());
        let mut tampered = req.clone();
        let q = tampered
            .url
            .query()
            .unwrap()
            .replace("d-bp1bbbb", "d-bp1zzzz");
        tampered.url.set_query(Some(&q));
        assert!(verify(&tampered, &keys())
            .unwrap_err()
            .contains("SignatureDoesNotMatch"));
    }
}

/// A TCP relay in front of `target` that counts the connections it accepts:
/// wiremock cannot tell whether two requests came over one connection.
struct ConnectionCounter {
    uri: String,
    accepted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl ConnectionCounter {
    fn start(target: std::net::SocketAddr) -> ConnectionCounter {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let uri = format!("http://{}", listener.local_addr().unwrap());
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&accepted);
        std::thread::spawn(move || {
            for inbound in listener.incoming() {
                let Ok(inbound) = inbound else { return };
                count.fetch_add(1, Ordering::SeqCst);
                let Ok(outbound) = std::net::TcpStream::connect(target) else {
                    continue;
                };
                for (mut from, mut to) in [
                    (inbound.try_clone().unwrap(), outbound.try_clone().unwrap()),
                    (outbound, inbound),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Write);
                    });
                }
            }
        });
        ConnectionCounter { uri, accepted }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// `warm()` opens the connection ahead of time; the signed call that follows
/// reuses it (one TCP connection for both), so the call made while frozen
/// pays no connect or TLS handshake.
#[tokio::test]
async fn warm_opens_the_connection_before_the_call() {
    let server = MockServer::start().await;
    Mock::given(wiremock::matchers::method("HEAD"))
        .respond_with(ResponseTemplate::new(404))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(ActionIs("CreateSnapshotGroup"))
        .respond_with(ecs_ok(json!({"SnapshotGroupId": "ssg-warm"})))
        .expect(1)
        .mount(&server)
        .await;
    let relay = ConnectionCounter::start(*server.address());
    tls::install_provider();
    let settings = CloudSettings {
        endpoint: Some(relay.uri.clone()),
        signature_version: SignatureVersion::V3,
        ..CloudSettings::default()
    };
    let ecs = EcsClient::new(&settings, "cn-hangzhou", sts_credentials())
        .unwrap()
        .with_retry_policy(fast_retries());
    ecs.warm(soon(5)).await.unwrap();
    assert_eq!(relay.accepted(), 1, "warm() opened a connection");
    let id = ecs
        .create_snapshot_group(&csg_request(), soon(5))
        .await
        .unwrap();
    assert_eq!(id, "ssg-warm");
    let reqs = server.received_requests().await.unwrap();
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[0].method.as_str(), "HEAD");
    assert_eq!(
        relay.accepted(),
        1,
        "the call after warm() reused the warm connection"
    );
}

/// Only the group's own not-found codes mean "already gone": a wrong region
/// (or any other `*.NotFound`) must stay an error, or retention would report
/// deletions that never happened.
#[tokio::test]
async fn delete_counts_only_the_groups_own_not_found_as_gone() {
    for (code, gone) in [
        ("InvalidSnapshotGroup.NotFound", true),
        ("InvalidSnapshotGroupId.NotFound", true),
        ("InvalidRegionId.NotFound", false),
        ("InvalidInstanceId.NotFound", false),
        ("InvalidAccessKeyId.NotFound", false),
    ] {
        let server = MockServer::start().await;
        Mock::given(ActionIs("DeleteSnapshotGroup"))
            .respond_with(ecs_error(404, code, "does not exist in our records"))
            .mount(&server)
            .await;
        let got = client(&server, SignatureVersion::V3)
            .delete_snapshot_group("ssg-x", soon(10))
            .await;
        if gone {
            assert_eq!(got.unwrap(), DeleteOutcome::AlreadyGone, "{code}");
        } else {
            let e = got.unwrap_err();
            assert_eq!(e.code(), Some(code), "{code}: {e}");
        }
    }
}

/// Every spelling of a bad AccessKey ECS is known to answer ends with the
/// vendor's "no permission" code 3, not a generic failure.
#[test]
fn access_key_errors_map_to_exit_3() {
    use appsnap::job::outcome::ecs_outcome;
    use appsnap::job::outcome::Outcome;
    let api = |code: &str| EcsError::Api {
        action: "DescribeDisks".into(),
        code: code.into(),
        message: String::new(),
        request_id: None,
        http_status: 404,
    };
    for code in [
        "InvalidAccessKeyId",
        "InvalidAccessKeyId.NotFound",
        "InvalidAccessKeyId.Inactive",
        "Forbidden.RAM",
        "NoPermission",
    ] {
        assert_eq!(
            ecs_outcome(&api(code), Outcome::ConditionsNotMet).code(),
            3,
            "{code}"
        );
    }
    assert_eq!(
        ecs_outcome(&api("InvalidRegionId.NotFound"), Outcome::ConditionsNotMet).code(),
        1
    );
}

/// `x-acs-retry-after` (milliseconds, as the official tea-openapi reads it)
/// stretches the wait before the next attempt beyond the SDK backoff.
#[tokio::test]
async fn throttled_answer_with_retry_after_waits_at_least_that_long() {
    let server = MockServer::start().await;
    Mock::given(ActionIs("CreateSnapshotGroup"))
        .respond_with(Sequence::new(vec![
            ecs_error(400, "Throttling.User", "flow control")
                .insert_header("x-acs-retry-after", "700"),
            ecs_ok(json!({"SnapshotGroupId": "ssg-after-wait"})),
        ]))
        .expect(2)
        .mount(&server)
        .await;
    let started = std::time::Instant::now();
    let id = client(&server, SignatureVersion::V3)
        .create_snapshot_group(&csg_request(), soon(30))
        .await
        .unwrap();
    assert_eq!(id, "ssg-after-wait");
    // The fast test backoff is at most 100 ms; only the header explains a call
    // this long. (A lower bound: a slow machine can only make it longer.)
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(700), "{took:?}");
}

/// A retry-after that would end past the caller's deadline is not waited
/// out: the call ends at once with DeadlineExceeded and sends nothing more.
#[tokio::test]
async fn retry_after_past_the_deadline_gives_up_without_sleeping() {
    let server = MockServer::start().await;
    Mock::given(ActionIs("CreateSnapshotGroup"))
        .respond_with(
            ecs_error(400, "Throttling.User", "flow control")
                .insert_header("x-acs-retry-after", "60000"),
        )
        .expect(1)
        .mount(&server)
        .await;
    // 60 s asked for, 30 s left: waiting would pass the deadline.
    let deadline = soon(30);
    let err = client(&server, SignatureVersion::V3)
        .create_snapshot_group(&csg_request(), deadline)
        .await
        .unwrap_err();
    assert!(
        matches!(err, EcsError::DeadlineExceeded { attempts: 1, .. }),
        "{err:?}"
    );
    // It returned well before the deadline instead of sleeping towards it.
    assert!(Instant::now() < deadline, "slept until the deadline");
    assert_eq!(err.code(), Some("Throttling.User"));
}

/// ECS's own per-group limits (documented 403 codes of CreateSnapshotGroup)
/// come back with a message that says what to do, and end with exit 4: the
/// group could not be created (they surface only when creating it).
#[tokio::test]
async fn group_limit_errors_say_what_to_do_and_exit_4() {
    use appsnap::job::outcome::ecs_outcome;
    use appsnap::job::outcome::Outcome;
    for (code, message, want) in [
        (
            "NumberExceed.TooManyDisks",
            "The number of all disks in the request exceeds.",
            "more disks than ECS accepts in one snapshot group",
        ),
        (
            "CapacityExceed.TooManyDisks",
            "The capacity of all disks in the request exceeds.",
            "total size",
        ),
        (
            "InvalidDisk.DiskCategoryInconsistent",
            "If any specified disk is of a regional disk category, then all disks must also be of that regional disk category.",
            "Regional ESSD",
        ),
    ] {
        let server = MockServer::start().await;
        Mock::given(ActionIs("CreateSnapshotGroup"))
            .respond_with(ecs_error(403, code, message))
            .expect(1)
            .mount(&server)
            .await;
        let err = client(&server, SignatureVersion::V3)
            .create_snapshot_group(&csg_request(), soon(10))
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(text.contains(code) && text.contains(want), "{text}");
        assert_eq!(
            ecs_outcome(&err, Outcome::GroupCreateFailed).code(),
            4,
            "{code}"
        );
    }
}
