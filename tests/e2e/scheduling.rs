//! When jobsets are evaluated (check interval, enabled states 0-3, push)
//! and in which order builds run (scheduling priority, bump).

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{Backend, MK, Options, Server, nonce, write};
use crate::on_both_backends;

fn one_job(script: &str) -> String {
    format!("{{ nonce }}:\nlet {MK}\nin {{ job = mk \"job\" \"{script}\"; }}\n")
}

fn put_jobset(server: &Server, name: &str, enabled: i64, interval: i64, src: &std::path::Path, nonce: &str) {
    let answer = server.put(
        &format!("/jobset/sched/{name}"),
        &json!({
            "enabled": enabled,
            "checkinterval": interval,
            "nixexprinput": "src",
            "nixexprpath": "release.nix",
            "inputs": {
                "src": { "type": "path", "value": src.display().to_string() },
                "nonce": { "type": "string", "value": nonce },
            },
        }),
    );
    assert_eq!(answer.status, 201, "{}", answer.body);
}

fn enabled_states(backend: Backend) {
    let server = Server::start(backend);
    assert_eq!(server.put("/project/sched", &json!({ "displayname": "Scheduling" })).status, 201);

    // 1: evaluated on its check interval, without any push.
    let interval_src = server.source_dir("interval");
    write(&interval_src.join("release.nix"), &one_job("echo one > $out"));
    put_jobset(&server, "interval", 1, 1, &interval_src, &nonce());
    server.wait_for_evals("sched", "interval", 1);
    write(&interval_src.join("release.nix"), &one_job("echo two > $out"));
    server.wait_for_evals("sched", "interval", 2);

    // 2: one-shot, evaluated once and then switched off.
    let oneshot_src = server.source_dir("oneshot");
    write(&oneshot_src.join("release.nix"), &one_job("echo once > $out"));
    put_jobset(&server, "oneshot", 2, 1, &oneshot_src, &nonce());
    server.wait_for_evals("sched", "oneshot", 1);
    let jobset = server.wait_for("the one-shot jobset to switch off", Duration::from_secs(30), || {
        let jobset = server.get_json("/jobset/sched/oneshot");
        (jobset["enabled"] == 0).then_some(jobset)
    });
    assert_eq!(jobset["enabled"], 0);

    // 0: disabled jobsets are neither checked nor triggered.
    let disabled_src = server.source_dir("disabled");
    write(&disabled_src.join("release.nix"), &one_job("echo never > $out"));
    put_jobset(&server, "disabled", 0, 1, &disabled_src, &nonce());
    let answer = server.post("/api/push?jobsets=sched:disabled,sched:oneshot&force=1");
    assert_eq!(answer.json()["jobsetsTriggered"], json!([]));

    // 3: one at a time, not evaluated while its last evaluation is building.
    let serial_src = server.source_dir("serial");
    write(&serial_src.join("release.nix"), &one_job("echo building; sleep 4; echo first > $out"));
    put_jobset(&server, "serial", 3, 1, &serial_src, &nonce());
    let first = server.wait_for_evals("sched", "serial", 1);
    write(&serial_src.join("release.nix"), &one_job("echo second > $out"));
    let second = server.wait_for_evals("sched", "serial", 2);
    let first_build = server.get_json(&format!("/build/{}", first["builds"][0]));
    assert_eq!(first_build["finished"], 1);
    assert!(
        second["timestamp"].as_i64() >= first_build["stoptime"].as_i64(),
        "the second evaluation came after the first one's build: {second} {first_build}"
    );

    // Meanwhile the interval jobset was not evaluated again for nothing.
    assert_eq!(server.evals("sched", "interval").len(), 2);
    assert_eq!(server.get_json("/jobset/sched/interval")["lastcheckoutcome"], "unchanged");
    assert!(server.evals("sched", "disabled").is_empty());
    assert_eq!(server.evals("sched", "oneshot").len(), 1);
}

fn start_times(server: &Server, builds: &std::collections::BTreeMap<String, Value>) -> Vec<(i64, String)> {
    let mut order: Vec<(i64, String)> = builds
        .iter()
        .map(|(job, build)| {
            let steps = server.get_json(&format!("/build/{}/steps", build["id"]));
            (steps[0]["starttime"].as_i64().unwrap(), job.clone())
        })
        .collect();
    order.sort();
    order
}

fn build_order(backend: Backend) {
    let server = Server::start_with(backend, Options { max_jobs: 1, ..Options::default() });
    let src = server.source_dir("src");
    let mut jobs = String::new();
    for i in 0..4 {
        jobs.push_str(&format!("  a{i} = mk \"a{i}\" \"echo a{i}; sleep 2; echo > $out\";\n"));
    }
    write(
        &src.join("release.nix"),
        &format!(
            "{{ nonce }}:\nlet {MK}\nin {{\n{jobs}  urgent = mk \"urgent\" \"echo urgent; sleep 2; echo > $out\" // {{ meta.schedulingPriority = 200; }};\n}}\n"
        ),
    );
    server.create_jobset(
        "order",
        "main",
        &src,
        "release.nix",
        json!({ "nonce": { "type": "string", "value": nonce() } }),
    );
    let eval = server.wait_for_evals("order", "main", 1);
    let eval_id = eval["id"].as_i64().unwrap();
    let by_job: std::collections::BTreeMap<String, i64> = server
        .get_json(&format!("/eval/{eval_id}/builds"))
        .as_array()
        .unwrap()
        .iter()
        .map(|b| (b["job"].as_str().unwrap().to_owned(), b["id"].as_i64().unwrap()))
        .collect();
    // The urgent job goes first; while it runs, a3 is bumped to the front.
    server.wait_for("the first build to start", Duration::from_secs(60), || {
        let steps = server.get_json(&format!("/build/{}/steps", by_job["urgent"]));
        (!steps.as_array().unwrap().is_empty()).then_some(())
    });
    let answer = server.post(&format!("/build/{}/bump", by_job["a3"]));
    assert_eq!(answer.status, 302);
    assert!(server.get_json(&format!("/build/{}", by_job["a3"]))["globalpriority"].as_i64().unwrap() > 0);
    let builds = server.wait_for_eval_builds(eval_id);
    let order: Vec<String> = start_times(&server, &builds).into_iter().map(|(_, job)| job).collect();
    assert_eq!(order, ["urgent", "a3", "a0", "a1", "a2"]);
}

on_both_backends!(enabled_states);
on_both_backends!(build_order);
