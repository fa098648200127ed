//! Builds and expressions written by an attacker: outputs and products
//! that link to the server's files or to other store paths, `..` in
//! product lines, `nix-support` files of 100 MiB and 100,000 products, and
//! an evaluation that traces (and describes a job with) 100 MiB. An
//! anonymous caller gets nothing from outside an output; each build says
//! what was refused; the server's memory does not grow with what they wrote.

use serde_json::{Value, json};

use crate::harness::{Backend, Identity, MK, Server, nonce, write};
use crate::on_both_backends;

fn release_nix() -> String {
    format!(
        r#"{{ nonce }}:
let {MK}
  kib = builtins.concatStringsSep "" (builtins.genList (i: "0123456789abcdef") 64);
  mib = n: builtins.concatStringsSep "\n" (builtins.genList (i: kib) (n * 1024));
  other = mk "other" "echo another store path > $out";
  withSupport = name: script: mk name ''
    mkdir -p $out/nix-support $out/doc
    echo fine > $out/f
    ${{script}}
  '';
in {{
  inherit other;
  rootLink = mk "root-link" "ln -s / $out";
  etcLink = withSupport "etc-link" ''
    ln -s /etc $out/etc
    echo "file secret $out/etc/passwd" > $out/nix-support/hydra-build-products
  '';
  storeLink = withSupport "store-link" ''
    ln -s ${{other}} $out/other
    echo "file other $out/other" > $out/nix-support/hydra-build-products
  '';
  dotDot = withSupport "dot-dot" ''
    echo "file up $out/../../../etc/passwd" > $out/nix-support/hydra-build-products
    echo "file fine $out/doc/../f" >> $out/nix-support/hydra-build-products
  '';
  supportLinks = withSupport "support-links" ''
    ln -s /etc/passwd $out/nix-support/hydra-metrics
    ln -s /etc/hostname $out/nix-support/hydra-release-name
  '';
  bigMetrics = withSupport "big-metrics" "yes 'metric 1' | head -c 104857600 > $out/nix-support/hydra-metrics";
  manyProducts = withSupport "many-products" ''
    seq 1 100000 | sed "s|.*|file number $out/f|" > $out/nix-support/hydra-build-products
  '';
  traced = builtins.trace (mib 100) (mk "traced" "echo > $out");
  tracedThenFails = builtins.trace (mib 100) (throw "failed after a long trace");
  bigMeta = mk "big-meta" "echo > $out" // {{ meta.description = mib 100; }};
  # Claims the server's root as its output, for products to be read from.
  liar = let d = mk "liar" "echo > $out"; in d // {{ outPath = "/"; out = d.out // {{ outPath = "/"; }}; }};
}}
"#
    )
}

