//! Users, their roles, project members, login sessions and API tokens.
//! Secrets are never stored: passwords as argon2 hashes, session and API
//! tokens as SHA-256 digests (they are long random strings, so a fast
//! digest is enough to make a stolen database useless for logging in).

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

fn cascade(table: &'static str, column: &'static str, target: &'static str) -> ForeignKeyCreateStatement {
    ForeignKey::create()
        .name(format!("fk_{table}_{column}"))
        .from(table, column)
        .to(target, "id")
        .on_delete(ForeignKeyAction::Cascade)
        .to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("users")
                    .col(big_pk_auto("id"))
                    .col(text_uniq("username"))
                    .col(text("full_name").default(""))
                    .col(text("email").default(""))
                    .col(text_null("password_hash"))
                    .col(big_integer("created_time"))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table("user_roles")
                    .col(big_integer("user_id"))
                    .col(text("role"))
                    .primary_key(Index::create().col("user_id").col("role"))
                    .foreign_key(&mut cascade("user_roles", "user_id", "users"))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table("project_members")
                    .col(big_integer("project_id"))
                    .col(big_integer("user_id"))
                    .primary_key(Index::create().col("project_id").col("user_id"))
                    .foreign_key(&mut cascade("project_members", "project_id", "projects"))
                    .foreign_key(&mut cascade("project_members", "user_id", "users"))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table("sessions")
                    .col(text("digest").primary_key())
                    .col(big_integer("user_id"))
                    .col(big_integer("created_time"))
                    .col(big_integer("expires_time"))
                    .foreign_key(&mut cascade("sessions", "user_id", "users"))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table("api_tokens")
                    .col(big_pk_auto("id"))
                    .col(big_integer("user_id"))
                    .col(text("name").default(""))
                    .col(text_uniq("digest"))
                    .col(text("scopes"))
                    .col(big_integer("created_time"))
                    .col(big_integer_null("expires_time"))
                    .col(big_integer_null("last_used_time"))
                    .col(boolean("revoked").default(false))
                    .foreign_key(&mut cascade("api_tokens", "user_id", "users"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(Index::create().name("idx_api_tokens_user").table("api_tokens").col("user_id").to_owned())
            .await?;
        Ok(())
    }
}
