//! `/search`, as Hydra's: projects and jobsets whose name or description
//! contains the query; builds whose output paths or job name contain it
//! (`builds`) and whose derivation path does (`buildsdrv`), the newest
//! first — so that a hash prefix of a store path finds its build.
//!
//! The builds are found through a substring index (migration
//! `m20261203_000012_search`): `pg_trgm` GIN indexes that PostgreSQL's
//! `ILIKE '%q%'` uses, or SQLite's FTS5 table `build_search` with the
//! trigram tokenizer, whose rows hold base names (no store directory). A
//! query of fewer than three characters has no trigram: it is matched by
//! scanning the newest builds, which such a short query meets at once.

use sea_orm::sea_query::{Expr, ExprTrait, Func, LikeExpr};
use sea_orm::{ConnectionTrait, DbBackend, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Statement};

use super::entities::{jobset, project};
use super::{Db, DbResult, Jobset, Project};
use crate::domain::SearchQuery;

/// What `/search` finds.
#[derive(Debug, Clone, Default)]
pub struct SearchResults {
    pub projects: Vec<Project>,
    pub jobsets: Vec<(Project, Jobset)>,
    /// Builds by output path or job name, newest first.
    pub builds: Vec<i64>,
    /// Builds by derivation path, newest first.
    pub builds_by_drv: Vec<i64>,
}

/// Fewest characters a trigram index can look up.
const TRIGRAM: usize = 3;

/// `lower(column) LIKE pattern ESCAPE '\'`: case-insensitive on both
/// backends (PostgreSQL's `LIKE` is not), with `_` escaped.
fn contains(column: Expr, query: &SearchQuery) -> Expr {
    Expr::expr(Func::lower(column)).like(LikeExpr::new(query.contains_pattern().to_lowercase()).escape('\\'))
}

impl Db {
    pub async fn search(&self, query: &SearchQuery, limit: u64) -> DbResult<SearchResults> {
        let projects = project::Entity::find()
            .filter(
                contains(Expr::col(project::Column::Name), query)
                    .or(contains(Expr::col(project::Column::DisplayName), query))
                    .or(contains(Expr::col(project::Column::Description), query)),
            )
            .order_by_asc(project::Column::Name)
            .limit(limit)
            .all(self.read())
            .await?;
        let jobsets: Vec<(Jobset, Option<Project>)> = jobset::Entity::find()
            .find_also_related(project::Entity)
            .filter(
                contains(Expr::col((jobset::Entity, jobset::Column::Name)), query)
                    .or(contains(Expr::col((jobset::Entity, jobset::Column::Description)), query)),
            )
            .order_by_asc(jobset::Column::Name)
            .limit(limit)
            .all(self.read())
            .await?;
        let jobsets = jobsets.into_iter().filter_map(|(j, p)| p.map(|p| (p, j))).collect();
        let (builds, builds_by_drv) = match self.backend() {
            DbBackend::Postgres => self.search_builds_postgres(query, limit).await?,
            _ => self.search_builds_sqlite(query, limit).await?,
        };
        Ok(SearchResults { projects, jobsets, builds, builds_by_drv })
    }

    /// Through the trigram indexes `ILIKE` uses. A build's outputs may
    /// all match (`-dev`, `-doc`): a few more rows than shown are asked
    /// for, and the `UNION` keeps each build once.
    async fn search_builds_postgres(&self, query: &SearchQuery, limit: u64) -> DbResult<(Vec<i64>, Vec<i64>)> {
        let pattern = query.contains_pattern();
        let limit = limit as i64;
        let builds = "(SELECT build_id AS id FROM build_outputs WHERE path ILIKE $1 ORDER BY build_id DESC LIMIT $3) \
                      UNION (SELECT id FROM builds WHERE job ILIKE $1 ORDER BY id DESC LIMIT $2) \
                      ORDER BY id DESC LIMIT $2";
        let by_drv = "SELECT id FROM builds WHERE drv_path ILIKE $1 ORDER BY id DESC LIMIT $2";
        let values = || [pattern.clone().into(), limit.into(), (limit * 4).into()];
        let (builds, by_drv) = tokio::try_join!(
            self.found(Statement::from_sql_and_values(DbBackend::Postgres, builds, values())),
            self.found(Statement::from_sql_and_values(DbBackend::Postgres, by_drv, values()[..2].to_vec())),
        )?;
        Ok((builds, by_drv))
    }

    /// Through the FTS5 table `build_search` (one row per build: `names`
    /// and `drv`, base names only): the query's part after its last `/`
    /// is looked up as a phrase of trigrams, which is a substring match;
    /// a query with a `/` is then checked against the whole paths.
    async fn search_builds_sqlite(&self, query: &SearchQuery, limit: u64) -> DbResult<(Vec<i64>, Vec<i64>)> {
        let pattern = query.contains_pattern();
        let limit = limit as i64;
        let term = query.base_name();
        let whole_query = term.len() == query.as_str().len();
        let (builds, by_drv) = if term.len() >= TRIGRAM {
            // The term holds letters, digits and `_-.` only (`SearchQuery`):
            // quoted, it is one FTS5 phrase and no query syntax.
            let phrase = |column: &str| format!("{{{column}}} : \"{term}\"");
            let builds = format!(
                "SELECT s.rowid AS id FROM build_search s WHERE build_search MATCH ?1 {} ORDER BY s.rowid DESC LIMIT ?2",
                if whole_query {
                    String::new()
                } else {
                    "AND EXISTS (SELECT 1 FROM build_outputs o WHERE o.build_id = s.rowid AND o.path LIKE ?3 ESCAPE '\\')"
                        .to_owned()
                }
            );
            let by_drv = format!(
                "SELECT s.rowid AS id FROM build_search s WHERE build_search MATCH ?1 {} ORDER BY s.rowid DESC LIMIT ?2",
                if whole_query {
                    String::new()
                } else {
                    "AND EXISTS (SELECT 1 FROM builds b WHERE b.id = s.rowid AND b.drv_path LIKE ?3 ESCAPE '\\')"
                        .to_owned()
                }
            );
            let values = |column: &str| {
                let mut values = vec![phrase(column).into(), limit.into()];
                if !whole_query {
                    values.push(pattern.clone().into());
                }
                values
            };
            (
                Statement::from_sql_and_values(DbBackend::Sqlite, builds, values("names")),
                Statement::from_sql_and_values(DbBackend::Sqlite, by_drv, values("drv")),
            )
        } else {
            // Too short for the index, so common that the newest builds
            // hold enough matches.
            let builds = "SELECT b.id FROM builds b WHERE b.job LIKE ?1 ESCAPE '\\' \
                          OR EXISTS (SELECT 1 FROM build_outputs o WHERE o.build_id = b.id AND o.path LIKE ?1 ESCAPE '\\') \
                          ORDER BY b.id DESC LIMIT ?2";
            let by_drv = "SELECT id FROM builds WHERE drv_path LIKE ?1 ESCAPE '\\' ORDER BY id DESC LIMIT ?2";
            let values = || vec![pattern.clone().into(), limit.into()];
            (
                Statement::from_sql_and_values(DbBackend::Sqlite, builds, values()),
                Statement::from_sql_and_values(DbBackend::Sqlite, by_drv, values()),
            )
        };
        Ok((self.found(builds).await?, self.found(by_drv).await?))
    }

    /// The `id` column of a query's rows.
    async fn found(&self, statement: Statement) -> DbResult<Vec<i64>> {
        let rows = self.read().query_all_raw(statement).await?;
        Ok(rows.iter().map(|row| row.try_get("", "id")).collect::<Result<_, _>>()?)
    }
}
