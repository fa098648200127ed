//! Projects and jobsets: read, create or update (PUT), delete; and
//! `/api/push`, which asks for evaluations.

use std::collections::BTreeMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;

use super::extract::{Path, Query};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::{require, require_on};
use super::body::{self, flexible_bool, flexible_int, flexible_string};
use super::{ApiError, ApiResult, AppState, find_jobset, find_project, json as hydra};
use crate::db::{Declarative, InputSetting, JobsetSettings, ProjectSettings};
use crate::users::{Action, Caller};

/// Project, jobset and input names: a letter, then letters, digits, `_` or `-`
/// (Hydra's rule, so that names are safe in URLs and Nix).
pub(super) fn check_name(what: &str, name: &str) -> ApiResult<()> {
    let mut chars = name.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if valid {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "invalid {what} name {name:?}: it must start with a letter and contain only letters, digits, ‘_’ and ‘-’"
        )))
    }
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
            return Err(ApiError::bad_request("field ‘displayname’: must not be empty"));
        }
        settings.display_name = display_name;
    }
    settings.description = request.description.unwrap_or(settings.description);
    settings.homepage = request.homepage.unwrap_or(settings.homepage);
    if let Some(owner) = request.owner.filter(|o| *o != settings.owner) {
        // Hydra's rule: only admins give projects away.
        if !caller.is_admin() {
            return Err(ApiError::forbidden("only an admin may change a project's owner"));
        }
        if state.db.user(&owner).await?.is_none() {
            return Err(ApiError::bad_request(format!("field ‘owner’: there is no user ‘{owner}’")));
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
        settings.declarative = (!declarative.file.is_empty()).then_some(Declarative {
            file: declarative.file,
            kind: declarative.kind,
            value: declarative.value,
        });
    }
    if let Some(release_sets) = request.releasesets {
        super::releases::check_definitions(&release_sets, &state.plugins)
            .map_err(|e| ApiError::bad_request(format!("field ‘releasesets’: {e}")))?;
        settings.release_sets = release_sets;
    }
    let (project, created) = state.db.save_project(&name, &settings).await?;
    if let Some(members) = request.members {
        state.db.set_project_members(project.id, &members).await.map_err(|e| match e {
            crate::db::DbError::Conflict(message) => ApiError::bad_request(format!("field ‘members’: {message}")),
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

#[derive(Debug, Deserialize)]
struct JobsetRequest {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    nixexprinput: Option<String>,
    #[serde(default)]
    nixexprpath: Option<String>,
    #[serde(default, deserialize_with = "flexible_int")]
    enabled: Option<i64>,
    #[serde(default, deserialize_with = "flexible_bool")]
    enableemail: Option<bool>,
    #[serde(default, deserialize_with = "flexible_bool")]
    visible: Option<bool>,
    #[serde(default, deserialize_with = "flexible_bool")]
    hidden: Option<bool>,
    #[serde(default)]
    emailoverride: Option<String>,
    #[serde(default, deserialize_with = "flexible_int")]
    keepnr: Option<i64>,
    #[serde(default, deserialize_with = "flexible_int")]
    checkinterval: Option<i64>,
    #[serde(default, deserialize_with = "flexible_int")]
    schedulingshares: Option<i64>,
    #[serde(default, rename = "type", deserialize_with = "flexible_int")]
    kind: Option<i64>,
    #[serde(default)]
    flake: Option<String>,
    #[serde(default, deserialize_with = "flexible_bool")]
    enable_dynamic_run_command: Option<bool>,
    #[serde(default)]
    inputs: Option<BTreeMap<String, InputRequest>>,
}

#[derive(Debug, Deserialize)]
struct InputRequest {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default, deserialize_with = "flexible_string")]
    value: Option<String>,
    #[serde(default, deserialize_with = "flexible_bool")]
    emailresponsible: Option<bool>,
}

fn int_field(field: &str, value: i64, min: i64, max: i64) -> ApiResult<i32> {
    if (min..=max).contains(&value) {
        Ok(value as i32)
    } else {
        Err(ApiError::bad_request(format!("field ‘{field}’: {value} is not between {min} and {max}")))
    }
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
    let request: JobsetRequest = body::parse(&headers, &body)?;
    if project.declarative().is_some() {
        return Err(ApiError::forbidden(format!(
            "project ‘{project_name}’ is declarative: its jobsets are defined by its spec file, not edited by hand"
        )));
    }
    let existing = state.db.jobset(&project_name, &name).await?.map(|(_, j)| j);
    let mut settings = match &existing {
        Some(jobset) => jobset.settings(&state.db.jobset_inputs(jobset.id).await?),
        None => {
            check_name("jobset", &name)?;
            JobsetSettings::new(&name)
        }
    };
    if let Some(new_name) = request.name.filter(|n| !n.is_empty()) {
        check_name("jobset", &new_name)?;
        settings.name = new_name;
    }
    settings.description = request.description.unwrap_or(settings.description);
    settings.nixexpr_input = request.nixexprinput.unwrap_or(settings.nixexpr_input);
    settings.nixexpr_path = request.nixexprpath.unwrap_or(settings.nixexpr_path);
    if let Some(value) = request.enabled {
        settings.enabled = int_field("enabled", value, 0, 3)?;
    }
    settings.enable_email = request.enableemail.unwrap_or(settings.enable_email);
    if let Some(visible) = request.visible {
        settings.hidden = !visible;
    }
    settings.hidden = request.hidden.unwrap_or(settings.hidden);
    settings.email_override = request.emailoverride.unwrap_or(settings.email_override);
    if let Some(value) = request.keepnr {
        settings.keep_nr = int_field("keepnr", value, 0, i64::from(i32::MAX))?;
    }
    if let Some(value) = request.checkinterval {
        settings.check_interval = int_field("checkinterval", value, 0, i64::from(i32::MAX))?;
    }
    if let Some(value) = request.schedulingshares {
        settings.scheduling_shares = int_field("schedulingshares", value, 1, i64::from(i32::MAX))?;
    }
    if let Some(value) = request.kind {
        settings.kind = int_field("type", value, 0, 1)?;
    }
    if let Some(flake) = request.flake {
        settings.flake = (!flake.is_empty()).then_some(flake);
    }
    settings.enable_dynamic_run_command =
        request.enable_dynamic_run_command.unwrap_or(settings.enable_dynamic_run_command);
    if let Some(inputs) = request.inputs {
        let mut list = Vec::with_capacity(inputs.len());
        for (input_name, input) in inputs {
            check_name("input", &input_name)?;
            let value = input.value.unwrap_or_default();
            // Hydra trims values, except of strings where spaces may matter.
            let value = if input.kind == "string" { value } else { value.trim().to_owned() };
            state
                .inputs
                .check(&input.kind, &value)
                .await
                .map_err(|message| ApiError::bad_request(format!("input ‘{input_name}’: {message}")))?;
            list.push(InputSetting {
                name: input_name,
                kind: input.kind,
                value,
                email_responsible: input.emailresponsible.unwrap_or(false),
            });
        }
        settings.inputs = list;
    }

    if settings.kind == 1 {
        return Err(ApiError::bad_request("field ‘type’: flake jobsets (type 1) are not supported by this server yet"));
    }
    if settings.nixexpr_input.is_empty() {
        return Err(ApiError::bad_request(
            "field ‘nixexprinput’: a legacy jobset needs the name of the input holding its expression",
        ));
    }
    if settings.nixexpr_path.is_empty()
        || settings.nixexpr_path.starts_with('/')
        || settings.nixexpr_path.split('/').any(|c| c == "..")
    {
        return Err(ApiError::bad_request(format!(
            "field ‘nixexprpath’: {:?} must be a relative path inside the input (like release.nix)",
            settings.nixexpr_path
        )));
    }
    if !settings.inputs.iter().any(|i| i.name == settings.nixexpr_input) {
        return Err(ApiError::bad_request(format!(
            "field ‘nixexprinput’: ‘{}’ is not one of the jobset's inputs",
            settings.nixexpr_input
        )));
    }

    let (jobset, created) = state.db.save_jobset(&project, &name, &settings).await?;
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
