//! A script's environment is fixed and documented: never the daemon's
//! credentials or systemd sockets. Alone in its own test binary because it
//! changes the process environment.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use appsnap::job::script_check::open_script;
use appsnap::job::scripts::{run_script, Phase, ScriptContext, SCRIPT_PATH};

#[tokio::test]
async fn a_script_gets_exactly_the_documented_environment() {
    std::env::set_var("NOTIFY_SOCKET", "/run/systemd/notify");
    std::env::set_var("WATCHDOG_USEC", "30000000");
    std::env::set_var("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "daemon-secret-value");
    std::env::set_var("ALIBABA_CLOUD_SECURITY_TOKEN", "daemon-token-value");
    std::env::set_var("PATH", "/opt/evil/bin:/usr/bin:/bin");
    std::env::set_var("PGPASSFILE", "/root/.pgpass");
    std::env::set_var("NOT_LISTED", "x");
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("post.sh");
    // The environment the interpreter was started with, as the kernel has it.
    std::fs::write(&p, "#!/bin/sh\ntr '\\0' '\\n' < /proc/$$/environ | sort\n").unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o700)).unwrap();
    let ctx = ScriptContext {
        job: "pg".into(),
        pass_env: vec!["PGPASSFILE".into(), "UNSET_IN_DAEMON".into()],
        ..ScriptContext::default()
    };
    let run = run_script(
        &open_script(&p).unwrap(),
        Phase::Post,
        &ctx,
        Duration::from_secs(30),
        Duration::from_secs(1),
    )
    .await;
    assert!(run.status.succeeded(), "{:?}", run.status);
    let env: Vec<&str> = run.output.lines().collect();
    assert_eq!(
        env,
        [
            "APPSNAP_DISK_IDS=",
            "APPSNAP_FREEZE_DEADLINE=0",
            "APPSNAP_JOB=pg",
            "APPSNAP_MOUNTPOINTS=",
            "APPSNAP_PHASE=post",
            "HOME=/root",
            "LANG=C.UTF-8",
            &format!("PATH={SCRIPT_PATH}"),
            "PGPASSFILE=/root/.pgpass",
        ]
    );
}
