//! Pages for running the server: users and their API tokens, the plugins
//! with what they asked for and were granted, and the notification
//! outbox. Forms go through the JSON handlers (`web/users.rs`), so the
//! rights and rules are the API's.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};

use super::forms::{Fields, Form, checkbox, field, form_error, see_other, text};
use super::pages::{action_button, crumb};
use super::{layout, render, time};
use crate::db::User;
use crate::domain::{Role, TokenScope};
use crate::plugins::Capability;
use crate::users::accounts::{self, AccountChanges, AccountUse};
use crate::users::{Action, Caller};
use crate::web::auth::require;
use crate::web::extract::Path;
use crate::web::{ApiError, AppState, users};

/// Deliveries waiting for a retry listed per notifier.
const PENDING_SHOWN: usize = 50;
/// Events of the outbox listed on the notifications page.
const EVENTS_SHOWN: i64 = 50;

fn admin_crumbs(label: &str, href: &str) -> [(String, String); 2] {
    [crumb("admin", "/admin"), crumb(label, href)]
}

/// `/admin`: what there is to look after.
pub async fn admin(State(state): State<AppState>, caller: Caller) -> Response {
    if let Err(e) = require(&caller, Action::ManageUsers) {
        return render(&caller, Err(e));
    }
    let load_errors = state.plugins.load_errors();
    let body = html! {
        ul {
            li { a href="/users" { "Users" } " and their API tokens" }
            li { a href="/admin/plugins" { "Plugins" } " — " (state.plugins.plugins().len()) " loaded"
                 @if !load_errors.is_empty() { ", " span.fail { (load_errors.len()) " could not be loaded" } } }
            li { a href="/admin/notifications" { "Notifications" } " — each notifier's deliveries and the event outbox" }
            li { a href="/machines" { "Machines" } }
        }
    };
    render(&caller, Ok(layout(&caller, "Admin", &[crumb("admin", "/admin")], body)))
}

fn user_form(fields: &Fields, error: &(Option<String>, String)) -> Markup {
    html! {
        @if error.0.is_none() && !error.1.is_empty() { p.error role="alert" { (error.1) } }
        form.stacked method="post" action="/new-user" {
            (field("User name", "username", text("username", fields), error))
            (field("Full name", "fullname", text("fullname", fields), error))
            (field("E-mail address", "emailaddress", text("emailaddress", fields), error))
            (field("Password", "password", html! { input type="password" name="password" autocomplete="new-password"; }, error))
            fieldset {
                legend { "Roles" }
                @for role in Role::ALL { label.inline { (checkbox(&format!("role.{role}"), fields)) (role) } }
                @if error.0.as_deref() == Some("userroles") { span.error role="alert" { (error.1) } }
            }
            button type="submit" { "Create the user" }
        }
    }
}

fn users_page(caller: &Caller, users: &[User], fields: &Fields, error: &(Option<String>, String)) -> Markup {
    let body = html! {
        div.scroll { table {
            thead { tr { th { "User" } th { "Full name" } th { "E-mail" } th { "Roles" } } }
            tbody { @for user in users { tr {
                td { a href=(format!("/user/{}", user.username)) { (user.username) } }
                td { (user.full_name) }
                td { (user.email) }
                td { (user.roles.iter().map(String::as_str).collect::<Vec<_>>().join(", ")) }
            } } }
        } }
        h2 { "New user" }
        (user_form(fields, error))
    };
    layout(caller, "Users", &admin_crumbs("users", "/users"), body)
}

/// `/users`: every user, and a form for a new one (admins).
pub async fn users_list(State(state): State<AppState>, caller: Caller) -> Response {
    let page = async {
        require(&caller, Action::ManageUsers)?;
        let users = state.db.users().await?;
        Ok(users_page(&caller, &users, &Fields::new(), &(None, String::new())))
    }
    .await;
    render(&caller, page)
}

