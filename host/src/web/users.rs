//! Logging in and out, users (admins manage them, everyone their own
//! account) and API tokens.

use std::collections::BTreeSet;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::{SESSION_COOKIE, require, session_cookie};
use super::body;
use super::extract::{ClientAddress, Path};
use super::{ApiError, ApiResult, AppState};
use crate::db::{ApiToken, User, now};
use crate::users::accounts::{self, AccountChanges, AccountUse};
use crate::users::{self, Action, Caller};

pub fn user_json(user: &User) -> Value {
    json!({
        "username": user.username,
        "fullname": user.full_name,
        "emailaddress": user.email,
        "userroles": user.roles.iter().collect::<Vec<_>>(),
    })
}

fn token_json(token: &ApiToken) -> Value {
    json!({
        "id": token.id,
        "name": token.name,
        "scopes": token.scopes.split_whitespace().collect::<Vec<_>>(),
        "created": token.created_time,
        "expires": token.expires_time,
        "lastused": token.last_used_time,
        "revoked": token.revoked,
    })
}

#[derive(Deserialize)]
struct LoginRequest {
    username: String,
    password: String,
}

/// `POST /login`: 302 with a `hydra_session` cookie and the user's JSON,
/// or 403 for a wrong name or password.
pub async fn login(
    State(state): State<AppState>,
    ClientAddress(address): ClientAddress,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let from_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/x-www-form-urlencoded"));
    match check_login(&state, &headers, &body, address).await {
        // The login form shows the refusal itself.
        Err(e) if from_form && e.status == StatusCode::FORBIDDEN => {
            let mut response = StatusCode::SEE_OTHER.into_response();
            let location = state.url("/login?failed=1");
            response.headers_mut().insert(header::LOCATION, HeaderValue::from_str(&location).expect("URL is ASCII"));
            Ok(response)
        }
        other => other,
    }
}

async fn check_login(
    state: &AppState,
    headers: &HeaderMap,
    body: &Bytes,
    address: Option<std::net::IpAddr>,
) -> ApiResult<Response> {
    let request: LoginRequest = body::parse(headers, body)?;
    // Refused before any password work: guessing is slow, a flood is cheap.
    if let Err(throttled) = state.login_throttle.check(&request.username, address) {
        return Err(ApiError::try_later(
            StatusCode::TOO_MANY_REQUESTS,
            "too many failed logins for this user or from this address: try again later",
            throttled.retry_after,
        ));
    }
    let refused = || ApiError::forbidden("wrong user name or password");
    let found = state.db.user_with_password(&request.username).await?;
    let hash = found.as_ref().and_then(|(_, hash)| hash.clone());
    // An unknown user costs what a wrong password costs.
    let valid = users::check_password(request.password, hash.clone()).await;
    let (Some((user, _)), Some(hash), true) = (found, hash, valid) else {
        state.login_throttle.failed(&request.username, address);
        return Err(refused());
    };
    state.login_throttle.succeeded(&user.username);
    let secret = users::new_secret("");
    let days = state.config.web.session_days;
    let expires = now() + (days * 86400) as i64;
    if !state.db.create_session(&users::digest(&secret), user.id, expires, &hash).await? {
        // The password changed while this one was being checked.
        return Err(refused());
    }
    let secure = if state.config.base_url().starts_with("https://") { "; Secure" } else { "" };
    let cookie = format!("{SESSION_COOKIE}={secret}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}{secure}", days * 86400);
    let location = state.url("/");
    let mut response = (StatusCode::FOUND, Json(user_json(&user))).into_response();
    response.headers_mut().insert(header::SET_COOKIE, HeaderValue::from_str(&cookie).expect("cookie is ASCII"));
    response.headers_mut().insert(header::LOCATION, HeaderValue::from_str(&location).expect("URL is ASCII"));
    Ok(response)
}

