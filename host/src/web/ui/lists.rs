//! Pages that list across the server: evaluations (all, or a jobset's),
//! what is building now (status), and search.

use axum::extract::State;
use axum::response::Response;
use maud::{Markup, html};
use serde::Deserialize;

use super::pages::crumb;
use super::{duration, layout, render, status_badge, time};
use crate::db::{BuildCounts, BuildRow, JobsetEval};
use crate::users::Caller;
use crate::web::extract::{Path, Query};
use crate::web::{ApiError, AppState, find_jobset};

/// Evaluations a page lists.
const EVALS_PER_PAGE: u64 = 50;

#[derive(Debug, Default, Deserialize)]
pub struct PageNumber {
    #[serde(default)]
    page: Option<u64>,
}

impl PageNumber {
    /// The page asked for, from 1, bounded (offsets are signed 64-bit in
    /// the database).
    fn get(&self) -> u64 {
        self.page.unwrap_or(1).clamp(1, 1 << 30)
    }
}

/// Links to the first, previous, next and last pages of a numbered list.
fn page_links(base: &str, page: u64, total: u64, per_page: u64) -> Markup {
    let last = total.div_ceil(per_page).max(1);
    html! {
        nav.pager {
            @if page > 1 {
                a href=(format!("{base}?page=1")) { "« newest" }
                a href=(format!("{base}?page={}", page - 1)) { "← newer" }
            }
            span.muted { "page " (page.min(last)) " of " (last) }
            @if page < last {
                a href=(format!("{base}?page={}", page + 1)) { "older →" }
                a href=(format!("{base}?page={last}")) { "oldest »" }
            }
        }
    }
}

/// A table of evaluations with the state of their builds; `jobsets` names
/// each one's jobset when the list spans several.
fn eval_table(evals: &[(JobsetEval, Option<(String, String)>)]) -> Markup {
    let spans_jobsets = evals.iter().any(|(_, names)| names.is_some());
    html! {
        div.scroll { table {
            thead { tr {
                th { "Evaluation" } @if spans_jobsets { th { "Jobset" } } th { "Evaluated" }
                th { "Builds" } th { "Succeeded" } th { "Failed" } th { "Queued" } th { "Errors" }
            } }
            tbody { @for (eval, names) in evals {
                @let count = BuildCounts::of(eval);
                tr {
                    td { a href=(format!("/eval/{}", eval.id)) { (eval.id) } }
                    @if let Some((project, jobset)) = names {
                        td { a href=(format!("/jobset/{project}/{jobset}")) { (project) ":" (jobset) } }
                    }
                    td { (time(Some(eval.timestamp))) " " span.muted { "(" (duration(eval.checkout_time + eval.eval_time)) ")" } }
                    td { (eval.nr_builds) }
                    td.ok { (count.succeeded) } td.fail { (count.failed) } td.queued { (count.scheduled) }
                    td { @if eval.nr_errors > 0 { span.fail { (eval.nr_errors) } } }
                }
            } }
        } }
    }
}

/// `/evals`: every jobset's evaluations, newest first.
pub async fn all_evals(State(state): State<AppState>, caller: Caller, Query(query): Query<PageNumber>) -> Response {
    let page = async {
        let number = query.get();
        let listed_only = caller.user.is_none();
        let (evals, total) = state.db.all_evals((number - 1) * EVALS_PER_PAGE, EVALS_PER_PAGE, listed_only).await?;
        let evals: Vec<_> = evals.into_iter().map(|(e, p, j)| (e, Some((p, j)))).collect();
        let body = html! {
            @if evals.is_empty() { p.muted { "Nothing was evaluated yet." } }
            @else { (eval_table(&evals)) (page_links("/evals", number, total, EVALS_PER_PAGE)) }
        };
        Ok::<_, ApiError>(layout(&caller, "Evaluations", &[], body))
    }
    .await;
    render(&caller, page)
}

/// `/jobset/P/J/evals`: a jobset's evaluations, newest first.
pub async fn jobset_evals(
    State(state): State<AppState>,
    caller: Caller,
    Path((project_name, jobset_name)): Path<(String, String)>,
    Query(query): Query<PageNumber>,
) -> Response {
    let page = async {
        let (project, jobset) = find_jobset(&state, &project_name, &jobset_name).await?;
        let number = query.get();
        let (evals, total) = state.db.jobset_evals(jobset.id, (number - 1) * EVALS_PER_PAGE, EVALS_PER_PAGE).await?;
        let evals: Vec<_> = evals.into_iter().map(|e| (e, None)).collect();
        let base = format!("/jobset/{}/{}", project.name, jobset.name);
        let body = html! {
            @if evals.is_empty() { p.muted { "Not evaluated yet." } }
            @else { (eval_table(&evals)) (page_links(&format!("{base}/evals"), number, total, EVALS_PER_PAGE)) }
        };
        let crumbs = [
            crumb(&project.name, format!("/project/{}", project.name)),
            crumb(&jobset.name, base.clone()),
            crumb("evaluations", format!("{base}/evals")),
        ];
        Ok::<_, ApiError>(layout(&caller, &format!("Evaluations of {}:{}", project.name, jobset.name), &crumbs, body))
    }
    .await;
    render(&caller, page)
}

