//! Builds: the build JSON, its constituents and steps, its logs, the
//! actions on it (restart, cancel, bump, keep) and the queue.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;

use super::extract::Path;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use serde_json::Value;

use super::auth::require_on;
use super::{ApiError, ApiResult, AppState, json as hydra, redirect};
use crate::confined::{Confined, Refused};
use crate::db::{BuildStep, BuildView};
use crate::logs::{LogPage, Window, tail_lines};
use crate::nix::StorePath;
use crate::users::{Action, Caller};

/// What a path segment of a redirect encodes.
const PATH_SEGMENT: &AsciiSet =
    &CONTROLS.add(b' ').add(b'"').add(b'#').add(b'%').add(b'/').add(b'?').add(b'<').add(b'>').add(b'`');

/// Lines of `/log/tail`.
const TAIL_LINES: usize = 50;

pub(super) async fn find_build(state: &AppState, id: i64) -> ApiResult<Arc<BuildView>> {
    state.db.build_view(id).await?.ok_or_else(|| ApiError::not_found(format!("build {id} does not exist")))
}

/// `/build/N`: Hydra's JSON, each product with its rendered view.
pub async fn get_build(State(state): State<AppState>, Path(id): Path<i64>) -> ApiResult<Response> {
    let view = find_build(&state, id).await?;
    let body = match state.build_answers.get(&view) {
        Some(body) => body,
        None => {
            let mut value = hydra::build(&view);
            let rendered = super::rendered::render_products(&state, &view).await;
            for (nr, product) in &rendered.products {
                if let Some(shown) = value["buildproducts"].get_mut(nr.to_string()) {
                    shown["rendered"] = product.to_json();
                }
            }
            let body = axum::body::Bytes::from(value.to_string());
            if rendered.lasting {
                state.build_answers.keep(&view, body.clone());
            }
            body
        }
    };
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

pub async fn constituents(State(state): State<AppState>, Path(id): Path<i64>) -> ApiResult<Json<Value>> {
    find_build(&state, id).await?;
    let ids = state.db.constituents_of(id).await?;
    Ok(Json(hydra::builds(&state.db.build_views(&ids).await?)))
}

pub async fn steps(State(state): State<AppState>, Path(id): Path<i64>) -> ApiResult<Json<Value>> {
    find_build(&state, id).await?;
    let steps = state.db.build_steps(id).await?;
    Ok(Json(Value::Array(steps.iter().map(hydra::step).collect())))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum LogMode {
    Whole,
    Tail,
}

impl LogMode {
    fn parse(mode: &str) -> ApiResult<LogMode> {
        match mode {
            "raw" => Ok(LogMode::Whole),
            "tail" => Ok(LogMode::Tail),
            other => Err(ApiError::not_found(format!("no log view ‘{other}’ (use raw or tail)"))),
        }
    }
}

/// A log as plain text: streamed whole, or its tail. Decompressed off the
/// async workers, a bounded number at once (see `logs`).
async fn log_response(state: &AppState, drv: &str, mode: LogMode) -> ApiResult<Response> {
    let drv = StorePath::parse(drv).map_err(|e| ApiError::not_found(e.to_string()))?;
    let missing = || ApiError::not_found(format!("there is no log of {drv}"));
    let failed = |e: std::io::Error| ApiError::internal(format!("cannot read the log: {e}"));
    let body = match mode {
        LogMode::Whole => {
            let stream = state.logs.stream(&drv).await.map_err(failed)?.ok_or_else(missing)?;
            axum::body::Body::from_stream(stream)
        }
        LogMode::Tail => {
            axum::body::Body::from(state.logs.tail(&drv, TAIL_LINES).await.map_err(failed)?.ok_or_else(missing)?)
        }
    };
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response())
}

/// The log a build's page shows: its own derivation's, or else that of the
/// step that made it fail.
pub(super) async fn build_log_drv(state: &AppState, id: i64) -> ApiResult<String> {
    let view = find_build(state, id).await?;
    let drv = StorePath::parse(&view.build.drv_path).map_err(|e| ApiError::not_found(e.to_string()))?;
    if state.logs.exists(&drv) {
        return Ok(view.build.drv_path.clone());
    }
    let steps = state.db.build_steps(id).await?;
    state
        .logs
        .build_log(&view.build.drv_path, &steps)
        .map(|drv| drv.to_string())
        .ok_or_else(|| ApiError::not_found(format!("build {id} has no log")))
}

pub async fn log(State(state): State<AppState>, Path(id): Path<i64>) -> ApiResult<Response> {
    let drv = build_log_drv(&state, id).await?;
    log_response(&state, &drv, LogMode::Whole).await
}

pub async fn log_mode(State(state): State<AppState>, Path((id, mode)): Path<(i64, String)>) -> ApiResult<Response> {
    let mode = LogMode::parse(&mode)?;
    let drv = build_log_drv(&state, id).await?;
    log_response(&state, &drv, mode).await
}

pub(super) async fn find_step(state: &AppState, id: i64, step_nr: i32) -> ApiResult<BuildStep> {
    state
        .db
        .build_step(id, step_nr)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("build {id} has no step {step_nr}")))
}

