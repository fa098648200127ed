//! Declarative projects, as Hydra has them: a project names a spec file in
//! an input (`declarative: {file, type, value}`), and its jobsets follow
//! that file.
//!
//! The project's `.jobsets` jobset reads the spec at each of its checks
//! (`eval::Evaluator`). A spec is either
//! - *static*: an object whose values are all objects, one jobset each,
//!   applied at once; or
//! - a *generator*: the settings of `.jobsets` itself, which is then
//!   evaluated with two more inputs, `declInput` (the spec's input) and
//!   `projectName`, and must have one job, `jobsets`, whose output is a
//!   static spec. [`SpecApplier`] applies it when that build succeeds.
//!
//! Specs are JSON, or TOML when the file name ends in `.toml`. A spec with
//! an unknown key or a bad value changes nothing: the error, naming the
//! key, is recorded on the project and the last good jobsets stay.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;
use tracing::{info, warn};

use super::spec::{FieldError, JobsetSpec, from_value_strict};
use super::{describe_errors, parse_document, read_contained, resolve_jobsets};
use crate::db::{Db, GeneratorBuild, JobsetChanges, Project, SPEC_JOBSET, SpecSource};
use crate::domain::BuildStatus;
use crate::inputs::InputFetcher;

/// What a spec file says.
#[derive(Debug, Clone)]
pub enum SpecFile {
    /// The project's jobsets, by name.
    Jobsets(BTreeMap<String, JobsetSpec>),
    /// The settings of `.jobsets`, whose `jobsets` job makes the spec.
    Generator(Box<JobsetSpec>),
}

/// Whether a text is TOML rather than JSON: by the file's extension.
fn is_toml(file_name: &str) -> bool {
    file_name.ends_with(".toml")
}

fn parse_text(text: &str, toml: bool) -> Result<Value, String> {
    let value = parse_document(text, toml)?;
    if !value.is_object() {
        return Err("the spec must be an object (of jobsets, or of the settings of .jobsets)".into());
    }
    Ok(value)
}

fn jobsets_of(value: Value) -> Result<BTreeMap<String, JobsetSpec>, String> {
    let Value::Object(map) = value else { unreachable!("checked by parse_text") };
    let mut errors = Vec::new();
    let mut specs = BTreeMap::new();
    for (name, spec) in map {
        match from_value_strict::<JobsetSpec>(spec) {
            Ok(spec) => {
                specs.insert(name, spec);
            }
            Err(faults) => errors.extend(faults.into_iter().map(|e| e.inside(&name))),
        }
    }
    if errors.is_empty() { Ok(specs) } else { Err(describe_errors(&errors)) }
}

/// Reads a project's spec file.
pub fn parse_spec(text: &str, file_name: &str) -> Result<SpecFile, String> {
    let value = parse_text(text, is_toml(file_name))?;
    // Hydra's rule: a spec whose values are all objects lists jobsets.
    if value.as_object().is_some_and(|map| map.values().all(Value::is_object)) {
        return jobsets_of(value).map(SpecFile::Jobsets);
    }
    from_value_strict::<JobsetSpec>(value)
        .map(|spec| SpecFile::Generator(Box::new(spec)))
        .map_err(|errors| format!("{} (in the settings of {SPEC_JOBSET})", describe_errors(&errors)))
}

/// Reads the output of a generator job: jobsets in JSON (as Hydra has
/// them), or in TOML.
pub fn parse_generated(text: &str) -> Result<BTreeMap<String, JobsetSpec>, String> {
    let value = parse_text(text, !text.trim_start().starts_with('{'))?;
    if let Some((key, _)) = value.as_object().and_then(|map| map.iter().find(|(_, v)| !v.is_object())) {
        return Err(
            FieldError::new(key.clone(), "a generated spec lists jobsets: each value must be an object").to_string()
        );
    }
    jobsets_of(value)
}

/// Checks a spec's jobsets and, if all are good, makes them the project's
/// (keeping `.jobsets`); records the outcome on the project either way.
/// `build` is the generator build the spec came from, if any.
pub async fn apply_spec(
    db: &Db,
    inputs: &InputFetcher,
    project: &Project,
    specs: BTreeMap<String, JobsetSpec>,
    build: Option<(i64, &str)>,
) -> Result<JobsetChanges, String> {
    let desired = match resolve_jobsets(specs, inputs).await {
        Ok(desired) => desired,
        Err(errors) => {
            let message = format!("the spec was not applied: {}", describe_errors(&errors));
            warn!(project = %project.name, "{message}");
            db.record_spec_outcome(project.id, Some(&message), build).await.map_err(|e| e.to_string())?;
            return Err(message);
        }
    };
    // A database error is not the spec's fault: nothing is recorded, and the
    // spec is applied at the next attempt.
    let changes = db.apply_jobsets(project, &desired, &[SPEC_JOBSET]).await.map_err(|e| e.to_string())?;
    db.record_spec_outcome(project.id, None, build).await.map_err(|e| e.to_string())?;
    if !changes.is_empty() {
        info!(
            project = %project.name,
            created = ?changes.created,
            changed = ?changes.changed,
            disabled = ?changes.disabled,
            "declarative spec applied"
        );
    }
    Ok(changes)
}

/// Applies the specs that generator jobs build, as their builds finish.
pub struct SpecApplier {
    pub db: Db,
    pub inputs: InputFetcher,
    /// Asks for the jobsets it changed to be evaluated soon (the
    /// evaluator's wake-up: `projects` knows no evaluator).
    pub wake_evaluator: Box<dyn Fn() + Send + Sync>,
}

