//! The deployment article's setup: an application, a test that runs it, and
//! a `release_gate` aggregate that a deploy script polls. Constituents are
//! given as derivations, then as job names, then as a glob of all jobs; in
//! every case `latest`, `latest-finished` and `constituents` lead to the
//! same output paths a script extracts with `jq -r .buildoutputs.out.path`.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::harness::{Backend, MK, Server, nonce, write};
use crate::on_both_backends;

fn release_nix(constituents: &str, marker: &str) -> String {
    format!(
        r#"{{ nonce }}:
let {MK}
in rec {{
  myapp = mk "myapp" ''
    mkdir -p $out/bin
    printf '#!/bin/sh\necho "myapp is running"\n' > $out/bin/myapp
    chmod +x $out/bin/myapp
    echo "built myapp"
  '';

  myapp_test_does_it_run = mk "myapp-test" ''
    ${{myapp}}/bin/myapp | tee $out
    grep -q running $out
  '';

  release_gate = mk "release-gate" ''
    echo "gate {marker}" > $out
  '' // {{
    _hydraAggregate = true;
    {constituents}
  }};
}}
"#
    )
}

/// `latest-finished` of the gate as a deploy script reads it: following
/// the redirect with `Accept: application/json`.
fn deployed_build(server: &Server, job: &str) -> Value {
    let answer = server.get_following(&format!("/job/demo/main/{job}/latest-finished"));
    assert_eq!(answer.status, 200, "{}", answer.body);
    answer.json()
}

fn out_path(build: &Value) -> String {
    build["buildoutputs"]["out"]["path"].as_str().expect("buildoutputs.out.path").to_owned()
}

/// Checks the gate of evaluation `eval` and returns its build.
fn check_gate(server: &Server, eval: &Value) -> Value {
    let eval_id = eval["id"].as_i64().unwrap();
    let builds = server.wait_for_eval_builds(eval_id);
    assert_eq!(builds.len(), 3, "{builds:?}");
    for (job, build) in &builds {
        assert_eq!(build["buildstatus"], 0, "{job}: {build}");
        assert_eq!(build["finished"], 1);
        assert!(build["jobsetevals"].as_array().unwrap().contains(&json!(eval_id)));
    }
    let gate = &builds["release_gate"];

    // /eval/N/job/JOB leads to the gate's build of this eval.
    let answer = server.get(&format!("/eval/{eval_id}/job/release_gate"));
    assert_eq!(answer.status, 302);
    assert!(answer.location.as_deref().unwrap().ends_with(&format!("/build/{}", gate["id"])));

    let latest = server.get_following("/job/demo/main/release_gate/latest").json();
    let finished = deployed_build(server, "release_gate");
    assert_eq!(latest["id"], gate["id"]);
    assert_eq!(finished["id"], gate["id"]);
    assert_eq!(out_path(&finished), out_path(gate));
    assert!(std::path::Path::new(&out_path(&finished)).exists(), "the deployed path is in the store");

    let constituents = server.get_json(&format!("/build/{}/constituents", gate["id"]));
    let constituent_paths: BTreeSet<String> = constituents.as_array().unwrap().iter().map(out_path).collect();
    let expected: BTreeSet<String> =
        ["myapp", "myapp_test_does_it_run"].iter().map(|job| out_path(&deployed_build(server, job))).collect();
    assert_eq!(constituent_paths, expected);
    assert_eq!(constituent_paths, [out_path(&builds["myapp"]), out_path(&builds["myapp_test_does_it_run"])].into());
    gate.clone()
}

fn deploy(backend: Backend) {
    let server = Server::start(backend);
    let src = server.source_dir("src");
    let nonce = nonce();
    write(&src.join("release.nix"), &release_nix("constituents = [ myapp myapp_test_does_it_run ];", "drv"));
    server.create_jobset("demo", "main", &src, "release.nix", json!({ "nonce": { "type": "string", "value": nonce } }));

    // Constituents as derivations.
    let eval = server.wait_for_evals("demo", "main", 1);
    assert_eq!(eval["hasnewbuilds"], 1);
    let first_gate = check_gate(&server, &eval);
    let myapp = deployed_build(&server, "myapp");
    let app = format!("{}/bin/myapp", out_path(&myapp));
    let output = std::process::Command::new(&app).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&output.stdout), "myapp is running\n");
    // The test's log is the builder's output.
    let test_build = deployed_build(&server, "myapp_test_does_it_run");
    let log = server.get(&format!("/build/{}/log", test_build["id"]));
    assert_eq!(log.status, 200);
    assert!(log.body.contains("myapp is running"), "{}", log.body);
    // Nothing to build twice: an unchanged jobset is not evaluated again.
    server.push("demo", "main", false);
    server.wait_for("the unchanged check", std::time::Duration::from_secs(60), || {
        let jobset = server.get_json("/jobset/demo/main");
        (jobset["lastcheckoutcome"] == "unchanged").then_some(())
    });
    assert_eq!(server.evals("demo", "main").len(), 1);

    // Constituents as job names.
    write(&src.join("release.nix"), &release_nix("constituents = [ \"myapp\" \"myapp_test_does_it_run\" ];", "names"));
    server.push("demo", "main", false);
    let eval = server.wait_for_evals("demo", "main", 2);
    let second_gate = check_gate(&server, &eval);
    assert_ne!(second_gate["id"], first_gate["id"], "a changed gate is a new build");
    // The application did not change: its build is reused, not rebuilt.
    assert_eq!(deployed_build(&server, "myapp")["id"], myapp["id"]);

    // Constituents as a glob of every other job.
    write(&src.join("release.nix"), &release_nix("_hydraGlobConstituents = true; constituents = [ \"*\" ];", "glob"));
    server.push("demo", "main", false);
    let eval = server.wait_for_evals("demo", "main", 3);
    let third_gate = check_gate(&server, &eval);
    assert_ne!(third_gate["id"], second_gate["id"]);

    // The whole history stays reachable.
    let evals = server.evals("demo", "main");
    assert_eq!(evals.len(), 3);
    let ids: Vec<i64> = evals.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");
    let answer = server.get("/jobset/demo/main/latest-eval");
    assert_eq!(answer.status, 302);
    assert!(answer.location.unwrap().ends_with(&format!("/eval/{}", ids[0])));
    // latest with the rest of the path kept.
    let answer = server.get("/job/demo/main/release_gate/latest/constituents");
    assert_eq!(answer.status, 302);
    assert!(answer.location.unwrap().ends_with(&format!("/build/{}/constituents", third_gate["id"])));
    let system = third_gate["system"].as_str().unwrap();
    let answer = server.get_following(&format!("/job/demo/main/release_gate/latest-for/{system}"));
    assert_eq!(answer.json()["id"], third_gate["id"]);
    assert_eq!(server.get("/job/demo/main/release_gate/latest-for/mips-plan9").status, 404);
    assert_eq!(server.get("/job/demo/main/no_such_job/latest").status, 404);
}

on_both_backends!(deploy);
