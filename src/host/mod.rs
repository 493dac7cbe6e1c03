//! The host layer: from cloud disk IDs to the file systems to freeze, and the
//! freeze guard that always thaws them.
//!
//! - [`mounts`] parses mountinfo; [`devices`] maps serials to block devices and
//!   their partitions and holders; [`plan`] turns a job's disks into the file
//!   systems to freeze, in order, with skips and warnings.
//! - [`freeze`] is FIFREEZE/FITHAW on opened fds with identity checks;
//!   [`guard`] is the separate guard process; [`handle`] is the daemon's side
//!   of it ([`FreezeGuard`]); [`record`] is the frozen-set record that
//!   `appsnap thaw --all` recovers from; [`protocol`] is what they say.
//! - [`drill`] assembles, checks and mounts the copies a restore drill made,
//!   and always tears them down.

pub mod devices;
pub mod drill;
pub mod freeze;
pub mod guard;
pub mod handle;
pub mod mounts;
pub mod pg_layout;
pub mod plan;
pub mod protocol;
pub mod record;
mod round_pool;
pub mod stages;

pub use handle::{FreezeError, FreezeGuard, Frozen, ThawError, ThawReport};
pub use plan::{build as build_plan, DiskRequest, HostPaths, HostView, Plan, PlanError};
pub use protocol::{FsThaw, Target, ThawCause};
