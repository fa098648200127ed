//! Publishing to binary caches: a successful build's outputs and their
//! closure land in `file://` caches (xz-compressed and uncompressed),
//! signed, with the build's log; and the real Nix reads them back — `nix
//! path-info`, `nix copy --from` into an empty store with signatures
//! checked (and refused under another key), `nix-store --realise` with the
//! cache as substituter, `nix log`.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::json;

use crate::harness::{Backend, Identity, MK, Options, Server, nix, nix_ok, nonce, write};

fn key_pair(dir: &Path, name: &str) -> (String, String) {
    let (secret, public) = (dir.join(format!("{name}.secret")), dir.join(format!("{name}.public")));
    nix_ok(&["nix-store", "--generate-binary-cache-key", name, secret.to_str().unwrap(), public.to_str().unwrap()]);
    (secret.display().to_string(), std::fs::read_to_string(public).unwrap().trim().to_owned())
}

const NIX_COMMAND: [&str; 3] = ["nix", "--extra-experimental-features", "nix-command"];

#[test]
fn builds_are_published_to_file_caches() {
    let dir = tempfile::tempdir().unwrap();
    let (secret, public_key) = key_pair(dir.path(), "orthrus-publish-1");
    let (_, other_key) = key_pair(dir.path(), "someone-else-1");
    let (xz, plain) = (dir.path().join("cache-xz"), dir.path().join("cache-plain"));
    let server = Server::start_with(
        Backend::Sqlite,
        Options {
            extra_tables: format!(
                "[binary_cache]\nsecret_key_file = \"{secret}\"\n\n\
                 [[binary_cache.publish]]\nuri = \"file://{}?compression=xz\"\n\n\
                 [[binary_cache.publish]]\nuri = \"file://{}?compression=none\"\nconcurrency = 1\n",
                xz.display(),
                plain.display()
            ),
            ..Options::default()
        },
    );
    let src = server.source_dir("src");
    write(
        &src.join("release.nix"),
        &format!(
            r#"{{ nonce }}:
let {MK}
in rec {{
  lib = mk "lib" "mkdir $out; echo 'the library' > $out/lib.txt";
  app = mk "app" "echo building-the-app-now; mkdir -p $out/bin; echo 'cat ${{lib}}/lib.txt' > $out/bin/app";
  broken = mk "broken" "echo no; exit 1";
}}
"#
        ),
    );
    server.create_jobset(
        "pub",
        "main",
        &src,
        "release.nix",
        json!({ "nonce": { "type": "string", "value": nonce() } }),
    );
    let eval = server.wait_for_evals("pub", "main", 1);
    let builds = server.wait_for_eval_builds(eval["id"].as_i64().unwrap());
    let out = |job: &str| builds[job]["buildoutputs"]["out"]["path"].as_str().unwrap().to_owned();
    let (app, lib) = (out("app"), out("lib"));
    let hash = |path: &str| path.trim_start_matches("/nix/store/")[..32].to_owned();

    // Published after the build is recorded, through the outbox: both
    // publishers show on /api/notifiers and catch up.
    server.wait_for("both caches to have the app", Duration::from_secs(60), || {
        [&xz, &plain].iter().all(|cache| cache.join(format!("{}.narinfo", hash(&app))).exists()).then_some(())
    });
    let notifiers = server.get_json("/api/notifiers");
    let publishers: Vec<&serde_json::Value> =
        notifiers.as_array().unwrap().iter().filter(|n| n["name"].as_str().unwrap().starts_with("publish:")).collect();
    assert_eq!(publishers.len(), 2, "{notifiers}");

    for (cache, compression) in [(&xz, "xz"), (&plain, "none")] {
        let store = format!("file://{}", cache.display());
        let narinfo = std::fs::read_to_string(cache.join(format!("{}.narinfo", hash(&app)))).unwrap();
        assert!(narinfo.contains(&format!("Compression: {compression}")), "{narinfo}");
        assert!(narinfo.contains("Sig: orthrus-publish-1:"), "{narinfo}");
        assert!(cache.join(format!("{}.narinfo", hash(&lib))).exists(), "the closure is published");
        assert!(std::fs::read_to_string(cache.join("nix-cache-info")).unwrap().contains("StoreDir: /nix/store"));
        // The failed build published nothing.
        let broken = builds["broken"]["buildoutputs"]["out"]["path"].as_str().unwrap_or_default().to_owned();
        if !broken.is_empty() {
            assert!(!cache.join(format!("{}.narinfo", hash(&broken))).exists());
        }

        // Nix reads it: path-info, a copy into an empty store with the
        // signatures checked, and the build's log.
        let info = nix_ok(&[NIX_COMMAND[0], NIX_COMMAND[1], NIX_COMMAND[2], "path-info", "--store", &store, &app]);
        assert_eq!(info.trim(), app);
        let copied = dir.path().join(format!("store-{compression}"));
        let mut copy = NIX_COMMAND.to_vec();
        copy.extend(["copy", "--from", &store, "--to", copied.to_str().unwrap()]);
        copy.extend(["--option", "trusted-public-keys", &public_key, &app]);
        nix_ok(&copy);
        let file = copied.join(app.trim_start_matches('/')).join("bin/app");
        assert!(std::fs::read_to_string(&file).unwrap().contains(&lib), "the app came over");
        assert!(copied.join(lib.trim_start_matches('/')).join("lib.txt").exists(), "with its closure");
        let refused = dir.path().join(format!("refused-{compression}"));
        let mut copy = NIX_COMMAND.to_vec();
        copy.extend(["copy", "--from", &store, "--to", refused.to_str().unwrap()]);
        copy.extend(["--option", "trusted-public-keys", &other_key, &app]);
        let output = nix(&copy);
        assert!(!output.status.success(), "a path signed by an untrusted key was accepted");
        let log = nix_ok(&[NIX_COMMAND[0], NIX_COMMAND[1], NIX_COMMAND[2], "log", "--store", &store, &app]);
        assert!(log.contains("building-the-app-now"), "{log}");
        // And substitutes from it: nix-store --realise into another empty
        // store, the cache its only substituter.
        let substituted = dir.path().join(format!("substituted-{compression}"));
        let root = format!("local?root={}", substituted.display());
        nix_ok(&[
            "nix-store",
            "--store",
            &root,
            "--realise",
            &app,
            "--option",
            "substituters",
            &store,
            "--option",
            "trusted-public-keys",
            &public_key,
        ]);
        assert!(substituted.join(app.trim_start_matches('/')).join("bin/app").exists(), "substituted");
    }

    // Each path once: as many NARs as narinfos, in both caches.
    for cache in [&xz, &plain] {
        let narinfos = std::fs::read_dir(cache)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".narinfo"))
            .count();
        assert!(narinfos >= 2, "{narinfos}");
        assert_eq!(std::fs::read_dir(cache.join("nar")).unwrap().count(), narinfos);
    }
}

