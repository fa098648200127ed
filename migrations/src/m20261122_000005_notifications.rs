//! Delivery state of notifiers, and release sets on projects.
//!
//! A notifier reads the event outbox in order; its cursor is the last
//! event it has dealt with. An event it failed to deliver is parked with
//! its attempts, next attempt and last error, and holds back the later
//! events of the same build (or evaluation) until it is delivered.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("notifier_cursors")
                    .col(text("notifier").primary_key())
                    .col(big_integer("cursor"))
                    .col(big_integer("delivered"))
                    .col(big_integer_null("last_delivery"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table("notifier_pending")
                    .col(big_pk_auto("id"))
                    .col(text("notifier"))
                    .col(big_integer("event_id"))
                    // What orders delivery: `build:N`, `eval:N` or `jobset:N`.
                    .col(text("ordering_key"))
                    .col(integer("attempts"))
                    .col(big_integer("next_attempt"))
                    .col(big_integer("first_failure"))
                    .col(text_null("last_error"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("notifier_pending_event")
                    .table("notifier_pending")
                    .col("notifier")
                    .col("event_id")
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager.alter_table(Table::alter().table("projects").add_column(text_null("release_sets")).to_owned()).await
    }
}
