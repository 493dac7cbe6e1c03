//! The shell scripts appsnap ships for operators to copy (the database hooks
//! and verify scripts under packaging/examples, the package's maintainer
//! scripts' helpers) pass `shellcheck`: they run as root, and quoting or
//! `set -e` slips there fail at the worst moment (with a lock held).

#[path = "common/skip.rs"]
mod skip;

use std::path::{Path, PathBuf};
use std::process::Command;

fn shell_scripts(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            shell_scripts(&p, out);
        } else if p.extension().is_some_and(|x| x == "sh") {
            out.push(p);
        }
    }
}

#[test]
fn example_scripts_pass_shellcheck() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/examples");
    let mut scripts = Vec::new();
    shell_scripts(&root, &mut scripts);
    scripts.sort();
    assert!(
        scripts.len() >= 6,
        "the MariaDB and PostgreSQL hooks and verify scripts: {scripts:?}"
    );
    let out = match Command::new("shellcheck")
        .args(["--severity=warning", "--shell=bash"])
        .args(&scripts)
        .output()
    {
        Ok(o) => o,
        Err(e) => {
            skip::missing(&format!("shellcheck: {e} (Debian package shellcheck)"));
            return;
        }
    };
    assert!(
        out.status.success(),
        "shellcheck:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
