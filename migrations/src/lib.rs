//! The database schema of Orthrus as sea-orm migrations.
//!
//! The same migrations serve SQLite (the embedded default) and PostgreSQL:
//! they are written with sea-query's schema builder, not raw SQL of one
//! dialect — except where each backend's own kind of index or trigger is
//! the point (`m20261203_000012_search`: trigram indexes;
//! `m20261203_000013_eval_counts`: counts kept by triggers). Identifiers are 64-bit (`big_pk_auto`), which SQLite turns
//! into its `INTEGER PRIMARY KEY` rowid alias and PostgreSQL into `bigserial`.
//!
//! A migration, once released, is never edited: later schema changes are new
//! migrations appended to [`Migrator::migrations`].

/// The SQL of SQLite's search rows of builds (`… FROM builds b`), which
/// the server writes after an evaluation (migrations 20 and 21).
pub use m20261204_000021_job_name_search::SQLITE_ROW as SQLITE_SEARCH_ROW;
/// The SQL that writes SQLite's job names of some builds (migration 21),
/// beside their search rows.
pub use m20261204_000021_job_name_search::sqlite_job_names;
pub use sea_orm_migration::MigratorTrait;
use sea_orm_migration::prelude::*;

mod m20261121_000001_pipeline;
mod m20261122_000002_users;
mod m20261122_000003_plugin_kv;
mod m20261122_000004_events;
mod m20261122_000005_notifications;
mod m20261122_000006_declarative;
mod m20261201_000007_confined_results;
mod m20261202_000008_cache_paths;
mod m20261202_000009_outputs_collected;
mod m20261202_000010_cluster;
mod m20261202_000011_eval_progress;
mod m20261203_000012_search;
mod m20261203_000013_eval_counts;
mod m20261203_000014_hot_paths;
mod m20261203_000015_predecessors;
mod m20261203_000016_outcome_changes;
mod m20261203_000017_job_names;
mod m20261203_000018_search_buffer;
mod m20261204_000019_fresh_members;
mod m20261204_000020_search_cursor;
mod m20261204_000021_job_name_search;

/// Applies all migrations in order; see [`MigratorTrait::up`].
pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261121_000001_pipeline::Migration),
            Box::new(m20261122_000002_users::Migration),
            Box::new(m20261122_000003_plugin_kv::Migration),
            Box::new(m20261122_000004_events::Migration),
            Box::new(m20261122_000005_notifications::Migration),
            Box::new(m20261122_000006_declarative::Migration),
            Box::new(m20261201_000007_confined_results::Migration),
            Box::new(m20261202_000008_cache_paths::Migration),
            Box::new(m20261202_000009_outputs_collected::Migration),
            Box::new(m20261202_000010_cluster::Migration),
            Box::new(m20261202_000011_eval_progress::Migration),
            Box::new(m20261203_000012_search::Migration),
            Box::new(m20261203_000013_eval_counts::Migration),
            Box::new(m20261203_000014_hot_paths::Migration),
            Box::new(m20261203_000015_predecessors::Migration),
            Box::new(m20261203_000016_outcome_changes::Migration),
            Box::new(m20261203_000017_job_names::Migration),
            Box::new(m20261203_000018_search_buffer::Migration),
            Box::new(m20261204_000019_fresh_members::Migration),
            Box::new(m20261204_000020_search_cursor::Migration),
            Box::new(m20261204_000021_job_name_search::Migration),
        ]
    }
}
