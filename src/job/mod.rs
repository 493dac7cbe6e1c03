//! One run of a job, from preflight to record: the state machine
//! ([`machine`]), its hooks ([`scripts`], [`script_check`]), its result
//! ([`report`], [`outcome`]), the vendor plugin's parameters ([`plugin_params`])
//! and the group's upload followed after the run ([`upload`]).

pub mod disks;
pub mod freeze_gate;
pub mod freeze_stage;
pub mod machine;
pub mod outcome;
pub mod plugin_params;
pub mod report;
pub mod script_check;
pub mod scripts;
pub mod upload;
