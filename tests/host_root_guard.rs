//! Root lane: the freeze guard on real loop devices (ext4, xfs, btrfs).
//! Every test creates its own devices under /tmp/appsnap-host-*, thaws,
//! unmounts and detaches them in that order even on failure (the `Lab` drop),
//! and runs under a watchdog. Skips with a printed reason when not root.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use appsnap::host::{
    build_plan, record, DiskRequest, FreezeError, FreezeGuard, HostPaths, HostView, Plan,
    PlanError, ThawCause,
};
use appsnap::policy::DiskId;
use common::{
    appsnap_bin, finishes_within, fsfreeze, still_blocked_after, writer, Lab, ThawOnDrop,
};
use nix::errno::Errno;

const LONG: Duration = Duration::from_secs(30);

fn plan_for(lab: &Lab, ids: &[&str]) -> Result<Plan, PlanError> {
    let view = HostView::read(&HostPaths {
        mountinfo: PathBuf::from("/proc/self/mountinfo"),
        sys_root: PathBuf::from("/sys"),
        by_id_dir: lab.by_id_dir(),
        proc_root: PathBuf::from("/proc"),
    })
    .unwrap();
    let disks: Vec<DiskRequest> = ids
        .iter()
        .map(|s| DiskRequest::offline(DiskId::parse(s).unwrap()))
        .collect();
    build_plan(&view, &disks, &lab.run_dir())
}

fn mount_points(p: &Plan) -> Vec<PathBuf> {
    p.entries.iter().map(|e| e.mount_point.clone()).collect()
}

fn spawn(lab: &Lab, plan: &Plan, deadline: Duration) -> FreezeGuard {
    FreezeGuard::spawn_exe(&appsnap_bin(), plan.targets(), deadline, &lab.run_dir()).unwrap()
}

#[test]
fn writers_blocked_while_frozen_and_released_by_thaw_on_ext4_xfs_btrfs() {
    root_or_skip!();
    let lab = Lab::new("fs3", Duration::from_secs(90));
    let mut mps = Vec::new();
    for fs in ["ext4", "xfs", "btrfs"] {
        let dev = lab.loop_dev(fs, 512);
        lab.mkfs(&dev, fs);
        mps.push(lab.mount(&dev, fs));
        lab.link(&format!("host{fs}"), &dev);
    }
    let plan = plan_for(&lab, &["d-hostext4", "d-hostxfs", "d-hostbtrfs"]).unwrap();
    assert_eq!(plan.entries.len(), 3, "{}", plan.render());
    let types: Vec<&str> = plan.entries.iter().map(|e| e.fs_type.as_str()).collect();
    assert!(types.contains(&"ext4") && types.contains(&"xfs") && types.contains(&"btrfs"));

    let mut g = spawn(&lab, &plan, LONG);
    // The record exists before the first FIFREEZE.
    let rec = record::read(&lab.run_dir())
        .unwrap()
        .expect("record written when armed");
    assert_eq!(rec.targets.len(), 3);
    g.freeze().unwrap();
    let mut writers: Vec<_> = mps.iter().map(|m| writer(m, "blocked.txt")).collect();
    for (w, m) in writers.iter_mut().zip(&mps) {
        assert!(
            still_blocked_after(w, Duration::from_millis(700)),
            "writer on {} was not blocked",
            m.display()
        );
    }
    let report = g.thaw().unwrap();
    assert_eq!(report.cause, ThawCause::Requested);
    assert_eq!(report.filesystems.len(), 3);
    // Thaw runs in reverse plan order and each fs reports a suspension time.
    let thawed: Vec<PathBuf> = report
        .filesystems
        .iter()
        .map(|f| f.mount_point.clone())
        .collect();
    let mut rev = mount_points(&plan);
    rev.reverse();
    assert_eq!(thawed, rev);
    for f in &report.filesystems {
        assert_eq!(f.errno, None);
        assert!(
            f.suspended_us >= 500_000,
            "{f:?}: writers were blocked ≥0.7 s"
        );
    }
    for (w, m) in writers.iter_mut().zip(&mps) {
        assert!(
            finishes_within(w, Duration::from_secs(20)),
            "writer on {} not released",
            m.display()
        );
        assert_eq!(
            std::fs::read_to_string(m.join("blocked.txt")).unwrap(),
            "hello\n"
        );
    }
    assert!(
        record::read(&lab.run_dir()).unwrap().is_none(),
        "record removed after thaw"
    );
}

