//! `appsnap check`: validate the policy, print what each job will do and when.

use anyhow::Result;
use appsnap::job::outcome::Outcome;
use appsnap::policy::{self, DiskSelection, Job};

use super::args::{CheckArgs, Cli};

/// Runs `check`; exit 0 ok, 2 bad policy, 1 preflight condition not met.
pub fn run(cli: &Cli, args: &CheckArgs) -> u8 {
    match offline(cli) {
        Ok(()) => {}
        Err(e) => {
            eprintln!("appsnap: policy rejected:\n{e:#}");
            return Outcome::InvalidParameters.code();
        }
    }
    if args.offline {
        return Outcome::Success.code();
    }
    eprintln!(
        "appsnap: check: the cloud preflight is not available yet in this build; use --offline"
    );
    Outcome::Unknown.code()
}

/// Validates the policy files and prints one line per job with its next runs.
fn offline(cli: &Cli) -> Result<()> {
    let files = policy::sources(&cli.config, &cli.config_dir)?;
    let policy = policy::load(&cli.config, &cli.config_dir)?;
    let names: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
    println!(
        "policy ok: {} job(s) from {}",
        policy.jobs.len(),
        names.join(", ")
    );
    let now = chrono::Utc::now();
    for job in &policy.jobs {
        println!("{}", summary(job, now));
    }
    Ok(())
}

/// `job "mysql": "30 2 * * *" Asia/Shanghai, disks d-a,d-b, freeze 30s; next: ...`
fn summary(job: &Job, now: chrono::DateTime<chrono::Utc>) -> String {
    let disks = match &job.disks {
        DiskSelection::List(l) => l.iter().map(|d| d.as_str()).collect::<Vec<_>>().join(","),
        DiskSelection::All { exclude } if exclude.is_empty() => "all".to_string(),
        DiskSelection::All { exclude } => format!(
            "all except {}",
            exclude
                .iter()
                .map(|d| d.as_str())
                .collect::<Vec<_>>()
                .join(",")
        ),
    };
    let freeze = if job.fs_freeze {
        format!("freeze ≤{}s", job.freeze_timeout.as_secs())
    } else {
        "no freeze".to_string()
    };
    let scripts = if job.prescript.is_some() || job.postscript.is_some() {
        "scripts"
    } else {
        "no scripts (file-system-consistent)"
    };
    let next: Vec<String> = job
        .next_runs(now, 3)
        .iter()
        .map(|t| t.format("%Y-%m-%d %H:%M:%S %:z").to_string())
        .collect();
    let next = if next.is_empty() {
        "never (the schedule matches no date)".to_string()
    } else {
        next.join(", ")
    };
    format!(
        "job {:?}: {:?} ({}), disks {disks}, {freeze}, {scripts}; next: {next}",
        job.name.as_str(),
        job.schedule.as_str(),
        job.zone
    )
}
