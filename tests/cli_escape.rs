//! `status` prints strings from state files (and `list` from the API) for a
//! terminal: control characters are shown escaped, never sent raw, so a
//! crafted group ID or upload status cannot move the cursor, recolour or
//! retitle an operator's terminal (issue 14 item 10).

use std::process::Command;

#[test]
fn status_escapes_control_characters_from_state_files() {
    let d = tempfile::tempdir().unwrap();
    let policy = d.path().join("appsnap.toml");
    std::fs::write(
        &policy,
        format!(
            "[host]\nrun_dir = \"{}\"\nstate_dir = \"{}\"\n\n[[job]]\nname = \"mysql\"\nschedule = \"30 2 * * *\"\ndisks = \"all\"\n\n[[job]]\nname = \"torn\"\nschedule = \"30 2 * * *\"\ndisks = \"all\"\n",
            d.path().join("run").display(),
            d.path().join("state").display()
        ),
    )
    .unwrap();
    std::fs::create_dir_all(d.path().join("state/jobs")).unwrap();
    let record = serde_json::json!({
        "schema": 1,
        "job": "mysql",
        "run_id": "r\u{1b}]0;pwned\u{7}",
        "scheduled_for": null,
        "started_at": "2026-11-22T18:30:00Z",
        "finished_at": "2026-11-22T18:31:02Z",
        "exit_code": 0,
        "consistency": "app",
        "snapshot_group_id": "ssg-\u{1b}[2J\u{1b}[31mred",
        "frozen_ms": 5,
        "phases": [],
        "message": "ok\r\u{9b}31m",
        "upload": {"status": "progressing", "progress": "4\u{7f}0%\u{202e}", "checked_at": "2026-11-22T18:31:02Z"}
    });
    std::fs::write(
        d.path().join("state/jobs/mysql.json"),
        serde_json::to_vec(&record).unwrap(),
    )
    .unwrap();
    // A torn file whose parse error quotes what it found.
    std::fs::write(
        d.path().join("state/jobs/torn.json"),
        "{\"schema\": 1, \"job\": \"torn\", \"consistency\": \"\u{1b}[5m\"}",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_appsnap"))
        .arg("-c")
        .arg(&policy)
        .args(["--config-dir", "/nonexistent", "status"])
        .env_remove("JOURNAL_STREAM")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    for (name, text) in [("stdout", &stdout), ("stderr", &stderr)] {
        let raw: Vec<char> = text
            .chars()
            .filter(|c| (c.is_control() && *c != '\n') || *c == '\u{202e}')
            .collect();
        assert!(raw.is_empty(), "{name} carries raw {raw:?}: {text}");
    }
    assert!(stdout.contains("ssg-\\x1b[2J\\x1b[31mred"), "{stdout}");
    assert!(stdout.contains("4\\x7f0%\\u{202e}"), "{stdout}");
}
