//! `…/latest`, `…/latest-finished` and `…/latest-for/SYSTEM` at every
//! scope (everything, a project, a jobset, a job): a 302 to the newest
//! successful build, keeping the rest of the path, so that
//! `/job/P/J/JOB/latest/download/1` leads to `/build/N/download/1`.

use axum::extract::{OriginalUri, State};
use axum::response::Response;
use percent_encoding::percent_decode_str;

use super::{ApiError, ApiResult, AppState, redirect};
use crate::db::BuildScope;

/// Which of the three redirects, and what follows it.
#[derive(Debug, PartialEq, Eq)]
struct LatestRequest {
    system: Option<String>,
    finished_eval: bool,
    rest: Vec<String>,
}

fn parse_latest(segments: &[String]) -> Option<LatestRequest> {
    let (kind, tail) = segments.split_first()?;
    match kind.as_str() {
        "latest" => Some(LatestRequest { system: None, finished_eval: false, rest: tail.to_vec() }),
        "latest-finished" => Some(LatestRequest { system: None, finished_eval: true, rest: tail.to_vec() }),
        "latest-for" => {
            let (system, rest) = tail.split_first()?;
            Some(LatestRequest { system: Some(system.clone()), finished_eval: false, rest: rest.to_vec() })
        }
        _ => None,
    }
}

pub async fn redirect_latest(state: &AppState, path: &str, query: Option<&str>) -> ApiResult<Response> {
    let segments: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| percent_decode_str(s).decode_utf8_lossy().into_owned())
        .collect();
    let unknown = || ApiError::not_found(format!("no such page: {path}"));
    let (scope, after) = match segments.first().map(String::as_str) {
        Some("project") if segments.len() >= 3 => {
            let project = state
                .db
                .project_id(&segments[1])
                .await?
                .ok_or_else(|| ApiError::not_found(format!("project ‘{}’ does not exist", segments[1])))?;
            (BuildScope::Project(project), &segments[2..])
        }
        Some("jobset" | "job") if segments.len() >= 4 => {
            let jobset = state.db.jobset_id(&segments[1], &segments[2]).await?.ok_or_else(|| {
                ApiError::not_found(format!("jobset ‘{}:{}’ does not exist", segments[1], segments[2]))
            })?;
            if segments[0] == "jobset" {
                (BuildScope::Jobset(jobset), &segments[3..])
            } else {
                (BuildScope::Job { jobset_id: jobset, job: segments[3].clone() }, &segments[4..])
            }
        }
        Some("project" | "jobset" | "job") => return Err(unknown()),
        _ => (BuildScope::All, &segments[..]),
    };
    let request = parse_latest(after).ok_or_else(unknown)?;
    let build = state
        .db
        .latest_build(&scope, request.system.as_deref(), request.finished_eval)
        .await?
        .ok_or_else(|| ApiError::not_found("there is no successful build to redirect to"))?;
    let mut target = format!("/build/{build}");
    for segment in &request.rest {
        target.push('/');
        target
            .push_str(&percent_encoding::utf8_percent_encode(segment, percent_encoding::NON_ALPHANUMERIC).to_string());
    }
    if let Some(query) = query.filter(|q| !q.is_empty()) {
        target.push('?');
        target.push_str(query);
    }
    Ok(redirect(state, &target))
}

pub async fn handle(State(state): State<AppState>, OriginalUri(uri): OriginalUri) -> ApiResult<Response> {
    redirect_latest(&state, uri.path(), uri.query()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segs(s: &str) -> Vec<String> {
        s.split('/').map(str::to_owned).collect()
    }

    #[test]
    fn parses_the_three_kinds() {
        assert_eq!(
            parse_latest(&segs("latest/download/1")),
            Some(LatestRequest { system: None, finished_eval: false, rest: segs("download/1") })
        );
        assert_eq!(
            parse_latest(&segs("latest-finished")),
            Some(LatestRequest { system: None, finished_eval: true, rest: vec![] })
        );
        assert_eq!(
            parse_latest(&segs("latest-for/x86_64-linux/log")),
            Some(LatestRequest { system: Some("x86_64-linux".into()), finished_eval: false, rest: segs("log") })
        );
        assert_eq!(parse_latest(&segs("latest-for")), None);
        assert_eq!(parse_latest(&segs("evals")), None);
    }
}
