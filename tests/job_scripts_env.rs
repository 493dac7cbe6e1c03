//! A script never inherits the daemon's systemd sockets. Alone in its own
//! test binary because it changes the process environment.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use appsnap::job::script_check::open_script;
use appsnap::job::scripts::{run_script, Phase, ScriptContext};

#[tokio::test]
async fn systemd_notify_and_watchdog_variables_are_not_inherited() {
    std::env::set_var("NOTIFY_SOCKET", "/run/systemd/notify");
    std::env::set_var("WATCHDOG_USEC", "30000000");
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("post.sh");
    std::fs::write(
        &p,
        "#!/bin/sh\necho \"notify=${NOTIFY_SOCKET:-unset} watchdog=${WATCHDOG_USEC:-unset} path=${PATH:+set}\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o700)).unwrap();
    let run = run_script(
        &open_script(&p).unwrap(),
        Phase::Post,
        &ScriptContext::default(),
        Duration::from_secs(30),
        Duration::from_secs(1),
    )
    .await;
    assert!(run.status.succeeded(), "{:?}", run.status);
    assert_eq!(run.output.trim(), "notify=unset watchdog=unset path=set");
}
