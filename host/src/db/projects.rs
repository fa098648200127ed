//! Projects, jobsets and jobset inputs.

use std::collections::{BTreeMap, HashMap};

use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, DatabaseTransaction, EntityTrait, IntoActiveModel, QueryFilter,
    QueryOrder, QuerySelect,
};

use super::entities::{jobset, jobset_input, project};
use super::{Db, DbError, DbResult, now};

pub use super::entities::jobset::Model as Jobset;
pub use super::entities::jobset_input::Model as JobsetInput;
pub use super::entities::project::Model as Project;

/// Everything a user sets on a project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectSettings {
    pub name: String,
    pub display_name: String,
    pub description: String,
    pub homepage: String,
    pub owner: String,
    pub enabled: bool,
    pub hidden: bool,
    pub enable_dynamic_run_command: bool,
    pub declarative: Option<Declarative>,
    /// Named views over finished builds, computed by release-set plugins.
    pub release_sets: super::ReleaseSets,
}

/// A declarative project's spec file: `file` inside an input of `kind` and `value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Declarative {
    pub file: String,
    pub kind: String,
    pub value: String,
}

/// Everything a user sets on a jobset, inputs included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobsetSettings {
    pub name: String,
    pub description: String,
    pub nixexpr_input: String,
    pub nixexpr_path: String,
    pub enabled: i32,
    pub enable_email: bool,
    pub hidden: bool,
    pub email_override: String,
    pub keep_nr: i32,
    pub check_interval: i32,
    pub scheduling_shares: i32,
    pub kind: i32,
    pub flake: Option<String>,
    pub enable_dynamic_run_command: bool,
    pub inputs: Vec<InputSetting>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputSetting {
    pub name: String,
    pub kind: String,
    pub value: String,
    pub email_responsible: bool,
}

impl ProjectSettings {
    /// A new project's settings: enabled and visible, named after itself.
    pub fn new(name: &str) -> ProjectSettings {
        ProjectSettings {
            name: name.to_owned(),
            display_name: name.to_owned(),
            description: String::new(),
            homepage: String::new(),
            owner: String::new(),
            enabled: true,
            hidden: false,
            enable_dynamic_run_command: false,
            declarative: None,
            release_sets: Default::default(),
        }
    }
}

impl JobsetSettings {
    /// A new jobset's settings: enabled, checked every five minutes, no inputs yet.
    pub fn new(name: &str) -> JobsetSettings {
        JobsetSettings {
            name: name.to_owned(),
            description: String::new(),
            nixexpr_input: String::new(),
            nixexpr_path: String::new(),
            enabled: super::enabled::ENABLED,
            enable_email: false,
            hidden: false,
            email_override: String::new(),
            keep_nr: 3,
            check_interval: 300,
            scheduling_shares: 100,
            kind: 0,
            flake: None,
            enable_dynamic_run_command: false,
            inputs: Vec::new(),
        }
    }
}

impl Project {
    pub fn declarative(&self) -> Option<Declarative> {
        let file = self.declarative_file.clone().filter(|f| !f.is_empty())?;
        Some(Declarative {
            file,
            kind: self.declarative_type.clone().unwrap_or_default(),
            value: self.declarative_value.clone().unwrap_or_default(),
        })
    }

    pub fn settings(&self) -> ProjectSettings {
        ProjectSettings {
            name: self.name.clone(),
            display_name: self.display_name.clone(),
            description: self.description.clone(),
            homepage: self.homepage.clone(),
            owner: self.owner.clone(),
            enabled: self.enabled,
            hidden: self.hidden,
            enable_dynamic_run_command: self.enable_dynamic_run_command,
            declarative: self.declarative(),
            release_sets: self.release_sets(),
        }
    }
}

impl Jobset {
    pub fn settings(&self, inputs: &[JobsetInput]) -> JobsetSettings {
        JobsetSettings {
            name: self.name.clone(),
            description: self.description.clone(),
            nixexpr_input: self.nixexpr_input.clone(),
            nixexpr_path: self.nixexpr_path.clone(),
            enabled: self.enabled,
            enable_email: self.enable_email,
            hidden: self.hidden,
            email_override: self.email_override.clone(),
            keep_nr: self.keep_nr,
            check_interval: self.check_interval,
            scheduling_shares: self.scheduling_shares,
            kind: self.kind,
            flake: self.flake.clone(),
            enable_dynamic_run_command: self.enable_dynamic_run_command,
            inputs: inputs
                .iter()
                .map(|i| InputSetting {
                    name: i.name.clone(),
                    kind: i.kind.clone(),
                    value: i.value.clone(),
                    email_responsible: i.email_responsible,
                })
                .collect(),
        }
    }
}

