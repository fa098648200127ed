//! What the runtime says about plugins: metadata, kinds, where a plugin
//! came from, and the errors of a call (capabilities and grants are
//! `capability/`'s).

use super::capability::NotGranted;
use super::wit::WitVersion;
use super::wit::latest::Error as WitError;
use super::*;

/// What a plugin says it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    pub name: String,
    pub version: String,
    pub description: String,
    pub handles: Vec<String>,
    pub capabilities: Vec<Capability>,
}

/// Which of the plugin worlds a plugin is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PluginKind {
    InputFetcher,
    Notifier,
    Renderer,
    ReleaseSet,
}

impl PluginKind {
    pub const ALL: [PluginKind; 4] =
        [PluginKind::InputFetcher, PluginKind::Notifier, PluginKind::Renderer, PluginKind::ReleaseSet];
}

impl std::fmt::Display for PluginKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PluginKind::InputFetcher => "input fetcher",
            PluginKind::Notifier => "notifier",
            PluginKind::Renderer => "renderer",
            PluginKind::ReleaseSet => "release set",
        })
    }
}

/// Where a plugin came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    BuiltIn,
    File(PathBuf),
    /// A file looked at, not loaded (`orthrus plugin inspect`): named by
    /// what it calls itself, whatever its file's name.
    Inspected(PathBuf),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::BuiltIn => f.write_str("built in"),
            Source::File(path) | Source::Inspected(path) => write!(f, "{}", path.display()),
        }
    }
}

/// A loaded plugin, as `orthrus plugin list` shows it.
#[derive(Debug, Clone)]
pub struct PluginInfo {
    /// Who it is: where it came from.
    pub id: PluginId,
    pub kind: PluginKind,
    /// The version of `orthrus:plugin` it was built against.
    pub wit: WitVersion,
    pub metadata: Metadata,
    /// Shared with each call's store (no copy per call).
    pub grants: Arc<Grants>,
    pub source: Source,
    pub sha256: String,
}

/// A fetched input, as the plugin described it.
#[derive(Debug, Clone, PartialEq)]
pub struct FetchedSource {
    pub store_path: StorePath,
    pub revision: String,
    pub uri: String,
    pub attrs: Vec<(String, AttrValue)>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum AttrValue {
    String(String),
    Int(i64),
    Bool(bool),
}

/// One change between two revisions.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Change {
    pub revision: String,
    pub author: String,
    pub email: String,
    pub time: i64,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The plugin did its job and reports a failure (a repository that
    /// does not exist, say).
    #[error("{0}")]
    Failed(String),
    /// The plugin says what it was given is wrong (an input value, a
    /// setting): asking again will not help.
    #[error("{0}")]
    InvalidInput(String),
    /// The plugin says: not now (unreachable, rate-limited).
    #[error("{0} (the plugin asks to try again later)")]
    TryLater(String),
    /// The plugin needs a capability the operator has not granted it.
    #[error(transparent)]
    NotGranted(#[from] NotGranted),
    /// The plugin trapped, ran out of time or memory.
    #[error("plugin ‘{plugin}’ {what}")]
    Crashed {
        plugin: String,
        what: String,
        /// The same call may well succeed later: it ran out of time (the
        /// machine may have been busy) or could not start.
        transient: bool,
    },
    #[error("no plugin handles inputs of type ‘{0}’")]
    NoPlugin(String),
    #[error("no {kind} plugin is named ‘{name}’")]
    NoSuchPlugin { kind: PluginKind, name: String },
    #[error("cannot load plugin {origin}: {message}")]
    Load { origin: String, message: String },
}

impl PluginError {
    /// Whether the same call may well succeed later: it ran out of time
    /// (the machine may have been busy) or could not start. Running out of
    /// fuel, panicking or answering an error happen again every time.
    pub fn is_transient(&self) -> bool {
        match self {
            PluginError::Crashed { transient, .. } => *transient,
            PluginError::Load { .. } | PluginError::TryLater(_) => true,
            PluginError::Failed(_)
            | PluginError::InvalidInput(_)
            | PluginError::NotGranted(_)
            | PluginError::NoPlugin(_)
            | PluginError::NoSuchPlugin { .. } => false,
        }
    }

    /// What a plugin's export answered instead of a result.
    pub(super) fn answered(plugin: &PluginId, error: WitError) -> PluginError {
        match error {
            WitError::InvalidInput(message) => PluginError::InvalidInput(message),
            WitError::Failed(message) => PluginError::Failed(message),
            WitError::TryLater(message) => PluginError::TryLater(message),
            WitError::NotGranted(capability) => {
                PluginError::NotGranted(NotGranted { plugin: plugin.clone(), capability: capability.into() })
            }
        }
    }
}
