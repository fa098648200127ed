//! Push webhooks of GitHub and Gitea: a signed notice that a repository
//! changed triggers the jobsets with an input on that repository. The
//! HMAC-SHA256 signature, with the secret from the configuration, is the
//! only authority: no signature, no trigger.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use super::{ApiError, ApiResult, AppState};

#[derive(Clone, Copy)]
enum Forge {
    GitHub,
    Gitea,
}

impl Forge {
    fn name(self) -> &'static str {
        match self {
            Forge::GitHub => "GitHub",
            Forge::Gitea => "Gitea",
        }
    }

    fn signature_header(self) -> &'static str {
        match self {
            Forge::GitHub => "x-hub-signature-256",
            Forge::Gitea => "x-gitea-signature",
        }
    }
}

fn unauthorized(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, message)
}

/// Checks `body` against the hex HMAC-SHA256 in the forge's header
/// (GitHub prefixes it with `sha256=`), in constant time.
fn verify_signature(forge: Forge, secret: &str, headers: &HeaderMap, body: &[u8]) -> ApiResult<()> {
    if secret.is_empty() {
        return Err(unauthorized(format!(
            "{} webhooks are not enabled on this server (webhooks.{}_secret is not set)",
            forge.name(),
            forge.name().to_lowercase()
        )));
    }
    let header = headers.get(forge.signature_header()).and_then(|v| v.to_str().ok()).ok_or_else(|| {
        unauthorized(format!("the {} header with the payload's signature is missing", forge.signature_header()))
    })?;
    let hex_signature = match forge {
        Forge::GitHub => header.strip_prefix("sha256=").unwrap_or(""),
        Forge::Gitea => header,
    };
    let signature = hex::decode(hex_signature.trim()).map_err(|_| unauthorized("the signature is not hexadecimal"))?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(body);
    mac.verify_slice(&signature).map_err(|_| unauthorized("the signature does not match the payload and the secret"))
}

/// A repository URL reduced to `host/owner/repo`, so that the https, ssh
/// and `.git` spellings of one repository compare equal.
fn normalize_repo_url(url: &str) -> String {
    let mut url = url.trim().to_ascii_lowercase();
    for prefix in ["git+https://", "git+http://", "git+ssh://", "https://", "http://", "ssh://", "git://"] {
        if let Some(rest) = url.strip_prefix(prefix) {
            url = rest.to_owned();
            break;
        }
    }
    // user@host:owner/repo (scp-like) or user@host/owner/repo
    if let Some((_, rest)) = url.split_once('@') {
        url = rest.replacen(':', "/", 1);
    }
    let url = url.trim_end_matches('/');
    url.strip_suffix(".git").unwrap_or(url).to_owned()
}

/// The repository URLs a push payload names.
fn payload_urls(payload: &Value) -> Vec<String> {
    let repository = &payload["repository"];
    ["clone_url", "html_url", "ssh_url", "git_url", "url"]
        .iter()
        .filter_map(|key| repository[*key].as_str())
        .map(normalize_repo_url)
        .collect()
}

async fn handle(
    state: &AppState,
    forge: Forge,
    secret: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> ApiResult<Json<Value>> {
    verify_signature(forge, secret, headers, body)?;
    let payload: Value =
        serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("malformed JSON payload: {e}")))?;
    let urls = payload_urls(&payload);
    if urls.is_empty() {
        // A ping, or an event without a repository: nothing to do.
        return Ok(Json(json!({ "jobsetsTriggered": [] })));
    }
    let mut names = Vec::new();
    for (project, jobset, input) in state.db.all_jobset_inputs().await? {
        let Some(location) = input.value.split_whitespace().next() else { continue };
        if urls.contains(&normalize_repo_url(location)) {
            names.push((project, jobset));
        }
    }
    names.sort();
    names.dedup();
    let triggered = state.db.trigger_jobsets(&names, false).await?;
    if !triggered.is_empty() {
        state.evaluator.wake();
    }
    tracing::info!(forge = forge.name(), repositories = ?urls, ?triggered, "push webhook");
    Ok(Json(json!({ "jobsetsTriggered": triggered })))
}

pub async fn github(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> ApiResult<Json<Value>> {
    let secret = state.config.webhooks.github_secret.clone();
    handle(&state, Forge::GitHub, &secret, &headers, &body).await
}

pub async fn gitea(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> ApiResult<Json<Value>> {
    let secret = state.config.webhooks.gitea_secret.clone();
    handle(&state, Forge::Gitea, &secret, &headers, &body).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_spellings_compare_equal() {
        let canonical = "github.com/nixos/hydra";
        for url in [
            "https://github.com/NixOS/hydra",
            "https://github.com/NixOS/hydra.git",
            "git@github.com:NixOS/hydra.git",
            "ssh://git@github.com/NixOS/hydra",
            "git+https://github.com/NixOS/hydra/",
        ] {
            assert_eq!(normalize_repo_url(url), canonical, "{url}");
        }
        assert_ne!(normalize_repo_url("https://github.com/NixOS/hydra-extra"), canonical);
    }

    #[test]
    fn signatures() {
        let body = b"{\"x\":1}";
        let mut mac = Hmac::<Sha256>::new_from_slice(b"s3cret").unwrap();
        mac.update(body);
        let good = hex::encode(mac.finalize().into_bytes());
        let mut headers = HeaderMap::new();
        headers.insert("x-hub-signature-256", format!("sha256={good}").parse().unwrap());
        assert!(verify_signature(Forge::GitHub, "s3cret", &headers, body).is_ok());
        assert!(verify_signature(Forge::GitHub, "other", &headers, body).is_err());
        assert!(verify_signature(Forge::GitHub, "s3cret", &headers, b"tampered").is_err());
        assert!(verify_signature(Forge::GitHub, "", &headers, body).is_err());
        assert!(verify_signature(Forge::Gitea, "s3cret", &headers, body).is_err(), "wrong header");
        headers.insert("x-gitea-signature", good.parse().unwrap());
        assert!(verify_signature(Forge::Gitea, "s3cret", &headers, body).is_ok());
    }
}