fn project_active(settings: &ProjectSettings, mut model: project::ActiveModel) -> project::ActiveModel {
    let declarative = settings.declarative.clone();
    model.name = Set(settings.name.clone());
    model.display_name = Set(settings.display_name.clone());
    model.description = Set(settings.description.clone());
    model.homepage = Set(settings.homepage.clone());
    model.owner = Set(settings.owner.clone());
    model.enabled = Set(settings.enabled);
    model.hidden = Set(settings.hidden);
    model.enable_dynamic_run_command = Set(settings.enable_dynamic_run_command);
    model.declarative_file = Set(declarative.as_ref().map(|d| d.file.clone()));
    model.declarative_type = Set(declarative.as_ref().map(|d| d.kind.clone()));
    model.declarative_value = Set(declarative.map(|d| d.value));
    model.release_sets =
        Set((!settings.release_sets.is_empty())
            .then(|| serde_json::to_string(&settings.release_sets).unwrap_or_default()));
    model
}

fn jobset_active(settings: &JobsetSettings, mut model: jobset::ActiveModel) -> jobset::ActiveModel {
    model.name = Set(settings.name.clone());
    model.description = Set(settings.description.clone());
    model.nixexpr_input = Set(settings.nixexpr_input.clone());
    model.nixexpr_path = Set(settings.nixexpr_path.clone());
    model.enabled = Set(settings.enabled);
    model.enable_email = Set(settings.enable_email);
    model.hidden = Set(settings.hidden);
    model.email_override = Set(settings.email_override.clone());
    model.keep_nr = Set(settings.keep_nr);
    model.check_interval = Set(settings.check_interval);
    model.scheduling_shares = Set(settings.scheduling_shares);
    model.kind = Set(settings.kind);
    model.flake = Set(settings.flake.clone());
    model.enable_dynamic_run_command = Set(settings.enable_dynamic_run_command);
    model
}

/// Inserts a jobset or updates `existing`, replacing its inputs. A jobset
/// that is new or switched on is evaluated right away, as in Hydra.
pub(super) async fn write_jobset(
    txn: &DatabaseTransaction,
    project_id: i64,
    existing: Option<Jobset>,
    settings: &JobsetSettings,
) -> DbResult<Jobset> {
    let saved = match existing {
        Some(model) => {
            let old_enabled = model.enabled;
            let mut active = jobset_active(settings, model.into_active_model());
            if old_enabled == 0 && settings.enabled != 0 {
                active.trigger_time = Set(Some(now()));
            }
            active.update(txn).await?
        }
        None => {
            let mut active = jobset_active(settings, <jobset::ActiveModel as Default>::default());
            active.project_id = Set(project_id);
            active.error_msg = Set(None);
            active.error_time = Set(None);
            active.last_checked_time = Set(None);
            active.last_check_outcome = Set(None);
            active.trigger_time = Set((settings.enabled != 0).then(now));
            active.force_eval = Set(false);
            active.fetch_error_msg = Set(None);
            active.start_time = Set(None);
            active.insert(txn).await?
        }
    };
    jobset_input::Entity::delete_many().filter(jobset_input::Column::JobsetId.eq(saved.id)).exec(txn).await?;
    if !settings.inputs.is_empty() {
        jobset_input::Entity::insert_many(settings.inputs.iter().map(|input| jobset_input::ActiveModel {
            jobset_id: Set(saved.id),
            name: Set(input.name.clone()),
            kind: Set(input.kind.clone()),
            value: Set(input.value.clone()),
            email_responsible: Set(input.email_responsible),
            ..Default::default()
        }))
        .exec(txn)
        .await?;
    }
    Ok(saved)
}

/// What applying a set of jobsets did, by jobset name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobsetChanges {
    pub created: Vec<String>,
    pub changed: Vec<String>,
    pub disabled: Vec<String>,
}

impl JobsetChanges {
    pub fn is_empty(&self) -> bool {
        self.created.is_empty() && self.changed.is_empty() && self.disabled.is_empty()
    }
}

