//! Hooks as an attacker on the instance would steer them: the real `appsnap`
//! binary, the emulator and real loop file systems (root only; skips with a
//! reason otherwise).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::skip_reason;
use common::world::*;

macro_rules! root_or_skip {
    () => {
        if let Some(why) = skip_reason() {
            common::skip::missing(&why);
            return;
        }
    };
}

fn write_hook(p: &Path, body: &str) {
    std::fs::write(p, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o700)).unwrap();
}

/// Issue 14 item 1: `hooks -> real1` passes every check, then (while the
/// pre-script runs) `hooks` is pointed at a directory owned by uid 65534 that
/// holds that user's `post.sh`. Root must never run it: the post-script is
/// resolved and checked again at its own start, the run says why it did not
/// run it, and the snapshot is no longer application-consistent.
#[test]
fn a_hooks_link_swapped_mid_run_never_runs_the_other_users_postscript() {
    root_or_skip!();
    let w = World::new("swap", Setup::default());
    let d = w.lab.dir.join("hooks-lab");
    let (real, evil, link) = (d.join("real1"), d.join("evil"), d.join("hooks"));
    std::fs::create_dir_all(&real).unwrap();
    std::fs::create_dir_all(&evil).unwrap();
    for dir in [&d, &real, &evil] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let pwned = evil.join("pwned");
    let real_post_ran = d.join("real-post-ran");
    // The swap an unprivileged owner of `evil` would race for, done at the
    // worst moment: while the pre-script runs.
    write_hook(
        &real.join("pre.sh"),
        &format!(
            "ln -sfn {evil} {d}/hooks.new && mv -T {d}/hooks.new {link}\necho pre-ran",
            evil = evil.display(),
            d = d.display(),
            link = link.display()
        ),
    );
    write_hook(
        &real.join("post.sh"),
        &format!("touch {}", real_post_ran.display()),
    );
    write_hook(
        &evil.join("post.sh"),
        &format!("id -u > {}", pwned.display()),
    );
    let nobody = Some(nix::unistd::Uid::from_raw(65534));
    nix::unistd::chown(&evil.join("post.sh"), nobody, None).unwrap();
    nix::unistd::chown(&evil, nobody, None).unwrap();
    std::os::unix::fs::symlink("real1", &link).unwrap();
    w.use_hooks(&link.join("pre.sh"), &link.join("post.sh"));

    let out = w.appsnap(&["run", "db"]);
    let t = text(&out);
    assert!(t.contains("pre-ran"), "the real pre-script ran: {t}");
    assert!(
        !pwned.exists(),
        "root ran uid 65534's post-script (it wrote {:?}): {t}",
        std::fs::read_to_string(&pwned).unwrap_or_default()
    );
    assert!(!real_post_ran.exists(), "the link no longer leads there");
    assert_eq!(
        out.status.code(),
        Some(10),
        "a post-script that cannot be run is a post-script failure: {t}"
    );
    assert!(
        t.contains(&format!("{} is owned by uid 65534", evil.display())),
        "the warning names the directory and why: {t}"
    );
    for tags in snapshot_tags(&w.groups()[0]) {
        assert!(!has_tag(&tags, "AppConsistent", "True"), "{tags:?}");
    }
}

const AK_ID: &str = "LTAI5tScriptEnvTest01";
const AK_SECRET: &str = "ScriptEnvSecret0123456789abcdefXYZ";

