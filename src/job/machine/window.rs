//! The frozen window: freeze, CreateSnapshotGroup (and, with
//! `thaw_after = "listed"`, its listing) while frozen, thaw. Nothing here
//! logs while frozen, and nothing here may panic.

use super::group::{usability, Usability};
use super::*;
use crate::cloud::ecs::Throttled;

/// How many windows a run gives up because ECS throttled CreateSnapshotGroup
/// before it stops trying (each wait outside the window is longer).
const MAX_THROTTLED_WINDOWS: u32 = 6;

/// Between two questions while frozen: every round trip here lengthens the
/// application's pause by at most this much.
const FROZEN_POLL: Duration = Duration::from_millis(50);

/// Slack kept between giving up on CreateSnapshotGroup and the guard's own deadline,
/// so that appsnap, not the deadline, ends the freeze.
fn api_margin(freeze_timeout: Duration) -> Duration {
    (freeze_timeout / 5).clamp(Duration::from_millis(300), Duration::from_secs(2))
}

impl Run<'_> {
    // ---- Freeze

    pub(super) async fn freeze(&mut self, mut prep: Prepared) -> Step {
        if self
            .opts
            .shutdown
            .as_ref()
            .is_some_and(Shutdown::is_requested)
        {
            self.fail(
                Outcome::Unknown,
                "the daemon is stopping: run abandoned before the freeze".into(),
            );
            return Step::PostScript(prep, Creation::Nothing);
        }
        if !self.job.fs_freeze || prep.plan.entries.is_empty() {
            return Step::Snapshot(prep, None);
        }
        let permit = match &self.opts.freeze_gate {
            Some(gate) => Some(gate.acquire().await),
            None => None,
        };
        // Credentials must not expire inside the window (the pre-script may have taken long).
        if let Err(e) = self
            .env
            .ecs
            .credentials()
            .ensure_valid_for(self.job.freeze_timeout + CALL_BUDGET)
            .await
        {
            self.fail(
                Outcome::NoRamRole,
                format!("credentials before freezing: {e}"),
            );
            return Step::PostScript(prep, Creation::Nothing);
        }
        let deadline = self.job.freeze_timeout;
        let spawned = self.env.freeze_stage.spawn(GuardSpawn {
            plan: &prep.plan,
            deadline,
            run_dir: &self.env.run_dir,
            exe: self.env.guard_exe.as_deref(),
        });
        let mut guard = match spawned {
            Ok(g) => g,
            Err(e) => {
                self.fail(Outcome::FreezeFailed, format!("cannot suspend I/O: {e}"));
                return Step::PostScript(prep, Creation::Nothing);
            }
        };
        prep.script_ctx.freeze_deadline_epoch = epoch_after(deadline);
        let hold = crate::logging::hold();
        // The guard's protocol is blocking I/O on a pipe: keep it off the async workers.
        let joined = tokio::task::spawn_blocking(move || {
            let r = guard.freeze();
            (guard, r)
        })
        .await;
        let (guard, result) = match joined {
            Ok(x) => x,
            Err(e) => {
                // The guard moved into the failed task was dropped: its stdin closed, so it thawed.
                drop(hold);
                drop(permit);
                self.fail(Outcome::FreezeFailed, format!("freeze task failed: {e}"));
                return Step::PostScript(prep, Creation::Nothing);
            }
        };
        match result {
            Ok(frozen) => {
                let window = Window {
                    guard,
                    frozen,
                    hold,
                    permit,
                };
                Step::Snapshot(prep, Some(window))
            }
            Err(e) => {
                drop(guard);
                drop(hold);
                drop(permit);
                self.fail(Outcome::FreezeFailed, format!("cannot suspend I/O: {e}"));
                self.consistency = weakest(self.consistency, Consistency::Fs);
                Step::PostScript(prep, Creation::Nothing)
            }
        }
    }

    // ---- Snapshot: the only thing done while frozen. Events are held, not written.

    pub(super) async fn snapshot(&mut self, prep: Prepared, window: Option<Window>) -> Step {
        let deadline = match &window {
            Some(w) => Instant::from_std(w.frozen.thaw_by) - api_margin(self.job.freeze_timeout),
            None => Instant::now() + self.job.freeze_timeout,
        };
        let created = if window.is_some() {
            // Never back off inside the freeze: a throttled answer thaws first.
            match self
                .env
                .ecs
                .create_snapshot_group_unthrottled(&prep.request, deadline)
                .await
            {
                Err(Throttled::Yes { error, retry_after }) => {
                    let creation = Creation::Throttled {
                        retry_after,
                        error: error.to_string(),
                    };
                    return Step::Thaw(prep, window, creation);
                }
                other => other.map_err(Throttled::into_error),
            }
        } else {
            self.env
                .ecs
                .create_snapshot_group(&prep.request, deadline)
                .await
        };
        let id = match created {
            Ok(id) => id,
            Err(e) => {
                let outcome = create_outcome(&e);
                let creation = if outcome == Outcome::GroupCreateTimeout {
                    Creation::TimedOut
                } else {
                    Creation::Nothing
                };
                self.frozen_errors
                    .push((outcome, format!("CreateSnapshotGroup: {e}")));
                return Step::Thaw(prep, window, creation);
            }
        };
        let at = Instant::now();
        self.report.group_id = Some(id.clone());
        let seen = if window.is_some() && self.job.thaw_after == ThawAfter::Listed {
            self.await_listed_while_frozen(&prep, &id, deadline)
                .await
                .map(Box::new)
        } else {
            None
        };
        Step::Thaw(prep, window, Creation::Accepted { id, at, seen })
    }

    /// Holds the freeze until ECS lists the group with one usable snapshot per
    /// disk: only then is its point in time known to be inside the window. If
    /// that cannot be seen before `deadline`, the snapshots may have been taken
    /// after the thaw: the group is crash-consistent at best.
    async fn await_listed_while_frozen(
        &mut self,
        prep: &Prepared,
        id: &str,
        deadline: Instant,
    ) -> Option<SnapshotGroup> {
        let filter = SnapshotGroupFilter {
            ids: vec![id.to_string()],
            ..SnapshotGroupFilter::default()
        };
        loop {
            match self
                .env
                .ecs
                .describe_snapshot_groups_unthrottled(&filter, deadline)
                .await
            {
                // Never back off inside the freeze: ask again at the poll's
                // cadence (a token frees up within 1/rate s; the server's
                // retry-after would stretch the pause by the whole wait).
                Err(Throttled::Yes { .. }) => self.throttled_polls += 1,
                Ok(groups) => {
                    if let Some(g) = groups.into_iter().find(|g| g.snapshot_group_id == id) {
                        match usability(&g, prep.wanted()) {
                            Usability::Usable => return Some(g),
                            Usability::Failed => {
                                self.consistency = Consistency::Crash;
                                self.frozen_errors.push((
                                    Outcome::GroupBadState,
                                    format!(
                                        "snapshot group {id} failed while file systems were frozen"
                                    ),
                                ));
                                return Some(g);
                            }
                            Usability::NotYet => {}
                        }
                    }
                }
                Err(Throttled::No(e)) => {
                    self.consistency = Consistency::Crash;
                    let outcome = ecs_outcome(&e, Outcome::GroupCreateTimeout);
                    self.frozen_errors.push((
                        outcome,
                        format!(
                            "DescribeSnapshotGroups while frozen: {e}; thawed without seeing the group's snapshots, so it is crash-consistent at best"
                        ),
                    ));
                    return None;
                }
            }
            if Instant::now() + FROZEN_POLL >= deadline {
                self.consistency = Consistency::Crash;
                self.frozen_errors.push((
                    Outcome::GroupCreateTimeout,
                    format!(
                        "ECS did not list the snapshots of group {id} within the freeze window ({}s); its point in time may be after the thaw, so it is crash-consistent at best",
                        self.job.freeze_timeout.as_secs()
                    ),
                ));
                return None;
            }
            tokio::time::sleep(FROZEN_POLL).await;
        }
    }

    // ---- Thaw: once the point in time is known to be inside the window
    // (`listed`), or at the answer (`accepted`).

    pub(super) async fn thaw(
        &mut self,
        prep: Prepared,
        window: Option<Window>,
        creation: Creation,
    ) -> Step {
        let Some(Window {
            guard,
            frozen: _,
            hold,
            permit,
        }) = window
        else {
            self.after_window(&creation);
            return Step::PostScript(prep, creation);
        };
        // What this thaw adds to the report tells whether the window itself
        // went wrong (earlier failures, a failed pre-script say, do not count).
        let reported = (self.report.errors.len(), self.report.warnings.len());
        // First ask whether someone thawed a file system behind the guard's
        // back (`fsfreeze -u`, another tool): then the point in time may be
        // on an unfrozen file system. The check costs one FIFREEZE per file
        // system (EBUSY) before the thaw.
        let joined = tokio::task::spawn_blocking(move || {
            let mut guard = guard;
            let checked = guard.check();
            (checked, guard.thaw())
        })
        .await;
        // Thawed (or the guard is gone and its deadline rules): logging is safe again.
        drop(hold);
        drop(permit);
        self.after_window(&creation);
        let (checked, joined) = match joined {
            Ok((checked, thawed)) => (Some(checked), Ok(thawed)),
            Err(e) => (None, Err(e)),
        };
        let mut lost: Vec<PathBuf> = Vec::new();
        match checked {
            Some(Ok(l)) => lost.extend(l),
            Some(Err(e)) => {
                self.consistency = Consistency::Crash;
                self.warn(format!(
                    "could not confirm that the file systems stayed frozen until the point in time ({e}); the group is crash-consistent at best"
                ));
            }
            None => {}
        }
        if let Ok(Ok(report)) = &joined {
            for p in report.lost() {
                if !lost.iter().any(|l| l == p) {
                    lost.push(p.to_path_buf());
                }
            }
        }
        if !lost.is_empty() {
            self.consistency = Consistency::Crash;
            let names = lost
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ");
            self.warn(format!(
                "freeze lost: {names} was thawed by someone else (fsfreeze -u, appsnap thaw --all --force, another tool) while the snapshot was taken; the group is crash-consistent at best"
            ));
            self.report.forced_thaw = Some(format!(
                "freeze lost: {names} was thawed by someone else while the snapshot was taken"
            ));
            self.fail(
                Outcome::FreezeFailed,
                format!("cannot prove I/O was suspended: the freeze of {names} was lost"),
            );
        }
        match joined {
            Ok(Ok(report)) => {
                // The longest window, when throttling made the run freeze again.
                let ms = report.window_us / 1000;
                self.report.frozen_ms = Some(self.report.frozen_ms.map_or(ms, |m| m.max(ms)));
                for fs in &report.filesystems {
                    info!(job = %self.job.name, "thawed {} after {} ms", fs.mount_point.display(), fs.suspended_us / 1000);
                }
                if report.cause == ThawCause::Deadline {
                    self.consistency = Consistency::Crash;
                    self.report.forced_thaw = Some(format!(
                        "the freeze guard's deadline ({}s) thawed the file systems before ECS answered",
                        self.job.freeze_timeout.as_secs()
                    ));
                    self.fail(
                        Outcome::GroupCreateTimeout,
                        format!(
                            "the freeze deadline ({}s) thawed the file systems before ECS answered; the group is crash-consistent at best",
                            self.job.freeze_timeout.as_secs()
                        ),
                    );
                }
            }
            Ok(Err(e)) => self.fail(Outcome::ThawFailed, format!("cannot resume I/O: {e}")),
            Err(e) => self.fail(Outcome::ThawFailed, format!("thaw task failed: {e}")),
        }
        if let Creation::Throttled { retry_after, error } = creation {
            let clean = reported == (self.report.errors.len(), self.report.warnings.len());
            return self.after_throttled(prep, retry_after, error, clean).await;
        }
        Step::PostScript(prep, creation)
    }

    /// ECS throttled CreateSnapshotGroup while frozen and the run has thawed:
    /// wait outside the window (at least what the server asked), then freeze
    /// again with the same request and ClientToken. With the lock held and
    /// `hooks_while_throttled = "release"`, the post-script releases the
    /// application for the wait ([`Step::Release`]); with `"hold"` the lock
    /// holders keep their lock meanwhile. After [`MAX_THROTTLED_WINDOWS`], or
    /// when the thaw of this window was not `clean` (a lost freeze, a failed
    /// thaw, the deadline), the run gives up.
    async fn after_throttled(
        &mut self,
        prep: Prepared,
        retry_after: Option<Duration>,
        error: String,
        clean: bool,
    ) -> Step {
        self.throttled_windows += 1;
        let n = self.throttled_windows;
        if !clean || n >= MAX_THROTTLED_WINDOWS {
            self.fail(
                Outcome::GroupCreateFailed,
                format!("CreateSnapshotGroup throttled while frozen ({n} time(s)): {error}; thawed at once each time, no group created"),
            );
            return Step::PostScript(prep, Creation::Nothing);
        }
        let wait = self
            .env
            .throttled_backoff
            .delay(n - 1)
            .max(retry_after.unwrap_or_default());
        let release = prep.locked && self.job.hooks_while_throttled == HooksWhileThrottled::Release;
        self.warn(format!(
            "CreateSnapshotGroup throttled while frozen ({error}): thawed at once, freezing again in {} ms (window {} of at most {MAX_THROTTLED_WINDOWS}){}",
            wait.as_millis(),
            n + 1,
            if release {
                "; the postscript releases the application meanwhile and the prescript quiesces it again"
            } else {
                ""
            }
        ));
        if release {
            return Step::Release(prep, wait);
        }
        tokio::time::sleep(wait).await;
        Step::Freeze(prep)
    }

    /// Logs what happened inside the window, now that logging is safe.
    fn after_window(&mut self, creation: &Creation) {
        let polls = std::mem::take(&mut self.throttled_polls);
        if polls > 0 {
            self.warn(format!(
                "DescribeSnapshotGroups throttled {polls} time(s) while frozen: asked again every {} ms, never backing off inside the freeze",
                FROZEN_POLL.as_millis()
            ));
        }
        for (outcome, msg) in std::mem::take(&mut self.frozen_errors) {
            if outcome == Outcome::GroupCreateTimeout {
                self.consistency = Consistency::Crash;
            }
            self.fail(outcome, msg);
        }
        if let Creation::Accepted { id, .. } = creation {
            info!(job = %self.job.name, run_id = %self.report.run_id, snapshot_group = %id, "snapshot group accepted");
        }
    }
}

