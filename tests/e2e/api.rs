//! The shapes of HYDRA-API.md, endpoint by endpoint, as a Hydra client
//! reads them: field names and JSON types, status codes, redirects,
//! content negotiation, product downloads, and JSON 404s for what does not
//! exist.

use serde_json::{Value, json};

use crate::harness::{Backend, Identity, MK, Server, nonce, write};
use crate::on_both_backends;

/// Asserts that `value` has each field with a value of the given JSON type
/// (`int`, `int?`, `string`, `string?`, `bool`, `array`, `object`, `any?`).
#[track_caller]
fn assert_fields(what: &str, value: &Value, fields: &[(&str, &str)]) {
    for (field, kind) in fields {
        let v = value.get(*field).unwrap_or_else(|| panic!("{what} has no field {field}: {value}"));
        let ok = match *kind {
            "int" => v.is_i64(),
            "int?" => v.is_i64() || v.is_null(),
            "bit" => v == &json!(0) || v == &json!(1),
            "string" => v.is_string(),
            "string?" => v.is_string() || v.is_null(),
            "bool" => v.is_boolean(),
            "array" => v.is_array(),
            "object" => v.is_object(),
            "number" => v.is_number(),
            "any?" => true,
            other => panic!("unknown kind {other}"),
        };
        assert!(ok, "{what}.{field} should be {kind}, is {v}");
    }
}

fn release_nix() -> String {
    format!(
        r#"{{ nonce }}:
let {MK}
in {{
  pkg = mk "pkg-1.0" ''
    mkdir -p $out/share/doc/pkg $out/nix-support $out/bin
    echo '<h1>manual</h1><script>alert(document.cookie)</script>' > $out/share/doc/pkg/index.html
    ln -s /etc/passwd $out/share/doc/pkg/escape
    echo 'binary' > $out/bin/pkg
    echo "doc manual $out/share/doc/pkg index.html" > $out/nix-support/hydra-build-products
    echo "file binary-dist $out/bin/pkg" >> $out/nix-support/hydra-build-products
    echo "size 42 KiB" > $out/nix-support/hydra-metrics
    echo "pkg-1.0" > $out/nix-support/hydra-release-name
  '';
  other = mk "second" "echo other > $out";
}}
"#
    )
}

