//! Real databases restored from appsnap's snapshots (issue 8, item 4).
//!
//! For MariaDB and PostgreSQL from Debian's packages: the data directory on
//! ext4 and the redo log / WAL on xfs (two loop disks, one snapshot group), a
//! client committing one numbered row at a time during the whole run,
//! `appsnap run` with the shipped example hooks against the emulator, then a
//! fresh server on the emulator's copied images: it must recover, pass
//! `mariadb-check --all-databases` / `pg_amcheck --all`, and hold every row
//! acknowledged before the pre-script returned (MariaDB: and nothing
//! committed while the read lock was held) or before the freeze (PostgreSQL).
//! Before that, with the live server still running, a restore drill
//! (`appsnap verify`) whose `verify_script` is the shipped example
//! (packaging/examples/*/verify.sh): it must pass, its server on the drill's
//! copy must count the same rows, and the drill must leave nothing behind.
//!
//! Root only, and `#[ignore]`d in the plain `cargo test` run: scripts/test
//! runs them as their own lane (`--ignored --nocapture`, so the row counts
//! show) after installing the packages. As root a missing server is a
//! failure, not a skip.

mod common;
mod dbkit;

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use common::skip_reason;
use dbkit::job::RemoveOnDrop;
use dbkit::job::{app_consistent_group, install_example_hooks, mount_copies, run_job, world};
use dbkit::job::{
    assert_drill_left_nothing, install_example_verify, query_lines, set_verify_query, verify,
    wait_accomplished, Unmounter,
};
use dbkit::mariadb::MariaDb;
use dbkit::postgres::Postgres;
use dbkit::timeline::{ms_between, Timeline};
use dbkit::workload::{Ack, Workload};

macro_rules! root_or_skip {
    () => {
        if let Some(why) = skip_reason() {
            common::skip::missing(&why);
            return;
        }
    };
}

/// Commits the workload makes before appsnap starts, and after it ends (so
/// the workload provably spans the whole run).
const WARMUP_ACKS: usize = 50;

fn seqs_before(acks: &[Ack], t: SystemTime) -> Vec<u64> {
    acks.iter().filter(|a| a.at < t).map(|a| a.seq).collect()
}

fn acked_between(acks: &[Ack], from: SystemTime, to: SystemTime) -> Vec<u64> {
    acks.iter()
        .filter(|a| a.at >= from && a.at < to)
        .map(|a| a.seq)
        .collect()
}

fn parse_seqs(out: &str) -> Vec<u64> {
    out.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.trim().parse().unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

fn missing(want: &[u64], have: &BTreeSet<u64>) -> Vec<u64> {
    want.iter().copied().filter(|s| !have.contains(s)).collect()
}

/// A restore drill of the run's group with the shipped example verify
/// script for `kind` (the live server still running): it must pass, the
/// script's checks must have passed (`checked` in its output), and the
/// drill must leave nothing. Returns what the script's query counted on the
/// copy: (rows, max seq).
fn drill(
    w: &common::world::World,
    kind: &str,
    knobs: &[(&str, String)],
    query: &str,
    checked: &str,
) -> (u64, u64) {
    wait_accomplished(w);
    let out_file = install_example_verify(w, kind, knobs, query);
    let (code, report, all) = verify(w);
    let script_out = std::fs::read_to_string(&out_file).unwrap_or_default();
    eprintln!("{kind} verify_script output:\n{script_out}");
    assert_eq!(code, Some(0), "appsnap verify: {all}\nscript: {script_out}");
    assert_eq!(report["verdict"], "passed", "{report:#}");
    assert!(
        report["script"]
            .as_str()
            .is_some_and(|s| s.starts_with("Exited(0)")),
        "{report:#}"
    );
    assert!(script_out.contains(checked), "{script_out}");
    assert!(
        script_out.contains("verify: passed, server stopped"),
        "{script_out}"
    );
    assert_drill_left_nothing(w);
    let q = query_lines(&out_file);
    assert_eq!(q.len(), 1, "one query line: {script_out}");
    let n = |i: usize| -> u64 {
        q[0].get(i)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("query line {:?}", q[0]))
    };
    (n(0), n(1))
}

