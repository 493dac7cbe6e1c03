//! The real binary refuses files a local user could have written or planted
//! (issue 14 items 2, 6, 8): policy files and drop-ins not owned by root or
//! writable by others, symlinks through such directories, FIFOs and devices
//! where a file is expected, and files larger than their limit.

#[path = "common/skip.rs"]
mod skip;

use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const POLICY: &str = "[[job]]\nname = \"mysql\"\nschedule = \"30 2 * * *\"\ndisks = \"all\"\n";

/// Runs the binary; a run that has not ended after a minute is killed and
/// reported as hung (a guard against hanging the suite, not a timing check).
fn appsnap(args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_appsnap"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run appsnap");
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(60) {
            child.kill().unwrap();
            let out = child.wait_with_output().unwrap();
            panic!(
                "appsnap {args:?} hung (killed): {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

fn check(main: &Path, dropins: &Path) -> (Option<i32>, String) {
    let out = appsnap(&[
        "-c",
        main.to_str().unwrap(),
        "--config-dir",
        dropins.to_str().unwrap(),
        "check",
        "--offline",
    ]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A main file and an empty drop-in dir in a fresh private temp dir.
fn setup() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let main = d.path().join("appsnap.toml");
    std::fs::write(&main, POLICY).unwrap();
    chmod(&main, 0o644);
    let dropins = d.path().join("appsnap.d");
    std::fs::create_dir(&dropins).unwrap();
    chmod(&dropins, 0o755);
    (d, main, dropins)
}

#[test]
fn a_private_policy_is_accepted() {
    let (_d, main, dropins) = setup();
    let (code, text) = check(&main, &dropins);
    assert_eq!(code, Some(0), "{text}");
}

#[test]
fn a_group_writable_main_file_is_refused_naming_it() {
    let (_d, main, dropins) = setup();
    chmod(&main, 0o664);
    let (code, text) = check(&main, &dropins);
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains(&format!("{}: has mode 0664", main.display()))
            && text.contains("writable by group or others"),
        "{text}"
    );
}

#[test]
fn a_world_writable_dropin_dir_or_dropin_is_refused() {
    let (_d, main, dropins) = setup();
    let dropin = dropins.join("10-web.toml");
    std::fs::write(
        &dropin,
        "[[job]]\nname = \"web\"\nschedule = \"* * * * *\"\ndisks = \"all\"\n",
    )
    .unwrap();
    chmod(&dropin, 0o646);
    let (code, text) = check(&main, &dropins);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("10-web.toml: has mode 0646"), "{text}");
    chmod(&dropin, 0o644);
    // Sticky or not, a drop-in dir others can write lets them add jobs.
    chmod(&dropins, 0o1777);
    let (code, text) = check(&main, &dropins);
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains(&format!("{}: has mode 1777", dropins.display())),
        "{text}"
    );
}

#[test]
fn files_of_another_user_are_refused_when_running_as_root() {
    if !is_root() {
        skip::missing("not root: needs root to chown");
        return;
    }
    let (_d, main, dropins) = setup();
    let dropin = dropins.join("20-x.toml");
    std::fs::write(&dropin, "").unwrap();
    std::os::unix::fs::chown(&dropin, Some(65534), None).unwrap();
    let (code, text) = check(&main, &dropins);
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains("20-x.toml: is owned by uid 65534") && text.contains("owned by root"),
        "{text}"
    );
    std::fs::remove_file(&dropin).unwrap();
    // A directory on the way owned by someone else: they could swap the file.
    let theirs = _d.path().join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    let main2 = theirs.join("appsnap.toml");
    std::fs::write(&main2, POLICY).unwrap();
    std::os::unix::fs::chown(&theirs, Some(65534), None).unwrap();
    let (code, text) = check(&main2, &dropins);
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains(&format!(
            "directory {} on the way is owned by uid 65534",
            theirs.display()
        )),
        "{text}"
    );
}

#[test]
fn a_symlinked_policy_counts_only_if_every_directory_to_its_target_is_trusted() {
    let (d, _main, dropins) = setup();
    let elsewhere = d.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    let real = elsewhere.join("real.toml");
    std::fs::write(&real, POLICY).unwrap();
    let link = d.path().join("link.toml");
    symlink(&real, &link).unwrap();
    let (code, text) = check(&link, &dropins);
    assert_eq!(code, Some(0), "{text}");
    chmod(&elsewhere, 0o777);
    let (code, text) = check(&link, &dropins);
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains(&format!(
            "directory {} on the way has mode 0777",
            elsewhere.display()
        )),
        "{text}"
    );
    // The same for a drop-in linked there.
    chmod(&elsewhere, 0o755);
    let (_d2, main, dropins) = setup();
    symlink(&real, dropins.join("30-linked.toml")).unwrap();
    chmod(&elsewhere, 0o777);
    let (code, text) = check(&main, &dropins);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("30-linked.toml: directory"), "{text}");
}

#[test]
fn a_fifo_policy_or_dropin_is_refused_not_waited_on() {
    let (d, main, dropins) = setup();
    let fifo = d.path().join("fifo.toml");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let (code, text) = check(&fifo, &dropins);
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains("fifo.toml: is not a regular file (it is a FIFO)"),
        "{text}"
    );
    nix::unistd::mkfifo(
        &dropins.join("40-fifo.toml"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    let (code, text) = check(&main, &dropins);
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains("40-fifo.toml: is not a regular file"),
        "{text}"
    );
}

#[test]
fn a_device_or_an_oversized_policy_is_refused() {
    let (d, _main, dropins) = setup();
    let (code, text) = check(Path::new("/dev/zero"), &dropins);
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains("/dev/zero: is not a regular file (it is a character device)"),
        "{text}"
    );
    let big = d.path().join("big.toml");
    let mut body = POLICY.to_string();
    body.push_str(&format!("# {}\n", "x".repeat(1024 * 1024)));
    std::fs::write(&big, body).unwrap();
    let (code, text) = check(&big, &dropins);
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains("big.toml: is larger than the 1 MiB limit"),
        "{text}"
    );
}

#[test]
fn thaw_all_refuses_a_fifo_record_instead_of_hanging() {
    let d = tempfile::tempdir().unwrap();
    chmod(d.path(), 0o755);
    nix::unistd::mkfifo(
        &d.path().join("frozen.json"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    let out = appsnap(&["thaw", "--all", "--run-dir", d.path().to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(12), "{err}");
    assert!(
        err.contains("frozen.json: is not a regular file (it is a FIFO)"),
        "{err}"
    );
}
