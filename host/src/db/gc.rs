//! What the GC roots keep, read as Hydra's `hydra-update-gc-roots` reads
//! it: queued and running builds; builds marked keep; every build of the
//! unfinished and newest `keepnr` finished evaluations of each jobset; the
//! newest successful build of every job of those; and whether a build's
//! outputs were collected.

use std::collections::{BTreeSet, HashMap, HashSet};

use sea_orm::sea_query::{Expr, Order, Query};
use sea_orm::{ColumnTrait, EntityTrait, ExprTrait, QueryFilter, QueryOrder, QuerySelect};

use super::entities::{build, build_output, jobset, jobset_eval, jobset_eval_member, project};
use super::per_job::JobBound;
use super::{Db, DbResult, INSERT_CHUNK};
use crate::domain::BuildStatus;

/// The codes of builds whose outputs exist.
const WITH_OUTPUTS: [i32; 2] = [BuildStatus::Succeeded as i32, BuildStatus::FailedWithOutput as i32];

/// A jobset disabled and hidden this long keeps nothing (Hydra's rule).
const FORGOTTEN_AFTER_SECS: i64 = 7 * 24 * 3600;

/// One build the roots keep something of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptBuild {
    pub id: i64,
    pub finished: bool,
    pub status: Option<i32>,
    pub drv_path: String,
    pub outputs: Vec<String>,
    /// Its derivation is kept too, so that it can be built again (queued
    /// builds, and the builds of kept evaluations).
    pub keep_drv: bool,
}

impl KeptBuild {
    /// What it roots: its outputs when they should exist (queued builds'
    /// outputs too, rooted before they are built), its derivation when
    /// it may be built again.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        let outputs = !self.finished
            || self.status.and_then(|code| BuildStatus::try_from(code).ok()).is_some_and(BuildStatus::has_outputs);
        let drv = self.keep_drv.then_some(self.drv_path.as_str());
        self.outputs.iter().map(String::as_str).filter(move |_| outputs).chain(drv)
    }
}

impl Db {
    /// Every build the roots keep, each once; `releases` are the builds of
    /// the newest release of every release set (computed by plugins).
    pub async fn gc_kept_builds(&self, now: i64, releases: &[i64]) -> DbResult<Vec<KeptBuild>> {
        let mut kept: HashMap<i64, bool> = HashMap::new();
        let mut add = |ids: Vec<i64>, keep_drv: bool| {
            for id in ids {
                *kept.entry(id).or_default() |= keep_drv;
            }
        };
        // Queued and running builds: outputs and derivation.
        add(self.build_ids_where(build::Column::Finished.eq(false)).await?, true);
        // Builds marked keep.
        add(self.build_ids_where(build::Column::Keep.eq(true).and(build::Column::Finished.eq(true))).await?, false);
        add(releases.to_vec(), false);
        // Per jobset: its kept evaluations, and the newest successful build of their jobs.
        let forgotten_before = now - FORGOTTEN_AFTER_SECS;
        let jobsets: Vec<(i64, i32, i32, bool, bool, Option<i64>)> = jobset::Entity::find()
            .select_only()
            .columns([jobset::Column::Id, jobset::Column::KeepNr, jobset::Column::Enabled, jobset::Column::Hidden])
            .column_as(project::Column::Hidden, "project_hidden")
            .column(jobset::Column::LastCheckedTime)
            .inner_join(project::Entity)
            .into_tuple()
            .all(self.read())
            .await?;
        for (jobset_id, keep_nr, enabled, hidden, project_hidden, last_checked) in jobsets {
            if enabled == 0 && (hidden || project_hidden) && last_checked.unwrap_or(0) < forgotten_before {
                continue;
            }
            let evals = self.gc_evals(jobset_id, keep_nr).await?;
            if evals.is_empty() {
                continue;
            }
            let members: Vec<i64> = jobset_eval_member::Entity::find()
                .select_only()
                .column(jobset_eval_member::Column::BuildId)
                .distinct()
                .filter(jobset_eval_member::Column::EvalId.is_in(evals.iter().copied()))
                .into_tuple()
                .all(self.read())
                .await?;
            add(members.clone(), true);
            add(self.newest_successful_of_jobs(jobset_id, &members).await?, false);
        }
        let ids: Vec<i64> = kept.keys().copied().collect();
        let mut builds = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(INSERT_CHUNK) {
            let rows: Vec<(i64, bool, Option<i32>, String)> = build::Entity::find()
                .select_only()
                .columns([
                    build::Column::Id,
                    build::Column::Finished,
                    build::Column::BuildStatus,
                    build::Column::DrvPath,
                ])
                .filter(build::Column::Id.is_in(chunk.iter().copied()))
                .into_tuple()
                .all(self.read())
                .await?;
            let mut outputs = self.outputs_of(chunk).await?;
            for (id, finished, status, drv_path) in rows {
                // Hydra keeps the derivations of failures only; kept here for
                // every build of a kept evaluation, so that any of them can be
                // restarted even if its outputs were collected (Nix's
                // keep-derivations keeps most of them anyway).
                let keep_drv = kept[&id];
                let outputs = outputs.remove(&id).unwrap_or_default().into_iter().map(|(_, path)| path).collect();
                builds.push(KeptBuild { id, finished, status, drv_path, outputs, keep_drv });
            }
        }
        builds.sort_by_key(|b| b.id);
        Ok(builds)
    }

