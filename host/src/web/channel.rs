//! Nix channels of jobsets: `/jobset/P/J/channel/latest` with
//! `nixexprs.tar.xz` (and `.tar.bz2`) holding an expression whose
//! attributes are the successful builds of the jobset's latest finished
//! evaluation, and `binary-cache-url` pointing at this server, as
//! `nix-channel` and `fetchTarball` expect.

use std::io::Write;

use axum::body::Bytes;

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::extract::Path;
use super::{ApiError, ApiResult, AppState, find_jobset};
use crate::db::SuccessfulBuild;
use crate::nix::string_literal;

/// Builds fake derivations from output paths, as Hydra's channels do.
const CHANNEL_PRELUDE: &str = r#"{ system ? builtins.currentSystem }:
let
  fakeDerivation = attrs: outputs:
    let
      names = builtins.attrNames outputs;
      byName = builtins.listToAttrs (map (name: {
        inherit name;
        value = common // { outputName = name; outPath = builtins.storePath (builtins.getAttr name outputs); };
      }) names);
      common = attrs // byName // { type = "derivation"; outputs = names; all = builtins.attrValues byName; };
    in byName.out or (builtins.getAttr (builtins.head names) byName);
in
"#;

/// The channel's `default.nix`.
pub fn channel_expression(builds: &[SuccessfulBuild]) -> String {
    let mut text = String::from(CHANNEL_PRELUDE);
    text.push_str("{\n");
    for build in builds {
        let outputs: Vec<String> = build
            .outputs
            .iter()
            .map(|(name, path)| format!("{} = {};", string_literal(name), string_literal(path)))
            .collect();
        text.push_str(&format!(
            "  {} = fakeDerivation {{ name = {}; system = {}; }} {{ {} }};\n",
            string_literal(&build.job),
            string_literal(&build.nix_name),
            string_literal(&build.system),
            outputs.join(" ")
        ));
    }
    text.push_str("}\n");
    text
}

async fn latest_channel(state: &AppState, project: &str, jobset: &str) -> ApiResult<(i64, i64, Vec<SuccessfulBuild>)> {
    let (_, jobset_row) = find_jobset(state, project, jobset).await?;
    let eval = state
        .db
        .latest_finished_eval(jobset_row.id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("jobset ‘{project}:{jobset}’ has no finished evaluation")))?;
    let builds = state.db.eval_successful_builds(eval.id).await?;
    Ok((eval.id, eval.timestamp, builds))
}

pub async fn channel(
    State(state): State<AppState>,
    Path((project, jobset)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let (eval, _, builds) = latest_channel(&state, &project, &jobset).await?;
    Ok(Json(json!({
        "name": format!("{project}-{jobset}"),
        "eval": eval,
        "binarycacheurl": state.config.base_url(),
        "jobs": builds.iter().map(|b| json!({ "job": b.job, "id": b.id, "nixname": b.nix_name, "outputs": b.outputs.iter().map(|(n, p)| (n.clone(), json!(p))).collect::<serde_json::Map<_, _>>() })).collect::<Vec<_>>(),
    })))
}

/// A tarball of `<name>/default.nix`, with fixed times so that the same
/// evaluation always gives the same bytes.
fn tarball(name: &str, expression: &str, mtime: u64) -> std::io::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut dir = tar::Header::new_gnu();
    dir.set_entry_type(tar::EntryType::Directory);
    dir.set_mode(0o755);
    dir.set_mtime(mtime);
    dir.set_size(0);
    builder.append_data(&mut dir, format!("{name}/"), std::io::empty())?;
    let mut file = tar::Header::new_gnu();
    file.set_mode(0o644);
    file.set_mtime(mtime);
    file.set_size(expression.len() as u64);
    builder.append_data(&mut file, format!("{name}/default.nix"), expression.as_bytes())?;
    builder.into_inner()
}

/// Channel tarballs, made once per evaluation and compression: xz at
/// preset 6 and bzip2 cost seconds of CPU for a large jobset, which a
/// stream of requests must not pay again and again. Bounded in bytes.
pub struct ChannelCache {
    tarballs: quick_cache::sync::Cache<(i64, &'static str), Bytes, TarballWeight>,
}

#[derive(Clone)]
pub struct TarballWeight;

impl quick_cache::Weighter<(i64, &'static str), Bytes> for TarballWeight {
    fn weight(&self, _key: &(i64, &'static str), tarball: &Bytes) -> u64 {
        tarball.len() as u64 + 1
    }
}

impl Default for ChannelCache {
    fn default() -> Self {
        ChannelCache { tarballs: quick_cache::sync::Cache::with_weighter(64, 64 << 20, TarballWeight) }
    }
}

pub async fn nixexprs(
    State(state): State<AppState>,
    Path((project, jobset, file)): Path<(String, String, String)>,
) -> ApiResult<Response> {
    if file == "binary-cache-url" {
        return Ok(([(header::CONTENT_TYPE, "text/plain")], state.config.base_url()).into_response());
    }
    let compression = match file.as_str() {
        "nixexprs.tar.xz" => "xz",
        "nixexprs.tar.bz2" => "bz2",
        _ => return Err(ApiError::not_found(format!("a channel has no file ‘{file}’"))),
    };
    let (eval, timestamp, builds) = latest_channel(&state, &project, &jobset).await?;
    let name = format!("{project}-{jobset}-{eval}");
    // Concurrent requests for the same tarball wait for the one making it.
    let body = state
        .channels
        .tarballs
        .get_or_insert_async(&(eval, compression), make_tarball(name, builds, timestamp, compression))
        .await?;
    let content_type = if compression == "xz" { "application/x-xz" } else { "application/x-bzip2" };
    Ok(([(header::CONTENT_TYPE, content_type)], body).into_response())
}

async fn make_tarball(
    name: String,
    builds: Vec<SuccessfulBuild>,
    timestamp: i64,
    compression: &'static str,
) -> ApiResult<Bytes> {
    let body = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
        let tar = tarball(&name, &channel_expression(&builds), timestamp.max(0) as u64)?;
        if compression == "xz" {
            let mut encoder = liblzma::write::XzEncoder::new(Vec::new(), 6);
            encoder.write_all(&tar)?;
            encoder.finish()
        } else {
            let mut encoder = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::best());
            encoder.write_all(&tar)?;
            encoder.finish()
        }
    })
    .await
    .map_err(|e| ApiError::new(axum::http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
    .map_err(|e| {
        ApiError::new(axum::http::StatusCode::INTERNAL_SERVER_ERROR, format!("cannot pack the channel: {e}"))
    })?;
    Ok(Bytes::from(body))
}
