//! An S3 binary cache (AWS, or any S3-compatible service), written
//! through `object_store` — its SigV4 signing, retries and multipart
//! uploads — in the layout Nix's own S3 store writes: `nix-cache-info`,
//! `HASH.narinfo`, `nar/FILEHASH.nar.xz`, and `log/DRV` compressed with a
//! `Content-Encoding` header, which Nix's S3 and HTTP stores decode.

use std::path::PathBuf;
use std::sync::Arc;

use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{Attribute, Attributes, ObjectStore, PutOptions, PutPayload};
use tokio::io::AsyncWriteExt;

use super::nar::CompressedNar;
use crate::config::{Compression, S3Target};

pub(super) struct S3Cache {
    store: Arc<dyn ObjectStore>,
    pub(super) compression: Compression,
    /// Where NARs are compressed before they are uploaded.
    scratch: PathBuf,
}

impl S3Cache {
    pub(super) fn open(target: &S3Target, scratch: PathBuf) -> Result<S3Cache, String> {
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(&target.bucket).with_region(&target.region);
        if let Some(endpoint) = &target.endpoint {
            builder = builder.with_endpoint(endpoint).with_allow_http(endpoint.starts_with("http://"));
        }
        if let Some(file) = &target.credentials_file {
            let (key_id, secret) = read_credentials(file, &target.profile)?;
            builder = builder.with_access_key_id(key_id).with_secret_access_key(secret);
        }
        let store = builder.build().map_err(|e| e.to_string())?;
        std::fs::create_dir_all(&scratch).map_err(|e| format!("cannot make {}: {e}", scratch.display()))?;
        Ok(S3Cache { store: Arc::new(store), compression: target.compression, scratch })
    }

    pub(super) fn scratch(&self) -> PathBuf {
        self.scratch.clone()
    }

    pub(super) async fn has(&self, key: &str) -> Result<bool, String> {
        match self.store.head(&ObjectPath::from(key)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(format!("cannot look for {key}: {e}")),
        }
    }

    async fn put(&self, key: &str, bytes: Vec<u8>, attributes: Attributes) -> Result<(), String> {
        let options = PutOptions { attributes, ..PutOptions::default() };
        self.store
            .put_opts(&ObjectPath::from(key), PutPayload::from(bytes), options)
            .await
            .map(drop)
            .map_err(|e| format!("cannot write {key}: {e}"))
    }

    /// A NAR, as a multipart upload when large.
    pub(super) async fn put_nar(&self, nar: CompressedNar) -> Result<(), String> {
        let mut file = tokio::fs::File::open(nar.file.path()).await.map_err(|e| e.to_string())?;
        let mut upload = object_store::buffered::BufWriter::new(self.store.clone(), ObjectPath::from(nar.url.as_str()));
        let uploaded = async {
            tokio::io::copy(&mut file, &mut upload).await?;
            upload.shutdown().await
        };
        if let Err(e) = uploaded.await {
            let _ = upload.abort().await;
            return Err(format!("cannot upload {}: {e}", nar.url));
        }
        Ok(())
    }

    /// A narinfo, `nix-cache-info` or a log (xz, with `Content-Encoding`).
    pub(super) async fn put_file(&self, key: &str, bytes: Vec<u8>) -> Result<(), String> {
        let (bytes, attributes) = if key.starts_with("log/") {
            let attributes = Attributes::from_iter([
                (Attribute::ContentType, "text/plain; charset=utf-8"),
                (Attribute::ContentEncoding, "xz"),
            ]);
            (compress_log(&bytes)?, attributes)
        } else if key.ends_with(".narinfo") {
            (bytes, Attributes::from_iter([(Attribute::ContentType, "text/x-nix-narinfo")]))
        } else {
            (bytes, Attributes::from_iter([(Attribute::ContentType, "text/x-nix-cache-info")]))
        };
        self.put(key, bytes, attributes).await
    }
}

fn compress_log(log: &[u8]) -> Result<Vec<u8>, String> {
    use std::io::Write;
    let mut encoder = liblzma::write::XzEncoder::new(Vec::new(), 6);
    encoder.write_all(log).and_then(|()| encoder.finish()).map_err(|e| format!("cannot compress a log: {e}"))
}

/// The key id and secret of `profile` in an AWS credentials file.
fn read_credentials(file: &std::path::Path, profile: &str) -> Result<(String, String), String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    parse_credentials(&text, profile)
        .ok_or_else(|| format!("{} has no aws_access_key_id and aws_secret_access_key in [{profile}]", file.display()))
}

fn parse_credentials(text: &str, profile: &str) -> Option<(String, String)> {
    let (mut section, mut key_id, mut secret) = (String::new(), None, None);
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with(['#', ';'])) {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.trim().trim_start_matches("profile ").to_owned();
            continue;
        }
        let Some((name, value)) = line.split_once('=') else { continue };
        if section == profile {
            match name.trim() {
                "aws_access_key_id" => key_id = Some(value.trim().to_owned()),
                "aws_secret_access_key" => secret = Some(value.trim().to_owned()),
                _ => {}
            }
        }
    }
    Some((key_id?, secret?))
}

#[cfg(test)]
mod tests {
    #[test]
    fn credentials_are_read_by_profile() {
        let text = "[default]\naws_access_key_id = A\naws_secret_access_key = B\n\n[profile ci]\n\
                    aws_access_key_id=C\n# a comment\naws_secret_access_key=D\n";
        assert_eq!(super::parse_credentials(text, "default"), Some(("A".into(), "B".into())));
        assert_eq!(super::parse_credentials(text, "ci"), Some(("C".into(), "D".into())));
        assert_eq!(super::parse_credentials(text, "other"), None);
    }
}