/// What a save expects to find under the name it is given. A request is
/// decided — its rights checked, its fields merged — on what it read first;
/// if another request changed that meanwhile, applying it anyway could
/// make the racer the owner of someone else's project (or give back a
/// project an admin just gave away), or overwrite a jobset with defaults.
/// So the save is refused (409) instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect<S = ()> {
    /// Nothing: the save creates.
    New,
    /// This row, by id, with these settings as read: the save updates it.
    Unchanged(i64, S),
    /// Whatever is there (the operator's own tools: the demo, `project apply`).
    Anything,
}

impl<S: PartialEq> Expect<S> {
    /// Expects what the caller read: the row's id and settings, or nothing.
    pub fn from_read(read: Option<(i64, S)>) -> Expect<S> {
        match read {
            Some((id, settings)) => Expect::Unchanged(id, settings),
            None => Expect::New,
        }
    }

    fn check(&self, kind: &str, name: &str, found: Option<(i64, S)>) -> DbResult<()> {
        match (self, found) {
            (Expect::Anything, _) | (Expect::New, None) => Ok(()),
            (Expect::Unchanged(id, settings), Some((found_id, found_settings)))
                if *id == found_id && *settings == found_settings =>
            {
                Ok(())
            }
            (Expect::New, Some(_)) => {
                Err(DbError::Conflict(format!("{kind} {name:?} was created by another request meanwhile; try again")))
            }
            (Expect::Unchanged(..), Some(_)) => {
                Err(DbError::Conflict(format!("{kind} {name:?} was changed by another request meanwhile; try again")))
            }
            (Expect::Unchanged(..), None) => Err(DbError::Conflict(format!(
                "{kind} {name:?} was deleted or renamed by another request meanwhile; try again"
            ))),
        }
    }
}

impl Db {
    pub async fn projects(&self) -> DbResult<Vec<Project>> {
        Ok(project::Entity::find().order_by_asc(project::Column::Name).all(self.read()).await?)
    }

    pub async fn project(&self, name: &str) -> DbResult<Option<Project>> {
        Ok(project::Entity::find().filter(project::Column::Name.eq(name)).one(self.read()).await?)
    }

    /// Jobsets of every project, by project id, sorted by name.
    /// (project name, jobset name) of each of the given jobsets.
    pub(super) async fn jobset_names(
        &self,
        ids: impl IntoIterator<Item = i64>,
    ) -> DbResult<HashMap<i64, (String, String)>> {
        let rows: Vec<(i64, String, String)> = jobset::Entity::find()
            .select_only()
            .column(jobset::Column::Id)
            .column_as(project::Column::Name, "project_name")
            .column(jobset::Column::Name)
            .inner_join(project::Entity)
            .filter(jobset::Column::Id.is_in(ids))
            .into_tuple()
            .all(self.read())
            .await?;
        Ok(rows.into_iter().map(|(id, p, j)| (id, (p, j))).collect())
    }

    pub async fn jobsets_by_project(&self) -> DbResult<HashMap<i64, Vec<Jobset>>> {
        let mut map: HashMap<i64, Vec<Jobset>> = HashMap::new();
        for jobset in jobset::Entity::find().order_by_asc(jobset::Column::Name).all(self.read()).await? {
            map.entry(jobset.project_id).or_default().push(jobset);
        }
        Ok(map)
    }

    pub async fn jobsets_of(&self, project_id: i64) -> DbResult<Vec<Jobset>> {
        Ok(jobset::Entity::find()
            .filter(jobset::Column::ProjectId.eq(project_id))
            .order_by_asc(jobset::Column::Name)
            .all(self.read())
            .await?)
    }

    /// Creates the project `current_name` or updates it (renaming it when
    /// `settings.name` differs), if what is there is what `expect` says.
    /// Returns the project and whether it is new.
    pub async fn save_project(
        &self,
        current_name: &str,
        settings: &ProjectSettings,
        expect: Expect<ProjectSettings>,
    ) -> DbResult<(Project, bool)> {
        let txn = self.begin_write().await?;
        let existing = project::Entity::find().filter(project::Column::Name.eq(current_name)).one(&txn).await?;
        expect.check("project", current_name, existing.as_ref().map(|p| (p.id, p.settings())))?;
        if settings.name != current_name
            && project::Entity::find()
                .filter(project::Column::Name.eq(settings.name.as_str()))
                .one(&txn)
                .await?
                .is_some()
        {
            return Err(DbError::Conflict(format!("a project named {:?} already exists", settings.name)));
        }
        let (saved, created) = match existing {
            Some(model) => (project_active(settings, model.into_active_model()).update(&txn).await?, false),
            None => (project_active(settings, <project::ActiveModel as Default>::default()).insert(&txn).await?, true),
        };
        txn.commit().await?;
        if settings.name != current_name {
            // Builds show their project's name.
            self.builds.clear();
        } else if created {
            // Cached answers about names (`latest` of it) may have said "none".
            self.builds.invalidate([]);
        }
        Ok((saved, created))
    }

