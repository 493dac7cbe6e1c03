//! Exponential backoff with equal jitter, bounded by a caller's deadline.
//!
//! The job passes the freeze deadline down to every cloud call: a retry that
//! cannot finish before it is not attempted, so a throttled API can never keep
//! file systems frozen longer than the policy allows.

use std::time::Duration;

use tokio::time::Instant;

/// Backoff parameters for one class of failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Delay before the first retry (before jitter).
    pub initial: Duration,
    /// Upper bound of any single delay.
    pub max: Duration,
}

impl Backoff {
    /// Delay before retry number `retry` (0-based): `initial << retry`, capped,
    /// with equal jitter (`d/2 + rand(0..=d/2)`) so a fleet does not retry in step.
    pub fn delay(&self, retry: u32) -> Duration {
        let base = self
            .initial
            .saturating_mul(1u32.checked_shl(retry.min(20)).unwrap_or(u32::MAX))
            .min(self.max);
        let half = base / 2;
        half + jitter(half)
    }
}

/// How ECS calls are retried: the SDK's own schedule (100 ms for server errors,
/// 500 ms for throttling, 20 s cap), plus a cap on attempts and per-attempt time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Backoff after 5xx, `InternalError`, `ServiceUnavailable`, resets, timeouts.
    pub normal: Backoff,
    /// Backoff after `Throttling*`.
    pub throttling: Backoff,
    /// Most attempts in total (the deadline usually ends retries first).
    pub max_attempts: u32,
    /// Longest a single HTTP attempt may take (further bounded by the deadline).
    pub attempt_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            normal: Backoff {
                initial: Duration::from_millis(100),
                max: Duration::from_secs(20),
            },
            throttling: Backoff {
                initial: Duration::from_millis(500),
                max: Duration::from_secs(20),
            },
            max_attempts: 8,
            attempt_timeout: Duration::from_secs(30),
        }
    }
}

/// Returns when the next attempt may start, or `None` if waiting `delay` would
/// already pass `deadline` (then the caller gives up without sleeping).
pub fn next_attempt_at(now: Instant, delay: Duration, deadline: Instant) -> Option<Instant> {
    let at = now.checked_add(delay)?;
    (at < deadline).then_some(at)
}

/// A uniformly random duration in `0..=max`, from the OS RNG.
pub fn jitter(max: Duration) -> Duration {
    let nanos = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
    if nanos == 0 {
        return Duration::ZERO;
    }
    // If the OS RNG fails (it does not on Linux), no jitter is better than no retry.
    let r = getrandom::u64().unwrap_or(0);
    Duration::from_nanos(r % (nanos.saturating_add(1)).max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_doubles_caps_and_jitters_within_bounds() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        for retry in 0..40 {
            let full = (Duration::from_millis(100) * 2u32.saturating_pow(retry.min(20)))
                .min(Duration::from_secs(1));
            let d = b.delay(retry);
            assert!(
                d >= full / 2 && d <= full,
                "retry {retry}: {d:?} vs {full:?}"
            );
        }
    }

    #[test]
    fn no_attempt_past_deadline() {
        let now = Instant::now();
        let deadline = now + Duration::from_secs(1);
        assert!(next_attempt_at(now, Duration::from_millis(500), deadline).is_some());
        assert!(next_attempt_at(now, Duration::from_secs(1), deadline).is_none());
        assert!(next_attempt_at(now, Duration::from_secs(5), deadline).is_none());
    }
}
