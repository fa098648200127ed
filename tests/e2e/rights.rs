//! Who may do what: every mutating endpoint against anonymous callers,
//! plain users, project owners and members, each role, admins, and API
//! tokens with and without the scope; every "no" is a 401 or 403 and
//! changes nothing. Logging in and out, sessions and cross-site requests,
//! tokens that expire or are revoked, and private servers.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{Backend, Identity, MK, Options, Server, nonce, write};
use crate::on_both_backends;

/// Creates a user with a password and roles; returns an all-scopes token.
fn user_with_token(server: &Server, name: &str, roles: &[&str]) -> Identity {
    let answer =
        server.put(&format!("/user/{name}"), &json!({ "password": format!("{name}-password"), "userroles": roles }));
    assert_eq!(answer.status, 201, "{}", answer.body);
    Identity::Token(token_for(server, name, &["all"]))
}

fn token_for(server: &Server, name: &str, scopes: &[&str]) -> String {
    let answer = server.request(
        &server.admin(),
        "POST",
        &format!("/user/{name}/tokens"),
        Some(("application/json", &json!({ "name": "test", "scopes": scopes }).to_string())),
    );
    assert_eq!(answer.status, 201, "{}", answer.body);
    answer.json()["token"].as_str().unwrap().to_owned()
}

/// One mutating request of the matrix.
struct Case {
    what: &'static str,
    method: &'static str,
    path: String,
    body: Option<String>,
    allowed: &'static [&'static str],
}

fn snapshot(server: &Server, builds: &[i64]) -> Value {
    let mut state = json!({
        "projects": server.get_json("/"),
        "jobset": server.get_json("/jobset/p/j"),
        "users": server.get_json("/users"),
        "queue": server.get_json("/api/queue?nr=100"),
    });
    for id in builds {
        state[format!("build{id}")] = server.get_json(&format!("/build/{id}"));
    }
    state
}

