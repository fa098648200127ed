//! Several processes on one PostgreSQL: two `web` processes and standbys
//! for every other role. A push through one web process evaluates at once
//! (a wake-up through `NOTIFY`), the live log is read through the other
//! (forwarded to the queue runner's process), the queue's holder is killed
//! mid-build and a standby finishes every build once, the notifier's
//! holder is killed mid-delivery and every event still arrives, and a
//! holder stopped (SIGSTOP) past its lease does not act when it resumes.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{Backend, MK, Options, Server, nonce, write};
use crate::receiver::HttpReceiver;

const ROLES: &str = "evaluator,queue,notifier,publisher,maintenance";
const ELECTED: [&str; 5] = ["evaluator", "queue", "notifier", "publisher", "maintenance"];
const JOBS: usize = 6;
const LEASE_SECS: u64 = 4;

fn release_nix(counter: &std::path::Path) -> String {
    let counter = counter.display();
    let mut jobs = String::new();
    for i in 0..JOBS {
        jobs.push_str(&format!(
            "  job{i} = mk \"job{i}\" \"echo start {i}; sleep 3; echo job{i}-$nonce >> {counter}; echo done > $out\";\n"
        ));
    }
    format!(
        r#"{{ nonce }}:
let {MK}
in {{
{jobs}  talker = mk "talker" "for i in $(seq 1 30); do echo line $i; sleep 0.2; done; echo talker-$nonce >> {counter}; echo > $out";
}}
"#
    )
}

/// The processes as `/api/cluster` lists them, by id.
fn members(web: &Server) -> Vec<Value> {
    web.get_json("/api/cluster").as_array().unwrap().clone()
}

/// The member whose pid is `server`'s.
fn member_of(web: &Server, server: &Server) -> Option<Value> {
    members(web).into_iter().find(|m| m["pid"] == server.pid())
}

fn holds(member: &Value, role: &str) -> bool {
    member["holds"].as_array().unwrap().iter().any(|r| r == role)
}

/// Waits until `server` holds every elected role; returns how long it took.
fn wait_to_hold_all(web: &Server, server: &Server, why: &str) -> Duration {
    let started = Instant::now();
    web.wait_for(why, Duration::from_secs(60), || {
        let member = member_of(web, server)?;
        ELECTED.iter().all(|role| holds(&member, role)).then_some(())
    });
    started.elapsed()
}

fn set_nonce_and_push(web: &Server, src: &std::path::Path, value: &str) {
    let answer = web.put_jobset(
        "ha",
        "main",
        src,
        "release.nix",
        json!({ "nonce": { "type": "string", "value": value } }),
        json!({}),
    );
    assert!(matches!(answer.status, 200 | 201), "PUT jobset: {}", answer.body);
    web.push("ha", "main", false);
}

/// Builds of an evaluation by job name, as `web` sees them now.
fn eval_builds(web: &Server, eval_id: i64) -> BTreeMap<String, Value> {
    let builds = web.get_json(&format!("/eval/{eval_id}/builds"));
    builds.as_array().unwrap().iter().map(|b| (b["job"].as_str().unwrap().to_owned(), b.clone())).collect()
}

/// How often each line was written to the counter file.
fn built(counter: &std::path::Path) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for line in std::fs::read_to_string(counter).unwrap_or_default().lines() {
        *counts.entry(line.to_owned()).or_default() += 1;
    }
    counts
}

/// Every build of the evaluation finished once: one `build-finished`
/// event each, success, and its output in the store.
fn finished_once(web: &Server, eval_id: i64) -> BTreeMap<String, Value> {
    let finished = web.wait_for_eval_builds(eval_id);
    assert_eq!(finished.len(), JOBS + 1);
    for (job, build) in &finished {
        assert_eq!(build["buildstatus"], 0, "{job}: {build}");
        let events = web.get_json(&format!("/api/events?build={}&limit=1000", build["id"]));
        let finishes = events.as_array().unwrap().iter().filter(|e| e["kind"] == "build-finished").count();
        assert_eq!(finishes, 1, "{job} finished {finishes} times: {events}");
    }
    finished
}

