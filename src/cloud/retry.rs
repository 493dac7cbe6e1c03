//! Exponential backoff with equal jitter, bounded by a caller's deadline, and
//! the one retry driver every cloud client uses ([`drive`]).
//!
//! The job passes the freeze deadline down to every cloud call: a retry that
//! cannot finish before it is not attempted, so a throttled API can never keep
//! file systems frozen longer than the policy allows.

use std::convert::Infallible;
use std::future::Future;
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

/// How a failed attempt is to be handled; the client decides, the driver obeys.
#[derive(Debug)]
pub enum Failure<E> {
    /// Sending the same request again cannot help: the driver returns at once.
    Fatal(E),
    /// Another attempt may succeed after `backoff.delay(n)`, and not sooner
    /// than `after` (a server's own hint such as `x-acs-retry-after`).
    Retry {
        /// The error, returned if this was the last attempt.
        error: E,
        /// The schedule for this class of failure.
        backoff: Backoff,
        /// The server's wait, a floor under the backoff.
        after: Option<Duration>,
    },
}

/// How many attempts, and until when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most attempts in total (one is always made unless the deadline has
    /// already passed).
    pub max_attempts: u32,
    /// No attempt starts at or after this instant, nor does a wait that would
    /// end there.
    pub deadline: Instant,
}

/// Why [`drive`] stopped without a success.
#[derive(Debug)]
pub enum GaveUp<E> {
    /// A fatal failure, or the retryable failure of the last allowed attempt.
    Failed(E),
    /// The deadline came before another attempt could start.
    Deadline {
        /// Attempts made (0 if the deadline had passed before the first).
        attempts: u32,
        /// The failure that wanted a retry, if any attempt was made.
        last: Option<E>,
    },
}

/// What the driver is about to do after a retryable failure (for the
/// caller's log line, which knows the call's name).
#[derive(Debug)]
pub enum Next<'a, E> {
    /// Waiting `delay`, then attempt number `attempts + 1`.
    Retrying {
        /// Attempts made so far.
        attempts: u32,
        /// The failure.
        error: &'a E,
        /// The wait before the next attempt.
        delay: Duration,
    },
    /// `max_attempts` reached: giving up with this failure.
    LastAttempt {
        /// Attempts made.
        attempts: u32,
        /// The failure.
        error: &'a E,
    },
    /// The wait would pass the deadline: giving up without waiting.
    NoTimeLeft {
        /// Attempts made.
        attempts: u32,
        /// The failure.
        error: &'a E,
        /// The wait that did not fit.
        delay: Duration,
    },
}

