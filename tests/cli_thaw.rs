//! `appsnap thaw --all` without root: what it refuses before touching anything.

use std::process::Command;

/// Issue 14 item 3: `-c` naming a policy that does not load must not send
/// `thaw --all` to the default run dir (another installation's record); it
/// exits 2 and says why.
#[test]
fn thaw_all_with_a_named_policy_that_fails_to_load_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("broken.toml");
    std::fs::write(&policy, "[host\nrun_dir = \"/nowhere\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_appsnap"))
        .arg("-c")
        .arg(&policy)
        .args(["--config-dir", "/nonexistent", "thaw", "--all"])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains(policy.to_str().unwrap()), "{text}");
    assert!(
        !text.contains("/run/appsnap"),
        "fell back to the default: {text}"
    );
}
