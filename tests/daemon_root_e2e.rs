//! The daemon end to end: the real `appsnap daemon` on a 6-field schedule
//! against the emulator and real loop file systems — runs happen and are
//! recorded, SIGHUP with a broken policy keeps the old schedule, SIGTERM in
//! the middle of a freeze thaws, runs the post-script, then exits.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::world::*;
use common::{appsnap_bin, skip_reason};
use serde_json::Value;

macro_rules! root_or_skip {
    () => {
        if let Some(why) = skip_reason() {
            common::skip::missing(&why);
            return;
        }
    };
}

fn start_daemon(w: &World) -> KillOnDrop {
    let log = std::fs::File::create(w.lab.dir.join("daemon.log")).unwrap();
    let child: Child = Command::new(appsnap_bin())
        .arg("-c")
        .arg(&w.policy)
        .args(["--config-dir", "/nonexistent", "daemon"])
        .env_remove("NOTIFY_SOCKET")
        .env_remove("JOURNAL_STREAM")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    KillOnDrop(child)
}

fn status_json(w: &World) -> Value {
    let out = Command::new(appsnap_bin())
        .arg("-c")
        .arg(&w.policy)
        .args(["--config-dir", "/nonexistent", "status", "--json"])
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

fn daemon_log(w: &World) -> String {
    std::fs::read_to_string(w.lab.dir.join("daemon.log")).unwrap_or_default()
}

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn sig(child: &Child, s: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), s).unwrap();
}

#[test]
fn scheduled_runs_reload_and_safe_stop() {
    root_or_skip!();
    let w = World::new("daemon", Setup { ..Setup::default() });
    let post_ran = w.lab.dir.join("post-ran");
    let pre = w.script("pre.sh", "echo quiesced");
    let post = w.script(
        "post.sh",
        &format!("echo resumed >> {}", post_ran.display()),
    );
    let original = std::fs::read_to_string(&w.policy)
        .unwrap()
        .replace("30 2 * * *", "*/4 * * * * *")
        + &format!(
            "prescript = \"{}\"\npostscript = \"{}\"\nkeep_last = 1\n",
            pre.display(),
            post.display()
        );
    std::fs::write(&w.policy, &original).unwrap();

    let mut d = start_daemon(&w);
    // Runs happen on the 6-field schedule and `status --json` shows them.
    wait_for("three scheduled runs", Duration::from_secs(60), || {
        w.create_calls().len() >= 3
    });
    wait_for("a recorded result", Duration::from_secs(30), || {
        status_json(&w).to_string().contains("\"exit_code\":0")
    });
    let st = status_json(&w);
    assert!(st.to_string().contains("\"consistency\":\"app\""), "{st}");
    assert!(
        st.to_string().contains("running"),
        "status says whether the daemon runs: {st}"
    );

    // SIGHUP with a broken policy: rejected with its location, old schedule kept.
    std::fs::write(
        &w.policy,
        original.replace("*/4 * * * * *", "*/4 * * * * * * *"),
    )
    .unwrap();
    sig(&d.0, nix::sys::signal::Signal::SIGHUP);
    wait_for("the reload rejection", Duration::from_secs(10), || {
        daemon_log(&w).contains("reload rejected")
    });
    assert!(
        daemon_log(&w).contains("appsnap.toml:"),
        "located error: {}",
        daemon_log(&w)
    );
    let before = w.create_calls().len();
    wait_for(
        "runs to continue on the old schedule",
        Duration::from_secs(30),
        || w.create_calls().len() > before,
    );
    // Retention (keep_last = 1) deletes the job's older groups after each
    // success. Runs keep coming every 4 s, so the count is read between a
    // run's prune and the next group, not at an arbitrary instant.
    let created = w.create_calls().len();
    assert!(created >= 3, "{created} groups made so far");
    wait_for(
        "retention to leave the newest group (and one being made)",
        Duration::from_secs(30),
        || w.groups().len() <= 2,
    );
    std::fs::write(&w.policy, &original).unwrap();

    // SIGTERM in the middle of a freeze: CreateSnapshotGroup now hangs 5 s.
    let faults = r#"{"actions":{"CreateSnapshotGroup":{"hang_secs":5,"hang_times":1}}}"#;
    post_faults(&w, faults);
    let record = w.lab.run_dir().join("frozen.json");
    wait_for("the next freeze", Duration::from_secs(30), || {
        record.exists()
    });
    let posts_before = std::fs::read_to_string(&post_ran)
        .unwrap_or_default()
        .lines()
        .count();
    sig(&d.0, nix::sys::signal::Signal::SIGTERM);
    let stopped = Instant::now();
    wait_for("the daemon to exit", Duration::from_secs(60), || {
        d.0.try_wait().unwrap().is_some()
    });
    eprintln!("daemon exited {:?} after SIGTERM", stopped.elapsed());
    assert!(
        !record.exists(),
        "thawed and the record removed before exit"
    );
    let posts_after = std::fs::read_to_string(&post_ran)
        .unwrap_or_default()
        .lines()
        .count();
    assert_eq!(
        posts_after,
        posts_before + 1,
        "the post-script ran for the interrupted run"
    );
    assert_writable(&w.ext);
    assert_writable(&w.xfs);
    let _ = d.0.wait();
}

