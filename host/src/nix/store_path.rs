//! Store paths: `/nix/store/<32 base-32 chars>-<name>`, checked once at the
//! boundary so that the rest of the host can pass them around as values.

use std::fmt;
use std::sync::{Arc, OnceLock};

/// The Nix store directory, `/nix/store` unless `NIX_STORE_DIR` says otherwise
/// (as for Nix itself).
pub fn store_dir() -> &'static str {
    static DIR: OnceLock<String> = OnceLock::new();
    DIR.get_or_init(|| {
        std::env::var("NIX_STORE_DIR")
            .ok()
            .filter(|d| d.starts_with('/'))
            .map(|d| d.trim_end_matches('/').to_owned())
            .unwrap_or_else(|| "/nix/store".to_owned())
    })
}

/// Nix's base-32 alphabet (no e, o, u, t).
pub(super) const BASE32_CHARS: &[u8; 32] = b"0123456789abcdfghijklmnpqrsvwxyz";
const HASH_LEN: usize = 32;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{path:?} is not a store path: {reason}")]
pub struct InvalidStorePath {
    pub path: String,
    pub reason: &'static str,
}

/// A validated, absolute store path (the top-level entry, without a
/// subpath inside it). Shared, not copied, when cloned: the queue holds
/// each of a hundred thousand steps' paths in several maps at once.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StorePath(Arc<str>);

impl StorePath {
    pub fn parse(path: &str) -> Result<StorePath, InvalidStorePath> {
        let invalid = |reason| InvalidStorePath { path: path.to_owned(), reason };
        let base = path
            .strip_prefix(store_dir())
            .and_then(|rest| rest.strip_prefix('/'))
            .ok_or_else(|| invalid("not inside the Nix store"))?;
        if base.contains('/') {
            return Err(invalid("names a file inside a store path"));
        }
        let bytes = base.as_bytes();
        if bytes.len() < HASH_LEN + 2 || bytes[HASH_LEN] != b'-' {
            return Err(invalid("no hash part"));
        }
        if !bytes[..HASH_LEN].iter().all(|c| BASE32_CHARS.contains(c)) {
            return Err(invalid("hash part is not Nix base-32"));
        }
        let name = &base[HASH_LEN + 1..];
        if name.starts_with('.') || !name.bytes().all(|c| c.is_ascii_alphanumeric() || b"+-._?=".contains(&c)) {
            return Err(invalid("name has characters Nix does not allow"));
        }
        Ok(StorePath(Arc::from(path)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The file name: `<hash>-<name>`.
    pub fn base_name(&self) -> &str {
        &self.0[store_dir().len() + 1..]
    }

    /// The 32-character hash that identifies the path in binary caches.
    pub fn hash_part(&self) -> &str {
        &self.base_name()[..HASH_LEN]
    }

    /// The human part after the hash, e.g. `hello-2.12.drv`.
    pub fn name(&self) -> &str {
        &self.base_name()[HASH_LEN + 1..]
    }

    pub fn is_derivation(&self) -> bool {
        self.0.ends_with(".drv")
    }

    /// The derivation name without `.drv`, as Nix prints it in messages.
    pub fn derivation_name(&self) -> &str {
        self.name().strip_suffix(".drv").unwrap_or(self.name())
    }
}

impl fmt::Display for StorePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for StorePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StorePath({})", self.0)
    }
}

impl AsRef<str> for StorePath {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl AsRef<std::path::Path> for StorePath {
    fn as_ref(&self) -> &std::path::Path {
        std::path::Path::new(&*self.0)
    }
}

impl std::str::FromStr for StorePath {
    type Err = InvalidStorePath;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        StorePath::parse(s)
    }
}

impl serde::Serialize for StorePath {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for StorePath {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        StorePath::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_parts() {
        let p = StorePath::parse("/nix/store/i3m7y37jdyi708p9xfrkxr9wn91bv2gf-ok.drv").unwrap();
        assert_eq!(p.hash_part(), "i3m7y37jdyi708p9xfrkxr9wn91bv2gf");
        assert_eq!(p.name(), "ok.drv");
        assert_eq!(p.derivation_name(), "ok");
        assert!(p.is_derivation());
    }

    #[test]
    fn rejects_what_is_not_a_store_path() {
        for bad in [
            "/tmp/i3m7y37jdyi708p9xfrkxr9wn91bv2gf-ok",
            "/nix/store/short-ok",
            "/nix/store/i3m7y37jdyi708p9xfrkxr9wn91bv2gf-ok/bin/sh",
            "/nix/store/e3m7y37jdyi708p9xfrkxr9wn91bv2gf-ok",
            "/nix/store/i3m7y37jdyi708p9xfrkxr9wn91bv2gf-a b",
            "/nix/store/i3m7y37jdyi708p9xfrkxr9wn91bv2gf-",
        ] {
            assert!(StorePath::parse(bad).is_err(), "{bad} accepted");
        }
    }
}
