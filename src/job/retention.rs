//! Retention: after a successful run, delete this job's old snapshot groups.
//!
//! Split in two so the rules can be tested without a cloud and so
//! `appsnap list --prune-preview` shows exactly what a run would do:
//! [`select`] is pure (facts in, verdicts out); [`assess`] gathers the facts
//! from ECS and calls it; [`prune`] assesses and deletes.
//!
//! # Rules
//! * Only groups *this installation's job on this instance* created are
//!   considered: the group tag `appsnap:owner` must equal this installation's
//!   owner ID ([`crate::owner`]), the group tag `appsnap:job` must equal the
//!   job's name, there must be no `appsnap:plugin` tag (groups `appsnap plugin`
//!   made are never pruned by a job), and the instance must match — the
//!   `appsnap:instance` tag and the group's `InstanceId`, each when present,
//!   must equal this instance, and at least one must be present. Anything else
//!   (another installation with the same job name, a group tagged by hand, a
//!   group made by an appsnap older than the owner tag, other job, another
//!   instance, any disagreement) is foreign and never deleted. [`prune`]
//!   re-reads each group right before deleting it and checks this again.
//! * A group is **successful** when its status is `accomplished` and every one
//!   of its snapshots carries consistency `app` or `fs` (the
//!   `appsnap:consistency` tag, else the vendor's `AppConsistent` /
//!   `FsConsistent` tags). App- and fs-consistent groups count alike.
//! * `keep_last = N`: the N newest successful groups are kept; older
//!   successful ones go ("beyond keep_last=N").
//! * `max_age_days = D`: groups strictly older than D × 24 h go ("older than
//!   D days"); a group exactly D days old stays.
//! * The newest successful group is never deleted, whatever its age: if the
//!   job has been failing for weeks, the last good restore point survives.
//! * `progressing` (or any status appsnap does not know) is never deleted:
//!   it may be the run in flight, and ECS refuses to delete it anyway.
//! * `failed` groups and accomplished groups that are crash-consistent (or
//!   whose consistency is unknown, e.g. tagging failed) are *unsuccessful*:
//!   they never occupy a `keep_last` slot — otherwise a string of failed runs
//!   would push real restore points out — and they are deleted by
//!   `max_age_days` only. Without `max_age_days` they stay until an operator
//!   removes them (`appsnap list` shows them).
//! * A group whose creation time cannot be read is kept (its age is unknown).
//! * Nothing at all is deleted unless the run that triggered retention
//!   succeeded: [`prune`] demands a [`SuccessfulRun`], which can only be made
//!   from a successful run's report; the group that run created is protected.

use std::collections::HashMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::cloud::ecs::{
    DeleteOutcome, EcsClient, EcsError, SnapshotFilter, SnapshotGroup, SnapshotGroupFilter, Tag,
};
use crate::cloud::{TAG_APP_CONSISTENT, TAG_FS_CONSISTENT, TAG_INSTANCE, TAG_JOB};
use crate::job::machine::TAG_CONSISTENCY;
use crate::job::outcome::Outcome;
use crate::job::report::{weakest, RunReport};
use crate::owner::{OwnerId, TAG_OWNER, TAG_PLUGIN};
use crate::policy::Job;
use crate::state::Consistency;

/// Seconds in one retention day (`max_age_days` counts 24-hour days, not
/// calendar days, so DST never shortens or stretches one).
pub const DAY_SECS: i64 = 86_400;

/// DescribeSnapshots takes at most this many IDs per call.
const SNAPSHOT_IDS_PER_CALL: usize = 100;

/// The two retention settings of a job, apart from the rest of the policy so
/// the pure selection needs nothing else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Rules {
    /// Keep this many newest successful groups.
    pub keep_last: Option<u32>,
    /// Delete groups older than this many days.
    pub max_age_days: Option<u32>,
}

impl Rules {
    /// The job's settings.
    pub fn of(job: &Job) -> Rules {
        Rules {
            keep_last: job.keep_last,
            max_age_days: job.max_age_days,
        }
    }

    /// Whether retention has anything to do (no rule: nothing is ever deleted).
    pub fn is_empty(&self) -> bool {
        self.keep_last.is_none() && self.max_age_days.is_none()
    }
}

