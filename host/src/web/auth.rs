//! Who is asking: a `hydra_session` cookie or an `Authorization: Bearer`
//! token becomes a [`Caller`] in the request's extensions; requests a
//! server must refuse before any handler runs are refused here.

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;

use super::{ApiError, ApiResult, AppState};
use crate::db::Project;
use crate::users::{self, Action, Auth, Caller, ProjectOwners};

/// The session cookie's name, as Hydra's.
pub const SESSION_COOKIE: &str = "hydra_session";

/// Paths anyone may use even on a private server: logging in and out, and
/// the webhooks (which carry their own signature).
fn is_public(path: &str) -> bool {
    matches!(path, "/login" | "/logout" | "/api/push-github" | "/api/push-gitea")
}

fn is_mutating(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// A JSON body cannot be sent across sites without the CORS preflight this
/// server never grants, so it is no forgery; forms and empty posts can be.
fn is_json_request(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.trim_start().to_ascii_lowercase().starts_with("application/json"))
}

/// `scheme://host[:port]` of a URL, lower-case.
fn origin_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let host = rest.split(['/', '?', '#']).next()?;
    (!host.is_empty()).then(|| format!("{}://{}", scheme.to_ascii_lowercase(), host.to_ascii_lowercase()))
}

/// Whether the request comes from a page of this server: its Origin (or,
/// lacking one, its Referer) is the configured base URL's origin or the
/// origin the client addressed (`Host`).
fn is_same_origin(state: &AppState, headers: &HeaderMap) -> bool {
    let claimed = headers
        .get(header::ORIGIN)
        .or_else(|| headers.get(header::REFERER))
        .and_then(|v| v.to_str().ok())
        .and_then(origin_of);
    let Some(claimed) = claimed else { return false };
    if Some(&claimed) == origin_of(&state.config.base_url()).as_ref() {
        return true;
    }
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).map(str::to_ascii_lowercase);
    host.is_some_and(|host| claimed == format!("http://{host}") || claimed == format!("https://{host}"))
}

/// The value of the session cookie, if the request has one.
pub fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value)
}

/// Identifies the caller. A token that does not work is an error (the
/// caller meant to be someone); an unknown session is just anonymous.
async fn identify(state: &AppState, headers: &HeaderMap) -> ApiResult<Caller> {
    if let Some(authorization) = headers.get(header::AUTHORIZATION) {
        let value = authorization.to_str().unwrap_or("");
        // Basic is for Nix, whose substituters only do netrc: the user name
        // and an API token as password.
        let (claimed_user, token) = if let Some(token) = value.strip_prefix("Bearer ") {
            (None, token.trim().to_owned())
        } else if let Some(encoded) = value.strip_prefix("Basic ") {
            let decoded =
                BASE64.decode(encoded.trim()).ok().and_then(|d| String::from_utf8(d).ok()).unwrap_or_default();
            let (user, password) = decoded.split_once(':').unwrap_or(("", ""));
            (Some(user.to_owned()), password.to_owned())
        } else {
            return Err(ApiError::login_wanted(
                "the Authorization header must be ‘Bearer TOKEN’ (or Basic with an API token as password)",
            ));
        };
        let (user, token) = state
            .db
            .token_user(&users::digest(&token))
            .await?
            .filter(|(user, _)| claimed_user.as_ref().is_none_or(|name| *name == user.username))
            .ok_or_else(|| ApiError::login_wanted("the API token is unknown, revoked or expired"))?;
        // A scope this version does not know grants nothing.
        let scopes = token.scopes.split_whitespace().filter_map(|word| word.parse().ok()).collect();
        return Ok(Caller {
            user: Some(user),
            auth: Auth::Token { id: token.id, scopes, expires: token.expires_time },
        });
    }
    if let Some(secret) = session_cookie(headers) {
        let digest = users::digest(secret);
        if let Some(user) = state.db.session_user(&digest).await? {
            return Ok(Caller { user: Some(user), auth: Auth::Session { digest } });
        }
    }
    Ok(Caller::anonymous())
}

/// Middleware: identify the caller, keep private servers private, and
/// refuse cross-site requests riding on a browser session.
pub async fn authenticate(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let caller = match identify(&state, request.headers()).await {
        Ok(caller) => caller,
        Err(e) => return e.into_response(),
    };
    let path = request.uri().path();
    if state.config.web.private && caller.user.is_none() && !is_public(path) {
        // A browser gets a page to log in from; programs, the 401 they expect.
        if request.method() == Method::GET
            && !super::negotiate::wants_json(request.headers(), request.uri().query(), path)
        {
            return super::ui::private_server_page();
        }
        return ApiError::login_wanted("this server is private: log in or send an API token").into_response();
    }
    // A login form posted from another site would log the victim in as
    // the attacker (login CSRF); JSON logins, as scripts send them, cannot
    // be posted across sites without the CORS this server never grants.
    if path == "/login"
        && is_mutating(request.method())
        && !is_json_request(request.headers())
        && !is_same_origin(&state, request.headers())
    {
        return ApiError::forbidden(
            "cross-site login refused: the login form must be posted from this server's pages (or send JSON)",
        )
        .into_response();
    }
    if matches!(caller.auth, Auth::Session { .. })
        && is_mutating(request.method())
        && !is_json_request(request.headers())
        && !is_same_origin(&state, request.headers())
    {
        return ApiError::forbidden(
            "cross-site request refused: a request using a login session must come from this server's pages \
             (same-origin Origin or Referer header) or send JSON; scripts may use an API token",
        )
        .into_response();
    }
    let logged_in = caller.user.is_some();
    request.extensions_mut().insert(caller);
    let mut response = next.run(request).await;
    if logged_in {
        response.extensions_mut().insert(super::ShowTiming);
    }
    response
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        Ok(parts.extensions.get::<Caller>().cloned().unwrap_or_else(Caller::anonymous))
    }
}

/// Checks an action that concerns no particular project.
pub fn require(caller: &Caller, action: Action) -> ApiResult<()> {
    Ok(caller.check(action, None)?)
}

/// Checks an action on a project (its owner and members have rights on it).
pub async fn require_on(state: &AppState, caller: &Caller, action: Action, project: &Project) -> ApiResult<()> {
    Ok(crate::projects::save::check_on(&state.db, caller, action, project).await?)
}

/// Which of `actions` the caller may do on a project, reading its members
/// at most once (for a page showing one button per action; each action's
/// route checks again).
pub async fn permitted<const N: usize>(
    state: &AppState,
    caller: &Caller,
    project: &Project,
    actions: [Action; N],
) -> ApiResult<[bool; N]> {
    if caller.user.is_none() {
        return Ok([false; N]);
    }
    let check = |action, members: &[String]| {
        caller.check(action, Some(ProjectOwners { owner: &project.owner, members })).is_ok()
    };
    let without_members = actions.map(|action| check(action, &[]));
    if without_members.iter().all(|&allowed| allowed) {
        return Ok(without_members);
    }
    let members = state.db.project_members(project.id).await?;
    Ok(actions.map(|action| check(action, &members)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins() {
        assert_eq!(
            origin_of("https://Hydra.example.org:8443/build/3?x#y").as_deref(),
            Some("https://hydra.example.org:8443")
        );
        assert_eq!(origin_of("http://localhost").as_deref(), Some("http://localhost"));
        assert_eq!(origin_of("nonsense"), None);
    }

    #[test]
    fn session_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, "theme=dark; hydra_session=abc123; x=y".parse().unwrap());
        assert_eq!(session_cookie(&headers), Some("abc123"));
    }
}
