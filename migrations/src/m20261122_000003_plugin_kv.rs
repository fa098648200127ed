//! The key-value store plugins keep small values in between calls.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("plugin_kv")
                    .col(text("plugin"))
                    .col(text("key"))
                    .col(blob("value"))
                    .col(big_integer("updated_time"))
                    .primary_key(Index::create().col("plugin").col("key"))
                    .to_owned(),
            )
            .await
    }
}
