//! A `file://` binary cache, laid out as Nix writes one: `nix-cache-info`,
//! `HASH.narinfo` (signed), `nar/FILEHASH.nar[.xz|.zst]`, and
//! `log/DRV` (uncompressed: Nix reads a `file://` cache's logs as stored).
//! Every file is written under a temporary name and renamed, so a reader
//! sees a whole file or none.

use std::io::Write;
use std::path::{Path, PathBuf};

use futures_util::{StreamExt, TryStreamExt};

use super::nar::CompressedNar;
use crate::config::Compression;
use crate::nix::{Nix, PathInfo, SigningKey, StorePath};

pub(super) struct FileCache {
    dir: PathBuf,
    compression: Compression,
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
            let text = format!("StoreDir: {}\nWantMassQuery: 1\nPriority: 40\n", crate::nix::store_dir());
            write_atomically(&info, text.as_bytes())?;
        }
        Ok(FileCache { dir, compression })
    }

    fn narinfo_file(&self, path: &StorePath) -> PathBuf {
        self.dir.join(format!("{}.narinfo", path.hash_part()))
    }

    /// Writes the paths the cache does not have yet, `concurrency` at a
    /// time, and the logs it does not have; returns how many paths it wrote.
    pub(super) async fn publish(
        &self,
        nix: &Nix,
        paths: &[StorePath],
        key: Option<&SigningKey>,
        concurrency: usize,
        logs: &[(String, Vec<u8>)],
    ) -> Result<usize, String> {
        // Look before writing: a narinfo is only written after its NAR.
        let missing: Vec<StorePath> = paths.iter().filter(|p| !self.narinfo_file(p).exists()).cloned().collect();
        if !missing.is_empty() {
            let infos = nix.path_infos(&missing).await.map_err(|e| e.to_string())?;
            let infos = &infos;
            // Owned paths: a stream of borrowed ones makes a future that
            // is not `Send` for every lifetime.
            futures_util::stream::iter(missing.clone())
                .map(|path| async move {
                    let info = infos.get(&path).ok_or_else(|| format!("{path} is not valid in the store"))?;
                    self.put(&path, info, key).await
                })
                .buffer_unordered(concurrency.max(1))
                .try_collect::<Vec<()>>()
                .await?;
        }
        for (drv, log) in logs {
            let file = self.dir.join("log").join(drv);
            if !file.exists() {
                write_atomically(&file, log)?;
            }
        }
        Ok(missing.len())
    }

    /// Writes one path: its NAR, compressed, then its signed narinfo.
    async fn put(&self, path: &StorePath, info: &PathInfo, key: Option<&SigningKey>) -> Result<(), String> {
        let nar = CompressedNar::of(path, self.compression, &self.dir.join("nar")).await?;
        let text = nar.narinfo(path, info, key)?;
        nar.file.persist(self.dir.join(&nar.url)).map_err(|e| format!("cannot write {}: {e}", nar.url))?;
        write_atomically(&self.narinfo_file(path), text.as_bytes())
    }
}

/// Writes a file under a temporary name and renames it into place.
pub(super) fn write_atomically(file: &Path, bytes: &[u8]) -> Result<(), String> {
    let dir = file.parent().unwrap_or(Path::new("."));
    let mut temporary = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(dir)
        .map_err(|e| format!("cannot write in {}: {e}", dir.display()))?;
    temporary.write_all(bytes).map_err(|e| format!("cannot write {}: {e}", file.display()))?;
    temporary.persist(file).map_err(|e| format!("cannot write {}: {e}", file.display()))?;
    Ok(())
}
