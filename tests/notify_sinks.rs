//! The notifier against a local webhook receiver (real HTTP on loopback):
//! signed events, retries, health-check pings, nothing sent while frozen,
//! and a hanging receiver that costs the caller nothing (measured, printed).

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use appsnap::notify::event::{run_event, EventKind};
use appsnap::notify::{FrozenProbe, HostIdentity, Notifier, RunFacts, SinkLog};
use appsnap::policy::NotifySettings;
use appsnap::state::Consistency;
use common::alerts::*;

const KEY: &[u8] = b"test-webhook-key-0123456789";

struct Flag(Arc<AtomicBool>);

impl FrozenProbe for Flag {
    fn frozen(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

fn notifier(state: &Path) -> (Notifier, Arc<AtomicBool>) {
    let frozen = Arc::new(AtomicBool::new(false));
    let host = HostIdentity {
        instance_id: Some("i-bp1test".into()),
        hostname: "host1".into(),
    };
    let n = Notifier::new(host, state, Box::new(Flag(frozen.clone())))
        .with_first_backoff(Duration::from_millis(50));
    (n, frozen)
}

fn facts(exit: u8) -> RunFacts {
    RunFacts {
        job: "db".into(),
        run_id: "run-1".into(),
        scheduled_for: None,
        started_at: chrono::Utc::now(),
        finished_at: chrono::Utc::now(),
        exit_code: exit,
        vendor_message: "The prescript.sh script cannot be executed".into(),
        errors: vec!["prescript exited 3".into()],
        warnings: vec![],
        consistency: Consistency::None,
        wanted: Consistency::App,
        group_id: None,
        frozen_ms: None,
        forced_thaw: None,
        retention_error: None,
        previous_exit: None,
    }
}

fn settings(url: &str, key: Option<&Path>) -> NotifySettings {
    NotifySettings {
        webhook_url: Some(url.to_string()),
        webhook_key_file: key.map(Path::to_path_buf),
        timeout: Duration::from_secs(2),
        retries: 2,
        ..NotifySettings::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_event_arrives_and_its_result_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let rx = Receiver::start(KEY);
    let key = key_file(dir.path(), KEY);
    let (n, _) = notifier(&dir.path().join("state"));
    let e = run_event(EventKind::Failure, &facts(9), &n.host(), chrono::Utc::now());
    n.emit("db", &settings(&rx.url, Some(&key)), vec![e]);
    assert_eq!(n.drain(Duration::from_secs(20)).await, 0);
    let got = rx.received();
    assert_eq!(got.len(), 1);
    assert!(
        got[0].signature_ok,
        "X-Appsnap-Signature verifies: {:?}",
        got[0].headers
    );
    assert_eq!(got[0].header("X-Appsnap-Event"), Some("failure"));
    let ev = got[0].json();
    assert_eq!(ev["schema"], 1);
    assert_eq!(ev["event"], "failure");
    assert_eq!(ev["exit_code"], 9);
    assert_eq!(ev["detail"], "prescript exited 3");
    assert_eq!(ev["host"]["instance_id"], "i-bp1test");
    let log = SinkLog::new(&dir.path().join("state")).load("db");
    assert!(log["webhook"].ok, "{log:?}");
    assert_eq!(log["webhook"].event, "failure");

    // A wrong key is caught by the receiver: the signature is really checked.
    let other = tempfile::tempdir().unwrap();
    let wrong = key_file(other.path(), b"another-key");
    let e = run_event(EventKind::Failure, &facts(9), &n.host(), chrono::Utc::now());
    n.emit("db", &settings(&rx.url, Some(&wrong)), vec![e]);
    n.drain(Duration::from_secs(20)).await;
    assert!(!rx.received()[1].signature_ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_receiver_is_retried_then_counted() {
    let dir = tempfile::tempdir().unwrap();
    let rx = Receiver::start(KEY);
    let (n, _) = notifier(&dir.path().join("state"));
    rx.fail_next(2);
    let e = run_event(EventKind::Failure, &facts(9), &n.host(), chrono::Utc::now());
    n.emit("db", &settings(&rx.url, None), vec![e]);
    n.drain(Duration::from_secs(20)).await;
    assert_eq!(rx.received().len(), 3, "two 503s, then delivered");
    let log = SinkLog::new(&dir.path().join("state")).load("db");
    assert!(log["webhook"].ok);
    assert_eq!(log["webhook"].attempts, 3);

    rx.fail_next(10);
    let e = run_event(EventKind::Failure, &facts(9), &n.host(), chrono::Utc::now());
    n.emit("db", &settings(&rx.url, None), vec![e]);
    n.drain(Duration::from_secs(20)).await;
    assert_eq!(rx.received().len(), 6, "1 + retries = 3 attempts, no more");
    let log = SinkLog::new(&dir.path().join("state")).load("db");
    let w = &log["webhook"];
    assert!(!w.ok);
    assert!(w.error.as_deref().unwrap().contains("503"), "{w:?}");
    assert!(
        !w.error.as_deref().unwrap().contains("/hook"),
        "no URL path in messages: {w:?}"
    );
    assert_eq!((w.sent_total, w.failed_total), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_sent_while_frozen() {
    let dir = tempfile::tempdir().unwrap();
    let rx = Receiver::start(KEY);
    let (n, frozen) = notifier(&dir.path().join("state"));
    frozen.store(true, Ordering::Relaxed);
    let e = run_event(EventKind::Failure, &facts(9), &n.host(), chrono::Utc::now());
    n.emit("db", &settings(&rx.url, None), vec![e]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(rx.received().is_empty(), "a delivery started while frozen");
    frozen.store(false, Ordering::Relaxed);
    n.drain(Duration::from_secs(20)).await;
    assert_eq!(rx.received().len(), 1, "delivered once thawed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_follow_the_healthchecks_convention() {
    let dir = tempfile::tempdir().unwrap();
    let rx = Receiver::start(KEY);
    let (n, _) = notifier(&dir.path().join("state"));
    let text = format!(
        "[[job]]\nname = \"db\"\nschedule = \"30 2 * * *\"\ndisks = [\"d-bp1a\"]\nping_url = \"{}/uuid-1\"\n",
        rx.url
    );
    let job = appsnap::policy::parse_str(Path::new("/t.toml"), &text)
        .unwrap()
        .jobs
        .remove(0);
    n.run_starting(&job, "run-1");
    n.drain(Duration::from_secs(20)).await;
    n.run_finished(&job, &facts(9));
    n.drain(Duration::from_secs(20)).await;
    n.run_finished(&job, &facts(0));
    n.drain(Duration::from_secs(20)).await;
    let paths: Vec<String> = rx.received().iter().map(|r| r.path.clone()).collect();
    assert_eq!(
        paths,
        ["/hook/uuid-1/start", "/hook/uuid-1/fail", "/hook/uuid-1"]
    );
    let body = String::from_utf8(rx.received()[1].body.clone()).unwrap();
    assert!(
        body.contains("exit 9") && body.contains("prescript exited 3"),
        "{body}"
    );
    let log = SinkLog::new(&dir.path().join("state")).load("db");
    assert_eq!(log["ping"].event, "success");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_receiver_costs_the_caller_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let rx = Receiver::start(KEY);
    rx.hang(true);
    let (n, _) = notifier(&dir.path().join("state"));
    let mut s = settings(&rx.url, None);
    s.timeout = Duration::from_secs(1);
    s.retries = 1;
    let e = run_event(EventKind::Failure, &facts(9), &n.host(), chrono::Utc::now());
    let t = Instant::now();
    n.emit("db", &s, vec![e]);
    let emit_took = t.elapsed();
    let left = n.drain(Duration::from_secs(30)).await;
    let delivery_took = t.elapsed();
    println!(
        "hanging receiver: emit returned after {emit_took:?}; the delivery gave up after {delivery_took:?} (2 attempts x 1 s timeout + backoff)"
    );
    assert_eq!(left, 0, "the delivery ended by its own timeouts");
    assert_eq!(rx.received().len(), 2, "both attempts reached the receiver");
    let log = SinkLog::new(&dir.path().join("state")).load("db");
    let w = &log["webhook"];
    assert!(!w.ok);
    assert!(
        w.error.as_deref().unwrap().contains("no answer within 1s"),
        "{w:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_exec_sink_gets_the_event_on_stdin_and_in_its_environment() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let script = dir.path().join("notify.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\ncat > {0}.stdin\necho \"$APPSNAP_EVENT $APPSNAP_JOB $APPSNAP_EXIT_CODE\" > {0}.env\nenv | grep -c ALIBABA > {0}.leak\n[ -e {0}.fail ] && exit 4\nexit 0\n",
            out.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o700)).unwrap();
    let (n, _) = notifier(&dir.path().join("state"));
    let s = NotifySettings {
        exec: Some(script.clone()),
        retries: 1,
        ..NotifySettings::default()
    };
    let e = run_event(EventKind::Failure, &facts(9), &n.host(), chrono::Utc::now());
    n.emit("db", &s, vec![e]);
    n.drain(Duration::from_secs(20)).await;
    let stdin: serde_json::Value =
        serde_json::from_slice(&std::fs::read(format!("{}.stdin", out.display())).unwrap())
            .unwrap();
    assert_eq!(stdin["event"], "failure");
    assert_eq!(stdin["run_id"], "run-1");
    let env = std::fs::read_to_string(format!("{}.env", out.display())).unwrap();
    assert_eq!(env.trim(), "failure db 9");
    let leak = std::fs::read_to_string(format!("{}.leak", out.display())).unwrap();
    assert_eq!(leak.trim(), "0", "a clean environment");
    let log = SinkLog::new(&dir.path().join("state")).load("db");
    assert!(log["exec"].ok, "{log:?}");

    // A failing command is retried, then counted.
    std::fs::write(format!("{}.fail", out.display()), "").unwrap();
    let e = run_event(EventKind::Failure, &facts(9), &n.host(), chrono::Utc::now());
    n.emit("db", &s, vec![e]);
    n.drain(Duration::from_secs(20)).await;
    let log = SinkLog::new(&dir.path().join("state")).load("db");
    assert!(!log["exec"].ok);
    assert_eq!(log["exec"].attempts, 2);
    assert!(
        log["exec"].error.as_deref().unwrap().contains("exited 4"),
        "{log:?}"
    );

    // One others may write is never run, and not retried.
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o777)).unwrap();
    let e = run_event(EventKind::Failure, &facts(9), &n.host(), chrono::Utc::now());
    n.emit("db", &s, vec![e]);
    n.drain(Duration::from_secs(20)).await;
    let log = SinkLog::new(&dir.path().join("state")).load("db");
    assert_eq!(log["exec"].attempts, 1);
    assert!(
        log["exec"].error.as_deref().unwrap().contains("0777"),
        "{log:?}"
    );
}

fn policy_with_webhook(dir: &Path, url: &str, job_extra: &str) -> appsnap::policy::Policy {
    let text = format!(
        "[host]\nstate_dir = \"{0}/state\"\nrun_dir = \"{0}/run\"\n\
         [notify]\nwebhook_url = \"{url}\"\ntimeout_secs = 2\nretries = 0\n\
         [metrics]\ntextfile = \"{0}/collector/appsnap.prom\"\n\
         [[job]]\nname = \"db\"\nschedule = \"0 * * * *\"\ntimezone = \"UTC\"\ndisks = [\"d-bp1a\"]\n{job_extra}",
        dir.display()
    );
    std::fs::create_dir_all(dir.join("collector")).unwrap();
    appsnap::policy::parse_str(&dir.join("appsnap.toml"), &text).unwrap()
}

/// At daemon start: the hours since the last run are missed, told once
/// (a second start does not tell them again), counted in the metrics, and
/// with `catch_up = true` the job is handed back to run for the latest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missed_times_at_start_are_told_once_and_counted() {
    use appsnap::state::{JobResult, StateStore, STATE_SCHEMA};
    let dir = tempfile::tempdir().unwrap();
    let rx = Receiver::start(KEY);
    let p = policy_with_webhook(dir.path(), &rx.url, "catch_up = true\n");
    let now = chrono::Utc::now();
    let last = now - chrono::Duration::hours(3);
    StateStore::new(&dir.path().join("state"))
        .write(&JobResult {
            schema: STATE_SCHEMA,
            job: "db".into(),
            run_id: "r0".into(),
            scheduled_for: Some(last),
            started_at: last,
            finished_at: last,
            exit_code: 0,
            consistency: Consistency::App,
            snapshot_group_id: None,
            frozen_ms: None,
            phases: vec![],
            message: String::new(),
            upload: None,
        })
        .unwrap();
    let (n, _) = notifier(&dir.path().join("state"));
    let catch_up = appsnap::alerts::at_start(&n, &p);
    n.drain(Duration::from_secs(20)).await;
    let evs = rx.events();
    assert_eq!(evs.len(), 1, "{evs:?}");
    assert_eq!(evs[0]["event"], "missed");
    let count = evs[0]["missed_count"].as_u64().unwrap();
    assert!(
        (2..=3).contains(&count),
        "three hourly times in 3 h, the last perhaps not yet: {}",
        evs[0]
    );
    let latest: chrono::DateTime<chrono::Utc> = evs[0]["missed"][count as usize - 1]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(catch_up.len(), 1);
    assert_eq!(
        catch_up[0].1, latest,
        "the catch-up run is the run for the latest missed time"
    );
    let prom = std::fs::read_to_string(dir.path().join("collector/appsnap.prom")).unwrap();
    assert_eq!(
        sample(&prom, "appsnap_job_missed_runs_total{appsnap_job=\"db\"}"),
        Some(count as f64),
        "{prom}"
    );
    // A second start (no run in between) tells nothing new.
    let again = appsnap::alerts::at_start(&n, &p);
    n.drain(Duration::from_secs(20)).await;
    assert_eq!(rx.events().len(), 1, "not told twice");
    assert!(again.is_empty());
}

/// A wall-clock jump seen by the scheduler: the `missed` event says so and
/// names the times; the totals count them (written in the background).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skipped_times_after_a_clock_jump_are_told() {
    let dir = tempfile::tempdir().unwrap();
    let rx = Receiver::start(KEY);
    let p = policy_with_webhook(dir.path(), &rx.url, "");
    let (n, _) = notifier(&dir.path().join("state"));
    let times: Vec<chrono::DateTime<chrono::Utc>> =
        ["2026-05-01T03:00:00Z", "2026-05-01T04:00:00Z"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
    appsnap::alerts::skipped(&n, &p, &p.jobs[0], &times, 2);
    let evs = rx.wait_for(Duration::from_secs(10), |e| !e.is_empty());
    assert_eq!(evs[0]["event"], "missed");
    assert!(
        evs[0]["detail"].as_str().unwrap().contains("clock jumped"),
        "{}",
        evs[0]
    );
    assert_eq!(evs[0]["missed"][1], "2026-05-01T04:00:00Z");
    let state = dir.path().join("state");
    let until = Instant::now() + Duration::from_secs(10);
    while appsnap::metrics::load_totals(&state, "db").missed_runs == 0 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let t = appsnap::metrics::load_totals(&state, "db");
    assert_eq!(t.missed_runs, 2);
    assert_eq!(t.missed_until, Some(times[1]));
}
