//! A path's NAR as a cache stores it: dumped by Nix, compressed into a
//! temporary file while its SHA-256 and size are counted, and the narinfo
//! that points at it.

use std::io::Write;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::config::Compression;
use crate::nix::{NarFile, PathInfo, SigningKey, StorePath, narinfo_of, nix32_encode};

pub(super) struct CompressedNar {
    /// The compressed NAR, not yet in place.
    pub(super) file: tempfile::NamedTempFile,
    /// Where it goes, relative to the cache's root: `nar/FILEHASH.nar.xz`.
    pub(super) url: String,
    compression: Compression,
    /// `sha256:<base-32>` of the file, and its size.
    file_hash: String,
    pub(super) file_size: u64,
}

impl CompressedNar {
    /// Writes `path`'s NAR (`nix::nar`: the bytes `nix-store --dump`
    /// gives, without a process per path) compressed into a temporary
    /// file of `dir`.
    pub(super) async fn of(path: &StorePath, compression: Compression, dir: &Path) -> Result<CompressedNar, String> {
        let (dir, store_path) = (dir.to_owned(), path.clone());
        let (file, hash, file_size) = tokio::task::spawn_blocking(move || compress(&store_path, compression, &dir))
            .await
            .map_err(|e| format!("compressing {path}: {e}"))?
            .map_err(|e| format!("compressing {path}: {e}"))?;
        let hash = nix32_encode(&hash);
        Ok(CompressedNar {
            file,
            url: format!("nar/{hash}.nar{}", compression.extension()),
            compression,
            file_hash: format!("sha256:{hash}"),
            file_size,
        })
    }

    /// The narinfo of `path` with this NAR, signed with `key`.
    pub(super) fn narinfo(
        &self,
        path: &StorePath,
        info: &PathInfo,
        key: Option<&SigningKey>,
    ) -> Result<String, String> {
        let nar = NarFile {
            url: &self.url,
            compression: self.compression.as_str(),
            file: Some((&self.file_hash, self.file_size)),
        };
        narinfo_of(path, info, key, &nar)
    }
}

/// What is written through it, hashed and counted.
struct Hashing<W> {
    inner: W,
    hasher: Sha256,
    size: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Compresses a NAR into a temporary file of `dir`; returns it with the
/// SHA-256 and size of what it holds.
fn compress(
    path: &StorePath,
    compression: Compression,
    dir: &Path,
) -> std::io::Result<(tempfile::NamedTempFile, [u8; 32], u64)> {
    let file = tempfile::Builder::new().prefix(".nar-").tempfile_in(dir)?;
    let writer = Hashing { inner: std::io::BufWriter::new(file.reopen()?), hasher: Sha256::new(), size: 0 };
    let mut writer = match compression {
        Compression::None => {
            let mut writer = writer;
            crate::nix::nar::dump(path, &mut writer)?;
            writer
        }
        Compression::Xz => {
            let mut encoder = liblzma::write::XzEncoder::new(writer, 6);
            crate::nix::nar::dump(path, &mut encoder)?;
            encoder.finish()?
        }
        Compression::Zstd => {
            let mut encoder = zstd::stream::write::Encoder::new(writer, 3)?;
            crate::nix::nar::dump(path, &mut encoder)?;
            encoder.finish()?
        }
    };
    writer.flush()?;
    writer.inner.get_ref().sync_all()?;
    Ok((file, writer.hasher.finalize().into(), writer.size))
}
