//! How far a running evaluation is, shown on its jobset: jobs evaluated
//! and jobs known so far (nested attribute sets add theirs as they are
//! found). Counted by the workers in memory, and written to the jobset's
//! row every [`RECORD_EVERY`] so that every web process can show it.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use crate::db::Db;
use crate::domain::EvalProgressCount;

/// How often the count is written while an evaluation runs.
pub const RECORD_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
pub struct EvalProgress {
    evaluated: AtomicUsize,
    total: AtomicUsize,
    /// Whether `total` is known (not with nix-eval-jobs).
    counts_total: AtomicBool,
}

impl EvalProgress {
    pub fn add_total(&self, items: usize) {
        self.total.fetch_add(items, Ordering::Relaxed);
        self.counts_total.store(true, Ordering::Relaxed);
    }

    pub fn add_evaluated(&self, items: usize) {
        self.evaluated.fetch_add(items, Ordering::Relaxed);
    }

    pub fn now(&self) -> EvalProgressCount {
        let evaluated = self.evaluated.load(Ordering::Relaxed);
        if self.counts_total.load(Ordering::Relaxed) {
            let total = self.total.load(Ordering::Relaxed);
            EvalProgressCount { evaluated: evaluated.min(total), total: Some(total) }
        } else {
            EvalProgressCount { evaluated, total: None }
        }
    }
}

/// Writes the count on the jobset whenever it changed, until dropped.
pub async fn record(db: Db, jobset_id: i64, progress: std::sync::Arc<EvalProgress>) {
    let mut last = None;
    let mut every = tokio::time::interval(RECORD_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let now = progress.now();
        if last != Some(now) && (now.evaluated > 0 || now.total.is_some()) {
            if let Err(e) = db.record_eval_progress(jobset_id, now).await {
                tracing::debug!("cannot record the evaluation's progress: {e}");
            }
            last = Some(now);
        }
    }
}
