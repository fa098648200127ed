//! `/build/N`: a build, its outputs, products, steps, dependencies and
//! the tail of a failed log, followed live while it runs.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;
use maud::{Markup, PreEscaped, html};

use super::pages::{SHOWN, action_button, build_list, crumb, nix_problem};
use super::{cell_badge, duration, layout, render, size, status_badge, time};
use crate::db::{BuildCell, BuildStep, BuildView};
use crate::nix::Derivation;
use crate::users::{Action, Caller};
use crate::web::auth::permitted;
use crate::web::extract::Path;
use crate::web::rendered::{RenderedProduct, render_products};
use crate::web::{ApiError, AppState, find_project};

/// Everything `/build/N` shows, read before anything is drawn.
struct BuildPage {
    view: BuildView,
    steps: Vec<BuildStep>,
    /// The first constituents of an aggregate, and how many it has.
    constituents: Vec<BuildView>,
    all_constituents: usize,
    rendered: Vec<(i32, Arc<RenderedProduct>)>,
    actions: BuildActions,
    /// The machine of its last step.
    machine: Option<String>,
    /// Its derivation, or why it cannot be read (collected, say).
    derivation: Result<Derivation, String>,
    /// Dependencies that are builds of this server, by derivation.
    dependency_builds: HashMap<String, BuildCell>,
    /// The end of its log, when it failed.
    failed_log_tail: Option<String>,
}

/// The buttons the caller gets.
#[derive(Debug, Clone, Copy, Default)]
struct BuildActions {
    restart: bool,
    cancel: bool,
    bump: bool,
    keep: bool,
}

pub async fn build(State(state): State<AppState>, caller: Caller, Path(id): Path<i64>) -> Response {
    let page = async {
        let page = load(&state, &caller, id).await?;
        let b = &page.view.build;
        let crumbs = [
            crumb(&page.view.project, format!("/project/{}", page.view.project)),
            crumb(&page.view.jobset, format!("/jobset/{}/{}", page.view.project, page.view.jobset)),
            crumb(&b.job, format!("/job/{}/{}/{}", page.view.project, page.view.jobset, b.job)),
        ];
        let body = html! { (nix_problem(&state)) (body(&page)) };
        Ok::<_, ApiError>(layout(&caller, &format!("Build {id}"), &crumbs, body))
    }
    .await;
    render(&caller, page)
}

/// Reads what the page shows.
async fn load(state: &AppState, caller: &Caller, id: i64) -> Result<BuildPage, ApiError> {
    let view = state
        .db
        .build_views(&[id])
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::not_found(format!("build {id} does not exist")))?;
    let b = &view.build;
    let steps = state.db.build_steps(id).await?;
    let (constituents, all_constituents) = if b.is_aggregate {
        let ids = state.db.constituents_of(id).await?;
        (state.db.build_views(&ids[..ids.len().min(SHOWN)]).await?, ids.len())
    } else {
        (Vec::new(), 0)
    };
    let rendered = render_products(state, &view).await.products;
    // Anonymous readers have no buttons: no need to read the project.
    let [restart, cancel, bump, keep] = match caller.user {
        None => [false; 4],
        Some(_) => {
            let project = find_project(state, &view.project).await?;
            let actions = [Action::RestartBuild, Action::CancelBuild, Action::BumpBuild, Action::KeepBuild];
            permitted(state, caller, &project, actions).await?
        }
    };
    let machine = steps.iter().rev().find(|s| !s.machine.is_empty()).map(|s| s.machine.clone());
    // Its dependencies, from its derivation (gone if it was collected).
    let derivation = match crate::nix::StorePath::parse(&b.drv_path) {
        Ok(path) => state.nix.read_derivation(&path).await.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    // Dependencies that are builds of this server, to link to.
    let dependency_builds = match &derivation {
        Ok(derivation) if !derivation.input_drvs.is_empty() => {
            let paths: Vec<String> =
                derivation.input_drvs.keys().take(DEPENDENCIES_SHOWN).map(|p| p.to_string()).collect();
            state.db.builds_of_derivations(&paths).await?
        }
        _ => Default::default(),
    };
    // A failed build shows the end of its log at once.
    let failed_log_tail = if b.finished && b.build_status != Some(crate::domain::BuildStatus::Succeeded.code()) {
        failed_log_tail(state, &b.drv_path, &steps).await
    } else {
        None
    };
    Ok(BuildPage {
        view,
        steps,
        constituents,
        all_constituents,
        rendered,
        actions: BuildActions { restart, cancel, bump, keep },
        machine,
        derivation,
        dependency_builds,
        failed_log_tail,
    })
}

