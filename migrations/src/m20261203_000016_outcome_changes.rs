//! Whether a new member's build and the build its job had in the
//! evaluation before have both finished with different outcomes
//! (`jobset_eval_members.outcome_changed`), kept by triggers as builds
//! finish, fail and are restarted, with an index of the members an
//! evaluation's comparison lists: new jobs and changed outcomes.
//!
//! The first page of an evaluation lists what changed since the one before.
//! With only the predecessors recorded (migration 15) that is still a visit
//! to every new member and both its builds: 0.44 s for an evaluation of
//! 100,000 new builds at ten million builds, to list none of them. With the
//! flag kept, it reads the few members that changed from an index.
//!
//! Either build of the pair may finish first, so the triggers look both
//! ways: from a build to the members it is the build of, and to those it is
//! the predecessor of (an index on `previous_build_id`). On PostgreSQL two
//! transactions may finish the two builds of a pair at once; each locks the
//! pair's member row (in one order, so that two bulk updates cannot
//! deadlock) before it reads the builds, in a statement of its own, so
//! that the second reads them after the first has committed. A member
//! inserted while its builds finish reads them `FOR SHARE`, as migration
//! 13's counts do. SQLite has one writer at a time.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::boolean;
use sea_orm_migration::sea_orm::DbBackend;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Whether builds `b` and `p` both finished, one succeeding and the other
/// not, in SQL both backends speak (SQLite stores booleans as integers).
macro_rules! differ {
    ($b:literal, $p:literal) => {
        concat!(
            "(",
            $b,
            ".finished = TRUE AND ",
            $p,
            ".finished = TRUE AND (coalesce(",
            $b,
            ".build_status, -1) = 0) <> (coalesce(",
            $p,
            ".build_status, -1) = 0))"
        )
    };
}

/// SQLite: a member's flag from its two builds as they are now.
macro_rules! sqlite_recompute {
    () => {
        concat!(
            "SET outcome_changed = coalesce((SELECT ",
            differ!("b", "p"),
            " FROM builds b, builds p WHERE b.id = jobset_eval_members.build_id \
               AND p.id = jobset_eval_members.previous_build_id), 0)"
        )
    };
}

/// PostgreSQL, in a statement trigger on `builds`: build `n` (new) changed
/// its outcome from `o` (old).
macro_rules! moved {
    () => {
        "(n.finished IS DISTINCT FROM o.finished OR n.build_status IS DISTINCT FROM o.build_status)"
    };
}

/// PostgreSQL, in a statement trigger on `builds`: the members whose pair
/// of builds holds one that changed its outcome, as the build or as its
/// predecessor (two index lookups, not an `OR` that none serves).
macro_rules! touched_pairs {
    () => {
        concat!(
            "(SELECT m.eval_id, m.build_id FROM jobset_eval_members m JOIN new_builds n ON m.build_id = n.id \
               JOIN old_builds o ON o.id = n.id WHERE m.is_new AND m.previous_build_id IS NOT NULL AND ",
            moved!(),
            " UNION SELECT m.eval_id, m.build_id FROM jobset_eval_members m JOIN new_builds n \
               ON m.previous_build_id = n.id JOIN old_builds o ON o.id = n.id WHERE m.is_new AND ",
            moved!(),
            ")"
        )
    };
}

/// Every new member's flag from its builds as they are now.
const BACKFILL: &str = concat!(
    "UPDATE jobset_eval_members SET outcome_changed = TRUE WHERE is_new AND previous_build_id IS NOT NULL AND EXISTS (",
    "SELECT 1 FROM builds b, builds p WHERE b.id = jobset_eval_members.build_id ",
    "AND p.id = jobset_eval_members.previous_build_id AND ",
    differ!("b", "p"),
    ")"
);

