//! A multi-user Nix where the server's user is not trusted (the usual
//! laptop): a real `nix-daemon` (as root, on a store of the test's own)
//! and the server running as `nobody`. The local machine builds through
//! the daemon without trust — the derivations already in the store — and
//! the server says once what that gives up; its GC roots go where the
//! daemon lets that user keep them.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::{Backend, MK, NIX_CONFIG, Options, Server, die_with_parent, nonce, write};

const NOBODY: (u32, u32) = (65534, 65534);

/// A `nix-daemon` on a store of its own, killed with the test.
struct Daemon {
    child: Child,
    dir: tempfile::TempDir,
}

impl Daemon {
    fn start() -> Daemon {
        let dir = tempfile::Builder::new().prefix("orthrus-daemon-").tempdir().unwrap();
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let mut command = Command::new("nix-daemon");
        command
            .envs(Daemon::env_of(dir.path()))
            .env("NIX_CONFIG", NIX_CONFIG)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        die_with_parent(&mut command);
        let child = command.spawn().expect("nix-daemon is installed with Nix");
        let daemon = Daemon { child, dir };
        let socket = daemon.dir.path().join("state/daemon-socket/socket");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            assert!(Instant::now() < deadline, "nix-daemon did not listen at {}", socket.display());
            std::thread::sleep(Duration::from_millis(50));
        }
        daemon
    }

    fn env_of(dir: &std::path::Path) -> Vec<(String, String)> {
        [("NIX_STORE_DIR", "store"), ("NIX_STATE_DIR", "state"), ("NIX_LOG_DIR", "log")]
            .into_iter()
            .map(|(name, sub)| (name.to_owned(), dir.join(sub).display().to_string()))
            .collect()
    }

    fn env(&self) -> Vec<(String, String)> {
        Daemon::env_of(self.dir.path())
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn untrusted_user_builds_through_the_daemon() {
    let daemon = Daemon::start();
    let server = Server::start_with(
        Backend::Sqlite,
        Options { env: daemon.env(), run_as: Some(NOBODY), gc_config: Some(String::new()), ..Options::default() },
    );
    let log = server.log();
    assert!(log.contains("the Nix daemon does not trust user ‘nobody’"), "{log}");
    let roots = daemon.state().join("gcroots/per-user/nobody/orthrus");
    assert!(log.contains(&format!("GC roots kept in {}", roots.display())), "{log}");

    let src = server.source_dir("src");
    write(
        &src.join("release.nix"),
        &format!(
            "{{ nonce }}:\nlet {MK}\nin rec {{\n  dep = mk \"dep\" \"echo dependency > $out\";\n  \
             app = mk \"app\" \"echo building app; cat ${{dep}} > $out\";\n  \
             broken = mk \"broken\" \"echo about to fail; exit 3\";\n  \
             slow = mk \"slow\" \"echo started; sleep 60; echo > $out\" // {{ meta.timeout = 2; }};\n}}\n"
        ),
    );
    server.create_jobset(
        "daemon",
        "main",
        &src,
        "release.nix",
        json!({ "nonce": { "type": "string", "value": nonce() } }),
    );
    let eval = server.wait_for_evals("daemon", "main", 1);
    let builds = server.wait_for_eval_builds(eval["id"].as_i64().unwrap());
    for job in ["dep", "app"] {
        assert_eq!(builds[job]["buildstatus"], 0, "{job}: {}\n{}", builds[job], server.log());
        let out = builds[job]["buildoutputs"]["out"]["path"].as_str().unwrap();
        assert!(std::path::Path::new(out).exists(), "{out}");
        assert!(roots.join(std::path::Path::new(out).file_name().unwrap()).exists(), "{out} is rooted");
    }
    let steps = server.get_json(&format!("/build/{}/steps", builds["broken"]["id"]));
    assert_eq!(builds["broken"]["buildstatus"], 1, "{}: {steps}", builds["broken"]);
    // The daemon takes no time limit from an untrusted user: the server
    // keeps it, and stops the build.
    assert_eq!(builds["slow"]["buildstatus"], 7, "{}", builds["slow"]);
    let app = builds["app"]["id"].as_i64().unwrap();
    let log = server.get(&format!("/build/{app}/log/raw"));
    assert!(log.body.contains("building app"), "{}", log.body);
    let broken = builds["broken"]["id"].as_i64().unwrap();
    let log = server.get(&format!("/build/{broken}/log/raw"));
    assert!(log.body.contains("about to fail"), "{}", log.body);

    let doctor = server.cli(&["doctor"], None);
    let report = String::from_utf8_lossy(&doctor.stdout);
    assert!(doctor.status.success(), "{report}");
    assert!(report.contains("not a trusted user"), "{report}");
    assert!(report.contains("derivations in the store, built by the daemon"), "{report}");
}
