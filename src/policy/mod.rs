//! The policy file: `/etc/appsnap.toml` plus `/etc/appsnap.d/*.toml`, parsed
//! strictly and validated into a typed [`Policy`] whose errors point at file,
//! line and column.

pub mod schedule;
pub mod types;

pub use schedule::CronSchedule;
pub use types::*;