    async fn build_ids_where(&self, condition: impl sea_orm::sea_query::IntoCondition) -> DbResult<Vec<i64>> {
        Ok(build::Entity::find()
            .select_only()
            .column(build::Column::Id)
            .filter(condition)
            .into_tuple()
            .all(self.read())
            .await?)
    }

    /// A jobset's evaluations that keep their builds: those with an
    /// unfinished build, and the newest `keep_nr` finished ones that had
    /// new builds.
    async fn gc_evals(&self, jobset_id: i64, keep_nr: i32) -> DbResult<BTreeSet<i64>> {
        let mut evals: BTreeSet<i64> = jobset_eval::Entity::find()
            .select_only()
            .column(jobset_eval::Column::Id)
            .filter(jobset_eval::Column::JobsetId.eq(jobset_id))
            .filter(super::latest::eval_is_finished().not())
            .into_tuple::<i64>()
            .all(self.read())
            .await?
            .into_iter()
            .collect();
        if keep_nr > 0 {
            let finished: Vec<i64> = jobset_eval::Entity::find()
                .select_only()
                .column(jobset_eval::Column::Id)
                .filter(jobset_eval::Column::JobsetId.eq(jobset_id))
                .filter(jobset_eval::Column::HasNewBuilds.eq(true))
                .filter(super::latest::eval_is_finished())
                .order_by_desc(jobset_eval::Column::Id)
                .limit(keep_nr as u64)
                .into_tuple()
                .all(self.read())
                .await?;
            evals.extend(finished);
        }
        Ok(evals)
    }

    /// The newest successful build (or failed with output) of each job of
    /// `builds` in a jobset: what `latest` points to.
    async fn newest_successful_of_jobs(&self, jobset_id: i64, builds: &[i64]) -> DbResult<Vec<i64>> {
        let mut jobs: BTreeSet<String> = BTreeSet::new();
        for chunk in builds.chunks(INSERT_CHUNK) {
            let names: Vec<String> = build::Entity::find()
                .select_only()
                .column(build::Column::Job)
                .distinct()
                .filter(build::Column::Id.is_in(chunk.iter().copied()))
                .into_tuple()
                .all(self.read())
                .await?;
            jobs.extend(names);
        }
        let jobs: Vec<String> = jobs.into_iter().collect();
        // Most often a job's newest build or the one before: a short walk
        // back through its builds each.
        let newest_successful = |job: Expr, _up_to: Expr| {
            Query::select()
                .column(build::Column::Id)
                .from(build::Entity)
                .and_where(build::Column::JobsetId.eq(jobset_id))
                .and_where(Expr::col((build::Entity, build::Column::Job)).eq(job))
                .and_where(build::Column::Finished.eq(true))
                .and_where(build::Column::BuildStatus.is_in(WITH_OUTPUTS))
                .and_where(build::Column::OutputsCollected.eq(false))
                .order_by(build::Column::Id, Order::Desc)
                .limit(1)
                .to_owned()
        };
        let jobs: Vec<JobBound> = jobs.iter().map(|job| JobBound { job, up_to: i64::MAX }).collect();
        let rows = self.each_job(&jobs, newest_successful).await?;
        Ok(rows.iter().map(|row| row.try_get("", "id")).collect::<Result<_, _>>()?)
    }

