//! The store paths the binary cache serves, by hash part: the closures of
//! successful builds' outputs. A request for `/HASH.narinfo` is one
//! indexed lookup here, instead of a listing of the whole store; and what
//! is in the store without being part of a build (a source, a path input)
//! is not served.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create().table("cache_paths").col(text("hash_part").primary_key()).col(text("path")).to_owned(),
            )
            .await
    }
}
