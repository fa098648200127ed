//! Running for years: retention with short configured ages prunes events,
//! evaluations, builds and logs exactly as configured and leaves kept and
//! `latest` builds alone; a step a binary cache has is substituted; a
//! backup taken while builds run is restored into a fresh data directory
//! and served.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{Backend, MK, NIX_CONFIG, Options, Server, nonce, write};
use crate::on_both_backends;

/// `stable` is the same derivation in every evaluation (one build, shared);
/// `changing` and `broken` are new in each; `once` only in the first.
fn release_nix() -> String {
    format!(
        r#"{{ nonce, rev }}:
let {MK}
in {{
  stable = mk "stable" "echo stable > $out";
  changing = mk "changing-${{rev}}" "echo changing ${{rev}} > $out";
  broken = mk "broken-${{rev}}" "echo broken ${{rev}} is broken; exit 1";
}} // (if rev == "1" then {{ once = mk "once" "echo once > $out"; }} else {{ }})
"#
    )
}

/// The value of one sample of `/metrics`.
fn metric(server: &Server, sample: &str) -> Option<f64> {
    let text = server.get("/metrics").body;
    text.lines().find_map(|line| line.strip_prefix(sample)?.strip_prefix(' ')?.trim().parse().ok())
}

fn pruned_as_configured(backend: Backend) {
    let options = Options {
        extra_tables: r#"
[retention]
interval_secs = 1
events_max_age_days = 0
logs_max_age_days = 0
evals_per_jobset = 2
evals_min_age_days = 0

[plugins.grants.webhook]
http = ["127.0.0.1:9"]

# Nothing listens there: its deliveries wait for a retry, and retention
# must keep their events. (Evaluation events: a build with an undelivered
# event would be kept too.)
[[notifiers]]
name = "stuck"
plugin = "webhook"
events = ["eval-added"]
retry_delay_secs = 3600
retry_max_delay_secs = 3600
settings = { url = "http://127.0.0.1:9/hook" }
"#
        .into(),
        ..Options::default()
    };
    let server = Server::start_with(backend, options);
    let put = server.put("/project/ret", &json!({ "displayname": "ret", "enabled": true, "visible": true }));
    assert!(matches!(put.status, 200 | 201), "{}", put.body);
    let src = server.source_dir("src");
    write(&src.join("release.nix"), &release_nix());
    let nonce = nonce();

    // Four evaluations, each built through.
    let mut evals: Vec<BTreeMap<String, Value>> = Vec::new();
    let mut eval_ids = Vec::new();
    for rev in 1..=4 {
        let inputs = json!({
            "nonce": { "type": "string", "value": nonce },
            "rev": { "type": "string", "value": rev.to_string() },
        });
        let answer = server.put_jobset("ret", "main", &src, "release.nix", inputs, json!({ "keepnr": 1 }));
        assert!(matches!(answer.status, 200 | 201), "PUT jobset: {}", answer.body);
        server.push("ret", "main", false);
        // Counting would not do: retention may delete one as the next comes.
        let previous = eval_ids.last().copied().unwrap_or(0);
        let id = server.wait_for(&format!("evaluation {rev}"), Duration::from_secs(120), || {
            let newest = server.evals("ret", "main").first()?["id"].as_i64()?;
            (newest > previous).then_some(newest)
        });
        evals.push(server.wait_for_eval_builds(id));
        eval_ids.push(id);
        if rev == 2 {
            // Marked keep: it stays whatever happens to its evaluation.
            let kept = evals[1]["changing"]["id"].as_i64().unwrap();
            let answer = server.post(&format!("/build/{kept}/keep/1"));
            assert!(matches!(answer.status, 200 | 302), "{}", answer.body);
            assert_eq!(server.get_json(&format!("/build/{kept}"))["keep"], 1);
        }
    }
    let id = |rev: usize, job: &str| evals[rev - 1][job]["id"].as_i64().unwrap();
    assert_eq!(id(1, "stable"), id(4, "stable"), "one build of the unchanged job, shared");
    assert_eq!(evals[1]["broken"]["buildstatus"], 1);

    // Retention runs every second: eval 2 goes (eval 1 holds what
    // `latest` answers for `once`), and with it its failed build only.
    server.wait_for("evaluation 2 to be pruned", Duration::from_secs(60), || {
        (server.get(&format!("/eval/{}", eval_ids[1])).status == 404).then_some(())
    });
    let remaining: Vec<i64> = server.evals("ret", "main").iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert_eq!(remaining, [eval_ids[3], eval_ids[2], eval_ids[0]]);
    assert_eq!(server.get(&format!("/build/{}", id(2, "broken"))).status, 404, "held by eval 2 only");
    for (rev, job) in [(2, "changing"), (1, "stable"), (1, "once"), (3, "broken"), (4, "changing")] {
        assert_eq!(server.get(&format!("/build/{}", id(rev, job))).status, 200, "{job} of eval {rev} stays");
    }
    // What deploy tools poll still answers, with paths that exist.
    for (job, rev) in [("once", 1), ("changing", 4), ("stable", 1)] {
        let latest = server.get_following(&format!("/job/ret/main/{job}/latest-finished")).json();
        assert_eq!(latest["id"].as_i64().unwrap(), id(rev, job), "{job}");
        let out = latest["buildoutputs"]["out"]["path"].as_str().unwrap();
        assert!(Path::new(out).exists(), "{job}: {out}");
    }

    // Logs: kept are those of builds the GC roots keep (eval 4, the kept
    // build) and of `latest` builds; the rest, failures of old evaluations
    // included, are gone.
    let log_status = |rev: usize, job: &str| server.get(&format!("/build/{}/log/raw", id(rev, job))).status;
    server.wait_for("old logs to be deleted", Duration::from_secs(60), || {
        (log_status(3, "broken") == 404 && log_status(1, "changing") == 404).then_some(())
    });
    for (rev, job) in [(4, "broken"), (4, "changing"), (2, "changing"), (1, "once"), (1, "stable")] {
        assert_eq!(log_status(rev, job), 200, "the log of {job} of eval {rev} stays");
    }
    for (rev, job) in [(1, "broken"), (1, "changing"), (3, "broken"), (3, "changing")] {
        assert_eq!(log_status(rev, job), 404, "the log of {job} of eval {rev} is deleted");
    }

    // Events: only those the stuck notifier still has to deliver remain.
    server.wait_for("events to be pruned to the undelivered ones", Duration::from_secs(60), || {
        let events = server.get_json("/api/events?limit=10000");
        let events = events.as_array().unwrap();
        let kinds: Vec<&str> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
        let notifiers = server.get_json("/api/notifiers");
        let pending = notifiers[0]["pending"].as_array().unwrap().len();
        (!kinds.is_empty() && kinds.iter().all(|k| *k == "eval-added") && kinds.len() == pending).then_some(())
    });

    // What it did is counted, and the sizes are measured.
    server.wait_for("the metrics to say it", Duration::from_secs(30), || {
        let deleted = |kind: &str| metric(&server, &format!("orthrus_retention_deleted_total{{kind=\"{kind}\"}}"));
        (deleted("evaluations") == Some(1.0) && deleted("builds") == Some(1.0) && deleted("logs") == Some(5.0))
            .then_some(())
    });
    assert!(metric(&server, "orthrus_retention_deleted_total{kind=\"events\"}").unwrap() > 10.0);
    assert!(metric(&server, "orthrus_database_size_bytes").unwrap() > 10_000.0);
    assert!(metric(&server, "orthrus_log_dir_size_bytes").unwrap() > 0.0);
    let status = server.get_page("/status");
    assert!(status.contains("Storage"), "{status}");
    assert!(status.contains(r#"<span class="retention-evals">1</span>"#), "{status}");
    assert!(status.contains(r#"<span class="retention-logs">5</span>"#), "{status}");
}

on_both_backends!(pruned_as_configured);

/// Runs a Nix command with the suite's settings; panics with its output
/// when it fails.
fn nix(args: &[&str]) -> String {
    let output = Command::new(args[0])
        .args(&args[1..])
        .env("NIX_CONFIG", format!("{NIX_CONFIG}experimental-features = nix-command\n"))
        .output()
        .unwrap();
    assert!(output.status.success(), "{args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

/// With `queue.use_substitutes`, a job a binary cache has is fetched, not
/// built, and says so; one it does not have is built.
#[test]
fn substituted_from_a_binary_cache() {
    let work = tempfile::tempdir().unwrap();
    let (secret, public) = (work.path().join("key.sec"), work.path().join("key.pub"));
    nix(&[
        "nix-store",
        "--generate-binary-cache-key",
        "orthrus-test-1",
        &secret.display().to_string(),
        &public.display().to_string(),
    ]);
    let public_key = std::fs::read_to_string(&public).unwrap();
    let cache = work.path().join("cache");
    let expr = work.path().join("release.nix");
    let nonce = nonce();
    write(
        &expr,
        &format!(
            r#"{{ nonce }}:
let {MK}
in {{
  fetched = mk "fetched" "echo fetched > $out";
  built = mk "built" "echo built > $out";
}}
"#
        ),
    );
    // Built here, put in a cache, and deleted from the store again.
    let out =
        nix(&["nix-build", &expr.display().to_string(), "--argstr", "nonce", &nonce, "-A", "fetched", "--no-out-link"]);
    let out = out.trim();
    let to = format!("file://{}?secret-key={}", cache.display(), secret.display());
    nix(&["nix", "copy", "--to", &to, out]);
    nix(&["nix-store", "--delete", out]);
    assert!(!Path::new(out).exists());

    let server = Server::start_with(
        Backend::Sqlite,
        Options {
            queue_config: "use_substitutes = true".into(),
            nix_config: Some(format!(
                "build-users-group =\nsandbox = false\nsubstituters = file://{}\ntrusted-public-keys = {}\n",
                cache.display(),
                public_key.trim()
            )),
            ..Options::default()
        },
    );
    let src = server.source_dir("src");
    std::fs::copy(&expr, src.join("release.nix")).unwrap();
    server.create_jobset(
        "subst",
        "main",
        &src,
        "release.nix",
        json!({ "nonce": { "type": "string", "value": nonce } }),
    );
    let eval = server.wait_for_evals("subst", "main", 1);
    let builds = server.wait_for_eval_builds(eval["id"].as_i64().unwrap());
    for job in ["fetched", "built"] {
        assert_eq!(builds[job]["buildstatus"], 0, "{job}: {}", builds[job]);
    }
    assert_eq!(builds["fetched"]["buildoutputs"]["out"]["path"], out);
    assert!(Path::new(out).exists(), "substituted into the store");
    let steps = |job: &str| {
        let id = builds[job]["id"].as_i64().unwrap();
        server.get_json(&format!("/build/{id}/steps")).as_array().cloned().unwrap()
    };
    let fetched = steps("fetched");
    assert_eq!(fetched.len(), 1, "{fetched:?}");
    assert_eq!(fetched[0]["type"], 1, "a substitution step: {fetched:?}");
    assert_eq!(fetched[0]["machine"], "localhost");
    assert_eq!(fetched[0]["status"], 0);
    let built = steps("built");
    assert_eq!(built.len(), 1, "{built:?}");
    assert_eq!(built[0]["type"], 0, "built, not in the cache: {built:?}");
    let page = server.get_page(&format!("/build/{}", builds["fetched"]["id"]));
    assert!(page.contains("substituted"), "{page}");
}

/// `orthrus backup` during builds writes a consistent copy that a fresh
/// data directory serves, and finishes what was still queued.
#[test]
fn backup_during_builds_restores() {
    let source = Server::start_with(Backend::Sqlite, Options { max_jobs: 1, ..Options::default() });
    let src = source.source_dir("src");
    let mut jobs = String::new();
    for i in 0..4 {
        jobs.push_str(&format!("  job{i} = mk \"job{i}\" \"echo building {i}; sleep 2; echo done {i} > $out\";\n"));
    }
    write(&src.join("release.nix"), &format!("{{ nonce }}:\nlet {MK}\nin {{\n{jobs}}}\n"));
    source.create_jobset(
        "backup",
        "main",
        &src,
        "release.nix",
        json!({ "nonce": { "type": "string", "value": nonce() } }),
    );
    let eval = source.wait_for_evals("backup", "main", 1);
    let eval_id = eval["id"].as_i64().unwrap();
    source.wait_for("a build to finish while others wait", Duration::from_secs(120), || {
        let builds = source.get_json(&format!("/eval/{eval_id}/builds"));
        let finished = builds.as_array().unwrap().iter().filter(|b| b["finished"] == 1).count();
        (1..4).contains(&finished).then_some(())
    });
    // Finished before the copy: the copy has them as they are.
    let finished_before: Vec<Value> = source
        .get_json(&format!("/eval/{eval_id}/builds"))
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["finished"] == 1)
        .cloned()
        .collect();
    let file = source.dir.path().join("backup.sqlite");
    let said = source.cli_ok(&["backup", &file.display().to_string()], None);
    assert!(said.contains("consistent copy"), "{said}");
    // Never over an existing file.
    let again = source.cli(&["backup", &file.display().to_string()], None);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("cannot create"), "{again:?}");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "password hashes inside: owner only ({mode:o})");
    }
    let logs = source.dir.path().join("data/logs");
    let logs_copy = source.dir.path().join("logs-copy");
    assert!(Command::new("cp").arg("-a").arg(&logs).arg(&logs_copy).status().unwrap().success());

    // A fresh data directory with the copy as its database.
    let mut restored = Server::start(Backend::Sqlite);
    restored.kill9();
    let data = restored.dir.path().join("data");
    for stale in ["orthrus.sqlite", "orthrus.sqlite-wal", "orthrus.sqlite-shm"] {
        let _ = std::fs::remove_file(data.join(stale));
    }
    std::fs::copy(&file, data.join("orthrus.sqlite")).unwrap();
    let _ = std::fs::remove_dir_all(data.join("logs"));
    assert!(Command::new("cp").arg("-a").arg(&logs_copy).arg(data.join("logs")).status().unwrap().success());
    restored.admin_token = source.admin_token.clone();
    restored.restart();

    let jobset = restored.get_json("/jobset/backup/main");
    assert_eq!(jobset["name"], "main", "{jobset}");
    for before in &finished_before {
        let id = before["id"].as_i64().unwrap();
        let now = restored.get_json(&format!("/build/{id}"));
        for field in ["finished", "buildstatus", "stoptime", "buildoutputs"] {
            assert_eq!(now[field], before[field], "build {id}: {field} as it was");
        }
    }
    // What was still queued or running is built by the restored server.
    let builds = restored.wait_for_eval_builds(eval_id);
    assert_eq!(builds.len(), 4);
    for (job, build) in &builds {
        assert_eq!(build["buildstatus"], 0, "{job}: {build}");
    }
    // The log directory, copied after the database, has their logs.
    for before in &finished_before {
        let (id, job) = (before["id"].as_i64().unwrap(), before["job"].as_str().unwrap());
        let log = restored.get(&format!("/build/{id}/log/raw"));
        assert_eq!(log.status, 200, "{job}: {}", log.body);
        assert!(log.body.contains(&format!("building {}", &job[3..])), "{job}: {}", log.body);
    }
}
