//! Things going wrong, and the server telling exactly what and where while
//! everything else goes on: a failing job and its dependent, timeouts, a
//! job that does not evaluate among many, a syntax error in the whole
//! expression, malformed requests; then restarting and cancelling builds.

use std::time::Duration;

use serde_json::json;

use crate::harness::{Backend, MK, Options, Server, nonce, write};
use crate::on_both_backends;

fn release_nix(extra: &str) -> String {
    format!(
        r#"{{ nonce }}:
let {MK}
in rec {{
  ok = mk "ok" "echo fine > $out";
  broken = mk "broken" "echo 'about to fail on purpose'; exit 1";
  dependent = mk "dependent" "cat ${{broken}} > $out";
  slow = mk "slow" "echo started; sleep 60; echo > $out" // {{ meta.timeout = 2; }};
  silent = mk "silent" "echo started; sleep 60; echo > $out" // {{ meta.maxSilent = 2; }};
  doesNotEvaluate = throw "this job is broken on purpose";
  missingAttribute = ok.noSuchAttribute;
  memoryHog = mk "hog-${{toString (builtins.length (builtins.genList (i: "item ${{toString i}}") 100000000))}}" "";
  nested = {{ inner = mk "inner" "echo nested > $out"; }};
  chatty = mk "chatty" "seq 1 100000; echo > $out";
  huge = mk "huge" "head -c 300000 /dev/zero > $out";
  {extra}
}}
"#
    )
}

