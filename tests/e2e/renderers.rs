//! A hostile renderer — an endless loop, megabytes of HTML, scripts, a
//! `javascript:` link, a panic — cannot break the build page: each product
//! shows its own error or its sanitised HTML, the others render, and the
//! page answers again from what was rendered.

use serde_json::{Value, json};

use crate::harness::{Backend, MK, Options, Server, nonce, test_plugin, write};
use crate::on_both_backends;

fn hostile_renderer(backend: Backend) {
    let plugins = tempfile::tempdir().unwrap();
    std::fs::copy(test_plugin("hostile-renderer"), plugins.path().join("hostile-renderer.wasm")).unwrap();
    let server = Server::start_with(
        backend,
        Options {
            extra_tables: format!(
                "[plugins]\ndir = \"{}\"\nfuel_millions = 50\nrender_timeout_ms = 500\n",
                plugins.path().display()
            ),
            ..Options::default()
        },
    );
    let src = server.source_dir("src");
    write(
        &src.join("release.nix"),
        &format!(
            r#"{{ nonce }}:
let {MK}
in {{
  report = mk "report" ''
    mkdir -p $out/nix-support
    for kind in loop huge script link panic; do echo $kind > $out/$kind; echo "evil $kind $out/$kind" >> $out/nix-support/hydra-build-products; done
    echo hello > $out/hello.txt
    echo "file binary-dist $out/hello.txt" >> $out/nix-support/hydra-build-products
    echo "nix-build none $out" >> $out/nix-support/hydra-build-products
    echo "channel hello $out" >> $out/nix-support/hydra-build-products
  '';
}}
"#
        ),
    );
    server.create_jobset(
        "evil",
        "main",
        &src,
        "release.nix",
        json!({ "nonce": { "type": "string", "value": nonce() } }),
    );
    let eval = server.wait_for_evals("evil", "main", 1);
    let builds = server.wait_for_eval_builds(eval["id"].as_i64().unwrap());
    let id = builds["report"]["id"].as_i64().unwrap();

    let page = server.get_json(&format!("/build/{id}"));
    let products = page["buildproducts"].as_object().unwrap();
    assert_eq!(products.len(), 8, "{page}");
    let by_subtype = |subtype: &str| -> Value {
        products.values().find(|p| p["subtype"] == subtype).unwrap_or_else(|| panic!("no {subtype}: {page}"))["rendered"]
            .clone()
    };
    let endless = by_subtype("loop");
    let error = endless["error"].as_str().unwrap_or_else(|| panic!("{endless}"));
    assert!(
        error.contains("hostile-renderer") && (error.contains("fuel") || error.contains("did not finish")),
        "{error}"
    );
    let huge = by_subtype("huge");
    assert!(huge["error"].as_str().unwrap().contains("bytes of HTML"), "{huge}");
    let script = by_subtype("script")["html"].as_str().unwrap().to_owned();
    assert!(script.contains("Report") && script.contains("here"), "{script}");
    for bad in ["<script", "onmouseover", "javascript:", "/steal"] {
        assert!(!script.contains(bad), "{bad} in {script}");
    }
    assert!(by_subtype("link")["error"].as_str().unwrap().contains("javascript:"), "{page}");
    assert!(by_subtype("panic")["error"].as_str().unwrap().contains("panicked"), "{page}");
    // The other products are rendered by the built-in renderers as usual.
    assert!(by_subtype("binary-dist")["html"].as_str().unwrap().contains("hello.txt"));
    let out = builds["report"]["buildoutputs"]["out"]["path"].as_str().unwrap();
    let nix_build = by_subtype("none")["html"].as_str().unwrap().to_owned();
    assert!(
        nix_build.contains(&format!("nix-store --realise {out} --option extra-substituters {}", server.url)),
        "{nix_build}"
    );
    let channel = by_subtype("hello")["html"].as_str().unwrap().to_owned();
    assert!(
        channel.contains(&format!("nix-channel --add {}/jobset/evil/main/channel/latest", server.url)),
        "{channel}"
    );
    // Rendered once: the page answers the same again, and the server lives.
    assert_eq!(server.get_json(&format!("/build/{id}")), page);
    assert_eq!(server.get("/").status, 200);
}

on_both_backends!(hostile_renderer);
