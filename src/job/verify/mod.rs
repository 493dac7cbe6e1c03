//! Restore drills (`appsnap verify`): prove on this instance that a snapshot
//! group restores and its application starts. A drill makes one disk per
//! snapshot of the group ([`cloud_disks`]), attaches them here, lets the host
//! assemble and check what they hold without touching the live storage
//! ([`crate::host::drill`]), runs the job's `verify_script` on the copies
//! ([`script`]), and always releases everything again — on success,
//! failure, timeout and cancellation here, after a crash from the drill
//! record ([`record`], [`cleanup`]). One drill at a time ([`lock`]).

pub mod cleanup;
pub mod cloud_disks;
mod drill;
pub mod last;
pub mod lock;
pub mod pick;
pub mod record;
pub mod report;
pub mod script;

pub use drill::{verify, VerifyEnv, VerifyRequest};
pub use report::{FsOutcome, Verdict, VerifyReport};
