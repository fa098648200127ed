//! The HTTP side: Hydra-compatible JSON routes (see HYDRA-API.md), with
//! every change checked against the caller's rights.

mod auth;
mod body;
mod build_answers;
mod builds;
mod cache;
mod channel;
mod cluster;
mod error;
mod eval_stream;
mod evals;
mod extract;
mod jobs;
mod json;
mod latest;
mod negotiate;
mod overview;
mod projects;
mod releases;
mod rendered;
pub mod serve;
mod ui;
pub use rendered::RenderCache;
mod users;
mod webhooks;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use crate::config::Config;
use crate::db::Db;
use crate::eval::EvaluatorHandle;
use crate::logs::LogStore;
use crate::queue::QueueHandle;
pub use cluster::ThisProcess;
pub use error::{ApiError, ApiResult};

/// What every handler can reach. Axum clones the state for each extractor
/// and middleware of every request, so it is one shared reference: cloning
/// the services themselves (two database handles, a score of `Arc`s) cost a
/// fifth of the CPU of `GET /build/N` under load.
#[derive(Clone)]
pub struct AppState(Arc<Services>);

impl AppState {
    pub fn new(services: Services) -> AppState {
        AppState(Arc::new(services))
    }
}

impl std::ops::Deref for AppState {
    type Target = Services;

    fn deref(&self) -> &Services {
        &self.0
    }
}

/// The parts of the server the web answers from.
pub struct Services {
    pub db: Db,
    /// Checks input values (built-in types and plugins' ones).
    pub inputs: crate::inputs::InputFetcher,
    /// For the binary cache: path infos and NARs of the store.
    pub nix: crate::nix::Nix,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Signs the binary cache's narinfos, when configured.
    pub cache_key: Option<Arc<crate::nix::SigningKey>>,
    /// The machines that build, for `/machines`.
    pub machines: Arc<crate::machines::Machines>,
    pub config: Arc<Config>,
    pub logs: LogStore,
    pub evaluator: EvaluatorHandle,
    pub queue: QueueHandle,
    /// Renderers and release sets run here.
    pub plugins: crate::plugins::PluginRuntime,
    pub rendered: Arc<rendered::RenderCache>,
    /// `GET /build/N` answers, written once per finished build.
    pub build_answers: build_answers::BuildAnswers,
    pub releases: Arc<crate::releases::ReleaseSets>,
    /// Failed logins, per user and per address.
    pub login_throttle: Arc<crate::users::throttle::LoginThrottle>,
    /// Plugin calls pages make, bounded.
    pub plugin_calls: Arc<PluginCalls>,
    /// Channel tarballs, made once per evaluation.
    pub channels: Arc<channel::ChannelCache>,
    /// The GC roots, for builds kept or restarted (none where they cannot
    /// be kept).
    pub gc: Option<crate::gc::GcRoots>,
    /// What retention last did, for `/status`.
    pub retention: Arc<crate::retention::RetentionStatus>,
    /// Why nothing is evaluated or built (no usable Nix), in one sentence.
    pub nix_problem: Option<Arc<str>>,
    /// This process in the cluster: its id and roles.
    pub process: Arc<ThisProcess>,
}

/// Plugin calls made while answering a request, bounded so that a flood of
/// page views cannot take every plugin instance (nor hold the git plugin,
/// whose calls wait for each other, from fetching).
pub struct PluginCalls {
    /// Renderer calls for `/build/N`; beyond them, products show plainly.
    pub renders: tokio::sync::Semaphore,
    /// Input fetchers' `changes` for `/eval/N/changes`; beyond them, 503.
    pub changes: tokio::sync::Semaphore,
}

impl Default for PluginCalls {
    fn default() -> Self {
        PluginCalls { renders: tokio::sync::Semaphore::new(8), changes: tokio::sync::Semaphore::new(2) }
    }
}

