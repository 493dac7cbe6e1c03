//! When the steps of one `appsnap run` happened, read back from its JSON log
//! lines (`--log-format json`: RFC 3339 timestamps with microseconds, the
//! same wall clock the workload stamps its acks with).

use std::time::{Duration, SystemTime};

use serde_json::Value;

/// The instants that bound the lock and freeze windows of one run.
#[derive(Debug, Clone, Copy)]
pub struct Timeline {
    /// The "pre script: succeeded" event, logged as soon as the pre-script
    /// exited (so at or just after it returned).
    pub pre_returned: SystemTime,
    /// The earliest FIFREEZE: each "thawed <mp> after <ms> ms" event's time
    /// minus its suspended time.
    pub first_freeze: SystemTime,
    /// The latest "thawed" event (at or just after the last FITHAW).
    pub last_thaw: SystemTime,
    /// The "post script: succeeded" event's time minus the script's `took_ms`.
    pub post_started: SystemTime,
}

fn at(v: &Value) -> Result<SystemTime, String> {
    let ts = v["timestamp"].as_str().ok_or("event without timestamp")?;
    chrono::DateTime::parse_from_rfc3339(ts)
        .map(SystemTime::from)
        .map_err(|e| format!("timestamp {ts:?}: {e}"))
}

impl Timeline {
    /// Reads the timeline from appsnap's stderr; an error names what is missing.
    pub fn from_json_log(stderr: &str) -> Result<Timeline, String> {
        let events: Vec<Value> = stderr
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .collect();
        let msg = |v: &Value| v["message"].as_str().unwrap_or_default().to_string();
        let pre = events
            .iter()
            .find(|v| msg(v).starts_with("pre script: succeeded"))
            .ok_or("no successful pre-script event")?;
        let post = events
            .iter()
            .find(|v| msg(v).starts_with("post script: succeeded"))
            .ok_or("no successful post-script event")?;
        let post_took = post["took_ms"]
            .as_u64()
            .ok_or("post event without took_ms")?;
        let mut freezes = Vec::new();
        let mut thaws = Vec::new();
        for v in &events {
            let m = msg(v);
            if let Some(rest) = m.strip_prefix("thawed ") {
                let ms: u64 = rest
                    .rsplit_once(" after ")
                    .and_then(|(_, t)| t.strip_suffix(" ms"))
                    .and_then(|t| t.parse().ok())
                    .ok_or_else(|| format!("cannot read {m:?}"))?;
                let t = at(v)?;
                thaws.push(t);
                freezes.push(t - Duration::from_millis(ms));
            }
        }
        Ok(Timeline {
            pre_returned: at(pre)?,
            first_freeze: *freezes.iter().min().ok_or("no thawed event")?,
            last_thaw: *thaws.iter().max().ok_or("no thawed event")?,
            post_started: at(post)? - Duration::from_millis(post_took),
        })
    }
}

/// Milliseconds from `a` to `b` (negative when `b` is earlier), for reports.
pub fn ms_between(a: SystemTime, b: SystemTime) -> i64 {
    match b.duration_since(a) {
        Ok(d) => d.as_millis() as i64,
        Err(e) => -(e.duration().as_millis() as i64),
    }
}
