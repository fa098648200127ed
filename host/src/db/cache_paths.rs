//! The store paths the binary cache serves, by hash part: the closures of
//! successful builds' outputs, recorded as builds finish (and, for builds
//! of before, when one of their outputs is first asked for).

use sea_orm::sea_query::OnConflict;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QuerySelect, Set};

use super::entities::{build_output, cache_path};
use super::{Db, DbResult};
use crate::nix::{StorePath, store_dir};

impl Db {
    /// Records paths the cache may serve.
    pub async fn record_cache_paths(&self, paths: &[StorePath]) -> DbResult<()> {
        let txn = self.begin_write().await?;
        for chunk in paths.chunks(super::INSERT_CHUNK) {
            let rows = chunk.iter().map(|path| cache_path::ActiveModel {
                hash_part: Set(path.hash_part().to_owned()),
                path: Set(path.as_str().to_owned()),
            });
            cache_path::Entity::insert_many(rows)
                .on_conflict(OnConflict::column(cache_path::Column::HashPart).do_nothing().to_owned())
                .exec_without_returning(&txn)
                .await?;
        }
        txn.commit().await?;
        Ok(())
    }

    /// The path the cache serves under this hash part, if any.
    pub async fn cache_path(&self, hash_part: &str) -> DbResult<Option<String>> {
        Ok(cache_path::Entity::find_by_id(hash_part.to_owned()).one(self.read()).await?.map(|row| row.path))
    }

    /// A build's output with this hash part, if any (by the index on
    /// outputs' paths: `/nix/store/HASH-` up to `/nix/store/HASH.`).
    pub async fn output_with_hash(&self, hash_part: &str) -> DbResult<Option<String>> {
        let prefix = format!("{}/{hash_part}", store_dir());
        Ok(build_output::Entity::find()
            .select_only()
            .column(build_output::Column::Path)
            .filter(build_output::Column::Path.gte(format!("{prefix}-")))
            .filter(build_output::Column::Path.lt(format!("{prefix}.")))
            .into_tuple()
            .one(self.read())
            .await?)
    }
}