/// A second drill whose operator query fails on the copy: the example
/// script must fail it with a message naming the query, and stop its server
/// and leave nothing, like a passing drill.
fn failing_drill(w: &common::world::World, kind: &str, bad_query: &str) {
    set_verify_query(w, kind, bad_query);
    let (code, report, all) = verify(w);
    assert_eq!(code, Some(1), "appsnap verify: {all}");
    assert_eq!(report["verdict"], "failed", "{report:#}");
    let errors = report["errors"].to_string();
    assert!(
        errors.contains("verify_script")
            && errors.contains("the query in")
            && errors.contains("failed"),
        "the drill's errors name the script and the query: {errors}"
    );
    assert!(
        report["script"]
            .as_str()
            .is_some_and(|s| s.starts_with("Exited(1)")),
        "{report:#}"
    );
    assert_drill_left_nothing(w);
    eprintln!("{kind}: a failing query fails the drill: {errors}");
}

fn windows(tl: &Timeline) -> String {
    format!(
        "pre-script returned → first FIFREEZE {} ms, frozen {} ms, last FITHAW → post-script started {} ms",
        ms_between(tl.pre_returned, tl.first_freeze),
        ms_between(tl.first_freeze, tl.last_thaw),
        ms_between(tl.last_thaw, tl.post_started)
    )
}

#[test]
#[ignore = "database lane: scripts/test runs it with --ignored (root, MariaDB)"]
fn mariadb_restore_has_every_commit_before_the_lock_and_none_while_it_held() {
    root_or_skip!();
    dbkit::require(dbkit::mariadb::TOOLS);
    let w = world("mariadb");
    let work = w.lab.dir.clone();
    let mut db = MariaDb::install(&work, "orig", &w.ext.join("mysql"), &w.xfs.join("redo"));
    db.start();
    db.sql(
        "CREATE DATABASE w; CREATE TABLE w.t (seq BIGINT PRIMARY KEY, \
         at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)) ENGINE=InnoDB",
    );
    install_example_hooks(&w, "mysql");
    let state = RemoveOnDrop(format!("/run/appsnap-db-{}-mysql", std::process::id()).into());

    let load = Workload::start(
        db.client(Some("w")),
        |n| format!("INSERT INTO t (seq) VALUES ({n}); SELECT {n};\n"),
        &work.join("acks.log"),
    );
    load.wait_for(WARMUP_ACKS, Duration::from_secs(60));
    let (out, tl) = run_job(
        &w,
        &[
            ("DEFAULTS_FILE", db.client_cnf.display().to_string()),
            ("STATE_DIR", state.0.display().to_string()),
        ],
    );
    load.wait_for(load.acked() + WARMUP_ACKS, Duration::from_secs(60));
    let acks = load.stop();

    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("mysql: tables locked read-only"),
        "pre-script output: {log}"
    );
    assert!(
        log.contains("running (lock holders)"),
        "the FTWRL session is a lock holder: {log}"
    );
    assert!(
        log.contains("mysql: tables unlocked"),
        "post-script output: {log}"
    );
    let session: i32 = std::fs::read_to_string(state.0.join("session.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        !std::path::Path::new(&format!("/proc/{session}/cmdline")).exists()
            || std::fs::read_to_string(format!("/proc/{session}/cmdline"))
                .unwrap_or_default()
                .is_empty(),
        "appsnap ended the lock session {session} after the post-script"
    );
    let group = app_consistent_group(&w);

    // The restore drill, the live server still running beside it.
    let _unmount = Unmounter(w.lab.run_dir());
    let (drill_rows, drill_max) = drill(
        &w,
        "mysql",
        &[
            ("LIVE_DATADIR", w.ext.join("mysql").display().to_string()),
            ("LIVE_REDO_DIR", w.xfs.join("redo").display().to_string()),
        ],
        "SELECT COUNT(*), COALESCE(MAX(seq), 0) FROM w.t;\n",
        "mariadb-check --all-databases: ",
    );
    let live: usize = db.sql("SELECT COUNT(*) FROM w.t").trim().parse().unwrap();
    assert_eq!(
        live,
        acks.len(),
        "the live server lost or gained rows during the drill"
    );
    failing_drill(&w, "mysql", "SELECT COUNT(*) FROM w.no_such_table;\n");
    db.stop();

    let (ext, xfs) = mount_copies(&w, &group);
    let mut restored = MariaDb::configure(&work, "restored", &ext.join("mysql"), &xfs.join("redo"));
    restored.start();
    let server_log = restored.log_text();
    let (clean, report) = restored.check_all();
    assert!(
        clean,
        "mariadb-check --all-databases on the restored copy:\n{report}"
    );
    let rows = parse_seqs(&restored.sql("SELECT seq FROM w.t ORDER BY seq"));
    restored.stop();

    let before_pre = seqs_before(&acks, tl.pre_returned);
    let in_lock = acked_between(&acks, tl.pre_returned, tl.post_started);
    let in_freeze = acked_between(&acks, tl.first_freeze, tl.last_thaw);
    let have: BTreeSet<u64> = rows.iter().copied().collect();
    let last_before = before_pre.last().copied().unwrap_or(0);
    eprintln!(
        "MariaDB: acknowledged before the pre-script returned: {} rows (seq 1..={last_before}); \
         restored copy: {} rows (max seq {}); acknowledged while the lock held (pre-script returned → post-script started, {} ms): {}; \
         inside the freeze window: {:?}; acknowledged in the whole workload: {} [{}]; mariadb-check: {} tables OK; recovery: {}; \
         appsnap verify (example verify script): {drill_rows} rows (max seq {drill_max})",
        before_pre.len(),
        rows.len(),
        rows.last().copied().unwrap_or(0),
        ms_between(tl.pre_returned, tl.post_started),
        in_lock.len(),
        in_freeze,
        acks.len(),
        windows(&tl),
        report.lines().filter(|l| l.trim_end().ends_with("OK")).count(),
        server_log
            .lines()
            .filter(|l| l.contains("crash recovery") || l.contains("To recover") || l.contains("End of log"))
            .map(|l| l.split("InnoDB: ").last().unwrap_or(l).trim())
            .collect::<Vec<_>>()
            .join("; "),
    );
    assert!(
        before_pre.len() >= WARMUP_ACKS,
        "the workload ran before the run"
    );
    assert!(
        in_lock.is_empty(),
        "commits acknowledged while FLUSH TABLES WITH READ LOCK should have held: {in_lock:?}"
    );
    let lost = missing(&before_pre, &have);
    assert!(
        lost.is_empty(),
        "rows acknowledged before the lock but not restored: {lost:?}"
    );
    // Exactly the rows acknowledged before the lock, plus at most the one
    // transaction that was in flight when the lock was taken.
    assert!(
        rows.len() <= before_pre.len() + 1 && rows.iter().all(|&s| s <= last_before + 1),
        "the restored copy has rows committed after the lock: {} rows, max {:?}, {} acknowledged before the lock",
        rows.len(),
        rows.last(),
        before_pre.len()
    );
    // The drill restored the same group: its server counted the same rows.
    assert_eq!(
        (drill_rows, drill_max),
        (rows.len() as u64, rows.last().copied().unwrap_or(0)),
        "the drill's copy and the hand-restored copy differ"
    );
    assert!(
        drill_rows as usize >= before_pre.len() && drill_rows <= last_before + 1,
        "the drill's copy: {drill_rows} rows, {} acknowledged before the pre-script returned",
        before_pre.len()
    );
}

