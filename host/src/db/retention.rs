//! What retention deletes (see `retention/`): old events every notifier
//! has dealt with, evaluations beyond a jobset's count and the builds only
//! they held, and which derivations' logs are still wanted. Also the
//! database's size and a consistent copy of it for backups.

use std::collections::{BTreeSet, HashMap, HashSet};

use sea_orm::sea_query::Query;
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Statement};

use super::entities::{
    aggregate_constituent, build, build_step, event, jobset, jobset_eval, jobset_eval_member, notifier_pending, project,
};
use super::{Db, DbError, DbResult, INSERT_CHUNK};

/// Evaluations deleted per transaction, and the members they may hold
/// together (an evaluation of nixpkgs has tens of thousands): a write lock
/// held for long would stall the queue and the evaluator.
const EVALS_PER_TRANSACTION: usize = 100;
const MEMBERS_PER_TRANSACTION: i64 = 20_000;
/// Events deleted per statement, for the same reason.
const EVENTS_PER_STATEMENT: u64 = 5000;

/// What pruning evaluations deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    pub evals: u64,
    pub builds: u64,
}

impl Db {
    /// Deletes events written before `before` (Unix time) that every
    /// notifier in `notifiers` has moved past and none still retries.
    /// Events of notifiers no longer configured are no reason to keep one:
    /// their parked deliveries go with the events.
    pub async fn delete_delivered_events(&self, before: i64, notifiers: &[String]) -> DbResult<u64> {
        let cursors = self.notifier_cursors().await?;
        // A configured notifier without a cursor yet starts after the newest
        // event: it holds nothing back.
        let below = cursors
            .iter()
            .filter(|(name, _)| notifiers.contains(name))
            .map(|(_, cursor)| cursor.cursor)
            .min()
            .unwrap_or(i64::MAX);
        let retried = Query::select()
            .column(notifier_pending::Column::EventId)
            .from(notifier_pending::Entity)
            .and_where(notifier_pending::Column::Notifier.is_in(notifiers.iter().cloned()))
            .to_owned();
        let mut deleted = 0;
        loop {
            let ids: Vec<i64> = event::Entity::find()
                .select_only()
                .column(event::Column::Id)
                .filter(event::Column::Time.lt(before))
                .filter(event::Column::Id.lte(below))
                .filter(event::Column::Id.not_in_subquery(retried.clone()))
                .order_by_asc(event::Column::Id)
                .limit(EVENTS_PER_STATEMENT)
                .into_tuple()
                .all(self.read())
                .await?;
            if ids.is_empty() {
                return Ok(deleted);
            }
            let txn = self.begin_write().await?;
            for chunk in ids.chunks(INSERT_CHUNK) {
                notifier_pending::Entity::delete_many()
                    .filter(notifier_pending::Column::EventId.is_in(chunk.iter().copied()))
                    .filter(notifier_pending::Column::Notifier.is_not_in(notifiers.iter().cloned()))
                    .exec(&txn)
                    .await?;
                deleted += event::Entity::delete_many()
                    .filter(event::Column::Id.is_in(chunk.iter().copied()))
                    .exec(&txn)
                    .await?
                    .rows_affected;
            }
            txn.commit().await?;
        }
    }

