//! An evaluation's page says which jobs changed outcome since the one
//! before, whichever of a job's two builds finishes first: the database
//! keeps that as the builds finish (migration 16's triggers), so both
//! backends are tried.

use std::time::Duration;

use serde_json::json;

use crate::harness::{Backend, MK, Server, nonce, write};
use crate::on_both_backends;

fn release_nix(flip: &str, late: &str) -> String {
    format!("{{ nonce }}:\nlet {MK}\nin {{\n  flip = mk \"flip\" \"{flip}\";\n  late = {late};\n}}\n")
}

/// The comparison part of an evaluation's page: from its heading to the
/// list of builds.
fn changes(server: &Server, eval_id: i64) -> String {
    let page = server.get_page(&format!("/eval/{eval_id}"));
    let start = page.find("Compared with evaluation").expect("a comparison");
    let end = page[start..].find("<h2>Builds").map_or(page.len(), |end| start + end);
    page[start..end].to_owned()
}

fn outcome_changes(backend: Backend) {
    let server = Server::start_with(backend, Default::default());
    let src = server.source_dir("src");
    write(&src.join("release.nix"), &release_nix("exit 1", r#"mk "late" "echo waiting; sleep 600""#));
    server.create_jobset(
        "cmp",
        "main",
        &src,
        "release.nix",
        json!({ "nonce": { "type": "string", "value": nonce() } }),
    );
    let first = server.wait_for_evals("cmp", "main", 1);
    let first_late = server.get_following(&format!("/eval/{}/job/late", first["id"])).json();
    server.wait_for("the first flip to fail", Duration::from_secs(60), || {
        let flip = server.get_following(&format!("/eval/{}/job/flip", first["id"])).json();
        (flip["finished"] == 1).then_some(())
    });

    // flip now succeeds (its predecessor had failed before this build was
    // made); late has a new derivation, which succeeds while its
    // predecessor is still running.
    write(&src.join("release.nix"), &release_nix("echo fixed > $out", r#"mk "late-again" "echo > $out""#));
    server.push("cmp", "main", false);
    let second = server.wait_for_evals("cmp", "main", 2);
    let second_id = second["id"].as_i64().unwrap();
    let builds = server.wait_for_eval_builds(second_id);
    assert_eq!((builds["flip"]["buildstatus"].clone(), builds["late"]["buildstatus"].clone()), (json!(0), json!(0)));
    let listed = changes(&server, second_id);
    assert!(listed.contains("Newly succeeding (1)") && listed.contains("flip"), "{listed}");
    assert!(!listed.contains("late"), "late's predecessor has not finished: {listed}");
    assert!(listed.contains("1 jobs unchanged."), "{listed}");

    // The predecessor ends last (cancelled, which is not a success): late
    // is listed too.
    assert_eq!(server.post(&format!("/build/{}/cancel", first_late["id"])).status, 302);
    let listed = changes(&server, second_id);
    assert!(listed.contains("Newly succeeding (2)") && listed.contains("late"), "{listed}");
    assert!(listed.contains("0 jobs unchanged."), "{listed}");
    assert!(!listed.contains("Newly failing"), "{listed}");
}

on_both_backends!(outcome_changes);
