//! The event outbox: what happened to evaluations and builds, written in
//! the same transaction as the change it reports, for notifiers to be
//! told about in order.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("events")
                    .col(big_pk_auto("id"))
                    .col(text("kind"))
                    .col(big_integer("time"))
                    .col(big_integer_null("jobset_id"))
                    .col(big_integer_null("eval_id"))
                    .col(big_integer_null("build_id"))
                    .col(integer_null("step_nr"))
                    .col(text("data"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(Index::create().name("events_by_build").table("events").col("build_id").col("id").to_owned())
            .await
    }
}
