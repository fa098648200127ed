//! Who a plugin is: where it came from, not what it says it is. A built-in
//! plugin is `builtin:NAME`; a plugin of `plugins.dir` is its file's stem,
//! and must call itself that. Grants, notifier settings, the key-value
//! store and the scratch directory all belong to the identity, so that a
//! `.wasm` dropped into the directory cannot borrow a built-in's token by
//! calling itself `github-status`.

use std::fmt;
use std::path::{Path, PathBuf};

/// The prefix of built-in plugins' identities.
const BUILTIN: &str = "builtin:";

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PluginId(String);

impl PluginId {
    pub fn builtin(name: &str) -> PluginId {
        PluginId(format!("{BUILTIN}{name}"))
    }

    /// The identity of the plugin in `file`: its stem, if that is a name a
    /// plugin may have.
    pub fn of_file(file: &Path) -> Result<PluginId, String> {
        let stem = file.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
        if !is_plugin_name(stem) {
            return Err(format!("{stem:?} is not a plugin name (letters, digits, ‘-’, ‘_’): rename the file"));
        }
        if stem == "builtin" {
            return Err("‘builtin’ is reserved for the built-in plugins: rename the file".into());
        }
        Ok(PluginId(stem.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_builtin(&self) -> bool {
        self.0.starts_with(BUILTIN)
    }

    /// The name without `builtin:`.
    pub fn name(&self) -> &str {
        self.0.strip_prefix(BUILTIN).unwrap_or(&self.0)
    }

    /// Its scratch directory under `root`: `builtin/NAME` or `NAME`.
    pub fn scratch_dir(&self, root: &Path) -> PathBuf {
        if self.is_builtin() { root.join("builtin").join(self.name()) } else { root.join(&self.0) }
    }

    /// The table of the configuration that grants it capabilities.
    pub fn grant_table(&self) -> String {
        if self.is_builtin() {
            format!("[plugins.grants.\"{}\"]", self.0)
        } else {
            format!("[plugins.grants.{}]", self.0)
        }
    }
}

impl fmt::Display for PluginId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Letters, digits, `-` and `_`.
pub fn is_plugin_name(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_come_from_where_plugins_are() {
        let git = PluginId::builtin("git");
        assert_eq!(git.as_str(), "builtin:git");
        assert_eq!(git.name(), "git");
        assert_eq!(git.scratch_dir(Path::new("/d")), Path::new("/d/builtin/git"));
        assert_eq!(git.grant_table(), "[plugins.grants.\"builtin:git\"]");
        let mine = PluginId::of_file(Path::new("/p/tarball.wasm")).unwrap();
        assert_eq!(mine.as_str(), "tarball");
        assert!(!mine.is_builtin());
        assert_eq!(mine.scratch_dir(Path::new("/d")), Path::new("/d/tarball"));
        assert!(PluginId::of_file(Path::new("/p/builtin:git.wasm")).is_err());
        assert!(PluginId::of_file(Path::new("/p/builtin.wasm")).is_err());
        assert!(PluginId::of_file(Path::new("/p/a b.wasm")).is_err());
    }
}
