//! Garbage collection as an operator runs it: the real `nix-collect-garbage`
//! on a store of the test's own (`NIX_STORE_DIR`, `NIX_STATE_DIR`,
//! `NIX_LOG_DIR`), so that collecting cannot touch what other tests build.
//! Three evaluations of a jobset with `keepnr = 2` and one build marked
//! keep; the server stopped, its roots updated by `orthrus gc-roots`, the
//! store collected, the server started again: exactly what Hydra's rules
//! keep survives, `latest` never leads to a dead path, the binary cache
//! answers for survivors only, and a collected build can be rebuilt when
//! its derivation is still there (and says why not when it is not).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{Backend, Identity, NIX_CONFIG, Options, Server, write};
use crate::on_both_backends;

/// `tool` is a job of the first evaluation only, but every `app` needs it
/// to build (not to run): its output can be collected while its
/// derivation stays, in the derivation closure of the kept `app` builds.
const RELEASE_NIX: &str = r#"{ rev }:
let
  mk = name: script: derivation {
    inherit name;
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-c" script ];
  };
  tool = mk "tool" "echo tool > $out";
in {
  app = mk "app-${rev}" "test -e ${tool} && echo app ${rev} > $out";
  other = mk "other-${rev}" "echo other ${rev} > $out";
} // (if rev == "1" then { inherit tool; } else { })
"#;

/// A Nix store of the test's own.
struct Store {
    _dir: tempfile::TempDir,
    env: Vec<(String, String)>,
}

impl Store {
    fn new() -> Store {
        let dir = tempfile::Builder::new().prefix("orthrus-gc-store-").tempdir().unwrap();
        let env = [("NIX_STORE_DIR", "store"), ("NIX_STATE_DIR", "state"), ("NIX_LOG_DIR", "log")]
            .into_iter()
            .map(|(name, sub)| (name.to_owned(), dir.path().join(sub).display().to_string()))
            .collect();
        Store { _dir: dir, env }
    }

    fn var(&self, name: &str) -> PathBuf {
        PathBuf::from(&self.env.iter().find(|(n, _)| n == name).unwrap().1)
    }

    /// Runs a Nix program on this store.
    fn nix(&self, args: &[&str]) -> std::process::Output {
        Command::new(args[0]).args(&args[1..]).env("NIX_CONFIG", NIX_CONFIG).envs(self.env.clone()).output().unwrap()
    }
}

fn out_path(build: &Value) -> String {
    build["buildoutputs"]["out"]["path"].as_str().expect("buildoutputs.out.path").to_owned()
}

