//! Search as Hydra's: a query matches anywhere in a build's output paths,
//! job name or derivation path, so that a hash prefix of a store path
//! finds its build, and stays an index lookup at ten million builds.
//!
//! A substring search needs an index of substrings, which each backend
//! has its own kind of; this is the one migration written in each one's
//! SQL (the rest use sea-query's schema builder):
//!
//! - PostgreSQL: `pg_trgm` GIN indexes on `build_outputs.path`,
//!   `builds.drv_path` and `builds.job`, which `ILIKE '%q%'` uses. The
//!   extension ships with PostgreSQL and is trusted (a database owner may
//!   create it); where it is missing, the search works without the index,
//!   scanning.
//! - SQLite: an FTS5 table with the trigram tokenizer, one row per build
//!   (rowid = build id): `names` (the job name and the output paths) and
//!   `drv` (the derivation path), without their `/nix/store/` directory,
//!   whose trigrams every row shares and which would only make the index
//!   bigger. Triggers keep it: a build's row is written when its outputs
//!   are (a build always has one), and goes with the build.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// What the SQLite search row of build `id` holds: its job and output
/// paths, its derivation path, each path without its store directory.
/// (`substr(path, instr(substr(path, 2), '/') + …)` would be shorter but
/// wrong for a store elsewhere than /nix/store: the basename is after
/// the last `/`, which `rtrim(path, replace(path, '/', ''))` finds.)
const SQLITE_ROW: &str = "\
    SELECT b.id, \
           b.job || ' ' || coalesce((SELECT group_concat(substr(o.path, length(rtrim(o.path, replace(o.path, '/', ''))) + 1), ' ') \
                                     FROM build_outputs o WHERE o.build_id = b.id), ''), \
           substr(b.drv_path, length(rtrim(b.drv_path, replace(b.drv_path, '/', ''))) + 1) \
    FROM builds b";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        match manager.get_database_backend() {
            DbBackend::Postgres => {
                let available = db
                    .query_one_raw(sea_orm_migration::sea_orm::Statement::from_string(
                        DbBackend::Postgres,
                        "SELECT 1 FROM pg_available_extensions WHERE name = 'pg_trgm'",
                    ))
                    .await?
                    .is_some();
                if !available {
                    return Ok(());
                }
                db.execute_unprepared("CREATE EXTENSION IF NOT EXISTS pg_trgm").await?;
                db.execute_unprepared(
                    "CREATE INDEX IF NOT EXISTS idx_build_outputs_path_trgm ON build_outputs USING gin (path gin_trgm_ops);
                     CREATE INDEX IF NOT EXISTS idx_builds_drv_path_trgm ON builds USING gin (drv_path gin_trgm_ops);
                     CREATE INDEX IF NOT EXISTS idx_builds_job_trgm ON builds USING gin (job gin_trgm_ops);",
                )
                .await?;
            }
            DbBackend::Sqlite => {
                db.execute_unprepared(
                    "CREATE VIRTUAL TABLE build_search USING fts5(names, drv, tokenize = 'trigram');",
                )
                .await?;
                db.execute_unprepared(&format!(
                    "CREATE TRIGGER build_search_outputs AFTER INSERT ON build_outputs BEGIN
                         INSERT OR REPLACE INTO build_search (rowid, names, drv) {SQLITE_ROW} WHERE b.id = NEW.build_id;
                     END;
                     CREATE TRIGGER build_search_builds AFTER DELETE ON builds BEGIN
                         DELETE FROM build_search WHERE rowid = OLD.id;
                     END;
                     INSERT INTO build_search (rowid, names, drv) {SQLITE_ROW};"
                ))
                .await?;
            }
            backend => return Err(DbErr::Migration(format!("no search index for {backend:?}"))),
        }
        Ok(())
    }
}
