//! Creating and editing projects and jobsets from the pages. A form's POST
//! becomes `projects`' typed changes (a jobset's fields are read as its
//! spec, as `PUT /jobset/P/J` reads one) and is saved by the same rules as
//! the API's; an error naming a field (`ApiError::field`) is shown next to
//! it, with what the user typed kept.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use serde_json::{Map, Value, json};

use super::{layout, render};
use crate::db::Declarative;
use crate::projects::JobsetSpec;
use crate::projects::save::ProjectChanges;
use crate::users::{Action, Caller};
use crate::web::auth::{require, require_on};
use crate::web::extract::Path;
use crate::web::{ApiError, ApiResult, AppState, body, find_jobset, find_project};

/// Empty input rows a jobset form offers beyond the existing inputs.
const SPARE_INPUTS: usize = 2;

/// What the user typed, by field name, as the form sent it.
pub(super) type Fields = BTreeMap<String, String>;

/// A form's fields, extracted from a POST; a malformed one is answered
/// with an error page.
pub(super) struct Form(pub Fields);

impl<S: Send + Sync> axum::extract::FromRequest<S> for Form {
    type Rejection = Response;

    async fn from_request(request: axum::extract::Request, state: &S) -> Result<Self, Response> {
        let caller = request.extensions().get::<Caller>().cloned().unwrap_or_else(Caller::anonymous);
        let body = Bytes::from_request(request, state).await.map_err(IntoResponse::into_response)?;
        serde_urlencoded::from_bytes::<Vec<(String, String)>>(&body)
            .map(|pairs| Form(pairs.into_iter().collect()))
            .map_err(|e| render(&caller, Err(ApiError::bad_request(format!("malformed form: {e}")))))
    }
}

/// The field an API error names, if any, and its message.
pub(super) fn field_of(error: &ApiError) -> (Option<String>, String) {
    match &error.field {
        Some(field) => (Some(field.field.clone()), field.message.clone()),
        None => (None, error.message.clone()),
    }
}

