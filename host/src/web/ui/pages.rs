//! The pages: overview, project, jobset, evaluation, job, queue, machines,
//! login (the build page is `build_page.rs`).

use axum::extract::State;
use axum::response::Response;
use maud::{Markup, html};
use serde::Deserialize;

use super::{cell_badge, duration, layout, pager, render, size, status_badge, time};
use crate::db::{BuildCell, EvalComparison, StatusFilter};
use crate::users::{Action, Caller};
use crate::web::auth::permitted;
use crate::web::extract::{Path, Query};
use crate::web::{ApiError, AppState, find_jobset, find_project};

/// Rows per page of a list; columns (evaluations) of the jobset's matrix.
const PAGE: u64 = 100;
const MATRIX_EVALS: u64 = 10;
/// Jobs listed per kind of change in a comparison.
const CHANGES_SHOWN: usize = 50;
/// Builds in a job's history and plots.
const HISTORY: u64 = 100;

#[derive(Debug, Default, Deserialize)]
pub struct Paging {
    #[serde(default)]
    offset: u64,
    #[serde(default)]
    status: Option<String>,
}

impl Paging {
    /// The offset asked for, bounded (the database takes signed numbers;
    /// no page is that far anyway).
    fn offset(&self) -> u64 {
        self.offset.min(1 << 40)
    }
}

/// Evaluation errors, constituents and evaluations of a build shown at most.
pub(super) const SHOWN: usize = 50;

/// A button that posts to `action`. Forms of this server's pages carry its
/// Origin, which is what lets a session's POST through (`auth.rs`).
pub(super) fn action_button(action: &str, label: &str) -> Markup {
    html! { form.action method="post" action=(action) { button type="submit" { (label) } } }
}

fn is_web_link(url: &str) -> bool {
    let lower = url.trim_start().to_ascii_lowercase();
    lower.starts_with("https://") || lower.starts_with("http://")
}

pub(super) fn crumb(label: impl Into<String>, href: impl Into<String>) -> (String, String) {
    (label.into(), href.into())
}

pub async fn overview(State(state): State<AppState>, caller: Caller) -> Response {
    let page = async {
        let projects = state.db.projects().await?;
        let jobsets = state.db.jobsets_by_project().await?;
        let create = caller.check(Action::CreateProject, None).is_ok() && caller.user.is_some();
        Ok::<_, ApiError>(html! {
            @if create { div.actions { a href="/new-project" { "New project" } } }
            @if projects.is_empty() {
                p.muted { "No projects yet." }
            } @else {
                div.scroll { table {
                    thead { tr { th { "Project" } th { "Description" } th { "Jobsets" } } }
                    tbody {
                        @for project in projects.iter().filter(|p| !p.hidden || caller.user.is_some()) {
                            tr {
                                td { a href=(format!("/project/{}", project.name)) { (project.display_name) }
                                     @if !project.enabled { " " span.muted { "(disabled)" } } }
                                td { (project.description) }
                                td { (jobsets.get(&project.id).map_or(0, Vec::len)) }
                            }
                        }
                    }
                } }
            }
        })
    }
    .await;
    render(&caller, page.map(|body| layout(&caller, "Projects", &[], body)))
}