/// Vendor codes for CreateSnapshotGroup failures: running out of the freeze
/// window is "timed out" (6) unless ECS said something more specific.
fn create_outcome(e: &EcsError) -> Outcome {
    let o = ecs_outcome(e, Outcome::GroupCreateFailed);
    if o == Outcome::GroupCreateFailed && matches!(e, EcsError::DeadlineExceeded { .. }) {
        Outcome::GroupCreateTimeout
    } else {
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: &str) -> EcsError {
        EcsError::Api {
            action: "CreateSnapshotGroup".into(),
            code: code.into(),
            message: String::new(),
            request_id: None,
            http_status: 403,
        }
    }

    #[test]
    fn create_failures_map_to_the_vendor_codes() {
        assert_eq!(
            create_outcome(&api("QuotaExceed.Snapshot")),
            Outcome::QuotaExceeded
        );
        assert_eq!(
            create_outcome(&api("IncorrectDiskStatus.CreatingSnapshot")),
            Outcome::PreviousSnapshotInProgress
        );
        assert_eq!(
            create_outcome(&api("Forbidden.RAM")),
            Outcome::NoDisksOrPermission
        );
        assert_eq!(
            create_outcome(&api("InternalError")),
            Outcome::GroupCreateFailed
        );
        let late = EcsError::DeadlineExceeded {
            action: "CreateSnapshotGroup".into(),
            attempts: 3,
            last: Some(Box::new(api("Throttling.User"))),
        };
        assert_eq!(create_outcome(&late), Outcome::GroupCreateTimeout);
        let quota_late = EcsError::DeadlineExceeded {
            action: "CreateSnapshotGroup".into(),
            attempts: 1,
            last: Some(Box::new(api("QuotaExceed.Snapshot"))),
        };
        assert_eq!(create_outcome(&quota_late), Outcome::QuotaExceeded);
    }

    #[test]
    fn margin_leaves_room_before_the_guard_deadline() {
        assert_eq!(api_margin(Duration::from_secs(30)), Duration::from_secs(2));
        assert_eq!(api_margin(Duration::from_secs(5)), Duration::from_secs(1));
        assert_eq!(
            api_margin(Duration::from_secs(1)),
            Duration::from_millis(300)
        );
    }
}
