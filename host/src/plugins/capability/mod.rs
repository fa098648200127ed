//! What a plugin may ask the host for, one file per capability. Each file
//! owns its grant (present in [`Grants`] only when granted), how that
//! grant is asked for, read from the configuration and written back, the
//! capabilities it lists, and the host functions it guards. A call that
//! was not granted is refused with [`NotGranted`], returned to the plugin
//! as the typed WIT error `not-granted(CAPABILITY)`: never a trap, never a
//! system call. Host functions implement the latest WIT version; older
//! versions are adapted to them in `wit/`.
//!
//! Adding a capability: its WIT interface and `capability` variant, its
//! key in `config::PluginGrant`, one file here, one field of [`Grants`].

mod builds;
mod http;
mod kv;
mod log;
mod mail;
mod process;
mod store;

pub use builds::BuildsGrant;
pub use http::HttpGrant;
pub use kv::KeyValueGrant;
pub use log::LogGrant;
pub use mail::MailGrant;
pub use process::ProcessGrant;
pub use store::StoreGrant;

use super::PluginId;
use super::outbound::OutboundError;
use super::state::HostState;
use super::wit::latest::Error as WitError;
use super::wit::latest::host_api::orthrus::plugin::types::Capability as WitCapability;
use crate::config::PluginGrant;

/// Something a plugin asks for (the WIT's `capability`).
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

impl Capability {
    /// What a plugin without it may not do, as in “plugin ‘x’ …”.
    pub fn refused(&self) -> String {
        match self {
            Capability::RunProgram(program) => format!("may not run {program:?}"),
            Capability::AddToStore => "may not add paths to the Nix store".to_owned(),
            Capability::KeyValue => "may not use a key-value store".to_owned(),
            Capability::Log => "may not write to the log".to_owned(),
            Capability::Http(host) => format!("may not send HTTP requests: host {host} is not granted"),
            Capability::Mail => "may not send mail".to_owned(),
            Capability::ReadBuilds => "may not read builds".to_owned(),
        }
    }
}

impl From<Capability> for WitCapability {
    fn from(capability: Capability) -> WitCapability {
        match capability {
            Capability::RunProgram(program) => WitCapability::RunProgram(program),
            Capability::AddToStore => WitCapability::AddToStore,
            Capability::KeyValue => WitCapability::KeyValue,
            Capability::Log => WitCapability::Log,
            Capability::Http(host) => WitCapability::Http(host),
            Capability::Mail => WitCapability::Mail,
            Capability::ReadBuilds => WitCapability::ReadBuilds,
        }
    }
}

impl From<WitCapability> for Capability {
    fn from(wit: WitCapability) -> Capability {
        match wit {
            WitCapability::RunProgram(program) => Capability::RunProgram(program),
            WitCapability::AddToStore => Capability::AddToStore,
            WitCapability::KeyValue => Capability::KeyValue,
            WitCapability::Log => Capability::Log,
            WitCapability::Http(host) => Capability::Http(host),
            WitCapability::Mail => Capability::Mail,
            WitCapability::ReadBuilds => Capability::ReadBuilds,
        }
    }
}

/// One capability's grant, as each file of this folder defines it.
pub trait Grant: Sized {
    /// What a built-in plugin gets when the operator says nothing: from
    /// what it asks for.
    fn asked(capabilities: &[Capability]) -> Option<Self>;
    /// From the plugin's `[plugins.grants.NAME]` table (checked when the
    /// configuration was read).
    fn from_config(grant: &PluginGrant) -> Option<Self>;
    /// Back into such a table.
    fn write_config(&self, grant: &mut PluginGrant);
    /// What it grants, in the WIT's words.
    fn capabilities(&self) -> Vec<Capability>;
}

