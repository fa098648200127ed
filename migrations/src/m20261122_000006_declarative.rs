//! What became of a declarative project's spec: the last error (with the
//! key and reason), when the spec was last read, whether it is static or a
//! generator, and the build of its generator job dealt with last (with how
//! it finished, as a restarted build keeps its id), so that each result is
//! applied once.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite alters a table one column at a time.
        for column in [
            text_null("declarative_error"),
            big_integer_null("declarative_checked_time"),
            text_null("declarative_source"),
            big_integer_null("declarative_build"),
            text_null("declarative_build_finish"),
        ] {
            let mut column = column;
            manager.alter_table(Table::alter().table("projects").add_column(&mut column).to_owned()).await?;
        }
        Ok(())
    }
}
