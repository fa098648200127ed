//! The state of declarative projects: their `.jobsets` jobset, what their
//! spec was when read last and how applying it ended, and the builds of
//! their generator job still to be applied.

use std::collections::HashMap;

use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, IntoActiveModel, QueryFilter, QuerySelect,
};

use super::entities::{build, jobset, jobset_eval, jobset_eval_member, project};
use super::{Db, DbResult, JobsetSettings, Project, enabled, now};

/// The jobset that reads a declarative project's spec (Hydra's name).
pub const SPEC_JOBSET: &str = ".jobsets";
/// The job of [`SPEC_JOBSET`] whose output is a generated spec.
pub const GENERATOR_JOB: &str = "jobsets";

/// What a declarative project's spec was when read last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecSource {
    /// Jobsets, applied as read.
    Static,
    /// The settings of `.jobsets`, whose `jobsets` job makes the jobsets.
    Generator,
}

impl SpecSource {
    pub fn as_str(self) -> &'static str {
        match self {
            SpecSource::Static => "static",
            SpecSource::Generator => "generator",
        }
    }
}

/// A finished build of a declarative project's generator job, from the
/// newest evaluation of its `.jobsets`, that has not been dealt with yet.
#[derive(Debug, Clone)]
pub struct GeneratorBuild {
    pub project: Project,
    pub build_id: i64,
    /// How it finished, `STATUS@STOPTIME`: what tells a restarted build's
    /// new result from the one dealt with.
    pub finish: String,
    pub status: i32,
    /// The store path of its `out` output (or its first one).
    pub output: Option<String>,
}

impl Db {
    /// Gives a declarative project its `.jobsets` jobset and asks for it to
    /// be read now, forgetting what was read before; a project no longer
    /// declarative has it switched off. Its other jobsets are left alone:
    /// the spec says what becomes of them.
    pub async fn configure_spec_jobset(&self, project: &Project) -> DbResult<()> {
        let txn = self.begin_write().await?;
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
        project::Entity::update_many()
            .col_expr(project::Column::DeclarativeError, Expr::value(Option::<String>::None))
            .col_expr(project::Column::DeclarativeSource, Expr::value(Option::<String>::None))
            .col_expr(project::Column::DeclarativeBuild, Expr::value(Option::<i64>::None))
            .col_expr(project::Column::DeclarativeBuildFinish, Expr::value(Option::<String>::None))
            .filter(project::Column::Id.eq(project.id))
            .exec(&txn)
            .await?;
        txn.commit().await?;
        self.builds.invalidate([]);
        Ok(())
    }

    /// Declarative projects without their `.jobsets` jobset (made before
    /// Orthrus read specs) get one; returns their names.
    pub async fn configure_declarative_projects(&self) -> DbResult<Vec<String>> {
        let mut configured = Vec::new();
        for project in self.declarative_projects().await? {
            let has_spec_jobset = jobset::Entity::find()
                .filter(jobset::Column::ProjectId.eq(project.id))
                .filter(jobset::Column::Name.eq(SPEC_JOBSET))
                .one(self.read())
                .await?
                .is_some();
            if !has_spec_jobset {
                self.configure_spec_jobset(&project).await?;
                configured.push(project.name);
            }
        }
        Ok(configured)
    }

    async fn declarative_projects(&self) -> DbResult<Vec<Project>> {
        Ok(project::Entity::find()
            .filter(project::Column::DeclarativeFile.is_not_null())
            .filter(project::Column::DeclarativeFile.ne(""))
            .all(self.read())
            .await?)
    }

    /// Records what a project's spec was when just read. `reapply` forgets
    /// the generator build dealt with last, so that the newest one is
    /// applied again (after a static spec, or an error, in between).
    pub async fn record_spec_source(&self, project_id: i64, source: SpecSource, reapply: bool) -> DbResult<()> {
        let txn = self.begin_write().await?;
        let mut update = project::Entity::update_many()
            .col_expr(project::Column::DeclarativeSource, Expr::value(source.as_str()))
            .filter(project::Column::Id.eq(project_id));
        if reapply {
            update = update
                .col_expr(project::Column::DeclarativeBuild, Expr::value(Option::<i64>::None))
                .col_expr(project::Column::DeclarativeBuildFinish, Expr::value(Option::<String>::None));
        }
        update.exec(&txn).await?;
        txn.commit().await?;
        Ok(())
    }

