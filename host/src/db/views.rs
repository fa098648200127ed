//! Queries of the web pages over many builds: a jobset's job-by-evaluation
//! matrix, an evaluation's builds by status, and the comparison of two
//! evaluations. Each is a fixed number of queries, paged where a page
//! shows rows, so that a jobset of 20,000 jobs costs what one of 20 does.

use std::collections::HashMap;

use sea_orm::sea_query::{Alias, Expr, ExprTrait, Order, Query, SelectStatement};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, JoinType, QueryFilter, QueryOrder, QueryResult, QuerySelect,
    RelationTrait, Statement,
};

use super::entities::{build, jobset, jobset_eval_member, project};
use super::per_job::JobBound;
use super::{BuildCounts, Db, DbResult, JobsetEval};
use crate::domain::BuildStatus;

/// A build as a matrix cell or list row shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildCell {
    pub id: i64,
    pub job: String,
    pub finished: bool,
    /// `None` while queued or running.
    pub status: Option<i32>,
}

impl BuildCell {
    pub fn succeeded(&self) -> bool {
        self.finished && self.status == Some(BuildStatus::Succeeded.code())
    }
}

/// A page of the job-by-evaluation matrix of a jobset.
#[derive(Debug, Clone, Default)]
pub struct JobMatrix {
    /// The jobs of this page, sorted by name.
    pub jobs: Vec<String>,
    /// How many jobs the newest evaluation has.
    pub total_jobs: u64,
    /// (evaluation, job) to its build.
    pub cells: HashMap<(i64, String), BuildCell>,
}

/// A build as a list across jobsets shows it (search, queue, releases).
/// Read by column name: the query aliases its columns to these fields.
#[derive(Debug, Clone, PartialEq, Eq, sea_orm::FromQueryResult)]
pub struct BuildRow {
    pub id: i64,
    pub project: String,
    pub jobset: String,
    pub job: String,
    pub nix_name: String,
    pub system: String,
    pub finished: bool,
    pub status: Option<i32>,
    /// When it was queued.
    pub timestamp: i64,
    pub stop_time: Option<i64>,
    pub project_hidden: bool,
    pub jobset_hidden: bool,
}

impl BuildRow {
    /// Its project or jobset is hidden (not listed to anonymous readers).
    pub fn hidden(&self) -> bool {
        self.project_hidden || self.jobset_hidden
    }
}

/// Which builds of an evaluation a page lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusFilter {
    All,
    Queued,
    Succeeded,
    Failed,
}

/// What changed from one evaluation to the next, by job name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EvalComparison {
    pub new_jobs: Vec<BuildCell>,
    pub removed_jobs: Vec<BuildCell>,
    pub newly_failing: Vec<BuildCell>,
    pub newly_succeeding: Vec<BuildCell>,
    /// Jobs whose status did not change.
    pub unchanged: u64,
}

/// `EXISTS`-subquery: the build (of the outer query) is a member of
/// evaluation `eval_id` (one lookup in the members' primary key).
///
/// Its `OFFSET` keeps PostgreSQL from turning it into a join driven by the
/// evaluation's members, which its planner prefers when it underestimates
/// them (measured at ten million builds: 424 ms for a page of 50 with the
/// join, 31 ms walking the jobset's builds in job order and looking each
/// up). SQLite runs an `EXISTS` as written; it wants a `LIMIT` before an
/// `OFFSET`.
fn member_of(eval_id: i64) -> SelectStatement {
    Query::select()
        .expr(Expr::val(1))
        .from(jobset_eval_member::Entity)
        .and_where(Expr::col((jobset_eval_member::Entity, jobset_eval_member::Column::EvalId)).eq(eval_id))
        .and_where(
            Expr::col((jobset_eval_member::Entity, jobset_eval_member::Column::BuildId))
                .equals((build::Entity, build::Column::Id)),
        )
        .limit(1)
        .offset(0)
        .to_owned()
}

fn cell((id, job, finished, status): (i64, String, bool, Option<i32>)) -> BuildCell {
    BuildCell { id, job, finished, status }
}

