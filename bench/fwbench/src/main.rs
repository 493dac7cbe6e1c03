//! `fwbench`: the compiled helpers of `bench/freeze_window` (a benchmark,
//! not a test). Timing-sensitive parts are here rather than in the shell
//! script so that every timestamp comes from one monotonic clock.
//!
//! ```text
//! fwbench now
//! fwbench writer --out FILE --rate-mib R --dirty-mib D --block-kib B [--per-dir] DIR...
//! fwbench floor --hold-ms L [--parallel] [--watchdog-ms W] MOUNT...
//! fwbench report --runs FILE --records FILE [--polls FILE] [--stamps FILE] [--vendor-stamps FILE]
//! ```

mod clock;
mod floor;
mod fsops;
mod report;
mod stamps;
mod writer;

use std::path::PathBuf;
use std::process::ExitCode;

/// Splits `--key value` options from positional arguments.
struct Opts {
    kv: Vec<(String, String)>,
    flags: Vec<String>,
    pos: Vec<String>,
}

impl Opts {
    fn parse(args: &[String], flags: &[&str]) -> Opts {
        let mut o = Opts {
            kv: vec![],
            flags: vec![],
            pos: vec![],
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            if flags.contains(&a.as_str()) {
                o.flags.push(a.clone());
            } else if let Some(k) = a.strip_prefix("--") {
                o.kv.push((k.to_string(), it.next().cloned().unwrap_or_default()));
            } else {
                o.pos.push(a.clone());
            }
        }
        o
    }
    fn get(&self, k: &str) -> Option<&str> {
        self.kv.iter().find(|x| x.0 == k).map(|x| x.1.as_str())
    }
    fn num(&self, k: &str, default: u64) -> Result<u64, String> {
        self.get(k).map_or(Ok(default), |v| {
            v.parse().map_err(|_| format!("--{k}: not a number: {v}"))
        })
    }
    fn path(&self, k: &str) -> Result<PathBuf, String> {
        self.get(k)
            .map(PathBuf::from)
            .ok_or(format!("--{k} is required"))
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = args.first() else {
        eprintln!("usage: fwbench now|writer|floor|report ...");
        return ExitCode::from(2);
    };
    let rest = &args[1..];
    let r = match cmd.as_str() {
        "now" => {
            println!("{}", clock::now_ns());
            Ok(())
        }
        "writer" => cmd_writer(rest),
        "floor" => cmd_floor(rest),
        "report" => cmd_report(rest),
        _ => Err(format!("unknown command {cmd}")),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fwbench {cmd}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn cmd_writer(args: &[String]) -> Result<(), String> {
    let o = Opts::parse(args, &["--per-dir"]);
    let a = writer::WriterArgs {
        per_dir: o.flags.iter().any(|f| f == "--per-dir"),
        out: o.path("out")?,
        rate_mib: o.num("rate-mib", 256)?,
        dirty_mib: o.num("dirty-mib", 512)?,
        block_kib: o.num("block-kib", 256)?,
        dirs: o.pos.iter().map(PathBuf::from).collect(),
    };
    writer::run(&a).map_err(|e| e.to_string())
}

fn cmd_floor(args: &[String]) -> Result<(), String> {
    let o = Opts::parse(args, &["--parallel"]);
    let a = floor::FloorArgs {
        hold_ms: o.num("hold-ms", 100)?,
        parallel: o.flags.iter().any(|f| f == "--parallel"),
        watchdog_ms: o.num("watchdog-ms", 10_000)?,
        mounts: o.pos.iter().map(PathBuf::from).collect(),
    };
    let r = floor::run(&a).map_err(|e| e.to_string())?;
    println!(
        "suspension_us={} freeze_us={} thaw_us={}",
        r.suspension_us, r.freeze_us, r.thaw_us
    );
    Ok(())
}

fn cmd_report(args: &[String]) -> Result<(), String> {
    let o = Opts::parse(args, &[]);
    let read = |k: &str| -> Result<String, String> {
        let p = o.path(k)?;
        std::fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))
    };
    let runs: Vec<report::Run> = read("runs")?
        .lines()
        .filter_map(report::parse_run)
        .collect();
    let mut records: Vec<writer::Record> = read("records")?
        .lines()
        .filter_map(|l| {
            let (a, b) = l.split_once(' ')?;
            Some((a.parse().ok()?, b.parse().ok()?))
        })
        .collect();
    records.sort_unstable();
    let polls = match o.get("polls") {
        Some(_) => report::parse_polls(&read("polls")?),
        None => Default::default(),
    };
    print!("{}", report::render(&runs, &records, &polls));
    if o.get("vendor-stamps").is_some() {
        print!(
            "\n{}",
            stamps::render(&read("vendor-stamps")?, &stamps::VENDOR_LIKE)
        );
    }
    if o.get("stamps").is_some() {
        print!("\n{}", stamps::render(&read("stamps")?, &stamps::BASELINE));
    }
    Ok(())
}
