//! Hostile plugins, built from `tests/plugins` and loaded from the plugin
//! directory: an endless loop, a memory bomb, a panic, an ungranted
//! program, attempts to leave the scratch directory. Each fails its own
//! fetch with a clear error on its jobset; the server keeps serving and
//! building.

use std::time::Duration;

use serde_json::json;

use crate::harness::{Backend, MK, Options, Server, nonce, test_plugin, write};
use crate::on_both_backends;

fn hostile_plugins(backend: Backend) {
    let plugins = tempfile::tempdir().unwrap();
    std::fs::copy(test_plugin("hostile"), plugins.path().join("hostile.wasm")).unwrap();
    std::fs::copy(test_plugin("smuggler"), plugins.path().join("smuggler.wasm")).unwrap();
    let server = Server::start_with(
        backend,
        Options {
            extra_tables: format!(
                "[plugins]\ndir = \"{}\"\ntimeout_secs = 3\nmemory_mb = 64\n\n[plugins.grants.hostile]\nprograms = [\"true\"]\nadd_to_store = true\n\n\
                 [plugins.grants.smuggler]\nprograms = [\"sh\"]\n",
                plugins.path().display()
            ),
            ..Options::default()
        },
    );
    // What it asks for, and what it got.
    let listing = server.cli_ok(&["plugin", "list"], None);
    assert!(listing.contains("hostile 0.1.0"), "{listing}");
    assert!(listing.contains("asks for: run-program(rm), run-program(true), add-to-store, key-value"), "{listing}");
    assert!(listing.contains("granted: run-program(true), add-to-store\n"), "{listing}");
    // The same on the admin's page: what was asked for and not granted is struck out.
    let page = server.get_page("/admin/plugins");
    let row = page.split("<tr>").find(|row| row.contains("<strong>hostile</strong>")).expect("a row for hostile");
    for denied in ["run-program(rm)", "key-value"] {
        assert!(row.contains(&format!("<code class=\"denied\">{denied}</code>")), "{denied}: {row}");
    }
    assert!(row.contains("<code class=\"cap\">run-program(true)</code>"), "{row}");
    let anonymous = server.request_with(
        &crate::harness::Identity::Anonymous,
        "GET",
        "/admin/plugins",
        None,
        &[("Accept", "text/html")],
    );
    assert_eq!(anonymous.status, 401, "admins only");
    let inspected = server.cli_ok(&["plugin", "inspect", plugins.path().join("hostile.wasm").to_str().unwrap()], None);
    assert!(inspected.contains("handles: hostile"), "{inspected}");
    // A renderer that imports the process interface is not loaded, though
    // the operator granted it a program: a renderer's world has no programs.
    let smuggled = "a renderer may import only what its world imports";
    assert!(listing.contains(smuggled) && listing.contains("orthrus:plugin/process"), "{listing}");
    assert!(!listing.contains("smuggler 0.1.0"), "{listing}");
    let inspected = server.cli(&["plugin", "inspect", plugins.path().join("smuggler.wasm").to_str().unwrap()], None);
    let said = String::from_utf8_lossy(&inspected.stderr);
    assert!(!inspected.status.success() && said.contains(smuggled), "{said}");

    // The trap for the link attack: a link out of the plugin's scratch directory.
    let scratch = server.dir.path().join("data/plugins/hostile");
    std::fs::create_dir_all(&scratch).unwrap();
    std::os::unix::fs::symlink("/etc", scratch.join("link")).unwrap();

    let src = server.source_dir("src");
    write(
        &src.join("release.nix"),
        &format!("{{ nonce, ... }}:\nlet {MK}\nin {{ job = mk \"job\" \"echo healthy > $out\"; }}\n"),
    );
    let attacks = [
        ("loop", "did not finish within 3 seconds"),
        ("bomb", "ran out of memory"),
        ("trap", "panicked"),
        ("ungranted", "may not run \"rm\""),
        ("escape", "cannot read /etc/passwd"),
        ("escape-dir", "not a path inside the scratch directory"),
        ("escape-link", "leads outside the scratch directory"),
        ("kv", "may not use a key-value store"),
    ];
    server.put("/project/hostile", &json!({ "displayname": "Hostile" }));
    for (attack, _) in attacks {
        let answer = server.put(
            &format!("/jobset/hostile/{attack}"),
            &json!({
                "nixexprinput": "src",
                "nixexprpath": "release.nix",
                "checkinterval": 0,
                "inputs": {
                    "src": { "type": "path", "value": src.display().to_string() },
                    "evil": { "type": "hostile", "value": attack },
                    "nonce": { "type": "string", "value": nonce() },
                },
            }),
        );
        assert_eq!(answer.status, 201, "{attack}: {}", answer.body);
    }
    // A healthy jobset beside them.
    server.create_jobset(
        "healthy",
        "main",
        &src,
        "release.nix",
        json!({ "nonce": { "type": "string", "value": nonce() } }),
    );

    for (attack, expected) in attacks {
        let jobset = server.wait_for(&format!("the {attack} attack to fail"), Duration::from_secs(90), || {
            let jobset = server.get_json(&format!("/jobset/hostile/{attack}"));
            (jobset["lastcheckoutcome"] == "fetch-failed").then_some(jobset)
        });
        let message = jobset["fetcherrormsg"].as_str().unwrap();
        assert!(message.contains("input ‘evil’") && message.contains(expected), "{attack}: {message}");
        assert!(!message.contains("root:"), "{attack} read a file it should not: {message}");
        assert!(server.evals("hostile", attack).is_empty());
    }
    let eval = server.wait_for_evals("healthy", "main", 1);
    let builds = server.wait_for_eval_builds(eval["id"].as_i64().unwrap());
    assert_eq!(builds["job"]["buildstatus"], 0);
    assert_eq!(server.get("/").status, 200, "the server still serves");
    assert!(!std::path::Path::new("/tmp/nothing-was-removed").exists());

    // And it tries again, and fails again, at the next trigger: nothing is stuck.
    server.push("hostile", "trap", false);
    server.wait_for("a second failure", Duration::from_secs(60), || {
        let jobset = server.get_json("/jobset/hostile/trap");
        (jobset["triggertime"].is_null() && jobset["lastcheckoutcome"] == "fetch-failed").then_some(())
    });
}

on_both_backends!(hostile_plugins);
