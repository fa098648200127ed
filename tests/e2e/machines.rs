//! Remote build machines: a real sshd on loopback with its own host key
//! and a key pair made here, reached by the server with async-ssh2-tokio
//! and Nix's serve protocol; scheduling over machines and jobset shares.
//!
//! The SSH machine shares this host's Nix store, so what it builds is
//! visible locally at once; copying closures between different stores is
//! tested beside the protocol client (`host/src/nix/serve.rs`). These
//! scenarios run on SQLite only: machines do not touch the database
//! differently from local builds, which run on both backends elsewhere.

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{Backend, Options, Server, nonce, write};

use crate::sshd::{REMOTE_FEATURE, REMOTE_SYSTEM, Sshd, keygen};

/// `[[machines.machine]]` for the SSH machine.
fn machine_table(sshd: &Sshd, extra: &str) -> String {
    format!(
        "[[machines.machine]]\nuri = \"{uri}\"\nsystems = [\"x86_64-linux\", \"{REMOTE_SYSTEM}\"]\nssh_key = \"{key}\"\n\
         public_host_key = \"{host_key}\"\nsupported_features = [\"{REMOTE_FEATURE}\"]\n{extra}\n",
        uri = sshd.uri(),
        key = sshd.client_key().display(),
        host_key = sshd.host_key(),
    )
}

/// Derivations for any system with any required features.
const MK_ANY: &str = r#"
  mkAny = system: features: name: script: derivation {
    inherit name nonce system;
    builder = "/bin/sh";
    args = [ "-c" script ];
    PATH = "/usr/bin:/bin";
    requiredSystemFeatures = features;
  };
  mk = mkAny builtins.currentSystem [];
"#;

fn steps_of(server: &Server, build: &Value) -> Vec<Value> {
    server.get_json(&format!("/build/{}/steps", build["id"])).as_array().unwrap().clone()
}

fn builds_of_eval(server: &Server, eval: &Value) -> std::collections::BTreeMap<String, Value> {
    server.wait_for_eval_builds(eval["id"].as_i64().unwrap())
}

#[test]
fn builds_run_on_the_ssh_machine() {
    let sshd = Sshd::start();
    // The SSH machine is faster, so it gets work first; only it has the feature.
    let server = Server::start_with(
        Backend::Sqlite,
        Options {
            max_jobs: 1,
            extra_tables: machine_table(&sshd, "max_jobs = 2\nspeed_factor = 4.0"),
            ..Options::default()
        },
    );
    let src = server.source_dir("src");
    write(
        &src.join("release.nix"),
        &format!(
            "{{ nonce }}:\nlet {MK_ANY}\nin {{\n\
             featured = mkAny builtins.currentSystem [ \"{REMOTE_FEATURE}\" ] \"featured\" \"echo built remotely; sleep 3; echo featured > $out\";\n\
             plain = mk \"plain\" \"echo plain > $out\";\n}}\n"
        ),
    );
    server.create_jobset(
        "remote",
        "main",
        &src,
        "release.nix",
        json!({ "nonce": { "type": "string", "value": nonce() } }),
    );
    let eval = server.wait_for_evals("remote", "main", 1);

    // While the featured build runs, /status shows it on the SSH machine.
    let running = server.wait_for("the featured step to run", Duration::from_secs(60), || {
        let status = server.get_json("/status");
        status.as_array().unwrap().iter().find(|s| s["job"] == "featured").cloned()
    });
    assert_eq!(running["machine"], sshd.uri(), "{running}");
    assert_eq!(running["machinestatus"]["enabled"], true);
    assert_eq!(running["machinestatus"]["maxconcurrent"], 2);
    let machines = server.get_json("/machines");
    let remote = &machines[sshd.uri()];
    assert!(remote["currentjobs"].as_u64().unwrap() >= 1, "{machines}");
    assert!(remote["steps"].as_array().unwrap().iter().any(|s| s["job"] == "featured"), "{machines}");

    let builds = builds_of_eval(&server, &eval);
    for (job, build) in &builds {
        assert_eq!(build["buildstatus"], 0, "{job}: {build}\n{}", server.log());
    }
    let featured_steps = steps_of(&server, &builds["featured"]);
    assert_eq!(featured_steps.len(), 1);
    assert_eq!(featured_steps[0]["machine"], sshd.uri());
    assert_eq!(featured_steps[0]["status"], 0);
    // The log came back over SSH as it was written.
    let log = server.get(&format!("/build/{}/log", builds["featured"]["id"]));
    assert!(log.body.contains("built remotely"), "{}", log.body);
    let out = builds["featured"]["buildoutputs"]["out"]["path"].as_str().unwrap();
    assert_eq!(std::fs::read_to_string(out).unwrap().trim(), "featured");
    assert!(sshd.serve_calls() >= 1, "nix-store --serve ran over SSH");

    let machines = server.get_json("/machines");
    let remote = &machines[sshd.uri()];
    assert_eq!(remote["type"], "ssh");
    assert_eq!(remote["systems"], json!(["x86_64-linux", REMOTE_SYSTEM]));
    assert_eq!(remote["supportedfeatures"], json!([REMOTE_FEATURE]));
    assert_eq!(remote["speedfactor"], 4.0);
    assert_eq!(remote["consecutivefailures"], 0);
    assert!(remote["stepsdone"].as_u64().unwrap() >= 1, "{remote}");
    assert!(remote["protocol"].as_str().unwrap().starts_with("2."), "{remote}");
    assert_eq!(machines["localhost"]["type"], "local");
    assert_eq!(machines["localhost"]["maxconcurrent"], 1);
}