/// `POST /logout`: ends the session.
pub async fn logout(State(state): State<AppState>, headers: HeaderMap) -> ApiResult<Response> {
    if let Some(secret) = session_cookie(&headers) {
        state.db.delete_session(&users::digest(secret)).await?;
    }
    let mut response = super::redirect(&state, "/");
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("hydra_session=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0"),
    );
    Ok(response)
}

pub async fn current_user(caller: Caller) -> ApiResult<Json<Value>> {
    let user = caller.user.ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "nobody is logged in"))?;
    Ok(Json(user_json(&user)))
}

pub async fn list_users(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    require(&caller, Action::ManageUsers)?;
    Ok(Json(Value::Array(state.db.users().await?.iter().map(user_json).collect())))
}

/// Users see and change their own account, a token only within its
/// scopes; admins (with `admin`) every account.
pub(super) fn require_account(caller: &Caller, username: &str, how: AccountUse) -> ApiResult<()> {
    Ok(accounts::check_account(caller, username, how)?)
}

pub(super) async fn find_user(state: &AppState, username: &str) -> ApiResult<User> {
    state.db.user(username).await?.ok_or_else(|| ApiError::not_found(format!("user ‘{username}’ does not exist")))
}

pub async fn get_user(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    require_account(&caller, &name, AccountUse::See)?;
    Ok(Json(user_json(&find_user(&state, &name).await?)))
}

#[derive(Deserialize)]
struct UserRequest {
    #[serde(default)]
    fullname: Option<String>,
    #[serde(default)]
    emailaddress: Option<String>,
    #[serde(default)]
    password: Option<String>,
    /// Needed to change one's own password (not for admins changing any):
    /// a stolen session or token must not become the account's password.
    #[serde(default)]
    currentpassword: Option<String>,
    #[serde(default)]
    userroles: Option<BTreeSet<String>>,
}

/// `PUT /user/NAME`: admins create users and set roles; users change their
/// own name, address and password.
pub async fn put_user(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let request: UserRequest = body::parse(&headers, &body)?;
    let changes = AccountChanges {
        full_name: request.fullname,
        email: request.emailaddress,
        password: request.password,
        current_password: request.currentpassword,
        roles: request.userroles,
    };
    let (user, created) = accounts::save_account(&state.db, &caller, &name, changes).await?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(user_json(&user))).into_response())
}

pub async fn delete_user(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    require(&caller, Action::ManageUsers)?;
    if !state.db.delete_user(&name).await? {
        return Err(ApiError::not_found(format!("user ‘{name}’ does not exist")));
    }
    Ok(Json(json!({ "redirect": state.url("/users") })))
}

#[derive(Deserialize)]
struct TokenRequest {
    #[serde(default)]
    name: String,
    scopes: Vec<String>,
    /// Days until the token stops working; none means it does not expire.
    #[serde(default)]
    expires_in_days: Option<u32>,
}

/// `POST /user/NAME/tokens`: a new API token, shown once in the answer.
pub async fn create_token(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    require_account(&caller, &name, AccountUse::Change)?;
    let request: TokenRequest = body::parse(&headers, &body)?;
    let (secret, token) =
        accounts::create_token(&state.db, &caller, &name, &request.name, &request.scopes, request.expires_in_days)
            .await?;
    let mut value = token_json(&token);
    value["token"] = json!(secret);
    Ok((StatusCode::CREATED, Json(value)).into_response())
}

pub async fn list_tokens(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    require_account(&caller, &name, AccountUse::Change)?;
    let user = find_user(&state, &name).await?;
    Ok(Json(Value::Array(state.db.tokens_of(user.id).await?.iter().map(token_json).collect())))
}

pub async fn revoke_token(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, id)): Path<(String, i64)>,
) -> ApiResult<Json<Value>> {
    require_account(&caller, &name, AccountUse::Change)?;
    let user = find_user(&state, &name).await?;
    if !state.db.revoke_token(user.id, id).await? {
        return Err(ApiError::not_found(format!("user ‘{name}’ has no token {id}")));
    }
    Ok(Json(json!({ "revoked": id })))
}
