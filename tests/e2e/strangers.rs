//! What anonymous callers can do to the server: load it (logs, channel
//! tarballs, renders, cache misses, logins, connections that never send
//! their headers) without stalling it for others; guess passwords (slowly,
//! then not at all); read its secrets (never, in its log or its config
//! dump).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::{Backend, Identity, MK, Options, Server, nonce, write};

/// The median of some durations.
fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn time_front_page(server: &Server) -> Duration {
    let started = Instant::now();
    let answer = server.request(&Identity::Anonymous, "GET", "/", None);
    assert_eq!(answer.status, 200, "{}", answer.body);
    started.elapsed()
}

#[test]
fn load_does_not_stall_the_server() {
    let server = Server::start_with(
        Backend::Sqlite,
        Options {
            web_config: "header_timeout_secs = 2\nlogin_failures_per_address = 100000".into(),
            queue_config: "max_log_size = 100000000".into(),
            ..Options::default()
        },
    );
    let src = server.source_dir("src");
    write(
        &src.join("release.nix"),
        &format!(
            "{{ nonce }}:\nlet {MK}\nin {{\n  chatty = mk \"chatty\" \"seq 1 3000000; echo > $out\";\n\
             \x20 product = mk \"product\" \"mkdir -p $out/nix-support; echo data > $out/f; for i in 1 2 3 4 5 6 7 8; do echo \\\"file binary-dist $out/f\\\" >> $out/nix-support/hydra-build-products; done\";\n\
             \x20 slow = mk \"slow\" \"for i in 1 2 3 4 5 6 7 8 9 10; do echo tick $i; sleep 1; done; echo > $out\";\n}}\n"
        ),
    );
    server.create_jobset(
        "load",
        "main",
        &src,
        "release.nix",
        json!({ "nonce": { "type": "string", "value": nonce() } }),
    );
    let eval = server.wait_for_evals("load", "main", 1);
    let eval_id = eval["id"].as_i64().unwrap();

    // A live log outlives the header timeout: it is an answer being sent.
    let slow = server.get_following(&format!("/eval/{eval_id}/job/slow")).json()["id"].as_i64().unwrap();
    let step = server.wait_for("the slow step to run", Duration::from_secs(60), || {
        let steps = server.get_json(&format!("/build/{slow}/steps"));
        steps.as_array().and_then(|s| s.iter().find(|s| s["busy"] == 1).map(|s| s["stepnr"].as_i64().unwrap()))
    });
    let live_url = format!("/build/{slow}/nixlog/{step}/live");
    let address = server.url.trim_start_matches("http://").to_owned();
    let mut live = TcpStream::connect(&address).unwrap();
    write!(live, "GET {live_url} HTTP/1.1\r\nHost: {address}\r\nAccept: text/event-stream\r\n\r\n").unwrap();
    live.set_read_timeout(Some(Duration::from_secs(15))).unwrap();

    let builds = server.wait_for_eval_builds(eval_id);
    let chatty = builds["chatty"]["id"].as_i64().unwrap();
    let product = builds["product"]["id"].as_i64().unwrap();
    let live_text = {
        let mut text = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut buffer = [0u8; 4096];
        while Instant::now() < deadline {
            match live.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(n) => text.extend_from_slice(&buffer[..n]),
            }
            if String::from_utf8_lossy(&text).contains("event: end") {
                break;
            }
        }
        String::from_utf8_lossy(&text).into_owned()
    };
    assert!(live_text.contains("tick 9") && live_text.contains("event: end"), "the live log was cut: {live_text}");

    let unloaded = median((0..7).map(|_| time_front_page(&server)).collect());
    // The load: each kind of request many times at once, for a while.
    let stop = AtomicBool::new(false);
    let served = AtomicUsize::new(0);
    let requests = [
        format!("/build/{chatty}/log/raw"),
        format!("/build/{chatty}/log/tail"),
        format!("/build/{chatty}/log"),
        "/jobset/load/main/channel/latest/nixexprs.tar.xz".to_owned(),
        "/jobset/load/main/channel/latest/nixexprs.tar.bz2".to_owned(),
        format!("/build/{product}"),
        "/00000000000000000000000000000000.narinfo".to_owned(),
    ];
    let mut loaded = Vec::new();
    std::thread::scope(|scope| {
        for path in &requests {
            for _ in 0..6 {
                let (server, stop, served) = (&server, &stop, &served);
                scope.spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let answer = server.request(&Identity::Anonymous, "GET", path, None);
                        assert!(matches!(answer.status, 200 | 404), "{path}: {}", answer.status);
                        served.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
        }
        for i in 0..6 {
            let (server, stop, served) = (&server, &stop, &served);
            scope.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let body = json!({ "username": format!("nobody{i}"), "password": "guess" }).to_string();
                    let answer =
                        server.request(&Identity::Anonymous, "POST", "/login", Some(("application/json", &body)));
                    assert!(matches!(answer.status, 403 | 429), "{}", answer.body);
                    served.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        // Connections that send half a request and wait.
        let idle: Vec<TcpStream> = (0..50)
            .map(|_| {
                let mut stream = TcpStream::connect(&address).unwrap();
                stream.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
                stream
            })
            .collect();
        std::thread::sleep(Duration::from_secs(2));
        for _ in 0..10 {
            loaded.push(time_front_page(&server));
            std::thread::sleep(Duration::from_millis(300));
        }
        stop.store(true, Ordering::Relaxed);
        // Each half-sent request was given up on by the server.
        for mut stream in idle {
            stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut buffer = [0u8; 1024];
            let closed = match stream.read(&mut buffer) {
                Ok(_) => true,
                Err(e) => !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
            };
            assert!(closed, "a connection that never sent its headers was kept open");
        }
    });
    let (unloaded_ms, loaded_ms) = (unloaded.as_secs_f64() * 1e3, median(loaded.clone()).as_secs_f64() * 1e3);
    let worst = loaded.iter().max().unwrap().as_secs_f64() * 1e3;
    eprintln!(
        "GET / unloaded {unloaded_ms:.1} ms; under load (median) {loaded_ms:.1} ms, worst {worst:.1} ms; {} requests served",
        served.load(Ordering::Relaxed)
    );
    // A stalled server takes seconds to tens of seconds; a busy one answers.
    assert!(worst < 2000.0, "GET / took {worst:.0} ms under load (unloaded {unloaded_ms:.1} ms)");
    assert!(served.load(Ordering::Relaxed) > requests.len() * 6, "the load was served too");
}

fn logins_are_throttled(backend: Backend) {
    let server = Server::start_with(
        backend,
        Options {
            web_config: "login_failures_per_user = 3\nlogin_failures_per_address = 6\nlogin_window_secs = 600".into(),
            ..Options::default()
        },
    );
    for name in ["ann", "bob"] {
        assert_eq!(
            server.put(&format!("/user/{name}"), &json!({ "password": format!("{name}-password") })).status,
            201
        );
    }
    let login = |user: &str, password: &str| {
        let body = json!({ "username": user, "password": password }).to_string();
        server.request(&Identity::Anonymous, "POST", "/login", Some(("application/json", &body)))
    };
    for _ in 0..3 {
        assert_eq!(login("ann", "wrong").status, 403);
    }
    // Refused before the password is looked at, even the right one.
    let refused = login("ann", "ann-password");
    assert_eq!(refused.status, 429, "{}", refused.body);
    assert!(refused.json()["error"].as_str().unwrap().contains("try again later"));
    // Unknown users count the same as known ones.
    assert_eq!(login("bob", "bob-password").status, 302, "another user may still log in");
    assert_eq!(login("nobody", "x").status, 403);
    assert_eq!(login("nobody", "x").status, 403);
    // The sixth failure from this address: nobody logs in from it for a while.
    assert_eq!(login("bob", "wrong").status, 403);
    let refused = login("bob", "bob-password");
    assert_eq!(refused.status, 429, "{}", refused.body);
    let retry_after: u64 = refused.retry_after.as_deref().unwrap_or("0").parse().unwrap();
    assert!(retry_after > 500 && retry_after <= 600, "Retry-After: {retry_after}");
    // A token still works: it is not a login.
    assert_eq!(server.request(&server.admin(), "GET", "/current-user", None).status, 200);
}

crate::on_both_backends!(logins_are_throttled);

#[test]
fn secrets_stay_out_of_the_log_and_the_config_dump() {
    let hook_secret = format!("hook-secret-{}", nonce());
    let token = format!("ghp_{}", nonce().replace('-', ""));
    let url_password = format!("pw{}", nonce().replace('-', ""));
    let server = Server::start_with(
        Backend::Sqlite,
        Options {
            extra_tables: format!(
                "[webhooks]\ngithub_secret = \"{hook_secret}\"\n\n[plugins.grants.github-status]\nhttp = [\"127.0.0.1:1\"]\n\n\
                 [[notifiers]]\nplugin = \"github-status\"\nsettings = {{ token = \"{token}\", base_url = \"http://127.0.0.1:1\" }}\n"
            ),
            ..Options::default()
        },
    );
    let dump = server.cli_ok(&["check-config"], None);
    for secret in [&hook_secret, &token] {
        assert!(!dump.contains(secret.as_str()), "check-config shows a secret: {dump}");
    }
    assert!(dump.contains("github_secret") && dump.contains("***"), "{dump}");

    // An input whose URL carries a password, which fails to fetch (and is
    // logged), and a push signed with the webhook secret.
    server.put("/project/secret", &json!({ "displayname": "secret" }));
    let src = server.source_dir("src");
    write(&src.join("release.nix"), &format!("{{ ... }}:\nlet nonce = \"x\";\n{MK}\nin {{ }}\n"));
    let url = format!("https://ci:{url_password}@127.0.0.1:1/private.git");
    let answer = server.put(
        "/jobset/secret/main",
        &json!({
            "nixexprinput": "src", "nixexprpath": "release.nix", "checkinterval": 0,
            "inputs": { "src": { "type": "path", "value": src.display().to_string() }, "repo": { "type": "git", "value": url } },
        }),
    );
    assert_eq!(answer.status, 201, "{}", answer.body);
    server.wait_for("the fetch to fail", Duration::from_secs(60), || {
        let message = server.get_json("/jobset/secret/main")["fetcherrormsg"].as_str()?.to_owned();
        (!message.is_empty()).then_some(())
    });
    // The admin's token, used for everything above, never shows either.
    let log = std::fs::read_to_string(server.log_path()).unwrap();
    assert!(log.contains("127.0.0.1:1"), "the failing fetch was logged: {log}");
    for secret in [&hook_secret, &token, &url_password, &server.admin_token] {
        assert!(!log.contains(secret.as_str()), "the log shows a secret ({secret}):\n{log}");
    }
}
