//! Projects and jobsets: read, create or update (PUT), delete; and
//! `/api/push`, which asks for evaluations.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;

use super::extract::{Path, Query};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::require_on;
use super::body;
use super::{ApiError, ApiResult, AppState, find_jobset, find_project, json as hydra};
use crate::db::Declarative;
use crate::projects::JobsetSpec;
use crate::projects::save::ProjectChanges;
use crate::projects::spec::flexible_bool;
use crate::users::{Action, Caller};

/// `201 Created` with Hydra's body, or `200` with a redirect hint.
fn saved_answer(state: &AppState, kind: &str, name: &str, path: &str, created: bool) -> Response {
    let uri = state.url(path);
    if created {
        let mut response =
            (StatusCode::CREATED, Json(json!({ "name": name, "uri": uri, "redirect": uri, "type": kind })))
                .into_response();
        if let Ok(location) = uri.parse() {
            response.headers_mut().insert(header::LOCATION, location);
        }
        response
    } else {
        (StatusCode::OK, Json(json!({ "redirect": uri }))).into_response()
    }
}

pub async fn list(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    let projects = state.db.projects().await?;
    let mut jobsets = state.db.jobsets_by_project().await?;
    Ok(Json(Value::Array(
        projects.iter().map(|p| hydra::project(p, &jobsets.remove(&p.id).unwrap_or_default())).collect(),
    )))
}

pub async fn get_project(State(state): State<AppState>, Path(name): Path<String>) -> ApiResult<Json<Value>> {
    let project = find_project(&state, &name).await?;
    let jobsets = state.db.jobsets_of(project.id).await?;
    let mut value = hydra::project(&project, &jobsets);
    value["members"] = json!(state.db.project_members(project.id).await?);
    Ok(Json(value))
}

#[derive(Debug, Deserialize)]
struct ProjectRequest {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    displayname: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    homepage: Option<String>,
    #[serde(default)]
    owner: Option<String>,
    #[serde(default, deserialize_with = "flexible_bool")]
    enabled: Option<bool>,
    #[serde(default, deserialize_with = "flexible_bool")]
    visible: Option<bool>,
    #[serde(default, deserialize_with = "flexible_bool")]
    hidden: Option<bool>,
    #[serde(default, deserialize_with = "flexible_bool")]
    enable_dynamic_run_command: Option<bool>,
    #[serde(default)]
    declarative: Option<DeclarativeRequest>,
    /// Users with the owner's rights on the project (an Orthrus addition).
    #[serde(default)]
    members: Option<Vec<String>>,
    /// Release sets by name (an Orthrus addition).
    #[serde(default)]
    releasesets: Option<crate::db::ReleaseSets>,
}

#[derive(Debug, Deserialize)]
struct DeclarativeRequest {
    #[serde(default)]
    file: String,
    #[serde(default, rename = "type")]
    kind: String,
    #[serde(default)]
    value: String,
}

impl ProjectRequest {
    /// The changes it asks for, in `projects`' terms.
    fn changes(self) -> ProjectChanges {
        ProjectChanges {
            name: self.name,
            display_name: self.displayname,
            description: self.description,
            homepage: self.homepage,
            owner: self.owner,
            enabled: self.enabled,
            // `hidden` wins over Hydra's `visible` when both are sent.
            hidden: self.hidden.or(self.visible.map(|visible| !visible)),
            enable_dynamic_run_command: self.enable_dynamic_run_command,
            declarative: self
                .declarative
                .map(|d| (!d.file.is_empty()).then_some(Declarative { file: d.file, kind: d.kind, value: d.value })),
            members: self.members,
            release_sets: self.releasesets,
        }
    }
}

/// Creates a project, or updates it: fields left out keep their value
/// (a new project is enabled and visible unless told otherwise).
pub async fn put_project(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    // Who may is said before what is sent is even read.
    state.editor().project_to_save(&caller, &name).await?;
    let request: ProjectRequest = body::parse(&headers, &body)?;
    let saved = state.editor().save_project(&caller, &name, request.changes()).await?;
    if saved.wake_evaluator {
        state.evaluator.wake();
    }
    let project = saved.value;
    Ok(saved_answer(&state, "project", &project.name, &format!("/project/{}", project.name), saved.created))
}

pub async fn delete_project(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    let project = find_project(&state, &name).await?;
    require_on(&state, &caller, Action::EditProject, &project).await?;
    state.db.delete_project(&name).await?;
    state.queue.wake();
    Ok(Json(json!({ "redirect": state.url("/") })))
}

