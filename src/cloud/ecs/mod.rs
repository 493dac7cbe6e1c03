//! Typed ECS OpenAPI (2014-05-26) calls with signing, retries and error codes.
//!
//! Every call takes a `deadline` (`tokio::time::Instant`): retries with
//! exponential backoff and jitter happen only while the next attempt can start
//! before it, so the job can pass its freeze deadline and know the API will not
//! keep I/O suspended longer. `CreateSnapshotGroup` always carries a
//! [`ClientToken`] generated once per logical request, so a retry can never
//! create a second group.
//!
//! One concern per file: `types` the request and answer models and their
//! decoding, `error` why a call failed, `client` the client and its calls,
//! `wire` one signed attempt and how an answer is read; `disk_types` and
//! `disk_calls` the disks a restore drill creates, attaches and releases.

mod client;
mod disk_calls;
mod disk_types;
mod error;
mod types;
mod wire;

pub use client::{default_endpoint, is_loopback_host, EcsClient, Throttled};
pub use disk_types::{
    default_drill_categories, is_category_unsupported, CreateDisk, DiskDeleted, DrillCategory,
    CATEGORY_UNSUPPORTED_CODES, DISK_NOT_FOUND_CODES, NOT_ATTACHED_CODES,
};
pub use error::{is_permission_denied, redact_string_to_sign, EcsError};
pub use types::{
    ClientToken, CreateSnapshotGroup, DeleteOutcome, DeletePermission, Disk, GroupDisks,
    GroupSnapshot, Snapshot, SnapshotFilter, SnapshotGroup, SnapshotGroupFilter, Tag,
    GROUP_NOT_FOUND_CODES, MAX_TAGS, MAX_TAG_RESOURCES, PROBE_GROUP_ID, REGIONAL_ESSD_CATEGORY,
    SUPPORTED_CATEGORIES,
};
pub use wire::{parse_retry_after, RETRY_AFTER_HEADER};
