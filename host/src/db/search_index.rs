//! Keeping the search index (migration 12) out of recording an evaluation.
//!
//! On PostgreSQL the substring index is `pg_trgm` GIN indexes on
//! `builds.drv_path`, `build_outputs.path` and `jobset_jobs.name`: about
//! fifty trigrams a store path, each an entry in a posting tree. GIN
//! appends new entries to an unsorted pending list and merges the list
//! into the trees in bulk once it outgrows `gin_pending_list_limit` (4 MB
//! by default), in the inserting transaction, which took that work on
//! (recording an evaluation of 20,000 new builds: 5.1 s before, 2.7 s
//! with this and migration 19, `bench/eval.py --postgres`). So the
//! recording transaction raises the limit for itself alone (`SET LOCAL`)
//! and its entries stay pending; when it has committed, and the builds are
//! queued, [`Db::merge_search_index`] merges them with
//! `gin_clean_pending_list`, in transactions of its own. Until then a
//! search reads the pending entries too (a sequential read of them), so
//! it finds the new builds all along. The pending list is part of the
//! index, written ahead to the log: a crash before the merge loses
//! nothing, and the next vacuum or merge takes it up.
//!
//! SQLite's FTS5 table is written after the recording transaction too
//! (migration 20): [`Db::merge_search_index`] writes the search rows of
//! the builds after `build_search_cursor`, [`INDEX_BATCH`] builds a
//! transaction that also moves the cursor, after an evaluation commits
//! and when the server starts (what a crash left behind, or a migration
//! set back). The same transaction writes the builds' job names, or moves
//! their newest build forward (`jobset_jobs`, migration 21, which
//! `job_names.rs` matches). A search scans the builds after the cursor
//! (`Db::search`).

use std::time::{Duration, Instant};

use sea_orm::{ConnectionTrait, DatabaseTransaction, DbBackend, Statement};

use super::{Db, DbResult};

/// How large the recording transaction lets the pending lists grow before
/// GIN merges them itself: more than an evaluation of nixpkgs' size writes
/// (about 1 kB of entries a build, in each of two indexes), so that it
/// never does.
const RECORDING_PENDING_LIMIT: &str = "1GB";

/// SQLite: builds whose search rows one transaction writes. Each takes the
/// one writer for a fraction of a second (a build's row is a hundred or so
/// trigrams), so that builds finishing meanwhile wait no longer than that.
const INDEX_BATCH: i64 = 5_000;

/// SQLite: the newest build whose search row is written.
pub(super) const INDEXED_UP_TO: &str = "SELECT last_build_id FROM build_search_cursor WHERE id = 1";

/// The GIN indexes of the tables an evaluation writes.
const PENDING_INDEXES: &str = "\
    SELECT i.indexrelid::regclass::text AS name FROM pg_index i \
      JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am a ON a.oid = c.relam \
     WHERE a.amname = 'gin' AND i.indrelid IN (SELECT oid FROM pg_class \
       WHERE relname IN ('builds', 'build_outputs', 'jobset_jobs') AND relnamespace = current_schema()::regnamespace)";

impl Db {
    /// Lets `txn` (an evaluation being recorded) leave its search index
    /// entries pending, for [`Db::merge_search_index`] after it commits.
    pub(super) async fn defer_search_index(txn: &DatabaseTransaction) -> DbResult<()> {
        if txn.get_database_backend() == DbBackend::Postgres {
            txn.execute_unprepared(&format!("SET LOCAL gin_pending_list_limit = '{RECORDING_PENDING_LIMIT}'")).await?;
        }
        Ok(())
    }

    /// Merges the search index entries left pending by recording an
    /// evaluation into the index proper; returns how long it took.
    pub async fn merge_search_index(&self) -> DbResult<Duration> {
        let clock = Instant::now();
        match self.backend() {
            DbBackend::Postgres => self.merge_pending_lists().await?,
            DbBackend::Sqlite => while self.index_next_builds().await? {},
            _ => {}
        }
        Ok(clock.elapsed())
    }

