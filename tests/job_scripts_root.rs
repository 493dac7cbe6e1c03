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
            eprintln!("SKIP {}: {why}", module_path!());
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