fn rights_matrix(backend: Backend) {
    let server = Server::start_with(backend, Options { max_jobs: 2, ..Options::default() });
    let src = server.source_dir("src");
    write(
        &src.join("release.nix"),
        &format!(
            "{{ nonce }}:\nlet {MK}\nin {{\n  fails = mk \"fails\" \"exit 1\";\n  long = mk \"long\" \"sleep 600\";\n}}\n"
        ),
    );
    server.create_jobset("p", "j", &src, "release.nix", json!({ "nonce": { "type": "string", "value": nonce() } }));
    let eval = server.wait_for_evals("p", "j", 1);
    let eval_id = eval["id"].as_i64().unwrap();
    let job_build =
        |job: &str| server.get_following(&format!("/eval/{eval_id}/job/{job}")).json()["id"].as_i64().unwrap();
    let (fails, long) = (job_build("fails"), job_build("long"));
    server.wait_for("the failing build and the long one to run", Duration::from_secs(60), || {
        let failed = server.get_json(&format!("/build/{fails}"))["finished"] == 1;
        let running = server.get_json(&format!("/build/{long}/steps")).as_array().is_some_and(|s| !s.is_empty());
        (failed && running).then_some(())
    });

    let mut who: BTreeMap<&str, Identity> = BTreeMap::new();
    who.insert("anonymous", Identity::Anonymous);
    who.insert("admin", server.admin());
    for (name, roles) in [
        ("plain", vec![]),
        ("member", vec![]),
        ("restarter", vec!["restart-jobs"]),
        ("canceller", vec!["cancel-build"]),
        ("bumper", vec!["bump-to-front"]),
        ("evaluator", vec!["eval-jobset"]),
        ("creator", vec!["create-projects"]),
    ] {
        who.insert(name, user_with_token(&server, name, &roles));
    }
    // The owner acts through a browser session (from this server's pages).
    server.put("/user/owner", &json!({ "password": "owner-password" }));
    assert_eq!(server.put("/project/p", &json!({ "owner": "owner", "members": ["member"] })).status, 200);
    let cookie = server.login("owner", "owner-password");
    who.insert("owner", Identity::Session { cookie, origin: Some(server.url.clone()) });
    who.insert("admin-read-token", Identity::Token(token_for(&server, "admin", &["read"])));
    who.insert("admin-builds-token", Identity::Token(token_for(&server, "admin", &["builds"])));

    let project_edit = json!({ "description": "changed" }).to_string();
    let jobset_edit = json!({ "description": "changed" }).to_string();
    let cases = vec![
        Case {
            what: "create a project",
            method: "PUT",
            path: "/project/NAME".into(),
            body: Some(json!({ "displayname": "x" }).to_string()),
            allowed: &["admin", "creator"],
        },
        Case {
            what: "edit the project",
            method: "PUT",
            path: "/project/p".into(),
            body: Some(project_edit),
            allowed: &["admin", "owner", "member"],
        },
        Case {
            what: "edit the jobset",
            method: "PUT",
            path: "/jobset/p/j".into(),
            body: Some(jobset_edit),
            allowed: &["admin", "owner", "member"],
        },
        Case {
            what: "restart a build",
            method: "POST",
            path: format!("/build/{fails}/restart"),
            body: None,
            allowed: &["admin", "owner", "member", "restarter", "admin-builds-token"],
        },
        Case {
            what: "restart failed builds of an eval",
            method: "POST",
            path: format!("/eval/{eval_id}/restart-failed"),
            body: None,
            allowed: &["admin", "owner", "member", "restarter", "admin-builds-token"],
        },
        Case {
            what: "bump a build",
            method: "POST",
            path: format!("/build/{long}/bump"),
            body: None,
            allowed: &["admin", "owner", "member", "bumper", "admin-builds-token"],
        },
        Case {
            what: "keep a build",
            method: "POST",
            path: format!("/build/{fails}/keep/1"),
            body: None,
            allowed: &["admin", "owner", "member", "admin-builds-token"],
        },
        Case {
            what: "trigger an evaluation",
            method: "POST",
            path: "/api/push?jobsets=p:j".into(),
            body: None,
            allowed: &["admin", "owner", "member", "evaluator"],
        },
        Case {
            what: "create a user",
            method: "PUT",
            path: "/user/NAME".into(),
            body: Some(json!({ "password": "longenough" }).to_string()),
            allowed: &["admin"],
        },
        Case {
            what: "cancel a build",
            method: "POST",
            path: format!("/build/{long}/cancel"),
            body: None,
            allowed: &["admin", "owner", "member", "canceller", "admin-builds-token"],
        },
    ];

    // Every refusal first, and nothing they tried may have changed.
    let before = snapshot(&server, &[fails, long]);
    for case in &cases {
        for (name, identity) in &who {
            if case.allowed.contains(name) {
                continue;
            }
            let path = case.path.replace("NAME", &format!("by-{name}"));
            let answer =
                server.request(identity, case.method, &path, case.body.as_deref().map(|b| ("application/json", b)));
            let expected = if *name == "anonymous" { 401 } else { 403 };
            assert_eq!(answer.status, expected, "{name} tried to {}: {}", case.what, answer.body);
            assert!(answer.json()["error"].is_string());
        }
    }
    assert_eq!(snapshot(&server, &[fails, long]), before, "refused requests changed something");

    // Every permission, in an order where each still has something to act on.
    for case in &cases {
        for name in case.allowed {
            let path = case.path.replace("NAME", &format!("by-{name}"));
            let answer =
                server.request(&who[name], case.method, &path, case.body.as_deref().map(|b| ("application/json", b)));
            assert!(
                !matches!(answer.status, 401 | 403),
                "{name} may {} but got {}: {}",
                case.what,
                answer.status,
                answer.body
            );
        }
    }
    assert_eq!(server.get_json("/project/p")["description"], "changed");
    assert_eq!(server.get_json("/project/by-creator")["owner"], "creator", "a creator owns what they create");
    assert!(server.get_json(&format!("/build/{long}"))["globalpriority"].as_i64().unwrap() > 0);
    assert_eq!(server.get_json(&format!("/build/{long}"))["buildstatus"], 4);
    assert_eq!(server.get_json(&format!("/build/{fails}"))["keep"], 1);
    assert_eq!(server.get("/user/by-admin").status, 200);

    // Deleting: refused to others, allowed to the owner.
    for name in ["anonymous", "plain", "restarter", "creator", "admin-builds-token"] {
        let answer = server.request(&who[name], "DELETE", "/jobset/p/j", None);
        assert!(matches!(answer.status, 401 | 403), "{name} deleted the jobset: {}", answer.body);
    }
    assert_eq!(server.get("/jobset/p/j").status, 200);
    assert_eq!(server.request(&who["owner"], "DELETE", "/jobset/p/j", None).status, 200);
    assert_eq!(server.get("/jobset/p/j").status, 404);
    let answer = server.request(&who["member"], "DELETE", "/project/by-creator", None);
    assert_eq!(answer.status, 403, "members of p are not owners of other projects");
    assert_eq!(server.request(&who["creator"], "DELETE", "/project/by-creator", None).status, 200);
}

