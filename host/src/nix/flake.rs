//! Flakes: a reference locked to what it is now, and the references its
//! lock file names, read before Nix fetches any of them (a flake's own
//! `path:/etc` input must be refused, not copied into the store first).
//!
//! The flake's own source is fetched once (`nix flake prefetch`), its
//! `flake.lock` read from the store and every input it names given to the
//! caller to check; then it is locked (`nix flake metadata`), and the
//! source locked must be the one whose lock was checked (same NAR hash), so
//! that a server changing what it serves between the two fetches gains
//! nothing. Every Nix call here runs in an empty working directory: a
//! relative path would otherwise be read from the server's.

use std::path::Path;
use std::time::Duration;

use tokio::process::Command;

use super::{Nix, NixError, StorePath};
use crate::confined::Confined;

/// A lock file is a few kilobytes (tens for many inputs); more is refused.
const MAX_LOCK_FILE: u64 = 4 << 20;

/// Both Nix 2.8 and today's Nix have flakes behind this experimental flag.
pub(super) const FLAKE_FEATURES: [&str; 2] = ["--extra-experimental-features", "nix-command flakes"];

/// An input a lock file names, by its node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockInput {
    pub node: String,
    /// As a flake reference, for the kinds that can name this machine's
    /// files (`path:/…`, `git+file:///…`); `None` for forges (`github`);
    /// `Err` for what is refused whatever the roots (a kind this server
    /// does not know, git submodules).
    pub reference: Result<Option<String>, String>,
}

/// A flake's source as fetched, and what its lock file names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlakeSource {
    /// The NAR hash of the source fetched (`sha256-…`).
    pub nar_hash: String,
    pub inputs: Vec<LockInput>,
}

/// What `nix flake metadata` says of a flake reference: the reference
/// locked to one revision (or NAR hash), which evaluates the same forever.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockedFlake {
    pub url: String,
    /// The NAR hash of the source locked, when Nix says it.
    pub nar_hash: Option<String>,
    /// The flake's inputs as Nix locked them (transitive ones included).
    pub inputs: Vec<LockInput>,
}

impl LockedFlake {
    /// Reads `nix flake metadata --json`: `url` is the locked reference (what
    /// Hydra reads); `lockedUrl`, which some Nix versions add, is preferred
    /// when present, as it is never the original.
    fn from_metadata(json: &[u8]) -> Result<LockedFlake, String> {
        let value: serde_json::Value =
            serde_json::from_slice(json).map_err(|e| format!("cannot read nix flake metadata's output: {e}"))?;
        let url = value
            .get("lockedUrl")
            .or_else(|| value.get("url"))
            .and_then(serde_json::Value::as_str)
            .ok_or("nix flake metadata gave no locked URL")?
            .to_owned();
        let nar_hash = value.pointer("/locked/narHash").and_then(serde_json::Value::as_str).map(str::to_owned);
        let inputs = lock_inputs(value.get("locks").unwrap_or(&serde_json::Value::Null));
        Ok(LockedFlake { url, nar_hash, inputs })
    }
}

/// Every input node of a lock file (its `locked` and its `original`).
fn lock_inputs(lock: &serde_json::Value) -> Vec<LockInput> {
    let nodes = lock.get("nodes").and_then(serde_json::Value::as_object);
    let root = lock.get("root").and_then(serde_json::Value::as_str).unwrap_or("root");
    let mut inputs = Vec::new();
    for (name, node) in nodes.into_iter().flatten().filter(|(name, _)| name.as_str() != root) {
        for part in [node.get("locked"), node.get("original")].into_iter().flatten() {
            inputs.push(LockInput { node: name.clone(), reference: reference_of(part) });
        }
    }
    inputs
}

/// A lock file's input as a flake reference (see [`LockInput::reference`]).
fn reference_of(input: &serde_json::Value) -> Result<Option<String>, String> {
    let field = |name: &str| input.get(name).and_then(serde_json::Value::as_str);
    let kind = field("type").ok_or("an input without a type")?;
    if input.get("submodules").is_some_and(|s| s == true || s == 1) {
        return Err("it asks for git submodules, which are not fetched here".into());
    }
    match kind {
        "path" => Ok(Some(format!("path:{}", field("path").ok_or("a path input without a path")?))),
        "git" | "hg" | "tarball" | "file" => {
            let url = field("url").ok_or("an input without a URL")?;
            Ok(Some(format!("{kind}+{}", with_scheme(url))))
        }
        "github" | "gitlab" | "sourcehut" | "indirect" => Ok(None),
        other => Err(format!("inputs of type {other:?} are not fetched here")),
    }
}