fn hostile_builds(backend: Backend) {
    let server = Server::start(backend);
    // Something only the server may read: it must never come back.
    let secret = format!("orthrus-secret-{}", nonce());
    let secret_file = server.dir.path().join("secret.txt");
    write(&secret_file, &secret);
    let (memory_before, _) = server.memory_kib();

    let src = server.source_dir("src");
    write(&src.join("release.nix"), &release_nix());
    server.create_jobset(
        "evil",
        "main",
        &src,
        "release.nix",
        json!({ "nonce": { "type": "string", "value": nonce() } }),
    );
    let eval = server.wait_for_evals("evil", "main", 1);
    let eval_id = eval["id"].as_i64().unwrap();
    let builds = server.wait_for_eval_builds(eval_id);

    // The evaluation: what was traced is cut, with a marker, before the error.
    let eval = server.get_json(&format!("/eval/{eval_id}"));
    let error_of = |job: &str| -> String {
        let errors = eval["errors"].as_array().unwrap();
        let error = errors.iter().find(|e| e["job"] == job).unwrap_or_else(|| panic!("no error for {job}: {eval}"));
        error["message"].as_str().unwrap().to_owned()
    };
    let failed = error_of("tracedThenFails");
    assert!(failed.contains("failed after a long trace"), "{}", &failed[failed.len().saturating_sub(500)..]);
    assert!(failed.contains("bytes of output cut here"), "{}", &failed[..500.min(failed.len())]);
    assert!(failed.len() < 70 * 1024, "an error of {} bytes was kept", failed.len());
    let big_meta = error_of("bigMeta");
    assert!(big_meta.contains("larger than 4 MiB"), "{big_meta}");
    assert_eq!(builds["traced"]["buildstatus"], 0, "tracing is not failing");
    let liar = error_of("liar");
    assert!(liar.contains(r#"output ‘out’ is said to be "/""#) && liar.contains("-liar"), "{liar}");
    let names: Vec<&str> = builds.keys().map(String::as_str).collect();
    for refused in ["bigMeta", "tracedThenFails", "liar"] {
        assert!(!names.contains(&refused), "{refused} has a build: {names:?}");
    }

    let anonymous = Identity::Anonymous;
    let get = |path: &str| server.request(&anonymous, "GET", path, None);
    let build_of = |job: &str| -> (i64, Value) {
        let id = builds[job]["id"].as_i64().unwrap();
        let build = get(&format!("/build/{id}"));
        assert_eq!(build.status, 200, "{}", build.body);
        (id, build.json())
    };
    // Nothing from outside an output, whatever the path asked for.
    let refused = |path: &str, not_in_body: &str| {
        let answer = get(path);
        assert_eq!(answer.status, 404, "GET {path}: {}", answer.body);
        assert!(answer.json()["error"].is_string(), "{path}: {}", answer.body);
        assert!(!answer.body.contains(not_in_body), "GET {path} leaked: {}", answer.body);
        answer.json()["error"].as_str().unwrap().to_owned()
    };
    let errors_of = |build: &Value| -> String {
        build["outputerrors"].as_array().unwrap().iter().map(|e| e.as_str().unwrap()).collect::<Vec<_>>().join("\n")
    };

    // `ln -s / $out`: no products, and no path under it is served.
    let (id, build) = build_of("rootLink");
    assert_eq!(build["buildstatus"], 0);
    assert_eq!(build["buildproducts"], json!({}), "an output that is a link has no products");
    assert!(errors_of(&build).contains("symbolic link"), "{build}");
    let database = server.dir.path().join("data/orthrus.sqlite");
    for path in [
        format!("/build/{id}/download/1"),
        format!("/build/{id}/download/1/etc/passwd"),
        format!("/build/{id}/download/1{}", secret_file.display()),
        format!("/build/{id}/download/1{}", database.display()),
        format!("/build/{id}/download/1/../../../../{}", secret_file.display()),
    ] {
        refused(&path, &secret);
    }
    let page = server.request_with(&anonymous, "GET", &format!("/build/{id}"), None, &[("Accept", "text/html")]);
    assert!(page.body.contains("Problems with its outputs") && page.body.contains("symbolic link"), "{}", page.body);

    // A product through a link to /etc, or to another store path: recorded
    // with the reason, without size or hash, and not served.
    for (job, not_in_body) in [("etcLink", "root:x:0:0"), ("storeLink", "another store path")] {
        let (id, build) = build_of(job);
        let product = &build["buildproducts"]["1"];
        assert_eq!((&product["filesize"], &product["sha256hash"]), (&Value::Null, &Value::Null), "{job}: {product}");
        assert!(product["error"].as_str().unwrap().contains("leads outside"), "{job}: {product}");
        let error = refused(&format!("/build/{id}/download/1"), not_in_body);
        assert!(error.contains("not served") && error.contains("leads outside"), "{job}: {error}");
        let page = server.request_with(&anonymous, "GET", &format!("/build/{id}"), None, &[("Accept", "text/html")]);
        assert!(page.body.contains("Not served") && !page.body.contains("Download"), "{job}: {}", page.body);
    }

    // `..` out of the store is no product; `..` inside the output is fine.
    let (id, build) = build_of("dotDot");
    let products = build["buildproducts"].as_object().unwrap();
    assert_eq!(products.len(), 1, "{build}");
    assert_eq!(products["1"]["subtype"], "fine");
    assert_eq!(products["1"]["filesize"], 5);
    assert!(errors_of(&build).contains("line 1") && errors_of(&build).contains("/etc/passwd"), "{build}");
    assert_eq!(get(&format!("/build/{id}/download/1")).body, "fine\n");

    // nix-support files that are links out are not read.
    let (_, build) = build_of("supportLinks");
    assert_eq!(build["buildmetrics"], json!({}));
    assert_eq!(build["releasename"], Value::Null);
    let errors = errors_of(&build);
    assert!(errors.contains("hydra-metrics") && errors.contains("hydra-release-name"), "{errors}");

    // 100 MiB of metrics: the first MiB is read, and said so.
    let (_, build) = build_of("bigMetrics");
    assert_eq!(build["buildstatus"], 0);
    assert_eq!(build["buildmetrics"]["metric"]["value"], 1.0, "{}", build["buildmetrics"]);
    assert!(errors_of(&build).contains("larger than 1024 KiB"), "{build}");

    // 100,000 product lines: the first thousand products are kept.
    let (id, build) = build_of("manyProducts");
    assert_eq!(build["buildproducts"].as_object().unwrap().len(), 1000);
    assert!(errors_of(&build).contains("more than 1000 products"), "{}", errors_of(&build));
    assert_eq!(get(&format!("/build/{id}/download/1000")).body, "fine\n");

    // Nothing of those hundreds of MiB stayed in the server's memory.
    let (_, peak) = server.memory_kib();
    let grown = peak.saturating_sub(memory_before);
    eprintln!("peak memory grew by {} KiB", grown);
    assert!(grown < 64 * 1024, "the server's peak memory grew by {} MiB", grown / 1024);
}

on_both_backends!(hostile_builds);
