//! `plugin-sdk/README.md` is a walkthrough: the code it shows must build
//! and load. Its files (code blocks whose info string names a path, such as
//! ```` ```rust tarball/src/lib.rs ````) are written into a fresh directory
//! beside a "checkout" (this repository), built for `wasm32-wasip2` as a
//! plugin author would, and inspected by the real `orthrus`.

use crate::harness::{Backend, Server, build_wasm};
use std::path::{Path, PathBuf};

/// The files the README shows, by path.
fn files_of(readme: &str) -> Vec<(String, String)> {
    let mut files = Vec::new();
    let mut lines = readme.lines();
    while let Some(line) = lines.next() {
        let Some(info) = line.strip_prefix("```") else { continue };
        let mut words = info.split_whitespace();
        let (Some(_language), Some(path)) = (words.next(), words.next()) else {
            // A block without a path: skip to its end.
            for inner in lines.by_ref() {
                if inner.starts_with("```") {
                    break;
                }
            }
            continue;
        };
        let mut text = String::new();
        for inner in lines.by_ref() {
            if inner.starts_with("```") {
                break;
            }
            text.push_str(inner);
            text.push('\n');
        }
        files.push((path.to_owned(), text));
    }
    files
}

#[test]
fn sdk_readme_builds_and_loads() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let readme = std::fs::read_to_string(root.join("plugin-sdk/README.md")).unwrap();
    let files = files_of(&readme);
    let plugins: Vec<&str> =
        files.iter().filter(|(p, _)| p.ends_with("Cargo.toml")).map(|(p, _)| p.split('/').next().unwrap()).collect();
    assert_eq!(plugins, ["tarball", "sbom", "build-log"], "the README's three walkthroughs");

    // `../orthrus` of the README is this checkout.
    let work = tempfile::tempdir().unwrap();
    let checkout = root.canonicalize().unwrap();
    for (path, text) in &files {
        let file = work.path().join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, text.replace("\"../orthrus/", &format!("\"{}/", checkout.display()))).unwrap();
    }
    let server = Server::start(Backend::Sqlite);
    for (plugin, kind, handles) in [
        ("tarball", "input fetcher", Some("tarball")),
        ("sbom", "renderer", Some("sbom")),
        ("build-log", "notifier", None),
    ] {
        let wasm = build(&root, &work.path().join(plugin));
        let inspected = server.cli_ok(&["plugin", "inspect", wasm.to_str().unwrap()], None);
        assert!(inspected.contains(&format!("{plugin} 0.1.0 ({kind}")), "{inspected}");
        if let Some(handles) = handles {
            assert!(inspected.contains(&format!("handles: {handles}")), "{inspected}");
        }
    }
    let inspected =
        server.cli_ok(&["plugin", "inspect", work.path().join("tarball/target.wasm").to_str().unwrap()], None);
    assert!(inspected.contains("asks for: run-program(curl), run-program(tar), add-to-store"), "{inspected}");
}

/// Builds a plugin crate as its author would (with the repository's lock
/// file, so that nothing newer is fetched), and returns its component.
fn build(root: &Path, crate_dir: &Path) -> PathBuf {
    std::fs::copy(root.join("Cargo.lock"), crate_dir.join("Cargo.lock")).unwrap();
    let target = root.join("target").join("sdk-readme");
    let built_ok = build_wasm(&crate_dir.join("Cargo.toml"), &target);
    assert!(built_ok, "building {} as the README says failed", crate_dir.display());
    let name = crate_dir.file_name().unwrap().to_string_lossy().replace('-', "_");
    let built = target.join(format!("wasm32-wasip2/release/{name}.wasm"));
    // Named as the plugin, as it would be in the plugin directory.
    let wasm = crate_dir.join("target.wasm");
    std::fs::copy(&built, &wasm).unwrap();
    wasm
}