/// A git URL as Nix completes one without a scheme (`fixGitURL`): a path is
/// `file://`, `host:path` is SSH; a relative path stays relative, for the
/// check to refuse.
fn with_scheme(url: &str) -> String {
    if url.contains("://") {
        url.to_owned()
    } else if url.starts_with('/') {
        format!("file://{url}")
    } else {
        match (url.find(':'), url.find('/')) {
            (Some(colon), slash) if slash.is_none_or(|slash| colon < slash) => {
                format!("ssh://{}", url.replacen(':', "/", 1))
            }
            _ => url.to_owned(),
        }
    }
}

impl Nix {
    /// `nix` with flakes on, in an empty working directory (kept alive by
    /// the returned guard) and without NIX_PATH.
    fn flake_command(&self) -> Result<(Command, tempfile::TempDir), NixError> {
        let cwd = tempfile::tempdir().map_err(|source| NixError::Spawn { program: "nix".into(), source })?;
        let mut cmd = self.command("nix");
        cmd.args(FLAKE_FEATURES).current_dir(cwd.path()).env_remove("NIX_PATH");
        Ok((cmd, cwd))
    }

    /// Locks a flake reference: fetches it and returns the reference pinned
    /// to what was fetched. `--refresh` fetches a branch again even within
    /// Nix's cache period, so that a push is seen at once; the flake's lock
    /// file is never written back.
    pub async fn lock_flake(&self, reference: &str, timeout: Duration) -> Result<LockedFlake, NixError> {
        let (mut cmd, _cwd) = self.flake_command()?;
        cmd.args(["flake", "metadata", "--json", "--refresh", "--no-write-lock-file", "--no-update-lock-file", "--"])
            .arg(reference);
        let what = format!("locking the flake {reference}");
        let out = match tokio::time::timeout(timeout, self.run(cmd, what.clone())).await {
            Ok(out) => out?,
            Err(_) => {
                return Err(NixError::Failed {
                    command: what,
                    message: format!("timed out after {} seconds", timeout.as_secs()),
                });
            }
        };
        LockedFlake::from_metadata(&out).map_err(|message| NixError::Failed { command: what, message })
    }

    /// Fetches a flake's own source tree — not its inputs — and reads what
    /// its lock file names, for the caller to check before anything else is
    /// fetched (`nix flake prefetch`).
    pub async fn fetch_flake_source(&self, reference: &str, timeout: Duration) -> Result<FlakeSource, NixError> {
        let what = format!("fetching the flake {reference}");
        let failed = |message: String| NixError::Failed { command: what.clone(), message };
        let (mut cmd, _cwd) = self.flake_command()?;
        // `prefetch` reads the global flake registry (from the network) even
        // for a reference that needs none: a direct one is given an empty
        // registry, so that a server without network fetches local flakes.
        let empty_registry = tempfile::NamedTempFile::new().map_err(|e| failed(e.to_string()))?;
        if is_direct(reference) {
            std::fs::write(empty_registry.path(), EMPTY_REGISTRY).map_err(|e| failed(e.to_string()))?;
            cmd.args(["--option", "flake-registry"]).arg(empty_registry.path());
        }
        cmd.args(["flake", "prefetch", "--json", "--refresh", "--"]).arg(reference);
        let out = tokio::time::timeout(timeout, self.run(cmd, what.clone()))
            .await
            .map_err(|_| failed(format!("timed out after {} seconds", timeout.as_secs())))??;
        let value: serde_json::Value =
            serde_json::from_slice(&out).map_err(|e| failed(format!("cannot read its output: {e}")))?;
        let source = value["storePath"].as_str().ok_or_else(|| failed("it gave no store path".into()))?;
        let source = StorePath::parse(source)?;
        let nar_hash = value["hash"].as_str().ok_or_else(|| failed("it gave no hash".into()))?.to_owned();
        let dir = flake_dir(reference).map_err(failed)?;
        let lock_file = Path::new(&dir).join("flake.lock");
        let text = tokio::task::spawn_blocking(move || {
            Confined::open(Path::new(source.as_str())).and_then(|root| root.read(&lock_file, MAX_LOCK_FILE))
        })
        .await
        .map_err(|e| failed(e.to_string()))?
        .map_err(|e| failed(format!("its flake.lock cannot be read: {e}")))?;
        let inputs = match text {
            None => Vec::new(),
            Some(text) if text.truncated => {
                return Err(failed(format!("its flake.lock is larger than {} MiB", MAX_LOCK_FILE >> 20)));
            }
            Some(text) => {
                let lock: serde_json::Value = serde_json::from_slice(&text.bytes)
                    .map_err(|e| failed(format!("its flake.lock is not valid JSON: {e}")))?;
                lock_inputs(&lock)
            }
        };
        Ok(FlakeSource { nar_hash, inputs })
    }
}

/// A flake registry with no entries.
const EMPTY_REGISTRY: &str = r#"{"flakes":[],"version":2}"#;

