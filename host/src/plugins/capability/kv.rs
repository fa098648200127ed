//! `key-value`: a small store of values kept between calls, one per
//! plugin (its limits are the database's: `db::plugin_kv`).

use super::{Capability, FlagGrant};
use crate::config::PluginGrant;
use crate::plugins::state::HostState;
use crate::plugins::wit::latest::host_api::orthrus::plugin::key_value;

/// May keep values in its key-value store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyValueGrant;

impl FlagGrant for KeyValueGrant {
    const CAPABILITY: Capability = Capability::KeyValue;
    fn is_granted(grant: &PluginGrant) -> bool {
        grant.key_value
    }
    fn grant(grant: &mut PluginGrant) {
        grant.key_value = true;
    }
}

const USE_KV: &str = "use a key-value store";

impl key_value::Host for HostState {
    async fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, String> {
        self.granted(&self.grants.key_value, USE_KV)?;
        self.services.db.plugin_kv_get(self.plugin.as_str(), &key).await.map_err(|e| e.to_string())
    }

    async fn set(&mut self, key: String, value: Vec<u8>) -> Result<(), String> {
        self.granted(&self.grants.key_value, USE_KV)?;
        self.services.db.plugin_kv_set(self.plugin.as_str(), &key, &value).await.map_err(|e| e.to_string())
    }

    async fn delete(&mut self, key: String) -> Result<(), String> {
        self.granted(&self.grants.key_value, USE_KV)?;
        self.services.db.plugin_kv_delete(self.plugin.as_str(), &key).await.map_err(|e| e.to_string())
    }
}
