//! `appsnap check`: validate the policy, print what each job will do and when.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::Result;
use appsnap::cloud::ecs::DeletePermission;
use appsnap::cloud::{Cloud, CloudError};
use appsnap::job::disks::{refusal_outcome, select_disks};
use appsnap::job::outcome::Outcome;
use appsnap::policy::{self, DiskSelection, Job, Policy, PolicyError};
use tokio::time::Instant;

use super::args::{CheckArgs, Cli};
use super::cloud::{block_on, outcome};

/// Validity `check` asks of the credentials: enough to show they work.
const CHECK_CREDENTIAL_VALIDITY: Duration = Duration::from_secs(300);
/// How long the DescribeDisks preflight may take, retries included.
const CHECK_API_DEADLINE: Duration = Duration::from_secs(60);

/// Runs `check`; exit 0 ok, 2 bad policy, 1 preflight condition not met.
pub fn run(cli: &Cli, args: &CheckArgs) -> u8 {
    let policy = match offline(cli) {
        Ok(p) => p,
        Err(e) => {
            match e.downcast_ref::<PolicyError>() {
                Some(pe) => eprintln!("{}", policy_failure(pe)),
                None => eprintln!("appsnap: policy rejected:\n{e:#}"),
            }
            return Outcome::InvalidParameters.code();
        }
    };
    if args.offline {
        return Outcome::Success.code();
    }
    match block_on(preflight(&policy)) {
        Ok(outcome) => outcome.code(),
        Err(e) => {
            eprintln!("appsnap: check: {e:#}");
            Outcome::Unknown.code()
        }
    }
}

/// How every command reports a policy it could not load: "policy rejected"
/// only for one it read and refused; a missing or unreadable file says so.
pub(super) fn policy_failure(e: &PolicyError) -> String {
    if e.is_rejection() {
        format!("appsnap: policy rejected:\n{e}")
    } else {
        format!("appsnap: {e}")
    }
}

