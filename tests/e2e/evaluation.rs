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

/// Ten slow jobs then thirty quick ones, evaluated by two workers: each
/// starts on a half, and the one given only quick jobs, done early, takes
/// the far part of the other's (the slow jobs are named first, so they are
/// all in the first half).
fn uneven_release_nix() -> String {
    format!(
        r#"{{ nonce }}:
let {MK}
  slow = i: mk "slow${{toString i}}-made-${{toString (builtins.foldl' (a: b: a + b) 0 (builtins.genList (x: x * i) 1500000))}}" "echo > $out";
  quick = i: mk "quick${{toString i}}-made" "echo > $out";
  named = prefix: f: n: builtins.listToAttrs (builtins.genList (i: {{ name = "${{prefix}}${{toString (10 + i)}}"; value = f i; }}) n);
in named "a" slow 10 // named "b" quick 30
"#
    )
}

#[test]
fn a_free_worker_takes_over_part_of_a_slow_one() {
    let server = Server::start_with(
        Backend::Sqlite,
        // Two workers, the harness's default.
        Options { extra_tables: "[machines]\nlocal = false\n".into(), ..Options::default() },
    );
    let src = server.source_dir("src");
    write(&src.join("release.nix"), &uneven_release_nix());
    server.create_jobset(
        "uneven",
        "main",
        &src,
        "release.nix",
        json!({ "nonce": { "type": "string", "value": nonce() } }),
    );
    let eval = server.wait_for_evals("uneven", "main", 1);
    let builds = server.get_json(&format!("/eval/{}/builds", eval["id"]));
    let mut made: Vec<(String, String)> = builds
        .as_array()
        .unwrap()
        .iter()
        .map(|b| (b["job"].as_str().unwrap().to_owned(), b["nixname"].as_str().unwrap().to_owned()))
        .collect();
    made.sort();
    // Every job once, each with its own derivation, none lost at the cut.
    assert_eq!(made.len(), 40, "{made:?}");
    for (job, nix_name) in &made {
        let index: u32 = job[1..].parse().unwrap();
        let expected = if job.starts_with('a') {
            format!("slow{}-made-", index - 10)
        } else {
            format!("quick{}-made", index - 10)
        };
        assert!(nix_name.starts_with(&expected), "{job} made {nix_name}");
    }
    assert!(server.get_json(&format!("/eval/{}", eval["id"]))["errors"].as_array().unwrap().is_empty());
    let log = server.log();
    assert!(log.contains("evaluator slice cut"), "no slice was cut:\n{log}");
}
