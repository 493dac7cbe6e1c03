//! Preflight: every check passes before anything is touched; the plan,
//! the request and the hooks' context come out of it.

use super::*;

impl Run<'_> {
    // ---- Preflight: nothing is touched before every check has passed.

    pub(super) async fn preflight(&mut self) -> Step {
        let job = self.job;
        let ecs = &self.env.ecs;
        // Credentials that outlive the freeze window and the API call.
        let validity = job.freeze_timeout + CALL_BUDGET;
        if let Err(e) = ecs.credentials().ensure_valid_for(validity).await {
            self.fail(Outcome::NoRamRole, format!("no usable credentials: {e}"));
            return Step::Done;
        }
        let disks = match ecs
            .describe_disks(&self.env.instance_id, &[], Self::call_deadline())
            .await
        {
            Ok(d) => d,
            Err(e) => {
                let outcome = ecs_outcome(&e, Outcome::ConditionsNotMet);
                self.fail(outcome, format!("DescribeDisks: {e}"));
                return Step::Done;
            }
        };
        let selected = match select_disks(
            &job.disks,
            &self.env.instance_id,
            &disks,
            self.env.max_disks_per_group,
        ) {
            Ok(s) => s,
            Err(problems) => {
                let outcome = refusal_outcome(&job.disks, &problems);
                for p in &problems {
                    self.fail(outcome, p.to_string());
                }
                return Step::Done;
            }
        };
        for w in selected.warnings.iter().chain(&selected.skipped) {
            self.warn(w.to_string());
        }
        let selected: Vec<(DiskId, Disk)> = selected
            .disks
            .into_iter()
            .filter_map(|d| DiskId::parse(&d.disk_id).ok().map(|id| (id, d)))
            .collect();

        // A snapshot still being created on one of our disks and not yet usable
        // (the vendor's code 16: "being created and the instant access feature
        // is disabled"), before any freeze. An Available one is no obstacle.
        let filter = SnapshotFilter {
            instance_id: Some(self.env.instance_id.clone()),
            status: Some("progressing".into()),
            ..SnapshotFilter::default()
        };
        match ecs.describe_snapshots(&filter, Self::call_deadline()).await {
            Ok(progressing) => {
                let busy: Vec<String> = progressing
                    .iter()
                    .filter(|s| {
                        !s.available
                            && selected
                                .iter()
                                .any(|(id, _)| id.as_str() == s.source_disk_id)
                    })
                    .map(|s| format!("{} on {}", s.snapshot_id, s.source_disk_id))
                    .collect();
                if !busy.is_empty() {
                    self.fail(
                        Outcome::PreviousSnapshotInProgress,
                        format!(
                            "a previous snapshot is still being created and not yet usable: {}",
                            busy.join(", ")
                        ),
                    );
                    return Step::Done;
                }
            }
            Err(e) => {
                let outcome = ecs_outcome(&e, Outcome::ConditionsNotMet);
                self.fail(outcome, format!("DescribeSnapshots: {e}"));
                return Step::Done;
            }
        }

        // The freeze plan (refusals: code 1).
        let requests: Vec<DiskRequest> = selected
            .iter()
            .map(|(id, d)| DiskRequest::listed(id.clone(), &d.serial_number))
            .collect();
        let plan = match HostView::read(&self.env.host_paths)
            .and_then(|view| host::build_plan(&view, &requests, &self.env.run_dir))
        {
            Ok(p) => p,
            Err(e) => {
                self.fail(Outcome::ConditionsNotMet, format!("freeze plan: {e}"));
                return Step::Done;
            }
        };
        for w in &plan.warnings {
            self.warn(format!("plan: {w}"));
        }
        for s in &plan.skipped {
            info!(job = %job.name, "not frozen: {} ({}): {}", s.mount_point.display(), s.fs_type, s.reason);
        }

        // Hooks: both configured and valid, or neither runs (never lock without a way to unlock).
        let prescript = match self.check_hooks() {
            Ok(p) => p,
            Err(problems) => match job.on_prescript_failure {
                OnPrescriptFailure::Fs => {
                    for p in problems {
                        self.warn(p.fs_fallback());
                    }
                    None
                }
                OnPrescriptFailure::Skip => {
                    let why: Vec<String> = problems.iter().map(HookProblem::to_string).collect();
                    self.fail(
                        Outcome::PreScriptFailed,
                        format!(
                            "{}; on_prescript_failure = \"skip\": nothing frozen, no snapshot taken, neither script run",
                            why.join("; ")
                        ),
                    );
                    return Step::Done;
                }
            },
        };
        let hooks = prescript.is_some();
        if !hooks {
            self.consistency = Consistency::Fs;
        }
        if !job.fs_freeze || plan.entries.is_empty() {
            if !job.fs_freeze {
                info!(job = %job.name, "fs_freeze = false: file systems will not be frozen");
            }
            if !hooks {
                self.consistency = Consistency::Crash;
            }
        }

        // The request, built once with its ClientToken, so a retry never makes two groups.
        let name = self.opts.group_name.clone().unwrap_or_else(|| {
            format!(
                "{}-{}",
                job.name,
                chrono::Utc::now().format("%Y%m%dT%H%M%SZ")
            )
        });
        let mut tags = vec![
            self.job_tag(),
            Tag::new(TAG_INSTANCE, self.env.instance_id.as_str()),
        ];
        if let Some(owner) = &self.env.owner {
            tags.push(Tag::new(crate::owner::TAG_OWNER, owner.as_str()));
        }
        tags.extend(
            job.tags
                .iter()
                .map(|(k, v)| Tag::new(k.as_str(), v.as_str())),
        );
        let request = CreateSnapshotGroup {
            instance_id: self.env.instance_id.clone(),
            disks: GroupDisks::Only(selected.iter().map(|(id, _)| id.clone()).collect()),
            name: name.clone(),
            description: job.description.clone(),
            tags,
            resource_group_id: None,
            client_token: ClientToken::generate(),
        };
        if let Err(e) = request.params(ecs.region_id()) {
            self.fail(Outcome::InvalidParameters, e.to_string());
            return Step::Done;
        }
        self.report.group_name = Some(name);
        let script_ctx = ScriptContext {
            job: job.name.to_string(),
            disk_ids: selected.iter().map(|(id, _)| id.to_string()).collect(),
            mountpoints: plan.entries.iter().map(|e| e.mount_point.clone()).collect(),
            freeze_deadline_epoch: 0,
            pass_env: job.script_env.clone(),
            tags_file: None,
        };

        if self.opts.dry_run {
            self.print_dry_run(&plan, &request, &script_ctx, hooks);
            return Step::Done;
        }
        // The connection is opened now, so the frozen window is one round trip.
        if let Err(e) = ecs.warm(Self::call_deadline()).await {
            self.fail(Outcome::ConditionsNotMet, format!("cannot reach ECS: {e}"));
            return Step::Done;
        }
        let prepared = Prepared {
            plan,
            request,
            script_ctx,
            hooks,
            lock_holders: None,
            locked: false,
        };
        Step::PreScript(prepared, prescript)
    }

    /// Opens and checks both hooks: `Ok(Some)` (the pre-script's descriptor:
    /// that file runs) when both are usable, `Ok(None)` when neither is
    /// configured, else what is wrong. Never one without the other: never
    /// lock without a way to unlock. The post-script is opened and checked
    /// again at its start.
    fn check_hooks(&self) -> Result<Option<OpenedScript>, Vec<HookProblem>> {
        let (pre, post) = (self.job.prescript.clone(), self.job.postscript.clone());
        if pre.is_none() && post.is_none() {
            return Ok(None);
        }
        let mut problems = Vec::new();
        let mut prescript = None;
        for (what, path) in [("prescript", &pre), ("postscript", &post)] {
            if let Some(p) = path {
                match open_script(p) {
                    Ok(opened) if what == "prescript" => prescript = Some(opened),
                    Ok(_) => {}
                    Err(e) => problems.push(HookProblem::Unusable(what, e.to_string())),
                }
            }
        }
        if pre.is_none() || post.is_none() {
            problems.push(HookProblem::OnlyOne);
        }
        match prescript {
            Some(p) if problems.is_empty() => Ok(Some(p)),
            _ => Err(problems),
        }
    }

    fn print_dry_run(
        &self,
        plan: &Plan,
        request: &CreateSnapshotGroup,
        script_ctx: &ScriptContext,
        hooks: bool,
    ) {
        println!(
            "dry run of job {:?}: nothing is frozen, created or run",
            self.job.name.as_str()
        );
        println!("disks: {}", script_ctx.disk_ids.join(", "));
        print!("{}", plan.render());
        if hooks {
            println!(
                "if the prescript fails: {} (on_prescript_failure = {:?})",
                match self.job.on_prescript_failure {
                    OnPrescriptFailure::Fs => "a file-system-consistent snapshot",
                    OnPrescriptFailure::Skip =>
                        "no freeze and no snapshot; the postscript still runs",
                },
                self.job.on_prescript_failure.as_str()
            );
            println!(
                "would run prescript {}",
                self.job
                    .prescript
                    .as_ref()
                    .map_or(String::new(), |p| p.display().to_string())
            );
        }
        if self.job.fs_freeze && !plan.entries.is_empty() {
            println!(
                "would freeze {} file system(s) for at most {}s",
                plan.entries.len(),
                self.job.freeze_timeout.as_secs()
            );
        }
        println!("would call CreateSnapshotGroup:");
        if let Ok(params) = request.params(self.env.ecs.region_id()) {
            for (k, v) in params {
                println!("  {k}={v}");
            }
        }
        if hooks {
            println!(
                "would run postscript {}",
                self.job
                    .postscript
                    .as_ref()
                    .map_or(String::new(), |p| p.display().to_string())
            );
        }
        println!("consistency: {}", self.consistency.as_str());
    }
}

/// Why the hooks cannot run.
#[derive(Debug)]
enum HookProblem {
    /// This script fails the checks (missing, not root's, writable by others, …).
    Unusable(&'static str, String),
    /// Only one of the two is configured.
    OnlyOne,
}

impl std::fmt::Display for HookProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HookProblem::Unusable(what, e) => write!(f, "{what} not usable: {e}"),
            HookProblem::OnlyOne => f.write_str(
                "application-consistent snapshots need both prescript and postscript; only one is set",
            ),
        }
    }
}

impl HookProblem {
    /// The warning when the run goes on file-system-consistent (the vendor's way).
    fn fs_fallback(&self) -> String {
        match self {
            HookProblem::Unusable(what, e) => {
                format!("{what} not used, snapshot will be file-system-consistent: {e}")
            }
            HookProblem::OnlyOne => {
                "application-consistent snapshots need both prescript and postscript; neither runs"
                    .to_string()
            }
        }
    }
}
