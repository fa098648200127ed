//! Retention: what the server deletes as it ages, so that its disk use
//! levels off. A background task, every `retention.interval_secs`:
//!
//! 1. events older than `events_max_age_days` that every configured
//!    notifier has moved past (and none retries) are deleted;
//! 2. each jobset's evaluations beyond its newest `evals_per_jobset` and
//!    older than `evals_min_age_days` are deleted (not those still
//!    building or holding what `latest` answers), with the builds no
//!    remaining evaluation holds (not kept ones);
//! 3. a derivation's log older than `logs_max_age_days` is deleted once no
//!    build the GC roots keep (queued, kept, every build of a kept
//!    evaluation — failed ones too: their logs are the useful ones) and
//!    no `latest` build refers to it;
//! 4. the database and the log directory are measured.
//!
//! What it did goes to the log, `/metrics` and the `/status` page.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::config::{Config, RetentionConfig};
use crate::db::Db;
use crate::logs::LogStore;
use crate::metrics::{Metrics, RetentionFigures};

/// The first run waits this long after the start, so that a restart does
/// not begin with deleting.
const FIRST_RUN_AFTER: Duration = Duration::from_secs(60);

/// The last run's report and what was deleted since the start, for
/// `/status`.
#[derive(Debug, Default)]
pub struct RetentionStatus(Mutex<Option<(Report, RetentionFigures)>>);

impl RetentionStatus {
    /// The last report, and the totals since the start.
    pub fn last(&self) -> Option<(Report, RetentionFigures)> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn add(&self, report: Report) {
        let mut state = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let mut totals = state.as_ref().map(|(_, totals)| *totals).unwrap_or_default();
        let f = &report.figures;
        totals.events += f.events;
        totals.logs += f.logs;
        totals.evals += f.evals;
        totals.builds += f.builds;
        *state = Some((report, totals));
    }
}

/// What one run did.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub figures: RetentionFigures,
    pub freed_log_bytes: u64,
    pub took: Duration,
    /// What failed, each naming its step; the other steps still ran.
    pub problems: Vec<String>,
}

pub struct Retention {
    settings: RetentionConfig,
    /// The notifiers configured now: events wait for these only.
    notifiers: Vec<String>,
    db: Db,
    logs: LogStore,
    metrics: Arc<Metrics>,
    status: Arc<RetentionStatus>,
}

impl Retention {
    pub fn new(config: &Config, db: Db, logs: LogStore, metrics: Arc<Metrics>, status: Arc<RetentionStatus>) -> Self {
        Retention {
            settings: config.retention.clone(),
            notifiers: config.notifiers.iter().map(|n| n.name().to_owned()).collect(),
            db,
            logs,
            metrics,
            status,
        }
    }

    /// Runs a minute after the start, then every `interval_secs`.
    pub async fn run(self) {
        let interval = Duration::from_secs(self.settings.interval_secs);
        tokio::time::sleep(FIRST_RUN_AFTER.min(interval)).await;
        loop {
            let report = self.once().await;
            let f = &report.figures;
            let deleted = f.events + f.evals + f.builds + f.logs;
            if report.problems.is_empty() && deleted == 0 {
                tracing::debug!(
                    "retention: nothing to delete; database {} bytes, logs {} bytes",
                    f.database_bytes.unwrap_or(0),
                    f.log_dir_bytes.unwrap_or(0)
                );
            } else if report.problems.is_empty() {
                tracing::info!(
                    "retention: deleted {} events, {} evaluations, {} builds, {} logs ({} bytes) in {:.1} s; \
                     database {} bytes, logs {} bytes",
                    f.events,
                    f.evals,
                    f.builds,
                    f.logs,
                    report.freed_log_bytes,
                    report.took.as_secs_f64(),
                    f.database_bytes.unwrap_or(0),
                    f.log_dir_bytes.unwrap_or(0),
                );
            } else {
                tracing::warn!("retention: {} (the rest ran)", report.problems.join("; "));
            }
            self.metrics.retention(&report.figures);
            self.status.add(report);
            // What retention deleted, and what was added since, changes
            // what the planner should choose.
            if let Err(e) = self.db.refresh_statistics().await {
                tracing::warn!("retention: cannot refresh the database's statistics: {e}");
            }
            tokio::time::sleep(interval).await;
        }
    }

    /// One run: every step is tried, whatever failed before it.
    pub async fn once(&self) -> Report {
        let started = Instant::now();
        let now = crate::db::now();
        let mut report = Report::default();
        let age = |days: f64| now.saturating_sub(RetentionConfig::seconds(days));

        match self.db.delete_delivered_events(age(self.settings.events_max_age_days), &self.notifiers).await {
            Ok(deleted) => report.figures.events = deleted,
            Err(e) => report.problems.push(format!("deleting events: {e}")),
        }
        match self.db.prune_evals(self.settings.evals_per_jobset, age(self.settings.evals_min_age_days)).await {
            Ok(pruned) => (report.figures.evals, report.figures.builds) = (pruned.evals, pruned.builds),
            Err(e) => report.problems.push(format!("deleting evaluations: {e}")),
        }
        match self.sweep_logs(now, age(self.settings.logs_max_age_days)).await {
            Ok(swept) => {
                report.figures.logs = swept.deleted;
                report.freed_log_bytes = swept.freed_bytes;
                report.figures.log_dir_bytes = Some(swept.remaining_bytes);
            }
            Err(e) => report.problems.push(format!("deleting logs: {e}")),
        }
        match self.db.size_bytes().await {
            Ok(bytes) => report.figures.database_bytes = Some(bytes),
            Err(e) => report.problems.push(format!("measuring the database: {e}")),
        }
        report.figures.failed = !report.problems.is_empty();
        report.figures.finished_at = crate::db::now();
        report.took = started.elapsed();
        report
    }

    /// Deletes the logs older than `before` that no retained build shows.
    async fn sweep_logs(&self, now: i64, before: i64) -> Result<crate::logs::Swept, String> {
        // Files, which no transaction fences: not after another process
        // took the maintenance role.
        self.db.check_fence().map_err(|e| e.to_string())?;
        let kept = self.db.gc_kept_builds(now, &[]).await.map_err(|e| e.to_string())?;
        let mut builds: Vec<i64> = kept.iter().map(|b| b.id).collect();
        builds.extend(self.db.latest_build_ids(None).await.map_err(|e| e.to_string())?);
        let drvs = self.db.log_derivations_of(&builds).await.map_err(|e| e.to_string())?;
        let wanted: HashSet<String> = drvs
            .iter()
            .filter_map(|d| crate::nix::StorePath::parse(d).ok().map(|p| p.base_name().to_owned()))
            .collect();
        let older_than = SystemTime::UNIX_EPOCH + Duration::from_secs(before.max(0) as u64);
        let logs = self.logs.clone();
        tokio::task::spawn_blocking(move || logs.sweep(older_than, &wanted))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())
    }
}
