//! Hydra's jobset specification: the JSON body of `PUT /jobset/P/J` and
//! one entry of a declarative project's spec file, as one typed value, with
//! the checks both need. Values are accepted as loosely as Hydra accepts
//! them (`"1"` for true, numbers as strings), since specs written for Hydra
//! must work here unchanged.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer};

use crate::db::{InputSetting, JobsetSettings};

/// A value at fault in a spec: its key (a dotted path) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> FieldError {
        FieldError { field: field.into(), message: message.into() }
    }

    /// The same error one level down, under `outer` (a jobset's name, say).
    pub fn inside(self, outer: &str) -> FieldError {
        FieldError { field: format!("{outer}.{}", self.field), ..self }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "field ‘{}’: {}", self.field, self.message)
    }
}

impl std::error::Error for FieldError {}

/// Project, jobset and input names: a letter, then letters, digits, `_` or
/// `-` (Hydra's rule, so that names are safe in URLs and Nix).
pub fn check_name(what: &str, name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "invalid {what} name {name:?}: it must start with a letter and contain only letters, digits, ‘_’ and ‘-’"
        ))
    }
}

/// A jobset as Hydra's JSON describes it. Every field is optional: what is
/// left out keeps the value of the settings it is applied to.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct JobsetSpec {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub nixexprinput: Option<String>,
    #[serde(default)]
    pub nixexprpath: Option<String>,
    #[serde(default, deserialize_with = "flexible_int")]
    pub enabled: Option<i64>,
    #[serde(default, deserialize_with = "flexible_bool")]
    pub enableemail: Option<bool>,
    #[serde(default, deserialize_with = "flexible_bool")]
    pub visible: Option<bool>,
    #[serde(default, deserialize_with = "flexible_bool")]
    pub hidden: Option<bool>,
    #[serde(default)]
    pub emailoverride: Option<String>,
    #[serde(default, deserialize_with = "flexible_int")]
    pub keepnr: Option<i64>,
    #[serde(default, deserialize_with = "flexible_int")]
    pub checkinterval: Option<i64>,
    #[serde(default, deserialize_with = "flexible_int")]
    pub schedulingshares: Option<i64>,
    #[serde(default, rename = "type", deserialize_with = "flexible_int")]
    pub kind: Option<i64>,
    #[serde(default)]
    pub flake: Option<String>,
    #[serde(default, deserialize_with = "flexible_bool")]
    pub enable_dynamic_run_command: Option<bool>,
    #[serde(default)]
    pub inputs: Option<BTreeMap<String, InputSpec>>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct InputSpec {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, deserialize_with = "flexible_string")]
    pub value: Option<String>,
    #[serde(default, deserialize_with = "flexible_bool")]
    pub emailresponsible: Option<bool>,
}

/// The jobset type (Hydra's `type` field) of flakes; legacy jobsets are 0.
pub const FLAKE: i32 = 1;

fn int_field(field: &str, value: i64, min: i64, max: i64) -> Result<i32, FieldError> {
    if (min..=max).contains(&value) {
        Ok(value as i32)
    } else {
        Err(FieldError::new(field, format!("{value} is not between {min} and {max}")))
    }
}

impl JobsetSpec {
    /// `base` changed as this spec says, checked as a whole (names, ranges,
    /// the expression of a legacy jobset, the reference of a flake). The
    /// input values are checked by [`super::check_values`], which needs the
    /// input types the server knows.
    pub fn apply_to(self, base: JobsetSettings) -> Result<JobsetSettings, FieldError> {
        self.apply_with_inputs(base, &[])
    }

