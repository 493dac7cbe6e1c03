//! Neither HTTP client follows a redirect: a 3xx could send the signed V1
//! query (in `Referer`), the STS token or the IMDS token to another server.
//! The call fails, naming the status, and the other server hears nothing.

mod cloud_support;

use std::time::Duration;

use appsnap::cloud::credentials::{AccessKey, Credentials};
use appsnap::cloud::ecs::{EcsClient, SnapshotGroupFilter};
use appsnap::cloud::metadata::MetadataClient;
use appsnap::cloud::retry::{Backoff, RetryPolicy};
use appsnap::cloud::secret::Secret;
use appsnap::cloud::tls;
use appsnap::policy::types::{CloudSettings, SignatureVersion};
use tokio::time::Instant;
use wiremock::matchers::any;
use wiremock::{Mock, MockServer, ResponseTemplate};

/// A server that must never be reached, and one that redirects every request to it.
async fn redirecting_pair() -> (MockServer, MockServer) {
    let elsewhere = MockServer::start().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(200).set_body_string("{}"))
        .expect(0)
        .mount(&elsewhere)
        .await;
    let front = MockServer::start().await;
    Mock::given(any())
        .respond_with(
            ResponseTemplate::new(302)
                .insert_header("Location", format!("{}/stolen", elsewhere.uri()).as_str()),
        )
        .mount(&front)
        .await;
    (front, elsewhere)
}

fn ecs(server: &MockServer, version: SignatureVersion) -> EcsClient {
    tls::install_provider();
    let settings = CloudSettings {
        endpoint: Some(server.uri()),
        signature_version: version,
        ..CloudSettings::default()
    };
    let creds = Credentials::from_static(AccessKey {
        access_key_id: "STS.RedirectTest".into(),
        access_key_secret: Secret::new("redirect-secret-1"),
        security_token: Some(Secret::new("redirect-sts-token-1")),
        expiration: Some(chrono::Utc::now() + chrono::Duration::hours(6)),
    });
    EcsClient::new(&settings, "cn-hangzhou", creds)
        .unwrap()
        .with_retry_policy(RetryPolicy {
            normal: Backoff {
                initial: Duration::from_millis(5),
                max: Duration::from_millis(10),
            },
            throttling: Backoff {
                initial: Duration::from_millis(5),
                max: Duration::from_millis(10),
            },
            max_attempts: 2,
            attempt_timeout: Duration::from_secs(10),
        })
}

#[tokio::test]
async fn ecs_does_not_follow_a_redirect_v1_or_v3() {
    for version in [SignatureVersion::V1, SignatureVersion::V3] {
        let (front, elsewhere) = redirecting_pair().await;
        let err = ecs(&front, version)
            .describe_snapshot_groups(
                &SnapshotGroupFilter::default(),
                Instant::now() + Duration::from_secs(20),
            )
            .await
            .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("302") && msg.contains("redirect"), "{msg}");
        assert!(!msg.contains("redirect-secret-1") && !msg.contains("redirect-sts-token-1"));
        // Dropping verifies `expect(0)`; say it explicitly as well.
        assert!(elsewhere.received_requests().await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn metadata_does_not_follow_a_redirect() {
    let (front, elsewhere) = redirecting_pair().await;
    let client = MetadataClient::with_endpoint(&front.uri())
        .unwrap()
        .with_retries(
            2,
            Backoff {
                initial: Duration::from_millis(5),
                max: Duration::from_millis(10),
            },
        );
    let err = client.instance_id().await.unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("302"), "{msg}");
    assert!(elsewhere.received_requests().await.unwrap().is_empty());
}