    /// SQLite: writes the search rows of the next [`INDEX_BATCH`] builds
    /// after the cursor and moves it past them; whether there were any.
    async fn index_next_builds(&self) -> DbResult<bool> {
        let txn = self.begin_write().await?;
        let indexed: i64 = match txn.query_one_raw(Statement::from_string(DbBackend::Sqlite, INDEXED_UP_TO)).await? {
            Some(row) => row.try_get("", "last_build_id")?,
            None => 0,
        };
        let upto: Option<i64> = txn
            .query_one_raw(Statement::from_sql_and_values(
                DbBackend::Sqlite,
                "SELECT max(id) AS upto FROM (SELECT id FROM builds WHERE id > ?1 ORDER BY id LIMIT ?2)",
                [indexed.into(), INDEX_BATCH.into()],
            ))
            .await?
            .map(|row| row.try_get("", "upto"))
            .transpose()?
            .flatten();
        let Some(upto) = upto else {
            return Ok(false);
        };
        let batch = "b.id > ?1 AND b.id <= ?2";
        txn.execute_raw(Statement::from_sql_and_values(
            DbBackend::Sqlite,
            format!(
                "INSERT OR REPLACE INTO build_search (rowid, outputs, drv) {} WHERE {batch}",
                orthrus_migrations::SQLITE_SEARCH_ROW
            ),
            [indexed.into(), upto.into()],
        ))
        .await?;
        txn.execute_raw(Statement::from_sql_and_values(
            DbBackend::Sqlite,
            orthrus_migrations::sqlite_job_names(batch),
            [indexed.into(), upto.into()],
        ))
        .await?;
        txn.execute_raw(Statement::from_sql_and_values(
            DbBackend::Sqlite,
            "INSERT OR REPLACE INTO build_search_cursor (id, last_build_id) VALUES (1, ?1)",
            [upto.into()],
        ))
        .await?;
        txn.commit().await?;
        Ok(true)
    }

    /// PostgreSQL: merges the GIN indexes' pending lists.
    async fn merge_pending_lists(&self) -> DbResult<()> {
        let indexes = self.write().query_all_raw(Statement::from_string(DbBackend::Postgres, PENDING_INDEXES)).await?;
        for index in indexes {
            let name: String = index.try_get("", "name")?;
            // One statement an index: each merge commits on its own.
            self.write()
                .execute_raw(Statement::from_sql_and_values(
                    DbBackend::Postgres,
                    "SELECT gin_clean_pending_list($1::regclass)",
                    [name.into()],
                ))
                .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use sea_orm::ConnectionTrait;

    use super::super::test_support::{eval, fresh_db, job, main_jobset};
    use crate::domain::SearchQuery;

    async fn indexed_up_to(db: &crate::db::Db) -> i64 {
        let row = db
            .read()
            .query_one_raw(sea_orm::Statement::from_string(sea_orm::DbBackend::Sqlite, super::INDEXED_UP_TO))
            .await
            .unwrap()
            .unwrap();
        row.try_get("", "last_build_id").unwrap()
    }

    /// An evaluation's builds are found by a search before their rows are
    /// written (scanned after the cursor), and after (through the index),
    /// each once; writing the rows moves the cursor past them, in batches.
    #[tokio::test]
    async fn new_builds_are_found_before_and_after_they_are_indexed() {
        let (_dir, db) = fresh_db().await;
        let jobset = main_jobset(&db).await;
        let jobs = (0..super::INDEX_BATCH + 3).map(|i| job(&format!("pkg{i}"), "shapes")).collect();
        let new = eval(&db, jobset.id, 1, jobs).await;
        assert_eq!(indexed_up_to(&db).await, 0);
        // Every build matches: the newest ten, by output and by derivation.
        let query = SearchQuery::parse("shapes").unwrap();
        let newest: Vec<i64> = new.iter().rev().take(10).copied().collect();
        let before = db.search(&query, 10).await.unwrap();
        assert_eq!((&before.builds, &before.builds_by_drv), (&newest, &newest));

        db.merge_search_index().await.unwrap();
        assert_eq!(indexed_up_to(&db).await, *new.last().unwrap());
        let indexed: i64 = db
            .read()
            .query_one_raw(sea_orm::Statement::from_string(
                sea_orm::DbBackend::Sqlite,
                "SELECT count(*) AS n FROM build_search",
            ))
            .await
            .unwrap()
            .unwrap()
            .try_get("", "n")
            .unwrap();
        assert_eq!(indexed, new.len() as i64);
        let after = db.search(&query, 10).await.unwrap();
        assert_eq!((&after.builds, &after.builds_by_drv), (&newest, &newest));
        let exact = SearchQuery::parse("pkg5002-shapes").unwrap();
        assert_eq!(db.search(&exact, 10).await.unwrap().builds, [new[5002]]);
    }
}
