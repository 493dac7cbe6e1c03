//! What MariaDB clients live through while a hook's lock is held: three
//! sessions at once — one committing a row at a time, one reading, one
//! doing INSERTs in a transaction it never commits — and the figures an
//! operator compares the two hooks by (commits, reads and uncommitted DML
//! served while the lock held, the longest stall of the committer, the lock
//! wait the hook reported).

use std::path::Path;
use std::process::Output;
use std::time::{Duration, SystemTime};

use super::job::log_messages;
use super::mariadb::MariaDb;
use super::workload::{Ack, Workload};

/// The three sessions.
pub struct Clients {
    pub commits: Workload,
    pub reads: Workload,
    pub dml: Workload,
}

/// Everything each session had acknowledged when stopped.
pub struct Acks {
    pub commits: Vec<Ack>,
    pub reads: Vec<Ack>,
    pub dml: Vec<Ack>,
}

impl Clients {
    /// Starts the sessions on `w.t` (commits), reading `w.t`, and inserting
    /// into `w.u` with autocommit off; their logs go under `work` with `tag`.
    pub fn start(db: &MariaDb, work: &Path, tag: &str) -> Clients {
        Clients {
            commits: Workload::start(
                db.client(Some("w")),
                |n| format!("INSERT INTO t (seq) VALUES ({n}); SELECT {n};\n"),
                &work.join(format!("{tag}-commits.log")),
            ),
            reads: Workload::start(
                db.client(Some("w")),
                |n| format!("SELECT {n} + 0 * (SELECT COUNT(*) FROM t);\n"),
                &work.join(format!("{tag}-reads.log")),
            ),
            // One transaction from the first INSERT on, never committed: it is
            // rolled back when the session ends (and on the restored copy).
            dml: Workload::start(
                db.client(Some("w")),
                |n| {
                    let begin = if n == 1 { "SET autocommit = 0; " } else { "" };
                    format!("{begin}INSERT INTO u (seq) VALUES ({n}); SELECT {n};\n")
                },
                &work.join(format!("{tag}-dml.log")),
            ),
        }
    }

    /// Waits until each session has been served `n` more times.
    pub fn warm_up(&self, n: usize) {
        for w in [&self.commits, &self.reads, &self.dml] {
            w.wait_for(w.acked() + n, Duration::from_secs(60));
        }
    }

    /// Waits until each session is served `n` more times (they all go on
    /// after the run), then stops them.
    pub fn stop_after(self, n: usize) -> Acks {
        self.warm_up(n);
        Acks {
            commits: self.commits.stop(),
            reads: self.reads.stop(),
            dml: self.dml.stop(),
        }
    }
}

/// How many acknowledgements fall in `[from, to)`.
pub fn served_between(acks: &[Ack], from: SystemTime, to: SystemTime) -> usize {
    acks.iter().filter(|a| a.at >= from && a.at < to).count()
}

/// The longest time between two consecutive acknowledgements, in ms: how
/// long that session waited at worst.
pub fn longest_stall_ms(acks: &[Ack]) -> u128 {
    acks.windows(2)
        .filter_map(|p| p[1].at.duration_since(p[0].at).ok())
        .map(|d| d.as_millis())
        .max()
        .unwrap_or(0)
}

/// The `lock wait N ms` the example pre-script reported, from the run's log.
pub fn reported_lock_wait_ms(out: &Output) -> Option<u64> {
    log_messages(out).iter().find_map(|m| {
        let (_, rest) = m.split_once("lock wait ")?;
        rest.split_once(" ms")?.0.parse().ok()
    })
}

/// The binary log file and position of an `appsnap:binlog` tag value.
pub fn split_binlog(v: &str) -> (String, u64) {
    let (file, pos) = v
        .rsplit_once(':')
        .unwrap_or_else(|| panic!("appsnap:binlog {v:?} is not <file>:<position>"));
    (
        file.to_string(),
        pos.parse()
            .unwrap_or_else(|e| panic!("appsnap:binlog {v:?}: {e}")),
    )
}
