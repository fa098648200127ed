//! Fetches Subversion repositories for jobset inputs of type `svn`, whose
//! value is, as in Hydra, `URL [REVISION]`. The expression receives
//! `outPath`, `rev` and `uri`.

// On the host only the pure parts are used (by the tests): the exports are
// built for WebAssembly alone.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

use orthrus_plugin_fetcher::{Capability, Change, Error, Fetched, InputFetcher, Metadata, attr, export_fetcher, host};

/// A parsed input value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    pub url: String,
    /// A fixed revision; the latest one when absent.
    pub revision: Option<u64>,
}

pub fn parse(value: &str) -> Result<Spec, Error> {
    let words: Vec<&str> = value.split_whitespace().collect();
    let (url, revision) = match words.as_slice() {
        [] => return Err(Error::InvalidInput("an svn input needs a repository URL: ‘URL [REVISION]’".into())),
        [url] => (*url, None),
        [url, revision] => {
            let revision: u64 = revision.parse().map_err(|_| format!("{revision:?} is not a revision number"))?;
            (*url, Some(revision))
        }
        _ => return Err(Error::InvalidInput(format!("too many words in {value:?}: an svn input is ‘URL [REVISION]’"))),
    };
    if url.starts_with('-') || !url.contains("://") {
        return Err(Error::InvalidInput(format!(
            "{url:?} is not a repository URL (svn://, http(s)://, file://, svn+ssh://)"
        )));
    }
    Ok(Spec { url: url.to_owned(), revision })
}

fn source_name(url: &str) -> String {
    let last = url.trim_end_matches('/').rsplit('/').next().unwrap_or("source");
    let name: String =
        last.chars().map(|c| if c.is_ascii_alphanumeric() || "+-._".contains(c) { c } else { '_' }).collect();
    if name.is_empty() || name.starts_with('.') { "source".to_owned() } else { name }
}

fn svn(args: &[&str], directory: &str) -> Result<String, Error> {
    let mut all = vec!["--non-interactive", "--quiet"];
    all.extend_from_slice(args);
    host::run_ok("svn", &all, directory)
}

/// The value of one `<tag>…</tag>` of `svn … --xml` output.
fn xml_text<'a>(xml: &'a str, tag: &str) -> Option<&'a str> {
    let start = xml.find(&format!("<{tag}>"))? + tag.len() + 2;
    let end = xml[start..].find(&format!("</{tag}>"))? + start;
    Some(&xml[start..end])
}

/// Undoes the five XML entities `svn --xml` writes.
fn xml_unescape(text: &str) -> String {
    text.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"").replace("&apos;", "'").replace("&amp;", "&")
}

struct Svn;

impl InputFetcher for Svn {
    fn metadata() -> Metadata {
        Metadata::new("svn", env!("CARGO_PKG_VERSION"))
            .describe("Subversion repositories: ‘URL [REVISION]’, as Hydra's svn inputs")
            .handles(["svn"])
            .needs(Capability::RunProgram("svn".into()))
            .needs(Capability::AddToStore)
            .needs(Capability::Log)
    }

    fn check_value(value: &str) -> Result<(), Error> {
        parse(value).map(drop)
    }

    fn fetch(input: &str, value: &str) -> Result<Fetched, Error> {
        let spec = parse(value)?;
        let peg = match spec.revision {
            Some(revision) => format!("{}@{revision}", spec.url),
            None => format!("{}@HEAD", spec.url),
        };
        // The revision that last changed the tree: the same sources, the same revision.
        let revision = host::run_ok(
            "svn",
            &["--non-interactive", "info", "--show-item", "last-changed-revision", "--", &peg],
            "",
        )?
        .trim()
        .to_owned();
        if revision.is_empty() || !revision.chars().all(|c| c.is_ascii_digit()) {
            return Err(Error::Failed(format!("svn info gave no revision for {}", spec.url)));
        }
        host::log::debug(&format!("{input}: {} is at r{revision}", spec.url));
        let nonce =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let work = format!("exports/{revision}-{nonce}");
        let tree = format!("{work}/{}", source_name(&spec.url));
        std::fs::create_dir_all(format!("/scratch/{work}")).map_err(|e| format!("cannot create {work}: {e}"))?;
        let exported =
            svn(&["export", "--force", "-r", &revision, "--", &format!("{}@{revision}", spec.url), &tree], "");
        let store_path = exported.and_then(|_| host::add_to_store(&tree));
        let _ = std::fs::remove_dir_all(format!("/scratch/{work}"));
        Ok(Fetched {
            store_path: store_path?,
            revision: revision.clone(),
            uri: spec.url.clone(),
            attrs: vec![attr::int("rev", revision.parse().unwrap_or(0)), attr::string("uri", &spec.url)],
        })
    }

    fn changes(value: &str, since: &str, until: &str) -> Result<Vec<Change>, Error> {
        let spec = parse(value)?;
        let since: u64 = since.parse().map_err(|_| format!("{since:?} is not a revision"))?;
        let range = format!("{until}:{}", since + 1);
        let xml = host::run_ok("svn", &["--non-interactive", "log", "--xml", "-r", &range, "--", &spec.url], "")?;
        Ok(parse_log(&xml))
    }
}

/// The entries of `svn log --xml`, in its order.
pub fn parse_log(xml: &str) -> Vec<Change> {
    xml.split("<logentry")
        .skip(1)
        .filter_map(|entry| {
            let revision = entry.split("revision=\"").nth(1)?.split('"').next()?.to_owned();
            let author = xml_text(entry, "author").map(xml_unescape).unwrap_or_default();
            let message = xml_text(entry, "msg").map(xml_unescape).unwrap_or_default();
            Some(Change { revision, email: String::new(), author, time: 0, message })
        })
        .collect()
}

export_fetcher!(Svn);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_as_hydra_writes_them() {
        assert_eq!(parse("svn://h/repo/trunk").unwrap(), Spec { url: "svn://h/repo/trunk".into(), revision: None });
        assert_eq!(parse("file:///srv/r 12").unwrap().revision, Some(12));
        assert!(parse("svn://h/r head").is_err());
        assert!(parse("--config-dir=/etc").is_err());
        assert!(parse("").is_err());
    }

    #[test]
    fn log_entries() {
        let xml = r#"<?xml version="1.0"?><log><logentry revision="3"><author>ann</author><date>x</date><msg>fix &amp; test</msg></logentry><logentry revision="2"><author>bo</author><msg>start</msg></logentry></log>"#;
        let changes = parse_log(xml);
        assert_eq!(changes.len(), 2);
        assert_eq!(changes[0].revision, "3");
        assert_eq!(changes[0].message, "fix & test");
        assert_eq!(changes[1].author, "bo");
    }
}