#[test]
fn machines_file_is_reread_and_unsupported_systems_time_out() {
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().unwrap();
    let machines_file = dir.path().join("machines");
    write(&machines_file, "# no machines yet\n");
    let server = Server::start_with(
        Backend::Sqlite,
        Options {
            extra_tables: format!(
                "[machines]\nfiles = [\"{}\"]\nunsupported_timeout_secs = 20\n",
                machines_file.display()
            ),
            ..Options::default()
        },
    );
    let src = server.source_dir("src");
    write(
        &src.join("release.nix"),
        &format!(
            "{{ nonce }}:\nlet {MK_ANY}\nin {{\n\
             nowhere = mkAny \"orthrus-no-such-system\" [] \"nowhere\" \"echo > $out\";\n\
             later = mkAny \"{REMOTE_SYSTEM}\" [] \"later\" \"echo on the new machine; echo > $out\";\n}}\n"
        ),
    );
    server.create_jobset(
        "files",
        "main",
        &src,
        "release.nix",
        json!({ "nonce": { "type": "string", "value": nonce() } }),
    );
    let eval = server.wait_for_evals("files", "main", 1);
    std::thread::sleep(Duration::from_secs(2));
    let waiting = server.get_json(&format!("/eval/{}/builds", eval["id"]));
    assert!(waiting.as_array().unwrap().iter().all(|b| b["finished"] == 0), "both wait for a machine: {waiting}");

    // A machine for one of the systems appears in the file.
    let host_key = base64_of(&sshd.host_key());
    write(
        &machines_file,
        &format!(
            "# added while builds wait\n{uri} {REMOTE_SYSTEM} {key} 2 1 - - {host_key}\n",
            uri = sshd.uri(),
            key = sshd.client_key().display()
        ),
    );
    let builds = builds_of_eval(&server, &eval);
    assert_eq!(builds["later"]["buildstatus"], 0, "{}", server.log());
    assert_eq!(steps_of(&server, &builds["later"])[0]["machine"], sshd.uri());
    assert!(server.get_json("/machines").get(sshd.uri()).is_some());

    let nowhere = &builds["nowhere"];
    assert_eq!(nowhere["buildstatus"], 9, "{nowhere}");
    let steps = steps_of(&server, nowhere);
    assert_eq!(steps[0]["status"], 9);
    let message = steps[0]["errormsg"].as_str().unwrap();
    assert!(message.contains("orthrus-no-such-system") && message.contains("waited 20 s"), "{message}");
    assert!(
        nowhere["stoptime"].as_i64().unwrap() - eval["timestamp"].as_i64().unwrap() >= 19,
        "it waited for a machine first: {nowhere} {eval}"
    );

    // A broken edit keeps the machines as they were.
    write(&machines_file, "ssh://nowhere x86_64-linux - many\n");
    server.wait_for("the broken file to be noticed", Duration::from_secs(30), || {
        server.log().contains("not valid, keeping the machines as they were").then_some(())
    });
    assert!(server.log().contains("machines:1: max-jobs \"many\" is not a number"), "{}", server.log());
    assert!(server.get_json("/machines").get(sshd.uri()).is_some());
}

