//! A token does only what its scopes say. Every route that changes state
//! (and the account's token list), as JSON and as a page's form, is tried
//! by an anonymous caller, a browser session, a token of each scope and a
//! token of another user; who gets an answer in 2xx/3xx and who gets
//! 401/403 is the table below. The subject is an admin, so that only the
//! scopes limit her tokens. Then: a password change ends the other
//! sessions, and a `read` token cannot change the password at all.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{Backend, Identity, MK, Server, nonce, write};
use crate::on_both_backends;

/// The tokens of the subject, by scope.
const SCOPES: [&str; 7] = ["account", "admin", "all", "builds", "eval", "projects", "read"];

/// Who asks: every one of these tries every case.
fn identities() -> Vec<&'static str> {
    let mut all = vec!["anonymous", "session", "other"];
    all.extend(SCOPES);
    all
}

/// One request of the matrix: `path` and `body` get `{who}` replaced (so
/// that each caller acts on its own target), and `{target}` by the
/// caller's target from the case's own map.
struct Case {
    what: &'static str,
    method: &'static str,
    path: String,
    body: Option<(&'static str, String)>,
    /// Tokens of the subject that may do it (a session always may; the
    /// other user never; anonymous callers get 401).
    tokens: &'static [&'static str],
    targets: Option<BTreeMap<&'static str, String>>,
}

impl Case {
    fn new(what: &'static str, method: &'static str, path: impl Into<String>, tokens: &'static [&'static str]) -> Case {
        Case { what, method, path: path.into(), body: None, tokens, targets: None }
    }

    fn json(mut self, body: Value) -> Case {
        self.body = Some(("application/json", body.to_string()));
        self
    }

    fn form(mut self, body: &str) -> Case {
        self.body = Some(("application/x-www-form-urlencoded", body.to_owned()));
        self
    }

    fn targets(mut self, targets: BTreeMap<&'static str, String>) -> Case {
        self.targets = Some(targets);
        self
    }

    /// A page is asked for as a browser would; the rest as JSON.
    fn headers(&self) -> [(&'static str, &'static str); 1] {
        [("Accept", if self.what.ends_with("page") { "text/html" } else { "application/json" })]
    }

    fn allows(&self, who: &str) -> bool {
        who == "session" || self.tokens.contains(&who)
    }

    fn request(&self, who: &str) -> (String, Option<(&'static str, String)>) {
        let label = who.replace('_', "-");
        let target = self.targets.as_ref().map(|t| t.get(who).or_else(|| t.get("session")).unwrap().clone());
        let fill = |text: &str| {
            let text = text.replace("{who}", &label);
            match &target {
                Some(target) => text.replace("{target}", target),
                None => text,
            }
        };
        (fill(&self.path), self.body.as_ref().map(|(kind, body)| (*kind, fill(body))))
    }
}

const PROJECTS: &[&str] = &["projects", "all"];
const EVAL: &[&str] = &["eval", "all"];
const BUILDS: &[&str] = &["builds", "all"];
const ADMIN: &[&str] = &["admin", "all"];
/// One's own account: `account`, or `admin` (which manages every account).
const ACCOUNT: &[&str] = &["account", "admin", "all"];
/// A new token with `account`: only a token that has `account` may give it.
const MINT_ACCOUNT: &[&str] = &["account", "all"];

fn token(server: &Server, user: &str, scopes: &[&str], name: &str) -> (String, i64) {
    let answer = server.request(
        &server.admin(),
        "POST",
        &format!("/user/{user}/tokens"),
        Some(("application/json", &json!({ "name": name, "scopes": scopes }).to_string())),
    );
    assert_eq!(answer.status, 201, "{}", answer.body);
    (answer.json()["token"].as_str().unwrap().to_owned(), answer.json()["id"].as_i64().unwrap())
}

fn jobset_json(src: &std::path::Path, enabled: i32) -> Value {
    json!({
        "enabled": enabled, "visible": true, "nixexprinput": "src", "nixexprpath": "release.nix",
        "checkinterval": 0, "schedulingshares": 1,
        "inputs": { "src": { "type": "path", "value": src.display().to_string() } },
    })
}

fn jobset_form(src: &std::path::Path, name: &str) -> String {
    let src = percent_encode(&src.display().to_string());
    format!(
        "name={name}&type=0&nixexprinput=src&nixexprpath=release.nix&enabled=0&checkinterval=0&schedulingshares=1\
         &keepnr=3&description=by+{{who}}&input-0-name=src&input-0-type=path&input-0-value={src}"
    )
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") }
        })
        .collect()
}

