//! Builds: the build JSON, its constituents and steps, its logs, the
//! actions on it (restart, cancel, bump, keep) and the queue.

use axum::Json;
use axum::extract::State;

use super::extract::{Path, Query};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::Value;

use super::auth::require_on;
use super::{ApiError, ApiResult, AppState, json as hydra, redirect};
use crate::db::{BuildStep, BuildView, status};
use crate::logs::tail_lines;
use crate::nix::StorePath;
use crate::users::{Action, Caller};

/// Lines of `/log/tail`.
const TAIL_LINES: usize = 50;

async fn find_build(state: &AppState, id: i64) -> ApiResult<BuildView> {
    state.db.build_views(&[id]).await?.pop().ok_or_else(|| ApiError::not_found(format!("build {id} does not exist")))
}

pub async fn get_build(State(state): State<AppState>, Path(id): Path<i64>) -> ApiResult<Json<Value>> {
    Ok(Json(hydra::build(&find_build(&state, id).await?)))
}

pub async fn constituents(State(state): State<AppState>, Path(id): Path<i64>) -> ApiResult<Json<Value>> {
    find_build(&state, id).await?;
    let ids = state.db.constituents_of(id).await?;
    Ok(Json(hydra::builds(&state.db.build_views(&ids).await?)))
}

pub async fn steps(State(state): State<AppState>, Path(id): Path<i64>) -> ApiResult<Json<Value>> {
    find_build(&state, id).await?;
    let steps = state.db.build_steps(id).await?;
    Ok(Json(Value::Array(steps.iter().map(hydra::step).collect())))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum LogMode {
    Whole,
    Tail,
}

impl LogMode {
    fn parse(mode: &str) -> ApiResult<LogMode> {
        match mode {
            "raw" => Ok(LogMode::Whole),
            "tail" => Ok(LogMode::Tail),
            other => Err(ApiError::not_found(format!("no log view ‘{other}’ (use raw or tail)"))),
        }
    }
}

fn log_response(state: &AppState, drv: &str, mode: LogMode) -> ApiResult<Response> {
    let drv = StorePath::parse(drv).map_err(|e| ApiError::not_found(e.to_string()))?;
    let log = state
        .logs
        .read(&drv)
        .map_err(|e| ApiError::new(axum::http::StatusCode::INTERNAL_SERVER_ERROR, format!("cannot read the log: {e}")))?
        .ok_or_else(|| ApiError::not_found(format!("there is no log of {drv}")))?;
    let body = match mode {
        LogMode::Whole => log,
        LogMode::Tail => tail_lines(&log, TAIL_LINES).to_vec(),
    };
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response())
}

/// The log a build's page shows: its own derivation's, or else that of the
/// step that made it fail.
async fn build_log_drv(state: &AppState, id: i64) -> ApiResult<String> {
    let view = find_build(state, id).await?;
    let drv = StorePath::parse(&view.build.drv_path).map_err(|e| ApiError::not_found(e.to_string()))?;
    if state.logs.exists(&drv) {
        return Ok(view.build.drv_path);
    }
    let steps = state.db.build_steps(id).await?;
    steps
        .iter()
        .rev()
        .find(|s| s.status.is_some_and(|c| c != status::SUCCESS))
        .or(steps.last())
        .map(|s| s.drv_path.clone())
        .ok_or_else(|| ApiError::not_found(format!("build {id} has no log")))
}

pub async fn log(State(state): State<AppState>, Path(id): Path<i64>) -> ApiResult<Response> {
    let drv = build_log_drv(&state, id).await?;
    log_response(&state, &drv, LogMode::Whole)
}

pub async fn log_mode(State(state): State<AppState>, Path((id, mode)): Path<(i64, String)>) -> ApiResult<Response> {
    let mode = LogMode::parse(&mode)?;
    let drv = build_log_drv(&state, id).await?;
    log_response(&state, &drv, mode)
}

async fn find_step(state: &AppState, id: i64, step_nr: i32) -> ApiResult<BuildStep> {
    state
        .db
        .build_step(id, step_nr)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("build {id} has no step {step_nr}")))
}

pub async fn step_log(State(state): State<AppState>, Path((id, step_nr)): Path<(i64, i32)>) -> ApiResult<Response> {
    let step = find_step(&state, id, step_nr).await?;
    log_response(&state, &step.drv_path, LogMode::Whole)
}

pub async fn step_log_mode(
    State(state): State<AppState>,
    Path((id, step_nr, mode)): Path<(i64, i32, String)>,
) -> ApiResult<Response> {
    let mode = LogMode::parse(&mode)?;
    let step = find_step(&state, id, step_nr).await?;
    log_response(&state, &step.drv_path, mode)
}

/// `restart`, `cancel`, `bump`: act, then 302 to the build.
/// The project a build belongs to, for rights.
async fn project_of(state: &AppState, view: &BuildView) -> ApiResult<crate::db::Project> {
    super::find_project(state, &view.project).await
}

pub async fn action(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, action)): Path<(i64, String)>,
) -> ApiResult<Response> {
    let view = find_build(&state, id).await?;
    let needed = match action.as_str() {
        "restart" => Action::RestartBuild,
        "cancel" => Action::CancelBuild,
        "bump" => Action::BumpBuild,
        other => return Err(ApiError::not_found(format!("builds have no action ‘{other}’"))),
    };
    require_on(&state, &caller, needed, &project_of(&state, &view).await?).await?;
    match action.as_str() {
        "restart" => {
            if !view.build.finished {
                return Err(ApiError::bad_request(format!("build {id} is not finished, so it cannot be restarted")));
            }
            state.db.restart_builds(&[id]).await?;
        }
        "cancel" => {
            if view.build.finished {
                return Err(ApiError::bad_request(format!(
                    "build {id} has already finished, so it cannot be cancelled"
                )));
            }
            state.db.cancel_builds(&[id]).await?;
        }
        "bump" => {
            state.db.bump_builds(&[id]).await?;
        }
        other => {
            return Err(ApiError::not_found(format!("builds have no action ‘{other}’")));
        }
    }
    state.queue.wake();
    Ok(redirect(&state, &format!("/build/{id}")))
}

pub async fn keep(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, keep)): Path<(i64, String)>,
) -> ApiResult<Response> {
    let view = find_build(&state, id).await?;
    require_on(&state, &caller, Action::KeepBuild, &project_of(&state, &view).await?).await?;
    let keep = match keep.as_str() {
        "1" => true,
        "0" => false,
        other => {
            return Err(ApiError::bad_request(format!("keep is 0 or 1, not {other:?}")));
        }
    };
    state.db.set_keep(id, keep).await?;
    Ok(redirect(&state, &format!("/build/{id}")))
}

#[derive(Debug, Deserialize)]
pub struct QueueQuery {
    #[serde(default)]
    nr: Option<u64>,
}

/// The queued builds, most urgent first.
pub async fn queue(State(state): State<AppState>, Query(query): Query<QueueQuery>) -> ApiResult<Json<Value>> {
    let ids = state.db.queue_view(query.nr.unwrap_or(100).min(10_000)).await?;
    Ok(Json(hydra::builds(&state.db.build_views(&ids).await?)))
}

/// The number of queued builds, as a plain integer.
pub async fn nr_queue(State(state): State<AppState>) -> ApiResult<Response> {
    let count = state.db.queued_count().await?;
    Ok(([(header::CONTENT_TYPE, "application/json")], count.to_string()).into_response())
}