    /// Records how reading or applying a project's spec ended: `error` is
    /// `None` when it applied. `build` is the generator build dealt with,
    /// with how it finished.
    pub async fn record_spec_outcome(
        &self,
        project_id: i64,
        error: Option<&str>,
        build: Option<(i64, &str)>,
    ) -> DbResult<()> {
        let txn = self.begin_write().await?;
        let mut update = project::Entity::update_many()
            .col_expr(project::Column::DeclarativeError, Expr::value(error.map(str::to_owned)))
            .col_expr(project::Column::DeclarativeCheckedTime, Expr::value(now()))
            .filter(project::Column::Id.eq(project_id));
        if let Some((build, finish)) = build {
            update = update
                .col_expr(project::Column::DeclarativeBuild, Expr::value(build))
                .col_expr(project::Column::DeclarativeBuildFinish, Expr::value(finish));
        }
        update.exec(&txn).await?;
        txn.commit().await?;
        Ok(())
    }

    /// Clears the evaluation error of a jobset (`.jobsets` once its static
    /// spec applied again).
    pub async fn clear_eval_error(&self, jobset_id: i64) -> DbResult<()> {
        let txn = self.begin_write().await?;
        jobset::Entity::update_many()
            .col_expr(jobset::Column::ErrorMsg, Expr::value(Option::<String>::None))
            .col_expr(jobset::Column::ErrorTime, Expr::value(Option::<i64>::None))
            .filter(jobset::Column::Id.eq(jobset_id))
            .exec(&txn)
            .await?;
        txn.commit().await?;
        Ok(())
    }

    /// For each project whose spec is a generator, the finished `jobsets`
    /// build of the newest evaluation of its `.jobsets`, unless it was
    /// dealt with already (same build, finished the same way). A few queries in
    /// all, however many projects there are.
    pub async fn pending_generator_builds(&self) -> DbResult<Vec<GeneratorBuild>> {
        let projects: HashMap<i64, Project> = project::Entity::find()
            .filter(project::Column::DeclarativeFile.ne(""))
            .filter(project::Column::DeclarativeSource.eq(SpecSource::Generator.as_str()))
            .all(self.read())
            .await?
            .into_iter()
            .map(|p| (p.id, p))
            .collect();
        if projects.is_empty() {
            return Ok(Vec::new());
        }
        let spec_jobsets: HashMap<i64, i64> = jobset::Entity::find()
            .select_only()
            .column(jobset::Column::Id)
            .column(jobset::Column::ProjectId)
            .filter(jobset::Column::ProjectId.is_in(projects.keys().copied()))
            .filter(jobset::Column::Name.eq(SPEC_JOBSET))
            .into_tuple::<(i64, i64)>()
            .all(self.read())
            .await?
            .into_iter()
            .collect();
        let newest_evals: Vec<Option<i64>> = jobset_eval::Entity::find()
            .select_only()
            .column_as(jobset_eval::Column::Id.max(), "id")
            .filter(jobset_eval::Column::JobsetId.is_in(spec_jobsets.keys().copied()))
            .group_by(jobset_eval::Column::JobsetId)
            .into_tuple()
            .all(self.read())
            .await?;
        let members: Vec<i64> = jobset_eval_member::Entity::find()
            .select_only()
            .column(jobset_eval_member::Column::BuildId)
            .filter(jobset_eval_member::Column::EvalId.is_in(newest_evals.into_iter().flatten()))
            .into_tuple()
            .all(self.read())
            .await?;
        let builds = build::Entity::find()
            .filter(build::Column::Id.is_in(members))
            .filter(build::Column::Job.eq(GENERATOR_JOB))
            .filter(build::Column::Finished.eq(true))
            .all(self.read())
            .await?;
        let builds: Vec<_> = builds
            .into_iter()
            .filter_map(|b| {
                let project = projects.get(spec_jobsets.get(&b.jobset_id)?)?;
                let dealt_with = project.declarative_build == Some(b.id)
                    && project.declarative_build_finish.as_deref() == Some(finish_of(&b).as_str());
                (!dealt_with).then(|| (project.clone(), b))
            })
            .collect();
        let mut outputs = self.outputs_of(&builds.iter().map(|(_, b)| b.id).collect::<Vec<_>>()).await?;
        Ok(builds
            .into_iter()
            .map(|(project, b)| {
                let mut outputs = outputs.remove(&b.id).unwrap_or_default();
                let main = outputs.iter().position(|(name, _)| name == "out").unwrap_or(0);
                let output = (!outputs.is_empty()).then(|| outputs.swap_remove(main).1);
                GeneratorBuild {
                    project,
                    build_id: b.id,
                    finish: finish_of(&b),
                    status: b.build_status.unwrap_or(-1),
                    output,
                }
            })
            .collect())
    }
}

/// How a build finished, as recorded: `STATUS@STOPTIME`.
fn finish_of(build: &build::Model) -> String {
    format!("{}@{}", build.build_status.unwrap_or(-1), build.stop_time.unwrap_or(0))
}
