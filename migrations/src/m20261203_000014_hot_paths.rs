//! Indexes for what is asked of a long history (measured at a million
//! builds on SQLite and ten million on PostgreSQL, `bench/scale.py`):
//!
//! - the newest finished builds of a jobset (`/api/latestbuilds` with a
//!   project or jobset, `latest` of a jobset): `builds (jobset_id,
//!   finished, id)`, instead of walking all finished builds newest first
//!   until enough are the jobset's;
//! - the steps running now (`/queue`, `/status`): a partial index of busy
//!   steps, replacing the index on `busy` that a planner with statistics
//!   rightly ignored (one value for all but a handful of rows) and so
//!   scanned 1.4 million steps; the queries say `WHERE busy` as the index
//!   does, which a bound `= true` would not match;
//! - the queue in its order (`/queue`, `/api/queue`): a partial index of
//!   unfinished builds by priority, small however long the history;
//! - the most recently finished steps (`/steps`): `build_steps
//!   (stop_time, build_id)`, instead of sorting every step.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(
                Index::create()
                    .name("idx_builds_jobset_finished")
                    .table("builds")
                    .col("jobset_id")
                    .col("finished")
                    .col("id")
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_build_steps_stop")
                    .table("build_steps")
                    .col("stop_time")
                    .col("build_id")
                    .to_owned(),
            )
            .await?;
        manager.drop_index(Index::drop().name("idx_build_steps_busy").table("build_steps").to_owned()).await?;
        // Partial indexes: the same SQL on both backends.
        let db = manager.get_connection();
        db.execute_unprepared("CREATE INDEX idx_build_steps_running ON build_steps (build_id, step_nr) WHERE busy")
            .await?;
        db.execute_unprepared("CREATE INDEX idx_builds_queue ON builds (global_priority DESC, id) WHERE NOT finished")
            .await?;
        // SQLite's planner weighs indexes by the statistics ANALYZE left;
        // new indexes without them look cheaper than they are (measured: it
        // sorted a jobset's million builds for a page of 50). Sampled, so
        // that a long history takes seconds. PostgreSQL keeps statistics
        // per column, which its indexes share.
        if manager.get_database_backend() == sea_orm_migration::sea_orm::DbBackend::Sqlite {
            db.execute_unprepared("PRAGMA analysis_limit = 1000; ANALYZE;").await?;
        }
        Ok(())
    }
}