    /// Deletes each jobset's evaluations beyond its newest `keep` (0: none
    /// are deleted) that started before `before`, except those still
    /// building, and for each job whose newest successful build (what
    /// `latest` and `latest-finished` answer) no remaining evaluation
    /// holds, the newest evaluation that holds it. A build goes with them
    /// only when no remaining evaluation holds it, it is finished and not
    /// kept, no remaining aggregate names it and no project's declarative
    /// spec came from it.
    pub async fn prune_evals(&self, keep: u64, before: i64) -> DbResult<Pruned> {
        let mut pruned = Pruned::default();
        if keep == 0 {
            return Ok(pruned);
        }
        let jobsets: Vec<i64> =
            jobset::Entity::find().select_only().column(jobset::Column::Id).into_tuple().all(self.read()).await?;
        for jobset_id in jobsets {
            let beyond: Vec<i64> = jobset_eval::Entity::find()
                .select_only()
                .column(jobset_eval::Column::Id)
                .filter(jobset_eval::Column::JobsetId.eq(jobset_id))
                .filter(jobset_eval::Column::Timestamp.lt(before))
                .filter(
                    jobset_eval::Column::Id.not_in_subquery(
                        Query::select()
                            .column(jobset_eval::Column::Id)
                            .from(jobset_eval::Entity)
                            .and_where(jobset_eval::Column::JobsetId.eq(jobset_id))
                            .order_by(jobset_eval::Column::Id, sea_orm::Order::Desc)
                            .limit(keep)
                            .to_owned(),
                    ),
                )
                .into_tuple::<i64>()
                .all(self.read())
                .await?;
            if beyond.is_empty() {
                continue;
            }
            let held = self.evals_to_hold(jobset_id, &beyond).await?;
            let doomed: Vec<i64> = beyond.into_iter().filter(|e| !held.contains(e)).collect();
            let latest: HashSet<i64> = self.latest_build_ids(Some(jobset_id)).await?.into_iter().collect();
            for batch in self.in_batches(&doomed).await? {
                let done = self.delete_evals(&batch, &latest).await?;
                pruned.evals += done.evals;
                pruned.builds += done.builds;
            }
        }
        Ok(pruned)
    }

    /// Which of the jobset's `candidates` must stay: those with an
    /// unfinished build; the newest finished evaluation (channels and
    /// "latest evaluation" inputs read it); and for each build `latest` or
    /// `latest-finished` answers, its newest holder (newest finished holder
    /// for `latest-finished`) when that is a candidate: a newer holder
    /// outside the candidates already keeps it answering.
    async fn evals_to_hold(&self, jobset_id: i64, candidates: &[i64]) -> DbResult<HashSet<i64>> {
        let candidate_set: HashSet<i64> = candidates.iter().copied().collect();
        let mut held = HashSet::new();
        for chunk in candidates.chunks(INSERT_CHUNK) {
            let building: Vec<i64> = jobset_eval_member::Entity::find()
                .select_only()
                .column(jobset_eval_member::Column::EvalId)
                .distinct()
                .join(
                    sea_orm::JoinType::InnerJoin,
                    jobset_eval_member::Entity::belongs_to(build::Entity)
                        .from(jobset_eval_member::Column::BuildId)
                        .to(build::Column::Id)
                        .into(),
                )
                .filter(jobset_eval_member::Column::EvalId.is_in(chunk.iter().copied()))
                .filter(build::Column::Finished.eq(false))
                .into_tuple()
                .all(self.read())
                .await?;
            held.extend(building);
        }
        if let Some(newest_finished) = self.latest_finished_eval(jobset_id).await? {
            held.insert(newest_finished.id);
        }
        let latest = self.latest_build_ids(Some(jobset_id)).await?;
        let latest_finished = self.latest_finished_build_ids(jobset_id).await?;
        for (builds, finished_only) in [(latest, false), (latest_finished, true)] {
            for chunk in builds.chunks(INSERT_CHUNK) {
                let mut query = jobset_eval_member::Entity::find()
                    .select_only()
                    .column_as(jobset_eval_member::Column::EvalId.max(), "eval")
                    .join(
                        sea_orm::JoinType::InnerJoin,
                        jobset_eval_member::Entity::belongs_to(jobset_eval::Entity)
                            .from(jobset_eval_member::Column::EvalId)
                            .to(jobset_eval::Column::Id)
                            .into(),
                    )
                    .filter(jobset_eval::Column::JobsetId.eq(jobset_id))
                    .filter(jobset_eval_member::Column::BuildId.is_in(chunk.iter().copied()))
                    .group_by(jobset_eval_member::Column::BuildId);
                if finished_only {
                    query = query.filter(super::latest::eval_is_finished());
                }
                let newest: Vec<Option<i64>> = query.into_tuple().all(self.read()).await?;
                held.extend(newest.into_iter().flatten().filter(|eval| candidate_set.contains(eval)));
            }
        }
        Ok(held)
    }

