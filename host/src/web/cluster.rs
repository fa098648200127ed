//! The web side of several processes (`cluster/`): what a process serves
//! by its roles, and where a request for what only the store holds goes.
//!
//! A web process may run on another host than the queue runner, without
//! the store the builds land in and without the queue runner's live logs.
//! Logs (whole, paged, tail and live), build products, NARs, narinfos and
//! channels are therefore answered by the process that holds the `queue`
//! role: a web process that does not forwards those requests to it, as
//! they came, and streams its answer back. This was chosen over
//!
//! - a shared log directory: it needs a network file system on every web
//!   host, and live logs are not in files yet (they go from the build to
//!   their readers in the queue runner's memory);
//! - redirecting to the published cache: publishing is optional and runs
//!   behind the builds, so a running build's log, a build just finished
//!   and every product download would be missing.
//!
//! The holder answers the forwarded request with its own rights checks
//! (the caller's cookie or token go with it). A process without the `web`
//! role answers only these requests (and `/status`, for health checks),
//! on its own listener: `cluster.url` is where the others reach it.

use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{ApiError, ApiResult, AppState};
use crate::db::{Member, MemberId};
use crate::domain::{ProcessRole, ProcessRoles};

/// Marks a forwarded request (with the forwarding process's id): it is
/// answered where it arrives, never forwarded again.
const FORWARDED: &str = "x-orthrus-forwarded";

/// This process, as the web side needs it.
pub struct ThisProcess {
    pub member: MemberId,
    pub roles: ProcessRoles,
    /// For forwarding: no redirects followed, a bound on connecting, none
    /// on the answer (a live log lasts as long as its build).
    client: reqwest::Client,
    /// The queue runner's process as last looked up, and when: a log or a
    /// NAR costs no lookup of its own (after a failover, forwarding to the
    /// old holder fails for this long at most, and is answered here).
    queue_holder: std::sync::Mutex<Option<(std::time::Instant, Option<Member>)>>,
}

/// How long a lookup of the queue runner's process is used.
const HOLDER_FRESH_FOR: Duration = Duration::from_secs(2);

impl ThisProcess {
    pub fn new(member: MemberId, roles: ProcessRoles) -> ThisProcess {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .build()
            .expect("a client without TLS settings of its own builds");
        ThisProcess { member, roles, client, queue_holder: Default::default() }
    }

    /// The process holding the `queue` role, looked up at most every
    /// [`HOLDER_FRESH_FOR`].
    async fn queue_holder(&self, db: &crate::db::Db) -> crate::db::DbResult<Option<Member>> {
        let cached = self.queue_holder.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some((at, holder)) = cached {
            if at.elapsed() < HOLDER_FRESH_FOR {
                return Ok(holder);
            }
        }
        let holder = db.holder_of(ProcessRole::Queue).await?;
        *self.queue_holder.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((std::time::Instant::now(), holder.clone()));
        Ok(holder)
    }
}

/// Whether a path is answered from the store or the logs, which the
/// queue runner's process has (see the module's doc).
pub fn needs_the_store(path: &str) -> bool {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        ["nix-cache-info"] => true,
        [file] => file.ends_with(".narinfo") || file.ends_with(".ls"),
        ["nar", _] => true,
        ["build", _, "log", ..]
        | ["build", _, "nixlog", ..]
        | ["build", _, "download", ..]
        | ["build", _, "nix", ..] => true,
        ["jobset", _, _, "channel", ..] => true,
        _ => false,
    }
}

/// Serves a request here, forwards it to the queue runner's process, or
/// refuses it (a process without the `web` role), as the module's doc says.
pub async fn route_by_role(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let forwarded = request.headers().contains_key(FORWARDED);
    let store = needs_the_store(path) && !rewritable(path);
    let web = state.process.roles.contains(ProcessRole::Web);
    if !web && !store && path != "/status" {
        return ApiError::not_found(format!(
            "this process does not serve the web (it runs {}); it answers other processes' requests for logs and \
             store paths",
            state.process.roles
        ))
        .into_response();
    }
    // On SQLite this process runs every role.
    let single = state.db.backend() != sea_orm::DbBackend::Postgres;
    if !store || forwarded || single || !matches!(*request.method(), Method::GET | Method::HEAD) {
        return next.run(request).await;
    }
    match state.process.queue_holder(&state.db).await {
        Ok(Some(holder)) if holder.id != state.process.member => match forward(&state, &holder, request).await {
            Ok(response) => response,
            Err((request, error)) => {
                // Its host may share this one's store and logs: try here.
                tracing::warn!("cannot forward to {} at {}: {error}; answering here", holder.id, holder.url);
                next.run(request).await
            }
        },
        Ok(_) => next.run(request).await,
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// The request headers forwarded: who asks and what they accept (a
/// forwarded request has no body, so nothing about one goes along).
fn forwarded_request_header(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "cookie"
            | "authorization"
            | "accept"
            | "accept-encoding"
            | "accept-language"
            | "range"
            | "if-range"
            | "if-none-match"
            | "if-modified-since"
            | "user-agent"
            | "origin"
            | "last-event-id"
    )
}

/// Headers of an answer that belong to its connection, not to it.
fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection" | "keep-alive" | "proxy-connection" | "transfer-encoding" | "upgrade" | "te" | "trailer"
    )
}