/// `POST /new-user`: the form of `/users`, through `PUT /user/NAME`.
pub async fn create_user(State(state): State<AppState>, caller: Caller, Form(fields): Form) -> Response {
    // First: the answer to a refused form lists the users.
    if let Err(e) = require(&caller, Action::ManageUsers) {
        return render(&caller, Err(e));
    }
    let name = fields.get("username").cloned().unwrap_or_default();
    let get = |key: &str| fields.get(key).cloned().unwrap_or_default();
    let roles: Vec<&str> = Role::ALL
        .iter()
        .map(|role| role.as_str())
        .filter(|role| fields.contains_key(&format!("role.{role}")))
        .collect();
    let answer = match state.db.user(&name).await {
        Err(e) => Err(e.into()),
        Ok(Some(_)) => Err(ApiError::invalid_field("username", format!("a user named ‘{name}’ already exists"))),
        Ok(None) if name.is_empty() => Err(ApiError::invalid_field("username", "give the user a name")),
        Ok(None) => {
            let changes = AccountChanges {
                full_name: Some(get("fullname")),
                email: Some(get("emailaddress")),
                password: Some(get("password")),
                current_password: None,
                roles: Some(roles.iter().map(|role| role.to_string()).collect()),
            };
            accounts::save_account(&state.db, &caller, &name, changes).await.map_err(ApiError::from)
        }
    };
    match answer {
        Ok(_) => see_other(&state, &format!("/user/{name}")),
        Err(error) => {
            let users = state.db.users().await.unwrap_or_default();
            let status = error.status;
            if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
                return render(&caller, Err(error));
            }
            let mut kept = fields.clone();
            kept.remove("password");
            (status, users_page(&caller, &users, &kept, &super::forms::field_of(&error))).into_response()
        }
    }
}

fn token_form(name: &str, fields: &Fields, error: &(Option<String>, String)) -> Markup {
    html! {
        form.stacked method="post" action=(format!("/user/{name}/new-token")) {
            (field("What it is for", "name", text("name", fields), error))
            fieldset {
                legend { "Scopes" }
                @for scope in TokenScope::ALL { label.inline { (checkbox(&format!("scope.{scope}"), fields)) (scope) } }
                @if error.0.as_deref() == Some("scopes") { span.error role="alert" { (error.1) } }
            }
            (field("Expires after (days; empty: never)", "expires_in_days",
                   html! { input type="number" min="1" name="expires_in_days" value=(fields.get("expires_in_days").map(String::as_str).unwrap_or("")); }, error))
            button type="submit" { "Create a token" }
        }
    }
}

/// `/user/NAME` (the user or an admin): the account and its API tokens.
pub async fn user_page(State(state): State<AppState>, caller: Caller, Path(name): Path<String>) -> Response {
    let page = async {
        users::require_account(&caller, &name, AccountUse::Change)?;
        let user = users::find_user(&state, &name).await?;
        account_page(&state, &caller, &user, None, &Fields::new(), &(None, String::new())).await
    }
    .await;
    render(&caller, page)
}

/// The account page, with a token just made (shown once) or a form error.
async fn account_page(
    state: &AppState,
    caller: &Caller,
    user: &User,
    new_secret: Option<&str>,
    fields: &Fields,
    error: &(Option<String>, String),
) -> Result<Markup, ApiError> {
    let tokens = state.db.tokens_of(user.id).await?;
    let name = &user.username;
    let is_admin = require(caller, Action::ManageUsers).is_ok();
    let body = html! {
        dl {
            dt { "Full name" } dd { (user.full_name) }
            dt { "E-mail" } dd { (user.email) }
            dt { "Roles" } dd { (user.roles.iter().map(String::as_str).collect::<Vec<_>>().join(", ")) }
        }
        @if let Some(secret) = new_secret {
            div.notice role="status" {
                p { "The new token — copy it now, it is not shown again:" }
                pre.secret { (secret) }
            }
        }
        h2 { "API tokens" }
        @if tokens.is_empty() { p.muted { "No tokens." } } @else {
            div.scroll { table {
                thead { tr { th { "Token" } th { "Scopes" } th { "Created" } th { "Expires" } th { "Last used" } th {} } }
                tbody { @for token in &tokens { tr {
                    td { (token.name) }
                    td { (token.scopes) }
                    td { (time(Some(token.created_time))) }
                    td { (time(token.expires_time)) }
                    td { (time(token.last_used_time)) }
                    td { @if token.revoked { span.muted { "revoked" } }
                         @else { (action_button(&format!("/user/{name}/tokens/{}/revoke", token.id), "Revoke")) } }
                } } }
            } }
        }
        h2 { "New token" }
        (token_form(name, fields, error))
        @if is_admin && caller.user.as_ref().is_some_and(|me| &me.username != name) {
            h2 { "Delete the user" }
            p.muted { "Their sessions and tokens stop working; projects they own stay." }
            (action_button(&format!("/user/{name}/delete"), "Delete this user"))
        }
    };
    let mut crumbs = if is_admin { admin_crumbs("users", "/users").to_vec() } else { Vec::new() };
    crumbs.push(crumb(name, format!("/user/{name}")));
    Ok(layout(caller, &format!("User {name}"), &crumbs, body))
}

