//! What the store knows of valid paths: their NAR size and references
//! (from Nix's database), the sizes of closures, and a path's NAR as a
//! stream.

use std::collections::{HashMap, HashSet};
use std::process::Stdio;

use super::{Nix, NixError, PATHS_PER_CALL, StorePath};

/// A NAR being read from `nix-store --dump`; the process lives as long as
/// the reader (and is killed if the reader is dropped early).
pub struct NarReader {
    _child: tokio::process::Child,
    stdout: tokio::process::ChildStdout,
}

impl tokio::io::AsyncRead for NarReader {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().stdout).poll_read(cx, buf)
    }
}

/// What the store knows of a valid path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathInfo {
    /// As the store database gives it (hex, or `sha256:` and base-32).
    pub nar_hash: String,
    pub nar_size: u64,
    pub deriver: Option<StorePath>,
    pub references: Vec<StorePath>,
}

/// Parses `nix-store --dump-db`: per path, its name, hash, NAR size,
/// deriver (maybe empty), number of references and the references.
fn parse_dump_db(text: &str, infos: &mut HashMap<StorePath, PathInfo>) -> Result<(), String> {
    let mut lines = text.lines();
    while let Some(path) = lines.next() {
        if path.is_empty() {
            continue;
        }
        let path = StorePath::parse(path).map_err(|e| e.to_string())?;
        let mut field = |what: &str| lines.next().ok_or_else(|| format!("{path}: no {what}"));
        let nar_hash = field("hash")?.trim().to_owned();
        let nar_size = field("size")?.trim().parse().map_err(|_| format!("{path}: bad size"))?;
        let deriver = StorePath::parse(field("deriver")?.trim()).ok();
        let count: usize = field("reference count")?.trim().parse().map_err(|_| format!("{path}: bad count"))?;
        let mut references = Vec::with_capacity(count);
        for _ in 0..count {
            references.push(StorePath::parse(field("reference")?).map_err(|e| e.to_string())?);
        }
        infos.insert(path, PathInfo { nar_hash, nar_size, deriver, references });
    }
    Ok(())
}

/// For each group of paths (a build's outputs): the NAR size of the group
/// and of its closure, from what is known of the paths; and every path of
/// all the groups' closures.
pub fn group_sizes_from(
    groups: &[Vec<StorePath>],
    infos: &HashMap<StorePath, PathInfo>,
) -> (Vec<(u64, u64)>, Vec<StorePath>) {
    (groups.iter().map(|group| closure_size(group, infos)).collect(), infos.keys().cloned().collect())
}

/// NAR size of `group` and of everything it references, transitively.
fn closure_size(group: &[StorePath], infos: &HashMap<StorePath, PathInfo>) -> (u64, u64) {
    let own = group.iter().filter_map(|p| infos.get(p)).map(|i| i.nar_size).sum();
    let mut seen: HashSet<&StorePath> = HashSet::new();
    let mut stack: Vec<&StorePath> = group.iter().collect();
    let mut total = 0;
    while let Some(path) = stack.pop() {
        if !seen.insert(path) {
            continue;
        }
        if let Some(info) = infos.get(path) {
            total += info.nar_size;
            stack.extend(info.references.iter());
        }
    }
    (own, total)
}

impl Nix {
    /// NAR size and references of valid paths, from Nix's database
    /// (`nix-store --dump-db`, stable since long before Nix 2.0).
    pub async fn path_infos(&self, paths: &[StorePath]) -> Result<HashMap<StorePath, PathInfo>, NixError> {
        let mut infos = HashMap::with_capacity(paths.len());
        for chunk in paths.chunks(PATHS_PER_CALL) {
            let mut cmd = self.command("nix-store");
            cmd.arg("--dump-db").args(chunk.iter().map(StorePath::as_str));
            let out = self.run(cmd, "nix-store --dump-db".into()).await?;
            parse_dump_db(&String::from_utf8_lossy(&out), &mut infos)
                .map_err(|detail| NixError::UnexpectedOutput { command: "nix-store --dump-db".into(), detail })?;
        }
        Ok(infos)
    }

    /// The NAR serialisation of a valid path, as a stream (`nix-store --dump`).
    pub fn dump_nar(&self, path: &StorePath) -> Result<NarReader, NixError> {
        let mut cmd = self.command("nix-store");
        cmd.arg("--dump").arg(path.as_str()).stdout(Stdio::piped()).stderr(Stdio::null());
        let mut child = cmd.spawn().map_err(|source| NixError::Spawn { program: "nix-store".into(), source })?;
        let stdout = child.stdout.take().expect("stdout is piped");
        Ok(NarReader { _child: child, stdout })
    }

    /// For each group of paths (a build's outputs): the NAR size of the
    /// group and of its closure; and the closure of all groups together.
    /// Two calls of Nix for all groups together.
    pub async fn group_sizes(&self, groups: &[Vec<StorePath>]) -> Result<(Vec<(u64, u64)>, Vec<StorePath>), NixError> {
        let all: Vec<StorePath> = groups.iter().flatten().cloned().collect::<HashSet<_>>().into_iter().collect();
        if all.is_empty() {
            return Ok((vec![(0, 0); groups.len()], Vec::new()));
        }
        let closure = self.requisites(&all).await?;
        let infos = self.path_infos(&closure).await?;
        Ok((groups.iter().map(|group| closure_size(group, &infos)).collect(), closure))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closure_sizes_from_the_database_dump() {
        let dump = "/nix/store/00000000000000000000000000000000-a\nabc\n10\n\n1\n/nix/store/11111111111111111111111111111111-b\n/nix/store/11111111111111111111111111111111-b\ndef\n5\n/nix/store/22222222222222222222222222222222-b.drv\n1\n/nix/store/11111111111111111111111111111111-b\n";
        let mut infos = HashMap::new();
        parse_dump_db(dump, &mut infos).unwrap();
        assert_eq!(infos.len(), 2);
        let a = StorePath::parse("/nix/store/00000000000000000000000000000000-a").unwrap();
        let b = StorePath::parse("/nix/store/11111111111111111111111111111111-b").unwrap();
        assert_eq!(closure_size(std::slice::from_ref(&a), &infos), (10, 15));
        assert_eq!(closure_size(&[a, b], &infos), (15, 15));
        assert!(parse_dump_db("/nix/store/00000000000000000000000000000000-a\nabc\n", &mut infos).is_err());
    }
}
