//! Release sets: named views over a project's finished builds, defined in
//! the project's settings (`releasesets`) and computed by release-set
//! plugins under a strict budget. A plugin that fails makes its set answer
//! an error (502, naming the set and the plugin); nothing else is touched.
//!
//! - `/project/P/releasesets`: the definitions.
//! - `/project/P/releaseset/S`: its releases, newest first (`?limit=`).
//! - `/project/P/releaseset/S/release/R`: one release with its builds.
//! - `/project/P/releaseset/S/latest[/LABEL]`: a redirect to the newest
//!   release whose builds all succeeded (or to its build labelled LABEL).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};

use super::extract::{Path, Query};
use super::{ApiError, ApiResult, AppState, find_project, json as hydra, redirect};
use std::collections::HashMap;

use crate::db::{BuildView, Project, ReleaseSetDefinition};
use crate::plugins::api::Release;

/// Releases computed per request at most; `?limit=` asks for fewer. A set
/// is computed for one of these two limits only, so that the cache holds
/// at most two entries per set.
pub(super) const MAX_RELEASES: u32 = 1000;
pub(super) const DEFAULT_RELEASES: u32 = 100;
/// Release-set plugins computing at once: more requests wait, so that
/// page views cannot take the plugin slots evaluations and notifiers need.
const CONCURRENT_COMPUTATIONS: usize = 2;

/// A release set's releases, or why its plugin could not compute them.
type Computed = Arc<Result<Vec<Release>, String>>;
/// Project id, set name with its definition, and how many releases.
type CacheKey = (i64, String, u32);

/// Computed release sets by (project, name and definition, limit), each
/// with the newest event id when it was computed: kept until the next
/// event (anything that can change a release writes one).
pub struct ReleaseCache {
    cache: quick_cache::sync::Cache<CacheKey, (i64, Computed)>,
    computing: tokio::sync::Semaphore,
}

impl Default for ReleaseCache {
    fn default() -> Self {
        ReleaseCache {
            cache: quick_cache::sync::Cache::new(1000),
            computing: tokio::sync::Semaphore::new(CONCURRENT_COMPUTATIONS),
        }
    }
}

/// The limit a set is computed for, to serve a request for `wanted` releases.
fn computed_limit(wanted: u32) -> u32 {
    if wanted <= DEFAULT_RELEASES { DEFAULT_RELEASES } else { MAX_RELEASES }
}

/// Checks release-set definitions from a project's settings; the error
/// names the set and what is wrong with it.
fn find_set(project: &Project, name: &str) -> ApiResult<ReleaseSetDefinition> {
    project
        .release_sets()
        .remove(name)
        .ok_or_else(|| ApiError::not_found(format!("project ‘{}’ has no release set ‘{name}’", project.name)))
}

/// The set's releases, computed by its plugin or from the cache.
async fn releases(
    state: &AppState,
    project: &Project,
    name: &str,
    definition: &ReleaseSetDefinition,
    limit: u32,
) -> ApiResult<Computed> {
    let limit = computed_limit(limit);
    let key = (project.id, format!("{name}\0{}", serde_json::to_string(definition).unwrap_or_default()), limit);
    let cached = |latest_event: i64| {
        state.releases.cache.get(&key).filter(|(event, _)| *event == latest_event).map(|(_, computed)| computed)
    };
    let latest_event = state.db.latest_event_id().await?;
    if let Some(computed) = cached(latest_event) {
        return Ok(computed);
    }
    let _turn = state.releases.computing.acquire().await.expect("the semaphore is never closed");
    // Computed meanwhile by the request this one waited for?
    if let Some(computed) = cached(latest_event) {
        return Ok(computed);
    }
    let computed = state
        .plugins
        .releases(&definition.plugin, project.id, &definition.settings, limit)
        .await
        .map_err(|e| e.to_string());
    if let Err(error) = &computed {
        tracing::warn!(project = %project.name, release_set = %name, "release set failed: {error}");
    }
    let computed = Arc::new(computed);
    state.releases.cache.insert(key, (latest_event, computed.clone()));
    Ok(computed)
}

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

fn failed(name: &str, definition: &ReleaseSetDefinition, error: &str) -> ApiError {
    ApiError::new(
        StatusCode::BAD_GATEWAY,
        format!("release set ‘{name}’ (plugin ‘{}’) could not be computed: {error}", definition.plugin),
    )
}

pub(super) async fn computed(
    state: &AppState,
    project: &Project,
    name: &str,
    limit: u32,
) -> ApiResult<(ReleaseSetDefinition, Vec<Release>)> {
    let definition = find_set(project, name)?;
    let result = releases(state, project, name, &definition, limit).await?;
    match result.as_ref() {
        Ok(list) => Ok((definition, list.clone())),
        Err(error) => Err(failed(name, &definition, error)),
    }
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
    let views = member_views(&state, &list).await?;
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

/// The builds of the releases, by id.
async fn member_views(state: &AppState, releases: &[Release]) -> ApiResult<HashMap<i64, BuildView>> {
    let mut ids: Vec<i64> = releases.iter().flat_map(|r| r.members.iter().map(|(id, _)| *id)).collect();
    ids.sort_unstable();
    ids.dedup();
    Ok(state.db.build_views(&ids).await?.into_iter().map(|v| (v.build.id, v)).collect())
}

fn all_succeeded(release: &Release, views: &HashMap<i64, BuildView>) -> bool {
    !release.members.is_empty()
        && release
            .members
            .iter()
            .all(|(id, _)| views.get(id).is_some_and(|v| v.build.finished && v.build.build_status == Some(0)))
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
    let views = member_views(&state, std::slice::from_ref(release)).await?;
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
    let views = member_views(state, &list).await?;
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
