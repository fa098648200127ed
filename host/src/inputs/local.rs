//! Files of this machine that a jobset may name: `path` inputs, git and svn
//! repositories given by a local path or `file://`, local flakes and the
//! local inputs of any flake. Whatever a project names is copied into the
//! store the server serves, so only what lies under
//! `evaluator.allowed_path_roots` may be named — and never the server's
//! own files (its data directory, its configuration, the files of secrets
//! it names), even where they lie under an allowed root. A root that the
//! operator allowed inside the data directory (the demo's) stays readable.

use std::path::{Path, PathBuf};

/// Why a project may not name a path or flake reference of this machine.
#[derive(Debug, thiserror::Error)]
pub enum PathRefused {
    #[error("{0:?} is not an absolute path")]
    NotAbsolute(String),
    #[error("local paths are not allowed on this server (evaluator.allowed_path_roots is empty)")]
    NoRoots,
    #[error("cannot read {}: {source}", .path.display())]
    Unreadable { path: PathBuf, source: std::io::Error },
    #[error("{} is not under a directory of evaluator.allowed_path_roots", .0.display())]
    NotUnderRoot(PathBuf),
    /// Inside the server's own files, or holding them (`how` says which).
    #[error("{} is refused: it {how} the server's own files (its data directory, configuration or secrets)", .path.display())]
    ServerFiles { path: PathBuf, how: &'static str },
    #[error("{0:?} is not a flake reference")]
    NotAFlakeReference(String),
    #[error("{0:?} asks for submodules, which are not fetched here")]
    Submodules(String),
}

/// The roots a project may read from, and what it may never read.
#[derive(Debug, Clone, Default)]
pub struct LocalFiles {
    /// Canonical allowed roots.
    roots: Vec<PathBuf>,
    /// Canonical private paths (those that exist).
    private: Vec<PathBuf>,
    /// Whether any root was configured at all (for the message).
    configured: bool,
}

impl LocalFiles {
    pub fn new(roots: &[PathBuf], private: &[PathBuf]) -> LocalFiles {
        LocalFiles {
            roots: roots.iter().filter_map(|r| r.canonicalize().ok()).collect(),
            private: private.iter().filter_map(|p| p.canonicalize().ok()).collect(),
            configured: !roots.is_empty(),
        }
    }

    /// The real location of the absolute path `value`, if a project may
    /// read it.
    pub fn check(&self, value: &str) -> Result<PathBuf, PathRefused> {
        let path = Path::new(value.trim());
        if !path.is_absolute() {
            return Err(PathRefused::NotAbsolute(value.to_owned()));
        }
        if !self.configured {
            return Err(PathRefused::NoRoots);
        }
        // Links and `..` resolved first, so that none leads out of a root.
        let real = path.canonicalize().map_err(|source| PathRefused::Unreadable { path: path.to_owned(), source })?;
        let Some(root) = self.roots.iter().filter(|root| real.starts_with(root)).max_by_key(|r| r.as_os_str().len())
        else {
            return Err(PathRefused::NotUnderRoot(path.to_owned()));
        };
        for private in &self.private {
            // Inside the server's files, unless the root itself was allowed
            // inside them (the demo's directory; not the data directory itself).
            let inside = real.starts_with(private) && !(root.starts_with(private) && root != private);
            // Holding them: copying it would copy them.
            let holding = private.starts_with(&real);
            if inside || holding {
                let how = if inside { "is among" } else { "holds" };
                return Err(PathRefused::ServerFiles { path: path.to_owned(), how });
            }
        }
        Ok(real)
    }

    /// A flake reference: one that names this machine's files (`path:`,
    /// `/…`, `file:`, `git+file:`, `tarball+file:`, …) must be allowed.
    /// Returns the reference to hand Nix: a bare path becomes `path:` with
    /// its real location, so that Nix does not look above it for a git
    /// repository (which would copy that whole repository).
    pub fn check_flake(&self, reference: &str) -> Result<String, PathRefused> {
        if reference.is_empty() || reference.contains(char::is_whitespace) {
            return Err(PathRefused::NotAFlakeReference(reference.to_owned()));
        }
        let (path, tail, scheme) = match FlakeReference::of(reference) {
            FlakeReference::Indirect => return Ok(reference.to_owned()),
            FlakeReference::Url { scheme, rest } => {
                let local = scheme == "path" || scheme == "file" || scheme.ends_with("+file");
                if !local {
                    if scheme.starts_with("git+") && refuses_submodules(rest) {
                        return Err(PathRefused::Submodules(reference.to_owned()));
                    }
                    return Ok(reference.to_owned());
                }
                let end = rest.find(['?', '#']).unwrap_or(rest.len());
                let path = &rest[..end];
                let path = path.strip_prefix("//localhost").or_else(|| path.strip_prefix("//")).unwrap_or(path);
                (path, &rest[end..], Some(scheme))
            }
            FlakeReference::Path => {
                let end = reference.find(['?', '#']).unwrap_or(reference.len());
                (&reference[..end], &reference[end..], None)
            }
        };
        if refuses_submodules(tail) {
            return Err(PathRefused::Submodules(reference.to_owned()));
        }
        let real = self.check(&percent_decoded(path))?;
        Ok(match scheme {
            Some(_) => reference.to_owned(),
            None => format!("path:{}{tail}", real.display()),
        })
    }

