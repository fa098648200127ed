//! Views across the server: the queue, what runs now, the machines,
//! recent evaluations and steps, search, and the `/api/*` summaries.

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::extract::Query;
use super::{ApiError, ApiResult, AppState, find_project, json as hydra};
use crate::db::{BuildFilter, BuildView, StepView};
use crate::machines::MachineView;

/// Hydra's short build record (`/api/latestbuilds`, `/api/queue`).
fn short_build(view: &BuildView) -> Value {
    let b = &view.build;
    let mut value = json!({
        "id": b.id,
        "project": view.project,
        "jobset": view.jobset,
        "job": b.job,
        "system": b.system,
        "nixname": b.nix_name,
        "finished": i64::from(b.finished),
        "timestamp": b.timestamp,
    });
    if b.finished {
        value["buildstatus"] = json!(b.build_status);
    } else {
        value["priority"] = json!(b.priority);
        value["globalpriority"] = json!(b.global_priority);
    }
    value
}

fn step_json(view: &StepView) -> Value {
    let mut value = hydra::step(&view.step);
    value["build"] = json!(view.step.build_id);
    value["project"] = json!(view.project);
    value["jobset"] = json!(view.jobset);
    value["job"] = json!(view.job);
    value
}

#[derive(Debug, Deserialize)]
pub struct LatestBuildsQuery {
    nr: Option<u64>,
    project: Option<String>,
    jobset: Option<String>,
    job: Option<String>,
    system: Option<String>,
}

/// `/api/latestbuilds?nr=N[&project=&jobset=&job=&system=]`
pub async fn latest_builds(
    State(state): State<AppState>,
    Query(query): Query<LatestBuildsQuery>,
) -> ApiResult<Json<Value>> {
    let nr = query.nr.ok_or_else(|| ApiError::bad_request("parameter ‘nr’ is missing"))?.min(1000);
    let filter = BuildFilter { project: query.project, jobset: query.jobset, job: query.job, system: query.system };
    let ids = state.db.latest_builds(&filter, nr).await?;
    Ok(Json(Value::Array(state.db.build_views(&ids).await?.iter().map(short_build).collect())))
}

#[derive(Debug, Deserialize)]
pub struct QueueQuery {
    nr: Option<u64>,
}

/// `/api/queue?nr=N`: the queued builds, most urgent first.
pub async fn api_queue(State(state): State<AppState>, Query(query): Query<QueueQuery>) -> ApiResult<Json<Value>> {
    let ids = state.db.queue_view(query.nr.unwrap_or(100).min(10_000)).await?;
    Ok(Json(Value::Array(state.db.build_views(&ids).await?.iter().map(short_build).collect())))
}

/// `/api/nrqueue`: how many builds are queued, as a plain integer.
pub async fn nr_queue(State(state): State<AppState>) -> ApiResult<Response> {
    let count = state.db.queued_count().await?;
    Ok(([(header::CONTENT_TYPE, "application/json")], count.to_string()).into_response())
}

#[derive(Debug, Deserialize)]
pub struct JobsetsQuery {
    project: Option<String>,
}

/// `/api/jobsets?project=P`: each jobset with the counts of its current builds.
pub async fn api_jobsets(State(state): State<AppState>, Query(query): Query<JobsetsQuery>) -> ApiResult<Json<Value>> {
    let name = query.project.ok_or_else(|| ApiError::bad_request("parameter ‘project’ is missing"))?;
    let project = find_project(&state, &name).await?;
    let jobsets = state.db.jobsets_of(project.id).await?;
    let mut counts = state.db.jobset_counts(project.id).await?;
    Ok(Json(Value::Array(
        jobsets
            .iter()
            .map(|j| {
                let c = counts.remove(&j.id).unwrap_or_default();
                json!({
                    "project": project.name,
                    "name": j.name,
                    "nrscheduled": c.scheduled,
                    "nrsucceeded": c.succeeded,
                    "nrfailed": c.failed,
                    "nrtotal": c.total,
                    // Clients poll these to wait for the next check.
                    "lastcheckedtime": j.last_checked_time,
                    "starttime": j.start_time,
                    "checkinterval": j.check_interval,
                    "triggertime": j.trigger_time,
                    "errortime": j.error_time,
                    "haserrormsg": j.error_msg.as_deref().is_some_and(|m| !m.is_empty()),
                    "fetcherrormsg": j.fetch_error_msg.clone().unwrap_or_default(),
                    "enabled": j.enabled,
                    "hidden": j.hidden,
                })
            })
            .collect(),
    )))
}

