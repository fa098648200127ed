//! What the GC roots keep, read as Hydra's `hydra-update-gc-roots` reads
//! it: queued and running builds; builds marked keep; every build of the
//! unfinished and newest `keepnr` finished evaluations of each jobset; the
//! newest successful build of every job of those; and whether a build's
//! outputs were collected.

use std::collections::{BTreeSet, HashMap};

use sea_orm::sea_query::{Expr, Query};
use sea_orm::{ColumnTrait, EntityTrait, ExprTrait, QueryFilter, QueryOrder, QuerySelect};

use super::entities::{build, build_output, jobset, jobset_eval, jobset_eval_member, project};
use super::{Db, DbResult, INSERT_CHUNK, status};

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
        let outputs = !self.finished || matches!(self.status, Some(status::SUCCESS | status::FAILED_WITH_OUTPUT));
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
                .columns([build::Column::Id, build::Column::Finished, build::Column::BuildStatus, build::Column::DrvPath])
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
        let unfinished_member = Query::select()
            .expr(Expr::val(1))
            .from(jobset_eval_member::Entity)
            .inner_join(
                build::Entity,
                Expr::col((build::Entity, build::Column::Id))
                    .equals((jobset_eval_member::Entity, jobset_eval_member::Column::BuildId)),
            )
            .and_where(
                Expr::col((jobset_eval_member::Entity, jobset_eval_member::Column::EvalId))
                    .equals((jobset_eval::Entity, jobset_eval::Column::Id)),
            )
            .and_where(Expr::col((build::Entity, build::Column::Finished)).eq(false))
            .to_owned();
        let mut evals: BTreeSet<i64> = jobset_eval::Entity::find()
            .select_only()
            .column(jobset_eval::Column::Id)
            .filter(jobset_eval::Column::JobsetId.eq(jobset_id))
            .filter(Expr::exists(unfinished_member.clone()))
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
                .filter(Expr::not_exists(unfinished_member))
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
        let mut newest = Vec::new();
        for chunk in jobs.chunks(INSERT_CHUNK) {
            let ids: Vec<Option<i64>> = build::Entity::find()
                .select_only()
                .column_as(build::Column::Id.max(), "id")
                .filter(build::Column::JobsetId.eq(jobset_id))
                .filter(build::Column::Job.is_in(chunk.iter().cloned()))
                .filter(build::Column::Finished.eq(true))
                .filter(build::Column::BuildStatus.is_in([status::SUCCESS, status::FAILED_WITH_OUTPUT]))
                .filter(build::Column::OutputsCollected.eq(false))
                .group_by(build::Column::Job)
                .into_tuple()
                .all(self.read())
                .await?;
            newest.extend(ids.into_iter().flatten());
        }
        Ok(newest)
    }

    /// Successful builds (or failed with output) after `after`, in id
    /// order, not yet known to be collected: (id, output paths).
    pub async fn builds_with_outputs_after(&self, after: i64, limit: u64) -> DbResult<Vec<(i64, Vec<String>)>> {
        let ids: Vec<i64> = build::Entity::find()
            .select_only()
            .column(build::Column::Id)
            .filter(build::Column::Id.gt(after))
            .filter(build::Column::Finished.eq(true))
            .filter(build::Column::BuildStatus.is_in([status::SUCCESS, status::FAILED_WITH_OUTPUT]))
            .filter(build::Column::OutputsCollected.eq(false))
            .order_by_asc(build::Column::Id)
            .limit(limit)
            .into_tuple()
            .all(self.read())
            .await?;
        let mut outputs = self.outputs_of(&ids).await?;
        Ok(ids
            .into_iter()
            .map(|id| (id, outputs.remove(&id).unwrap_or_default().into_iter().map(|(_, p)| p).collect()))
            .collect())
    }

    /// Marks builds whose outputs are gone from the store.
    pub async fn set_outputs_collected(&self, ids: &[i64]) -> DbResult<()> {
        for chunk in ids.chunks(INSERT_CHUNK) {
            build::Entity::update_many()
                .col_expr(build::Column::OutputsCollected, Expr::value(true))
                .filter(build::Column::Id.is_in(chunk.iter().copied()))
                .exec(self.write())
                .await?;
        }
        self.builds.invalidate(ids.iter().copied());
        Ok(())
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