pub async fn step_log(State(state): State<AppState>, Path((id, step_nr)): Path<(i64, i32)>) -> ApiResult<Response> {
    let step = find_step(&state, id, step_nr).await?;
    log_response(&state, &step.drv_path, LogMode::Whole).await
}

pub async fn step_log_mode(
    State(state): State<AppState>,
    Path((id, step_nr, mode)): Path<(i64, i32, String)>,
) -> ApiResult<Response> {
    let step = find_step(&state, id, step_nr).await?;
    if mode == "live" {
        return live_log(&state, &step.drv_path, step.busy).await;
    }
    log_response(&state, &step.drv_path, LogMode::parse(&mode)?).await
}

/// Lines of a log sent first to a live reader: its tail, not all of it
/// (the whole log is a link away).
const LIVE_TAIL_LINES: usize = 1000;

/// Where a live log's stream of events is.
enum LiveStream {
    Start(Option<tokio::sync::broadcast::Receiver<crate::logs::LiveLine>>, LogPage),
    Following { lines: tokio::sync::broadcast::Receiver<crate::logs::LiveLine>, have: u64 },
    Ending,
    Done,
}

/// A server-sent event whose data is `text` as a JSON string.
fn json_event(kind: &str, text: &str) -> axum::response::sse::Event {
    let data = serde_json::Value::String(text.to_owned()).to_string();
    axum::response::sse::Event::default().event(kind).data(data)
}

/// A reader that fell further behind than this is told so, not sent it all.
const MAX_CATCH_UP: u64 = 1 << 20;

/// `GET /build/N/nixlog/STEP/live`: the step's log as server-sent events,
/// each a JSON string (so that an empty line is still an event) —
/// `tail` (its last lines so far), then `line` for each line written (or
/// several, when lines are caught up from the file: those written before
/// the reader came, or while it fell behind), and `end` when the step is
/// over. A step marked running whose log is not being written yet (it is
/// about to start, or to be retried) gets its tail and no `end`: the
/// browser comes back a few seconds later.
async fn live_log(state: &AppState, drv: &str, busy: bool) -> ApiResult<Response> {
    use axum::response::sse::{KeepAlive, Sse};
    use tokio::sync::broadcast::error::RecvError;

    let drv = StorePath::parse(drv).map_err(|e| ApiError::not_found(e.to_string()))?;
    // Following first, then reading: no line falls between the two.
    let lines = state.logs.follow(&drv);
    // Parts of the log file, as pages (whole lines, and how long the log is).
    let read = {
        let (logs, drv) = (state.logs.clone(), drv.clone());
        move |window: Window, length: u64| {
            let (logs, drv) = (logs.clone(), drv.clone());
            async move {
                logs.page(&drv, window, length)
                    .await
                    .map(|page| page.unwrap_or(LogPage { from: 0, to: 0, text: Vec::new(), total: 0 }))
            }
        }
    };
    let page =
        read(Window::Tail, MAX_CATCH_UP).await.map_err(|e| ApiError::internal(format!("cannot read the log: {e}")))?;
    let stream = futures_util::stream::unfold(LiveStream::Start(lines, page), move |state| {
        let read = read.clone();
        async move {
            match state {
                LiveStream::Start(lines, page) => {
                    let tail = String::from_utf8_lossy(tail_lines(&page.text, LIVE_TAIL_LINES)).into_owned();
                    let tail = tail.strip_suffix('\n').unwrap_or(&tail);
                    let next = match lines {
                        Some(lines) => LiveStream::Following { lines, have: page.total },
                        None if busy => LiveStream::Done,
                        None => LiveStream::Ending,
                    };
                    Some((json_event("tail", tail), next))
                }
                LiveStream::Following { mut lines, have } => loop {
                    match lines.recv().await {
                        Ok(line) if line.offset < have => continue,
                        Ok(line) => {
                            let mut text = String::new();
                            if line.offset - have > MAX_CATCH_UP {
                                text.push_str(&format!(
                                    "… {} bytes not shown here: see the whole log …\n",
                                    line.offset - have
                                ));
                            } else if line.offset > have {
                                // Lines written before this reader came, or
                                // while it lagged: they are in the file.
                                let missed = line.offset - have;
                                let page = read(Window::From(have), missed).await.ok()?;
                                text.push_str(&String::from_utf8_lossy(&page.text));
                                if page.total < line.offset {
                                    // Lines the writer had not flushed when this reader fell behind.
                                    text.push_str("… some lines are not shown here: see the whole log …\n");
                                }
                            }
                            text.push_str(&line.text);
                            let have = line.offset + line.text.len() as u64 + 1;
                            break Some((json_event("line", &text), LiveStream::Following { lines, have }));
                        }
                        // The lines missed are caught up from the file with the next one.
                        Err(RecvError::Lagged(_)) => continue,
                        Err(RecvError::Closed) => {
                            break Some((json_event("end", "the step is over"), LiveStream::Done));
                        }
                    }
                },
                LiveStream::Ending => Some((json_event("end", "the step is over"), LiveStream::Done)),
                LiveStream::Done => None,
            }
        }
    })
    .map(Ok::<_, std::convert::Infallible>);
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()).into_response())
}