#[test]
#[ignore = "database lane: scripts/test runs it with --ignored (root, PostgreSQL)"]
fn postgresql_restore_recovers_with_every_commit_before_the_freeze() {
    root_or_skip!();
    dbkit::require(dbkit::postgres::TOOLS);
    let w = world("postgres");
    let work = w.lab.dir.clone();
    let mut db = Postgres::init(&work, "orig", &w.ext.join("pgdata"), &w.xfs.join("pgwal"));
    db.start();
    db.sql("CREATE TABLE t (seq bigint PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp())");
    install_example_hooks(&w, "postgresql");

    let load = Workload::start(
        db.psql(),
        |n| format!("INSERT INTO t (seq) VALUES ({n}) RETURNING seq;\n"),
        &work.join("acks.log"),
    );
    load.wait_for(WARMUP_ACKS, Duration::from_secs(60));
    let (out, tl) = run_job(&w, &[("PSQL_ARGS", db.psql_args())]);
    load.wait_for(load.acked() + WARMUP_ACKS, Duration::from_secs(60));
    let acks = load.stop();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("postgresql: checkpoint done"),
        "pre-script output: {log}"
    );
    assert!(
        log.contains("postgresql: server answering"),
        "post-script output: {log}"
    );
    let group = app_consistent_group(&w);

    // The restore drill, the live server still running beside it. The
    // example finds pg_wal's copy through the group's mount points.
    let _unmount = Unmounter(w.lab.run_dir());
    let (drill_rows, drill_max) = drill(
        &w,
        "postgresql",
        &[("LIVE_DATADIR", w.ext.join("pgdata").display().to_string())],
        "SELECT count(*), coalesce(max(seq), 0) FROM t;\n",
        "pg_amcheck --all --heapallindexed: no corruption",
    );
    let live: usize = db.sql("SELECT count(*) FROM t").trim().parse().unwrap();
    assert_eq!(
        live,
        acks.len(),
        "the live server lost or gained rows during the drill"
    );
    db.stop();

    let (ext, xfs) = mount_copies(&w, &group);
    // pg_wal is a symlink to the WAL disk's old mount point: point it at the
    // restored WAL disk, as a restore onto other mount points must.
    let data = ext.join("pgdata");
    let link = data.join("pg_wal");
    assert!(std::fs::symlink_metadata(&link).unwrap().is_symlink());
    std::fs::remove_file(&link).unwrap();
    std::os::unix::fs::symlink(xfs.join("pgwal"), &link).unwrap();
    let mut restored = Postgres::configure(&work, "restored", &data);
    restored.start();
    let server_log = restored.log_text();
    assert!(
        server_log.contains("automatic recovery in progress"),
        "the copy of a running server must go through crash recovery:\n{server_log}"
    );
    let (clean, report) = restored.amcheck_all();
    assert!(
        clean,
        "pg_amcheck --all on the restored copy:\n{report}\n{server_log}"
    );
    let rows = parse_seqs(&restored.sql("SELECT seq FROM t ORDER BY seq"));
    restored.stop();

    let before_pre = seqs_before(&acks, tl.pre_returned);
    let before_freeze = seqs_before(&acks, tl.first_freeze);
    let by_thaw = seqs_before(&acks, tl.last_thaw);
    let in_freeze = acked_between(&acks, tl.first_freeze, tl.last_thaw);
    let have: BTreeSet<u64> = rows.iter().copied().collect();
    let max_by_thaw = by_thaw.last().copied().unwrap_or(0);
    eprintln!(
        "PostgreSQL: acknowledged before the pre-script returned: {} rows; before the first FIFREEZE: {} rows; \
         restored copy: {} rows (max seq {}); acknowledged inside the freeze window: {:?}; by the last FITHAW: {} rows; \
         acknowledged in the whole workload: {} [{}]; recovery: {}; \
         appsnap verify (example verify script): {drill_rows} rows (max seq {drill_max})",
        before_pre.len(),
        before_freeze.len(),
        rows.len(),
        rows.last().copied().unwrap_or(0),
        in_freeze,
        by_thaw.len(),
        acks.len(),
        windows(&tl),
        server_log
            .lines()
            .filter(|l| l.contains("redo done") || l.contains("redo starts"))
            .map(|l| l.split("LOG:").last().unwrap_or(l).trim())
            .collect::<Vec<_>>()
            .join("; "),
    );
    assert!(
        before_pre.len() >= WARMUP_ACKS,
        "the workload ran before the run"
    );
    let lost = missing(&before_freeze, &have);
    assert!(
        lost.is_empty(),
        "rows acknowledged before the freeze but not restored: {lost:?}"
    );
    assert!(
        rows.last().copied().unwrap_or(0) <= max_by_thaw + 1,
        "the restored copy has rows acknowledged after the thaw: max {:?}, {max_by_thaw} acknowledged by the thaw",
        rows.last()
    );
    // Rows are committed in order, so the restored set is a prefix 1..=n.
    assert_eq!(
        rows,
        (1..=rows.len() as u64).collect::<Vec<_>>(),
        "the restored rows are not a gap-free prefix of the commits"
    );
    // The drill restored the same group: its server counted the same rows,
    // every one acknowledged before the freeze (so before the pre-script
    // returned too) among them.
    assert_eq!(
        (drill_rows, drill_max),
        (rows.len() as u64, rows.last().copied().unwrap_or(0)),
        "the drill's copy and the hand-restored copy differ"
    );
    assert!(
        drill_rows as usize >= before_freeze.len() && before_freeze.len() >= before_pre.len(),
        "the drill's copy: {drill_rows} rows, {} acknowledged before the freeze",
        before_freeze.len()
    );
}
