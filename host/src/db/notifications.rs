//! Delivery state of the notifiers: how far each has read the event
//! outbox, and the events it has yet to deliver after a failure.

use std::collections::HashMap;

use sea_orm::sea_query::{ExprTrait, OnConflict};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    Statement,
};

use super::entities::{build, notifier_cursor, notifier_pending};
use super::{Db, DbResult, now};

pub use super::entities::notifier_pending::Model as PendingDelivery;

/// How far a notifier has read the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifierCursor {
    /// Every event up to this id was delivered, skipped, or is pending.
    pub cursor: i64,
    pub delivered: i64,
    pub last_delivery: Option<i64>,
}

impl Db {
    /// The notifier's cursor; a notifier seen for the first time starts
    /// after the newest event (it is told about what happens from now on).
    pub async fn notifier_cursor(&self, notifier: &str) -> DbResult<NotifierCursor> {
        if let Some(row) = notifier_cursor::Entity::find_by_id(notifier.to_owned()).one(self.write()).await? {
            return Ok(NotifierCursor {
                cursor: row.cursor,
                delivered: row.delivered,
                last_delivery: row.last_delivery,
            });
        }
        let cursor = self.latest_event_id().await?;
        notifier_cursor::Entity::insert(notifier_cursor::ActiveModel {
            notifier: Set(notifier.to_owned()),
            cursor: Set(cursor),
            delivered: Set(0),
            last_delivery: Set(None),
        })
        .on_conflict(OnConflict::column(notifier_cursor::Column::Notifier).do_nothing().to_owned())
        .exec_without_returning(self.write())
        .await?;
        Ok(NotifierCursor { cursor, delivered: 0, last_delivery: None })
    }

    /// The cursors of all notifiers ever configured.
    pub async fn notifier_cursors(&self) -> DbResult<Vec<(String, NotifierCursor)>> {
        let rows = notifier_cursor::Entity::find().all(self.read()).await?;
        Ok(rows
            .into_iter()
            .map(|r| {
                (
                    r.notifier,
                    NotifierCursor { cursor: r.cursor, delivered: r.delivered, last_delivery: r.last_delivery },
                )
            })
            .collect())
    }

    /// Moves the cursor on after a batch, and parks the batch's events that
    /// were not delivered (a failure, or held back behind one), all at once.
    pub async fn advance_notifier(
        &self,
        notifier: &str,
        cursor: i64,
        delivered: i64,
        parked: &[NewPending],
    ) -> DbResult<()> {
        let time = now();
        let txn = self.begin_write().await?;
        for pending in parked {
            park(&txn, notifier, pending, time).await?;
        }
        let mut update = notifier_cursor::Entity::update_many()
            .col_expr(notifier_cursor::Column::Cursor, sea_orm::sea_query::Expr::value(cursor))
            .col_expr(
                notifier_cursor::Column::Delivered,
                sea_orm::sea_query::Expr::col(notifier_cursor::Column::Delivered).add(delivered),
            );
        if delivered > 0 {
            update = update.col_expr(notifier_cursor::Column::LastDelivery, sea_orm::sea_query::Expr::value(time));
        }
        update.filter(notifier_cursor::Column::Notifier.eq(notifier)).exec(&txn).await?;
        txn.commit().await?;
        Ok(())
    }

    /// Pending deliveries of a notifier, oldest event first.
    pub async fn pending_deliveries(&self, notifier: &str) -> DbResult<Vec<PendingDelivery>> {
        Ok(notifier_pending::Entity::find()
            .filter(notifier_pending::Column::Notifier.eq(notifier))
            .order_by_asc(notifier_pending::Column::EventId)
            .all(self.read())
            .await?)
    }

    /// Every notifier's pending deliveries, oldest event first: one query.
    pub async fn all_pending_deliveries(&self) -> DbResult<std::collections::HashMap<String, Vec<PendingDelivery>>> {
        let mut by_notifier: std::collections::HashMap<String, Vec<PendingDelivery>> = Default::default();
        for pending in
            notifier_pending::Entity::find().order_by_asc(notifier_pending::Column::EventId).all(self.read()).await?
        {
            by_notifier.entry(pending.notifier.clone()).or_default().push(pending);
        }
        Ok(by_notifier)
    }

    /// A pending event was dealt with at last: delivered (`sent`), or found
    /// not to be wanted any more.
    pub async fn delivered_pending(&self, notifier: &str, event_id: i64, sent: bool) -> DbResult<()> {
        let time = now();
        let txn = self.begin_write().await?;
        notifier_pending::Entity::delete_many()
            .filter(notifier_pending::Column::Notifier.eq(notifier))
            .filter(notifier_pending::Column::EventId.eq(event_id))
            .exec(&txn)
            .await?;
        if sent {
            notifier_cursor::Entity::update_many()
                .col_expr(
                    notifier_cursor::Column::Delivered,
                    sea_orm::sea_query::Expr::col(notifier_cursor::Column::Delivered).add(1),
                )
                .col_expr(notifier_cursor::Column::LastDelivery, sea_orm::sea_query::Expr::value(time))
                .filter(notifier_cursor::Column::Notifier.eq(notifier))
                .exec(&txn)
                .await?;
        }
        txn.commit().await?;
        Ok(())
    }