fn sessions_and_tokens(backend: Backend) {
    let server = Server::start(backend);
    assert_eq!(server.put("/user/alice", &json!({ "password": "alice-password", "fullname": "Alice", "emailaddress": "alice@example.org", "userroles": ["create-projects"] })).status, 201);

    // Logging in: JSON or form; 302, the cookie and the user.
    let answer = server.request(
        &Identity::Anonymous,
        "POST",
        "/login",
        Some(("application/json", r#"{"username":"alice","password":"wrong"}"#)),
    );
    assert_eq!(answer.status, 403);
    assert!(answer.set_cookie.is_none());
    // A login form is posted from this server's pages: from another site,
    // or from nowhere, it would log a victim in as someone else.
    let form = Some(("application/x-www-form-urlencoded", "username=alice&password=alice-password"));
    for origin in ["http://evil.example", ""] {
        let mut headers = vec![("Accept", "application/json")];
        if !origin.is_empty() {
            headers.push(("Origin", origin));
        }
        let answer = server.request_with(&Identity::Anonymous, "POST", "/login", form, &headers);
        assert_eq!(answer.status, 403, "{origin}: {}", answer.body);
        assert!(answer.set_cookie.is_none());
    }
    let answer = server.request_with(
        &Identity::Anonymous,
        "POST",
        "/login",
        form,
        &[("Accept", "application/json"), ("Origin", &server.url)],
    );
    assert_eq!(answer.status, 302, "{}", answer.body);
    let user = answer.json();
    assert_eq!(
        user,
        json!({ "username": "alice", "fullname": "Alice", "emailaddress": "alice@example.org", "userroles": ["create-projects"] })
    );
    let set_cookie = answer.set_cookie.unwrap();
    assert!(set_cookie.contains("HttpOnly") && set_cookie.contains("hydra_session="), "{set_cookie}");
    let cookie = server.login("alice", "alice-password");
    let browser = Identity::Session { cookie: cookie.clone(), origin: Some(server.url.clone()) };
    assert_eq!(server.request(&browser, "GET", "/current-user", None).json()["username"], "alice");
    assert_eq!(server.request(&Identity::Anonymous, "GET", "/current-user", None).status, 401);

    // A form post riding on the session must come from this server's pages.
    let forged = Identity::Session { cookie: cookie.clone(), origin: Some("http://evil.example".into()) };
    let bare = Identity::Session { cookie: cookie.clone(), origin: None };
    for identity in [&forged, &bare] {
        let answer = server.request(
            identity,
            "PUT",
            "/project/forged",
            Some(("application/x-www-form-urlencoded", "displayname=x")),
        );
        assert_eq!(answer.status, 403, "{}", answer.body);
        assert!(answer.json()["error"].as_str().unwrap().contains("cross-site"));
    }
    assert_eq!(server.get("/project/forged").status, 404);
    let answer = server.request(
        &browser,
        "PUT",
        "/project/mine",
        Some(("application/x-www-form-urlencoded", "displayname=Mine")),
    );
    assert_eq!(answer.status, 201, "{}", answer.body);
    // JSON cannot be sent across sites without CORS: a script's session works.
    let answer =
        server.request(&bare, "PUT", "/project/mine", Some(("application/json", r#"{"description":"by script"}"#)));
    assert_eq!(answer.status, 200, "{}", answer.body);

    // Logging out ends the session.
    assert_eq!(server.request(&browser, "POST", "/logout", None).status, 302);
    assert_eq!(server.request(&browser, "GET", "/current-user", None).status, 401);

    // Tokens: shown once, listed without the secret, limited in time, revocable.
    let alice = server.login("alice", "alice-password");
    let alice_session = Identity::Session { cookie: alice, origin: Some(server.url.clone()) };
    let create = |body: Value| {
        server.request(&alice_session, "POST", "/user/alice/tokens", Some(("application/json", &body.to_string())))
    };
    let answer = create(json!({ "name": "ci", "scopes": ["projects"], "expires_in_days": 30 }));
    assert_eq!(answer.status, 201, "{}", answer.body);
    let token = answer.json();
    let secret = token["token"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("orthrus_"));
    assert!(token["expires"].as_i64().unwrap() > token["created"].as_i64().unwrap());
    let listed = server.request(&alice_session, "GET", "/user/alice/tokens", None).json();
    assert!(!listed.to_string().contains(&secret), "the secret is never shown again");
    assert_eq!(listed[0]["scopes"], json!(["projects"]));
    let ci = Identity::Token(secret.clone());
    assert_eq!(
        server.request(&ci, "PUT", "/project/via-token", Some(("application/json", r#"{"displayname":"T"}"#))).status,
        201
    );
    assert_eq!(
        server.request(&ci, "POST", "/user/alice/tokens", Some(("application/json", r#"{"scopes":["all"]}"#))).status,
        403,
        "a token cannot mint a stronger one"
    );
    assert_eq!(create(json!({ "scopes": ["everything"] })).status, 400);
    let id = token["id"].as_i64().unwrap();
    assert_eq!(server.request(&alice_session, "DELETE", &format!("/user/alice/tokens/{id}"), None).status, 200);
    let answer = server.request(&ci, "GET", "/current-user", None);
    assert_eq!(answer.status, 401, "a revoked token is refused");
    let expired =
        create(json!({ "scopes": ["read"], "expires_in_days": 0 })).json()["token"].as_str().unwrap().to_owned();
    assert_eq!(server.request(&Identity::Token(expired), "GET", "/", None).status, 401);
    assert_eq!(server.request(&Identity::Token("orthrus_nonsense".into()), "GET", "/", None).status, 401);
    // Other users' tokens are not theirs to see.
    assert_eq!(server.request(&alice_session, "GET", "/user/admin/tokens", None).status, 403);
    // The CLI makes users and tokens too.
    server.cli_ok(&["user", "add", "bob", "--role", "restart-jobs", "--password-stdin"], Some("bob-password\n"));
    let listing = server.cli_ok(&["user", "list"], None);
    assert!(listing.contains("bob") && listing.contains("restart-jobs"), "{listing}");
    let bob = server.cli_ok(&["user", "token", "bob", "--scope", "read"], None);
    assert_eq!(
        server.request(&Identity::Token(bob.trim().into()), "GET", "/current-user", None).json()["username"],
        "bob"
    );
    assert!(!server.cli(&["user", "add", "eve", "--role", "root"], None).status.success(), "unknown roles are refused");
}

fn private_server(backend: Backend) {
    let server = Server::start_with(backend, Options { web_config: "private = true".into(), ..Options::default() });
    for path in ["/", "/project/p", "/api/queue?nr=1", "/metrics", "/nix-cache-info"] {
        let answer = server.request(&Identity::Anonymous, "GET", path, None);
        assert_eq!(answer.status, 401, "{path}: {}", answer.body);
    }
    assert_eq!(server.request(&server.admin(), "GET", "/", None).status, 200);
    server.put("/user/carol", &json!({ "password": "carol-password" }));
    let cookie = server.login("carol", "carol-password");
    let carol = Identity::Session { cookie, origin: None };
    assert_eq!(server.request(&carol, "GET", "/", None).status, 200);
}

on_both_backends!(rights_matrix);
on_both_backends!(sessions_and_tokens);
on_both_backends!(private_server);