#[test]
fn nested_children_first_bind_dedup_and_partitions_through_partx() {
    root_or_skip!();
    let lab = Lab::new("nest", Duration::from_secs(90));
    let disk = lab.loop_dev("part", 1024);
    let parts = lab.partition(&disk, &[300, 0]);
    lab.mkfs(&parts[0], "ext4");
    lab.mkfs(&parts[1], "xfs");
    let outer = lab.mount(&parts[0], "outer");
    let inner = lab.mount(&parts[1], "outer/inner");
    std::fs::create_dir_all(outer.join("sub")).unwrap();
    let bind = lab.bind(&outer, "bind-of-outer");
    lab.link("hostpart", &disk);

    let plan = plan_for(&lab, &["d-hostpart"]).unwrap();
    assert_eq!(
        mount_points(&plan),
        vec![inner.clone(), outer.clone()],
        "{}",
        plan.render()
    );
    assert_eq!(plan.entries[1].also_mounted_at, vec![bind.clone()]);
    let p1 = Path::new(&parts[0])
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let d = Path::new(&disk)
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert_eq!(plan.entries[1].devices, vec![p1, d.clone()]);
    assert_eq!(plan.entries[0].disks, vec!["d-hostpart".to_string()]);

    let mut g = spawn(&lab, &plan, LONG);
    g.freeze().unwrap();
    let mut w_in = writer(&inner, "x");
    let mut w_bind = writer(&bind, "y");
    assert!(still_blocked_after(&mut w_in, Duration::from_millis(700)));
    assert!(
        still_blocked_after(&mut w_bind, Duration::from_millis(10)),
        "bind mount shares the frozen sb"
    );
    let report = g.thaw().unwrap();
    let thawed: Vec<PathBuf> = report
        .filesystems
        .iter()
        .map(|f| f.mount_point.clone())
        .collect();
    assert_eq!(
        thawed,
        vec![outer.clone(), inner.clone()],
        "parents thawed first, children last"
    );
    // Parallel freezing keeps nesting order: the inner file system's FIFREEZE
    // had returned before the outer one's began.
    let (o, i) = (&report.filesystems[0], &report.filesystems[1]);
    assert!(
        i.freeze_began_us + i.freeze_took_us <= o.freeze_began_us,
        "inner {i:?} must be frozen before outer {o:?} starts"
    );
    assert!(report.window_us >= o.suspended_us.max(i.suspended_us));
    assert!(finishes_within(&mut w_in, Duration::from_secs(20)));
    assert!(finishes_within(&mut w_bind, Duration::from_secs(20)));
}

#[test]
fn deadline_thaws_when_nobody_says_thaw() {
    root_or_skip!();
    let lab = Lab::new("deadline", Duration::from_secs(60));
    let dev = lab.loop_dev("d", 256);
    lab.mkfs(&dev, "ext4");
    let mp = lab.mount(&dev, "d");
    lab.link("hostdl", &dev);
    let plan = plan_for(&lab, &["d-hostdl"]).unwrap();
    let deadline = Duration::from_secs(3);
    let mut g = spawn(&lab, &plan, deadline);
    let frozen = g.freeze().unwrap();
    let mut w = writer(&mp, "late.txt");
    // Still frozen shortly before the deadline (not thawed early)…
    let before = frozen
        .thaw_by
        .checked_sub(Duration::from_millis(800))
        .unwrap();
    while Instant::now() < before {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        w.try_wait().unwrap().is_none(),
        "thawed before the deadline"
    );
    // …and thawed by itself soon after it (generous bound: noisy machine).
    assert!(
        finishes_within(&mut w, Duration::from_secs(7)),
        "not thawed by the deadline"
    );
    let released = Instant::now();
    assert!(released < frozen.thaw_by + Duration::from_secs(6));
    eprintln!(
        "deadline: writer released {:?} after the guard's deadline",
        released.saturating_duration_since(frozen.thaw_by)
    );
    let report = g.thaw().unwrap();
    assert_eq!(report.cause, ThawCause::Deadline);
    assert!(record::read(&lab.run_dir()).unwrap().is_none());
}

