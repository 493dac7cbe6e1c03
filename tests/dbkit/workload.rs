//! The write workload: one client session committing one small transaction
//! at a time (a row with a sequence number), recording when each commit was
//! acknowledged. The log lives on the host (the lab dir on the root disk),
//! never on a file system that gets frozen.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// One acknowledged commit.
#[derive(Debug, Clone, Copy)]
pub struct Ack {
    /// The row's sequence number (1, 2, 3, ...).
    pub seq: u64,
    /// When the client read the server's answer.
    pub at: SystemTime,
}

/// A running workload; `stop` ends it and returns every acknowledged commit.
pub struct Workload {
    stop: Arc<AtomicBool>,
    acks: Arc<Mutex<Vec<Ack>>>,
    pid: Arc<AtomicI32>,
    thread: Option<JoinHandle<Result<(), String>>>,
}

impl Workload {
    /// Starts `client` (a SQL shell reading statements on stdin) and feeds it
    /// `statement(seq)`, which must make the client print exactly `seq` on one
    /// line once the transaction has committed. Each ack goes to `log` as
    /// `<seq> <unix microseconds>`.
    pub fn start(mut client: Command, statement: fn(u64) -> String, log: &Path) -> Workload {
        let stderr = std::fs::File::create(log.with_extension("stderr")).unwrap();
        let mut child = client
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("the workload client starts");
        let stop = Arc::new(AtomicBool::new(false));
        let acks = Arc::new(Mutex::new(Vec::new()));
        let pid = Arc::new(AtomicI32::new(child.id() as i32));
        let mut logf = std::fs::File::create(log).unwrap();
        let (stop2, acks2, pid2) = (stop.clone(), acks.clone(), pid.clone());
        let thread = std::thread::spawn(move || {
            let mut stdin = child.stdin.take().unwrap();
            let mut stdout = BufReader::new(child.stdout.take().unwrap());
            let mut result = Ok(());
            let mut seq = 0u64;
            while !stop2.load(Ordering::SeqCst) {
                seq += 1;
                if let Err(e) = stdin
                    .write_all(statement(seq).as_bytes())
                    .and_then(|_| stdin.flush())
                {
                    result = Err(format!("writing statement {seq}: {e}"));
                    break;
                }
                let mut line = String::new();
                match stdout.read_line(&mut line) {
                    Ok(0) => {
                        result = Err(format!("client ended before acknowledging {seq}"));
                        break;
                    }
                    Err(e) => {
                        result = Err(format!("reading ack {seq}: {e}"));
                        break;
                    }
                    Ok(_) => {}
                }
                let at = SystemTime::now();
                if line.trim() != seq.to_string() {
                    result = Err(format!("ack for {seq} was {line:?}"));
                    break;
                }
                acks2.lock().unwrap().push(Ack { seq, at });
                let us = at.duration_since(UNIX_EPOCH).unwrap().as_micros();
                let _ = writeln!(logf, "{seq} {us}");
                // Small transactions, not a CPU hog on a shared 2-core machine.
                std::thread::sleep(Duration::from_millis(2));
            }
            drop(stdin);
            let _ = child.wait();
            pid2.store(0, Ordering::SeqCst);
            result
        });
        Workload {
            stop,
            acks,
            pid,
            thread: Some(thread),
        }
    }

    /// How many commits have been acknowledged so far.
    pub fn acked(&self) -> usize {
        self.acks.lock().unwrap().len()
    }

    /// Waits until at least `n` commits are acknowledged; panics after `limit`.
    pub fn wait_for(&self, n: usize, limit: Duration) {
        let start = Instant::now();
        while self.acked() < n {
            assert!(
                start.elapsed() < limit,
                "workload: only {} of {n} commits acknowledged after {limit:?}",
                self.acked()
            );
            assert!(
                self.thread.as_ref().is_some_and(|t| !t.is_finished()),
                "workload ended early: {:?}",
                self.acks.lock().unwrap().last()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Ends the workload after its current transaction; panics if it failed.
    pub fn stop(mut self) -> Vec<Ack> {
        self.stop.store(true, Ordering::SeqCst);
        let t = self.thread.take().unwrap();
        let start = Instant::now();
        while !t.is_finished() {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "workload did not stop within 60 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        t.join()
            .unwrap()
            .unwrap_or_else(|e| panic!("workload: {e}"));
        std::mem::take(&mut *self.acks.lock().unwrap())
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        // Failure paths: kill the client so no thread outlives the test.
        self.stop.store(true, Ordering::SeqCst);
        let pid = self.pid.load(Ordering::SeqCst);
        if self.thread.is_some() && pid > 0 {
            // SAFETY: plain kill(2) on our own child's pid.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}
