//! Several Orthrus processes on one PostgreSQL: who runs (`cluster_members`,
//! one row per process, kept fresh by its heartbeat) and who holds each
//! background role (`cluster_leases`, one row per role; `term` grows at
//! every change of holder and fences the old one out, `expires_ms` is in
//! the database's clock so that no two hosts' clocks are compared).

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("cluster_members")
                    .col(string("id").primary_key())
                    .col(string("host"))
                    .col(big_integer("pid"))
                    .col(string("version"))
                    // The roles it may run, comma-separated words.
                    .col(string("roles"))
                    // Where it answers HTTP: the public address of a `web`
                    // process, the internal one of the others.
                    .col(string("url"))
                    .col(big_integer("started_at"))
                    .col(big_integer("heartbeat_at"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table("cluster_leases")
                    .col(string("role").primary_key())
                    .col(string("holder"))
                    .col(big_integer("term"))
                    .col(big_integer("acquired_at"))
                    .col(big_integer("expires_ms"))
                    .to_owned(),
            )
            .await
    }
}
