//! `appsnap run JOB [--dry-run]` and `appsnap plugin --params=...`: one run
//! now, ending with the vendor's result line and exit code.

use std::sync::Arc;

use appsnap::cloud::Cloud;
use appsnap::job::machine::{self, RunEnv, RunOptions};
use appsnap::job::outcome::Outcome;
use appsnap::job::plugin_params;
use appsnap::job::report::RunReport;
use appsnap::policy::{self, Job, Policy};
use appsnap::state::StateStore;

use super::args::{Cli, PluginArgs, RunArgs};
use super::cloud::{block_on, outcome};

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

/// `plugin --params=...` or `plugin -Key=Value ...`: the vendor plugin's
/// parameters over the policy's `[cloud]` and `[host]` (defaults when there
/// is no policy file).
pub fn plugin(cli: &Cli, args: &PluginArgs) -> u8 {
    let parsed = match (&args.params, args.vendor_args.is_empty()) {
        (Some(_), false) => Err(plugin_params::PluginParamsError::BothForms),
        (Some(p), true) => plugin_params::parse(p),
        (None, _) => plugin_params::parse_args(&args.vendor_args),
    };
    let params = match parsed {
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
        plugin: true,
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
    let env = RunEnv::from_policy(policy, Arc::new(cloud.ecs), cloud.instance_id);
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
