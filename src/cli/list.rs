//! `appsnap list [--job J] [--json]`: the snapshot groups appsnap created on
//! this instance (those carrying the `appsnap:job` tag), newest first.

use std::time::Duration;

use appsnap::cloud::ecs::{SnapshotGroup, SnapshotGroupFilter, Tag};
use appsnap::cloud::{Cloud, CloudError, TAG_JOB};
use appsnap::job::outcome::Outcome;
use appsnap::policy;
use appsnap::retention;
use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::time::Instant;

use super::args::{Cli, ListArgs};
use super::cloud::{block_on, outcome};
use super::printable::{printable, printable_lines};

/// How long listing may take in all, retries included.
const LIST_DEADLINE: Duration = Duration::from_secs(60);

/// Runs `list`; exit 0, 2 for a bad policy, else the cloud failure's code.
pub fn run(cli: &Cli, args: &ListArgs) -> u8 {
    let policy = match policy::load(&cli.config, &cli.config_dir) {
        Ok(p) => p,
        Err(e) => {
            eprintln!(
                "appsnap: policy rejected:\n{}",
                printable_lines(&e.to_string())
            );
            return Outcome::InvalidParameters.code();
        }
    };
    if args.prune_preview {
        return preview(&policy, args);
    }
    let fetched = match block_on(fetch(&policy.cloud, args.job.as_deref())) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("appsnap: list: {}", printable_lines(&format!("{e:#}")));
            return Outcome::Unknown.code();
        }
    };
    let rows = match fetched {
        Ok(rows) => rows,
        Err(e) => {
            eprintln!("appsnap: list: {}", printable_lines(&e.to_string()));
            return outcome(&e).code();
        }
    };
    if args.json {
        match serde_json::to_string_pretty(&rows) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("appsnap: list: {}", printable_lines(&e.to_string()));
                return Outcome::Unknown.code();
            }
        }
    } else {
        print!("{}", table(&rows, Utc::now()));
    }
    Outcome::Success.code()
}

/// `--prune-preview`: what retention would delete now, with the same
/// selection the daemon uses (no group is protected as "just created").
fn preview(policy: &policy::Policy, args: &ListArgs) -> u8 {
    let name = args.job.as_deref().unwrap_or_default();
    let Some(job) = policy.job(name) else {
        eprintln!("appsnap: list: no job named {name:?} in the policy");
        return Outcome::InvalidParameters.code();
    };
    // Read only: a preview never creates the installation's owner ID.
    let owner = match appsnap::owner::load(&policy.host.state_dir) {
        Ok(Some(o)) => o,
        Ok(None) => {
            eprintln!(
                "appsnap: list: no owner id in {}: this installation has created no group yet, so retention would delete nothing",
                policy.host.state_dir.display()
            );
            return Outcome::Success.code();
        }
        Err(e) => {
            eprintln!("appsnap: list: {e}");
            return Outcome::InvalidParameters.code();
        }
    };
    let assessed = block_on(async {
        let cloud = Cloud::connect(&policy.cloud).await?;
        let deadline = Instant::now() + LIST_DEADLINE;
        retention::assess(
            &cloud.ecs,
            job,
            &cloud.instance_id,
            &owner,
            Utc::now(),
            None,
            deadline,
        )
        .await
        .map_err(PreviewError::Retention)
    });
    let selection = match assessed {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            eprintln!("appsnap: list: {}", printable_lines(&e.to_string()));
            return match &e {
                PreviewError::Cloud(c) => outcome(c).code(),
                PreviewError::Retention(_) => Outcome::Unknown.code(),
            };
        }
        Err(e) => {
            eprintln!("appsnap: list: {}", printable_lines(&format!("{e:#}")));
            return Outcome::Unknown.code();
        }
    };
    let rules = retention::Rules::of(job);
    if args.json {
        let v = serde_json::json!({
            "job": name,
            "keep_last": rules.keep_last,
            "max_age_days": rules.max_age_days,
            "delete": selection.delete,
            "keep": selection.keep,
        });
        match serde_json::to_string_pretty(&v) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("appsnap: list: {}", printable_lines(&e.to_string()));
                return Outcome::Unknown.code();
            }
        }
    } else {
        print!("{}", preview_table(name, rules, &selection));
    }
    Outcome::Success.code()
}