    /// [`Self::apply_to`], for a jobset that also receives the inputs named
    /// `given` from the server (the generator of a declarative project).
    pub fn apply_with_inputs(self, base: JobsetSettings, given: &[&str]) -> Result<JobsetSettings, FieldError> {
        let mut settings = base;
        if let Some(new_name) = self.name.filter(|n| !n.is_empty()) {
            check_name("jobset", &new_name).map_err(|e| FieldError::new("name", e))?;
            settings.name = new_name;
        }
        settings.description = self.description.unwrap_or(settings.description);
        settings.nixexpr_input = self.nixexprinput.unwrap_or(settings.nixexpr_input);
        settings.nixexpr_path = self.nixexprpath.unwrap_or(settings.nixexpr_path);
        if let Some(value) = self.enabled {
            settings.enabled = int_field("enabled", value, 0, 3)?;
        }
        settings.enable_email = self.enableemail.unwrap_or(settings.enable_email);
        if let Some(visible) = self.visible {
            settings.hidden = !visible;
        }
        settings.hidden = self.hidden.unwrap_or(settings.hidden);
        settings.email_override = self.emailoverride.unwrap_or(settings.email_override);
        if let Some(value) = self.keepnr {
            settings.keep_nr = int_field("keepnr", value, 0, i64::from(i32::MAX))?;
        }
        if let Some(value) = self.checkinterval {
            settings.check_interval = int_field("checkinterval", value, 0, i64::from(i32::MAX))?;
        }
        if let Some(value) = self.schedulingshares {
            settings.scheduling_shares = int_field("schedulingshares", value, 1, i64::from(i32::MAX))?;
        }
        if let Some(value) = self.kind {
            settings.kind = int_field("type", value, 0, 1)?;
        }
        if let Some(flake) = self.flake {
            let flake = flake.trim().to_owned();
            settings.flake = (!flake.is_empty()).then_some(flake);
        }
        settings.enable_dynamic_run_command =
            self.enable_dynamic_run_command.unwrap_or(settings.enable_dynamic_run_command);
        if let Some(inputs) = self.inputs {
            let mut list = Vec::with_capacity(inputs.len());
            for (input_name, input) in inputs {
                check_name("input", &input_name).map_err(|e| FieldError::new(format!("inputs.{input_name}"), e))?;
                let value = input.value.unwrap_or_default();
                // Hydra trims values, except of strings where spaces may matter.
                let value = if input.kind == "string" { value } else { value.trim().to_owned() };
                list.push(InputSetting {
                    name: input_name,
                    kind: input.kind,
                    value,
                    email_responsible: input.emailresponsible.unwrap_or(false),
                });
            }
            settings.inputs = list;
        }
        check_expression(&settings, given)?;
        Ok(settings)
    }
}

/// What a jobset evaluates: a file in one of its inputs (legacy), or a flake.
fn check_expression(settings: &JobsetSettings, given: &[&str]) -> Result<(), FieldError> {
    if settings.kind == FLAKE {
        if settings.flake.is_none() {
            return Err(FieldError::new(
                "flake",
                "a flake jobset (type 1) needs a flake reference, like git+https://…",
            ));
        }
        return Ok(());
    }
    if settings.nixexpr_input.is_empty() {
        return Err(FieldError::new(
            "nixexprinput",
            "a legacy jobset needs the name of the input holding its expression",
        ));
    }
    if !super::is_relative_inside(&settings.nixexpr_path) {
        return Err(FieldError::new(
            "nixexprpath",
            format!("{:?} must be a relative path inside the input (like release.nix)", settings.nixexpr_path),
        ));
    }
    if !settings.inputs.iter().any(|i| i.name == settings.nixexpr_input) && !given.contains(&&*settings.nixexpr_input) {
        return Err(FieldError::new(
            "nixexprinput",
            format!("‘{}’ is not one of the jobset's inputs", settings.nixexpr_input),
        ));
    }
    Ok(())
}

/// A boolean as Hydra clients send it: `true`, `1`, `"1"`, `"true"`, `"on"`;
/// `false`, `0`, `"0"`, `"false"`, `"off"`, `""`, `null`.
pub fn flexible_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    let value = Option::<serde_json::Value>::deserialize(d)?;
    Ok(match value {
        None | Some(serde_json::Value::Null) => Some(false),
        Some(serde_json::Value::Bool(b)) => Some(b),
        Some(serde_json::Value::Number(n)) => Some(n.as_f64() != Some(0.0)),
        Some(serde_json::Value::String(s)) => match s.trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "on" | "yes" => Some(true),
            "0" | "false" | "off" | "no" | "" => Some(false),
            other => {
                return Err(serde::de::Error::custom(format!("{other:?} is not a boolean")));
            }
        },
        Some(other) => {
            return Err(serde::de::Error::custom(format!("{other} is not a boolean")));
        }
    })
}

/// An integer, given as a number or a numeric string (`true` counts as 1).
pub fn flexible_int<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    let value = Option::<serde_json::Value>::deserialize(d)?;
    Ok(match value {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::Bool(b)) => Some(i64::from(b)),
        Some(serde_json::Value::Number(n)) => {
            Some(n.as_i64().ok_or_else(|| serde::de::Error::custom(format!("{n} is not an integer")))?)
        }
        Some(serde_json::Value::String(s)) => {
            Some(s.trim().parse().map_err(|_| serde::de::Error::custom(format!("{s:?} is not an integer")))?)
        }
        Some(other) => {
            return Err(serde::de::Error::custom(format!("{other} is not an integer")));
        }
    })
}

