//! The state of declarative projects: their `.jobsets` jobset, the
//! outcome of reading their spec, and the builds of their generator job.

use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, IntoActiveModel, QueryFilter, QueryOrder,
    TransactionTrait,
};

use super::entities::{build, jobset, project};
use super::{Db, DbResult, JobsetSettings, Project, enabled, now};

/// The jobset that reads a declarative project's spec (Hydra's name).
pub const SPEC_JOBSET: &str = ".jobsets";
/// The job of [`SPEC_JOBSET`] whose output is a generated spec.
pub const GENERATOR_JOB: &str = "jobsets";

/// A finished build of a declarative project's generator job that has not
/// been dealt with yet.
#[derive(Debug, Clone)]
pub struct GeneratorBuild {
    pub project: Project,
    pub build_id: i64,
    pub status: i32,
    /// The store path of its `out` output (or its first one).
    pub output: Option<String>,
}

impl Db {
    /// Gives a declarative project its `.jobsets` jobset and asks for it to
    /// be read now; a project no longer declarative has it switched off.
    /// Its other jobsets are left alone: the spec says what becomes of them.
    pub async fn configure_spec_jobset(&self, project: &Project) -> DbResult<()> {
        let txn = self.write().begin().await?;
        let existing = jobset::Entity::find()
            .filter(jobset::Column::ProjectId.eq(project.id))
            .filter(jobset::Column::Name.eq(SPEC_JOBSET))
            .one(&txn)
            .await?;
        match (project.declarative().is_some(), existing) {
            (true, Some(current)) => {
                let mut active = current.into_active_model();
                active.enabled = Set(enabled::ENABLED);
                active.hidden = Set(false);
                active.trigger_time = Set(Some(now()));
                // The spec's file or input may have changed: read it again.
                active.force_eval = Set(true);
                active.update(&txn).await?;
            }
            (true, None) => {
                let settings = JobsetSettings::new(SPEC_JOBSET);
                super::projects::write_jobset(&txn, project.id, None, &settings).await?;
            }
            (false, Some(current)) if current.enabled != enabled::DISABLED => {
                let mut active = current.into_active_model();
                active.enabled = Set(enabled::DISABLED);
                active.hidden = Set(true);
                active.update(&txn).await?;
            }
            (false, _) => {}
        }
        txn.commit().await?;
        self.builds.invalidate([]);
        Ok(())
    }

    /// Records how reading or applying a project's spec ended: `error` is
    /// `None` when it applied. `build` is the generator build dealt with.
    pub async fn record_spec_outcome(&self, project_id: i64, error: Option<&str>, build: Option<i64>) -> DbResult<()> {
        let mut update = project::Entity::update_many()
            .col_expr(project::Column::DeclarativeError, Expr::value(error.map(str::to_owned)))
            .col_expr(project::Column::DeclarativeCheckedTime, Expr::value(now()))
            .filter(project::Column::Id.eq(project_id));
        if let Some(build) = build {
            update = update.col_expr(project::Column::DeclarativeBuild, Expr::value(build));
        }
        update.exec(self.write()).await?;
        Ok(())
    }

    /// For each declarative project, the newest finished build of its
    /// generator job newer than the one last dealt with.
    pub async fn pending_generator_builds(&self) -> DbResult<Vec<GeneratorBuild>> {
        let projects = project::Entity::find()
            .filter(project::Column::DeclarativeFile.is_not_null())
            .filter(project::Column::DeclarativeFile.ne(""))
            .all(self.read())
            .await?;
        let mut pending = Vec::new();
        for project in projects {
            let Some(spec_jobset) = jobset::Entity::find()
                .filter(jobset::Column::ProjectId.eq(project.id))
                .filter(jobset::Column::Name.eq(SPEC_JOBSET))
                .one(self.read())
                .await?
            else {
                continue;
            };
            let newest = build::Entity::find()
                .filter(build::Column::JobsetId.eq(spec_jobset.id))
                .filter(build::Column::Job.eq(GENERATOR_JOB))
                .filter(build::Column::Finished.eq(true))
                .filter(build::Column::Id.gt(project.declarative_build.unwrap_or(0)))
                .order_by_desc(build::Column::Id)
                .one(self.read())
                .await?;
            let Some(newest) = newest else { continue };
            let mut outputs = self.outputs_of(&[newest.id]).await?.remove(&newest.id).unwrap_or_default();
            let main = outputs.iter().position(|(name, _)| name == "out").unwrap_or(0);
            let output = (!outputs.is_empty()).then(|| outputs.swap_remove(main).1);
            pending.push(GeneratorBuild {
                project,
                build_id: newest.id,
                status: newest.build_status.unwrap_or(-1),
                output,
            });
        }
        Ok(pending)
    }
}