/// How long the holder has to start answering (the answer itself, a live
/// log, may last as long as its build).
const ANSWER_STARTS_WITHIN: Duration = Duration::from_secs(15);

/// A path whose segments a URL parser would rewrite (`..`, `.`, encoded
/// dots or slashes, backslashes): not forwarded, lest it reach another
/// route than the one checked.
fn rewritable(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    lower.contains("%2e")
        || lower.contains("%2f")
        || lower.contains("%5c")
        || path.contains('\\')
        || path.split('/').any(|segment| segment == "." || segment == "..")
}

/// Sends `request` to `holder` and streams its answer back; on no answer,
/// gives the request back.
async fn forward(state: &AppState, holder: &Member, request: Request) -> Result<Response, (Request, String)> {
    let target = format!(
        "{}{}",
        holder.url.trim_end_matches('/'),
        request.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/")
    );
    let mut outgoing = state.process.client.request(request.method().clone(), &target);
    for (name, value) in request.headers() {
        if forwarded_request_header(name) {
            outgoing = outgoing.header(name, value);
        }
    }
    outgoing = outgoing.header(FORWARDED, state.process.member.as_str());
    let answer = match tokio::time::timeout(ANSWER_STARTS_WITHIN, outgoing.send()).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(e)) => return Err((request, e.to_string())),
        Err(_) => return Err((request, format!("no answer within {} s", ANSWER_STARTS_WITHIN.as_secs()))),
    };
    let mut response = Response::builder().status(answer.status());
    for (name, value) in answer.headers() {
        if !hop_by_hop(name) {
            response = response.header(name, value);
        }
    }
    Ok(response
        .body(Body::from_stream(answer.bytes_stream()))
        .unwrap_or_else(|e| (StatusCode::BAD_GATEWAY, e.to_string()).into_response()))
}

/// `GET /api/cluster`: every process with its host, roles held and
/// standing by, version and last heartbeat. (`/status` keeps Hydra's
/// shape, an array of running steps, which clients parse.) Admins only:
/// it names internal hosts and addresses.
pub async fn api_cluster(State(state): State<AppState>, caller: crate::users::Caller) -> ApiResult<Json<Value>> {
    super::auth::require(&caller, crate::users::Action::ManageUsers)?;
    let members = state.db.cluster_members().await?;
    Ok(Json(Value::Array(members.iter().map(|member| member_json(&state, member)).collect())))
}

fn member_json(state: &AppState, member: &Member) -> Value {
    let words = |roles: ProcessRoles| roles.iter().map(ProcessRole::as_str).collect::<Vec<_>>();
    json!({
        "id": member.id.as_str(),
        "host": member.host,
        "pid": member.pid,
        "version": member.version,
        "roles": words(member.roles),
        "holds": words(member.holds),
        "standingby": words(member.standing_by()),
        "url": member.url,
        "started": member.started_at,
        "lastheartbeat": member.heartbeat_at,
        "self": member.id == state.process.member,
    })
}

#[cfg(test)]
mod tests {
    use super::needs_the_store;

    #[test]
    fn paths_a_parser_would_rewrite_are_not_forwarded() {
        use super::rewritable;
        for path in [
            "/build/1/log/../../api/cluster",
            "/build/1/log/%2e%2e/x",
            "/build/1/log/./x",
            "/nar/a%2Fb",
            "/build/1/log\\x",
        ] {
            assert!(rewritable(path), "{path}");
        }
        assert!(!rewritable("/build/1/log/tail"));
    }

    #[test]
    fn what_needs_the_store_is_logs_products_and_the_cache() {
        for path in [
            "/build/3/log",
            "/build/3/log/tail",
            "/build/3/nixlog/1/live",
            "/build/3/download/1/a/b",
            "/build/3/nix/nar/x.nar",
            "/nar/abc.nar.xz",
            "/abc.narinfo",
            "/nix-cache-info",
            "/jobset/p/j/channel/latest/nixexprs.tar.xz",
        ] {
            assert!(needs_the_store(path), "{path}");
        }
        for path in ["/build/3", "/build/3/steps", "/job/p/j/hello/latest", "/status", "/", "/project/p"] {
            assert!(!needs_the_store(path), "{path}");
        }
    }
}
