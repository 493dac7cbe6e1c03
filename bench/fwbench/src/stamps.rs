//! Where a script baseline's window goes: its own stamps (bash
//! `EPOCHREALTIME`, microseconds) split into phases. The hand-made baseline
//! stamps `freeze frozen answered thawed` (its python start-up and SDK import
//! are inside the window); the vendor-like one `freeze frozen answered listed
//! thawed` (its SDK client is ready before the freeze).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::report::median;

/// A script's stamps, in order, and the table headers of the phases between them.
pub struct Kind {
    /// The stamp names; each phase runs from one to the next.
    pub keys: &'static [&'static str],
    /// One header per phase (`keys.len() - 1`).
    pub phases: &'static [&'static str],
    /// The row's tool name.
    pub tool: &'static str,
}

/// `bench/baseline/snapshot.sh`.
pub const BASELINE: Kind = Kind {
    keys: &["freeze", "frozen", "answered", "thawed"],
    phases: &[
        "`fsfreeze -f` all",
        "python3 + SDK import + CreateSnapshotGroup",
        "`fsfreeze -u` all",
    ],
    tool: "baseline",
};

/// `bench/baseline/vendor_like.sh`.
pub const VENDOR_LIKE: Kind = Kind {
    keys: &["freeze", "frozen", "answered", "listed", "thawed"],
    phases: &[
        "`fsfreeze -f` all",
        "CreateSnapshotGroup",
        "DescribeSnapshotGroups until listed and Available",
        "`fsfreeze -u` all",
    ],
    tool: "vendor-like",
};

/// Parses `n L run key epoch_us` lines into per-run phase durations (ms)
/// per (n, L); runs missing a stamp of `kind` are left out.
pub fn phases(text: &str, kind: &Kind) -> BTreeMap<(u32, u32), Vec<Vec<f64>>> {
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
    let mut out: BTreeMap<(u32, u32), Vec<Vec<f64>>> = BTreeMap::new();
    for ((n, lat, _), ev) in runs {
        let first = |k: &str| ev.iter().find(|e| e.0 == k).map(|e| e.1);
        let Some(t) = kind
            .keys
            .iter()
            .map(|k| first(k))
            .collect::<Option<Vec<f64>>>()
        else {
            continue;
        };
        out.entry((n, lat))
            .or_default()
            .push(t.windows(2).map(|w| w[1] - w[0]).collect());
    }
    out
}

/// A markdown table of the phases' medians.
pub fn render(text: &str, kind: &Kind) -> String {
    let mut out = format!("| file systems | L (ms) | {}: ", kind.tool);
    out.push_str(&kind.phases.join(" | "));
    out.push_str(" |\n|---:|---:|");
    out.push_str(&"---:|".repeat(kind.phases.len()));
    out.push('\n');
    for ((n, lat), v) in phases(text, kind) {
        let _ = write!(out, "| {n} | {lat} |");
        for i in 0..kind.phases.len() {
            let m = median(&v.iter().map(|p| p[i]).collect::<Vec<_>>()).unwrap_or(f64::NAN);
            let _ = write!(out, " {m:.0} |");
        }
        out.push('\n');
    }
    let _ = writeln!(
        out,
        "\n{} phases, medians in ms, from the script's own stamps.",
        kind.tool
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_split_at_the_stamps() {
        let text = "2 100 1 freeze 1000000\n2 100 1 freeze 1100000\n2 100 1 frozen 1200000\n\
                    2 100 1 answered 2000000\n2 100 1 thawed 2005000\n2 100 2 freeze 9\n";
        let p = phases(text, &BASELINE);
        // Run 2 has no thaw stamp: it is not counted.
        assert_eq!(p[&(2, 100)], vec![vec![200.0, 800.0, 5.0]]);
        assert!(render(text, &BASELINE).contains("| 2 | 100 | 200 | 800 | 5 |"));
        // Without a `listed` stamp it is no vendor-like run.
        assert!(phases(text, &VENDOR_LIKE).is_empty());
    }

    #[test]
    fn vendor_like_has_a_listing_phase() {
        let text = "16 100 3 freeze 0\n16 100 3 frozen 300000\n16 100 3 answered 420000\n\
                    16 100 3 listed 950000\n16 100 3 thawed 970000\n";
        let t = render(text, &VENDOR_LIKE);
        assert!(t.contains("| 16 | 100 | 300 | 120 | 530 | 20 |"), "{t}");
        assert!(t.contains("|---:|---:|---:|---:|---:|---:|\n"), "{t}");
    }
}