/// The cloud preflight: metadata reachable, credentials obtained, DescribeDisks
/// answers, and every job's disks are attached, supported and not multi-attach.
/// Connects as a run does ([`Cloud::connect`]) and selects each job's disks
/// with the job's own rules ([`select_disks`]), so `check` says what a run would.
/// Successes go to stdout; each failure is one line on stderr.
async fn preflight(policy: &Policy) -> Outcome {
    let settings = &policy.cloud;
    let fail = |what: &str, e: &CloudError| {
        eprintln!("{what}: {e}");
        outcome(e)
    };
    let fail = |what: &str, e: &CloudError| {
        if let CloudError::Metadata(m) = e {
            if m.suggests_not_ecs() {
                eprintln!("{what}: {}", not_ecs(&settings.metadata_endpoint, m));
                return outcome(e);
            }
        }
        fail(what, e)
    };
    let cloud = match Cloud::connect(settings).await {
        Ok(c) => c,
        Err(e) => return fail(part(&e), &e),
    };
    // Always from the metadata service, even when the policy names the
    // instance: appsnap can only freeze this machine's file systems.
    let identity = match cloud.metadata.identity().await {
        Ok(id) => id,
        Err(e) => return fail("metadata", &e.into()),
    };
    println!(
        "metadata ok: instance {}, region {}, zone {}",
        identity.instance_id, identity.region_id, identity.zone_id
    );
    let instance_id = &cloud.instance_id;
    if *instance_id != identity.instance_id {
        eprintln!(
            "cloud.instance_id {instance_id} is not this instance ({}): appsnap can only freeze this machine's file systems",
            identity.instance_id
        );
        return Outcome::ConditionsNotMet;
    }
    let credentials = &cloud.credentials;
    match credentials
        .ensure_valid_for(CHECK_CREDENTIAL_VALIDITY)
        .await
    {
        Ok(key) => {
            let until = key
                .expiration
                .map(|t| format!("valid until {}", t.format("%Y-%m-%dT%H:%M:%SZ")))
                .unwrap_or_else(|| "no expiry".into());
            println!("credentials ok: {}, {until}", credentials.origin());
        }
        Err(e) => return fail("credentials", &e.into()),
    }
    let ecs = &cloud.ecs;
    let deadline = Instant::now() + CHECK_API_DEADLINE;
    let disks = match ecs.describe_disks(instance_id, &[], deadline).await {
        Ok(d) => d,
        Err(e) => return fail("ecs DescribeDisks", &e.into()),
    };
    let listed: Vec<String> = disks
        .iter()
        .map(|d| format!("{} ({}, {})", d.disk_id, d.category, d.disk_type))
        .collect();
    println!(
        "ecs ok ({}): {} disk(s) attached to {instance_id}: {}",
        ecs.endpoint(),
        disks.len(),
        listed.join(", ")
    );
    let mut result = Outcome::Success;
    // Retention deletes groups: the vendor's policy does not grant that, so
    // ask ECS (changing nothing) once, for every job that prunes.
    let pruning: Vec<&Job> = policy
        .jobs
        .iter()
        .filter(|j| j.keep_last.is_some() || j.max_age_days.is_some())
        .collect();
    if !pruning.is_empty() {
        match ecs
            .probe_delete_permission(Instant::now() + CHECK_API_DEADLINE)
            .await
        {
            Ok(DeletePermission::Allowed) => {
                for job in &pruning {
                    println!(
                        "job {:?}: retention ok: the role may call ecs:DeleteSnapshotGroup",
                        job.name.as_str()
                    );
                }
            }
            Ok(DeletePermission::Denied(code)) => {
                for job in &pruning {
                    eprintln!(
                        "job {:?}: the role lacks ecs:DeleteSnapshotGroup, which its retention (keep_last/max_age_days) needs (ECS answered {code}); add it to the role's policy or drop the job's retention",
                        job.name.as_str()
                    );
                }
                result = Outcome::NoDisksOrPermission;
            }
            Err(e) => {
                for job in &pruning {
                    println!(
                        "job {:?}: warning: cannot tell whether the role may call ecs:DeleteSnapshotGroup for retention: {e}",
                        job.name.as_str()
                    );
                }
            }
        }
    }
    let mut job_disks: Vec<(&str, BTreeSet<String>)> = Vec::new();
    for job in &policy.jobs {
        let name = job.name.as_str();
        match select_disks(
            &job.disks,
            instance_id,
            &disks,
            settings.max_disks_per_group,
        ) {
            Ok(sel) => {
                for w in &sel.warnings {
                    println!("job {name:?}: warning: {w}");
                }
                for n in &sel.notes {
                    println!("job {name:?}: note: {n}");
                }
                let ids: Vec<&str> = sel.disks.iter().map(|d| d.disk_id.as_str()).collect();
                println!(
                    "job {name:?}: ok: {} disk(s): {}",
                    ids.len(),
                    ids.join(", ")
                );
                job_disks.push((name, ids.iter().map(|s| s.to_string()).collect()));
            }
            Err(problems) => {
                for p in &problems {
                    eprintln!("job {name:?}: {p}");
                }
                // The most specific code wins when several jobs are refused.
                let code = refusal_outcome(&job.disks, &problems);
                if result == Outcome::Success || code == Outcome::NoDisksOrPermission {
                    result = code;
                }
            }
        }
    }
    for w in database_layout_warnings(policy, &disks, &job_disks) {
        println!("{w}");
    }
    result
}

/// `check`'s warnings about running PostgreSQL clusters split across a job's
/// disks and others (see `host::pg_layout`); nothing when none runs.
fn database_layout_warnings(
    policy: &Policy,
    disks: &[appsnap::cloud::ecs::Disk],
    jobs: &[(&str, BTreeSet<String>)],
) -> Vec<String> {
    use appsnap::host::{pg_layout, DiskRequest, HostPaths, HostView};
    let paths = HostPaths::system(&policy.host.by_id_dir);
    let clusters = pg_layout::running_clusters(&paths.proc_root);
    if clusters.is_empty() || jobs.is_empty() {
        return Vec::new();
    }
    // Every disk of the instance, so that each part of a cluster is placed.
    let requests: Vec<DiskRequest> = disks
        .iter()
        .filter_map(|d| {
            let id = appsnap::policy::DiskId::parse(&d.disk_id).ok()?;
            Some(DiskRequest::listed(id, &d.serial_number))
        })
        .collect();
    let plan = match HostView::read(&paths)
        .and_then(|view| appsnap::host::build_plan(&view, &requests, &policy.host.run_dir))
    {
        Ok(p) => p,
        Err(e) => {
            return vec![format!(
                "note: cannot tell which disks the running PostgreSQL clusters are on: {e}"
            )]
        }
    };
    let mut out = Vec::new();
    for c in &clusters {
        let part_disks: Vec<Vec<String>> = c
            .parts
            .iter()
            .map(|p| pg_layout::disks_of(&plan, &p.path))
            .collect();
        for (name, set) in jobs {
            for w in pg_layout::layout_warnings(c, &part_disks, set) {
                out.push(format!("job {name:?}: warning: {w}"));
            }
        }
    }
    out
}

