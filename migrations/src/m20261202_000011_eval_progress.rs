//! How far a running evaluation is (jobs evaluated, jobs known so far),
//! written on its jobset by the evaluator while it runs and cleared when the
//! check ends, so that every web process can show it.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(Table::alter().table("jobsets").add_column(big_integer_null("eval_evaluated")).to_owned())
            .await?;
        manager.alter_table(Table::alter().table("jobsets").add_column(big_integer_null("eval_total")).to_owned()).await
    }
}
