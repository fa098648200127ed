//! `add-to-store`: a file or directory of the plugin's scratch area added
//! to the Nix store.

use super::{Capability, Grant};
use crate::config::PluginGrant;
use crate::plugins::state::HostState;
use crate::plugins::wit::latest::host_api::orthrus::plugin::nix_store;

/// May add paths of its scratch directory to the Nix store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreGrant;

impl Grant for StoreGrant {
    fn asked(capabilities: &[Capability]) -> Option<Self> {
        super::asks(capabilities, &Capability::AddToStore).then_some(StoreGrant)
    }
    fn from_config(grant: &PluginGrant) -> Option<Self> {
        grant.add_to_store.then_some(StoreGrant)
    }
    fn write_config(&self, grant: &mut PluginGrant) {
        grant.add_to_store = true;
    }
    fn capabilities(&self) -> Vec<Capability> {
        vec![Capability::AddToStore]
    }
}

impl nix_store::Host for HostState {
    async fn add(&mut self, path: String) -> Result<String, String> {
        self.granted(&self.grants.store, "add paths to the Nix store")?;
        let path = self.scratch_path(&path)?;
        self.services.nix.add_to_store(&path).await.map(|p| p.to_string()).map_err(|e| e.to_string())
    }
}
