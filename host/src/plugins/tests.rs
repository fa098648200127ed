//! The runtime under real plugins: the built-in git fetcher against a
//! real repository, grants, limits.

use super::*;

async fn runtime(dir: &Path) -> PluginRuntime {
    let db = Db::open(&format!("sqlite://{}", dir.join("db.sqlite").display())).await.unwrap();
    let nix = Nix::new(&crate::config::NixConfig::default());
    std::fs::create_dir_all(dir.join("repo")).unwrap();
    let setup = RuntimeSetup::in_dir(dir, PluginsConfig::default(), vec![dir.join("repo")]).await;
    PluginRuntime::start(setup, db, nix).await.unwrap()
}

fn git(dir: &Path, args: &[&str]) {
    let status = std::process::Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "Ann")
        .env("GIT_AUTHOR_EMAIL", "ann@example.org")
        .env("GIT_COMMITTER_NAME", "Ann")
        .env("GIT_COMMITTER_EMAIL", "ann@example.org")
        .status()
        .unwrap();
    assert!(status.success(), "git {args:?}");
}

#[tokio::test]
async fn builtin_git_fetches_a_repository() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime(dir.path()).await;
    let names: Vec<(String, PluginKind)> =
        runtime.plugins().iter().map(|p| (p.metadata.name.clone(), p.kind)).collect();
    for (name, kind) in [
        ("git", PluginKind::InputFetcher),
        ("svn", PluginKind::InputFetcher),
        ("email", PluginKind::Notifier),
        ("webhook", PluginKind::Notifier),
        ("github-status", PluginKind::Notifier),
        ("gitea-status", PluginKind::Notifier),
        ("file", PluginKind::Renderer),
        ("doc", PluginKind::Renderer),
        ("report", PluginKind::Renderer),
        ("nix-build", PluginKind::Renderer),
        ("channel", PluginKind::Renderer),
        ("official-release", PluginKind::ReleaseSet),
    ] {
        assert!(names.contains(&(name.to_owned(), kind)), "{name} is a built-in {kind}: {names:?}");
    }
    assert_eq!(names.len(), 12);
    assert_eq!(runtime.renderer_for("doc").as_deref(), Some("builtin:doc"));
    assert!(runtime.has_plugin("webhook", PluginKind::Notifier));
    assert!(!runtime.has_plugin("webhook", PluginKind::Renderer));
    let webhook = runtime.plugins().into_iter().find(|p| p.metadata.name == "webhook").unwrap();
    assert!(webhook.grants.http.is_none(), "HTTP hosts are only ever granted by the operator");
    assert_eq!(runtime.input_types(), ["git", "svn"]);
    let git_plugin = runtime.plugins().into_iter().find(|p| p.metadata.name == "git").unwrap();
    assert!(git_plugin.grants.process.as_ref().is_some_and(|p| p.programs.contains("git")));

    let repo = dir.path().join("repo");
    git(&repo, &["init", "-q", "-b", "main"]);
    std::fs::write(repo.join("default.nix"), "{ }").unwrap();
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-q", "-m", "first"]);
    let url = format!("file://{}", repo.display());
    let first = runtime.fetch("git", "src", &url).await.unwrap();
    assert_eq!(first.revision.len(), 40);
    assert!(std::path::Path::new(first.store_path.as_str()).join("default.nix").is_file());
    assert!(!std::path::Path::new(first.store_path.as_str()).join(".git").exists());
    assert!(first.attrs.contains(&("revCount".to_owned(), AttrValue::Int(1))));

    std::fs::write(repo.join("more.nix"), "{ }").unwrap();
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-q", "-m", "second"]);
    let second = runtime.fetch("git", "src", &format!("{url} main")).await.unwrap();
    assert_ne!(second.revision, first.revision);
    let changes = runtime.changes("git", &url, &first.revision, &second.revision).await.unwrap();
    assert_eq!(changes.len(), 1);
    assert_eq!((changes[0].message.as_str(), changes[0].email.as_str()), ("second", "ann@example.org"));

    assert!(runtime.check_value("git", "--upload-pack=x").await.is_err());
    assert!(runtime.check_value("git", &url).await.is_ok());
    let missing = runtime.fetch("git", "src", "file:///nonexistent/repo").await.unwrap_err();
    assert!(matches!(missing, PluginError::Failed(_)), "{missing}");
    assert!(matches!(runtime.fetch("hg", "src", "x").await, Err(PluginError::NoPlugin(_))));
}
