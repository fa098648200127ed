//! `add-to-store`: a file or directory of the plugin's scratch area added
//! to the Nix store.

use super::{Capability, FlagGrant, WitError, failed};
use crate::config::PluginGrant;
use crate::plugins::state::HostState;
use crate::plugins::wit::latest::host_api::orthrus::plugin::nix_store;

/// May add paths of its scratch directory to the Nix store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreGrant;

impl FlagGrant for StoreGrant {
    const CAPABILITY: Capability = Capability::AddToStore;
    fn is_granted(grant: &PluginGrant) -> bool {
        grant.add_to_store
    }
    fn grant(grant: &mut PluginGrant) {
        grant.add_to_store = true;
    }
}

impl nix_store::Host for HostState {
    async fn add(&mut self, path: String) -> Result<String, WitError> {
        self.granted(&self.grants.store, Capability::AddToStore)?;
        let path = self.scratch_path(&path)?;
        self.services.nix.add_to_store(&path).await.map(|p| p.to_string()).map_err(failed)
    }
}