fn collected_and_kept(backend: Backend) {
    let store = Store::new();
    let options = Options {
        // No roots_dir: the default, in the test store's state directory.
        gc_config: Some("min_root_age_secs = 0\ninterval_secs = 3600".into()),
        env: store.env.clone(),
        ..Options::default()
    };
    let mut server = Server::start_with(backend, options);
    let roots = store.var("NIX_STATE_DIR").join("gcroots/orthrus");
    assert!(server.log().contains(&format!("GC roots kept in {}", roots.display())), "{}", server.log());

    let src = server.source_dir("src");
    write(&src.join("release.nix"), RELEASE_NIX);
    let answer = server.put("/project/gc", &json!({ "displayname": "gc", "enabled": true, "visible": true }));
    assert!(matches!(answer.status, 200 | 201), "{}", answer.body);

    // Three evaluations, each fully built; the first one's `other` kept.
    let mut evals: Vec<BTreeMap<String, Value>> = Vec::new();
    for rev in ["1", "2", "3"] {
        let inputs = json!({ "rev": { "type": "string", "value": rev } });
        let answer = server.put_jobset("gc", "main", &src, "release.nix", inputs, json!({ "keepnr": 2 }));
        assert!(matches!(answer.status, 200 | 201), "PUT jobset: {}", answer.body);
        server.push("gc", "main", true);
        let eval = server.wait_for_evals("gc", "main", evals.len() + 1);
        let builds = server.wait_for_eval_builds(eval["id"].as_i64().unwrap());
        for (job, build) in &builds {
            assert_eq!(build["buildstatus"], 0, "{job}: {build}");
            assert_eq!(build["outputs_collected"], false);
        }
        evals.push(builds);
    }
    assert_eq!(evals[0].len(), 3);
    assert_eq!(evals[2].len(), 2);
    let build = |eval: usize, job: &str| evals[eval][job].clone();
    let kept = build(0, "other");
    let answer = server.post(&format!("/build/{}/keep/1", kept["id"]));
    assert_eq!(answer.status, 302, "{}", answer.body);
    // Outputs were rooted as their evaluations were recorded, as Nix sees it.
    let listed = store.nix(&["nix-store", "--gc", "--print-roots"]);
    let listed = String::from_utf8_lossy(&listed.stdout);
    for eval in &evals {
        for build in eval.values() {
            let path = out_path(build);
            let root = roots.join(Path::new(&path).file_name().unwrap());
            assert!(listed.contains(&format!("{} -> {path}", root.display())), "{root:?}: {listed}");
        }
    }

    // Stopped, the operator looks at the roots, then updates them.
    server.kill9();
    let dry = server.cli_ok(&["gc-roots", "--dry-run"], None);
    let gone = [build(0, "app"), build(0, "tool")];
    for build in &gone {
        let path = out_path(build);
        let name = Path::new(&path).file_name().unwrap().to_str().unwrap().to_owned();
        assert!(dry.contains(&format!("would remove {}", roots.join(&name).display())), "{name}: {dry}");
        assert!(roots.join(&name).exists(), "a dry run removed nothing");
    }
    assert!(!dry.contains("would add"), "every output was rooted when recorded: {dry}");
    let applied = server.cli_ok(&["gc-roots", "--apply"], None);
    // app-1 and tool (outputs and derivations), and the derivation of the
    // kept build, which needs no rebuilding.
    assert!(applied.contains("9 roots kept, 0 added, 5 removed"), "{applied}");
    assert!(!roots.join(Path::new(&out_path(&gone[0])).file_name().unwrap()).exists());

    let collect = store.nix(&["nix-collect-garbage"]);
    assert!(collect.status.success(), "{}", String::from_utf8_lossy(&collect.stderr));
    let survivors = [build(0, "other"), build(1, "app"), build(1, "other"), build(2, "app"), build(2, "other")];
    for build in &survivors {
        assert!(Path::new(&out_path(build)).exists(), "kept: {}", build["job"]);
    }
    for build in &gone {
        assert!(!Path::new(&out_path(build)).exists(), "collected: {}", build["job"]);
    }

    // Started again, the server finds what was collected.
    server.restart();
    for build in &gone {
        let id = build["id"].as_i64().unwrap();
        server.wait_for(&format!("build {id} marked collected"), Duration::from_secs(60), || {
            (server.get_json(&format!("/build/{id}"))["outputs_collected"] == true).then_some(())
        });
        let page = server.get_page(&format!("/build/{id}"));
        assert!(page.contains("outputs were collected"), "{page}");
    }
    for build in &survivors {
        assert_eq!(server.get_json(&format!("/build/{}", build["id"]))["outputs_collected"], false);
    }

    // latest and latest-finished lead to existing paths only.
    for suffix in ["latest", "latest-finished"] {
        let answer = server.get_following(&format!("/job/gc/main/app/{suffix}"));
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(answer.json()["id"], build(2, "app")["id"]);
        assert!(Path::new(&out_path(&answer.json())).exists());
        // The only build of `tool` is gone: nothing to deploy.
        let answer = server.get(&format!("/job/gc/main/tool/{suffix}"));
        assert_eq!(answer.status, 404, "{suffix} of a collected job: {}", answer.body);
    }

    // The binary cache: survivors copy, the collected are a clean 404.
    let hash = |path: &str| Path::new(path).file_name().unwrap().to_str().unwrap()[..32].to_owned();
    let copies = tempfile::tempdir().unwrap();
    let to = format!("file://{}", copies.path().display());
    let survivor = out_path(&build(2, "app"));
    let copy = store.nix(&[
        "nix",
        "--extra-experimental-features",
        "nix-command",
        "copy",
        "--no-check-sigs",
        "--from",
        &server.url,
        "--to",
        &to,
        &survivor,
    ]);
    assert!(copy.status.success(), "{}", String::from_utf8_lossy(&copy.stderr));
    assert!(copies.path().join(format!("{}.narinfo", hash(&survivor))).exists());
    for build in &gone {
        let path = out_path(build);
        let answer = server.request_with(&Identity::Anonymous, "GET", &format!("/{}.narinfo", hash(&path)), None, &[]);
        assert_eq!(answer.status, 404, "{path}: {}", answer.body);
        let copy = store.nix(&[
            "nix",
            "--extra-experimental-features",
            "nix-command",
            "copy",
            "--no-check-sigs",
            "--from",
            &server.url,
            "--to",
            &to,
            &path,
        ]);
        assert!(!copy.status.success(), "{path} was copied after its collection");
    }

    // `tool`'s derivation outlived its output: restarting builds it again.
    let tool = build(0, "tool");
    let answer = server.post(&format!("/build/{}/restart", tool["id"]));
    assert_eq!(answer.status, 302, "{}", answer.body);
    let rebuilt = server.wait_for("tool rebuilt", Duration::from_secs(120), || {
        let build = server.get_json(&format!("/build/{}", tool["id"]));
        (build["finished"] == 1).then_some(build)
    });
    assert_eq!(rebuilt["buildstatus"], 0, "{rebuilt}");
    assert_eq!(rebuilt["outputs_collected"], false);
    assert!(Path::new(&out_path(&rebuilt)).exists());
    let answer = server.get_following("/job/gc/main/tool/latest");
    assert_eq!(answer.status, 200, "{}", answer.body);
    // `app-1`'s derivation went with its output: the restart says so.
    let answer = server.post(&format!("/build/{}/restart", build(0, "app")["id"]));
    assert_eq!(answer.status, 409, "{}", answer.body);
    assert!(answer.body.contains("garbage-collected"), "{}", answer.body);
}

on_both_backends!(collected_and_kept);