/// `POST /user/NAME/new-token`: through `POST /user/NAME/tokens`; the
/// secret is shown once, on the page that answers.
pub async fn create_token(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Form(fields): Form,
) -> Response {
    // First: the answer to a refused form shows the account.
    if let Err(e) = users::require_account(&caller, &name, AccountUse::Change) {
        return render(&caller, Err(e));
    }
    let scopes: Vec<String> = TokenScope::ALL
        .iter()
        .map(|scope| scope.to_string())
        .filter(|s| fields.contains_key(&format!("scope.{s}")))
        .collect();
    let days = fields.get("expires_in_days").map(|d| d.trim()).filter(|d| !d.is_empty());
    let expires = match days.map(str::parse::<u32>) {
        None => Ok(None),
        Some(Ok(days)) if days > 0 => Ok(Some(days)),
        Some(_) => Err(ApiError::invalid_field("expires_in_days", "a whole number of days, 1 or more")),
    };
    let answer = match expires {
        Err(e) => Err(e),
        Ok(expires) => {
            let token_name = fields.get("name").cloned().unwrap_or_default();
            accounts::create_token(&state.db, &caller, &name, &token_name, &scopes, expires)
                .await
                .map(|(secret, _)| secret)
                .map_err(ApiError::from)
        }
    };
    let result = async {
        let user = users::find_user(&state, &name).await?;
        match answer {
            Ok(secret) => Ok((
                StatusCode::CREATED,
                account_page(&state, &caller, &user, Some(&secret), &Fields::new(), &(None, String::new())).await?,
            )),
            Err(error) if matches!(error.status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) => Err(error),
            Err(error) => {
                let shown = super::forms::field_of(&error);
                Ok((error.status, account_page(&state, &caller, &user, None, &fields, &shown).await?))
            }
        }
    }
    .await;
    match result {
        Ok(page) => page.into_response(),
        Err(error) => render(&caller, Err(error)),
    }
}

/// `POST /user/NAME/tokens/ID/revoke`
pub async fn revoke_token(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, id)): Path<(String, i64)>,
) -> Response {
    match users::revoke_token(State(state.clone()), caller.clone(), Path((name.clone(), id))).await {
        Ok(_) => see_other(&state, &format!("/user/{name}")),
        Err(error) => render(&caller, Err(error)),
    }
}

/// `POST /user/NAME/delete`
pub async fn delete_user(State(state): State<AppState>, caller: Caller, Path(name): Path<String>) -> Response {
    match users::delete_user(State(state.clone()), caller.clone(), Path(name)).await {
        Ok(_) => see_other(&state, "/users"),
        Err(error) => form_error(&caller, "Users", error, |e| html! { p.error { (e.1) } }),
    }
}

fn capability_list(capabilities: &[Capability], other: &[Capability], missing_class: &str) -> Markup {
    html! {
        @if capabilities.is_empty() { span.muted { "nothing" } }
        @for capability in capabilities {
            @let class = if other.contains(capability) { "cap" } else { missing_class };
            code class=(class) { (capability.to_string()) } " "
        }
    }
}

