//! Release sets over HTTP (computed by the `releases` part; a plugin that
//! fails makes its set answer 502, naming the set and the plugin).
//!
//! - `/project/P/releasesets`: the definitions.
//! - `/project/P/releaseset/S`: its releases, newest first (`?limit=`).
//! - `/project/P/releaseset/S/release/R`: one release with its builds.
//! - `/project/P/releaseset/S/latest[/LABEL]`: a redirect to the newest
//!   release whose builds all succeeded (or to its build labelled LABEL).

use axum::Json;
use axum::extract::State;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};

use super::extract::{Path, Query};
use super::{ApiError, ApiResult, AppState, find_project, json as hydra, redirect};

use crate::db::{Project, ReleaseSetDefinition};
use crate::plugins::api::Release;
use crate::releases::{DEFAULT_RELEASES, MAX_RELEASES, all_succeeded};

/// What a release name cannot hold as one path segment.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}');

/// A release name as one path segment.
pub(super) fn segment(name: &str) -> String {
    percent_encoding::utf8_percent_encode(name, SEGMENT).to_string()
}

/// Set `name` of `project` with its releases (see `releases`).
pub(super) async fn computed(
    state: &AppState,
    project: &Project,
    name: &str,
    limit: u32,
) -> ApiResult<(ReleaseSetDefinition, Vec<Release>)> {
    Ok(state.releases.computed(project, name, limit).await?)
}

fn set_json(state: &AppState, project: &str, name: &str, definition: &ReleaseSetDefinition) -> Value {
    json!({
        "name": name,
        "plugin": definition.plugin,
        "description": definition.description,
        "settings": definition.settings,
        "uri": state.url(&format!("/project/{project}/releaseset/{name}")),
    })
}

/// `/project/P/releasesets`
pub async fn list(State(state): State<AppState>, Path(project): Path<String>) -> ApiResult<Json<Value>> {
    let project = find_project(&state, &project).await?;
    let sets: Vec<Value> =
        project.release_sets().iter().map(|(name, d)| set_json(&state, &project.name, name, d)).collect();
    Ok(Json(Value::Array(sets)))
}

#[derive(Debug, Deserialize)]
pub struct LimitQuery {
    #[serde(default)]
    limit: Option<u32>,
}

/// `/project/P/releaseset/S`
pub async fn get_set(
    State(state): State<AppState>,
    Path((project, name)): Path<(String, String)>,
    Query(query): Query<LimitQuery>,
) -> ApiResult<Json<Value>> {
    let project = find_project(&state, &project).await?;
    let limit = query.limit.unwrap_or(DEFAULT_RELEASES).clamp(1, MAX_RELEASES);
    let (definition, list) = computed(&state, &project, &name, limit).await?;
    let list: Vec<Release> = list.into_iter().take(limit as usize).collect();
    let views = state.releases.member_views(&list).await?;
    let summary = |id: i64, label: &str| match views.get(&id) {
        Some(view) => json!({
            "id": id,
            "label": label,
            "job": view.build.job,
            "jobset": view.jobset,
            "nixname": view.build.nix_name,
            "finished": u8::from(view.build.finished),
            "buildstatus": view.build.build_status,
        }),
        None => json!({ "id": id, "label": label, "missing": true }),
    };
    let releases: Vec<Value> = list
        .iter()
        .map(|release| {
            json!({
                "name": release.name,
                "timestamp": release.timestamp,
                "succeeded": all_succeeded(release, &views),
                "builds": release.members.iter().map(|(id, label)| summary(*id, label)).collect::<Vec<_>>(),
                "uri": state.url(&format!("/project/{}/releaseset/{name}/release/{}", project.name, segment(&release.name))),
            })
        })
        .collect();
    let mut value = set_json(&state, &project.name, &name, &definition);
    value["releases"] = Value::Array(releases);
    Ok(Json(value))
}

/// `/project/P/releaseset/S/release/R`
pub async fn get_release(
    State(state): State<AppState>,
    Path((project, name, release_name)): Path<(String, String, String)>,
) -> ApiResult<Json<Value>> {
    let project = find_project(&state, &project).await?;
    let (_, list) = computed(&state, &project, &name, MAX_RELEASES).await?;
    let release = list.iter().find(|r| r.name == release_name).ok_or_else(|| {
        ApiError::not_found(format!(
            "release set ‘{name}’ of project ‘{}’ has no release ‘{release_name}’",
            project.name
        ))
    })?;
    let views = state.releases.member_views(std::slice::from_ref(release)).await?;
    let builds: Vec<Value> = release
        .members
        .iter()
        .filter_map(|(id, label)| {
            let view = views.get(id)?;
            let mut build = hydra::build(view);
            build["label"] = json!(label);
            Some(build)
        })
        .collect();
    Ok(Json(json!({
        "project": project.name,
        "releaseset": name,
        "name": release.name,
        "timestamp": release.timestamp,
        "succeeded": all_succeeded(release, &views),
        "builds": builds,
    })))
}

/// `/project/P/releaseset/S/latest[/LABEL]`
pub async fn latest(
    State(state): State<AppState>,
    Path((project, name)): Path<(String, String)>,
) -> ApiResult<Response> {
    latest_of(&state, &project, &name, None).await
}

pub async fn latest_member(
    State(state): State<AppState>,
    Path((project, name, label)): Path<(String, String, String)>,
) -> ApiResult<Response> {
    latest_of(&state, &project, &name, Some(&label)).await
}

async fn latest_of(state: &AppState, project: &str, name: &str, label: Option<&str>) -> ApiResult<Response> {
    let project = find_project(state, project).await?;
    let (_, list) = computed(state, &project, name, DEFAULT_RELEASES).await?;
    let views = state.releases.member_views(&list).await?;
    let release = list.iter().find(|r| all_succeeded(r, &views)).ok_or_else(|| {
        ApiError::not_found(format!("release set ‘{name}’ has no release whose builds all succeeded"))
    })?;
    match label {
        None => Ok(redirect(
            state,
            &format!("/project/{}/releaseset/{name}/release/{}", project.name, segment(&release.name)),
        )),
        Some(label) => {
            let (id, _) = release.members.iter().find(|(_, l)| l == label).ok_or_else(|| {
                ApiError::not_found(format!("release ‘{}’ has no build labelled ‘{label}’", release.name))
            })?;
            Ok(redirect(state, &format!("/build/{id}")))
        }
    }
}
