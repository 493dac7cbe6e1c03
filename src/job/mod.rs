//! One run of a job, from preflight to record: the state machine
//! ([`machine`]) over what the run reads ([`spec`]), its hooks ([`scripts`], [`script_check`]), its result
//! ([`report`], [`outcome`]), what follows it the same way for the daemon
//! and `appsnap run` ([`execute`]: [`retention`], the record), the vendor
//! plugin's parameters ([`plugin_params`]) and the group's upload followed
//! after the run ([`upload`]).

pub mod disks;
pub mod execute;
pub mod freeze_gate;
pub mod freeze_stage;
pub mod machine;
pub mod outcome;
pub mod plugin_params;
pub mod report;
pub mod retention;
pub mod script_check;
pub mod script_tags;
pub mod scripts;
pub mod spec;
pub mod upload;
pub mod verify;
