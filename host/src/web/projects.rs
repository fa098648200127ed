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

use super::auth::{require, require_on};
use super::body;
use super::{ApiError, ApiResult, AppState, find_jobset, find_project, json as hydra};
use crate::db::{Declarative, Expect, JobsetSettings, ProjectSettings};
use crate::projects::JobsetSpec;
use crate::projects::spec::flexible_bool;
use crate::users::{Action, Caller};

/// Project, jobset and input names must follow Hydra's rule.
pub(super) fn check_name(what: &str, name: &str) -> ApiResult<()> {
    crate::projects::check_name(what, name).map_err(ApiError::bad_request)
}

/// `201 Created` with Hydra's body, or `200` with a redirect hint.
fn saved(state: &AppState, kind: &str, name: &str, path: &str, created: bool) -> Response {
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

/// Creates a project, or updates it: fields left out keep their value
/// (a new project is enabled and visible unless told otherwise).
pub async fn put_project(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let existing = state.db.project(&name).await?;
    match &existing {
        Some(project) => require_on(&state, &caller, Action::EditProject, project).await?,
        None => require(&caller, Action::CreateProject)?,
    }
    let request: ProjectRequest = body::parse(&headers, &body)?;
    let mut settings = match &existing {
        Some(project) => project.settings(),
        None => {
            check_name("project", &name)?;
            // Its creator owns a new project.
            ProjectSettings {
                owner: caller.user.as_ref().map(|u| u.username.clone()).unwrap_or_default(),
                ..ProjectSettings::new(&name)
            }
        }
    };
    if let Some(new_name) = request.name.filter(|n| !n.is_empty()) {
        check_name("project", &new_name)?;
        settings.name = new_name;
    }
    if let Some(display_name) = request.displayname {
        if display_name.trim().is_empty() {
            return Err(ApiError::invalid_field("displayname", "must not be empty"));
        }
        settings.display_name = display_name;
    }
    settings.description = request.description.unwrap_or(settings.description);
    settings.homepage = request.homepage.unwrap_or(settings.homepage);
    if let Some(owner) = request.owner.filter(|o| *o != settings.owner) {
        // Hydra's rule: only admins give projects away.
        // (An admin's token needs `admin` for it, as for managing users.)
        if require(&caller, Action::ManageUsers).is_err() {
            return Err(ApiError::forbidden("only an admin (with the `admin` scope) may change a project's owner"));
        }
        if state.db.user(&owner).await?.is_none() {
            return Err(ApiError::invalid_field("owner", format!("there is no user ‘{owner}’")));
        }
        settings.owner = owner;
    }
    settings.enabled = request.enabled.unwrap_or(settings.enabled);
    if let Some(visible) = request.visible {
        settings.hidden = !visible;
    }
    settings.hidden = request.hidden.unwrap_or(settings.hidden);
    settings.enable_dynamic_run_command =
        request.enable_dynamic_run_command.unwrap_or(settings.enable_dynamic_run_command);
    if let Some(declarative) = request.declarative {
        let declarative = (!declarative.file.is_empty()).then_some(Declarative {
            file: declarative.file,
            kind: declarative.kind,
            value: declarative.value,
        });
        if let Some(declarative) = &declarative {
            crate::projects::check_declarative(declarative, &state.inputs).await?;
        }
        settings.declarative = declarative;
    }
    if let Some(release_sets) = request.releasesets {
        super::releases::check_definitions(&release_sets, &state.plugins)
            .map_err(|e| ApiError::invalid_field("releasesets", e))?;
        settings.release_sets = release_sets;
    }
    let was_declarative = existing.as_ref().and_then(|p| p.declarative());
    let expect = Expect::from_read(existing.as_ref().map(|p| (p.id, p.settings())));
    let (project, created) = state.db.save_project(&name, &settings, expect).await?;
    if project.declarative() != was_declarative {
        state.db.configure_spec_jobset(&project).await?;
        state.evaluator.wake();
    }
    if let Some(members) = request.members {
        state.db.set_project_members(project.id, &members).await.map_err(|e| match e {
            crate::db::DbError::Conflict(message) => ApiError::invalid_field("members", message),
            other => other.into(),
        })?;
    }
    Ok(saved(&state, "project", &project.name, &format!("/project/{}", project.name), created))
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
    let project = find_project(&state, &project_name).await?;
    require_on(&state, &caller, Action::EditJobset, &project).await?;
    if project.declarative().is_some() {
        return Err(ApiError::forbidden(format!(
            "project ‘{project_name}’ is declarative: its jobsets are defined by its spec file, not edited by hand"
        )));
    }
    let request: JobsetSpec = body::parse(&headers, &body)?;
    let existing = state.db.jobset(&project_name, &name).await?.map(|(_, j)| j);
    let previous = match &existing {
        Some(jobset) => Some(jobset.settings(&state.db.jobset_inputs(jobset.id).await?)),
        None => {
            check_name("jobset", &name)?;
            None
        }
    };
    let base = previous.clone().unwrap_or_else(|| JobsetSettings::new(&name));
    let settings = request.apply_to(base)?;
    crate::projects::check_values(&settings, previous.as_ref(), &state.inputs).await?;

    let expect = Expect::from_read(existing.as_ref().map(|j| (j.id, ())));
    let (jobset, created) = state.db.save_jobset(&project, &name, &settings, expect).await?;
    state.evaluator.wake();
    Ok(saved(&state, "jobset", &jobset.name, &format!("/jobset/{}/{}", project.name, jobset.name), created))
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
        return Err(ApiError::new(StatusCode::UNAUTHORIZED, "log in or send an API token to trigger evaluations"));
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
