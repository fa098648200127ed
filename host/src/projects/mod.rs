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
pub mod save;
pub mod spec;

use std::collections::BTreeMap;
use std::path::{Component, Path};

use crate::confined::{Confined, Refused};

pub use spec::{FieldError, JobsetSpec, check_name};

use crate::db::{Declarative, JobsetSettings};
use crate::inputs::InputFetcher;

/// Checks what only the server knows: that each input's type exists and
/// its value suits it, and that a flake reference may be fetched here.
/// Only what differs from `previous` (the saved settings) is checked, so
/// that a jobset whose input type was since removed can still be edited
/// (switched off, say).
pub async fn check_values(
    settings: &JobsetSettings,
    previous: Option<&JobsetSettings>,
    inputs: &InputFetcher,
) -> Result<(), FieldError> {
    let unchanged = |input: &crate::db::InputSetting| {
        previous.is_some_and(|p| p.inputs.iter().any(|old| old.kind == input.kind && old.value == input.value))
    };
    for input in settings.inputs.iter().filter(|i| !unchanged(i)) {
        inputs
            .check(&input.kind, &input.value)
            .await
            .map_err(|error| FieldError::new(format!("inputs.{}", input.name), error.to_string()))?;
    }
    let flake_unchanged = previous.is_some_and(|p| p.kind == settings.kind && p.flake == settings.flake);
    if let (spec::FLAKE, Some(flake), false) = (settings.kind, &settings.flake, flake_unchanged) {
        inputs.check_flake(flake).map_err(|error| FieldError::new("flake", error.to_string()))?;
    }
    Ok(())
}

/// Whether a relative path stays inside the directory it is relative to
/// (by its components: links are for [`read_contained`] to check).
pub fn is_relative_inside(path: &str) -> bool {
    let path = Path::new(path);
    !path.as_os_str().is_empty() && path.components().all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
}

/// A spec is a few kilobytes; more is a mistake or an attack.
const MAX_SPEC_BYTES: u64 = 1 << 20;

/// Reads a spec file at `path`, which must be a regular file inside `root`
/// once links are followed (or `root` itself, a file): a spec committed as
/// a link to `/etc/shadow`, or a generator whose output is one, must not
/// show the server's files in its error messages. At most [`MAX_SPEC_BYTES`].
pub async fn read_contained(root: &Path, path: &Path) -> Result<String, String> {
    let (root, path) = (root.to_owned(), path.to_owned());
    let shown = path.display().to_string();
    tokio::task::spawn_blocking(move || {
        let refused = |e: Refused| match e {
            Refused::LeadsOut { .. } | Refused::NotInside { .. } | Refused::RootIsLink(_) => {
                format!("{shown} is a link that leads out of its input")
            }
            Refused::NotAFile(_) => format!("{shown} is not a regular file"),
            Refused::Missing(_) => format!("cannot read {shown}: it does not exist"),
            Refused::Io { source, .. } => format!("cannot read {shown}: {source}"),
        };
        let relative = path.strip_prefix(&root).map_err(|_| format!("{shown} is not inside its input"))?;
        let read = Confined::open(&root)
            .and_then(|confined| confined.read(relative, MAX_SPEC_BYTES))
            .map_err(refused)?
            .ok_or_else(|| format!("cannot read {shown}: it does not exist"))?;
        if read.truncated {
            return Err(format!("{shown} is larger than {MAX_SPEC_BYTES} bytes"));
        }
        String::from_utf8(read.bytes).map_err(|_| format!("{shown} is not UTF-8 text"))
    })
    .await
    .map_err(|e| format!("reading a spec failed: {e}"))?
}

/// Parses a spec or projects file, JSON or TOML, into one JSON value.
pub fn parse_document(text: &str, toml: bool) -> Result<serde_json::Value, String> {
    if toml {
        toml::from_str(text).map_err(|e| format!("not valid TOML: {e}"))
    } else {
        serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))
    }
}

/// Checks where a declarative project's spec is: a relative path inside
/// an input of a type this server fetches.
pub async fn check_declarative(declarative: &Declarative, inputs: &InputFetcher) -> Result<(), FieldError> {
    if !is_relative_inside(&declarative.file) {
        return Err(FieldError::new(
            "declarative.file",
            format!("{:?} must be a relative path inside the input (like spec.json)", declarative.file),
        ));
    }
    inputs
        .check(&declarative.kind, &declarative.value)
        .await
        .map_err(|error| FieldError::new("declarative.value", error.to_string()))
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
            Ok(settings) => check_values(&settings, None, inputs).await.map(|()| settings),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_stay_inside() {
        assert!(is_relative_inside("release.nix"));
        assert!(is_relative_inside("ci/./jobs.nix"));
        assert!(!is_relative_inside("../etc/passwd"));
        assert!(!is_relative_inside("ci/../../x"));
        assert!(!is_relative_inside("/etc/passwd"));
        assert!(!is_relative_inside(""));
    }

    #[tokio::test]
    async fn spec_files_are_read_only_inside_their_input() {
        let input = tempfile::tempdir().unwrap();
        let root = input.path();
        std::fs::write(root.join("spec.json"), "{}").unwrap();
        assert_eq!(read_contained(root, &root.join("spec.json")).await.unwrap(), "{}");
        // A link inside the input is followed; one leading out is refused.
        std::os::unix::fs::symlink("spec.json", root.join("alias.json")).unwrap();
        assert_eq!(read_contained(root, &root.join("alias.json")).await.unwrap(), "{}");
        std::os::unix::fs::symlink("/etc/passwd", root.join("evil.json")).unwrap();
        let err = read_contained(root, &root.join("evil.json")).await.unwrap_err();
        assert!(err.contains("leads out of its input"), "{err}");
        std::fs::create_dir(root.join("dir")).unwrap();
        assert!(read_contained(root, &root.join("dir")).await.unwrap_err().contains("not a regular file"));
        std::fs::write(root.join("big.json"), vec![b' '; (MAX_SPEC_BYTES + 1) as usize]).unwrap();
        assert!(read_contained(root, &root.join("big.json")).await.unwrap_err().contains("larger than"));
    }
}