/// A grant that is given or not, with nothing more to say (`log = true`):
/// one capability, one boolean of the configuration.
pub trait FlagGrant: Default {
    const CAPABILITY: Capability;
    /// Whether `[plugins.grants.NAME]` sets its boolean.
    fn is_granted(grant: &PluginGrant) -> bool;
    /// Sets its boolean there.
    fn grant(grant: &mut PluginGrant);
}

/// Defines a [`FlagGrant`]: its type, its capability, and the boolean of
/// `[plugins.grants.NAME]` that gives it.
macro_rules! flag_grant {
    ($(#[$doc:meta])* $grant:ident, $capability:expr, $key:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        pub struct $grant;

        impl $crate::plugins::capability::FlagGrant for $grant {
            const CAPABILITY: $crate::plugins::Capability = $capability;
            fn is_granted(grant: &$crate::config::PluginGrant) -> bool {
                grant.$key
            }
            fn grant(grant: &mut $crate::config::PluginGrant) {
                grant.$key = true;
            }
        }
    };
}
use flag_grant;

impl<G: FlagGrant> Grant for G {
    fn asked(capabilities: &[Capability]) -> Option<Self> {
        capabilities.contains(&G::CAPABILITY).then(G::default)
    }
    fn from_config(grant: &PluginGrant) -> Option<Self> {
        G::is_granted(grant).then(G::default)
    }
    fn write_config(&self, grant: &mut PluginGrant) {
        G::grant(grant);
    }
    fn capabilities(&self) -> Vec<Capability> {
        vec![G::CAPABILITY]
    }
}

/// What a plugin may do: one grant per capability, `None` when not granted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    pub process: Option<ProcessGrant>,
    pub store: Option<StoreGrant>,
    pub key_value: Option<KeyValueGrant>,
    pub log: Option<LogGrant>,
    pub http: Option<HttpGrant>,
    pub mail: Option<MailGrant>,
    pub builds: Option<BuildsGrant>,
}

impl Grants {
    /// What a built-in plugin gets by default: what it asks for, except
    /// what only the operator may choose (see each grant's `asked`).
    pub(in crate::plugins) fn asked(capabilities: &[Capability]) -> Grants {
        Grants {
            process: Grant::asked(capabilities),
            store: Grant::asked(capabilities),
            key_value: Grant::asked(capabilities),
            log: Grant::asked(capabilities),
            http: Grant::asked(capabilities),
            mail: Grant::asked(capabilities),
            builds: Grant::asked(capabilities),
        }
    }

    pub(in crate::plugins) fn from_config(grant: &PluginGrant) -> Grants {
        Grants {
            process: Grant::from_config(grant),
            store: Grant::from_config(grant),
            key_value: Grant::from_config(grant),
            log: Grant::from_config(grant),
            http: Grant::from_config(grant),
            mail: Grant::from_config(grant),
            builds: Grant::from_config(grant),
        }
    }

    /// The same, as the configuration writes it.
    pub fn to_config(&self) -> PluginGrant {
        let mut config = PluginGrant::default();
        for grant in self.each() {
            grant.write_config(&mut config);
        }
        config
    }

    /// The capabilities granted, in the WIT's words.
    pub fn capabilities(&self) -> Vec<Capability> {
        self.each().flat_map(|grant| grant.capabilities()).collect()
    }

    /// Whether the programs it runs may reach the network.
    pub fn network(&self) -> bool {
        self.process.as_ref().is_some_and(|process| process.network)
    }

    /// Whether its calls use paths of its scratch directory outside the
    /// WASI view of it (programs, adding to the store): such calls of one
    /// plugin must not race each other.
    pub(in crate::plugins) fn uses_scratch_paths(&self) -> bool {
        self.process.is_some() || self.store.is_some()
    }

