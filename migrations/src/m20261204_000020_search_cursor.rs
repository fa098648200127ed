//! SQLite's search index (migration 12) is written after an evaluation is
//! recorded, not inside the recording transaction.
//!
//! A trigger wrote a build's search row as its outputs were inserted: a
//! hundred or so trigrams a build, 1.0 s of the 1.4 s that recording an
//! evaluation of 20,000 new builds took, and nothing could be queued or
//! finished meanwhile (SQLite has one writer). Now the trigger is gone
//! and `build_search_cursor` holds the newest build whose row is written:
//! the server writes the rows of the builds after it, a few thousand per
//! transaction that also moves the cursor, once an evaluation has
//! committed and when it starts (so a crash in between loses nothing).
//! Build ids grow in commit order here (one writer at a time), so the
//! builds after the cursor are exactly those without a row, which a
//! search scans (at most an evaluation's worth, for a few seconds).
//!
//! PostgreSQL's trigram indexes leave their entries pending during the
//! recording transaction instead (`host/src/db/search_index.rs`): nothing
//! to do there.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

#[derive(DeriveMigrationName)]
pub struct Migration;

const SQLITE: &str = "
CREATE TABLE build_search_cursor (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  last_build_id INTEGER NOT NULL
);
INSERT INTO build_search_cursor (id, last_build_id) SELECT 1, coalesce(max(id), 0) FROM builds;
DROP TRIGGER build_search_outputs;
";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != DbBackend::Sqlite {
            return Ok(());
        }
        manager.get_connection().execute_unprepared(SQLITE).await?;
        Ok(())
    }
}
