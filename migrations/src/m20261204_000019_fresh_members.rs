//! The triggers on a new evaluation member (migrations 13 and 16) leave
//! alone the members whose build is new in the evaluation (`is_new`).
//!
//! Such a build is made in the same transaction as its member (recording
//! an evaluation is the only writer of members), unfinished: it counts
//! for nothing finished or succeeded, and its outcome cannot differ from
//! its predecessor's. Yet the triggers locked each one `FOR SHARE` to
//! read it, and the outcome trigger its predecessor too: 60,000 row
//! locks for an evaluation of 20,000 new builds, about a second of
//! recording it on PostgreSQL, to change nothing. No other transaction
//! can finish a build it cannot see yet; once the evaluation commits, the
//! triggers on `builds` see its members.
//!
//! So the counts' trigger reads only the builds carried over from the
//! evaluation before (which another transaction may be finishing, and
//! which it still locks), and the outcome trigger on members, which only
//! ever looked at new builds, is dropped; the one on `builds` keeps the
//! flag as they finish.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

#[derive(DeriveMigrationName)]
pub struct Migration;

const POSTGRES: &str = r#"
CREATE OR REPLACE FUNCTION orthrus_eval_counts_members() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  UPDATE jobset_evals e
     SET nr_finished = e.nr_finished + d.finished, nr_succeeded = e.nr_succeeded + d.succeeded
    FROM (SELECT m.eval_id,
                 count(*) FILTER (WHERE b.finished) AS finished,
                 count(*) FILTER (WHERE b.finished AND b.build_status = 0) AS succeeded
            FROM new_members m
            JOIN (SELECT id, finished, build_status FROM builds
                   WHERE id IN (SELECT build_id FROM new_members WHERE NOT is_new) FOR SHARE) b ON b.id = m.build_id
           WHERE NOT m.is_new
           GROUP BY m.eval_id) d
   WHERE e.id = d.eval_id AND (d.finished <> 0 OR d.succeeded <> 0);
  RETURN NULL;
END $$;

DROP TRIGGER outcome_changes_members ON jobset_eval_members;
DROP FUNCTION orthrus_outcome_changes_members();
"#;

const SQLITE: &str = "
DROP TRIGGER eval_counts_members;
CREATE TRIGGER eval_counts_members AFTER INSERT ON jobset_eval_members WHEN NOT NEW.is_new BEGIN
  UPDATE jobset_evals
     SET nr_finished = nr_finished + coalesce((SELECT finished = 1 FROM builds WHERE id = NEW.build_id), 0),
         nr_succeeded = nr_succeeded
                        + coalesce((SELECT finished = 1 AND coalesce(build_status = 0, 0) FROM builds WHERE id = NEW.build_id), 0)
   WHERE id = NEW.eval_id;
END;

DROP TRIGGER outcome_changes_members;
";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        match manager.get_database_backend() {
            DbBackend::Postgres => db.execute_unprepared(POSTGRES).await?,
            DbBackend::Sqlite => db.execute_unprepared(SQLITE).await?,
            backend => return Err(DbErr::Migration(format!("no member triggers for {backend:?}"))),
        };
        Ok(())
    }
}
