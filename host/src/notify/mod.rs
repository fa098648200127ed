//! Notifications: each configured notifier reads the event outbox
//! (`db/events.rs`) in order and hands each event it asked for to its
//! plugin — or, for a binary cache publisher (`publish`), to its [`Sink`].
//!
//! Delivery is at least once and in order per build (per jobset for
//! evaluation events): the cursor moves on only after a batch is dealt
//! with, so a crash can repeat events but never skip one. An event whose
//! delivery fails is parked with its attempts and retried with a doubling
//! delay, forever: a notifier that keeps failing shows as `failing` in
//! `/api/notifiers` and in the log, and loses nothing. While an event is
//! parked, later events of the same build are parked behind it; events of
//! other builds go on.

mod context;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::config::{Config, NotifierConfig};
use crate::db::{Db, DbResult, Event, NewPending, now};
use crate::domain::EventKind;
use crate::logs::LogStore;
use crate::plugins::api::NotifyEvent;
use crate::plugins::{PluginKind, PluginRuntime};
use context::ContextReader;

/// Events read from the outbox at a time.
const BATCH: u64 = 1000;
/// Even without a wake-up, the outbox is read this often.
const POLL: Duration = Duration::from_secs(5);
/// How often the cursor is recorded while a batch is delivered.
const RECORD_EVERY: Duration = Duration::from_millis(50);
/// From this many failed attempts on, a notifier is reported as failing.
pub const FAILING_AFTER: i32 = 3;

