//! Saving and deleting projects and jobsets, with Hydra's rules: who may,
//! names, declarative projects' locks, create-or-update, and what a change
//! asks of the evaluator. The JSON API and the HTML forms both call these;
//! neither repeats a rule, and the web layer only maps [`ProjectError`] to
//! an HTTP status.

use super::{FieldError, JobsetSpec, check_declarative, check_name, check_values};
use crate::db::{Db, DbError, Declarative, Expect, Jobset, JobsetSettings, Project, ProjectSettings, ReleaseSets};
use crate::inputs::InputFetcher;
use crate::plugins::{PluginKind, PluginRuntime};
use crate::users::{Action, Caller, Denied, ProjectOwners};

/// Why a change was refused.
#[derive(Debug, thiserror::Error)]
pub enum ProjectError {
    /// The caller may not (a 401 or 403).
    #[error("{0}")]
    Denied(Denied),
    /// Allowed in general, refused here: a declarative project's jobsets,
    /// a project's owner changed by a non-admin (a 403).
    #[error("{0}")]
    Locked(String),
    #[error("{0}")]
    NotFound(String),
    /// A name that breaks Hydra's rule (a 400).
    #[error("{0}")]
    BadName(String),
    /// A field at fault (a 400 naming it).
    #[error(transparent)]
    Field(#[from] FieldError),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<Denied> for ProjectError {
    fn from(denied: Denied) -> ProjectError {
        ProjectError::Denied(denied)
    }
}

/// What was saved, and whether it is new.
#[derive(Debug)]
pub struct Saved<T> {
    pub value: T,
    pub created: bool,
    /// The evaluator has something to look at (a jobset changed, a project
    /// became declarative or stopped being so).
    pub wake_evaluator: bool,
}

/// Changes to a project: what is `None` keeps its value (a new project is
/// enabled and visible unless told otherwise).
#[derive(Debug, Default)]
pub struct ProjectChanges {
    /// A new name (renaming the project).
    pub name: Option<String>,
    pub display_name: Option<String>,
    pub description: Option<String>,
    pub homepage: Option<String>,
    /// Only admins give projects away.
    pub owner: Option<String>,
    pub enabled: Option<bool>,
    pub hidden: Option<bool>,
    pub enable_dynamic_run_command: Option<bool>,
    /// `Some(None)` makes the project hand-edited again.
    pub declarative: Option<Option<Declarative>>,
    /// Users with the owner's rights on it.
    pub members: Option<Vec<String>>,
    pub release_sets: Option<ReleaseSets>,
}

/// What saving reads and checks against: the database, the inputs (values
/// are checked by their fetchers), the plugins (release sets name one).
#[derive(Clone, Copy)]
pub struct Editor<'a> {
    pub db: &'a Db,
    pub inputs: &'a InputFetcher,
    pub plugins: &'a PluginRuntime,
}

/// Whether `caller` may do `action` on `project` (its owner and members
/// have rights on it); the members are read only when they decide.
pub async fn check_on(db: &Db, caller: &Caller, action: Action, project: &Project) -> Result<(), ProjectError> {
    if caller.check(action, Some(ProjectOwners { owner: &project.owner, members: &[] })).is_ok() {
        return Ok(());
    }
    let members = db.project_members(project.id).await?;
    Ok(caller.check(action, Some(ProjectOwners { owner: &project.owner, members: &members }))?)
}

/// Release sets by name, each naming a loaded release-set plugin.
pub fn check_release_sets(sets: &ReleaseSets, plugins: &PluginRuntime) -> Result<(), String> {
    for (name, definition) in sets {
        check_name("release set", name)?;
        if !plugins.has_plugin(&definition.plugin, PluginKind::ReleaseSet) {
            return Err(format!("release set ‘{name}’: there is no release-set plugin ‘{}’", definition.plugin));
        }
    }
    Ok(())
}

