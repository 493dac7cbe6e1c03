//! Runs whose disk sets intersect wait for each other.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedMutexGuard, OwnedRwLockReadGuard, OwnedRwLockWriteGuard, RwLock};

use super::lock;
use crate::policy::{DiskId, DiskSelection};

/// Serializes runs whose disk sets may intersect: two snapshot groups of the
/// same disk at once are refused by ECS (exit 16), and their scripts and
/// freezes would interleave. `disks = "all"` conflicts with every run.
///
/// Deadlock-free by lock ordering: the instance-wide lock first (shared for
/// a disk list, exclusive for "all"), then per-disk locks in ID order.
#[derive(Debug, Clone, Default)]
pub struct DiskLocks {
    all: Arc<RwLock<()>>,
    disks: Arc<Mutex<HashMap<DiskId, Arc<tokio::sync::Mutex<()>>>>>,
}

/// Held for a whole run; dropping it releases the run's disks.
#[derive(Debug)]
pub struct DiskLease {
    _all: AllGuard,
    _disks: Vec<OwnedMutexGuard<()>>,
}

#[derive(Debug)]
enum AllGuard {
    Shared(#[allow(dead_code)] OwnedRwLockReadGuard<()>),
    Exclusive(#[allow(dead_code)] OwnedRwLockWriteGuard<()>),
}

impl DiskLocks {
    /// Empty lock table.
    pub fn new() -> DiskLocks {
        DiskLocks::default()
    }

    /// Waits until no run holding an intersecting disk set is in progress.
    pub async fn acquire(&self, disks: &DiskSelection) -> DiskLease {
        match disks {
            // Conservative: the exclusions of "all" are resolved only at run
            // time against the instance, so treat it as every disk.
            DiskSelection::All { .. } => DiskLease {
                _all: AllGuard::Exclusive(self.all.clone().write_owned().await),
                _disks: Vec::new(),
            },
            DiskSelection::List(list) => {
                let all = AllGuard::Shared(self.all.clone().read_owned().await);
                let mut ids: Vec<&DiskId> = list.iter().collect();
                ids.sort();
                ids.dedup();
                let mutexes: Vec<_> = {
                    let mut table = lock(&self.disks);
                    ids.iter()
                        .map(|id| table.entry((*id).clone()).or_default().clone())
                        .collect()
                };
                let mut guards = Vec::with_capacity(mutexes.len());
                for m in mutexes {
                    guards.push(m.lock_owned().await);
                }
                DiskLease {
                    _all: all,
                    _disks: guards,
                }
            }
        }
    }
}
