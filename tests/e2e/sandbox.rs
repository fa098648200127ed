//! What plugins are granted, and no more: programs run in a box (every
//! escape a granted git, svn, tar or curl offers is tried, and nothing
//! happens outside the box), a private repository over SSH with credentials
//! the box mounts, local repositories and flakes outside the allowed roots
//! (and the server's own files inside them) refused, and plugins that
//! claim a built-in's name or type not loaded.

use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{Backend, MK, Options, Server, nonce, test_plugin, write};
use crate::on_both_backends;
use crate::sshd::Sshd;
use crate::vcs::{commit, run};

/// A jobset whose inputs are `inputs` plus a path input with a trivial job.
fn jobset_with(server: &Server, project: &str, jobset: &str, inputs: Value) -> crate::harness::Answer {
    let src = server.source_dir("src");
    write(
        &src.join("release.nix"),
        &format!("{{ nonce ? \"\", ... }}:\nlet {MK}\nin {{ job = mk \"job\" \"echo > $out\"; }}\n"),
    );
    let mut all = json!({ "src": { "type": "path", "value": src.display().to_string() } });
    for (name, input) in inputs.as_object().unwrap() {
        all[name] = input.clone();
    }
    server.put(
        &format!("/jobset/{project}/{jobset}"),
        &json!({ "nixexprinput": "src", "nixexprpath": "release.nix", "checkinterval": 0, "inputs": all }),
    )
}

/// The fetch error a jobset's check ended with.
fn wait_for_fetch_error(server: &Server, project: &str, jobset: &str, containing: &str) -> String {
    server.wait_for(
        &format!("{project}:{jobset} to fail fetching with {containing:?}"),
        Duration::from_secs(120),
        || {
            let message = server.get_json(&format!("/jobset/{project}/{jobset}"))["fetcherrormsg"].as_str()?.to_owned();
            message.contains(containing).then_some(message)
        },
    )
}

/// Every escape of the issue, through programs the plugin was granted.
fn programs_run_boxed(backend: Backend) {
    let plugins = tempfile::tempdir().unwrap();
    std::fs::copy(test_plugin("escaper"), plugins.path().join("escaper.wasm")).unwrap();
    let config_secret = format!("config-secret-{}", nonce());
    let server = Server::start_with(
        backend,
        Options {
            extra_tables: format!(
                "[webhooks]\ngithub_secret = \"{config_secret}\"\n\n[plugins]\ndir = \"{}\"\n\n\
                 [plugins.grants.escaper]\nprograms = [\"git\", \"svn\", \"tar\", \"curl\"]\n",
                plugins.path().display()
            ),
            ..Options::default()
        },
    );
    let listing = server.cli_ok(&["plugin", "list"], None);
    assert!(listing.contains("programs run for plugins: in a bubblewrap sandbox"), "{listing}");
    // The server's own secrets, under the allowed root the tests use.
    let data_secret = format!("data-secret-{}", nonce());
    let secret_file = server.dir.path().join("data/secret.txt");
    write(&secret_file, &data_secret);
    let shadow = std::fs::read_to_string("/etc/shadow").unwrap_or_default();
    let shadow_root = shadow.lines().next().unwrap_or("root:").to_owned();

    server.put("/project/escape", &json!({ "displayname": "escape" }));
    let attempts = [
        "git-ssh-command",
        "git-upload-pack",
        "git-fsmonitor",
        "git-global-config",
        "svn-tunnel",
        "tar-to-command",
        "curl-file",
    ];
    let mut markers = Vec::new();
    for (i, attempt) in attempts.iter().enumerate() {
        // Half the marks aimed at a directory the box sees read-only, half at /tmp.
        let marker = if i % 2 == 0 {
            server.dir.path().join(format!("escaped-{attempt}"))
        } else {
            std::env::temp_dir().join(format!("orthrus-escaped-{attempt}-{}", nonce()))
        };
        let value = format!("{attempt} {} {}", marker.display(), secret_file.display());
        let answer = jobset_with(&server, "escape", attempt, json!({ "evil": { "type": "escaper", "value": value } }));
        assert_eq!(answer.status, 201, "{}", answer.body);
        markers.push(marker);
    }
    // The configuration file, read through curl.
    let value =
        format!("curl-file {} {}", server.dir.path().join("escaped-config").display(), server.config_path.display());
    let answer = jobset_with(&server, "escape", "config", json!({ "evil": { "type": "escaper", "value": value } }));
    assert_eq!(answer.status, 201, "{}", answer.body);
    // The network, which this plugin was not granted: the server itself.
    let value = format!("curl-network /tmp/unused {}/", server.url);
    let answer = jobset_with(&server, "escape", "network", json!({ "evil": { "type": "escaper", "value": value } }));
    assert_eq!(answer.status, 201, "{}", answer.body);

    for attempt in attempts.iter().chain(&["config", "network"]) {
        let said = wait_for_fetch_error(&server, "escape", attempt, "done:");
        eprintln!("{attempt}: {said}");
        for secret in [&data_secret, &config_secret, &shadow_root] {
            assert!(!said.contains(secret.as_str()), "{attempt} read a secret: {said}");
        }
        assert!(!said.contains("<html"), "{attempt} reached the server: {said}");
    }
    for marker in &markers {
        assert!(!marker.exists(), "{} was created outside the box", marker.display());
    }
    // Each program did run (it is the box that stopped it, not a refusal).
    let said = wait_for_fetch_error(&server, "escape", "git-fsmonitor", "done:");
    assert!(said.contains("[status "), "{said}");
}