pub async fn project(State(state): State<AppState>, caller: Caller, Path(name): Path<String>) -> Response {
    let page = async {
        let project = find_project(&state, &name).await?;
        let jobsets = state.db.jobsets_of(project.id).await?;
        let counts = state.db.jobset_counts(project.id).await?;
        let [edit, edit_jobsets] = permitted(&state, &caller, &project, [Action::EditProject, Action::EditJobset]).await?;
        let add_jobset = project.declarative().is_none() && edit_jobsets;
        let body = html! {
            div.actions {
                @if edit { a href=(format!("/project/{}/edit", project.name)) { "Edit" } }
                @if add_jobset { a href=(format!("/project/{}/new-jobset", project.name)) { "New jobset" } }
            }
            @if !project.description.is_empty() { p { (project.description) } }
            dl {
                dt { "Owner" } dd { (project.owner) }
                @if !project.homepage.is_empty() {
                    dt { "Homepage" }
                    // Only web links are links: a `javascript:` homepage must not run.
                    dd { @if is_web_link(&project.homepage) { a href=(project.homepage) rel="nofollow noopener" { (project.homepage) } }
                         @else { (project.homepage) } }
                }
                @if let Some(declarative) = project.declarative() {
                    dt { "Declarative spec" }
                    dd { code { (declarative.file) } " in " (declarative.kind) " " code { (declarative.value) } }
                    dt { "Spec read" } dd { (time(project.declarative_checked_time)) }
                }
            }
            @if let Some(error) = &project.declarative_error {
                h2 { "The spec was not applied" }
                pre.error { (error) }
            }
            @let release_sets = project.release_sets();
            @if !release_sets.is_empty() {
                h2 { "Release sets" }
                ul { @for (name, definition) in &release_sets {
                    li { a href=(format!("/project/{}/releaseset/{name}", project.name)) { (name) }
                         @if !definition.description.is_empty() { " " span.muted { (definition.description) } } }
                } }
            }
            h2 { "Jobsets" }
            div.scroll { table {
                thead { tr { th { "Jobset" } th { "Description" } th { "Last checked" } th { "Succeeded" } th { "Failed" } th { "Queued" } } }
                tbody {
                    @for jobset in jobsets.iter().filter(|j| !j.hidden || caller.user.is_some()) {
                        @let count = counts.get(&jobset.id).cloned().unwrap_or_default();
                        tr {
                            td { a href=(format!("/jobset/{}/{}", project.name, jobset.name)) { (jobset.name) }
                                 @if jobset.enabled == 0 { " " span.muted { "(disabled)" } } }
                            td { (jobset.description) }
                            td { (time(jobset.last_checked_time)) }
                            td.ok { (count.succeeded) } td.fail { (count.failed) } td.queued { (count.scheduled) }
                        }
                    }
                }
            } }
        };
        Ok::<_, ApiError>(layout(&caller, &project.display_name, &[crumb(&project.name, format!("/project/{}", project.name))], body))
    }
    .await;
    render(&caller, page)
}

