//! Running hooks: environment, exit codes, bounded output, timeouts that kill
//! the whole tree (even a grandchild ignoring SIGTERM), and lock holders.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use appsnap::job::script_check::{open_script, OpenedScript};
use appsnap::job::scripts::{run_script, run_script_until, Phase, ScriptContext, ScriptStatus};

/// A root-owned 0700 `#!/bin/sh` hook in `dir`, opened and checked as a run does.
fn write_script(dir: &Path, name: &str, body: &str) -> OpenedScript {
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o700)).unwrap();
    open_script(&p).unwrap_or_else(|e| panic!("these tests run as root: {e}"))
}

fn ctx() -> ScriptContext {
    ScriptContext {
        job: "mysql".into(),
        disk_ids: vec!["d-a1".into(), "d-b2".into()],
        mountpoints: vec!["/data".into(), "/mnt/with space".into()],
        freeze_deadline_epoch: 1_900_000_000,
        pass_env: Vec::new(),
        tags_file: None,
    }
}

fn pid_alive(pid: i32) -> bool {
    // A zombie still answers kill(0); count only live processes.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

/// The process whose pid is in `pidfile` is gone within 5 s.
fn assert_dies(pidfile: &Path, after: &str) {
    let gc: i32 = std::fs::read_to_string(pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    for _ in 0..100 {
        if !pid_alive(gc) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("grandchild {gc} survived {after}");
}

const LONG: Duration = Duration::from_secs(60);
const GRACE: Duration = Duration::from_secs(2);

#[tokio::test]
async fn environment_exit_code_and_output() {
    let d = tempfile::tempdir().unwrap();
    let s = write_script(
        d.path(),
        "pre.sh",
        "echo \"job=$APPSNAP_JOB phase=$APPSNAP_PHASE disks=$APPSNAP_DISK_IDS deadline=$APPSNAP_FREEZE_DEADLINE\"\n\
         printf '%s\\n' \"$APPSNAP_MOUNTPOINTS\" | sed -n 2p\n\
         exit 3",
    );
    let run = run_script(&s, Phase::Pre, &ctx(), LONG, GRACE).await;
    assert_eq!(run.status, ScriptStatus::Exited(3));
    assert!(!run.status.succeeded());
    assert!(
        run.output
            .contains("job=mysql phase=pre disks=d-a1 d-b2 deadline=1900000000"),
        "{}",
        run.output
    );
    assert!(run.output.contains("/mnt/with space"), "{}", run.output);
    assert!(run.leftovers.is_none());
}

#[tokio::test]
async fn missing_interpreter_is_a_spawn_failure() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("bad.sh");
    std::fs::write(&p, "#!/nonexistent/interpreter\n").unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o700)).unwrap();
    let p = open_script(&p).unwrap();
    let run = run_script(&p, Phase::Post, &ctx(), LONG, GRACE).await;
    assert!(
        matches!(run.status, ScriptStatus::SpawnFailed(_)),
        "{:?}",
        run.status
    );
}

#[tokio::test]
async fn output_tail_is_bounded_and_keeps_the_end() {
    let d = tempfile::tempdir().unwrap();
    let s = write_script(
        d.path(),
        "noisy.sh",
        "i=0; while [ $i -lt 3000 ]; do echo \"line $i of noise\"; i=$((i+1)); done; echo LAST",
    );
    let run = run_script(&s, Phase::Post, &ctx(), LONG, GRACE).await;
    assert!(run.status.succeeded());
    assert!(run.output.len() <= appsnap::job::scripts::OUTPUT_TAIL_BYTES);
    assert!(
        run.output.trim_end().ends_with("LAST"),
        "{}",
        &run.output[run.output.len() - 40..]
    );
    assert!(!run.output.contains("line 0 of noise\n"));
}