fn snapshot(server: &Server, builds: &[i64], eval: i64) -> Value {
    let mut state = json!({
        "projects": server.get_json("/"),
        "jobset": server.get_json("/jobset/p/j"),
        "formedit": server.get_json("/jobset/p/formedit"),
        "users": server.get_json("/users"),
        "olga": server.get_json("/user/olga"),
        "tokens": server.get_json("/user/olga/tokens"),
        "queue": server.get_json("/api/queue?nr=100"),
        "eval": server.get_json(&format!("/eval/{eval}")),
    });
    // Using a token, even for a refused request, is when it was last used.
    for token in state["tokens"].as_array_mut().unwrap() {
        token.as_object_mut().unwrap().remove("lastused");
    }
    for id in builds {
        let mut build = server.get_json(&format!("/build/{id}"));
        // The queue runner may start or finish a long build meanwhile.
        build.as_object_mut().unwrap().retain(|k, _| ["keep", "globalpriority", "id"].contains(&k.as_str()));
        state[format!("build{id}")] = build;
    }
    state
}

fn scope_matrix(backend: Backend) {
    let started = std::time::Instant::now();
    let server = Server::start(backend);
    let who = identities();
    let allowed_somewhere = ["session", "account", "admin", "all", "builds", "eval", "projects"];

    // The builds the build actions act on: one each, per caller allowed.
    let src = server.source_dir("src");
    let mut jobs = String::new();
    for caller in ["session", "builds", "all"] {
        jobs.push_str(&format!("  fail-{caller} = mk \"fail-{caller}\" \"exit 1\";\n"));
        jobs.push_str(&format!("  long-{caller} = mk \"long-{caller}\" \"sleep 600\";\n"));
    }
    write(&src.join("release.nix"), &format!("{{ nonce }}:\nlet {MK}\nin {{\n{jobs}}}\n"));
    write(&src.join("other.nix"), &format!("{{ nonce }}:\nlet {MK}\nin {{ fails = mk \"fails\" \"exit 1\"; }}\n"));
    let nonce_input = json!({ "nonce": { "type": "string", "value": nonce() } });
    server.create_jobset("p", "j", &src, "release.nix", nonce_input.clone());
    server.create_jobset("p", "j2", &src, "other.nix", nonce_input);
    let eval = server.wait_for_evals("p", "j", 1)["id"].as_i64().unwrap();
    let eval2 = server.wait_for_evals("p", "j2", 1)["id"].as_i64().unwrap();
    let build_of = |eval: i64, job: &str| -> i64 {
        server.get_following(&format!("/eval/{eval}/job/{job}")).json()["id"].as_i64().unwrap()
    };
    let mut failing = BTreeMap::new();
    let mut long = BTreeMap::new();
    for caller in ["session", "builds", "all"] {
        failing.insert(caller, build_of(eval, &format!("fail-{caller}")).to_string());
        long.insert(caller, build_of(eval, &format!("long-{caller}")).to_string());
    }
    let fails2 = build_of(eval2, "fails");
    server.wait_for("the failing builds", Duration::from_secs(120), || {
        let done = failing
            .values()
            .chain([&fails2.to_string()])
            .all(|id| server.get_json(&format!("/build/{id}"))["finished"] == 1);
        done.then_some(())
    });

    // The subject, an admin; her session and her tokens; another user.
    assert_eq!(server.put("/user/olga", &json!({ "password": "olga-password", "userroles": ["admin"] })).status, 201);
    assert_eq!(server.put("/user/mallory", &json!({ "password": "mallory-password" })).status, 201);
    let mut identity: BTreeMap<&str, Identity> = BTreeMap::new();
    identity.insert("anonymous", Identity::Anonymous);
    let cookie = server.login("olga", "olga-password");
    identity.insert("session", Identity::Session { cookie, origin: Some(server.url.clone()) });
    for scope in SCOPES {
        identity.insert(scope, Identity::Token(token(&server, "olga", &[scope], scope).0));
    }
    identity.insert("other", Identity::Token(token(&server, "mallory", &["all"], "mallory").0));

    // What each caller may delete: its own.
    let jobset_body = jobset_json(&src, 0);
    assert_eq!(server.put("/jobset/p/formedit", &jobset_body).status, 201);
    let mut victim_tokens = BTreeMap::new();
    let mut victim_form_tokens = BTreeMap::new();
    for caller in &who {
        let label = caller.replace('_', "-");
        assert_eq!(server.put(&format!("/project/del-{label}"), &json!({ "displayname": "x" })).status, 201);
        assert_eq!(server.put(&format!("/jobset/p/del-{label}"), &jobset_body).status, 201);
        assert_eq!(server.put(&format!("/user/gone-{label}"), &json!({ "fullname": "x" })).status, 201);
        assert_eq!(server.put(&format!("/user/formgone-{label}"), &json!({ "fullname": "x" })).status, 201);
        victim_tokens.insert(*caller, token(&server, "olga", &["read"], &format!("victim-{label}")).1.to_string());
        victim_form_tokens.insert(*caller, token(&server, "olga", &["read"], &format!("form-{label}")).1.to_string());
    }

    let cases = vec![
        // Projects and jobsets, as JSON.
        Case::new("create a project", "PUT", "/project/new-{who}", PROJECTS).json(json!({ "displayname": "x" })),
        Case::new("edit a project", "PUT", "/project/p", PROJECTS).json(json!({ "description": "by {who}" })),
        Case::new("delete a project", "DELETE", "/project/del-{who}", PROJECTS),
        Case::new("create a jobset", "PUT", "/jobset/p/new-{who}", PROJECTS).json(jobset_json(&src, 0)),
        Case::new("edit a jobset", "PUT", "/jobset/p/j", PROJECTS).json(json!({ "description": "by {who}" })),
        Case::new("delete a jobset", "DELETE", "/jobset/p/del-{who}", PROJECTS),
        // Projects and jobsets, as the pages' forms.
        Case::new("create a project (form)", "POST", "/new-project", PROJECTS)
            .form("name=form-{who}&displayname=x&enabled=on&visible=on"),
        Case::new("edit a project (form)", "POST", "/project/p/edit", PROJECTS)
            .form("displayname=p&description=form+{who}&enabled=on&visible=on"),
        Case::new("create a jobset (form)", "POST", "/project/p/new-jobset", PROJECTS)
            .form(&jobset_form(&src, "form-{who}")),
        Case::new("edit a jobset (form)", "POST", "/jobset/p/formedit/edit", PROJECTS)
            .form(&jobset_form(&src, "formedit")),
        // Evaluations.
        Case::new("evaluate a jobset now", "POST", "/jobset/p/j/evaluate", EVAL),
        Case::new("push", "POST", "/api/push?jobsets=p:j", EVAL),
        // Builds.
        Case::new("restart a build", "POST", "/build/{target}/restart", BUILDS).targets(failing.clone()),
        Case::new("cancel a build", "POST", "/build/{target}/cancel", BUILDS).targets(long.clone()),
        Case::new("bump a build", "POST", format!("/build/{}/bump", long["session"]), BUILDS),
        Case::new("keep a build", "POST", format!("/build/{}/keep/1", long["session"]), BUILDS),
        Case::new("restart an eval's failed builds", "POST", format!("/eval/{eval2}/restart-failed"), BUILDS),
        Case::new("restart an eval's aborted builds", "POST", format!("/eval/{eval2}/restart-aborted"), BUILDS),
        Case::new("bump an eval", "POST", format!("/eval/{eval2}/bump"), BUILDS),
        Case::new("cancel an eval", "POST", format!("/eval/{eval2}/cancel"), BUILDS),
        // Users (every account).
        Case::new("create a user", "PUT", "/user/new-{who}", ADMIN).json(json!({ "password": "longenough" })),
        Case::new("delete a user", "DELETE", "/user/gone-{who}", ADMIN),
        Case::new("create a user (form)", "POST", "/new-user", ADMIN)
            .form("username=formuser-{who}&password=longenough"),
        Case::new("delete a user (form)", "POST", "/user/formgone-{who}/delete", ADMIN),
        // One's own account.
        Case::new("change one's name", "PUT", "/user/olga", ACCOUNT).json(json!({ "fullname": "Olga {who}" })),
        Case::new("list one's tokens", "GET", "/user/olga/tokens", ACCOUNT),
        Case::new("make a token", "POST", "/user/olga/tokens", MINT_ACCOUNT)
            .json(json!({ "name": "by-{who}", "scopes": ["account"] })),
        Case::new("revoke a token", "DELETE", "/user/olga/tokens/{target}", ACCOUNT).targets(victim_tokens),
        Case::new("make a token (form)", "POST", "/user/olga/new-token", MINT_ACCOUNT)
            .form("name=form-by-{who}&scope.account=on"),
        Case::new("revoke a token (form)", "POST", "/user/olga/tokens/{target}/revoke", ACCOUNT)
            .targets(victim_form_tokens),
        Case::new("see one's account page", "GET", "/user/olga", ACCOUNT),
    ];

    let builds: Vec<i64> = failing.values().chain(long.values()).map(|id| id.parse().unwrap()).collect();
    let before = snapshot(&server, &builds, eval2);
    let mut refusals = 0;
    for case in &cases {
        for caller in &who {
            if case.allows(caller) {
                continue;
            }
            let (path, body) = case.request(caller);
            let body = body.as_ref().map(|(kind, text)| (*kind, text.as_str()));
            let answer = server.request_with(&identity[caller], case.method, &path, body, &case.headers());
            let expected = if *caller == "anonymous" { 401 } else { 403 };
            assert_eq!(
                answer.status, expected,
                "{caller} tried to {} ({} {path}): {}",
                case.what, case.method, answer.body
            );
            refusals += 1;
        }
    }
    assert_eq!(snapshot(&server, &builds, eval2), before, "refused requests changed something");

    let mut permissions = 0;
    for case in &cases {
        for caller in allowed_somewhere {
            if !case.allows(caller) {
                continue;
            }
            let (path, body) = case.request(caller);
            let body = body.as_ref().map(|(kind, text)| (*kind, text.as_str()));
            let answer = server.request_with(&identity[caller], case.method, &path, body, &case.headers());
            assert!(
                (200..400).contains(&answer.status),
                "{caller} may {} ({} {path}) but got {}: {}",
                case.what,
                case.method,
                answer.status,
                answer.body
            );
            permissions += 1;
        }
    }
    // What the permitted requests did is there.
    assert_eq!(server.get_json("/project/new-projects")["owner"], "olga");
    assert_eq!(server.get("/project/del-all").status, 404);
    assert_eq!(server.get("/project/del-read").status, 200);
    assert_eq!(server.get("/user/gone-admin").status, 404);
    assert_eq!(server.get("/user/gone-account").status, 200);
    for (caller, id) in &long {
        assert_eq!(server.get_json(&format!("/build/{id}"))["buildstatus"], 4, "cancelled by {caller}");
    }
    let tokens = server.get_json("/user/olga/tokens");
    let revoked =
        |name: &str| tokens.as_array().unwrap().iter().find(|t| t["name"] == name).unwrap()["revoked"].clone();
    assert_eq!(revoked("victim-account"), true);
    assert_eq!(revoked("victim-read"), false);
    assert_eq!(revoked("form-admin"), true);
    eprintln!(
        "scope matrix: {} cases, {refusals} refusals and {permissions} permissions checked in {:.1} s (setup included)",
        cases.len(),
        started.elapsed().as_secs_f64()
    );
}