#[derive(Debug, thiserror::Error)]
enum PreviewError {
    #[error(transparent)]
    Cloud(#[from] CloudError),
    #[error(transparent)]
    Retention(retention::RetentionError),
}

fn setting(v: Option<u32>) -> String {
    v.map_or_else(|| "unset".to_string(), |n| n.to_string())
}

/// The preview as operators read it: one line per group of the job, newest first.
pub fn preview_table(job: &str, rules: retention::Rules, s: &retention::Selection) -> String {
    let mut out = format!(
        "job {job}: keep_last={}, max_age_days={}: {} to delete, {} to keep\n",
        setting(rules.keep_last),
        setting(rules.max_age_days),
        s.delete.len(),
        s.keep.len()
    );
    let mut all: Vec<(&str, &retention::Verdict)> = s
        .delete
        .iter()
        .map(|v| ("DELETE", v))
        .chain(s.keep.iter().map(|v| ("keep", v)))
        .collect();
    all.sort_by(|a, b| {
        b.1.created
            .cmp(&a.1.created)
            .then_with(|| b.1.id.cmp(&a.1.id))
    });
    for (what, v) in all {
        let created = v
            .created
            .map_or_else(|| "?".to_string(), |t| t.to_rfc3339());
        out.push_str(&format!(
            "{what:<7} {:<26} {:<26} {:<6} {}\n",
            printable(&v.id),
            created,
            v.consistency.unwrap_or("-"),
            printable(&v.reason())
        ));
    }
    out
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
    // Consistency is tagged on the snapshots; without their tags, say "-".
    let tags = retention::snapshot_tags(&cloud.ecs, &groups, deadline)
        .await
        .unwrap_or_default();
    Ok(rows(groups, job, &tags))
}

/// Keeps appsnap's groups (of `job`, if given), newest first.
pub fn rows(
    groups: Vec<SnapshotGroup>,
    job: Option<&str>,
    snapshot_tags: &std::collections::HashMap<String, Vec<Tag>>,
) -> Vec<Row> {
    let mut rows: Vec<Row> = groups
        .into_iter()
        .filter_map(|g| {
            // `appsnap plugin` groups carry `appsnap:plugin=<Name>` instead of a job.
            let owner = match (g.tag(TAG_JOB), g.tag(appsnap::owner::TAG_PLUGIN)) {
                (Some(j), _) => j.to_string(),
                (None, Some(n)) => format!("plugin:{n}"),
                (None, None) => return None,
            };
            if job.is_some_and(|j| j != owner) {
                return None;
            }
            let consistency = match retention::GroupFacts::from_group(&g, snapshot_tags).consistency
            {
                Some(appsnap::state::Consistency::App) => "application",
                Some(appsnap::state::Consistency::Fs) => "file-system",
                Some(appsnap::state::Consistency::Crash) => "crash",
                _ => "-",
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
            printable(&r.id),
            printable(&r.job),
            printable(&r.status),
            printable(&r.consistency),
            age,
            printable(&r.disks.join(","))
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
    use appsnap::cloud::TAG_APP_CONSISTENT;

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
    fn plugin_groups_are_listed_as_the_plugins_never_as_a_jobs() {
        let mut p = group("ssg-plugin", None, "2025-01-01T00:00:00Z", false);
        p.tags.push(Tag::new(appsnap::owner::TAG_PLUGIN, "mysql"));
        let tags = std::collections::HashMap::new();
        let all = rows(vec![p.clone()], None, &tags);
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].job, "plugin:mysql");
        assert!(rows(vec![p], Some("mysql"), &tags).is_empty());
    }

    #[test]
    fn the_table_escapes_control_characters_from_the_api() {
        let mut g = group(
            "ssg-\u{1b}[2Jx",
            Some("job\u{1b}]0;title\u{7}"),
            "2025-01-01T00:00:00Z",
            false,
        );
        g.status = "accomplished\r\u{9b}".into();
        g.snapshots[0].source_disk_id = "d-\u{202e}a".into();
        let r = rows(vec![g], None, &Default::default());
        let now = DateTime::parse_from_rfc3339("2025-01-02T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let t = table(&r, now);
        let raw: Vec<char> = t
            .chars()
            .filter(|c| (c.is_control() && *c != '\n') || *c == '\u{202e}')
            .collect();
        assert!(raw.is_empty(), "raw {raw:?} in {t}");
        assert!(
            t.contains("ssg-\\x1b[2Jx") && t.contains("job\\x1b]0;title\\x07"),
            "{t}"
        );
        assert!(
            t.contains("accomplished\\x0d\\u{9b}") && t.contains("d-\\u{202e}a"),
            "{t}"
        );
    }

    #[test]
    fn keeps_appsnap_groups_newest_first() {
        let g = vec![
            group("ssg-old", Some("mysql"), "2025-01-01T00:00:00Z", true),
            group("ssg-foreign", None, "2025-01-03T00:00:00Z", false),
            group("ssg-new", Some("mysql"), "2025-01-02T00:00:00Z", false),
            group("ssg-pg", Some("pg"), "2025-01-02T12:00:00Z", false),
        ];
        let mut tags = std::collections::HashMap::new();
        tags.insert(
            "s-ssg-old".to_string(),
            vec![Tag::new(TAG_APP_CONSISTENT, "True")],
        );
        tags.insert(
            "s-ssg-new".to_string(),
            vec![Tag::new("appsnap:consistency", "crash")],
        );
        let all = rows(g.clone(), None, &tags);
        let ids: Vec<&str> = all.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["ssg-pg", "ssg-new", "ssg-old"]);
        assert_eq!(all[2].consistency, "application");
        assert_eq!(all[1].consistency, "crash");
        let mysql = rows(g, Some("mysql"), &tags);
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
