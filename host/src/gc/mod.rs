//! GC roots: what the server keeps in the Nix store, so that
//! `nix-collect-garbage` is safe to run. Hydra's `hydra-update-gc-roots`
//! is the model (`db/gc.rs` says what is kept):
//!
//! - the outputs and derivation of every queued or running build — rooted
//!   as soon as its evaluation is recorded, before any step runs, so that a
//!   collection during a build (or while outputs are copied back) cannot
//!   delete them;
//! - the outputs of builds marked keep;
//! - every build of each jobset's unfinished and newest `keepnr` finished
//!   evaluations (outputs of successes, and derivations, so that they can
//!   be restarted), and the newest successful build of each of their jobs
//!   (what `latest` points to); a jobset disabled and hidden for more
//!   than a week keeps nothing;
//! - the members of the newest release of every release set (computed by
//!   its plugin; while one cannot be computed, no root of its project's
//!   builds is removed).
//!
//! The roots are one directory Nix scans (`<Nix state>/gcroots/orthrus`, or
//! under `per-user/<user>/` for a server that is not root; `gc.roots_dir`),
//! holding one link per path named by its base name (`links.rs`: nothing
//! else in the directory is touched). A full update adds
//! what is missing and removes what is no longer kept — except links
//! younger than `gc.min_root_age_secs` (a day), as Hydra does, lest an
//! evaluation being recorded lose its roots. It also marks builds whose
//! outputs were collected, so that `latest` skips them and their pages say
//! so, without a store check per request.

mod links;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::Notify;

use crate::config::Config;
use crate::db::Db;
use crate::nix::{Nix, StorePath, store_dir};
use crate::plugins::PluginRuntime;

/// Builds checked for collected outputs per database query.
const SWEEP_BATCH: u64 = 5_000;
/// How long one periodic update may spend looking for collected outputs;
/// the next one goes on from there.
const SWEEP_BUDGET: Duration = Duration::from_secs(30);

/// What a full update would do, or did.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Paths rooted now and kept.
    pub kept: usize,
    /// Paths to root that have no link yet.
    pub add: Vec<StorePath>,
    /// Links no longer wanted.
    pub remove: Vec<PathBuf>,
    /// Links no longer wanted, but too young to remove.
    pub young: usize,
    /// Entries of the directory not made by Orthrus, left alone.
    pub foreign: usize,
    /// Links no longer wanted, held back because the release sets of their
    /// project could not be computed.
    pub held: usize,
    /// Release sets that could not be computed.
    pub problems: Vec<String>,
    /// Every path wanted (rooted once the plan is applied).
    pub wanted: BTreeSet<StorePath>,
    /// When planning began: a link made after it is not removed.
    started: SystemTime,
}

/// Where a sweep for collected outputs goes on: below this build id, or
/// from the newest build again.
pub type SweepCursor = Option<i64>;

/// The server's GC roots.
#[derive(Clone)]
pub struct GcRoots {
    dir: PathBuf,
    db: Db,
    nix: Nix,
    plugins: PluginRuntime,
    min_age: Duration,
    interval: Duration,
    wake: Arc<Notify>,
}

impl std::fmt::Debug for GcRoots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GcRoots").field("dir", &self.dir).field("min_age", &self.min_age).finish_non_exhaustive()
    }
}

impl GcRoots {
    /// The same roots, written through `db` (a role holder's fenced handle).
    pub fn with_db(&self, db: Db) -> GcRoots {
        GcRoots { db, ..self.clone() }
    }

    /// The roots of `config`: its `gc.roots_dir`, else the directory Nix
    /// scans for this user. The directory is made when first needed.
    pub fn new(config: &Config, db: Db, nix: Nix, plugins: PluginRuntime) -> GcRoots {
        GcRoots {
            dir: roots_dir(config),
            db,
            nix,
            plugins,
            min_age: Duration::from_secs(config.gc.min_root_age_secs),
            interval: Duration::from_secs(config.gc.interval_secs),
            wake: Arc::default(),
        }
    }

