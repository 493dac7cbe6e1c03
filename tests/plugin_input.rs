//! The real binary validates the vendor plugin's parameters before anything
//! reaches a URL or an API (issue 14 item 9): `-RamRoleName` goes into the
//! metadata service's URL path, so it must be a RAM role name; `-Name` must
//! follow ECS's naming rule. Exit codes as the vendor's document says:
//! invalid snapshot name 1, bad parameter 2.

use std::process::{Command, Output};

/// A policy whose metadata service is a closed local port, so a parameter
/// that slipped through fails fast on the network instead of validation.
fn appsnap(dir: &std::path::Path, args: &[&str]) -> Output {
    let policy = dir.join("appsnap.toml");
    std::fs::write(
        &policy,
        "[cloud]\nmetadata_endpoint = \"http://127.0.0.1:9\"\nendpoint = \"http://127.0.0.1:9\"\n",
    )
    .unwrap();
    let mut all = vec![
        "-c",
        policy.to_str().unwrap(),
        "--config-dir",
        "/nonexistent",
        "plugin",
    ];
    all.extend_from_slice(args);
    Command::new(env!("CARGO_BIN_EXE_appsnap"))
        .args(all)
        .output()
        .expect("run appsnap")
}

#[test]
fn a_ram_role_name_that_is_not_one_is_refused_with_code_2() {
    let d = tempfile::tempdir().unwrap();
    for role in ["../../..", "a/b", "role?x=1", "r%2F", &"r".repeat(65)] {
        let out = appsnap(
            d.path(),
            &[&format!("--params=-RamRoleName=\"{role}\",-Name=\"app1\"")],
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{role}: {err}");
        assert!(
            err.contains(&format!("-RamRoleName={role:?}"))
                && err.contains("1-64 letters, digits, '.', '-' or '_'"),
            "{role}: {err}"
        );
        // The same in Cloud Assistant's separate-argument form.
        let out = appsnap(d.path(), &[&format!("--RamRoleName={role}"), "-Name=app1"]);
        assert_eq!(out.status.code(), Some(2), "{role}");
    }
}

#[test]
fn a_snapshot_name_ecs_would_refuse_is_code_1() {
    let d = tempfile::tempdir().unwrap();
    for name in [
        "1app",
        "a",
        "app/../x",
        "http://x",
        "app name",
        "app\u{1b}[31m",
    ] {
        let out = appsnap(
            d.path(),
            &[
                "--RamRoleName=AppSnapshotRoleName",
                &format!("-Name={name}"),
            ],
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name:?}: {err}");
        assert!(err.contains("-Name="), "{name:?}: {err}");
    }
}
