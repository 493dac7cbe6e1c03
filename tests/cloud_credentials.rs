//! The shared credential source: refresh timing (tokio paused time with a fake
//! fetcher, so hours pass instantly and deterministically) and a rotation
//! across real HTTP while a long job keeps calling ECS.

mod cloud_support;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use appsnap::cloud::credentials::{
    AccessKey, BoxFuture, CredentialOrigin, Credentials, CredentialsError, FetchCredentials,
    RamRoleFetcher, RefreshPolicy,
};
use appsnap::cloud::ecs::EcsClient;
use appsnap::cloud::metadata::{MetadataClient, MetadataError};
use appsnap::cloud::retry::RetryPolicy;
use appsnap::cloud::secret::Secret;
use appsnap::cloud::tls;
use appsnap::policy::types::{CloudSettings, SignatureVersion};
use cloud_support::*;
use serde_json::json;
use tokio::time::Instant;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const MIN: Duration = Duration::from_secs(60);

/// What the fake hands out next: a key valid for a while, or a failure.
enum Next {
    Valid(Duration),
    Fail,
}

/// A fetcher that records when it was called and what each key's expiry is.
struct Fake {
    plan: Mutex<VecDeque<Next>>,
    /// Default once the plan is used up.
    then: Duration,
    issued: Mutex<Vec<(String, Instant, Instant)>>, // (id, fetched at, expires at)
    failures: Mutex<Vec<Instant>>,
    delay: Duration,
}

impl Fake {
    fn new(plan: Vec<Next>, then: Duration) -> Arc<Fake> {
        Arc::new(Fake {
            plan: Mutex::new(plan.into()),
            then,
            issued: Mutex::new(Vec::new()),
            failures: Mutex::new(Vec::new()),
            delay: Duration::ZERO,
        })
    }
    fn issued(&self) -> Vec<(String, Instant, Instant)> {
        self.issued.lock().unwrap().clone()
    }
    fn expiry_of(&self, id: &str) -> Instant {
        self.issued().iter().find(|(i, _, _)| i == id).unwrap().2
    }
}

impl FetchCredentials for Fake {
    fn fetch(&self) -> BoxFuture<'_, Result<AccessKey, CredentialsError>> {
        Box::pin(async move {
            if !self.delay.is_zero() {
                tokio::time::sleep(self.delay).await;
            }
            let next = self
                .plan
                .lock()
                .unwrap()
                .pop_front()
                .unwrap_or(Next::Valid(self.then));
            match next {
                Next::Fail => {
                    self.failures.lock().unwrap().push(Instant::now());
                    Err(CredentialsError::Metadata(MetadataError::Status {
                        path: "meta-data/ram/security-credentials/r".into(),
                        status: 500,
                    }))
                }
                Next::Valid(valid) => {
                    let mut issued = self.issued.lock().unwrap();
                    let id = format!("STS.K{}", issued.len() + 1);
                    issued.push((id.clone(), Instant::now(), Instant::now() + valid));
                    Ok(AccessKey {
                        access_key_id: id.clone(),
                        access_key_secret: Secret::new(format!("secret-of-{id}")),
                        security_token: Some(Secret::new(format!("token-of-{id}"))),
                        expiration: Some(
                            chrono::Utc::now() + chrono::Duration::from_std(valid).unwrap(),
                        ),
                    })
                }
            }
        })
    }

    fn origin(&self) -> CredentialOrigin {
        CredentialOrigin::Custom("fake".into())
    }
}

fn policy() -> RefreshPolicy {
    RefreshPolicy::default() // 15 min before expiry, 1 h max age, 1 s..60 s retry
}

fn close(a: Instant, b: Instant) -> bool {
    let d = if a > b { a - b } else { b - a };
    d < Duration::from_secs(1)
}