    /// Groups evaluations into transactions of about `MEMBERS_PER_TRANSACTION`
    /// members (at least one evaluation each), from their `nr_builds`.
    async fn in_batches(&self, evals: &[i64]) -> DbResult<Vec<Vec<i64>>> {
        let mut sizes: HashMap<i64, i64> = HashMap::new();
        for chunk in evals.chunks(INSERT_CHUNK) {
            let rows: Vec<(i64, i32)> = jobset_eval::Entity::find()
                .select_only()
                .columns([jobset_eval::Column::Id, jobset_eval::Column::NrBuilds])
                .filter(jobset_eval::Column::Id.is_in(chunk.iter().copied()))
                .into_tuple()
                .all(self.read())
                .await?;
            sizes.extend(rows.into_iter().map(|(id, n)| (id, i64::from(n))));
        }
        let mut batches: Vec<Vec<i64>> = Vec::new();
        let mut members = 0;
        for &eval in evals {
            let size = sizes.get(&eval).copied().unwrap_or(0).max(1);
            match batches.last_mut() {
                Some(batch) if members + size <= MEMBERS_PER_TRANSACTION && batch.len() < EVALS_PER_TRANSACTION => {
                    batch.push(eval);
                    members += size;
                }
                _ => {
                    batches.push(vec![eval]);
                    members = size;
                }
            }
        }
        Ok(batches)
    }

    /// Deletes these evaluations (their members, inputs and errors go by
    /// cascade) and the builds only they held, in one transaction.
    async fn delete_evals(&self, evals: &[i64], latest: &HashSet<i64>) -> DbResult<Pruned> {
        let txn = self.begin_write().await?;
        let members: Vec<i64> = jobset_eval_member::Entity::find()
            .select_only()
            .column(jobset_eval_member::Column::BuildId)
            .distinct()
            .filter(jobset_eval_member::Column::EvalId.is_in(evals.iter().copied()))
            .into_tuple()
            .all(&txn)
            .await?;
        let evals_deleted = jobset_eval::Entity::delete_many()
            .filter(jobset_eval::Column::Id.is_in(evals.iter().copied()))
            .exec(&txn)
            .await?;
        let mut orphans: BTreeSet<i64> = BTreeSet::new();
        for chunk in members.chunks(INSERT_CHUNK) {
            let ids: Vec<i64> = build::Entity::find()
                .select_only()
                .column(build::Column::Id)
                .filter(build::Column::Id.is_in(chunk.iter().copied()))
                .filter(deletable_build())
                .into_tuple()
                .all(&txn)
                .await?;
            orphans.extend(ids.into_iter().filter(|id| !latest.contains(id)));
        }
        // A constituent of an aggregate that stays, stays; and an aggregate
        // kept that way keeps its own constituents: until nothing changes.
        loop {
            let before = orphans.len();
            let orphan_list: Vec<i64> = orphans.iter().copied().collect();
            for chunk in orphan_list.chunks(INSERT_CHUNK) {
                let named: Vec<(i64, i64)> = aggregate_constituent::Entity::find()
                    .select_only()
                    .column(aggregate_constituent::Column::AggregateId)
                    .column(aggregate_constituent::Column::ConstituentId)
                    .filter(aggregate_constituent::Column::ConstituentId.is_in(chunk.iter().copied()))
                    .into_tuple()
                    .all(&txn)
                    .await?;
                for (aggregate, constituent) in named {
                    if !orphans.contains(&aggregate) {
                        orphans.remove(&constituent);
                    }
                }
            }
            if orphans.len() == before {
                break;
            }
        }
        let mut builds_deleted = 0;
        let doomed: Vec<i64> = orphans.iter().copied().collect();
        for chunk in doomed.chunks(INSERT_CHUNK) {
            // Steps, outputs, products, metrics and memberships go by
            // cascade. The conditions again: on PostgreSQL a restart or a
            // keep may have committed since they were read.
            builds_deleted += build::Entity::delete_many()
                .filter(build::Column::Id.is_in(chunk.iter().copied()))
                .filter(deletable_build())
                .exec(&txn)
                .await?
                .rows_affected;
        }
        txn.commit().await?;
        self.builds.invalidate(doomed);
        Ok(Pruned { evals: evals_deleted.rows_affected, builds: builds_deleted })
    }