pub async fn jobset(
    State(state): State<AppState>,
    caller: Caller,
    Path((project_name, jobset_name)): Path<(String, String)>,
    Query(paging): Query<Paging>,
) -> Response {
    let page = async {
        let (project, jobset) = find_jobset(&state, &project_name, &jobset_name).await?;
        let inputs = state.db.jobset_inputs(jobset.id).await?;
        let (evals, total_evals) = state.db.jobset_evals(jobset.id, 0, MATRIX_EVALS).await?;
        let matrix = state.db.job_matrix(&evals, paging.offset(), PAGE).await?;
        let errors = match evals.first() {
            Some(latest) if latest.nr_errors > 0 => state.db.eval_errors(latest.id).await?,
            _ => Vec::new(),
        };
        let base = format!("/jobset/{}/{}", project.name, jobset.name);
        let [evaluate, edit_jobsets] =
            permitted(&state, &caller, &project, [Action::TriggerEval, Action::EditJobset]).await?;
        let edit = project.declarative().is_none() && edit_jobsets;
        let body = html! {
            div.actions {
                @if evaluate { (action_button(&format!("{base}/evaluate"), "Evaluate now")) }
                @if edit { a href=(format!("{base}/edit")) { "Edit" } }
            }
            @if !jobset.description.is_empty() { p { (jobset.description) } }
            dl {
                @if jobset.kind == crate::projects::spec::FLAKE {
                    dt { "Flake" } dd { code { (jobset.flake.clone().unwrap_or_default()) } }
                } @else {
                    dt { "Expression" } dd { code { (jobset.nixexpr_path) } " in input " code { (jobset.nixexpr_input) } }
                }
                @if let Some(started) = jobset.start_time {
                    dt { "Evaluating" } dd.evaluation-progress {
                        "since " (time(Some(started)))
                        @if let Some(progress) = crate::web::json::eval_progress(&jobset) {
                            @if let Some(total) = progress.total {
                                ": " (progress.evaluated) " of " (total) " jobs "
                                progress max=(total) value=(progress.evaluated) {}
                            } @else {
                                ": " (progress.evaluated) " jobs so far"
                            }
                        }
                    }
                }
                dt { "Last checked" } dd { (time(jobset.last_checked_time)) " " span.muted { (jobset.last_check_outcome.clone().unwrap_or_default()) } }
                dt { "Checked" } dd {
                    @if jobset.check_interval == 0 { "on push only" } @else { "every " (duration(i64::from(jobset.check_interval))) }
                }
                dt { "Evaluations" } dd { a href=(format!("{base}/evals")) { (total_evals) } }
            }
            @if let Some(error) = jobset.fetch_error_msg.as_ref().filter(|e| !e.is_empty()) {
                h2 { "Fetching an input failed" } pre.error { (error) }
            }
            @if let Some(error) = jobset.error_msg.as_ref().filter(|e| !e.is_empty()) {
                h2 { "The last evaluation failed" } pre.error { (error) }
            }
            @if !errors.is_empty() {
                h2 { "Jobs that failed to evaluate in the last evaluation" }
                @for error in errors.iter().take(SHOWN) {
                    details { summary { code { (error.job.clone().unwrap_or_default()) } } pre.error { (error.message) } }
                }
                @if errors.len() > SHOWN { p.muted { "and " (errors.len() - SHOWN) " more: see " a href=(format!("/eval/{}", evals[0].id)) { "the evaluation" } } }
            }
            @if !inputs.is_empty() {
                h2 { "Inputs" }
                div.scroll { table {
                    thead { tr { th { "Name" } th { "Type" } th { "Value" } } }
                    tbody { @for input in &inputs { tr { td { (input.name) } td { (input.kind) } td { code { (input.value) } } } } }
                } }
            }
            h2 { "Jobs" }
            @if evals.is_empty() {
                p.muted { "Not evaluated yet." }
            } @else {
                div.scroll { table.matrix {
                    thead { tr {
                        th { "Job" }
                        @for eval in &evals { th { a href=(format!("/eval/{}", eval.id)) { (eval.id) } } }
                    } }
                    tbody { @for job in &matrix.jobs { tr {
                        td { a href=(format!("/job/{}/{}/{job}", project.name, jobset.name)) { (job) } }
                        @for eval in &evals {
                            td { @if let Some(cell) = matrix.cells.get(&(eval.id, job.clone())) { (cell_badge(cell)) } }
                        }
                    } } }
                } }
                (pager(&base, paging.offset(), PAGE, matrix.total_jobs))
            }
        };
        let crumbs = [crumb(&project.name, format!("/project/{}", project.name)), crumb(&jobset.name, base.clone())];
        Ok::<_, ApiError>(layout(&caller, &format!("{}:{}", project.name, jobset.name), &crumbs, body))
    }
    .await;
    render(&caller, page)
}

fn filter_of(status: Option<&str>) -> StatusFilter {
    match status {
        Some("queued") => StatusFilter::Queued,
        Some("succeeded") => StatusFilter::Succeeded,
        Some("failed") => StatusFilter::Failed,
        _ => StatusFilter::All,
    }
}

pub(super) fn build_list(cells: &[BuildCell]) -> Markup {
    html! {
        div.scroll { table {
            thead { tr { th { "Build" } th { "Job" } th { "Status" } } }
            tbody { @for cell in cells { tr {
                td { a href=(format!("/build/{}", cell.id)) { (cell.id) } }
                td { (cell.job) }
                td { (status_badge(cell.finished, cell.status)) }
            } } }
        } }
    }
}

