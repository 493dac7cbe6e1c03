//! `appsnap status`: last results from the state dir, next runs from the
//! policy, and daemon liveness from the lock under run_dir.

use std::path::Path;
use std::process::{Command, Output};

use appsnap::state::{Consistency, DaemonLock, JobResult, PhaseTime, StateStore, STATE_SCHEMA};

fn policy(dir: &Path) -> std::path::PathBuf {
    let text = format!(
        r#"
[host]
run_dir = "{run}"
state_dir = "{state}"

[[job]]
name = "mysql"
schedule = "30 2 * * *"
timezone = "Asia/Shanghai"
disks = ["d-bp1aaaa"]

[[job]]
name = "logs"
schedule = "0 0 */6 * * *"
timezone = "UTC"
disks = "all"

[[job]]
name = "broken"
schedule = "0 3 * * *"
timezone = "UTC"
disks = ["d-bp1cccc"]
"#,
        run = dir.join("run").display(),
        state = dir.join("state").display()
    );
    let path = dir.join("appsnap.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn status(policy: &Path, json: bool) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_appsnap"));
    cmd.arg("-c")
        .arg(policy)
        .args(["--config-dir", "/nonexistent", "status"]);
    if json {
        cmd.arg("--json");
    }
    cmd.env_remove("JOURNAL_STREAM");
    cmd.output().expect("run appsnap")
}

fn seed(dir: &Path) {
    let store = StateStore::new(&dir.join("state"));
    store
        .write(&JobResult {
            schema: STATE_SCHEMA,
            job: "mysql".into(),
            run_id: "00c0ffee00c0ffee".into(),
            scheduled_for: Some("2026-11-22T18:30:00Z".parse().unwrap()),
            started_at: "2026-11-22T18:30:00Z".parse().unwrap(),
            finished_at: "2026-11-22T18:31:02Z".parse().unwrap(),
            exit_code: 0,
            consistency: Consistency::App,
            snapshot_group_id: Some("ssg-bp1xyz".into()),
            frozen_ms: Some(187),
            phases: vec![PhaseTime {
                phase: "freeze".into(),
                ms: 187,
            }],
            message: "Finish whole Processes of Snapshot successfully".into(),
            upload: None,
        })
        .unwrap();
    std::fs::write(dir.join("state/jobs/broken.json"), "{ torn").unwrap();
}

#[test]
fn json_shows_last_results_next_runs_and_a_stopped_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let p = policy(dir.path());
    seed(dir.path());
    let out = status(&p, true);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(v["daemon"]["state"], "stopped");
    let jobs = v["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 3);
    let mysql = &jobs[0];
    assert_eq!(mysql["name"], "mysql");
    assert_eq!(mysql["timezone"], "Asia/Shanghai");
    assert!(
        mysql["next_run"]
            .as_str()
            .unwrap()
            .ends_with("T02:30:00+08:00"),
        "{mysql}"
    );
    let last = &mysql["last_result"];
    assert_eq!(last["exit_code"], 0);
    assert_eq!(last["consistency"], "app");
    assert_eq!(last["snapshot_group_id"], "ssg-bp1xyz");
    assert_eq!(last["frozen_ms"], 187);
    assert_eq!(jobs[1]["last_result"], serde_json::Value::Null, "never ran");
    assert!(jobs[1]["next_run"].as_str().unwrap().ends_with("+00:00"));
    // A corrupt state file is a warning, not a failure.
    assert_eq!(jobs[2]["last_result"], serde_json::Value::Null);
    assert!(jobs[2]["last_result_error"]
        .as_str()
        .unwrap()
        .contains("not JSON"));
    assert!(
        stderr.contains("job \"broken\": ignoring the last result"),
        "{stderr}"
    );
}

#[test]
fn table_shows_a_running_daemon_and_one_row_per_job() {
    let dir = tempfile::tempdir().unwrap();
    let p = policy(dir.path());
    seed(dir.path());
    let _lock = DaemonLock::acquire(&dir.path().join("run")).unwrap();
    let out = status(&p, false);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines[0],
        format!("daemon: running (pid {})", std::process::id())
    );
    assert!(lines[1].starts_with("JOB"), "{stdout}");
    let mysql = lines.iter().find(|l| l.starts_with("mysql")).unwrap();
    for want in [
        "2026-11-22 18:31:02",
        "0 ok",
        "app",
        "ssg-bp1xyz",
        "187ms",
        "+08:00 (Asia/Shanghai)",
    ] {
        assert!(mysql.contains(want), "{want} in {mysql}");
    }
    let logs = lines.iter().find(|l| l.starts_with("logs")).unwrap();
    assert!(logs.contains("never"), "{logs}");
    let broken = lines.iter().find(|l| l.starts_with("broken")).unwrap();
    assert!(broken.contains("unreadable"), "{broken}");
}

#[test]
fn invalid_policy_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.toml");
    std::fs::write(
        &p,
        "[[job]]\nname = \"x1\"\nschedule = \"61 * * * *\"\ndisks = \"all\"\n",
    )
    .unwrap();
    let out = status(&p, true);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("minute must be 0-59"));
}

#[test]
fn the_last_notification_of_each_sink_is_shown() {
    use appsnap::notify::{SinkKind, SinkLog, SinkResult};
    let dir = tempfile::tempdir().unwrap();
    let p = policy(dir.path());
    seed(dir.path());
    let log = SinkLog::new(&dir.path().join("state"));
    let at = "2026-11-22T18:31:03Z".parse().unwrap();
    let result = |ok: bool, event: &str, error: Option<&str>| SinkResult {
        at,
        event: event.into(),
        ok,
        attempts: if ok { 1 } else { 4 },
        error: error.map(str::to_string),
        sent_total: 0,
        failed_total: 0,
    };
    log.record("mysql", SinkKind::Ping, result(true, "success", None))
        .unwrap();
    log.record(
        "mysql",
        SinkKind::Webhook,
        result(
            false,
            "failure",
            Some("https://alerts.example/… answered 503"),
        ),
    )
    .unwrap();
    let out = status(&p, false);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("last notifications:"), "{stdout}");
    assert!(
        stdout.contains("  mysql ping: ok: success at 2026-11-22 18:31:03 UTC (1 attempt; 1 sent, 0 failed in all)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("  mysql webhook: FAILED: failure at 2026-11-22 18:31:03 UTC (4 attempts; 0 sent, 1 failed in all): https://alerts.example/… answered 503"),
        "{stdout}"
    );
    let out = status(&p, true);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["jobs"][0]["notifications"]["webhook"]["ok"], false);
    assert_eq!(v["jobs"][0]["notifications"]["ping"]["event"], "success");
    assert!(
        v["jobs"][1].get("notifications").is_none(),
        "none kept: no key"
    );
}
