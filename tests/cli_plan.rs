//! `plan` for a job with `disks = "all"` asks ECS for the instance's disks,
//! as `run --dry-run` does, instead of refusing. Against a local server that
//! plays the metadata service and ECS; the disks it lists are not on this
//! machine, so the plan itself then fails naming the disk ECS selected.

mod cloud_support;

use cloud_support::*;
use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

async fn cloud(server: &MockServer) {
    Mock::given(method("PUT"))
        .and(path("/latest/api/token"))
        .respond_with(ResponseTemplate::new(200).set_body_string("imds-tok"))
        .mount(server)
        .await;
    for (item, v) in [
        ("meta-data/instance-id", "i-bp1test"),
        ("meta-data/region-id", "cn-hangzhou"),
        ("meta-data/zone-id", "cn-hangzhou-i"),
    ] {
        Mock::given(method("GET"))
            .and(path(format!("/latest/{item}")))
            .respond_with(ResponseTemplate::new(200).set_body_string(v))
            .mount(server)
            .await;
    }
    Mock::given(ActionIs("DescribeDisks"))
        .respond_with(ecs_ok(json!({"NextToken": "", "Disks": {"Disk": [
            {"DiskId": "d-bp1sys", "Category": "cloud_essd", "Type": "system", "MultiAttach": "Disabled"},
            {"DiskId": "d-bp1planned", "Category": "cloud_auto", "Type": "data", "MultiAttach": "Disabled", "SerialNumber": "bp1planned"},
            {"DiskId": "d-bp1old", "Category": "cloud_efficiency", "Type": "data", "MultiAttach": "Disabled"}
        ]}})))
        .mount(server)
        .await;
}

#[tokio::test]
async fn plan_for_all_disks_asks_ecs_like_a_dry_run() {
    let server = MockServer::start().await;
    cloud(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("appsnap.toml");
    std::fs::write(
        &cfg,
        format!(
            "[cloud]\nendpoint = \"{0}\"\nmetadata_endpoint = \"{0}\"\n\n[[job]]\nname = \"everything\"\nschedule = \"30 4 * * *\"\ndisks = \"all\"\nexclude_disks = [\"d-bp1sys\"]\n",
            server.uri()
        ),
    )
    .unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_appsnap"))
        .arg("-c")
        .arg(&cfg)
        .args(["--config-dir", "/nonexistent", "plan", "everything"])
        .env("ALIBABA_CLOUD_ACCESS_KEY_ID", "LTAI-plan-test")
        .env("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "plan-secret-value")
        .env_remove("ALIBABA_CLOUD_SECURITY_TOKEN")
        .output()
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("cannot call"), "{err}");
    let asked = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .any(|r| wiremock::Match::matches(&ActionIs("DescribeDisks"), r));
    assert!(asked, "ECS was not asked for the disks: {err}");
    // d-bp1planned is what "all" selects here; it is not on this machine.
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("d-bp1planned"), "{err}");
    assert!(!err.contains("d-bp1sys"), "excluded: {err}");
    assert!(
        err.contains("d-bp1old"),
        "the unsupported disk is said to be skipped: {err}"
    );
}
