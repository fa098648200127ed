//! Server metrics in Prometheus's text format: what the parts count as they
//! work (HTTP requests, evaluations, build steps per machine, builds) and
//! what is read from the database when scraped (the queue).
//!
//! Each part gets the one [`Metrics`] handle and calls the method for its
//! event; only this module knows the metric names.

use std::sync::Arc;
use std::time::Duration;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
    exponential_buckets,
};

pub struct Metrics {
    registry: Registry,
    http_requests: IntCounterVec,
    http_duration: HistogramVec,
    evaluations: IntCounterVec,
    evaluation_duration: Histogram,
    step_duration: HistogramVec,
    scheduling_pass: Histogram,
    steps: IntCounterVec,
    builds: IntCounterVec,
    queued_builds: IntGauge,
    running_steps: IntGauge,
    retention_deleted: IntCounterVec,
    retention_runs: IntCounterVec,
    retention_last_run: IntGauge,
    database_size: IntGauge,
    log_dir_size: IntGauge,
}

/// What one retention run did and measured (see `retention/`).
#[derive(Debug, Clone, Copy, Default)]
pub struct RetentionFigures {
    pub events: u64,
    pub logs: u64,
    pub evals: u64,
    pub builds: u64,
    pub database_bytes: Option<u64>,
    pub log_dir_bytes: Option<u64>,
    pub failed: bool,
    pub finished_at: i64,
}

