//! What a plugin author's tests compile: the runtime, not the server.

use std::process::Command;

#[test]
fn the_server_is_not_compiled_for_a_plugin_test() {
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    let output = Command::new(env!("CARGO"))
        .args(["tree", "--offline", "--edges", "normal", "--prefix", "none", "--format", "{p}", "--manifest-path"])
        .arg(manifest)
        .output()
        .expect("cargo tree runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let tree = String::from_utf8(output.stdout).unwrap();
    let crates: Vec<&str> = tree.lines().filter_map(|line| line.split_whitespace().next()).collect();
    assert!(crates.contains(&"wasmtime") && crates.contains(&"orthrus"), "the runtime is there: {crates:?}");
    for server_only in ["axum", "maud", "russh", "async-ssh2-tokio", "prometheus", "clap"] {
        assert!(!crates.contains(&server_only), "{server_only} is compiled for a plugin's tests");
    }
}