#[test]
fn roles_fail_over_between_processes() {
    let hooks = HttpReceiver::start();
    let options = Options {
        max_jobs: 2,
        // No polling worth the name: an evaluation starts only when woken.
        evaluator_config: "poll_interval_secs = 3600".into(),
        serve_args: vec!["--roles".into(), "web".into()],
        extra_tables: format!(
            r#"
[cluster]
lease_secs = {LEASE_SECS}

[plugins.grants.webhook]
http = ["127.0.0.1:{port}"]

[[notifiers]]
name = "hooks"
plugin = "webhook"
events = ["build-queued", "build-started", "build-finished"]
settings = {{ url = "{url}" }}
"#,
            port = hooks.port,
            url = hooks.url("/hooks"),
        ),
        ..Options::default()
    };
    let web1 = Server::start_with(Backend::Postgres, options);
    let web2 = web1.peer(&["--roles", "web"]);
    let first = web1.peer(&["--roles", ROLES]);
    wait_to_hold_all(&web2, &first, "the first role process to take every role");
    let second = web1.peer(&["--roles", ROLES]);
    web2.wait_for("four processes", Duration::from_secs(30), || (members(&web2).len() == 4).then_some(()));
    let standby = member_of(&web2, &second).unwrap();
    assert!(standby["holds"].as_array().unwrap().is_empty(), "{standby}");
    assert_eq!(standby["standingby"], json!(ELECTED), "{standby}");
    let webs: Vec<Value> = members(&web2).into_iter().filter(|m| m["roles"] == json!(["web"])).collect();
    assert_eq!(webs.len(), 2, "{webs:?}");
    let page = web2.get_page("/status");
    assert!(page.contains("Processes") && page.contains(standby["id"].as_str().unwrap()), "{page}");

    // A push through the first web process: the evaluator, elsewhere and
    // not polling, hears of it at once.
    let src = web1.source_dir("src");
    let counter = web1.dir.path().join("built.txt");
    write(&src.join("release.nix"), &release_nix(&counter));
    let answer = web1.put("/project/ha", &json!({ "displayname": "ha", "enabled": true, "visible": true }));
    assert!(matches!(answer.status, 200 | 201), "{}", answer.body);
    let one = nonce();
    let pushed = Instant::now();
    set_nonce_and_push(&web1, &src, &one);
    let eval = web2.wait_for_evals("ha", "main", 1);
    println!("push to evaluation through NOTIFY: {:?}", pushed.elapsed());
    let eval_id = eval["id"].as_i64().unwrap();

    // The live log through the second web process, which has no logs in
    // its data directory and no build of its own: it comes from the queue
    // runner's process.
    let talker = eval_builds(&web2, eval_id)["talker"]["id"].as_i64().unwrap();
    let step = web2.wait_for("the talker to run", Duration::from_secs(60), || {
        let steps = web2.get_json(&format!("/build/{talker}/steps"));
        steps.as_array().and_then(|s| s.iter().find(|s| s["busy"] == 1).map(|s| s["stepnr"].as_i64().unwrap()))
    });
    let address = web2.url.trim_start_matches("http://").to_owned();
    let mut live = TcpStream::connect(&address).unwrap();
    write!(
        live,
        "GET /build/{talker}/nixlog/{step}/live HTTP/1.1\r\nHost: {address}\r\nAccept: text/event-stream\r\n\r\n"
    )
    .unwrap();
    live.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let mut text = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut buffer = [0u8; 4096];
    while Instant::now() < deadline && !String::from_utf8_lossy(&text).contains("line 8") {
        match live.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => text.extend_from_slice(&buffer[..n]),
        }
    }
    let text = String::from_utf8_lossy(&text);
    assert!(text.contains("line 3") && text.contains("line 8"), "no live log through the second web process: {text}");

    // The queue's holder dies mid-build.
    let mut first = first;
    web2.wait_for("some builds to finish while others run", Duration::from_secs(120), || {
        let done = eval_builds(&web2, eval_id).values().filter(|b| b["finished"] == 1).count();
        (1..=JOBS).contains(&done).then_some(())
    });
    let before: Vec<String> = eval_builds(&web2, eval_id)
        .into_iter()
        .filter(|(_, b)| b["finished"] == 1)
        .map(|(job, _)| format!("{job}-{one}"))
        .collect();
    first.kill9();
    let failover = wait_to_hold_all(&web2, &second, "the standby to take every role");
    println!("roles taken over {failover:?} after kill -9 (lease {LEASE_SECS} s)");
    let third = web1.peer(&["--roles", ROLES]);
    finished_once(&web2, eval_id);
    let counts = built(&counter);
    for job in &before {
        assert_eq!(counts.get(job), Some(&1), "{job}, recorded before the kill, was built again: {counts:?}");
    }
    let rebuilt: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    println!("builds interrupted by the kill and built again: {rebuilt:?}");

    // The notifier's holder dies mid-delivery (a slow receiver).
    hooks.slow_down(Duration::from_millis(150));
    let mark = latest_event(&web2);
    let two = nonce();
    set_nonce_and_push(&web1, &src, &two);
    let eval_id = web2.wait_for_evals("ha", "main", 2)["id"].as_i64().unwrap();
    web2.wait_for("deliveries of the second evaluation's events", Duration::from_secs(60), || {
        let new = hooks.received("/hooks").iter().filter(|r| delivery_id(r) > mark).count();
        (new >= 3).then_some(())
    });
    let mut second = second;
    second.kill9();
    wait_to_hold_all(&web2, &third, "the third process to take every role");
    finished_once(&web2, eval_id);

    // Every event the notifier subscribes to arrives, some perhaps twice.
    let wanted: Vec<i64> = web2
        .get_json("/api/events?limit=10000")
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| ["build-queued", "build-started", "build-finished"].contains(&e["kind"].as_str().unwrap()))
        .map(|e| e["id"].as_i64().unwrap())
        .collect();
    let delivered = web2.wait_for("every event to be delivered", Duration::from_secs(120), || {
        let mut counts: BTreeMap<i64, usize> = BTreeMap::new();
        for request in hooks.received("/hooks").iter().filter(|r| r.status == 200) {
            *counts.entry(delivery_id(request)).or_default() += 1;
        }
        wanted.iter().all(|id| counts.contains_key(id)).then_some(counts)
    });
    let repeats: usize = delivered.values().map(|n| n - 1).sum();
    println!("{} events delivered across two kills of the notifier's holder, {repeats} repeated", wanted.len());
    assert!(repeats <= 2, "more repeats than deliveries in flight at the two kills: {delivered:?}");

    // The holder stopped past its lease: a standby takes over, and the
    // old holder, resumed, does not act again.
    hooks.slow_down(Duration::ZERO);
    let fourth = web1.peer(&["--roles", ROLES]);
    web2.wait_for("the fourth process to stand by", Duration::from_secs(30), || member_of(&web2, &fourth));
    let three = nonce();
    set_nonce_and_push(&web1, &src, &three);
    let eval_id = web2.wait_for_evals("ha", "main", 3)["id"].as_i64().unwrap();
    web2.wait_for("a build of the third evaluation to run", Duration::from_secs(60), || {
        let running = web2.get_json("/status");
        running.as_array().is_some_and(|steps| !steps.is_empty()).then_some(())
    });
    signal(&third, "STOP");
    let stopped = Instant::now();
    wait_to_hold_all(&web2, &fourth, "the fourth process to take every role from the stopped one");
    let log_before = third.log().len();
    std::thread::sleep(Duration::from_secs(2));
    signal(&third, "CONT");
    println!("held the roles of a stopped process after {:?}", stopped.elapsed());
    finished_once(&web2, eval_id);
    web2.wait_for("the resumed process to stand by", Duration::from_secs(30), || {
        let member = member_of(&web2, &third)?;
        (member["holds"].as_array().unwrap().is_empty()).then_some(())
    });
    let resumed = third.log();
    let resumed = &resumed[log_before.min(resumed.len())..];
    assert!(
        resumed.contains("lost the") || resumed.contains("ran out"),
        "the resumed process did not notice: {resumed}"
    );
    assert!(!resumed.contains("took the"), "the resumed process took a role again: {resumed}");
    let counts = built(&counter);
    assert!(counts.keys().filter(|k| k.ends_with(&three)).count() == JOBS + 1, "{counts:?}");
    let member = member_of(&web2, &fourth).unwrap();
    assert!(ELECTED.iter().all(|role| holds(&member, role)), "{member}");
}

