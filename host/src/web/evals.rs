//! Evaluations: one eval, its builds, a jobset's evals by page, and the
//! actions on an eval's builds (cancel, restart failed or aborted, bump).

use axum::Json;
use axum::extract::State;

use super::extract::{Path, Query};
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::require_on;
use super::eval_stream::{self, Shape};
use super::{ApiError, ApiResult, AppState, find_jobset, json as hydra, redirect};
use crate::db::EvalBuildFilter;
use crate::domain::BuildStatus;
use crate::users::{Action, Caller};

/// Evals per page of `/jobset/P/J/evals`.
const EVALS_PER_PAGE: u64 = 10;

async fn find_eval(state: &AppState, id: i64) -> ApiResult<crate::db::JobsetEval> {
    state.db.eval(id).await?.ok_or_else(|| ApiError::not_found(format!("evaluation {id} does not exist")))
}

/// An evaluation with its project and jobset, or a 404.
async fn find_eval_with_jobset(
    state: &AppState,
    id: i64,
) -> ApiResult<(crate::db::JobsetEval, crate::db::Project, crate::db::Jobset)> {
    state.db.eval_with_jobset(id).await?.ok_or_else(|| ApiError::not_found(format!("evaluation {id} does not exist")))
}

pub async fn get_eval(State(state): State<AppState>, Path(id): Path<i64>) -> ApiResult<Response> {
    let (eval, project, jobset) = find_eval_with_jobset(&state, id).await?;
    let inputs = state.db.eval_inputs(&[id]).await?;
    let errors = state.db.eval_errors(id).await?;
    let mut object = hydra::eval(&eval, inputs.get(&id).map(Vec::as_slice).unwrap_or_default(), Some(&errors));
    object.fields.insert("project".into(), json!(project.name));
    object.fields.insert("jobset".into(), json!(jobset.name));
    Ok(eval_stream::respond(state.db.clone(), Shape::One(object)))
}

pub async fn eval_builds(State(state): State<AppState>, Path(id): Path<i64>) -> ApiResult<Json<Value>> {
    find_eval(&state, id).await?;
    let ids = state.db.eval_builds_where(id, EvalBuildFilter::All).await?;
    Ok(Json(hydra::builds(&state.db.build_views(&ids).await?)))
}

/// `/eval/N/changes`: for each input whose revision changed since the
/// previous evaluation, the changes in between (as the input's plugin
/// tells them), `{input: {from, to, changes: [...]}}`.
pub async fn changes(State(state): State<AppState>, Path(id): Path<i64>) -> ApiResult<Json<Value>> {
    let eval = find_eval(&state, id).await?;
    let Some(previous) = state.db.previous_eval(&eval).await? else { return Ok(Json(json!({}))) };
    let mut inputs = state.db.eval_inputs(&[eval.id, previous.id]).await?;
    let before = inputs.remove(&previous.id).unwrap_or_default();
    let mut result = serde_json::Map::new();
    for input in inputs.remove(&eval.id).unwrap_or_default() {
        let Some(old) = before.iter().find(|b| b.name == input.name && b.kind == input.kind) else { continue };
        let (Some(from), Some(to)) = (old.revision.clone(), input.revision.clone()) else { continue };
        if from == to || crate::inputs::INPUT_TYPES.contains(&input.kind.as_str()) {
            continue;
        }
        let value = input.value.clone().unwrap_or_default();
        // Each call holds its plugin (git's calls wait for each other): a
        // flood of these must not stop fetches.
        let busy = || {
            ApiError::try_later(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "the input plugins are busy: try again shortly",
                std::time::Duration::from_secs(5),
            )
        };
        let _slot = tokio::time::timeout(std::time::Duration::from_secs(2), state.plugin_calls.changes.acquire())
            .await
            .map_err(|_| busy())?
            .map_err(|_| busy())?;
        let entry = match state.inputs.changes(&input.kind, &value, &from, &to).await {
            Ok(changes) => json!({ "from": from, "to": to, "changes": changes }),
            Err(error) => json!({ "from": from, "to": to, "error": error.to_string() }),
        };
        result.insert(input.name, entry);
    }
    Ok(Json(Value::Object(result)))
}

/// `/eval/N/store-paths`: the output paths of the evaluation's successful builds.
pub async fn store_paths(State(state): State<AppState>, Path(id): Path<i64>) -> ApiResult<Json<Value>> {
    find_eval(&state, id).await?;
    Ok(Json(json!(state.db.eval_store_paths(id).await?)))
}

pub async fn eval_job(State(state): State<AppState>, Path((id, job)): Path<(i64, String)>) -> ApiResult<Response> {
    find_eval(&state, id).await?;
    let build = state
        .db
        .eval_job_build(id, &job)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("evaluation {id} has no job ‘{job}’")))?;
    Ok(redirect(&state, &format!("/build/{build}")))
}

#[derive(Debug, Deserialize)]
pub struct PageQuery {
    #[serde(default)]
    pub(super) page: Option<u64>,
}

