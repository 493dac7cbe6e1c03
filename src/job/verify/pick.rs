//! Which group a drill restores: the one asked for, or the job's newest
//! restore point (accomplished, every snapshot app- or fs-consistent). Only a
//! group this installation's job made on this instance qualifies: a drill
//! tags the group's snapshots with its result, and appsnap never touches what
//! it did not create.

use chrono::Utc;
use thiserror::Error;
use tokio::time::Instant;

use crate::cloud::ecs::{EcsClient, EcsError, SnapshotGroup, SnapshotGroupFilter, Tag};
use crate::cloud::TAG_JOB;
use crate::job::retention::{snapshot_tags, Class, GroupFacts, RetentionError};
use crate::owner::{OwnerId, TAG_OWNER};
use crate::policy::Job;

/// A group chosen for a drill.
#[derive(Debug, Clone)]
pub struct Chosen {
    /// The group as ECS lists it (its snapshots included).
    pub group: SnapshotGroup,
    /// What selection knows about it.
    pub facts: GroupFacts,
}

/// Why no group can be drilled.
#[derive(Debug, Error)]
pub enum PickError {
    /// Listing failed.
    #[error("cannot list the job's snapshot groups: {0}")]
    List(#[from] EcsError),
    /// Reading the snapshots' tags failed.
    #[error("{0}")]
    Tags(#[from] RetentionError),
    /// The job has no restore point yet.
    #[error("job {job:?} has no accomplished app- or fs-consistent snapshot group on this instance yet: nothing to verify")]
    NoRestorePoint {
        /// The job.
        job: String,
    },
    /// The group asked for does not exist (or is not visible in this region).
    #[error("snapshot group {0} not found in this region")]
    NotFound(String),
    /// The group asked for is not this job's.
    #[error("snapshot group {group} was not made by job {job:?} of this appsnap installation on this instance; appsnap drills (and tags) only its own groups")]
    NotOurs {
        /// The group.
        group: String,
        /// The job.
        job: String,
    },
    /// The group asked for cannot be restored (yet).
    #[error("snapshot group {group} is {status}: only an accomplished group with every snapshot available can be restored")]
    NotRestorable {
        /// The group.
        group: String,
        /// Its status.
        status: String,
    },
}

/// The group to drill: `wanted`, or the job's newest restore point.
pub async fn pick(
    ecs: &EcsClient,
    job: &Job,
    instance_id: &str,
    owner: &OwnerId,
    wanted: Option<&str>,
    deadline: Instant,
) -> Result<Chosen, PickError> {
    let filter = SnapshotGroupFilter {
        instance_id: Some(instance_id.to_string()),
        ids: wanted.map(|g| vec![g.to_string()]).unwrap_or_default(),
        tags: if wanted.is_some() {
            Vec::new()
        } else {
            vec![
                Tag::new(TAG_JOB, job.name.as_str()),
                Tag::new(TAG_OWNER, owner.as_str()),
            ]
        },
        ..Default::default()
    };
    let groups = ecs.describe_snapshot_groups(&filter, deadline).await?;
    let tags = snapshot_tags(ecs, &groups, deadline).await?;
    let mut candidates: Vec<Chosen> = groups
        .into_iter()
        .map(|g| {
            let facts = GroupFacts::from_group(&g, &tags);
            Chosen { group: g, facts }
        })
        .collect();
    let name = job.name.as_str();
    if let Some(id) = wanted {
        let Some(c) = candidates
            .into_iter()
            .find(|c| c.group.snapshot_group_id == id)
        else {
            return Err(PickError::NotFound(id.to_string()));
        };
        if !c.facts.is_ours(name, instance_id, owner) {
            return Err(PickError::NotOurs {
                group: id.to_string(),
                job: name.to_string(),
            });
        }
        if !restorable(&c.group) {
            return Err(PickError::NotRestorable {
                group: id.to_string(),
                status: describe_status(&c.group),
            });
        }
        return Ok(c);
    }
    candidates.retain(|c| {
        c.facts.is_ours(name, instance_id, owner)
            && c.facts.class() == Class::Successful
            && restorable(&c.group)
    });
    // Newest first; an unknown creation time sorts last.
    candidates.sort_by(|a, b| {
        b.facts
            .created
            .unwrap_or(chrono::DateTime::<Utc>::MIN_UTC)
            .cmp(&a.facts.created.unwrap_or(chrono::DateTime::<Utc>::MIN_UTC))
    });
    candidates
        .into_iter()
        .next()
        .ok_or_else(|| PickError::NoRestorePoint {
            job: name.to_string(),
        })
}

/// Accomplished, with at least one snapshot and every snapshot usable.
fn restorable(g: &SnapshotGroup) -> bool {
    g.status.eq_ignore_ascii_case("accomplished")
        && !g.snapshots.is_empty()
        && g.snapshots.iter().all(|s| s.available)
}

fn describe_status(g: &SnapshotGroup) -> String {
    let unusable = g.snapshots.iter().filter(|s| !s.available).count();
    if unusable > 0 && g.status.eq_ignore_ascii_case("accomplished") {
        format!("accomplished but {unusable} of its snapshots are not available yet")
    } else if g.snapshots.is_empty() {
        format!("{} with no snapshots", g.status)
    } else {
        g.status.clone()
    }
}