    /// Finished builds with outputs (successes, failures with output)
    /// below `before` (all when `None`), newest first, not yet known to be
    /// collected: (id, output paths).
    pub async fn builds_with_outputs_before(
        &self,
        before: Option<i64>,
        limit: u64,
    ) -> DbResult<Vec<(i64, Vec<String>)>> {
        let mut query = build::Entity::find()
            .select_only()
            .column(build::Column::Id)
            .filter(build::Column::Finished.eq(true))
            .filter(build::Column::BuildStatus.is_in(WITH_OUTPUTS))
            .filter(build::Column::OutputsCollected.eq(false));
        if let Some(before) = before {
            query = query.filter(build::Column::Id.lt(before));
        }
        let ids: Vec<i64> = query.order_by_desc(build::Column::Id).limit(limit).into_tuple().all(self.read()).await?;
        let mut outputs = self.outputs_of(&ids).await?;
        Ok(ids
            .into_iter()
            .map(|id| (id, outputs.remove(&id).unwrap_or_default().into_iter().map(|(_, p)| p).collect()))
            .collect())
    }

    /// Marks builds whose outputs are gone from the store — unless they were
    /// restarted since they were looked at.
    pub async fn set_outputs_collected(&self, ids: &[i64]) -> DbResult<()> {
        let txn = self.begin_write().await?;
        for chunk in ids.chunks(INSERT_CHUNK) {
            build::Entity::update_many()
                .col_expr(build::Column::OutputsCollected, Expr::value(true))
                .filter(build::Column::Id.is_in(chunk.iter().copied()))
                .filter(build::Column::Finished.eq(true))
                .filter(build::Column::OutputsCollected.eq(false))
                .exec(&txn)
                .await?;
        }
        txn.commit().await?;
        self.builds.invalidate(ids.iter().copied());
        Ok(())
    }

    /// Of `paths` (outputs or derivations), those of builds of these
    /// projects.
    pub async fn project_paths_among(&self, projects: &[i64], paths: &[String]) -> DbResult<HashSet<String>> {
        let jobsets: Vec<i64> = jobset::Entity::find()
            .select_only()
            .column(jobset::Column::Id)
            .filter(jobset::Column::ProjectId.is_in(projects.iter().copied()))
            .into_tuple()
            .all(self.read())
            .await?;
        let mut found = HashSet::new();
        if jobsets.is_empty() {
            return Ok(found);
        }
        for chunk in paths.chunks(INSERT_CHUNK) {
            let outputs: Vec<String> = build_output::Entity::find()
                .select_only()
                .column(build_output::Column::Path)
                .inner_join(build::Entity)
                .filter(build::Column::JobsetId.is_in(jobsets.iter().copied()))
                .filter(build_output::Column::Path.is_in(chunk.iter().cloned()))
                .into_tuple()
                .all(self.read())
                .await?;
            let derivations: Vec<String> = build::Entity::find()
                .select_only()
                .column(build::Column::DrvPath)
                .filter(build::Column::JobsetId.is_in(jobsets.iter().copied()))
                .filter(build::Column::DrvPath.is_in(chunk.iter().cloned()))
                .into_tuple()
                .all(self.read())
                .await?;
            found.extend(outputs);
            found.extend(derivations);
        }
        Ok(found)
    }

    /// The derivation of each of these builds.
    pub async fn drv_paths_of(&self, ids: &[i64]) -> DbResult<Vec<(i64, String)>> {
        let mut found = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(INSERT_CHUNK) {
            let rows: Vec<(i64, String)> = build::Entity::find()
                .select_only()
                .columns([build::Column::Id, build::Column::DrvPath])
                .filter(build::Column::Id.is_in(chunk.iter().copied()))
                .into_tuple()
                .all(self.read())
                .await?;
            found.extend(rows);
        }
        Ok(found)
    }

