//! The distinct job names of each jobset (`jobset_jobs`), on PostgreSQL,
//! with a `pg_trgm` index, so that a search by job name looks up the few
//! names that match and then their builds by `(jobset_id, job)`, instead
//! of a trigram index over every build's job: there a common part of a
//! name (`python311Packages.`) has a posting list of millions of builds
//! to intersect (100 ms at ten million builds for a query that matches
//! 177; 3 ms with the names). That index is dropped: nothing else reads it.
//!
//! A trigger keeps the names as builds are made (every path that makes a
//! build inserts it). Names of jobs whose builds retention deleted stay:
//! they match no build. SQLite's search row of a build (migration 12)
//! already holds its job name, in an index of its own kind.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{DbBackend, Statement};

#[derive(DeriveMigrationName)]
pub struct Migration;

const POSTGRES: &str = r#"
CREATE TABLE jobset_jobs (
  jobset_id bigint NOT NULL REFERENCES jobsets (id) ON DELETE CASCADE,
  name text NOT NULL,
  PRIMARY KEY (jobset_id, name)
);
INSERT INTO jobset_jobs (jobset_id, name) SELECT DISTINCT jobset_id, job FROM builds;

CREATE FUNCTION orthrus_job_names() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO jobset_jobs (jobset_id, name) SELECT DISTINCT jobset_id, job FROM new_builds
    ON CONFLICT DO NOTHING;
  RETURN NULL;
END $$;

CREATE TRIGGER job_names AFTER INSERT ON builds
  REFERENCING NEW TABLE AS new_builds
  FOR EACH STATEMENT EXECUTE FUNCTION orthrus_job_names();
"#;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != DbBackend::Postgres {
            return Ok(());
        }
        let db = manager.get_connection();
        db.execute_unprepared(POSTGRES).await?;
        // Where migration 12 found no pg_trgm, the names are matched by a
        // scan of this small table.
        let trigrams = db
            .query_one_raw(Statement::from_string(
                DbBackend::Postgres,
                "SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm'",
            ))
            .await?
            .is_some();
        if trigrams {
            db.execute_unprepared(
                "CREATE INDEX idx_jobset_jobs_name_trgm ON jobset_jobs USING gin (name gin_trgm_ops);
                 DROP INDEX IF EXISTS idx_builds_job_trgm;",
            )
            .await?;
        }
        Ok(())
    }
}