fn changes(comparison: &EvalComparison) -> Markup {
    let section = |title: &str, cells: &[BuildCell]| {
        html! {
            @if !cells.is_empty() {
                h3 { (title) " (" (cells.len()) ")" }
                (build_list(&cells[..cells.len().min(CHANGES_SHOWN)]))
                @if cells.len() > CHANGES_SHOWN { p.muted { "and " (cells.len() - CHANGES_SHOWN) " more" } }
            }
        }
    };
    html! {
        (section("Newly failing", &comparison.newly_failing))
        (section("Newly succeeding", &comparison.newly_succeeding))
        (section("New jobs", &comparison.new_jobs))
        (section("Removed jobs", &comparison.removed_jobs))
        p.muted { (comparison.unchanged) " jobs unchanged." }
    }
}

pub async fn eval(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
    Query(paging): Query<Paging>,
) -> Response {
    let page = async {
        let (eval, project, jobset) = state
            .db
            .eval_with_jobset(id)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("evaluation {id} does not exist")))?;
        let inputs = state.db.eval_inputs(&[id]).await?.remove(&id).unwrap_or_default();
        let status = paging.status.as_deref();
        let (cells, total) = state.db.eval_cells(&eval, filter_of(status), paging.offset(), PAGE).await?;
        let previous = state.db.previous_eval(&eval).await?;
        // On the first page only.
        let comparison = match &previous {
            Some(previous) if paging.offset() == 0 && status.is_none() => {
                Some(state.db.compare_evals(&eval, previous).await?)
            }
            _ => None,
        };
        let base = match status {
            Some(status) => format!("/eval/{id}?status={status}"),
            None => format!("/eval/{id}"),
        };
        let body = html! {
            dl {
                dt { "Jobset" } dd { a href=(format!("/jobset/{}/{}", project.name, jobset.name)) { (project.name) ":" (jobset.name) } }
                dt { "Evaluated" } dd { (time(Some(eval.timestamp))) }
                dt { "Fetching, evaluating" } dd { (duration(eval.checkout_time)) ", " (duration(eval.eval_time)) }
                @if let Some(flake) = &eval.flake { dt { "Flake" } dd { code { (flake) } } }
                dt { "Builds" } dd { (eval.nr_builds) @if eval.nr_errors > 0 { ", " span.fail { (eval.nr_errors) " jobs failed to evaluate" } } }
            }
            @if !inputs.is_empty() {
                h2 { "Inputs" }
                div.scroll { table {
                    thead { tr { th { "Name" } th { "Type" } th { "Value" } th { "Revision" } } }
                    tbody { @for input in &inputs { tr {
                        td { (input.name) } td { (input.kind) }
                        td { code { (input.uri.clone().or_else(|| input.value.clone()).unwrap_or_default()) } }
                        td { code { (input.revision.clone().unwrap_or_default()) } }
                    } } }
                } }
            }
            @if let (Some(previous), Some(comparison)) = (&previous, &comparison) {
                h2 { "Compared with evaluation " a href=(format!("/eval/{}", previous.id)) { (previous.id) } }
                (changes(comparison))
            }
            h2 { "Builds" }
            p.filters {
                @for (label, value) in [("all", None), ("failed", Some("failed")), ("succeeded", Some("succeeded")), ("queued", Some("queued"))] {
                    @let href = value.map_or(format!("/eval/{id}"), |v| format!("/eval/{id}?status={v}"));
                    a class=@if status == value { "current" } href=(href) { (label) }
                }
            }
            (build_list(&cells))
            (pager(&base, paging.offset(), PAGE, total))
        };
        let crumbs = [
            crumb(&project.name, format!("/project/{}", project.name)),
            crumb(&jobset.name, format!("/jobset/{}/{}", project.name, jobset.name)),
            crumb(format!("evaluation {id}"), format!("/eval/{id}")),
        ];
        Ok::<_, ApiError>(layout(&caller, &format!("Evaluation {id}"), &crumbs, body))
    }
    .await;
    render(&caller, page)
}