#[test]
fn a_machine_that_dies_gives_its_step_back() {
    let mut sshd = Sshd::start();
    let server = Server::start_with(
        Backend::Sqlite,
        Options {
            max_jobs: 1,
            extra_tables: format!(
                "{}\n[machines]\nbackoff_secs = 600\nbackoff_max_secs = 600\n",
                machine_table(&sshd, "speed_factor = 10.0")
            ),
            ..Options::default()
        },
    );
    let src = server.source_dir("src");
    write(
        &src.join("release.nix"),
        &format!(
            "{{ nonce }}:\nlet {MK_ANY}\nin {{ long = mk \"long\" \"echo starting; sleep 6; echo done > $out\"; }}\n"
        ),
    );
    server.create_jobset(
        "dies",
        "main",
        &src,
        "release.nix",
        json!({ "nonce": { "type": "string", "value": nonce() } }),
    );
    let eval = server.wait_for_evals("dies", "main", 1);
    server.wait_for("the step to run on the SSH machine", Duration::from_secs(60), || {
        let status = server.get_json("/status");
        status.as_array().unwrap().iter().any(|s| s["machine"] == sshd.uri()).then_some(())
    });
    std::thread::sleep(Duration::from_secs(1));
    sshd.kill_everything();

    let builds = builds_of_eval(&server, &eval);
    let long = &builds["long"];
    assert_eq!(long["buildstatus"], 0, "{long}\n{}", server.log());
    let steps = steps_of(&server, long);
    assert_eq!(steps.len(), 2, "{steps:?}");
    let (first, second) = (&steps[0], &steps[1]);
    assert_eq!(first["machine"], sshd.uri());
    assert_eq!(first["status"], 3, "the step on the dead machine is aborted: {first}");
    assert!(first["errormsg"].as_str().unwrap().contains("lost"), "{first}");
    assert_eq!((second["machine"].as_str(), second["status"].as_i64()), (Some("localhost"), Some(0)), "{second}");

    let remote = &server.get_json("/machines")[sshd.uri()];
    assert_eq!(remote["enabled"], false, "{remote}");
    assert_eq!(remote["consecutivefailures"], 1);
    assert!(remote["disabledforsecs"].as_u64().unwrap() > 500, "{remote}");
    assert!(remote["lastfailure"]["message"].as_str().unwrap().contains("lost"), "{remote}");
}