/// `/queue`: the queued builds as full build records.
pub async fn queue(State(state): State<AppState>, Query(query): Query<QueueQuery>) -> ApiResult<Json<Value>> {
    let ids = state.db.queue_view(query.nr.unwrap_or(500).min(10_000)).await?;
    Ok(Json(hydra::builds(&state.db.build_views(&ids).await?)))
}

/// `/status`: the steps running now (Hydra's array of steps), each with
/// the state of the machine it runs on.
pub async fn status(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    // Hydra's shape has no room for it: the refusal says it.
    if let Some(problem) = &state.nix_problem {
        return Err(ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            format!("nothing is evaluated or built here: {problem}"),
        ));
    }
    let steps = state.db.running_steps().await?;
    let views = state.machines.views();
    Ok(Json(Value::Array(
        steps
            .iter()
            .map(|step| {
                let mut value = step_json(step);
                if let Some(view) = views.iter().find(|v| v.spec.name == step.step.machine) {
                    value["machinestatus"] = machine_state(view);
                }
                value
            })
            .collect(),
    )))
}

/// What changes about a machine as it works.
fn machine_state(view: &MachineView) -> Value {
    json!({
        "enabled": view.enabled,
        "currentjobs": view.running.len(),
        "maxconcurrent": view.spec.max_jobs,
        "load": view.running.len() as f64 / view.spec.speed_factor,
        "consecutivefailures": view.consecutive_failures,
        "disabledforsecs": view.disabled_for_secs,
        "lastfailure": view.last_failure.as_ref().map(|(time, message)| json!({"time": time, "message": message})),
    })
}

/// `/machines`: each machine (by its URI), what it builds, what runs on
/// it, how it fares.
pub async fn machines(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    let running = state.db.running_steps().await?;
    let mut machines = serde_json::Map::new();
    for view in state.machines.views() {
        let spec = &view.spec;
        let steps: Vec<Value> = running.iter().filter(|s| s.step.machine == spec.name).map(step_json).collect();
        let mut value = machine_state(&view);
        let fields = json!({
            "type": if spec.is_local() { "local" } else { "ssh" },
            "systems": spec.systems,
            "supportedfeatures": spec.supported_features,
            "mandatoryfeatures": spec.mandatory_features,
            "speedfactor": spec.speed_factor,
            "steps": steps,
            "stepsdone": view.steps_done,
            "buildseconds": view.build_seconds,
            "protocol": view.protocol,
            "origin": spec.origin,
        });
        if let (Value::Object(value), Value::Object(fields)) = (&mut value, fields) {
            value.extend(fields);
        }
        machines.insert(spec.name.clone(), value);
    }
    Ok(Json(Value::Object(machines)))
}

#[derive(Debug, Deserialize)]
pub struct EventsQuery {
    after: Option<i64>,
    limit: Option<u64>,
    build: Option<i64>,
}

/// `/api/events?after=ID[&limit=N][&build=B]`: the event outbox, oldest
/// first — what notifiers are told, in the order it happened.
pub async fn events(State(state): State<AppState>, Query(query): Query<EventsQuery>) -> ApiResult<Json<Value>> {
    let limit = query.limit.unwrap_or(100).clamp(1, 10_000);
    let events = state.db.events_after(query.after.unwrap_or(0), limit, query.build).await?;
    Ok(Json(Value::Array(
        events
            .into_iter()
            .map(|e| {
                json!({
                    "id": e.id,
                    "kind": e.kind,
                    "time": e.time,
                    "jobsetid": e.jobset_id,
                    "eval": e.eval_id,
                    "build": e.build_id,
                    "stepnr": e.step_nr,
                    "data": e.data,
                })
            })
            .collect(),
    )))
}