    /// Deletes a project with its jobsets, evaluations and builds.
    pub async fn delete_project(&self, name: &str) -> DbResult<bool> {
        let result = project::Entity::delete_many().filter(project::Column::Name.eq(name)).exec(self.write()).await?;
        self.builds.clear();
        Ok(result.rows_affected > 0)
    }

    pub async fn jobset(&self, project_name: &str, name: &str) -> DbResult<Option<(Project, Jobset)>> {
        let found = jobset::Entity::find()
            .find_also_related(project::Entity)
            .filter(project::Column::Name.eq(project_name))
            .filter(jobset::Column::Name.eq(name))
            .one(self.read())
            .await?;
        Ok(found.and_then(|(jobset, project)| project.map(|p| (p, jobset))))
    }

    /// The id of a project, by name; from memory while nothing changed.
    pub async fn project_id(&self, name: &str) -> DbResult<Option<i64>> {
        let key = format!("project-id {name}");
        if let Some(answer) = self.builds.query(&key) {
            return Ok(answer);
        }
        let epoch = self.builds.epoch();
        let id = self.project(name).await?.map(|p| p.id);
        self.builds.store_query(key, id, epoch);
        Ok(id)
    }

    /// The id of a jobset, by names; from memory while nothing changed.
    pub async fn jobset_id(&self, project: &str, name: &str) -> DbResult<Option<i64>> {
        let key = format!("jobset-id {project}/{name}");
        if let Some(answer) = self.builds.query(&key) {
            return Ok(answer);
        }
        let epoch = self.builds.epoch();
        let id = self.jobset(project, name).await?.map(|(_, j)| j.id);
        self.builds.store_query(key, id, epoch);
        Ok(id)
    }

    pub async fn jobset_by_id(&self, id: i64) -> DbResult<Option<(Project, Jobset)>> {
        let found = jobset::Entity::find_by_id(id).find_also_related(project::Entity).one(self.read()).await?;
        Ok(found.and_then(|(jobset, project)| project.map(|p| (p, jobset))))
    }

    /// The inputs of each of these jobsets, by name, in one query.
    pub async fn jobsets_inputs(&self, jobset_ids: &[i64]) -> DbResult<HashMap<i64, Vec<JobsetInput>>> {
        inputs_of(self.read(), jobset_ids).await
    }

    pub async fn jobset_inputs(&self, jobset_id: i64) -> DbResult<Vec<JobsetInput>> {
        Ok(jobset_input::Entity::find()
            .filter(jobset_input::Column::JobsetId.eq(jobset_id))
            .order_by_asc(jobset_input::Column::Name)
            .all(self.read())
            .await?)
    }

    /// Creates or updates a jobset of `project`, replacing its inputs.
    pub async fn save_jobset(
        &self,
        project: &Project,
        current_name: &str,
        settings: &JobsetSettings,
        expect: Expect,
    ) -> DbResult<(Jobset, bool)> {
        let txn = self.begin_write().await?;
        let find = |name: String| {
            jobset::Entity::find()
                .filter(jobset::Column::ProjectId.eq(project.id))
                .filter(jobset::Column::Name.eq(name))
        };
        let existing = find(current_name.to_owned()).one(&txn).await?;
        expect.check("jobset", &format!("{}:{current_name}", project.name), existing.as_ref().map(|j| (j.id, ())))?;
        if settings.name != current_name && find(settings.name.clone()).one(&txn).await?.is_some() {
            return Err(DbError::Conflict(format!(
                "project {:?} already has a jobset named {:?}",
                project.name, settings.name
            )));
        }
        let created = existing.is_none();
        let saved = write_jobset(&txn, project.id, existing, settings).await?;
        txn.commit().await?;
        if settings.name != current_name {
            self.builds.clear();
        } else if created {
            self.builds.invalidate([]);
        }
        Ok((saved, created))
    }