impl SpecApplier {
    /// Runs until the task is dropped: woken by every batch of events (a
    /// build finishing is one), and every few seconds in any case.
    pub async fn run(self) {
        match self.db.configure_declarative_projects().await {
            Ok(configured) if !configured.is_empty() => {
                info!(projects = ?configured, "declarative projects given their .jobsets jobset");
                (self.wake_evaluator)();
            }
            Ok(_) => {}
            Err(e) => warn!("cannot configure declarative projects: {e}"),
        }
        let mut events = self.db.subscribe_events();
        loop {
            match self.db.pending_generator_builds().await {
                Ok(pending) => {
                    for build in pending {
                        self.apply(build).await;
                    }
                }
                Err(e) => warn!("cannot look for generated declarative specs: {e}"),
            }
            tokio::select! {
                _ = events.changed() => {}
                _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            }
            // Builds finish in bursts: look once per burst, not per event.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Applies one generator build's output, or records why it cannot be.
    /// A database error leaves the build pending, to be tried again.
    async fn apply(&self, generated: GeneratorBuild) {
        let GeneratorBuild { project, build_id, finish, status: code, output } = generated;
        // The project may have changed since the build was found.
        match self.db.project(&project.name).await {
            Ok(Some(current))
                if current.id == project.id
                    && current.declarative().is_some()
                    && current.declarative_source.as_deref() == Some(SpecSource::Generator.as_str()) => {}
            Ok(_) => return,
            Err(e) => return warn!(project = %project.name, "cannot read the project: {e}"),
        }
        let build = Some((build_id, finish.as_str()));
        let specs = if code != BuildStatus::Succeeded.code() {
            Err(format!("build {build_id} of the generator job failed ({})", BuildStatus::describe_code(Some(code))))
        } else {
            match output {
                None => Err(format!("build {build_id} of the generator job has no output")),
                Some(path) if crate::nix::StorePath::parse(&path).is_err() => {
                    Err(format!("the output of build {build_id} is not a store path"))
                }
                // The output is a file of the store, not a link out of it.
                Some(path) => {
                    let path = std::path::Path::new(&path);
                    match read_contained(path, path).await {
                        Ok(text) => parse_generated(&text).map_err(|e| format!("the output of build {build_id}: {e}")),
                        Err(e) => Err(format!("the output of build {build_id}: {e}")),
                    }
                }
            }
        };
        let outcome = match specs {
            Ok(specs) => apply_spec(&self.db, &self.inputs, &project, specs, build).await.map(drop),
            Err(message) => {
                let message = format!("the spec was not applied: {message}");
                warn!(project = %project.name, "{message}");
                self.db.record_spec_outcome(project.id, Some(&message), build).await.map_err(|e| e.to_string())
            }
        };
        match outcome {
            Ok(()) => (self.wake_evaluator)(),
            Err(e) => warn!(project = %project.name, "declarative spec of build {build_id}: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_and_generator_specs_are_told_apart() {
        let text = r#"{ "main": { "nixexprinput": "src", "nixexprpath": "release.nix",
            "inputs": { "src": { "type": "git", "value": "file:///srv/x" } } }, "empty": {} }"#;
        let SpecFile::Jobsets(jobsets) = parse_spec(text, "spec.json").unwrap() else { panic!("static") };
        assert_eq!(jobsets.keys().collect::<Vec<_>>(), ["empty", "main"]);

        let text = r#"{ "enabled": 1, "nixexprinput": "src", "nixexprpath": "jobsets.nix",
            "inputs": { "src": { "type": "git", "value": "file:///srv/x" } } }"#;
        let SpecFile::Generator(spec) = parse_spec(text, "spec.json").unwrap() else { panic!("generator") };
        assert_eq!(spec.nixexprpath.as_deref(), Some("jobsets.nix"));
    }

    #[test]
    fn toml_specs_read_like_json_ones() {
        let text = "[main]\nnixexprinput = \"src\"\nnixexprpath = \"release.nix\"\ncheckinterval = 60\n\
                    [main.inputs.src]\ntype = \"git\"\nvalue = \"file:///srv/x main\"\n";
        let SpecFile::Jobsets(jobsets) = parse_spec(text, "ci/spec.toml").unwrap() else { panic!("static") };
        assert_eq!(jobsets["main"].checkinterval, Some(60));
        assert_eq!(parse_generated(text).unwrap()["main"].nixexprinput.as_deref(), Some("src"));
    }

    #[test]
    fn errors_name_the_jobset_and_key() {
        let err = parse_spec(r#"{ "main": { "nixexprpaht": "x" }, "b": { "keepnr": "many" } }"#, "s.json").unwrap_err();
        assert!(err.contains("field ‘main.nixexprpaht’: unknown key"), "{err}");
        assert!(err.contains("field ‘b.keepnr’") && err.contains("not an integer"), "{err}");
        assert!(parse_spec("{ not json", "s.json").unwrap_err().starts_with("not valid JSON"));
        assert!(parse_spec("[1]", "s.json").unwrap_err().contains("must be an object"));
        assert!(parse_spec("main = [", "s.toml").unwrap_err().starts_with("not valid TOML"));
        let err = parse_spec(r#"{ "nixexprinput": "src", "colour": "red" }"#, "s.json").unwrap_err();
        assert!(err.contains("field ‘colour’: unknown key") && err.contains(".jobsets"), "{err}");
        let err = parse_generated(r#"{ "main": {}, "oops": 3 }"#).unwrap_err();
        assert!(err.contains("‘oops’"), "{err}");
    }
}