/// `/status`: the steps building now, by machine.
pub async fn status(State(state): State<AppState>, caller: Caller) -> Response {
    let page = async {
        let running = state.db.running_steps().await?;
        let queued = state.db.queued_count().await?;
        let now = crate::db::now();
        // Internal hosts and addresses: for admins.
        let members = match caller.check(crate::users::Action::ManageUsers, None) {
            Ok(()) => state.db.cluster_members().await?,
            Err(_) => Vec::new(),
        };
        let machines = state.machines.views();
        let publishers: Vec<_> = crate::notify::status(&state.config, &state.db)
            .await?
            .into_iter()
            .filter(|n| n.name.starts_with("publish:"))
            .collect();
        let body = html! {
            (super::pages::nix_problem(&state))
            p { (running.len()) " steps running; " a href="/queue" { (queued) " builds queued" } "." }
            @for machine in &machines {
                @let steps: Vec<_> = running.iter().filter(|s| s.step.machine == machine.spec.name).collect();
                h2 { (machine.spec.name) " " span.muted { (steps.len()) " / " (machine.spec.max_jobs) }
                     @if !machine.enabled { " " span.badge.fail { "disabled" } }
                     @else if machine.disabled_for_secs.is_some() { " " span.badge.queued { "failing" } } }
                @if steps.is_empty() { p.muted { "Idle." } } @else {
                    div.scroll { table {
                        thead { tr { th { "Build" } th { "Job" } th { "Step" } th { "Running for" } } }
                        tbody { @for s in &steps { tr {
                            td { a href=(format!("/build/{}", s.step.build_id)) { (s.step.build_id) } }
                            td { (s.project) ":" (s.jobset) ":" (s.job) }
                            td { code { (s.step.drv_path) } }
                            td { @if let Some(start) = s.step.start_time { (duration((now - start).max(0))) } }
                        } } }
                    } }
                }
            }
            // Steps on a machine no longer configured (it was removed while they ran).
            @let orphans: Vec<_> = running.iter().filter(|s| !machines.iter().any(|m| m.spec.name == s.step.machine)).collect();
            @if !orphans.is_empty() {
                h2 { "On machines no longer configured" }
                ul { @for s in &orphans { li { a href=(format!("/build/{}", s.step.build_id)) { (s.step.build_id) } " on " (s.step.machine) } } }
            }
            @if !publishers.is_empty() {
                h2 { "Binary caches" }
                div.scroll { table id="publishers" {
                    thead { tr { th { "Cache" } th { "State" } th { "Builds published" } th { "Waiting" } th { "Last error" } } }
                    tbody { @for p in &publishers { tr {
                        td { code { (p.plugin) } }
                        td { @match p.state { "ok" => { span.badge.ok { "ok" } } state => { span.badge.fail { (state) } } } }
                        td { (p.delivered) }
                        td { (p.pending.len()) }
                        td { @if let Some(error) = p.pending.first().and_then(|f| f.last_error.as_ref()) { span.error { (error) } } }
                    } } }
                } }
            }
            @if !members.is_empty() { h2 { "Processes" } }
            @if !members.is_empty() { div.scroll { table id="cluster" {
                thead { tr { th { "Process" } th { "Host" } th { "Holds" } th { "Standing by for" } th { "Version" } th { "Last heartbeat" } } }
                tbody { @for m in &members { tr {
                    td { code { (m.id) } @if m.id == state.process.member { " (this one)" } }
                    td { (m.host) }
                    td { @if m.roles.contains(crate::domain::ProcessRole::Web) { span.badge.ok { "web" } " " }
                         @for role in m.holds.iter() { span.badge.ok { (role) } " " } }
                    td { @for role in m.standing_by().iter() { span.badge { (role) } " " } }
                    td { (m.version) }
                    td { (time(Some(m.heartbeat_at))) }
                } } }
            } } }
            (storage(state.retention.last()))
        };
        Ok::<_, ApiError>(layout(&caller, "Status", &[], body))
    }
    .await;
    render(&caller, page)
}

