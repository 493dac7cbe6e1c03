//! The pre- and post-script steps, and the lock holders the pre-script leaves.

use super::*;
use crate::job::script_tags::TagsFile;

/// How long a running pre-script may go on once the daemon is asked to stop;
/// the run is abandoned before the freeze anyway, so there is little to wait for.
const PRESCRIPT_STOP_GRACE: Duration = Duration::from_secs(10);
/// The same for the post-script, which undoes the pre-script's work and so gets
/// longer; both stay well inside the unit's TimeoutStopSec.
const POSTSCRIPT_STOP_GRACE: Duration = Duration::from_secs(60);

impl Run<'_> {
    // ---- PreScript

    pub(super) async fn pre_script(
        &mut self,
        mut prep: Prepared,
        script: Option<OpenedScript>,
    ) -> Step {
        if let Some(sd) = &self.opts.shutdown {
            if sd.is_requested() {
                self.fail(
                    Outcome::Unknown,
                    "the daemon is stopping: run abandoned before the pre-script".into(),
                );
                return Step::Done;
            }
            self.critical = Some(sd.enter());
        }
        let Some(script) = script else {
            return Step::Freeze(prep);
        };
        let path = script.path().to_path_buf();
        prep.script_ctx.freeze_deadline_epoch =
            epoch_after(self.job.script_timeout + self.job.freeze_timeout);
        // Removed when this step ends, whatever the script did.
        let tags_file = match TagsFile::create(&self.env.run_dir, &self.report.run_id) {
            Ok(f) => Some(f),
            Err(e) => {
                self.warn(format!(
                    "APPSNAP_TAGS_FILE not offered to the prescript: cannot create it under {}: {e}",
                    self.env.run_dir.display()
                ));
                None
            }
        };
        prep.script_ctx.tags_file = tags_file.as_ref().map(|f| f.path().to_path_buf());
        let mut run = run_script_until(
            &script,
            Phase::Pre,
            &prep.script_ctx,
            self.job.script_timeout,
            DEFAULT_KILL_GRACE,
            self.stop_requested_for(PRESCRIPT_STOP_GRACE),
        )
        .await;
        self.log_script(Phase::Pre, &run);
        prep.lock_holders = run.leftovers.take();
        if let Some(g) = &prep.lock_holders {
            info!(job = %self.job.name, "prescript left process group {} running (lock holders); ended after the postscript", g.id());
        }
        if !run.status.succeeded() {
            if self.job.on_prescript_failure == OnPrescriptFailure::Skip {
                self.fail(
                    Outcome::PreScriptFailed,
                    format!(
                        "prescript {}: {}; on_prescript_failure = \"skip\": nothing frozen, no snapshot taken; the postscript runs to undo what the prescript did",
                        path.display(),
                        describe(&run)
                    ),
                );
                return Step::PostScript(prep, Creation::Nothing);
            }
            self.consistency = weakest(self.consistency, Consistency::Fs);
            self.fail(
                Outcome::PreScriptFailed,
                format!(
                    "prescript {}: {}; snapshot will be file-system-consistent",
                    path.display(),
                    describe(&run)
                ),
            );
        } else {
            prep.locked = true;
            if let Some(f) = &tags_file {
                self.take_script_tags(&mut prep, f);
            }
        }
        Step::Freeze(prep)
    }

    // ---- Release: throttled while frozen, the lock is not held across the wait.

    /// The post-script releases the application, the run waits outside the
    /// window, and the pre-script quiesces it again before the next freeze.
    /// The tags the first pre-script wrote are dropped: a position read
    /// under a lock that was released is not the snapshot's. The request
    /// keeps its ClientToken: ECS did not process the throttled request, so
    /// the token has never been seen with other parameters.
    pub(super) async fn release(&mut self, mut prep: Prepared, wait: Duration) -> Step {
        self.end_hooks(&mut prep).await;
        let stale: Vec<String> = std::mem::take(&mut self.report.script_tags)
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        prep.request.tags.retain(|t| !stale.contains(&t.key));
        tokio::time::sleep(wait).await;
        let Some(path) = self.job.prescript.as_deref() else {
            return Step::Freeze(prep);
        };
        match open_script(path) {
            Ok(script) => Step::PreScript(prep, Some(script)),
            Err(e) => {
                // Like hooks unusable at preflight: neither runs again.
                prep.hooks = false;
                let what = format!("prescript not run again after the throttled window: {e}");
                if self.job.on_prescript_failure == OnPrescriptFailure::Skip {
                    self.fail(
                        Outcome::PreScriptFailed,
                        format!("{what}; on_prescript_failure = \"skip\": no snapshot taken"),
                    );
                    return Step::Done;
                }
                self.consistency = weakest(self.consistency, Consistency::Fs);
                self.fail(
                    Outcome::PreScriptFailed,
                    format!("{what}; snapshot will be file-system-consistent"),
                );
                Step::Freeze(prep)
            }
        }
    }

    /// Adds what a successful pre-script wrote to `APPSNAP_TAGS_FILE` to the
    /// group's request (not sent yet) and, in the Tag step, to its snapshots.
    fn take_script_tags(&mut self, prep: &mut Prepared, file: &TagsFile) {
        let room = crate::cloud::ecs::MAX_TAGS.saturating_sub(prep.request.tags.len());
        let taken: Vec<&str> = self.job.tags.keys().map(String::as_str).collect();
        match file.read(room, &taken) {
            Ok(tags) if tags.is_empty() => {}
            Ok(tags) => {
                let shown: Vec<String> = tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
                info!(job = %self.job.name, run_id = %self.report.run_id, "prescript tags for the snapshot: {}", shown.join(" "));
                prep.request
                    .tags
                    .extend(tags.iter().map(|(k, v)| Tag::new(k.as_str(), v.as_str())));
                self.report.script_tags = tags;
            }
            Err(e) => self.warn(format!(
                "prescript tags not used (none of them; fix the file the prescript writes): {e}"
            )),
        }
    }

    /// Completes `grace` after the daemon is asked to stop; never without a daemon.
    fn stop_requested_for(&self, grace: Duration) -> impl std::future::Future<Output = ()> {
        let sd = self.opts.shutdown.clone();
        async move {
            match sd {
                Some(sd) => sd.requested_for(grace).await,
                None => std::future::pending().await,
            }
        }
    }

    /// Logs how a script ended and its output, with the credentials in use
    /// redacted: a script may print its environment or a config file holding them.
    fn log_script(&self, phase: Phase, run: &ScriptRun) {
        let output = self.env.ecs.credentials().scrub(run.output.trim_end());
        info!(
            job = %self.job.name, run_id = %self.report.run_id, phase = phase.as_str(),
            took_ms = run.duration.as_millis() as u64,
            "{} script: {}; output: {output}", phase.as_str(), describe(run)
        );
    }

    // ---- PostScript, then the lock holders end.

    pub(super) async fn post_script(&mut self, mut prep: Prepared, creation: Creation) -> Step {
        self.end_hooks(&mut prep).await;
        match creation {
            Creation::Nothing | Creation::Throttled { .. } => Step::Done,
            c @ (Creation::TimedOut | Creation::Accepted { .. }) => Step::AwaitGroup(prep, c),
        }
    }

    /// Runs the post-script and ends the pre-script's lock holders; then the
    /// run is out of its critical section (a stopping daemon need not wait
    /// for the rest: nothing is locked or frozen any more).
    async fn end_hooks(&mut self, prep: &mut Prepared) {
        prep.locked = false;
        // Opened and checked again now: the path may lead elsewhere than at the start.
        let script = match self.job.postscript.as_deref().filter(|_| prep.hooks) {
            None => None,
            Some(path) => match open_script(path) {
                Ok(s) => Some(s),
                Err(e) => {
                    self.consistency = weakest(self.consistency, Consistency::Fs);
                    self.fail(
                        Outcome::PostScriptFailed,
                        format!("postscript not run: {e}; snapshot will be at most file-system-consistent"),
                    );
                    None
                }
            },
        };
        if let Some(script) = script {
            let path = script.path().to_path_buf();
            let run = run_script_until(
                &script,
                Phase::Post,
                &prep.script_ctx,
                self.job.script_timeout,
                DEFAULT_KILL_GRACE,
                self.stop_requested_for(POSTSCRIPT_STOP_GRACE),
            )
            .await;
            self.log_script(Phase::Post, &run);
            if !run.status.succeeded() {
                self.fail(
                    Outcome::PostScriptFailed,
                    format!("postscript {}: {}", path.display(), describe(&run)),
                );
            }
            if let Some(left) = run.leftovers {
                self.warn(format!(
                    "postscript left process group {} running; ending it",
                    left.id()
                ));
                left.terminate(DEFAULT_KILL_GRACE).await;
            }
        }
        if let Some(holders) = prep.lock_holders.take() {
            let id = holders.id();
            if holders.terminate(DEFAULT_KILL_GRACE).await {
                self.warn(format!(
                    "lock holders (process group {id}) ignored SIGTERM and were killed"
                ));
            }
        }
        self.critical = None;
    }
}

fn describe(run: &ScriptRun) -> String {
    use crate::job::scripts::ScriptStatus::*;
    match &run.status {
        Exited(0) => "succeeded".into(),
        Exited(c) => format!("exited with {c}"),
        Signaled(s) => format!("killed by signal {s}"),
        TimedOut => format!(
            "timed out after {}s; its process group was killed",
            run.duration.as_secs()
        ),
        SpawnFailed(e) => format!("could not be started: {e}"),
        Cancelled => format!(
            "cancelled after {}s because the daemon is stopping; its process group was killed",
            run.duration.as_secs()
        ),
    }
}
