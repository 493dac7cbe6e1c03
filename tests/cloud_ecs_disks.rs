//! The restore drill's disk calls against a local HTTP server that checks
//! every signature: exact parameters (SDK request models), decoded fields
//! (SDK response models), error mapping, and the category fallback.

mod cloud_support;

use std::collections::BTreeMap;
use std::time::Duration;

use appsnap::cloud::credentials::{AccessKey, Credentials};
use appsnap::cloud::ecs::{
    default_drill_categories, ClientToken, CreateDisk, DiskDeleted, DrillCategory, EcsClient,
    EcsError, Tag, NOT_ATTACHED_CODES,
};
use appsnap::cloud::retry::{Backoff, RetryPolicy};
use appsnap::cloud::secret::Secret;
use appsnap::cloud::tls;
use appsnap::policy::types::{CloudSettings, DiskId, SignatureVersion};
use cloud_support::*;
use serde_json::json;
use tokio::time::Instant;
use wiremock::matchers::query_param;
use wiremock::{Mock, MockServer};

const AK: &str = "STS.TestAccessKeyId1";
const SECRET: &str = "test-secret-3e1f0a7c";
const TOKEN: &str = "CAIS+test/token==secret-9d2b";

fn keys() -> KeyRing {
    KeyRing::new().with(AK, SECRET, Some(TOKEN))
}

fn client(server: &MockServer, version: SignatureVersion) -> EcsClient {
    tls::install_provider();
    let settings = CloudSettings {
        endpoint: Some(server.uri()),
        signature_version: version,
        ..CloudSettings::default()
    };
    let creds = Credentials::from_static(AccessKey {
        access_key_id: AK.into(),
        access_key_secret: Secret::new(SECRET),
        security_token: Some(Secret::new(TOKEN)),
        expiration: Some(chrono::Utc::now() + chrono::Duration::hours(6)),
    });
    let fast = Backoff {
        initial: Duration::from_millis(10),
        max: Duration::from_millis(50),
    };
    EcsClient::new(&settings, "cn-hangzhou", creds)
        .unwrap()
        .with_retry_policy(RetryPolicy {
            normal: fast,
            throttling: fast,
            max_attempts: 5,
            attempt_timeout: Duration::from_secs(10),
        })
}

fn soon() -> Instant {
    Instant::now() + Duration::from_secs(20)
}