/// The project a build belongs to, for rights.
async fn project_of(state: &AppState, view: &BuildView) -> ApiResult<crate::db::Project> {
    super::find_project(state, &view.project).await
}

/// Of these builds to restart, those that can be built again, rooted at
/// once (not at the next full update, lest a collection meanwhile take
/// what they need), and those whose derivation was garbage-collected.
pub(super) async fn restartable(state: &AppState, ids: &[i64]) -> ApiResult<(Vec<i64>, Vec<(i64, StorePath)>)> {
    if let Some(problem) = &state.nix_problem {
        return Err(ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            format!("nothing can be built here: {problem}"),
        ));
    }
    let derivations = state.db.drv_paths_of(ids).await?;
    let mut outputs = state.db.outputs_of(ids).await?;
    if let Some(gc) = &state.gc {
        let paths: Vec<String> = derivations
            .iter()
            .flat_map(|(id, drv)| {
                outputs.remove(id).unwrap_or_default().into_iter().map(|(_, path)| path).chain([drv.clone()])
            })
            .collect();
        gc.root(&paths).await;
    }
    let parsed: Vec<(i64, StorePath)> =
        derivations.into_iter().filter_map(|(id, drv)| StorePath::parse(&drv).ok().map(|drv| (id, drv))).collect();
    let drvs: Vec<StorePath> = parsed.iter().map(|(_, drv)| drv.clone()).collect();
    let invalid = state.nix.invalid_paths(&drvs).await.map_err(|e| ApiError::internal(e.to_string()))?;
    let (gone, present): (Vec<_>, Vec<_>) = parsed.into_iter().partition(|(_, drv)| invalid.contains(drv));
    Ok((present.into_iter().map(|(id, _)| id).collect(), gone))
}

/// `restart`, `cancel`, `bump`: act, then 302 to the build.
pub async fn action(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, action)): Path<(i64, String)>,
) -> ApiResult<Response> {
    let view = find_build(&state, id).await?;
    let needed = match action.as_str() {
        "restart" => Action::RestartBuild,
        "cancel" => Action::CancelBuild,
        "bump" => Action::BumpBuild,
        other => return Err(ApiError::not_found(format!("builds have no action ‘{other}’"))),
    };
    require_on(&state, &caller, needed, &project_of(&state, &view).await?).await?;
    match action.as_str() {
        "restart" => {
            if !view.build.finished {
                return Err(ApiError::bad_request(format!("build {id} is not finished, so it cannot be restarted")));
            }
            let (_, gone) = restartable(&state, &[id]).await?;
            if let Some((_, drv)) = gone.first() {
                return Err(ApiError::new(
                    axum::http::StatusCode::CONFLICT,
                    format!(
                        "build {id} cannot be built again: its derivation {drv} was garbage-collected too; \
                         the next evaluation of its jobset that has this job builds it again"
                    ),
                ));
            }
            state.db.restart_builds(&[id]).await?;
        }
        "cancel" => {
            if view.build.finished {
                return Err(ApiError::bad_request(format!(
                    "build {id} has already finished, so it cannot be cancelled"
                )));
            }
            state.db.cancel_builds(&[id]).await?;
        }
        "bump" => {
            state.db.bump_builds(&[id]).await?;
        }
        other => {
            return Err(ApiError::not_found(format!("builds have no action ‘{other}’")));
        }
    }
    state.queue.wake();
    Ok(redirect(&state, &format!("/build/{id}")))
}

pub async fn keep(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, keep)): Path<(i64, String)>,
) -> ApiResult<Response> {
    let view = find_build(&state, id).await?;
    require_on(&state, &caller, Action::KeepBuild, &project_of(&state, &view).await?).await?;
    let keep = match keep.as_str() {
        "1" => true,
        "0" => false,
        other => {
            return Err(ApiError::bad_request(format!("keep is 0 or 1, not {other:?}")));
        }
    };
    state.db.set_keep(id, keep).await?;
    if let Some(gc) = &state.gc {
        if keep {
            // Rooted at once: it is kept from now on, not from the next update.
            gc.root(&view.outputs.iter().map(|(_, path)| path.clone()).collect::<Vec<_>>()).await;
        } else {
            gc.wake();
        }
    }
    Ok(redirect(&state, &format!("/build/{id}")))
}

