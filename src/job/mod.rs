//! One run of a job, from preflight to record.

pub mod outcome;
pub mod plugin_params;
pub mod script_check;
pub mod scripts;
