//! `/search`, as Hydra's: projects and jobsets whose name or description
//! contains the query; builds whose output paths or job name contain it
//! (`builds`) and whose derivation path does (`buildsdrv`), the newest
//! first — so that a hash prefix of a store path finds its build.
//!
//! The builds are found through a substring index (migration
//! `m20261203_000012_search`): `pg_trgm` GIN indexes that PostgreSQL's
//! `ILIKE '%q%'` uses (job names through the jobsets' distinct names,
//! `m20261203_000017_job_names`), or SQLite's FTS5 table `build_search` with the
//! trigram tokenizer, whose rows hold the paths' base names (no store
//! directory) and are written just after an evaluation is recorded
//! (migration 20): the builds not in it yet are scanned. SQLite's job
//! names are matched in memory (migration 21, `job_names.rs`). A query of fewer than three
//! characters has no trigram: it is matched against the newest builds
//! only (`RECENT_SCANNED`), so that no request of an anonymous visitor
//! reads every build.

use sea_orm::sea_query::{Alias, Expr, ExprTrait, Func, LikeExpr, Order, Query, SelectStatement, UnionType};
use sea_orm::{ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Statement};

use super::entities::{build, build_output, jobset, project};
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

/// How many of the newest builds a query too short for the index is
/// matched against.
const RECENT_SCANNED: i64 = 100_000;

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
        // What each backend's index looks up: PostgreSQL's, the whole
        // pattern; SQLite's, the part after the last `/`.
        let (indexed, backend) = match self.backend() {
            DbBackend::Postgres => (query.as_str(), DbBackend::Postgres),
            backend => (query.base_name(), backend),
        };
        let (builds, builds_by_drv) = if indexed.len() < TRIGRAM {
            self.search_recent_builds(query, limit).await?
        } else if backend == DbBackend::Postgres {
            self.search_builds_postgres(query, limit).await?
        } else {
            // The newest builds may not be in the index yet (migration 20):
            // those after its cursor are scanned, the newest
            // `RECENT_SCANNED` at most (an anonymous search stays bounded
            // work if indexing falls behind). The cursor may move between
            // the two statements: a build then found by both is kept once.
            let unindexed = Expr::cust(format!(
                "(SELECT max(({}), coalesce((SELECT max(id) FROM builds), 0) - {RECENT_SCANNED}))",
                super::search_index::INDEXED_UP_TO
            ));
            let ((scanned, scanned_by_drv), (indexed, indexed_by_drv)) = tokio::try_join!(
                self.search_builds_after(query, unindexed, limit),
                self.search_builds_sqlite(query, limit)
            )?;
            (newest_of(scanned, indexed, limit), newest_of(scanned_by_drv, indexed_by_drv, limit))
        };
        Ok(SearchResults { projects, jobsets, builds, builds_by_drv })
    }

    /// Through the trigram indexes `ILIKE` uses: on output and derivation
    /// paths, and on the jobsets' job names (migration 17), whose builds
    /// are then read by `(jobset_id, job)`; for a name that most builds
    /// have, PostgreSQL walks the newest builds instead and checks their
    /// names. A build's outputs may all match (`-dev`, `-doc`): a few more
    /// rows than shown are asked for, and the `UNION` keeps each build once.
    async fn search_builds_postgres(&self, query: &SearchQuery, limit: u64) -> DbResult<(Vec<i64>, Vec<i64>)> {
        let pattern = query.contains_pattern();
        let limit = limit as i64;
        let builds = "(SELECT build_id AS id FROM build_outputs WHERE path ILIKE $1 ORDER BY build_id DESC LIMIT $3) \
                      UNION (SELECT id FROM builds WHERE (jobset_id, job) IN \
                               (SELECT jobset_id, name FROM jobset_jobs WHERE name ILIKE $1) \
                             ORDER BY id DESC LIMIT $2) \
                      ORDER BY id DESC LIMIT $2";
        let by_drv = "SELECT id FROM builds WHERE drv_path ILIKE $1 ORDER BY id DESC LIMIT $2";
        let values = || [pattern.clone().into(), limit.into(), (limit * 4).into()];
        let (builds, by_drv) = tokio::try_join!(
            self.found(Statement::from_sql_and_values(DbBackend::Postgres, builds, values())),
            self.found(Statement::from_sql_and_values(DbBackend::Postgres, by_drv, values()[..2].to_vec())),
        )?;
        Ok((builds, by_drv))
    }

    /// Through the FTS5 table `build_search` (one row per build: `outputs`
    /// and `drv`, base names only): the query's part after its last `/`
    /// is looked up as a phrase of trigrams, which is a substring match;
    /// a query with a `/` is then checked against the whole paths. Job
    /// names are matched in memory (`job_names.rs`).
    async fn search_builds_sqlite(&self, query: &SearchQuery, limit: u64) -> DbResult<(Vec<i64>, Vec<i64>)> {
        let term = query.base_name();
        let whole_query = term.len() == query.as_str().len();
        // The newest matches of `column` in the FTS row, checked against
        // the whole `paths` for a query with a `/`.
        let newest = |column: &str, paths: &str| {
            // The term holds letters, digits and `_-.` only (`SearchQuery`):
            // quoted, it is one FTS5 phrase and no query syntax.
            let phrase = format!("{{{column}}} : \"{term}\"");
            let rowid = || Expr::cust("s.rowid");
            let mut select = Query::select()
                .expr_as(rowid(), Alias::new("id"))
                .from_as(Alias::new("build_search"), Alias::new("s"))
                .and_where(Expr::cust_with_values("build_search MATCH ?", [phrase]))
                .order_by_expr(rowid(), Order::Desc)
                .limit(limit)
                .to_owned();
            if !whole_query {
                let check = format!("EXISTS ({paths} LIKE ? ESCAPE '\\')");
                select.and_where(Expr::cust_with_values(check, [query.contains_pattern()]));
            }
            select
        };
        let both = both_lists(
            newest("outputs", "SELECT 1 FROM build_outputs o WHERE o.build_id = s.rowid AND o.path"),
            newest("drv", "SELECT 1 FROM builds b WHERE b.id = s.rowid AND b.drv_path"),
        );
        let ((by_outputs, by_drv), by_job) = tokio::try_join!(
            self.found_both(DbBackend::Sqlite.build(&both)),
            self.builds_by_job_name(query.as_str(), limit),
        )?;
        Ok((newest_of(by_outputs, by_job, limit), by_drv))
    }

    /// A query too short for a trigram index, matched against the newest
    /// `RECENT_SCANNED` builds: bounded work whatever it is (such a short
    /// query, when it is meant, matches among them at once).
    async fn search_recent_builds(&self, query: &SearchQuery, limit: u64) -> DbResult<(Vec<i64>, Vec<i64>)> {
        let newest: Option<i64> = build::Entity::find()
            .select_only()
            .column_as(build::Column::Id.max(), "id")
            .into_tuple::<Option<i64>>()
            .one(self.read())
            .await?
            .flatten();
        self.search_builds_after(query, Expr::val(newest.unwrap_or(0) - RECENT_SCANNED), limit).await
    }

    /// The builds after `floor` (a build id) matching the query, newest
    /// first, by a scan of their names and paths (no index).
    async fn search_builds_after(
        &self,
        query: &SearchQuery,
        floor: Expr,
        limit: u64,
    ) -> DbResult<(Vec<i64>, Vec<i64>)> {
        let newest = |matches: Expr| {
            Query::select()
                .column((build::Entity, build::Column::Id))
                .from(build::Entity)
                .and_where(Expr::col((build::Entity, build::Column::Id)).gt(floor.clone()))
                .and_where(matches)
                .order_by((build::Entity, build::Column::Id), Order::Desc)
                .limit(limit)
                .to_owned()
        };
        let output_matches = Query::select()
            .expr(Expr::val(1))
            .from(build_output::Entity)
            .and_where(
                Expr::col((build_output::Entity, build_output::Column::BuildId))
                    .equals((build::Entity, build::Column::Id)),
            )
            .and_where(contains(Expr::col((build_output::Entity, build_output::Column::Path)), query))
            .to_owned();
        let builds =
            newest(contains(Expr::col((build::Entity, build::Column::Job)), query).or(Expr::exists(output_matches)));
        let by_drv = newest(contains(Expr::col((build::Entity, build::Column::DrvPath)), query));
        self.found_both(self.backend().build(&both_lists(builds, by_drv))).await
    }

    /// The two lists of build ids of a [`both_lists`] statement, each
    /// newest first.
    async fn found_both(&self, statement: Statement) -> DbResult<(Vec<i64>, Vec<i64>)> {
        let (mut first, mut second) = (Vec::new(), Vec::new());
        for row in self.read().query_all_raw(statement).await? {
            let list: i32 = row.try_get("", "list")?;
            let id: i64 = row.try_get("", "id")?;
            if list == 0 { first.push(id) } else { second.push(id) }
        }
        first.sort_unstable_by(|a, b| b.cmp(a));
        second.sort_unstable_by(|a, b| b.cmp(a));
        Ok((first, second))
    }

    /// The `id` column of a query's rows.
    async fn found(&self, statement: Statement) -> DbResult<Vec<i64>> {
        let rows = self.read().query_all_raw(statement).await?;
        Ok(rows.iter().map(|row| row.try_get("", "id")).collect::<Result<_, _>>()?)
    }
}

