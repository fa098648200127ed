//! A larger evaluation followed as it runs: the jobset shows how far it is,
//! an evaluator worker whose memory goes over `evaluator.worker_memory_mb`
//! is replaced between jobs and the rest goes on in a fresh one, and a job
//! that is over the cap on its own is the only one recorded as failed.

use std::time::Duration;

use serde_json::json;

use crate::harness::{Backend, MK, Options, Server, nonce, write};

/// 40 jobs that each keep ~50 MiB alive in the evaluator (`keep` is part of
/// the job's value, which the expression's root holds), and take a moment
/// each; and one that needs far more than the cap alone.
fn release_nix() -> String {
    format!(
        r#"{{ nonce }}:
let {MK}
  job = i:
    let kept = builtins.genList (x: x * i) 250000;
    in mk "job-${{toString i}}-${{toString (builtins.foldl' (a: b: a + b) 0 kept)}}" "echo > $out" // {{ keep = kept; }};
in builtins.listToAttrs (builtins.genList (i: {{ name = "job${{toString i}}"; value = job i; }}) 40) // {{
  memoryHog = mk "hog-${{toString (builtins.length (builtins.genList (i: "item ${{toString i}}") 50000000))}}" "";
}}
"#
    )
}

#[test]
fn evaluation_shows_progress_and_replaces_full_workers() {
    let server = Server::start_with(
        Backend::Sqlite,
        Options {
            evaluator_config: "worker_memory_mb = 150".into(),
            // Nothing is built: the evaluation is what is watched.
            extra_tables: "[machines]\nlocal = false\n".into(),
            ..Options::default()
        },
    );
    let src = server.source_dir("src");
    write(&src.join("release.nix"), &release_nix());
    server.create_jobset(
        "big",
        "main",
        &src,
        "release.nix",
        json!({ "nonce": { "type": "string", "value": nonce() } }),
    );

    // While it runs, the jobset says how far it is, in JSON and on its page.
    let progress = server.wait_for("the evaluation's progress", Duration::from_secs(120), || {
        let jobset = server.get_json("/jobset/big/main");
        let progress = jobset["evaluation"].clone();
        (progress["evaluated"].as_u64().unwrap_or(0) > 0).then_some(progress)
    });
    assert_eq!(progress["total"], 41, "{progress}");
    assert!(progress["evaluated"].as_u64().unwrap() <= 41, "{progress}");
    let page = server.get_page("/jobset/big/main");
    assert!(page.contains("Evaluating") && page.contains(" of 41 jobs"), "{page}");

    let eval = server.wait_for_evals("big", "main", 1);
    // Every job is there but the one that is over the cap alone.
    assert_eq!(eval["builds"].as_array().unwrap().len(), 40, "{eval}");
    let eval = server.get_json(&format!("/eval/{}", eval["id"]));
    let errors = eval["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{eval}");
    assert_eq!(errors[0]["job"], "memoryHog");
    let message = errors[0]["message"].as_str().unwrap();
    assert!(message.contains("out of memory") && message.contains("worker_memory_mb (150 MiB)"), "{message}");
    // Finished: no progress any more.
    assert!(server.get_json("/jobset/big/main")["evaluation"].is_null());
    // A worker was replaced on the way (none can hold more than 2 of them).
    let log = server.log();
    assert!(log.contains("evaluator worker replaced"), "no worker was replaced:\n{log}");
}