    /// The grants given, in the order the WIT lists their capabilities.
    fn each(&self) -> impl Iterator<Item = &dyn DynGrant> {
        [
            self.process.as_ref().map(|g| g as &dyn DynGrant),
            self.store.as_ref().map(|g| g as &dyn DynGrant),
            self.key_value.as_ref().map(|g| g as &dyn DynGrant),
            self.log.as_ref().map(|g| g as &dyn DynGrant),
            self.http.as_ref().map(|g| g as &dyn DynGrant),
            self.mail.as_ref().map(|g| g as &dyn DynGrant),
            self.builds.as_ref().map(|g| g as &dyn DynGrant),
        ]
        .into_iter()
        .flatten()
    }
}

/// The object-safe half of [`Grant`], for walking the grants given.
trait DynGrant {
    fn write_config(&self, grant: &mut PluginGrant);
    fn capabilities(&self) -> Vec<Capability>;
}

impl<G: Grant> DynGrant for G {
    fn write_config(&self, grant: &mut PluginGrant) {
        Grant::write_config(self, grant)
    }
    fn capabilities(&self) -> Vec<Capability> {
        Grant::capabilities(self)
    }
}

/// A call the plugin was not granted (also what the host says when a
/// plugin answers `not-granted` itself, passing a refusal on).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not granted: plugin ‘{}’ {} (the operator grants {} in {})",
    plugin, capability.refused(), capability, plugin.grant_table())]
pub struct NotGranted {
    pub plugin: PluginId,
    /// What it lacks.
    pub capability: Capability,
}

impl From<NotGranted> for WitError {
    fn from(refusal: NotGranted) -> WitError {
        WitError::NotGranted(refusal.capability.into())
    }
}

impl HostState {
    /// Why a request or a mail did not go out, as the plugin is told.
    fn outbound_refused(&self, error: OutboundError) -> WitError {
        match error {
            OutboundError::HostNotGranted { authority } => self.not_granted(Capability::Http(authority)).into(),
            OutboundError::Invalid(message) => WitError::InvalidInput(message),
            OutboundError::Unreachable(message) => WitError::TryLater(message),
            OutboundError::NotConfigured(message) => WitError::Failed(message),
        }
    }
}

/// A host function's failure that is neither the plugin's fault nor
/// passing: a database or store error, in words.
pub(in crate::plugins) fn failed(error: impl std::fmt::Display) -> WitError {
    WitError::Failed(error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> PluginGrant {
        PluginGrant {
            programs: vec!["git".into()],
            add_to_store: true,
            key_value: true,
            log: true,
            http: vec!["127.0.0.1:9000".into(), "hooks.example.org".into()],
            mail: true,
            read_builds: true,
            network: Some(true),
            ssh_key_file: "/etc/orthrus/key".into(),
            ..PluginGrant::default()
        }
    }

    #[test]
    fn a_grant_read_from_the_configuration_writes_back_the_same() {
        let grants = Grants::from_config(&config());
        assert_eq!(grants.to_config(), config());
        assert_eq!(
            grants.capabilities().iter().map(ToString::to_string).collect::<Vec<_>>(),
            [
                "run-program(git)",
                "add-to-store",
                "key-value",
                "log",
                "http(127.0.0.1:9000)",
                "http(hooks.example.org)",
                "mail",
                "read-builds"
            ]
        );
        assert!(grants.network());
    }

    #[test]
    fn a_built_in_gets_what_it_asks_for_but_http_hosts() {
        let asked = [
            Capability::RunProgram("svn".into()),
            Capability::Log,
            Capability::Http("example.org".into()),
            Capability::Mail,
        ];
        let grants = Grants::asked(&asked);
        assert_eq!(grants.capabilities(), [Capability::RunProgram("svn".into()), Capability::Log, Capability::Mail]);
        assert!(grants.network(), "the built-ins that run programs fetch");
        assert_eq!(grants.http, None);
        assert_eq!(Grants::asked(&[]), Grants::default());
    }

    #[test]
    fn nothing_configured_grants_nothing() {
        let grants = Grants::from_config(&PluginGrant::default());
        assert_eq!(grants, Grants::default());
        assert!(grants.capabilities().is_empty());
        assert!(!grants.uses_scratch_paths());
    }
}