fn failures(backend: Backend) {
    let server = Server::start_with(
        backend,
        Options {
            queue_config: "max_log_size = 100000\nmax_output_size = 200000".into(),
            evaluator_config: "worker_memory_mb = 1024".into(),
            ..Options::default()
        },
    );
    let src = server.source_dir("src");
    write(&src.join("release.nix"), &release_nix(""));
    server.create_jobset(
        "broken",
        "main",
        &src,
        "release.nix",
        json!({ "nonce": { "type": "string", "value": nonce() } }),
    );

    let eval = server.wait_for_evals("broken", "main", 1);
    let eval_id = eval["id"].as_i64().unwrap();
    let builds = server.wait_for_eval_builds(eval_id);
    let names: Vec<&str> = builds.keys().map(String::as_str).collect();
    assert_eq!(names, ["broken", "chatty", "dependent", "huge", "nested.inner", "ok", "silent", "slow"]);
    assert_eq!(builds["chatty"]["buildstatus"], 10, "log limit");
    assert_eq!(builds["huge"]["buildstatus"], 11, "output limit");
    assert_eq!(builds["ok"]["buildstatus"], 0);
    assert_eq!(builds["nested.inner"]["buildstatus"], 0);
    assert_eq!(builds["broken"]["buildstatus"], 1);
    assert_eq!(builds["dependent"]["buildstatus"], 2);
    assert_eq!(builds["slow"]["buildstatus"], 7);
    assert_eq!(builds["silent"]["buildstatus"], 7);

    // The failing build's log is there, whole and as a tail.
    let broken_id = builds["broken"]["id"].as_i64().unwrap();
    for path in [
        format!("/build/{broken_id}/log"),
        format!("/build/{broken_id}/log/raw"),
        format!("/build/{broken_id}/log/tail"),
    ] {
        let log = server.get(&path);
        assert_eq!(log.status, 200, "{path}");
        assert!(log.content_type.starts_with("text/plain"), "{path}: {}", log.content_type);
        assert!(log.body.contains("about to fail on purpose"), "{path}: {}", log.body);
    }
    // The dependent build shows the failed step, pointing at the build it ran for.
    let steps = server.get_json(&format!("/build/{}/steps", builds["dependent"]["id"]));
    let step = &steps[0];
    assert_eq!(step["status"], 1, "{steps}");
    assert_eq!(step["propagatedfrom"], broken_id);
    assert!(step["drvpath"].as_str().unwrap().ends_with("-broken.drv"));
    let log = server.get(&format!("/build/{}/log", builds["dependent"]["id"]));
    assert!(log.body.contains("about to fail on purpose"), "the dependent's log is the failure's: {}", log.body);
    let slow_steps = server.get_json(&format!("/build/{}/steps", builds["slow"]["id"]));
    assert!(slow_steps[0]["errormsg"].as_str().unwrap().contains("timed out"), "{slow_steps}");
    let silent_log = server.get(&format!("/build/{}/log", builds["silent"]["id"]));
    assert!(silent_log.body.contains("started"));

    // Jobs that do not evaluate are reported, the others were built.
    let eval = server.get_json(&format!("/eval/{eval_id}"));
    let errors = eval["errors"].as_array().unwrap();
    let failed_jobs: Vec<&str> = errors.iter().map(|e| e["job"].as_str().unwrap()).collect();
    assert_eq!(failed_jobs, ["doesNotEvaluate", "memoryHog", "missingAttribute"], "{eval}");
    assert!(errors[0]["message"].as_str().unwrap().contains("this job is broken on purpose"));
    // The evaluator's memory cap stopped the job, not the server or the others.
    assert!(errors[1]["message"].as_str().unwrap().contains("out of memory"), "{}", errors[1]);
    assert!(errors[2]["message"].as_str().unwrap().contains("noSuchAttribute"));
    let jobset = server.get_json("/jobset/broken/main");
    let errormsg = jobset["errormsg"].as_str().unwrap();
    assert!(
        errormsg.contains("in job ‘doesNotEvaluate’") && errormsg.contains("this job is broken on purpose"),
        "{errormsg}"
    );

    // Restarting a failed build builds it again (the failure is not taken
    // from the cache) and it fails again, with a new step.
    let answer = server.post(&format!("/build/{broken_id}/restart"));
    assert_eq!(answer.status, 302, "{}", answer.body);
    assert!(answer.location.unwrap().ends_with(&format!("/build/{broken_id}")));
    let rebuilt = server.wait_for("the restarted build", Duration::from_secs(60), || {
        let build = server.get_json(&format!("/build/{broken_id}"));
        (build["finished"] == 1).then_some(build)
    });
    assert_eq!(rebuilt["buildstatus"], 1);
    let steps = server.get_json(&format!("/build/{broken_id}/steps"));
    assert_eq!(steps.as_array().unwrap().len(), 2, "{steps}");
    assert_eq!(steps[1]["status"], 1);
    assert_eq!(server.post(&format!("/build/{broken_id}/cancel")).status, 400, "a finished build cannot be cancelled");
    // restart-failed on the eval restarts every unsuccessful build.
    let answer = server.post(&format!("/eval/{eval_id}/restart-failed"));
    assert_eq!(answer.status, 302);
    let rebuilt = server.wait_for_eval_builds(eval_id);
    assert_eq!(rebuilt["dependent"]["buildstatus"], 2);
    assert_eq!(rebuilt["slow"]["buildstatus"], 7);
    assert_eq!(rebuilt["chatty"]["buildstatus"], 10);

    // A long build is cancelled while it runs.
    write(&src.join("release.nix"), &release_nix(r#"long = mk "long" "echo waiting; sleep 600; echo > $out";"#));
    server.push("broken", "main", false);
    let eval = server.wait_for_evals("broken", "main", 2);
    let long = server.get_following(&format!("/eval/{}/job/long", eval["id"])).json();
    let long_id = long["id"].as_i64().unwrap();
    server.wait_for("the long build to start", Duration::from_secs(60), || {
        let steps = server.get_json(&format!("/build/{long_id}/steps"));
        (steps.as_array().unwrap().first().is_some_and(|s| s["busy"] == 1)).then_some(())
    });
    // The jobset's counts (kept by the database as builds change) see the
    // running build, then its cancellation.
    let counts = || {
        let jobsets = server.get_json("/api/jobsets?project=broken");
        let main = jobsets.as_array().unwrap().iter().find(|j| j["name"] == "main").unwrap().clone();
        ["nrscheduled", "nrsucceeded", "nrfailed", "nrtotal"].map(|field| main[field].as_u64().unwrap())
    };
    let [scheduled, succeeded, failed, total] = counts();
    assert_eq!((scheduled, succeeded + failed + scheduled), (1, total), "only the long build runs");
    let answer = server.post(&format!("/build/{long_id}/cancel"));
    assert_eq!(answer.status, 302);
    let cancelled = server.get_json(&format!("/build/{long_id}"));
    assert_eq!((cancelled["finished"].clone(), cancelled["buildstatus"].clone()), (json!(1), json!(4)));
    assert_eq!(counts(), [0, succeeded, failed + 1, total], "the cancelled build counts as failed");
    let step = server.wait_for("the cancelled step to stop", Duration::from_secs(30), || {
        let steps = server.get_json(&format!("/build/{long_id}/steps"));
        (steps[0]["busy"] == 0).then(|| steps[0].clone())
    });
    assert_eq!(step["status"], 4);

    // A syntax error: recorded and shown, no evaluation; the jobset
    // works again once it is fixed.
    write(&src.join("release.nix"), "{ nonce }: { ok = ; }");
    server.push("broken", "main", false);
    let jobset = server.wait_for("the syntax error", Duration::from_secs(60), || {
        let jobset = server.get_json("/jobset/broken/main");
        (jobset["lastcheckoutcome"] == "eval-failed").then_some(jobset)
    });
    assert!(jobset["errormsg"].as_str().unwrap().contains("syntax error"), "{jobset}");
    assert!(jobset["errortime"].is_i64());
    assert_eq!(server.evals("broken", "main").len(), 2);
    write(&src.join("release.nix"), &release_nix(""));
    server.push("broken", "main", false);
    server.wait_for_evals("broken", "main", 3);
    let jobset = server.get_json("/jobset/broken/main");
    assert!(!jobset["errormsg"].as_str().unwrap().contains("syntax error"), "{jobset}");
    assert_eq!(jobset["lastcheckoutcome"], "evaluated");
}

/// Malformed and invalid requests are refused with a 4xx naming the problem.
fn bad_requests(backend: Backend) {
    let server = Server::start(backend);
    let src = server.source_dir("src");
    write(&src.join("release.nix"), "{ }: { }");

    let answer = server.put_raw("/project/p", "{not json");
    assert_eq!(answer.status, 400);
    assert!(answer.json()["error"].as_str().unwrap().contains("malformed JSON body"), "{}", answer.body);
    assert_eq!(server.put_raw("/project/p", "[1, 2]").status, 400);
    let answer = server.put("/project/1p", &json!({ "displayname": "x" }));
    assert_eq!(answer.status, 400);
    assert!(answer.json()["error"].as_str().unwrap().contains("invalid project name"));
    let answer = server.put("/project/p", &json!({ "displayname": "P", "enabled": "maybe" }));
    assert_eq!(answer.status, 400);
    assert!(answer.json()["error"].as_str().unwrap().contains("enabled"), "{}", answer.body);
    let answer = server.put("/project/p", &json!({ "displayname": "P" }));
    assert_eq!(answer.status, 201, "{}", answer.body);
    let created = answer.json();
    assert_eq!(created["type"], "project");
    assert_eq!(created["name"], "p");
    assert!(created["uri"].as_str().unwrap().ends_with("/project/p"));
    assert_eq!(server.put("/project/p", &json!({ "description": "updated" })).status, 200);
    assert_eq!(server.get_json("/project/p")["description"], "updated");

    let jobset =
        |inputs: serde_json::Value| json!({ "nixexprinput": "src", "nixexprpath": "release.nix", "inputs": inputs });
    let src_input = json!({ "type": "path", "value": src.display().to_string() });
    let answer = server.put("/jobset/p/j", &jobset(json!({ "src": src_input, "x": { "type": "gti", "value": "u" } })));
    assert_eq!(answer.status, 400);
    let message = answer.json()["error"].as_str().unwrap().to_owned();
    assert!(
        message.contains("invalid input type ‘gti’")
            && message.contains("boolean, build, eval, git, nix, path, string, svn"),
        "{message}"
    );
    let answer =
        server.put("/jobset/p/j", &jobset(json!({ "src": src_input, "b": { "type": "boolean", "value": "perhaps" } })));
    assert_eq!(answer.status, 400);
    assert!(answer.json()["error"].as_str().unwrap().contains("field ‘inputs.b’"));
    let answer = server.put("/jobset/p/j", &jobset(json!({ "src": { "type": "path", "value": "/etc" } })));
    assert_eq!(answer.status, 400);
    assert!(answer.json()["error"].as_str().unwrap().contains("allowed_path_roots"), "{}", answer.body);
    let answer = server.put("/jobset/p/j", &jobset(json!({ "other": src_input })));
    assert_eq!(answer.status, 400);
    assert!(answer.json()["error"].as_str().unwrap().contains("nixexprinput"));
    let answer = server.put(
        "/jobset/p/j",
        &json!({ "nixexprinput": "src", "nixexprpath": "../release.nix", "inputs": { "src": src_input } }),
    );
    assert_eq!(answer.status, 400);
    let answer = server.put(
        "/jobset/p/j",
        &json!({ "nixexprinput": "src", "nixexprpath": "release.nix", "checkinterval": "often", "inputs": { "src": src_input } }),
    );
    assert_eq!(answer.status, 400);
    assert!(answer.json()["error"].as_str().unwrap().contains("checkinterval"));
    let answer = server.put(
        "/jobset/p/j",
        &json!({ "nixexprinput": "src", "nixexprpath": "release.nix", "enabled": 7, "inputs": { "src": src_input } }),
    );
    assert_eq!(answer.status, 400);
    assert_eq!(server.put("/jobset/nope/j", &jobset(json!({ "src": src_input }))).status, 404);
    assert_eq!(server.get("/jobset/p/j").status, 404, "nothing was created by the refused requests");

    let answer = server.put("/jobset/p/j", &jobset(json!({ "src": src_input })));
    assert_eq!(answer.status, 201, "{}", answer.body);
    assert_eq!(answer.json()["type"], "jobset");

    for path in ["/project/nope", "/jobset/p/nope", "/build/999999", "/eval/999999", "/build/abc", "/nothing/here"] {
        let answer = server.get(path);
        assert_eq!(answer.status, 404, "{path}: {}", answer.body);
        assert!(answer.json()["error"].is_string(), "{path}: {}", answer.body);
    }
    let answer = server.post("/api/push?jobsets=nocolon");
    assert_eq!(answer.status, 400);
    assert_eq!(server.post("/api/push?jobsets=p:nope").json()["jobsetsTriggered"], json!([]));

    assert_eq!(server.delete("/jobset/p/j").status, 200);
    assert_eq!(server.delete("/project/p").status, 200);
    assert_eq!(server.get("/project/p").status, 404);
}

on_both_backends!(failures);
on_both_backends!(bad_requests);
