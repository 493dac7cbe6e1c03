//! The guard's protocol and the parent API, without root: an empty plan
//! exercises spawn → armed → freeze → frozen → thaw → report and the record's
//! life cycle; a plain directory exercises the identity refusal.

use std::path::PathBuf;
use std::time::Duration;

use appsnap::host::{record, FreezeError, FreezeGuard, Target, ThawCause};

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_appsnap"))
}

#[test]
fn empty_plan_walks_the_whole_protocol_and_cleans_its_record() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let deadline = Duration::from_secs(30);
    let mut g = FreezeGuard::spawn_exe(&bin(), vec![], deadline, &run).unwrap();
    let rec = record::read(&run)
        .unwrap()
        .expect("record written before any freeze");
    assert_eq!(
        rec.deadline_ms, 30_000,
        "the guard keeps the deadline asked"
    );
    assert_eq!(Some(rec.guard_pid), g.pid(), "the record names this guard");
    assert!(rec.targets.is_empty(), "{rec:?}");
    let frozen = g.freeze().unwrap();
    // The deadline runs from before the first FIFREEZE, not from when the
    // parent heard "frozen": the parent must never count on more time than
    // the guard gives it.
    assert!(
        frozen.thaw_by <= frozen.at + deadline,
        "thaw_by {:?} after at + deadline {:?}",
        frozen.thaw_by,
        frozen.at + deadline
    );
    let report = g.thaw().unwrap();
    assert_eq!(report.cause, ThawCause::Requested);
    assert!(report.filesystems.is_empty());
    let start = std::time::Instant::now();
    while record::read(&run).unwrap().is_some() && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(record::read(&run).unwrap().is_none());
}

#[test]
fn dropping_an_unfrozen_guard_removes_its_record() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let g = FreezeGuard::spawn_exe(&bin(), vec![], Duration::from_secs(30), &run).unwrap();
    drop(g);
    let start = std::time::Instant::now();
    while record::read(&run).unwrap().is_some() && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(record::read(&run).unwrap().is_none());
}

#[test]
fn a_directory_that_is_not_the_planned_mount_is_refused_before_anything() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let t = Target {
        mount_point: dir.path().to_path_buf(),
        mount_id: u64::MAX,
        dev_major: 0,
        dev_minor: 0,
        fs_type: "ext4".into(),
        st_dev: None,
    };
    let err = FreezeGuard::spawn_exe(&bin(), vec![t], Duration::from_secs(30), &run).unwrap_err();
    match &err {
        FreezeError::Prepare { stage, message } => {
            assert_eq!(stage, "identity");
            assert!(message.contains("expected mount"), "{message}");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(
        record::read(&run).unwrap().is_none(),
        "no record when nothing can be frozen"
    );
}

#[test]
fn the_guard_is_hidden_and_rejects_garbage() {
    let help = std::process::Command::new(bin())
        .arg("--help")
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&help.stdout).contains("freeze-guard"));
    let mut child = std::process::Command::new(bin())
        .arg("freeze-guard")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"not json\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let line = String::from_utf8_lossy(&out.stdout);
    assert!(
        line.contains("\"event\":\"error\"") && line.contains("bad request"),
        "{line}"
    );
}

#[test]
fn an_existing_record_is_never_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let first = FreezeGuard::spawn_exe(&bin(), vec![], Duration::from_secs(30), &run).unwrap();
    let before = record::read(&run).unwrap().unwrap();
    let err = FreezeGuard::spawn_exe(&bin(), vec![], Duration::from_secs(30), &run).unwrap_err();
    match &err {
        FreezeError::Prepare { stage, message } => {
            assert_eq!(stage, "record");
            assert!(message.contains("thaw --all"), "{message}");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(record::read(&run).unwrap().unwrap(), before);
    drop(first);
}
