//! The log viewer: a log a page at a time, its end first, so that a log of
//! many megabytes neither travels whole nor freezes the browser. The raw
//! log (`…/raw`) stays one click away for `less` and `grep`.

use axum::extract::State;
use axum::response::Response;
use maud::html;
use serde::Deserialize;

use super::pages::crumb;
use super::{layout, render, size};
use crate::logs::{LogPage, Window};
use crate::nix::StorePath;
use crate::users::Caller;
use crate::web::builds::{build_log_drv, find_step};
use crate::web::extract::{Path, Query};
use crate::web::{ApiError, AppState};

/// Bytes of log a page shows.
const PAGE_BYTES: u64 = 256 << 10;

#[derive(Debug, Default, Deserialize)]
pub struct LogQuery {
    #[serde(default)]
    from: Option<u64>,
    #[serde(default)]
    to: Option<u64>,
}

impl LogQuery {
    fn window(&self) -> Window {
        match (self.from, self.to) {
            (Some(from), _) => Window::From(from),
            (None, Some(to)) => Window::To(to),
            (None, None) => Window::Tail,
        }
    }
}

async fn read_page(state: &AppState, drv: &str, window: Window) -> Result<LogPage, ApiError> {
    let path = StorePath::parse(drv).map_err(|e| ApiError::not_found(e.to_string()))?;
    let page = state
        .logs
        .page(&path, window, PAGE_BYTES)
        .await
        .map_err(|e| ApiError::internal(format!("cannot read the log: {e}")))?;
    page.ok_or_else(|| ApiError::not_found(format!("there is no log of {drv}")))
}

/// The page around a log: where it is, links to the other parts, the text.
fn log_page(
    caller: &Caller,
    title: &str,
    base: &str,
    build: i64,
    drv: &str,
    running: bool,
    page: &LogPage,
) -> Response {
    let text = crate::nix::strip_ansi(&String::from_utf8_lossy(&page.text));
    let links = html! {
        nav.pager {
            @if page.from > 0 {
                a href=(format!("{base}?from=0")) { "« start" }
                a href=(format!("{base}?to={}", page.from)) { "← earlier" }
            }
            span.muted { "bytes " (page.from) "–" (page.to) " of " (size(page.total as i64)) }
            @if page.to < page.total {
                a href=(format!("{base}?from={}", page.to)) { "later →" }
                a href=(base) { "end »" }
            }
            a href=(format!("{base}/raw")) { "raw" }
        }
    };
    let body = html! {
        p { "Derivation " code { (drv) } }
        @if running {
            p { "This step is still running: " a href=(format!("/build/{build}")) { "follow its log live" } "." }
        }
        (links)
        @if text.is_empty() { p.muted { "Nothing here." } } @else { pre.whole-log { (text) } }
        (links)
    };
    let crumbs = [crumb(format!("build {build}"), format!("/build/{build}")), crumb("log", base.to_owned())];
    render(caller, Ok(layout(caller, title, &crumbs, body)))
}

/// `/build/N/log`: the build's log (its own, or the failed step's).
pub async fn build_log(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
    Query(query): Query<LogQuery>,
) -> Response {
    let result = async {
        let drv = build_log_drv(&state, id).await?;
        let page = read_page(&state, &drv, query.window()).await?;
        Ok::<_, ApiError>((drv, page))
    }
    .await;
    match result {
        Ok((drv, page)) => {
            log_page(&caller, &format!("Log of build {id}"), &format!("/build/{id}/log"), id, &drv, false, &page)
        }
        Err(error) => render(&caller, Err(error)),
    }
}

/// `/build/N/nixlog/S`: the log of one step.
pub async fn step_log(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, step_nr)): Path<(i64, i32)>,
    Query(query): Query<LogQuery>,
) -> Response {
    let result = async {
        let step = find_step(&state, id, step_nr).await?;
        let page = read_page(&state, &step.drv_path, query.window()).await?;
        Ok::<_, ApiError>((step, page))
    }
    .await;
    match result {
        Ok((step, page)) => log_page(
            &caller,
            &format!("Log of step {step_nr} of build {id}"),
            &format!("/build/{id}/nixlog/{step_nr}"),
            id,
            &step.drv_path,
            step.busy,
            &page,
        ),
        Err(error) => render(&caller, Err(error)),
    }
}
