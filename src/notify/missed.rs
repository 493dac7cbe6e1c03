//! Which scheduled times passed with no run: at daemon start, every cron
//! time of a job after its last known time (its last run's scheduled time or
//! start, or the last missed time already reported) up to now.
//!
//! Reads the schedule through [`crate::policy::Job::next_runs`], not the
//! scheduler, so the daemon and the scheduler can both use it without a cycle.

use chrono::{DateTime, Utc};

use crate::policy::Job;
use crate::state::JobResult;

/// The most cron times walked when looking for missed ones (a minutely job
/// down for a week is 10 080); beyond it the count is a lower bound.
pub const MAX_WALK: usize = 20_000;

/// Missed times of one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missed {
    /// The first of them (at most [`super::event::MAX_MISSED_TIMES`]), earliest first.
    pub times: Vec<DateTime<Utc>>,
    /// How many in all (up to [`MAX_WALK`]).
    pub count: u64,
    /// The latest of them (what to remember as reported).
    pub last: Option<DateTime<Utc>>,
}

/// The job's last known time: its last run's cron time (or start, for a
/// run by hand), or the last missed time already reported, the later.
pub fn reference(
    last: Option<&JobResult>,
    reported_until: Option<DateTime<Utc>>,
) -> Option<DateTime<Utc>> {
    let ran = last.map(|r| r.scheduled_for.unwrap_or(r.started_at));
    match (ran, reported_until) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// The cron times of `job` strictly after `since` and at or before `now`.
pub fn missed_since(job: &Job, since: DateTime<Utc>, now: DateTime<Utc>) -> Missed {
    let mut times = Vec::new();
    let mut count = 0u64;
    let mut last = None;
    let mut t = since;
    'walk: while (count as usize) < MAX_WALK {
        let batch = job.next_runs(t, 256);
        if batch.is_empty() {
            break;
        }
        for next in batch {
            let next = next.with_timezone(&Utc);
            if next > now {
                break 'walk;
            }
            count += 1;
            last = Some(next);
            if times.len() < super::event::MAX_MISSED_TIMES {
                times.push(next);
            }
            t = next;
        }
    }
    Missed { times, count, last }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(schedule: &str) -> Job {
        let text = format!(
            "[[job]]\nname = \"db\"\nschedule = \"{schedule}\"\ntimezone = \"UTC\"\ndisks = [\"d-bp1a\"]\n"
        );
        crate::policy::parse_str(std::path::Path::new("t.toml"), &text)
            .unwrap()
            .jobs
            .remove(0)
    }

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn names_each_time_between_the_last_run_and_now() {
        let m = missed_since(
            &job("30 2 * * *"),
            t("2026-01-01T02:30:00Z"),
            t("2026-01-04T01:00:00Z"),
        );
        assert_eq!(
            m.times,
            [t("2026-01-02T02:30:00Z"), t("2026-01-03T02:30:00Z")]
        );
        assert_eq!(m.count, 2);
        assert_eq!(m.last, Some(t("2026-01-03T02:30:00Z")));
        let none = missed_since(
            &job("30 2 * * *"),
            t("2026-01-01T02:30:00Z"),
            t("2026-01-02T02:29:59Z"),
        );
        assert_eq!(none.count, 0);
    }

    #[test]
    fn a_long_outage_is_counted_but_listed_briefly() {
        let m = missed_since(
            &job("* * * * *"),
            t("2026-01-01T00:00:00Z"),
            t("2026-01-01T10:00:00Z"),
        );
        assert_eq!(m.count, 600);
        assert_eq!(m.times.len(), super::super::event::MAX_MISSED_TIMES);
        assert_eq!(m.last, Some(t("2026-01-01T10:00:00Z")));
    }

    #[test]
    fn the_reference_is_the_later_of_the_last_run_and_the_last_report() {
        let rec = JobResult {
            schema: 1,
            job: "db".into(),
            run_id: "r".into(),
            scheduled_for: Some(t("2026-01-01T02:30:00Z")),
            started_at: t("2026-01-01T02:30:01Z"),
            finished_at: t("2026-01-01T02:31:00Z"),
            exit_code: 0,
            consistency: crate::state::Consistency::App,
            snapshot_group_id: None,
            frozen_ms: None,
            phases: vec![],
            message: String::new(),
            upload: None,
        };
        assert_eq!(reference(Some(&rec), None), Some(t("2026-01-01T02:30:00Z")));
        assert_eq!(
            reference(Some(&rec), Some(t("2026-01-03T02:30:00Z"))),
            Some(t("2026-01-03T02:30:00Z"))
        );
        assert_eq!(
            reference(None, None),
            None,
            "a job that never ran misses nothing we know of"
        );
    }
}
