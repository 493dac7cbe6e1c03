//! One run of a job, from preflight to record. For now: its outcomes.

pub mod outcome;
