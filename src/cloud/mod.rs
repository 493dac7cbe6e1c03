//! Everything appsnap says to Alibaba Cloud: the instance metadata service,
//! RAM-role credentials, request signing and the typed ECS calls.
//!
//! The job module composes these; nothing here knows about freezing, and
//! nothing here imports the job: what an error means for a run (its vendor
//! exit code) is decided in `job::outcome`.
//! [`Cloud::connect`] wires them together the way the daemon and the CLI need.
//!
//! A run uses it in this order (the freeze window is one API round trip):
//! 1. before the pre-script: the job's disk selection over
//!    [`ecs::EcsClient::describe_disks`], and [`ecs::EcsClient::describe_snapshots`]
//!    with `status = "progressing"` to refuse early when a previous snapshot runs;
//! 2. before freezing: [`credentials::Credentials::ensure_valid_for`] with the
//!    freeze timeout plus margin, [`ecs::EcsClient::warm`], and one
//!    [`ecs::ClientToken::generate`] for the [`ecs::CreateSnapshotGroup`];
//! 3. frozen: [`ecs::EcsClient::create_snapshot_group`] with the freeze deadline;
//! 4. after thawing: [`ecs::EcsClient::describe_snapshot_groups`] to await,
//!    [`ecs::EcsClient::tag_resources`] on the snapshots,
//!    [`ecs::EcsClient::delete_snapshot_group`] to prune.

pub mod access_key;
pub mod body;
pub mod credentials;
pub mod ecs;
pub mod metadata;
pub mod retry;
pub mod secret;
pub mod sign;
pub mod tls;

use std::sync::Arc;

use crate::policy::types::CloudSettings;
use credentials::{Credentials, CredentialsError};
use ecs::{EcsClient, EcsError};
use metadata::{MetadataClient, MetadataError};

/// Tag key appsnap puts on every group it creates; its value is the job name.
pub const TAG_JOB: &str = "appsnap:job";
/// Tag key naming the instance a group was taken on.
pub const TAG_INSTANCE: &str = "appsnap:instance";
/// Disk tag naming the group a restore drill's disk was restored from; a
/// disk carrying it is never one of the instance's own (`disks = "all"`).
pub const TAG_VERIFY_GROUP: &str = "appsnap:verify";
/// Disk tag naming the restore drill run that made the disk.
pub const TAG_VERIFY_RUN: &str = "appsnap:verify-run";
/// The vendor's tag for application-consistent snapshots (value `True`).
pub const TAG_APP_CONSISTENT: &str = "AppConsistent";
/// The vendor's tag for file-system-consistent snapshots (value `True`).
pub const TAG_FS_CONSISTENT: &str = "FsConsistent";

/// `error: cause: cause ...`, so a transport error says *why* ("Connection
/// refused", "timed out") in one line. Used for errors whose causes are not
/// exposed through `source()`, so nothing is printed twice.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let s = c.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = c.source();
    }
    out
}

/// Why the cloud side could not be set up or reached.
#[derive(Debug, thiserror::Error)]
pub enum CloudError {
    /// The metadata service failed.
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    /// No usable credentials.
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    /// The ECS API failed.
    #[error(transparent)]
    Ecs(#[from] EcsError),
}

impl CloudError {
    /// True when the instance has no RAM role attached.
    pub fn is_no_role(&self) -> bool {
        matches!(
            self,
            CloudError::Metadata(MetadataError::NoRole)
                | CloudError::Credentials(CredentialsError::Metadata(MetadataError::NoRole))
                | CloudError::Ecs(EcsError::Credentials(CredentialsError::Metadata(
                    MetadataError::NoRole
                )))
        )
    }
}

/// The connected cloud side: who we are, how we authenticate, and the API client.
#[derive(Debug)]
pub struct Cloud {
    /// The metadata client (shared with the credential source).
    pub metadata: Arc<MetadataClient>,
    /// The shared credentials (not fetched until first use).
    pub credentials: Credentials,
    /// The ECS client, signing with `credentials`.
    pub ecs: EcsClient,
    /// This instance (policy override, else metadata).
    pub instance_id: String,
    /// This region (policy override, else metadata).
    pub region_id: String,
}

impl Cloud {
    /// Resolves instance and region (policy first, then the metadata service),
    /// picks credentials (environment, then RAM role) and builds the ECS client.
    /// Credentials are fetched lazily; call `credentials.ensure_valid_for` to
    /// fail early.
    pub async fn connect(settings: &CloudSettings) -> Result<Cloud, CloudError> {
        let metadata = Arc::new(MetadataClient::new(settings)?);
        let instance_id = match &settings.instance_id {
            Some(i) => i.clone(),
            None => metadata.instance_id().await?,
        };
        let region_id = match &settings.region_id {
            Some(r) => r.clone(),
            None => metadata.region_id().await?,
        };
        let credentials = Credentials::discover(settings, metadata.clone())?;
        let ecs = EcsClient::new(settings, &region_id, credentials.clone())?;
        Ok(Cloud {
            metadata,
            credentials,
            ecs,
            instance_id,
            region_id,
        })
    }
}