    /// Makes the directory of roots if it is missing.
    pub fn prepare(&self) -> Result<(), String> {
        std::fs::create_dir_all(&self.dir).map_err(|e| {
            let hint = if self.dir.components().any(|c| c.as_os_str() == "per-user") {
                " (Nix 2.14 and later no longer make gcroots/per-user/USER: make it once, owned by this user, \
                 or set gc.roots_dir to a directory under Nix's gcroots this user may write)"
            } else {
                ""
            };
            format!("cannot create the GC roots {}: {e}{hint}", self.dir.display())
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Roots these paths now (derivations as they are instantiated, a new
    /// evaluation's outputs, a build kept or restarted).
    pub async fn root(&self, paths: &[String]) {
        let paths: Vec<StorePath> = paths.iter().filter_map(|p| StorePath::parse(p).ok()).collect();
        let dir = self.dir.clone();
        if let Ok((failed, Some(e))) = tokio::task::spawn_blocking(move || links::link_all(&dir, &paths)).await {
            tracing::warn!("cannot add {failed} GC roots in {}: {e}", self.dir.display());
        }
    }

    /// Asks for a full update soon (after an evaluation).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// What a full update would do now.
    pub async fn plan(&self) -> Result<Plan, String> {
        let started = SystemTime::now();
        let releases = self.newest_release_members().await.map_err(|e| e.to_string())?;
        let builds = self.db.gc_kept_builds(crate::db::now(), &releases.members).await.map_err(|e| e.to_string())?;
        let mut wanted: BTreeSet<StorePath> =
            builds.iter().flat_map(|b| b.paths()).filter_map(|p| StorePath::parse(p).ok()).collect();
        // Finished builds' outputs that are gone are not rooted (nothing to
        // keep); what a queued build will make is.
        let finished: Vec<StorePath> = builds
            .iter()
            .filter(|b| b.finished)
            .flat_map(|b| b.paths())
            .filter_map(|p| StorePath::parse(p).ok())
            .collect();
        let invalid = self.nix.invalid_paths(&finished).await.map_err(|e| e.to_string())?;
        wanted.retain(|path| !invalid.contains(path));
        let (dir, min_age, for_links) = (self.dir.clone(), self.min_age, wanted.clone());
        let mut on_disk = tokio::task::spawn_blocking(move || links::plan(&dir, &for_links, min_age, started))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("cannot read the GC roots {}: {e}", self.dir.display()))?;
        let mut held = 0;
        if !releases.failed_projects.is_empty() && !on_disk.remove.is_empty() {
            let paths: Vec<String> = on_disk
                .remove
                .iter()
                .filter_map(|link| link.file_name().map(|name| format!("{}/{}", store_dir(), name.to_string_lossy())))
                .collect();
            let theirs =
                self.db.project_paths_among(&releases.failed_projects, &paths).await.map_err(|e| e.to_string())?;
            let before = on_disk.remove.len();
            on_disk.remove.retain(|link| {
                let name = link.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                !theirs.contains(&format!("{}/{name}", store_dir()))
            });
            held = before - on_disk.remove.len();
        }
        Ok(Plan {
            kept: on_disk.kept,
            add: on_disk.add,
            remove: on_disk.remove,
            young: on_disk.young,
            foreign: on_disk.foreign,
            held,
            problems: releases.problems,
            wanted,
            started,
        })
    }

    /// The builds of the newest release of every project's release sets,
    /// and the projects some of whose sets could not be computed.
    async fn newest_release_members(&self) -> crate::db::DbResult<ReleaseMembers> {
        let mut found = ReleaseMembers::default();
        for project in self.db.projects().await? {
            for (name, set) in project.release_sets() {
                match self.plugins.releases(&set.plugin, project.id, &set.settings, 1).await {
                    Ok(releases) => found
                        .members
                        .extend(releases.into_iter().take(1).flat_map(|r| r.members.into_iter().map(|(id, _)| id))),
                    Err(e) => {
                        found.problems.push(format!("release set ‘{name}’ of project ‘{}’: {e}", project.name));
                        found.failed_projects.push(project.id);
                    }
                }
            }
        }
        found.failed_projects.dedup();
        Ok(found)
    }

    /// Does what `plan` says; returns how many links were removed.
    pub async fn apply(&self, plan: &Plan) -> Result<usize, String> {
        let (dir, add, remove, started) = (self.dir.clone(), plan.add.clone(), plan.remove.clone(), plan.started);
        let dir_shown = self.dir.display().to_string();
        tokio::task::spawn_blocking(move || {
            if let (failed, Some(e)) = links::link_all(&dir, &add) {
                return Err(format!("cannot add {failed} GC roots in {dir_shown}: {e}"));
            }
            links::remove_all(&remove, started).map_err(|e| format!("cannot remove GC roots in {dir_shown}: {e}"))
        })
        .await
        .map_err(|e| e.to_string())?
    }

    /// Marks builds whose outputs were collected, newest first (what
    /// `latest` serves), batch after batch until `budget` is spent; paths in
    /// `rooted` are alive and need no check. Returns where the next sweep
    /// goes on and how many builds were found collected.
    pub async fn sweep_collected(
        &self,
        from: SweepCursor,
        rooted: &BTreeSet<StorePath>,
        budget: Duration,
    ) -> Result<(SweepCursor, usize), String> {
        let started = Instant::now();
        let mut cursor = from;
        let mut found = 0;
        loop {
            let builds = self.db.builds_with_outputs_before(cursor, SWEEP_BATCH).await.map_err(|e| e.to_string())?;
            let end = (builds.len() as u64) < SWEEP_BATCH;
            cursor = if end { None } else { builds.last().map(|(id, _)| *id) };
            let unrooted: Vec<(i64, Vec<StorePath>)> = builds
                .into_iter()
                .map(|(id, outputs)| (id, outputs.iter().filter_map(|p| StorePath::parse(p).ok()).collect::<Vec<_>>()))
                .filter(|(_, outputs)| !outputs.iter().all(|p| rooted.contains(p)))
                .collect();
            let paths: Vec<StorePath> = unrooted.iter().flat_map(|(_, outputs)| outputs.iter().cloned()).collect();
            let invalid = self.nix.invalid_paths(&paths).await.map_err(|e| e.to_string())?;
            let collected: Vec<i64> = unrooted
                .iter()
                .filter(|(_, outputs)| outputs.iter().any(|p| invalid.contains(p)))
                .map(|(id, _)| *id)
                .collect();
            found += collected.len();
            if !collected.is_empty() {
                self.db.set_outputs_collected(&collected).await.map_err(|e| e.to_string())?;
            }
            if cursor.is_none() || started.elapsed() >= budget {
                return Ok((cursor, found));
            }
        }
    }

    /// One full update: roots, then collected outputs (for `budget`).
    pub async fn update(&self, sweep: SweepCursor, budget: Duration) -> Result<Update, String> {
        let plan = self.plan().await?;
        // Roots are files, which no transaction fences: not after another
        // process took the maintenance role.
        self.db.check_fence().map_err(|e| e.to_string())?;
        let removed = self.apply(&plan).await?;
        let (sweep, collected) = self.sweep_collected(sweep, &plan.wanted, budget).await?;
        Ok(Update { plan, removed, sweep, collected })
    }

    /// Updates now, then every `gc.interval_secs` and after each
    /// evaluation (at most once a minute).
    pub async fn run(self) {
        let mut sweep = None;
        loop {
            match self.update(sweep, SWEEP_BUDGET).await {
                Ok(update) => {
                    sweep = update.sweep;
                    let plan = &update.plan;
                    for problem in &plan.problems {
                        tracing::warn!(
                            "GC roots: {problem}; the roots of its project's builds stay until it can be computed"
                        );
                    }
                    tracing::info!(
                        kept = plan.kept + plan.add.len(),
                        added = plan.add.len(),
                        removed = update.removed,
                        young = plan.young,
                        held = plan.held,
                        foreign = plan.foreign,
                        collected = update.collected,
                        "GC roots updated in {}",
                        self.dir.display()
                    );
                }
                Err(e) => tracing::warn!("cannot update the GC roots: {e}"),
            }
            let woken = tokio::time::timeout(self.interval, self.wake.notified()).await.is_ok();
            if woken {
                // Evaluations come in bursts: one update for the burst.
                tokio::time::sleep(Duration::from_secs(60).min(self.interval)).await;
            }
        }
    }
}

/// What one full update did.
#[derive(Debug)]
pub struct Update {
    pub plan: Plan,
    pub removed: usize,
    pub sweep: SweepCursor,
    pub collected: usize,
}

#[derive(Debug, Default)]
struct ReleaseMembers {
    members: Vec<i64>,
    failed_projects: Vec<i64>,
    problems: Vec<String>,
}

/// Where the roots of `config` are kept.
pub fn roots_dir(config: &Config) -> PathBuf {
    if config.gc.roots_dir.as_os_str().is_empty() { default_roots_dir() } else { config.gc.roots_dir.clone() }
}

/// `<Nix state>/gcroots/orthrus` for root; `…/per-user/<user>/orthrus`
/// otherwise (the directory a daemon lets each user write).
fn default_roots_dir() -> PathBuf {
    let state = std::env::var_os("NIX_STATE_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/nix/var/nix"));
    let account = crate::nix::Account::current();
    if account.is_root() {
        return state.join("gcroots").join("orthrus");
    }
    state.join("gcroots").join("per-user").join(account.name).join("orthrus")
}