#[test]
fn a_wrong_host_key_refuses_the_machine() {
    let sshd = Sshd::start();
    let impostor = tempfile::tempdir().unwrap();
    keygen(&impostor.path().join("key"));
    let wrong_key = std::fs::read_to_string(impostor.path().join("key.pub")).unwrap().trim().to_owned();
    let table = machine_table(&sshd, "speed_factor = 10.0").replace(&sshd.host_key(), &wrong_key);
    let server =
        Server::start_with(Backend::Sqlite, Options { max_jobs: 1, extra_tables: table, ..Options::default() });
    let src = server.source_dir("src");
    write(
        &src.join("release.nix"),
        &format!("{{ nonce }}:\nlet {MK_ANY}\nin {{ job = mk \"job\" \"echo > $out\"; }}\n"),
    );
    server.create_jobset(
        "hostkey",
        "main",
        &src,
        "release.nix",
        json!({ "nonce": { "type": "string", "value": nonce() } }),
    );
    let eval = server.wait_for_evals("hostkey", "main", 1);
    let builds = builds_of_eval(&server, &eval);
    let job = &builds["job"];
    assert_eq!(job["buildstatus"], 0, "it was built elsewhere: {job}");
    let steps = steps_of(&server, job);
    assert_eq!(steps.last().unwrap()["machine"], "localhost");
    let refused = &steps[0];
    assert_eq!(refused["machine"], sshd.uri());
    assert!(
        refused["errormsg"].as_str().unwrap().contains("does not match the configured public host key"),
        "{refused}"
    );

    let remote = &server.get_json("/machines")[sshd.uri()];
    assert_eq!(remote["enabled"], false);
    assert!(remote["lastfailure"]["message"].as_str().unwrap().contains("host key"), "{remote}");
    assert!(server.log().contains("does not match the configured public host key"));
    assert_eq!(sshd.serve_calls(), 0, "nothing ran on a machine that is not the one configured");
}

#[test]
fn shares_divide_the_machines_between_jobsets() {
    // No machine at first: both jobsets queue up, then one slot appears.
    let dir = tempfile::tempdir().unwrap();
    let machines_file = dir.path().join("machines");
    write(&machines_file, "");
    let server = Server::start_with(
        Backend::Sqlite,
        Options {
            extra_tables: format!("[machines]\nlocal = false\nfiles = [\"{}\"]\n", machines_file.display()),
            ..Options::default()
        },
    );
    assert_eq!(server.put("/project/shares", &json!({ "displayname": "Shares" })).status, 201);
    let mut evals = Vec::new();
    for (jobset, shares) in [("small", 1), ("large", 3)] {
        let src = server.source_dir(jobset);
        let jobs: String =
            (0..12).map(|i| format!("  j{i} = mk \"{jobset}-{i}\" \"sleep 0.4; echo {i} > $out\";\n")).collect();
        write(&src.join("release.nix"), &format!("{{ nonce }}:\nlet {MK_ANY}\nin {{\n{jobs}}}\n"));
        let answer = server.put(
            &format!("/jobset/shares/{jobset}"),
            &json!({
                "enabled": 1,
                "checkinterval": 0,
                "schedulingshares": shares,
                "nixexprinput": "src",
                "nixexprpath": "release.nix",
                "inputs": {
                    "src": { "type": "path", "value": src.display().to_string() },
                    "nonce": { "type": "string", "value": nonce() },
                },
            }),
        );
        assert_eq!(answer.status, 201, "{}", answer.body);
        evals.push((jobset, server.wait_for_evals("shares", jobset, 1)));
    }
    let system = String::from_utf8(
        Command::new("nix-instantiate").args(["--eval", "--expr", "builtins.currentSystem"]).output().unwrap().stdout,
    )
    .unwrap()
    .trim()
    .trim_matches('"')
    .to_owned();
    write(&machines_file, &format!("localhost {system} - 1\n"));

    // Which jobset each of the first twelve builds belonged to.
    let first = server.wait_for("twelve finished builds", Duration::from_secs(120), || {
        let mut finished: Vec<&str> = Vec::new();
        for (jobset, eval) in &evals {
            let builds = server.get_json(&format!("/eval/{}/builds", eval["id"]));
            finished.extend(builds.as_array().unwrap().iter().filter(|b| b["finished"] == 1).map(|_| *jobset));
        }
        (finished.len() >= 12).then_some(finished)
    });
    let all = first.len();
    let large = first.iter().filter(|jobset| **jobset == "large").count();
    // 3 shares to 1: about 9 of the first 12 (more may have finished by now).
    let expected = all as f64 * 0.75;
    assert!(
        (large as f64 - expected).abs() <= 2.0,
        "the jobset with 3 shares got {large} of the first {all} builds, expected about {expected}"
    );
}

