//! A few of each job's newest builds, for many jobs at once: one backward
//! walk of the `(jobset_id, job, id)` index per job, stopped at its
//! `LIMIT`, where one statement over all the jobs (`GROUP BY job`, or
//! `job IN (…)` ordered) reads every build each job ever had — at ten
//! million builds a hundred times more rows.

use sea_orm::sea_query::{Alias, Asterisk, Query, SelectStatement, UnionType};
use sea_orm::{ConnectionTrait, QueryResult};

use super::{Db, DbResult};

/// Jobs per statement: SQLite allows 500 terms in a compound select, and a
/// query per job cost as much again on SQLite (measured on the job matrix:
/// 105 ms at a million builds, against 39–56 ms).
const JOBS_PER_STATEMENT: usize = 100;

impl Db {
    /// The rows of `per_job(item)` for every item, each a select of one
    /// job's builds with an `ORDER BY id DESC LIMIT n`: `UNION ALL`
    /// statements of 100 of them.
    pub(super) async fn each_job<I>(
        &self,
        items: &[I],
        per_job: impl Fn(&I) -> SelectStatement,
    ) -> DbResult<Vec<QueryResult>> {
        // A subquery each, so that each keeps its own ORDER BY and LIMIT.
        let term =
            |item: &I| Query::select().column(Asterisk).from_subquery(per_job(item), Alias::new("newest")).to_owned();
        let mut rows = Vec::new();
        for chunk in items.chunks(JOBS_PER_STATEMENT) {
            let mut statement = term(&chunk[0]);
            for item in &chunk[1..] {
                statement.union(UnionType::All, term(item));
            }
            rows.extend(self.read().query_all_raw(self.backend().build(&statement)).await?);
        }
        Ok(rows)
    }
}