/// A private repository over SSH: the key and known hosts the grant names
/// are mounted in git's box, and git uses them.
fn private_repository_over_ssh() {
    let sshd = Sshd::start();
    let repo = sshd.dir().join("private.git");
    let work = sshd.dir().join("work");
    std::fs::create_dir_all(&work).unwrap();
    run(&work, "git", &["init", "-q", "-b", "main"]);
    let marker = format!("private-{}", nonce());
    let rev = commit(&work, "release.nix", &release_nix(&marker), "first");
    run(sshd.dir(), "git", &["clone", "-q", "--bare", work.to_str().unwrap(), repo.to_str().unwrap()]);

    let server = Server::start_with(
        Backend::Sqlite,
        Options {
            extra_tables: format!(
                "[plugins.grants.\"builtin:git\"]\nprograms = [\"git\"]\nadd_to_store = true\nlog = true\nnetwork = true\n\
                 ssh_key_file = \"{}\"\nssh_known_hosts_file = \"{}\"\n",
                sshd.client_key().display(),
                sshd.known_hosts().display()
            ),
            ..Options::default()
        },
    );
    let url = format!("ssh://{}@127.0.0.1:{}{}", Sshd::user(), sshd.port(), repo.display());
    server.put("/project/private", &json!({ "displayname": "private" }));
    let answer = server.put(
        "/jobset/private/main",
        &json!({
            "nixexprinput": "src", "nixexprpath": "release.nix", "checkinterval": 0,
            "inputs": { "src": { "type": "git", "value": format!("{url} main") } },
        }),
    );
    assert_eq!(answer.status, 201, "{}", answer.body);
    let eval = server.wait_for_evals("private", "main", 1);
    assert_eq!(eval["jobsetevalinputs"]["src"]["revision"], rev, "{eval}");
    let builds = server.wait_for_eval_builds(eval["id"].as_i64().unwrap());
    let out = builds["job"]["buildoutputs"]["out"]["path"].as_str().unwrap();
    assert_eq!(std::fs::read_to_string(out).unwrap().trim(), marker);
}

fn release_nix(marker: &str) -> String {
    format!("{{ ... }}:\nlet nonce = \"{marker}\";\n{MK}\nin {{ job = mk \"job\" \"echo {marker} > $out\"; }}\n")
}

