//! Following a group's upload after its run has ended.
//!
//! A run ends once its snapshots are usable (`Available`, seconds on ESSD);
//! the upload behind them can take hours for a first full snapshot of a large
//! disk, and can still fail. The daemon follows it here, asking less and less
//! often, and keeps the job's record (what `appsnap status` shows) up to date.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;
use tracing::{error, info, warn};

use super::machine::upload_of;
use crate::cloud::ecs::{EcsClient, SnapshotGroupFilter};
use crate::state::{StateStore, Upload};

/// How often to ask: from `first`, doubling up to `max`.
#[derive(Debug, Clone, Copy)]
pub struct FollowPace {
    /// The first pause after the run.
    pub first: Duration,
    /// The longest pause.
    pub max: Duration,
}

impl Default for FollowPace {
    fn default() -> Self {
        FollowPace {
            first: Duration::from_secs(30),
            max: Duration::from_secs(15 * 60),
        }
    }
}

/// Which record to keep up to date.
#[derive(Debug, Clone)]
pub struct Followed {
    /// The job whose record it is.
    pub job: String,
    /// The run that made the group: a newer run's record is never touched.
    pub run_id: String,
    /// The group.
    pub group_id: String,
}

/// Follows `f.group_id` until it is `accomplished`, `failed` or gone, writing
/// each change into the job's record while that record is still `f.run_id`'s.
/// `records` serializes record writes with the daemon's own.
pub async fn follow(
    ecs: Arc<EcsClient>,
    store: StateStore,
    records: Arc<Mutex<()>>,
    f: Followed,
    pace: FollowPace,
) {
    let filter = SnapshotGroupFilter {
        ids: vec![f.group_id.clone()],
        ..SnapshotGroupFilter::default()
    };
    let mut pause = pace.first;
    loop {
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(pace.max);
        let listed = match ecs
            .describe_snapshot_groups(&filter, Instant::now() + Duration::from_secs(60))
            .await
        {
            Ok(groups) => groups
                .into_iter()
                .find(|g| g.snapshot_group_id == f.group_id),
            Err(e) => {
                warn!(job = %f.job, "following the upload of {}: {e}; asking again later", f.group_id);
                continue;
            }
        };
        let upload = match &listed {
            Some(g) => upload_of(g),
            // Deleted by someone (or by retention): nothing more to follow.
            None => Upload {
                status: "deleted".into(),
                progress: String::new(),
                checked_at: chrono::Utc::now(),
            },
        };
        let pending = upload.is_pending();
        match upload.status.as_str() {
            "failed" => error!(
                job = %f.job, snapshot_group = %f.group_id,
                "snapshot group {} failed during its upload; its snapshots cannot be relied on", f.group_id
            ),
            "accomplished" => {
                info!(job = %f.job, snapshot_group = %f.group_id, "snapshot group {} uploaded", f.group_id)
            }
            "deleted" => {
                warn!(job = %f.job, "snapshot group {} is no longer listed; its upload is not followed any more", f.group_id)
            }
            _ => {}
        }
        if !update_record(&store, &records, &f, upload).await || !pending {
            return;
        }
    }
}

/// Writes `upload` into the job's record if it is still `f.run_id`'s; false
/// when a newer run (or nobody) owns the record, so following can stop.
async fn update_record(
    store: &StateStore,
    records: &Mutex<()>,
    f: &Followed,
    upload: Upload,
) -> bool {
    let _held = records.lock().await;
    let Some(mut rec) = store.read(&f.job) else {
        return false;
    };
    if rec.run_id != f.run_id {
        return false;
    }
    if rec.upload.as_ref().map(|u| (&u.status, &u.progress))
        != Some((&upload.status, &upload.progress))
    {
        rec.upload = Some(upload);
        if let Err(e) = store.write(&rec) {
            warn!(job = %f.job, "upload progress not recorded: {e}");
        }
    }
    true
}
