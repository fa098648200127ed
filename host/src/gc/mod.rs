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
//!   its plugin; while one cannot be computed, no root is removed).
//!
//! The roots are one directory Nix scans (`<Nix state>/gcroots/orthrus`, or
//! under `per-user/<user>/` for a server that is not root; `gc.roots_dir`),
//! holding one link per path named by its base name. A full update adds
//! what is missing and removes what is no longer kept — except links
//! younger than `gc.min_root_age_secs` (a day), as Hydra does, lest an
//! evaluation being recorded lose its roots. It also marks builds whose
//! outputs were collected, so that `latest` skips them and their pages say
//! so, without a store check per request.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::Notify;

use crate::config::Config;
use crate::db::Db;
use crate::nix::{Nix, StorePath, store_dir};
use crate::plugins::PluginRuntime;

/// Builds checked for collected outputs per update, at most.
const SWEEP_BATCH: u64 = 20_000;

/// What a full update would do, or did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Paths rooted now and kept.
    pub kept: usize,
    /// Paths to root that have no link yet.
    pub add: Vec<StorePath>,
    /// Links no longer wanted.
    pub remove: Vec<PathBuf>,
    /// Links no longer wanted, but too young to remove.
    pub young: usize,
    /// Why nothing is removed this time (a release set that could not be
    /// computed: its members' roots stay until it can).
    pub removals_held: Option<String>,
}

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

impl GcRoots {
    /// The roots of `config`: its `gc.roots_dir`, else the directory Nix
    /// scans for this user. The directory is made when first needed: under
    /// a daemon, `per-user/<user>` appears once the user has used the store.
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
        std::fs::create_dir_all(&self.dir).map_err(|e| format!("cannot create the GC roots {}: {e}", self.dir.display()))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Roots these paths now (a new evaluation's outputs and derivations).
    pub async fn root(&self, paths: &[String]) {
        let paths: Vec<StorePath> = paths.iter().filter_map(|p| StorePath::parse(p).ok()).collect();
        let dir = self.dir.clone();
        let added = tokio::task::spawn_blocking(move || link_all(&dir, &paths)).await;
        if let Ok(Err(e)) = added {
            tracing::warn!("cannot add GC roots in {}: {e}", self.dir.display());
        }
    }

    /// Asks for a full update soon (after an evaluation).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// What a full update would do now.
    pub async fn plan(&self) -> Result<Plan, String> {
        let (releases, removals_held) = self.newest_release_members().await?;
        let builds = self.db.gc_kept_builds(crate::db::now(), &releases).await.map_err(|e| e.to_string())?;
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
        let dir = self.dir.clone();
        let min_age = self.min_age;
        let mut plan = tokio::task::spawn_blocking(move || plan_links(&dir, &wanted, min_age))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("cannot read the GC roots {}: {e}", self.dir.display()))?;
        if removals_held.is_some() {
            plan.kept += plan.remove.len();
            plan.remove.clear();
        }
        plan.removals_held = removals_held;
        Ok(plan)
    }

    /// The builds of the newest release of every project's release sets,
    /// and which sets could not be computed.
    async fn newest_release_members(&self) -> Result<(Vec<i64>, Option<String>), String> {
        let mut members = Vec::new();
        let mut failed = Vec::new();
        for project in self.db.projects().await.map_err(|e| e.to_string())? {
            for (name, set) in project.release_sets() {
                match self.plugins.releases(&set.plugin, project.id, &set.settings, 1).await {
                    Ok(releases) => {
                        members.extend(releases.into_iter().take(1).flat_map(|r| r.members.into_iter().map(|(id, _)| id)))
                    }
                    Err(e) => failed.push(format!("release set ‘{name}’ of project ‘{}’: {e}", project.name)),
                }
            }
        }
        let held = (!failed.is_empty()).then(|| format!("no root removed, as {}", failed.join("; ")));
        Ok((members, held))
    }