/// `/admin/plugins`: each plugin, what it asked for and what it was granted.
pub async fn plugins(State(state): State<AppState>, caller: Caller) -> Response {
    if let Err(e) = require(&caller, Action::ManageUsers) {
        return render(&caller, Err(e));
    }
    let mut plugins = state.plugins.plugins();
    plugins.sort_by(|a, b| a.id.cmp(&b.id));
    let load_errors = state.plugins.load_errors();
    let body = html! {
        @if !load_errors.is_empty() {
            h2 { "Not loaded" }
            @for error in load_errors { pre.error { (error) } }
        }
        @match state.plugins.sandbox_unavailable() {
            None => { p.muted { "Programs run for plugins in a bubblewrap sandbox." } }
            Some(reason) => { p.error { "Programs run for plugins are refused: " (reason) } }
        }
        p.muted { "A capability asked for but not granted is struck out; one granted is what the plugin may use. "
                  "Grants are set in the configuration, under [plugins], by the plugin's identity." }
        div.scroll { table {
            thead { tr { th { "Plugin" } th { "Kind" } th { "Handles" } th { "Asked for" } th { "Granted" } th { "From" } } }
            tbody { @for plugin in &plugins {
                @let granted = plugin.grants.capabilities();
                tr {
                    td { strong { (plugin.id.as_str()) } " " span.muted { (plugin.metadata.version) }
                         @if plugin.grants.network() { br; span.muted { "its programs may use the network" } }
                         @if !plugin.metadata.description.is_empty() { br; span.muted { (plugin.metadata.description) } } }
                    td { (plugin.kind.to_string()) br; span.muted title="the WIT version it was built against" { "orthrus:plugin@" (plugin.wit) } }
                    td { (plugin.metadata.handles.join(", ")) }
                    td { (capability_list(&plugin.metadata.capabilities, &granted, "denied")) }
                    td { (capability_list(&granted, &granted, "cap")) }
                    td { (plugin.source.to_string()) br; code.muted title="sha256" { (plugin.sha256.get(..16).unwrap_or(&plugin.sha256)) "…" } }
                }
            } }
        } }
    };
    render(&caller, Ok(layout(&caller, "Plugins", &admin_crumbs("plugins", "/admin/plugins"), body)))
}

/// `/admin/notifications`: each notifier's deliveries, and the newest
/// events of the outbox they read.
pub async fn notifications(State(state): State<AppState>, caller: Caller) -> Response {
    let page = async {
        require(&caller, Action::ManageUsers)?;
        let notifiers = crate::notify::status(&state.config, &state.db).await?;
        let latest = state.db.latest_event_id().await?;
        let mut events = state.db.events_after((latest - EVENTS_SHOWN).max(0), EVENTS_SHOWN as u64, None).await?;
        events.reverse();
        let body = html! {
            h2 { "Notifiers" }
            @if notifiers.is_empty() { p.muted { "No notifier is configured." } }
            @for n in &notifiers {
                h3 { (n.name) " " span.muted { "(" (n.plugin) ")" } " "
                     @match n.state { "ok" => { span.badge.ok { "ok" } } "retrying" => { span.badge.queued { "retrying" } } _ => { span.badge.fail { (n.state) } } } }
                dl {
                    dt { "Events" } dd { (n.events.iter().map(|kind| kind.as_str()).collect::<Vec<_>>().join(", ")) }
                    dt { "Read up to" } dd { "event " (n.cursor) " of " (n.latest_event) }
                    dt { "Delivered" } dd { (n.delivered) ", last " (time(n.last_delivery)) }
                }
                @if !n.pending.is_empty() {
                    div.scroll { table {
                        thead { tr { th { "Event" } th { "Attempts" } th { "Failing since" } th { "Next attempt" } th { "Last error" } } }
                        tbody { @for p in n.pending.iter().take(PENDING_SHOWN) { tr {
                            td { (p.event) } td { (p.attempts) } td { (time(Some(p.first_failure))) } td { (time(Some(p.next_attempt))) }
                            td { pre.error { (p.last_error.clone().unwrap_or_default()) } }
                        } } }
                    } }
                    @if n.pending.len() > PENDING_SHOWN { p.muted { "and " (n.pending.len() - PENDING_SHOWN) " more waiting" } }
                }
            }
            h2 { "Newest events" }
            @if events.is_empty() { p.muted { "No events yet." } } @else {
                div.scroll { table {
                    thead { tr { th { "#" } th { "Kind" } th { "Time" } th { "About" } } }
                    tbody { @for e in &events { tr {
                        td { (e.id) } td { (e.kind) } td { (time(Some(e.time))) }
                        td {
                            @if let Some(build) = e.build_id { a href=(format!("/build/{build}")) { "build " (build) } " " }
                            @if let Some(eval) = e.eval_id { a href=(format!("/eval/{eval}")) { "evaluation " (eval) } }
                        }
                    } } }
                } }
            }
        };
        Ok::<_, ApiError>(layout(&caller, "Notifications", &admin_crumbs("notifications", "/admin/notifications"), body))
    }
    .await;
    render(&caller, page)
}
