//! The git plugin under the real Orthrus runtime, as a plugin author tests
//! a plugin: build it for wasm32-wasip2, load it, call it.

use std::path::Path;
use std::process::Command;

use orthrus_plugin_test::{AttrValue, TestHost};

fn git(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "Ann")
        .env("GIT_AUTHOR_EMAIL", "ann@example.org")
        .env("GIT_COMMITTER_NAME", "Ann")
        .env("GIT_COMMITTER_EMAIL", "ann@example.org")
        .output()
        .unwrap();
    assert!(output.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

#[tokio::test]
async fn fetches_a_branch_under_the_real_runtime() {
    let host = TestHost::build(env!("CARGO_MANIFEST_DIR")).await;
    assert_eq!(host.name(), "git");

    let repo = tempfile::tempdir().unwrap();
    git(repo.path(), &["init", "-q", "-b", "main"]);
    std::fs::write(repo.path().join("README"), "main\n").unwrap();
    git(repo.path(), &["add", "."]);
    git(repo.path(), &["commit", "-q", "-m", "on main"]);
    git(repo.path(), &["checkout", "-q", "-b", "feature"]);
    std::fs::write(repo.path().join("README"), "feature\n").unwrap();
    git(repo.path(), &["commit", "-q", "-am", "on feature"]);
    let feature = git(repo.path(), &["rev-parse", "HEAD"]).trim().to_owned();

    let url = format!("file://{}", repo.path().display());
    let fetched = host.runtime().fetch("git", "src", &format!("{url} feature")).await.unwrap();
    assert_eq!(fetched.revision, feature);
    assert_eq!(std::fs::read_to_string(fetched.store_path.as_str().to_owned() + "/README").unwrap(), "feature\n");
    assert!(fetched.attrs.contains(&("revCount".to_owned(), AttrValue::Int(2))));
    assert!(fetched.attrs.contains(&("shortRev".to_owned(), AttrValue::String(feature[..7].to_owned()))));

    let error = host.runtime().fetch("git", "src", &format!("{url} no-such-branch")).await.unwrap_err();
    assert!(error.to_string().contains("no-such-branch"), "{error}");
}
