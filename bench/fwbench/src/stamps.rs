//! Where the hand-made baseline's window goes: its own stamps (bash
//! `EPOCHREALTIME`, microseconds) split into the `fsfreeze -f` calls, the
//! python start-up + SDK import + CreateSnapshotGroup (which includes L),
//! and the `fsfreeze -u` calls.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::report::median;

/// Phases of one baseline run, ms: freezing, python + SDK + call, thawing.
type Phases = (f64, f64, f64);

/// Parses `n L run key epoch_us` lines into phases per (n, L).
pub fn phases(text: &str) -> BTreeMap<(u32, u32), Vec<Phases>> {
    let mut runs: BTreeMap<(u32, u32, u32), Vec<(String, f64)>> = BTreeMap::new();
    for l in text.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() != 5 {
            continue;
        }
        let (Ok(n), Ok(lat), Ok(r), Ok(t)) = (
            f[0].parse(),
            f[1].parse(),
            f[2].parse(),
            f[4].parse::<f64>(),
        ) else {
            continue;
        };
        runs.entry((n, lat, r))
            .or_default()
            .push((f[3].to_string(), t / 1000.0));
    }
    let mut out: BTreeMap<(u32, u32), Vec<Phases>> = BTreeMap::new();
    for ((n, lat, _), ev) in runs {
        let first = |k: &str| ev.iter().find(|e| e.0 == k).map(|e| e.1);
        if let (Some(f), Some(z), Some(a), Some(t)) = (
            first("freeze"),
            first("frozen"),
            first("answered"),
            first("thawed"),
        ) {
            out.entry((n, lat)).or_default().push((z - f, a - z, t - a));
        }
    }
    out
}

/// A markdown table of the phases' medians.
pub fn render(text: &str) -> String {
    let mut out = String::from(
        "| file systems | L (ms) | baseline: `fsfreeze -f` all | python3 + SDK import + CreateSnapshotGroup | `fsfreeze -u` all |\n|---:|---:|---:|---:|---:|\n",
    );
    for ((n, lat), v) in phases(text) {
        let m = |f: fn(&Phases) -> f64| {
            median(&v.iter().map(f).collect::<Vec<_>>()).unwrap_or(f64::NAN)
        };
        let _ = writeln!(
            out,
            "| {n} | {lat} | {:.0} | {:.0} | {:.0} |",
            m(|p| p.0),
            m(|p| p.1),
            m(|p| p.2)
        );
    }
    out.push_str("\nBaseline phases, medians in ms, from the script's own stamps.\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_split_at_the_stamps() {
        let text = "2 100 1 freeze 1000000\n2 100 1 freeze 1100000\n2 100 1 frozen 1200000\n\
                    2 100 1 answered 2000000\n2 100 1 thawed 2005000\n2 100 2 freeze 9\n";
        let p = phases(text);
        // Run 2 has no thaw stamp: it is not counted.
        assert_eq!(p[&(2, 100)], vec![(200.0, 800.0, 5.0)]);
        assert!(render(text).contains("| 2 | 100 | 200 | 800 | 5 |"));
    }
}