/// Runs `attempt(n)` (n = 1, 2, …) until it succeeds, fails fatally, uses up
/// `limits.max_attempts`, or the next attempt could not start before the
/// deadline. Between attempts it waits `backoff.delay(n - 1)`, raised to the
/// server's `after` when that is longer; `observe` hears each decision.
pub async fn drive<T, E, F, Fut>(
    limits: Limits,
    observe: impl FnMut(Next<'_, E>),
    attempt: F,
) -> Result<T, GaveUp<E>>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, Failure<E>>>,
{
    let deadline = Some((limits.deadline, ()));
    run(limits.max_attempts, deadline, observe, attempt)
        .await
        .map_err(|stop| match stop {
            Stop::Failed(e) => GaveUp::Failed(e),
            Stop::Deadline { attempts, last, .. } => GaveUp::Deadline { attempts, last },
        })
}

/// [`drive`] for calls bounded by a number of attempts only (the metadata
/// service, whose client has its own short HTTP timeouts): the only way to
/// stop without a success is a failure, returned as is.
pub async fn drive_attempts<T, E, F, Fut>(
    max_attempts: u32,
    observe: impl FnMut(Next<'_, E>),
    attempt: F,
) -> Result<T, E>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, Failure<E>>>,
{
    let no_deadline: Option<(Instant, Infallible)> = None;
    run(max_attempts, no_deadline, observe, attempt)
        .await
        .map_err(|stop| match stop {
            Stop::Failed(e) => e,
            Stop::Deadline { witness, .. } => match witness {},
        })
}

/// Why [`run`] stopped; `X` is the deadline's witness, uninhabited when there
/// is no deadline, so that case needs no impossible error.
enum Stop<E, X> {
    Failed(E),
    Deadline {
        attempts: u32,
        last: Option<E>,
        witness: X,
    },
}

/// The one retry loop behind [`drive`] and [`drive_attempts`].
async fn run<T, E, X, F, Fut>(
    max_attempts: u32,
    deadline: Option<(Instant, X)>,
    mut observe: impl FnMut(Next<'_, E>),
    mut attempt: F,
) -> Result<T, Stop<E, X>>
where
    X: Copy,
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, Failure<E>>>,
{
    let mut attempts: u32 = 0;
    let mut last: Option<E> = None;
    loop {
        if let Some((d, witness)) = deadline {
            if Instant::now() >= d {
                return Err(Stop::Deadline {
                    attempts,
                    last,
                    witness,
                });
            }
        }
        attempts += 1;
        let (error, backoff, after) = match attempt(attempts).await {
            Ok(v) => return Ok(v),
            Err(Failure::Fatal(e)) => return Err(Stop::Failed(e)),
            Err(Failure::Retry {
                error,
                backoff,
                after,
            }) => (error, backoff, after),
        };
        if attempts >= max_attempts {
            observe(Next::LastAttempt {
                attempts,
                error: &error,
            });
            return Err(Stop::Failed(error));
        }
        let delay = backoff
            .delay(attempts - 1)
            .max(after.unwrap_or(Duration::ZERO));
        let now = Instant::now();
        let at = match deadline {
            Some((d, witness)) => match next_attempt_at(now, delay, d) {
                Some(at) => at,
                None => {
                    observe(Next::NoTimeLeft {
                        attempts,
                        error: &error,
                        delay,
                    });
                    return Err(Stop::Deadline {
                        attempts,
                        last: Some(error),
                        witness,
                    });
                }
            },
            None => now.checked_add(delay).unwrap_or(now),
        };
        observe(Next::Retrying {
            attempts,
            error: &error,
            delay,
        });
        last = Some(error);
        tokio::time::sleep_until(at).await;
    }
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

    /// A failure the test can classify; the number is the attempt it came from.
    #[derive(Debug, PartialEq, Eq)]
    struct Oops(u32);

    const FAST: Backoff = Backoff {
        initial: Duration::from_millis(100),
        max: Duration::from_millis(100),
    };

    fn retry(n: u32, after: Option<Duration>) -> Failure<Oops> {
        Failure::Retry {
            error: Oops(n),
            backoff: FAST,
            after,
        }
    }

    // The clock is paused: the runtime jumps to each timer, so these tests
    // observe the driver's own arithmetic, not the machine's speed.

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(3600)
    }

    #[tokio::test(start_paused = true)]
    async fn fatal_stops_at_once() {
        let mut calls = 0;
        let limits = Limits {
            max_attempts: 8,
            deadline: far(),
        };
        let r: Result<(), _> = drive(
            limits,
            |_| {},
            |n| {
                calls += 1;
                async move { Err(Failure::Fatal(Oops(n))) }
            },
        )
        .await;
        assert!(matches!(r, Err(GaveUp::Failed(Oops(1)))), "{r:?}");
        assert_eq!(calls, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn max_attempts_returns_the_last_failure() {
        let mut seen = Vec::new();
        let r: Result<(), _> = drive_attempts(
            3,
            |_| {},
            |n| {
                seen.push(n);
                async move { Err(retry(n, None)) }
            },
        )
        .await;
        assert_eq!(r, Err(Oops(3)));
        assert_eq!(seen, [1, 2, 3]);
    }

    #[tokio::test(start_paused = true)]
    async fn succeeds_after_retries() {
        let r = drive_attempts(
            5,
            |_| {},
            |n| async move {
                if n < 3 {
                    Err(retry(n, None))
                } else {
                    Ok(n)
                }
            },
        )
        .await;
        assert_eq!(r, Ok(3));
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_is_a_floor_under_the_backoff() {
        let limits = Limits {
            max_attempts: 3,
            deadline: far(),
        };
        let mut starts = Vec::new();
        let mut delays = Vec::new();
        let _: Result<(), _> = drive(
            limits,
            |next| {
                if let Next::Retrying { delay, .. } = next {
                    delays.push(delay);
                }
            },
            |n| {
                starts.push(Instant::now());
                async move { Err(retry(n, Some(Duration::from_secs(7)))) }
            },
        )
        .await;
        assert_eq!(delays, [Duration::from_secs(7); 2]);
        for w in starts.windows(2) {
            assert!(w[1] - w[0] >= Duration::from_secs(7), "{starts:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn no_attempt_starts_at_or_after_the_deadline() {
        let t0 = Instant::now();
        let deadline = t0 + Duration::from_millis(1000);
        let limits = Limits {
            max_attempts: 100,
            deadline,
        };
        let mut starts = Vec::new();
        let r: Result<(), _> = drive(
            limits,
            |_| {},
            |n| {
                starts.push(Instant::now());
                async move { Err(retry(n, None)) }
            },
        )
        .await;
        let Err(GaveUp::Deadline { attempts, last }) = r else {
            panic!("{r:?}")
        };
        assert_eq!(attempts as usize, starts.len());
        assert_eq!(last, Some(Oops(attempts)));
        // 50..100 ms apart: at least 10 attempts fit in the second, never 100.
        assert!((10..100).contains(&attempts), "{attempts}");
        assert!(starts.iter().all(|s| *s < deadline), "{starts:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_hint_past_the_deadline_gives_up_without_waiting() {
        let t0 = Instant::now();
        let limits = Limits {
            max_attempts: 8,
            deadline: t0 + Duration::from_secs(5),
        };
        let mut gave_up = None;
        let r: Result<(), _> = drive(
            limits,
            |next| {
                if let Next::NoTimeLeft { delay, .. } = next {
                    gave_up = Some(delay);
                }
            },
            |n| async move { Err(retry(n, Some(Duration::from_secs(60)))) },
        )
        .await;
        assert!(
            matches!(
                r,
                Err(GaveUp::Deadline {
                    attempts: 1,
                    last: Some(Oops(1))
                })
            ),
            "{r:?}"
        );
        assert_eq!(gave_up, Some(Duration::from_secs(60)));
        assert_eq!(Instant::now(), t0, "the driver slept although it gave up");
    }

    #[tokio::test(start_paused = true)]
    async fn a_passed_deadline_sends_nothing() {
        let limits = Limits {
            max_attempts: 8,
            deadline: Instant::now(),
        };
        let mut calls = 0;
        let r: Result<(), _> = drive(
            limits,
            |_| {},
            |n| {
                calls += 1;
                async move { Err(retry(n, None)) }
            },
        )
        .await;
        assert!(
            matches!(
                r,
                Err(GaveUp::Deadline {
                    attempts: 0,
                    last: None
                })
            ),
            "{r:?}"
        );
        assert_eq!(calls, 0);
    }
}