fn post_faults(w: &World, json: &str) {
    let req = ecs_sim::testkit::http::RawRequest {
        method: "POST".into(),
        target: "/_sim/faults".into(),
        headers: vec![("content-type".into(), "application/json".into())],
        body: json.as_bytes().to_vec(),
    };
    let resp = ecs_sim::testkit::http::send(&w.sim.started.ecs_url, &req, Duration::from_secs(10))
        .unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
}

#[test]
fn daemon_refuses_a_broken_policy_at_start_with_code_2() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.toml");
    std::fs::write(
        &p,
        "[[job]]\nname = \"x1\"\nschedule = \"61 * * * *\"\ndisks = \"all\"\n",
    )
    .unwrap();
    let out = Command::new(appsnap_bin())
        .arg("-c")
        .arg(&p)
        .args(["--config-dir", "/nonexistent", "daemon"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("minute must be 0-59"));
}

#[test]
fn stopping_during_a_slow_pre_script_cancels_it_instead_of_waiting_out_its_timeout() {
    root_or_skip!();
    let w = World::new("dstop", Setup { ..Setup::default() });
    let started = w.lab.dir.join("pre-started");
    let post_ran = w.lab.dir.join("post-ran");
    let pre = w.script(
        "pre.sh",
        &format!("echo $$ > {}\nsleep 600", started.display()),
    );
    let post = w.script(
        "post.sh",
        &format!("echo resumed >> {}", post_ran.display()),
    );
    let policy = std::fs::read_to_string(&w.policy)
        .unwrap()
        .replace("30 2 * * *", "*/2 * * * * *")
        + "script_timeout_secs = 600\n";
    std::fs::write(&w.policy, policy).unwrap();
    w.use_hooks(&pre, &post);

    let mut d = start_daemon(&w);
    wait_for("the pre-script to start", Duration::from_secs(60), || {
        started.exists()
    });
    let pre_pid: i32 = std::fs::read_to_string(&started)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    sig(&d.0, nix::sys::signal::Signal::SIGTERM);
    // Far less than the 600 s script timeout: the stop grace cancels it.
    wait_for("the daemon to exit", Duration::from_secs(120), || {
        d.0.try_wait().unwrap().is_some()
    });
    let log = daemon_log(&w);
    assert!(
        log.contains("because the daemon is stopping"),
        "the cancel is reported: {log}"
    );
    assert!(
        !std::path::Path::new(&format!("/proc/{pre_pid}")).exists(),
        "the pre-script's process is gone"
    );
    assert_eq!(
        std::fs::read_to_string(&post_ran)
            .unwrap_or_default()
            .lines()
            .count(),
        1,
        "the post-script still ran to undo a partial quiesce"
    );
    assert!(w.create_calls().is_empty(), "nothing was snapshotted");
    assert_writable(&w.ext);
    assert_writable(&w.xfs);
}
