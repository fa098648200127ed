//! The event outbox. Every change a notifier may care about — an
//! evaluation started, found nothing new, failed or was added; a build was
//! queued, started or finished; a step finished — is written as an event in
//! the same transaction as the change itself, so that an event exists if
//! and only if its change does, whatever crashes when. Event ids increase
//! with the commit order of a single writer, so reading by id gives the
//! order in which things happened (per build in particular).

use sea_orm::{ActiveValue::Set, ColumnTrait};
use sea_orm::{ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use serde_json::Value;

use super::entities::event;
use super::{Db, DbResult, now};
use crate::domain::EventKind;

/// An event about to be written.
#[derive(Debug, Clone)]
pub(super) struct NewEvent {
    pub kind: EventKind,
    pub jobset_id: Option<i64>,
    pub eval_id: Option<i64>,
    pub build_id: Option<i64>,
    pub step_nr: Option<i32>,
    /// What else there is to say (a status, a message, a job name).
    pub data: Value,
}

impl NewEvent {
    pub fn jobset(kind: EventKind, jobset_id: i64, data: Value) -> NewEvent {
        NewEvent { kind, jobset_id: Some(jobset_id), eval_id: None, build_id: None, step_nr: None, data }
    }

    pub fn build(kind: EventKind, build_id: i64, data: Value) -> NewEvent {
        NewEvent { kind, jobset_id: None, eval_id: None, build_id: Some(build_id), step_nr: None, data }
    }
}

/// An event as written.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub id: i64,
    pub kind: String,
    pub time: i64,
    pub jobset_id: Option<i64>,
    pub eval_id: Option<i64>,
    pub build_id: Option<i64>,
    pub step_nr: Option<i32>,
    pub data: Value,
}

/// Writes events inside the caller's transaction.
pub(super) async fn write_events(txn: &impl ConnectionTrait, events: Vec<NewEvent>) -> DbResult<()> {
    if events.is_empty() {
        return Ok(());
    }
    // Readers take ids as the order of commits. SQLite has one writer, so
    // they are; on PostgreSQL an id is drawn at insert time, and a
    // transaction that drew lower ids could commit after one that drew
    // higher ids — and a reader past the higher ones would never see the
    // lower. This lock, held until commit, makes event-writing
    // transactions draw and commit in turn.
    if txn.get_database_backend() == sea_orm::DbBackend::Postgres {
        txn.execute_unprepared("SELECT pg_advisory_xact_lock(7305566471862351190)").await?;
    }
    let time = now();
    // In order, in chunks: one statement per chunk keeps the ids in order.
    // Rows are made a chunk at a time (an evaluation of 100,000 jobs
    // writes as many events: they are not all held twice).
    let mut events = events.into_iter().peekable();
    while events.peek().is_some() {
        let chunk: Vec<event::ActiveModel> = events
            .by_ref()
            .take(super::INSERT_CHUNK)
            .map(|e| event::ActiveModel {
                kind: Set(e.kind.as_str().to_owned()),
                time: Set(time),
                jobset_id: Set(e.jobset_id),
                eval_id: Set(e.eval_id),
                build_id: Set(e.build_id),
                step_nr: Set(e.step_nr),
                data: Set(e.data.to_string()),
                ..Default::default()
            })
            .collect();
        event::Entity::insert_many(chunk).exec_without_returning(txn).await?;
    }
    Ok(())
}

impl Db {
    /// Commits a transaction that wrote events, and wakes whoever waits
    /// for new ones.
    pub(super) async fn commit_events(&self, txn: sea_orm::DatabaseTransaction) -> DbResult<()> {
        // Other processes (a notifier, a publisher) hear of it at commit.
        Db::wake_others_on_commit(&txn, super::WakeChannel::Events).await?;
        txn.commit().await?;
        self.events_written.send_modify(|commits| *commits += 1);
        Ok(())
    }

    /// A receiver that sees a change after each commit that wrote events:
    /// mark it seen (`borrow_and_update`) before reading events, and wait
    /// for `changed()` when there were none. A wake-up only makes delivery
    /// faster; readers still poll now and then.
    pub fn subscribe_events(&self) -> tokio::sync::watch::Receiver<u64> {
        self.events_written.subscribe()
    }

    /// Another process wrote events (heard through `LISTEN`).
    pub fn events_written_elsewhere(&self) {
        self.events_written.send_modify(|commits| *commits += 1);
    }

    /// The id of the newest event (0 when there are none).
    pub async fn latest_event_id(&self) -> DbResult<i64> {
        let newest = event::Entity::find().order_by_desc(event::Column::Id).one(self.read()).await?;
        Ok(newest.map(|e| e.id).unwrap_or(0))
    }
    /// Events after `after` (an event id), oldest first, at most `limit`;
    /// only those of one build when `build` is given.
    pub async fn events_after(&self, after: i64, limit: u64, build: Option<i64>) -> DbResult<Vec<Event>> {
        let mut query = event::Entity::find().filter(event::Column::Id.gt(after));
        if let Some(build) = build {
            query = query.filter(event::Column::BuildId.eq(build));
        }
        let rows = query.order_by_asc(event::Column::Id).limit(limit).all(self.read()).await?;
        Ok(rows
            .into_iter()
            .map(|row| Event {
                id: row.id,
                kind: row.kind,
                time: row.time,
                jobset_id: row.jobset_id,
                eval_id: row.eval_id,
                build_id: row.build_id,
                step_nr: row.step_nr,
                data: serde_json::from_str(&row.data).unwrap_or(Value::Null),
            })
            .collect())
    }
}