/// `/build/N/download/NR[/PATH]`: a product's file (or a file inside a
/// product directory), in a sandbox: the page may run scripts but never
/// as this server's origin, and nothing outside the product is reachable.
pub async fn download(State(state): State<AppState>, Path((id, nr)): Path<(i64, i32)>) -> ApiResult<Response> {
    serve_product(&state, id, nr, "").await
}

pub async fn download_path(
    State(state): State<AppState>,
    Path((id, nr, path)): Path<(i64, i32, String)>,
) -> ApiResult<Response> {
    serve_product(&state, id, nr, &path).await
}

async fn serve_product(state: &AppState, id: i64, nr: i32, subpath: &str) -> ApiResult<Response> {
    let view = find_build(state, id).await?;
    let product = view
        .products
        .iter()
        .find(|p| p.product_nr == nr)
        .ok_or_else(|| ApiError::not_found(format!("build {id} has no product {nr}")))?;
    if let Some(error) = &product.error {
        return Err(ApiError::not_found(format!("product {nr} of build {id} is not served: {error}")));
    }
    // A restarted build keeps its old products until it finishes again;
    // its outputs may be being rebuilt meanwhile.
    if !view.build.finished {
        return Err(ApiError::not_found(format!("build {id} is not finished: its products are served once it is")));
    }
    // The output that holds the product (a store path, never anything a
    // job claimed): links are resolved against it, and whatever they lead
    // to must still be inside it.
    let output = view
        .outputs
        .iter()
        .map(|(_, path)| path)
        .filter(|path| StorePath::parse(path).is_ok())
        .find(|path| std::path::Path::new(&product.path).starts_with(path))
        .ok_or_else(|| ApiError::not_found(format!("product {nr} of build {id} is not inside one of its outputs")))?
        .clone();
    let relative = std::path::Path::new(subpath);
    if relative.components().any(|c| !matches!(c, std::path::Component::Normal(_))) {
        return Err(ApiError::not_found(format!("{subpath:?} is not a path inside product {nr}")));
    }
    let product_path = std::path::PathBuf::from(&product.path);
    let subpath_owned = relative.to_owned();
    let opened = tokio::task::spawn_blocking(move || -> Result<Opened, Refused> {
        let root = Confined::open(std::path::Path::new(&output))?;
        let product_root = root.resolve_named(&product_path)?;
        if subpath_owned.as_os_str().is_empty() && product_root.is_dir() {
            return Ok(Opened::Directory);
        }
        let path = product_path.join(&subpath_owned);
        let (file, metadata) = root.open_named_file(&path)?;
        Ok(Opened::File { file, length: metadata.len(), name: path })
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?;
    let (file, length, name) = match opened {
        Ok(Opened::File { file, length, name }) => (file, length, name),
        Ok(Opened::Directory) => {
            if !product.default_path.is_empty() {
                // Checked at ingestion to be plain names; encoded all the same.
                let encoded: Vec<String> = product
                    .default_path
                    .split('/')
                    .filter(|part| !part.is_empty())
                    .map(|part| utf8_percent_encode(part, PATH_SEGMENT).to_string())
                    .collect();
                let target = format!("/build/{id}/download/{nr}/{}", encoded.join("/"));
                return Ok(redirect(state, &target));
            }
            return Err(ApiError::not_found(format!("product {nr} is a directory: name a file in it")));
        }
        Err(Refused::Missing(_)) if subpath.is_empty() => {
            return Err(ApiError::not_found(format!("{} is no longer in the store", product.path)));
        }
        Err(Refused::Missing(_) | Refused::NotAFile(_)) => {
            return Err(ApiError::not_found(format!("product {nr} has no file {subpath:?}")));
        }
        Err(refused) => {
            return Err(ApiError::not_found(format!("product {nr} of build {id} is not served: {refused}")));
        }
    };
    let mime = mime_guess::from_path(&name).first_or_octet_stream();
    let body = axum::body::Body::from_stream(tokio_util::io::ReaderStream::new(tokio::fs::File::from_std(file)));
    Ok((
        [
            (header::CONTENT_TYPE, mime.essence_str().to_owned()),
            (header::CONTENT_LENGTH, length.to_string()),
            (header::CONTENT_SECURITY_POLICY, "sandbox allow-scripts".to_owned()),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_owned()),
        ],
        body,
    )
        .into_response())
}

/// What a product download found, checked to be inside its output.
enum Opened {
    Directory,
    File { file: std::fs::File, length: u64, name: std::path::PathBuf },
}
