//! Release sets and their releases, as their plugins compute them (see
//! `web/releases.rs`): the newest releases of a set, and one release with
//! its builds.

use std::collections::HashMap;

use axum::extract::State;
use axum::response::Response;
use maud::{Markup, html};

use super::pages::crumb;
use super::{layout, render, status_badge, time};
use crate::db::BuildRow;
use crate::plugins::api::Release;
use crate::releases::{DEFAULT_RELEASES, MAX_RELEASES};
use crate::users::Caller;
use crate::web::extract::Path;
use crate::web::releases::{computed, segment};
use crate::web::{ApiError, AppState, find_project};

/// The builds of `releases`, by id: one query.
async fn member_rows(state: &AppState, releases: &[Release]) -> Result<HashMap<i64, BuildRow>, ApiError> {
    let mut ids: Vec<i64> = releases.iter().flat_map(|r| r.members.iter().map(|(id, _)| *id)).collect();
    ids.sort_unstable();
    ids.dedup();
    Ok(state.db.build_rows(&ids).await?.into_iter().map(|row| (row.id, row)).collect())
}

/// Whether every build of a release succeeded (an empty one did not).
fn succeeded(release: &Release, rows: &HashMap<i64, BuildRow>) -> bool {
    !release.members.is_empty()
        && release.members.iter().all(|(id, _)| rows.get(id).is_some_and(|b| b.finished && b.status == Some(0)))
}

fn release_badge(release: &Release, rows: &HashMap<i64, BuildRow>) -> Markup {
    let pending = release.members.iter().any(|(id, _)| rows.get(id).is_some_and(|b| !b.finished));
    match (succeeded(release, rows), pending) {
        (true, _) => html! { span.badge.ok { "complete" } },
        (false, true) => html! { span.badge.queued { "building" } },
        (false, false) => html! { span.badge.fail { "incomplete" } },
    }
}

/// `/project/P/releaseset/S`: the newest releases of a set.
pub async fn release_set(
    State(state): State<AppState>,
    caller: Caller,
    Path((project_name, name)): Path<(String, String)>,
) -> Response {
    let page = async {
        let project = find_project(&state, &project_name).await?;
        let (definition, releases) = computed(&state, &project, &name, DEFAULT_RELEASES).await?;
        let releases: Vec<Release> = releases.into_iter().take(DEFAULT_RELEASES as usize).collect();
        let rows = member_rows(&state, &releases).await?;
        let base = format!("/project/{}/releaseset/{name}", project.name);
        let body = html! {
            @if !definition.description.is_empty() { p { (definition.description) } }
            dl {
                dt { "Computed by" } dd { "the plugin " code { (definition.plugin) } }
                dt { "Newest complete release" } dd { a href=(format!("{base}/latest")) { (base) "/latest" } }
            }
            @if releases.is_empty() { p.muted { "No releases yet." } } @else {
                div.scroll { table {
                    thead { tr { th { "Release" } th { "Made" } th { "Builds" } th { "State" } } }
                    tbody { @for release in &releases { tr {
                        td { a href=(format!("{base}/release/{}", segment(&release.name))) { (release.name) } }
                        td { (time(Some(release.timestamp))) }
                        td { (release.members.len()) }
                        td { (release_badge(release, &rows)) }
                    } } }
                } }
            }
        };
        let crumbs = [crumb(&project.name, format!("/project/{}", project.name)), crumb(&name, base.clone())];
        Ok::<_, ApiError>(layout(&caller, &format!("Release set {name}"), &crumbs, body))
    }
    .await;
    render(&caller, page)
}

/// `/project/P/releaseset/S/release/R`: a release and its builds.
pub async fn release(
    State(state): State<AppState>,
    caller: Caller,
    Path((project_name, name, release_name)): Path<(String, String, String)>,
) -> Response {
    let page = async {
        let project = find_project(&state, &project_name).await?;
        // As many as the JSON route looks through.
        let (_, releases) = computed(&state, &project, &name, MAX_RELEASES).await?;
        let release = releases.into_iter().find(|r| r.name == release_name).ok_or_else(|| {
            ApiError::not_found(format!("release set ‘{name}’ of project ‘{project_name}’ has no release ‘{release_name}’"))
        })?;
        let rows = member_rows(&state, std::slice::from_ref(&release)).await?;
        let base = format!("/project/{}/releaseset/{name}", project.name);
        let body = html! {
            p { (release_badge(&release, &rows)) " made " (time(Some(release.timestamp))) }
            div.scroll { table {
                thead { tr { th { "Label" } th { "Build" } th { "Job" } th { "Name" } th { "Status" } } }
                tbody { @for (id, label) in &release.members { tr {
                    td { (label) }
                    td { a href=(format!("/build/{id}")) { (id) } }
                    @match rows.get(id) {
                        Some(b) => {
                            td { a href=(format!("/job/{}/{}/{}", b.project, b.jobset, b.job)) { (b.project) ":" (b.jobset) ":" (b.job) } }
                            td { (b.nix_name) }
                            td { (status_badge(b.finished, b.status)) }
                        }
                        None => { td colspan="3" { span.muted { "this build is gone" } } }
                    }
                } } }
            } }
        };
        let crumbs = [
            crumb(&project.name, format!("/project/{}", project.name)),
            crumb(&name, base.clone()),
            crumb(&release.name, format!("{base}/release/{}", segment(&release.name))),
        ];
        Ok::<_, ApiError>(layout(&caller, &format!("Release {}", release.name), &crumbs, body))
    }
    .await;
    render(&caller, page)
}