pub async fn get_jobset(
    State(state): State<AppState>,
    Path((project, jobset)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let (project, jobset) = find_jobset(&state, &project, &jobset).await?;
    let inputs = state.db.jobset_inputs(jobset.id).await?;
    Ok(Json(hydra::jobset(&project, &jobset, &inputs)))
}

/// Creates a jobset or updates it; given `inputs` replace the old ones.
pub async fn put_jobset(
    State(state): State<AppState>,
    caller: Caller,
    Path((project_name, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    state.editor().jobsets_to_save(&caller, &project_name).await?;
    let request: JobsetSpec = body::parse(&headers, &body)?;
    let saved = state.editor().save_jobset(&caller, &project_name, &name, request).await?;
    state.evaluator.wake();
    let (project, jobset) = saved.value;
    Ok(saved_answer(
        &state,
        "jobset",
        &jobset.name,
        &format!("/jobset/{}/{}", project.name, jobset.name),
        saved.created,
    ))
}

pub async fn delete_jobset(
    State(state): State<AppState>,
    caller: Caller,
    Path((project, name)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let (project, jobset) = find_jobset(&state, &project, &name).await?;
    require_on(&state, &caller, Action::EditJobset, &project).await?;
    if project.declarative().is_some() {
        return Err(ApiError::forbidden(format!(
            "project ‘{}’ is declarative: change its spec file instead",
            project.name
        )));
    }
    state.db.delete_jobset(jobset.id).await?;
    state.queue.wake();
    Ok(Json(json!({ "redirect": state.url(&format!("/project/{}", project.name)) })))
}

/// `POST /jobset/P/J/evaluate`: the "Evaluate now" button of the jobset's
/// page; evaluates even unchanged inputs, then 302 back to the page.
pub async fn evaluate(
    State(state): State<AppState>,
    caller: Caller,
    Path((project, jobset)): Path<(String, String)>,
) -> ApiResult<Response> {
    let (project, jobset) = find_jobset(&state, &project, &jobset).await?;
    require_on(&state, &caller, Action::TriggerEval, &project).await?;
    let triggered = state.db.trigger_jobsets(&[(project.name.clone(), jobset.name.clone())], true).await?;
    if triggered.is_empty() {
        return Err(ApiError::bad_request(format!(
            "jobset ‘{}:{}’ is disabled (or its project is): switch it on to evaluate it",
            project.name, jobset.name
        )));
    }
    state.evaluator.wake();
    Ok(super::redirect(&state, &format!("/jobset/{}/{}", project.name, jobset.name)))
}

#[derive(Debug, Deserialize)]
pub struct PushQuery {
    #[serde(default)]
    jobsets: Option<String>,
    #[serde(default)]
    repos: Option<String>,
    #[serde(default)]
    force: Option<String>,
}

/// `POST /api/push?jobsets=P:J,…&repos=URL,…&force=1`: evaluate these
/// jobsets (and those with an input of these repositories) soon.
pub async fn push(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<PushQuery>,
) -> ApiResult<Json<Value>> {
    // Hydra counts `force` as set whenever it is present.
    let force = query.force.is_some_and(|f| !matches!(f.as_str(), "0" | "false"));
    if caller.user.is_none() {
        return Err(ApiError::login_wanted("log in or send an API token to trigger evaluations"));
    }
    let mut names = Vec::new();
    for entry in query.jobsets.iter().flat_map(|j| j.split(',')).map(str::trim).filter(|e| !e.is_empty()) {
        let (project, jobset) = entry
            .split_once(':')
            .ok_or_else(|| ApiError::bad_request(format!("jobsets: {entry:?} is not of the form project:jobset")))?;
        // A jobset named outright must be the caller's to trigger.
        if let Some(project) = state.db.project(project).await? {
            require_on(&state, &caller, Action::TriggerEval, &project).await?;
        }
        names.push((project.to_owned(), jobset.to_owned()));
    }
    for repo in query.repos.iter().flat_map(|r| r.split(',')).map(str::trim).filter(|r| !r.is_empty()) {
        for (project_name, jobset) in state.db.jobsets_with_input_value(repo).await? {
            if let Some(project) = state.db.project(&project_name).await? {
                if require_on(&state, &caller, Action::TriggerEval, &project).await.is_ok() {
                    names.push((project_name, jobset));
                }
            }
        }
    }
    let triggered = state.db.trigger_jobsets(&names, force).await?;
    if !triggered.is_empty() {
        state.evaluator.wake();
    }
    Ok(Json(json!({ "jobsetsTriggered": triggered })))
}
