//! The `exec` sink: a root-owned command checked and run exactly like the
//! hooks ([`crate::job::script_check`]: root's, mode 0700, safe directories
//! up to `/`; [`crate::job::scripts`]: executed by its descriptor, own
//! process group, clean environment, timeout that kills the tree). It gets
//! the event as JSON on stdin and its main fields in the environment
//! (`APPSNAP_EVENT`, `APPSNAP_JOB`, `APPSNAP_RUN_ID`, `APPSNAP_EXIT_CODE`,
//! `APPSNAP_CONSISTENCY`, `APPSNAP_EVENT_DETAIL`, `APPSNAP_EVENT_JSON`).
//! Exit 0 is delivered; anything else is a failure another attempt may fix.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

use crate::job::script_check::open_script;
use crate::job::scripts::{run_program, ScriptStatus};

use super::event::Event;
use super::AttemptError;

/// The environment the command gets: the hooks' fixed base, then the event.
pub fn environment(e: &Event) -> BTreeMap<OsString, OsString> {
    let mut env: BTreeMap<OsString, OsString> = [
        ("PATH", crate::job::scripts::SCRIPT_PATH),
        ("LANG", crate::job::scripts::SCRIPT_LANG),
        ("HOME", crate::job::scripts::SCRIPT_HOME),
    ]
    .into_iter()
    .map(|(k, v)| (k.into(), v.into()))
    .collect();
    let opt = |v: Option<String>| v.unwrap_or_default();
    for (k, v) in [
        ("APPSNAP_EVENT", e.event.as_str().to_string()),
        ("APPSNAP_EVENT_SCHEMA", e.schema.to_string()),
        ("APPSNAP_JOB", e.job.clone()),
        ("APPSNAP_RUN_ID", opt(e.run_id.clone())),
        ("APPSNAP_EXIT_CODE", opt(e.exit_code.map(|c| c.to_string()))),
        (
            "APPSNAP_CONSISTENCY",
            opt(e.consistency.map(|c| c.as_str().to_string())),
        ),
        ("APPSNAP_SNAPSHOT_GROUP", opt(e.snapshot_group_id.clone())),
        ("APPSNAP_EVENT_DETAIL", opt(e.detail.clone())),
        (
            "APPSNAP_EVENT_JSON",
            serde_json::to_string(e).unwrap_or_default(),
        ),
    ] {
        // A NUL cannot be in an environment value; the JSON escapes it anyway.
        env.insert(k.into(), v.replace('\0', " ").into());
    }
    env
}

/// How long the command's process group gets between SIGTERM and SIGKILL
/// when it outlives its timeout.
const KILL_GRACE: Duration = Duration::from_secs(2);

/// One attempt: check and open the command (as a hook is), run it with the
/// event within `timeout`, then end anything it left in its group.
pub async fn run(path: &Path, e: &Event, timeout: Duration) -> Result<(), AttemptError> {
    let script = open_script(path)
        .map_err(|p| AttemptError::permanent(format!("exec sink not run: {p}")))?;
    let stdin = serde_json::to_vec(e).unwrap_or_default();
    let run = run_program(
        &script,
        &environment(e),
        Some(stdin),
        timeout,
        KILL_GRACE,
        std::future::pending(),
    )
    .await;
    if let Some(left) = run.leftovers {
        left.terminate(KILL_GRACE).await;
    }
    let tail = || {
        let t = run.output.trim();
        let t: String = t
            .chars()
            .rev()
            .take(300)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        if t.is_empty() {
            String::new()
        } else {
            format!(": {t}")
        }
    };
    match run.status {
        ScriptStatus::Exited(0) => Ok(()),
        ScriptStatus::Exited(c) => Err(AttemptError::transient(format!(
            "{} exited {c}{}",
            path.display(),
            tail()
        ))),
        ScriptStatus::Signaled(s) => Err(AttemptError::transient(format!(
            "{} killed by signal {s}{}",
            path.display(),
            tail()
        ))),
        ScriptStatus::TimedOut => Err(AttemptError::transient(format!(
            "{} ran past {}s and was killed",
            path.display(),
            timeout.as_secs()
        ))),
        ScriptStatus::Cancelled => Err(AttemptError::permanent(format!(
            "{} cancelled",
            path.display()
        ))),
        ScriptStatus::SpawnFailed(why) => Err(AttemptError::permanent(format!(
            "{} cannot start: {why}",
            path.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_is_the_hooks_base_plus_the_event() {
        let f = super::super::event::RunFacts {
            job: "db".into(),
            run_id: "r1".into(),
            scheduled_for: None,
            started_at: chrono::Utc::now(),
            finished_at: chrono::Utc::now(),
            exit_code: 9,
            vendor_message: "m".into(),
            errors: vec!["pre failed".into()],
            warnings: vec![],
            consistency: crate::state::Consistency::None,
            wanted: crate::state::Consistency::App,
            group_id: None,
            frozen_ms: None,
            forced_thaw: None,
            retention_error: None,
            previous_exit: None,
        };
        let host = super::super::HostIdentity::local(None);
        let e = super::super::event::run_event(
            super::super::EventKind::Failure,
            &f,
            &host,
            chrono::Utc::now(),
        );
        let env = environment(&e);
        let get = |k: &str| {
            env.get(std::ffi::OsStr::new(k))
                .and_then(|v| v.to_str())
                .unwrap_or("<unset>")
        };
        assert_eq!(get("APPSNAP_EVENT"), "failure");
        assert_eq!(get("APPSNAP_EXIT_CODE"), "9");
        assert_eq!(get("APPSNAP_EVENT_DETAIL"), "pre failed");
        assert_eq!(get("PATH"), crate::job::scripts::SCRIPT_PATH);
        let json: serde_json::Value = serde_json::from_str(get("APPSNAP_EVENT_JSON")).unwrap();
        assert_eq!(json["run_id"], "r1");
        assert_eq!(
            env.len(),
            12,
            "nothing of appsnap's own environment: {env:?}"
        );
    }
}