/// The page's body: a pure function of what was read.
fn body(page: &BuildPage) -> Markup {
    let BuildPage {
        view,
        steps,
        constituents,
        all_constituents,
        rendered,
        actions,
        machine,
        derivation,
        dependency_builds,
        failed_log_tail,
    } = page;
    let BuildActions { restart, cancel, bump, keep } = *actions;
    let (b, all_constituents) = (&view.build, *all_constituents);
    let id = b.id;
    html! {
        p { @if !b.finished && steps.iter().any(|s| s.busy) { span.badge.queued { "running" } }
            @else { (status_badge(b.finished, b.build_status)) }
            @if b.is_cached_build == Some(true) { " " span.muted { "(cached: its outputs were already in the store)" } } }
        div.actions {
            @if restart && b.finished { (action_button(&format!("/build/{id}/restart"), "Restart")) }
            @if cancel && !b.finished { (action_button(&format!("/build/{id}/cancel"), "Cancel")) }
            @if bump && !b.finished { (action_button(&format!("/build/{id}/bump"), "Build first")) }
            @if keep && b.finished {
                @if b.keep { (action_button(&format!("/build/{id}/keep/0"), "Stop keeping")) }
                @else { (action_button(&format!("/build/{id}/keep/1"), "Keep")) }
            }
        }
        dl {
            dt { "Job" } dd { a href=(format!("/job/{}/{}/{}", view.project, view.jobset, b.job)) { (view.project) ":" (view.jobset) ":" (b.job) } }
            dt { "Name" } dd { (b.nix_name) }
            dt { "System" } dd { (b.system) }
            dt { "Queued" } dd { (time(Some(b.timestamp))) }
            dt { "Started" } dd { (time(b.start_time)) }
            dt { "Finished" } dd { (time(b.stop_time)) }
            @if let (Some(start), Some(stop)) = (b.start_time, b.stop_time) { dt { "Duration" } dd { (duration(stop - start)) } }
            @if let Some(machine) = &machine { dt { "Machine" } dd { (machine) } }
            @if let Some(size_) = b.closure_size { dt { "Closure size" } dd { (size(size_)) } }
            dt { "Derivation" } dd { code { (b.drv_path) } }
            dt { "Evaluations" } dd {
                @for eval in view.evals.iter().take(SHOWN) { a href=(format!("/eval/{eval}")) { (eval) } " " }
                @if view.evals.len() > SHOWN { "and " (view.evals.len() - SHOWN) " more" }
            }
        }
        h2 { "Outputs" }
        @if b.outputs_collected {
            p.error { "Its outputs were collected from the store (garbage-collected): restart it to build them again." }
        }
        div.scroll { table { tbody { @for (name, path) in &view.outputs { tr { td { (name) } td { code { (path) } } } } } } }
        @if let Some(tail) = &failed_log_tail {
            h2 { "The end of its log" }
            pre.log { (tail) }
            p { a href=(format!("/build/{id}/log")) { "The whole log" } }
        }
        @if let Some(errors) = &b.output_errors {
            h2 { "Problems with its outputs" }
            ul.error { @for error in errors.lines() { li { (error) } } }
        }
        @if !view.products.is_empty() {
            h2 { "Products" }
            @for product in &view.products {
                @let shown = rendered.iter().find(|(nr, _)| *nr == product.product_nr).map(|(_, r)| &r.shown);
                div.product {
                    h3 { (product.name) " " span.muted { (product.kind) " " (product.subtype) } }
                    @if let Some(error) = &product.error {
                        p.error { "Not served: " (error) }
                    } @else {
                    @match shown.and_then(|shown| shown.html()) {
                        // Sanitised by `rendered.rs` (no scripts, styles or event handlers).
                        Some(fragment) => { (PreEscaped(fragment)) }
                        None => {
                            @if let Some(error) = shown.and_then(|shown| shown.error()) { p.error { (error) } }
                            a href=(format!("/build/{id}/download/{}", product.product_nr)) { "Download" }
                        }
                    }
                    }
                }
            }
        }
        @if !constituents.is_empty() {
            h2 { "Constituents" }
            (build_list(&constituents.iter().map(|c| BuildCell { id: c.build.id, job: c.build.job.clone(), finished: c.build.finished, status: c.build.build_status }).collect::<Vec<_>>()))
            @if all_constituents > SHOWN { p.muted { "and " (all_constituents - SHOWN) " more: see " a href=(format!("/build/{id}/constituents")) { "all of them" } } }
        }
        h2 { "Steps" }
        @if steps.is_empty() { p.muted { "Nothing was built for this build." } } @else {
            div.scroll { table {
                thead { tr { th { "#" } th { "Derivation" } th { "Machine" } th { "Duration" } th { "Status" } th { "Log" } } }
                tbody { @for step in steps.iter() { tr {
                    td { (step.step_nr) }
                    td { code { (step.drv_path) } }
                    td { (step.machine) }
                    td { @if let (Some(start), Some(stop)) = (step.start_time, step.stop_time) { (duration(stop - start)) } }
                    td { @if step.busy { span.badge.queued { "running" } } @else { (status_badge(true, step.status)) }
                         @if crate::db::StepType::from_code(step.kind) == crate::db::StepType::Substitution { " " span.badge.substituted { "substituted" } } }
                    td { a href=(format!("/build/{id}/nixlog/{}", step.step_nr)) { "log" } " "
                         a href=(format!("/build/{id}/nixlog/{}/raw", step.step_nr)) { "raw" } }
                } } }
            } }
        }
        h2 { "Dependencies" }
        @match &derivation {
            Err(error) => { p.muted { "Its derivation cannot be read: " (error) } }
            Ok(derivation) if derivation.input_drvs.is_empty() => { p.muted { "No derivation inputs." } }
            Ok(derivation) => {
                p.muted { (derivation.input_drvs.len()) " derivations and " (derivation.input_srcs.len()) " sources go into it." }
                div.scroll { table.deps {
                    thead { tr { th { "Derivation" } th { "Outputs used" } th { "Built by" } } }
                    tbody { @for (input, outputs) in derivation.input_drvs.iter().take(DEPENDENCIES_SHOWN) {
                        @let step = steps.iter().rev().find(|s| s.drv_path == input.as_str());
                        tr {
                            td { code title=(input) { (input.name()) } }
                            td { (outputs.iter().map(String::as_str).collect::<Vec<_>>().join(", ")) }
                            td { @match step {
                                Some(step) => {
                                    a href=(format!("/build/{id}/nixlog/{}", step.step_nr)) { "step " (step.step_nr) } " "
                                    @if step.busy { span.badge.queued { "running" } } @else { (status_badge(true, step.status)) }
                                }
                                None => {
                                    @match dependency_builds.get(input.as_str()) {
                                        Some(cell) => { "build " (cell_badge(cell)) " " a href=(format!("/build/{}", cell.id)) { (cell.id) } }
                                        None => { span.muted { "—" } }
                                    }
                                }
                            } }
                        }
                    } }
                } }
                @if derivation.input_drvs.len() > DEPENDENCIES_SHOWN { p.muted { "and " (derivation.input_drvs.len() - DEPENDENCIES_SHOWN) " more" } }
            }
        }
        @for step in steps.iter().filter(|s| s.busy) {
            h2 { "Step " (step.step_nr) " is running" }
            p.muted { "Its log, as it is written. " a href=(format!("/build/{id}/nixlog/{}", step.step_nr)) { "The whole log" } }
            pre.log data-live=(format!("/build/{id}/nixlog/{}/live", step.step_nr)) {}
        }
        @if steps.iter().any(|s| s.busy) { script { (PreEscaped(LIVE_LOG_SCRIPT)) } }
        p { a href=(format!("/build/{id}/log")) { "The build's log" } }
    }
}

