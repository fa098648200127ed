//! `log`: lines in the server's log, tagged with the plugin's name.

use super::{Capability, WitError, flag_grant};
use crate::plugins::state::HostState;
use crate::plugins::wit::latest::host_api::orthrus::plugin::log;

flag_grant!(
    /// May write to the server's log.
    LogGrant,
    Capability::Log,
    log
);

impl log::Host for HostState {
    async fn write(&mut self, level: log::Level, message: String) -> Result<(), WitError> {
        self.granted(&self.grants.log, Capability::Log)?;
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