impl Db {
    /// Builds as rows with their project and jobset names, in the order of
    /// `ids` (missing ones left out): one query per 500 builds.
    pub async fn build_rows(&self, ids: &[i64]) -> DbResult<Vec<BuildRow>> {
        let mut found = HashMap::with_capacity(ids.len());
        for chunk in ids.chunks(super::INSERT_CHUNK) {
            let rows = build::Entity::find()
                .select_only()
                .columns([build::Column::Id, build::Column::Job, build::Column::NixName, build::Column::System])
                .columns([build::Column::Finished, build::Column::Timestamp, build::Column::StopTime])
                .column_as(build::Column::BuildStatus, "status")
                .column_as(project::Column::Name, "project")
                .column_as(jobset::Column::Name, "jobset")
                .column_as(project::Column::Hidden, "project_hidden")
                .column_as(jobset::Column::Hidden, "jobset_hidden")
                .join(JoinType::InnerJoin, build::Relation::Jobset.def())
                .join(JoinType::InnerJoin, jobset::Relation::Project.def())
                .filter(build::Column::Id.is_in(chunk.iter().copied()))
                .into_model::<BuildRow>()
                .all(self.read())
                .await?;
            found.extend(rows.into_iter().map(|row| (row.id, row)));
        }
        Ok(ids.iter().filter_map(|id| found.remove(id)).collect())
    }

    /// The builds of an evaluation as cells, through its members.
    fn eval_cells_query(eval_id: i64) -> sea_orm::Select<build::Entity> {
        build::Entity::find()
            .select_only()
            .columns([build::Column::Id, build::Column::Job, build::Column::Finished, build::Column::BuildStatus])
            .inner_join(jobset_eval_member::Entity)
            .filter(jobset_eval_member::Column::EvalId.eq(eval_id))
    }

    /// The newest build of each of `drv_paths` that has one (a build's
    /// dependencies that are jobs too): one query per 500 derivations.
    pub async fn builds_of_derivations(&self, drv_paths: &[String]) -> DbResult<HashMap<String, BuildCell>> {
        let mut found = HashMap::new();
        for chunk in drv_paths.chunks(super::INSERT_CHUNK) {
            let rows: Vec<(i64, String, bool, Option<i32>, String)> = build::Entity::find()
                .select_only()
                .columns([build::Column::Id, build::Column::Job, build::Column::Finished, build::Column::BuildStatus])
                .column(build::Column::DrvPath)
                .filter(build::Column::DrvPath.is_in(chunk.iter().cloned()))
                .order_by_desc(build::Column::Id)
                .into_tuple()
                .all(self.read())
                .await?;
            for (id, job, finished, status, drv) in rows {
                found.entry(drv).or_insert_with(|| cell((id, job, finished, status)));
            }
        }
        Ok(found)
    }

    /// A page of an evaluation's builds (by job name) with a status filter,
    /// and how many builds pass the filter (from the evaluation's counts).
    ///
    /// Unfiltered, see [`Db::eval_page_in_job_order`]. A status filter may
    /// match few of the jobs, so a filtered page reads the evaluation's
    /// members instead.
    pub async fn eval_cells(
        &self,
        eval: &JobsetEval,
        filter: StatusFilter,
        offset: u64,
        limit: u64,
    ) -> DbResult<(Vec<BuildCell>, u64)> {
        let counts = BuildCounts::of(eval);
        let (query, total) = match filter {
            StatusFilter::All => return Ok((self.eval_page_in_job_order(eval, offset, limit).await?, counts.total)),
            StatusFilter::Queued => {
                (Self::eval_cells_query(eval.id).filter(build::Column::Finished.eq(false)), counts.scheduled)
            }
            StatusFilter::Succeeded => (
                Self::eval_cells_query(eval.id)
                    .filter(build::Column::Finished.eq(true))
                    .filter(build::Column::BuildStatus.eq(BuildStatus::Succeeded.code())),
                counts.succeeded,
            ),
            StatusFilter::Failed => (
                Self::eval_cells_query(eval.id)
                    .filter(build::Column::Finished.eq(true))
                    .filter(build::Column::BuildStatus.ne(BuildStatus::Succeeded.code())),
                counts.failed,
            ),
        };
        let rows: Vec<(i64, String, bool, Option<i32>)> = query
            .order_by_asc(build::Column::Job)
            .order_by_asc(build::Column::Id)
            .offset(offset)
            .limit(limit)
            .into_tuple()
            .all(self.read())
            .await?;
        Ok((rows.into_iter().map(cell).collect(), total))
    }

