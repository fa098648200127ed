//! A Nix binary cache of the server's store — `/nix-cache-info`,
//! `/HASH.narinfo`, `/nar/HASH.nar` — signed when a key is configured, so
//! that `nix copy --from` and substituters fetch build outputs from here;
//! and the same restricted to one build's closure under `/build/N/nix/`.

use std::collections::HashSet;

use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::extract::Path;
use super::{ApiError, ApiResult, AppState};
use crate::nix::{StorePath, narinfo};

/// Hydra's cache priority: below cache.nixos.org's 40, above local ones.
pub async fn cache_info() -> Response {
    let info = format!("StoreDir: {}\nWantMassQuery: 1\nPriority: 30\n", crate::nix::store_dir());
    ([(header::CONTENT_TYPE, "text/x-nix-cache-info")], info).into_response()
}

/// The valid store path with this hash part, if it may be served.
async fn find_path(state: &AppState, hash_part: &str, allowed: Option<&HashSet<StorePath>>) -> ApiResult<StorePath> {
    let missing = || ApiError::not_found(format!("this cache has no path {hash_part}"));
    let valid_hash = hash_part.len() == 32 && hash_part.bytes().all(|c| c.is_ascii_alphanumeric());
    if !valid_hash {
        return Err(missing());
    }
    let path = match state.db.cache_path(hash_part).await? {
        Some(path) => path,
        // An output of a build that finished before the cache kept its
        // paths: its closure is recorded now, so that its dependencies,
        // asked for next, are found.
        None => {
            let output = state.db.output_with_hash(hash_part).await?.ok_or_else(missing)?;
            let output = StorePath::parse(&output).map_err(|_| missing())?;
            let closure = state.nix.requisites(std::slice::from_ref(&output)).await.map_err(|_| missing())?;
            state.db.record_cache_paths(&closure).await?;
            output.to_string()
        }
    };
    let path = StorePath::parse(&path).map_err(|_| missing())?;
    if allowed.is_some_and(|allowed| !allowed.contains(&path)) {
        return Err(missing());
    }
    // Collected since it was recorded: gone.
    if !tokio::fs::try_exists(path.as_str()).await.unwrap_or(false) {
        return Err(missing());
    }
    Ok(path)
}

async fn serve_narinfo(state: &AppState, file: &str, allowed: Option<&HashSet<StorePath>>) -> ApiResult<Response> {
    let hash_part = file.strip_suffix(".narinfo").ok_or_else(|| ApiError::not_found("no such page"))?;
    let path = find_path(state, hash_part, allowed).await?;
    let infos = state
        .nix
        .path_infos(std::slice::from_ref(&path))
        .await
        .map_err(|_| ApiError::not_found(format!("{path} is not valid in the store")))?;
    let info = infos.get(&path).ok_or_else(|| ApiError::not_found(format!("{path} is not valid in the store")))?;
    let text = narinfo(&path, info, state.cache_key.as_deref())
        .map_err(|e| ApiError::new(axum::http::StatusCode::INTERNAL_SERVER_ERROR, e))?;
    Ok(([(header::CONTENT_TYPE, "text/x-nix-narinfo")], text).into_response())
}

async fn serve_nar(state: &AppState, file: &str, allowed: Option<&HashSet<StorePath>>) -> ApiResult<Response> {
    let hash_part =
        file.strip_suffix(".nar").ok_or_else(|| ApiError::not_found("no such NAR (only uncompressed .nar)"))?;
    let path = find_path(state, hash_part, allowed).await?;
    let reader = state
        .nix
        .dump_nar(&path)
        .map_err(|e| ApiError::new(axum::http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(reader));
    Ok(([(header::CONTENT_TYPE, "application/x-nix-nar")], body).into_response())
}

/// `/HASH.narinfo` (every other single-segment path is not found).
pub async fn narinfo_file(State(state): State<AppState>, Path(file): Path<String>) -> ApiResult<Response> {
    serve_narinfo(&state, &file, None).await
}

pub async fn nar_file(State(state): State<AppState>, Path(file): Path<String>) -> ApiResult<Response> {
    serve_nar(&state, &file, None).await
}

/// The closure of a build's outputs: what `/build/N/nix/` serves.
async fn build_closure(state: &AppState, id: i64) -> ApiResult<HashSet<StorePath>> {
    let outputs = state
        .db
        .outputs_of(&[id])
        .await?
        .remove(&id)
        .ok_or_else(|| ApiError::not_found(format!("build {id} does not exist")))?;
    let paths: Vec<StorePath> = outputs.iter().filter_map(|(_, p)| StorePath::parse(p).ok()).collect();
    let closure = state
        .nix
        .requisites(&paths)
        .await
        .map_err(|_| ApiError::not_found(format!("the outputs of build {id} are not in the store")))?;
    Ok(closure.into_iter().collect())
}

pub async fn build_narinfo(
    State(state): State<AppState>,
    Path((id, file)): Path<(i64, String)>,
) -> ApiResult<Response> {
    if file == "nix-cache-info" {
        state.db.build(id).await?.ok_or_else(|| ApiError::not_found(format!("build {id} does not exist")))?;
        return Ok(cache_info().await);
    }
    let closure = build_closure(&state, id).await?;
    serve_narinfo(&state, &file, Some(&closure)).await
}

pub async fn build_nar(State(state): State<AppState>, Path((id, file)): Path<(i64, String)>) -> ApiResult<Response> {
    let closure = build_closure(&state, id).await?;
    serve_nar(&state, &file, Some(&closure)).await
}