fn base64_of(text: &str) -> String {
    let output =
        Command::new("base64").arg("-w0").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(text.as_bytes())?;
            child.wait_with_output()
        });
    String::from_utf8(output.unwrap().stdout).unwrap()
}

#[test]
fn limits_and_failures_hold_on_the_ssh_machine() {
    let sshd = Sshd::start();
    let server = Server::start_with(
        Backend::Sqlite,
        Options {
            queue_config: "max_log_size = 100000\nmax_output_size = 200000".into(),
            extra_tables: format!("[machines]\nlocal = false\n{}", machine_table(&sshd, "max_jobs = 4")),
            ..Options::default()
        },
    );
    let src = server.source_dir("src");
    write(
        &src.join("release.nix"),
        &format!(
            r#"{{ nonce }}:
let {MK_ANY}
in {{
  broken = mk "broken" "echo 'failing remotely'; exit 1";
  slow = mk "slow" "echo started; sleep 60; echo > $out" // {{ meta.timeout = 2; }};
  silent = mk "silent" "echo started; sleep 60; echo > $out" // {{ meta.maxSilent = 2; }};
  chatty = mk "chatty" "seq 1 100000; echo > $out";
  huge = mk "huge" "head -c 300000 /dev/zero > $out";
}}
"#
        ),
    );
    write(&src.join("again.nix"), "{ nonce }: { inherit (import ./release.nix { inherit nonce; }) broken; }\n");
    let nonce = nonce();
    server.create_jobset(
        "limits",
        "main",
        &src,
        "release.nix",
        json!({ "nonce": { "type": "string", "value": nonce } }),
    );
    let eval = server.wait_for_evals("limits", "main", 1);
    let builds = builds_of_eval(&server, &eval);
    let status = |job: &str| builds[job]["buildstatus"].as_i64().unwrap();
    assert_eq!(
        [status("broken"), status("slow"), status("silent"), status("chatty"), status("huge")],
        [1, 7, 7, 10, 11],
        "{builds:?}"
    );
    for (job, build) in &builds {
        let steps = steps_of(&server, build);
        assert_eq!(steps.len(), 1, "{job}: {steps:?}");
        assert_eq!(steps[0]["machine"], sshd.uri(), "{job}");
    }
    let log = server.get(&format!("/build/{}/log", builds["broken"]["id"]));
    assert!(log.body.contains("failing remotely"), "{}", log.body);
    let chatty = server.get(&format!("/build/{}/log", builds["chatty"]["id"]));
    assert!(chatty.body.len() < 120_000, "the log stops near the limit: {} bytes", chatty.body.len());
    let huge_steps = steps_of(&server, &builds["huge"]);
    assert!(huge_steps[0]["errormsg"].as_str().unwrap().contains("more than the limit"), "{huge_steps:?}");

    // The failure is cached: the same derivation elsewhere fails at once,
    // without running on the machine again.
    let calls = sshd.serve_calls();
    server.create_jobset(
        "limits",
        "again",
        &src,
        "again.nix",
        json!({ "nonce": { "type": "string", "value": nonce } }),
    );
    let again = server.wait_for_evals("limits", "again", 1);
    let builds = builds_of_eval(&server, &again);
    assert_eq!(builds["broken"]["buildstatus"], 1);
    assert_eq!(steps_of(&server, &builds["broken"])[0]["status"], 8, "a cached failure");
    assert_eq!(sshd.serve_calls(), calls, "nothing ran again");
    assert_eq!(
        server.get_json("/machines")[sshd.uri()]["consecutivefailures"],
        0,
        "build failures are not the machine's"
    );
}
