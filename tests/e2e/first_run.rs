//! A first run as a newcomer makes it: `orthrus serve --demo` with no
//! `NIX_CONFIG` at all, on a Nix that runs as root without a daemon and
//! without its build users group (Debian's `nix-bin` as installed), builds
//! the demo and says once what it did about the missing group; `orthrus
//! doctor` shows it. Then Nix goes missing: the web still answers, and the
//! status, the build pages, the log and `doctor` say in one sentence what
//! to install.

use std::process::Command;
use std::time::Duration;

use crate::harness::{Backend, Options, Server};

fn group_exists(name: &str) -> bool {
    Command::new("getent").args(["group", name]).output().is_ok_and(|o| o.status.success())
}

#[test]
fn demo_builds_on_plain_nix_then_says_what_is_missing() {
    // No binary cache (there is no network here); nothing else is set. On a
    // machine that has the `nixbld` group, a group that does not exist
    // stands for it.
    let mut settings = "[nix.settings]\nsubstituters = \"\"\n".to_owned();
    if group_exists("nixbld") {
        settings.push_str("build-users-group = \"orthrus-no-such-group\"\n");
    }
    let mut server = Server::start_with(
        Backend::Sqlite,
        Options { nix_config: None, serve_args: vec!["--demo".into()], extra_tables: settings, ..Options::default() },
    );
    let eval = server.wait_for_evals("demo", "main", 1);
    let builds = server.wait_for_eval_builds(eval["id"].as_i64().unwrap());
    assert_eq!(builds.len(), 3, "{builds:?}");
    for (job, build) in &builds {
        assert_eq!(build["buildstatus"], 0, "{job}: {build}\n{}", server.log());
    }
    let log = server.log();
    let said = log.matches("(build-users-group) does not exist").count();
    assert_eq!(said, 1, "said once in the log:\n{log}");
    assert!(log.contains("build-users-group = \"\""), "{log}");

    let doctor = server.cli(&["doctor"], None);
    let report = String::from_utf8_lossy(&doctor.stdout);
    assert!(doctor.status.success(), "{report}{}", String::from_utf8_lossy(&doctor.stderr));
    assert!(report.contains("build-users-group = \"\""), "{report}");
    assert!(report.contains("builds can run"), "{report}");
    assert!(report.contains("setting sandbox"), "the settings in effect are shown: {report}");

    // Nix goes missing.
    server.kill9();
    let nowhere = server.source_dir("no-nix-here");
    let config = std::fs::read_to_string(&server.config_path).unwrap();
    std::fs::write(&server.config_path, format!("{config}\n[nix]\nbin_dir = \"{}\"\n", nowhere.display())).unwrap();
    server.restart();

    assert_eq!(server.get("/").status, 200, "the web still answers");
    let status = server.get("/status");
    assert_eq!(status.status, 503, "{}", status.body);
    let sentence = status.json()["error"].as_str().unwrap().to_owned();
    assert!(sentence.contains("Nix is not installed") && sentence.contains("apt install nix-bin"), "{sentence}");
    let page = server.get_page("/status");
    assert!(page.contains("Nothing is evaluated or built here"), "{page}");
    let gate = &builds["release"];
    let page = server.get_page(&format!("/build/{}", gate["id"]));
    assert!(page.contains("Nix is not installed"), "{page}");
    // The finished builds are still served.
    assert_eq!(server.get_json(&format!("/build/{}", gate["id"]))["buildstatus"], 0);
    server.wait_for("the log to say it", Duration::from_secs(10), || {
        server.log().contains("nothing is evaluated or built: Nix is not installed").then_some(())
    });

    let doctor = server.cli(&["doctor"], None);
    let report = String::from_utf8_lossy(&doctor.stdout);
    assert!(!doctor.status.success(), "doctor fails without Nix: {report}");
    assert!(report.contains("Nix is not installed"), "{report}");
}
