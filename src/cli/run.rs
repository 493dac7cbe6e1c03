//! `appsnap run JOB [--dry-run]` and `appsnap plugin --params=...`: one run
//! now, ending with the vendor's result line and exit code.

use std::sync::Arc;
use std::time::Duration;

use appsnap::cloud::Cloud;
use appsnap::host::HostPaths;
use appsnap::job::machine::{self, RunEnv, RunOptions};
use appsnap::job::outcome::Outcome;
use appsnap::job::plugin_params;
use appsnap::job::report::RunReport;
use appsnap::policy::{self, Job, Policy};
use appsnap::state::StateStore;

use super::args::{Cli, PluginArgs, RunArgs};
use super::cloud::{block_on, outcome};

/// How long a run waits for its group to be accomplished.
const AWAIT_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// How often it asks meanwhile.
const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// `run JOB`.
pub fn run(cli: &Cli, args: &RunArgs) -> u8 {
    let policy = match policy::load(&cli.config, &cli.config_dir) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("appsnap: policy rejected:\n{e}");
            return finish_without_run(Outcome::InvalidParameters);
        }
    };
    let Some(job) = policy.job(&args.job).cloned() else {
        let names: Vec<&str> = policy.jobs.iter().map(|j| j.name.as_str()).collect();
        eprintln!(
            "appsnap: no job named {:?} (jobs: {})",
            args.job,
            names.join(", ")
        );
        return finish_without_run(Outcome::InvalidParameters);
    };
    let opts = RunOptions {
        dry_run: args.dry_run,
        ..RunOptions::default()
    };
    execute(&policy, &job, opts, !args.dry_run)
}

/// `plugin --params=...`: the vendor plugin's parameters over the policy's
/// `[cloud]` and `[host]` (defaults when there is no policy file).
pub fn plugin(cli: &Cli, args: &PluginArgs) -> u8 {
    let params = match plugin_params::parse(&args.params) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("appsnap: plugin: {e}");
            return finish_without_run(e.outcome());
        }
    };
    let mut policy = if cli.config.exists() {
        match policy::load(&cli.config, &cli.config_dir) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("appsnap: policy rejected:\n{e}");
                return finish_without_run(Outcome::InvalidParameters);
            }
        }
    } else {
        policy::parse_str(&cli.config, "").expect("the empty policy is valid")
    };
    policy.cloud.ram_role = Some(params.ram_role_name.clone());
    let job = params.to_job();
    let opts = RunOptions {
        dry_run: false,
        group_name: Some(params.name.clone()),
        ..RunOptions::default()
    };
    execute(&policy, &job, opts, false)
}

/// Connects, runs, records (for policy jobs), prints the result line.
fn execute(policy: &Policy, job: &Job, opts: RunOptions, record: bool) -> u8 {
    let report = match block_on(run_job(policy, job, opts)) {
        Ok(Ok(report)) => report,
        Ok(Err(code)) => return finish_without_run(code),
        Err(e) => {
            eprintln!("appsnap: cannot start the runtime: {e:#}");
            return finish_without_run(Outcome::Unknown);
        }
    };
    if record {
        let store = StateStore::new(&policy.host.state_dir);
        if let Err(e) = store.write(&report.to_job_result(None)) {
            eprintln!("appsnap: warning: result not recorded: {e}");
        }
    }
    summarize(&report);
    println!("{}", report.result_line());
    report.exit_code
}

async fn run_job(policy: &Policy, job: &Job, opts: RunOptions) -> Result<RunReport, Outcome> {
    let cloud = match Cloud::connect(&policy.cloud).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("appsnap: cannot reach the cloud: {e}");
            return Err(outcome(&e));
        }
    };
    if let Err(e) = std::fs::create_dir_all(&policy.host.run_dir) {
        eprintln!(
            "appsnap: cannot create {}: {e}",
            policy.host.run_dir.display()
        );
        return Err(Outcome::ConditionsNotMet);
    }
    let env = RunEnv {
        ecs: Arc::new(cloud.ecs),
        instance_id: cloud.instance_id,
        host_paths: HostPaths::system(&policy.host.by_id_dir),
        run_dir: policy.host.run_dir.clone(),
        guard_exe: None,
        max_disks_per_group: policy.cloud.max_disks_per_group,
        await_timeout: AWAIT_TIMEOUT,
        poll_interval: POLL_INTERVAL,
    };
    Ok(machine::run(&env, job, opts).await)
}

/// What an operator reads at the terminal before the vendor line.
fn summarize(r: &RunReport) {
    for w in &r.warnings {
        eprintln!("warning: {w}");
    }
    for e in &r.errors {
        eprintln!("error: {e}");
    }
    let stages: Vec<String> = r
        .stages
        .iter()
        .map(|(s, ms)| format!("{}={ms}ms", s.as_str()))
        .collect();
    eprintln!(
        "job {:?} run {}: exit {} ({}), group {}, consistency {}, I/O suspended {}; {}",
        r.job,
        r.run_id,
        r.exit_code,
        r.outcome().message(),
        r.group_id.as_deref().unwrap_or("none"),
        r.consistency.as_str(),
        r.frozen_ms
            .map_or("not at all".to_string(), |ms| format!("{ms} ms")),
        stages.join(" ")
    );
}

/// The vendor line for a run that never started.
fn finish_without_run(o: Outcome) -> u8 {
    println!("{}", o.result_line(None));
    o.code()
}
