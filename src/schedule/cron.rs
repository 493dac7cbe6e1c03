//! The next scheduled time of a job (croner, in the job's zone) and the
//! random jitter added to it.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::policy::{CronSchedule, Job, JobZone};

/// The first scheduled time of `job` strictly after `after`, read in the
/// job's zone and returned in UTC; `None` if the cron can never fire.
///
/// Pass the previous *scheduled* time (not "now") when iterating: croner's
/// Vixie-cron DST rules (a run in the skipped hour happens right after the
/// gap; a run in the repeated hour happens once) depend on the start point.
pub fn next_fire(job: &Job, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    next_in_zone(&job.schedule, &job.zone, after)
}

/// [`next_fire`] for any cron of a job (its `verify_schedule` too).
pub fn next_in_zone(
    schedule: &CronSchedule,
    zone: &JobZone,
    after: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    match zone {
        JobZone::Local => schedule
            .next_after(&after.with_timezone(&chrono::Local))
            .map(|t| t.with_timezone(&Utc)),
        JobZone::Named(tz) => schedule
            .next_after(&after.with_timezone(tz))
            .map(|t| t.with_timezone(&Utc)),
    }
}

/// A random delay uniform in `[0, max]` (millisecond resolution), drawn
/// from `random` so tests can pin it; fleets use it to spread API load.
pub fn jitter_delay(max: Duration, random: &mut dyn FnMut() -> u64) -> Duration {
    let span = max.as_millis().min(u128::from(u64::MAX - 1)) as u64;
    if span == 0 {
        return Duration::ZERO;
    }
    // Rejection sampling: no modulo bias, whatever the span.
    let n = span + 1;
    let zone = u64::MAX - (u64::MAX % n);
    loop {
        let r = random();
        if r < zone {
            return Duration::from_millis(r % n);
        }
    }
}

/// 64 random bits from the OS (for jitter and run IDs). Falls back to the
/// clock's nanoseconds if the OS source fails, which it does not on Linux
/// after boot; jitter is not a security feature.
pub fn os_random_u64() -> u64 {
    getrandom::u64().unwrap_or_else(|_| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
    })
}
