//! The directory of roots, on disk: one symbolic link per rooted path,
//! named by the path's base name. Only such links are ever touched — an
//! entry that is anything else (a directory, a file, a link elsewhere) was
//! not made here and is left alone, so that a `gc.roots_dir` pointed at a
//! directory holding other roots cannot lose them.

use std::collections::BTreeSet;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::nix::{StorePath, store_dir};

/// What the directory holds against what is wanted.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LinkPlan {
    /// Wanted paths linked already.
    pub kept: usize,
    /// Wanted paths with no link (or a link that points elsewhere).
    pub add: Vec<StorePath>,
    /// Links to paths no longer wanted, old enough to go.
    pub remove: Vec<PathBuf>,
    /// Links to paths no longer wanted, too young to go.
    pub young: usize,
    /// Entries not made by Orthrus, left alone.
    pub foreign: usize,
}

/// The store path an entry of the directory roots, if it is one of ours:
/// a symbolic link named by a store path's base name, pointing to it.
fn own_link(link: &Path, metadata: &std::fs::Metadata) -> Option<StorePath> {
    if !metadata.file_type().is_symlink() {
        return None;
    }
    let name = link.file_name()?.to_str()?;
    let path = StorePath::parse(&format!("{}/{name}", store_dir())).ok()?;
    (std::fs::read_link(link).ok()? == Path::new(path.as_str())).then_some(path)
}

/// When a link was made (or last replaced): its change time.
fn made_at(metadata: &std::fs::Metadata) -> SystemTime {
    let since_epoch = Duration::new(metadata.ctime().max(0) as u64, metadata.ctime_nsec().clamp(0, 999_999_999) as u32);
    SystemTime::UNIX_EPOCH + since_epoch
}

/// Compares the directory with `wanted`. A missing directory holds nothing.
pub fn plan(dir: &Path, wanted: &BTreeSet<StorePath>, min_age: Duration, now: SystemTime) -> io::Result<LinkPlan> {
    let mut plan = LinkPlan::default();
    let mut present = BTreeSet::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            plan.add = wanted.iter().cloned().collect();
            return Ok(plan);
        }
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let link = entry.path();
        let Ok(metadata) = std::fs::symlink_metadata(&link) else { continue };
        let Some(path) = own_link(&link, &metadata) else {
            plan.foreign += 1;
            continue;
        };
        if wanted.contains(&path) {
            plan.kept += 1;
            present.insert(path);
        } else if now.duration_since(made_at(&metadata)).unwrap_or_default() >= min_age {
            plan.remove.push(link);
        } else {
            plan.young += 1;
        }
    }
    plan.add = wanted.iter().filter(|path| !present.contains(*path)).cloned().collect();
    Ok(plan)
}

/// Links each path, replacing a link of that name at once (a rename, so
/// that it is never missing): its change time says it was rooted again.
/// Returns how many could not be linked, and the first reason.
///
/// A new link is made in place, one system call; only one that exists
/// already takes the three of a replacement (most of an evaluation's
/// derivations and outputs are new).
pub fn link_all(dir: &Path, paths: &[StorePath]) -> (usize, Option<io::Error>) {
    if paths.is_empty() {
        return (0, None);
    }
    if let Err(e) = std::fs::create_dir_all(dir) {
        return (paths.len(), Some(e));
    }
    let mut failed = (0, None);
    for path in paths {
        let name = path.base_name();
        let link = dir.join(name);
        match std::os::unix::fs::symlink(path.as_str(), &link) {
            Ok(()) => continue,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                failed.0 += 1;
                failed.1.get_or_insert(e);
                continue;
            }
        }
        let temporary = dir.join(format!(".new-{name}"));
        let _ = std::fs::remove_file(&temporary);
        let linked =
            std::os::unix::fs::symlink(path.as_str(), &temporary).and_then(|()| std::fs::rename(&temporary, &link));
        if let Err(e) = linked {
            let _ = std::fs::remove_file(&temporary);
            failed.0 += 1;
            failed.1.get_or_insert(e);
        }
    }
    failed
}