    /// Makes `project`'s jobsets those of `desired`, in one transaction:
    /// missing ones are created, different ones updated, and those not
    /// listed (except `keep`) disabled and hidden, so that their
    /// evaluations and builds stay. Jobsets already as desired are not
    /// written, so applying the same spec twice changes nothing.
    pub async fn apply_jobsets(
        &self,
        project: &Project,
        desired: &BTreeMap<String, JobsetSettings>,
        keep: &[&str],
    ) -> DbResult<JobsetChanges> {
        let txn = self.begin_write().await?;
        let existing = jobset::Entity::find().filter(jobset::Column::ProjectId.eq(project.id)).all(&txn).await?;
        let ids: Vec<i64> = existing.iter().map(|j| j.id).collect();
        let inputs = inputs_of(&txn, &ids).await?;
        let mut existing: HashMap<String, Jobset> = existing.into_iter().map(|j| (j.name.clone(), j)).collect();
        let mut changes = JobsetChanges::default();
        for (name, settings) in desired {
            match existing.remove(name) {
                None => {
                    write_jobset(&txn, project.id, None, settings).await?;
                    changes.created.push(name.clone());
                }
                Some(current) => {
                    if current.settings(inputs.get(&current.id).map_or(&[], Vec::as_slice)) == *settings {
                        continue;
                    }
                    let saved = write_jobset(&txn, project.id, Some(current), settings).await?;
                    // A changed spec is evaluated at once, not at the next interval.
                    if saved.enabled != super::enabled::DISABLED && saved.trigger_time.is_none() {
                        jobset::Entity::update_many()
                            .col_expr(jobset::Column::TriggerTime, Expr::value(now()))
                            .filter(jobset::Column::Id.eq(saved.id))
                            .exec(&txn)
                            .await?;
                    }
                    changes.changed.push(name.clone());
                }
            }
        }
        for (name, current) in existing {
            if keep.contains(&name.as_str()) || (current.enabled == super::enabled::DISABLED && current.hidden) {
                continue;
            }
            let mut active = current.into_active_model();
            active.enabled = Set(super::enabled::DISABLED);
            active.hidden = Set(true);
            active.update(&txn).await?;
            changes.disabled.push(name);
        }
        txn.commit().await?;
        changes.disabled.sort();
        if !changes.is_empty() {
            self.builds.invalidate([]);
        }
        Ok(changes)
    }

    pub async fn delete_jobset(&self, jobset_id: i64) -> DbResult<()> {
        jobset::Entity::delete_by_id(jobset_id).exec(self.write()).await?;
        self.builds.clear();
        Ok(())
    }

    /// Jobsets with an input whose value is `repo` (possibly followed by
    /// more words, such as a git input's branch), as (project, jobset).
    pub async fn jobsets_with_input_value(&self, repo: &str) -> DbResult<Vec<(String, String)>> {
        let inputs = jobset_input::Entity::find()
            .filter(
                jobset_input::Column::Value.eq(repo).or(jobset_input::Column::Value.starts_with(format!("{repo} "))),
            )
            .all(self.read())
            .await?;
        let mut found = Vec::new();
        for input in inputs {
            if let Some((project, jobset)) = self.jobset_by_id(input.jobset_id).await? {
                found.push((project.name, jobset.name));
            }
        }
        // A declarative project's spec lives in an input of the project.
        let declarative = project::Entity::find()
            .filter(
                project::Column::DeclarativeValue
                    .eq(repo)
                    .or(project::Column::DeclarativeValue.starts_with(format!("{repo} "))),
            )
            .filter(project::Column::DeclarativeFile.ne(""))
            .all(self.read())
            .await?;
        found.extend(declarative.into_iter().map(|p| (p.name, super::SPEC_JOBSET.to_owned())));
        found.sort();
        found.dedup();
        Ok(found)
    }

    /// Every input of every jobset, with the (project, jobset) it belongs to.
    pub async fn all_jobset_inputs(&self) -> DbResult<Vec<(String, String, JobsetInput)>> {
        let inputs = jobset_input::Entity::find().order_by_asc(jobset_input::Column::Id).all(self.read()).await?;
        let names: HashMap<i64, (String, String)> = jobset::Entity::find()
            .find_also_related(project::Entity)
            .all(self.read())
            .await?
            .into_iter()
            .filter_map(|(j, p)| p.map(|p| (j.id, (p.name, j.name))))
            .collect();
        Ok(inputs.into_iter().filter_map(|i| names.get(&i.jobset_id).cloned().map(|(p, j)| (p, j, i))).collect())
    }