/// A string, also accepting numbers and booleans (a boolean input's value).
pub fn flexible_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let value = Option::<serde_json::Value>::deserialize(d)?;
    Ok(match value {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => Some(s),
        Some(serde_json::Value::Bool(b)) => Some(b.to_string()),
        Some(serde_json::Value::Number(n)) => Some(n.to_string()),
        Some(other) => return Err(serde::de::Error::custom(format!("{other} is not a string"))),
    })
}

/// Deserializes `value` strictly: a key the type does not know is an
/// error (a misspelt key in a spec must not be silently ignored), and every
/// error names the key at fault. All unknown keys are reported at once.
pub fn from_value_strict<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> Result<T, Vec<FieldError>> {
    let mut unknown = Vec::new();
    let parsed: T =
        serde_path_to_error::deserialize(serde_ignored::Deserializer::new(value, &mut |path: serde_ignored::Path| {
            unknown.push(key_path(&path))
        }))
        .map_err(|e| {
            let field = e.path().to_string();
            vec![FieldError::new(field, e.into_inner().to_string())]
        })?;
    if unknown.is_empty() {
        Ok(parsed)
    } else {
        Err(unknown.into_iter().map(|key| FieldError::new(key, "unknown key")).collect())
    }
}

/// A dotted key path (`inputs.src.valeu`), without the markers of
/// optional and newtype values that `serde_ignored` puts in its own.
fn key_path(path: &serde_ignored::Path) -> String {
    use serde_ignored::Path;
    let join = |parent: &Path, key: String| {
        let parent = key_path(parent);
        if parent.is_empty() { key } else { format!("{parent}.{key}") }
    };
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => join(parent, index.to_string()),
        Path::Map { parent, key } => join(parent, key.clone()),
        Path::Some { parent } | Path::NewtypeStruct { parent } | Path::NewtypeVariant { parent } => key_path(parent),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn legacy(spec: serde_json::Value) -> Result<JobsetSettings, FieldError> {
        from_value_strict::<JobsetSpec>(spec).map_err(|e| e[0].clone())?.apply_to(JobsetSettings::new("main"))
    }

    #[test]
    fn a_hydra_spec_gives_its_settings() {
        let settings = legacy(json!({
            "enabled": 1, "hidden": false, "description": "js", "nixexprinput": "src",
            "nixexprpath": "default.nix", "checkinterval": "300", "schedulingshares": 100,
            "enableemail": false, "emailoverride": "", "keepnr": 3,
            "inputs": { "src": { "type": "git", "value": " https://example.org/x.git main ", "emailresponsible": false } }
        }))
        .unwrap();
        assert_eq!(settings.check_interval, 300);
        assert_eq!(settings.nixexpr_path, "default.nix");
        assert_eq!(settings.inputs[0].value, "https://example.org/x.git main", "values are trimmed");
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key() {
        let err = legacy(json!({ "nixexprinput": "src", "nixexprpaht": "x.nix" })).unwrap_err();
        assert_eq!((err.field.as_str(), err.message.as_str()), ("nixexprpaht", "unknown key"));
        let err = legacy(json!({ "inputs": { "src": { "type": "git", "valeu": "x" } } })).unwrap_err();
        assert_eq!(err.field, "inputs.src.valeu");
        let err = legacy(json!({ "checkinterval": "often" })).unwrap_err();
        assert!(err.field == "checkinterval" && err.message.contains("not an integer"), "{err}");
        let err = legacy(json!({ "keepnr": -1 })).unwrap_err();
        assert_eq!(err.to_string(), "field ‘keepnr’: -1 is not between 0 and 2147483647");
        let err = legacy(json!({ "nixexprinput": "src", "nixexprpath": "../x.nix",
            "inputs": { "src": { "type": "path", "value": "/x" } } }))
        .unwrap_err();
        assert_eq!(err.field, "nixexprpath");
        let err = legacy(json!({ "nixexprinput": "nope", "nixexprpath": "x.nix", "inputs": {} })).unwrap_err();
        assert!(err.message.contains("‘nope’ is not one of the jobset's inputs"), "{err}");
    }

    #[test]
    fn flake_jobsets_need_a_reference_and_no_expression() {
        let settings = legacy(json!({ "type": 1, "flake": "git+file:///srv/x" })).unwrap();
        assert_eq!((settings.kind, settings.flake.as_deref()), (FLAKE, Some("git+file:///srv/x")));
        let err = legacy(json!({ "type": 1 })).unwrap_err();
        assert_eq!(err.field, "flake");
    }

    #[test]
    fn names_follow_hydras_rule() {
        assert!(check_name("jobset", "main-2_x").is_ok());
        assert!(check_name("jobset", ".jobsets").is_err());
        assert!(check_name("jobset", "").is_err());
        assert!(check_name("jobset", "a b").is_err());
    }
}