/// Checks the notifiers of the configuration against the loaded plugins.
pub fn check(config: &Config, plugins: &PluginRuntime) -> Result<(), String> {
    for notifier in &config.notifiers {
        if !plugins.has_plugin(&notifier.plugin, PluginKind::Notifier) {
            return Err(format!(
                "notifiers: {}: there is no notifier plugin ‘{}’ (loaded notifiers: {})",
                notifier.name(),
                notifier.plugin,
                plugins
                    .plugins()
                    .iter()
                    .filter(|p| p.kind == PluginKind::Notifier)
                    .map(|p| p.id.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    Ok(())
}

/// What a delivery task hands the events it subscribed to, one at a time
/// and at least once each: an error is retried later, with back-off.
pub trait Sink: Send + Sync + 'static {
    /// What it is, for the log.
    fn describe(&self) -> String;
    fn deliver(&self, event: &NotifyEvent) -> impl Future<Output = Result<(), String>> + Send;
}

/// What a delivery task reads of the outbox, under which name its cursor
/// is kept, and how it retries.
#[derive(Debug, Clone)]
pub struct Subscription {
    /// Names its delivery state (`/api/notifiers`).
    pub name: String,
    /// Event kinds; empty means all.
    pub events: Vec<EventKind>,
    /// Only events of these projects; empty means all.
    pub projects: Vec<String>,
    pub retry_delay_secs: u64,
    pub retry_max_delay_secs: u64,
}

impl From<&NotifierConfig> for Subscription {
    fn from(notifier: &NotifierConfig) -> Subscription {
        Subscription {
            name: notifier.name().to_owned(),
            events: notifier.events.clone(),
            projects: notifier.projects.clone(),
            retry_delay_secs: notifier.retry_delay_secs,
            retry_max_delay_secs: notifier.retry_max_delay_secs,
        }
    }
}

/// A notifier plugin, with its settings.
struct PluginSink {
    plugins: PluginRuntime,
    plugin: String,
    settings: BTreeMap<String, String>,
}

impl Sink for PluginSink {
    fn describe(&self) -> String {
        format!("plugin {}", self.plugin)
    }

    async fn deliver(&self, event: &NotifyEvent) -> Result<(), String> {
        self.plugins.notify(&self.plugin, &self.settings, event).await.map_err(|e| e.to_string())
    }
}

/// Starts one delivery task per configured notifier.
pub fn start(
    config: &Arc<Config>,
    db: &Db,
    plugins: &PluginRuntime,
    logs: &LogStore,
) -> Vec<tokio::task::JoinHandle<()>> {
    config
        .notifiers
        .iter()
        .map(|notifier| {
            let sink = PluginSink {
                plugins: plugins.clone(),
                plugin: notifier.plugin.clone(),
                settings: notifier.settings.clone(),
            };
            spawn(notifier.into(), db, logs, config, sink)
        })
        .collect()
}

/// Starts a delivery task that hands `sink` the events `subscription` asks for.
pub fn spawn<S: Sink>(
    subscription: Subscription,
    db: &Db,
    logs: &LogStore,
    config: &Config,
    sink: S,
) -> tokio::task::JoinHandle<()> {
    let task = Delivery {
        name: subscription.name.clone(),
        subscription,
        db: db.clone(),
        context: ContextReader::new(db.clone(), logs.clone(), config.base_url()),
        sink,
    };
    tokio::spawn(task.run())
}

struct Delivery<S> {
    subscription: Subscription,
    name: String,
    db: Db,
    context: ContextReader,
    sink: S,
}

/// Why an event was not delivered.
enum Failure {
    /// The sink said no (or its plugin crashed): retry later.
    Sink(String),
    /// The database failed: stop this round, try again.
    Db(crate::db::DbError),
}

impl<S: Sink> Delivery<S> {
    async fn run(mut self) {
        let mut wake = self.db.subscribe_events();
        tracing::info!(notifier = %self.name, to = %self.sink.describe(), "notifier started");
        loop {
            wake.borrow_and_update();
            match self.round().await {
                Ok(Some(next)) if next.is_zero() => continue,
                Ok(next) => {
                    let pause = next.unwrap_or(POLL).min(POLL);
                    let _ = tokio::time::timeout(pause, wake.changed()).await;
                }
                Err(e) => {
                    tracing::error!(notifier = %self.name, "notifier cannot read its state: {e}");
                    tokio::time::sleep(POLL).await;
                }
            }
        }
    }

    /// Retries what is due, then delivers a batch of new events. Returns
    /// how soon there is more to do: zero to go on at once, the time until
    /// the next retry, or `None` for nothing planned.
    async fn round(&mut self) -> DbResult<Option<Duration>> {
        self.context.forget();
        let (blocked, retry_in, retried) = self.retry_due().await?;
        let mut blocked = blocked;
        let cursor = self.db.notifier_cursor(&self.name).await?.cursor;
        let events = self.db.events_after(cursor, BATCH, None).await?;
        let wanted: Vec<Event> = events.iter().filter(|e| self.wants_kind(e)).cloned().collect();
        self.context.read_builds(&wanted).await?;
        let Some(last) = events.last().map(|e| e.id) else {
            return Ok(if retried { Some(Duration::ZERO) } else { retry_in });
        };
        let full = events.len() as u64 == BATCH;
        let mut parked = Vec::new();
        let mut unrecorded = 0;
        let mut recorded_at = std::time::Instant::now();
        for event in &events {
            let key = ordering_key(event);
            if !self.wants_kind(event) {
                continue;
            }
            if blocked.contains(&key) {
                parked.push(NewPending {
                    event_id: event.id,
                    ordering_key: key,
                    attempts: 0,
                    next_attempt: 0,
                    error: None,
                });
                continue;
            }
            match self.deliver(event).await {
                Ok(true) => {
                    // Recorded every RECORD_EVERY of delivering: a crash
                    // repeats the delivery in flight and those of the last
                    // RECORD_EVERY at most, not the batch before it — and a
                    // fast notifier is not held to one commit per event.
                    unrecorded += 1;
                    if recorded_at.elapsed() >= RECORD_EVERY {
                        let parked = std::mem::take(&mut parked);
                        self.db
                            .advance_notifier(&self.name, event.id, std::mem::take(&mut unrecorded), &parked)
                            .await?;
                        recorded_at = std::time::Instant::now();
                    }
                }
                Ok(false) => {}
                Err(Failure::Db(e)) => {
                    // Keep what was done; this event and the rest come again.
                    let done = event.id - 1;
                    self.db.advance_notifier(&self.name, done.max(cursor), unrecorded, &parked).await?;
                    return Err(e);
                }
                Err(Failure::Sink(error)) => {
                    let delay = self.retry_delay(1);
                    self.report_failure(event.id, 1, &error);
                    parked.push(NewPending {
                        event_id: event.id,
                        ordering_key: key.clone(),
                        attempts: 1,
                        next_attempt: now() + delay.as_secs() as i64,
                        error: Some(error),
                    });
                    blocked.insert(key);
                }
            }
        }
        self.db.advance_notifier(&self.name, last, unrecorded, &parked).await?;
        Ok(if full || retried { Some(Duration::ZERO) } else { retry_in.or(Some(POLL)) })
    }

    /// Tries again, for each build with parked events, its oldest one if
    /// it is due. Returns the builds still blocked, the time until the next
    /// retry, and whether anything was delivered.
    async fn retry_due(&mut self) -> DbResult<(HashSet<String>, Option<Duration>, bool)> {
        let pending = self.db.pending_deliveries(&self.name).await?;
        let mut heads = BTreeMap::new();
        for p in &pending {
            heads.entry(p.ordering_key.clone()).or_insert(p);
        }
        let mut blocked: HashSet<String> = heads.keys().cloned().collect();
        let mut next_retry: Option<i64> = None;
        let mut delivered_any = false;
        let time = now();
        for (key, head) in heads {
            if head.next_attempt > time {
                next_retry = Some(next_retry.map_or(head.next_attempt, |n| n.min(head.next_attempt)));
                continue;
            }
            let Some(event) = self.db.events_after(head.event_id - 1, 1, None).await?.pop() else { continue };
            match self.deliver(&event).await {
                Ok(sent) => {
                    self.db.delivered_pending(&self.name, head.event_id, sent).await?;
                    if head.attempts >= FAILING_AFTER {
                        tracing::info!(notifier = %self.name, event = head.event_id, "notifier delivered again after {} failed attempts", head.attempts);
                    }
                    delivered_any = true;
                    // The next event of this build is its head now, due at once.
                    if !pending.iter().any(|p| p.ordering_key == key && p.event_id > head.event_id) {
                        blocked.remove(&key);
                    }
                }
                Err(Failure::Db(e)) => return Err(e),
                Err(Failure::Sink(error)) => {
                    let attempts = head.attempts + 1;
                    let delay = self.retry_delay(attempts);
                    self.report_failure(head.event_id, attempts, &error);
                    let next = now() + delay.as_secs() as i64;
                    self.db.retry_pending_later(&self.name, head.event_id, next, &error).await?;
                    next_retry = Some(next_retry.map_or(next, |n| n.min(next)));
                }
            }
        }
        let retry_in = next_retry.map(|at| Duration::from_secs((at - now()).max(0) as u64));
        Ok((blocked, retry_in, delivered_any))
    }

    /// Hands one event to the plugin if the notifier wants it. `Ok(false)`:
    /// not wanted (another kind or project, or what it was about is gone).
    fn wants_kind(&self, event: &Event) -> bool {
        let events = &self.subscription.events;
        events.is_empty() || events.iter().any(|kind| kind.as_str() == event.kind)
    }

    async fn deliver(&mut self, event: &Event) -> Result<bool, Failure> {
        if !self.wants_kind(event) {
            return Ok(false);
        }
        let Some(full) = self.context.read(event).await.map_err(Failure::Db)? else { return Ok(false) };
        let projects = &self.subscription.projects;
        if !projects.is_empty() && !projects.contains(&full.jobset.project) {
            return Ok(false);
        }
        // Not after another process took over this notifier's role.
        self.db.check_fence().map_err(Failure::Db)?;
        match self.sink.deliver(&full).await {
            Ok(()) => {
                tracing::debug!(notifier = %self.name, event = event.id, kind = %event.kind, "event delivered");
                Ok(true)
            }
            Err(error) => Err(Failure::Sink(error)),
        }
    }

    fn retry_delay(&self, attempts: i32) -> Duration {
        let base = self.subscription.retry_delay_secs.max(1);
        let exponent = attempts.saturating_sub(1).clamp(0, 20) as u32;
        Duration::from_secs(base.saturating_mul(1u64 << exponent).min(self.subscription.retry_max_delay_secs.max(base)))
    }

    fn report_failure(&self, event_id: i64, attempts: i32, error: &str) {
        if attempts >= FAILING_AFTER {
            tracing::error!(notifier = %self.name, event = event_id, attempts, "notifier keeps failing: {error}");
        } else {
            tracing::warn!(notifier = %self.name, event = event_id, attempts, "notifier failed, will retry: {error}");
        }
    }
}

/// What orders delivery: events of one build in order, and those of
/// evaluations in order per jobset.
fn ordering_key(event: &Event) -> String {
    match (event.build_id, event.jobset_id) {
        (Some(build), _) => format!("build:{build}"),
        (None, Some(jobset)) => format!("jobset:{jobset}"),
        (None, None) => format!("event:{}", event.id),
    }
}

/// A notifier's delivery state, as `/api/notifiers` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct NotifierStatus {
    pub name: String,
    pub plugin: String,
    pub events: Vec<EventKind>,
    /// `ok`, `retrying` (a delivery failed, fewer than 3 times) or `failing`.
    pub state: &'static str,
    /// The last event dealt with, and the newest event there is.
    pub cursor: i64,
    pub latest_event: i64,
    pub delivered: i64,
    pub last_delivery: Option<i64>,
    pub pending: Vec<PendingStatus>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PendingStatus {
    pub event: i64,
    pub key: String,
    pub attempts: i32,
    pub next_attempt: i64,
    pub first_failure: i64,
    pub last_error: Option<String>,
}

/// The delivery state of every configured notifier.
pub async fn status(config: &Config, db: &Db) -> DbResult<Vec<NotifierStatus>> {
    let cursors: BTreeMap<String, _> = db.notifier_cursors().await?.into_iter().collect();
    let latest = db.latest_event_id().await?;
    let mut all_pending = db.all_pending_deliveries().await?;
    let mut list = Vec::new();
    let notifiers = config.notifiers.iter().map(|n| (n.name().to_owned(), n.plugin.clone(), n.events.clone()));
    // Binary cache publishers read the outbox the same way.
    let publishers =
        config.binary_cache.publish.iter().map(|p| (p.name(), p.uri.clone(), vec![EventKind::BuildFinished]));
    for (name, plugin, events) in notifiers.chain(publishers) {
        let pending = all_pending.remove(&name).unwrap_or_default();
        let worst = pending.iter().map(|p| p.attempts).max().unwrap_or(0);
        let cursor = cursors.get(&name);
        list.push(NotifierStatus {
            plugin,
            events,
            state: if worst >= FAILING_AFTER {
                "failing"
            } else if worst > 0 {
                "retrying"
            } else {
                "ok"
            },
            cursor: cursor.map(|c| c.cursor).unwrap_or(latest),
            latest_event: latest,
            delivered: cursor.map(|c| c.delivered).unwrap_or(0),
            last_delivery: cursor.and_then(|c| c.last_delivery),
            pending: pending
                .into_iter()
                .map(|p| PendingStatus {
                    event: p.event_id,
                    key: p.ordering_key,
                    attempts: p.attempts,
                    next_attempt: p.next_attempt,
                    first_failure: p.first_failure,
                    last_error: p.last_error,
                })
                .collect(),
            name,
        });
    }
    Ok(list)
}
