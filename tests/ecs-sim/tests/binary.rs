//! The real `ecs-sim` binary: config file, ready file, loopback-only rule.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ecs_sim::testkit::{wait_ready_file, Creds, EcsClient, Scheme};

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn write_config(dir: &std::path::Path, listen: &str) -> std::path::PathBuf {
    std::fs::write(dir.join("d1.raw"), vec![7u8; 65536]).unwrap();
    let cfg = format!(
        r#"
listen = "{listen}"
region_id = "cn-hangzhou"
zone_id = "cn-hangzhou-i"
instance_id = "i-bp1demo000000000000"
ram_role = "AppSnapshotRoleName"
credential_lifetime_secs = 3600
http_tokens = "required"
snapshot_dir = "{dir}/snapshots"
time_to_accomplish_secs = 0.5
request_log = "{dir}/requests.jsonl"

[[access_keys]]
id = "testid"
secret = "testsecret"

[faults]
throttle_rps_per_key = 1000

[[disk]]
id = "d-bp1demodata00000001"
category = "cloud_essd"
type = "data"
size_gib = 20
backing = "{dir}/d1.raw"
"#,
        dir = dir.display()
    );
    let p = dir.join("sim.toml");
    std::fs::write(&p, cfg).unwrap();
    p
}

#[test]
fn binary_writes_ready_file_and_serves() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "127.0.0.1");
    let ready = dir.path().join("ready");
    let child = Command::new(env!("CARGO_BIN_EXE_ecs-sim"))
        .arg("--config")
        .arg(&cfg)
        .arg("--ready-file")
        .arg(&ready)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _guard = Kill(child);
    let (imds, ecs) = wait_ready_file(&ready, Duration::from_secs(30)).expect("ready file appears");
    assert!(imds.starts_with("http://127.0.0.1:"));
    assert!(ecs.starts_with("http://127.0.0.1:"));
    assert_ne!(imds, ecs);
    let c = EcsClient::new(
        &ecs,
        Creds {
            access_key_id: "testid".into(),
            secret: "testsecret".into(),
            token: None,
        },
        Scheme::V3,
    );
    let r = c
        .call(
            "CreateSnapshotGroup",
            &[
                ("RegionId", "cn-hangzhou"),
                ("DiskId.1", "d-bp1demodata00000001"),
            ],
        )
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let id = r.json()["SnapshotGroupId"].as_str().unwrap().to_string();
    let img = dir
        .path()
        .join("snapshots")
        .join(&id)
        .join("d-bp1demodata00000001.img");
    assert_eq!(std::fs::read(img).unwrap(), vec![7u8; 65536]);
    // ecs-sim-call: credentials from IMDS, then a signed call.
    let out = Command::new(env!("CARGO_BIN_EXE_ecs-sim-call"))
        .args([
            "--imds",
            &imds,
            "--ecs",
            &ecs,
            "DescribeSnapshotGroups",
            "RegionId=cn-hangzhou",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["SnapshotGroups"]["SnapshotGroup"][0]["SnapshotGroupId"],
        id.as_str()
    );
}

#[test]
fn binary_refuses_non_loopback_listen() {
    let dir = tempfile::tempdir().unwrap();
    for addr in ["0.0.0.0", "192.168.1.10", "::"] {
        let cfg = write_config(dir.path(), addr);
        let out = Command::new(env!("CARGO_BIN_EXE_ecs-sim"))
            .arg("--config")
            .arg(&cfg)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{addr}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("not a loopback address"), "{addr}: {err}");
    }
}

#[test]
fn binary_reports_config_errors_with_location() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("sim.toml");
    std::fs::write(&p, "region_id = \"x\"\nzone_id = \"y\"\ninstance_id = \"i\"\nsnapshot_dir = \"/tmp\"\nbogus_key = 1\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ecs-sim"))
        .arg("--config")
        .arg(&p)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bogus_key") && err.contains("line 5"), "{err}");
}
