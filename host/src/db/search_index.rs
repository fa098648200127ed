//! Keeping the search index (migration 12) out of recording an evaluation.
//!
//! On PostgreSQL the substring index is `pg_trgm` GIN indexes on
//! `builds.drv_path`, `build_outputs.path` and `jobset_jobs.name`: about
//! fifty trigrams a store path, each an entry in a posting tree. GIN
//! appends new entries to an unsorted pending list and merges the list
//! into the trees in bulk once it outgrows `gin_pending_list_limit` (4 MB
//! by default), in the inserting transaction: recording an evaluation of
//! 20,000 new builds merged it a dozen times, 3.7 s of its 5.1 s. So the
//! recording transaction raises the limit for itself alone (`SET LOCAL`)
//! and its entries stay pending; when it has committed, and the builds are
//! queued, [`Db::merge_search_index`] merges them with
//! `gin_clean_pending_list`, in transactions of its own. Until then a
//! search reads the pending entries too (a sequential read of them), so
//! it finds the new builds all along. The pending list is part of the
//! index, written ahead to the log: a crash before the merge loses
//! nothing, and the next vacuum or merge takes it up.
//!
//! SQLite's FTS5 index buffers a transaction's entries itself (migration
//! 18); it has nothing here.

use std::time::{Duration, Instant};

use sea_orm::{ConnectionTrait, DatabaseTransaction, DbBackend, Statement};

use super::{Db, DbResult};

/// How large the recording transaction lets the pending lists grow before
/// GIN merges them itself: more than an evaluation of nixpkgs' size writes
/// (about 1 kB of entries a build, in each of two indexes), so that it
/// never does.
const RECORDING_PENDING_LIMIT: &str = "1GB";

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
        if self.backend() != DbBackend::Postgres {
            return Ok(clock.elapsed());
        }
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
        Ok(clock.elapsed())
    }
}