/// A line plot of `points` (oldest first) as inline SVG: no script, no
/// request more.
fn plot(title: &str, points: &[(i64, f64)], unit: impl Fn(f64) -> String) -> Markup {
    const W: f64 = 600.0;
    const H: f64 = 160.0;
    const PAD: f64 = 40.0;
    let max = points.iter().map(|(_, v)| *v).fold(0.0_f64, f64::max).max(1.0);
    let n = points.len().max(2) as f64 - 1.0;
    let coords: Vec<String> = points
        .iter()
        .enumerate()
        .map(|(i, (_, v))| {
            format!("{:.1},{:.1}", PAD + (W - 2.0 * PAD) * i as f64 / n, H - PAD / 2.0 - (H - PAD) * v / max)
        })
        .collect();
    html! {
        figure {
            figcaption { (title) }
            svg.plot viewBox=(format!("0 0 {W} {H}")) role="img" aria-label=(title) xmlns="http://www.w3.org/2000/svg" {
                line.axis x1=(PAD) y1=(H - PAD / 2.0) x2=(W - PAD) y2=(H - PAD / 2.0) {}
                line.axis x1=(PAD) y1=(PAD / 2.0) x2=(PAD) y2=(H - PAD / 2.0) {}
                text x="2" y=(PAD / 2.0 + 4.0) { (unit(max)) }
                text x="2" y=(H - PAD / 2.0) { "0" }
                polyline.line points=(coords.join(" ")) {}
            }
        }
    }
}

pub async fn job(
    State(state): State<AppState>,
    caller: Caller,
    Path((project_name, jobset_name, job)): Path<(String, String, String)>,
) -> Response {
    let page = async {
        let (project, jobset) = find_jobset(&state, &project_name, &jobset_name).await?;
        let history = state.db.job_history(jobset.id, &job, HISTORY).await?;
        if history.is_empty() {
            return Err(ApiError::not_found(format!("job ‘{project_name}:{jobset_name}:{job}’ has no builds")));
        }
        let finished: Vec<_> = history.iter().rev().filter(|b| b.finished && b.build_status == Some(0)).collect();
        let durations: Vec<(i64, f64)> = finished
            .iter()
            .filter(|b| b.is_cached_build != Some(true))
            .filter_map(|b| Some((b.id, (b.stop_time? - b.start_time?) as f64)))
            .collect();
        let sizes: Vec<(i64, f64)> = finished.iter().filter_map(|b| Some((b.id, b.closure_size? as f64))).collect();
        let body = html! {
            @if durations.len() >= 2 { (plot("Build duration (successful builds that ran)", &durations, |v| duration(v as i64))) }
            @if sizes.len() >= 2 { (plot("Closure size", &sizes, |v| size(v as i64))) }
            h2 { "Builds" }
            div.scroll { table {
                thead { tr { th { "Build" } th { "Finished" } th { "Duration" } th { "Closure" } th { "Status" } } }
                tbody { @for b in &history { tr {
                    td { a href=(format!("/build/{}", b.id)) { (b.id) } }
                    td { (time(b.stop_time)) }
                    td { @if let (Some(start), Some(stop)) = (b.start_time, b.stop_time) { (duration(stop - start)) } }
                    td { @if let Some(s) = b.closure_size { (size(s)) } }
                    td { (status_badge(b.finished, b.build_status)) }
                } } }
            } }
        };
        let crumbs = [
            crumb(&project.name, format!("/project/{}", project.name)),
            crumb(&jobset.name, format!("/jobset/{}/{}", project.name, jobset.name)),
            crumb(&job, format!("/job/{}/{}/{job}", project.name, jobset.name)),
        ];
        Ok(layout(&caller, &format!("{}:{}:{job}", project.name, jobset.name), &crumbs, body))
    }
    .await;
    render(&caller, page)
}

