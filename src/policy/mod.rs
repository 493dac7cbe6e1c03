//! The policy file: `/etc/appsnap.toml` plus `/etc/appsnap.d/*.toml`, parsed
//! strictly and validated into a typed [`Policy`] whose errors point at file,
//! line and column.

pub mod error;
mod load;
pub mod naming;
mod raw;
mod render;
pub mod schedule;
pub mod types;
mod validate;

pub use error::{PolicyError, Problem};
pub use load::{load, parse_str, sources};
pub use schedule::CronSchedule;
pub use types::*;
