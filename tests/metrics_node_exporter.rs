//! The metrics as Prometheus sees them: appsnap's textfile read by Debian's
//! real `prometheus-node-exporter` (textfile collector only, on loopback),
//! and the shipped alerting rules checked and unit-tested by `promtool`.
//! Each test skips with a printed reason when its tool is not installed
//! (`scripts/test` installs both).

mod common;

use std::path::Path;
use std::process::Command;

use appsnap::notify::RunFacts;
use appsnap::state::{Consistency, JobResult, StateStore, STATE_SCHEMA};
use common::alerts::*;

fn policy(dir: &Path) -> appsnap::policy::Policy {
    let text = format!(
        "[host]\nstate_dir = \"{0}/state\"\nrun_dir = \"{0}/run\"\n\
         [metrics]\ntextfile = \"{0}/collector/appsnap.prom\"\n\
         [[job]]\nname = \"db\"\nschedule = \"30 2 * * *\"\ntimezone = \"UTC\"\ndisks = [\"d-bp1a\"]\n\
         prescript = \"/etc/appsnap/pre.sh\"\npostscript = \"/etc/appsnap/post.sh\"\n",
        dir.display()
    );
    appsnap::policy::parse_str(&dir.join("appsnap.toml"), &text).unwrap()
}

fn facts(exit: u8, consistency: Consistency, finished: &str) -> RunFacts {
    RunFacts {
        job: "db".into(),
        run_id: format!("run-{exit}"),
        scheduled_for: None,
        started_at: "2026-01-01T02:30:00Z".parse().unwrap(),
        finished_at: finished.parse().unwrap(),
        exit_code: exit,
        vendor_message: String::new(),
        errors: vec![],
        warnings: vec![],
        consistency,
        wanted: Consistency::App,
        group_id: None,
        frozen_ms: Some(2500),
        forced_thaw: None,
        retention_error: None,
        previous_exit: None,
    }
}

fn record(dir: &Path, f: &RunFacts) {
    let store = StateStore::new(&dir.join("state"));
    store
        .write(&JobResult {
            schema: STATE_SCHEMA,
            job: f.job.clone(),
            run_id: f.run_id.clone(),
            scheduled_for: None,
            started_at: f.started_at,
            finished_at: f.finished_at,
            exit_code: f.exit_code,
            consistency: f.consistency,
            snapshot_group_id: None,
            frozen_ms: f.frozen_ms,
            phases: vec![],
            message: String::new(),
            upload: None,
        })
        .unwrap();
    appsnap::metrics::record_run(&dir.join("state"), f, None).unwrap();
}

#[test]
fn node_exporter_reads_the_textfile_without_errors() {
    if let Some(why) = node_exporter_missing() {
        common::skip::missing(&why);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("collector")).unwrap();
    let p = policy(dir.path());
    let now = "2026-01-02T00:00:00Z".parse().unwrap();
    // At start, before any run: build info and the next run only.
    appsnap::metrics::write_textfile(&p, now).unwrap();
    let ne = NodeExporter::start(&dir.path().join("collector"));
    let s = ne.scrape();
    assert_eq!(
        sample(&s, "node_textfile_scrape_error"),
        Some(0.0),
        "{}",
        appsnap_lines(&s)
    );
    assert_eq!(
        sample(
            &s,
            "appsnap_job_next_run_timestamp_seconds{appsnap_job=\"db\"}"
        ),
        Some(1_767_321_000.0),
        "2026-01-02T02:30:00Z\n{}",
        appsnap_lines(&s)
    );
    assert_eq!(
        sample(&s, "appsnap_job_last_exit_code{appsnap_job=\"db\"}"),
        None
    );

    record(
        dir.path(),
        &facts(9, Consistency::None, "2026-01-01T02:30:04Z"),
    );
    record(
        dir.path(),
        &facts(0, Consistency::Fs, "2026-01-02T02:30:06Z"),
    );
    appsnap::metrics::write_textfile(&p, now).unwrap();
    let s = ne.scrape();
    println!("--- scrape\n{}", appsnap_lines(&s));
    assert_eq!(sample(&s, "node_textfile_scrape_error"), Some(0.0));
    let db = |m: &str| sample(&s, &format!("{m}{{appsnap_job=\"db\"}}"));
    assert_eq!(db("appsnap_job_last_exit_code"), Some(0.0));
    assert_eq!(
        db("appsnap_job_last_success_timestamp_seconds"),
        Some(1_767_321_006.0)
    );
    assert_eq!(db("appsnap_job_last_io_suspended_seconds"), Some(2.5));
    assert_eq!(
        db("appsnap_job_last_degraded"),
        Some(1.0),
        "fs got, app wanted"
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
            "appsnap_job_runs_total{appsnap_job=\"db\",outcome=\"degraded\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &s,
            "appsnap_job_last_consistency{appsnap_job=\"db\",consistency=\"fs\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &s,
            &format!(
                "appsnap_build_info{{version=\"{}\"}}",
                env!("CARGO_PKG_VERSION")
            )
        ),
        Some(1.0)
    );
}

#[test]
fn the_shipped_rules_pass_promtool() {
    if Command::new("promtool").arg("--version").output().is_err() {
        common::skip::missing(
            "promtool not installed (Debian package prometheus; scripts/test installs it)",
        );
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let check = Command::new("promtool")
        .args(["check", "rules"])
        .arg(root.join("packaging/examples/prometheus/appsnap.rules.yml"))
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    let test = Command::new("promtool")
        .args(["test", "rules", "appsnap.rules.test.yml"])
        .current_dir(root.join("tests/prometheus"))
        .output()
        .unwrap();
    assert!(
        test.status.success(),
        "{}{}",
        String::from_utf8_lossy(&test.stdout),
        String::from_utf8_lossy(&test.stderr)
    );
}
