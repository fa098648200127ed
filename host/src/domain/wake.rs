//! Waking a loop that may run in this process or in another one.

use std::sync::{Arc, OnceLock};

use tokio::sync::Notify;

type Others = Box<dyn Fn() + Send + Sync>;

/// Wakes a loop (the evaluator's, the queue runner's): the waiter in this
/// process at once and, once the process has joined a cluster
/// ([`Wake::also_wake_others`]), the processes that run it elsewhere.
/// Cheap to clone; clones wake the same loop.
#[derive(Clone, Default)]
pub struct Wake {
    local: Arc<Notify>,
    others: Arc<OnceLock<Others>>,
}

impl Wake {
    /// Wakes the loop wherever it runs.
    pub fn wake(&self) {
        self.local.notify_one();
        if let Some(others) = self.others.get() {
            others();
        }
    }

    /// Wakes the loop in this process only (a wake-up heard from another
    /// process, or a loop waking itself).
    pub fn wake_here(&self) {
        self.local.notify_one();
    }

    /// Resolves at the next wake-up (one stored if none was awaited).
    pub async fn woken(&self) {
        self.local.notified().await;
    }

    /// From now on, [`Wake::wake`] also calls `others` (set once).
    pub fn also_wake_others(&self, others: impl Fn() + Send + Sync + 'static) {
        let _ = self.others.set(Box::new(others));
    }
}

impl std::fmt::Debug for Wake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wake").field("others", &self.others.get().is_some()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn a_wake_reaches_this_process_and_the_others_but_a_local_one_only_here() {
        let wake = Wake::default();
        let told = Arc::new(AtomicUsize::new(0));
        let counter = told.clone();
        wake.also_wake_others(move || {
            counter.fetch_add(1, Ordering::SeqCst);
        });
        wake.clone().wake();
        wake.woken().await;
        wake.wake_here();
        wake.woken().await;
        assert_eq!(told.load(Ordering::SeqCst), 1);
    }
}