impl Services {
    /// Saving projects and jobsets with `projects`' rules.
    pub fn editor(&self) -> crate::projects::save::Editor<'_> {
        crate::projects::save::Editor { db: &self.db, inputs: &self.inputs, plugins: &self.plugins }
    }

    /// An absolute URL on this server, for `Location` headers.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.config.base_url())
    }
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(projects::list))
        .route(
            "/project/{project}",
            get(projects::get_project).put(projects::put_project).delete(projects::delete_project),
        )
        .route(
            "/jobset/{project}/{jobset}",
            get(projects::get_jobset).put(projects::put_jobset).delete(projects::delete_jobset),
        )
        .route("/jobset/{project}/{jobset}/evals", get(evals::jobset_evals))
        .route("/jobset/{project}/{jobset}/evaluate", post(projects::evaluate))
        .route("/jobset/{project}/{jobset}/latest-eval", get(evals::latest_eval))
        .route("/eval/{id}", get(evals::get_eval))
        .route("/eval/{id}/builds", get(evals::eval_builds))
        .route("/eval/{id}/job/{job}", get(evals::eval_job))
        .route("/eval/{id}/store-paths", get(evals::store_paths))
        .route("/eval/{id}/changes", get(evals::changes))
        .route("/eval/{id}/{action}", post(evals::eval_action).put(evals::eval_action))
        .route("/build/{id}", get(builds::get_build))
        .route("/build/{id}/constituents", get(builds::constituents))
        .route("/build/{id}/steps", get(builds::steps))
        .route("/build/{id}/log", get(builds::log))
        .route("/build/{id}/log/{mode}", get(builds::log_mode))
        .route("/build/{id}/nixlog/{step}", get(builds::step_log))
        .route("/build/{id}/nixlog/{step}/{mode}", get(builds::step_log_mode))
        .route("/build/{id}/keep/{keep}", post(builds::keep).put(builds::keep))
        .route("/build/{id}/download/{nr}", get(builds::download))
        .route("/build/{id}/download/{nr}/{*path}", get(builds::download_path))
        .route("/build/{id}/{action}", post(builds::action).put(builds::action))
        .route("/api/push", post(projects::push))
        .route("/api/push-github", post(webhooks::github))
        .route("/api/push-gitea", post(webhooks::gitea))
        .route("/login", post(users::login))
        .route("/logout", post(users::logout))
        .route("/current-user", get(users::current_user))
        .route("/users", get(users::list_users))
        .route("/user/{name}", get(users::get_user).put(users::put_user).delete(users::delete_user))
        .route("/user/{name}/tokens", get(users::list_tokens).post(users::create_token))
        .route("/user/{name}/tokens/{id}", axum::routing::delete(users::revoke_token))
        .route("/api/nrqueue", get(overview::nr_queue))
        .route("/api/queue", get(overview::api_queue))
        .route("/api/latestbuilds", get(overview::latest_builds))
        .route("/api/jobsets", get(overview::api_jobsets))
        .route("/api/events", get(overview::events))
        .route("/api/notifiers", get(overview::notifiers))
        .route("/api/cluster", get(cluster::api_cluster))
        .route("/project/{project}/releasesets", get(releases::list))
        .route("/project/{project}/releaseset/{name}", get(releases::get_set))
        .route("/project/{project}/releaseset/{name}/latest", get(releases::latest))
        .route("/project/{project}/releaseset/{name}/latest/{label}", get(releases::latest_member))
        .route("/project/{project}/releaseset/{name}/release/{release}", get(releases::get_release))
        .route("/queue", get(overview::queue))
        .route("/status", get(overview::status))
        .route("/machines", get(overview::machines))
        .route("/evals", get(overview::evals))
        .route("/steps", get(overview::steps))
        .route("/search", get(overview::search))
        .route("/nix-cache-info", get(cache::cache_info))
        .route("/{file}", get(cache::narinfo_file))
        .route("/nar/{file}", get(cache::nar_file))
        .route("/build/{id}/nix/{file}", get(cache::build_narinfo))
        .route("/build/{id}/nix/nar/{file}", get(cache::build_nar))
        .route("/jobset/{project}/{jobset}/channel/latest", get(channel::channel))
        .route("/jobset/{project}/{jobset}/channel/latest/{file}", get(channel::nixexprs))
        .route("/metrics", get(overview::metrics))
        .route("/prometheus", get(overview::metrics))
        .route("/job/{project}/{jobset}/{job}/shield", get(jobs::shield))
        .route("/job/{project}/{jobset}/{job}/prometheus", get(jobs::prometheus))
        .route("/latest", get(latest::handle))
        .route("/latest/{*rest}", get(latest::handle))
        .route("/latest-finished", get(latest::handle))
        .route("/latest-finished/{*rest}", get(latest::handle))
        .route("/latest-for/{*rest}", get(latest::handle))
        .route("/project/{project}/{*rest}", get(latest::handle))
        .route("/jobset/{project}/{jobset}/{*rest}", get(latest::handle))
        .route("/job/{project}/{jobset}/{job}", get(latest::handle))
        .route("/job/{project}/{jobset}/{job}/{*rest}", get(latest::handle))
        .merge(ui::form_routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(ui::page_router(state.clone()), ui::serve_pages))
        .layer(middleware::from_fn_with_state(state.clone(), auth::authenticate))
        .layer(middleware::from_fn(negotiate::negotiate))
        .layer(middleware::from_fn(vary_accept))
        .layer(middleware::from_fn_with_state(state.clone(), count_requests))
        .layer(middleware::from_fn_with_state(state.clone(), cluster::route_by_role))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such page")
}