/// The metadata service is not there (or is not one): the usual cause is a
/// machine that is not an ECS instance, which a newcomer trying appsnap on a
/// laptop or another cloud meets first; say that, then what to check.
fn not_ecs(endpoint: &str, e: &appsnap::cloud::metadata::MetadataError) -> String {
    use appsnap::cloud::metadata::{MetadataError, TOKEN_TTL_HEADER};
    let how = match e {
        MetadataError::Unreachable { .. } => "did not answer",
        _ => "answered, but not as ECS's does",
    };
    format!(
        "this does not look like an Alibaba Cloud ECS instance: the metadata service at {endpoint} {how} ({e}); \
         check that appsnap runs on an ECS instance (there `curl -X PUT -H '{TOKEN_TTL_HEADER}: 60' {endpoint}/latest/api/token` prints a token), \
         that no firewall, route or proxy setting keeps it from {endpoint}, \
         and that [cloud] metadata_endpoint is right (leave it out on ECS; `check --offline` validates the policy alone)"
    )
}

/// Which part of the cloud side failed to connect, as `check` labels its lines.
fn part(e: &CloudError) -> &'static str {
    match e {
        CloudError::Metadata(_) => "metadata",
        CloudError::Credentials(_) => "credentials",
        CloudError::Ecs(_) => "ecs",
    }
}

/// Validates the policy files and prints one line per job with its next runs.
fn offline(cli: &Cli) -> Result<Policy> {
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
        if let Some(w) = sub_minute_warning(job, now) {
            println!("{w}");
        }
        for w in notify_warnings(job).into_iter().chain(verify_warnings(job)) {
            println!("job {:?}: warning: {w}", job.name.as_str());
        }
    }
    if let Some(path) = &policy.metrics.textfile {
        if let Err(e) = appsnap::metrics::check_textfile(path) {
            println!("warning: no metrics will be written: {e}");
        }
    }
    Ok(policy)
}

/// What would make the job's notifications fail: an `exec` command that is
/// not a hook appsnap would run, a webhook key file it would not read.
/// Warnings, not errors: a run never fails because of a sink.
fn notify_warnings(job: &Job) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(path) = &job.notify.exec {
        if let Err(e) = appsnap::job::script_check::open_script(path) {
            out.push(format!("notify.exec will not run: {e}"));
        }
    }
    if let Some(path) = &job.notify.webhook_key_file {
        if let Err(e) = appsnap::notify::webhook::HmacKey::read(path) {
            out.push(format!("webhook events will not be sent: {e}"));
        }
    }
    out
}

/// A `verify_script` a drill would refuse (the hooks' rules): the drill then
/// fails. A warning: snapshots are not affected.
fn verify_warnings(job: &Job) -> Vec<String> {
    match &job.verify.script {
        Some(path) => match appsnap::job::script_check::open_script(path) {
            Ok(_) => Vec::new(),
            Err(e) => vec![format!(
                "verify_script will not run, so restore drills fail: {e}"
            )],
        },
        None => Vec::new(),
    }
}

/// A job over every disk that fires more often than once a minute freezes
/// every file system of the instance (`/` included) again and again, and
/// each run uses snapshot quota and API rate; a policy someone wrote by
/// mistake (or a drop-in someone wrote on purpose) should not do that
/// silently. Not refused: a short-lived test may want it.
fn sub_minute_warning(job: &Job, now: chrono::DateTime<chrono::Utc>) -> Option<String> {
    if !matches!(job.disks, DiskSelection::All { .. }) {
        return None;
    }
    // Three fires are enough: if a minute holds two, the 2nd and 3rd share one.
    let next = job.next_runs(now, 3);
    let gap = next
        .windows(2)
        .map(|w| w[1].signed_duration_since(w[0]).num_seconds())
        .min()?;
    (gap < 60).then(|| {
        format!(
            "job {:?}: warning: schedule {:?} fires every {gap}s, more often than once a minute, with disks = \"all\": each run freezes every file system of the instance and takes a snapshot group of every disk (quota and API rate); use a schedule of at most once a minute, or list the disks",
            job.name.as_str(),
            job.schedule.as_str()
        )
    })
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
