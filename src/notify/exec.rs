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

/// One attempt: check and open the command, run it with the event.
pub async fn run(path: &Path, e: &Event) -> Result<(), AttemptError> {
    let _ = (environment(e), path);
    Err(AttemptError::permanent(
        "exec sink: not wired yet (needs job::scripts::run_program)",
    ))
}