async fn method_not_allowed(method: Method) -> ApiError {
    ApiError::new(axum::http::StatusCode::METHOD_NOT_ALLOWED, format!("this page does not answer {method}"))
}

/// Marks an answer to a logged-in user, who is told its database cost
/// (`Server-Timing`); anonymous readers are not told how the server works.
#[derive(Clone, Copy)]
struct ShowTiming;

/// Counts every answer by route (the pattern, not the path: bounded
/// labels), and tells a logged-in client how many database queries it took
/// and how long they ran (`Server-Timing`, shown by browsers' developer
/// tools).
async fn count_requests(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let method = request.method().to_string();
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let (mut response, count) = crate::db::query_count::counting(next.run(request)).await;
    if response.extensions().get::<ShowTiming>().is_some() {
        let timing = format!("db;dur={:.1};desc=\"{} queries\"", count.time.as_secs_f64() * 1000.0, count.queries);
        if let Ok(value) = HeaderValue::from_str(&timing) {
            response.headers_mut().insert("server-timing", value);
        }
    }
    state.metrics.http_request(&method, &route, response.status().as_u16(), started.elapsed());
    response
}

/// The same URL answers differently depending on Accept.
async fn vary_accept(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    response.headers_mut().insert(header::VARY, HeaderValue::from_static("Accept"));
    response
}

/// A 302 to an absolute URL on this server.
pub fn redirect(state: &AppState, path: &str) -> Response {
    let location = state.url(path);
    let mut response =
        (axum::http::StatusCode::FOUND, Json(serde_json::json!({ "redirect": location }))).into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

/// The named project, or a 404 naming it.
pub async fn find_project(state: &AppState, name: &str) -> ApiResult<crate::db::Project> {
    state.db.project(name).await?.ok_or_else(|| ApiError::not_found(format!("project ‘{name}’ does not exist")))
}

/// The named jobset with its project, or a 404 naming it.
pub async fn find_jobset(
    state: &AppState,
    project: &str,
    jobset: &str,
) -> ApiResult<(crate::db::Project, crate::db::Jobset)> {
    state
        .db
        .jobset(project, jobset)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("jobset ‘{project}:{jobset}’ does not exist")))
}
