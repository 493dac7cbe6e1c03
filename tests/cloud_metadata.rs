//! The IMDS client against a local HTTP server: hardened-mode tokens, 401
//! re-token, retries, and the service being down at startup then back.

mod cloud_support;

use std::sync::Arc;
use std::time::Duration;

use appsnap::cloud::credentials::{Credentials, CredentialsError, RamRoleFetcher, RefreshPolicy};
use appsnap::cloud::metadata::{MetadataClient, MetadataError, TOKEN_HEADER, TOKEN_TTL_HEADER};
use appsnap::cloud::retry::Backoff;
use cloud_support::*;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const IMDS_TOKEN: &str = "imds-session-token-7f3a";
const ROLE: &str = "AppSnapshotRole";
const SECRET: &str = "role-secret-5c9e2d";
const STS: &str = "CAIS-role-sts-token-81ab";

fn quick(server_uri: &str) -> MetadataClient {
    MetadataClient::with_endpoint(server_uri)
        .unwrap()
        .with_retries(
            3,
            Backoff {
                initial: Duration::from_millis(10),
                max: Duration::from_millis(50),
            },
        )
}

async fn mount_token(server: &MockServer, token: &str, times: Option<u64>) {
    let m = Mock::given(method("PUT"))
        .and(path("/latest/api/token"))
        .and(header(TOKEN_TTL_HEADER, "21600"))
        .respond_with(ResponseTemplate::new(200).set_body_string(token));
    let m = match times {
        Some(n) => m.up_to_n_times(n),
        None => m,
    };
    m.mount(server).await;
}

async fn mount_item(server: &MockServer, token: &str, item: &str, body: &str) {
    Mock::given(method("GET"))
        .and(path(format!("/latest/{item}")))
        .and(header(TOKEN_HEADER, token))
        .respond_with(ResponseTemplate::new(200).set_body_string(body))
        .mount(server)
        .await;
}

async fn mount_identity_and_role(server: &MockServer, token: &str) {
    mount_item(server, token, "meta-data/instance-id", "i-bp1test").await;
    mount_item(server, token, "meta-data/region-id", "cn-hangzhou").await;
    mount_item(server, token, "meta-data/zone-id", "cn-hangzhou-i").await;
    mount_item(server, token, "meta-data/ram/security-credentials/", ROLE).await;
    mount_item(
        server,
        token,
        &format!("meta-data/ram/security-credentials/{ROLE}"),
        &role_credentials_json("STS.role1", SECRET, STS, chrono::Duration::hours(6)),
    )
    .await;
}

#[tokio::test]
async fn token_is_acquired_once_and_sent_on_every_get() {
    let server = MockServer::start().await;
    mount_token(&server, IMDS_TOKEN, None).await;
    mount_identity_and_role(&server, IMDS_TOKEN).await;
    let imds = quick(&server.uri());
    let id = imds.identity().await.unwrap();
    assert_eq!(id.instance_id, "i-bp1test");
    assert_eq!(id.region_id, "cn-hangzhou");
    assert_eq!(id.zone_id, "cn-hangzhou-i");
    assert_eq!(imds.role_name().await.unwrap(), ROLE);
    let key = imds.role_credentials(ROLE).await.unwrap();
    assert_eq!(key.access_key_id, "STS.role1");
    assert_eq!(key.security_token.as_ref().unwrap().expose(), STS);

    let reqs = server.received_requests().await.unwrap();
    let puts = reqs.iter().filter(|r| r.method.as_str() == "PUT").count();
    assert_eq!(puts, 1, "token reused until shortly before its TTL");
    assert_eq!(reqs.len(), 6);
    for r in &reqs {
        assert!(
            r.headers.get("x-forwarded-for").is_none(),
            "X-Forwarded-For sent to IMDS"
        );
        if r.method.as_str() == "GET" {
            assert_eq!(r.headers.get(TOKEN_HEADER).unwrap(), IMDS_TOKEN);
        }
    }
}

#[tokio::test]
async fn expired_token_401_is_reacquired() {
    let server = MockServer::start().await;
    mount_token(&server, "tok-old", Some(1)).await;
    mount_token(&server, "tok-new", None).await;
    Mock::given(method("GET"))
        .and(header(TOKEN_HEADER, "tok-old"))
        .respond_with(ResponseTemplate::new(401))
        .mount(&server)
        .await;
    mount_item(&server, "tok-new", "meta-data/instance-id", "i-after-401").await;
    let imds = quick(&server.uri());
    assert_eq!(imds.instance_id().await.unwrap(), "i-after-401");
    assert_eq!(imds.instance_id().await.unwrap(), "i-after-401");
    let reqs = server.received_requests().await.unwrap();
    let methods: Vec<&str> = reqs.iter().map(|r| r.method.as_str()).collect();
    assert_eq!(methods, ["PUT", "GET", "PUT", "GET", "GET"]);
}