/// Removes links planned away at `planned`, unless they were made again
/// since (an evaluation rooting the same path meanwhile) or are no longer
/// ours. Returns how many were removed.
pub fn remove_all(links: &[PathBuf], planned: SystemTime) -> io::Result<usize> {
    let mut removed = 0;
    for link in links {
        let Ok(metadata) = std::fs::symlink_metadata(link) else { continue };
        if own_link(link, &metadata).is_none() || made_at(&metadata) >= planned {
            continue;
        }
        match std::fs::remove_file(link) {
            Ok(()) => removed += 1,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(name: &str) -> StorePath {
        StorePath::parse(&format!("{}/{name}", store_dir())).unwrap()
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        names
    }

    #[test]
    fn links_are_added_kept_and_removed_when_old_enough() {
        let dir = tempfile::tempdir().unwrap();
        let kept = path("00000000000000000000000000000000-kept");
        let gone = path("11111111111111111111111111111111-gone");
        let new = path("22222222222222222222222222222222-new");
        assert_eq!(link_all(dir.path(), &[kept.clone(), gone.clone()]).0, 0);
        let wanted: BTreeSet<StorePath> = [kept.clone(), new.clone()].into();
        let now = SystemTime::now() + Duration::from_secs(1);
        let young = plan(dir.path(), &wanted, Duration::from_secs(3600), now).unwrap();
        assert_eq!((young.kept, young.add.clone(), young.remove.len(), young.young), (1, vec![new.clone()], 0, 1));
        let old = plan(dir.path(), &wanted, Duration::ZERO, now).unwrap();
        assert_eq!(old.remove, [dir.path().join(gone.base_name())]);
        link_all(dir.path(), &old.add);
        assert_eq!(remove_all(&old.remove, now).unwrap(), 1);
        assert_eq!(names(dir.path()), [kept.base_name(), new.base_name()]);
        assert_eq!(std::fs::read_link(dir.path().join(new.base_name())).unwrap(), Path::new(new.as_str()));
    }

    #[test]
    fn what_orthrus_did_not_make_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        // As in Nix's own gcroots: a directory, a link to a profile, a file,
        // a link named like a store path but pointing elsewhere.
        std::fs::create_dir(dir.path().join("auto")).unwrap();
        std::os::unix::fs::symlink("/nix/var/nix/profiles", dir.path().join("profiles")).unwrap();
        std::fs::write(dir.path().join("notes"), "").unwrap();
        let other = path("33333333333333333333333333333333-other");
        std::os::unix::fs::symlink("/etc", dir.path().join(other.base_name())).unwrap();
        let now = SystemTime::now() + Duration::from_secs(1);
        let plan = plan(dir.path(), &BTreeSet::new(), Duration::ZERO, now).unwrap();
        assert_eq!((plan.foreign, plan.remove.len()), (4, 0), "{plan:?}");
        // A link planned away but no longer ours is not removed either.
        let link = dir.path().join(other.base_name());
        assert_eq!(remove_all(std::slice::from_ref(&link), now).unwrap(), 0);
        assert!(std::fs::symlink_metadata(&link).is_ok());
        // A wanted path whose name is taken by a foreign link gets its own.
        let wanted: BTreeSet<StorePath> = [other.clone()].into();
        let replan = super::plan(dir.path(), &wanted, Duration::ZERO, now).unwrap();
        assert_eq!(replan.add, std::slice::from_ref(&other));
        link_all(dir.path(), &replan.add);
        assert_eq!(std::fs::read_link(&link).unwrap(), Path::new(other.as_str()));
    }

    #[test]
    fn a_link_made_again_after_planning_is_not_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = path("44444444444444444444444444444444-again");
        link_all(dir.path(), std::slice::from_ref(&path));
        let planned_at = SystemTime::now() + Duration::from_millis(20);
        let plan = plan(dir.path(), &BTreeSet::new(), Duration::ZERO, planned_at).unwrap();
        assert_eq!(plan.remove.len(), 1);
        std::thread::sleep(Duration::from_millis(50));
        // An evaluation roots the same path between the plan and its removal.
        link_all(dir.path(), std::slice::from_ref(&path));
        assert_eq!(remove_all(&plan.remove, planned_at).unwrap(), 0);
        assert_eq!(names(dir.path()), [path.base_name()]);
    }
}
