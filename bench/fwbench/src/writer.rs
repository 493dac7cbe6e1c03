//! The application under the freeze: one thread per file system writing
//! fixed-size buffered blocks at a steady rate, cyclically over a file whose
//! size bounds that file system's share of the dirty target (so the page
//! cache holds at most `dirty_mib` of its dirty data, and the kernel's own
//! dirty throttling, at 10-20 % of RAM, never kicks in). Every write() is
//! timed on CLOCK_MONOTONIC; missed ticks are skipped, never caught up, so a
//! stall shows up as one long write and not as a burst after it.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::clock::{now_ns, sleep_until_ns};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// What `fwbench writer` was asked to do.
#[derive(Debug, Clone)]
pub struct WriterArgs {
    /// Where the write records go when the writer stops.
    pub out: PathBuf,
    /// Total write rate over all file systems, MiB/s.
    pub rate_mib: u64,
    /// Total dirty bound over all file systems, MiB.
    pub dirty_mib: u64,
    /// Size of each write, KiB.
    pub block_kib: u64,
    /// Mount points, one writer thread each.
    pub dirs: Vec<PathBuf>,
    /// Instead of every record in `out`, one line per file system there:
    /// `index longest_write_ns writes` (bench/fleet: a thousand file systems
    /// for minutes would be millions of records).
    pub per_dir: bool,
}

/// One write: when it started and how long it took, nanoseconds.
pub type Record = (u64, u64);

/// Runs until SIGTERM/SIGINT, then writes `start_ns dur_ns` lines to `out`.
pub fn run(a: &WriterArgs) -> io::Result<()> {
    let n = a.dirs.len() as u64;
    if n == 0 || a.rate_mib == 0 || a.block_kib == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "nothing to write",
        ));
    }
    // SAFETY: installing an async-signal-safe handler (one atomic store).
    unsafe {
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
    }
    let block = (a.block_kib * 1024) as usize;
    let per_fs_bytes = (a.dirty_mib << 20) / n;
    let blocks_per_file = (per_fs_bytes / block as u64).max(1);
    let interval_ns = block as u64 * n * 1_000_000_000 / (a.rate_mib << 20);
    let mut threads = Vec::new();
    for dir in &a.dirs {
        let path = dir.join("fwbench-writer.dat");
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)?;
        let a_per_dir = a.per_dir;
        threads.push(std::thread::spawn(move || {
            let buf: Vec<u8> = (0..block).map(|i| (i % 251) as u8 + 1).collect();
            let per_dir = a_per_dir;
            let mut recs: Vec<Record> = Vec::with_capacity(if per_dir { 1 } else { 1 << 18 });
            let (mut longest, mut writes) = (0u64, 0u64);
            let mut tick = now_ns();
            let mut i = 0u64;
            while !STOP.load(Ordering::SeqCst) {
                sleep_until_ns(tick);
                let off = (i % blocks_per_file) * block as u64;
                let t0 = now_ns();
                let r = file.write_at(&buf, off);
                let t1 = now_ns();
                if let Err(e) = r {
                    eprintln!("fwbench writer: {}: {e}", path.display());
                    break;
                }
                if per_dir {
                    longest = longest.max(t1 - t0);
                    writes += 1;
                } else {
                    recs.push((t0, t1 - t0));
                }
                i += 1;
                tick += interval_ns;
                if tick < t1 {
                    tick = t1; // skip what a stall missed; no catch-up burst
                }
            }
            if per_dir {
                recs.push((longest, writes));
            }
            recs
        }));
    }
    let mut all: Vec<Record> = Vec::new();
    for t in threads {
        all.extend(t.join().unwrap_or_default());
    }
    if a.per_dir {
        let tmp = a.out.with_extension("tmp");
        let mut w = io::BufWriter::new(std::fs::File::create(&tmp)?);
        for (k, (longest, writes)) in all.iter().enumerate() {
            writeln!(w, "{k} {longest} {writes}")?;
        }
        w.flush()?;
        drop(w);
        std::fs::rename(&tmp, &a.out)?;
        for dir in &a.dirs {
            let _ = std::fs::remove_file(dir.join("fwbench-writer.dat"));
        }
        return Ok(());
    }
    all.sort_unstable();
    let tmp = a.out.with_extension("tmp");
    let mut w = io::BufWriter::new(std::fs::File::create(&tmp)?);
    for (s, d) in &all {
        writeln!(w, "{s} {d}")?;
    }
    w.flush()?;
    drop(w);
    std::fs::rename(&tmp, &a.out)?;
    for dir in &a.dirs {
        let _ = std::fs::remove_file(dir.join("fwbench-writer.dat"));
    }
    Ok(())
}
