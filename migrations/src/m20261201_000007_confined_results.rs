//! What was refused of what a build left in its outputs: a product whose
//! path leads out of its output is kept with the reason (and no size or
//! hash), and the build carries what was cut or skipped (a `nix-support`
//! file over its cap, product lines past the limit). Tokens that had every
//! scope get `account`, the scope added beside them, so that an `all`
//! token keeps doing all it did.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

/// How `all` was stored before `account` existed: every scope, sorted.
const EVERY_SCOPE_BEFORE: &str = "admin builds eval projects read";
const EVERY_SCOPE_NOW: &str = "account admin builds eval projects read";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.alter_table(Table::alter().table("build_products").add_column(text_null("error")).to_owned()).await?;
        manager.alter_table(Table::alter().table("builds").add_column(text_null("output_errors")).to_owned()).await?;
        manager
            .exec_stmt(
                Query::update()
                    .table("api_tokens")
                    .value("scopes", EVERY_SCOPE_NOW)
                    .and_where(Expr::col("scopes").eq(EVERY_SCOPE_BEFORE))
                    .to_owned(),
            )
            .await?;
        Ok(())
    }
}
