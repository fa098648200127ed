//! `log`: lines in the server's log, tagged with the plugin's name.

use super::{Capability, Grant};
use crate::config::PluginGrant;
use crate::plugins::state::HostState;
use crate::plugins::wit::latest::host_api::orthrus::plugin::log;

/// May write to the server's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogGrant;

impl Grant for LogGrant {
    fn asked(capabilities: &[Capability]) -> Option<Self> {
        super::asks(capabilities, &Capability::Log).then_some(LogGrant)
    }
    fn from_config(grant: &PluginGrant) -> Option<Self> {
        grant.log.then_some(LogGrant)
    }
    fn write_config(&self, grant: &mut PluginGrant) {
        grant.log = true;
    }
    fn capabilities(&self) -> Vec<Capability> {
        vec![Capability::Log]
    }
}

impl log::Host for HostState {
    async fn write(&mut self, level: log::Level, message: String) -> Result<(), String> {
        self.granted(&self.grants.log, "write to the log")?;
        let plugin = self.plugin.as_str();
        match level {
            log::Level::Trace => tracing::trace!(plugin, "{message}"),
            log::Level::Debug => tracing::debug!(plugin, "{message}"),
            log::Level::Info => tracing::info!(plugin, "{message}"),
            log::Level::Warn => tracing::warn!(plugin, "{message}"),
            log::Level::Error => tracing::error!(plugin, "{message}"),
        }
        Ok(())
    }
}