    /// An evaluation's builds in job order, `limit` from `offset`: the
    /// jobset's jobs walked in order (one step down the `(jobset_id, job,
    /// id)` index each, a recursive query) and, for each, its newest build
    /// up to the evaluation's newest member, kept if it is a member. That
    /// is the job's build in the evaluation when the evaluation has the job
    /// (see [`Db::job_matrix`]). The work is the page's jobs, not the
    /// evaluation's size (1.3–2.1 s for the first page of an evaluation of
    /// 100,000 builds when its members were sorted) nor the jobs' histories
    /// (35 ms at ten million builds walking every build of each job).
    async fn eval_page_in_job_order(&self, eval: &JobsetEval, offset: u64, limit: u64) -> DbResult<Vec<BuildCell>> {
        // Past the evaluation's end nothing is walked (an anonymous visitor
        // chooses the offset).
        if limit == 0 || offset >= u64::try_from(eval.nr_builds).unwrap_or(0) {
            return Ok(Vec::new());
        }
        let backend = self.backend();
        let p = |n: u8| if backend == DbBackend::Postgres { format!("${n}") } else { format!("?{n}") };
        // SQLite stops a recursion at a LIMIT of its own; PostgreSQL has
        // none there, and computes the recursion only as far as the
        // outer LIMIT reads.
        let recursion_limit = if backend == DbBackend::Postgres { String::new() } else { format!("LIMIT {}", p(4)) };
        let sql = format!(
            "WITH RECURSIVE jobs(job) AS (\
               SELECT job FROM (SELECT job FROM builds WHERE jobset_id = {jobset} AND job > {after} \
                                ORDER BY job LIMIT 1) AS first_job \
               UNION ALL \
               SELECT (SELECT b.job FROM builds b WHERE b.jobset_id = {jobset} AND b.job > jobs.job \
                       ORDER BY b.job LIMIT 1) \
                 FROM jobs WHERE jobs.job IS NOT NULL {recursion_limit}) \
             SELECT jobs.job AS walked, c.id, c.job, c.finished, c.build_status, \
                    EXISTS (SELECT 1 FROM jobset_eval_members m WHERE m.eval_id = {eval} AND m.build_id = c.id) \
                      AS member \
               FROM jobs LEFT JOIN builds c ON c.id = (\
                      SELECT b.id FROM builds b WHERE b.jobset_id = {jobset} AND b.job = jobs.job \
                         AND b.id <= (SELECT max(build_id) FROM jobset_eval_members WHERE eval_id = {eval}) \
                       ORDER BY b.id DESC LIMIT 1) \
              WHERE jobs.job IS NOT NULL LIMIT {walk}",
            jobset = p(1),
            after = p(2),
            eval = p(3),
            walk = p(4),
        );
        type Row = (String, Option<i64>, Option<String>, Option<bool>, Option<i32>, bool);
        let mut page = Vec::new();
        let mut to_skip = offset;
        let mut after = String::new();
        loop {
            // Every job walked is most often a member: ask for what the
            // page still needs, and again if some were not.
            let walk = (to_skip + limit - page.len() as u64) as i64;
            let values = [eval.jobset_id.into(), after.clone().into(), eval.id.into(), walk.into()];
            let rows = self.read().query_all_raw(Statement::from_sql_and_values(backend, sql.clone(), values)).await?;
            let walked = rows.len() as i64;
            for row in rows {
                let (job_walked, id, job, finished, status, member): Row = QueryResult::try_get_many_by_index(&row)?;
                after = job_walked;
                let (Some(id), Some(job), Some(finished), true) = (id, job, finished, member) else { continue };
                if to_skip > 0 {
                    to_skip -= 1;
                } else {
                    page.push(BuildCell { id, job, finished, status });
                    if page.len() as u64 == limit {
                        return Ok(page);
                    }
                }
            }
            if walked < walk {
                return Ok(page);
            }
        }
    }