/// The newest event's id.
fn latest_event(web: &Server) -> i64 {
    let events = web.get_json("/api/events?limit=10000");
    events.as_array().unwrap().last().map_or(0, |e| e["id"].as_i64().unwrap())
}

/// The event a webhook delivered.
fn delivery_id(request: &crate::receiver::Received) -> i64 {
    request.headers["x-orthrus-delivery"].parse().unwrap()
}

fn signal(server: &Server, name: &str) {
    let status =
        std::process::Command::new("kill").arg(format!("-{name}")).arg(server.pid().to_string()).status().unwrap();
    assert!(status.success());
}

#[test]
fn sqlite_refuses_a_split() {
    let server = Server::start(Backend::Sqlite);
    let output = server.cli(&["serve", "--roles", "web"], None);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("roles") && stderr.contains("SQLite") && stderr.contains("postgres://"), "{stderr}");
    let members = server.get_json("/api/cluster");
    let members = members.as_array().unwrap();
    assert_eq!(members.len(), 1, "{members:?}");
    assert_eq!(members[0]["holds"], json!(ELECTED), "SQLite's one process holds every role");
}

/// Processes starting at once on an empty PostgreSQL database migrate one
/// after the other (the migrations take a lock): none fails.
#[test]
fn processes_starting_together_migrate_once() {
    let database_url = crate::harness::postgres_database();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("orthrus.toml");
    write(
        &config,
        &format!("data_dir = \"{}\"\ndatabase_url = \"{database_url}\"\n", dir.path().join("data").display()),
    );
    let starts: Vec<_> = (0..4)
        .map(|_| {
            std::process::Command::new(env!("CARGO_BIN_EXE_orthrus"))
                .args(["migrate", "--config"])
                .arg(&config)
                .env("RUST_LOG", "warn")
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for start in starts {
        let output = start.wait_with_output().unwrap();
        assert!(output.status.success(), "a migration failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_orthrus"))
        .args(["migrate", "--status", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains("applied  m20261202_000010_cluster") && !text.contains("pending"), "{text}");
}
