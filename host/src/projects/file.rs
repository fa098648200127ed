//! The projects file of `orthrus project apply`: projects and their
//! jobsets kept in an operator's own configuration repository.
//!
//! ```toml
//! [projects.hello]
//! displayname = "Hello"
//! description = "GNU Hello, built on every commit"
//!
//! [projects.hello.jobsets.main]
//! nixexprinput = "src"
//! nixexprpath = "release.nix"
//! inputs.src = { type = "git", value = "https://example.org/hello.git main" }
//!
//! [projects.website]          # a declarative project: its jobsets are
//! declarative = { file = "spec.json", type = "git", value = "https://example.org/site.git" }
//! ```
//!
//! JSON with the same shape works too (by the file's extension). The file
//! is the truth for the projects it lists: a project field left out takes
//! its default (the owner, the members and the release sets excepted, which
//! are kept), and a project's jobsets not listed under it are disabled and
//! hidden (their evaluations and builds stay). A project without a
//! `jobsets` table keeps the jobsets it has; projects not in the file are
//! not touched. The whole file is checked before anything is written; the
//! writes are then made project by project, so a database failure midway
//! leaves the projects before it applied, and running the command again
//! completes the rest.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::spec::{FieldError, JobsetSpec, flexible_bool, from_value_strict};
use super::{check_declarative, check_name, describe_errors, parse_document, resolve_jobsets};
use crate::db::{Db, Declarative, JobsetSettings, ProjectSettings};
use crate::inputs::InputFetcher;

#[derive(Debug, Deserialize)]
struct ProjectsFile {
    #[serde(default)]
    projects: BTreeMap<String, ProjectSpec>,
}

#[derive(Debug, Deserialize)]
struct ProjectSpec {
    #[serde(default)]
    displayname: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    homepage: Option<String>,
    #[serde(default)]
    owner: Option<String>,
    #[serde(default, deserialize_with = "flexible_bool")]
    enabled: Option<bool>,
    #[serde(default, deserialize_with = "flexible_bool")]
    visible: Option<bool>,
    #[serde(default, deserialize_with = "flexible_bool")]
    hidden: Option<bool>,
    #[serde(default, deserialize_with = "flexible_bool")]
    enable_dynamic_run_command: Option<bool>,
    #[serde(default)]
    declarative: Option<DeclarativeSpec>,
    #[serde(default)]
    jobsets: Option<BTreeMap<String, JobsetSpec>>,
}

#[derive(Debug, Deserialize)]
struct DeclarativeSpec {
    file: String,
    #[serde(rename = "type")]
    kind: String,
    value: String,
}

/// One project of the file, checked.
struct PlannedProject {
    settings: ProjectSettings,
    jobsets: Option<BTreeMap<String, JobsetSettings>>,
}

/// What applying the file did, one line per change (`created project p`,
/// `changed jobset p:j`, `disabled jobset p:k`).
pub type Report = Vec<String>;

/// Reads and checks the whole file, then applies it. Nothing is written
/// when any part of it is wrong; the error lists every fault.
pub async fn apply_file(db: &Db, inputs: &InputFetcher, path: &Path) -> anyhow::Result<Report> {
    let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let planned = plan(db, inputs, &text, path.extension().is_some_and(|e| e == "toml")).await.map_err(|errors| {
        anyhow::anyhow!("{} is not applied, nothing was changed:\n{}", path.display(), describe_errors(&errors))
    })?;
    let mut report = Report::new();
    for PlannedProject { settings, jobsets } in planned {
        let existing = db.project(&settings.name).await?;
        let project = match &existing {
            Some(current) if current.settings() == settings => current.clone(),
            _ => {
                let (project, created) =
                    db.save_project(&settings.name, &settings, crate::db::Expect::Anything).await?;
                report.push(format!("{} project {}", if created { "created" } else { "changed" }, project.name));
                project
            }
        };
        let declarative_changed = existing.as_ref().map(|p| p.declarative()) != Some(settings.declarative.clone());
        if declarative_changed {
            db.configure_spec_jobset(&project).await?;
        }
        if let Some(jobsets) = jobsets {
            let changes = db.apply_jobsets(&project, &jobsets, &[]).await?;
            let name = &project.name;
            report.extend(changes.created.iter().map(|j| format!("created jobset {name}:{j}")));
            report.extend(changes.changed.iter().map(|j| format!("changed jobset {name}:{j}")));
            report.extend(changes.disabled.iter().map(|j| format!("disabled jobset {name}:{j}")));
        }
    }
    Ok(report)
}

/// The file's projects as they should be, or every fault found.
async fn plan(db: &Db, inputs: &InputFetcher, text: &str, toml: bool) -> Result<Vec<PlannedProject>, Vec<FieldError>> {
    let value = parse_document(text, toml).map_err(|e| vec![FieldError::new("(file)", e)])?;
    let file: ProjectsFile = from_value_strict(value)?;
    let mut errors = Vec::new();
    let mut planned = Vec::new();
    for (name, spec) in file.projects {
        let at = |field: &str| format!("projects.{name}.{field}");
        if let Err(message) = check_name("project", &name) {
            errors.push(FieldError::new(format!("projects.{name}"), message));
            continue;
        }
        let existing = match db.project(&name).await {
            Ok(existing) => existing,
            Err(e) => {
                errors.push(FieldError::new(format!("projects.{name}"), e.to_string()));
                continue;
            }
        };
        let defaults = ProjectSettings::new(&name);
        let mut settings = ProjectSettings {
            display_name: spec.displayname.filter(|d| !d.trim().is_empty()).unwrap_or_else(|| name.clone()),
            description: spec.description.unwrap_or_default(),
            homepage: spec.homepage.unwrap_or_default(),
            enabled: spec.enabled.unwrap_or(true),
            hidden: spec.hidden.unwrap_or(!spec.visible.unwrap_or(true)),
            enable_dynamic_run_command: spec.enable_dynamic_run_command.unwrap_or(false),
            declarative: spec.declarative.map(|d| Declarative { file: d.file, kind: d.kind, value: d.value }),
            ..existing.as_ref().map(|p| p.settings()).unwrap_or(defaults)
        };
        if let Some(owner) = spec.owner {
            match db.user(&owner).await {
                Ok(Some(_)) => settings.owner = owner,
                Ok(None) => errors.push(FieldError::new(at("owner"), format!("there is no user ‘{owner}’"))),
                Err(e) => errors.push(FieldError::new(at("owner"), e.to_string())),
            }
        }
        if let Some(declarative) = &settings.declarative {
            if let Err(e) = check_declarative(declarative, inputs).await {
                errors.push(e.inside(&format!("projects.{name}")));
            }
        }
        let jobsets = match spec.jobsets {
            Some(_) if settings.declarative.is_some() => {
                errors.push(FieldError::new(
                    at("jobsets"),
                    "a declarative project's jobsets come from its spec file, not from here",
                ));
                continue;
            }
            Some(specs) => match resolve_jobsets(specs, inputs).await {
                Ok(jobsets) => Some(jobsets),
                Err(faults) => {
                    errors.extend(faults.into_iter().map(|e| e.inside(&format!("projects.{name}.jobsets"))));
                    continue;
                }
            },
            None => None,
        };
        planned.push(PlannedProject { settings, jobsets });
    }
    if errors.is_empty() { Ok(planned) } else { Err(errors) }
}