#[tokio::test]
async fn token_is_renewed_before_its_ttl_ends() {
    let server = MockServer::start().await;
    Mock::given(method("PUT"))
        .and(path("/latest/api/token"))
        .and(header(TOKEN_TTL_HEADER, "1"))
        .respond_with(ResponseTemplate::new(200).set_body_string("short"))
        .expect(2)
        .mount(&server)
        .await;
    mount_item(&server, "short", "meta-data/instance-id", "i-1").await;
    let imds = quick(&server.uri()).with_token_ttl(Duration::from_secs(1));
    imds.instance_id().await.unwrap();
    // A 1 s token is renewed 250 ms before it ends; after a full second it must be.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    imds.instance_id().await.unwrap();
}

#[tokio::test]
async fn server_errors_are_retried_three_times() {
    let server = MockServer::start().await;
    mount_token(&server, IMDS_TOKEN, None).await;
    Mock::given(method("GET"))
        .and(path("/latest/meta-data/region-id"))
        .respond_with(Sequence::new(vec![
            ResponseTemplate::new(500),
            ResponseTemplate::new(503),
            ResponseTemplate::new(200).set_body_string("cn-beijing\n"),
        ]))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/latest/meta-data/zone-id"))
        .respond_with(ResponseTemplate::new(502))
        .expect(3)
        .mount(&server)
        .await;
    let imds = quick(&server.uri());
    assert_eq!(imds.region_id().await.unwrap(), "cn-beijing");
    let err = imds.zone_id().await.unwrap_err();
    assert!(
        matches!(err, MetadataError::Status { status: 502, .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn missing_role_and_failed_credentials_are_typed() {
    let server = MockServer::start().await;
    mount_token(&server, IMDS_TOKEN, None).await;
    Mock::given(method("GET"))
        .and(path("/latest/meta-data/ram/security-credentials/"))
        .respond_with(ResponseTemplate::new(404))
        .mount(&server)
        .await;
    mount_item(
        &server,
        IMDS_TOKEN,
        "meta-data/ram/security-credentials/Broken",
        &format!(r#"{{"Code":"Failed","AccessKeySecret":"{SECRET}"}}"#),
    )
    .await;
    let imds = quick(&server.uri());
    assert!(matches!(imds.role_name().await, Err(MetadataError::NoRole)));
    let err = imds.role_credentials("Broken").await.unwrap_err();
    assert!(matches!(err, MetadataError::BadCredentials { .. }));
    assert!(!err.to_string().contains(SECRET));
}

#[tokio::test]
async fn refused_token_is_an_error_not_a_fallback_to_v1() {
    let server = MockServer::start().await;
    Mock::given(method("PUT"))
        .respond_with(ResponseTemplate::new(403))
        .mount(&server)
        .await;
    let err = quick(&server.uri()).instance_id().await.unwrap_err();
    assert!(
        matches!(err, MetadataError::TokenRefused { status: 403 }),
        "{err:?}"
    );
    // No token-less GET was attempted.
    let reqs = server.received_requests().await.unwrap();
    assert!(reqs.iter().all(|r| r.method.as_str() == "PUT"));
}

/// The daemon starts while IMDS is unreachable (connection refused); calls fail
/// with a typed error, the background refresher keeps trying, and once the
/// service is back credentials are obtained without a restart.
#[tokio::test(flavor = "current_thread")]
async fn imds_down_at_startup_then_back() {
    let (_guard, logs) = capture_logs();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener); // nothing listens: connection refused
    let imds = Arc::new(quick(&format!("http://{addr}")));
    let creds = Credentials::from_fetcher(
        Arc::new(RamRoleFetcher::new(imds, None)),
        RefreshPolicy {
            retry: Backoff {
                initial: Duration::from_millis(50),
                max: Duration::from_millis(200),
            },
            ..RefreshPolicy::default()
        },
    );
    let refresher = creds.spawn_refresher();
    let err = creds
        .ensure_valid_for(Duration::from_secs(60))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            CredentialsError::Metadata(MetadataError::Unreachable { .. })
        ),
        "{err:?}"
    );
    // Let the background refresher fail a few times too.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(creds.current().is_none());

    // The service comes back on the same address.
    let listener = std::net::TcpListener::bind(addr).unwrap();
    let server = MockServer::builder().listener(listener).start().await;
    mount_token(&server, IMDS_TOKEN, None).await;
    mount_identity_and_role(&server, IMDS_TOKEN).await;

    // The refresher alone picks the credentials up (bounded wait, no timing assertion).
    let mut waited = 0;
    while creds.current().is_none() {
        assert!(waited < 200, "refresher never recovered");
        tokio::time::sleep(Duration::from_millis(50)).await;
        waited += 1;
    }
    let key = creds
        .ensure_valid_for(Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(key.access_key_id, "STS.role1");
    assert_eq!(
        creds.origin().to_string(),
        format!("RAM role {ROLE}"),
        "role discovered"
    );
    refresher.abort();

    let text = logs.text();
    assert!(text.contains("credential refresh failed"), "{text}");
    for secret in [IMDS_TOKEN, SECRET, STS] {
        assert!(!text.contains(secret), "{secret} in logs:\n{text}");
        assert!(!format!("{creds:?} {key:?} {err} {err:?}").contains(secret));
    }
}

/// Mounts token-less GETs (normal mode) for the identity items.
async fn mount_tokenless_identity(server: &MockServer) {
    for (item, v) in [
        ("meta-data/instance-id", "i-bp1normal"),
        ("meta-data/region-id", "cn-hangzhou"),
    ] {
        Mock::given(method("GET"))
            .and(path(format!("/latest/{item}")))
            .respond_with(ResponseTemplate::new(200).set_body_string(v))
            .mount(server)
            .await;
    }
}

/// An IMDS without the token API (404 or 405 to the PUT) is read in normal
/// mode, as the official credentials library does, with a warning; the token
/// API is not asked again for every item.
#[tokio::test(flavor = "current_thread")]
async fn absent_token_api_falls_back_to_normal_mode_with_a_warning() {
    for status in [404u16, 405] {
        let (_guard, logs) = capture_logs();
        let server = MockServer::start().await;
        Mock::given(method("PUT"))
            .and(path("/latest/api/token"))
            .respond_with(ResponseTemplate::new(status))
            .expect(1)
            .mount(&server)
            .await;
        mount_tokenless_identity(&server).await;
        let imds = quick(&server.uri());
        assert_eq!(imds.instance_id().await.unwrap(), "i-bp1normal", "{status}");
        assert_eq!(imds.region_id().await.unwrap(), "cn-hangzhou");
        let reqs = server.received_requests().await.unwrap();
        let gets: Vec<_> = reqs.iter().filter(|r| r.method.as_str() == "GET").collect();
        assert_eq!(gets.len(), 2);
        assert!(gets.iter().all(|r| !r.headers.contains_key(TOKEN_HEADER)));
        let text = logs.text();
        assert!(
            text.contains("normal mode") && text.contains(&format!("HTTP {status}")),
            "{text}"
        );
    }
}

/// A token API that fails (5xx, every try) is not "absent": no token-less GET.
#[tokio::test]
async fn failing_token_api_is_not_absent() {
    let server = MockServer::start().await;
    Mock::given(method("PUT"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&server)
        .await;
    mount_tokenless_identity(&server).await;
    let err = quick(&server.uri()).instance_id().await.unwrap_err();
    assert!(
        matches!(err, MetadataError::Status { status: 503, .. }),
        "{err:?}"
    );
    let reqs = server.received_requests().await.unwrap();
    assert!(reqs.iter().all(|r| r.method.as_str() == "PUT"));
}

/// A token request that times out is not "absent" either.
#[tokio::test]
async fn timed_out_token_api_is_not_absent() {
    let server = MockServer::start().await;
    Mock::given(method("PUT"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(30)))
        .mount(&server)
        .await;
    mount_tokenless_identity(&server).await;
    let imds = quick(&server.uri()).with_retries(
        1,
        Backoff {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(10),
        },
    );
    let err = imds.instance_id().await.unwrap_err();
    assert!(matches!(err, MetadataError::Unreachable { .. }), "{err:?}");
    let reqs = server.received_requests().await.unwrap();
    assert!(reqs.iter().all(|r| r.method.as_str() == "PUT"));
}

/// With the fallback forbidden an absent token API is an error that says so.
#[tokio::test]
async fn forbidden_fallback_makes_an_absent_token_api_an_error() {
    let server = MockServer::start().await;
    Mock::given(method("PUT"))
        .respond_with(ResponseTemplate::new(404))
        .mount(&server)
        .await;
    mount_tokenless_identity(&server).await;
    let err = quick(&server.uri())
        .with_v1_fallback(false)
        .instance_id()
        .await
        .unwrap_err();
    assert!(
        matches!(err, MetadataError::TokenApiAbsent { status: 404 }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("ALIBABA_CLOUD_IMDSV1_DISABLED") && msg.contains("imds_v1_fallback"),
        "{msg}"
    );
    let reqs = server.received_requests().await.unwrap();
    assert!(reqs.iter().all(|r| r.method.as_str() == "PUT"));
}
