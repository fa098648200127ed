//! Plugins built against an older WIT version keep working beside those
//! of the newest: a renderer of `orthrus:plugin@0.1.0` (errors in strings)
//! and one of `@0.2.0` (typed errors) are loaded by the same server and
//! render the products of one build, each refusal and error in the words
//! its version has.

use serde_json::{Value, json};

use crate::harness::{Backend, MK, Options, Server, nonce, test_plugin, write};

#[test]
fn plugins_of_both_wit_versions_load_and_render() {
    let plugins = tempfile::tempdir().unwrap();
    std::fs::copy(test_plugin("legacy-renderer"), plugins.path().join("legacy-renderer.wasm")).unwrap();
    std::fs::copy(test_plugin("hostile-renderer"), plugins.path().join("hostile-renderer.wasm")).unwrap();
    let server = Server::start_with(
        Backend::Sqlite,
        Options { extra_tables: format!("[plugins]\ndir = \"{}\"\n", plugins.path().display()), ..Options::default() },
    );

    // Each says which version it was built against.
    let inspect = |file: &str| server.cli_ok(&["plugin", "inspect", plugins.path().join(file).to_str().unwrap()], None);
    let legacy = inspect("legacy-renderer.wasm");
    assert!(legacy.contains("(renderer, orthrus:plugin@0.1.0,") && legacy.contains("handles: legacy"), "{legacy}");
    let typed = inspect("hostile-renderer.wasm");
    assert!(typed.contains("(renderer, orthrus:plugin@0.2.0,") && typed.contains("handles: evil"), "{typed}");
    let listing = server.cli_ok(&["plugin", "list"], None);
    assert!(listing.contains("legacy-renderer 0.1.0 (renderer, orthrus:plugin@0.1.0"), "{listing}");
    assert!(listing.contains("(input fetcher, orthrus:plugin@0.2.0, built in)"), "the built-ins are 0.2.0: {listing}");

    let src = server.source_dir("src");
    write(
        &src.join("release.nix"),
        &format!(
            r#"{{ nonce }}:
let {MK}
in {{
  report = mk "report" ''
    mkdir -p $out/nix-support
    echo a > $out/shown.txt; echo b > $out/refused.txt; echo c > $out/odd.txt
    echo "legacy plain $out/shown.txt" >> $out/nix-support/hydra-build-products
    echo "legacy fail $out/refused.txt" >> $out/nix-support/hydra-build-products
    echo "evil odd $out/odd.txt" >> $out/nix-support/hydra-build-products
  '';
}}
"#
        ),
    );
    server.create_jobset(
        "versions",
        "main",
        &src,
        "release.nix",
        json!({ "nonce": { "type": "string", "value": nonce() } }),
    );
    let eval = server.wait_for_evals("versions", "main", 1);
    let builds = server.wait_for_eval_builds(eval["id"].as_i64().unwrap());
    let id = builds["report"]["id"].as_i64().unwrap();
    let page = server.get_json(&format!("/build/{id}"));
    let rendered = |subtype: &str| -> Value {
        let products = page["buildproducts"].as_object().unwrap();
        products.values().find(|p| p["subtype"] == subtype).unwrap_or_else(|| panic!("no {subtype}: {page}"))["rendered"]
            .clone()
    };

    // The 0.1.0 renderer renders; the host's typed refusal of its log line
    // reaches it in words, naming the plugin and where the grant goes.
    let shown = rendered("plain");
    let html = shown["html"].as_str().unwrap_or_else(|| panic!("{shown}"));
    assert!(html.contains("shown by a 0.1.0 renderer: shown.txt"), "{html}");
    assert!(
        html.contains("not granted: plugin ‘legacy-renderer’ may not write to the log")
            && html.contains("[plugins.grants.legacy-renderer]"),
        "{html}"
    );
    // Its string error is shown as the failure it is.
    let refused = rendered("fail");
    let error = refused["error"].as_str().unwrap_or_else(|| panic!("{refused}"));
    assert!(error.contains(&format!("the 0.1.0 renderer refuses refused.txt of build {id}")), "{error}");
    // The 0.2.0 renderer's typed error, beside it.
    let odd = rendered("odd");
    assert!(odd["error"].as_str().unwrap_or_else(|| panic!("{odd}")).contains("no idea how to show \"odd\""), "{odd}");
}
