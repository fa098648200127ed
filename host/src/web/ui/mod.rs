//! The HTML pages people read, on the same URLs as the JSON that programs
//! read: a `GET` that does not ask for JSON (see `negotiate.rs`) is served
//! by a page of this module when there is one, else by the JSON route,
//! which `negotiate.rs` shows as a plain document.
//!
//! Pages are plain HTML and CSS made with `maud` (escaped by construction),
//! readable on a phone, light or dark as the reader's system prefers; no
//! script is needed to read them. Each page issues a fixed, small number
//! of database queries, whatever the size of the jobset.

mod admin;
mod build_page;
mod forms;
mod lists;
mod logs;
mod pages;
mod releases;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use maud::{DOCTYPE, Markup, PreEscaped, html};
use tower::ServiceExt;

use super::{ApiError, AppState};
use crate::db::BuildCell;
use crate::domain::BuildStatus;
use crate::users::Caller;

/// The routes that have a page, ready to serve.
pub fn page_router(state: AppState) -> Router {
    Router::new()
        .route("/", get(pages::overview))
        .route("/project/{project}", get(pages::project))
        .route("/jobset/{project}/{jobset}", get(pages::jobset))
        .route("/eval/{id}", get(pages::eval))
        .route("/build/{id}", get(build_page::build))
        .route("/job/{project}/{jobset}/{job}", get(pages::job))
        .route("/login", get(pages::login))
        .route("/queue", get(pages::queue))
        .route("/machines", get(pages::machines))
        .route("/status", get(lists::status))
        .route("/evals", get(lists::all_evals))
        .route("/jobset/{project}/{jobset}/evals", get(lists::jobset_evals))
        .route("/search", get(lists::search))
        .route("/project/{project}/releaseset/{name}", get(releases::release_set))
        .route("/project/{project}/releaseset/{name}/release/{release}", get(releases::release))
        .route("/build/{id}/log", get(logs::build_log))
        .route("/build/{id}/nixlog/{step}", get(logs::step_log))
        .route("/admin", get(admin::admin))
        .route("/admin/plugins", get(admin::plugins))
        .route("/admin/notifications", get(admin::notifications))
        .route("/users", get(admin::users_list))
        .route("/user/{name}", get(admin::user_page))
        .route("/new-project", get(forms::new_project_page))
        .route("/project/{project}/edit", get(forms::edit_project_page))
        .route("/project/{project}/new-jobset", get(forms::new_jobset_page))
        .route("/jobset/{project}/{jobset}/edit", get(forms::edit_jobset_page))
        .fallback(no_page)
        .with_state(state)
}

/// The forms' POST routes, for the main router (pages only answer GET).
pub fn form_routes() -> Router<AppState> {
    Router::new()
        .route("/new-project", axum::routing::post(forms::create_project))
        .route("/project/{project}/edit", axum::routing::post(forms::edit_project))
        .route("/project/{project}/new-jobset", axum::routing::post(forms::create_jobset))
        .route("/jobset/{project}/{jobset}/edit", axum::routing::post(forms::edit_jobset))
        .route("/new-user", axum::routing::post(admin::create_user))
        .route("/user/{name}/new-token", axum::routing::post(admin::create_token))
        .route("/user/{name}/tokens/{id}/revoke", axum::routing::post(admin::revoke_token))
        .route("/user/{name}/delete", axum::routing::post(admin::delete_user))
}

/// Marks "no page here": the JSON route answers instead.
#[derive(Clone, Copy)]
struct NoPage;

async fn no_page() -> Response {
    let mut response = StatusCode::NOT_FOUND.into_response();
    response.extensions_mut().insert(NoPage);
    response
}

/// Middleware: serves the page of a browser's `GET`, if there is one.
pub async fn serve_pages(State(pages): State<Router>, request: Request, next: Next) -> Response {
    let wants_page = matches!(*request.method(), Method::GET | Method::HEAD)
        && !super::negotiate::wants_json(request.headers(), request.uri().query(), request.uri().path());
    if !wants_page {
        return next.run(request).await;
    }
    // A GET has no body: the page router gets a copy, the JSON route the
    // original if there is no page.
    let mut probe = Request::builder().method(request.method()).uri(request.uri()).body(Body::empty());
    if let Ok(probe) = &mut probe {
        *probe.headers_mut() = request.headers().clone();
        if let Some(caller) = request.extensions().get::<Caller>() {
            probe.extensions_mut().insert(caller.clone());
        }
    }
    let Ok(probe) = probe else { return next.run(request).await };
    let response = match pages.oneshot(probe).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    if response.extensions().get::<NoPage>().is_some() { next.run(request).await } else { response }
}