    /// The repository of a `git` or `svn` input value, when it is on this
    /// machine. Anything git or svn would read from the local file system
    /// counts: a path, `file://`, and for git a relative path (refused).
    pub fn check_repository(&self, kind: &str, value: &str) -> Result<(), PathRefused> {
        let Some(url) = value.split_whitespace().next() else { return Ok(()) };
        let local = if let Some(rest) = url.strip_prefix("file://") {
            Some(rest.strip_prefix("localhost").unwrap_or(rest).to_owned())
        } else if url.contains("://") || (kind == "git" && is_scp_like(url)) {
            None
        } else {
            Some(url.to_owned())
        };
        match local {
            None => Ok(()),
            Some(path) => self.check(&percent_decoded(&path)).map(drop),
        }
    }
}

/// How Nix reads a flake reference: a URL when a scheme comes before any
/// `/`, `?` or `#`; a name for the registry (`nixpkgs`, `nixpkgs/branch`,
/// `flake:…`); anything else is a path (which must then be absolute: Nix
/// would read a relative one from its working directory).
#[derive(Debug, PartialEq, Eq)]
enum FlakeReference<'a> {
    Indirect,
    Url { scheme: &'a str, rest: &'a str },
    Path,
}

impl<'a> FlakeReference<'a> {
    fn of(reference: &'a str) -> FlakeReference<'a> {
        let head = &reference[..reference.find(['/', '?', '#']).unwrap_or(reference.len())];
        if let Some((scheme, _)) = head.split_once(':') {
            let valid = scheme.chars().next().is_some_and(|c| c.is_ascii_lowercase())
                && scheme.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+.-".contains(c));
            if valid {
                if scheme == "flake" {
                    return FlakeReference::Indirect;
                }
                return FlakeReference::Url { scheme, rest: &reference[scheme.len() + 1..] };
            }
        }
        let name = reference.split(['?', '#']).next().unwrap_or_default();
        let mut parts = name.split('/');
        let id = parts.next().unwrap_or_default();
        let is_id = id.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && id.chars().all(|c| c.is_ascii_alphanumeric() || "_-".contains(c));
        let refs_valid = parts.all(|part| {
            part.chars().next().is_some_and(|c| c.is_ascii_alphanumeric() || c == '@')
                && part.chars().all(|c| c.is_ascii_alphanumeric() || "_.@+-".contains(c))
                && !part.contains("..")
        });
        if is_id && refs_valid { FlakeReference::Indirect } else { FlakeReference::Path }
    }
}

/// Whether a reference's query asks for git submodules: their URLs are in
/// the repository (any path of this machine), beyond every check.
fn refuses_submodules(query: &str) -> bool {
    query.split(['?', '&', '#']).any(|pair| matches!(pair, "submodules=1" | "submodules=true"))
}

/// git's rule: `[user@]host:path` (a colon before any slash) is SSH.
fn is_scp_like(url: &str) -> bool {
    match (url.find(':'), url.find('/')) {
        (Some(colon), Some(slash)) => colon < slash,
        (Some(_), None) => true,
        _ => false,
    }
}

/// `%XX` escapes of a URL's path decoded (`file:///srv/my%20repo`).
fn percent_decoded(path: &str) -> String {
    percent_encoding::percent_decode_str(path).decode_utf8_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A root holding a repository and the server's data directory.
    fn machine() -> (tempfile::TempDir, LocalFiles) {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["repo", "data/plugins", "data/demo"] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        std::fs::write(dir.path().join("orthrus.toml"), "").unwrap();
        let files = LocalFiles::new(
            &[dir.path().to_owned(), dir.path().join("data/demo")],
            &[dir.path().join("data"), dir.path().join("orthrus.toml")],
        );
        (dir, files)
    }

    #[test]
    fn only_allowed_roots_and_never_the_servers_files() {
        let (dir, files) = machine();
        let at = |p: &str| dir.path().join(p).display().to_string();
        assert!(files.check(&at("repo")).is_ok());
        assert!(files.check(&at("data/demo")).is_ok(), "a root allowed inside the data directory");
        for refused in ["data", "data/plugins", "orthrus.toml"] {
            assert!(files.check(&at(refused)).unwrap_err().to_string().contains("is among"), "{refused}");
        }
        assert!(files.check(&at("")).unwrap_err().to_string().contains("holds"), "a root holding the data directory");
        assert!(files.check("/etc").unwrap_err().to_string().contains("not under"));
        assert!(files.check("relative").unwrap_err().to_string().contains("absolute"));
        std::os::unix::fs::symlink(dir.path().join("data"), dir.path().join("repo/link")).unwrap();
        assert!(files.check(&at("repo/link")).is_err(), "a link into the data directory");
        assert!(LocalFiles::new(&[], &[]).check(&at("repo")).unwrap_err().to_string().contains("not allowed"));
        // Allowing the data directory itself does not open it.
        let data = dir.path().join("data");
        let opened = LocalFiles::new(std::slice::from_ref(&data), std::slice::from_ref(&data));
        assert!(opened.check(&at("data/plugins")).is_err());
    }

    #[test]
    fn git_and_svn_repositories_on_this_machine() {
        let (dir, files) = machine();
        let repo = dir.path().join("repo").display().to_string();
        let data = dir.path().join("data").display().to_string();
        assert!(files.check_repository("git", &format!("{repo} main")).is_ok());
        assert!(files.check_repository("git", &format!("file://{repo}")).is_ok());
        assert!(files.check_repository("git", &format!("file://{data}/plugins")).is_err());
        assert!(files.check_repository("git", "/etc").is_err());
        assert!(files.check_repository("git", "file:///etc/ssh").is_err());
        assert!(files.check_repository("git", "relative/repo").unwrap_err().to_string().contains("absolute"));
        assert!(files.check_repository("svn", "file:///srv/svn").is_err());
        assert!(files.check_repository("svn", &format!("file://{repo}")).is_ok());
        for remote in ["https://example.org/r.git", "git@github.com:a/b.git", "ssh://h/r", "svn://h/r"] {
            assert!(files.check_repository("git", remote).is_ok(), "{remote}");
        }
    }

    #[test]
    fn local_flakes() {
        let (dir, files) = machine();
        let repo = dir.path().join("repo").display().to_string();
        assert!(files.check_flake(&format!("path:{repo}?narHash=x")).is_ok());
        assert!(files.check_flake(&repo).is_ok());
        assert!(files.check_flake(&format!("git+file://{repo}?ref=main")).is_ok());
        assert!(files.check_flake("git+file:///srv/repo?ref=main").is_err(), "outside the roots");
        assert!(files.check_flake(&format!("git+file://{}/data", dir.path().display())).is_err());
        assert!(files.check_flake("path:/etc").unwrap_err().to_string().contains("not under"));
        assert!(files.check_flake("tarball+file:///etc/shadow").is_err());
        assert!(files.check_flake("file:///etc/passwd").is_err());
        assert!(files.check_flake("./here").unwrap_err().to_string().contains("absolute"));
        assert!(files.check_flake("a b").is_err());
        assert!(files.check_flake("github:NixOS/patchelf").is_ok());
        assert!(files.check_flake("nixpkgs/nixos-24.05").is_ok(), "a name for the registry");
        assert!(files.check_flake("flake:nixpkgs").is_ok());
        assert!(files.check_flake("git+https://example.org/r").is_ok());
        // What Nix reads as paths, whatever they look like.
        assert!(files.check_flake("/etc?x=a:b").unwrap_err().to_string().contains("not under"));
        assert!(files.check_flake("usr/../etc/nixos").unwrap_err().to_string().contains("absolute"));
        assert!(files.check_flake("etc").is_ok(), "a name for the registry, not a path");
        // A bare path is handed to Nix as `path:` at its real location.
        let real = dir.path().join("repo").canonicalize().unwrap();
        assert_eq!(files.check_flake(&format!("{repo}?dir=x")).unwrap(), format!("path:{}?dir=x", real.display()));
        assert_eq!(files.check_flake(&format!("git+file://{repo}")).unwrap(), format!("git+file://{repo}"));
        assert!(
            files.check_flake("git+https://example.org/r?submodules=1").unwrap_err().to_string().contains("submodules")
        );
    }

    #[test]
    fn flake_references_as_nix_reads_them() {
        assert_eq!(FlakeReference::of("nixpkgs"), FlakeReference::Indirect);
        assert_eq!(FlakeReference::of("nixpkgs/nixos-24.05/0123abc"), FlakeReference::Indirect);
        assert_eq!(FlakeReference::of("github:o/r"), FlakeReference::Url { scheme: "github", rest: "o/r" });
        assert_eq!(FlakeReference::of("/srv/f"), FlakeReference::Path);
        assert_eq!(FlakeReference::of("./f"), FlakeReference::Path);
        assert_eq!(FlakeReference::of("a/../b"), FlakeReference::Path);
        assert_eq!(FlakeReference::of("/x?y=a:b"), FlakeReference::Path);
    }
}
