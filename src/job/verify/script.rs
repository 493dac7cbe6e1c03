//! The job's `verify_script`, run on the restored copies: opened and checked
//! like the hooks (root-owned, not writable by others, run by its
//! descriptor), with the same clean environment plus where the copies are.
//!
//! Environment, besides `PATH`, `LANG`, `HOME`:
//! - `APPSNAP_PHASE=verify`, `APPSNAP_JOB`, `APPSNAP_VERIFY_GROUP` (the group),
//! - `APPSNAP_DISK_IDS`: the restored disks (space-separated),
//! - `APPSNAP_MOUNTPOINTS`: the copies' mount points (newline-separated),
//! - `APPSNAP_SOURCE_MOUNTPOINTS`: for each line of `APPSNAP_MOUNTPOINTS`,
//!   where that file system is mounted on the live system (empty line when
//!   it is not mounted there), so a script can find e.g. the copy of
//!   `/var/lib/mysql`,
//! - `APPSNAP_VERIFY_ROOT`: the private directory holding the copies;
//! - the variables the job's `script_env` names, as the hooks get them.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::job::script_check::open_script;
use crate::job::scripts::{base_environment, run_program, ScriptRun, DEFAULT_KILL_GRACE};

/// What the script is told.
#[derive(Debug, Clone, Default)]
pub struct VerifyContext {
    /// The job.
    pub job: String,
    /// The group.
    pub group_id: String,
    /// The restored disks.
    pub disk_ids: Vec<String>,
    /// (copy mount point, live mount point if any).
    pub mounts: Vec<(PathBuf, Option<PathBuf>)>,
    /// The private root.
    pub root: PathBuf,
    /// Names of appsnap's environment variables passed through (the job's
    /// `script_env`, as for the hooks).
    pub pass_env: Vec<String>,
}

/// The script's whole environment: the fixed part, the `script_env`
/// variables `lookup` (appsnap's environment) has, then the drill's own.
pub fn verify_environment(
    ctx: &VerifyContext,
    lookup: impl Fn(&str) -> Option<OsString>,
) -> BTreeMap<OsString, OsString> {
    let copies: Vec<String> = ctx
        .mounts
        .iter()
        .map(|(c, _)| c.display().to_string())
        .collect();
    let live: Vec<String> = ctx
        .mounts
        .iter()
        .map(|(_, l)| {
            l.as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        })
        .collect();
    let (copies, live) = (copies.join("\n"), live.join("\n"));
    let mut env = base_environment(&ctx.pass_env, lookup);
    let own = [
        ("APPSNAP_PHASE", "verify".to_string()),
        ("APPSNAP_JOB", ctx.job.clone()),
        ("APPSNAP_VERIFY_GROUP", ctx.group_id.clone()),
        ("APPSNAP_DISK_IDS", ctx.disk_ids.join(" ")),
        ("APPSNAP_MOUNTPOINTS", copies),
        ("APPSNAP_SOURCE_MOUNTPOINTS", live),
        ("APPSNAP_VERIFY_ROOT", ctx.root.display().to_string()),
    ];
    for (k, v) in own {
        env.insert(k.into(), v.into());
    }
    env
}

/// How the script ended, or why it did not run.
#[derive(Debug)]
pub enum ScriptResult {
    /// It ran.
    Ran(ScriptRun),
    /// It failed the file checks.
    Refused(String),
}

/// Runs `path` with `ctx`, bounded by `timeout`, ended early when `cancel` completes.
pub async fn run_verify_script(
    path: &Path,
    ctx: &VerifyContext,
    timeout: Duration,
    cancel: impl std::future::Future<Output = ()>,
) -> ScriptResult {
    let script = match open_script(path) {
        Ok(s) => s,
        Err(e) => return ScriptResult::Refused(format!("verify_script not run: {e}")),
    };
    let env = verify_environment(ctx, |k| std::env::var_os(k));
    let mut run = run_program(&script, &env, None, timeout, DEFAULT_KILL_GRACE, cancel).await;
    // A verify script has no lock holders to keep: whatever it left running
    // would hold the copies' mounts busy.
    if let Some(g) = run.leftovers.take() {
        g.terminate(DEFAULT_KILL_GRACE).await;
    }
    ScriptResult::Ran(run)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_learns_each_copy_with_its_live_mount_point_line_by_line() {
        let ctx = VerifyContext {
            job: "db".into(),
            group_id: "ssg-1".into(),
            disk_ids: vec!["d-a".into(), "d-b".into()],
            mounts: vec![
                (
                    "/run/appsnap/verify/r/d-a".into(),
                    Some("/var/lib/mysql".into()),
                ),
                ("/run/appsnap/verify/r/d-b-p1".into(), None),
            ],
            root: "/run/appsnap/verify/r".into(),
            pass_env: vec!["DB_SOCKET".into(), "UNSET".into()],
        };
        let env = verify_environment(&ctx, |k| {
            [
                ("DB_SOCKET", "/run/db.sock"),
                ("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "s"),
            ]
            .iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| OsString::from(v))
        });
        let get = |k: &str| {
            env.get(&OsString::from(k))
                .unwrap()
                .to_str()
                .unwrap()
                .to_string()
        };
        assert_eq!(get("APPSNAP_PHASE"), "verify");
        assert_eq!(
            get("APPSNAP_MOUNTPOINTS"),
            "/run/appsnap/verify/r/d-a\n/run/appsnap/verify/r/d-b-p1"
        );
        assert_eq!(get("APPSNAP_SOURCE_MOUNTPOINTS"), "/var/lib/mysql\n");
        assert_eq!(get("APPSNAP_DISK_IDS"), "d-a d-b");
        assert_eq!(get("DB_SOCKET"), "/run/db.sock");
        assert!(!env.contains_key(&OsString::from("UNSET")));
        assert!(env
            .keys()
            .all(|k| !k.to_string_lossy().starts_with("ALIBABA")));
    }
}
