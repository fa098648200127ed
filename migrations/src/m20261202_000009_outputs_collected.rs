//! Whether a build's outputs were collected from the store: set by the GC
//! roots' update (no store check per request), read by `latest` (which
//! skips such builds) and shown on the build.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter().table("builds").add_column(boolean("outputs_collected").default(false)).to_owned(),
            )
            .await
    }
}
