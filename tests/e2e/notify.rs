//! Notifiers, against real receivers on loopback: the webhook (signed, in
//! order per build, each event once), GitHub and Gitea commit statuses (a
//! local server standing in for their APIs), mail through aiosmtpd; a
//! receiver that refuses three times gets its events after retries and a
//! server crash; a notifier aimed at a host it was not granted is reported
//! as failing, and loses nothing.

use std::collections::BTreeMap;
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::harness::{Backend, Identity, MK, Options, Server, nonce, write};
use crate::on_both_backends;
use crate::receiver::{HttpReceiver, Received, SmtpReceiver};
use crate::vcs::{commit, run};

const SECRET: &str = "hook-secret";

fn signature(body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn config(http: &HttpReceiver, smtp: &SmtpReceiver, unreachable_port: u16) -> String {
    let port = http.port;
    format!(
        r#"
[mail]
relay = "127.0.0.1"
port = {smtp}
from = "Orthrus CI <ci@example.org>"

[plugins.grants.webhook]
http = ["127.0.0.1:{port}"]

[plugins.grants.github-status]
http = ["127.0.0.1:{port}"]

[plugins.grants.gitea-status]
http = ["127.0.0.1:{port}"]

[[notifiers]]
name = "hooks"
plugin = "webhook"
events = ["build-queued", "build-started", "build-finished"]
settings = {{ url = "{hooks}", secret = "{SECRET}" }}

[[notifiers]]
name = "flaky"
plugin = "webhook"
events = ["build-finished"]
retry_delay_secs = 1
retry_max_delay_secs = 2
settings = {{ url = "{flaky}", secret = "{SECRET}" }}

[[notifiers]]
name = "outsider"
plugin = "webhook"
events = ["build-finished"]
retry_delay_secs = 1
retry_max_delay_secs = 1
settings = {{ url = "http://127.0.0.1:{unreachable_port}/hook" }}

[[notifiers]]
plugin = "github-status"
settings = {{ token = "gh-token", base_url = "{github}" }}

[[notifiers]]
plugin = "gitea-status"
settings = {{ token = "gt-token", base_url = "{gitea}" }}

[[notifiers]]
plugin = "email"
"#,
        smtp = smtp.port,
        hooks = http.url("/hooks"),
        flaky = http.url("/flaky"),
        github = http.url("/github"),
        gitea = http.url("/gitea"),
    )
}

fn notifier(server: &Server, name: &str) -> Value {
    let all = server.get_json("/api/notifiers");
    all.as_array().unwrap().iter().find(|n| n["name"] == name).cloned().unwrap_or_else(|| panic!("{all}"))
}

fn delivered(received: &[Received]) -> Vec<&Received> {
    received.iter().filter(|r| r.status < 300).collect()
}

fn body(request: &Received) -> Value {
    serde_json::from_str(&request.body).unwrap()
}

fn notifiers(backend: Backend) {
    let http = HttpReceiver::start();
    let scratch = tempfile::tempdir().unwrap();
    let smtp = SmtpReceiver::start(scratch.path());
    let unreachable_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    // The first three build-finished deliveries to /flaky are refused.
    http.refuse("/flaky", 3);
    let mut server = Server::start_with(
        backend,
        Options { extra_tables: config(&http, &smtp, unreachable_port), ..Options::default() },
    );

    // A git repository whose commit the statuses are set on (a local one
    // must lie under the allowed roots, the server's directory here).
    let repo = server.source_dir("owner/repo");
    std::fs::create_dir_all(&repo).unwrap();
    run(&repo, "git", &["init", "-q", "-b", "main"]);
    let commit = commit(&repo, "README", "hello\n", "first");

    let src = server.source_dir("src");
    write(
        &src.join("release.nix"),
        &format!(
            r#"{{ nonce, repo }}:
let {MK}
in {{
  ok = mk "ok" "echo fine > $out" // {{ meta.maintainers = [ "alice@example.org" ]; }};
  broken = mk "broken" "echo compiling; echo 'error: the widget is broken'; exit 1"
    // {{ meta.maintainers = [ {{ email = "bob@example.org"; name = "Bob"; }} ]; }};
}}
"#
        ),
    );
    let answer = server.put("/project/notify", &json!({ "displayname": "Notify" }));
    assert!(matches!(answer.status, 200 | 201), "{}", answer.body);
    let answer = server.put(
        "/jobset/notify/main",
        &json!({
            "enabled": 1,
            "nixexprinput": "src",
            "nixexprpath": "release.nix",
            "checkinterval": 0,
            "enableemail": true,
            "inputs": {
                "src": { "type": "path", "value": src.display().to_string() },
                "nonce": { "type": "string", "value": nonce() },
                "repo": { "type": "git", "value": format!("file://{}", repo.display()) },
            },
        }),
    );
    assert_eq!(answer.status, 201, "{}", answer.body);
    let eval = server.wait_for_evals("notify", "main", 1);
    let builds = server.wait_for_eval_builds(eval["id"].as_i64().unwrap());
    let (ok, broken) = (builds["ok"]["id"].as_i64().unwrap(), builds["broken"]["id"].as_i64().unwrap());
    assert_eq!(builds["broken"]["buildstatus"], 1);

    // Webhook: every event signed, in order for each build, each once.
    let hooks = server.wait_for("both builds' webhooks", Duration::from_secs(60), || {
        let list = http.received("/hooks");
        let finished =
            list.iter().filter(|r| r.headers.get("x-orthrus-event").map(String::as_str) == Some("build-finished"));
        (finished.count() == 2).then_some(list)
    });
    let mut per_build: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    let mut ids = std::collections::BTreeSet::new();
    for request in &hooks {
        assert_eq!(request.method, "POST");
        assert_eq!(request.headers["x-orthrus-signature-256"], signature(&request.body), "{request:?}");
        assert_eq!(request.headers["content-type"], "application/json");
        let event = body(request);
        assert_eq!(request.headers["x-orthrus-event"], event["kind"].as_str().unwrap());
        assert_eq!(request.headers["x-orthrus-delivery"], event["id"].to_string());
        assert!(ids.insert(event["id"].as_i64().unwrap()), "event {} delivered twice", event["id"]);
        assert_eq!(event["jobset"]["project"], "notify");
        per_build
            .entry(event["build"]["id"].as_i64().unwrap())
            .or_default()
            .push(event["kind"].as_str().unwrap().into());
    }
    for build in [ok, broken] {
        assert_eq!(per_build[&build], ["build-queued", "build-started", "build-finished"], "build {build}");
    }
    let finished_broken =
        hooks.iter().map(body).find(|e| e["kind"] == "build-finished" && e["build"]["id"] == broken).unwrap();
    assert_eq!(finished_broken["build"]["status"], 1);
    assert_eq!(finished_broken["build"]["maintainers"], json!(["bob@example.org"]));
    let tail = finished_broken["build"]["log_tail"].as_array().unwrap();
    assert!(tail.iter().any(|l| l == "error: the widget is broken"), "{tail:?}");
    let input = finished_broken["inputs"].as_array().unwrap().iter().find(|i| i["name"] == "repo").unwrap().clone();
    assert_eq!(input["revision"], commit.as_str());

    // Commit statuses: pending while queued and running, then the result.
    for (prefix, path, authorization) in [
        ("/github", format!("/github/repos/owner/repo/statuses/{commit}"), "Bearer gh-token"),
        ("/gitea", format!("/gitea/api/v1/repos/owner/repo/statuses/{commit}"), "token gt-token"),
    ] {
        let states = server.wait_for(&format!("{prefix} statuses"), Duration::from_secs(60), || {
            let list = http.received(prefix);
            let mut states: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for request in &list {
                assert_eq!(request.path, path);
                assert_eq!(request.headers["authorization"], authorization);
                let status = body(request);
                states
                    .entry(status["context"].as_str().unwrap().into())
                    .or_default()
                    .push(status["state"].as_str().unwrap().into());
            }
            let done = states.values().filter(|s| matches!(s.last().map(String::as_str), Some("success" | "failure")));
            (done.count() == 2).then_some(states)
        });
        assert_eq!(states["orthrus/notify:main:ok"], ["pending", "pending", "success"], "{prefix}");
        assert_eq!(states["orthrus/notify:main:broken"], ["pending", "pending", "failure"], "{prefix}");
    }

    // Mail: the first build of each job, to its maintainers.
    let mails = server.wait_for("two mails", Duration::from_secs(60), || {
        let mails = smtp.mails();
        (mails.len() >= 2).then_some(mails)
    });
    assert_eq!(mails.len(), 2, "{mails:?}");
    let to_bob = mails.iter().find(|m| m.contains("To: bob@example.org")).unwrap_or_else(|| panic!("{mails:?}"));
    assert!(to_bob.contains("From: \"Orthrus CI\" <ci@example.org>"), "{to_bob}");
    assert!(to_bob.contains("Subject: [Orthrus] Failed: notify:main:broken"), "{to_bob}");
    assert!(to_bob.contains(&format!("{}/build/{broken}/log", server.url)), "{to_bob}");
    assert!(to_bob.contains("> error: the widget is broken"), "{to_bob}");
    let to_alice = mails.iter().find(|m| m.contains("To: alice@example.org")).unwrap();
    assert!(to_alice.contains("Subject: [Orthrus] Succeeded: notify:main:ok"), "{to_alice}");

    // The refusing receiver: retried, then the server crashes in between.
    server.wait_for("a second failed attempt on /flaky", Duration::from_secs(60), || {
        let flaky = notifier(&server, "flaky");
        flaky["pending"].as_array().unwrap().iter().any(|p| p["attempts"].as_i64() >= Some(2)).then_some(())
    });
    let flaky = notifier(&server, "flaky");
    assert_eq!(flaky["state"], "retrying", "{flaky}");
    assert!(flaky["pending"][0]["last_error"].as_str().unwrap().contains("answered 500"), "{flaky}");
    server.kill9();
    http.next_run();
    server.restart();
    let delivered_builds = |list: &[Received]| -> std::collections::BTreeSet<i64> {
        delivered(list).iter().map(|r| body(r)["build"]["id"].as_i64().unwrap()).collect()
    };
    let flaky_requests = server.wait_for("both events delivered to /flaky", Duration::from_secs(60), || {
        let list = http.received("/flaky");
        (delivered_builds(&list) == [ok, broken].into_iter().collect()).then_some(list)
    });
    assert_eq!(flaky_requests.iter().filter(|r| r.status == 500).count(), 3);
    let mut runs: BTreeMap<usize, std::collections::BTreeSet<i64>> = BTreeMap::new();
    for request in delivered(&flaky_requests) {
        let id = body(request)["id"].as_i64().unwrap();
        assert!(runs.entry(request.run).or_default().insert(id), "event {id} delivered twice in one run");
    }
    server.wait_for("flaky to recover", Duration::from_secs(30), || {
        let flaky = notifier(&server, "flaky");
        (flaky["state"] == "ok" && flaky["pending"].as_array().unwrap().is_empty()).then_some(())
    });

    // A host that was not granted: an error, reported, and kept.
    let outsider = server.wait_for("the outsider to be reported as failing", Duration::from_secs(60), || {
        let outsider = notifier(&server, "outsider");
        (outsider["state"] == "failing").then_some(outsider)
    });
    let pending = outsider["pending"].as_array().unwrap();
    assert_eq!(pending.len(), 2, "both events are kept: {outsider}");
    let error = pending[0]["last_error"].as_str().unwrap();
    assert!(error.contains(&format!("host 127.0.0.1:{unreachable_port} is not granted")), "{error}");
    assert_eq!(outsider["delivered"], 0);

    // The delivery state is for admins.
    assert_eq!(server.request(&Identity::Anonymous, "GET", "/api/notifiers", None).status, 401);

    // The admin's page shows the same: the failing notifier with its error,
    // and the outbox's newest events.
    let page = server.get_page("/admin/notifications");
    let outsider = page.split("<h3>").find(|section| section.starts_with("outsider")).expect("a section for outsider");
    assert!(outsider.contains("failing") && outsider.contains("is not granted"), "{outsider}");
    assert!(page.contains("build-finished") && page.contains(&format!("/build/{broken}")), "{page}");
    let anonymous =
        server.request_with(&Identity::Anonymous, "GET", "/admin/notifications", None, &[("Accept", "text/html")]);
    assert_eq!(anonymous.status, 401);
}

on_both_backends!(notifiers);
