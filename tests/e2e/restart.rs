//! A server killed with SIGKILL in the middle of builds and started again
//! finishes every queued build, records no build twice and loses none.

use std::time::Duration;

use serde_json::json;

use crate::harness::{Backend, MK, Options, Server, nonce, write};
use crate::on_both_backends;

const JOBS: usize = 6;

fn release_nix() -> String {
    let mut jobs = String::new();
    for i in 0..JOBS {
        jobs.push_str(&format!("  job{i} = mk \"job{i}\" \"echo building {i}; sleep 2; echo done {i} > $out\";\n"));
    }
    format!(
        r#"{{ nonce }}:
let {MK}
in rec {{
{jobs}  chained = mk "chained" "cat ${{job0}} ${{job5}} > $out";
}}
"#
    )
}

fn killed_and_restarted(backend: Backend) {
    let mut server = Server::start_with(backend, Options { max_jobs: 2, ..Options::default() });
    let src = server.source_dir("src");
    write(&src.join("release.nix"), &release_nix());
    server.create_jobset(
        "crash",
        "main",
        &src,
        "release.nix",
        json!({ "nonce": { "type": "string", "value": nonce() } }),
    );
    let eval = server.wait_for_evals("crash", "main", 1);
    let eval_id = eval["id"].as_i64().unwrap();
    let builds = eval["builds"].as_array().unwrap().clone();
    assert_eq!(builds.len(), JOBS + 1);

    // Kill it while steps are running and some builds are done.
    server.wait_for("some builds to finish while others run", Duration::from_secs(120), || {
        let all = server.get_json(&format!("/eval/{eval_id}/builds"));
        let finished = all.as_array().unwrap().iter().filter(|b| b["finished"] == 1).count();
        (1..JOBS).contains(&finished).then_some(())
    });
    server.kill9();
    server.restart();

    let finished = server.wait_for_eval_builds(eval_id);
    assert_eq!(finished.len(), JOBS + 1);
    for (job, build) in &finished {
        assert_eq!(build["buildstatus"], 0, "{job}: {build}");
        let out = build["buildoutputs"]["out"]["path"].as_str().unwrap();
        assert!(std::path::Path::new(out).exists(), "{job}: {out}");
    }
    // Nothing recorded twice: one evaluation, the same builds, each once.
    let evals = server.evals("crash", "main");
    assert_eq!(evals.len(), 1, "the restart did not evaluate again: {evals:?}");
    assert_eq!(evals[0]["builds"].as_array().unwrap(), &builds);
    let queue = server.get("/api/nrqueue");
    assert_eq!(queue.body.trim(), "0");
    // Steps interrupted by the kill are recorded as aborted, and ran again.
    let mut interrupted = 0;
    for build in finished.values() {
        let steps = server.get_json(&format!("/build/{}/steps", build["id"]));
        for step in steps.as_array().unwrap() {
            assert_eq!(step["busy"], 0, "{step}");
            if step["status"] == 3 {
                interrupted += 1;
                assert!(step["errormsg"].as_str().unwrap().contains("interrupted"));
            }
        }
    }
    assert!(interrupted >= 1, "at least one step was running when the server was killed");
}

on_both_backends!(killed_and_restarted);