/// Two selects of build ids (`id`) as one statement whose rows say which
/// list each is in (`list`: 0 or 1): one query for two lists (a page makes
/// a handful of queries, whatever it shows). Each is a subquery of its
/// own, so that each keeps its own order and limit.
fn both_lists(first: SelectStatement, second: SelectStatement) -> SelectStatement {
    let list = |select: SelectStatement, list: &'static str, name: &str| {
        Query::select()
            .expr_as(Expr::cust(list), Alias::new("list"))
            .column(Alias::new("id"))
            .from_subquery(select, Alias::new(name))
            .to_owned()
    };
    let mut both = list(first, "0", "list0");
    both.union(UnionType::All, list(second, "1", "list1"));
    both
}

/// The newest `limit` of two lists of build ids, each once.
pub(super) fn newest_of(mut ids: Vec<i64>, more: Vec<i64>, limit: u64) -> Vec<i64> {
    ids.extend(more);
    ids.sort_unstable_by(|a, b| b.cmp(a));
    ids.dedup();
    ids.truncate(limit as usize);
    ids
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{eval, fresh_db, job, main_jobset};
    use crate::domain::SearchQuery;

    /// Through the index once the rows are written: a piece of an output's
    /// name, of a job's name, and a store path's start with its directory
    /// (checked against the whole paths); each list apart.
    #[tokio::test]
    async fn indexed_builds_by_outputs_jobs_and_whole_paths() {
        let (_dir, db) = fresh_db().await;
        let jobset = main_jobset(&db).await;
        let built = eval(&db, jobset.id, 1, vec![job("alpha", "round"), job("beta", "square")]).await;
        db.merge_search_index().await.unwrap();
        let found = |text: &str| {
            let db = db.clone();
            let query = SearchQuery::parse(text).unwrap();
            async move { db.search(&query, 10).await.unwrap() }
        };
        assert_eq!(found("squar").await.builds, [built[1]]);
        assert_eq!(found("ALPH").await.builds, [built[0]]);
        let store = crate::nix::store_dir();
        let whole = found(&format!("{store}/0000")).await;
        assert_eq!((whole.builds.len(), whole.builds_by_drv.len()), (2, 2), "{whole:?}");
        assert!(found(&format!("/elsewhere/{}", "0000")).await.builds.is_empty());
    }
}