/// A job that runs for hours, using credentials every few minutes, never meets
/// an expired or nearly expired key: the refresher rotates them in the
/// background at Expiration − 15 min.
#[tokio::test(start_paused = true)]
async fn rotation_while_a_long_job_runs() {
    let fake = Fake::new(vec![], Duration::from_secs(3600)); // 1 h keys
    let creds = Credentials::from_fetcher(fake.clone(), policy());
    let refresher = creds.spawn_refresher();
    let start = Instant::now();
    let first = creds
        .ensure_valid_for(Duration::from_secs(30 * 60))
        .await
        .unwrap();
    assert_eq!(first.access_key_id, "STS.K1");
    let mut used = vec![first.access_key_id.clone()];
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_secs(5 * 60)).await; // 200 min in all
        let k = creds.get().await.unwrap();
        let left = fake.expiry_of(&k.access_key_id) - Instant::now();
        assert!(
            left >= MIN,
            "{} used with only {left:?} left",
            k.access_key_id
        );
        if used.last() != Some(&k.access_key_id) {
            used.push(k.access_key_id.clone());
        }
    }
    assert_eq!(used, ["STS.K1", "STS.K2", "STS.K3", "STS.K4", "STS.K5"]);
    // Fetches happened on the refresher's schedule: every 45 min.
    for (i, (_, at, _)) in fake.issued().iter().enumerate() {
        let want = start + Duration::from_secs(45 * 60) * i as u32;
        assert!(close(*at, want), "fetch {i} at {:?}", *at - start);
    }
    refresher.abort();
}

/// Long-lived (6 h) keys are still refreshed one hour after each fetch.
#[tokio::test(start_paused = true)]
async fn refresh_one_hour_after_fetch_when_expiry_is_far() {
    let fake = Fake::new(vec![], Duration::from_secs(6 * 3600));
    let creds = Credentials::from_fetcher(fake.clone(), policy());
    let refresher = creds.spawn_refresher();
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs(3 * 3600 + 60)).await;
    let at: Vec<Duration> = fake.issued().iter().map(|(_, t, _)| *t - start).collect();
    assert_eq!(at.len(), 4, "{at:?}");
    for (i, d) in at.iter().enumerate() {
        assert!((d.as_secs() as i64 - 3600 * i as i64).abs() <= 1, "{at:?}");
    }
    refresher.abort();
}

/// A failing refresh keeps the cached key (still valid) and retries with a
/// growing, jittered backoff until the metadata service answers again.
#[tokio::test(start_paused = true)]
async fn failed_refresh_keeps_cache_and_backs_off() {
    let fake = Fake::new(
        vec![
            Next::Valid(Duration::from_secs(3600)),
            Next::Fail,
            Next::Fail,
            Next::Fail,
            Next::Fail,
        ],
        Duration::from_secs(3600),
    );
    let creds = Credentials::from_fetcher(fake.clone(), policy());
    let refresher = creds.spawn_refresher();
    tokio::time::sleep(Duration::from_secs(44 * 60)).await;
    assert_eq!(creds.current().unwrap().access_key_id, "STS.K1");
    tokio::time::sleep(Duration::from_secs(2 * 60)).await; // past the 45 min mark
                                                           // Still K1 from the cache while the refreshes fail; it is valid for ~14 min.
    let k = creds.get().await.unwrap();
    assert!(k.access_key_id == "STS.K1" || k.access_key_id == "STS.K2");
    tokio::time::sleep(Duration::from_secs(5 * 60)).await;
    assert_eq!(creds.current().unwrap().access_key_id, "STS.K2");
    let failures = fake.failures.lock().unwrap().clone();
    assert_eq!(failures.len(), 4);
    // Backoff between failures: [d/2, d] for d = 1 s, 2 s, 4 s.
    for (i, w) in failures.windows(2).enumerate() {
        let gap = w[1] - w[0];
        let full = Duration::from_secs(1 << i);
        assert!(gap >= full / 2 && gap <= full, "gap {i}: {gap:?}");
    }
    refresher.abort();
}

/// The job asks for more validity than the cached key has: a fresh key is
/// fetched; if even that one is too short, the job gets a typed error.
#[tokio::test(start_paused = true)]
async fn ensure_valid_for_fetches_or_fails_cleanly() {
    let fake = Fake::new(
        vec![
            Next::Valid(Duration::from_secs(20 * 60)),
            Next::Valid(Duration::from_secs(3600)),
            Next::Valid(Duration::from_secs(20 * 60)),
        ],
        Duration::from_secs(3600),
    );
    let creds = Credentials::from_fetcher(fake.clone(), policy());
    assert_eq!(creds.get().await.unwrap().access_key_id, "STS.K1");
    // Cached K1 covers 10 min: no fetch.
    assert_eq!(
        creds
            .ensure_valid_for(Duration::from_secs(600))
            .await
            .unwrap()
            .access_key_id,
        "STS.K1"
    );
    // 30 min needed: K1 (20 min) is not enough, K2 (60 min) is.
    assert_eq!(
        creds
            .ensure_valid_for(Duration::from_secs(1800))
            .await
            .unwrap()
            .access_key_id,
        "STS.K2"
    );
    // 2 h needed: K3 (20 min) is not enough.
    let err = creds
        .ensure_valid_for(Duration::from_secs(7200))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            CredentialsError::ExpireTooSoon {
                needed_secs: 7200,
                ..
            }
        ),
        "{err:?}"
    );
    let shown = format!("{err} {err:?}");
    assert!(
        !shown.contains("secret-of") && !shown.contains("token-of"),
        "{shown}"
    );
    assert_eq!(fake.issued().len(), 3);
}

