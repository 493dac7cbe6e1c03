//! Turns the harness's run list and the writer's records into the markdown
//! table the README shows: per cell (file systems, L, tool) the medians and
//! p90s of I/O suspension, the writer's longest stall and total job time,
//! then the ratios the targets are stated in.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::writer::Record;

/// One run as the harness recorded it (a line of its runs file).
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    /// File systems frozen.
    pub n_fs: u32,
    /// Injected CreateSnapshotGroup latency, ms.
    pub lat_ms: u32,
    /// One of [`TOOLS`] (others are ignored).
    pub tool: String,
    /// CLOCK_MONOTONIC just before the tool started, ns.
    pub t0: u64,
    /// CLOCK_MONOTONIC just after it exited, ns.
    pub t1: u64,
    /// I/O suspension as the tool measured it, ms (None: the run failed).
    pub susp_ms: Option<f64>,
    /// The tool's exit code.
    pub rc: i32,
    /// Dirty page cache (all of the machine) when the run started, MiB.
    pub dirty_mib: f64,
}

/// Parses one tab-separated runs line:
/// `n_fs lat_ms tool run t0_ns t1_ns susp_ms rc dirty_mib`.
pub fn parse_run(line: &str) -> Option<Run> {
    let f: Vec<&str> = line.split('\t').collect();
    if f.len() != 9 {
        return None;
    }
    Some(Run {
        n_fs: f[0].parse().ok()?,
        lat_ms: f[1].parse().ok()?,
        tool: f[2].to_string(),
        t0: f[4].parse().ok()?,
        t1: f[5].parse().ok()?,
        susp_ms: f[6].parse().ok(),
        rc: f[7].parse().ok()?,
        dirty_mib: f[8].parse().unwrap_or(f64::NAN),
    })
}

/// Longest write overlapping `[t0, t1]`, ms; `records` sorted by start.
pub fn longest_stall_ms(records: &[Record], t0: u64, t1: u64) -> f64 {
    // No write lasts longer than this in a sane run; it bounds the scan back.
    const LOOKBACK_NS: u64 = 60_000_000_000;
    let from = records.partition_point(|r| r.0 < t0.saturating_sub(LOOKBACK_NS));
    records[from..]
        .iter()
        .take_while(|r| r.0 <= t1)
        .filter(|r| r.0 + r.1 >= t0)
        .map(|r| r.1)
        .max()
        .unwrap_or(0) as f64
        / 1e6
}

/// Median (mean of the two middle values for an even count).
pub fn median(v: &[f64]) -> Option<f64> {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(s[n / 2]),
        _ => Some((s[n / 2 - 1] + s[n / 2]) / 2.0),
    }
}

/// p90, nearest rank.
pub fn p90(v: &[f64]) -> Option<f64> {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    if s.is_empty() {
        return None;
    }
    let rank = (0.9 * s.len() as f64).ceil() as usize;
    Some(s[rank.clamp(1, s.len()) - 1])
}

#[derive(Default)]
struct Cell {
    runs: usize,
    failed: usize,
    susp: Vec<f64>,
    stall: Vec<f64>,
    total: Vec<f64>,
}

/// Every tool the harness knows, in the order the table shows them.
/// `appsnap-listed` thaws once DescribeSnapshotGroups lists every member
/// usable, `appsnap-accepted` at CreateSnapshotGroup's answer; `floor-listed`
/// holds L + D + A (when the cloud would list the members usable),
/// `floor-par` and `floor-seq` hold L.
pub const TOOLS: [&str; 7] = [
    "appsnap-listed",
    "appsnap-accepted",
    "vendor-like",
    "baseline",
    "floor-listed",
    "floor-par",
    "floor-seq",
];

fn tool_index(name: &str) -> Option<usize> {
    TOOLS.iter().position(|t| *t == name)
}

fn fmt_pair(v: &[f64]) -> String {
    match (median(v), p90(v)) {
        (Some(m), Some(p)) => format!("{m:.0} ({p:.0})"),
        _ => "—".into(),
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.1}×", a / b),
        _ => "—".into(),
    }
}

fn diff(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        // Rounded first, so a difference under 0.5 ms reads 0, not -0.
        (Some(a), Some(b)) => {
            let d = (a - b).round();
            if d == 0.0 {
                "0".into()
            } else {
                format!("{d:+.0}")
            }
        }
        _ => "—".into(),
    }
}

/// Whether a target holds: `None` when a side is missing.
fn verdict(ok: Option<bool>) -> &'static str {
    match ok {
        Some(true) => "yes",
        Some(false) => "**no**",
        None => "—",
    }
}