    /// Asks for an evaluation of the named jobsets (`project:jobset`), even
    /// with unchanged inputs when `force` is set. Disabled jobsets (or those
    /// of disabled projects) are not evaluated, so they are not triggered.
    /// Returns those triggered.
    pub async fn trigger_jobsets(&self, names: &[(String, String)], force: bool) -> DbResult<Vec<String>> {
        let mut triggered = Vec::new();
        for (project_name, jobset_name) in names {
            let Some((project, jobset)) = self.jobset(project_name, jobset_name).await? else {
                continue;
            };
            if !(project.enabled && jobset.enabled != 0) {
                continue;
            }
            let mut update = jobset::Entity::update_many()
                .col_expr(jobset::Column::TriggerTime, Expr::value(now()))
                .filter(jobset::Column::Id.eq(jobset.id));
            if force {
                update = update.col_expr(jobset::Column::ForceEval, Expr::value(true));
            }
            update.exec(self.write()).await?;
            triggered.push(format!("{project_name}:{jobset_name}"));
        }
        Ok(triggered)
    }
}

/// The inputs of each of these jobsets, by name.
async fn inputs_of(db: &impl sea_orm::ConnectionTrait, jobset_ids: &[i64]) -> DbResult<HashMap<i64, Vec<JobsetInput>>> {
    let mut inputs: HashMap<i64, Vec<JobsetInput>> = HashMap::new();
    if jobset_ids.is_empty() {
        return Ok(inputs);
    }
    for input in jobset_input::Entity::find()
        .filter(jobset_input::Column::JobsetId.is_in(jobset_ids.iter().copied()))
        .order_by_asc(jobset_input::Column::Name)
        .all(db)
        .await?
    {
        inputs.entry(input.jobset_id).or_default().push(input);
    }
    Ok(inputs)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two creators race for one name: the loser's request, decided on
    /// "no such project", must not be applied to the winner's project.
    #[tokio::test]
    async fn a_lost_race_is_a_conflict_not_an_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&format!("sqlite://{}", dir.path().join("db.sqlite").display())).await.unwrap();
        let owned_by = |owner: &str| ProjectSettings { owner: owner.into(), ..ProjectSettings::new("p") };
        let (winner, created) = db.save_project("p", &owned_by("alice"), Expect::New).await.unwrap();
        assert!(created);
        let lost = db.save_project("p", &owned_by("mallory"), Expect::New).await.unwrap_err();
        assert!(matches!(lost, DbError::Conflict(ref m) if m.contains("created by another request")), "{lost}");
        assert_eq!(db.project("p").await.unwrap().unwrap().owner, "alice");

        // An update decided on a project that was deleted and made again.
        db.delete_project("p").await.unwrap();
        db.save_project("p", &owned_by("bob"), Expect::New).await.unwrap();
        let stale = db
            .save_project("p", &owned_by("alice"), Expect::Unchanged(winner.id, winner.settings()))
            .await
            .unwrap_err();
        assert!(matches!(stale, DbError::Conflict(_)), "{stale}");
        assert_eq!(db.project("p").await.unwrap().unwrap().owner, "bob");

        // Jobsets likewise.
        let project = db.project("p").await.unwrap().unwrap();
        let jobset = JobsetSettings { description: "first".into(), ..JobsetSettings::new("j") };
        db.save_jobset(&project, "j", &jobset, Expect::New).await.unwrap();
        let other = JobsetSettings { description: "second".into(), ..JobsetSettings::new("j") };
        assert!(matches!(db.save_jobset(&project, "j", &other, Expect::New).await, Err(DbError::Conflict(_))));
        assert_eq!(db.jobset("p", "j").await.unwrap().unwrap().1.description, "first");

        // An edit decided on a project an admin gave away meanwhile.
        let read = db.project("p").await.unwrap().unwrap();
        let expect = Expect::Unchanged(read.id, read.settings());
        db.save_project("p", &owned_by("carol"), Expect::Anything).await.unwrap();
        let edit = ProjectSettings { description: "edited".into(), ..read.settings() };
        assert!(matches!(db.save_project("p", &edit, expect).await, Err(DbError::Conflict(_))));
        assert_eq!(db.project("p").await.unwrap().unwrap().owner, "carol");
    }
}