    /// Every output path of the given builds.
    pub async fn output_paths_of(&self, ids: &[i64]) -> DbResult<Vec<String>> {
        let mut paths = Vec::new();
        for chunk in ids.chunks(INSERT_CHUNK) {
            let rows: Vec<String> = build_output::Entity::find()
                .select_only()
                .column(build_output::Column::Path)
                .filter(build_output::Column::BuildId.is_in(chunk.iter().copied()))
                .into_tuple()
                .all(self.read())
                .await?;
            paths.extend(rows);
        }
        Ok(paths)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::test_support::{eval, finish, fresh_db, job};
    use crate::db::{Expect, JobsetSettings, ProjectSettings};

    /// Hydra's rules, case by case: the newest `keepnr` finished
    /// evaluations with new builds and every unfinished one; the newest
    /// success of their jobs; builds marked keep; release members; and
    /// nothing of a jobset disabled and hidden for over a week.
    #[tokio::test]
    async fn kept_builds_follow_hydras_rules() {
        let (_dir, db) = fresh_db().await;
        let (project, _) = db.save_project("p", &ProjectSettings::new("p"), Expect::Anything).await.unwrap();
        let kept_two = JobsetSettings { keep_nr: 2, ..JobsetSettings::new("main") };
        let (main, _) = db.save_jobset(&project, "main", &kept_two, Expect::Anything).await.unwrap();
        let forgotten = JobsetSettings { keep_nr: 5, enabled: 0, hidden: true, ..JobsetSettings::new("old") };
        let (old, _) = db.save_jobset(&project, "old", &forgotten, Expect::Anything).await.unwrap();

        let e1 = eval(&db, main.id, 10, vec![job("x", "1")]).await;
        let e2 = eval(&db, main.id, 20, vec![job("f", "2"), job("x", "2")]).await;
        let e3 = eval(&db, main.id, 30, vec![job("x", "3")]).await;
        let e4 = eval(&db, main.id, 40, vec![job("x", "4")]).await;
        let (x1, x2, f2, x3, x4) = (e1[0], e2[1], e2[0], e3[0], e4[0]);
        for id in [x1, x2, x3] {
            finish(&db, id, BuildStatus::Succeeded).await;
        }
        finish(&db, f2, BuildStatus::Failed).await;
        // x4 stays queued. x1 is kept by hand.
        db.set_keep(x1, true).await.unwrap();
        // The forgotten jobset built y, which a release names, and z.
        let y = eval(&db, old.id, 1, vec![job("y", "1")]).await[0];
        finish(&db, y, BuildStatus::Succeeded).await;
        let z = eval(&db, old.id, 2, vec![job("z", "1")]).await[0];
        finish(&db, z, BuildStatus::Succeeded).await;

        let today: Vec<i64> = db.gc_kept_builds(crate::db::now(), &[]).await.unwrap().iter().map(|b| b.id).collect();
        assert!(today.contains(&z), "checked today: not forgotten yet: {today:?}");
        // Eight days on: the old jobset was last checked over a week ago.
        let week_later = crate::db::now() + 8 * 24 * 3600;
        let kept = db.gc_kept_builds(week_later, &[y]).await.unwrap();
        let by_id: HashMap<i64, &KeptBuild> = kept.iter().map(|b| (b.id, b)).collect();
        let mut ids: Vec<i64> = by_id.keys().copied().collect();
        ids.sort();
        let mut expected = vec![x1, x2, f2, x3, x4, y];
        expected.sort();
        assert_eq!(ids, expected, "z (forgotten jobset) and nothing else is dropped: {kept:#?}");
        // Queued: outputs and derivation. Kept by hand, or a release member:
        // outputs only. A failure of a kept evaluation: its derivation only.
        let paths = |id: i64| by_id[&id].paths().map(str::to_owned).collect::<Vec<_>>();
        assert_eq!(paths(x4).len(), 2);
        assert!(paths(x1).iter().all(|p| !p.ends_with(".drv")), "{:?}", paths(x1));
        assert!(paths(y).iter().all(|p| !p.ends_with(".drv")));
        assert_eq!(paths(f2).len(), 1);
        assert!(paths(f2)[0].ends_with(".drv"));
        assert!(paths(x3).iter().any(|p| p.ends_with(".drv")), "kept evaluations keep derivations to restart");

        // keepnr = 0 keeps no evaluation, but queued builds and the rest stay.
        let none = JobsetSettings { keep_nr: 0, ..kept_two.clone() };
        db.save_jobset(&project, "main", &none, Expect::Anything).await.unwrap();
        let kept: Vec<i64> = db.gc_kept_builds(crate::db::now(), &[]).await.unwrap().iter().map(|b| b.id).collect();
        assert!(kept.contains(&x4) && kept.contains(&x1) && kept.contains(&x3), "{kept:?}");
        assert!(!kept.contains(&x2) && !kept.contains(&f2), "{kept:?}");

        // Collected outputs: found newest first, never for a restarted build.
        let swept = db.builds_with_outputs_before(None, 2).await.unwrap();
        assert_eq!(swept.iter().map(|(id, _)| *id).collect::<Vec<_>>(), [z, y]);
        let next = db.builds_with_outputs_before(Some(y), 10).await.unwrap();
        assert_eq!(next.iter().map(|(id, _)| *id).collect::<Vec<_>>(), [x3, x2, x1]);
        db.restart_builds(&[x2]).await.unwrap();
        db.set_outputs_collected(&[x1, x2]).await.unwrap();
        assert!(db.build(x1).await.unwrap().unwrap().outputs_collected);
        assert!(!db.build(x2).await.unwrap().unwrap().outputs_collected, "restarted meanwhile");
        // Built again: its outputs are there again.
        db.restart_builds(&[x1]).await.unwrap();
        finish(&db, x1, BuildStatus::Succeeded).await;
        assert!(!db.build(x1).await.unwrap().unwrap().outputs_collected);
    }
}
