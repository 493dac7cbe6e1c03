//! Where the scheduler reads time from.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::BoxFuture;

/// Where the scheduler reads time from: the wall clock for "when is it"
/// and a monotonic sleep for "wait". Injectable so tests run on paused
/// tokio time with a wall clock they can step.
pub trait Clock: Send + Sync + 'static {
    /// The current wall-clock time.
    fn now(&self) -> DateTime<Utc>;
    /// Sleeps for `d` of monotonic time.
    fn sleep(&self, d: Duration) -> BoxFuture<'static, ()>;
}

/// The real clocks: `Utc::now()` and `tokio::time::sleep`.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
    fn sleep(&self, d: Duration) -> BoxFuture<'static, ()> {
        Box::pin(tokio::time::sleep(d))
    }
}
