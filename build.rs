//! Embeds the git commit into the binary so `appsnap --version` says exactly what runs.
use std::path::PathBuf;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    Command::new("git")
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

fn main() {
    let commit = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=APPSNAP_GIT_COMMIT={commit}");
    // Ask git where HEAD lives: in a worktree `.git` is a file, and a
    // rerun-if-changed on a path that does not exist reruns on every build.
    match git(&["rev-parse", "--git-dir"]) {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            let mut watch = vec![dir.join("HEAD"), dir.join("refs/heads")];
            if let Some(common) = git(&["rev-parse", "--git-common-dir"]) {
                let common = PathBuf::from(common);
                watch.push(common.join("refs/heads"));
                watch.push(common.join("packed-refs"));
            }
            // Only existing paths: a missing one would rerun every build.
            for p in watch.iter().filter(|p| p.exists()) {
                println!("cargo:rerun-if-changed={}", p.display());
            }
        }
        None => println!("cargo:rerun-if-changed=build.rs"),
    }
}
