//! Fetches git repositories for jobset inputs of type `git`, whose value is,
//! as in Hydra, `URL [BRANCH [DEEPCLONE]]`.
//!
//! A bare clone per repository is kept in the scratch directory between
//! evaluations, so that each fetch only transfers new commits. The sources
//! of the fetched commit are checked out without `.git` (unless DEEPCLONE
//! is true) and added to the Nix store. The expression receives `outPath`,
//! `rev`, `revCount`, `shortRev`, `lastModified` and `uri`, like Nix's own
//! `fetchGit`.

// On the host only the pure parts are used (by the tests): the exports are
// built for WebAssembly alone.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

use std::hash::{Hash, Hasher};

use orthrus_plugin_fetcher::{Capability, Change, Error, Fetched, InputFetcher, Metadata, attr, export_fetcher, host};

/// A parsed input value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    pub url: String,
    pub branch: Option<String>,
    pub deep_clone: bool,
}

/// Parses `URL [BRANCH [DEEPCLONE]]`. Words starting with `-` are refused:
/// they would reach git as options.
pub fn parse(value: &str) -> Result<Spec, Error> {
    let words: Vec<&str> = value.split_whitespace().collect();
    let (url, branch, deep) = match words.as_slice() {
        [] => return Err(Error::InvalidInput("a git input needs a repository URL: ‘URL [BRANCH [DEEPCLONE]]’".into())),
        [url] => (*url, None, None),
        [url, branch] => (*url, Some(*branch), None),
        [url, branch, deep] => (*url, Some(*branch), Some(*deep)),
        _ => {
            return Err(Error::InvalidInput(format!(
                "too many words in {value:?}: a git input is ‘URL [BRANCH [DEEPCLONE]]’"
            )));
        }
    };
    if url.starts_with('-') {
        return Err(Error::InvalidInput(format!("{url:?} is not a repository URL")));
    }
    if let Some(branch) = branch {
        let valid = !branch.starts_with('-')
            && !branch.contains("..")
            && !branch.ends_with(".lock")
            && branch.chars().all(|c| !c.is_control() && !" ~^:?*[\\".contains(c));
        if !valid {
            return Err(Error::InvalidInput(format!("{branch:?} is not a valid branch name")));
        }
    }
    let deep_clone = match deep {
        None => false,
        Some("1" | "true" | "yes") => true,
        Some("0" | "false" | "no") => false,
        Some(other) => {
            return Err(Error::InvalidInput(format!(
                "the third word says whether to keep .git: 1 or 0, not {other:?}"
            )));
        }
    };
    Ok(Spec { url: url.to_owned(), branch: branch.map(str::to_owned), deep_clone })
}

/// A name for the repository in the store: its last path component, without `.git`.
pub fn source_name(url: &str) -> String {
    let last = url.trim_end_matches('/').rsplit(['/', ':']).next().unwrap_or("source");
    let last = last.strip_suffix(".git").unwrap_or(last);
    let name: String =
        last.chars().map(|c| if c.is_ascii_alphanumeric() || "+-._".contains(c) { c } else { '_' }).collect();
    if name.is_empty() || name.starts_with('.') { "source".to_owned() } else { name }
}

/// The bare clone of a repository, relative to the scratch directory.
fn repo_dir(url: &str) -> String {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    url.hash(&mut hasher);
    format!("repos/{}-{:016x}.git", source_name(url), hasher.finish())
}

/// The ref the fetched commit is kept under, so that its history stays.
fn local_ref(branch: Option<&str>) -> String {
    match branch {
        Some(branch) => format!("refs/orthrus/branches/{branch}"),
        None => "refs/orthrus/head".to_owned(),
    }
}

fn git(repo: &str, args: &[&str]) -> Result<String, Error> {
    let git_dir = format!("--git-dir={repo}");
    let mut all = vec![git_dir.as_str()];
    all.extend_from_slice(args);
    host::run_ok("git", &all, "")
}

/// Fetches the branch (or the remote HEAD) into the bare clone; returns the commit.
fn update(spec: &Spec) -> Result<(String, String), Error> {
    let repo = repo_dir(&spec.url);
    if std::fs::metadata(format!("/scratch/{repo}")).is_err() {
        std::fs::create_dir_all("/scratch/repos").map_err(|e| format!("cannot create the clone directory: {e}"))?;
        host::run_ok("git", &["init", "--bare", "--quiet", &repo], "")?;
    }
    let source = match &spec.branch {
        Some(branch) => format!("refs/heads/{branch}"),
        None => "HEAD".to_owned(),
    };
    let target = local_ref(spec.branch.as_deref());
    git(&repo, &["fetch", "--quiet", "--force", "--no-tags", "--", &spec.url, &format!("+{source}:{target}")])?;
    let rev = git(&repo, &["rev-parse", "--verify", &format!("{target}^{{commit}}")])?.trim().to_owned();
    Ok((repo, rev))
}

struct Git;