const POSTGRES: &str = concat!(
    r#"
CREATE FUNCTION orthrus_outcome_changes_members() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  -- Builds finishing now are waited for, and then read as they finished.
  PERFORM 1 FROM builds
   WHERE id IN (SELECT build_id FROM new_members WHERE is_new AND previous_build_id IS NOT NULL
                UNION SELECT previous_build_id FROM new_members WHERE is_new AND previous_build_id IS NOT NULL)
   ORDER BY id
     FOR SHARE;
  UPDATE jobset_eval_members m SET outcome_changed = TRUE
    FROM new_members n, builds b, builds p
   WHERE m.eval_id = n.eval_id AND m.build_id = n.build_id AND n.is_new
     AND b.id = n.build_id AND p.id = n.previous_build_id AND "#,
    differ!("b", "p"),
    r#";
  RETURN NULL;
END $$;

CREATE TRIGGER outcome_changes_members AFTER INSERT ON jobset_eval_members
  REFERENCING NEW TABLE AS new_members
  FOR EACH STATEMENT EXECUTE FUNCTION orthrus_outcome_changes_members();

CREATE FUNCTION orthrus_outcome_changes_builds() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM new_builds n JOIN old_builds o ON o.id = n.id WHERE "#,
    moved!(),
    r#") THEN
    RETURN NULL;
  END IF;
  PERFORM 1 FROM jobset_eval_members m JOIN "#,
    touched_pairs!(),
    r#" t ON m.eval_id = t.eval_id AND m.build_id = t.build_id
   ORDER BY m.eval_id, m.build_id
     FOR UPDATE OF m;
  -- A statement of its own: its snapshot is taken after the locks above,
  -- so it sees the other build of each pair as its last writer left it.
  UPDATE jobset_eval_members m SET outcome_changed = "#,
    differ!("b", "p"),
    r#"
    FROM "#,
    touched_pairs!(),
    r#" t, builds b, builds p
   WHERE m.eval_id = t.eval_id AND m.build_id = t.build_id
     AND b.id = m.build_id AND p.id = m.previous_build_id
     AND m.outcome_changed IS DISTINCT FROM "#,
    differ!("b", "p"),
    r#";
  RETURN NULL;
END $$;

CREATE TRIGGER outcome_changes_builds AFTER UPDATE ON builds
  REFERENCING OLD TABLE AS old_builds NEW TABLE AS new_builds
  FOR EACH STATEMENT EXECUTE FUNCTION orthrus_outcome_changes_builds();
"#
);

const SQLITE: &str = concat!(
    "
CREATE TRIGGER outcome_changes_members AFTER INSERT ON jobset_eval_members
  WHEN NEW.is_new AND NEW.previous_build_id IS NOT NULL
BEGIN
  UPDATE jobset_eval_members SET outcome_changed = 1
   WHERE eval_id = NEW.eval_id AND build_id = NEW.build_id
     AND EXISTS (SELECT 1 FROM builds b, builds p WHERE b.id = NEW.build_id AND p.id = NEW.previous_build_id AND ",
    differ!("b", "p"),
    ");
END;

CREATE TRIGGER outcome_changes_builds AFTER UPDATE OF finished, build_status ON builds
  WHEN OLD.finished IS NOT NEW.finished OR OLD.build_status IS NOT NEW.build_status
BEGIN
  UPDATE jobset_eval_members ",
    sqlite_recompute!(),
    " WHERE is_new AND previous_build_id IS NOT NULL AND build_id = NEW.id;
  UPDATE jobset_eval_members ",
    sqlite_recompute!(),
    " WHERE is_new AND previous_build_id = NEW.id;
END;
"
);

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table("jobset_eval_members")
                    .add_column(boolean("outcome_changed").default(false))
                    .to_owned(),
            )
            .await?;
        let db = manager.get_connection();
        db.execute_unprepared(BACKFILL).await?;
        // From a build to the members whose predecessor it is.
        db.execute_unprepared(
            "CREATE INDEX idx_jobset_eval_members_previous ON jobset_eval_members (previous_build_id) \
             WHERE previous_build_id IS NOT NULL",
        )
        .await?;
        // What an evaluation's comparison lists; the predicate is repeated
        // word for word by the query (SQLite uses a partial index only for
        // a query whose terms imply it as written).
        db.execute_unprepared(
            "CREATE INDEX idx_jobset_eval_members_changes ON jobset_eval_members (eval_id, build_id) \
             WHERE is_new AND (previous_build_id IS NULL OR outcome_changed)",
        )
        .await?;
        match manager.get_database_backend() {
            DbBackend::Postgres => db.execute_unprepared(POSTGRES).await?,
            DbBackend::Sqlite => db.execute_unprepared(SQLITE).await?,
            backend => return Err(DbErr::Migration(format!("no outcome changes for {backend:?}"))),
        };
        Ok(())
    }
}
