//! The plugins' key-value store, with its limits.

use sea_orm::sea_query::OnConflict;
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};

use super::entities::plugin_kv;
use super::{Db, DbError, DbResult, now};

/// Limits of one plugin's store.
pub const MAX_KEY_LEN: usize = 256;
pub const MAX_VALUE_LEN: usize = 64 * 1024;
pub const MAX_KEYS: u64 = 1024;

impl Db {
    pub async fn plugin_kv_get(&self, plugin: &str, key: &str) -> DbResult<Option<Vec<u8>>> {
        Ok(plugin_kv::Entity::find_by_id((plugin.to_owned(), key.to_owned())).one(self.read()).await?.map(|r| r.value))
    }

    /// Sets a value; refuses keys and values over the limits, and new keys
    /// beyond [`MAX_KEYS`].
    pub async fn plugin_kv_set(&self, plugin: &str, key: &str, value: &[u8]) -> DbResult<()> {
        if key.is_empty() || key.len() > MAX_KEY_LEN {
            return Err(DbError::Conflict(format!("a key has 1 to {MAX_KEY_LEN} bytes")));
        }
        if value.len() > MAX_VALUE_LEN {
            return Err(DbError::Conflict(format!(
                "a value has at most {MAX_VALUE_LEN} bytes, this one {}",
                value.len()
            )));
        }
        let exists = self.plugin_kv_get(plugin, key).await?.is_some();
        if !exists {
            let count =
                plugin_kv::Entity::find().filter(plugin_kv::Column::Plugin.eq(plugin)).count(self.read()).await?;
            if count >= MAX_KEYS {
                return Err(DbError::Conflict(format!("the store is full ({MAX_KEYS} keys): delete some first")));
            }
        }
        plugin_kv::Entity::insert(plugin_kv::ActiveModel {
            plugin: Set(plugin.to_owned()),
            key: Set(key.to_owned()),
            value: Set(value.to_vec()),
            updated_time: Set(now()),
        })
        .on_conflict(
            OnConflict::columns([plugin_kv::Column::Plugin, plugin_kv::Column::Key])
                .update_columns([plugin_kv::Column::Value, plugin_kv::Column::UpdatedTime])
                .to_owned(),
        )
        .exec_without_returning(self.write())
        .await?;
        Ok(())
    }

    pub async fn plugin_kv_delete(&self, plugin: &str, key: &str) -> DbResult<()> {
        plugin_kv::Entity::delete_by_id((plugin.to_owned(), key.to_owned())).exec(self.write()).await?;
        Ok(())
    }
}