/// What selection needs to know about one group; built from ECS answers by
/// [`GroupFacts::from_group`], or by hand in tests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupFacts {
    /// `ssg-...`
    pub id: String,
    /// The `appsnap:job` group tag, if any.
    pub job_tag: Option<String>,
    /// The `appsnap:instance` group tag, if any.
    pub instance_tag: Option<String>,
    /// The `appsnap:owner` group tag: the installation that created it.
    pub owner_tag: Option<String>,
    /// The `appsnap:plugin` group tag: made by `appsnap plugin`, never pruned.
    pub plugin_tag: Option<String>,
    /// The group's `InstanceId` as ECS reports it (empty when not reported).
    pub instance_id: String,
    /// Creation time; `None` when ECS's value could not be parsed.
    pub created: Option<DateTime<Utc>>,
    /// ECS status: `progressing`, `accomplished`, `failed`.
    pub status: String,
    /// The weakest consistency over its snapshots; `None` when unknown
    /// (no snapshots, or some snapshot untagged).
    pub consistency: Option<Consistency>,
}

/// How selection classes a group of this job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Class {
    /// Accomplished, every snapshot app- or fs-consistent: a restore point.
    Successful,
    /// Failed, crash-consistent or of unknown consistency.
    Unsuccessful,
    /// Still being made (or a status appsnap does not know): untouchable.
    Progressing,
}

impl GroupFacts {
    /// Facts from DescribeSnapshotGroups' answer plus the per-snapshot
    /// consistency tags (snapshot id -> tags) from DescribeSnapshots, which
    /// DescribeSnapshotGroups does not return.
    pub fn from_group(g: &SnapshotGroup, snapshot_tags: &HashMap<String, Vec<Tag>>) -> GroupFacts {
        let mut consistency: Option<Consistency> = None;
        let mut unknown = g.snapshots.is_empty();
        for s in &g.snapshots {
            let level = snapshot_tags
                .get(&s.snapshot_id)
                .and_then(|tags| consistency_of(tags));
            match level {
                Some(l) => consistency = Some(weakest(consistency.unwrap_or(l), l)),
                None => unknown = true,
            }
        }
        GroupFacts {
            id: g.snapshot_group_id.clone(),
            job_tag: g.tag(TAG_JOB).map(str::to_string),
            instance_tag: g.tag(TAG_INSTANCE).map(str::to_string),
            owner_tag: g.tag(TAG_OWNER).map(str::to_string),
            plugin_tag: g.tag(TAG_PLUGIN).map(str::to_string),
            instance_id: g.instance_id.clone(),
            created: parse_time(&g.creation_time),
            status: g.status.clone(),
            consistency: if unknown { None } else { consistency },
        }
    }

    /// True only for a group this installation's job created on this
    /// instance (see the module's rules): the one test that guards every deletion.
    pub fn is_ours(&self, job: &str, instance_id: &str, owner: &OwnerId) -> bool {
        if self.owner_tag.as_deref() != Some(owner.as_str())
            || self.plugin_tag.is_some()
            || self.job_tag.as_deref() != Some(job)
        {
            return false;
        }
        let tag_ok = self.instance_tag.as_deref().map(|t| t == instance_id);
        let id_ok = (!self.instance_id.is_empty()).then(|| self.instance_id == instance_id);
        match (tag_ok, id_ok) {
            (None, None) => false,
            (a, b) => a.unwrap_or(true) && b.unwrap_or(true),
        }
    }

    /// Successful, unsuccessful or progressing (see [`Class`]).
    pub fn class(&self) -> Class {
        match self.status.to_ascii_lowercase().as_str() {
            "accomplished" => match self.consistency {
                Some(Consistency::App | Consistency::Fs) => Class::Successful,
                _ => Class::Unsuccessful,
            },
            "failed" => Class::Unsuccessful,
            _ => Class::Progressing,
        }
    }
}

/// Parses ECS's RFC 3339 time.
pub fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// A snapshot's consistency from its tags: appsnap's own tag first, then the
/// vendor's `AppConsistent` / `FsConsistent`.
fn consistency_of(tags: &[Tag]) -> Option<Consistency> {
    let get = |k: &str| tags.iter().find(|t| t.key == k).map(|t| t.value.as_str());
    match get(TAG_CONSISTENCY) {
        Some("app") => return Some(Consistency::App),
        Some("fs") => return Some(Consistency::Fs),
        Some("crash") => return Some(Consistency::Crash),
        _ => {}
    }
    let truthy = |k: &str| get(k).is_some_and(|v| v.eq_ignore_ascii_case("true"));
    if truthy(TAG_APP_CONSISTENT) {
        Some(Consistency::App)
    } else if truthy(TAG_FS_CONSISTENT) {
        Some(Consistency::Fs)
    } else {
        None
    }
}

