//! A `file://` binary cache, laid out as Nix writes one: `nix-cache-info`,
//! `HASH.narinfo` (signed), `nar/FILEHASH.nar[.xz|.zst]`, and
//! `log/DRV` (uncompressed: Nix reads a `file://` cache's logs as stored).
//! Every file is written under a temporary name and renamed, so a reader
//! sees a whole file or none; the file system is touched off the async
//! runtime's threads.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::nar::CompressedNar;
use crate::config::Compression;

pub(super) struct FileCache {
    dir: PathBuf,
    pub(super) compression: Compression,
}

impl FileCache {
    /// The cache at `dir`, made if it is not there.
    pub(super) fn open(dir: PathBuf, compression: Compression) -> Result<FileCache, String> {
        for sub in ["nar", "log"] {
            std::fs::create_dir_all(dir.join(sub))
                .map_err(|e| format!("cannot make {}: {e}", dir.join(sub).display()))?;
        }
        let info = dir.join("nix-cache-info");
        if !info.exists() {
            write_atomically(&info, super::cache_info().as_bytes())?;
        }
        Ok(FileCache { dir, compression })
    }

    /// Where NARs are compressed: beside where they go, so that putting
    /// one in place is a rename.
    pub(super) fn scratch(&self) -> PathBuf {
        self.dir.join("nar")
    }

    pub(super) async fn has(&self, key: &str) -> Result<bool, String> {
        let file = self.dir.join(key);
        tokio::fs::try_exists(&file).await.map_err(|e| format!("cannot look for {}: {e}", file.display()))
    }

    pub(super) async fn put_nar(&self, nar: CompressedNar) -> Result<(), String> {
        let file = self.dir.join(&nar.url);
        tokio::task::spawn_blocking(move || {
            nar.file.persist(&file).map(drop).map_err(|e| format!("cannot write {}: {e}", file.display()))
        })
        .await
        .map_err(|e| e.to_string())?
    }

    /// A narinfo or a log, as given.
    pub(super) async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), String> {
        let file = self.dir.join(key);
        tokio::task::spawn_blocking(move || write_atomically(&file, &bytes)).await.map_err(|e| e.to_string())?
    }
}

/// Writes a file under a temporary name and renames it into place.
fn write_atomically(file: &Path, bytes: &[u8]) -> Result<(), String> {
    let dir = file.parent().unwrap_or(Path::new("."));
    let mut temporary = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(dir)
        .map_err(|e| format!("cannot write in {}: {e}", dir.display()))?;
    temporary.write_all(bytes).map_err(|e| format!("cannot write {}: {e}", file.display()))?;
    temporary.persist(file).map_err(|e| format!("cannot write {}: {e}", file.display()))?;
    Ok(())
}