/// Concurrent callers share one fetch.
#[tokio::test(start_paused = true)]
async fn concurrent_callers_share_one_fetch() {
    let fake = Arc::new(Fake {
        delay: Duration::from_secs(1),
        ..Arc::try_unwrap(Fake::new(vec![], Duration::from_secs(3600)))
            .ok()
            .unwrap()
    });
    let creds = Credentials::from_fetcher(fake.clone(), policy());
    let (a, b) = tokio::join!(
        creds.get(),
        creds.ensure_valid_for(Duration::from_secs(600))
    );
    assert_eq!(a.unwrap().access_key_id, b.unwrap().access_key_id);
    assert_eq!(fake.issued().len(), 1);
}

/// The background task ends once the last handle is dropped.
#[tokio::test(start_paused = true)]
async fn refresher_ends_with_the_last_handle() {
    let fake = Fake::new(vec![], Duration::from_secs(3600));
    let creds = Credentials::from_fetcher(fake.clone(), policy());
    let task = creds.spawn_refresher();
    tokio::time::sleep(Duration::from_secs(10)).await;
    drop(creds);
    tokio::time::timeout(Duration::from_secs(2 * 3600), task)
        .await
        .expect("refresher should end")
        .unwrap();
}

/// End to end over HTTP: IMDS hands out role key K1, then K2; the refresher
/// rotates while a job keeps calling ECS, and every request (with K1 or K2)
/// verifies on the server side.
#[tokio::test]
async fn rotation_over_http_while_calling_ecs() {
    tls::install_provider();
    let server = MockServer::start().await;
    Mock::given(method("PUT"))
        .and(path("/latest/api/token"))
        .respond_with(ResponseTemplate::new(200).set_body_string("imds-tok"))
        .mount(&server)
        .await;
    let k1 = role_credentials_json(
        "STS.K1",
        "secret-one",
        "token-one",
        chrono::Duration::hours(6),
    );
    let k2 = role_credentials_json(
        "STS.K2",
        "secret-two",
        "token-two",
        chrono::Duration::hours(6),
    );
    Mock::given(method("GET"))
        .and(path("/latest/meta-data/ram/security-credentials/Role"))
        .respond_with(Sequence::new(vec![
            ResponseTemplate::new(200).set_body_string(k1),
            ResponseTemplate::new(200).set_body_string(k2),
        ]))
        .mount(&server)
        .await;
    Mock::given(ActionIs("DescribeDisks"))
        .respond_with(ecs_ok(json!({"Disks": {"Disk": []}})))
        .mount(&server)
        .await;
    let imds = Arc::new(MetadataClient::with_endpoint(&server.uri()).unwrap());
    let creds = Credentials::from_fetcher(
        Arc::new(RamRoleFetcher::new(imds, Some("Role".into()))),
        RefreshPolicy {
            max_age: Duration::from_millis(300),
            ..RefreshPolicy::default()
        },
    );
    let refresher = creds.spawn_refresher();
    let settings = CloudSettings {
        endpoint: Some(server.uri()),
        signature_version: SignatureVersion::V3,
        ..CloudSettings::default()
    };
    let ecs = EcsClient::new(&settings, "cn-hangzhou", creds.clone())
        .unwrap()
        .with_retry_policy(RetryPolicy::default());
    let keys = KeyRing::new()
        .with("STS.K1", "secret-one", Some("token-one"))
        .with("STS.K2", "secret-two", Some("token-two"));
    // The "job": keeps calling until the rotated key shows up (bounded).
    let mut seen_k2 = false;
    for _ in 0..100 {
        ecs.describe_disks("i-1", &[], Instant::now() + Duration::from_secs(10))
            .await
            .unwrap();
        let ids: Vec<String> = assert_all_signed(&server, &keys)
            .await
            .into_iter()
            .map(|v| v.access_key_id)
            .collect();
        if ids.first().map(String::as_str) == Some("STS.K1") && ids.iter().any(|i| i == "STS.K2") {
            seen_k2 = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(seen_k2, "the job never switched to the rotated key");
    refresher.abort();
}