/// A 303 to a page of this server, after a form was applied.
pub(super) fn see_other(state: &AppState, path: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(location) = HeaderValue::from_str(&state.url(path)) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

/// One labelled field with the error that concerns it, if any.
pub(super) fn field(label: &str, name: &str, input: Markup, error: &(Option<String>, String)) -> Markup {
    html! {
        label {
            (label) (input)
            @if error.0.as_deref() == Some(name) { span.error role="alert" { (error.1) } }
        }
    }
}

pub(super) fn text(name: &str, fields: &Fields) -> Markup {
    html! { input type="text" name=(name) value=(fields.get(name).map(String::as_str).unwrap_or("")); }
}

pub(super) fn checkbox(name: &str, fields: &Fields) -> Markup {
    let checked = fields.get(name).is_some_and(|v| matches!(v.as_str(), "on" | "1" | "true"));
    html! { input type="checkbox" name=(name) checked[checked]; }
}

/// An error no field claims, above the form.
fn general_error(error: &(Option<String>, String), fields_shown: &[&str]) -> Markup {
    html! {
        @if !error.1.is_empty() && !error.0.as_deref().is_some_and(|f| fields_shown.contains(&f) || f.starts_with("inputs.")) {
            p.error role="alert" { (error.1) }
        }
    }
}

const PROJECT_FIELDS: [&str; 8] = [
    "name",
    "displayname",
    "description",
    "homepage",
    "owner",
    "declarative.file",
    "declarative.type",
    "declarative.value",
];

fn project_form(action: &str, fields: &Fields, error: &(Option<String>, String), new: bool) -> Markup {
    html! {
        (general_error(error, &PROJECT_FIELDS))
        form.stacked method="post" action=(action) {
            @if new { (field("Identifier", "name", text("name", fields), error)) }
            (field("Display name", "displayname", text("displayname", fields), error))
            (field("Description", "description", text("description", fields), error))
            (field("Homepage", "homepage", text("homepage", fields), error))
            (field("Enabled", "enabled", checkbox("enabled", fields), error))
            (field("Visible", "visible", checkbox("visible", fields), error))
            fieldset {
                legend { "Declarative spec (optional)" }
                (field("Spec file", "declarative.file", text("declarative.file", fields), error))
                (field("Input type", "declarative.type", text("declarative.type", fields), error))
                (field("Input value", "declarative.value", text("declarative.value", fields), error))
            }
            button type="submit" { @if new { "Create the project" } @else { "Save" } }
        }
    }
}

/// The changes a project form asks for.
fn project_changes(fields: &Fields) -> ProjectChanges {
    let get = |name: &str| fields.get(name).cloned().unwrap_or_default();
    let file = get("declarative.file");
    ProjectChanges {
        display_name: Some(get("displayname")),
        description: Some(get("description")),
        homepage: Some(get("homepage")),
        enabled: Some(fields.contains_key("enabled")),
        hidden: Some(!fields.contains_key("visible")),
        declarative: Some((!file.is_empty()).then(|| Declarative {
            file,
            kind: get("declarative.type"),
            value: get("declarative.value"),
        })),
        ..ProjectChanges::default()
    }
}

/// Saves a project from its form, waking the evaluator when it asks to be.
async fn save_project(state: &AppState, caller: &Caller, name: &str, fields: &Fields) -> Result<(), ApiError> {
    let saved = state.editor().save_project(caller, name, project_changes(fields)).await?;
    if saved.wake_evaluator {
        state.evaluator.wake();
    }
    Ok(())
}

/// Saves a jobset from its form.
async fn save_jobset(state: &AppState, caller: &Caller, project: &str, name: &str, fields: &Fields) -> ApiResult<()> {
    state.editor().jobsets_to_save(caller, project).await?;
    let spec: JobsetSpec = body::from_value(jobset_json(fields))?;
    state.editor().save_jobset(caller, project, name, spec).await?;
    state.evaluator.wake();
    Ok(())
}

pub async fn new_project_page(caller: Caller) -> Response {
    if let Err(e) = require(&caller, Action::CreateProject) {
        return render(&caller, Err(e));
    }
    let fields = Fields::from([("enabled".into(), "on".into()), ("visible".into(), "on".into())]);
    let body = project_form("/new-project", &fields, &(None, String::new()), true);
    render(&caller, Ok(layout(&caller, "New project", &[], body)))
}

pub async fn create_project(State(state): State<AppState>, caller: Caller, Form(fields): Form) -> Response {
    let name = fields.get("name").cloned().unwrap_or_default();
    let answer = if state.db.project(&name).await.ok().flatten().is_some() {
        Err(ApiError::invalid_field("name", format!("a project named ‘{name}’ already exists")))
    } else {
        save_project(&state, &caller, &name, &fields).await
    };
    match answer {
        Ok(_) => see_other(&state, &format!("/project/{name}")),
        Err(error) => form_error(&caller, "New project", error, |e| project_form("/new-project", &fields, e, true)),
    }
}

/// The form again, with the error shown where it belongs, and the status
/// of the error (a 4xx, so that scripts and tests see it failed).
pub(super) fn form_error(
    caller: &Caller,
    title: &str,
    error: ApiError,
    form: impl FnOnce(&(Option<String>, String)) -> Markup,
) -> Response {
    if matches!(error.status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::NOT_FOUND) {
        return render(caller, Err(error));
    }
    let status = error.status;
    let page = layout(caller, title, &[], form(&field_of(&error)));
    (status, page).into_response()
}

pub async fn edit_project_page(State(state): State<AppState>, caller: Caller, Path(name): Path<String>) -> Response {
    let page = async {
        let project = find_project(&state, &name).await?;
        require_on(&state, &caller, Action::EditProject, &project).await?;
        let mut fields = Fields::new();
        fields.insert("displayname".into(), project.display_name.clone());
        fields.insert("description".into(), project.description.clone());
        fields.insert("homepage".into(), project.homepage.clone());
        if project.enabled {
            fields.insert("enabled".into(), "on".into());
        }
        if !project.hidden {
            fields.insert("visible".into(), "on".into());
        }
        if let Some(declarative) = project.declarative() {
            fields.insert("declarative.file".into(), declarative.file);
            fields.insert("declarative.type".into(), declarative.kind);
            fields.insert("declarative.value".into(), declarative.value);
        }
        let form = project_form(&format!("/project/{name}/edit"), &fields, &(None, String::new()), false);
        Ok(layout(&caller, &format!("Edit {name}"), &[], form))
    }
    .await;
    render(&caller, page)
}

pub async fn edit_project(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Form(fields): Form,
) -> Response {
    let action = format!("/project/{name}/edit");
    let answer = match find_project(&state, &name).await {
        Ok(_) => save_project(&state, &caller, &name, &fields).await,
        Err(e) => Err(e),
    };
    match answer {
        Ok(_) => see_other(&state, &format!("/project/{name}")),
        Err(error) => form_error(&caller, &format!("Edit {name}"), error, |e| project_form(&action, &fields, e, false)),
    }
}

const JOBSET_FIELDS: [&str; 13] = [
    "name",
    "description",
    "type",
    "flake",
    "nixexprinput",
    "nixexprpath",
    "enabled",
    "checkinterval",
    "schedulingshares",
    "keepnr",
    "emailoverride",
    "enableemail",
    "visible",
];

fn jobset_form(action: &str, fields: &Fields, error: &(Option<String>, String), new: bool) -> Markup {
    let selected = |name: &str, value: &str| fields.get(name).map(String::as_str) == Some(value);
    // The rows up to the last one named, and a few empty ones.
    let named = (0..)
        .map_while(|i| fields.get(&format!("input-{i}-name")))
        .enumerate()
        .filter(|(_, name)| !name.trim().is_empty())
        .last()
        .map_or(0, |(i, _)| i + 1);
    let rows = named + SPARE_INPUTS;
    html! {
        (general_error(error, &JOBSET_FIELDS))
        form.stacked method="post" action=(action) {
            @if new { (field("Identifier", "name", text("name", fields), error)) }
            (field("Description", "description", text("description", fields), error))
            (field("Type", "type", html! {
                select name="type" {
                    option value="0" selected[!selected("type", "1")] { "legacy (an expression in an input)" }
                    option value="1" selected[selected("type", "1")] { "flake" }
                }
            }, error))
            (field("Flake (for a flake jobset)", "flake", text("flake", fields), error))
            (field("Expression input (legacy)", "nixexprinput", text("nixexprinput", fields), error))
            (field("Expression file in it (legacy)", "nixexprpath", text("nixexprpath", fields), error))
            (field("State", "enabled", html! {
                select name="enabled" {
                    @for (value, label) in [("1", "enabled"), ("0", "disabled"), ("2", "one-shot"), ("3", "one at a time")] {
                        option value=(value) selected[selected("enabled", value)] { (label) }
                    }
                }
            }, error))
            (field("Visible", "visible", checkbox("visible", fields), error))
            (field("Check interval (seconds, 0: on push only)", "checkinterval", text("checkinterval", fields), error))
            (field("Scheduling shares", "schedulingshares", text("schedulingshares", fields), error))
            (field("Evaluations to keep", "keepnr", text("keepnr", fields), error))
            (field("Mail on status changes", "enableemail", checkbox("enableemail", fields), error))
            (field("Mail to (instead of the maintainers)", "emailoverride", text("emailoverride", fields), error))
            fieldset {
                legend { "Inputs" }
                @for i in 0..rows {
                    @let row_name = fields.get(&format!("input-{i}-name")).cloned().unwrap_or_default();
                    div.input-row {
                        input type="text" name=(format!("input-{i}-name")) placeholder="name" aria-label="input name" value=(row_name);
                        input type="text" name=(format!("input-{i}-type")) placeholder="type (git, path, string…)" aria-label="input type"
                            value=(fields.get(&format!("input-{i}-type")).map(String::as_str).unwrap_or(""));
                        input type="text" name=(format!("input-{i}-value")) placeholder="value" aria-label="input value"
                            value=(fields.get(&format!("input-{i}-value")).map(String::as_str).unwrap_or(""));
                        label.inline title="Mail the authors of its changes when a build fails" {
                            (checkbox(&format!("input-{i}-emailresponsible"), fields)) "mail authors"
                        }
                        @if !row_name.is_empty() && error.0.as_deref().is_some_and(|f| f == format!("inputs.{row_name}") || f.starts_with(&format!("inputs.{row_name}."))) {
                            span.error role="alert" { (error.1) }
                        }
                    }
                }
            }
            button type="submit" { @if new { "Create the jobset" } @else { "Save" } }
        }
    }
}

/// The body of `PUT /jobset/P/J` for a jobset form.
fn jobset_json(fields: &Fields) -> Value {
    let get = |name: &str| fields.get(name).cloned().unwrap_or_default();
    let mut inputs = Map::new();
    for i in 0.. {
        let Some(name) = fields.get(&format!("input-{i}-name")) else { break };
        if name.trim().is_empty() {
            continue;
        }
        inputs.insert(
            name.trim().to_owned(),
            json!({
                "type": get(&format!("input-{i}-type")).trim(),
                "value": get(&format!("input-{i}-value")),
                "emailresponsible": fields.contains_key(&format!("input-{i}-emailresponsible")),
            }),
        );
    }
    json!({
        "description": get("description"),
        "type": get("type"),
        "flake": get("flake"),
        "nixexprinput": get("nixexprinput"),
        "nixexprpath": get("nixexprpath"),
        "enabled": get("enabled"),
        "visible": fields.contains_key("visible"),
        "checkinterval": get("checkinterval"),
        "schedulingshares": get("schedulingshares"),
        "keepnr": get("keepnr"),
        "enableemail": fields.contains_key("enableemail"),
        "emailoverride": get("emailoverride"),
        "inputs": inputs,
    })
}

pub async fn new_jobset_page(State(state): State<AppState>, caller: Caller, Path(project): Path<String>) -> Response {
    let page = async {
        let found = find_project(&state, &project).await?;
        require_on(&state, &caller, Action::EditJobset, &found).await?;
        let defaults = crate::db::JobsetSettings::new("");
        let fields = Fields::from([
            ("enabled".into(), "1".into()),
            ("visible".into(), "on".into()),
            ("checkinterval".into(), defaults.check_interval.to_string()),
            ("schedulingshares".into(), defaults.scheduling_shares.to_string()),
            ("keepnr".into(), defaults.keep_nr.to_string()),
        ]);
        let form = jobset_form(&format!("/project/{project}/new-jobset"), &fields, &(None, String::new()), true);
        Ok(layout(&caller, &format!("New jobset of {project}"), &[], form))
    }
    .await;
    render(&caller, page)
}

pub async fn create_jobset(
    State(state): State<AppState>,
    caller: Caller,
    Path(project): Path<String>,
    Form(fields): Form,
) -> Response {
    let name = fields.get("name").cloned().unwrap_or_default();
    let answer = match state.db.jobset(&project, &name).await {
        Ok(Some(_)) => {
            Err(ApiError::invalid_field("name", format!("project ‘{project}’ already has a jobset ‘{name}’")))
        }
        Ok(None) => save_jobset(&state, &caller, &project, &name, &fields).await,
        Err(e) => Err(e.into()),
    };
    let action = format!("/project/{project}/new-jobset");
    match answer {
        Ok(_) => see_other(&state, &format!("/jobset/{project}/{name}")),
        Err(error) => {
            form_error(&caller, &format!("New jobset of {project}"), error, |e| jobset_form(&action, &fields, e, true))
        }
    }
}

pub async fn edit_jobset_page(
    State(state): State<AppState>,
    caller: Caller,
    Path((project, name)): Path<(String, String)>,
) -> Response {
    let page = async {
        let (found, jobset) = find_jobset(&state, &project, &name).await?;
        require_on(&state, &caller, Action::EditJobset, &found).await?;
        let inputs = state.db.jobset_inputs(jobset.id).await?;
        let mut fields = Fields::new();
        fields.insert("description".into(), jobset.description.clone());
        fields.insert("type".into(), jobset.kind.to_string());
        fields.insert("flake".into(), jobset.flake.clone().unwrap_or_default());
        fields.insert("nixexprinput".into(), jobset.nixexpr_input.clone());
        fields.insert("nixexprpath".into(), jobset.nixexpr_path.clone());
        fields.insert("enabled".into(), jobset.enabled.to_string());
        if !jobset.hidden {
            fields.insert("visible".into(), "on".into());
        }
        fields.insert("checkinterval".into(), jobset.check_interval.to_string());
        fields.insert("schedulingshares".into(), jobset.scheduling_shares.to_string());
        fields.insert("keepnr".into(), jobset.keep_nr.to_string());
        if jobset.enable_email {
            fields.insert("enableemail".into(), "on".into());
        }
        fields.insert("emailoverride".into(), jobset.email_override.clone());
        for (i, input) in inputs.iter().enumerate() {
            fields.insert(format!("input-{i}-name"), input.name.clone());
            fields.insert(format!("input-{i}-type"), input.kind.clone());
            fields.insert(format!("input-{i}-value"), input.value.clone());
            if input.email_responsible {
                fields.insert(format!("input-{i}-emailresponsible"), "on".into());
            }
        }
        let form = jobset_form(&format!("/jobset/{project}/{name}/edit"), &fields, &(None, String::new()), false);
        Ok(layout(&caller, &format!("Edit {project}:{name}"), &[], form))
    }
    .await;
    render(&caller, page)
}

pub async fn edit_jobset(
    State(state): State<AppState>,
    caller: Caller,
    Path((project, name)): Path<(String, String)>,
    Form(fields): Form,
) -> Response {
    let answer = match find_jobset(&state, &project, &name).await {
        Ok(_) => save_jobset(&state, &caller, &project, &name, &fields).await,
        Err(e) => Err(e),
    };
    let action = format!("/jobset/{project}/{name}/edit");
    match answer {
        Ok(_) => see_other(&state, &format!("/jobset/{project}/{name}")),
        Err(error) => {
            form_error(&caller, &format!("Edit {project}:{name}"), error, |e| jobset_form(&action, &fields, e, false))
        }
    }
}