/// `{evals: [...], first, last, next?, previous?}`, newest first.
pub async fn jobset_evals(
    State(state): State<AppState>,
    Path((project, jobset)): Path<(String, String)>,
    Query(query): Query<PageQuery>,
) -> ApiResult<Response> {
    let (_, jobset_row) = find_jobset(&state, &project, &jobset).await?;
    // Bounded: the database takes offsets as signed 64-bit numbers.
    let page = query.page.unwrap_or(1).clamp(1, 1 << 40);
    let (evals, total) = state.db.jobset_evals(jobset_row.id, (page - 1) * EVALS_PER_PAGE, EVALS_PER_PAGE).await?;
    let ids: Vec<i64> = evals.iter().map(|e| e.id).collect();
    let inputs = state.db.eval_inputs(&ids).await?;
    let objects = evals
        .iter()
        .map(|eval| hydra::eval(eval, inputs.get(&eval.id).map(Vec::as_slice).unwrap_or_default(), None))
        .collect();
    let mut head = page_links(page, total, EVALS_PER_PAGE);
    head.insert("uri".into(), json!(state.url(&format!("/jobset/{project}/{jobset}/evals"))));
    Ok(eval_stream::respond(state.db.clone(), Shape::Page { head, list_key: "evals", evals: objects }))
}

/// A page's `first`, `last`, `total` and, where there are, `next` and
/// `previous` (as Hydra's: `?page=N`).
pub(super) fn page_links(page: u64, total: u64, per_page: u64) -> serde_json::Map<String, Value> {
    let last = total.div_ceil(per_page).max(1);
    let mut head = serde_json::Map::new();
    head.insert("first".into(), json!("?page=1"));
    head.insert("last".into(), json!(format!("?page={last}")));
    head.insert("total".into(), json!(total));
    if page < last {
        head.insert("next".into(), json!(format!("?page={}", page + 1)));
    }
    if page > 1 {
        head.insert("previous".into(), json!(format!("?page={}", page - 1)));
    }
    head
}

/// 302 to the newest evaluation none of whose builds is unfinished.
pub async fn latest_eval(
    State(state): State<AppState>,
    Path((project, jobset)): Path<(String, String)>,
) -> ApiResult<Response> {
    let (_, jobset_row) = find_jobset(&state, &project, &jobset).await?;
    let eval = state
        .db
        .latest_finished_eval(jobset_row.id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("jobset ‘{project}:{jobset}’ has no finished evaluation")))?;
    Ok(redirect(&state, &format!("/eval/{}", eval.id)))
}

/// What can be done to an evaluation's builds.
#[derive(Clone, Copy)]
enum EvalAction {
    Cancel,
    RestartFailed,
    RestartAborted,
    Bump,
}

/// `cancel`, `restart-failed`, `restart-aborted`, `bump`: act on the
/// eval's builds, then 302 back to the eval.
pub async fn eval_action(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, action)): Path<(i64, String)>,
) -> ApiResult<Response> {
    let (_, project, _) = find_eval_with_jobset(&state, id).await?;
    let action = match action.as_str() {
        "cancel" => EvalAction::Cancel,
        "restart-failed" => EvalAction::RestartFailed,
        "restart-aborted" => EvalAction::RestartAborted,
        "bump" => EvalAction::Bump,
        other => return Err(ApiError::not_found(format!("evaluations have no action ‘{other}’"))),
    };
    let needed = match action {
        EvalAction::Cancel => Action::CancelBuild,
        EvalAction::RestartFailed | EvalAction::RestartAborted => Action::RestartBuild,
        EvalAction::Bump => Action::BumpBuild,
    };
    require_on(&state, &caller, needed, &project).await?;
    match action {
        EvalAction::Cancel => {
            let ids = state.db.eval_builds_where(id, EvalBuildFilter::Unfinished).await?;
            state.db.cancel_builds(&ids).await?;
        }
        EvalAction::RestartFailed | EvalAction::RestartAborted => {
            let filter = match action {
                EvalAction::RestartFailed => EvalBuildFilter::Unsuccessful,
                _ => EvalBuildFilter::StatusIn(&BuildStatus::ABORTED_LIKE),
            };
            let ids = state.db.eval_builds_where(id, filter).await?;
            // Builds whose derivation was collected stay as they are: they
            // would only abort.
            let (ids, gone) = super::builds::restartable(&state, &ids).await?;
            if !gone.is_empty() {
                tracing::info!(
                    eval = id,
                    "{} builds not restarted: their derivations were garbage-collected",
                    gone.len()
                );
            }
            state.db.restart_builds(&ids).await?;
        }
        EvalAction::Bump => {
            let ids = state.db.eval_builds_where(id, EvalBuildFilter::Unfinished).await?;
            state.db.bump_builds(&ids).await?;
        }
    }
    state.queue.wake();
    Ok(redirect(&state, &format!("/eval/{id}")))
}
