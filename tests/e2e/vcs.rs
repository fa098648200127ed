//! Inputs fetched by the built-in plugins from real repositories: git served
//! by `git daemon` and by file URL, Subversion served by `svnserve`. A
//! jobset follows new commits, builds them and records their revisions;
//! unchanged revisions give no new evaluation; branches are honoured;
//! `/api/push?repos=` triggers.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{Backend, MK, Server, nonce, write};
use crate::on_both_backends;

/// A server process started for a test in a process group of its own,
/// which is killed with the test (`git daemon` forks the real daemon).
struct Daemon(Child);

impl Daemon {
    fn spawn(command: &mut Command) -> Daemon {
        use std::os::unix::process::CommandExt;
        Daemon(command.process_group(0).spawn().expect("the daemon starts"))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: kill has no memory effects; the group is the daemon's own.
        unsafe { libc::kill(-(self.0.id() as i32), libc::SIGKILL) };
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn wait_for_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on port {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[track_caller]
pub fn run(dir: &Path, program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "Ann Author")
        .env("GIT_AUTHOR_EMAIL", "ann@example.org")
        .env("GIT_COMMITTER_NAME", "Ann Author")
        .env("GIT_COMMITTER_EMAIL", "ann@example.org")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(output.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

pub fn commit(repo: &Path, file: &str, text: &str, message: &str) -> String {
    write(&repo.join(file), text);
    run(repo, "git", &["add", "-A"]);
    run(repo, "git", &["commit", "-q", "-m", message]);
    run(repo, "git", &["rev-parse", "HEAD"]).trim().to_owned()
}

/// The jobs read the fetched attributes, so that the builds show them.
fn release_nix(marker: &str) -> String {
    format!(
        r#"{{ nonce, src }}:
let {MK}
in {{
  app = mk "app" ''
    cat ${{src}}/VERSION > $out
    echo "rev ${{src.rev}} short ${{src.shortRev}} count ${{toString src.revCount}} {marker}" >> $out
  '';
}}
"#
    )
}

fn out_text(build: &Value) -> String {
    std::fs::read_to_string(build["buildoutputs"]["out"]["path"].as_str().unwrap()).unwrap()
}

fn git_inputs(backend: Backend) {
    let server = Server::start(backend);
    let repos = server.source_dir("repos");
    let repo = repos.join("widget");
    std::fs::create_dir_all(&repo).unwrap();
    run(&repo, "git", &["init", "-q", "-b", "main"]);
    write(&repo.join("release.nix"), &release_nix(""));
    let first = commit(&repo, "VERSION", "1.0\n", "version 1.0");
    let port = free_port();
    let daemon = Daemon::spawn(
        Command::new("git")
            .args(["daemon", "--reuseaddr", "--export-all", "--listen=127.0.0.1"])
            .arg(format!("--port={port}"))
            .arg(format!("--base-path={}", repos.display()))
            .arg(&repos)
            .stderr(Stdio::null()),
    );
    wait_for_port(port);
    let url = format!("git://127.0.0.1:{port}/widget");

    // A jobset on the daemon, checked every second.
    server.put("/project/vcs", &json!({ "displayname": "VCS" }));
    let put_jobset = |name: &str, value: &str, interval: i64| {
        let answer = server.put(
            &format!("/jobset/vcs/{name}"),
            &json!({
                "nixexprinput": "src",
                "nixexprpath": "release.nix",
                "checkinterval": interval,
                "inputs": {
                    "src": { "type": "git", "value": value },
                    "nonce": { "type": "string", "value": nonce() },
                },
            }),
        );
        assert_eq!(answer.status, 201, "{}", answer.body);
    };
    put_jobset("main", &format!("{url} main"), 1);
    let eval = server.wait_for_evals("vcs", "main", 1);
    let input = &eval["jobsetevalinputs"]["src"];
    assert_eq!((input["type"].as_str(), input["revision"].as_str()), (Some("git"), Some(first.as_str())));
    assert_eq!(input["uri"], url);
    let builds = server.wait_for_eval_builds(eval["id"].as_i64().unwrap());
    assert_eq!(out_text(&builds["app"]), format!("1.0\nrev {first} short {} count 1 \n", &first[..7]));

    // Nothing new: checked again, not evaluated again.
    server.wait_for("an unchanged check", Duration::from_secs(30), || {
        (server.get_json("/jobset/vcs/main")["lastcheckoutcome"] == "unchanged").then_some(())
    });
    assert_eq!(server.evals("vcs", "main").len(), 1);

    // A new commit is evaluated on the check interval, and built.
    let second = commit(&repo, "VERSION", "1.1\n", "version 1.1");
    let eval = server.wait_for_evals("vcs", "main", 2);
    assert_eq!(eval["jobsetevalinputs"]["src"]["revision"], second);
    let builds = server.wait_for_eval_builds(eval["id"].as_i64().unwrap());
    assert!(out_text(&builds["app"]).starts_with("1.1\nrev "));
    assert!(out_text(&builds["app"]).contains("count 2"));
    let changes = server.get_json(&format!("/eval/{}/changes", eval["id"]));
    assert_eq!(changes["src"]["from"], first);
    assert_eq!(changes["src"]["to"], second);
    assert_eq!(changes["src"]["changes"][0]["message"], "version 1.1");
    assert_eq!(changes["src"]["changes"][0]["email"], "ann@example.org");

    // A branch is honoured: commits elsewhere do not touch this jobset.
    run(&repo, "git", &["checkout", "-q", "-b", "dev"]);
    let dev = commit(&repo, "VERSION", "2.0-dev\n", "work in progress");
    run(&repo, "git", &["checkout", "-q", "main"]);
    put_jobset("dev", &format!("{url} dev"), 0);
    let dev_eval = server.wait_for_evals("vcs", "dev", 1);
    assert_eq!(dev_eval["jobsetevalinputs"]["src"]["revision"], dev);
    let dev_builds = server.wait_for_eval_builds(dev_eval["id"].as_i64().unwrap());
    assert!(out_text(&dev_builds["app"]).starts_with("2.0-dev\n"));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(server.evals("vcs", "main").len(), 2, "main did not follow dev");

    // A push hook names the repository: the dev jobset (no interval) is evaluated.
    let dev2 = {
        run(&repo, "git", &["checkout", "-q", "dev"]);
        let rev = commit(&repo, "VERSION", "2.0-rc\n", "release candidate");
        run(&repo, "git", &["checkout", "-q", "main"]);
        rev
    };
    let answer = server.post(&format!("/api/push?repos={url}"));
    let triggered = answer.json()["jobsetsTriggered"].clone();
    assert!(triggered.as_array().unwrap().contains(&json!("vcs:dev")), "{triggered}");
    let dev_eval = server.wait_for_evals("vcs", "dev", 2);
    assert_eq!(dev_eval["jobsetevalinputs"]["src"]["revision"], dev2);

    // The same repository by file URL, keeping .git when asked.
    write(&repo.join("release.nix"), "{ src, nonce }: { }\n");
    let file_url = format!("file://{}", repo.display());
    put_jobset("local", &format!("{file_url} main 1"), 0);
    let local = server.wait_for_evals("vcs", "local", 1);
    let path = local["jobsetevalinputs"]["src"]["path"].as_str().unwrap().to_owned();
    assert!(Path::new(&path).join(".git").is_dir(), "deepClone keeps .git in {path}");
    assert_eq!(local["jobsetevalinputs"]["src"]["revision"], second);

    // Bad values are refused when the jobset is saved, by the plugin.
    let answer = server.put(
        "/jobset/vcs/bad",
        &json!({ "nixexprinput": "src", "nixexprpath": "release.nix", "inputs": { "src": { "type": "git", "value": "--upload-pack=touch /tmp/x" } } }),
    );
    assert_eq!(answer.status, 400);
    assert!(answer.json()["error"].as_str().unwrap().contains("field ‘inputs.src’"), "{}", answer.body);
    // An unreachable repository is a fetch error on the jobset, nothing else.
    put_jobset("gone", "git://127.0.0.1:1/nothing", 0);
    let jobset = server.wait_for("the fetch error", Duration::from_secs(60), || {
        let jobset = server.get_json("/jobset/vcs/gone");
        (jobset["lastcheckoutcome"] == "fetch-failed").then_some(jobset)
    });
    assert!(jobset["fetcherrormsg"].as_str().unwrap().contains("input ‘src’"), "{jobset}");
    drop(daemon);
}

fn svn_inputs(backend: Backend) {
    let server = Server::start(backend);
    let root = server.source_dir("svn");
    run(&root, "svnadmin", &["create", "repo"]);
    let import = server.source_dir("import");
    write(
        &import.join("trunk/release.nix"),
        &format!(
            "{{ nonce, src }}:\nlet {MK}\nin {{ app = mk \"app\" \"cat ${{src}}/VERSION > $out; echo r${{toString src.rev}} >> $out\"; }}\n"
        ),
    );
    write(&import.join("trunk/VERSION"), "1.0\n");
    let repo_url = format!("file://{}/repo", root.display());
    run(&import, "svn", &["import", "-q", "-m", "initial import", ".", &repo_url]);
    let port = free_port();
    let daemon = Daemon::spawn(
        Command::new("svnserve")
            .args(["-d", "--foreground", "--listen-host", "127.0.0.1", "--listen-port"])
            .arg(port.to_string())
            .arg("-r")
            .arg(&root),
    );
    wait_for_port(port);
    let url = format!("svn://127.0.0.1:{port}/repo/trunk");

    server.put("/project/svn", &json!({ "displayname": "Subversion" }));
    let answer = server.put(
        "/jobset/svn/trunk",
        &json!({
            "nixexprinput": "src",
            "nixexprpath": "release.nix",
            "checkinterval": 1,
            "inputs": { "src": { "type": "svn", "value": url }, "nonce": { "type": "string", "value": nonce() } },
        }),
    );
    assert_eq!(answer.status, 201, "{}", answer.body);
    let eval = server.wait_for_evals("svn", "trunk", 1);
    assert_eq!(eval["jobsetevalinputs"]["src"]["revision"], "1");
    let builds = server.wait_for_eval_builds(eval["id"].as_i64().unwrap());
    assert_eq!(out_text(&builds["app"]), "1.0\nr1\n");

    // A commit, through a working copy: evaluated and built at revision 2.
    let work = server.source_dir("work");
    run(&work, "svn", &["checkout", "-q", &repo_url, "wc"]);
    write(&work.join("wc/trunk/VERSION"), "1.1\n");
    run(&work.join("wc"), "svn", &["commit", "-q", "-m", "version 1.1"]);
    let eval = server.wait_for_evals("svn", "trunk", 2);
    assert_eq!(eval["jobsetevalinputs"]["src"]["revision"], "2");
    let builds = server.wait_for_eval_builds(eval["id"].as_i64().unwrap());
    assert_eq!(out_text(&builds["app"]), "1.1\nr2\n");
    let changes = server.get_json(&format!("/eval/{}/changes", eval["id"]));
    assert_eq!(changes["src"]["changes"][0]["message"], "version 1.1");

    // Every check on the interval shows in /api/jobsets, inputs unchanged
    // or not: Hydra's clients wait for the next check by polling it.
    let last_checked = || {
        let jobsets = server.get_json("/api/jobsets?project=svn");
        let trunk = jobsets.as_array().unwrap().iter().find(|j| j["name"] == "trunk").cloned().unwrap();
        trunk["lastcheckedtime"].as_i64()
    };
    let checked = last_checked().expect("checked once at least");
    server.wait_for("a check of unchanged inputs", Duration::from_secs(60), || last_checked().filter(|t| *t > checked));
    assert_eq!(server.get_json("/jobset/svn/trunk/evals")["evals"].as_array().unwrap().len(), 2, "nothing changed");

    // A fixed revision stays there.
    let answer = server.put(
        "/jobset/svn/pinned",
        &json!({
            "nixexprinput": "src",
            "nixexprpath": "release.nix",
            "checkinterval": 0,
            "inputs": { "src": { "type": "svn", "value": format!("{url} 1") }, "nonce": { "type": "string", "value": nonce() } },
        }),
    );
    assert_eq!(answer.status, 201);
    let pinned = server.wait_for_evals("svn", "pinned", 1);
    assert_eq!(pinned["jobsetevalinputs"]["src"]["revision"], "1");
    drop(daemon);
}

on_both_backends!(git_inputs);
on_both_backends!(svn_inputs);
