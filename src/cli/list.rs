//! `appsnap list [--job J] [--json]`: the snapshot groups appsnap created on
//! this instance (those carrying the `appsnap:job` tag), newest first.

use std::time::Duration;

use appsnap::cloud::ecs::{SnapshotGroup, SnapshotGroupFilter, Tag};
use appsnap::cloud::{Cloud, CloudError, TAG_APP_CONSISTENT, TAG_FS_CONSISTENT, TAG_JOB};
use appsnap::job::outcome::Outcome;
use appsnap::policy;
use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::time::Instant;

use super::args::{Cli, ListArgs};
use super::cloud::{block_on, outcome};

/// How long listing may take in all, retries included.
const LIST_DEADLINE: Duration = Duration::from_secs(60);

/// Runs `list`; exit 0, 2 for a bad policy, else the cloud failure's code.
pub fn run(cli: &Cli, args: &ListArgs) -> u8 {
    let policy = match policy::load(&cli.config, &cli.config_dir) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("appsnap: policy rejected:\n{e}");
            return Outcome::InvalidParameters.code();
        }
    };
    let fetched = match block_on(fetch(&policy.cloud, args.job.as_deref())) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("appsnap: list: {e:#}");
            return Outcome::Unknown.code();
        }
    };
    let rows = match fetched {
        Ok(rows) => rows,
        Err(e) => {
            eprintln!("appsnap: list: {e}");
            return outcome(&e).code();
        }
    };
    if args.json {
        match serde_json::to_string_pretty(&rows) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("appsnap: list: {e}");
                return Outcome::Unknown.code();
            }
        }
    } else {
        print!("{}", table(&rows, Utc::now()));
    }
    Outcome::Success.code()
}

/// One group as `list` shows it.
#[derive(Debug, Serialize)]
pub struct Row {
    /// `ssg-...`
    pub id: String,
    /// The job that created it.
    pub job: String,
    /// Group name.
    pub name: String,
    /// `progressing`, `accomplished`, `failed`.
    pub status: String,
    /// `application`, `file-system` or `crash`.
    pub consistency: String,
    /// Source disks.
    pub disks: Vec<String>,
    /// Snapshot IDs.
    pub snapshots: Vec<String>,
    /// Creation time as ECS reports it (RFC 3339, UTC).
    pub created: String,
}

async fn fetch(
    settings: &policy::CloudSettings,
    job: Option<&str>,
) -> Result<Vec<Row>, CloudError> {
    let cloud = Cloud::connect(settings).await?;
    let deadline = Instant::now() + LIST_DEADLINE;
    let filter = SnapshotGroupFilter {
        instance_id: Some(cloud.instance_id.clone()),
        tags: job.map(|j| vec![Tag::new(TAG_JOB, j)]).unwrap_or_default(),
        ..Default::default()
    };
    let groups = cloud
        .ecs
        .describe_snapshot_groups(&filter, deadline)
        .await?;
    Ok(rows(groups, job))
}

/// Keeps appsnap's groups (of `job`, if given), newest first.
pub fn rows(groups: Vec<SnapshotGroup>, job: Option<&str>) -> Vec<Row> {
    let mut rows: Vec<Row> = groups
        .into_iter()
        .filter_map(|g| {
            let owner = g.tag(TAG_JOB)?.to_string();
            if job.is_some_and(|j| j != owner) {
                return None;
            }
            let consistency = if g.tag(TAG_APP_CONSISTENT).is_some_and(is_true) {
                "application"
            } else if g.tag(TAG_FS_CONSISTENT).is_some_and(is_true) {
                "file-system"
            } else {
                "crash"
            };
            Some(Row {
                job: owner,
                consistency: consistency.to_string(),
                disks: g
                    .snapshots
                    .iter()
                    .map(|s| s.source_disk_id.clone())
                    .collect(),
                snapshots: g.snapshots.iter().map(|s| s.snapshot_id.clone()).collect(),
                id: g.snapshot_group_id,
                name: g.name,
                status: g.status,
                created: g.creation_time,
            })
        })
        .collect();
    rows.sort_by(|a, b| created(b).cmp(&created(a)).then_with(|| b.id.cmp(&a.id)));
    rows
}

fn is_true(v: &str) -> bool {
    v.eq_ignore_ascii_case("true")
}

fn created(r: &Row) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(&r.created)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// A fixed-width table, one group per line.
pub fn table(rows: &[Row], now: DateTime<Utc>) -> String {
    if rows.is_empty() {
        return "no snapshot groups created by appsnap on this instance\n".to_string();
    }
    let mut out = format!(
        "{:<26} {:<20} {:<13} {:<12} {:>7}  {}\n",
        "GROUP", "JOB", "STATUS", "CONSISTENCY", "AGE", "DISKS"
    );
    for r in rows {
        let age = created(r)
            .map(|t| human_age(now.signed_duration_since(t)))
            .unwrap_or_else(|| "?".into());
        out.push_str(&format!(
            "{:<26} {:<20} {:<13} {:<12} {:>7}  {}\n",
            r.id,
            r.job,
            r.status,
            r.consistency,
            age,
            r.disks.join(",")
        ));
    }
    out
}

fn human_age(d: chrono::Duration) -> String {
    let s = d.num_seconds().max(0);
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        7200..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use appsnap::cloud::ecs::GroupSnapshot;

    fn group(id: &str, job: Option<&str>, created: &str, app: bool) -> SnapshotGroup {
        let mut tags = Vec::new();
        if let Some(j) = job {
            tags.push(Tag::new(TAG_JOB, j));
        }
        if app {
            tags.push(Tag::new(TAG_APP_CONSISTENT, "True"));
        }
        SnapshotGroup {
            snapshot_group_id: id.into(),
            status: "accomplished".into(),
            creation_time: created.into(),
            tags,
            snapshots: vec![GroupSnapshot {
                snapshot_id: format!("s-{id}"),
                source_disk_id: "d-a".into(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn keeps_appsnap_groups_newest_first() {
        let g = vec![
            group("ssg-old", Some("mysql"), "2025-01-01T00:00:00Z", true),
            group("ssg-foreign", None, "2025-01-03T00:00:00Z", false),
            group("ssg-new", Some("mysql"), "2025-01-02T00:00:00Z", false),
            group("ssg-pg", Some("pg"), "2025-01-02T12:00:00Z", false),
        ];
        let all = rows(g.clone(), None);
        let ids: Vec<&str> = all.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["ssg-pg", "ssg-new", "ssg-old"]);
        assert_eq!(all[2].consistency, "application");
        assert_eq!(all[1].consistency, "crash");
        let mysql = rows(g, Some("mysql"));
        assert_eq!(mysql.len(), 2);
        let now = DateTime::parse_from_rfc3339("2025-01-03T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let t = table(&mysql, now);
        assert!(
            t.contains("ssg-new") && t.contains("24h") && t.contains("2d"),
            "{t}"
        );
    }
}
