//! `add-to-store`: a file or directory of the plugin's scratch area added
//! to the Nix store.

use super::{Capability, WitError, failed, flag_grant};
use crate::plugins::state::HostState;
use crate::plugins::wit::latest::host_api::orthrus::plugin::nix_store;

flag_grant!(
    /// May add paths of its scratch directory to the Nix store.
    StoreGrant,
    Capability::AddToStore,
    add_to_store
);

impl nix_store::Host for HostState {
    async fn add(&mut self, path: String) -> Result<String, WitError> {
        self.granted(&self.grants.store, Capability::AddToStore)?;
        let path = self.scratch_path(&path)?;
        self.services.nix.add_to_store(&path).await.map(|p| p.to_string()).map_err(failed)
    }
}
