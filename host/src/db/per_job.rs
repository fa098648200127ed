//! A few of each job's newest builds, for many jobs at once: one backward
//! walk of the `(jobset_id, job, id)` index per job, stopped at its
//! `LIMIT`, where one statement over all the jobs (`GROUP BY job`, or
//! `job IN (…)` ordered) reads every build each job ever had — at ten
//! million builds a hundred times more rows.

use sea_orm::sea_query::{Alias, Asterisk, Expr, JoinType, Query, SelectStatement, UnionType};
use sea_orm::{ConnectionTrait, DbBackend, QueryResult};

use super::{Db, DbResult};

/// Jobs per statement on PostgreSQL: a `VALUES` list of them joined
/// `LATERAL` to the per-job query, planned once.
const JOBS_PER_LATERAL: usize = 1000;

/// Jobs per statement on SQLite, which has no `LATERAL`: a `UNION ALL` of
/// the per-job query written out for each (SQLite allows 500 terms in a
/// compound select, and plans them quickly; PostgreSQL took 20 ms to plan
/// 100 of them, more than running them).
const JOBS_PER_UNION: usize = 100;

/// One job to ask about: its name, and the newest build id to consider.
pub(super) struct JobBound<'a> {
    pub job: &'a str,
    pub up_to: i64,
}

impl Db {
    /// The rows of `per_job(job, up_to)` for every job, a select of that
    /// job's builds up to `up_to` with an `ORDER BY id DESC LIMIT n`;
    /// `job` and `up_to` are SQL expressions (a column of the jobs' list,
    /// or a value).
    pub(super) async fn each_job(
        &self,
        jobs: &[JobBound<'_>],
        per_job: impl Fn(Expr, Expr) -> SelectStatement,
    ) -> DbResult<Vec<QueryResult>> {
        let mut rows = Vec::new();
        if self.backend() == DbBackend::Postgres {
            let (list, newest) = (Alias::new("job_list"), Alias::new("newest"));
            for chunk in jobs.chunks(JOBS_PER_LATERAL) {
                let values = chunk.iter().map(|j| (j.job.to_owned(), j.up_to));
                // A `VALUES` list's columns are `column1`, `column2`.
                let job = Expr::col((list.clone(), Alias::new("column1")));
                let up_to = Expr::col((list.clone(), Alias::new("column2")));
                let statement = Query::select()
                    .column((newest.clone(), Asterisk))
                    .from_values(values, list.clone())
                    .join_lateral(JoinType::InnerJoin, per_job(job, up_to), newest.clone(), Expr::val(true))
                    .to_owned();
                rows.extend(self.read().query_all_raw(self.backend().build(&statement)).await?);
            }
            return Ok(rows);
        }
        // A subquery each, so that each keeps its own ORDER BY and LIMIT.
        let term = |j: &JobBound| {
            let one = per_job(Expr::val(j.job), Expr::val(j.up_to));
            Query::select().column(Asterisk).from_subquery(one, Alias::new("newest")).to_owned()
        };
        for chunk in jobs.chunks(JOBS_PER_UNION) {
            let mut statement = term(&chunk[0]);
            for job in &chunk[1..] {
                statement.union(UnionType::All, term(job));
            }
            rows.extend(self.read().query_all_raw(self.backend().build(&statement)).await?);
        }
        Ok(rows)
    }
}