fn register<T: prometheus::core::Collector + Clone + 'static>(registry: &Registry, metric: T) -> T {
    registry.register(Box::new(metric.clone())).expect("metric names are unique");
    metric
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let registry = Registry::new();
        let info = register(
            &registry,
            IntGaugeVec::new(
                Opts::new("orthrus_build_info", "Version of the running server, as a label"),
                &["version"],
            )
            .expect("valid metric"),
        );
        info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        let start = register(
            &registry,
            IntGauge::new("orthrus_start_time_seconds", "When the server started, in Unix seconds")
                .expect("valid metric"),
        );
        // (Its own clock: metrics is a leaf every part may use.)
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        start.set(now as i64);
        let seconds = |start: f64, count: usize| exponential_buckets(start, 2.0, count).expect("valid buckets");
        Arc::new(Metrics {
            http_requests: register(
                &registry,
                IntCounterVec::new(
                    Opts::new("orthrus_http_requests_total", "HTTP requests answered, by route and status"),
                    &["method", "route", "status"],
                )
                .expect("valid metric"),
            ),
            http_duration: register(
                &registry,
                HistogramVec::new(
                    HistogramOpts::new("orthrus_http_request_duration_seconds", "Time to answer HTTP requests")
                        .buckets(seconds(0.0005, 16)),
                    &["route"],
                )
                .expect("valid metric"),
            ),
            evaluations: register(
                &registry,
                IntCounterVec::new(
                    Opts::new(
                        "orthrus_evaluations_total",
                        "Checks of jobsets, by outcome (evaluated, unchanged, fetch-failed, eval-failed)",
                    ),
                    &["outcome"],
                )
                .expect("valid metric"),
            ),
            evaluation_duration: register(
                &registry,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "orthrus_evaluation_duration_seconds",
                        "Time to check a jobset, fetching included",
                    )
                    .buckets(seconds(0.05, 16)),
                )
                .expect("valid metric"),
            ),
            step_duration: register(
                &registry,
                HistogramVec::new(
                    HistogramOpts::new("orthrus_build_step_duration_seconds", "Time to build one step, by machine")
                        .buckets(seconds(0.01, 20)),
                    &["machine"],
                )
                .expect("valid metric"),
            ),
            scheduling_pass: register(
                &registry,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "orthrus_queue_scheduling_pass_seconds",
                        "Time of one scheduling pass: ranking the steps that became runnable and giving free machine slots to the most urgent",
                    )
                    .buckets(seconds(0.00001, 18)),
                )
                .expect("valid metric"),
            ),
            steps: register(
                &registry,
                IntCounterVec::new(
                    Opts::new("orthrus_build_steps_total", "Build steps finished, by machine and status"),
                    &["machine", "status"],
                )
                .expect("valid metric"),
            ),
            builds: register(
                &registry,
                IntCounterVec::new(
                    Opts::new("orthrus_builds_finished_total", "Builds finished, by status"),
                    &["status"],
                )
                .expect("valid metric"),
            ),
            queued_builds: register(
                &registry,
                IntGauge::new("orthrus_queue_builds", "Builds queued or building").expect("valid metric"),
            ),
            running_steps: register(
                &registry,
                IntGauge::new("orthrus_queue_steps_running", "Build steps running now").expect("valid metric"),
            ),
            retention_deleted: register(
                &registry,
                IntCounterVec::new(
                    Opts::new("orthrus_retention_deleted_total", "What retention deleted, by kind"),
                    &["kind"],
                )
                .expect("valid metric"),
            ),
            retention_runs: register(
                &registry,
                IntCounterVec::new(
                    Opts::new("orthrus_retention_runs_total", "Retention runs, by outcome"),
                    &["outcome"],
                )
                .expect("valid metric"),
            ),
            retention_last_run: register(
                &registry,
                IntGauge::new("orthrus_retention_last_run_seconds", "When retention last finished, in Unix seconds")
                    .expect("valid metric"),
            ),
            database_size: register(
                &registry,
                IntGauge::new("orthrus_database_size_bytes", "Size of the database, measured by retention")
                    .expect("valid metric"),
            ),
            log_dir_size: register(
                &registry,
                IntGauge::new("orthrus_log_dir_size_bytes", "Size of the log directory, measured by retention")
                    .expect("valid metric"),
            ),
            registry,
        })
    }

    pub fn retention(&self, figures: &RetentionFigures) {
        for (kind, count) in [
            ("events", figures.events),
            ("logs", figures.logs),
            ("evaluations", figures.evals),
            ("builds", figures.builds),
        ] {
            self.retention_deleted.with_label_values(&[kind]).inc_by(count);
        }
        self.retention_runs.with_label_values(&[if figures.failed { "failed" } else { "ok" }]).inc();
        self.retention_last_run.set(figures.finished_at);
        if let Some(bytes) = figures.database_bytes {
            self.database_size.set(bytes as i64);
        }
        if let Some(bytes) = figures.log_dir_bytes {
            self.log_dir_size.set(bytes as i64);
        }
    }

    pub fn http_request(&self, method: &str, route: &str, status: u16, duration: Duration) {
        self.http_requests.with_label_values(&[method, route, &status.to_string()]).inc();
        self.http_duration.with_label_values(&[route]).observe(duration.as_secs_f64());
    }

    pub fn evaluation(&self, outcome: &str, duration: Duration) {
        self.evaluations.with_label_values(&[outcome]).inc();
        self.evaluation_duration.observe(duration.as_secs_f64());
    }

    pub fn step_finished(&self, machine: &str, status: &str, duration: Duration) {
        self.steps.with_label_values(&[machine, status]).inc();
        self.step_duration.with_label_values(&[machine]).observe(duration.as_secs_f64());
    }

    pub fn scheduling_pass(&self, duration: Duration) {
        self.scheduling_pass.observe(duration.as_secs_f64());
    }

    pub fn build_finished(&self, status: &str) {
        self.builds.with_label_values(&[status]).inc();
    }

    /// The text exposition, with the queue's current figures.
    pub fn render(&self, queued_builds: u64, running_steps: u64) -> String {
        self.queued_builds.set(queued_builds as i64);
        self.running_steps.set(running_steps as i64);
        let mut buffer = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buffer).expect("text encoding cannot fail");
        String::from_utf8(buffer).expect("the text format is UTF-8")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_what_was_counted() {
        let metrics = Metrics::new();
        metrics.http_request("GET", "/build/{id}", 200, Duration::from_millis(3));
        metrics.step_finished("localhost", "succeeded", Duration::from_millis(250));
        metrics.build_finished("succeeded");
        metrics.evaluation("evaluated", Duration::from_secs(2));
        let text = metrics.render(7, 2);
        assert!(
            text.contains("orthrus_http_requests_total{method=\"GET\",route=\"/build/{id}\",status=\"200\"} 1"),
            "{text}"
        );
        assert!(text.contains("orthrus_build_step_duration_seconds_count{machine=\"localhost\"} 1"));
        assert!(text.contains("orthrus_queue_builds 7"));
        assert!(text.contains("orthrus_evaluations_total{outcome=\"evaluated\"} 1"));
        assert!(text.contains("# TYPE orthrus_build_step_duration_seconds histogram"));
    }
}
