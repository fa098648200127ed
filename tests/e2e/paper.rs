//! The Hydra paper's example: a `tarball` job and a `build` job that takes
//! `tarball` as an argument, a boolean input `officialRelease`, and build
//! products (`file`, `doc`), metrics and a release name recorded from
//! `nix-support`.

use serde_json::{Value, json};

use crate::harness::{Backend, MK, Server, nonce, sha256_hex, write};
use crate::on_both_backends;

fn release_nix() -> String {
    format!(
        r#"{{ nonce, officialRelease }}:
let {MK}
  version = if officialRelease then "1.0" else "1.0pre-${{builtins.substring 0 8 nonce}}";
  jobs = rec {{
    tarball = mk "hello-tarball-${{version}}" ''
      mkdir -p $out/tarballs $out/nix-support
      echo "hello sources ${{version}}" > $out/tarballs/hello-${{version}}.tar.gz
      echo "file source-dist $out/tarballs/hello-${{version}}.tar.gz" > $out/nix-support/hydra-build-products
      echo "hello-${{version}}" > $out/nix-support/hydra-release-name
    '' // {{
      meta = {{
        description = "The hello source tarball";
        license = [ {{ shortName = "gpl3Plus"; }} "mit" ];
        homepage = "https://example.org/hello";
        maintainers = [ {{ email = "alice@example.org"; name = "Alice"; }} "bob@example.org" ];
        schedulingPriority = 50;
        timeout = 600;
        maxSilent = 300;
        isHydraChannel = true;
      }};
    }};

    build = {{ tarball ? jobs.tarball }}: mk "hello-build" ''
      mkdir -p $out/bin $out/share/doc/hello $out/nix-support
      cat ${{tarball}}/tarballs/*.tar.gz > $out/bin/hello
      echo "<html><body>The hello manual</body></html>" > $out/share/doc/hello/manual.html
      cat > $out/nix-support/hydra-build-products <<EOF
    doc manual $out/share/doc/hello manual.html
    file binary-dist "$out/bin/hello"
    not a valid line at all
    EOF
      printf 'coverage 87.5 %%\nlines 1200\n' > $out/nix-support/hydra-metrics
    '';
  }};
in jobs
"#
    )
}

fn product_by_type<'a>(build: &'a Value, kind: &str) -> &'a Value {
    build["buildproducts"]
        .as_object()
        .unwrap()
        .values()
        .find(|p| p["type"] == kind)
        .unwrap_or_else(|| panic!("no {kind} product in {build}"))
}

fn paper(backend: Backend) {
    let server = Server::start(backend);
    let src = server.source_dir("src");
    write(&src.join("release.nix"), &release_nix());
    server.create_jobset(
        "hello",
        "trunk",
        &src,
        "release.nix",
        json!({
            "nonce": { "type": "string", "value": nonce() },
            "officialRelease": { "type": "boolean", "value": "false" },
        }),
    );

    // First evaluation: no tarball was built yet, so `build` uses the
    // argument's default, the tarball of the same evaluation.
    let eval = server.wait_for_evals("hello", "trunk", 1);
    let builds = server.wait_for_eval_builds(eval["id"].as_i64().unwrap());
    let tarball = &builds["tarball"];
    let build = &builds["build"];
    assert_eq!(tarball["buildstatus"], 0, "{tarball}");
    assert_eq!(build["buildstatus"], 0, "{build}");
    assert_eq!(eval["jobsetevalinputs"]["officialRelease"]["value"], "false");
    // The job dependency is recorded, with no build behind it yet.
    assert_eq!(eval["jobsetevalinputs"]["tarball"]["type"], "build");
    assert_eq!(eval["jobsetevalinputs"]["tarball"]["dependency"], Value::Null);

    // Job meta is recorded on the build.
    assert_eq!(tarball["description"], "The hello source tarball");
    assert_eq!(tarball["license"], "gpl3Plus, mit");
    assert_eq!(tarball["homepage"], "https://example.org/hello");
    assert_eq!(tarball["maintainers"], "alice@example.org, bob@example.org");
    assert_eq!(tarball["priority"], 50);
    assert_eq!(tarball["timeout"], 600);
    assert_eq!(tarball["maxsilent"], 300);
    assert_eq!(tarball["ischannel"], 1);
    assert_eq!(build["priority"], 100);
    assert_eq!(build["timeout"], 36000);
    assert_eq!(build["ischannel"], 0);

    let release_name = tarball["releasename"].as_str().unwrap();
    assert!(release_name.starts_with("hello-1.0pre-"), "{release_name}");
    let source_dist = product_by_type(tarball, "file");
    assert_eq!(source_dist["subtype"], "source-dist");
    let path = source_dist["path"].as_str().unwrap();
    assert!(path.starts_with(tarball["buildoutputs"]["out"]["path"].as_str().unwrap()));
    assert_eq!(source_dist["name"], format!("{release_name}.tar.gz"));
    assert_eq!(source_dist["filesize"], std::fs::metadata(path).unwrap().len());
    assert_eq!(source_dist["sha256hash"], sha256_hex(path));

    let doc = product_by_type(build, "doc");
    assert_eq!(doc["subtype"], "manual");
    assert_eq!(doc["defaultpath"], "manual.html");
    assert_eq!(doc["filesize"], Value::Null, "a directory has no size");
    let binary = product_by_type(build, "file");
    assert_eq!(binary["subtype"], "binary-dist");
    assert_eq!(binary["name"], "hello");
    assert_eq!(build["buildproducts"].as_object().unwrap().len(), 2, "the invalid line is skipped");
    assert_eq!(build["buildmetrics"]["coverage"], json!({ "value": 87.5, "unit": "%" }));
    assert_eq!(build["buildmetrics"]["lines"], json!({ "value": 1200.0, "unit": null }));

    // Second evaluation: a successful build of `tarball` is a new input of
    // `build` (no forcing needed), which now receives it, as recorded.
    server.push("hello", "trunk", false);
    let eval = server.wait_for_evals("hello", "trunk", 2);
    let dependency = &eval["jobsetevalinputs"]["tarball"];
    assert_eq!(dependency["type"], "build", "{eval}");
    assert_eq!(dependency["dependency"], tarball["id"]);
    let builds = server.wait_for_eval_builds(eval["id"].as_i64().unwrap());
    assert_eq!(builds["tarball"]["id"], tarball["id"], "the tarball did not change, so it is not rebuilt");
    let hello = builds["build"]["buildoutputs"]["out"]["path"].as_str().unwrap().to_owned();
    let second_build = builds["build"]["id"].as_i64().unwrap();
    let contents = std::fs::read_to_string(format!("{hello}/bin/hello")).unwrap();
    assert!(contents.starts_with("hello sources 1.0pre-"), "{contents}");

    // An official release: the boolean input changes the jobs.
    let answer = server.put(
        "/jobset/hello/trunk",
        &json!({ "inputs": {
            "src": { "type": "path", "value": src.display().to_string() },
            "nonce": { "type": "string", "value": eval["jobsetevalinputs"]["nonce"]["value"] },
            "officialRelease": { "type": "boolean", "value": true },
        }}),
    );
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(server.get_json("/jobset/hello/trunk")["inputs"]["officialRelease"]["value"], "true");
    server.push("hello", "trunk", false);
    let eval = server.wait_for_evals("hello", "trunk", 3);
    assert_eq!(eval["jobsetevalinputs"]["officialRelease"]["value"], "true");
    let builds = server.wait_for_eval_builds(eval["id"].as_i64().unwrap());
    assert_eq!(builds["tarball"]["releasename"], "hello-1.0");
    assert_ne!(builds["tarball"]["id"], tarball["id"]);

    // A release deploy: the file product of the latest tarball.
    let latest = server.get_following("/job/hello/trunk/tarball/latest").json();
    assert_eq!(latest["releasename"], "hello-1.0");
    let official = builds;
    // The next evaluation's `build` takes the official tarball as its input.
    server.push("hello", "trunk", false);
    let eval = server.wait_for_evals("hello", "trunk", 4);
    assert_eq!(eval["jobsetevalinputs"]["tarball"]["dependency"], official["tarball"]["id"], "{eval}");
    let official_build = server.wait_for_eval_builds(eval["id"].as_i64().unwrap())["build"].clone();
    let binary = official_build["buildoutputs"]["out"]["path"].as_str().unwrap();
    assert_eq!(std::fs::read_to_string(format!("{binary}/bin/hello")).unwrap(), "hello sources 1.0\n");

    // Products as their renderer plugins show them, sanitised.
    let tarball_page = server.get_json(&format!("/build/{}", official["tarball"]["id"]));
    let file = product_by_type(&tarball_page, "file");
    let html = file["rendered"]["html"].as_str().unwrap_or_else(|| panic!("{file}"));
    assert_eq!(file["rendered"]["renderer"], "builtin:file");
    assert!(html.contains("hello-1.0.tar.gz") && html.contains("SHA-256"), "{html}");
    assert!(html.contains(file["sha256hash"].as_str().unwrap()), "{html}");
    assert!(html.contains(&format!("/build/{}/download/", official["tarball"]["id"])), "{html}");
    let build_page = server.get_json(&format!("/build/{}", official_build["id"]));
    let doc = product_by_type(&build_page, "doc");
    assert_eq!(doc["rendered"]["renderer"], "builtin:doc");
    let href = doc["rendered"]["link"]["href"].as_str().unwrap();
    assert!(href.ends_with("/manual.html"), "{doc}");
    assert_eq!(doc["rendered"]["link"]["text"], "Documentation: manual");
    let manual = server.get(href.strip_prefix(&server.url).unwrap());
    assert_eq!(manual.status, 200);
    assert!(manual.body.contains("The hello manual"));

    // Release sets, as the paper defines them: stable and unstable.
    let answer = server.put(
        "/project/hello",
        &json!({ "releasesets": {
            "stable": { "plugin": "official-release", "description": "Official releases", "settings": { "value": "true" } },
            "unstable": { "plugin": "official-release", "settings": { "value": "false" } },
        }}),
    );
    assert_eq!(answer.status, 200, "{}", answer.body);
    let sets = server.get_json("/project/hello/releasesets");
    let names: Vec<&str> = sets.as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["stable", "unstable"]);
    assert_eq!(server.get_json("/project/hello")["releasesets"]["stable"]["plugin"], "official-release");

    let stable = server.get_json("/project/hello/releaseset/stable");
    let releases = stable["releases"].as_array().unwrap();
    assert_eq!(releases.len(), 1, "{stable}");
    assert_eq!(releases[0]["name"], "hello-1.0");
    assert_eq!(releases[0]["succeeded"], true);
    let members: Vec<(i64, &str)> = releases[0]["builds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| (b["id"].as_i64().unwrap(), b["label"].as_str().unwrap()))
        .collect();
    assert_eq!(
        members,
        [(official["tarball"]["id"].as_i64().unwrap(), "tarball"), (official_build["id"].as_i64().unwrap(), "build")]
    );

    // The same as pages: the set's releases, and a release with its builds.
    let page = server.get_page("/project/hello");
    assert!(page.contains("href=\"/project/hello/releaseset/stable\"") && page.contains("Official releases"), "{page}");
    let page = server.get_page("/project/hello/releaseset/stable");
    assert!(page.contains("href=\"/project/hello/releaseset/stable/release/hello-1.0\""), "{page}");
    assert!(page.contains("complete"), "{page}");
    let page = server.get_page("/project/hello/releaseset/stable/release/hello-1.0");
    for (id, label) in &members {
        assert!(page.contains(&format!("<td>{label}</td><td><a href=\"/build/{id}\">")), "{label}: {page}");
    }
    let unstable = server.get_json("/project/hello/releaseset/unstable");
    let releases = unstable["releases"].as_array().unwrap();
    assert_eq!(releases.len(), 1, "{unstable}");
    assert_eq!(releases[0]["name"], release_name);
    let builds_of = |release: &Value| -> Vec<i64> {
        release["builds"].as_array().unwrap().iter().map(|b| b["id"].as_i64().unwrap()).collect()
    };
    // The tarball of the first evaluation, and the newest build that took it
    // (the second evaluation's, which received it as its input).
    assert_eq!(builds_of(&releases[0])[0], tarball["id"].as_i64().unwrap());
    assert_eq!(builds_of(&releases[0]).len(), 2);
    assert_eq!(builds_of(&releases[0])[1], second_build, "{unstable}");
    assert!(second_build >= build["id"].as_i64().unwrap());

    // One release with its builds, and `latest` for deploy tools.
    let release = server.get_json("/project/hello/releaseset/stable/release/hello-1.0");
    assert_eq!(release["builds"][0]["releasename"], "hello-1.0");
    assert_eq!(release["builds"][1]["label"], "build");
    let latest = server.get("/project/hello/releaseset/stable/latest");
    assert_eq!(latest.status, 302);
    assert!(latest.location.as_deref().unwrap().ends_with("/project/hello/releaseset/stable/release/hello-1.0"));
    let latest_build = server.get_following("/project/hello/releaseset/stable/latest/build").json();
    assert_eq!(latest_build["id"], official_build["id"]);
    assert_eq!(server.get("/project/hello/releaseset/nightly").status, 404);

    // A definition naming no release-set plugin is refused, and changes nothing.
    let answer =
        server.put("/project/hello", &json!({ "releasesets": { "broken": { "plugin": "git", "settings": {} } } }));
    assert_eq!(answer.status, 400);
    assert!(answer.body.contains("release set ‘broken’: there is no release-set plugin ‘git’"), "{}", answer.body);
    assert_eq!(server.get_json("/project/hello/releasesets").as_array().unwrap().len(), 2);
    // A set whose plugin fails says so; the other sets and pages stay up.
    let answer = server.put(
        "/project/hello",
        &json!({ "releasesets": {
            "stable": { "plugin": "official-release", "settings": { "value": "true" } },
            "odd": { "plugin": "official-release", "settings": { "value": "maybe" } },
        }}),
    );
    assert_eq!(answer.status, 200, "{}", answer.body);
    let odd = server.get("/project/hello/releaseset/odd");
    assert_eq!(odd.status, 502);
    assert!(
        odd.body.contains("release set ‘odd’ (plugin ‘official-release’)") && odd.body.contains("maybe"),
        "{}",
        odd.body
    );
    assert_eq!(server.get("/project/hello/releaseset/stable").status, 200);
}

on_both_backends!(paper);
