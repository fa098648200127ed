//! `key-value`: a small store of values kept between calls, one per
//! plugin (its limits are the database's: `db::plugin_kv`).

use super::{Capability, WitError, failed, flag_grant};
use crate::db::DbError;
use crate::plugins::state::HostState;
use crate::plugins::wit::latest::host_api::orthrus::plugin::key_value;

flag_grant!(
    /// May keep values in its key-value store.
    KeyValueGrant,
    Capability::KeyValue,
    key_value
);

/// Over a limit (a key too long, a value too big, a full store) is the
/// plugin's to fix; anything else is the database's.
fn kv_error(error: DbError) -> WitError {
    match error {
        DbError::Conflict(message) => WitError::InvalidInput(message),
        other => failed(other),
    }
}

impl key_value::Host for HostState {
    async fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, WitError> {
        self.granted(&self.grants.key_value, Capability::KeyValue)?;
        self.services.db.plugin_kv_get(self.plugin.as_str(), &key).await.map_err(kv_error)
    }

    async fn set(&mut self, key: String, value: Vec<u8>) -> Result<(), WitError> {
        self.granted(&self.grants.key_value, Capability::KeyValue)?;
        self.services.db.plugin_kv_set(self.plugin.as_str(), &key, &value).await.map_err(kv_error)
    }

    async fn delete(&mut self, key: String) -> Result<(), WitError> {
        self.granted(&self.grants.key_value, Capability::KeyValue)?;
        self.services.db.plugin_kv_delete(self.plugin.as_str(), &key).await.map_err(kv_error)
    }
}