/// Why a group goes or stays; `Display` is what logs and the preview show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "rule", rename_all = "snake_case")]
pub enum Reason {
    /// A successful group past the `keep_last` newest.
    BeyondKeepLast {
        /// The setting.
        keep_last: u32,
    },
    /// Strictly older than `max_age_days`.
    OlderThan {
        /// The setting.
        max_age_days: u32,
    },
    /// Kept: the newest successful group is never deleted.
    NewestSuccessful,
    /// Kept: the group the triggering run just created.
    JustCreated,
    /// Kept: still progressing (or an unknown status).
    Progressing,
    /// Kept: creation time unreadable, so its age is unknown.
    UnknownAge,
    /// Kept: within every rule.
    WithinRules,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::BeyondKeepLast { keep_last } => write!(f, "beyond keep_last={keep_last}"),
            Reason::OlderThan { max_age_days } => write!(f, "older than {max_age_days} days"),
            Reason::NewestSuccessful => f.write_str("newest successful group"),
            Reason::JustCreated => f.write_str("created by the run that triggered retention"),
            Reason::Progressing => f.write_str("still progressing"),
            Reason::UnknownAge => f.write_str("creation time unreadable"),
            Reason::WithinRules => f.write_str("within keep_last and max_age_days"),
        }
    }
}

/// One group of this job and what selection decided for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// `ssg-...`
    pub id: String,
    /// Creation time, when known.
    pub created: Option<DateTime<Utc>>,
    /// How the group was classed.
    pub class: Class,
    /// Its consistency, when known.
    pub consistency: Option<&'static str>,
    /// Every rule that applies (one or two to delete; exactly one to keep).
    pub reasons: Vec<Reason>,
}

impl Verdict {
    /// The reasons as one line: `beyond keep_last=7; older than 30 days`.
    pub fn reason(&self) -> String {
        self.reasons
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// What [`select`] decided: this job's groups only, newest first in each list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Selection {
    /// Groups to delete, each with why.
    pub delete: Vec<Verdict>,
    /// This job's groups that stay, each with why.
    pub keep: Vec<Verdict>,
    /// How many listed groups were not this job's on this instance (never touched).
    pub foreign: usize,
}

/// The pure retention decision (rules in the module doc). `protect` is the
/// group the triggering run just created, kept whatever the listing says
/// about it; the preview passes `None`. Deleting anything is the caller's
/// business, and [`prune`] does it only after a [`SuccessfulRun`].
pub fn select(
    job: &str,
    instance_id: &str,
    owner: &OwnerId,
    rules: Rules,
    now: DateTime<Utc>,
    protect: Option<&str>,
    groups: &[GroupFacts],
) -> Selection {
    let mut ours: Vec<&GroupFacts> = Vec::new();
    let mut foreign = 0;
    for g in groups {
        if g.is_ours(job, instance_id, owner) {
            ours.push(g);
        } else {
            foreign += 1;
        }
    }
    // Newest first; unknown times last; ties broken by ID for a stable order.
    ours.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| b.id.cmp(&a.id)));

    let mut out = Selection {
        foreign,
        ..Selection::default()
    };
    let mut successful_seen: u32 = 0;
    for g in ours {
        let class = g.class();
        let verdict = |reasons: Vec<Reason>| Verdict {
            id: g.id.clone(),
            created: g.created,
            class,
            consistency: g.consistency.map(Consistency::as_str),
            reasons,
        };
        let keep = |reason: Reason| verdict(vec![reason]);
        if protect == Some(g.id.as_str()) {
            if class == Class::Successful {
                successful_seen += 1;
            }
            out.keep.push(keep(Reason::JustCreated));
            continue;
        }
        let Some(created) = g.created else {
            out.keep.push(keep(Reason::UnknownAge));
            continue;
        };
        if class == Class::Progressing {
            out.keep.push(keep(Reason::Progressing));
            continue;
        }
        let mut reasons = Vec::new();
        if class == Class::Successful {
            successful_seen += 1;
            if successful_seen == 1 {
                out.keep.push(keep(Reason::NewestSuccessful));
                continue;
            }
            if let Some(n) = rules.keep_last {
                if successful_seen > n {
                    reasons.push(Reason::BeyondKeepLast { keep_last: n });
                }
            }
        }
        if let Some(days) = rules.max_age_days {
            if (now - created).num_seconds() > i64::from(days) * DAY_SECS {
                reasons.push(Reason::OlderThan { max_age_days: days });
            }
        }
        if reasons.is_empty() {
            out.keep.push(keep(Reason::WithinRules));
        } else {
            out.delete.push(verdict(reasons));
        }
    }
    out
}

/// Proof that the run which triggers retention succeeded; [`prune`] takes
/// one, so a failed run cannot prune by mistake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SuccessfulRun {
    job: String,
    group_id: String,
}