    /// A pending event failed again.
    pub async fn retry_pending_later(
        &self,
        notifier: &str,
        event_id: i64,
        next_attempt: i64,
        error: &str,
    ) -> DbResult<()> {
        let txn = self.begin_write().await?;
        notifier_pending::Entity::update_many()
            .col_expr(
                notifier_pending::Column::Attempts,
                sea_orm::sea_query::Expr::col(notifier_pending::Column::Attempts).add(1),
            )
            .col_expr(notifier_pending::Column::NextAttempt, sea_orm::sea_query::Expr::value(next_attempt))
            .col_expr(notifier_pending::Column::LastError, sea_orm::sea_query::Expr::value(error))
            .filter(notifier_pending::Column::Notifier.eq(notifier))
            .filter(notifier_pending::Column::EventId.eq(event_id))
            .exec(&txn)
            .await?;
        txn.commit().await?;
        Ok(())
    }

    /// The newest finished build of the same job before `build_id`, with
    /// its status: what "the status changed" is measured against.
    pub async fn previous_finished_build(
        &self,
        jobset_id: i64,
        job: &str,
        build_id: i64,
    ) -> DbResult<Option<(i64, Option<i32>)>> {
        Ok(build::Entity::find()
            .select_only()
            .columns([build::Column::Id, build::Column::BuildStatus])
            .filter(build::Column::JobsetId.eq(jobset_id))
            .filter(build::Column::Job.eq(job))
            .filter(build::Column::Finished.eq(true))
            .filter(build::Column::Id.lt(build_id))
            .order_by_desc(build::Column::Id)
            .limit(1)
            .into_tuple()
            .one(self.read())
            .await?)
    }

    /// `previous_finished_build` of many builds, in a query per few
    /// hundred: a notifier's batch of a thousand `build-finished` events
    /// waits for one answer, not a thousand. Builds without one are left
    /// out.
    pub async fn previous_finished_builds(&self, build_ids: &[i64]) -> DbResult<HashMap<i64, (i64, Option<i32>)>> {
        let backend = self.read().get_database_backend();
        let mut previous = HashMap::new();
        for chunk in build_ids.chunks(super::INSERT_CHUNK) {
            let placeholders: Vec<String> = (1..=chunk.len())
                .map(|n| if backend == DbBackend::Postgres { format!("${n}") } else { "?".to_owned() })
                .collect();
            // For each build, the newest finished build of its job before it
            // (the index on jobset, job and id answers the inner query).
            let sql = format!(
                "SELECT b.id, p.id, p.build_status FROM builds b JOIN builds p ON p.id = \
                 (SELECT q.id FROM builds q WHERE q.jobset_id = b.jobset_id AND q.job = b.job \
                 AND q.finished AND q.id < b.id ORDER BY q.id DESC LIMIT 1) \
                 WHERE b.id IN ({})",
                placeholders.join(", ")
            );
            let values = chunk.iter().map(|id| (*id).into());
            let rows = self.read().query_all_raw(Statement::from_sql_and_values(backend, sql, values)).await?;
            for row in rows {
                let build: i64 = row.try_get_by_index(0)?;
                let id: i64 = row.try_get_by_index(1)?;
                let status: Option<i32> = row.try_get_by_index(2)?;
                previous.insert(build, (id, status));
            }
        }
        Ok(previous)
    }
}

/// An event a notifier has not delivered yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPending {
    pub event_id: i64,
    pub ordering_key: String,
    /// 0 when it was held back without being tried.
    pub attempts: i32,
    pub next_attempt: i64,
    pub error: Option<String>,
}

async fn park(txn: &impl sea_orm::ConnectionTrait, notifier: &str, pending: &NewPending, time: i64) -> DbResult<()> {
    notifier_pending::Entity::insert(notifier_pending::ActiveModel {
        notifier: Set(notifier.to_owned()),
        event_id: Set(pending.event_id),
        ordering_key: Set(pending.ordering_key.clone()),
        attempts: Set(pending.attempts),
        next_attempt: Set(pending.next_attempt),
        first_failure: Set(time),
        last_error: Set(pending.error.clone()),
        ..Default::default()
    })
    // Parked already (the cursor did not move before a crash): keep the old row.
    .on_conflict(
        OnConflict::columns([notifier_pending::Column::Notifier, notifier_pending::Column::EventId])
            .do_nothing()
            .to_owned(),
    )
    .exec_without_returning(txn)
    .await?;
    Ok(())
}
