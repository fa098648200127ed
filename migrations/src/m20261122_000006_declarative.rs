//! What became of a declarative project's spec: the last error (with the
//! key and reason), when the spec was last read, and the last build of its
//! generator job that was dealt with, so that each is applied once.

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
            big_integer_null("declarative_build"),
        ] {
            let mut column = column;
            manager.alter_table(Table::alter().table("projects").add_column(&mut column).to_owned()).await?;
        }
        Ok(())
    }
}
