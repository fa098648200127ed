//! Files inside a directory that someone else wrote: a build's output, an
//! input's checkout, a plugin's scratch directory. Every one of them may
//! hold symbolic links to anywhere (`ln -s / $out`), so a path inside is
//! opened only after its real location — every link resolved — is checked
//! to lie inside the real location of the root: Hydra's rule for build
//! products (`checkPath`), made stricter (inside the one output, not just
//! anywhere in the store).
//!
//! The roots this is used for do not change while they are read (store
//! paths are read-only once valid; a scratch directory belongs to the one
//! call reading it), so checking the resolved path and then opening it
//! without following a final link is enough: no component can be swapped
//! in between.

use std::fs::File;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

/// Why a path inside a root was not opened.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("{0:?} does not exist")]
    Missing(PathBuf),
    #[error("{0:?} is itself a symbolic link, so nothing in it is read")]
    RootIsLink(PathBuf),
    #[error("{path:?} leads outside {root:?} through a symbolic link")]
    LeadsOut { path: PathBuf, root: PathBuf },
    #[error("{path:?} is not a path inside {root:?}")]
    NotInside { path: PathBuf, root: PathBuf },
    #[error("{0:?} is not a regular file")]
    NotAFile(PathBuf),
    #[error("cannot read {path:?}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

impl Refused {
    fn io(path: &Path, source: std::io::Error) -> Refused {
        if source.kind() == std::io::ErrorKind::NotFound {
            Refused::Missing(path.to_owned())
        } else {
            Refused::Io { path: path.to_owned(), source }
        }
    }
}

/// A root whose real location is known: paths inside it are resolved and
/// checked against that.
#[derive(Debug, Clone)]
pub struct Confined {
    /// The root as it was named (a store path, say), for messages and for
    /// absolute paths that name things inside it.
    named: PathBuf,
    /// Where it really is (its parent's links resolved; it is no link).
    real: PathBuf,
}

/// What [`Confined::read`] read: at most the cap, and whether there was more.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capped {
    pub bytes: Vec<u8>,
    /// The file is larger than the cap: `bytes` is its beginning.
    pub truncated: bool,
}

impl Confined {
    /// The root at `root`, which must exist and must not itself be a link
    /// (an output made by `ln -s / $out` has nothing inside it to read).
    pub fn open(root: &Path) -> Result<Confined, Refused> {
        let metadata = std::fs::symlink_metadata(root).map_err(|e| Refused::io(root, e))?;
        if metadata.file_type().is_symlink() {
            return Err(Refused::RootIsLink(root.to_owned()));
        }
        let real = std::fs::canonicalize(root).map_err(|e| Refused::io(root, e))?;
        Ok(Confined { named: root.to_owned(), real })
    }

    /// The root as it was named.
    pub fn root(&self) -> &Path {
        &self.named
    }

    /// The real location of `relative` (plain names only: no `..`, not
    /// absolute), once every link is resolved, if that is inside the root.
    pub fn resolve(&self, relative: &Path) -> Result<PathBuf, Refused> {
        if relative.components().any(|c| !matches!(c, Component::Normal(_) | Component::CurDir)) {
            return Err(Refused::NotInside { path: relative.to_owned(), root: self.named.clone() });
        }
        // `join("")` would add a trailing slash, which a file root refuses.
        let within = |base: &Path| if relative.as_os_str().is_empty() { base.to_owned() } else { base.join(relative) };
        let shown = within(&self.named);
        let real = std::fs::canonicalize(within(&self.real)).map_err(|e| Refused::io(&shown, e))?;
        if real.starts_with(&self.real) {
            Ok(real)
        } else {
            Err(Refused::LeadsOut { path: shown, root: self.named.clone() })
        }
    }

    /// Like [`Confined::resolve`] for an absolute path that names something
    /// inside the root by the root's name (`/nix/store/…-x/doc/index.html`).
    pub fn resolve_named(&self, path: &Path) -> Result<PathBuf, Refused> {
        let relative = path
            .strip_prefix(&self.named)
            .map_err(|_| Refused::NotInside { path: path.to_owned(), root: self.named.clone() })?;
        self.resolve(relative)
    }

    /// Whether `relative` exists inside the root (a link leading out of it
    /// is an error, not a "no").
    pub fn exists(&self, relative: &Path) -> Result<bool, Refused> {
        match self.resolve(relative) {
            Ok(_) => Ok(true),
            Err(Refused::Missing(_)) => Ok(false),
            Err(other) => Err(other),
        }
    }

    /// Opens the regular file at `relative` inside the root.
    pub fn open_file(&self, relative: &Path) -> Result<(File, std::fs::Metadata), Refused> {
        let real = self.resolve(relative)?;
        let shown = || if relative.as_os_str().is_empty() { self.named.clone() } else { self.named.join(relative) };
        let (file, metadata) = open_regular(&real).map_err(|e| match e {
            Refused::Io { source, .. } => Refused::io(&shown(), source),
            Refused::NotAFile(_) => Refused::NotAFile(shown()),
            other => other,
        })?;
        // Checked again on what was opened: were a directory of the path
        // swapped for a link between the check and the open (an output
        // being rebuilt without a sandbox), the file is not inside.
        let opened =
            std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())).map_err(|e| Refused::io(&shown(), e))?;
        if !opened.starts_with(&self.real) {
            return Err(Refused::LeadsOut { path: shown(), root: self.named.clone() });
        }
        Ok((file, metadata))
    }

    /// Like [`Confined::open_file`] for a path named by the root's name.
    pub fn open_named_file(&self, path: &Path) -> Result<(File, std::fs::Metadata), Refused> {
        let relative = path
            .strip_prefix(&self.named)
            .map_err(|_| Refused::NotInside { path: path.to_owned(), root: self.named.clone() })?;
        self.open_file(relative)
    }

    /// Reads at most `cap` bytes of the regular file at `relative`; `None`
    /// if there is no such file.
    pub fn read(&self, relative: &Path, cap: u64) -> Result<Option<Capped>, Refused> {
        let (file, metadata) = match self.open_file(relative) {
            Ok(opened) => opened,
            Err(Refused::Missing(_)) => return Ok(None),
            Err(other) => return Err(other),
        };
        let mut bytes = Vec::with_capacity(metadata.len().min(cap) as usize);
        file.take(cap).read_to_end(&mut bytes).map_err(|e| Refused::io(&self.named, e))?;
        Ok(Some(Capped { bytes, truncated: metadata.len() > cap }))
    }
}