/// What retention measured, and deleted since the start.
fn storage(last: Option<(crate::retention::Report, crate::metrics::RetentionFigures)>) -> Markup {
    html! {
        h2 { "Storage" }
        @match last {
            None => p.muted { "Retention has not run yet: it measures and prunes a minute after the start, then every retention.interval_secs." },
            Some((report, totals)) => {
                @let f = report.figures;
                p id="storage" {
                    "Database " (super::size(f.database_bytes.unwrap_or(0) as i64))
                    ", logs " (super::size(f.log_dir_bytes.unwrap_or(0) as i64)) ", measured "
                    (time(Some(f.finished_at))) ". Retention deleted, since the start, "
                    span.retention-events { (totals.events) } " events, "
                    span.retention-evals { (totals.evals) } " evaluations, "
                    span.retention-builds { (totals.builds) } " builds and "
                    span.retention-logs { (totals.logs) } " logs."
                }
                @for problem in &report.problems { p.error { (problem) } }
            }
        }
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct SearchText {
    #[serde(default)]
    query: String,
}

/// Results shown per kind.
const FOUND_SHOWN: u64 = 50;

fn build_rows(rows: &[BuildRow]) -> Markup {
    html! {
        div.scroll { table {
            thead { tr { th { "Build" } th { "Job" } th { "Name" } th { "System" } th { "Finished" } th { "Status" } } }
            tbody { @for b in rows { tr {
                td { a href=(format!("/build/{}", b.id)) { (b.id) } }
                td { a href=(format!("/job/{}/{}/{}", b.project, b.jobset, b.job)) { (b.project) ":" (b.jobset) ":" (b.job) } }
                td { (b.nix_name) }
                td { (b.system) }
                td { (time(b.stop_time)) }
                td { (status_badge(b.finished, b.status)) }
            } } }
        } }
    }
}

/// `/search?query=Q`: projects and jobsets by name or description, builds
/// by job name, output path or derivation.
pub async fn search(State(state): State<AppState>, caller: Caller, Query(query): Query<SearchText>) -> Response {
    let text = query.query.trim().to_owned();
    let page = async {
        let form = html! {
            form.search-page method="get" action="/search" {
                input type="search" name="query" value=(text) aria-label="Search" autofocus;
                " " button type="submit" { "Search" }
            }
        };
        if text.is_empty() {
            let body = html! { (form) p.muted { "Search projects, jobsets, jobs, store paths and derivations." } };
            return Ok::<_, ApiError>(layout(&caller, "Search", &[], body));
        }
        let query = match crate::domain::SearchQuery::parse(&text) {
            Ok(query) => query,
            Err(invalid) => {
                let body = html! { (form) p.error { (invalid.to_string()) } };
                return Ok(layout(&caller, "Search", &[], body));
            }
        };
        let found = state.db.search(&query, FOUND_SHOWN).await?;
        let ids: Vec<i64> = found.builds.iter().chain(&found.builds_by_drv).copied().collect();
        let rows = state.db.build_rows(&ids).await?;
        let visible = |hidden: bool| !hidden || caller.user.is_some();
        let (by_drv, builds): (Vec<BuildRow>, Vec<BuildRow>) =
            rows.into_iter().filter(|row| visible(row.hidden())).partition(|row| found.builds_by_drv.contains(&row.id));
        let projects: Vec<_> = found.projects.iter().filter(|p| visible(p.hidden)).collect();
        let jobsets: Vec<_> = found.jobsets.iter().filter(|(p, j)| visible(p.hidden) && visible(j.hidden)).collect();
        let nothing = projects.is_empty() && jobsets.is_empty() && builds.is_empty() && by_drv.is_empty();
        let body = html! {
            (form)
            @if nothing { p.muted { "Nothing matches ‘" (text) "’." } }
            @if !projects.is_empty() {
                h2 { "Projects" }
                ul { @for p in &projects { li { a href=(format!("/project/{}", p.name)) { (p.display_name) } " " span.muted { (p.description) } } } }
            }
            @if !jobsets.is_empty() {
                h2 { "Jobsets" }
                ul { @for (p, j) in &jobsets { li { a href=(format!("/jobset/{}/{}", p.name, j.name)) { (p.name) ":" (j.name) } " " span.muted { (j.description) } } } }
            }
            @if !builds.is_empty() { h2 { "Builds" } (build_rows(&builds)) }
            @if !by_drv.is_empty() { h2 { "Builds of this derivation" } (build_rows(&by_drv)) }
        };
        Ok(layout(&caller, &format!("Search: {text}"), &[], body))
    }
    .await;
    render(&caller, page)
}
