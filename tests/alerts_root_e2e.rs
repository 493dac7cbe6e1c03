//! Alerts end to end, with the real binary, the emulator and real loop file
//! systems (tests/common/world.rs): a signed webhook receiver on loopback
//! records what appsnap sends; Debian's node_exporter scrapes the textfile.
//! A failing pre-script then a success (failure, recovered, the scrape
//! after each), a quiet downgrade, a lost freeze (forced thaw), a hanging
//! receiver (the run and the thaw not delayed: measured and printed), and
//! the daemon stopped across scheduled times (missed, then caught up).

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::alerts::*;
use common::world::*;
use common::{appsnap_bin, skip_reason};
use serde_json::Value;

const KEY: &[u8] = b"e2e-webhook-key-9f8e7d6c5b4a";

macro_rules! root_or_skip {
    () => {
        if let Some(why) = skip_reason() {
            common::skip::missing(&why);
            return;
        }
    };
}

/// Adds global `[notify]` and `[metrics]` tables (before the job) and `job`
/// lines (inside it) to the world's policy.
fn configure(w: &World, rx: &Receiver, notify_extra: &str, job_extra: &str) {
    let key = key_file(&w.lab.dir, KEY);
    std::fs::create_dir_all(w.lab.dir.join("collector")).unwrap();
    let text = std::fs::read_to_string(&w.policy).unwrap();
    let head = format!(
        "[notify]\nwebhook_url = \"{}\"\nwebhook_key_file = \"{}\"\ntimeout_secs = 2\nretries = 1\n{notify_extra}\n\
         [metrics]\ntextfile = \"{}/collector/appsnap.prom\"\n\n",
        rx.url,
        key.display(),
        w.lab.dir.display()
    );
    std::fs::write(&w.policy, format!("{head}{text}{job_extra}\n")).unwrap();
}

fn events_of(evs: &[Value], kind: &str) -> Vec<Value> {
    evs.iter().filter(|e| e["event"] == kind).cloned().collect()
}