    /// The derivations whose logs these builds show: each build's own and
    /// its steps'.
    pub async fn log_derivations_of(&self, builds: &[i64]) -> DbResult<HashSet<String>> {
        let mut drvs: HashSet<String> = self.drv_paths_of(builds).await?.into_iter().map(|(_, drv)| drv).collect();
        for chunk in builds.chunks(INSERT_CHUNK) {
            let steps: Vec<String> = build_step::Entity::find()
                .select_only()
                .column(build_step::Column::DrvPath)
                .distinct()
                .filter(build_step::Column::BuildId.is_in(chunk.iter().copied()))
                .into_tuple()
                .all(self.read())
                .await?;
            drvs.extend(steps);
        }
        Ok(drvs)
    }

    /// The database's size on disk, in bytes.
    pub async fn size_bytes(&self) -> DbResult<u64> {
        let backend = self.backend();
        let sql = match backend {
            sea_orm::DbBackend::Postgres => "SELECT pg_database_size(current_database())::bigint AS size",
            _ => "SELECT page_count * page_size AS size FROM pragma_page_count(), pragma_page_size()",
        };
        let row = self.read().query_one_raw(Statement::from_string(backend, sql)).await?;
        let size: i64 = match row {
            Some(row) => row.try_get("", "size")?,
            None => 0,
        };
        Ok(size.max(0) as u64)
    }

    /// Writes a consistent copy of a SQLite database to `file` (which must
    /// not exist) while the server goes on writing: `VACUUM INTO` reads one
    /// snapshot, as a reader does, and writes a compact database.
    pub async fn backup_to(&self, file: &std::path::Path) -> DbResult<()> {
        if self.backend() != sea_orm::DbBackend::Sqlite {
            return Err(DbError::Conflict(
                "orthrus backup copies SQLite databases; back up PostgreSQL with pg_dump (see the README)".into(),
            ));
        }
        let target = file.to_str().ok_or_else(|| DbError::Conflict(format!("{} is not UTF-8", file.display())))?;
        // On a reader connection, outside any transaction (VACUUM cannot
        // run inside one).
        self.read()
            .execute_raw(Statement::from_sql_and_values(sea_orm::DbBackend::Sqlite, "VACUUM INTO ?", [target.into()]))
            .await?;
        Ok(())
    }
}

