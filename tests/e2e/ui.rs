//! The web UI in a real browser: Debian's chromium, headless, driven over
//! WebDriver (chromedriver) against the real binary. A person logs in
//! through the form, walks from the projects to a jobset's job matrix, an
//! evaluation (filtered, compared with the previous one), a build with its
//! rendered product and a job's plots. Screenshots of the pages are saved
//! in `target/ui-screenshots/` as test artefacts.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use crate::harness::{Backend, MK, Server, nonce, write};

/// chromedriver on a free port, killed with the test.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    fn start() -> Driver {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver runs (Debian: apt install chromium chromium-driver; .ci/run installs them)");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not listen on port {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        Driver { child, url: format!("http://127.0.0.1:{port}") }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn browser(driver: &Driver) -> Client {
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        json!({ "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1200,1000"] }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(capabilities)
        .connect(&driver.url)
        .await
        .expect("a chromium session")
}

fn screenshots() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/ui-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn screenshot(client: &Client, name: &str) {
    let png = client.screenshot().await.unwrap();
    std::fs::write(screenshots().join(format!("{name}.png")), png).unwrap();
}

/// Waits (after a click that loads a page) until `css` holds `expected`.
async fn wait_for_text(client: &Client, css: &str, expected: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let found = match client.find(Locator::Css(css)).await {
            Ok(element) => element.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if found.contains(expected) {
            return;
        }
        assert!(Instant::now() < deadline, "{css} never held {expected:?}: {found:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn text(client: &Client, css: &str) -> String {
    client.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("no {css}: {e}")).text().await.unwrap()
}

/// Lines of the `chatty` job's log: about 640 KiB, three pages.
const CHATTY_LINES: usize = 12_000;

/// The jobset: `hello` succeeds with a file product, `broken` fails; the
/// `nonce` input makes new derivations when it changes.
fn release_nix() -> String {
    format!(
        r#"{{ nonce }}:
let {MK}
in {{
  hello = mk "hello" ''
    mkdir -p $out/nix-support $out/bin
    echo "hello ${{nonce}}" > $out/bin/hello
    echo "file binary-dist $out/bin/hello" > $out/nix-support/hydra-build-products
  '';
  broken = mk "broken" "echo this build fails; exit 1";
}}
"#
    )
}

/// Jobset `web:main` of [`release_nix`], evaluated once and built; returns
/// the directory of its source.
fn built_jobset(server: &Server) -> PathBuf {
    let source = server.source_dir("src");
    write(&source.join("release.nix"), &release_nix());
    server.create_jobset(
        "web",
        "main",
        &source,
        "release.nix",
        json!({ "nonce": { "type": "string", "value": nonce() } }),
    );
    let eval = server.wait_for_evals("web", "main", 1);
    server.wait_for_eval_builds(eval["id"].as_i64().unwrap());
    source
}

#[test]
fn pages_in_a_browser() {
    let server = Server::start(Backend::Sqlite);
    let source = built_jobset(&server);
    // A second evaluation with new derivations: something to compare and plot.
    let jobset = server.get_json("/jobset/web/main");
    let mut inputs = jobset["inputs"].clone();
    inputs["nonce"]["value"] = json!(nonce());
    let answer = server.put("/jobset/web/main", &json!({ "inputs": inputs }));
    assert_eq!(answer.status, 200, "{}", answer.body);
    server.push("web", "main", true);
    let second = server.wait_for_evals("web", "main", 2);
    let builds = server.wait_for_eval_builds(second["id"].as_i64().unwrap());
    let (second_id, hello) = (second["id"].as_i64().unwrap(), builds["hello"]["id"].as_i64().unwrap());
    let broken = builds["broken"]["id"].as_i64().unwrap();

    let driver = Driver::start();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let client = browser(&driver).await;
        let url = |path: &str| format!("{}{path}", server.url);

        // Logging in through the form lands on the projects, logged in.
        client.goto(&url("/login")).await.unwrap();
        screenshot(&client, "login").await;
        client.find(Locator::Css("input[name=username]")).await.unwrap().send_keys("admin").await.unwrap();
        client.find(Locator::Css("input[name=password]")).await.unwrap().send_keys("admin-password").await.unwrap();
        client.find(Locator::Css("form.stacked button")).await.unwrap().click().await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while client.current_url().await.unwrap().path() != "/" {
            assert!(Instant::now() < deadline, "the login did not lead to the projects");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        wait_for_text(&client, "h1", "Projects").await;
        assert_eq!(text(&client, "nav .user a[href='/user/admin']").await, "admin");
        screenshot(&client, "projects").await;

        // A project and a jobset made through the forms; a mistake is shown
        // next to its field, with what was typed kept.
        let fill = |name: &'static str, value: String| {
            let client = client.clone();
            async move {
                let input = client.find(Locator::Css(&format!("[name='{name}']"))).await.unwrap();
                input.clear().await.unwrap();
                input.send_keys(&value).await.unwrap();
            }
        };
        client.find(Locator::LinkText("New project")).await.unwrap().click().await.unwrap();
        fill("name", "forms".into()).await;
        fill("displayname", "Made in the browser".into()).await;
        client.find(Locator::Css("form.stacked button")).await.unwrap().click().await.unwrap();
        wait_for_text(&client, "h1", "Made in the browser").await;
        client.find(Locator::LinkText("New jobset")).await.unwrap().click().await.unwrap();
        fill("name", "main".into()).await;
        fill("nixexprinput", "src".into()).await;
        fill("nixexprpath", "../release.nix".into()).await;
        fill("input-0-name", "src".into()).await;
        fill("input-0-type", "path".into()).await;
        fill("input-0-value", source.display().to_string()).await;
        fill("input-1-name", "nonce".into()).await;
        fill("input-1-type", "string".into()).await;
        fill("input-1-value", nonce()).await;
        client.find(Locator::Css("form.stacked button")).await.unwrap().click().await.unwrap();
        wait_for_text(&client, "label:has([name='nixexprpath']) .error", "must be a relative path inside the input").await;
        let kept = client.find(Locator::Css("[name='input-0-value']")).await.unwrap().prop("value").await.unwrap();
        assert_eq!(kept.as_deref(), Some(source.to_str().unwrap()), "what was typed is kept");
        screenshot(&client, "jobset-form-error").await;
        fill("nixexprpath", "release.nix".into()).await;
        client.find(Locator::Css("form.stacked button")).await.unwrap().click().await.unwrap();
        wait_for_text(&client, "h1", "forms:main").await;
        let eval = server.wait_for_evals("forms", "main", 1);
        assert_eq!(server.wait_for_eval_builds(eval["id"].as_i64().unwrap()).len(), 2);
        client.goto(&url("/")).await.unwrap();

        // Project, then jobset: the matrix shows both evaluations' builds.
        client.find(Locator::LinkText("web")).await.unwrap().click().await.unwrap();
        wait_for_text(&client, "h1", "web").await;
        client.find(Locator::LinkText("main")).await.unwrap().click().await.unwrap();
        wait_for_text(&client, "h1", "web:main").await;
        let matrix = text(&client, "table.matrix").await;
        assert!(matrix.contains("broken") && matrix.contains("hello"), "{matrix}");
        assert_eq!(client.find_all(Locator::Css("table.matrix .badge.ok")).await.unwrap().len(), 2, "{matrix}");
        assert_eq!(client.find_all(Locator::Css("table.matrix .badge.fail")).await.unwrap().len(), 2, "{matrix}");
        screenshot(&client, "jobset").await;

        // The evaluation, compared with the previous one, then filtered to its failures.
        client.goto(&url(&format!("/eval/{second_id}"))).await.unwrap();
        let listed = text(&client, "main").await;
        assert!(listed.contains("Compared with evaluation") && listed.contains("2 jobs unchanged"), "{listed}");
        client.find(Locator::Css(".filters a[href$='status=failed']")).await.unwrap().click().await.unwrap();
        wait_for_text(&client, ".filters a.current", "failed").await;
        let rows = client.find_all(Locator::Css("main > div.scroll:last-of-type tbody tr")).await.unwrap();
        assert_eq!(rows.len(), 1, "only the failed build is listed");
        assert!(rows[0].text().await.unwrap().contains("broken"));
        screenshot(&client, "eval").await;

        // The build: its product shown by the `file` renderer, whose link downloads it.
        client.goto(&url(&format!("/build/{hello}"))).await.unwrap();
        assert!(text(&client, "main").await.contains("succeeded"));
        let product = text(&client, ".product").await;
        assert!(product.contains("hello") && product.contains("binary-dist"), "{product}");
        let download = client.find(Locator::Css(".product a")).await.unwrap().attr("href").await.unwrap().unwrap();
        let downloaded = server.get(&download.replace(&server.url, ""));
        assert_eq!(downloaded.status, 200);
        assert!(downloaded.body.starts_with("hello "), "{}", downloaded.body);
        screenshot(&client, "build").await;

        // The job: its history, and a plot of its closure size.
        client.find(Locator::Css(".crumbs li:last-child a")).await.unwrap().click().await.unwrap();
        wait_for_text(&client, "h1", "web:main:hello").await;
        assert_eq!(client.find_all(Locator::Css("main > div.scroll tbody tr")).await.unwrap().len(), 2);
        let plots = client.find_all(Locator::Css("svg.plot polyline")).await.unwrap();
        assert!(!plots.is_empty(), "a plot of the job's builds");
        screenshot(&client, "job").await;

        // Restarting a failed build from its page runs it again.
        client.goto(&url(&format!("/build/{broken}"))).await.unwrap();
        assert!(client.find(Locator::Css("form.action[action$='/cancel']")).await.is_err(), "finished: no Cancel");
        client.find(Locator::Css("form.action[action$='/restart'] button")).await.unwrap().click().await.unwrap();
        server.wait_for("the restarted build to run again", Duration::from_secs(60), || {
            let steps = server.get_json(&format!("/build/{broken}/steps"));
            (steps.as_array().unwrap().len() == 2 && server.get_json(&format!("/build/{broken}"))["finished"] == 1)
                .then_some(())
        });
        assert_eq!(client.current_url().await.unwrap().path(), format!("/build/{broken}"));

        // "Evaluate now" evaluates the jobset again, unchanged as it is.
        client.goto(&url("/jobset/web/main")).await.unwrap();
        client.find(Locator::Css("form.action[action$='/evaluate'] button")).await.unwrap().click().await.unwrap();
        server.wait_for_evals("web", "main", 3);
        assert_eq!(client.current_url().await.unwrap().path(), "/jobset/web/main");

        // The jobset's evaluations, and everyone's.
        client.find(Locator::Css("dd a[href$='/evals']")).await.unwrap().click().await.unwrap();
        wait_for_text(&client, "h1", "Evaluations of web:main").await;
        assert_eq!(client.find_all(Locator::Css("main tbody tr")).await.unwrap().len(), 3);
        client.find(Locator::LinkText("Evaluations")).await.unwrap().click().await.unwrap();
        wait_for_text(&client, "h1", "Evaluations").await;
        let listed = text(&client, "main tbody").await;
        assert!(listed.contains("web:main") && listed.contains("forms:main"), "{listed}");
        screenshot(&client, "evals").await;

        // Search from the header: the jobs and jobsets by that name.
        // (U+E007 is WebDriver's Enter key.)
        client.find(Locator::Css("form.search input")).await.unwrap().send_keys("hello\u{E007}").await.unwrap();
        wait_for_text(&client, "h1", "Search: hello").await;
        let found = text(&client, "main").await;
        assert!(found.contains("web:main:hello") && found.contains("forms:main:hello"), "{found}");
        screenshot(&client, "search").await;

        // A running build's log grows on its page as it is written. Beside
        // it, `chatty` writes a log of three pages onto a dependency.
        write(
            &source.join("slow.nix"),
            &format!(
                "{{ nonce }}:\nlet {MK}\nin rec {{\n\
                 slow = mk \"slow\" ''\n  for i in $(seq 1 40); do echo \"line $i\"; [ $i = 20 ] && echo; sleep 0.25; done\n  echo done > $out\n'';\n\
                 base = mk \"base\" \"echo base > $out\";\n\
                 chatty = mk \"chatty\" ''\n  cat ${{base}} > /dev/null\n  for i in $(seq 1 {CHATTY_LINES}); do echo \"chatty line $i of a long log, padded to fill a page\"; done\n  echo done > $out\n'';\n}}\n"
            ),
        );
        server.create_jobset("web", "slow", &source, "slow.nix", json!({ "nonce": { "type": "string", "value": nonce() } }));
        let eval = server.wait_for_evals("web", "slow", 1);
        let job_build = |job: &str| {
            let builds = server.get_json(&format!("/eval/{}/builds", eval["id"]));
            builds.as_array().unwrap().iter().find(|b| b["job"] == job).unwrap()["id"].as_i64().unwrap()
        };
        let (slow, chatty) = (job_build("slow"), job_build("chatty"));
        server.wait_for("the slow build to start", Duration::from_secs(60), || {
            let steps = server.get_json(&format!("/build/{slow}/steps"));
            steps.as_array().unwrap().iter().any(|s| s["busy"] == 1 || s["busy"] == true).then_some(())
        });
        // What builds now, by machine.
        client.find(Locator::LinkText("Status")).await.unwrap().click().await.unwrap();
        wait_for_text(&client, "h1", "Status").await;
        assert!(text(&client, "main").await.contains("web:slow:slow"), "the running step is listed");
        screenshot(&client, "status").await;
        client.goto(&url(&format!("/build/{slow}"))).await.unwrap();
        let log_text = || async { client.find(Locator::Css("pre.log")).await.unwrap().text().await.unwrap() };
        let deadline = Instant::now() + Duration::from_secs(30);
        let early = loop {
            let text = log_text().await;
            if text.contains("line 3\n") || text.ends_with("line 3") {
                break text;
            }
            assert!(Instant::now() < deadline, "the log did not appear live: {text:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        screenshot(&client, "live-log").await;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = log_text().await;
            if text.contains("line 40") {
                assert!(text.lines().count() > early.lines().count(), "the log grew: {text:?}");
                let numbers: Vec<&str> = text.lines().filter(|l| l.starts_with("line ")).collect();
                let expected: Vec<String> = (1..=40).map(|i| format!("line {i}")).collect();
                assert_eq!(numbers, expected, "every line once, in order");
                assert!(text.contains("line 20\n\nline 21"), "an empty line is a line too: {text:?}");
                break;
            }
            assert!(Instant::now() < deadline, "the log stopped growing: {text:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while client.find(Locator::Css("pre.log[data-state=finished]")).await.is_err() {
            assert!(Instant::now() < deadline, "the live log did not end with its step");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }

        // A long log, a page at a time: its end first, then from its start
        // page after page, every line once.
        server.wait_for("chatty to finish", Duration::from_secs(60), || {
            (server.get_json(&format!("/build/{chatty}"))["finished"] == 1).then_some(())
        });
        let chatty_lines = |text: String| -> Vec<String> {
            text.lines().filter(|l| l.starts_with("chatty line ")).map(str::to_owned).collect()
        };
        client.goto(&url(&format!("/build/{chatty}/log"))).await.unwrap();
        let tail = chatty_lines(text(&client, "pre.whole-log").await);
        assert!(tail.last().unwrap().starts_with(&format!("chatty line {CHATTY_LINES} ")), "the end first");
        assert!(!tail.iter().any(|l| l.starts_with("chatty line 1 ")), "not the whole log");
        screenshot(&client, "log-viewer").await;
        client.find(Locator::LinkText("« start")).await.unwrap().click().await.unwrap();
        let mut pages = 0;
        let mut seen = Vec::new();
        loop {
            pages += 1;
            seen.extend(chatty_lines(text(&client, "pre.whole-log").await));
            match client.find(Locator::LinkText("later →")).await {
                Ok(later) => later.click().await.unwrap(),
                Err(_) => break,
            }
        }
        let expected: Vec<String> =
            (1..=CHATTY_LINES).map(|i| format!("chatty line {i} of a long log, padded to fill a page")).collect();
        assert_eq!(seen, expected, "every line once, in order");
        assert_eq!(pages, 3, "about 640 KiB in pages of 256 KiB");

        // Its dependency, a job of its own, linked to its build.
        client.goto(&url(&format!("/build/{chatty}"))).await.unwrap();
        let dependencies = text(&client, "table.deps tbody").await;
        assert!(dependencies.contains("base.drv") && dependencies.contains("succeeded"), "{dependencies}");
        let base = job_build("base");
        client.find(Locator::Css(&format!("table.deps a[href='/build/{base}']"))).await.unwrap();

        // Users and tokens: an account made through the form (a short
        // password refused next to its field), a token shown once, working
        // until it is revoked.
        client.find(Locator::LinkText("Admin")).await.unwrap().click().await.unwrap();
        client.find(Locator::LinkText("Users")).await.unwrap().click().await.unwrap();
        wait_for_text(&client, "h1", "Users").await;
        fill("username", "alice".into()).await;
        fill("fullname", "Alice Liddell".into()).await;
        fill("password", "short".into()).await;
        client.find(Locator::Css("form[action='/new-user'] button")).await.unwrap().click().await.unwrap();
        wait_for_text(&client, "label:has([name='password']) .error", "at least 8 characters").await;
        let kept = client.find(Locator::Css("[name='username']")).await.unwrap().prop("value").await.unwrap();
        assert_eq!(kept.as_deref(), Some("alice"));
        fill("password", "alice-password".into()).await;
        client.find(Locator::Css("[name='role.eval-jobset']")).await.unwrap().click().await.unwrap();
        client.find(Locator::Css("form[action='/new-user'] button")).await.unwrap().click().await.unwrap();
        wait_for_text(&client, "h1", "User alice").await;
        assert!(text(&client, "dl").await.contains("eval-jobset"));
        fill("name", "deploy".into()).await;
        client.find(Locator::Css("[name='scope.read']")).await.unwrap().click().await.unwrap();
        client.find(Locator::Css("form[action$='/new-token'] button")).await.unwrap().click().await.unwrap();
        wait_for_text(&client, ".notice", "copy it now").await;
        let secret = text(&client, "pre.secret").await.trim().to_owned();
        let as_alice = crate::harness::Identity::Token(secret.clone());
        let me = server.request(&as_alice, "GET", "/current-user", None);
        assert!(me.body.contains("\"alice\""), "the token works: {}", me.body);
        screenshot(&client, "user").await;
        client.goto(&url("/user/alice")).await.unwrap();
        assert!(!text(&client, "main").await.contains(&secret), "the secret is shown once");
        client.find(Locator::Css("form.action[action$='/revoke'] button")).await.unwrap().click().await.unwrap();
        wait_for_text(&client, "main table", "revoked").await;
        assert_eq!(server.request(&as_alice, "GET", "/current-user", None).status, 401, "revoked");
        client.goto(&url("/admin/plugins")).await.unwrap();
        assert!(text(&client, "main").await.contains("run-program(git)"), "the git plugin and what it runs");
        screenshot(&client, "plugins").await;

        // A page that is not there says so, in the frame.
        client.goto(&url("/build/999999")).await.unwrap();
        assert!(text(&client, "main").await.contains("build 999999 does not exist"));
        client.close().await.unwrap();
    });

    // Anonymous readers see the pages, not the buttons; the actions refuse them.
    let page = server.request_with(
        &crate::harness::Identity::Anonymous,
        "GET",
        &format!("/build/{broken}"),
        None,
        &[("Accept", "text/html")],
    );
    assert!(page.content_type.starts_with("text/html"), "{}", page.content_type);
    assert!(page.body.contains("Build ") && !page.body.contains("/restart"), "{}", page.body);
    let refused = server.request(&crate::harness::Identity::Anonymous, "POST", "/jobset/web/main/evaluate", None);
    assert_eq!(refused.status, 401, "{}", refused.body);
    // An admin page asks an anonymous reader to log in, on the spot.
    let admin =
        server.request_with(&crate::harness::Identity::Anonymous, "GET", "/admin", None, &[("Accept", "text/html")]);
    assert_eq!(admin.status, 401);
    assert!(admin.body.contains("name=\"password\""), "{}", admin.body);

    // Forms refused to anonymous callers show nothing of what they would
    // have shown (the users, an account).
    for (path, form) in [("/new-user", "username=admin"), ("/user/alice/new-token", "expires_in_days=0")] {
        let refused = server.request_with(
            &crate::harness::Identity::Anonymous,
            "POST",
            path,
            Some(("application/x-www-form-urlencoded", form)),
            &[("Accept", "text/html")],
        );
        assert_eq!(refused.status, 401, "{path}: {}", refused.body);
        assert!(
            !refused.body.contains("Alice Liddell") && !refused.body.contains("/user/admin"),
            "{path}: {}",
            refused.body
        );
    }

    // Programs still get JSON on the same URLs.
    assert_eq!(server.get_json(&format!("/build/{hello}"))["job"], "hello");
}

/// Database queries a page may take, the login check included.
const MAX_QUERIES: u32 = 8;

/// A private server: every page (24 of them) answers 403 with a way to log in to an
/// anonymous browser (programs still get their 401), and 200 once logged
/// in; a wrong password sends the form back with the refusal.
#[test]
fn private_server_pages() {
    use crate::harness::{Identity, Options};
    let server =
        Server::start_with(Backend::Sqlite, Options { web_config: "private = true".into(), ..Default::default() });
    built_jobset(&server);
    let eval = server.wait_for_evals("web", "main", 1)["id"].as_i64().unwrap();
    let hello = server.wait_for_eval_builds(eval)["hello"]["id"].as_i64().unwrap();
    let answer = server.put(
        "/project/web",
        &json!({ "releasesets": { "stable": { "plugin": "official-release", "settings": { "value": "true" } } } }),
    );
    assert_eq!(answer.status, 200, "{}", answer.body);
    let pages = [
        "/".to_owned(),
        "/project/web".into(),
        "/jobset/web/main".into(),
        format!("/eval/{eval}"),
        format!("/build/{hello}"),
        "/job/web/main/hello".into(),
        "/queue".into(),
        "/machines".into(),
        "/new-project".into(),
        "/project/web/edit".into(),
        "/jobset/web/main/edit".into(),
        "/status".into(),
        "/evals".into(),
        "/jobset/web/main/evals".into(),
        "/search?query=hello".into(),
        format!("/build/{hello}/log"),
        format!("/build/{hello}/nixlog/1"),
        "/project/web/releaseset/stable".into(),
        "/admin".into(),
        "/admin/plugins".into(),
        "/admin/notifications".into(),
        "/users".into(),
        "/user/admin".into(),
    ];
    let html = [("Accept", "text/html")];
    let cookie = server.login("admin", "admin-password");
    let session = Identity::Session { cookie: cookie.clone(), origin: None };
    for page in &pages {
        let anonymous = server.request_with(&Identity::Anonymous, "GET", page, None, &html);
        assert_eq!(anonymous.status, 403, "{page}: {}", anonymous.body);
        assert!(anonymous.body.contains("name=\"password\""), "{page}: a way to log in");
        assert_eq!(anonymous.server_timing, None, "{page}: anonymous readers are not told the server's costs");
        let logged_in = server.request_with(&session, "GET", page, None, &html);
        assert_eq!(logged_in.status, 200, "{page}: {}", logged_in.body);
        assert!(logged_in.content_type.starts_with("text/html"), "{page}");
        // A handful of queries a page, whatever the data (no query per row).
        let queries = logged_in.queries().unwrap_or_else(|| panic!("{page}: no Server-Timing"));
        assert!(queries <= MAX_QUERIES, "{page}: {queries} database queries");
    }
    assert_eq!(server.request(&Identity::Anonymous, "GET", "/jobset/web/main", None).status, 401, "JSON clients");

    // The forms refuse a post from another site riding on the session.
    let forged = Identity::Session { cookie, origin: Some("http://evil.example".into()) };
    for (path, form) in [
        ("/new-user", "username=mallory&password=mallory-password&role.admin=on"),
        ("/user/admin/new-token", "name=stolen&scope.admin=on"),
        ("/jobset/web/main/evaluate", ""),
    ] {
        let answer =
            server.request_with(&forged, "POST", path, Some(("application/x-www-form-urlencoded", form)), &html);
        assert_eq!(answer.status, 403, "{path}: {}", answer.body);
    }
    assert_eq!(server.get("/user/mallory").status, 404);
    let tokens = server.get_json("/user/admin/tokens");
    assert!(!tokens.to_string().contains("stolen"), "{tokens}");
    assert_eq!(server.request_with(&Identity::Anonymous, "GET", "/login", None, &html).status, 200);
    let refused = server.request_with(
        &Identity::Anonymous,
        "POST",
        "/login",
        Some(("application/x-www-form-urlencoded", "username=admin&password=wrong")),
        &[("Accept", "text/html"), ("Origin", &server.url)],
    );
    assert_eq!(refused.status, 303);
    assert!(refused.location.unwrap_or_default().ends_with("/login?failed=1"));
    let form = server.request_with(&Identity::Anonymous, "GET", "/login?failed=1", None, &html);
    assert!(form.body.contains("Wrong user name or password."), "{}", form.body);
}