/// Dependencies listed on a build's page.
const DEPENDENCIES_SHOWN: usize = 200;
/// Lines of a failed build's log shown on its page.
const FAILED_TAIL_LINES: usize = 30;

/// The last lines of a failed build's log, if it has one.
async fn failed_log_tail(state: &AppState, build_drv: &str, steps: &[crate::db::BuildStep]) -> Option<String> {
    let drv = state.logs.build_log(build_drv, steps)?;
    let tail = state.logs.tail(&drv, FAILED_TAIL_LINES).await.ok()??;
    Some(crate::nix::strip_ansi(&String::from_utf8_lossy(&tail)))
}

/// Follows running steps' logs: the tail first, then each line as it is
/// written. At most `MAX` lines stay on the page, so that a log of many
/// megabytes does not freeze the browser; the whole log is a link away.
const LIVE_LOG_SCRIPT: &str = r#"
for (const pre of document.querySelectorAll("pre[data-live]")) {
  const MAX = 5000;
  const source = new EventSource(pre.dataset.live);
  const add = (text) => {
    for (const line of text.split("\n")) pre.append(line + "\n");
    while (pre.childNodes.length > MAX) pre.firstChild.remove();
    pre.scrollTop = pre.scrollHeight;
  };
  source.addEventListener("tail", (e) => { pre.textContent = ""; const t = JSON.parse(e.data); if (t) add(t); });
  source.addEventListener("line", (e) => add(JSON.parse(e.data)));
  source.addEventListener("end", () => { source.close(); pre.dataset.state = "finished"; });
}
"#;
