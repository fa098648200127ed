//! The check of a declarative project's `.jobsets` jobset: fetch the
//! spec's input, read the spec, then apply it (a static spec) or evaluate
//! the generator it describes (see `projects::declarative`).

use std::path::Path;

use tracing::info;

use super::{EvalFailure, Evaluator, SpecRefused};
use crate::db::{Declarative, DueJobset, GENERATOR_JOB, JobsetInput, SPEC_JOBSET, SpecSource, enabled, outcome};
use crate::inputs::FetchedInput;
use crate::nix::NixValue;
use crate::projects::declarative::{SpecFile, apply_spec, parse_spec};
use crate::projects::spec::{FLAKE, FieldError};
use crate::projects::{JobsetSpec, check_values, is_relative_inside, read_contained};

/// The name under which the spec's input is passed to a generator (Hydra's).
const SPEC_INPUT: &str = "declInput";
/// The name under which a generator receives its project's name.
const PROJECT_NAME_INPUT: &str = "projectName";

impl Evaluator {
    pub(super) async fn check_spec(
        &self,
        due: &DueJobset,
        started: i64,
        declarative: &Declarative,
    ) -> Result<&'static str, EvalFailure> {
        let (project, jobset) = (&due.project, &due.jobset);
        let spec_input = JobsetInput {
            id: 0,
            jobset_id: jobset.id,
            name: SPEC_INPUT.into(),
            kind: declarative.kind.clone(),
            value: declarative.value.clone(),
            email_responsible: false,
        };
        let fetched = match self.fetcher.fetch(project, jobset, &spec_input).await {
            Ok(fetched) => fetched,
            Err(e) => {
                let message = format!("cannot fetch the spec: {e}");
                info!("{message}");
                self.db.record_spec_outcome(project.id, Some(&message), None).await?;
                self.db.record_fetch_error(jobset.id, started, &message).await?;
                return Ok(outcome::FETCH_FAILED);
            }
        };
        let read = self.read_spec(&fetched, declarative).await;
        let spec = match read {
            Ok(spec) => spec,
            Err(refused) => return self.spec_refused(due, started, &refused.to_string()).await,
        };
        match spec {
            SpecFile::Jobsets(specs) => {
                self.db.record_spec_source(project.id, SpecSource::Static, false).await?;
                match apply_spec(&self.db, &self.fetcher, project, specs, None).await {
                    Ok(changes) => {
                        if !changes.is_empty() {
                            self.handle.wake();
                        }
                        self.db.clear_eval_error(jobset.id).await?;
                        self.db.record_eval_unchanged(jobset.id, started).await?;
                        Ok(outcome::UNCHANGED)
                    }
                    Err(message) => {
                        self.db.record_eval_failure(jobset.id, started, &message).await?;
                        Ok(outcome::EVAL_FAILED)
                    }
                }
            }
            SpecFile::Generator(spec) => {
                let generator = match self.configure_generator(due, *spec).await {
                    Ok(generator) => generator,
                    Err(refused) => return self.spec_refused(due, started, &refused.to_string()).await,
                };
                let project_name = FetchedInput {
                    name: PROJECT_NAME_INPUT.into(),
                    value: NixValue::String(project.name.clone()),
                    readable_path: None,
                    record: crate::db::NewEvalInput {
                        name: PROJECT_NAME_INPUT.into(),
                        kind: "string".into(),
                        value: Some(project.name.clone()),
                        ..Default::default()
                    },
                };
                let extra = vec![FetchedInput { name: SPEC_INPUT.into(), ..fetched }, project_name];
                let checked = self.check_legacy(project, &generator, started, extra, Some(GENERATOR_JOB)).await;
                let failure = match &checked {
                    Err(message) => Some(format!("the generator of the spec failed: {message}")),
                    Ok(outcome::FETCH_FAILED) => {
                        Some(format!("an input of the generator could not be fetched (see the {SPEC_JOBSET} jobset)"))
                    }
                    Ok(_) => None,
                };
                match failure {
                    Some(message) => self.db.record_spec_outcome(project.id, Some(&message), None).await?,
                    // The newest `jobsets` build is applied again if the spec
                    // was something else, or wrong, in between.
                    None => {
                        let reapply = project.declarative_source.as_deref() != Some(SpecSource::Generator.as_str())
                            || project.declarative_error.is_some();
                        self.db.record_spec_source(project.id, SpecSource::Generator, reapply).await?;
                    }
                }
                checked
            }
        }
    }

    /// The spec file's text, parsed.
    async fn read_spec(&self, fetched: &FetchedInput, declarative: &Declarative) -> Result<SpecFile, SpecRefused> {
        let root =
            fetched.readable_path.as_ref().ok_or_else(|| SpecRefused::NotASourceTree(declarative.kind.clone()))?;
        if !is_relative_inside(&declarative.file) {
            return Err(SpecRefused::FileOutsideInput(declarative.file.clone()));
        }
        let root = Path::new(root.as_str());
        let text = read_contained(root, &root.join(&declarative.file)).await.map_err(|reason| {
            SpecRefused::Unreadable { file: declarative.file.clone(), input: declarative.value.clone(), reason }
        })?;
        parse_spec(&text, &declarative.file)
            .map_err(|reason| SpecRefused::Malformed { file: declarative.file.clone(), reason })
    }

    /// Gives `.jobsets` the settings of a generator spec (checked first), and
    /// returns it as saved. It stays on and keeps its name whatever the spec
    /// says, or the spec could never be read again.
    async fn configure_generator(&self, due: &DueJobset, spec: JobsetSpec) -> Result<crate::db::Jobset, SpecRefused> {
        let inputs = self.db.jobset_inputs(due.jobset.id).await?;
        let in_settings = SpecRefused::Settings;
        if spec.kind == Some(i64::from(FLAKE)) {
            return Err(in_settings(FieldError::new("type", "the generator of a spec is a legacy jobset (type 0)")));
        }
        let mut settings = JobsetSpec { name: None, ..spec }
            .apply_with_inputs(crate::db::JobsetSettings::new(SPEC_JOBSET), &[SPEC_INPUT, PROJECT_NAME_INPUT])
            .map_err(in_settings)?;
        if let Some(input) = settings.inputs.iter().find(|i| [SPEC_INPUT, PROJECT_NAME_INPUT].contains(&&*i.name)) {
            return Err(in_settings(FieldError::new(
                format!("inputs.{}", input.name),
                "this input is given by the server; the spec cannot set it",
            )));
        }
        check_values(&settings, None, &self.fetcher).await.map_err(in_settings)?;
        settings.enabled = enabled::ENABLED;
        if due.jobset.settings(&inputs) == settings {
            return Ok(due.jobset.clone());
        }
        let (saved, _) = self.db.save_jobset(&due.project, SPEC_JOBSET, &settings, crate::db::Expect::Anything).await?;
        Ok(saved)
    }

    /// A spec that cannot be read or is wrong: recorded on the project and
    /// as the evaluation error of `.jobsets`; the jobsets stay as they are.
    async fn spec_refused(&self, due: &DueJobset, started: i64, message: &str) -> Result<&'static str, EvalFailure> {
        let message = format!("the spec was not applied: {message}");
        info!("{message}");
        self.db.record_spec_outcome(due.project.id, Some(&message), None).await?;
        self.db.record_eval_failure(due.jobset.id, started, &message).await?;
        Ok(outcome::EVAL_FAILED)
    }
}
