//! What the runtime says about plugins: capabilities, metadata, kinds,
//! grants, where a plugin came from, and the errors of a call.

use super::*;

/// Something a plugin asks for (mirrors the WIT `capability`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Capability {
    RunProgram(String),
    AddToStore,
    KeyValue,
    Log,
    Http(String),
    Mail,
    ReadBuilds,
}

impl std::fmt::Display for Capability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Capability::RunProgram(program) => write!(f, "run-program({program})"),
            Capability::AddToStore => f.write_str("add-to-store"),
            Capability::KeyValue => f.write_str("key-value"),
            Capability::Log => f.write_str("log"),
            Capability::Http(host) => write!(f, "http({host})"),
            Capability::Mail => f.write_str("mail"),
            Capability::ReadBuilds => f.write_str("read-builds"),
        }
    }
}

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
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PluginKind {
    InputFetcher,
    Notifier,
    Renderer,
    ReleaseSet,
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

/// What a plugin may do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    pub programs: BTreeSet<String>,
    pub add_to_store: bool,
    pub key_value: bool,
    pub log: bool,
    pub http: BTreeSet<HostGrant>,
    pub mail: bool,
    pub read_builds: bool,
    /// The programs it runs may reach the network.
    pub network: bool,
    /// Files its programs see at fixed places in their box.
    pub credentials: Credentials,
}

impl Grants {
    /// What a built-in plugin gets by default: what it asks for, except
    /// HTTP hosts, which only the operator names (a webhook's receiver is
    /// the operator's choice, not the plugin's).
    pub(super) fn asked(metadata: &Metadata) -> Grants {
        let mut grants = Grants::default();
        for capability in &metadata.capabilities {
            match capability {
                Capability::RunProgram(program) => {
                    grants.programs.insert(program.clone());
                }
                Capability::AddToStore => grants.add_to_store = true,
                Capability::KeyValue => grants.key_value = true,
                Capability::Log => grants.log = true,
                Capability::Http(_) => {}
                Capability::Mail => grants.mail = true,
                Capability::ReadBuilds => grants.read_builds = true,
            }
        }
        // The built-in plugins that run programs (git, svn) fetch.
        grants.network = !grants.programs.is_empty();
        grants
    }

    pub(super) fn from_config(grant: &PluginGrant) -> Grants {
        Grants {
            programs: grant.programs.iter().cloned().collect(),
            add_to_store: grant.add_to_store,
            key_value: grant.key_value,
            log: grant.log,
            // Checked when the configuration was read.
            http: grant.http.iter().filter_map(|h| HostGrant::parse(h).ok()).collect(),
            mail: grant.mail,
            read_builds: grant.read_builds,
            network: grant.network.unwrap_or(false),
            credentials: Credentials {
                ssh_key: non_empty(&grant.ssh_key_file),
                known_hosts: non_empty(&grant.ssh_known_hosts_file),
                git_credentials: non_empty(&grant.git_credentials_file),
            },
        }
    }

    /// The same, as the configuration writes it.
    pub fn to_config(&self) -> PluginGrant {
        PluginGrant {
            programs: self.programs.iter().cloned().collect(),
            add_to_store: self.add_to_store,
            key_value: self.key_value,
            log: self.log,
            http: self.http.iter().map(ToString::to_string).collect(),
            mail: self.mail,
            read_builds: self.read_builds,
            network: Some(self.network),
            ssh_key_file: self.credentials.ssh_key.clone().unwrap_or_default(),
            ssh_known_hosts_file: self.credentials.known_hosts.clone().unwrap_or_default(),
            git_credentials_file: self.credentials.git_credentials.clone().unwrap_or_default(),
            replaces: String::new(),
        }
    }

    /// The capabilities granted, in the WIT's words.
    pub fn capabilities(&self) -> Vec<Capability> {
        let mut list: Vec<Capability> = self.programs.iter().cloned().map(Capability::RunProgram).collect();
        if self.add_to_store {
            list.push(Capability::AddToStore);
        }
        if self.key_value {
            list.push(Capability::KeyValue);
        }
        if self.log {
            list.push(Capability::Log);
        }
        list.extend(self.http.iter().map(|h| Capability::Http(h.to_string())));
        if self.mail {
            list.push(Capability::Mail);
        }
        if self.read_builds {
            list.push(Capability::ReadBuilds);
        }
        list
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
    pub metadata: Metadata,
    pub grants: Grants,
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
            PluginError::Load { .. } => true,
            PluginError::Failed(_) | PluginError::NoPlugin(_) | PluginError::NoSuchPlugin { .. } => false,
        }
    }
}