/// What an anonymous browser gets on a private server: 403, and the way in.
pub fn private_server_page() -> Response {
    let caller = Caller::anonymous();
    let body = html! {
        p { "This server is private: log in to see it." }
        (pages::login_form())
    };
    (StatusCode::FORBIDDEN, layout(&caller, "Log in", &[], body)).into_response()
}

/// A page in the common frame: header with navigation and who is logged
/// in, then `body`.
pub fn layout(caller: &Caller, title: &str, crumbs: &[(String, String)], body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="color-scheme" content="light dark";
                title { (title) " — Orthrus" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                header {
                    nav {
                        a.brand href="/" { "Orthrus" }
                        a href="/queue" { "Queue" }
                        a href="/status" { "Status" }
                        a href="/machines" { "Machines" }
                        a href="/evals" { "Evaluations" }
                        form.search action="/search" method="get" {
                            input type="search" name="query" placeholder="Search" aria-label="Search";
                        }
                        span.user {
                            @if let Some(user) = &caller.user {
                                @if caller.check(crate::users::Action::ManageUsers, None).is_ok() { a href="/admin" { "Admin" } }
                                a href=(format!("/user/{}", user.username)) { (user.username) }
                                form method="post" action="/logout" { button type="submit" { "Log out" } }
                            } @else {
                                a href="/login" { "Log in" }
                            }
                        }
                    }
                    @if !crumbs.is_empty() {
                        ol.crumbs {
                            @for (label, href) in crumbs { li { a href=(href) { (label) } } }
                        }
                    }
                }
                main {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// An error as a page, with its status.
pub fn error_page(caller: &Caller, error: &ApiError) -> Response {
    // Refused for want of a login: the way in, right there.
    let log_in = error.login_wanted && caller.user.is_none();
    let title = match error.status {
        StatusCode::UNAUTHORIZED => "Log in",
        StatusCode::FORBIDDEN => "Not allowed",
        StatusCode::NOT_FOUND => "Not here",
        status if status.is_client_error() => "Not done",
        _ => "Something went wrong",
    };
    let page = layout(caller, title, &[], html! { p.error { (error.message) } @if log_in { (pages::login_form()) } });
    (error.status, page).into_response()
}

/// A page, or its error as a page.
pub fn render(caller: &Caller, page: Result<Markup, ApiError>) -> Response {
    match page {
        Ok(markup) => markup.into_response(),
        Err(error) => error_page(caller, &error),
    }
}

/// A build's status as a short word with its colour class.
pub fn status_badge(finished: bool, code: Option<i32>) -> Markup {
    let (class, text) = match (finished, code) {
        (false, _) => ("queued", "queued"),
        (true, Some(code)) if code == BuildStatus::Succeeded.code() => ("ok", "succeeded"),
        (true, Some(code)) => ("fail", BuildStatus::describe_code(Some(code))),
        (true, None) => ("fail", "unknown"),
    };
    html! { span class=(format!("badge {class}")) { (text) } }
}

pub fn cell_badge(cell: &BuildCell) -> Markup {
    html! { a href=(format!("/build/{}", cell.id)) title=(cell.job) { (status_badge(cell.finished, cell.status)) } }
}

/// A Unix time as UTC, to the minute.
pub fn time(seconds: Option<i64>) -> Markup {
    let Some(seconds) = seconds else { return html! { span.muted { "—" } } };
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute] UTC");
    let text = time::OffsetDateTime::from_unix_timestamp(seconds)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| seconds.to_string());
    html! { time { (text) } }
}

/// A duration in seconds, as people say it.
pub fn duration(seconds: i64) -> String {
    match seconds {
        s if s < 60 => format!("{s} s"),
        s if s < 3600 => format!("{} min {} s", s / 60, s % 60),
        s => format!("{} h {} min", s / 3600, (s % 3600) / 60),
    }
}

/// A size in bytes, as people say it.
pub fn size(bytes: i64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

/// Previous and next links of a paged list.
pub fn pager(base: &str, offset: u64, limit: u64, total: u64) -> Markup {
    let join = if base.contains('?') { '&' } else { '?' };
    html! {
        nav.pager {
            @if offset > 0 {
                a href=(format!("{base}{join}offset={}", offset.saturating_sub(limit))) { "← previous" }
            }
            span.muted { (offset.min(total) + u64::from(total > 0)) "–" (offset.saturating_add(limit).min(total)) " of " (total) }
            @if offset.saturating_add(limit) < total {
                a href=(format!("{base}{join}offset={}", offset + limit)) { "next →" }
            }
        }
    }
}

const STYLE: &str = r#"
:root { --bg:#fff; --fg:#1b1b1f; --muted:#667; --line:#dde; --ok:#1a7f37; --fail:#c62828; --queued:#8a6d00; --link:#0b57d0; --code:#f4f4f8; }
@media (prefers-color-scheme: dark) { :root { --bg:#121316; --fg:#e3e3e8; --muted:#9aa; --line:#2c2e36; --ok:#4ac26b; --fail:#ff6b6b; --queued:#e0b400; --link:#8ab4f8; --code:#1c1e24; } }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--fg); font:15px/1.5 system-ui, sans-serif; }
a { color:var(--link); text-decoration:none; } a:hover { text-decoration:underline; }
header { border-bottom:1px solid var(--line); padding:.5rem 1rem; }
nav { display:flex; flex-wrap:wrap; gap:.4rem 1rem; align-items:center; }
nav .brand { font-weight:700; }
nav .search { margin-left:auto; } nav .search input { width:12rem; max-width:40vw; }
nav .user { display:flex; gap:.5rem; align-items:center; } nav .user form { margin:0; }
.crumbs { list-style:none; display:flex; flex-wrap:wrap; gap:.3rem; padding:0; margin:.3rem 0 0; font-size:.9em; }
.crumbs li + li::before { content:"›"; color:var(--muted); margin-right:.3rem; }
main { padding:0 1rem 2rem; max-width:80rem; }
h1 { font-size:1.4rem; margin:1rem 0 .5rem; } h2 { font-size:1.15rem; margin:1.5rem 0 .5rem; }
table { border-collapse:collapse; width:100%; } th, td { text-align:left; padding:.3rem .5rem; border-bottom:1px solid var(--line); vertical-align:top; }
th { font-weight:600; color:var(--muted); }
.scroll { overflow-x:auto; }
.badge { display:inline-block; padding:0 .45rem; border-radius:.6rem; font-size:.85em; border:1px solid currentColor; white-space:nowrap; }
.ok { color:var(--ok); } .fail { color:var(--fail); } .queued { color:var(--queued); }
.muted { color:var(--muted); }
.error { color:var(--fail); white-space:pre-wrap; }
pre, code { background:var(--code); font-family:ui-monospace, monospace; font-size:.9em; }
pre { padding:.6rem; overflow-x:auto; white-space:pre-wrap; word-break:break-all; }
dl { display:grid; grid-template-columns:max-content 1fr; gap:.2rem 1rem; } dt { color:var(--muted); } dd { margin:0; }
.pager { margin:.5rem 0; gap:1rem; }
.actions { display:flex; flex-wrap:wrap; gap:.5rem; margin:.5rem 0; } .actions form { margin:0; }
.filters a { margin-right:.8rem; } .filters a.current { font-weight:700; }
form.stacked { display:grid; gap:.6rem; max-width:36rem; } form.stacked label { display:grid; gap:.2rem; }
form.stacked input[type=checkbox] { justify-self:start; }
form.stacked fieldset { display:grid; gap:.6rem; border:1px solid var(--line); border-radius:.3rem; }
.input-row { display:grid; grid-template-columns:1fr 1fr 2fr auto; gap:.3rem; align-items:center; }
form.stacked label.inline { display:flex; gap:.3rem; align-items:center; white-space:nowrap; }
@media (max-width: 40rem) { .input-row { grid-template-columns:1fr; } }
input, button, select { font:inherit; padding:.3rem .5rem; color:var(--fg); background:var(--bg); border:1px solid var(--line); border-radius:.3rem; }
button { cursor:pointer; }
.matrix td, .matrix th { text-align:center; } .matrix td:first-child, .matrix th:first-child { text-align:left; }
pre.log { max-height:30rem; overflow-y:auto; }
code.denied { text-decoration:line-through; color:var(--fail); }
.notice { border:1px solid var(--ok); border-radius:.3rem; padding:.2rem .8rem; margin:.5rem 0; }
pre.secret { user-select:all; }
pre.whole-log { white-space:pre-wrap; word-break:break-word; }
svg.plot { width:100%; max-width:48rem; height:auto; } svg.plot text { fill:var(--muted); font-size:11px; }
svg.plot .line { fill:none; stroke:var(--link); stroke-width:2; } svg.plot .axis { stroke:var(--line); }
"#;