/// `/api/notifiers`: each notifier's delivery state — how far it has read
/// the outbox, what it delivered, and what waits for a retry with the last
/// error. Admins only: errors can quote receivers' addresses.
pub async fn notifiers(State(state): State<AppState>, caller: crate::users::Caller) -> ApiResult<Json<Value>> {
    super::auth::require(&caller, crate::users::Action::ManageUsers)?;
    Ok(Json(json!(crate::notify::status(&state.config, &state.db).await?)))
}

const EVALS_PER_PAGE: u64 = 20;

/// `/evals`: every project's evaluations, newest first, by page.
pub async fn evals(State(state): State<AppState>, Query(query): Query<super::evals::PageQuery>) -> ApiResult<Response> {
    let page = query.page.unwrap_or(1).clamp(1, 1 << 40);
    let (evals, total) = state.db.all_evals((page - 1) * EVALS_PER_PAGE, EVALS_PER_PAGE, false).await?;
    let ids: Vec<i64> = evals.iter().map(|(e, _, _)| e.id).collect();
    let inputs = state.db.eval_inputs(&ids).await?;
    let objects = evals
        .iter()
        .map(|(eval, project, jobset)| {
            let mut object = hydra::eval(eval, inputs.get(&eval.id).map(Vec::as_slice).unwrap_or_default(), None);
            object.fields.insert("project".into(), json!(project));
            object.fields.insert("jobset".into(), json!(jobset));
            object
        })
        .collect();
    let head = super::evals::page_links(page, total, EVALS_PER_PAGE);
    Ok(super::eval_stream::respond(
        state.db.clone(),
        super::eval_stream::Shape::Page { head, list_key: "evals", evals: objects },
    ))
}

/// `/steps`: the most recently finished build steps.
pub async fn steps(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    let steps = state.db.recent_steps(100).await?;
    Ok(Json(Value::Array(steps.iter().map(step_json).collect())))
}

#[derive(Debug, Deserialize)]
pub struct SearchQuery {
    query: Option<String>,
}

/// `/search?query=Q`: `{projects, jobsets, builds, buildsdrv}`.
pub async fn search(State(state): State<AppState>, Query(query): Query<SearchQuery>) -> ApiResult<Json<Value>> {
    let query = crate::domain::SearchQuery::parse(query.query.as_deref().unwrap_or_default())
        .map_err(|invalid| ApiError::bad_request(invalid.to_string()))?;
    let found = state.db.search(&query, 50).await?;
    // A handful of queries, whatever was found: no query per jobset.
    let ids: Vec<i64> = found.jobsets.iter().map(|(_, jobset)| jobset.id).collect();
    let mut inputs = state.db.jobsets_inputs(&ids).await?;
    let jobset_inputs: Vec<Value> = found
        .jobsets
        .iter()
        .map(|(project, jobset)| hydra::jobset(project, jobset, &inputs.remove(&jobset.id).unwrap_or_default()))
        .collect();
    let mut jobsets_by_project =
        if found.projects.is_empty() { Default::default() } else { state.db.jobsets_by_project().await? };
    // Both lists' builds read together (a build may be in both).
    let mut wanted = found.builds.clone();
    wanted.extend(found.builds_by_drv.iter().filter(|id| !found.builds.contains(id)));
    let views: std::collections::HashMap<i64, _> =
        state.db.build_views(&wanted).await?.into_iter().map(|view| (view.build.id, view)).collect();
    let listed = |ids: &[i64]| ids.iter().filter_map(|id| views.get(id).cloned()).collect::<Vec<_>>();
    Ok(Json(json!({
        "projects": found
            .projects
            .iter()
            .map(|p| hydra::project(p, &jobsets_by_project.remove(&p.id).unwrap_or_default()))
            .collect::<Vec<_>>(),
        "jobsets": jobset_inputs,
        "builds": hydra::builds(&listed(&found.builds)),
        "buildsdrv": hydra::builds(&listed(&found.builds_by_drv)),
    })))
}

/// `/metrics` and `/prometheus`: the server's metrics, Prometheus text format.
pub async fn metrics(State(state): State<AppState>) -> ApiResult<Response> {
    let queued = state.db.queued_count().await?;
    let running = state.db.running_step_count().await?;
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], state.metrics.render(queued, running))
        .into_response())
}