fn params(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn create_req() -> CreateDisk {
    CreateDisk {
        zone_id: "cn-hangzhou-h".into(),
        snapshot_id: "s-bp1snap".into(),
        category: "cloud_essd".into(),
        performance_level: Some("PL0".into()),
        disk_name: "appsnap-verify-mysql".into(),
        description: "appsnap restore drill of ssg-1".into(),
        tags: vec![
            Tag::new("appsnap:verify", "20261202T023000Z-9f3a0c1e"),
            Tag::new("appsnap:group", "ssg-1"),
        ],
        client_token: ClientToken::parse("appsnap-0123456789abcdef0123456789abcdef").unwrap(),
    }
}

async fn create_disk_sends_exact_params(version: SignatureVersion) {
    let server = MockServer::start().await;
    Mock::given(ActionIs("CreateDisk"))
        .and(SignedBy(keys()))
        .respond_with(ecs_ok(json!({"DiskId": "d-bp1new", "OrderId": ""})))
        .expect(1)
        .mount(&server)
        .await;
    let id = client(&server, version)
        .create_disk(&create_req(), soon())
        .await
        .unwrap();
    assert_eq!(id, "d-bp1new");
    let seen = assert_all_signed(&server, &keys()).await;
    assert_eq!(
        seen[0].params,
        params(&[
            ("RegionId", "cn-hangzhou"),
            ("ZoneId", "cn-hangzhou-h"),
            ("SnapshotId", "s-bp1snap"),
            ("DiskCategory", "cloud_essd"),
            ("PerformanceLevel", "PL0"),
            ("DiskName", "appsnap-verify-mysql"),
            ("Description", "appsnap restore drill of ssg-1"),
            ("Tag.1.Key", "appsnap:verify"),
            ("Tag.1.Value", "20261202T023000Z-9f3a0c1e"),
            ("Tag.2.Key", "appsnap:group"),
            ("Tag.2.Value", "ssg-1"),
            ("ClientToken", "appsnap-0123456789abcdef0123456789abcdef"),
        ]),
        "no Size (the snapshot's size is taken), no InstanceId (that would make a subscription disk)"
    );
}

#[tokio::test]
async fn create_disk_v3_sends_exact_parameters() {
    create_disk_sends_exact_params(SignatureVersion::V3).await;
}

#[tokio::test]
async fn create_disk_v1_sends_exact_parameters() {
    create_disk_sends_exact_params(SignatureVersion::V1).await;
}

#[tokio::test]
async fn create_disk_retries_throttling_with_the_same_token() {
    let server = MockServer::start().await;
    Mock::given(ActionIs("CreateDisk"))
        .respond_with(Sequence::new(vec![
            ecs_error(
                400,
                "Throttling.User",
                "Request was denied due to user flow control.",
            ),
            ecs_error(
                500,
                "InternalError",
                "The request processing has failed due to some unknown error.",
            ),
            ecs_ok(json!({"DiskId": "d-after"})),
        ]))
        .expect(3)
        .mount(&server)
        .await;
    let id = client(&server, SignatureVersion::V3)
        .create_disk(&create_req(), soon())
        .await
        .unwrap();
    assert_eq!(id, "d-after");
    let seen = assert_all_signed(&server, &keys()).await;
    let tokens: Vec<&str> = seen
        .iter()
        .map(|s| s.params["ClientToken"].as_str())
        .collect();
    assert_eq!(tokens, vec![tokens[0]; 3]);
}

#[tokio::test]
async fn create_disk_without_disk_id_is_a_decode_error() {
    let server = MockServer::start().await;
    Mock::given(ActionIs("CreateDisk"))
        .respond_with(ecs_ok(json!({})))
        .mount(&server)
        .await;
    let e = client(&server, SignatureVersion::V3)
        .create_disk(&create_req(), soon())
        .await
        .unwrap_err();
    assert!(matches!(e, EcsError::Decode { .. }), "{e}");
}

#[tokio::test]
async fn fallback_moves_on_only_for_category_codes_with_a_new_token() {
    let server = MockServer::start().await;
    Mock::given(ActionIs("CreateDisk"))
        .and(query_param("DiskCategory", "cloud_essd"))
        .respond_with(ecs_error(
            403,
            "InvalidDataDiskCategory.NotSupported",
            "Specified disk category is not supported.",
        ))
        .mount(&server)
        .await;
    Mock::given(ActionIs("CreateDisk"))
        .and(query_param("DiskCategory", "cloud_auto"))
        .respond_with(ecs_ok(json!({"DiskId": "d-auto"})))
        .mount(&server)
        .await;
    // V1 carries every parameter in the query, so the matcher sees DiskCategory.
    let ecs = client(&server, SignatureVersion::V1);
    let (id, used) = ecs
        .create_disk_with_fallback(&create_req(), &default_drill_categories(), soon())
        .await
        .unwrap();
    assert_eq!(id, "d-auto");
    assert_eq!(used, DrillCategory::new("cloud_auto", None));
    let seen = assert_all_signed(&server, &keys()).await;
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].params["PerformanceLevel"], "PL0");
    assert!(!seen[1].params.contains_key("PerformanceLevel"));
    assert_ne!(seen[0].params["ClientToken"], seen[1].params["ClientToken"]);
}

#[tokio::test]
async fn fallback_stops_at_an_error_another_category_would_repeat() {
    let server = MockServer::start().await;
    Mock::given(ActionIs("CreateDisk"))
        .respond_with(ecs_error(
            403,
            "QuotaExceed.PostPaidDisk",
            "Living postPaid disks quota exceeded.",
        ))
        .expect(1)
        .mount(&server)
        .await;
    let e = client(&server, SignatureVersion::V3)
        .create_disk_with_fallback(&create_req(), &default_drill_categories(), soon())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("QuotaExceed.PostPaidDisk"));
}

#[tokio::test]
async fn fallback_with_every_category_refused_returns_the_last_refusal() {
    let server = MockServer::start().await;
    Mock::given(ActionIs("CreateDisk"))
        .respond_with(ecs_error(
            400,
            "InvalidDiskCategory.ValueNotSupported",
            "The specified parameter \"DiskCategory\" is not valid.",
        ))
        .expect(3)
        .mount(&server)
        .await;
    let e = client(&server, SignatureVersion::V3)
        .create_disk_with_fallback(&create_req(), &default_drill_categories(), soon())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("InvalidDiskCategory.ValueNotSupported"));
}

