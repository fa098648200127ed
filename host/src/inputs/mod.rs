//! Jobset inputs: checking a value when a user saves a jobset, and turning
//! each input into the value an evaluation receives.
//!
//! Built-in types: `string`, `boolean`, `nix` (a Nix expression), `path` (a
//! local file or directory copied into the store, only under roots the
//! operator allows), `build` (the latest successful build of a job) and
//! `eval` (the builds of an evaluation). Fetched values are passed the way
//! Hydra passes them, so existing release expressions work unchanged.

mod local;

use crate::db::{Db, DbError, Jobset, JobsetInput, NewEvalInput, Project, SuccessfulBuild};
use crate::nix::{InvalidStorePath, Nix, NixError, NixValue, StorePath};
use crate::plugins::{AttrValue, Change, PluginError, PluginRuntime};

/// Input types this server understands, sorted.
pub const INPUT_TYPES: [&str; 6] = ["boolean", "build", "eval", "nix", "path", "string"];

/// An input that could not be turned into a value, with the reason.
#[derive(Debug, thiserror::Error)]
#[error("input ‘{input}’: {reason}")]
pub struct InputError {
    pub input: String,
    pub reason: FetchFailure,
}

/// What is wrong with an input's type or value, found when a jobset is
/// saved (and again when it is fetched).
#[derive(Debug, thiserror::Error)]
pub enum ValueError {
    #[error("a boolean input is ‘true’ or ‘false’, not {0:?}")]
    NotABoolean(String),
    #[error("invalid input type ‘{kind}’; valid types: {known}")]
    UnknownType { kind: String, known: String },
    #[error("{0:?} is not a build reference of the form [project:][jobset:]job")]
    NotABuildReference(String),
    #[error("{0:?} is not an evaluation number, project:jobset or project:jobset:job")]
    NotAnEvalReference(String),
    #[error(transparent)]
    Path(#[from] PathRefused),
    /// What the plugin that handles the type said.
    #[error(transparent)]
    Plugin(#[from] PluginError),
}

/// Why an input could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchFailure {
    #[error(transparent)]
    Value(#[from] ValueError),
    #[error("there is no jobset {project}:{jobset}")]
    NoJobset { project: String, jobset: String },
    #[error("job {project}:{jobset}:{job} has no successful build")]
    NoSuccessfulBuild { project: String, jobset: String, job: String },
    #[error("the outputs of build {0} are no longer in the Nix store")]
    OutputsGone(i64),
    #[error("build {0} has no outputs")]
    NoOutputs(i64),
    #[error("there is no evaluation {0}")]
    NoEval(i64),
    #[error("jobset {project}:{jobset} has no finished evaluation")]
    NoFinishedEval { project: String, jobset: String },
    #[error("job {job} did not succeed in evaluation {eval} (the latest finished one of {project}:{jobset})")]
    JobFailed { job: String, eval: i64, project: String, jobset: String },
    #[error(transparent)]
    StorePath(#[from] InvalidStorePath),
    #[error(transparent)]
    Nix(#[from] NixError),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<PathRefused> for FetchFailure {
    fn from(refused: PathRefused) -> FetchFailure {
        FetchFailure::Value(refused.into())
    }
}

/// One input, ready to be passed to the expression.
#[derive(Debug, Clone)]
pub struct FetchedInput {
    pub name: String,
    pub value: NixValue,
    /// A store path the expression may read (`-I NAME=PATH` in restricted mode).
    pub readable_path: Option<StorePath>,
    /// What the evaluation records about it.
    pub record: NewEvalInput,
}

pub use local::{LocalFiles, PathRefused};

/// Checks an input's type and value when a jobset is saved, so that a user
/// learns of a mistake at once rather than at the next evaluation.
fn validate(kind: &str, value: &str, local: &LocalFiles) -> Result<(), ValueError> {
    match kind {
        "string" | "nix" => Ok(()),
        "boolean" => match value.trim() {
            "true" | "false" => Ok(()),
            other => Err(ValueError::NotABoolean(other.to_owned())),
        },
        "path" => Ok(local.check(value).map(drop)?),
        "build" => BuildRef::parse(value).map(drop),
        "eval" => EvalRef::parse(value).map(drop),
        other => Err(ValueError::UnknownType { kind: other.to_owned(), known: INPUT_TYPES.join(", ") }),
    }
}

/// `[project:][jobset:]job`, relative to the jobset that has the input.
#[derive(Debug, Clone, PartialEq, Eq)]
struct BuildRef {
    project: Option<String>,
    jobset: Option<String>,
    job: String,
}

impl BuildRef {
    fn parse(value: &str) -> Result<BuildRef, ValueError> {
        let parts: Vec<&str> = value.trim().split(':').collect();
        let bad = || ValueError::NotABuildReference(value.to_owned());
        if parts.iter().any(|p| p.is_empty()) {
            return Err(bad());
        }
        Ok(match parts.as_slice() {
            [job] => BuildRef { project: None, jobset: None, job: job.to_string() },
            [jobset, job] => BuildRef { project: None, jobset: Some(jobset.to_string()), job: job.to_string() },
            [project, jobset, job] => {
                BuildRef { project: Some(project.to_string()), jobset: Some(jobset.to_string()), job: job.to_string() }
            }
            _ => return Err(bad()),
        })
    }
}

/// An evaluation by number, the latest finished one of `project:jobset`, or
/// the latest finished one of `project:jobset` in which `job` succeeded.
#[derive(Debug, Clone, PartialEq, Eq)]
enum EvalRef {
    Id(i64),
    Latest { project: String, jobset: String, job: Option<String> },
}

impl EvalRef {
    fn parse(value: &str) -> Result<EvalRef, ValueError> {
        let value = value.trim();
        if let Ok(id) = value.parse() {
            return Ok(EvalRef::Id(id));
        }
        let parts: Vec<&str> = value.split(':').collect();
        match parts.as_slice() {
            [project, jobset] if !project.is_empty() && !jobset.is_empty() => {
                Ok(EvalRef::Latest { project: project.to_string(), jobset: jobset.to_string(), job: None })
            }
            [project, jobset, job] if !project.is_empty() && !jobset.is_empty() && !job.is_empty() => {
                Ok(EvalRef::Latest {
                    project: project.to_string(),
                    jobset: jobset.to_string(),
                    job: Some(job.to_string()),
                })
            }
            _ => Err(ValueError::NotAnEvalReference(value.to_owned())),
        }
    }
}

/// The attribute set passed for a build (a `build` input, or a job
/// argument named like another job): Hydra's shape, plus one attribute per
/// output.
pub fn build_argument(build: &SuccessfulBuild) -> Result<NixValue, FetchFailure> {
    let (main_name, main_path) = build
        .outputs
        .iter()
        .find(|(name, _)| name == "out")
        .or_else(|| build.outputs.first())
        .ok_or(FetchFailure::NoOutputs(build.id))?;
    let store_path = |p: &str| StorePath::parse(p).map(NixValue::StorePath);
    let mut attrs = vec![
        ("outPath".to_owned(), store_path(main_path)?),
        ("inputType".to_owned(), NixValue::String("build".into())),
        ("id".to_owned(), NixValue::Int(build.id)),
        ("drvPath".to_owned(), NixValue::String(build.drv_path.clone())),
        ("outputName".to_owned(), NixValue::String(main_name.clone())),
    ];
    if let Some(version) = version_of(build.release_name.as_deref().unwrap_or(&build.nix_name)) {
        attrs.push(("version".to_owned(), NixValue::String(version.to_owned())));
    }
    for (name, path) in &build.outputs {
        if !matches!(name.as_str(), "outPath" | "inputType" | "id" | "drvPath" | "outputName" | "version") {
            attrs.push((name.clone(), store_path(path)?));
        }
    }
    Ok(NixValue::Attrs(attrs))
}

/// The version in a `name-version` string (the version starts with a digit).
fn version_of(name: &str) -> Option<&str> {
    name.char_indices()
        .find(|&(i, c)| c == '-' && name[i + 1..].starts_with(|d: char| d.is_ascii_digit()))
        .map(|(i, _)| &name[i + 1..])
}

/// Fetches inputs for the evaluator: the built-in types here, the others
/// through the plugin that handles them.
#[derive(Clone)]
pub struct InputFetcher {
    nix: Nix,
    db: Db,
    local: LocalFiles,
    plugins: PluginRuntime,
}

/// Input types whose values may name a repository on this machine (the
/// built-in git and svn plugins'); such a repository must be allowed.
const REPOSITORY_TYPES: [&str; 2] = ["git", "svn"];

impl InputFetcher {
    pub fn new(nix: Nix, db: Db, local: LocalFiles, plugins: PluginRuntime) -> InputFetcher {
        InputFetcher { nix, db, local, plugins }
    }

    /// Every input type this server fetches, sorted.
    pub fn input_types(&self) -> Vec<String> {
        let mut types: Vec<String> = INPUT_TYPES.iter().map(|t| t.to_string()).collect();
        types.extend(self.plugins.input_types());
        types.sort();
        types.dedup();
        types
    }

    fn unknown_type(&self, kind: &str) -> ValueError {
        ValueError::UnknownType { kind: kind.to_owned(), known: self.input_types().join(", ") }
    }

    /// Checks an input's type and value when a jobset is saved.
    pub async fn check(&self, kind: &str, value: &str) -> Result<(), ValueError> {
        if INPUT_TYPES.contains(&kind) {
            return validate(kind, value, &self.local);
        }
        if REPOSITORY_TYPES.contains(&kind) {
            self.local.check_repository(kind, value)?;
        }
        match self.plugins.check_value(kind, value).await {
            Err(PluginError::NoPlugin(_)) => Err(self.unknown_type(kind)),
            other => Ok(other?),
        }
    }

    /// Checks a flake reference (a jobset's, or one of a flake's inputs).
    /// References to this machine's files (`path:`, `/…`, `file:`,
    /// `git+file:`, `tarball+file:`) must lie under
    /// `evaluator.allowed_path_roots`, like `path` inputs: otherwise any
    /// project owner could copy any file of the server into the store it
    /// serves. Everything else is for Nix to fetch.
    /// Returns the reference to hand Nix (a bare path as `path:`).
    pub fn check_flake(&self, reference: &str) -> Result<String, PathRefused> {
        self.local.check_flake(reference)
    }

    /// The changes between two revisions of an input a plugin fetched.
    pub async fn changes(&self, kind: &str, value: &str, since: &str, until: &str) -> Result<Vec<Change>, PluginError> {
        self.plugins.changes(kind, value, since, until).await
    }

    pub async fn fetch(
        &self,
        project: &Project,
        jobset: &Jobset,
        input: &JobsetInput,
    ) -> Result<FetchedInput, InputError> {
        let error = |reason: FetchFailure| InputError { input: input.name.clone(), reason };
        let mut record = NewEvalInput {
            name: input.name.clone(),
            kind: input.kind.clone(),
            value: Some(input.value.clone()),
            ..Default::default()
        };
        let (value, readable_path) = match input.kind.as_str() {
            "string" => (NixValue::String(input.value.clone()), None),
            "boolean" => {
                validate("boolean", &input.value, &self.local).map_err(|e| error(e.into()))?;
                (NixValue::Bool(input.value.trim() == "true"), None)
            }
            "nix" => (NixValue::Raw(input.value.clone()), None),
            "path" => {
                let path = self.local.check(&input.value).map_err(|e| error(e.into()))?;
                let store_path = self.nix.add_to_store(&path).await.map_err(|e| error(e.into()))?;
                let hash = self.nix.nar_hash(&store_path).await.map_err(|e| error(e.into()))?;
                record.uri = Some(path.display().to_string());
                record.path = Some(store_path.to_string());
                record.revision = Some(hash.clone());
                record.sha256_hash = Some(hash);
                let value = NixValue::Attrs(vec![
                    ("outPath".into(), NixValue::StorePath(store_path.clone())),
                    ("inputType".into(), NixValue::String("path".into())),
                    ("uri".into(), NixValue::String(path.display().to_string())),
                ]);
                (value, Some(store_path))
            }
            "build" => {
                let reference = BuildRef::parse(&input.value).map_err(|e| error(e.into()))?;
                let project_name = reference.project.as_deref().unwrap_or(&project.name);
                let jobset_name = reference.jobset.as_deref().unwrap_or(&jobset.name);
                let (_, source) =
                    self.db.jobset(project_name, jobset_name).await.map_err(|e| error(e.into()))?.ok_or_else(|| {
                        error(FetchFailure::NoJobset {
                            project: project_name.to_owned(),
                            jobset: jobset_name.to_owned(),
                        })
                    })?;
                let build = self
                    .db
                    .latest_successful_build(source.id, &reference.job)
                    .await
                    .map_err(|e| error(e.into()))?
                    .ok_or_else(|| {
                        error(FetchFailure::NoSuccessfulBuild {
                            project: project_name.to_owned(),
                            jobset: jobset_name.to_owned(),
                            job: reference.job.clone(),
                        })
                    })?;
                self.check_outputs_valid(&build).await.map_err(error)?;
                let value = build_argument(&build).map_err(error)?;
                record.dependency = Some(build.id);
                record.path = build.outputs.first().map(|(_, p)| p.clone());
                record.revision = Some(build.id.to_string());
                (value, None)
            }
            "eval" => {
                let (eval_id, builds) = self.eval_builds(&input.value).await.map_err(error)?;
                let mut attrs = Vec::with_capacity(builds.len());
                for build in &builds {
                    if let Some((_, path)) = build.outputs.iter().find(|(n, _)| n == "out").or(build.outputs.first()) {
                        let path = StorePath::parse(path).map_err(|e| error(e.into()))?;
                        attrs.push((build.job.clone(), NixValue::StorePath(path)));
                    }
                }
                record.revision = Some(eval_id.to_string());
                (NixValue::Attrs(attrs), None)
            }
            other => {
                // Checked again: the allowed roots may have changed since it was saved.
                if REPOSITORY_TYPES.contains(&other) {
                    self.local.check_repository(other, &input.value).map_err(|e| error(e.into()))?;
                }
                let source = match self.plugins.fetch(other, &input.name, &input.value).await {
                    Ok(source) => source,
                    Err(PluginError::NoPlugin(_)) => return Err(error(self.unknown_type(other).into())),
                    Err(e) => return Err(error(ValueError::Plugin(e).into())),
                };
                record.uri = Some(source.uri.clone());
                record.revision = Some(source.revision.clone());
                record.path = Some(source.store_path.to_string());
                let mut attrs = vec![
                    ("outPath".to_owned(), NixValue::StorePath(source.store_path.clone())),
                    ("inputType".to_owned(), NixValue::String(other.to_owned())),
                ];
                for (name, value) in source.attrs {
                    if matches!(name.as_str(), "outPath" | "inputType") {
                        continue;
                    }
                    attrs.push((
                        name,
                        match value {
                            AttrValue::String(s) => NixValue::String(s),
                            AttrValue::Int(i) => NixValue::Int(i),
                            AttrValue::Bool(b) => NixValue::Bool(b),
                        },
                    ));
                }
                (NixValue::Attrs(attrs), Some(source.store_path))
            }
        };
        Ok(FetchedInput { name: input.name.clone(), value, readable_path, record })
    }

    async fn check_outputs_valid(&self, build: &SuccessfulBuild) -> Result<(), FetchFailure> {
        let paths: Vec<StorePath> = build.outputs.iter().filter_map(|(_, p)| StorePath::parse(p).ok()).collect();
        let invalid = self.nix.invalid_paths(&paths).await?;
        if invalid.is_empty() { Ok(()) } else { Err(FetchFailure::OutputsGone(build.id)) }
    }

    async fn eval_builds(&self, value: &str) -> Result<(i64, Vec<SuccessfulBuild>), FetchFailure> {
        let eval_id = match EvalRef::parse(value)? {
            EvalRef::Id(id) => {
                self.db.eval(id).await?.ok_or(FetchFailure::NoEval(id))?;
                id
            }
            EvalRef::Latest { project, jobset, job } => {
                let no_jobset = || FetchFailure::NoJobset { project: project.clone(), jobset: jobset.clone() };
                let (_, source) = self.db.jobset(&project, &jobset).await?.ok_or_else(no_jobset)?;
                let eval = self.db.latest_finished_eval(source.id).await?;
                let eval = eval
                    .ok_or_else(|| FetchFailure::NoFinishedEval { project: project.clone(), jobset: jobset.clone() })?;
                if let Some(job) = job {
                    let builds = self.db.eval_successful_builds(eval.id).await?;
                    if !builds.iter().any(|b| b.job == job) {
                        return Err(FetchFailure::JobFailed { job, eval: eval.id, project, jobset });
                    }
                }
                eval.id
            }
        };
        let builds = self.db.eval_successful_builds(eval_id).await?;
        Ok((eval_id, builds))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_values_by_type() {
        let none = LocalFiles::default();
        assert!(validate("boolean", "true", &none).is_ok());
        assert!(validate("boolean", "yes", &none).unwrap_err().to_string().contains("‘true’ or ‘false’"));
        let err = validate("gti", "x", &none).unwrap_err().to_string();
        assert!(
            err.contains("invalid input type ‘gti’") && err.contains("boolean, build, eval, nix, path, string"),
            "{err}"
        );
        assert!(validate("build", "p:j:job", &none).is_ok());
        assert!(validate("build", "a:b:c:d", &none).is_err());
        assert!(validate("build", ":job", &none).is_err());
        assert!(validate("eval", "12", &none).is_ok());
        assert!(validate("eval", "p:j", &none).is_ok());
        assert!(validate("eval", "nonsense", &none).is_err());
    }

    #[test]
    fn path_inputs_stay_under_allowed_roots() {
        let root = tempfile::tempdir().unwrap();
        let inside = root.path().join("src");
        std::fs::create_dir(&inside).unwrap();
        let roots = LocalFiles::new(&[root.path().to_owned()], &[]);
        assert!(validate("path", inside.to_str().unwrap(), &roots).is_ok());
        assert!(validate("path", "/etc", &roots).unwrap_err().to_string().contains("not under"));
        let none = LocalFiles::default();
        assert!(validate("path", inside.to_str().unwrap(), &none).unwrap_err().to_string().contains("not allowed"));
        assert!(validate("path", "relative", &roots).unwrap_err().to_string().contains("absolute"));
        // A symlink inside a root that points outside it does not get out.
        let link = root.path().join("escape");
        std::os::unix::fs::symlink("/etc", &link).unwrap();
        assert!(validate("path", link.to_str().unwrap(), &roots).unwrap_err().to_string().contains("not under"));
        let dotdot = format!("{}/src/../../", root.path().display());
        assert!(validate("path", &dotdot, &roots).is_err());
    }

    #[test]
    fn versions_from_names() {
        assert_eq!(version_of("hello-2.12.1"), Some("2.12.1"));
        assert_eq!(version_of("foo-bar-1.0-rc1"), Some("1.0-rc1"));
        assert_eq!(version_of("tarball"), None);
    }
}
