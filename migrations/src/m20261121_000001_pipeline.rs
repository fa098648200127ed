//! The pipeline schema: projects, jobsets and their inputs, evaluations,
//! builds with their outputs, steps, products and metrics, aggregate
//! constituents, cached failures and evaluation errors.
//!
//! Names follow Hydra's schema where one exists (so that operators coming
//! from Hydra recognise the tables), in snake_case. Times are Unix seconds.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

/// A foreign key from `table.column` to `target.id` that removes the row
/// together with its parent: deleting a project deletes everything under it.
fn cascade(table: &'static str, column: &'static str, target: &'static str) -> ForeignKeyCreateStatement {
    ForeignKey::create()
        .name(format!("fk_{table}_{column}"))
        .from(table, column)
        .to(target, "id")
        .on_delete(ForeignKeyAction::Cascade)
        .to_owned()
}

fn index(table: &'static str, name: &str, columns: &[&'static str]) -> IndexCreateStatement {
    let mut index = Index::create();
    index.name(format!("idx_{table}_{name}")).table(table);
    for column in columns {
        index.col(*column);
    }
    index.to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("projects")
                    .col(big_pk_auto("id"))
                    .col(text_uniq("name"))
                    .col(text("display_name").default(""))
                    .col(text("description").default(""))
                    .col(text("homepage").default(""))
                    .col(text("owner").default(""))
                    .col(boolean("enabled").default(true))
                    .col(boolean("hidden").default(false))
                    .col(boolean("enable_dynamic_run_command").default(false))
                    .col(text_null("declarative_file"))
                    .col(text_null("declarative_type"))
                    .col(text_null("declarative_value"))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table("jobsets")
                    .col(big_pk_auto("id"))
                    .col(big_integer("project_id"))
                    .col(text("name"))
                    .col(text("description").default(""))
                    .col(text("nixexpr_input").default(""))
                    .col(text("nixexpr_path").default(""))
                    .col(text_null("error_msg"))
                    .col(big_integer_null("error_time"))
                    .col(big_integer_null("last_checked_time"))
                    .col(text_null("last_check_outcome"))
                    .col(big_integer_null("trigger_time"))
                    .col(boolean("force_eval").default(false))
                    .col(integer("enabled").default(1))
                    .col(boolean("enable_email").default(false))
                    .col(boolean("hidden").default(false))
                    .col(text("email_override").default(""))
                    .col(integer("keep_nr").default(3))
                    .col(integer("check_interval").default(300))
                    .col(integer("scheduling_shares").default(100))
                    .col(text_null("fetch_error_msg"))
                    .col(big_integer_null("start_time"))
                    .col(integer("type").default(0))
                    .col(text_null("flake"))
                    .col(boolean("enable_dynamic_run_command").default(false))
                    .foreign_key(&mut cascade("jobsets", "project_id", "projects"))
                    .to_owned(),
            )
            .await?;
        manager.create_index(index("jobsets", "project_name", &["project_id", "name"]).unique().to_owned()).await?;

        manager
            .create_table(
                Table::create()
                    .table("jobset_inputs")
                    .col(big_pk_auto("id"))
                    .col(big_integer("jobset_id"))
                    .col(text("name"))
                    .col(text("type"))
                    .col(text("value").default(""))
                    .col(boolean("email_responsible").default(false))
                    .foreign_key(&mut cascade("jobset_inputs", "jobset_id", "jobsets"))
                    .to_owned(),
            )
            .await?;
        manager.create_index(index("jobset_inputs", "jobset_name", &["jobset_id", "name"]).unique().to_owned()).await?;

        manager
            .create_table(
                Table::create()
                    .table("jobset_evals")
                    .col(big_pk_auto("id"))
                    .col(big_integer("jobset_id"))
                    .col(big_integer("timestamp"))
                    .col(big_integer("checkout_time").default(0))
                    .col(big_integer("eval_time").default(0))
                    .col(boolean("has_new_builds").default(false))
                    .col(text("hash"))
                    .col(integer("nr_builds").default(0))
                    .col(integer("nr_errors").default(0))
                    .col(text_null("flake"))
                    .foreign_key(&mut cascade("jobset_evals", "jobset_id", "jobsets"))
                    .to_owned(),
            )
            .await?;
        manager.create_index(index("jobset_evals", "jobset", &["jobset_id", "id"])).await?;

        manager
            .create_table(
                Table::create()
                    .table("jobset_eval_inputs")
                    .col(big_pk_auto("id"))
                    .col(big_integer("eval_id"))
                    .col(text("name"))
                    .col(text("type"))
                    .col(text_null("uri"))
                    .col(text_null("revision"))
                    .col(text_null("value"))
                    .col(big_integer_null("dependency"))
                    .col(text_null("path"))
                    .col(text_null("sha256_hash"))
                    .foreign_key(&mut cascade("jobset_eval_inputs", "eval_id", "jobset_evals"))
                    .to_owned(),
            )
            .await?;
        manager.create_index(index("jobset_eval_inputs", "eval", &["eval_id"])).await?;

        manager
            .create_table(
                Table::create()
                    .table("builds")
                    .col(big_pk_auto("id"))
                    .col(boolean("finished").default(false))
                    .col(big_integer("timestamp"))
                    .col(big_integer("jobset_id"))
                    .col(text("job"))
                    .col(text("nix_name").default(""))
                    .col(text_null("description"))
                    .col(text("drv_path"))
                    .col(text("system"))
                    .col(text_null("license"))
                    .col(text_null("homepage"))
                    .col(text_null("maintainers"))
                    .col(integer("max_silent").default(7200))
                    .col(integer("timeout").default(36000))
                    .col(boolean("is_channel").default(false))
                    .col(boolean("is_aggregate").default(false))
                    .col(integer("priority").default(100))
                    .col(big_integer("global_priority").default(0))
                    .col(big_integer_null("start_time"))
                    .col(big_integer_null("stop_time"))
                    .col(boolean_null("is_cached_build"))
                    .col(integer_null("build_status"))
                    .col(big_integer_null("size"))
                    .col(big_integer_null("closure_size"))
                    .col(text_null("release_name"))
                    .col(boolean("keep").default(false))
                    .foreign_key(&mut cascade("builds", "jobset_id", "jobsets"))
                    .to_owned(),
            )
            .await?;
        manager.create_index(index("builds", "job", &["jobset_id", "job", "id"])).await?;
        manager.create_index(index("builds", "finished", &["finished", "id"])).await?;
        manager.create_index(index("builds", "drv_path", &["drv_path"])).await?;

        manager
            .create_table(
                Table::create()
                    .table("jobset_eval_members")
                    .col(big_integer("eval_id"))
                    .col(big_integer("build_id"))
                    .col(boolean("is_new"))
                    .primary_key(Index::create().col("eval_id").col("build_id"))
                    .foreign_key(&mut cascade("jobset_eval_members", "eval_id", "jobset_evals"))
                    .foreign_key(&mut cascade("jobset_eval_members", "build_id", "builds"))
                    .to_owned(),
            )
            .await?;
        manager.create_index(index("jobset_eval_members", "build", &["build_id"])).await?;

        manager
            .create_table(
                Table::create()
                    .table("build_outputs")
                    .col(big_integer("build_id"))
                    .col(text("name"))
                    .col(text("path"))
                    .primary_key(Index::create().col("build_id").col("name"))
                    .foreign_key(&mut cascade("build_outputs", "build_id", "builds"))
                    .to_owned(),
            )
            .await?;
        manager.create_index(index("build_outputs", "path", &["path"])).await?;

        manager
            .create_table(
                Table::create()
                    .table("build_steps")
                    .col(big_integer("build_id"))
                    .col(integer("step_nr"))
                    .col(integer("type").default(0))
                    .col(text("drv_path"))
                    .col(boolean("busy").default(false))
                    .col(integer_null("status"))
                    .col(text_null("error_msg"))
                    .col(big_integer_null("start_time"))
                    .col(big_integer_null("stop_time"))
                    .col(text("machine").default(""))
                    .col(text_null("system"))
                    .col(big_integer_null("propagated_from"))
                    .col(integer_null("times_built"))
                    .primary_key(Index::create().col("build_id").col("step_nr"))
                    .foreign_key(&mut cascade("build_steps", "build_id", "builds"))
                    .to_owned(),
            )
            .await?;
        manager.create_index(index("build_steps", "drv_path", &["drv_path"])).await?;
        manager.create_index(index("build_steps", "busy", &["busy"])).await?;

        manager
            .create_table(
                Table::create()
                    .table("build_step_outputs")
                    .col(big_integer("build_id"))
                    .col(integer("step_nr"))
                    .col(text("name"))
                    .col(text("path"))
                    .primary_key(Index::create().col("build_id").col("step_nr").col("name"))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_build_step_outputs_step")
                            .from("build_step_outputs", ("build_id", "step_nr"))
                            .to("build_steps", ("build_id", "step_nr"))
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table("build_products")
                    .col(big_integer("build_id"))
                    .col(integer("product_nr"))
                    .col(text("type"))
                    .col(text("subtype"))
                    .col(big_integer_null("file_size"))
                    .col(text_null("sha256_hash"))
                    .col(text("path"))
                    .col(text("name"))
                    .col(text("default_path").default(""))
                    .primary_key(Index::create().col("build_id").col("product_nr"))
                    .foreign_key(&mut cascade("build_products", "build_id", "builds"))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table("build_metrics")
                    .col(big_integer("build_id"))
                    .col(text("name"))
                    .col(text_null("unit"))
                    .col(double("value"))
                    .col(text("project"))
                    .col(text("jobset"))
                    .col(text("job"))
                    .col(big_integer("timestamp"))
                    .primary_key(Index::create().col("build_id").col("name"))
                    .foreign_key(&mut cascade("build_metrics", "build_id", "builds"))
                    .to_owned(),
            )
            .await?;
        manager.create_index(index("build_metrics", "job", &["project", "jobset", "job", "timestamp"])).await?;

        manager
            .create_table(
                Table::create()
                    .table("aggregate_constituents")
                    .col(big_integer("aggregate_id"))
                    .col(big_integer("constituent_id"))
                    .primary_key(Index::create().col("aggregate_id").col("constituent_id"))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_aggregate_constituents_aggregate")
                            .from("aggregate_constituents", "aggregate_id")
                            .to("builds", "id")
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_aggregate_constituents_constituent")
                            .from("aggregate_constituents", "constituent_id")
                            .to("builds", "id")
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table("failed_paths")
                    .col(text("path").primary_key())
                    .col(big_integer("time"))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table("evaluation_errors")
                    .col(big_pk_auto("id"))
                    .col(big_integer("jobset_id"))
                    .col(big_integer_null("eval_id"))
                    .col(text_null("job"))
                    .col(text("message"))
                    .col(big_integer("time"))
                    .foreign_key(&mut cascade("evaluation_errors", "jobset_id", "jobsets"))
                    .foreign_key(&mut cascade("evaluation_errors", "eval_id", "jobset_evals"))
                    .to_owned(),
            )
            .await?;
        manager.create_index(index("evaluation_errors", "jobset", &["jobset_id", "id"])).await?;
        manager.create_index(index("evaluation_errors", "eval", &["eval_id"])).await?;

        Ok(())
    }
}
