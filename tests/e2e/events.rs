//! The event outbox: every change to evaluations and builds is recorded as
//! an event, in order, written with the change itself, and kept across a
//! restart; `/api/events` lists them.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{Backend, MK, Server, nonce, write};
use crate::on_both_backends;

fn all_events(server: &Server) -> Vec<Value> {
    server.get_json("/api/events?after=0&limit=10000").as_array().unwrap().clone()
}

fn kinds_of_build(server: &Server, build: i64) -> Vec<(String, Option<i64>)> {
    server
        .get_json(&format!("/api/events?build={build}"))
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["kind"].as_str().unwrap().to_owned(), e["data"]["status"].as_i64()))
        .collect()
}

fn kinds(list: &[(&str, Option<i64>)]) -> Vec<(String, Option<i64>)> {
    list.iter().map(|(k, s)| (k.to_string(), *s)).collect()
}

fn events(backend: Backend) {
    let mut server = Server::start(backend);
    let src = server.source_dir("src");
    write(
        &src.join("release.nix"),
        &format!(
            "{{ nonce }}:\nlet {MK}\nin {{\n  ok = mk \"ok\" \"echo fine > $out\";\n  broken = mk \"broken\" \"exit 1\";\n}}\n"
        ),
    );
    server.create_jobset(
        "events",
        "main",
        &src,
        "release.nix",
        json!({ "nonce": { "type": "string", "value": nonce() } }),
    );
    let eval = server.wait_for_evals("events", "main", 1);
    let builds = server.wait_for_eval_builds(eval["id"].as_i64().unwrap());
    let (ok, broken) = (builds["ok"]["id"].as_i64().unwrap(), builds["broken"]["id"].as_i64().unwrap());

    let events = all_events(&server);
    let ids: Vec<i64> = events.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids increase: {ids:?}");
    let position = |kind: &str| events.iter().position(|e| e["kind"] == kind).unwrap_or_else(|| panic!("no {kind}"));
    assert!(position("eval-started") < position("eval-added"));
    let added = &events[position("eval-added")];
    assert_eq!(added["eval"], eval["id"]);
    assert_eq!(added["data"]["newbuilds"], 2);
    let queued: Vec<&str> =
        events.iter().filter(|e| e["kind"] == "build-queued").map(|e| e["data"]["job"].as_str().unwrap()).collect();
    assert_eq!(queued, ["broken", "ok"]);

    assert_eq!(
        kinds_of_build(&server, ok),
        kinds(&[
            ("build-queued", None),
            ("build-started", None),
            ("step-finished", Some(0)),
            ("build-finished", Some(0))
        ])
    );
    assert_eq!(
        kinds_of_build(&server, broken),
        kinds(&[
            ("build-queued", None),
            ("build-started", None),
            ("step-finished", Some(1)),
            ("build-finished", Some(1))
        ])
    );

    // A restart queues the build again: its events go on in order.
    assert_eq!(server.post(&format!("/build/{broken}/restart")).status, 302);
    server.wait_for("the restarted build", Duration::from_secs(60), || {
        (server.get_json(&format!("/build/{broken}"))["finished"] == 1).then_some(())
    });
    let again = kinds_of_build(&server, broken);
    assert_eq!(
        again[4..],
        kinds(&[
            ("build-queued", None),
            ("build-started", None),
            ("step-finished", Some(1)),
            ("build-finished", Some(1))
        ])
    );

    // Nothing changed: the next check is an evaluation found cached.
    server.push("events", "main", false);
    server.wait_for("a cached evaluation", Duration::from_secs(60), || {
        all_events(&server).iter().any(|e| e["kind"] == "eval-cached").then_some(())
    });
    // A syntax error: an evaluation that failed, with the message.
    write(&src.join("release.nix"), "{ nonce }: { broken = ; }\n");
    server.push("events", "main", false);
    let failed = server.wait_for("a failed evaluation", Duration::from_secs(60), || {
        all_events(&server).into_iter().find(|e| e["kind"] == "eval-failed")
    });
    assert_eq!(failed["data"]["reason"], "evaluation");
    assert!(failed["data"]["message"].as_str().unwrap().contains("syntax error"), "{failed}");

    // Paging from an id gives what came after it; all is kept over a restart.
    let before = all_events(&server);
    let middle = before[before.len() / 2]["id"].as_i64().unwrap();
    let rest = server.get_json(&format!("/api/events?after={middle}&limit=10000"));
    assert_eq!(rest.as_array().unwrap()[..], before[before.len() / 2 + 1..]);
    server.restart();
    let after = all_events(&server);
    assert_eq!(after[..before.len()], before[..]);
}

on_both_backends!(events);
