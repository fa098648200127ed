//! What serving a Nix binary cache needs from the Nix side: Nix's base-32,
//! narinfo text, and signing keys in `nix-store --generate-binary-cache-key`
//! format. (Which paths are served, by hash part, is the database's:
//! `db/cache_paths.rs`.)

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{Signer, SigningKey as Ed25519Key};

use super::{PathInfo, StorePath};

/// Nix's base-32 encoding (least significant bits first, its own alphabet).
pub fn nix32_encode(bytes: &[u8]) -> String {
    let len = (bytes.len() * 8).div_ceil(5);
    (0..len)
        .rev()
        .map(|n| {
            let bit = n * 5;
            let (i, j) = (bit / 8, bit % 8);
            let low = u16::from(bytes[i]) >> j;
            let high = bytes.get(i + 1).map(|b| u16::from(*b) << (8 - j)).unwrap_or(0);
            super::store_path::BASE32_CHARS[usize::from((low | high) & 0x1f)] as char
        })
        .collect()
}

/// A NAR hash as narinfo files and signatures spell it: `sha256:<base-32>`,
/// from the hex or `sha256:`-prefixed form the store database gives.
pub fn nar_hash_for_narinfo(hash: &str) -> Result<String, String> {
    let hash = hash.trim();
    let body = hash.strip_prefix("sha256:").unwrap_or(hash);
    match body.len() {
        64 => {
            let bytes = hex::decode(body).map_err(|e| format!("bad NAR hash {hash:?}: {e}"))?;
            Ok(format!("sha256:{}", nix32_encode(&bytes)))
        }
        52 => Ok(format!("sha256:{body}")),
        _ => Err(format!("unexpected NAR hash {hash:?}")),
    }
}

/// A secret key of `nix-store --generate-binary-cache-key`: `name:base64`
/// of the 64-byte ed25519 key pair.
pub struct SigningKey {
    name: String,
    key: Ed25519Key,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({})", self.name)
    }
}

impl SigningKey {
    pub fn parse(text: &str) -> Result<SigningKey, String> {
        let (name, encoded) = text
            .trim()
            .split_once(':')
            .ok_or("a secret key has the form NAME:BASE64 (nix-store --generate-binary-cache-key)")?;
        let bytes = BASE64.decode(encoded).map_err(|e| format!("the key is not base64: {e}"))?;
        let pair: [u8; 64] =
            bytes.try_into().map_err(|b: Vec<u8>| format!("a secret key has 64 bytes, this one {}", b.len()))?;
        let key = Ed25519Key::from_keypair_bytes(&pair).map_err(|e| format!("not an ed25519 key pair: {e}"))?;
        Ok(SigningKey { name: name.to_owned(), key })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `name:base64` of the public key, as `trusted-public-keys` lists it.
    pub fn public_key(&self) -> String {
        format!("{}:{}", self.name, BASE64.encode(self.key.verifying_key().as_bytes()))
    }

    /// A narinfo `Sig:` value for a path.
    pub fn sign(&self, fingerprint: &str) -> String {
        format!("{}:{}", self.name, BASE64.encode(self.key.sign(fingerprint.as_bytes()).to_bytes()))
    }
}

/// What Nix signs of a path: `1;path;narHash;narSize;ref,ref,…`.
pub fn fingerprint(path: &StorePath, nar_hash: &str, nar_size: u64, references: &[StorePath]) -> String {
    let refs: Vec<&str> = references.iter().map(StorePath::as_str).collect();
    format!("1;{path};{nar_hash};{nar_size};{}", refs.join(","))
}

/// The narinfo of a valid path whose NAR is served uncompressed at
/// `nar/<hash part>.nar`.
pub fn narinfo(path: &StorePath, info: &PathInfo, key: Option<&SigningKey>) -> Result<String, String> {
    let url = format!("nar/{}.nar", path.hash_part());
    narinfo_of(path, info, key, &NarFile { url: &url, compression: "none", file: None })
}

/// Where a path's NAR is in a cache, and how it is stored there.
pub struct NarFile<'a> {
    /// Relative to the cache's root.
    pub url: &'a str,
    /// `none`, `xz`, `zstd`.
    pub compression: &'a str,
    /// The stored file's SHA-256 (`sha256:<base-32>`) and size, once known.
    pub file: Option<(&'a str, u64)>,
}

/// The narinfo of a valid path whose NAR is stored as `nar` says.
pub fn narinfo_of(
    path: &StorePath,
    info: &PathInfo,
    key: Option<&SigningKey>,
    nar: &NarFile,
) -> Result<String, String> {
    let nar_hash = nar_hash_for_narinfo(&info.nar_hash)?;
    let mut text = format!("StorePath: {path}\nURL: {}\nCompression: {}\n", nar.url, nar.compression);
    if let Some((file_hash, file_size)) = nar.file {
        text.push_str(&format!("FileHash: {file_hash}\nFileSize: {file_size}\n"));
    }
    text.push_str(&format!("NarHash: {nar_hash}\nNarSize: {}\n", info.nar_size));
    let refs: Vec<&str> = info.references.iter().map(StorePath::base_name).collect();
    text.push_str(&format!("References: {}\n", refs.join(" ")));
    if let Some(deriver) = &info.deriver {
        text.push_str(&format!("Deriver: {}\n", deriver.base_name()));
    }
    if let Some(key) = key {
        text.push_str(&format!("Sig: {}\n", key.sign(&fingerprint(path, &nar_hash, info.nar_size, &info.references))));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nix32_matches_nix() {
        // `nix-hash --type sha256 --to-base32` of the SHA-256 of "abc".
        let hex = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(nar_hash_for_narinfo(hex).unwrap(), "sha256:1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s");
        assert_eq!(nix32_encode(&[]), "");
        assert!(nar_hash_for_narinfo("sha256:1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s").is_ok());
        assert!(nar_hash_for_narinfo("nonsense").is_err());
    }

    #[test]
    fn keys_sign_and_refuse_garbage() {
        let pair: Vec<u8> = Ed25519Key::from_bytes(&[7u8; 32]).to_keypair_bytes().to_vec();
        let key = SigningKey::parse(&format!("cache-1:{}", BASE64.encode(&pair))).unwrap();
        assert!(key.public_key().starts_with("cache-1:"));
        assert!(key.sign("1;x").starts_with("cache-1:"));
        assert!(SigningKey::parse("nocolon").is_err());
        assert!(SigningKey::parse("k:AAAA").is_err());
    }
}
