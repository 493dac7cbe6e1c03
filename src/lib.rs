//! appsnap: application-consistent snapshots of an ECS instance's disks.
//!
//! The binary (`src/main.rs`) is a thin CLI over these modules; see
//! `ARCHITECTURE.md` in the shared design notes for how they compose.

// Shipped code handles its errors; tests may unwrap (clippy.toml).
#![warn(clippy::unwrap_used)]

pub mod alerts;
pub mod cloud;
pub mod daemon;
pub mod host;
pub mod job;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod owner;
pub mod policy;
/// Retention is the job's last step; its old path stays for callers and tests.
pub use job::retention;
pub mod schedule;
pub mod securefs;
pub mod state;
