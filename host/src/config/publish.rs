//! `[[binary_cache.publish]]`: the binary caches every successful build's
//! outputs are pushed to, each named by a Nix store URI whose query
//! parameters are its options, as for `nix copy --to`.

use std::path::PathBuf;

use serde::Deserialize;

/// One `[[binary_cache.publish]]` entry, as written.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PublishConfig {
    /// A Nix store URI: `file:///path`, `ssh://host`, `ssh-ng://host`
    /// (options as query parameters: `compression=xz|zstd|none`, …).
    pub uri: String,
    /// Names its delivery state (`/api/notifiers`); defaults to the URI
    /// without its options.
    #[serde(default)]
    pub name: String,
    /// How many paths are written at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// For `s3://`: an AWS credentials file (`[default]` or the section
    /// `profile=` names, with `aws_access_key_id` and
    /// `aws_secret_access_key`); empty: the `AWS_*` environment variables.
    #[serde(default)]
    pub credentials_file: PathBuf,
    /// A failed publication is tried again after this many seconds,
    /// doubled for each further failure up to an hour; never given up.
    #[serde(default = "default_retry_delay")]
    pub retry_delay_secs: u64,
}

fn default_concurrency() -> usize {
    4
}

fn default_retry_delay() -> u64 {
    10
}

/// How a NAR is compressed in a cache Orthrus writes itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Xz,
    Zstd,
}

impl Compression {
    /// As a narinfo's `Compression:` says it.
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Xz => "xz",
            Compression::Zstd => "zstd",
        }
    }

    /// The NAR file's extension after `.nar`.
    pub fn extension(self) -> &'static str {
        match self {
            Compression::None => "",
            Compression::Xz => ".xz",
            Compression::Zstd => ".zst",
        }
    }
}

/// Where a cache is, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheTarget {
    /// A directory Orthrus writes as Nix lays out a `file://` cache.
    File { dir: PathBuf, compression: Compression },
    /// An S3 bucket (AWS or any S3-compatible service) Orthrus writes.
    S3(S3Target),
    /// A store Nix copies to (`nix copy --to URI`): `ssh://` and `ssh-ng://`.
    NixCopy { uri: String },
}

/// An `s3://BUCKET?region=…&endpoint=…&scheme=…&profile=…` cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Target {
    pub bucket: String,
    pub region: String,
    /// An S3-compatible service's URL (`endpoint=host:port`, with `scheme`);
    /// none: AWS itself.
    pub endpoint: Option<String>,
    /// The section of the credentials file.
    pub profile: String,
    pub credentials_file: Option<PathBuf>,
    pub compression: Compression,
}

impl PublishConfig {
    /// The name of its delivery state: `publish:` and the URI without options.
    pub fn name(&self) -> String {
        let name = if self.name.is_empty() { self.uri.split('?').next().unwrap_or_default() } else { &self.name };
        format!("publish:{name}")
    }

    /// The target its URI names, or what is wrong with the URI.
    pub fn target(&self) -> Result<CacheTarget, String> {
        let (location, query) = self.uri.split_once('?').unwrap_or((&self.uri, ""));
        let mut compression = Compression::Xz;
        let mut options = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match (key, value) {
                ("compression", "xz") => compression = Compression::Xz,
                ("compression", "zstd") => compression = Compression::Zstd,
                ("compression", "none") => compression = Compression::None,
                ("compression", other) => {
                    return Err(format!("compression={other} is not one of xz, zstd, none"));
                }
                // Nix's option; Orthrus compresses each NAR on one thread.
                ("parallel-compression", "true" | "false") => {}
                _ => options.push(pair.to_owned()),
            }
        }
        match location.split_once("://") {
            Some(("s3", bucket)) => self.s3_target(bucket, &options, compression),
            Some(("file", path)) => {
                if !options.is_empty() {
                    return Err(format!("unknown options for a file:// cache: {}", options.join(", ")));
                }
                let dir = PathBuf::from(path);
                if !dir.is_absolute() {
                    return Err(format!("{path:?} is not an absolute path (file:///srv/cache)"));
                }
                Ok(CacheTarget::File { dir, compression })
            }
            Some(("ssh" | "ssh-ng", host)) if !host.is_empty() => Ok(CacheTarget::NixCopy { uri: self.uri.clone() }),
            _ => Err(format!("{:?} is not an s3://, file://, ssh:// or ssh-ng:// store URI", self.uri)),
        }
    }

    fn s3_target(&self, bucket: &str, options: &[String], compression: Compression) -> Result<CacheTarget, String> {
        let valid_bucket = (3..=63).contains(&bucket.len())
            && bucket.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
        if !valid_bucket {
            return Err(format!("{bucket:?} is not an S3 bucket name"));
        }
        let (mut region, mut endpoint, mut scheme, mut profile) = ("us-east-1".to_owned(), None, "https", "default");
        for pair in options {
            match pair.split_once('=') {
                Some(("region", value)) if !value.is_empty() => region = value.to_owned(),
                Some(("endpoint", value)) if !value.is_empty() => endpoint = Some(value.to_owned()),
                Some(("scheme", value @ ("http" | "https"))) => scheme = value,
                Some(("profile", value)) if !value.is_empty() => profile = value,
                _ => return Err(format!("unknown option {pair:?} (region, endpoint, scheme, profile, compression)")),
            }
        }
        let endpoint = endpoint.map(|e| if e.contains("://") { e } else { format!("{scheme}://{e}") });
        Ok(CacheTarget::S3(S3Target {
            bucket: bucket.to_owned(),
            region,
            endpoint,
            profile: profile.to_owned(),
            credentials_file: Some(self.credentials_file.clone()).filter(|f| !f.as_os_str().is_empty()),
            compression,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(uri: &str) -> PublishConfig {
        PublishConfig { uri: uri.into(), ..PublishConfig::default() }
    }

    #[test]
    fn uris_name_their_targets() {
        assert_eq!(
            entry("file:///srv/cache?compression=zstd").target().unwrap(),
            CacheTarget::File { dir: "/srv/cache".into(), compression: Compression::Zstd }
        );
        assert_eq!(
            entry("file:///srv/cache").target().unwrap(),
            CacheTarget::File { dir: "/srv/cache".into(), compression: Compression::Xz }
        );
        assert_eq!(entry("file:///srv/cache?compression=none").name(), "publish:file:///srv/cache");
        assert!(matches!(entry("ssh://cache@host").target().unwrap(), CacheTarget::NixCopy { .. }));
        assert!(matches!(entry("ssh-ng://host?compress=true").target().unwrap(), CacheTarget::NixCopy { .. }));
        assert!(entry("file://relative").target().unwrap_err().contains("absolute"));
        assert!(entry("file:///x?compression=bz").target().unwrap_err().contains("compression=bz"));
        assert!(entry("file:///x?region=eu").target().unwrap_err().contains("region=eu"));
        let s3 = entry("s3://my-cache?endpoint=127.0.0.1:9000&scheme=http&region=eu-west-1&compression=zstd");
        assert_eq!(
            s3.target().unwrap(),
            CacheTarget::S3(S3Target {
                bucket: "my-cache".into(),
                region: "eu-west-1".into(),
                endpoint: Some("http://127.0.0.1:9000".into()),
                profile: "default".into(),
                credentials_file: None,
                compression: Compression::Zstd,
            })
        );
        assert!(entry("s3://Bad_Bucket").target().unwrap_err().contains("bucket"));
        assert!(entry("s3://cache?acl=public").target().unwrap_err().contains("acl=public"));
        assert!(entry("/srv/cache").target().is_err());
        assert!(entry("https://cache.example.org").target().is_err());
    }
}
