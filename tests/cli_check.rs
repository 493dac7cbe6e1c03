//! The real binary: `check --offline` exit codes and output, `--version`,
//! and subcommands that are not built yet refusing plainly.

use std::path::Path;
use std::process::{Command, Output};

fn appsnap(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_appsnap"))
        .args(args)
        .output()
        .expect("run appsnap")
}

fn root(p: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(p)
        .display()
        .to_string()
}

#[test]
fn check_offline_accepts_the_example_and_prints_next_runs() {
    let out = appsnap(&[
        "-c",
        &root("config/examples/two-jobs.toml"),
        "--config-dir",
        "/nonexistent",
        "check",
        "--offline",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("policy ok: 2 job(s)"), "{stdout}");
    let mysql = stdout
        .lines()
        .find(|l| l.starts_with("job \"mysql\""))
        .expect(&stdout);
    assert!(mysql.contains("(Asia/Shanghai)"), "{mysql}");
    assert_eq!(
        mysql.matches("02:30:00 +08:00").count(),
        3,
        "three next runs in the job's zone: {mysql}"
    );
}

#[test]
fn check_offline_rejects_a_bad_policy_with_code_2_and_location() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("bad.toml");
    std::fs::write(
        &f,
        "[[job]]\nname = \"mysql\"\nschedule = \"61 * * * *\"\ndisks = \"all\"\n",
    )
    .unwrap();
    let out = appsnap(&[
        "-c",
        f.to_str().unwrap(),
        "--config-dir",
        "/nonexistent",
        "check",
        "--offline",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let want = format!(
        "{}:3:12: job \"mysql\": schedule \"61 * * * *\": minute must be 0-59",
        f.display()
    );
    assert!(stderr.contains(&want), "{stderr}");
}

#[test]
fn version_names_the_commit() {
    let out = appsnap(&["--version"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with(&format!("appsnap {} (commit ", env!("CARGO_PKG_VERSION"))),
        "{stdout}"
    );
}

#[test]
fn every_subcommand_has_operator_help() {
    for sub in [
        "daemon", "run", "check", "plan", "status", "list", "thaw", "plugin",
    ] {
        let out = appsnap(&[sub, "--help"]);
        assert_eq!(out.status.code(), Some(0), "{sub}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.lines().next().is_some_and(|l| l.len() > 20),
            "{sub}: {text}"
        );
    }
}