#[test]
fn guard_refuses_a_mount_that_vanished_and_freezes_nothing() {
    root_or_skip!();
    let lab = Lab::new("vanish", Duration::from_secs(60));
    let dev = lab.loop_dev("v", 256);
    lab.mkfs(&dev, "ext4");
    let mp = lab.mount(&dev, "v");
    lab.link("hostvan", &dev);
    let plan = plan_for(&lab, &["d-hostvan"]).unwrap();
    lab.umount(&mp);
    // The directory now belongs to the lab's parent file system: must not be frozen.
    let err =
        FreezeGuard::spawn_exe(&appsnap_bin(), plan.targets(), LONG, &lab.run_dir()).unwrap_err();
    match &err {
        FreezeError::Prepare { stage, message } => {
            assert_eq!(stage, "identity");
            assert!(message.contains(&mp.display().to_string()), "{message}");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(record::read(&lab.run_dir()).unwrap().is_none());
    // The parent file system is writable: nothing was frozen.
    let mut w = writer(&mp, "ok.txt");
    assert!(finishes_within(&mut w, Duration::from_secs(20)));
}

#[test]
fn preexisting_fsfreeze_gives_ebusy_named_and_is_left_to_its_owner() {
    root_or_skip!();
    let lab = Lab::new("ebusy", Duration::from_secs(90));
    // Mounted first = frozen last (same depth: later mounts first).
    let dev_b = lab.loop_dev("b", 256);
    let dev_a = lab.loop_dev("a", 256);
    lab.mkfs(&dev_b, "ext4");
    lab.mkfs(&dev_a, "ext4");
    let mp_b = lab.mount(&dev_b, "b");
    let mp_a = lab.mount(&dev_a, "a");
    lab.link("hostbusyb", &dev_b);
    lab.link("hostbusya", &dev_a);
    let plan = plan_for(&lab, &["d-hostbusya", "d-hostbusyb"]).unwrap();
    assert_eq!(mount_points(&plan), vec![mp_a.clone(), mp_b.clone()]);
    assert!(fsfreeze("-f", &mp_b), "fsfreeze -f");
    let mut g = spawn(&lab, &plan, LONG);
    let err = g.freeze().unwrap_err();
    match &err {
        FreezeError::Freeze {
            mount_point,
            errno,
            thawed,
        } => {
            assert_eq!(mount_point, &mp_b);
            assert_eq!(*errno, Errno::EBUSY);
            // Both freeze in parallel: `a` was either frozen and thawed again,
            // or never started because `b` had already failed.
            assert!(
                thawed
                    .iter()
                    .all(|t| t.mount_point == mp_a && t.errno.is_none()),
                "the guard thawed only what it had frozen: {thawed:?}"
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(err.to_string().contains("EBUSY") && err.to_string().contains(mp_b.to_str().unwrap()));
    drop(g);
    // Nothing of ours is frozen…
    let mut wa = writer(&mp_a, "a.txt");
    assert!(finishes_within(&mut wa, Duration::from_secs(20)));
    // …and the other tool's freeze is still in place until its owner thaws it.
    let mut wb = writer(&mp_b, "b.txt");
    assert!(
        still_blocked_after(&mut wb, Duration::from_millis(700)),
        "guard thawed someone else's freeze"
    );
    assert!(
        fsfreeze("-u", &mp_b),
        "fsfreeze -u: still frozen by its owner"
    );
    assert!(finishes_within(&mut wb, Duration::from_secs(20)));
    // The record is gone once the guard has exited.
    let start = Instant::now();
    while record::read(&lab.run_dir()).unwrap().is_some()
        && start.elapsed() < Duration::from_secs(10)
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(record::read(&lab.run_dir()).unwrap().is_none());
}

fn pid_alive(pid: u32) -> bool {
    // A zombie still has /proc/<pid>; check its state.
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

/// SIGKILLs the guard (its deadline thread dies with it) and waits until it is gone.
fn sigkill_guard(g: &FreezeGuard) {
    let pid = g.pid().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let start = Instant::now();
    while pid_alive(pid) && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn guard_sigkilled_while_frozen_then_thaw_all_recovers_from_the_record() {
    root_or_skip!();
    let lab = Lab::new("gkill", Duration::from_secs(90));
    let dev = lab.loop_dev("k", 512);
    lab.mkfs(&dev, "xfs");
    let mp = lab.mount(&dev, "k");
    lab.link("hostgk", &dev);
    let plan = plan_for(&lab, &["d-hostgk"]).unwrap();
    let mut g = spawn(&lab, &plan, LONG);
    g.freeze().unwrap();
    sigkill_guard(&g);
    let mut w = writer(&mp, "w.txt");
    assert!(
        still_blocked_after(&mut w, Duration::from_millis(700)),
        "a SIGKILLed guard leaves the fs frozen"
    );
    assert!(
        record::read(&lab.run_dir()).unwrap().is_some(),
        "record survives the guard"
    );
    let out = Command::new(appsnap_bin())
        .args(["thaw", "--all", "--run-dir"])
        .arg(lab.run_dir())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "thaw --all failed: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("thawed {}", mp.display())),
        "{stdout}"
    );
    assert!(stdout.contains("record removed"), "{stdout}");
    assert!(finishes_within(&mut w, Duration::from_secs(20)));
    assert!(record::read(&lab.run_dir()).unwrap().is_none());
    // Repeating it is harmless.
    let again = Command::new(appsnap_bin())
        .args(["thaw", "--all", "--run-dir"])
        .arg(lab.run_dir())
        .output()
        .unwrap();
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stdout).contains("nothing to thaw"));
    drop(g);
}

/// Not a test on its own: the "daemon" that the SIGKILL test starts as a
/// separate process (this test binary re-executed), so it can be SIGKILLed
/// while it holds a frozen guard. Ignored in normal runs; the SIGKILL test
/// runs it with `--ignored --exact`.
#[test]
#[ignore = "helper process for parent_sigkilled_while_frozen_guard_thaws_on_stdin_eof"]
fn helper_parent_process() {
    let spec = std::env::var("APPSNAP_TEST_PARENT_SPEC").expect("started by the SIGKILL test");
    let v: serde_json::Value = serde_json::from_str(&spec).unwrap();
    let targets = serde_json::from_value(v["targets"].clone()).unwrap();
    let run_dir = PathBuf::from(v["run_dir"].as_str().unwrap());
    let mut g = FreezeGuard::spawn_exe(&appsnap_bin(), targets, LONG, &run_dir).unwrap();
    g.freeze().unwrap();
    println!("FROZEN {}", g.pid().unwrap());
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
fn parent_sigkilled_while_frozen_guard_thaws_on_stdin_eof() {
    root_or_skip!();
    let lab = Lab::new("pkill", Duration::from_secs(90));
    let dev = lab.loop_dev("p", 512);
    lab.mkfs(&dev, "btrfs");
    let mp = lab.mount(&dev, "p");
    lab.link("hostpk", &dev);
    let plan = plan_for(&lab, &["d-hostpk"]).unwrap();
    let spec = serde_json::json!({"targets": plan.targets(), "run_dir": lab.run_dir()});
    let mut parent = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "helper_parent_process",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("APPSNAP_TEST_PARENT_SPEC", spec.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(parent.stdout.take().unwrap());
    let mut guard_pid = None;
    let mut line = String::new();
    while std::io::BufRead::read_line(&mut out, &mut line).unwrap() > 0 {
        // libtest prints "test helper_parent_process ... " on the same line.
        if let Some((_, rest)) = line.trim().split_once("FROZEN ") {
            guard_pid = rest.trim().parse::<u32>().ok();
            break;
        }
        line.clear();
    }
    let guard_pid = guard_pid.expect("helper froze");
    let mut w = writer(&mp, "w.txt");
    assert!(still_blocked_after(&mut w, Duration::from_millis(700)));
    parent.kill().unwrap(); // SIGKILL
    let killed = Instant::now();
    parent.wait().unwrap();
    assert!(
        finishes_within(&mut w, Duration::from_secs(10)),
        "guard did not thaw after its parent died"
    );
    eprintln!("released {:?} after the parent's SIGKILL", killed.elapsed());
    let start = Instant::now();
    while pid_alive(guard_pid) && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!pid_alive(guard_pid), "guard exited");
    assert!(
        record::read(&lab.run_dir()).unwrap().is_none(),
        "guard removed its record"
    );
}

#[test]
fn a_hanging_fifreeze_does_not_stop_the_deadline_thawing_the_others() {
    root_or_skip!();
    let lab = Lab::new("hang", Duration::from_secs(120));
    // "inner" is an ext4 on a loop device whose image lives on "outer": while
    // outer is frozen, FIFREEZE of inner hangs in D (it must write its superblock).
    let outer_dev = lab.loop_dev("outer", 512);
    lab.mkfs(&outer_dev, "ext4");
    let outer = lab.mount(&outer_dev, "outer");
    let inner_dev = lab.loop_file(&outer.join("inner.img"), 256);
    lab.mkfs(&inner_dev, "ext4");
    let inner = lab.mount(&inner_dev, "inner");
    let a_dev = lab.loop_dev("a", 256);
    lab.mkfs(&a_dev, "ext4");
    let a = lab.mount(&a_dev, "a");
    assert!(Command::new("sync").status().unwrap().success());
    lab.link("hosthanga", &a_dev);
    lab.link("hosthangi", &inner_dev);
    let plan = plan_for(&lab, &["d-hosthanga", "d-hosthangi"]).unwrap();
    assert_eq!(mount_points(&plan), vec![a.clone(), inner.clone()]);
    let _outer_thaw = ThawOnDrop(outer.clone()); // runs before the lab's cleanup

    let deadline = Duration::from_secs(3);
    let g = spawn(&lab, &plan, deadline);
    let guard_pid = g.pid().unwrap();
    assert!(fsfreeze("-f", &outer));
    let started = Instant::now();
    let freezer = std::thread::spawn(move || {
        let mut g = g;
        let r = g.freeze();
        (g, r)
    });
    std::thread::sleep(Duration::from_millis(1000));
    let mut wa = writer(&a, "a.txt");
    assert!(
        still_blocked_after(&mut wa, Duration::from_millis(500)),
        "a was frozen before the hang"
    );
    // The deadline thaws `a` although the FIFREEZE of `inner` never returned.
    assert!(
        finishes_within(&mut wa, Duration::from_secs(10)),
        "deadline did not thaw a"
    );
    eprintln!(
        "hang: a released {:?} after freeze started (deadline {deadline:?})",
        started.elapsed()
    );
    let (g, r) = freezer.join().unwrap();
    assert!(matches!(r, Err(FreezeError::Hung(_))), "{r:?}");
    assert!(
        record::read(&lab.run_dir()).unwrap().is_some(),
        "record kept while a FIFREEZE hangs"
    );
    // Once the lower fs thaws, the hung FIFREEZE returns and the guard thaws inner itself.
    assert!(fsfreeze("-u", &outer));
    let mut wi = writer(&inner, "i.txt");
    assert!(
        finishes_within(&mut wi, Duration::from_secs(15)),
        "inner left frozen"
    );
    let start = Instant::now();
    while pid_alive(guard_pid) && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!pid_alive(guard_pid), "guard exited");
    assert!(
        record::read(&lab.run_dir()).unwrap().is_none(),
        "record removed"
    );
    drop(g);
}

#[test]
fn thaw_all_from_another_mount_namespace_recognises_the_superblock() {
    root_or_skip!();
    let lab = Lab::new("gns", Duration::from_secs(90));
    let dev = lab.loop_dev("n", 512);
    lab.mkfs(&dev, "ext4");
    let mp = lab.mount(&dev, "n");
    lab.link("hostgns", &dev);
    let plan = plan_for(&lab, &["d-hostgns"]).unwrap();
    let mut g = spawn(&lab, &plan, LONG);
    g.freeze().unwrap();
    let rec = record::read(&lab.run_dir()).unwrap().expect("record");
    let (maj, min) = rec.targets[0].st_dev.expect("the guard records st_dev");
    sigkill_guard(&g);
    let mut w = writer(&mp, "w.txt");
    assert!(still_blocked_after(&mut w, Duration::from_millis(500)));
    // A new mount namespace (as a unit's ExecStopPost with ProtectSystem= gets):
    // every mount id differs there, the superblock does not.
    let out = Command::new("unshare")
        .args(["-m", "--propagation", "unchanged"])
        .arg(appsnap_bin())
        .args(["thaw", "--all", "--run-dir"])
        .arg(lab.run_dir())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "thaw --all in another namespace: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("thawed {}", mp.display())),
        "{stdout}"
    );
    assert!(finishes_within(&mut w, Duration::from_secs(20)));
    assert_eq!(
        std::fs::metadata(&mp)
            .map(|m| {
                use std::os::linux::fs::MetadataExt;
                let d = m.st_dev();
                (
                    nix::sys::stat::major(d) as u32,
                    nix::sys::stat::minor(d) as u32,
                )
            })
            .unwrap(),
        (maj, min)
    );
    drop(g);
}

/// Issue 14 item 3: a file system the guard froze is thawed from outside
/// (`fsfreeze -u`). The guard's `check` names it (and holds it frozen again
/// until the thaw), and the thaw report marks it lost; without a check,
/// FITHAW's EINVAL marks it lost. A file system left alone is not reported.
#[test]
fn a_freeze_thawed_from_outside_is_reported_lost() {
    root_or_skip!();
    let lab = Lab::new("lost", Duration::from_secs(90));
    let dev_a = lab.loop_dev("a", 256);
    let dev_b = lab.loop_dev("b", 320);
    lab.mkfs(&dev_a, "ext4");
    lab.mkfs(&dev_b, "xfs");
    let mp_a = lab.mount(&dev_a, "a");
    let mp_b = lab.mount(&dev_b, "b");
    lab.link("hostlosta", &dev_a);
    lab.link("hostlostb", &dev_b);
    let plan = plan_for(&lab, &["d-hostlosta", "d-hostlostb"]).unwrap();
    let _safety = (ThawOnDrop(mp_a.clone()), ThawOnDrop(mp_b.clone()));

    // 1. check: sees the outside thaw, freezes it again until our thaw.
    let mut g = spawn(&lab, &plan, LONG);
    g.freeze().unwrap();
    let asked = Instant::now();
    assert!(g.check().unwrap().is_empty(), "nothing thawed yet");
    // Printed, not asserted: what the check adds to the window when nothing was lost.
    eprintln!("check of 2 file systems answered in {:?}", asked.elapsed());
    assert!(fsfreeze("-u", &mp_a), "fsfreeze -u from outside");
    assert_eq!(g.check().unwrap(), vec![mp_a.clone()]);
    let mut w = writer(&mp_a, "after-check.txt");
    assert!(
        still_blocked_after(&mut w, Duration::from_millis(700)),
        "the check holds the file system frozen again until the thaw"
    );
    let report = g.thaw().unwrap();
    assert_eq!(report.lost(), vec![mp_a.as_path()], "{report:?}");
    assert!(finishes_within(&mut w, Duration::from_secs(20)));

    // 2. no check: FITHAW's EINVAL at the thaw is a lost freeze too.
    let mut g = spawn(&lab, &plan, LONG);
    g.freeze().unwrap();
    assert!(fsfreeze("-u", &mp_b), "fsfreeze -u from outside");
    let report = g.thaw().unwrap();
    assert_eq!(report.lost(), vec![mp_b.as_path()], "{report:?}");
    assert_writable_now(&mp_a);
    assert_writable_now(&mp_b);
}

fn assert_writable_now(mp: &Path) {
    let mut w = writer(mp, "writable.txt");
    assert!(
        finishes_within(&mut w, Duration::from_secs(20)),
        "{}",
        mp.display()
    );
}

fn thaw_all(run_dir: &Path, extra: &[&str]) -> (Option<i32>, String) {
    thaw_all_env(run_dir, extra, &[])
}

fn thaw_all_env(run_dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let out = Command::new(appsnap_bin())
        .args(["thaw", "--all", "--run-dir"])
        .arg(run_dir)
        .args(extra)
        .env_remove("SERVICE_RESULT")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Issue 14 item 3: `thaw --all` while a live guard holds the freeze (an
/// `appsnap run` in progress) refuses, naming the guard's pid, and leaves the
/// freeze and the record alone; `--force` thaws, and the guard then reports
/// the freeze lost.
#[test]
fn thaw_all_leaves_a_live_guards_freeze_alone_unless_forced() {
    root_or_skip!();
    let lab = Lab::new("live", Duration::from_secs(90));
    let dev = lab.loop_dev("l", 256);
    lab.mkfs(&dev, "ext4");
    let mp = lab.mount(&dev, "l");
    lab.link("hostlive", &dev);
    let plan = plan_for(&lab, &["d-hostlive"]).unwrap();
    let _safety = ThawOnDrop(mp.clone());
    let mut g = spawn(&lab, &plan, LONG);
    g.freeze().unwrap();
    let pid = g.pid().unwrap();

    let (code, out) = thaw_all(&lab.run_dir(), &[]);
    assert_ne!(code, Some(0), "{out}");
    assert!(out.contains(&format!("pid {pid}")), "{out}");
    assert!(record::read(&lab.run_dir()).unwrap().is_some(), "{out}");
    let mut w = writer(&mp, "held.txt");
    assert!(
        still_blocked_after(&mut w, Duration::from_millis(700)),
        "thaw --all thawed a live guard's freeze: {out}"
    );

    let (code, out) = thaw_all(&lab.run_dir(), &["--force"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains(&format!("thawed {}", mp.display())), "{out}");
    assert!(finishes_within(&mut w, Duration::from_secs(20)));
    let report = g.thaw().unwrap();
    assert_eq!(report.lost(), vec![mp.as_path()]);

    // As the unit's ExecStopPost (SERVICE_RESULT set) with the guard in the
    // same cgroup: systemd kills the guard right after, so its freeze is thawed.
    let mut g = spawn(&lab, &plan, LONG);
    g.freeze().unwrap();
    let (code, out) = thaw_all_env(&lab.run_dir(), &[], &[("SERVICE_RESULT", "success")]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains(&format!("thawed {}", mp.display())), "{out}");
    let report = g.thaw().unwrap();
    assert_eq!(report.lost(), vec![mp.as_path()]);
}