    /// Does what `plan` says.
    pub async fn apply(&self, plan: &Plan) -> Result<(), String> {
        let (dir, plan) = (self.dir.clone(), plan.clone());
        tokio::task::spawn_blocking(move || {
            link_all(&dir, &plan.add)?;
            for link in &plan.remove {
                match std::fs::remove_file(link) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("cannot update the GC roots {}: {e}", self.dir.display()))
    }

    /// Marks builds whose outputs were collected, a batch at a time from
    /// `after`; returns where the next sweep starts (0: from the start).
    pub async fn sweep_collected(&self, after: i64) -> Result<(i64, usize), String> {
        let builds = self.db.builds_with_outputs_after(after, SWEEP_BATCH).await.map_err(|e| e.to_string())?;
        let next = if (builds.len() as u64) < SWEEP_BATCH { 0 } else { builds.last().map_or(0, |(id, _)| *id) };
        let paths: Vec<StorePath> =
            builds.iter().flat_map(|(_, outputs)| outputs).filter_map(|p| StorePath::parse(p).ok()).collect();
        let invalid = self.nix.invalid_paths(&paths).await.map_err(|e| e.to_string())?;
        let collected: Vec<i64> = builds
            .iter()
            .filter(|(_, outputs)| outputs.iter().any(|p| StorePath::parse(p).is_ok_and(|p| invalid.contains(&p))))
            .map(|(id, _)| *id)
            .collect();
        if !collected.is_empty() {
            self.db.set_outputs_collected(&collected).await.map_err(|e| e.to_string())?;
        }
        Ok((next, collected.len()))
    }

    /// One full update: roots, then collected outputs.
    pub async fn update(&self, sweep_from: i64) -> Result<(Plan, i64, usize), String> {
        let plan = self.plan().await?;
        self.apply(&plan).await?;
        let (next, collected) = self.sweep_collected(sweep_from).await?;
        Ok((plan, next, collected))
    }

    /// Updates now, then every `gc.interval_secs` and after each
    /// evaluation (at most once a minute).
    pub async fn run(self) {
        let mut sweep_from = 0;
        loop {
            match self.update(sweep_from).await {
                Ok((plan, next, collected)) => {
                    sweep_from = next;
                    if let Some(held) = &plan.removals_held {
                        tracing::warn!("GC roots: {held}");
                    }
                    tracing::info!(
                        kept = plan.kept + plan.add.len(),
                        added = plan.add.len(),
                        removed = plan.remove.len(),
                        young = plan.young,
                        collected,
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

/// A link named by each path's base name, pointing to it (those present
/// are left as they are).
fn link_all(dir: &Path, paths: &[StorePath]) -> std::io::Result<()> {
    if !paths.is_empty() {
        std::fs::create_dir_all(dir)?;
    }
    for path in paths {
        let link = dir.join(path.base_name());
        match std::os::unix::fs::symlink(path.as_str(), &link) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The links to add and to remove for `wanted`.
fn plan_links(dir: &Path, wanted: &BTreeSet<StorePath>, min_age: Duration) -> std::io::Result<Plan> {
    let mut plan = Plan::default();
    let mut present = BTreeSet::new();
    let now = SystemTime::now();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        // Not made yet: every wanted path is to add.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            plan.add = wanted.iter().cloned().collect();
            return Ok(plan);
        }
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = StorePath::parse(&format!("{}/{name}", store_dir()));
        match path {
            Ok(path) if wanted.contains(&path) => {
                plan.kept += 1;
                present.insert(path);
            }
            _ => {
                // The link's own change time: when it was made.
                let made = entry.metadata().and_then(|m| {
                    use std::os::unix::fs::MetadataExt;
                    Ok(SystemTime::UNIX_EPOCH + Duration::from_secs(m.ctime().max(0) as u64))
                });
                let age = made.ok().and_then(|made| now.duration_since(made).ok()).unwrap_or_default();
                if age >= min_age {
                    plan.remove.push(entry.path());
                } else {
                    plan.young += 1;
                }
            }
        }
    }
    plan.add = wanted.iter().filter(|path| !present.contains(*path)).cloned().collect();
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(name: &str) -> StorePath {
        StorePath::parse(&format!("{}/{name}", store_dir())).unwrap()
    }

    #[test]
    fn links_are_added_kept_and_removed_when_old_enough() {
        let dir = tempfile::tempdir().unwrap();
        let kept = path("00000000000000000000000000000000-kept");
        let gone = path("11111111111111111111111111111111-gone");
        let new = path("22222222222222222222222222222222-new");
        link_all(dir.path(), &[kept.clone(), gone.clone()]).unwrap();
        std::fs::write(dir.path().join("not-a-root"), "").unwrap();
        let wanted: BTreeSet<StorePath> = [kept.clone(), new.clone()].into();
        let young = plan_links(dir.path(), &wanted, Duration::from_secs(3600)).unwrap();
        assert_eq!((young.kept, young.add.clone(), young.remove.len(), young.young), (1, vec![new.clone()], 0, 2));
        let plan = plan_links(dir.path(), &wanted, Duration::ZERO).unwrap();
        assert_eq!(plan.remove.len(), 2, "{plan:?}");
        link_all(dir.path(), &plan.add).unwrap();
        for link in &plan.remove {
            std::fs::remove_file(link).unwrap();
        }
        let mut names: Vec<String> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        assert_eq!(names, [kept.base_name(), new.base_name()]);
        assert_eq!(std::fs::read_link(dir.path().join(new.base_name())).unwrap(), Path::new(new.as_str()));
    }
}
