//! Projects and jobsets as people write them down: Hydra's jobset spec
//! (the body of `PUT /jobset` and an entry of a declarative spec file), its
//! checks, declarative projects that configure themselves from a file in
//! their own repository, and the projects file of `orthrus project apply`.
//!
//! The `db` part stores what this part decided; the evaluator reads a
//! declarative project's spec through [`declarative`], and the web part
//! checks what users send through [`spec`].

pub mod declarative;
pub mod file;
pub mod spec;

use std::collections::BTreeMap;

pub use spec::{FieldError, JobsetSpec, check_name};

use crate::db::{Declarative, JobsetSettings};
use crate::inputs::InputFetcher;

/// Checks what only the server knows: that each input's type exists and
/// its value suits it, and that a flake reference may be fetched here.
pub async fn check_values(settings: &JobsetSettings, inputs: &InputFetcher) -> Result<(), FieldError> {
    for input in &settings.inputs {
        inputs
            .check(&input.kind, &input.value)
            .await
            .map_err(|message| FieldError::new(format!("inputs.{}", input.name), message))?;
    }
    if let (spec::FLAKE, Some(flake)) = (settings.kind, &settings.flake) {
        inputs.check_flake(flake).map_err(|message| FieldError::new("flake", message))?;
    }
    Ok(())
}

/// Checks where a declarative project's spec is: a relative path inside
/// an input of a type this server fetches.
pub async fn check_declarative(declarative: &Declarative, inputs: &InputFetcher) -> Result<(), FieldError> {
    let file = std::path::Path::new(&declarative.file);
    let inside = !declarative.file.is_empty()
        && file.components().all(|c| matches!(c, std::path::Component::Normal(_) | std::path::Component::CurDir));
    if !inside {
        return Err(FieldError::new(
            "declarative.file",
            format!("{:?} must be a relative path inside the input (like spec.json)", declarative.file),
        ));
    }
    inputs
        .check(&declarative.kind, &declarative.value)
        .await
        .map_err(|message| FieldError::new("declarative.value", message))
}

/// Turns a spec's jobsets into settings, checking them all: the errors of
/// every jobset are returned together, so that one round of fixes suffices.
pub async fn resolve_jobsets(
    specs: BTreeMap<String, JobsetSpec>,
    inputs: &InputFetcher,
) -> Result<BTreeMap<String, JobsetSettings>, Vec<FieldError>> {
    let mut resolved = BTreeMap::new();
    let mut errors = Vec::new();
    for (name, spec) in specs {
        if let Err(message) = check_name("jobset", &name) {
            errors.push(FieldError::new(name, message));
            continue;
        }
        if spec.name.as_ref().is_some_and(|n| *n != name) {
            errors.push(FieldError::new(format!("{name}.name"), "a jobset of a spec is named by its key"));
            continue;
        }
        let checked = match spec.apply_to(JobsetSettings::new(&name)) {
            Ok(settings) => check_values(&settings, inputs).await.map(|()| settings),
            Err(e) => Err(e),
        };
        match checked {
            Ok(settings) => {
                resolved.insert(name, settings);
            }
            Err(e) => errors.push(e.inside(&name)),
        }
    }
    if errors.is_empty() { Ok(resolved) } else { Err(errors) }
}

/// Errors as one message, one per line.
pub fn describe_errors(errors: &[FieldError]) -> String {
    errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")
}