#[tokio::test]
async fn attach_and_detach_send_exact_parameters() {
    let server = MockServer::start().await;
    Mock::given(ActionIs("AttachDisk"))
        .respond_with(ecs_ok(json!({})))
        .mount(&server)
        .await;
    Mock::given(ActionIs("DetachDisk"))
        .respond_with(ecs_ok(json!({})))
        .mount(&server)
        .await;
    let ecs = client(&server, SignatureVersion::V3);
    ecs.attach_disk("i-bp1inst", "d-bp1new", soon())
        .await
        .unwrap();
    ecs.detach_disk("i-bp1inst", "d-bp1new", soon())
        .await
        .unwrap();
    let seen = assert_all_signed(&server, &keys()).await;
    assert_eq!(seen[0].action, "AttachDisk");
    assert_eq!(
        seen[0].params,
        params(&[
            ("InstanceId", "i-bp1inst"),
            ("DiskId", "d-bp1new"),
            ("DeleteWithInstance", "true"),
        ])
    );
    assert_eq!(seen[1].action, "DetachDisk");
    assert_eq!(
        seen[1].params,
        params(&[("InstanceId", "i-bp1inst"), ("DiskId", "d-bp1new")])
    );
}

#[tokio::test]
async fn detach_of_a_disk_not_attached_keeps_its_code() {
    let server = MockServer::start().await;
    Mock::given(ActionIs("DetachDisk"))
        .respond_with(ecs_error(
            403,
            "DependencyViolation",
            "The specified disk has not been attached on the specified instance.",
        ))
        .expect(1)
        .mount(&server)
        .await;
    let e = client(&server, SignatureVersion::V3)
        .detach_disk("i-1", "d-1", soon())
        .await
        .unwrap_err();
    assert!(
        e.code().is_some_and(|c| NOT_ATTACHED_CODES.contains(&c)),
        "{e}"
    );
}

#[tokio::test]
async fn delete_disk_not_found_is_gone_and_other_errors_stay_errors() {
    let server = MockServer::start().await;
    Mock::given(ActionIs("DeleteDisk"))
        .and(query_param("DiskId", "d-gone"))
        .respond_with(ecs_error(
            404,
            "InvalidDiskId.NotFound",
            "The specified disk does not exist.",
        ))
        .mount(&server)
        .await;
    Mock::given(ActionIs("DeleteDisk"))
        .and(query_param("DiskId", "d-busy"))
        .respond_with(ecs_error(
            403,
            "IncorrectDiskStatus",
            "The current disk status does not support this operation.",
        ))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(ActionIs("DeleteDisk"))
        .and(query_param("DiskId", "d-ok"))
        .respond_with(ecs_ok(json!({})))
        .mount(&server)
        .await;
    let ecs = client(&server, SignatureVersion::V1);
    assert_eq!(
        ecs.delete_disk("d-ok", soon()).await.unwrap(),
        DiskDeleted::Deleted
    );
    assert_eq!(
        ecs.delete_disk("d-gone", soon()).await.unwrap(),
        DiskDeleted::AlreadyGone
    );
    let e = ecs.delete_disk("d-busy", soon()).await.unwrap_err();
    assert_eq!(e.code(), Some("IncorrectDiskStatus"));
    let seen = assert_all_signed(&server, &keys()).await;
    assert_eq!(seen[0].params, params(&[("DiskId", "d-ok")]));
}

fn drill_disk_json(id: &str) -> serde_json::Value {
    json!({
        "DiskId": id, "Category": "cloud_essd", "PerformanceLevel": "PL0", "Type": "data",
        "Size": 40, "Status": "Available", "InstanceId": "", "ZoneId": "cn-hangzhou-h",
        "SourceSnapshotId": "s-bp1snap", "DeleteWithInstance": true, "SerialNumber": "bp1serial",
        "CreationTime": "2026-12-02T02:30:05Z", "Description": "drill",
        "Tags": {"Tag": [{"TagKey": "appsnap:verify", "TagValue": "run-1"},
                         {"TagKey": "appsnap:group", "TagValue": "ssg-1"}]}
    })
}