/// Why a run's report does not allow retention.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotSuccessful {
    /// The run's exit code was not 0.
    #[error("the run ended with exit code {0}")]
    ExitCode(u8),
    /// No snapshot group was created.
    #[error("the run created no snapshot group")]
    NoGroup,
    /// The group is crash-consistent (or none): not a restore point to rely on.
    #[error("the run's group is {0}-consistent")]
    Consistency(&'static str),
}

impl SuccessfulRun {
    /// From the run's report: exit code 0, a group, and app or fs consistency.
    pub fn from_report(report: &RunReport) -> Result<SuccessfulRun, NotSuccessful> {
        if report.exit_code != Outcome::Success.code() {
            return Err(NotSuccessful::ExitCode(report.exit_code));
        }
        let group_id = report.group_id.clone().ok_or(NotSuccessful::NoGroup)?;
        match report.consistency {
            Consistency::App | Consistency::Fs => Ok(SuccessfulRun {
                job: report.job.clone(),
                group_id,
            }),
            c => Err(NotSuccessful::Consistency(c.as_str())),
        }
    }

    /// The job that ran.
    pub fn job(&self) -> &str {
        &self.job
    }

    /// The group it created (always protected).
    pub fn group_id(&self) -> &str {
        &self.group_id
    }
}

/// Why retention could not run at all (a deletion that fails is reported in
/// [`PruneReport::failed`] instead, and the others still go ahead).
#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    /// Listing the groups failed.
    #[error("listing snapshot groups: {0}")]
    List(#[source] EcsError),
    /// Reading the snapshots' consistency tags failed.
    #[error("reading snapshot tags: {0}")]
    SnapshotTags(#[source] EcsError),
    /// The successful run was another job's.
    #[error("the successful run was job {run:?}, not {job:?}")]
    WrongJob {
        /// The run's job.
        run: String,
        /// The job being pruned.
        job: String,
    },
}

/// A deletion that did not happen (or only partly).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PruneFailure {
    /// `ssg-...`
    pub id: String,
    /// Why it was selected.
    pub reason: String,
    /// What went wrong.
    pub error: String,
}

/// What [`prune`] did, for the run's log line and state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PruneReport {
    /// Deleted (or already gone), with why.
    pub deleted: Vec<Verdict>,
    /// This job's groups that stay, with why.
    pub kept: Vec<Verdict>,
    /// Selected but not (fully) deleted, including groups the last-moment
    /// re-check refused.
    pub failed: Vec<PruneFailure>,
    /// Listed groups that were not this job's on this instance.
    pub foreign: usize,
}

/// Lists this job's groups on this instance and selects (no deletion): what
/// [`prune`] and `appsnap list --prune-preview` share.
pub async fn assess(
    ecs: &EcsClient,
    job: &Job,
    instance_id: &str,
    owner: &OwnerId,
    now: DateTime<Utc>,
    protect: Option<&str>,
    deadline: Instant,
) -> Result<Selection, RetentionError> {
    let filter = SnapshotGroupFilter {
        instance_id: Some(instance_id.to_string()),
        tags: vec![
            Tag::new(TAG_JOB, job.name.as_str()),
            Tag::new(TAG_OWNER, owner.as_str()),
        ],
        ..Default::default()
    };
    let groups = ecs
        .describe_snapshot_groups(&filter, deadline)
        .await
        .map_err(RetentionError::List)?;
    let tags = snapshot_tags(ecs, &groups, deadline).await?;
    let facts: Vec<GroupFacts> = groups
        .iter()
        .map(|g| GroupFacts::from_group(g, &tags))
        .collect();
    Ok(select(
        job.name.as_str(),
        instance_id,
        owner,
        Rules::of(job),
        now,
        protect,
        &facts,
    ))
}

/// Per-snapshot tags of groups that did not fail: consistency lives on the
/// snapshots, since ECS cannot tag a group after its creation. A group still
/// uploading counts: its snapshots are usable (instant access) and tagged.
pub async fn snapshot_tags(
    ecs: &EcsClient,
    groups: &[SnapshotGroup],
    deadline: Instant,
) -> Result<HashMap<String, Vec<Tag>>, RetentionError> {
    let ids: Vec<String> = groups
        .iter()
        .filter(|g| !g.status.eq_ignore_ascii_case("failed"))
        .flat_map(|g| g.snapshots.iter().map(|s| s.snapshot_id.clone()))
        .collect();
    let mut out = HashMap::new();
    for chunk in ids.chunks(SNAPSHOT_IDS_PER_CALL) {
        let filter = SnapshotFilter {
            snapshot_ids: chunk.to_vec(),
            status: Some("all".into()),
            ..Default::default()
        };
        let snaps = ecs
            .describe_snapshots(&filter, deadline)
            .await
            .map_err(RetentionError::SnapshotTags)?;
        out.extend(snaps.into_iter().map(|s| (s.snapshot_id, s.tags)));
    }
    Ok(out)
}

