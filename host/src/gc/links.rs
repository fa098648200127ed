//! The directory of roots, on disk: one entry per rooted path, named by
//! the path's base name. Only such entries are ever touched — anything
//! else (a directory, a link elsewhere, a file with content) was not made
//! here and is left alone, so that a `gc.roots_dir` pointed at a directory
//! holding other roots cannot lose them.
//!
//! An entry is an empty regular file, a hard link of one "anchor" file per
//! batch: Nix takes a regular file under its roots directory as a root of
//! the store path it is named after (`findRoots` in Nix's `gc.cc`, in every
//! version Orthrus supports), as it takes a symbolic link as a root of its
//! target. A hard link is a directory entry only, where a symbolic link is
//! an inode of its own: on ext4, allocating one passes over every inode
//! freed in the last minutes, and roots are freed by the thousand (20,000
//! symbolic links took 5.8 s right after 40,000 files were deleted, 20,000
//! hard links 0.27 s; 0.39 s and 0.23 s on a quiet file system). Symbolic
//! links made by earlier versions, or where a file system makes no hard
//! links, are roots of ours too.

use std::collections::BTreeSet;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use crate::nix::{StorePath, store_dir};

/// Entries linked to one anchor at most (ext4 allows 65,000 links to an
/// inode).
const LINKS_PER_ANCHOR: usize = 10_000;

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
/// named by a store path's base name, an empty regular file, or a symbolic
/// link to that path.
fn own_link(link: &Path, metadata: &std::fs::Metadata) -> Option<StorePath> {
    let name = link.file_name()?.to_str()?;
    let path = StorePath::parse(&format!("{}/{name}", store_dir())).ok()?;
    let ours = if metadata.file_type().is_symlink() {
        std::fs::read_link(link).ok()? == Path::new(path.as_str())
    } else {
        metadata.file_type().is_file() && metadata.len() == 0
    };
    ours.then_some(path)
}

/// When a root was made (or last replaced). Its anchor was made then: the
/// anchor's modification time (the change time of a hard link moves
/// whenever another link of its anchor is made or removed); a symbolic
/// link's change time.
fn made_at(metadata: &std::fs::Metadata) -> SystemTime {
    let (seconds, nanoseconds) = if metadata.file_type().is_symlink() {
        (metadata.ctime(), metadata.ctime_nsec())
    } else {
        (metadata.mtime(), metadata.mtime_nsec())
    };
    SystemTime::UNIX_EPOCH + Duration::new(seconds.max(0) as u64, nanoseconds.clamp(0, 999_999_999) as u32)
}

/// An empty file the roots of a batch are hard links of. Its own name goes
/// when the batch is linked (a leftover from a crash is an empty file no
/// store path is named like: left alone, as foreign).
struct Anchor(PathBuf);

impl Anchor {
    fn create(dir: &Path) -> io::Result<Anchor> {
        static MADE: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_nanos();
        let name = format!(".anchor-{}-{nanos}-{}", std::process::id(), MADE.fetch_add(1, Ordering::Relaxed));
        let path = dir.join(name);
        std::fs::OpenOptions::new().write(true).create_new(true).open(&path)?;
        Ok(Anchor(path))
    }
}

impl Drop for Anchor {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
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

/// Roots each path, replacing an entry of that name at once (a rename, so
/// that it is never missing): its new anchor says it was rooted again.
/// Returns how many could not be rooted, and the first reason.
///
/// A new root is one `link` call; only one that exists already takes the
/// three of a replacement (most of an evaluation's paths are new).
pub fn link_all(dir: &Path, paths: &[StorePath]) -> (usize, Option<io::Error>) {
    if paths.is_empty() {
        return (0, None);
    }
    if let Err(e) = std::fs::create_dir_all(dir) {
        return (paths.len(), Some(e));
    }
    let mut failed = (0, None);
    for batch in paths.chunks(LINKS_PER_ANCHOR) {
        let anchor = match Anchor::create(dir) {
            Ok(anchor) => anchor,
            Err(e) => {
                failed.0 += batch.len();
                failed.1.get_or_insert(e);
                continue;
            }
        };
        for path in batch {
            if let Err(e) = link_one(dir, &anchor, path) {
                failed.0 += 1;
                failed.1.get_or_insert(e);
            }
        }
    }
    failed
}

/// Roots `path` with a hard link of `anchor`, in place or replacing.
fn link_one(dir: &Path, anchor: &Anchor, path: &StorePath) -> io::Result<()> {
    let name = path.base_name();
    let link = dir.join(name);
    match make_root(anchor, path, &link) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        done => return done,
    }
    let temporary = dir.join(format!(".new-{name}"));
    let _ = std::fs::remove_file(&temporary);
    let linked = make_root(anchor, path, &temporary).and_then(|()| std::fs::rename(&temporary, &link));
    if linked.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    linked
}