/// Whether a reference names its flake by itself (`git+https://…`,
/// `path:/…`, `/…`), not through a registry (`nixpkgs`, `flake:nixpkgs`).
fn is_direct(reference: &str) -> bool {
    if reference.starts_with('/') {
        return true;
    }
    match (reference.find(':'), reference.find('/')) {
        (Some(colon), slash) if slash.is_none_or(|slash| colon < slash) => !reference.starts_with("flake:"),
        _ => false,
    }
}

/// The flake's directory inside its source (`?dir=sub`), which must stay
/// inside it.
fn flake_dir(reference: &str) -> Result<String, String> {
    let query = reference.split_once('?').map(|(_, q)| q.split('#').next().unwrap_or(q)).unwrap_or("");
    let dir = query.split('&').find_map(|pair| pair.strip_prefix("dir=")).unwrap_or("");
    let dir = percent_encoding::percent_decode_str(dir).decode_utf8_lossy().into_owned();
    if Path::new(&dir).components().all(|c| matches!(c, std::path::Component::Normal(_))) {
        Ok(dir)
    } else {
        Err(format!("its dir {dir:?} is not a directory inside it"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locked_flakes_from_old_and_new_metadata() {
        // Nix 2.8 gives the locked reference as `url`; `lockedUrl`, when a
        // Nix gives it, wins.
        let old = br#"{"url":"git+file:///r?ref=main&rev=abc","revision":"abc","locked":{"narHash":"sha256-x"},
            "locks":{"nodes":{"root":{},
            "a":{"locked":{"type":"path","path":"/etc/ssh","narHash":"x"}},
            "b":{"locked":{"type":"tarball","url":"file:///srv/t.tar"}},
            "c":{"locked":{"type":"github","owner":"o","repo":"r","rev":"abc"}}},"root":"root"}}"#;
        let locked = LockedFlake::from_metadata(old).unwrap();
        assert_eq!(locked.url, "git+file:///r?ref=main&rev=abc");
        assert_eq!(locked.nar_hash.as_deref(), Some("sha256-x"));
        let mut references: Vec<_> = locked.inputs.into_iter().filter_map(|i| i.reference.unwrap()).collect();
        references.sort();
        assert_eq!(references, ["path:/etc/ssh", "tarball+file:///srv/t.tar"]);
        let new = br#"{"lockedUrl":"git+file:///r?rev=abc","url":"git+file:///r","revision":"abc"}"#;
        assert_eq!(LockedFlake::from_metadata(new).unwrap().url, "git+file:///r?rev=abc");
        assert!(LockedFlake::from_metadata(b"{}").unwrap_err().contains("no locked URL"));
    }

    #[test]
    fn lock_files_name_their_inputs() {
        let lock: serde_json::Value = serde_json::from_str(
            r#"{"nodes":{"root":{"inputs":{"a":"a","b":"b","c":"c","d":"d","e":"e"}},
            "a":{"locked":{"type":"path","path":"/srv/a","narHash":"x"},"original":{"type":"path","path":"/etc"}},
            "b":{"locked":{"type":"github","owner":"o","repo":"r","rev":"abc"},"original":{"type":"github","owner":"o","repo":"r"}},
            "c":{"locked":{"type":"git","url":"/etc/nixos","rev":"abc"}},
            "d":{"locked":{"type":"git","url":"https://example.org/r","submodules":true}},
            "e":{"locked":{"type":"mercurial-ish","url":"x"}}},
            "root":"root","version":7}"#,
        )
        .unwrap();
        let inputs = lock_inputs(&lock);
        let of = |node: &str| -> Vec<Result<Option<String>, String>> {
            inputs.iter().filter(|i| i.node == node).map(|i| i.reference.clone()).collect()
        };
        assert_eq!(of("a"), [Ok(Some("path:/srv/a".into())), Ok(Some("path:/etc".into()))]);
        assert_eq!(of("b"), [Ok(None), Ok(None)]);
        assert_eq!(of("c"), [Ok(Some("git+file:///etc/nixos".into()))], "a git URL without a scheme is a path");
        assert!(of("d")[0].as_ref().unwrap_err().contains("submodules"));
        assert!(of("e")[0].as_ref().unwrap_err().contains("not fetched here"));
        assert_eq!(with_scheme("git@host:o/r.git"), "ssh://git@host/o/r.git");
        assert_eq!(with_scheme("relative/repo"), "relative/repo");
        assert_eq!(flake_dir("git+file:///r?ref=main&dir=sub%2Fflake").unwrap(), "sub/flake");
        assert_eq!(flake_dir("github:o/r").unwrap(), "");
        assert!(flake_dir("path:/r?dir=../..").is_err());
        for direct in ["git+file:///r", "/srv/flake", "github:o/r", "path:/x"] {
            assert!(is_direct(direct), "{direct}");
        }
        for indirect in ["nixpkgs", "nixpkgs/nixos-24.05", "flake:nixpkgs"] {
            assert!(!is_direct(indirect), "{indirect}");
        }
    }
}
