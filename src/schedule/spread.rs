//! The fleet spread: each scheduled run starts at a fixed offset after its
//! cron time, derived from the instance ID and the job name, so that
//! hundreds of instances on one policy do not call ECS in the same second
//! (ECS throttles per account), without randomness: an instance keeps the
//! same time run after run, restart after restart.
//!
//! The formula is part of the contract (operators read the offset in the
//! log and plan around it): SHA-256 over `appsnap-spread-v1`, a 0 byte, the
//! instance ID, a 0 byte and the job name; the first 8 bytes big-endian,
//! modulo the window in milliseconds. Changing it moves every instance.

use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::policy::JobName;

const DOMAIN: &[u8] = b"appsnap-spread-v1";

/// This instance's offset for `job` within `spread` (0 when `spread` is 0).
pub fn spread_offset(instance: &str, job: &JobName, spread: Duration) -> Duration {
    let window = u64::try_from(spread.as_millis()).unwrap_or(u64::MAX);
    if window == 0 {
        return Duration::ZERO;
    }
    let mut h = Sha256::new();
    h.update(DOMAIN);
    h.update([0]);
    h.update(instance.as_bytes());
    h.update([0]);
    h.update(job.as_str().as_bytes());
    let digest = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    Duration::from_millis(u64::from_be_bytes(first) % window)
}