/// Retention after a successful run: assess, then delete each selected
/// group after re-reading it and re-checking that it is this job's on this
/// instance and not progressing. Every deletion is logged with the group ID
/// (`APPSNAP_SNAPSHOT_GROUP`).
pub async fn prune(
    ecs: &EcsClient,
    job: &Job,
    instance_id: &str,
    owner: &OwnerId,
    run: &SuccessfulRun,
    now: DateTime<Utc>,
    deadline: Instant,
) -> Result<PruneReport, RetentionError> {
    let name = job.name.as_str();
    if run.job != name {
        return Err(RetentionError::WrongJob {
            run: run.job.clone(),
            job: name.to_string(),
        });
    }
    let selection = assess(
        ecs,
        job,
        instance_id,
        owner,
        now,
        Some(&run.group_id),
        deadline,
    )
    .await?;
    let mut report = PruneReport {
        kept: selection.keep,
        foreign: selection.foreign,
        ..PruneReport::default()
    };
    for v in selection.delete {
        let reason = v.reason();
        let fail = |error: String| PruneFailure {
            id: v.id.clone(),
            reason: reason.clone(),
            error,
        };
        if let Err(why) = recheck(ecs, name, instance_id, owner, &v.id, deadline).await {
            warn!(APPSNAP_JOB = name, APPSNAP_SNAPSHOT_GROUP = %v.id, "retention: not deleting: {why}");
            report.failed.push(fail(why));
            continue;
        }
        match ecs.delete_snapshot_group(&v.id, deadline).await {
            Ok(DeleteOutcome::Deleted | DeleteOutcome::AlreadyGone) => {
                info!(APPSNAP_JOB = name, APPSNAP_SNAPSHOT_GROUP = %v.id, "retention: deleted snapshot group {} ({reason})", v.id);
                report.deleted.push(v);
            }
            Ok(DeleteOutcome::Partial(kept)) => {
                let what = kept
                    .iter()
                    .map(|(s, code, msg)| format!("{s}: {code} {msg}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                warn!(APPSNAP_JOB = name, APPSNAP_SNAPSHOT_GROUP = %v.id, "retention: snapshot group {} partly deleted ({reason}); kept {what}", v.id);
                report
                    .failed
                    .push(fail(format!("partly deleted; kept {what}")));
            }
            Err(e) => {
                warn!(APPSNAP_JOB = name, APPSNAP_SNAPSHOT_GROUP = %v.id, "retention: deleting snapshot group {} failed ({reason}): {e}", v.id);
                report.failed.push(fail(e.to_string()));
            }
        }
    }
    Ok(report)
}

/// Re-reads one group and refuses unless it is still this job's on this
/// instance and not progressing: the last guard against deleting a group
/// appsnap did not create.
async fn recheck(
    ecs: &EcsClient,
    job: &str,
    instance_id: &str,
    owner: &OwnerId,
    id: &str,
    deadline: Instant,
) -> Result<(), String> {
    let filter = SnapshotGroupFilter {
        ids: vec![id.to_string()],
        ..Default::default()
    };
    let groups = ecs
        .describe_snapshot_groups(&filter, deadline)
        .await
        .map_err(|e| format!("re-reading the group: {e}"))?;
    let g = groups
        .iter()
        .find(|g| g.snapshot_group_id == id)
        .ok_or_else(|| "the group is no longer listed".to_string())?;
    let facts = GroupFacts::from_group(g, &HashMap::new());
    if !facts.is_ours(job, instance_id, owner) {
        return Err(format!(
            "not created by job {job} of this installation ({TAG_OWNER}={owner}) on {instance_id} (tags {}={:?}, {}={:?}, {}={:?}, {}={:?}, InstanceId {:?})",
            TAG_JOB, facts.job_tag, TAG_OWNER, facts.owner_tag, TAG_PLUGIN, facts.plugin_tag, TAG_INSTANCE, facts.instance_tag, facts.instance_id
        ));
    }
    if !matches!(
        facts.status.to_ascii_lowercase().as_str(),
        "accomplished" | "failed"
    ) {
        return Err(format!("status is {:?}", facts.status));
    }
    Ok(())
}
