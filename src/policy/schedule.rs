//! Cron expressions: 5-field (minute first) or 6-field (seconds first), parsed
//! with croner, which follows Vixie-cron DST rules (no skipped or doubled runs).

use std::fmt;

use chrono::{DateTime, TimeZone};
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;

/// A parsed cron schedule that remembers how the operator wrote it.
#[derive(Clone)]
pub struct CronSchedule {
    source: String,
    cron: Cron,
}

/// Field names and ranges, in the order of a 6-field expression.
const FIELDS: [(&str, u32, u32); 6] = [
    ("second", 0, 59),
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day of month", 1, 31),
    ("month", 1, 12),
    ("day of week", 0, 7),
];

impl CronSchedule {
    /// Parses a 5- or 6-field expression; the error says which field is wrong and why.
    pub fn parse(source: &str) -> Result<CronSchedule, String> {
        let fields: Vec<&str> = source.split_whitespace().collect();
        let named: &[(&str, u32, u32)] = match fields.len() {
            5 => &FIELDS[1..],
            6 => &FIELDS[..],
            n => {
                return Err(format!(
                    "has {n} fields; expected 5 (minute hour day-of-month month day-of-week) or 6 (seconds first)"
                ))
            }
        };
        for (field, (name, lo, hi)) in fields.iter().zip(named) {
            check_field(field, name, *lo, *hi)?;
        }
        let parser = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build();
        let cron = parser.parse(source).map_err(|e| e.to_string())?;
        let schedule = CronSchedule {
            source: source.to_string(),
            cron,
        };
        // A pattern such as `0 0 30 2 *` parses but never fires; say so now
        // rather than let a job silently never run.
        let probe = chrono::Utc.with_ymd_and_hms(2000, 1, 1, 0, 0, 0).unwrap();
        if schedule.next_after(&probe).is_none() {
            return Err("matches no date; check day-of-month against month".to_string());
        }
        Ok(schedule)
    }

    /// The expression as written in the policy.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The first run strictly after `after`, in `after`'s zone; `None` if the
    /// expression can never fire (e.g. `0 0 31 2 *`).
    pub fn next_after<Tz: TimeZone>(&self, after: &DateTime<Tz>) -> Option<DateTime<Tz>> {
        self.cron.find_next_occurrence(after, false).ok()
    }
}

/// Checks numeric values of one field so the message can name the field and
/// its range, which croner's own errors do not.
fn check_field(field: &str, name: &str, lo: u32, hi: u32) -> Result<(), String> {
    for part in field.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (r, Some(s)),
            None => (part, None),
        };
        if let Some(step) = step {
            match step.parse::<u32>() {
                Ok(s) if s >= 1 => {}
                _ => return Err(format!("{name} step {step:?} must be a positive number")),
            }
        }
        let bounds: Vec<&str> = if range == "*" || range == "?" {
            vec![]
        } else {
            range.split('-').collect()
        };
        for b in bounds {
            if let Ok(v) = b.parse::<u32>() {
                if v < lo || v > hi {
                    return Err(format!("{name} must be {lo}-{hi}, got {v}"));
                }
            } else if b.is_empty() || !b.chars().all(|c| c.is_ascii_alphanumeric() || c == '#') {
                return Err(format!("{name} value {b:?} is not a number or name"));
            }
        }
    }
    Ok(())
}

impl fmt::Debug for CronSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CronSchedule({:?})", self.source)
    }
}

impl PartialEq for CronSchedule {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    #[test]
    fn five_and_six_fields_accepted() {
        assert!(CronSchedule::parse("30 2 * * *").is_ok());
        assert!(CronSchedule::parse("*/5 * * * * *").is_ok());
    }

    #[test]
    fn minute_out_of_range_is_named() {
        let e = CronSchedule::parse("61 * * * *").unwrap_err();
        assert_eq!(e, "minute must be 0-59, got 61");
    }

    #[test]
    fn seven_fields_rejected() {
        let e = CronSchedule::parse("0 0 0 * * * 2030").unwrap_err();
        assert!(e.contains("has 7 fields"), "{e}");
    }

    #[test]
    fn never_firing_pattern_rejected() {
        let e = CronSchedule::parse("0 0 30 2 *").unwrap_err();
        assert!(e.contains("matches no date"), "{e}");
    }

    #[test]
    fn next_is_strictly_after() {
        let s = CronSchedule::parse("0 * * * *").unwrap();
        let t = Utc.with_ymd_and_hms(2026, 1, 1, 10, 0, 0).unwrap();
        let n = s.next_after(&t).unwrap();
        assert_eq!(n, Utc.with_ymd_and_hms(2026, 1, 1, 11, 0, 0).unwrap());
    }
}