/// The S3-compatible server of the tests: `s3s-fs` (it checks SigV4
/// signatures, as AWS does; `.ci/run` installs it), storing each bucket as
/// a directory of its root, each object as a file.
struct S3Server {
    child: std::process::Child,
}

impl S3Server {
    fn program() -> String {
        std::env::var("ORTHRUS_TEST_S3S_FS").unwrap_or_else(|_| {
            let installed = Path::new(&std::env::var("HOME").unwrap_or_default()).join(".cargo/bin/s3s-fs");
            if installed.is_file() { installed.display().to_string() } else { "s3s-fs".into() }
        })
    }

    fn start(root: &Path, port: u16) -> S3Server {
        let mut command = Command::new(S3Server::program());
        command.args(["--host", "127.0.0.1", "--port", &port.to_string()]);
        command.args(["--access-key", "orthrus-test", "--secret-key", "orthrus-test-secret"]).arg(root);
        command.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
        crate::harness::die_with_parent(&mut command);
        let child = command.spawn().expect("s3s-fs is needed for the S3 tests (see .ci/run)");
        let started = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(started.elapsed() < Duration::from_secs(20), "s3s-fs did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        S3Server { child }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn builds_are_published_to_s3_through_an_outage() {
    let dir = tempfile::tempdir().unwrap();
    let (secret, public_key) = key_pair(dir.path(), "orthrus-s3-1");
    let root = dir.path().join("s3");
    let bucket = root.join("nix-cache");
    std::fs::create_dir_all(&bucket).unwrap();
    let credentials = dir.path().join("credentials");
    write(&credentials, "[default]\naws_access_key_id = orthrus-test\naws_secret_access_key = orthrus-test-secret\n");
    let port = crate::harness::free_port();
    let mut server = Server::start_with(
        Backend::Sqlite,
        Options {
            extra_tables: format!(
                "[binary_cache]\nsecret_key_file = \"{secret}\"\n\n\
                 [[binary_cache.publish]]\nuri = \"s3://nix-cache?endpoint=127.0.0.1:{port}&scheme=http&region=us-east-1\"\n\
                 credentials_file = \"{}\"\nretry_delay_secs = 1\n",
                credentials.display()
            ),
            ..Options::default()
        },
    );
    let src = server.source_dir("src");
    write(
        &src.join("release.nix"),
        &format!(
            r#"{{ nonce }}:
let {MK}
in rec {{
  lib = mk "lib" "mkdir $out; echo 'the library' > $out/lib.txt";
  app = mk "app" "echo building-the-app-for-s3; mkdir -p $out/bin; echo 'cat ${{lib}}/lib.txt' > $out/bin/app";
}}
"#
        ),
    );
    // The S3 server is down while the build finishes: the publication
    // fails, is shown, and is retried.
    server.create_jobset("s3", "main", &src, "release.nix", json!({ "nonce": { "type": "string", "value": nonce() } }));
    let eval = server.wait_for_evals("s3", "main", 1);
    let builds = server.wait_for_eval_builds(eval["id"].as_i64().unwrap());
    let app = builds["app"]["buildoutputs"]["out"]["path"].as_str().unwrap().to_owned();
    let lib = builds["lib"]["buildoutputs"]["out"]["path"].as_str().unwrap().to_owned();
    let failing = server.wait_for("the publication to fail", Duration::from_secs(60), || {
        let notifiers = server.get_json("/api/notifiers");
        notifiers.as_array().unwrap().iter().find(|n| n["name"] == "publish:s3://nix-cache").and_then(|n| {
            let pending = n["pending"].as_array()?.first()?.clone();
            pending["last_error"].is_string().then_some(pending)
        })
    });
    assert!(failing["attempts"].as_i64().unwrap() >= 1, "{failing}");
    assert!(!bucket.join(format!("{}.narinfo", &app["/nix/store/".len()..][..32])).exists());
    let page = server.request_with(&Identity::Anonymous, "GET", "/status", None, &[("Accept", "text/html")]);
    assert!(page.body.contains("Binary caches") && page.body.contains("s3://nix-cache"), "{}", page.body);

    // Orthrus restarts meanwhile; then the S3 server comes back: everything
    // is published, nothing was lost.
    server.restart();
    let _s3 = S3Server::start(&root, port);
    let narinfo = bucket.join(format!("{}.narinfo", &app["/nix/store/".len()..][..32]));
    server.wait_for("the app in the bucket", Duration::from_secs(60), || narinfo.exists().then_some(()));
    let text = std::fs::read_to_string(&narinfo).unwrap();
    assert!(text.contains("Compression: xz") && text.contains("Sig: orthrus-s3-1:"), "{text}");
    server.wait_for("the publisher to catch up", Duration::from_secs(30), || {
        let notifiers = server.get_json("/api/notifiers");
        let publisher = notifiers.as_array().unwrap().iter().find(|n| n["name"] == "publish:s3://nix-cache")?.clone();
        (publisher["state"] == "ok" && publisher["pending"].as_array()?.is_empty()).then_some(())
    });

    // The bucket, read by the real Nix as the directory s3s-fs keeps it in:
    // a copy into an empty store, signatures checked.
    let store = format!("file://{}", bucket.display());
    let copied = dir.path().join("store");
    let mut copy = NIX_COMMAND.to_vec();
    copy.extend(["copy", "--from", &store, "--to", copied.to_str().unwrap()]);
    copy.extend(["--option", "trusted-public-keys", &public_key, &app]);
    nix_ok(&copy);
    assert!(copied.join(lib.trim_start_matches('/')).join("lib.txt").exists(), "the closure came over");
    // The log is there, xz-compressed (S3 serves it with Content-Encoding).
    let drv = builds["app"]["drvpath"].as_str().unwrap().trim_start_matches("/nix/store/").to_owned();
    let log = Command::new("xz").args(["-dc"]).arg(bucket.join("log").join(&drv)).output().unwrap();
    assert!(String::from_utf8_lossy(&log.stdout).contains("building-the-app-for-s3"), "{log:?}");
}

#[test]
fn builds_are_copied_to_ssh_stores() {
    let dir = tempfile::tempdir().unwrap();
    let (secret, _) = key_pair(dir.path(), "orthrus-ssh-1");
    let sshd = crate::sshd::Sshd::start();
    // The far side's store is a store of its own (a root under the test's
    // directory), so that what arrives there can be seen.
    let remote_root = dir.path().join("remote");
    let wrapper = dir.path().join("remote-nix-store");
    write(
        &wrapper,
        &format!(
            "#!/bin/sh\nexec nix-store --option store 'local?root={}' --option build-users-group '' \
             --option substituters '' \"$@\"\n",
            remote_root.display()
        ),
    );
    Command::new("chmod").arg("755").arg(&wrapper).status().unwrap();
    let port = sshd.uri().rsplit_once(':').unwrap().1.split('?').next().unwrap().to_owned();
    let ssh_options = format!(
        "-p {port} -i {} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR",
        sshd.client_key().display()
    );
    let uri = format!("ssh://{}@127.0.0.1?remote-program={}", crate::sshd::Sshd::user(), wrapper.display());
    let server = Server::start_with(
        Backend::Sqlite,
        Options {
            extra_tables: format!(
                "[binary_cache]\nsecret_key_file = \"{secret}\"\n\n\
                 [[binary_cache.publish]]\nuri = \"{uri}\"\nretry_delay_secs = 1\n"
            ),
            env: vec![("NIX_SSHOPTS".into(), ssh_options)],
            ..Options::default()
        },
    );
    let src = server.source_dir("src");
    write(
        &src.join("release.nix"),
        &format!(
            r#"{{ nonce }}:
let {MK}
in rec {{
  lib = mk "lib" "mkdir $out; echo 'the library' > $out/lib.txt";
  app = mk "app" "mkdir -p $out/bin; echo 'cat ${{lib}}/lib.txt' > $out/bin/app";
}}
"#
        ),
    );
    server.create_jobset(
        "ssh",
        "main",
        &src,
        "release.nix",
        json!({ "nonce": { "type": "string", "value": nonce() } }),
    );
    let eval = server.wait_for_evals("ssh", "main", 1);
    let builds = server.wait_for_eval_builds(eval["id"].as_i64().unwrap());
    let app = builds["app"]["buildoutputs"]["out"]["path"].as_str().unwrap().to_owned();
    let lib = builds["lib"]["buildoutputs"]["out"]["path"].as_str().unwrap().to_owned();
    let arrived = remote_root.join(app.trim_start_matches('/')).join("bin/app");
    server.wait_for("the app on the far side", Duration::from_secs(60), || arrived.exists().then_some(()));
    assert!(remote_root.join(lib.trim_start_matches('/')).join("lib.txt").exists(), "with its closure");
    // Signed with the server's key on the way.
    let remote = format!("local?root={}", remote_root.display());
    let info =
        nix_ok(&[NIX_COMMAND[0], NIX_COMMAND[1], NIX_COMMAND[2], "path-info", "--sigs", "--store", &remote, &app]);
    assert!(info.contains("orthrus-ssh-1:"), "{info}");
}
