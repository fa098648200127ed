//! `read-builds`: read-only queries on builds, evaluations and their
//! inputs, limited to the project a release-set call is about.

use super::{Capability, WitError, failed, flag_grant};
use crate::plugins::state::HostState;
use crate::plugins::wit::latest::host_api::orthrus::plugin::builds;

flag_grant!(
    /// May read builds, evaluations and inputs of the project it is called for.
    BuildsGrant,
    Capability::ReadBuilds,
    read_builds
);

/// At most this many builds per query: a release set is a view, not a dump.
const MAX_QUERY_BUILDS: u32 = 1000;

impl HostState {
    /// The project a query may read, if the grant allows reading at all.
    fn readable_project(&self) -> Result<i64, WitError> {
        self.granted(&self.grants.builds, Capability::ReadBuilds)?;
        self.project_scope
            .ok_or_else(|| WitError::InvalidInput("builds can only be read while computing a release set".to_owned()))
    }
}

/// Builds as a release-set plugin sees them. (Free functions: the host
/// state is not `Sync`, so the futures must not borrow it.)
async fn summaries(db: &crate::db::Db, ids: &[i64]) -> Result<Vec<builds::BuildSummary>, WitError> {
    let views = db.build_views(ids).await.map_err(failed)?;
    Ok(views
        .into_iter()
        .map(|view| builds::BuildSummary {
            id: view.build.id as u64,
            jobset: view.jobset,
            job: view.build.job,
            nix_name: view.build.nix_name,
            finished: view.build.finished,
            status: view.build.build_status,
            timestamp: view.build.timestamp,
            stop_time: view.build.stop_time.unwrap_or(0),
            release_name: view.build.release_name,
            outputs: view.outputs.into_iter().map(|(name, path)| builds::Output { name, path }).collect(),
            evals: view.evals.into_iter().map(|e| e as u64).collect(),
        })
        .collect())
}

/// An evaluation of project `project`.
async fn project_eval(db: &crate::db::Db, project: i64, id: u64) -> Result<(crate::db::JobsetEval, String), WitError> {
    let not_found = || WitError::InvalidInput(format!("evaluation {id} is not one of this project's"));
    let eval = db.eval(i64::try_from(id).map_err(|_| not_found())?).await.map_err(failed)?.ok_or_else(not_found)?;
    let (owner, jobset) = db.jobset_by_id(eval.jobset_id).await.map_err(failed)?.ok_or_else(not_found)?;
    if owner.id != project {
        return Err(not_found());
    }
    Ok((eval, jobset.name))
}

impl builds::Host for HostState {
    async fn jobsets(&mut self) -> Result<Vec<String>, WitError> {
        let project = self.readable_project()?;
        let db = self.services.db.clone();
        let jobsets = db.jobsets_of(project).await.map_err(failed)?;
        Ok(jobsets.into_iter().map(|j| j.name).collect())
    }

    async fn job_builds(
        &mut self,
        jobset: String,
        job: String,
        limit: u32,
    ) -> Result<Vec<builds::BuildSummary>, WitError> {
        let project = self.readable_project()?;
        let db = self.services.db.clone();
        let jobsets = db.jobsets_of(project).await.map_err(failed)?;
        let Some(jobset_row) = jobsets.iter().find(|j| j.name == jobset) else {
            return Err(WitError::InvalidInput(format!("the project has no jobset ‘{jobset}’")));
        };
        let ids = db.job_builds(jobset_row.id, &job, u64::from(limit.min(MAX_QUERY_BUILDS))).await.map_err(failed)?;
        summaries(&db, &ids).await
    }

    async fn eval(&mut self, id: u64) -> Result<builds::EvalSummary, WitError> {
        let project = self.readable_project()?;
        let db = self.services.db.clone();
        let (eval, jobset) = project_eval(&db, project, id).await?;
        let mut inputs = db.eval_inputs(&[eval.id]).await.map_err(failed)?;
        let inputs = inputs.remove(&eval.id).unwrap_or_default();
        Ok(builds::EvalSummary {
            id,
            jobset,
            timestamp: eval.timestamp,
            inputs: inputs
                .into_iter()
                .map(|i| builds::EvalInput {
                    name: i.name,
                    type_: i.kind,
                    value: i.value.unwrap_or_default(),
                    uri: i.uri.unwrap_or_default(),
                    revision: i.revision.unwrap_or_default(),
                    dependency: i.dependency.map(|d| d as u64),
                })
                .collect(),
        })
    }

    async fn eval_builds(&mut self, id: u64) -> Result<Vec<builds::BuildSummary>, WitError> {
        let project = self.readable_project()?;
        let db = self.services.db.clone();
        let (eval, _) = project_eval(&db, project, id).await?;
        let ids = db.eval_members_after(eval.id, i64::MIN, u64::from(MAX_QUERY_BUILDS) * 10).await.map_err(failed)?;
        summaries(&db, &ids).await
    }
}
