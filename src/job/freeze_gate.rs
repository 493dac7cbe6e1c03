//! One freeze at a time on this instance. A run takes a permit around its
//! freeze window (before FIFREEZE, released after FITHAW): two freezes at
//! once would stretch each one's I/O pause and can deadlock on shared file
//! systems. The job owns it (the scheduler only hands a shared gate to each
//! run), so the run does not reach up into the scheduler.

use std::sync::Arc;

use tokio::sync::OwnedMutexGuard;

/// The instance-wide gate; clones share it.
#[derive(Debug, Clone, Default)]
pub struct FreezeGate {
    inner: Arc<tokio::sync::Mutex<()>>,
}

/// Held while a job's file systems may be frozen; dropping it lets the next freeze start.
#[derive(Debug)]
pub struct FreezePermit {
    _guard: OwnedMutexGuard<()>,
}

impl FreezeGate {
    /// A fresh gate (the scheduler owns one; clones share it).
    pub fn new() -> FreezeGate {
        FreezeGate::default()
    }

    /// Waits until no other freeze is in progress, then holds the gate.
    pub async fn acquire(&self) -> FreezePermit {
        FreezePermit {
            _guard: self.inner.clone().lock_owned().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_second_freeze_waits_for_the_first_permit() {
        let gate = FreezeGate::new();
        let first = gate.acquire().await;
        let other = gate.clone();
        let mut second = tokio::spawn(async move { other.acquire().await });
        tokio::task::yield_now().await;
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(50), &mut second)
                .await
                .is_err(),
            "the second freeze started while the first permit was held"
        );
        drop(first);
        second
            .await
            .expect("the second freeze starts once the first permit is gone");
    }
}
