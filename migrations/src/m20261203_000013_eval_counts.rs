//! How many of an evaluation's builds have finished and how many of those
//! succeeded, kept on the evaluation (`nr_finished`, `nr_succeeded`, beside
//! `nr_builds`), so that the pages and answers that show counts (the evals
//! list, the jobset and project pages, `/api/jobsets`) read one row per
//! evaluation instead of counting its up to 100,000 members each time
//! (measured: the evals page took 4–6 s at a million builds).
//!
//! Triggers keep them, so that no path that finishes, fails, cancels or
//! restarts a build can forget to (there are a dozen): a member added counts
//! its build as it is; a build whose `finished` or `build_status` changes
//! moves the counts of every evaluation it belongs to. On PostgreSQL they
//! are statement triggers over transition tables (one update per
//! evaluation per statement, also when a statement touches 100,000
//! builds); the members' builds are read `FOR SHARE`, so that a build
//! finishing while its new evaluation is recorded waits for the record to
//! commit and then finds the new members (otherwise neither would count
//! it). SQLite has one writer at a time, and row triggers.
//!
//! Also an index of each evaluation's new members (builds not carried over
//! from the evaluation before), with which comparing two evaluations reads
//! only what changed.
//!
//! Members are only removed with their evaluation or their build (whose
//! evaluations the retention sweep has removed first), so removing one
//! needs no trigger.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;
use sea_orm_migration::sea_orm::DbBackend;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// The counts of every evaluation from its members, in SQL both backends
/// speak (the booleans compared, not summed: SQLite stores integers).
const RECOUNT: &str = "\
    UPDATE jobset_evals SET \
      nr_finished = (SELECT count(*) FROM jobset_eval_members m JOIN builds b ON b.id = m.build_id \
                     WHERE m.eval_id = jobset_evals.id AND b.finished = TRUE), \
      nr_succeeded = (SELECT count(*) FROM jobset_eval_members m JOIN builds b ON b.id = m.build_id \
                      WHERE m.eval_id = jobset_evals.id AND b.finished = TRUE AND b.build_status = 0)";

const POSTGRES: &str = r#"
CREATE FUNCTION orthrus_eval_counts_members() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  UPDATE jobset_evals e
     SET nr_finished = e.nr_finished + d.finished, nr_succeeded = e.nr_succeeded + d.succeeded
    FROM (SELECT m.eval_id,
                 count(*) FILTER (WHERE b.finished) AS finished,
                 count(*) FILTER (WHERE b.finished AND b.build_status = 0) AS succeeded
            FROM new_members m
            JOIN (SELECT id, finished, build_status FROM builds
                   WHERE id IN (SELECT build_id FROM new_members) FOR SHARE) b ON b.id = m.build_id
           GROUP BY m.eval_id) d
   WHERE e.id = d.eval_id AND (d.finished <> 0 OR d.succeeded <> 0);
  RETURN NULL;
END $$;

CREATE TRIGGER eval_counts_members AFTER INSERT ON jobset_eval_members
  REFERENCING NEW TABLE AS new_members
  FOR EACH STATEMENT EXECUTE FUNCTION orthrus_eval_counts_members();

CREATE FUNCTION orthrus_eval_counts_builds() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  UPDATE jobset_evals e
     SET nr_finished = e.nr_finished + d.finished, nr_succeeded = e.nr_succeeded + d.succeeded
    FROM (SELECT m.eval_id,
                 sum(n.finished::int - o.finished::int) AS finished,
                 sum(coalesce(n.finished AND n.build_status = 0, false)::int
                     - coalesce(o.finished AND o.build_status = 0, false)::int) AS succeeded
            FROM new_builds n
            JOIN old_builds o ON o.id = n.id
            JOIN jobset_eval_members m ON m.build_id = n.id
           WHERE n.finished IS DISTINCT FROM o.finished OR n.build_status IS DISTINCT FROM o.build_status
           GROUP BY m.eval_id) d
   WHERE e.id = d.eval_id AND (d.finished <> 0 OR d.succeeded <> 0);
  RETURN NULL;
END $$;

CREATE TRIGGER eval_counts_builds AFTER UPDATE ON builds
  REFERENCING OLD TABLE AS old_builds NEW TABLE AS new_builds
  FOR EACH STATEMENT EXECUTE FUNCTION orthrus_eval_counts_builds();
"#;

const SQLITE: &str = "
CREATE TRIGGER eval_counts_members AFTER INSERT ON jobset_eval_members BEGIN
  UPDATE jobset_evals
     SET nr_finished = nr_finished + coalesce((SELECT finished = 1 FROM builds WHERE id = NEW.build_id), 0),
         nr_succeeded = nr_succeeded
                        + coalesce((SELECT finished = 1 AND coalesce(build_status = 0, 0) FROM builds WHERE id = NEW.build_id), 0)
   WHERE id = NEW.eval_id;
END;

CREATE TRIGGER eval_counts_builds AFTER UPDATE OF finished, build_status ON builds
  WHEN OLD.finished IS NOT NEW.finished OR OLD.build_status IS NOT NEW.build_status
BEGIN
  UPDATE jobset_evals
     SET nr_finished = nr_finished + ((NEW.finished = 1) - (OLD.finished = 1)),
         nr_succeeded = nr_succeeded
                        + ((NEW.finished = 1 AND coalesce(NEW.build_status = 0, 0))
                           - (OLD.finished = 1 AND coalesce(OLD.build_status = 0, 0)))
   WHERE id IN (SELECT eval_id FROM jobset_eval_members WHERE build_id = NEW.id);
END;
";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in ["nr_finished", "nr_succeeded"] {
            manager
                .alter_table(Table::alter().table("jobset_evals").add_column(integer(column).default(0)).to_owned())
                .await?;
        }
        let db = manager.get_connection();
        db.execute_unprepared(RECOUNT).await?;
        // The builds new in an evaluation (not carried over from the one
        // before), which are all that comparing the two needs: a small
        // index of the few new members of each evaluation.
        db.execute_unprepared(
            "CREATE INDEX idx_jobset_eval_members_new ON jobset_eval_members (eval_id, build_id) WHERE is_new",
        )
        .await?;
        match manager.get_database_backend() {
            DbBackend::Postgres => db.execute_unprepared(POSTGRES).await?,
            DbBackend::Sqlite => db.execute_unprepared(SQLITE).await?,
            backend => return Err(DbErr::Migration(format!("no evaluation counts for {backend:?}"))),
        };
        Ok(())
    }
}