/// Builds in the queue's order, this many at most.
const QUEUE_SHOWN: u64 = 500;

pub async fn queue(State(state): State<AppState>, caller: Caller) -> Response {
    let page = async {
        let total = state.db.queued_count().await?;
        let rows = state.db.build_rows(&state.db.queue_view(QUEUE_SHOWN).await?).await?;
        let running = state.db.running_steps().await?;
        let body = html! {
            p { (total) " builds queued" @if total > QUEUE_SHOWN { " (the first " (QUEUE_SHOWN) " in the order they are built)" } "; " (running.len()) " steps running." }
            @if !running.is_empty() {
                h2 { "Running" }
                div.scroll { table {
                    thead { tr { th { "Build" } th { "Job" } th { "Step" } th { "Machine" } th { "Since" } } }
                    tbody { @for s in &running { tr {
                        td { a href=(format!("/build/{}", s.step.build_id)) { (s.step.build_id) } }
                        td { (s.project) ":" (s.jobset) ":" (s.job) }
                        td { code { (s.step.drv_path) } }
                        td { (s.step.machine) }
                        td { (time(s.step.start_time)) }
                    } } }
                } }
            }
            h2 { "Queued" }
            div.scroll { table {
                thead { tr { th { "Build" } th { "Job" } th { "System" } th { "Queued" } } }
                tbody { @for b in &rows { tr {
                    td { a href=(format!("/build/{}", b.id)) { (b.id) } }
                    td { (b.project) ":" (b.jobset) ":" (b.job) }
                    td { (b.system) }
                    td { (time(Some(b.timestamp))) }
                } } }
            } }
        };
        Ok::<_, ApiError>(layout(&caller, "Queue", &[], body))
    }
    .await;
    render(&caller, page)
}

pub async fn machines(State(state): State<AppState>, caller: Caller) -> Response {
    let body = html! {
        div.scroll { table {
            thead { tr { th { "Machine" } th { "Systems" } th { "Features" } th { "Jobs" } th { "Steps done" } th { "State" } } }
            tbody { @for m in state.machines.views() { tr {
                td { (m.spec.name) }
                td { (m.spec.systems.join(", ")) }
                td { (m.spec.supported_features.iter().map(String::as_str).collect::<Vec<_>>().join(", ")) }
                td { (m.running.len()) " / " (m.spec.max_jobs) }
                td { (m.steps_done) }
                td {
                    @if !m.enabled { span.badge.fail { "disabled" } }
                    @else if let Some(secs) = m.disabled_for_secs { span.badge.queued { "failing, retried in " (duration(secs as i64)) } }
                    @else { span.badge.ok { "up" } }
                    @if let Some((_, message)) = &m.last_failure { pre.error { (message) } }
                }
            } } }
        } }
    };
    render(&caller, Ok(layout(&caller, "Machines", &[], body)))
}

#[derive(Debug, Default, Deserialize)]
pub struct LoginQuery {
    #[serde(default)]
    failed: Option<String>,
}

pub async fn login(caller: Caller, Query(query): Query<LoginQuery>) -> Response {
    let body = html! {
        @if query.failed.is_some() { p.error role="alert" { "Wrong user name or password." } }
        (login_form())
    };
    render(&caller, Ok(layout(&caller, "Log in", &[], body)))
}

pub fn login_form() -> Markup {
    html! {
        form.stacked method="post" action="/login" {
            label { "User name" input type="text" name="username" autocomplete="username" required; }
            label { "Password" input type="password" name="password" autocomplete="current-password" required; }
            button type="submit" { "Log in" }
        }
    }
}

/// Why nothing is built on this server, when its Nix cannot build: on the
/// pages of builds and of the status.
pub fn nix_problem(state: &AppState) -> Markup {
    html! {
        @if let Some(problem) = &state.nix_problem {
            p.error.nix-problem { "Nothing is evaluated or built here: " (problem) "." }
        }
    }
}
