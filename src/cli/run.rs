//! `appsnap run JOB [--dry-run] [--no-prune]` and `appsnap plugin
//! --params=...`: one run now through [`execute`] (as the daemon's runs),
//! ending with the vendor's result line and exit code.

use std::sync::Arc;

use appsnap::alerts;
use appsnap::cloud::Cloud;
use appsnap::job::execute::{self, After, Executed, Recording, Retention};
use appsnap::job::machine::{RunEnv, RunOptions};
use appsnap::job::outcome::Outcome;
use appsnap::job::plugin_params;
use appsnap::job::spec::RunSpec;
use appsnap::notify::{HostIdentity, Notifier, SystemFrozenProbe};
use appsnap::policy::{self, Job, Policy};
use appsnap::state::StateStore;

use super::args::{Cli, PluginArgs, RunArgs};
use super::cloud::block_on;

/// What a one-off run leaves behind besides the group.
#[derive(Debug, Clone, Copy)]
struct Leaves<'a> {
    /// Write the result to the state store (`appsnap status`).
    record: bool,
    /// The policy job whose retention applies after a successful run.
    prune: Option<&'a Job>,
    /// The policy job whose sinks, ping and metrics hear of the run.
    alerts: Option<&'a Job>,
}

/// The longest `appsnap run` waits for its notifications after the result
/// line (each delivery is bounded by its own timeouts and retries too).
const DELIVERY_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// `run JOB`.
pub fn run(cli: &Cli, args: &RunArgs) -> u8 {
    let policy = match policy::load(&cli.config, &cli.config_dir) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{}", super::check::policy_failure(&e));
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
        // Chosen here so a run that cannot connect is recorded under it too.
        run_id: Some(appsnap::job::report::fresh_run_id()),
        ..RunOptions::default()
    };
    // A dry run changes nothing: no record, no retention.
    let leaves = Leaves {
        record: !args.dry_run,
        prune: (!args.dry_run && !args.no_prune).then_some(&job),
        alerts: (!args.dry_run).then_some(&job),
    };
    one_run(&policy, &RunSpec::from(&job), opts, leaves)
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
                eprintln!("{}", super::check::policy_failure(&e));
                return finish_without_run(Outcome::InvalidParameters);
            }
        }
    } else {
        policy::parse_str(&cli.config, "").expect("the empty policy is valid")
    };
    policy.cloud.ram_role = Some(params.ram_role_name.clone());
    let spec = params.to_spec();
    let opts = RunOptions {
        dry_run: false,
        group_name: Some(params.name.clone()),
        plugin: true,
        ..RunOptions::default()
    };
    // The plugin's groups belong to no job: nothing recorded, nothing pruned.
    let leaves = Leaves {
        record: false,
        prune: None,
        alerts: None,
    };
    one_run(&policy, &spec, opts, leaves)
}

/// Connects, then [`execute::execute`]; prints the summary and the result
/// line; then tells the job's sinks, ping and metrics (and waits, bounded,
/// for those deliveries: the process is all there is to send them).
fn one_run(policy: &Policy, spec: &RunSpec, opts: RunOptions, leaves: Leaves<'_>) -> u8 {
    let store = StateStore::new(&policy.host.state_dir);
    let record = leaves.record.then_some(Recording {
        store: &store,
        lock: None,
        scheduled_for: None,
    });
    let code = block_on(async {
        let notifier = leaves.alerts.map(|job| {
            let host = HostIdentity::local(policy.cloud.instance_id.clone());
            let probe = SystemFrozenProbe {
                run_dir: policy.host.run_dir.clone(),
            };
            let for_metrics = policy.clone();
            let n = Notifier::new(host, &policy.host.state_dir, Box::new(probe))
                .with_after_record(move || alerts::write_metrics(&for_metrics));
            let previous = alerts::previous_exit(policy, job);
            if let Some(id) = &opts.run_id {
                alerts::run_starting(&n, job, id);
            }
            (n, job, previous)
        });
        let done = match Cloud::connect(&policy.cloud).await {
            Err(e) => execute::connect_failed(&spec.name, opts.run_id.clone(), &e, record).await,
            Ok(cloud) => {
                if let Some((n, _, _)) = &notifier {
                    n.set_instance_id(&cloud.instance_id);
                }
                let env = RunEnv::from_policy(policy, Arc::new(cloud.ecs), cloud.instance_id);
                let after = After {
                    prune: leaves.prune,
                    record,
                };
                execute::execute(&env, spec, opts, after).await
            }
        };
        summarize(&done);
        println!("{}", done.report.result_line());
        if let Some((n, job, previous)) = notifier {
            alerts::run_finished(&n, policy, job, &done, previous).await;
            let left = n.drain(DELIVERY_WAIT).await;
            if left > 0 {
                eprintln!("appsnap: warning: {left} notification(s) still undelivered after {}s; given up", DELIVERY_WAIT.as_secs());
            }
        }
        done.report.exit_code
    });
    match code {
        Ok(code) => code,
        Err(e) => {
            eprintln!("appsnap: cannot start the runtime: {e:#}");
            finish_without_run(Outcome::Unknown)
        }
    }
}

/// What an operator reads at the terminal before the vendor line.
fn summarize(done: &Executed) {
    let r = &done.report;
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
    match &done.retention {
        Retention::Done(p) => {
            let deleted: Vec<&str> = p.deleted.iter().map(|v| v.id.as_str()).collect();
            eprintln!(
                "retention: deleted {} group(s){}{}, kept {}, failed {}",
                deleted.len(),
                if deleted.is_empty() { "" } else { ": " },
                deleted.join(", "),
                p.kept.len(),
                p.failed.len()
            );
            for f in &p.failed {
                eprintln!(
                    "retention: {} not deleted ({}): {}",
                    f.id, f.reason, f.error
                );
            }
        }
        Retention::Failed(e) => eprintln!("retention: skipped: {e}"),
        Retention::NoOwner => {
            eprintln!(
                "retention: skipped: no owner id, so no group can be proven this installation's"
            )
        }
        Retention::NotAsked | Retention::NotSuccessful(_) => {}
    }
}

/// The vendor line for a run that never started.
fn finish_without_run(o: Outcome) -> u8 {
    println!("{}", o.result_line(None));
    o.code()
}
