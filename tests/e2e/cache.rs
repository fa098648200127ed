//! The binary cache and channels, used by Nix itself: `nix copy --from`
//! and `nix-store --realise` with Orthrus as the only substituter, into
//! separate stores, with and without signature checking; a channel read
//! by `fetchTarball`.

use std::path::Path;

use serde_json::json;

use crate::harness::{Backend, Identity, MK, Options, Server, nix, nix_ok, nonce, write};
use crate::on_both_backends;

fn in_store(root: &Path, path: &str) -> bool {
    root.join(path.trim_start_matches('/')).exists()
}

fn binary_cache_and_channel(backend: Backend) {
    let keys = tempfile::tempdir().unwrap();
    let secret = keys.path().join("secret");
    let public = keys.path().join("public");
    nix_ok(&[
        "nix-store",
        "--generate-binary-cache-key",
        "orthrus-test-1",
        secret.to_str().unwrap(),
        public.to_str().unwrap(),
    ]);
    let public_key = std::fs::read_to_string(&public).unwrap();
    let other = keys.path().join("other");
    nix_ok(&[
        "nix-store",
        "--generate-binary-cache-key",
        "someone-else-1",
        keys.path().join("other-secret").to_str().unwrap(),
        other.to_str().unwrap(),
    ]);
    let other_key = std::fs::read_to_string(&other).unwrap();

    let server = Server::start_with(
        backend,
        Options {
            extra_tables: format!("[binary_cache]\nsecret_key_file = \"{}\"\n", secret.display()),
            ..Options::default()
        },
    );
    let src = server.source_dir("src");
    write(
        &src.join("release.nix"),
        &format!(
            r#"{{ nonce }}:
let {MK}
in rec {{
  lib = mk "lib" "mkdir $out; echo 'the library' > $out/lib.txt";
  app = mk "app" "mkdir -p $out/bin; echo '#!/bin/sh' > $out/bin/app; echo 'cat ${{lib}}/lib.txt' >> $out/bin/app";
  unrelated = mk "unrelated" "echo alone > $out";
}}
"#
        ),
    );
    server.create_jobset(
        "cached",
        "main",
        &src,
        "release.nix",
        json!({ "nonce": { "type": "string", "value": nonce() } }),
    );
    let eval = server.wait_for_evals("cached", "main", 1);
    let builds = server.wait_for_eval_builds(eval["id"].as_i64().unwrap());
    let out = |job: &str| builds[job]["buildoutputs"]["out"]["path"].as_str().unwrap().to_owned();
    let (app, lib, unrelated) = (out("app"), out("lib"), out("unrelated"));

    let info = server.request_with(&Identity::Anonymous, "GET", "/nix-cache-info", None, &[]);
    assert!(info.body.contains("StoreDir: /nix/store"));
    let hash = |path: &str| path.trim_start_matches("/nix/store/")[..32].to_owned();
    let narinfo = server.request_with(&Identity::Anonymous, "GET", &format!("/{}.narinfo", hash(&app)), None, &[]).body;
    assert!(narinfo.contains(&format!("StorePath: {app}")), "{narinfo}");
    assert!(narinfo.contains(&format!("References: {}", lib.trim_start_matches("/nix/store/"))), "{narinfo}");
    assert!(narinfo.contains("Sig: orthrus-test-1:"), "{narinfo}");

    let url = server.url.clone();
    let stores = tempfile::tempdir().unwrap();
    let store = |name: &str| stores.path().join(name);

    // nix copy, checking signatures against the server's public key.
    let signed = store("signed");
    nix_ok(&[
        "nix",
        "--extra-experimental-features",
        "nix-command",
        "copy",
        "--from",
        &url,
        "--to",
        signed.to_str().unwrap(),
        "--option",
        "trusted-public-keys",
        public_key.trim(),
        &app,
    ]);
    assert!(in_store(&signed, &app) && in_store(&signed, &lib), "the closure was copied");
    // … and refusing them when another key is trusted.
    let refused = store("refused");
    let output = nix(&[
        "nix",
        "--extra-experimental-features",
        "nix-command",
        "copy",
        "--from",
        &url,
        "--to",
        refused.to_str().unwrap(),
        "--option",
        "trusted-public-keys",
        other_key.trim(),
        &app,
    ]);
    assert!(!output.status.success(), "a path signed by an untrusted key was accepted");
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("signature"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!in_store(&refused, &app));
    // Without signature checking.
    let unchecked = store("unchecked");
    nix_ok(&[
        "nix",
        "--extra-experimental-features",
        "nix-command",
        "copy",
        "--from",
        &url,
        "--to",
        unchecked.to_str().unwrap(),
        "--no-check-sigs",
        &app,
    ]);
    assert!(in_store(&unchecked, &app));

    // A substituter: realising the path in another store fetches it from here.
    let substituted = store("substituted");
    nix_ok(&[
        "nix-store",
        "--store",
        substituted.to_str().unwrap(),
        "--realise",
        &app,
        "--option",
        "substituters",
        &url,
        "--option",
        "trusted-public-keys",
        public_key.trim(),
    ]);
    assert!(in_store(&substituted, &app) && in_store(&substituted, &lib));
    let copied = std::fs::read_to_string(substituted.join(format!("{}/bin/app", app.trim_start_matches('/')))).unwrap();
    assert!(copied.contains(&format!("cat {lib}/lib.txt")));

    // One build's closure, and nothing else, under /build/N/nix.
    let app_id = builds["app"]["id"].as_i64().unwrap();
    let closure = |path: &str| {
        server.request_with(
            &Identity::Anonymous,
            "GET",
            &format!("/build/{app_id}/nix/{}.narinfo", hash(path)),
            None,
            &[],
        )
    };
    assert_eq!(closure(&lib).status, 200);
    assert_eq!(closure(&unrelated).status, 404);
    let build_cache = store("build-cache");
    nix_ok(&[
        "nix",
        "--extra-experimental-features",
        "nix-command",
        "copy",
        "--from",
        &format!("{url}/build/{app_id}/nix"),
        "--to",
        build_cache.to_str().unwrap(),
        "--no-check-sigs",
        &app,
    ]);
    assert!(in_store(&build_cache, &lib));

    // The channel, read by fetchTarball (xz and bzip2).
    for file in ["nixexprs.tar.xz", "nixexprs.tar.bz2"] {
        let expr =
            format!("(import (fetchTarball \"{url}/jobset/cached/main/channel/latest/{file}\") {{}}).app.outPath");
        let printed = nix_ok(&["nix-instantiate", "--eval", "--expr", &expr]);
        assert_eq!(printed.trim(), format!("\"{app}\""), "{file}");
    }
    let cache_url = server.request_with(
        &Identity::Anonymous,
        "GET",
        "/jobset/cached/main/channel/latest/binary-cache-url",
        None,
        &[],
    );
    assert_eq!(cache_url.body, url);
    let channel = server.get_json("/jobset/cached/main/channel/latest");
    assert_eq!(channel["jobs"].as_array().unwrap().len(), 3);
}

on_both_backends!(binary_cache_and_channel);