fn api_shapes(backend: Backend) {
    let server = Server::start(backend);
    let src = server.source_dir("src");
    write(&src.join("release.nix"), &release_nix());
    server.create_jobset(
        "shapes",
        "main",
        &src,
        "release.nix",
        json!({ "nonce": { "type": "string", "value": nonce() } }),
    );
    let eval = server.wait_for_evals("shapes", "main", 1);
    let eval_id = eval["id"].as_i64().unwrap();
    let builds = server.wait_for_eval_builds(eval_id);
    let pkg = &builds["pkg"];
    let id = pkg["id"].as_i64().unwrap();

    assert_fields(
        "Build",
        pkg,
        &[
            ("id", "int"),
            ("finished", "bit"),
            ("timestamp", "int"),
            ("starttime", "int?"),
            ("stoptime", "int?"),
            ("project", "string"),
            ("jobset", "string"),
            ("job", "string"),
            ("nixname", "string"),
            ("system", "string"),
            ("priority", "int"),
            ("buildstatus", "int?"),
            ("releasename", "string?"),
            ("drvpath", "string"),
            ("jobsetevals", "array"),
            ("buildoutputs", "object"),
            ("buildproducts", "object"),
            ("buildmetrics", "object"),
        ],
    );
    assert_eq!(pkg["releasename"], "pkg-1.0");
    assert_fields(
        "product",
        &pkg["buildproducts"]["1"],
        &[
            ("type", "string"),
            ("subtype", "string"),
            ("name", "string"),
            ("path", "string"),
            ("defaultpath", "string"),
            ("filesize", "any?"),
            ("sha256hash", "any?"),
        ],
    );
    assert_eq!(pkg["buildmetrics"]["size"], json!({ "value": 42.0, "unit": "KiB" }));
    assert_fields("output", &pkg["buildoutputs"]["out"], &[("path", "string")]);

    let project = server.get_json("/project/shapes");
    assert_fields(
        "Project",
        &project,
        &[
            ("name", "string"),
            ("displayname", "string"),
            ("description", "string"),
            ("homepage", "string"),
            ("owner", "string"),
            ("enabled", "bool"),
            ("hidden", "bool"),
            ("enable_dynamic_run_command", "bool"),
            ("jobsets", "array"),
        ],
    );
    assert_eq!(project["jobsets"], json!(["main"]));
    assert!(project.get("declarative").is_none());
    let projects = server.get_json("/");
    assert_eq!(projects.as_array().unwrap().len(), 1);

    let jobset = server.get_json("/jobset/shapes/main");
    assert_fields(
        "Jobset",
        &jobset,
        &[
            ("name", "string"),
            ("project", "string"),
            ("description", "string"),
            ("nixexprinput", "string"),
            ("nixexprpath", "string"),
            ("errormsg", "string"),
            ("errortime", "int?"),
            ("lastcheckedtime", "int?"),
            ("triggertime", "int?"),
            ("enabled", "int"),
            ("enableemail", "bool"),
            ("enable_dynamic_run_command", "bool"),
            ("visible", "bool"),
            ("emailoverride", "string"),
            ("keepnr", "int"),
            ("checkinterval", "int"),
            ("schedulingshares", "int"),
            ("fetcherrormsg", "string"),
            ("starttime", "int?"),
            ("type", "int"),
            ("flake", "string"),
            ("inputs", "object"),
        ],
    );
    assert_fields(
        "input",
        &jobset["inputs"]["src"],
        &[("name", "string"), ("type", "string"), ("value", "string"), ("emailresponsible", "bool")],
    );

    let evals = server.get_json("/jobset/shapes/main/evals");
    assert_fields("evals page", &evals, &[("evals", "array"), ("first", "string"), ("last", "string")]);
    let eval = &evals["evals"][0];
    assert_fields(
        "Eval",
        eval,
        &[
            ("id", "int"),
            ("timestamp", "int"),
            ("checkouttime", "int"),
            ("evaltime", "int"),
            ("hasnewbuilds", "bit"),
            ("flake", "any?"),
            ("builds", "array"),
            ("jobsetevalinputs", "object"),
        ],
    );
    assert_fields(
        "eval input",
        &eval["jobsetevalinputs"]["src"],
        &[("type", "string"), ("uri", "any?"), ("revision", "any?"), ("value", "any?"), ("dependency", "any?")],
    );
    assert!(server.get_json(&format!("/eval/{eval_id}/builds")).is_array());
    let store_paths = server.get_json(&format!("/eval/{eval_id}/store-paths"));
    assert_eq!(store_paths.as_array().unwrap().len(), 2);
    assert!(store_paths.as_array().unwrap().contains(&pkg["buildoutputs"]["out"]["path"]));

    // The /api/* endpoints.
    let latest = server.get_json("/api/latestbuilds?nr=5&project=shapes&job=pkg");
    assert_eq!(latest.as_array().unwrap().len(), 1);
    assert_fields(
        "latest build",
        &latest[0],
        &[
            ("id", "int"),
            ("project", "string"),
            ("jobset", "string"),
            ("job", "string"),
            ("system", "string"),
            ("nixname", "string"),
            ("finished", "bit"),
            ("timestamp", "int"),
            ("buildstatus", "int?"),
        ],
    );
    assert_eq!(server.get("/api/latestbuilds").status, 400, "nr is required");
    assert_eq!(server.get("/api/nrqueue").body.trim(), "0");
    assert_eq!(server.get_json("/api/queue?nr=10"), json!([]));
    let summary = server.get_json("/api/jobsets?project=shapes");
    assert_fields(
        "jobset summary",
        &summary[0],
        &[
            ("name", "string"),
            ("project", "string"),
            ("nrscheduled", "int"),
            ("nrsucceeded", "int"),
            ("nrfailed", "int"),
            ("nrtotal", "int"),
            ("lastcheckedtime", "int"),
            ("starttime", "int?"),
            ("checkinterval", "int"),
            ("triggertime", "int?"),
            ("errortime", "int?"),
            ("haserrormsg", "bool"),
            ("fetcherrormsg", "string"),
        ],
    );
    assert!(summary[0]["starttime"].is_null(), "no evaluation runs: {summary}");
    assert_eq!((summary[0]["nrsucceeded"].clone(), summary[0]["nrtotal"].clone()), (json!(2), json!(2)));
    assert!(server.get_json("/queue").is_array());
    assert!(server.get_json("/status").is_array());
    assert_eq!(server.get_json("/machines")["localhost"]["maxconcurrent"], 4);
    assert_fields("evals", &server.get_json("/evals"), &[("evals", "array"), ("first", "string"), ("last", "string")]);
    assert!(server.get_json("/steps").as_array().unwrap().len() >= 2);
    let found = server.get_json("/search?query=shapes");
    assert_fields(
        "search",
        &found,
        &[("projects", "array"), ("jobsets", "array"), ("builds", "array"), ("buildsdrv", "array")],
    );
    assert_eq!(found["projects"][0]["name"], "shapes");
    let by_drv = server.get_json(&format!("/search?query={}", pkg["drvpath"].as_str().unwrap()));
    assert_eq!(by_drv["buildsdrv"][0]["id"], id);
    // As Hydra's: anywhere in an output or derivation path (a hash prefix,
    // a piece from the middle of the hash), whatever the case.
    let ids = |found: &Value| found.as_array().unwrap().iter().filter_map(|b| b["id"].as_i64()).collect::<Vec<_>>();
    let out_hash = &pkg["buildoutputs"]["out"]["path"].as_str().unwrap()["/nix/store/".len()..][..32];
    let drv_hash = &pkg["drvpath"].as_str().unwrap()["/nix/store/".len()..][..32];
    for piece in [&out_hash[..8], &out_hash[9..20], &out_hash[..12].to_uppercase()] {
        let found = server.get_json(&format!("/search?query={piece}"));
        assert!(ids(&found["builds"]).contains(&id), "{piece}: {found}");
        assert!(!ids(&found["buildsdrv"]).contains(&id), "{piece}: {found}");
    }
    let found = server.get_json(&format!("/search?query={}", &drv_hash[..8]));
    assert!(ids(&found["buildsdrv"]).contains(&id) && !ids(&found["builds"]).contains(&id), "{found}");
    let found = server.get_json(&format!("/search?query=/nix/store/{}", &out_hash[..10]));
    assert!(ids(&found["builds"]).contains(&id), "{found}");
    assert_eq!(server.get_json("/search?query=SHAPES")["projects"][0]["name"], "shapes");
    // Anywhere in a job name, whatever the case (through the jobsets' job
    // names, on both backends): job `other` has output `second`.
    let other = &builds["other"];
    assert!(!other["buildoutputs"]["out"]["path"].as_str().unwrap().contains("other"));
    let found = server.get_json("/search?query=OTHE");
    assert_eq!(ids(&found["builds"]), [other["id"].as_i64().unwrap()], "{found}");
    // Too short for a trigram index: matched against the newest builds.
    assert!(ids(&server.get_json("/search?query=pk")["builds"]).contains(&id));
    let refused = server.get("/search?query=a%25b");
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert!(refused.body.contains("invalid character ‘%’"), "{}", refused.body);
    let shield = server.get_json("/job/shapes/main/pkg/shield");
    assert_eq!(shield, json!({ "schemaVersion": 1, "label": "hydra build", "color": "green", "message": "passing" }));

    // Downloads: files as they are, in a sandbox; nothing outside the product.
    let answer = server.get(&format!("/build/{id}/download/2"));
    assert_eq!(answer.status, 200, "{}: {}", answer.body, pkg["buildproducts"]);
    assert_eq!(answer.body, "binary\n");
    assert!(answer.csp.as_deref().unwrap_or("").contains("sandbox"), "{:?}", answer.csp);
    let answer = server.get(&format!("/build/{id}/download/1"));
    assert_eq!(answer.status, 302, "a directory product leads to its default file");
    assert!(answer.location.unwrap().ends_with(&format!("/build/{id}/download/1/index.html")));
    let page = server.get_following(&format!("/build/{id}/download/1"));
    assert!(page.body.contains("<h1>manual</h1>"));
    assert!(page.content_type.starts_with("text/html"));
    assert!(page.csp.unwrap().contains("sandbox"));
    for escape in ["escape", "..%2f..%2f..%2fetc%2fpasswd", "../../../../etc/passwd", "%2e%2e/%2e%2e/bin/pkg"] {
        let answer = server.get(&format!("/build/{id}/download/1/{escape}"));
        assert_eq!(answer.status, 404, "{escape}: {}", answer.body);
        assert!(!answer.body.contains("root:"), "{escape} leaked a file");
    }
    let latest_download = server.get_following("/job/shapes/main/pkg/latest/download/2");
    assert_eq!(latest_download.body, "binary\n");

    // Content negotiation.
    let html =
        server.request_with(&Identity::Anonymous, "GET", &format!("/build/{id}"), None, &[("Accept", "text/html")]);
    assert!(html.content_type.starts_with("text/html"), "{}", html.content_type);
    assert!(html.vary.as_deref().unwrap_or("").contains("Accept"));
    let by_query = server.request_with(
        &Identity::Anonymous,
        "GET",
        &format!("/build/{id}?content-type=application/json"),
        None,
        &[],
    );
    assert_eq!(by_query.json()["id"], id);
    let by_content_type = server.request_with(
        &Identity::Anonymous,
        "GET",
        &format!("/build/{id}"),
        None,
        &[("Content-Type", "application/json")],
    );
    assert_eq!(by_content_type.json()["id"], id);
    assert!(server.request_with(&Identity::Anonymous, "GET", "/api/nrqueue", None, &[]).content_type.contains("json"));

    // The pages over this database: the matrix, the evaluation and its
    // filter, the evaluation lists, and search (where `_` is a character,
    // not a wildcard, and a store path finds its build).
    let page = server.get_page("/jobset/shapes/main");
    assert!(page.contains("/job/shapes/main/pkg") && page.contains("/job/shapes/main/other"), "{page}");
    let page = server.get_page(&format!("/eval/{eval_id}?status=succeeded"));
    assert!(page.contains(&format!("/build/{id}")) && page.contains("1–2 of 2"), "{page}");
    assert!(server.get_page(&format!("/eval/{eval_id}?status=failed")).contains("0–0 of 0"));
    for evals in ["/jobset/shapes/main/evals", "/evals"] {
        assert!(server.get_page(evals).contains(&format!("href=\"/eval/{eval_id}\"")), "{evals}");
    }
    assert!(server.get_page("/search?query=kg").contains(&format!("href=\"/build/{id}\"")));
    assert!(server.get_page("/search?query=p_g").contains("Nothing matches"));
    let out = pkg["buildoutputs"]["out"]["path"].as_str().unwrap();
    assert!(server.get_page(&format!("/search?query={out}")).contains(&format!("href=\"/build/{id}\"")));

    // Nothing that does not exist answers anything but a JSON 404.
    for path in [
        "/project/nope",
        "/jobset/shapes/nope",
        "/jobset/shapes/main/evals/nope",
        "/eval/99999",
        &format!("/eval/{eval_id}/job/nope"),
        "/build/99999/constituents",
        &format!("/build/{id}/download/99"),
        &format!("/build/{id}/nixlog/99"),
        "/job/shapes/main/nope/shield",
        "/job/shapes/main/nope/latest",
        "/job/shapes/nope/pkg/latest-finished",
        "/jobset/shapes/main/channel/latest/nope",
        "/nope.narinfo",
        "/a/b/c/d",
    ] {
        let answer = server.get(path);
        assert_eq!(answer.status, 404, "{path}: {}", answer.body);
        assert!(answer.json()["error"].is_string(), "{path}");
    }
    let answer = server.request(&server.admin(), "PATCH", "/project/shapes", None);
    assert_eq!(answer.status, 405);
    assert!(answer.json()["error"].is_string());

    // Deleting a project takes its jobsets, evaluations and builds along.
    assert_eq!(server.delete("/project/shapes").status, 200);
    assert_eq!(server.get(&format!("/build/{id}")).status, 404);
    assert_eq!(server.get(&format!("/eval/{eval_id}")).status, 404);
}

on_both_backends!(api_shapes);