#[test]
fn a_failing_then_a_succeeding_run_alert_and_show_in_the_scrape() {
    root_or_skip!();
    let w = World::new("alerts-fail", Setup::default());
    let rx = Receiver::start(KEY);
    let pre_ok = w.lab.dir.join("pre-ok");
    let pre = w.script(
        "pre.sh",
        &format!(
            "[ -e {} ] || {{ echo 'cannot reach the database' >&2; exit 3; }}",
            pre_ok.display()
        ),
    );
    let post = w.script("post.sh", "exit 0");
    w.use_hooks(&pre, &post);
    configure(
        &w,
        &rx,
        "",
        &format!("ping_url = \"{}/ping-uuid\"\n", rx.url),
    );
    let ne = node_exporter_missing()
        .map(|why| common::skip::part_missing(&format!("node_exporter: {why}")))
        .is_none()
        .then(|| NodeExporter::start(&w.lab.dir.join("collector")));

    // A proxy in the environment (dead here) is not used for a loopback receiver.
    let mut cmd = Command::new(appsnap_bin());
    cmd.arg("-c")
        .arg(&w.policy)
        .args(["--config-dir", "/nonexistent", "run", "db"])
        .env("HTTP_PROXY", "http://127.0.0.1:9")
        .env("HTTPS_PROXY", "http://127.0.0.1:9")
        .env("ALL_PROXY", "http://127.0.0.1:9");
    let out = run_bounded(cmd, Duration::from_secs(120));
    assert_eq!(out.status.code(), Some(9), "{}", text(&out));
    let evs = rx.wait_for(Duration::from_secs(10), |e| {
        !events_of(e, "failure").is_empty()
    });
    let failure = &events_of(&evs, "failure")[0];
    println!(
        "--- failure event\n{}",
        serde_json::to_string_pretty(failure).unwrap()
    );
    assert_eq!(failure["schema"], 1);
    assert_eq!(failure["job"], "db");
    assert_eq!(failure["exit_code"], 9);
    // The vendor's behaviour: the snapshot is still taken, file-system-consistent.
    assert_eq!(failure["consistency"], "fs");
    assert_eq!(failure["wanted_consistency"], "app");
    assert!(
        failure["detail"]
            .as_str()
            .unwrap()
            .contains("exited with 3"),
        "{failure}"
    );
    assert_eq!(failure["host"]["instance_id"], INSTANCE);
    let webhook_reqs: Vec<Received> = rx
        .received()
        .into_iter()
        .filter(|r| r.path == "/hook")
        .collect();
    assert!(
        webhook_reqs.iter().all(|r| r.signature_ok),
        "every event signed with the key"
    );
    let pings: Vec<String> = rx
        .received()
        .iter()
        .map(|r| r.path.clone())
        .filter(|p| p.contains("ping-uuid"))
        .collect();
    assert_eq!(pings, ["/hook/ping-uuid/start", "/hook/ping-uuid/fail"]);
    if let Some(ne) = &ne {
        let s = ne.scrape();
        println!(
            "--- node_exporter scrape after the failing run\n{}",
            appsnap_lines(&s)
        );
        assert_eq!(sample(&s, "node_textfile_scrape_error"), Some(0.0));
        assert_eq!(
            sample(&s, "appsnap_job_last_exit_code{appsnap_job=\"db\"}"),
            Some(9.0)
        );
        assert_eq!(
            sample(
                &s,
                "appsnap_job_runs_total{appsnap_job=\"db\",outcome=\"failure\"}"
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &s,
                "appsnap_job_last_success_timestamp_seconds{appsnap_job=\"db\"}"
            ),
            None
        );
    }

    std::fs::write(&pre_ok, "").unwrap();
    let out = w.appsnap(&["run", "db"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let evs = rx.wait_for(Duration::from_secs(10), |e| {
        !events_of(e, "recovered").is_empty()
    });
    let recovered = &events_of(&evs, "recovered")[0];
    println!(
        "--- recovered event\n{}",
        serde_json::to_string_pretty(recovered).unwrap()
    );
    assert_eq!(recovered["exit_code"], 0);
    assert_eq!(recovered["consistency"], "app");
    assert!(recovered["snapshot_group_id"]
        .as_str()
        .unwrap()
        .starts_with("ssg-"));
    assert!(
        events_of(&evs, "success").is_empty(),
        "success only when asked"
    );
    if let Some(ne) = &ne {
        let s = ne.scrape();
        println!(
            "--- node_exporter scrape after the succeeding run\n{}",
            appsnap_lines(&s)
        );
        assert_eq!(sample(&s, "node_textfile_scrape_error"), Some(0.0));
        assert_eq!(
            sample(&s, "appsnap_job_last_exit_code{appsnap_job=\"db\"}"),
            Some(0.0)
        );
        assert_eq!(
            sample(
                &s,
                "appsnap_job_runs_total{appsnap_job=\"db\",outcome=\"success\"}"
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &s,
                "appsnap_job_last_consistency{appsnap_job=\"db\",consistency=\"app\"}"
            ),
            Some(1.0)
        );
        assert!(sample(
            &s,
            "appsnap_job_last_success_timestamp_seconds{appsnap_job=\"db\"}"
        )
        .is_some());
        assert!(
            sample(
                &s,
                "appsnap_job_last_io_suspended_seconds{appsnap_job=\"db\"}"
            )
            .unwrap()
                > 0.0
        );
    }
    // `status` shows the last result per sink.
    let st = w.appsnap(&["status"]);
    let st = String::from_utf8_lossy(&st.stdout);
    println!("--- appsnap status\n{st}");
    assert!(st.contains("db webhook: ok: recovered"), "{st}");
    assert!(st.contains("db ping: ok: success"), "{st}");
}

#[test]
fn a_quiet_downgrade_is_a_degraded_event() {
    root_or_skip!();
    let w = World::new("alerts-degraded", Setup::default());
    let rx = Receiver::start(KEY);
    let pre = w.script("pre.sh", "exit 0");
    // Group-writable: not a hook appsnap will run, so the run is fs-consistent.
    std::fs::set_permissions(&pre, std::os::unix::fs::PermissionsExt::from_mode(0o770)).unwrap();
    let post = w.script("post.sh", "exit 0");
    w.use_hooks(&pre, &post);
    configure(&w, &rx, "", "");
    let out = w.appsnap(&["run", "db"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let evs = rx.wait_for(Duration::from_secs(10), |e| {
        !events_of(e, "degraded").is_empty()
    });
    let d = &events_of(&evs, "degraded")[0];
    println!(
        "--- degraded event\n{}",
        serde_json::to_string_pretty(d).unwrap()
    );
    assert_eq!(d["consistency"], "fs");
    assert_eq!(d["wanted_consistency"], "app");
    assert!(
        d["detail"].as_str().unwrap().contains("0770"),
        "the reason: {d}"
    );
    assert!(events_of(&evs, "failure").is_empty());
}

#[test]
fn a_lost_freeze_is_a_forced_thaw_and_a_failure() {
    root_or_skip!();
    let w = World::new(
        "alerts-lost",
        Setup {
            sim_extra: "[faults.actions.CreateSnapshotGroup]\nlatency_ms = 4000\n".into(),
            ..Setup::default()
        },
    );
    let rx = Receiver::start(KEY);
    configure(&w, &rx, "", "");
    let mut cmd = Command::new(appsnap_bin());
    cmd.arg("-c")
        .arg(&w.policy)
        .args(["--config-dir", "/nonexistent", "run", "db"]);
    let run = std::thread::spawn(move || run_bounded(cmd, Duration::from_secs(120)));
    let start = Instant::now();
    let mut thawed = false;
    let mut sent_while_frozen = false;
    while !run.is_finished() && start.elapsed() < Duration::from_secs(60) {
        if w.lab.run_dir().join("frozen.json").exists() {
            sent_while_frozen |= !rx.received().is_empty();
            if common::fsfreeze("-u", &w.ext) {
                thawed = true;
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = run.join().unwrap();
    assert!(thawed, "never saw the file system frozen: {}", text(&out));
    assert_eq!(out.status.code(), Some(11), "{}", text(&out));
    assert!(!sent_while_frozen, "nothing is sent while frozen");
    let evs = rx.wait_for(Duration::from_secs(10), |e| e.len() >= 2);
    let kinds: Vec<&str> = evs.iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["forced_thaw", "failure"], "{evs:?}");
    println!(
        "--- forced_thaw event\n{}",
        serde_json::to_string_pretty(&evs[0]).unwrap()
    );
    assert!(
        evs[0]["detail"].as_str().unwrap().contains("lost"),
        "{}",
        evs[0]
    );
    assert_eq!(evs[0]["consistency"], "crash");
    let s = std::fs::read_to_string(w.lab.dir.join("collector/appsnap.prom")).unwrap();
    assert_eq!(
        sample(&s, "appsnap_job_forced_thaws_total{appsnap_job=\"db\"}"),
        Some(1.0),
        "{s}"
    );
    assert_writable(&w.ext);
}

#[test]
fn a_hanging_receiver_delays_neither_the_run_nor_the_thaw() {
    root_or_skip!();
    let w = World::new("alerts-hang", Setup::default());
    let rx = Receiver::start(KEY);
    rx.hang(true);
    let pre = w.script("pre.sh", "exit 0");
    let post = w.script("post.sh", "exit 0");
    w.use_hooks(&pre, &post);
    let record = || -> (i64, u64, chrono::DateTime<chrono::Utc>) {
        let rec: Value = serde_json::from_str(
            &std::fs::read_to_string(w.lab.dir.join("state/jobs/db.json")).unwrap(),
        )
        .unwrap();
        let at = |k: &str| -> chrono::DateTime<chrono::Utc> {
            rec[k].as_str().unwrap().parse().unwrap()
        };
        let finished = at("finished_at");
        (
            (finished - at("started_at")).num_milliseconds(),
            rec["frozen_ms"].as_u64().unwrap(),
            finished,
        )
    };
    // Baseline: the same run with no sink at all.
    let t0 = Instant::now();
    let out = w.appsnap(&["run", "db"]);
    let base_process = t0.elapsed();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let (base_run, base_frozen, _) = record();

    configure(&w, &rx, "success = true\n", "");
    let t0 = Instant::now();
    let out = w.appsnap(&["run", "db"]);
    let process = t0.elapsed();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let (run, frozen, finished) = record();
    let got = rx.received();
    assert!(!got.is_empty(), "the event reached the (hanging) receiver");
    assert!(
        got.iter().all(|r| r.wall >= finished),
        "every delivery attempt began after the run's record was written"
    );
    println!(
        "hanging receiver: run {run} ms, I/O suspended {frozen} ms \
         (no sink: run {base_run} ms, I/O suspended {base_frozen} ms); \
         the process took {} ms (no sink: {} ms): after the result line it waits for \
         the deliveries, 2 attempts x 2 s timeout + 1 s backoff",
        process.as_millis(),
        base_process.as_millis()
    );
    let st = w.appsnap(&["status", "--json"]);
    let v: Value = serde_json::from_slice(&st.stdout).unwrap();
    let web = &v["jobs"][0]["notifications"]["webhook"];
    assert_eq!(web["ok"], false, "{v}");
    assert!(
        web["error"]
            .as_str()
            .unwrap()
            .contains("no answer within 2s"),
        "{web}"
    );
    assert_eq!(web["attempts"], 2);
}

fn start_daemon(w: &World, log: &str) -> KillOnDrop {
    let log = std::fs::File::create(w.lab.dir.join(log)).unwrap();
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

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_daemon_stopped_across_scheduled_times_reports_them_and_catches_up() {
    root_or_skip!();
    let w = World::new("alerts-missed", Setup::default());
    let rx = Receiver::start(KEY);
    let text = std::fs::read_to_string(&w.policy)
        .unwrap()
        .replace("30 2 * * *", "*/5 * * * * *");
    std::fs::write(&w.policy, text).unwrap();
    configure(&w, &rx, "", "catch_up = true\n");
    let record = w.lab.dir.join("state/jobs/db.json");
    let mut d = start_daemon(&w, "daemon1.log");
    wait_for("a first scheduled run", Duration::from_secs(60), || {
        record.exists()
    });
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(d.0.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let _ = d.0.wait();
    let first: Value = serde_json::from_str(&std::fs::read_to_string(&record).unwrap()).unwrap();
    let calls = w.create_calls().len();
    // Down across at least two scheduled times.
    std::thread::sleep(Duration::from_secs(11));
    let _d = start_daemon(&w, "daemon2.log");
    let evs = rx.wait_for(Duration::from_secs(20), |e| {
        !events_of(e, "missed").is_empty()
    });
    let missed = &events_of(&evs, "missed")[0];
    println!(
        "--- missed event\n{}",
        serde_json::to_string_pretty(missed).unwrap()
    );
    let times = missed["missed"].as_array().unwrap();
    assert!(times.len() >= 2, "{missed}");
    let last_scheduled: chrono::DateTime<chrono::Utc> =
        first["scheduled_for"].as_str().unwrap().parse().unwrap();
    for t in times {
        let t: chrono::DateTime<chrono::Utc> = t.as_str().unwrap().parse().unwrap();
        assert!(
            t > last_scheduled,
            "only times after the last run: {missed}"
        );
    }
    assert!(
        missed["detail"].as_str().unwrap().contains("catch_up"),
        "{missed}"
    );
    // catch_up: one run at start, before the next scheduled time would have come.
    wait_for("the catch-up run", Duration::from_secs(30), || {
        w.create_calls().len() > calls
    });
    let log = std::fs::read_to_string(w.lab.dir.join("daemon2.log")).unwrap_or_default();
    assert!(log.contains("catch_up"), "{log}");
    let prom = std::fs::read_to_string(w.lab.dir.join("collector/appsnap.prom")).unwrap();
    assert_eq!(
        sample(&prom, "appsnap_job_missed_runs_total{appsnap_job=\"db\"}"),
        missed["missed_count"].as_f64(),
        "{prom}"
    );
}