    /// The jobs of `evals[0]` (the newest), `limit` from `offset` by name,
    /// with their builds in each of `evals` (the newest of one jobset, in
    /// order): the page, then for each job its newest `evals.len()` builds
    /// up to its build in `evals[0]` (by `(jobset_id, job, id)`), then which
    /// of those are in which of `evals` (by build). Never a join over the
    /// evaluations' members, which a planner picks when it underestimates
    /// them (measured: 238 ms at ten million builds), nor every build of
    /// the jobs (253 ms there: a job has a build per change in its history).
    ///
    /// Why so few builds suffice: an evaluation reuses a job's build only
    /// from the evaluation just before it (`record_eval`), so a job's build
    /// in an evaluation is the newest of the job made up to it; between the
    /// oldest evaluation shown and the newest, each evaluation made at most
    /// one more.
    pub async fn job_matrix(&self, evals: &[JobsetEval], offset: u64, limit: u64) -> DbResult<JobMatrix> {
        let Some(newest) = evals.first() else {
            return Ok(JobMatrix::default());
        };
        let (page, total_jobs) = self.eval_cells(newest, StatusFilter::All, offset, limit).await?;
        let newest_builds_of = |job: Expr, up_to: Expr| {
            Query::select()
                .columns([build::Column::Id, build::Column::Job, build::Column::Finished, build::Column::BuildStatus])
                .from(build::Entity)
                .and_where(build::Column::JobsetId.eq(newest.jobset_id))
                .and_where(Expr::col((build::Entity, build::Column::Job)).eq(job))
                .and_where(Expr::col((build::Entity, build::Column::Id)).lte(up_to))
                .order_by(build::Column::Id, Order::Desc)
                .limit(evals.len() as u64)
                .to_owned()
        };
        let bounds: Vec<JobBound> = page.iter().map(|c| JobBound { job: &c.job, up_to: c.id }).collect();
        let mut builds: HashMap<i64, BuildCell> = HashMap::new();
        for row in self.each_job(&bounds, newest_builds_of).await? {
            let found = cell(row.try_get_many("", &["id", "job", "finished", "build_status"].map(String::from))?);
            builds.insert(found.id, found);
        }
        let jobs: Vec<String> = page.into_iter().map(|c| c.job).collect();
        let ids: Vec<i64> = builds.keys().copied().collect();
        let mut cells = HashMap::new();
        // Looked up by build (the members' index on `build_id`), the
        // evaluations a filter: written `+eval_id`, which no index serves,
        // because SQLite otherwise reads every member of the ten
        // evaluations through the primary key (measured: 212 ms at a
        // million builds) and PostgreSQL, asked one evaluation at a time,
        // does the same (1.9 s at ten million).
        let eval_ids: Vec<i64> = evals.iter().map(|e| e.id).collect();
        for chunk in ids.chunks(super::INSERT_CHUNK) {
            let memberships: Vec<(i64, i64)> = jobset_eval_member::Entity::find()
                .select_only()
                .columns([jobset_eval_member::Column::EvalId, jobset_eval_member::Column::BuildId])
                .filter(jobset_eval_member::Column::BuildId.is_in(chunk.iter().copied()))
                .filter(Expr::cust(r#"+"jobset_eval_members"."eval_id""#).is_in(eval_ids.iter().copied()))
                .into_tuple()
                .all(self.read())
                .await?;
            for (eval, build) in memberships {
                if let Some(cell) = builds.get(&build) {
                    cells.insert((eval, cell.job.clone()), cell.clone());
                }
            }
        }
        Ok(JobMatrix { jobs, total_jobs, cells })
    }

    /// The newest `limit` builds of a job, newest first: one query.
    pub async fn job_history(&self, jobset_id: i64, job: &str, limit: u64) -> DbResult<Vec<super::Build>> {
        Ok(build::Entity::find()
            .filter(build::Column::JobsetId.eq(jobset_id))
            .filter(build::Column::Job.eq(job))
            .order_by_desc(build::Column::Id)
            .limit(limit)
            .all(self.read())
            .await?)
    }

    /// How `eval` differs from `previous`, the evaluation before it.
    ///
    /// Only the builds new in `eval` can differ: a job whose build was
    /// carried over from `previous` (a member not `is_new`, as recorded)
    /// has the same build in both. So the work is that of the new builds
    /// and the previous builds of their jobs (a few queries by index),
    /// plus, only when `previous` had jobs that are gone, one pass over
    /// its members to name them.
    pub async fn compare_evals(&self, eval: &JobsetEval, previous: &JobsetEval) -> DbResult<EvalComparison> {
        if eval.previous_eval_id == Some(previous.id) {
            return self.compare_with_recorded_predecessors(eval, previous).await;
        }
        // The bare column, as the partial index on new members says it (a
        // bound `= true` would not let the planner use it).
        let new_builds: Vec<BuildCell> = Self::eval_cells_query(eval.id)
            .filter(Expr::col((jobset_eval_member::Entity, jobset_eval_member::Column::IsNew)))
            .order_by_asc(build::Column::Job)
            .into_tuple()
            .all(self.read())
            .await?
            .into_iter()
            .map(cell)
            .collect();
        // The build a job had in `previous` is its newest build in the
        // jobset before the new one (builds are made in evaluation order),
        // if `previous` has it: one backward step in `(jobset_id, job, id)`
        // and one look in the members' key per job, whatever the jobset's
        // history.
        let mut before: HashMap<String, BuildCell> = HashMap::new();
        let new_ids: Vec<i64> = new_builds.iter().map(|b| b.id).collect();
        for chunk in new_ids.chunks(super::INSERT_CHUNK) {
            let earlier = Alias::new("earlier");
            let newest_earlier = Query::select()
                .expr(Expr::col((earlier.clone(), build::Column::Id)).max())
                .from_as(build::Entity, earlier.clone())
                .and_where(Expr::col((earlier.clone(), build::Column::JobsetId)).eq(previous.jobset_id))
                .and_where(Expr::col((earlier.clone(), build::Column::Job)).equals((build::Entity, build::Column::Job)))
                .and_where(Expr::col((earlier, build::Column::Id)).lt(Expr::col((build::Entity, build::Column::Id))))
                .to_owned();
            let candidates: Vec<Option<i64>> = build::Entity::find()
                .select_only()
                .expr(Expr::SubQuery(None, Box::new(newest_earlier.into())))
                .filter(build::Column::Id.is_in(chunk.iter().copied()))
                .into_tuple()
                .all(self.read())
                .await?;
            let candidates: Vec<i64> = candidates.into_iter().flatten().collect();
            let rows: Vec<(i64, String, bool, Option<i32>)> = build::Entity::find()
                .select_only()
                .columns([build::Column::Id, build::Column::Job, build::Column::Finished, build::Column::BuildStatus])
                .filter(build::Column::Id.is_in(candidates))
                .filter(Expr::exists(member_of(previous.id)))
                .into_tuple()
                .all(self.read())
                .await?;
            before.extend(rows.into_iter().map(cell).map(|c| (c.job.clone(), c)));
        }
        let carried = u64::try_from(eval.nr_builds).unwrap_or(0).saturating_sub(new_builds.len() as u64);
        let replaced = before.len() as u64;
        let mut comparison = EvalComparison { unchanged: carried, ..EvalComparison::default() };
        for build in new_builds {
            match before.remove(&build.job) {
                None => comparison.new_jobs.push(build),
                Some(old) if !build.finished || !old.finished || old.succeeded() == build.succeeded() => {
                    comparison.unchanged += 1
                }
                Some(old) if old.succeeded() => comparison.newly_failing.push(build),
                Some(_) => comparison.newly_succeeding.push(build),
            }
        }
        if u64::try_from(previous.nr_builds).unwrap_or(0) > carried + replaced {
            comparison.removed_jobs = self.removed_jobs(eval, previous).await?;
        }
        Ok(comparison)
    }

    /// [`Db::compare_evals`] for an evaluation recorded with its
    /// predecessors (migration 15): the members that the page lists (new
    /// jobs, and those whose outcome differs from their predecessor's, as
    /// the triggers of migration 16 keep it) read from their own index,
    /// joined to their builds by primary key; the unchanged are what
    /// remains of the evaluation.
    async fn compare_with_recorded_predecessors(
        &self,
        eval: &JobsetEval,
        previous: &JobsetEval,
    ) -> DbResult<EvalComparison> {
        let member = |column| Expr::col((jobset_eval_member::Entity, column));
        let query = build::Entity::find()
            .select_only()
            .columns([build::Column::Id, build::Column::Job, build::Column::Finished, build::Column::BuildStatus])
            .expr(member(jobset_eval_member::Column::PreviousBuildId))
            .inner_join(jobset_eval_member::Entity)
            .filter(member(jobset_eval_member::Column::EvalId).eq(eval.id))
            // Word for word the predicate of the partial index
            // `idx_jobset_eval_members_changes`.
            .filter(Expr::cust(
                r#"("jobset_eval_members"."is_new" AND ("jobset_eval_members"."previous_build_id" IS NULL OR "jobset_eval_members"."outcome_changed"))"#,
            ))
            .order_by_asc(build::Column::Job);
        // A new member's build as a cell's columns, and its predecessor's id.
        type Row = (i64, String, bool, Option<i32>, Option<i64>);
        let rows: Vec<Row> = query.into_tuple().all(self.read()).await?;
        let mut comparison = EvalComparison::default();
        for (id, job, finished, status, predecessor) in rows {
            let build = BuildCell { id, job, finished, status };
            // A job with a predecessor is listed only when both finished
            // with outcomes that differ.
            match predecessor {
                None => comparison.new_jobs.push(build),
                Some(_) if build.succeeded() => comparison.newly_succeeding.push(build),
                Some(_) => comparison.newly_failing.push(build),
            }
        }
        let listed = comparison.new_jobs.len() + comparison.newly_failing.len() + comparison.newly_succeeding.len();
        let members = u64::try_from(eval.nr_builds).unwrap_or(0);
        comparison.unchanged = members.saturating_sub(listed as u64);
        // Every job of `eval` but the new ones had a build in `previous`:
        // if `previous` had more jobs than that, some are gone.
        let kept_jobs = members.saturating_sub(comparison.new_jobs.len() as u64);
        if u64::try_from(previous.nr_builds).unwrap_or(0) > kept_jobs {
            comparison.removed_jobs = self.removed_jobs(eval, previous).await?;
        }
        Ok(comparison)
    }

    /// The builds of `previous` whose jobs `eval` no longer has.
    async fn removed_jobs(&self, eval: &JobsetEval, previous: &JobsetEval) -> DbResult<Vec<BuildCell>> {
        let later = Alias::new("later");
        let same_job_later = Query::select()
            .expr(Expr::val(1))
            .from_as(build::Entity, later.clone())
            .inner_join(
                jobset_eval_member::Entity,
                Expr::col((jobset_eval_member::Entity, jobset_eval_member::Column::BuildId))
                    .equals((later.clone(), build::Column::Id)),
            )
            .and_where(Expr::col((jobset_eval_member::Entity, jobset_eval_member::Column::EvalId)).eq(eval.id))
            .and_where(Expr::col((later.clone(), build::Column::JobsetId)).eq(eval.jobset_id))
            .and_where(Expr::col((later, build::Column::Job)).equals((build::Entity, build::Column::Job)))
            .to_owned();
        let rows: Vec<(i64, String, bool, Option<i32>)> = Self::eval_cells_query(previous.id)
            .filter(Expr::not_exists(same_job_later))
            .order_by_asc(build::Column::Job)
            .into_tuple()
            .all(self.read())
            .await?;
        Ok(rows.into_iter().map(cell).collect())
    }
}

#[cfg(test)]
mod tests {
    use crate::db::test_support::{eval, finish, fresh_db, job, main_jobset};
    use crate::db::{BuildCounts, Db, JobsetEval, StatusFilter};
    use crate::domain::BuildStatus;

    fn jobs(cells: &[super::BuildCell]) -> Vec<&str> {
        cells.iter().map(|c| c.job.as_str()).collect()
    }

    async fn counts(db: &Db, eval_id: i64) -> BuildCounts {
        BuildCounts::of(&db.eval(eval_id).await.unwrap().unwrap())
    }

    /// Whether a new build's outcome differs from its predecessor's
    /// follows both builds, whichever finishes first, and their restarts.
    #[tokio::test]
    async fn changed_outcomes_follow_both_builds_of_a_pair() {
        let (_dir, db) = fresh_db().await;
        let jobset = main_jobset(&db).await;
        let first = eval(&db, jobset.id, 1, vec![job("x", "1"), job("y", "1")]).await;
        let first_eval = db.last_eval(jobset.id).await.unwrap().unwrap();
        let second = eval(&db, jobset.id, 2, vec![job("x", "2"), job("y", "2")]).await;
        let ((x1, y1), (x2, y2)) = ((first[0], first[1]), (second[0], second[1]));
        let compared = async || {
            let second_eval = db.last_eval(jobset.id).await.unwrap().unwrap();
            assert_eq!(second_eval.previous_eval_id, Some(first_eval.id));
            let compared = db.compare_evals(&second_eval, &first_eval).await.unwrap();
            assert!(compared.new_jobs.is_empty() && compared.removed_jobs.is_empty(), "{compared:?}");
            let listed = compared.newly_failing.len() + compared.newly_succeeding.len();
            assert_eq!(compared.unchanged as usize, 2 - listed);
            (jobs(&compared.newly_failing).join(" "), jobs(&compared.newly_succeeding).join(" "))
        };

        // x: the new build first, failing; then its predecessor, succeeding.
        finish(&db, x2, BuildStatus::Failed).await;
        assert_eq!(compared().await, ("".into(), "".into()), "the predecessor has not finished");
        finish(&db, x1, BuildStatus::Succeeded).await;
        assert_eq!(compared().await, ("x".into(), "".into()));
        // y: the predecessor first.
        finish(&db, y1, BuildStatus::Failed).await;
        finish(&db, y2, BuildStatus::Succeeded).await;
        assert_eq!(compared().await, ("x".into(), "y".into()));
        // A restart of either build of a pair takes it off the list, and
        // its next outcome decides again.
        db.restart_builds(&[x2, y1]).await.unwrap();
        assert_eq!(compared().await, ("".into(), "".into()));
        finish(&db, x2, BuildStatus::Succeeded).await;
        finish(&db, y1, BuildStatus::Failed).await;
        assert_eq!(compared().await, ("".into(), "y".into()));
    }

    /// Two evaluations compared from the builds new in the second; the
    /// counts on each evaluation follow its builds as they finish, are
    /// cancelled or restarted; an evaluation's page is in job order.
    #[tokio::test]
    async fn comparison_and_counts_follow_the_builds() {
        let (_dir, db) = fresh_db().await;
        let jobset = main_jobset(&db).await;
        let first = eval(&db, jobset.id, 1, vec![job("d", "1"), job("a", "1"), job("b", "1"), job("c", "1")]).await;
        let first_eval = db.last_eval(jobset.id).await.unwrap().unwrap();
        assert_eq!(counts(&db, first_eval.id).await, BuildCounts { scheduled: 4, succeeded: 0, failed: 0, total: 4 });
        let (d, a, b, c) = (first[0], first[1], first[2], first[3]);
        for (id, status) in [(a, BuildStatus::Succeeded), (b, BuildStatus::Succeeded), (c, BuildStatus::Failed)] {
            finish(&db, id, status).await;
        }
        finish(&db, d, BuildStatus::Succeeded).await;
        assert_eq!(counts(&db, first_eval.id).await, BuildCounts { scheduled: 0, succeeded: 3, failed: 1, total: 4 });

        // a is carried over; b and c have new derivations; d is gone; e is new.
        let second = eval(&db, jobset.id, 2, vec![job("a", "1"), job("b", "2"), job("c", "2"), job("e", "2")]).await;
        let second_eval = db.last_eval(jobset.id).await.unwrap().unwrap();
        assert_eq!(second.len(), 3, "a is carried over");
        assert_eq!(counts(&db, second_eval.id).await, BuildCounts { scheduled: 3, succeeded: 1, failed: 0, total: 4 });
        let (new_b, new_c) = (second[0], second[1]);
        finish(&db, new_b, BuildStatus::Failed).await;
        finish(&db, new_c, BuildStatus::Succeeded).await;

        let recorded = db.eval(second_eval.id).await.unwrap().unwrap();
        assert_eq!(recorded.previous_eval_id, Some(first_eval.id), "recorded with what it was told apart from");
        // Recorded with its predecessors, and as an evaluation recorded
        // before migration 15 is compared, by searching for them.
        let unrecorded = JobsetEval { previous_eval_id: None, ..recorded.clone() };
        for second in [recorded, unrecorded] {
            let compared = db.compare_evals(&second, &first_eval).await.unwrap();
            let recorded = second.previous_eval_id.is_some();
            assert_eq!(jobs(&compared.newly_failing), ["b"], "recorded: {recorded}");
            assert_eq!(jobs(&compared.newly_succeeding), ["c"], "recorded: {recorded}");
            assert_eq!(jobs(&compared.new_jobs), ["e"], "recorded: {recorded}");
            assert_eq!(jobs(&compared.removed_jobs), ["d"], "recorded: {recorded}");
            assert_eq!(compared.unchanged, 1, "a; recorded: {recorded}");
        }

        // The matrix: each job's build in each evaluation, carried or new;
        // none where the evaluation does not have the job.
        let second_eval = db.eval(second_eval.id).await.unwrap().unwrap();
        let matrix = db.job_matrix(&[second_eval.clone(), first_eval.clone()], 0, 10).await.unwrap();
        assert_eq!((matrix.jobs.clone(), matrix.total_jobs), (vec!["a".into(), "b".into(), "c".into(), "e".into()], 4));
        let in_matrix = |eval: i64, job: &str| matrix.cells.get(&(eval, job.to_owned())).map(|c| c.id);
        let (first_id, second_id) = (first_eval.id, second_eval.id);
        assert_eq!([in_matrix(first_id, "a"), in_matrix(second_id, "a")], [Some(a), Some(a)]);
        assert_eq!([in_matrix(first_id, "b"), in_matrix(second_id, "b")], [Some(b), Some(new_b)]);
        assert_eq!([in_matrix(first_id, "c"), in_matrix(second_id, "c")], [Some(c), Some(new_c)]);
        assert_eq!([in_matrix(first_id, "e"), in_matrix(second_id, "e")], [None, Some(second[2])]);
        assert_eq!(matrix.cells.len(), 7, "d is not a job of the newest evaluation: not on the page");

        // The page: in job order; the filters' totals from the counts.
        let (page, total) = db.eval_cells(&second_eval, StatusFilter::All, 0, 3).await.unwrap();
        assert_eq!((jobs(&page), total), (vec!["a", "b", "c"], 4));
        let (page, total) = db.eval_cells(&second_eval, StatusFilter::All, 3, 3).await.unwrap();
        assert_eq!((jobs(&page), total), (vec!["e"], 4));
        let (page, total) = db.eval_cells(&second_eval, StatusFilter::All, 4, 3).await.unwrap();
        assert_eq!((jobs(&page), total), (vec![], 4), "past the end");
        // d, a job of the jobset but not of this evaluation, is walked past.
        let (page, _) = db.eval_cells(&second_eval, StatusFilter::All, 0, 4).await.unwrap();
        assert_eq!(jobs(&page), ["a", "b", "c", "e"]);
        // The older evaluation shows its own builds, not the newer ones of
        // the same jobs.
        let (page, _) = db.eval_cells(&first_eval, StatusFilter::All, 0, 10).await.unwrap();
        assert_eq!(page.iter().map(|c| c.id).collect::<Vec<_>>(), [a, b, c, d]);
        let (page, total) = db.eval_cells(&second_eval, StatusFilter::Failed, 0, 10).await.unwrap();
        assert_eq!((jobs(&page), total), (vec!["b"], 1));
        let (page, total) = db.eval_cells(&second_eval, StatusFilter::Queued, 0, 10).await.unwrap();
        assert_eq!((jobs(&page), total), (vec!["e"], 1));

        // A restart takes a (shared) build back to the queue in both
        // evaluations it belongs to.
        db.restart_builds(&[a]).await.unwrap();
        assert_eq!(counts(&db, first_eval.id).await, BuildCounts { scheduled: 1, succeeded: 2, failed: 1, total: 4 });
        assert_eq!(counts(&db, second_eval.id).await, BuildCounts { scheduled: 2, succeeded: 1, failed: 1, total: 4 });
        assert!(db.latest_finished_eval(jobset.id).await.unwrap().is_none(), "neither is finished now");
        finish(&db, a, BuildStatus::Failed).await;
        let second_counts = counts(&db, second_eval.id).await;
        assert_eq!(second_counts, BuildCounts { scheduled: 1, succeeded: 1, failed: 2, total: 4 });
        assert_eq!(db.latest_finished_eval(jobset.id).await.unwrap().map(|e| e.id), Some(first_eval.id));

        // b once more with a new derivation, failing again: a new build
        // with the outcome of its predecessor is not a change.
        let third = eval(&db, jobset.id, 3, vec![job("a", "1"), job("b", "3"), job("c", "2"), job("e", "2")]).await;
        assert_eq!(third.len(), 1, "only b is new");
        finish(&db, third[0], BuildStatus::Failed).await;
        let recorded = db.last_eval(jobset.id).await.unwrap().unwrap();
        let unrecorded = JobsetEval { previous_eval_id: None, ..recorded.clone() };
        for third_eval in [recorded, unrecorded] {
            let compared = db.compare_evals(&third_eval, &second_eval).await.unwrap();
            let changed = [&compared.newly_failing, &compared.newly_succeeding, &compared.new_jobs];
            assert!(changed.iter().all(|list| list.is_empty()) && compared.removed_jobs.is_empty(), "{compared:?}");
            assert_eq!(compared.unchanged, 4);
        }
    }
}
