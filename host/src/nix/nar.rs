//! Nix archives written here, without a `nix-store --dump` per path
//! (whose start-up, about 22 ms, was most of publishing a small path):
//! the same bytes, as the NAR format defines them — each string as its
//! little-endian length and its bytes padded to 8; regular files (with the
//! executable flag when the owner may execute), symlinks (their target,
//! not followed) and directories (entries sorted bytewise).

use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::StorePath;

/// Writes the NAR of a valid store path to `out`.
pub fn dump(path: &StorePath, out: &mut impl Write) -> io::Result<()> {
    write_str(out, b"nix-archive-1")?;
    dump_node(Path::new(path.as_str()), out)
}

fn dump_node(path: &Path, out: &mut impl Write) -> io::Result<()> {
    let metadata = std::fs::symlink_metadata(path)?;
    write_str(out, b"(")?;
    write_str(out, b"type")?;
    let kind = metadata.file_type();
    if kind.is_symlink() {
        write_str(out, b"symlink")?;
        write_str(out, b"target")?;
        write_str(out, std::fs::read_link(path)?.as_os_str().as_bytes())?;
    } else if kind.is_dir() {
        write_str(out, b"directory")?;
        let mut entries: Vec<_> =
            std::fs::read_dir(path)?.map(|e| e.map(|e| e.file_name())).collect::<Result<_, _>>()?;
        entries.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        for name in entries {
            write_str(out, b"entry")?;
            write_str(out, b"(")?;
            write_str(out, b"name")?;
            write_str(out, name.as_bytes())?;
            write_str(out, b"node")?;
            dump_node(&path.join(&name), out)?;
            write_str(out, b")")?;
        }
    } else if kind.is_file() {
        write_str(out, b"regular")?;
        if metadata.permissions().mode() & 0o100 != 0 {
            write_str(out, b"executable")?;
            write_str(out, b"")?;
        }
        write_str(out, b"contents")?;
        let size = metadata.len();
        out.write_all(&size.to_le_bytes())?;
        let copied = io::copy(&mut std::fs::File::open(path)?.take(size), out)?;
        if copied != size {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, format!("{} changed while read", path.display())));
        }
        pad(out, size)?;
    } else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is not a file, directory or link", path.display()),
        ));
    }
    write_str(out, b")")
}

fn write_str(out: &mut impl Write, bytes: &[u8]) -> io::Result<()> {
    out.write_all(&(bytes.len() as u64).to_le_bytes())?;
    out.write_all(bytes)?;
    pad(out, bytes.len() as u64)
}

fn pad(out: &mut impl Write, len: u64) -> io::Result<()> {
    let padding = (8 - len % 8) % 8;
    out.write_all(&[0u8; 8][..padding as usize])
}

#[cfg(test)]
mod tests {
    use sha2::{Digest, Sha256};

    use super::*;

    /// The same bytes as `nix-store --dump`, for a tree with every kind of
    /// node (an executable, an empty file, a link, nested directories,
    /// names that sort differently by byte and by locale).
    #[test]
    fn nars_are_what_nix_dumps() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        std::fs::create_dir_all(tree.join("sub/deeper")).unwrap();
        std::fs::write(tree.join("Zeta"), b"upper").unwrap();
        std::fs::write(tree.join("alpha"), vec![7u8; 10_001]).unwrap();
        std::fs::write(tree.join("empty"), b"").unwrap();
        std::fs::write(tree.join("sub/run"), b"#!/bin/sh\necho hi\n").unwrap();
        std::fs::set_permissions(tree.join("sub/run"), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(tree.join("sub/deeper/x"), b"x").unwrap();
        std::os::unix::fs::symlink("../alpha", tree.join("sub/link")).unwrap();
        let added = std::process::Command::new("nix-store").arg("--add").arg(&tree).output().unwrap();
        assert!(added.status.success(), "{}", String::from_utf8_lossy(&added.stderr));
        let path = StorePath::parse(String::from_utf8(added.stdout).unwrap().trim()).unwrap();
        let theirs = std::process::Command::new("nix-store").args(["--dump", path.as_str()]).output().unwrap().stdout;
        let mut ours = Vec::new();
        dump(&path, &mut ours).unwrap();
        assert_eq!(Sha256::digest(&ours), Sha256::digest(&theirs), "{} bytes against {}", ours.len(), theirs.len());
        let _ = std::process::Command::new("nix-store").args(["--delete", path.as_str()]).output();
    }
}
