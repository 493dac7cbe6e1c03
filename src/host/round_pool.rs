//! A tiny pool of pre-spawned threads for the freeze guard's parallel rounds.
//!
//! The guard may not allocate or spawn while anything is frozen (memory
//! reclaim could wait on a frozen disk), so the threads exist before the
//! first FIFREEZE and are driven by two barriers, which only park on futexes.
//! The calling thread takes part as worker 0, so a single file system needs
//! no extra thread at all.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Barrier};
use std::thread::JoinHandle;

/// What a round does with each item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Round {
    /// Every item of every stage (e.g. `syncfs` before freezing).
    All,
    /// The items of one stage (e.g. FIFREEZE of independent file systems).
    Stage(usize),
}

/// The work done for one item in one round.
pub type Work = Arc<dyn Fn(Round, usize) + Send + Sync>;

/// Items per worker, per stage: `assignment[worker][stage]`.
type Assignment = Vec<Vec<Vec<usize>>>;

struct Control {
    start: Barrier,
    end: Barrier,
    stop: AtomicBool,
    /// `usize::MAX` = [`Round::All`], else the stage index.
    round: AtomicUsize,
}

/// Pre-spawned workers that run rounds in lockstep with the caller.
pub struct RoundPool {
    control: Arc<Control>,
    mine: Vec<Vec<usize>>,
    work: Work,
    threads: Vec<JoinHandle<()>>,
}

impl RoundPool {
    /// Spawns one thread per item of the widest stage, minus the caller.
    pub fn spawn(stages: &[Vec<usize>], work: Work) -> io::Result<Self> {
        let width = stages.iter().map(Vec::len).max().unwrap_or(0).max(1);
        let mut assignment: Assignment = vec![vec![Vec::new(); stages.len()]; width];
        for (s, items) in stages.iter().enumerate() {
            for (k, &i) in items.iter().enumerate() {
                assignment[k % width][s].push(i);
            }
        }
        let control = Arc::new(Control {
            start: Barrier::new(width),
            end: Barrier::new(width),
            stop: AtomicBool::new(false),
            round: AtomicUsize::new(usize::MAX),
        });
        let mut iter = assignment.into_iter();
        let mine = iter.next().unwrap_or_default();
        let mut pool = RoundPool {
            control,
            mine,
            work,
            threads: Vec::new(),
        };
        for (w, items) in iter.enumerate() {
            let control = Arc::clone(&pool.control);
            let work = Arc::clone(&pool.work);
            let spawned = std::thread::Builder::new()
                .name(format!("freeze-{}", w + 1))
                .stack_size(64 << 10)
                .spawn(move || worker(&control, &items, &work));
            match spawned {
                Ok(h) => pool.threads.push(h),
                Err(e) => {
                    // Release the threads already waiting: the barrier would never fill.
                    pool.abandon();
                    return Err(e);
                }
            }
        }
        Ok(pool)
    }

    /// Runs one round on every worker (the caller included); returns when all are done.
    pub fn run(&self, round: Round) {
        let code = match round {
            Round::All => usize::MAX,
            Round::Stage(s) => s,
        };
        self.control.round.store(code, SeqCst);
        self.control.start.wait();
        do_round(&self.mine, code, &self.work);
        self.control.end.wait();
    }

    /// Spawning failed half-way: threads already running wait on a barrier that
    /// cannot fill, so they are detached (they hold nothing but the pool's Arcs).
    fn abandon(&mut self) {
        self.threads.clear();
    }
}

impl Drop for RoundPool {
    fn drop(&mut self) {
        if self.threads.is_empty() {
            return;
        }
        self.control.stop.store(true, SeqCst);
        self.control.start.wait();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn worker(control: &Control, items: &[Vec<usize>], work: &Work) {
    loop {
        control.start.wait();
        if control.stop.load(SeqCst) {
            return;
        }
        do_round(items, control.round.load(SeqCst), work);
        control.end.wait();
    }
}

fn do_round(items: &[Vec<usize>], code: usize, work: &Work) {
    if code == usize::MAX {
        for &i in items.iter().flatten() {
            work(Round::All, i);
        }
    } else if let Some(stage) = items.get(code) {
        for &i in stage {
            work(Round::Stage(code), i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::time::{Duration, Instant};

    #[test]
    fn every_item_runs_once_per_round_and_stages_run_in_order() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let l = Arc::clone(&log);
        let stages = vec![vec![0, 1, 2], vec![3]];
        let pool = RoundPool::spawn(
            &stages,
            Arc::new(move |r, i| l.lock().unwrap().push((r, i))),
        )
        .unwrap();
        pool.run(Round::All);
        pool.run(Round::Stage(0));
        let after_stage0 = log.lock().unwrap().len();
        pool.run(Round::Stage(1));
        drop(pool);
        let log = log.lock().unwrap();
        let mut all: Vec<usize> = log[..4].iter().map(|&(_, i)| i).collect();
        all.sort();
        assert_eq!(all, vec![0, 1, 2, 3]);
        assert!(log[..4].iter().all(|&(r, _)| r == Round::All));
        let mut s0: Vec<usize> = log[4..after_stage0].iter().map(|&(_, i)| i).collect();
        s0.sort();
        assert_eq!(s0, vec![0, 1, 2]);
        assert_eq!(&log[after_stage0..], &[(Round::Stage(1), 3)]);
    }

    #[test]
    fn a_stage_runs_its_items_concurrently() {
        // Three items that each wait for the other two: only possible in parallel.
        let arrived = Arc::new(AtomicUsize::new(0));
        let met = Arc::new(AtomicUsize::new(0));
        let (a, m) = (Arc::clone(&arrived), Arc::clone(&met));
        let pool = RoundPool::spawn(
            &[vec![0, 1, 2]],
            Arc::new(move |_, _| {
                a.fetch_add(1, SeqCst);
                let t = Instant::now();
                while t.elapsed() < Duration::from_secs(10) {
                    if a.load(SeqCst) == 3 {
                        m.fetch_add(1, SeqCst);
                        return;
                    }
                    std::thread::yield_now();
                }
            }),
        )
        .unwrap();
        pool.run(Round::Stage(0));
        assert_eq!(met.load(SeqCst), 3, "every item saw the others running");
        assert_eq!(pool.threads.len(), 2, "the caller is worker 0");
    }

    #[test]
    fn one_item_needs_no_thread() {
        let ran = Arc::new(Mutex::new(Vec::new()));
        let r = Arc::clone(&ran);
        let pool = RoundPool::spawn(
            &[vec![7]],
            Arc::new(move |round, i| {
                r.lock()
                    .unwrap()
                    .push((round, i, std::thread::current().id()))
            }),
        )
        .unwrap();
        assert!(pool.threads.is_empty());
        pool.run(Round::All);
        pool.run(Round::Stage(0));
        let me = std::thread::current().id();
        assert_eq!(
            *ran.lock().unwrap(),
            vec![(Round::All, 7, me), (Round::Stage(0), 7, me)],
            "the item ran once per round, on the caller's thread"
        );
    }
}
