//! Deleting old logs: retention decides which derivations' logs are still
//! wanted, this walks the directory (`AB/CDEF…-name.drv.zst` and its
//! `.idx`), deletes the rest once old enough, and measures what stays.

use std::collections::HashSet;
use std::path::Path;
use std::time::SystemTime;

use super::{LogStore, lock};

/// What a sweep did and found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    /// Logs deleted (a log and its index count once).
    pub deleted: u64,
    /// Bytes they took.
    pub freed_bytes: u64,
    /// Bytes of everything left in the directory.
    pub remaining_bytes: u64,
}

impl LogStore {
    /// Deletes the logs last written before `older_than` whose derivation
    /// (its base name, `HASH-name.drv`) is not in `wanted`, and never one
    /// being written now. Blocking: run it off the async workers.
    pub fn sweep(&self, older_than: SystemTime, wanted: &HashSet<String>) -> std::io::Result<Swept> {
        let mut swept = Swept::default();
        let shards = match std::fs::read_dir(&self.dir) {
            Ok(shards) => shards,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(swept),
            Err(e) => return Err(e),
        };
        for shard in shards {
            let shard = shard?;
            // Shards are real directories named by two characters; anything
            // else is not a log of ours.
            let prefix = shard.file_name().to_string_lossy().into_owned();
            if prefix.len() != 2 || !shard.file_type()?.is_dir() {
                continue;
            }
            for entry in std::fs::read_dir(shard.path())? {
                let entry = entry?;
                // An index listed before its log was deleted with it.
                let metadata = match entry.metadata() {
                    Ok(metadata) => metadata,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                };
                if !metadata.is_file() {
                    continue;
                }
                let name = entry.file_name().to_string_lossy().into_owned();
                let Some(rest) = name.strip_suffix(".zst") else {
                    // Indexes go with their logs; count them meanwhile.
                    if !name.ends_with(".zst.idx") || !entry.path().with_extension("").exists() {
                        swept.remaining_bytes += metadata.len();
                    }
                    continue;
                };
                let drv = format!("{prefix}{rest}");
                let old = metadata.modified().is_ok_and(|written| written < older_than);
                if !old || wanted.contains(&drv) {
                    swept.remaining_bytes += metadata.len() + index_len(&entry.path());
                    continue;
                }
                // Held while deciding and deleting: a step starting this log
                // registers it as live first, and waits for this.
                let live = lock(&self.live);
                if live.contains_key(&drv) {
                    swept.remaining_bytes += metadata.len() + index_len(&entry.path());
                    continue;
                }
                let index = super::frames::index_path(&entry.path());
                let freed = metadata.len() + index_len(&entry.path());
                // The log first: an index without its log is never read.
                match std::fs::remove_file(entry.path()) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                }
                match std::fs::remove_file(&index) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
                swept.deleted += 1;
                swept.freed_bytes += freed;
            }
        }
        Ok(swept)
    }
}

fn index_len(log: &Path) -> u64 {
    std::fs::metadata(super::frames::index_path(log)).map(|m| m.len()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::nix::StorePath;

    fn drv(name: &str) -> StorePath {
        StorePath::parse(&format!("{}/00000000000000000000000000000000-{name}.drv", crate::nix::store_dir())).unwrap()
    }

    fn write_log(logs: &LogStore, drv: &StorePath) {
        let mut writer = logs.create(drv).unwrap();
        writer.write_line("building").unwrap();
        writer.finish().unwrap();
    }

    #[test]
    fn deletes_old_logs_nobody_wants_and_measures_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let logs = LogStore::new(dir.path().to_owned());
        let (wanted, unwanted) = (drv("wanted"), drv("unwanted"));
        write_log(&logs, &wanted);
        write_log(&logs, &unwanted);
        // Many in one shard: some index is listed after its log went.
        let others: Vec<StorePath> = (0..20).map(|i| drv(&format!("other{i}"))).collect();
        for other in &others {
            write_log(&logs, other);
        }
        let keep: HashSet<String> = [wanted.base_name().to_owned()].into();

        // Written after the cut-off: too young, whatever else.
        let before_writing = SystemTime::now() - Duration::from_secs(3600);
        let swept = logs.sweep(before_writing, &keep).unwrap();
        assert_eq!(swept.deleted, 0);
        assert!(swept.remaining_bytes > 0);

        let later = SystemTime::now() + Duration::from_secs(3600);
        let swept = logs.sweep(later, &keep).unwrap();
        assert_eq!(swept.deleted, 21);
        assert!(swept.freed_bytes > 0);
        assert!(logs.exists(&wanted) && !logs.exists(&unwanted));
        let left: u64 = walk_sizes(dir.path());
        assert_eq!(swept.remaining_bytes, left, "what stays is measured, index included");

        // Being written now: never deleted.
        let mut writing = logs.create(&unwanted).unwrap();
        writing.write_line("again").unwrap();
        writing.flush().unwrap();
        assert_eq!(logs.sweep(later, &keep).unwrap().deleted, 0);
        writing.finish().unwrap();
        assert_eq!(logs.sweep(later, &keep).unwrap().deleted, 1);
    }

    fn walk_sizes(dir: &Path) -> u64 {
        std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| if e.path().is_dir() { walk_sizes(&e.path()) } else { e.metadata().unwrap().len() })
            .sum()
    }
}
