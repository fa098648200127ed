//! Push webhooks (signed, or refused) and Prometheus metrics (read back by
//! the reference Python parser).

use std::process::{Command, Stdio};
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::harness::{Backend, Identity, MK, Options, Server, nonce, write};
use crate::on_both_backends;

const GITHUB_SECRET: &str = "github-hook-secret";
const GITEA_SECRET: &str = "gitea-hook-secret";

fn sign(secret: &str, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

fn last_checked(server: &Server, jobset: &str) -> Option<i64> {
    server.get_json(&format!("/jobset/hooks/{jobset}"))["lastcheckedtime"].as_i64()
}

fn webhooks(backend: Backend) {
    let server = Server::start_with(
        backend,
        Options {
            extra_tables: format!(
                "[webhooks]\ngithub_secret = \"{GITHUB_SECRET}\"\ngitea_secret = \"{GITEA_SECRET}\"\n"
            ),
            ..Options::default()
        },
    );
    let src = server.source_dir("src");
    write(
        &src.join("release.nix"),
        &format!("{{ nonce, repo }}:\nlet {MK}\nin {{ job = mk \"job\" \"echo > $out\"; }}\n"),
    );
    for (jobset, repo) in
        [("widget", "https://github.com/acme/widget.git main"), ("gadget", "https://gitea.example.org/acme/gadget")]
    {
        server.create_jobset(
            "hooks",
            jobset,
            &src,
            "release.nix",
            json!({ "nonce": { "type": "string", "value": nonce() }, "repo": { "type": "string", "value": repo } }),
        );
        server.wait_for_evals("hooks", jobset, 1);
        server.wait_for("the first check", Duration::from_secs(30), || last_checked(&server, jobset));
    }
    let widget_checked = last_checked(&server, "widget");
    let gadget_checked = last_checked(&server, "gadget");

    let github_payload = json!({
        "ref": "refs/heads/main",
        "repository": {
            "name": "widget",
            "full_name": "acme/widget",
            "clone_url": "https://github.com/acme/widget.git",
            "html_url": "https://github.com/acme/widget",
            "ssh_url": "git@github.com:acme/widget.git",
        },
    })
    .to_string();
    let post = |path: &str, headers: &[(&str, &str)], body: &str| {
        let mut all = vec![("Content-Type", "application/json")];
        all.extend_from_slice(headers);
        server.request_with(&Identity::Anonymous, "POST", path, Some(("application/json", body)), &all)
    };

    // Refused: no signature, a wrong one, a signature of another payload.
    let bad = format!("sha256={}", sign("not-the-secret", &github_payload));
    let other = format!("sha256={}", sign(GITHUB_SECRET, "{}"));
    for headers in [vec![], vec![("X-Hub-Signature-256", bad.as_str())], vec![("X-Hub-Signature-256", other.as_str())]]
    {
        let answer = post("/api/push-github", &headers, &github_payload);
        assert_eq!(answer.status, 401, "{}", answer.body);
        assert!(answer.json()["error"].is_string());
    }
    let gitea_bad = sign("nope", "{}");
    let answer = post("/api/push-gitea", &[("X-Gitea-Signature", gitea_bad.as_str())], "{}");
    assert_eq!(answer.status, 401);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(last_checked(&server, "widget"), widget_checked, "a refused hook triggered an evaluation");
    assert_eq!(server.get_json("/jobset/hooks/widget")["triggertime"], Value::Null);

    // Accepted: the jobset with an input on the pushed repository, and only it.
    std::thread::sleep(Duration::from_millis(1100)); // so that the next check gets a later time
    let good = format!("sha256={}", sign(GITHUB_SECRET, &github_payload));
    let answer = post(
        "/api/push-github",
        &[("X-Hub-Signature-256", good.as_str()), ("X-GitHub-Event", "push")],
        &github_payload,
    );
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.json()["jobsetsTriggered"], json!(["hooks:widget"]));
    server.wait_for("the webhook's check", Duration::from_secs(30), || {
        (last_checked(&server, "widget") > widget_checked).then_some(())
    });
    assert_eq!(last_checked(&server, "gadget"), gadget_checked);

    let gitea_payload =
        json!({ "repository": { "clone_url": "https://gitea.example.org/acme/gadget.git" } }).to_string();
    let signature = sign(GITEA_SECRET, &gitea_payload);
    let answer = post("/api/push-gitea", &[("X-Gitea-Signature", signature.as_str())], &gitea_payload);
    assert_eq!(answer.json()["jobsetsTriggered"], json!(["hooks:gadget"]));
    server.wait_for("the gitea hook's check", Duration::from_secs(30), || {
        (last_checked(&server, "gadget") > gadget_checked).then_some(())
    });
}

