//! SQLite's search index (migration 12) buffers more of a transaction's
//! new rows in memory before writing them out: 8 MiB instead of FTS5's
//! default of 1 MiB (its `hashsize` option, kept in the index's own
//! configuration table, so every connection uses it).
//!
//! Recording an evaluation writes one search row per new build, each a
//! hundred or so trigrams of its names and paths. With 1 MiB FTS5 writes a
//! small segment every thousand builds or so and merges them as they pile
//! up; that merging was most of recording an evaluation of 100,000 jobs.
//! Measured with the `sqlite3` CLI on this schema, 100,000 builds' rows in
//! one transaction: 1 MiB 3.78 s, 4 MiB 3.03 s, 8 MiB 2.80 s, 16 MiB
//! 2.66 s. 8 MiB is held only while a transaction has rows not yet
//! written out.
//!
//! PostgreSQL's trigram indexes are GIN indexes, which buffer on their own
//! (`gin_pending_list_limit`): nothing to do there.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// FTS5's in-memory buffer of new index entries, in bytes.
const SEARCH_BUFFER_BYTES: u32 = 8 << 20;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != DbBackend::Sqlite {
            return Ok(());
        }
        manager
            .get_connection()
            .execute_unprepared(&format!(
                "INSERT INTO build_search (build_search, rank) VALUES ('hashsize', {SEARCH_BUFFER_BYTES})"
            ))
            .await?;
        Ok(())
    }
}
