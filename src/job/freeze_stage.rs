//! The freeze as a run sees it: start a guard for the plan, freeze, ask
//! whether the freeze held, thaw. Behind a trait so the run's failure routes
//! can be tested without root: the real guard process ([`GuardProcess`]) is
//! the only implementation in the library and the binary; tests bring a fake.
//!
//! Every method blocks (the real guard speaks over a pipe); the machine calls
//! `freeze`, `check` and `thaw` on `spawn_blocking`, exactly as before.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::host::{FreezeError, FreezeGuard, Frozen, Plan, ThawError, ThawReport};

/// What a guard is started for.
#[derive(Debug, Clone, Copy)]
pub struct GuardSpawn<'a> {
    /// The file systems to freeze, in order.
    pub plan: &'a Plan,
    /// The guard thaws by itself this long after its first FIFREEZE.
    pub deadline: Duration,
    /// Where the guard writes the frozen-set record.
    pub run_dir: &'a Path,
    /// The binary to start as `freeze-guard` (None: this very binary).
    pub exe: Option<&'a Path>,
}

/// Starts guards. Shared by every run (`Arc<dyn FreezeStage>` in `RunEnv`).
pub trait FreezeStage: Send + Sync {
    /// Starts a guard and waits until it has opened and verified every
    /// target: nothing is frozen yet. Blocking.
    fn spawn(&self, req: GuardSpawn<'_>) -> Result<Box<dyn StageGuard>, FreezeError>;
}

/// One armed guard. Dropping it must thaw whatever it froze (the real one
/// closes the guard's stdin), so an early return never leaves anything frozen.
pub trait StageGuard: Send {
    /// Freezes every target; on error nothing of ours stays frozen.
    fn freeze(&mut self) -> Result<Frozen, FreezeError>;
    /// The file systems someone else thawed meanwhile (see [`FreezeGuard::check`]).
    fn check(&mut self) -> Result<Vec<PathBuf>, ThawError>;
    /// Thaws and says why and how long each file system was held.
    fn thaw(self: Box<Self>) -> Result<ThawReport, ThawError>;
}

/// The real freeze: `appsnap freeze-guard` as a separate process.
#[derive(Debug, Clone, Copy, Default)]
pub struct GuardProcess;

impl FreezeStage for GuardProcess {
    fn spawn(&self, req: GuardSpawn<'_>) -> Result<Box<dyn StageGuard>, FreezeError> {
        let guard = match req.exe {
            Some(exe) => {
                FreezeGuard::spawn_exe(exe, req.plan.targets(), req.deadline, req.run_dir)?
            }
            None => FreezeGuard::spawn(req.plan, req.deadline, req.run_dir)?,
        };
        Ok(Box::new(guard))
    }
}

impl StageGuard for FreezeGuard {
    fn freeze(&mut self) -> Result<Frozen, FreezeError> {
        FreezeGuard::freeze(self)
    }

    fn check(&mut self) -> Result<Vec<PathBuf>, ThawError> {
        FreezeGuard::check(self)
    }

    fn thaw(self: Box<Self>) -> Result<ThawReport, ThawError> {
        FreezeGuard::thaw(*self)
    }
}
