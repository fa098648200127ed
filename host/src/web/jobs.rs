//! Per-job views for dashboards: a shields.io badge and Prometheus
//! metrics of the job's latest finished build.

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::extract::Path;
use super::{ApiError, ApiResult, AppState, find_jobset};
use crate::db::BuildView;

async fn last_finished(
    state: &AppState,
    project: &str,
    jobset: &str,
    job: &str,
) -> ApiResult<std::sync::Arc<BuildView>> {
    let (_, jobset_row) = find_jobset(state, project, jobset).await?;
    let id = state
        .db
        .last_finished_build(jobset_row.id, job)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("job ‘{project}:{jobset}:{job}’ has no finished build")))?;
    super::builds::find_build(state, id).await
}

/// `/job/P/J/JOB/shield`: the shields.io endpoint format.
pub async fn shield(
    State(state): State<AppState>,
    Path((project, jobset, job)): Path<(String, String, String)>,
) -> ApiResult<Json<Value>> {
    let build = last_finished(&state, &project, &jobset, &job).await?;
    let passing = build.build.build_status == Some(0);
    Ok(Json(json!({
        "schemaVersion": 1,
        "label": "hydra build",
        "color": if passing { "green" } else { "red" },
        "message": if passing { "passing" } else { "failing" },
    })))
}

/// Escapes a Prometheus label value.
pub fn label_value(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// `/job/P/J/JOB/prometheus`: Hydra's four metrics of the job's latest
/// finished build.
pub async fn prometheus(
    State(state): State<AppState>,
    Path((project, jobset, job)): Path<(String, String, String)>,
) -> ApiResult<Response> {
    let build = last_finished(&state, &project, &jobset, &job).await?;
    let b = &build.build;
    let labels = format!(
        "project=\"{}\",jobset=\"{}\",job=\"{}\"",
        label_value(&project),
        label_value(&jobset),
        label_value(&job)
    );
    let mut text = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: i64| {
        text.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n{name}{{{labels}}} {value}\n"));
    };
    metric("hydra_job_completion_time", "counter", "The most recent job's completion time", b.stop_time.unwrap_or(0));
    metric(
        "hydra_job_failed",
        "gauge",
        "Record if the most recent job has failed",
        i64::from(b.build_status != Some(0)),
    );
    metric("hydra_build_closure_size", "gauge", "Closure size of the last job's build", b.closure_size.unwrap_or(0));
    metric("hydra_build_output_size", "gauge", "Output size of the last job's build", b.size.unwrap_or(0));
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response())
}