#[tokio::test]
async fn timeout_kills_the_tree_including_a_term_ignoring_grandchild() {
    let d = tempfile::tempdir().unwrap();
    let pidfile = d.path().join("grandchild.pid");
    let s = write_script(
        d.path(),
        "hang.sh",
        &format!(
            "sh -c 'trap \"\" TERM; echo $$ > {}; while :; do sleep 1; done' &\nwhile :; do sleep 1; done",
            pidfile.display()
        ),
    );
    let run = run_script(
        &s,
        Phase::Pre,
        &ctx(),
        Duration::from_millis(1500),
        Duration::from_millis(500),
    )
    .await;
    assert_eq!(run.status, ScriptStatus::TimedOut);
    assert!(run.leftovers.is_none());
    assert_dies(&pidfile, "the timeout");
}

#[tokio::test]
async fn cancel_ends_the_whole_tree_long_before_the_timeout() {
    let d = tempfile::tempdir().unwrap();
    let pidfile = d.path().join("grandchild.pid");
    let s = write_script(
        d.path(),
        "slow.sh",
        &format!(
            "sh -c 'trap \"\" TERM; echo $$ > {}; while :; do sleep 1; done' &\nwhile :; do sleep 1; done",
            pidfile.display()
        ),
    );
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let cancel = async move {
        let _ = rx.await;
    };
    let started = std::time::Instant::now();
    let run = tokio::spawn({
        async move {
            run_script_until(
                &s,
                Phase::Pre,
                &ctx(),
                LONG,
                Duration::from_millis(500),
                cancel,
            )
            .await
        }
    });
    // Cancel once the grandchild exists, as a daemon stop would mid-script.
    while !pidfile.exists() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tx.send(()).unwrap();
    let run = run.await.unwrap();
    assert_eq!(run.status, ScriptStatus::Cancelled);
    assert!(
        run.leftovers.is_none(),
        "a cancelled group is not kept as lock holders"
    );
    assert!(
        started.elapsed() < LONG,
        "ended by the cancel, not by the {LONG:?} timeout"
    );
    assert_dies(&pidfile, "the cancel");
}

#[tokio::test]
async fn lock_holders_outlive_the_pre_script_until_terminated() {
    let d = tempfile::tempdir().unwrap();
    let pidfile = d.path().join("holder.pid");
    // The holder keeps stdout open, as a real `mysql` client session would.
    let s = write_script(
        d.path(),
        "lock.sh",
        &format!("sleep 300 &\necho $! > {}\necho locked", pidfile.display()),
    );
    let run = run_script(&s, Phase::Pre, &ctx(), LONG, GRACE).await;
    assert!(run.status.succeeded(), "{:?}", run.status);
    assert!(run.output.contains("locked"));
    let holder: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let group = run
        .leftovers
        .expect("the background session is a lock holder");
    assert!(group.is_alive());
    assert!(
        pid_alive(holder),
        "lock holder must stay alive until the post-script ran"
    );
    let needed_kill = group.terminate(GRACE).await;
    assert!(!needed_kill, "sleep exits on SIGTERM");
    for _ in 0..100 {
        if !pid_alive(holder) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("lock holder {holder} survived terminate()");
}

/// Issue 14 item 1: what runs is the file that was checked, by its
/// descriptor, even when another file is renamed over the path afterwards;
/// and it still runs in its own process group, in `/`.
#[tokio::test]
async fn the_opened_file_runs_even_after_the_path_is_replaced() {
    let d = tempfile::tempdir().unwrap();
    let s = write_script(
        d.path(),
        "pre.sh",
        "echo checked-file cwd=$(pwd)\nset -- $(sed 's/.*) //' /proc/$$/stat)\n[ \"$3\" = \"$$\" ] && echo own-group",
    );
    let other = d.path().join("other.sh");
    std::fs::write(&other, "#!/bin/sh\necho swapped-in\n").unwrap();
    std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::rename(&other, d.path().join("pre.sh")).unwrap();
    let run = run_script(&s, Phase::Pre, &ctx(), LONG, GRACE).await;
    assert!(run.status.succeeded(), "{:?} {}", run.status, run.output);
    assert!(
        run.output.contains("checked-file cwd=/\n"),
        "{}",
        run.output
    );
    assert!(run.output.contains("own-group"), "{}", run.output);
    assert!(!run.output.contains("swapped-in"), "{}", run.output);
}