/// Parses `n_fs lat_ms gap_ms` lines: the gaps between appsnap-listed's
/// consecutive DescribeSnapshotGroups requests while it waited, i.e. one
/// poll round-trip (sleep + request + answer).
pub fn parse_polls(text: &str) -> BTreeMap<(u32, u32), Vec<f64>> {
    let mut out: BTreeMap<(u32, u32), Vec<f64>> = BTreeMap::new();
    for l in text.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if let [n, lat, gap] = f[..] {
            if let (Ok(n), Ok(lat), Ok(gap)) = (n.parse(), lat.parse(), gap.parse()) {
                out.entry((n, lat)).or_default().push(gap);
            }
        }
    }
    out
}

/// The whole markdown report; `polls` as from [`parse_polls`].
pub fn render(runs: &[Run], records: &[Record], polls: &BTreeMap<(u32, u32), Vec<f64>>) -> String {
    let mut cells: BTreeMap<(u32, u32, usize), Cell> = BTreeMap::new();
    let mut dirty = Vec::new();
    for r in runs {
        let Some(ti) = tool_index(&r.tool) else {
            continue;
        };
        let c = cells.entry((r.n_fs, r.lat_ms, ti)).or_default();
        c.runs += 1;
        dirty.push(r.dirty_mib);
        match (r.rc, r.susp_ms) {
            (0, Some(s)) => {
                c.susp.push(s);
                c.stall.push(longest_stall_ms(records, r.t0, r.t1));
                c.total.push((r.t1 - r.t0) as f64 / 1e6);
            }
            _ => c.failed += 1,
        }
    }
    let mut out = String::new();
    out.push_str("| file systems | L (ms) | tool | runs (failed) | I/O suspension ms | writer's longest stall ms | total job ms |\n");
    out.push_str("|---:|---:|---|---:|---:|---:|---:|\n");
    for ((n, l, ti), c) in &cells {
        let _ = writeln!(
            out,
            "| {n} | {l} | {} | {} ({}) | {} | {} | {} |",
            TOOLS[*ti],
            c.runs,
            c.failed,
            fmt_pair(&c.susp),
            fmt_pair(&c.stall),
            fmt_pair(&c.total),
        );
    }
    out.push_str("\nMedians (p90 in brackets) over the successful runs.\n\n");
    out.push_str("| file systems | L (ms) | stall vendor-like / appsnap-listed (target ≥ 2×) | stall vendor-like / floor-listed (a perfect client) | appsnap-listed stall − floor-listed (ms) | poll round-trip (ms) | within one poll round-trip | stall baseline / appsnap-accepted | appsnap-accepted stall − floor-par (ms) |\n");
    out.push_str("|---:|---:|---:|---:|---:|---:|---|---:|---:|\n");
    let keys: std::collections::BTreeSet<(u32, u32)> = cells.keys().map(|k| (k.0, k.1)).collect();
    for (n, l) in keys {
        let stall = |tool: &str| {
            tool_index(tool)
                .and_then(|ti| cells.get(&(n, l, ti)))
                .and_then(|c| median(&c.stall))
        };
        let (listed, accepted) = (stall("appsnap-listed"), stall("appsnap-accepted"));
        let (vendor, floor_listed) = (stall("vendor-like"), stall("floor-listed"));
        let poll = polls.get(&(n, l)).and_then(|v| median(v));
        let over_floor = listed.zip(floor_listed).map(|(a, f)| a - f);
        let _ = writeln!(
            out,
            "| {n} | {l} | {} | {} | {} | {} | {} | {} | {} |",
            match vendor.zip(listed) {
                Some((v, a)) => format!(
                    "{} {}",
                    ratio(Some(v), Some(a)),
                    verdict(Some(v >= 2.0 * a))
                ),
                None => "—".into(),
            },
            ratio(vendor, floor_listed),
            diff(listed, floor_listed),
            poll.map_or("—".into(), |p| format!("{p:.0}")),
            verdict(over_floor.zip(poll).map(|(d, p)| d <= p)),
            ratio(stall("baseline"), accepted),
            diff(accepted, stall("floor-par")),
        );
    }
    let idle: Vec<f64> = records
        .iter()
        .filter(|r| !runs.iter().any(|x| r.0 <= x.t1 && r.0 + r.1 >= x.t0))
        .map(|r| r.1 as f64 / 1e6)
        .collect();
    let _ = writeln!(
        out,
        "\nWriter between runs (no freeze): {} writes, p90 {:.2} ms, max {:.1} ms. Dirty page cache at run start (whole machine, /proc/meminfo): median {:.0} MiB.",
        idle.len(),
        p90(&idle).unwrap_or(0.0),
        idle.iter().cloned().fold(0.0, f64::max),
        median(&dirty).unwrap_or(f64::NAN),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_p90() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
        let v: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(p90(&v), Some(9.0));
        assert_eq!(p90(&[5.0]), Some(5.0));
    }

    #[test]
    fn stall_counts_writes_overlapping_the_window_only() {
        let ms = 1_000_000;
        let recs = vec![
            (0, 500 * ms),          // ends before the window: ignored
            (900 * ms, 300 * ms),   // started before, ends inside: counts
            (1_100 * ms, 50 * ms),  // inside
            (2_100 * ms, 900 * ms), // starts after: ignored
        ];
        assert_eq!(longest_stall_ms(&recs, 1_000 * ms, 2_000 * ms), 300.0);
        assert_eq!(longest_stall_ms(&recs, 5_000 * ms, 6_000 * ms), 0.0);
    }

    #[test]
    fn runs_line_parses_and_failed_runs_are_counted_not_measured() {
        let ok = parse_run("2\t100\tappsnap-listed\t1\t1000000\t3000000\t150\t0\t480").unwrap();
        assert_eq!(ok.susp_ms, Some(150.0));
        let bad = parse_run("2\t100\tbaseline\t1\t1000000\t3000000\tNA\t1\t480").unwrap();
        assert_eq!(bad.susp_ms, None);
        assert!(parse_run("garbage").is_none());
        let table = render(&[ok, bad], &[(1_500_000, 120_000_000)], &BTreeMap::new());
        assert!(
            table.contains("| 2 | 100 | appsnap-listed | 1 (0) | 150 (150) | 120 (120) | 2 (2) |")
        );
        assert!(table.contains("| 2 | 100 | baseline | 1 (1) | — | — | — |"));
    }

    /// One run of `tool` whose window [t0_ms, t0_ms + 100] holds one write
    /// stalled `stall_ms`.
    fn run_with_stall(tool: &str, t0_ms: u64, stall_ms: u64) -> (Run, Record) {
        let ms = 1_000_000;
        let line = format!(
            "2\t100\t{tool}\t1\t{}\t{}\t{stall_ms}\t0\t500",
            t0_ms * ms,
            (t0_ms + 100) * ms
        );
        (parse_run(&line).unwrap(), (t0_ms * ms + ms, stall_ms * ms))
    }

    fn summary_row(stalls: &[(&str, u64)], polls: &str) -> String {
        let (runs, mut recs): (Vec<Run>, Vec<Record>) = stalls
            .iter()
            .enumerate()
            .map(|(i, (tool, s))| run_with_stall(tool, 10_000 * (i as u64 + 1), *s))
            .unzip();
        recs.sort_unstable();
        let table = render(&runs, &recs, &parse_polls(polls));
        table
            .lines()
            .find(|l| l.starts_with("| 2 | 100 |") && !TOOLS.iter().any(|t| l.contains(t)))
            .unwrap()
            .to_string()
    }

    #[test]
    fn summary_states_both_targets_of_the_listed_mode() {
        let stalls = [
            ("appsnap-listed", 560),
            ("appsnap-accepted", 150),
            ("vendor-like", 1400),
            ("baseline", 1050),
            ("floor-listed", 520),
            ("floor-par", 140),
        ];
        // 40 ms over the floor, polls 60-80 ms apart: within one round-trip;
        // 1400 / 560 = 2.5x: at least 2x shorter than the vendor-like script.
        assert_eq!(
            summary_row(&stalls, "2 100 60\n2 100 70\n2 100 80\n1 100 5\n"),
            "| 2 | 100 | 2.5× yes | 2.7× | +40 | 70 | yes | 7.0× | +10 |"
        );
        // Polls 30 ms apart: 40 ms over the floor is more than one round-trip.
        assert_eq!(
            summary_row(&stalls, "2 100 30\n"),
            "| 2 | 100 | 2.5× yes | 2.7× | +40 | 30 | **no** | 7.0× | +10 |"
        );
        // The vendor-like script only 1.5x longer, no poll data.
        let mut close = stalls;
        close[2].1 = 840;
        assert_eq!(
            summary_row(&close, ""),
            "| 2 | 100 | 1.5× **no** | 1.6× | +40 | — | — | 7.0× | +10 |"
        );
    }
}
