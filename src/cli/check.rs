//! `appsnap check`: validate the policy (and later, preflight against the cloud).

use super::args::{CheckArgs, Cli};

/// Runs `check`; returns 0 ok, 2 bad policy, 1 preflight condition not met.
pub fn run(_cli: &Cli, _args: &CheckArgs) -> u8 {
    eprintln!("appsnap: check: policy loading arrives with the Foundation issue");
    255
}