/// Issue 14 item 5: appsnap runs with `ALIBABA_CLOUD_ACCESS_KEY_SECRET` in
/// its environment; the pre-script must not see it (only the documented
/// variables and what `script_env` lists), and when a script prints the
/// secret anyway (read from some file), the log shows `<redacted>`.
#[test]
fn scripts_never_see_the_credentials_and_their_output_is_redacted_in_the_log() {
    root_or_skip!();
    let w = World::new(
        "scriptenv",
        Setup {
            job_extra: "script_env = [\"MYAPP_TEST_PASSED\"]\n".into(),
            sim_extra: format!("\n[[access_keys]]\nid = \"{AK_ID}\"\nsecret = \"{AK_SECRET}\"\n"),
            ..Setup::default()
        },
    );
    let pre = w.script(
        "pre.sh",
        &format!(
            "tr '\\0' '\\n' < /proc/$$/environ | sed 's/^/env: /'\necho \"from a file: {AK_SECRET}\""
        ),
    );
    let post = w.script("post.sh", "exit 0");
    w.use_hooks(&pre, &post);
    let mut cmd = std::process::Command::new(common::appsnap_bin());
    cmd.arg("-c")
        .arg(&w.policy)
        .args(["--config-dir", "/nonexistent", "run", "db"])
        .env("ALIBABA_CLOUD_ACCESS_KEY_ID", AK_ID)
        .env("ALIBABA_CLOUD_ACCESS_KEY_SECRET", AK_SECRET)
        .env("MYAPP_TEST_PASSED", "listed-in-script-env")
        .env("MYAPP_TEST_NOT_LISTED", "must-not-pass");
    let out = run_bounded(cmd, std::time::Duration::from_secs(120));
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(
        t.contains("env: PATH="),
        "the script's environment was logged: {t}"
    );
    assert!(!t.contains(AK_SECRET), "the secret reached the log: {t}");
    assert!(t.contains("from a file: <redacted>"), "{t}");
    assert!(!t.contains("env: ALIBABA_CLOUD_"), "{t}");
    assert!(!t.contains("must-not-pass"), "{t}");
    assert!(
        t.contains("env: MYAPP_TEST_PASSED=listed-in-script-env"),
        "{t}"
    );
}

fn pid_alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

/// Starts `sleep` in a process group of its own whose id is `pgid`, by
/// asking the kernel for that pid next (`ns_last_pid`, as CRIU does); other
/// forks on the machine may take it first, so it tries a few times.
fn another_program_with_pgid(pgid: i32) -> Option<std::process::Child> {
    use std::os::unix::process::CommandExt;
    for _ in 0..50 {
        std::fs::write("/proc/sys/kernel/ns_last_pid", (pgid - 1).to_string()).ok()?;
        let mut c = std::process::Command::new("sleep")
            .arg("300")
            .process_group(0)
            .spawn()
            .unwrap();
        if c.id() as i32 == pgid {
            return Some(c);
        }
        let _ = c.kill();
        let _ = c.wait();
    }
    None
}

/// Issue 14 item 11: the pre-script's lock holder ended on its own, its
/// group's id was given to another program's group, and then the run ended
/// "the lock holders": that program must not be signalled.
#[tokio::test]
async fn a_recycled_lock_holder_pgid_is_never_signalled() {
    root_or_skip!();
    use appsnap::job::script_check::open_script;
    use appsnap::job::scripts::{run_script, Phase, ScriptContext};
    let d = tempfile::tempdir().unwrap();
    let pidfile = d.path().join("holder.pid");
    let p = d.path().join("lock.sh");
    write_hook(&p, &format!("sleep 300 &\necho $! > {}", pidfile.display()));
    let run = run_script(
        &open_script(&p).unwrap(),
        Phase::Pre,
        &ScriptContext::default(),
        std::time::Duration::from_secs(60),
        std::time::Duration::from_secs(2),
    )
    .await;
    let group = run.leftovers.expect("the holder is a leftover");
    let pgid = group.id();
    let holder: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(holder),
        nix::sys::signal::SIGKILL,
    )
    .unwrap();
    while std::path::Path::new(&format!("/proc/{holder}")).exists() {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let Some(mut victim) = another_program_with_pgid(pgid) else {
        common::skip::by_chance(&format!(
            "could not get pid {pgid} again (a busy machine took it)"
        ));
        return;
    };
    group.terminate(std::time::Duration::from_millis(500)).await;
    let survived = pid_alive(victim.id() as i32);
    let _ = victim.kill();
    let _ = victim.wait();
    assert!(survived, "another program's group {pgid} was signalled");
}