#[tokio::test]
async fn describe_by_id_has_no_instance_filter_and_decodes_drill_fields() {
    let server = MockServer::start().await;
    Mock::given(ActionIs("DescribeDisks"))
        .respond_with(ecs_ok(
            json!({"NextToken": "", "Disks": {"Disk": [drill_disk_json("d-1")]}}),
        ))
        .mount(&server)
        .await;
    let ecs = client(&server, SignatureVersion::V3);
    assert!(ecs
        .describe_disks_by_id(&[], soon())
        .await
        .unwrap()
        .is_empty());
    let ids = vec![DiskId::parse("d-1").unwrap(), DiskId::parse("d-2").unwrap()];
    let disks = ecs.describe_disks_by_id(&ids, soon()).await.unwrap();
    let seen = assert_all_signed(&server, &keys()).await;
    assert_eq!(seen.len(), 1, "no request for no ids");
    assert_eq!(
        seen[0].params,
        params(&[
            ("RegionId", "cn-hangzhou"),
            ("DiskIds", r#"["d-1","d-2"]"#),
            ("MaxResults", "100"),
        ])
    );
    let d = &disks[0];
    assert_eq!(d.source_snapshot_id, "s-bp1snap");
    assert_eq!(d.performance_level, "PL0");
    assert!(d.delete_with_instance);
    assert_eq!(d.status, "Available");
    assert_eq!(d.tag("appsnap:group"), Some("ssg-1"));
    assert_eq!(d.creation_time, "2026-12-02T02:30:05Z");
}

#[tokio::test]
async fn describe_by_id_splits_more_than_100_ids() {
    let server = MockServer::start().await;
    Mock::given(ActionIs("DescribeDisks"))
        .respond_with(ecs_ok(json!({"Disks": {"Disk": []}})))
        .expect(2)
        .mount(&server)
        .await;
    let ids: Vec<DiskId> = (0..150)
        .map(|i| DiskId::parse(&format!("d-{i}")).unwrap())
        .collect();
    client(&server, SignatureVersion::V3)
        .describe_disks_by_id(&ids, soon())
        .await
        .unwrap();
    let seen = assert_all_signed(&server, &keys()).await;
    let n = |s: &str| serde_json::from_str::<Vec<String>>(s).unwrap().len();
    assert_eq!(n(&seen[0].params["DiskIds"]), 100);
    assert_eq!(n(&seen[1].params["DiskIds"]), 50);
}

#[tokio::test]
async fn describe_tagged_filters_by_tag_pages_and_drops_untagged_answers() {
    let server = MockServer::start().await;
    Mock::given(ActionIs("DescribeDisks"))
        .and(query_param("NextToken", "p2"))
        .respond_with(ecs_ok(
            json!({"NextToken": "", "Disks": {"Disk": [drill_disk_json("d-2")]}}),
        ))
        .mount(&server)
        .await;
    let mut stranger = drill_disk_json("d-live");
    stranger["Tags"] = json!({"Tag": []});
    Mock::given(ActionIs("DescribeDisks"))
        .respond_with(ecs_ok(
            json!({"NextToken": "p2", "Disks": {"Disk": [drill_disk_json("d-1"), stranger]}}),
        ))
        .mount(&server)
        .await;
    let ecs = client(&server, SignatureVersion::V1);
    let disks = ecs
        .describe_disks_tagged("appsnap:verify", None, soon())
        .await
        .unwrap();
    let ids: Vec<&str> = disks.iter().map(|d| d.disk_id.as_str()).collect();
    assert_eq!(ids, ["d-1", "d-2"]);
    let seen = assert_all_signed(&server, &keys()).await;
    assert_eq!(seen[0].params["Tag.1.Key"], "appsnap:verify");
    assert!(!seen[0].params.contains_key("Tag.1.Value"));
    assert!(!seen[0].params.contains_key("InstanceId"));

    let none = ecs
        .describe_disks_tagged("appsnap:verify", Some("other-run"), soon())
        .await
        .unwrap();
    assert!(none.is_empty(), "a value filter keeps only that value");
    let seen = assert_all_signed(&server, &keys()).await;
    assert_eq!(seen.last().unwrap().params["Tag.1.Value"], "other-run");
    assert!(ecs.describe_disks_tagged("", None, soon()).await.is_err());
}