/// Opens a path already resolved (no links left in it) as a regular file,
/// refusing a link that appeared meanwhile and anything that is not a
/// regular file (a FIFO would block the reader forever).
fn open_regular(real: &Path) -> Result<(File, std::fs::Metadata), Refused> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(real)
        .map_err(|e| Refused::io(real, e))?;
    let metadata = file.metadata().map_err(|e| Refused::io(real, e))?;
    if !metadata.is_file() {
        return Err(Refused::NotAFile(real.to_owned()));
    }
    Ok((file, metadata))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    /// A root with a file, a directory, links inside and links out, and a
    /// sibling it must not reach (as another store path would be).
    fn tree() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("out");
        std::fs::create_dir_all(root.join("doc")).unwrap();
        std::fs::write(root.join("doc/index.html"), "hello").unwrap();
        std::fs::create_dir(dir.path().join("other")).unwrap();
        std::fs::write(dir.path().join("other/secret"), "secret").unwrap();
        symlink("doc/index.html", root.join("relative-inside")).unwrap();
        symlink(root.join("doc"), root.join("absolute-inside")).unwrap();
        symlink("/etc", root.join("etc")).unwrap();
        symlink("../other/secret", root.join("sibling")).unwrap();
        symlink(dir.path().join("other"), root.join("other")).unwrap();
        symlink("doc/../../other/secret", root.join("dotdot")).unwrap();
        symlink("missing", root.join("dangling")).unwrap();
        (dir, root)
    }

    #[test]
    fn links_inside_are_followed() {
        let (_dir, root) = tree();
        let confined = Confined::open(&root).unwrap();
        let real = std::fs::canonicalize(root.join("doc/index.html")).unwrap();
        assert_eq!(confined.resolve(Path::new("doc/index.html")).unwrap(), real);
        assert_eq!(confined.resolve(Path::new("relative-inside")).unwrap(), real);
        assert_eq!(confined.resolve(Path::new("absolute-inside/index.html")).unwrap(), real);
        assert_eq!(confined.resolve_named(&root.join("doc/./index.html")).unwrap(), real);
        let read = confined.read(Path::new("relative-inside"), 3).unwrap().unwrap();
        assert_eq!(read, Capped { bytes: b"hel".to_vec(), truncated: true });
        let read = confined.read(Path::new("doc/index.html"), 1 << 20).unwrap().unwrap();
        assert_eq!(read, Capped { bytes: b"hello".to_vec(), truncated: false });
    }

    #[test]
    fn links_out_are_refused() {
        let (_dir, root) = tree();
        let confined = Confined::open(&root).unwrap();
        for path in ["etc/hostname", "etc", "sibling", "other/secret", "dotdot"] {
            let refused = confined.resolve(Path::new(path)).unwrap_err();
            assert!(matches!(refused, Refused::LeadsOut { .. }), "{path}: {refused}");
            assert!(confined.read(Path::new(path), 100).is_err(), "{path} was read");
            assert!(confined.exists(Path::new(path)).is_err(), "{path}");
        }
        for path in ["../other/secret", "/etc/hostname"] {
            assert!(matches!(confined.resolve(Path::new(path)), Err(Refused::NotInside { .. })), "{path}");
        }
        assert!(matches!(confined.resolve_named(Path::new("/etc/hostname")), Err(Refused::NotInside { .. })));
        assert_eq!(confined.read(Path::new("dangling"), 100).unwrap(), None);
        assert_eq!(confined.read(Path::new("no-such-file"), 100).unwrap(), None);
        assert!(!confined.exists(Path::new("no-such-file")).unwrap());
        assert!(matches!(confined.open_file(Path::new("doc")), Err(Refused::NotAFile(_))));
    }

    #[test]
    fn a_root_may_be_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("spec.json");
        std::fs::write(&root, "{}").unwrap();
        let confined = Confined::open(&root).unwrap();
        assert_eq!(confined.read(Path::new(""), 100).unwrap().unwrap().bytes, b"{}");
        assert!(confined.resolve(Path::new("x")).is_err());
    }

    #[test]
    fn a_root_that_is_a_link_has_nothing_inside() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("out");
        symlink("/", &root).unwrap();
        assert!(matches!(Confined::open(&root), Err(Refused::RootIsLink(_))));
        assert!(matches!(Confined::open(&dir.path().join("none")), Err(Refused::Missing(_))));
    }

    #[test]
    fn a_fifo_is_not_opened() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let name = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0);
        let confined = Confined::open(dir.path()).unwrap();
        assert!(matches!(confined.read(Path::new("fifo"), 10), Err(Refused::NotAFile(_))));
    }
}