impl InputFetcher for Git {
    fn metadata() -> Metadata {
        Metadata::new("git", env!("CARGO_PKG_VERSION"))
            .describe("Git repositories: ‘URL [BRANCH [DEEPCLONE]]’, as Hydra's git inputs")
            .handles(["git"])
            .needs(Capability::RunProgram("git".into()))
            .needs(Capability::AddToStore)
            .needs(Capability::Log)
    }

    fn check_value(value: &str) -> Result<(), Error> {
        parse(value).map(drop)
    }

    fn fetch(input: &str, value: &str) -> Result<Fetched, Error> {
        let spec = parse(value)?;
        let (repo, rev) = update(&spec)?;
        host::log::debug(&format!("{input}: {} is at {rev}", spec.url));
        let rev_count: i64 =
            git(&repo, &["rev-list", "--count", &rev])?.trim().parse().map_err(|_| "git rev-list gave no count")?;
        let last_modified: i64 =
            git(&repo, &["log", "-1", "--format=%ct", &rev])?.trim().parse().map_err(|_| "git log gave no time")?;

        // A fresh directory per fetch: concurrent fetches never share one.
        let name = source_name(&spec.url);
        let nonce =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let work = format!("checkouts/{rev}-{nonce}");
        let tree = format!("{work}/{name}");
        let _ = std::fs::remove_dir_all(format!("/scratch/{work}"));
        std::fs::create_dir_all(format!("/scratch/{tree}")).map_err(|e| format!("cannot create {tree}: {e}"))?;
        let checkout = if spec.deep_clone {
            host::run_ok("git", &["clone", "--quiet", "--no-checkout", &repo, &tree], "")
                .and_then(|_| host::run_ok("git", &["checkout", "--quiet", "--detach", &rev], &tree))
        } else {
            let work_tree = format!("--work-tree={tree}");
            git(&repo, &[&work_tree, "checkout", "--quiet", "--force", &rev, "--", "."])
        };
        let store_path = checkout.and_then(|_| host::add_to_store(&tree));
        let _ = std::fs::remove_dir_all(format!("/scratch/{work}"));
        let store_path = store_path?;

        Ok(Fetched {
            store_path,
            revision: rev.clone(),
            uri: spec.url.clone(),
            attrs: vec![
                attr::string("rev", &rev),
                attr::string("shortRev", &rev[..7.min(rev.len())]),
                attr::int("revCount", rev_count),
                attr::int("lastModified", last_modified),
                attr::string("uri", &spec.url),
                attr::string("branch", spec.branch.as_deref().unwrap_or("")),
            ],
        })
    }

    fn changes(value: &str, since: &str, until: &str) -> Result<Vec<Change>, Error> {
        let spec = parse(value)?;
        let repo = repo_dir(&spec.url);
        let range = format!("{since}..{until}");
        let log = git(&repo, &["log", "--format=%H%x1f%an%x1f%ae%x1f%ct%x1f%s%x1e", &range, "--"])?;
        Ok(parse_log(&log))
    }
}

/// Parses `git log` with fields separated by 0x1f and records by 0x1e.
pub fn parse_log(log: &str) -> Vec<Change> {
    log.split('\u{1e}')
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .filter_map(|record| {
            let fields: Vec<&str> = record.split('\u{1f}').collect();
            let [revision, author, email, time, message] = fields.as_slice() else { return None };
            Some(Change {
                revision: revision.to_string(),
                author: author.to_string(),
                email: email.to_string(),
                time: time.parse().unwrap_or(0),
                message: message.to_string(),
            })
        })
        .collect()
}

export_fetcher!(Git);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_as_hydra_writes_them() {
        assert_eq!(
            parse("https://example.org/a.git").unwrap(),
            Spec { url: "https://example.org/a.git".into(), branch: None, deep_clone: false }
        );
        assert_eq!(
            parse("git://h/r main 1").unwrap(),
            Spec { url: "git://h/r".into(), branch: Some("main".into()), deep_clone: true }
        );
        assert!(parse("").is_err());
        assert!(parse("--upload-pack=evil").is_err());
        assert!(parse("https://x/r --upload-pack=evil").is_err());
        assert!(parse("https://x/r main maybe").is_err());
        assert!(parse("https://x/r a..b").is_err());
    }

    #[test]
    fn names_for_the_store() {
        assert_eq!(source_name("https://github.com/NixOS/hydra.git"), "hydra");
        assert_eq!(source_name("git@github.com:acme/widget.git/"), "widget");
        assert_eq!(source_name("file:///srv/my repo"), "my_repo");
        assert_eq!(source_name(".."), "source");
    }

    #[test]
    fn log_records() {
        let changes = parse_log(
            "abc\u{1f}Ann\u{1f}ann@x\u{1f}17\u{1f}fix it\u{1e}\ndef\u{1f}Bo\u{1f}bo@x\u{1f}16\u{1f}start\u{1e}\n",
        );
        assert_eq!(changes.len(), 2);
        assert_eq!(changes[0].author, "Ann");
        assert_eq!(changes[1].time, 16);
    }
}