/// A password change ends every other session of the user; a token that
/// may only read cannot make it.
fn password_change_ends_other_sessions(backend: Backend) {
    let server = Server::start(backend);
    assert_eq!(server.put("/user/pat", &json!({ "password": "pat-password" })).status, 201);
    let session = |cookie: String| Identity::Session { cookie, origin: Some(server.url.clone()) };
    let here = session(server.login("pat", "pat-password"));
    let elsewhere = session(server.login("pat", "pat-password"));
    let (read_token, _) = token(&server, "pat", &["read"], "netrc");
    let read = Identity::Token(read_token);
    let change = |who: &Identity, password: &str, current: &str| {
        let body = json!({ "password": password, "currentpassword": current }).to_string();
        server.request(who, "PUT", "/user/pat", Some(("application/json", &body)))
    };

    // The token of a build machine's netrc cannot take the account over.
    let answer = change(&read, "taken-over", "pat-password");
    assert_eq!(answer.status, 403, "{}", answer.body);
    assert!(answer.json()["error"].as_str().unwrap().contains("‘account’"), "{}", answer.body);
    let answer =
        server.request(&read, "POST", "/user/pat/tokens", Some(("application/json", r#"{"scopes":["read"]}"#)));
    assert_eq!(answer.status, 403, "{}", answer.body);
    assert_eq!(server.request(&read, "GET", "/user/pat/tokens", None).status, 403);
    assert_eq!(server.request(&read, "GET", "/user/pat", None).status, 200, "reading one's account is reading");
    let refused = server.request(
        &Identity::Anonymous,
        "POST",
        "/login",
        Some(("application/json", r#"{"username":"pat","password":"taken-over"}"#)),
    );
    assert_eq!(refused.status, 403);

    // Not without the current password: a stolen session or token must not
    // become the account's password.
    let (account_token, _) = token(&server, "pat", &["account"], "account");
    let account = Identity::Token(account_token);
    for (who, current) in [(&here, ""), (&here, "wrong-password"), (&account, "wrong-password")] {
        let answer = change(who, "taken-over", current);
        assert_eq!(answer.status, 403, "{}", answer.body);
        assert!(answer.json()["error"].as_str().unwrap().contains("currentpassword"), "{}", answer.body);
    }
    // A token that expires makes only tokens that expire by then.
    let body = r#"{"name":"short","scopes":["account"],"expires_in_days":1}"#;
    let short = server.request(&server.admin(), "POST", "/user/pat/tokens", Some(("application/json", body))).json();
    let short_token = Identity::Token(short["token"].as_str().unwrap().to_owned());
    let body = r#"{"name":"minted","scopes":["account"]}"#;
    let minted = server.request(&short_token, "POST", "/user/pat/tokens", Some(("application/json", body)));
    assert_eq!(minted.status, 201, "{}", minted.body);
    let (minted, limit) = (minted.json()["expires"].as_i64(), short["expires"].as_i64().unwrap());
    assert!(minted.is_some_and(|expires| expires <= limit), "{minted:?} outlives {limit}");
    // Changed from one session: that one goes on, the other ends; tokens stay.
    assert_eq!(change(&here, "new-pat-password", "pat-password").status, 200);
    assert_eq!(server.request(&here, "GET", "/current-user", None).status, 200);
    assert_eq!(server.request(&elsewhere, "GET", "/current-user", None).status, 401);
    assert_eq!(server.request(&read, "GET", "/current-user", None).status, 200);
    server.login("pat", "new-pat-password");

    // Changed by an admin: every session of the user ends.
    assert_eq!(server.put("/user/pat", &json!({ "password": "admin-set-password" })).status, 200);
    assert_eq!(server.request(&here, "GET", "/current-user", None).status, 401);
}

/// Two creators race for the same new project names: whoever loses gets
/// 409 (or 403, once the winner's project exists and is not theirs), and
/// every project is owned by the one who got 201 for it.
fn create_races(backend: Backend) {
    let server = Server::start(backend);
    let creators: Vec<(String, Identity)> = ["ann", "ben"]
        .iter()
        .map(|name| {
            let answer = server.put(&format!("/user/{name}"), &json!({ "userroles": ["create-projects"] }));
            assert_eq!(answer.status, 201, "{}", answer.body);
            (name.to_string(), Identity::Token(token(&server, name, &["projects"], "race").0))
        })
        .collect();
    let names: Vec<String> = (0..20).map(|i| format!("race-{i}")).collect();
    let results: Vec<Vec<(String, u16)>> = std::thread::scope(|scope| {
        let runs: Vec<_> = creators
            .iter()
            .map(|(user, identity)| {
                let (server, names) = (&server, &names);
                scope.spawn(move || {
                    names
                        .iter()
                        .map(|name| {
                            let body = json!({ "displayname": format!("by {user}") }).to_string();
                            let path = format!("/project/{name}");
                            let answer = server.request(identity, "PUT", &path, Some(("application/json", &body)));
                            (user.clone(), answer.status)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        runs.into_iter().map(|run| run.join().unwrap()).collect()
    });
    for (i, name) in names.iter().enumerate() {
        let answers: Vec<&(String, u16)> = results.iter().map(|run| &run[i]).collect();
        let winners: Vec<&str> = answers.iter().filter(|(_, s)| *s == 201).map(|(u, _)| u.as_str()).collect();
        assert_eq!(winners.len(), 1, "{name}: {answers:?}");
        assert!(answers.iter().all(|(_, s)| matches!(s, 201 | 403 | 409)), "{name}: {answers:?}");
        let project = server.get_json(&format!("/project/{name}"));
        assert_eq!(project["owner"], winners[0], "{name}: {answers:?}");
        assert_eq!(project["displayname"], format!("by {}", winners[0]), "{name}: the loser changed it");
    }
}

on_both_backends!(scope_matrix);
on_both_backends!(create_races);
on_both_backends!(password_change_ends_other_sessions);