/// A root of `path` at `at`: a hard link of `anchor`, or a symbolic link
/// where the file system makes no hard links.
fn make_root(anchor: &Anchor, path: &StorePath, at: &Path) -> io::Result<()> {
    match std::fs::hard_link(&anchor.0, at) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists && e.raw_os_error() != Some(libc::ENOSPC) => {
            std::os::unix::fs::symlink(path.as_str(), at)
        }
        done => done,
    }
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
        let inode = |path: &StorePath| std::fs::symlink_metadata(dir.path().join(path.base_name())).unwrap().ino();
        assert_eq!(inode(&kept), inode(&gone), "hard links of one anchor");
        let wanted: BTreeSet<StorePath> = [kept.clone(), new.clone()].into();
        let now = SystemTime::now() + Duration::from_secs(1);
        let young = plan(dir.path(), &wanted, Duration::from_secs(3600), now).unwrap();
        assert_eq!((young.kept, young.add.clone(), young.remove.len(), young.young), (1, vec![new.clone()], 0, 1));
        let old = plan(dir.path(), &wanted, Duration::ZERO, now).unwrap();
        assert_eq!(old.remove, [dir.path().join(gone.base_name())]);
        link_all(dir.path(), &old.add);
        assert_eq!(remove_all(&old.remove, now).unwrap(), 1);
        assert_eq!(names(dir.path()), [kept.base_name(), new.base_name()]);
        // Empty files Nix takes as roots of the paths they are named after.
        let entry = dir.path().join(new.base_name());
        let metadata = std::fs::symlink_metadata(&entry).unwrap();
        assert!(metadata.file_type().is_file() && metadata.len() == 0, "{metadata:?}");
        assert_eq!(own_link(&entry, &metadata), Some(new));
        // One inode for the roots of a batch.
        let kept_entry = std::fs::symlink_metadata(dir.path().join(kept.base_name())).unwrap();
        assert_eq!(kept_entry.nlink(), 1, "the other root of its batch is gone");
    }

    /// Roots made by earlier versions, symbolic links, are still ours.
    #[test]
    fn symbolic_links_to_their_path_are_roots_of_ours() {
        let dir = tempfile::tempdir().unwrap();
        let old = path("55555555555555555555555555555555-old");
        std::os::unix::fs::symlink(old.as_str(), dir.path().join(old.base_name())).unwrap();
        let now = SystemTime::now() + Duration::from_secs(1);
        let kept = plan(dir.path(), &[old.clone()].into(), Duration::ZERO, now).unwrap();
        assert_eq!((kept.kept, kept.foreign), (1, 0));
        let removed = plan(dir.path(), &BTreeSet::new(), Duration::ZERO, now).unwrap();
        assert_eq!(removed.remove, [dir.path().join(old.base_name())]);
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
        // A file named like a store path, with something in it.
        let written = path("66666666666666666666666666666666-written");
        std::fs::write(dir.path().join(written.base_name()), "kept by someone").unwrap();
        let now = SystemTime::now() + Duration::from_secs(1);
        let plan = plan(dir.path(), &BTreeSet::new(), Duration::ZERO, now).unwrap();
        assert_eq!((plan.foreign, plan.remove.len()), (5, 0), "{plan:?}");
        // A link planned away but no longer ours is not removed either.
        let link = dir.path().join(other.base_name());
        assert_eq!(remove_all(std::slice::from_ref(&link), now).unwrap(), 0);
        assert!(std::fs::symlink_metadata(&link).is_ok());
        // A wanted path whose name is taken by a foreign link gets its own.
        let wanted: BTreeSet<StorePath> = [other.clone()].into();
        let replan = super::plan(dir.path(), &wanted, Duration::ZERO, now).unwrap();
        assert_eq!(replan.add, std::slice::from_ref(&other));
        link_all(dir.path(), &replan.add);
        assert_eq!(own_link(&link, &std::fs::symlink_metadata(&link).unwrap()), Some(other));
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