/// Repositories and flakes on this machine: only under the allowed roots,
/// and never the server's own files.
fn local_files_outside_the_roots(backend: Backend) {
    let server = Server::start(backend);
    let outside = tempfile::tempdir().unwrap();
    let repo = outside.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    run(&repo, "git", &["init", "-q", "-b", "main"]);
    commit(&repo, "release.nix", &release_nix("outside"), "first");
    server.put("/project/local", &json!({ "displayname": "local" }));

    let data = server.dir.path().join("data");
    let refused = [
        ("git", format!("{} main", repo.display()), "not under"),
        ("git", format!("file://{}", repo.display()), "not under"),
        ("svn", format!("file://{}", repo.display()), "not under"),
        ("path", data.display().to_string(), "is among the server's own files"),
        ("path", server.config_path.display().to_string(), "is among the server's own files"),
        ("git", format!("file://{}/plugins", data.display()), "is among the server's own files"),
        ("path", server.dir.path().display().to_string(), "holds the server's own files"),
    ];
    for (i, (kind, value, reason)) in refused.iter().enumerate() {
        let answer =
            jobset_with(&server, "local", &format!("refused-{i}"), json!({ "repo": { "type": kind, "value": value } }));
        assert_eq!(answer.status, 400, "{kind} {value}: {}", answer.body);
        let error = answer.json()["error"].as_str().unwrap().to_owned();
        assert!(error.contains("inputs.repo") && error.contains(reason), "{kind} {value}: {error}");
    }
    let answer = server.put(
        "/jobset/local/flake",
        &json!({ "type": 1, "flake": format!("git+file://{}", repo.display()), "checkinterval": 0 }),
    );
    assert_eq!(answer.status, 400, "{}", answer.body);
    assert!(answer.json()["error"].as_str().unwrap().contains("not under"), "{}", answer.body);

    // A flake inside the roots whose lock names a directory outside them:
    // refused from its lock, before Nix copies that directory anywhere.
    let secret_dir = outside.path().join("secret");
    write(&secret_dir.join("key"), &format!("secret {}", nonce()));
    let nix = |args: &[&str]| -> String {
        let output = Command::new("nix")
            .args(["--extra-experimental-features", "nix-command"])
            .args(args)
            .env("NIX_CONFIG", crate::harness::NIX_CONFIG)
            .output()
            .unwrap();
        assert!(output.status.success(), "nix {args:?}: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).unwrap().trim().to_owned()
    };
    let secret = secret_dir.display().to_string();
    let nar_hash = nix(&["hash", "path", &secret]);
    let base32 = nix(&["hash", "path", "--base32", &secret]);
    let would_be = String::from_utf8(
        Command::new("nix-store")
            .args(["--print-fixed-path", "--recursive", "sha256", &base32, "source"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .to_owned();
    let flake = server.source_dir("flakes/stealing");
    run(&flake, "git", &["init", "-q", "-b", "main"]);
    write(
        &flake.join("flake.lock"),
        &json!({
            "nodes": {
                "root": { "inputs": { "secret": "secret" } },
                "secret": {
                    "flake": false,
                    "locked": { "type": "path", "path": secret, "narHash": nar_hash, "lastModified": 1 },
                    "original": { "type": "path", "path": secret },
                },
            },
            "root": "root",
            "version": 7,
        })
        .to_string(),
    );
    commit(
        &flake,
        "flake.nix",
        &format!(
            "{{ inputs.secret = {{ url = \"path:{secret}\"; flake = false; }}; outputs = {{ self, secret }}: {{ }}; }}\n"
        ),
        "a flake that reads a secret",
    );
    let answer = server.put(
        "/jobset/local/stealing",
        &json!({ "type": 1, "flake": format!("git+file://{}", flake.display()), "checkinterval": 0 }),
    );
    assert_eq!(answer.status, 201, "{}", answer.body);
    let error = wait_for_fetch_error(&server, "local", "stealing", "is refused");
    assert!(error.contains(&secret) && error.contains("not under"), "{error}");
    let valid = Command::new("nix-store")
        .args(["--check-validity", &would_be])
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(!valid.success(), "{would_be} was copied into the store");
}

/// A `.wasm` that calls itself `github-status` and handles `git` is not
/// loaded, by any file name; the built-in keeps its grant.
fn impostors_are_not_loaded() {
    let plugins = tempfile::tempdir().unwrap();
    let impostor = test_plugin("impostor");
    std::fs::copy(&impostor, plugins.path().join("github-status.wasm")).unwrap();
    std::fs::copy(&impostor, plugins.path().join("thief.wasm")).unwrap();
    let tables = |extra: &str| {
        format!(
            "[plugins]\ndir = \"{}\"\n\n[plugins.grants.github-status]\nhttp = [\"api.github.com\"]\n{extra}\n\n\
             [[notifiers]]\nplugin = \"github-status\"\nsettings = {{ token = \"the-token\" }}\n",
            plugins.path().display()
        )
    };
    let server = Server::start_with(Backend::Sqlite, Options { extra_tables: tables(""), ..Options::default() });
    let listing = server.cli_ok(&["plugin", "list"], None);
    assert!(listing.contains("builtin:github-status"), "{listing}");
    assert!(listing.contains("it would take the name of the built-in plugin ‘builtin:github-status’"), "{listing}");
    assert!(listing.contains("it calls itself ‘github-status’ but its file is thief.wasm"), "{listing}");
    let builtin = listing
        .split("builtin:github-status ")
        .nth(1)
        .and_then(|rest| rest.split("sha256").next())
        .unwrap_or_else(|| panic!("{listing}"));
    assert!(builtin.contains("http(api.github.com)"), "the built-in keeps its grant: {builtin}");
    assert!(!listing.contains("6.6.6"), "the impostor is not loaded: {listing}");
    let page = server.get_page("/admin/plugins");
    assert!(page.contains("it would take the name of the built-in plugin"), "the page shows why");

    // Allowed to replace the built-in notifier, it still may not take git.
    let config = server.dir.path().join("replacing.toml");
    let text = std::fs::read_to_string(&server.config_path).unwrap().replace(
        "http = [\"api.github.com\"]\n",
        "http = [\"api.github.com\"]\nreplaces = \"builtin:github-status\"\n",
    );
    write(&config, &text);
    let output = Command::new(env!("CARGO_BIN_EXE_orthrus"))
        .args(["plugin", "list", "--config"])
        .arg(&config)
        .env("NIX_CONFIG", crate::harness::NIX_CONFIG)
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&output.stdout);
    assert!(listing.contains("handles inputs of type ‘git’, which plugin ‘builtin:git’ handles already"), "{listing}");
    // git inputs are still the built-in git's.
    let repo = server.source_dir("repo");
    run(&repo, "git", &["init", "-q", "-b", "main"]);
    commit(&repo, "release.nix", &release_nix("genuine"), "first");
    server.put("/project/git", &json!({ "displayname": "git" }));
    let answer = server.put(
        "/jobset/git/main",
        &json!({
            "nixexprinput": "src", "nixexprpath": "release.nix", "checkinterval": 0,
            "inputs": { "src": { "type": "git", "value": format!("file://{}", repo.display()) } },
        }),
    );
    assert_eq!(answer.status, 201, "{}", answer.body);
    server.wait_for_evals("git", "main", 1);
}

/// Where no sandbox can be made, granted programs are refused, and the
/// operator is told why.
fn no_sandbox_no_programs() {
    let server = Server::start_with(
        Backend::Sqlite,
        Options { extra_tables: "[plugins]\nbwrap = \"/nonexistent/bwrap\"\n".into(), ..Options::default() },
    );
    let listing = server.cli_ok(&["plugin", "list"], None);
    assert!(
        listing.contains("programs run for plugins: refused") && listing.contains("/nonexistent/bwrap"),
        "{listing}"
    );
    let repo = server.source_dir("repo");
    run(&repo, "git", &["init", "-q", "-b", "main"]);
    commit(&repo, "release.nix", &release_nix("boxless"), "first");
    server.put("/project/boxless", &json!({ "displayname": "boxless" }));
    let _ = server.put(
        "/jobset/boxless/main",
        &json!({
            "nixexprinput": "src", "nixexprpath": "release.nix", "checkinterval": 0,
            "inputs": { "src": { "type": "git", "value": format!("file://{}", repo.display()) } },
        }),
    );
    let error = wait_for_fetch_error(&server, "boxless", "main", "programs are refused");
    assert!(error.contains("not installed"), "{error}");
    // Nothing ran: git made no clone.
    let clones = server.dir.path().join("data/plugins/builtin/git/repos");
    assert!(std::fs::read_dir(&clones).map(|d| d.count()).unwrap_or(0) == 0, "git ran in {}", clones.display());
}

on_both_backends!(programs_run_boxed);
on_both_backends!(local_files_outside_the_roots);

#[test]
fn private_repository() {
    private_repository_over_ssh();
}

#[test]
fn impostors() {
    impostors_are_not_loaded();
}

#[test]
fn fail_closed() {
    no_sandbox_no_programs();
}