/// Parses Prometheus text with the reference parser (prometheus_client);
/// returns `[{name, type, samples: [[name, labels, value]]}]`.
fn parse_prometheus(text: &str) -> Value {
    let script = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
families = []
for f in text_string_to_metric_families(sys.stdin.read()):
    families.append({"name": f.name, "type": f.type, "samples": [[s.name, s.labels, s.value] for s in f.samples]})
print(json.dumps(families))
"#;
    let mut child = Command::new("/usr/bin/python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 with prometheus_client (Debian: python3-prometheus-client)");
    use std::io::Write;
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "the Prometheus parser refused the text:\n{}\n{text}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

fn family<'a>(families: &'a Value, name: &str) -> &'a Value {
    families.as_array().unwrap().iter().find(|f| f["name"] == name).unwrap_or_else(|| panic!("no metric {name}"))
}

fn metrics(backend: Backend) {
    let server = Server::start(backend);
    let src = server.source_dir("src");
    write(
        &src.join("release.nix"),
        &format!(
            "{{ nonce }}:\nlet {MK}\nin {{ job = mk \"job\" \"echo hello > $out\"; broken = mk \"broken\" \"exit 1\"; }}\n"
        ),
    );
    server.create_jobset(
        "metered",
        "main",
        &src,
        "release.nix",
        json!({ "nonce": { "type": "string", "value": nonce() } }),
    );
    let eval = server.wait_for_evals("metered", "main", 1);
    let builds = server.wait_for_eval_builds(eval["id"].as_i64().unwrap());

    let answer = server.get("/metrics");
    assert!(answer.content_type.starts_with("text/plain"), "{}", answer.content_type);
    let families = parse_prometheus(&answer.body);
    assert_eq!(family(&families, "orthrus_queue_builds")["type"], "gauge");
    let requests = family(&families, "orthrus_http_requests");
    assert_eq!(requests["type"], "counter");
    assert!(
        requests["samples"].as_array().unwrap().iter().any(|s| s[1]["route"] == "/jobset/{project}/{jobset}/evals")
    );
    let steps = family(&families, "orthrus_build_step_duration_seconds");
    assert_eq!(steps["type"], "histogram");
    assert!(steps["samples"].as_array().unwrap().iter().any(|s| s[1]["machine"] == "localhost"
        && s[0] == "orthrus_build_step_duration_seconds_count"
        && s[2].as_f64().unwrap() >= 2.0));
    // Each scheduling pass is timed (steps were given to the machine).
    let passes = family(&families, "orthrus_queue_scheduling_pass_seconds");
    assert_eq!(passes["type"], "histogram");
    assert!(
        passes["samples"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s[0] == "orthrus_queue_scheduling_pass_seconds_count" && s[2].as_f64().unwrap() >= 1.0)
    );
    let finished = family(&families, "orthrus_builds_finished");
    let by_status = |status: &str| {
        finished["samples"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s[1]["status"] == status)
            .map(|s| s[2].as_f64().unwrap())
    };
    assert_eq!(by_status("succeeded"), Some(1.0));
    assert_eq!(by_status("failed"), Some(1.0));
    assert!(
        family(&families, "orthrus_evaluations")["samples"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s[1]["outcome"] == "evaluated")
    );
    let names = |families: &Value| -> Vec<String> {
        families.as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap().to_owned()).collect()
    };
    assert_eq!(names(&parse_prometheus(&server.get("/prometheus").body)), names(&families), "/prometheus is /metrics");

    let answer = server.get("/job/metered/main/job/prometheus");
    let families = parse_prometheus(&answer.body);
    let labels = json!({ "project": "metered", "jobset": "main", "job": "job" });
    for (name, kind) in [
        ("hydra_job_completion_time", "counter"),
        ("hydra_job_failed", "gauge"),
        ("hydra_build_closure_size", "gauge"),
        ("hydra_build_output_size", "gauge"),
    ] {
        let f = family(&families, name);
        assert_eq!(f["type"], kind, "{name}");
        assert_eq!(f["samples"][0][1], labels, "{name}");
    }
    assert_eq!(family(&families, "hydra_job_failed")["samples"][0][2], 0.0);
    assert_eq!(
        family(&families, "hydra_build_output_size")["samples"][0][2].as_f64().unwrap(),
        builds["job"]["size"].as_f64().unwrap()
    );
    let broken = parse_prometheus(&server.get("/job/metered/main/broken/prometheus").body);
    assert_eq!(family(&broken, "hydra_job_failed")["samples"][0][2], 1.0);
}

on_both_backends!(webhooks);
on_both_backends!(metrics);