/// A build that may go with its evaluations: finished and not kept, held
/// by no evaluation left, not where a project's declarative spec came
/// from, and with no event a notifier still has to deliver.
fn deletable_build() -> sea_orm::Condition {
    let still_held =
        Query::select().column(jobset_eval_member::Column::BuildId).from(jobset_eval_member::Entity).to_owned();
    let declarative = Query::select()
        .column(project::Column::DeclarativeBuild)
        .from(project::Entity)
        .and_where(project::Column::DeclarativeBuild.is_not_null())
        .to_owned();
    let undelivered = Query::select()
        .column(event::Column::BuildId)
        .from(event::Entity)
        .and_where(event::Column::BuildId.is_not_null())
        .and_where(event::Column::Id.in_subquery(
            Query::select().column(notifier_pending::Column::EventId).from(notifier_pending::Entity).to_owned(),
        ))
        .to_owned();
    sea_orm::Condition::all()
        .add(build::Column::Finished.eq(true))
        .add(build::Column::Keep.eq(false))
        .add(build::Column::Id.not_in_subquery(still_held))
        .add(build::Column::Id.not_in_subquery(declarative))
        .add(build::Column::Id.not_in_subquery(undelivered))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::NewPending;
    use crate::db::test_support::{eval, finish, fresh_db, job, main_jobset};
    use crate::domain::BuildStatus;

    fn parked(event_id: i64) -> NewPending {
        NewPending { event_id, ordering_key: "k".into(), attempts: 1, next_attempt: 0, error: Some("refused".into()) }
    }

    async fn event_ids(db: &Db) -> Vec<i64> {
        db.events_after(0, 1000, None).await.unwrap().iter().map(|e| e.id).collect()
    }

    /// Old events go once every configured notifier is past them and none
    /// retries them; a notifier no longer configured holds nothing back.
    #[tokio::test]
    async fn events_wait_for_every_configured_notifier() {
        let (_dir, db) = fresh_db().await;
        let jobset = main_jobset(&db).await;
        eval(&db, jobset.id, 1, vec![job("a", "1")]).await;
        let first = event_ids(&db).await;
        assert!(first.len() >= 2, "{first:?}");
        // Configured now: mail and hook. Gone: parked the first event long ago.
        let configured = ["mail".to_owned(), "hook".to_owned()];
        for name in ["mail", "hook", "gone"] {
            db.notifier_cursor(name).await.unwrap();
        }
        db.advance_notifier("gone", 0, 0, &[parked(first[0])]).await.unwrap();
        eval(&db, jobset.id, 2, vec![job("b", "2")]).await;
        let all = event_ids(&db).await;
        let newest = *all.last().unwrap();
        db.advance_notifier("mail", newest, 1, &[]).await.unwrap();
        db.advance_notifier("hook", newest, 0, &[parked(newest)]).await.unwrap();

        let later = crate::db::now() + 60;
        assert_eq!(db.delete_delivered_events(0, &configured).await.unwrap(), 0, "too young");
        let deleted = db.delete_delivered_events(later, &configured).await.unwrap();
        assert_eq!(deleted as usize, all.len() - 1);
        assert_eq!(event_ids(&db).await, [newest], "hook still retries it");
        assert!(db.pending_deliveries("gone").await.unwrap().is_empty(), "its event went");
        assert_eq!(db.pending_deliveries("hook").await.unwrap().len(), 1);

        // A notifier lagging behind holds back what it has not read.
        eval(&db, jobset.id, 3, vec![job("c", "3")]).await;
        let newer: Vec<i64> = event_ids(&db).await.into_iter().filter(|id| *id > newest).collect();
        db.advance_notifier("hook", *newer.last().unwrap(), 1, &[]).await.unwrap();
        assert_eq!(db.delete_delivered_events(later, &configured).await.unwrap(), 0, "mail has not read them");
        db.advance_notifier("mail", *newer.last().unwrap(), 1, &[]).await.unwrap();
        assert_eq!(db.delete_delivered_events(later, &configured).await.unwrap() as usize, newer.len());
    }

    /// Evaluations beyond the count go, but not one still building, nor
    /// the newest finished one; a build goes with them unless an event of
    /// it waits for a notifier.
    #[tokio::test]
    async fn evaluations_pruned_keep_what_is_still_needed() {
        let (_dir, db) = fresh_db().await;
        let jobset = main_jobset(&db).await;
        let a1 = eval(&db, jobset.id, 1, vec![job("a", "1")]).await[0];
        finish(&db, a1, BuildStatus::Succeeded).await;
        let e2 = eval(&db, jobset.id, 2, vec![job("a", "2"), job("x", "2")]).await;
        let (a2, x2) = (e2[0], e2[1]);
        finish(&db, a2, BuildStatus::Failed).await;
        let a3 = eval(&db, jobset.id, 3, vec![job("a", "3"), job("x", "2")]).await[0];
        finish(&db, a3, BuildStatus::Succeeded).await;
        let evals = |db: &Db| {
            let db = db.clone();
            async move { jobset_eval::Entity::find().all(db.read()).await.unwrap().iter().map(|e| e.id).collect::<Vec<_>>() }
        };
        let later = crate::db::now() + 60;

        // x-2 still builds, in evals 2 and 3; eval 1 is the newest finished one.
        assert_eq!(db.prune_evals(1, later).await.unwrap(), Pruned::default());
        assert_eq!(evals(&db).await.len(), 3);

        // All finished; a-1 has an event a notifier still has to deliver.
        finish(&db, x2, BuildStatus::Succeeded).await;
        let events = db.events_after(0, 1000, Some(a1)).await.unwrap();
        db.notifier_cursor("hook").await.unwrap();
        db.advance_notifier("hook", 0, 0, &[parked(events.last().unwrap().id)]).await.unwrap();
        assert_eq!(db.prune_evals(1, later).await.unwrap(), Pruned { evals: 2, builds: 1 });
        assert_eq!(evals(&db).await.len(), 1);
        assert!(db.build(a2).await.unwrap().is_none(), "held by the deleted evaluations only");
        assert!(db.build(a1).await.unwrap().is_some(), "its event is undelivered");
        assert!(db.build(x2).await.unwrap().is_some(), "eval 3 holds it");
        assert!(db.build(a3).await.unwrap().is_some());
        // Too young: nothing.
        assert_eq!(db.prune_evals(1, 0).await.unwrap(), Pruned::default());
    }
}