impl Editor<'_> {
    /// Whether the caller may save project `name` (change it, or create it
    /// when there is none); the project as it is. Checked before a request
    /// is even read, and again by [`save_project`](Self::save_project).
    pub async fn project_to_save(&self, caller: &Caller, name: &str) -> Result<Option<Project>, ProjectError> {
        let existing = self.db.project(name).await?;
        match &existing {
            Some(project) => check_on(self.db, caller, Action::EditProject, project).await?,
            None => caller.check(Action::CreateProject, None)?,
        }
        Ok(existing)
    }

    /// Creates project `name` or changes it.
    pub async fn save_project(
        &self,
        caller: &Caller,
        name: &str,
        changes: ProjectChanges,
    ) -> Result<Saved<Project>, ProjectError> {
        let existing = self.project_to_save(caller, name).await?;
        let mut settings = match &existing {
            Some(project) => project.settings(),
            None => {
                check_name("project", name).map_err(ProjectError::BadName)?;
                // Its creator owns a new project.
                ProjectSettings {
                    owner: caller.user.as_ref().map(|u| u.username.clone()).unwrap_or_default(),
                    ..ProjectSettings::new(name)
                }
            }
        };
        if let Some(new_name) = changes.name.filter(|n| !n.is_empty()) {
            check_name("project", &new_name).map_err(ProjectError::BadName)?;
            settings.name = new_name;
        }
        if let Some(display_name) = changes.display_name {
            if display_name.trim().is_empty() {
                return Err(FieldError::new("displayname", "must not be empty").into());
            }
            settings.display_name = display_name;
        }
        settings.description = changes.description.unwrap_or(settings.description);
        settings.homepage = changes.homepage.unwrap_or(settings.homepage);
        if let Some(owner) = changes.owner.filter(|o| *o != settings.owner) {
            // Hydra's rule: only admins give projects away.
            // (An admin's token needs `admin` for it, as for managing users.)
            if caller.check(Action::ManageUsers, None).is_err() {
                return Err(ProjectError::Locked(
                    "only an admin (with the `admin` scope) may change a project's owner".into(),
                ));
            }
            if self.db.user(&owner).await?.is_none() {
                return Err(FieldError::new("owner", format!("there is no user ‘{owner}’")).into());
            }
            settings.owner = owner;
        }
        settings.enabled = changes.enabled.unwrap_or(settings.enabled);
        settings.hidden = changes.hidden.unwrap_or(settings.hidden);
        settings.enable_dynamic_run_command =
            changes.enable_dynamic_run_command.unwrap_or(settings.enable_dynamic_run_command);
        if let Some(declarative) = changes.declarative {
            if let Some(declarative) = &declarative {
                check_declarative(declarative, self.inputs).await?;
            }
            settings.declarative = declarative;
        }
        if let Some(release_sets) = changes.release_sets {
            check_release_sets(&release_sets, self.plugins).map_err(|e| FieldError::new("releasesets", e))?;
            settings.release_sets = release_sets;
        }
        let was_declarative = existing.as_ref().and_then(|p| p.declarative());
        let expect = Expect::from_read(existing.as_ref().map(|p| (p.id, p.settings())));
        let (project, created) = self.db.save_project(name, &settings, expect).await?;
        let wake_evaluator = project.declarative() != was_declarative;
        if wake_evaluator {
            self.db.configure_spec_jobset(&project).await?;
        }
        if let Some(members) = changes.members {
            self.db.set_project_members(project.id, &members).await.map_err(|e| match e {
                DbError::Conflict(message) => ProjectError::Field(FieldError::new("members", message)),
                other => other.into(),
            })?;
        }
        Ok(Saved { value: project, created, wake_evaluator })
    }

    /// Creates jobset `name` of project `project_name` or changes it; the
    /// spec's `inputs`, when given, replace the old ones.
    pub async fn save_jobset(
        &self,
        caller: &Caller,
        project_name: &str,
        name: &str,
        spec: JobsetSpec,
    ) -> Result<Saved<(Project, Jobset)>, ProjectError> {
        let project = self.jobsets_to_save(caller, project_name).await?;
        let existing = self.db.jobset(project_name, name).await?.map(|(_, j)| j);
        let previous = match &existing {
            Some(jobset) => Some(jobset.settings(&self.db.jobset_inputs(jobset.id).await?)),
            None => {
                check_name("jobset", name).map_err(ProjectError::BadName)?;
                None
            }
        };
        let base = previous.clone().unwrap_or_else(|| JobsetSettings::new(name));
        let settings = spec.apply_to(base)?;
        check_values(&settings, previous.as_ref(), self.inputs).await?;
        let expect = Expect::from_read(existing.as_ref().map(|j| (j.id, ())));
        let (jobset, created) = self.db.save_jobset(&project, name, &settings, expect).await?;
        Ok(Saved { value: (project, jobset), created, wake_evaluator: true })
    }

    /// The project whose jobsets the caller would save: it exists, the
    /// caller may edit its jobsets, and they are not its spec file's.
    pub async fn jobsets_to_save(&self, caller: &Caller, project_name: &str) -> Result<Project, ProjectError> {
        let project = self
            .db
            .project(project_name)
            .await?
            .ok_or_else(|| ProjectError::NotFound(format!("project ‘{project_name}’ does not exist")))?;
        check_on(self.db, caller, Action::EditJobset, &project).await?;
        if project.declarative().is_some() {
            return Err(ProjectError::Locked(format!(
                "project ‘{project_name}’ is declarative: its jobsets are defined by its spec file, not edited by hand"
            )));
        }
        Ok(project)
    }
}
