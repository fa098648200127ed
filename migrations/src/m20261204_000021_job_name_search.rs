//! SQLite: job names searched apart from the builds' paths.
//!
//! SQLite's search row of a build (migration 12) held its job name with
//! its output names, in one FTS5 trigram column. FTS5 reads the whole
//! posting list of every trigram of a phrase: a query such as
//! `python311Packages.numpy` has twenty trigrams that most Python builds
//! share, so it read most of their entries to find a few builds (66 ms at
//! a million builds; with only the jobs' distinct names in the index it
//! was still 5 ms at 38,000 names, against 0.3 ms for `numpy`).
//!
//! Now the job names are the jobsets' distinct names (`jobset_jobs`, as on
//! PostgreSQL since migration 17, plus each name's newest build), which the
//! server matches in memory (`host/src/db/job_names.rs`); the search row
//! holds the output names and the derivation name only. The table is made
//! again empty and its cursor (migration 20) set back, so that the server
//! writes every row again in the background when it starts (a search
//! meanwhile scans the newest builds not yet indexed): the upgrade itself
//! takes seconds, not the minutes a million rows take.
//!
//! The names are filled here from the builds, and from then on by the
//! same background writer as the search rows, which also moves each
//! name's newest build.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// What the SQLite search row of build `id` holds: its output paths and
/// its derivation path, each without its store directory (the basename is
/// after the last `/`, which `rtrim(path, replace(path, '/', ''))` finds;
/// a store need not be /nix/store).
pub const SQLITE_ROW: &str = "\
    SELECT b.id, \
           coalesce((SELECT group_concat(substr(o.path, length(rtrim(o.path, replace(o.path, '/', ''))) + 1), ' ') \
                     FROM build_outputs o WHERE o.build_id = b.id), ''), \
           substr(b.drv_path, length(rtrim(b.drv_path, replace(b.drv_path, '/', ''))) + 1) \
    FROM builds b";

/// Writes the jobsets' distinct job names of the builds `b` for which
/// `condition` holds (SQL), with each name's newest build, or moves that
/// build forward. (`WHERE` is how SQLite tells an upsert's `ON` from a
/// join's.)
pub fn sqlite_job_names(condition: &str) -> String {
    format!(
        "INSERT INTO jobset_jobs (jobset_id, name, last_build_id) \
         SELECT b.jobset_id, b.job, max(b.id) FROM builds b WHERE {condition} GROUP BY b.jobset_id, b.job \
         ON CONFLICT (jobset_id, name) DO UPDATE SET last_build_id = max(last_build_id, excluded.last_build_id)"
    )
}

const SQLITE: &str = "
DROP TABLE build_search;
CREATE VIRTUAL TABLE build_search USING fts5(outputs, drv, tokenize = 'trigram');
INSERT INTO build_search (build_search, rank) VALUES ('hashsize', 8388608);
UPDATE build_search_cursor SET last_build_id = 0;
CREATE TABLE jobset_jobs (
  id INTEGER PRIMARY KEY,
  jobset_id INTEGER NOT NULL REFERENCES jobsets (id) ON DELETE CASCADE,
  name TEXT NOT NULL,
  last_build_id INTEGER NOT NULL,
  UNIQUE (jobset_id, name)
);
CREATE INDEX idx_jobset_jobs_last_build ON jobset_jobs (last_build_id);
";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != DbBackend::Sqlite {
            return Ok(());
        }
        let db = manager.get_connection();
        db.execute_unprepared(SQLITE).await?;
        db.execute_unprepared(&sqlite_job_names("true")).await?;
        Ok(())
    }
}
