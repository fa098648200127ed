//! Declarative projects and flakes, as an operator uses them: a spec file
//! committed next to the code configures the project's jobsets, again at
//! each change; a generator job can write the spec; `orthrus project
//! apply` keeps projects in files; flake jobsets are locked and evaluated.
//! All with real git repositories and real Nix builds.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{Backend, MK, Server, nonce, write};
use crate::on_both_backends;
use crate::vcs::{commit, run};

const WAIT: Duration = Duration::from_secs(120);

/// A git repository with `release.nix` (one job, `hello`) and the files given.
fn repository(root: &Path, name: &str, marker: &str) -> PathBuf {
    let repo = root.join(name);
    std::fs::create_dir_all(&repo).unwrap();
    run(&repo, "git", &["init", "-q", "-b", "main"]);
    let release = format!(
        "{{ nonce ? \"{marker}\", ... }}:\nlet {MK}\nin {{ hello = mk \"hello\" \"echo {marker} > $out\"; }}\n"
    );
    commit(&repo, "release.nix", &release, "release.nix");
    repo
}

fn file_url(repo: &Path) -> String {
    format!("file://{}", repo.display())
}

/// A static spec of jobsets building `release.nix` of `repo`, by name and description.
fn spec(repo: &Path, jobsets: &[(&str, &str)]) -> String {
    let jobsets: serde_json::Map<String, Value> = jobsets
        .iter()
        .map(|(name, description)| {
            (
                (*name).to_owned(),
                json!({
                    "enabled": 1, "hidden": false, "description": description,
                    "nixexprinput": "src", "nixexprpath": "release.nix",
                    "checkinterval": 0, "schedulingshares": 100, "enableemail": false,
                    "emailoverride": "", "keepnr": 3,
                    "inputs": { "src": { "type": "git", "value": format!("{} main", file_url(repo)), "emailresponsible": false } }
                }),
            )
        })
        .collect();
    serde_json::to_string_pretty(&Value::Object(jobsets)).unwrap()
}

fn jobset_names(server: &Server, project: &str) -> Vec<String> {
    let project = server.get_json(&format!("/project/{project}"));
    project["jobsets"].as_array().unwrap().iter().map(|j| j.as_str().unwrap().to_owned()).collect()
}

/// Waits until reading the project's spec gave an error; returns it.
fn wait_for_spec_error(server: &Server, project: &str) -> String {
    server.wait_for(&format!("the spec of {project} to be refused"), WAIT, || {
        let project = server.get_json(&format!("/project/{project}"));
        let error = project["declarative"]["error"].as_str().unwrap_or_default().to_owned();
        (!error.is_empty()).then_some(error)
    })
}

fn declarative_project(server: &Server, name: &str, spec_repo: &Path, file: &str) {
    let answer = server.put(
        &format!("/project/{name}"),
        &json!({ "displayname": name, "enabled": true, "visible": true,
                 "declarative": { "file": file, "type": "git", "value": file_url(spec_repo) } }),
    );
    assert_eq!(answer.status, 201, "{}", answer.body);
}

fn static_specs(backend: Backend) {
    let server = Server::start(backend);
    let root = server.source_dir("repos");
    let code = repository(&root, "code", &nonce());
    let spec_repo = repository(&root, "spec", &nonce());
    commit(&spec_repo, "spec.json", &spec(&code, &[("main", "the main line"), ("other", "to be dropped")]), "spec");
    declarative_project(&server, "decl", &spec_repo, "spec.json");

    // The committed spec creates its jobsets, which evaluate and build.
    let decl = server.wait_for("the spec's jobsets", WAIT, || {
        let names = jobset_names(&server, "decl");
        (names.len() == 3).then_some(names)
    });
    assert_eq!(decl, [".jobsets", "main", "other"]);
    let project = server.get_json("/project/decl");
    assert_eq!(project["declarative"]["error"], "", "{project}");
    let main = server.get_json("/jobset/decl/main");
    assert_eq!(main["description"], "the main line");
    assert_eq!(main["inputs"]["src"]["value"], format!("{} main", file_url(&code)));
    let eval = server.wait_for_evals("decl", "other", 1);
    let builds = server.wait_for_eval_builds(eval["id"].as_i64().unwrap());
    assert_eq!(builds["hello"]["buildstatus"], 0);

    // Its jobsets are not edited by hand.
    let answer = server.put("/jobset/decl/main", &json!({ "description": "by hand" }));
    assert_eq!(answer.status, 403);
    assert!(answer.json()["error"].as_str().unwrap().contains("declarative"), "{}", answer.body);
    assert_eq!(server.delete("/jobset/decl/other").status, 403);

    // A commit that changes the spec changes them: one changed, one gone
    // (disabled and hidden, its evaluations kept), one new.
    assert!(project["declarative"]["checkedtime"].as_i64().is_some(), "{project}");
    commit(&spec_repo, "spec.json", &spec(&code, &[("main", "changed"), ("third", "new")]), "change the spec");
    server.push("decl", ".jobsets", false);
    server.wait_for("the changed spec", WAIT, || (jobset_names(&server, "decl").len() == 4).then_some(()));
    assert_eq!(server.get_json("/project/decl")["declarative"]["error"], "");
    assert_eq!(jobset_names(&server, "decl"), [".jobsets", "main", "other", "third"]);
    assert_eq!(server.get_json("/jobset/decl/main")["description"], "changed");
    let other = server.get_json("/jobset/decl/other");
    assert_eq!((other["enabled"].clone(), other["visible"].clone()), (json!(0), json!(false)));
    assert_eq!(server.evals("decl", "other").len(), 1, "the dropped jobset keeps its evaluations");
    server.wait_for_evals("decl", "third", 1);

    // A commit that breaks the spec is reported, with the key and the
    // reason, and changes nothing.
    let broken = spec(&code, &[("main", "broken"), ("fourth", "never")])
        .replace("\"nixexprpath\": \"release.nix\"", "\"nixexprpaht\": \"release.nix\"");
    commit(&spec_repo, "spec.json", &broken, "break the spec");
    server.push("decl", ".jobsets", false);
    let error = wait_for_spec_error(&server, "decl");
    assert!(error.contains("field ‘main.nixexprpaht’: unknown key"), "{error}");
    assert!(error.contains("field ‘fourth.nixexprpaht’: unknown key"), "{error}");
    assert_eq!(jobset_names(&server, "decl"), [".jobsets", "main", "other", "third"]);
    assert_eq!(server.get_json("/jobset/decl/main")["description"], "changed");
    assert!(server.get_json("/jobset/decl/.jobsets")["errormsg"].as_str().unwrap().contains("nixexprpaht"));

    // A spec committed as a link to a file of the server is not read.
    std::os::unix::fs::symlink("/etc/passwd", spec_repo.join("linked.json")).unwrap();
    run(&spec_repo, "git", &["add", "linked.json"]);
    run(&spec_repo, "git", &["commit", "-q", "-m", "a link out"]);
    declarative_project(&server, "linked", &spec_repo, "linked.json");
    let error = wait_for_spec_error(&server, "linked");
    assert!(error.contains("leads out of its input") && !error.contains("root:"), "{error}");
    assert_eq!(jobset_names(&server, "linked"), [".jobsets"]);

    // The same in TOML; a bad value names its key.
    let toml = format!(
        "[main]\nnixexprinput = \"src\"\nnixexprpath = \"release.nix\"\ncheckinterval = 0\n\
         inputs.src = {{ type = \"git\", value = \"{} main\" }}\n",
        file_url(&code)
    );
    commit(&spec_repo, "spec.toml", &toml, "a TOML spec");
    declarative_project(&server, "by-hand", &spec_repo, "spec.toml");
    server.wait_for("the TOML spec's jobset", WAIT, || (jobset_names(&server, "by-hand").len() == 2).then_some(()));
    let eval = server.wait_for_evals("by-hand", "main", 1);
    assert_eq!(server.wait_for_eval_builds(eval["id"].as_i64().unwrap())["hello"]["buildstatus"], 0);
    commit(&spec_repo, "spec.toml", &toml.replace("checkinterval = 0", "checkinterval = \"often\""), "bad");
    server.push("by-hand", ".jobsets", false);
    let error = wait_for_spec_error(&server, "by-hand");
    assert!(error.contains("field ‘main.checkinterval’") && error.contains("not an integer"), "{error}");
    assert_eq!(server.get_json("/jobset/by-hand/main")["checkinterval"], 0);
}
on_both_backends!(static_specs);

/// A generator: `.jobsets` gets the spec's input and the project's name,
/// and its one job `jobsets` writes the spec, applied when it succeeds.
fn generated_specs(backend: Backend) {
    let server = Server::start(backend);
    let root = server.source_dir("repos");
    let code = repository(&root, "code", &nonce());
    let spec_repo = repository(&root, "spec", &nonce());
    let marker = nonce();
    // The generator fails until this file exists.
    let allow = root.join("allow");
    let make_generator = |extra_job: &str| {
        format!(
            r#"{{ declInput, projectName, nonce ? "{nonce}" }}:
let
  jobsets = builtins.toJSON {{
    "${{projectName}}-main" = {{
      enabled = 1; hidden = false; description = "generated from ${{declInput.rev}}";
      nixexprinput = "src"; nixexprpath = "release.nix"; checkinterval = 0;
      schedulingshares = 100; enableemail = false; emailoverride = ""; keepnr = 1;
      inputs.src = {{ type = "git"; value = "{code} main"; emailresponsible = false; }};
    }};
  }};
in {{
  {extra_job}
  jobsets = derivation {{
    name = "spec.json"; inherit nonce jobsets; system = builtins.currentSystem;
    builder = "/bin/sh"; args = [ "-c" "test -e {allow} || exit 1; printf '%s' \"$jobsets\" > $out" ];
  }};
}}
"#,
            nonce = marker,
            code = file_url(&code),
            allow = allow.display(),
        )
    };
    commit(&spec_repo, "jobsets.nix", &make_generator(""), "generator");
    let dot_jobsets = json!({
        "enabled": 1, "hidden": false, "description": "makes the jobsets",
        "nixexprinput": "declInput", "nixexprpath": "jobsets.nix", "checkinterval": 0,
        "schedulingshares": 100, "enableemail": false, "emailoverride": "", "keepnr": 3,
        "inputs": {}
    });
    let head = commit(&spec_repo, "spec.json", &dot_jobsets.to_string(), "spec");
    declarative_project(&server, "gen", &spec_repo, "spec.json");

    // A failed generator build is reported; restarted, it is applied.
    let error = wait_for_spec_error(&server, "gen");
    assert!(error.contains("of the generator job failed"), "{error}");
    assert_eq!(jobset_names(&server, "gen"), [".jobsets"]);
    let failed = server.get_json("/project/gen")["declarative"]["build"].as_i64().unwrap();
    std::fs::write(&allow, "").unwrap();
    assert_eq!(server.post(&format!("/build/{failed}/restart")).status, 302, "Hydra redirects to the build");

    let main = server.wait_for("the generated jobset", WAIT, || {
        let answer = server.get("/jobset/gen/gen-main");
        (answer.status == 200).then(|| answer.json())
    });
    assert_eq!(main["description"], format!("generated from {head}"));
    let generator = server.get_json("/jobset/gen/.jobsets");
    assert_eq!(generator["description"], "makes the jobsets", "{generator}");
    let eval = &server.evals("gen", ".jobsets")[0];
    assert_eq!(eval["jobsetevalinputs"]["projectName"]["value"], "gen");
    assert_eq!(eval["jobsetevalinputs"]["declInput"]["revision"], head);
    assert_eq!(server.get_json("/project/gen")["declarative"]["error"], "");
    let eval = server.wait_for_evals("gen", "gen-main", 1);
    assert_eq!(server.wait_for_eval_builds(eval["id"].as_i64().unwrap())["hello"]["buildstatus"], 0);

    // A generator with a second job is refused, and nothing changes.
    let two_jobs = make_generator("jobsets2 = derivation { name = \"x\"; system = \"x\"; builder = \"x\"; };");
    commit(&spec_repo, "jobsets.nix", &two_jobs, "a second job");
    server.push("gen", ".jobsets", false);
    let error = wait_for_spec_error(&server, "gen");
    assert!(error.contains("exactly one job, named ‘jobsets’") && error.contains("jobsets2"), "{error}");
    assert_eq!(jobset_names(&server, "gen"), [".jobsets", "gen-main"]);
}
on_both_backends!(generated_specs);

/// The system Nix builds for here, as a flake must spell it out.
fn current_system() -> String {
    let output = std::process::Command::new("nix-instantiate")
        .args(["--eval", "--json", "-E", "builtins.currentSystem"])
        .env("NIX_CONFIG", crate::harness::NIX_CONFIG)
        .output()
        .unwrap();
    serde_json::from_slice::<String>(&output.stdout).unwrap()
}

fn flake(root: &Path, name: &str, outputs: &str) -> PathBuf {
    let repo = root.join(name);
    std::fs::create_dir_all(&repo).unwrap();
    run(&repo, "git", &["init", "-q", "-b", "main"]);
    commit(
        &repo,
        "flake.nix",
        &format!("{{\n  description = \"{name}\";\n  outputs = {{ self }}: {outputs};\n}}\n"),
        "flake",
    );
    repo
}

fn drv(system: &str, name: &str, text: &str) -> String {
    format!(
        "derivation {{ name = \"{name}\"; system = \"{system}\"; builder = \"/bin/sh\"; \
         args = [ \"-c\" \"echo {text} > $out\" ]; }}"
    )
}

fn flake_jobsets(backend: Backend) {
    let server = Server::start(backend);
    let root = server.source_dir("flakes");
    let system = current_system();
    let marker = nonce();
    let with_jobs = flake(
        &root,
        "with-jobs",
        &format!(
            "{{ hydraJobs = {{ hello = {}; nested.world = {}; }}; checks.{system}.ignored = {}; }}",
            drv(&system, "hello", &marker),
            drv(&system, "world", &marker),
            drv(&system, "ignored", &marker)
        ),
    );
    let checks_only =
        flake(&root, "checks-only", &format!("{{ checks.{system}.test = {}; }}", drv(&system, "test", &marker)));
    server.put("/project/flakes", &json!({ "displayname": "flakes" }));
    for (name, repo) in [("jobs", &with_jobs), ("checks", &checks_only)] {
        let answer = server.put(
            &format!("/jobset/flakes/{name}"),
            &json!({ "type": 1, "flake": format!("git+{}", file_url(repo)), "checkinterval": 0, "enabled": 1 }),
        );
        assert_eq!(answer.status, 201, "{}", answer.body);
    }

    // hydraJobs is evaluated; the locked reference is recorded on the eval.
    let eval = server.wait_for_evals("flakes", "jobs", 1);
    let rev = run(&with_jobs, "git", &["rev-parse", "HEAD"]).trim().to_owned();
    assert!(eval["flake"].as_str().unwrap().contains(&format!("rev={rev}")), "{eval}");
    let builds = server.wait_for_eval_builds(eval["id"].as_i64().unwrap());
    assert_eq!(builds.keys().collect::<Vec<_>>(), ["hello", "nested.world"]);
    assert!(builds.values().all(|b| b["buildstatus"] == 0), "{builds:?}");

    // Without hydraJobs, the checks.
    let eval = server.wait_for_evals("flakes", "checks", 1);
    let builds = server.wait_for_eval_builds(eval["id"].as_i64().unwrap());
    assert_eq!(builds.keys().collect::<Vec<_>>(), [format!("{system}.test").as_str()]);

    // An unchanged flake is not evaluated again; a commit is.
    server.push("flakes", "jobs", false);
    server.wait_for("the unchanged check", WAIT, || {
        (server.get_json("/jobset/flakes/jobs")["lastcheckoutcome"] == "unchanged").then_some(())
    });
    assert_eq!(server.evals("flakes", "jobs").len(), 1);
    let outputs = format!("{{ hydraJobs.hello = {}; }}", drv(&system, "hello", &format!("{marker}-2")));
    let second = commit(&with_jobs, "flake.nix", &format!("{{\n  outputs = {{ self }}: {outputs};\n}}\n"), "v2");
    server.push("flakes", "jobs", false);
    let eval = server.wait_for_evals("flakes", "jobs", 2);
    assert!(eval["flake"].as_str().unwrap().contains(&format!("rev={second}")), "{eval}");

    // A flake of the server's own files outside the allowed roots is refused.
    let answer = server.put("/jobset/flakes/etc", &json!({ "type": 1, "flake": "path:/etc" }));
    assert_eq!(answer.status, 400);
    assert!(answer.json()["error"].as_str().unwrap().contains("field ‘flake’"), "{}", answer.body);
    // So is a flake whose own input is such a file.
    let secret = tempfile::tempdir().unwrap();
    std::fs::write(secret.path().join("key"), "secret").unwrap();
    let sneaky = flake(&root, "sneaky", &format!("{{ hydraJobs.hello = {}; }}", drv(&system, "sneaky", &marker)));
    let text = std::fs::read_to_string(sneaky.join("flake.nix")).unwrap().replace(
        "outputs =",
        &format!("inputs.secret = {{ url = \"path:{}\"; flake = false; }};\n  outputs =", secret.path().display()),
    );
    commit(&sneaky, "flake.nix", &text.replace("{ self }", "{ self, secret }"), "an input outside the roots");
    server.put(
        "/jobset/flakes/sneaky",
        &json!({ "type": 1, "flake": format!("git+{}", file_url(&sneaky)), "checkinterval": 0 }),
    );
    let error = server.wait_for("the sneaky flake's error", WAIT, || {
        let error = server.get_json("/jobset/flakes/sneaky")["fetcherrormsg"].as_str().unwrap().to_owned();
        (!error.is_empty()).then_some(error)
    });
    assert!(error.contains("its input ‘secret’ is refused") && error.contains("not under"), "{error}");
    assert!(server.evals("flakes", "sneaky").is_empty());
    // A flake with neither output fails its evaluation with a clear error.
    let empty = flake(&root, "empty", "{ packages = { }; }");
    server.put(
        "/jobset/flakes/empty",
        &json!({ "type": 1, "flake": format!("git+{}", file_url(&empty)), "checkinterval": 0 }),
    );
    let error = server.wait_for("the empty flake's error", WAIT, || {
        let jobset = server.get_json("/jobset/flakes/empty");
        let error = jobset["errormsg"].as_str().unwrap().to_owned();
        (!error.is_empty()).then_some(error)
    });
    assert!(error.contains("neither ‘hydraJobs’ nor ‘checks’"), "{error}");
}
on_both_backends!(flake_jobsets);

/// `orthrus project apply`: idempotent, prints its changes, refuses an
/// invalid file as a whole; a project deleted and applied again builds
/// nothing whose outputs are in the store.
fn project_files(backend: Backend) {
    let server = Server::start(backend);
    let root = server.source_dir("repos");
    let marker = nonce();
    let code = root.join("code");
    std::fs::create_dir_all(&code).unwrap();
    run(&code, "git", &["init", "-q", "-b", "main"]);
    // The builder counts its runs in a file outside the store.
    let runs = root.join("runs");
    let release = format!(
        "{{ nonce ? \"{marker}\", ... }}:\nlet {MK}\nin {{ hello = mk \"hello\" \"echo run >> {runs}; echo {marker} > $out\"; }}\n",
        runs = runs.display()
    );
    commit(&code, "release.nix", &release, "release.nix");
    let jobset = |description: &str| {
        format!(
            "nixexprinput = \"src\"\nnixexprpath = \"release.nix\"\ncheckinterval = 0\ndescription = \"{description}\"\n\
             inputs.src = {{ type = \"git\", value = \"{} main\" }}\n",
            file_url(&code)
        )
    };
    let file = root.join("projects.toml");
    let apply = || server.cli(&["project", "apply", file.to_str().unwrap()], None);
    let stdout = |output: &std::process::Output| {
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout.clone()).unwrap()
    };
    write(
        &file,
        &format!(
            "[projects.files]\ndisplayname = \"Kept in files\"\n\n[projects.files.jobsets.a]\n{}\n[projects.files.jobsets.b]\n{}",
            jobset("first"),
            jobset("second")
        ),
    );
    assert_eq!(stdout(&apply()), "created project files\ncreated jobset files:a\ncreated jobset files:b\n");
    assert_eq!(stdout(&apply()), format!("nothing to change: {} is applied\n", file.display()));
    assert_eq!(server.get_json("/project/files")["displayname"], "Kept in files");

    for name in ["a", "b"] {
        let eval = server.wait_for_evals("files", name, 1);
        assert_eq!(server.wait_for_eval_builds(eval["id"].as_i64().unwrap())["hello"]["buildstatus"], 0);
    }
    assert_eq!(std::fs::read_to_string(&runs).unwrap(), "run\n", "one derivation, built once");

    // Changing a jobset and dropping another.
    write(
        &file,
        &format!(
            "[projects.files]\ndisplayname = \"Kept in files\"\n\n[projects.files.jobsets.a]\n{}",
            jobset("changed")
        ),
    );
    assert_eq!(stdout(&apply()), "changed jobset files:a\ndisabled jobset files:b\n");
    assert_eq!(stdout(&apply()), format!("nothing to change: {} is applied\n", file.display()));
    assert_eq!(server.get_json("/jobset/files/a")["description"], "changed");
    assert_eq!(server.get_json("/jobset/files/b")["enabled"], 0);

    // An invalid file is refused as a whole, naming every fault.
    let good = std::fs::read_to_string(&file).unwrap();
    write(
        &file,
        &format!(
            "{good}\n[projects.files.jobsets.c]\n{}keepnr = -2\n\n[projects.more]\ndisplaynmae = \"typo\"\n",
            jobset("never").replace("type = \"git\"", "type = \"gti\"")
        ),
    );
    let output = apply();
    assert!(!output.status.success());
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(error.contains("nothing was changed"), "{error}");
    assert!(error.contains("projects.more.displaynmae") && error.contains("unknown key"), "{error}");
    assert_eq!(server.get("/project/more").status, 404);
    assert_eq!(jobset_names(&server, "files"), ["a", "b"]);
    write(&file, &format!("{good}\n[projects.files.jobsets.c]\n{}keepnr = -2\n", jobset("never")));
    let error = String::from_utf8_lossy(&apply().stderr).into_owned();
    assert!(error.contains("projects.files.jobsets.c.keepnr") && error.contains("between 0"), "{error}");
    write(&file, &good);

    // Deleted and recreated from the file: the builds are recorded as
    // succeeded at once, from the store, and nothing is built again.
    assert_eq!(server.delete("/project/files").status, 200);
    assert_eq!(stdout(&apply()), "created project files\ncreated jobset files:a\n");
    let eval = server.wait_for_evals("files", "a", 1);
    let build = &server.wait_for_eval_builds(eval["id"].as_i64().unwrap())["hello"];
    assert_eq!((build["buildstatus"].clone(), build["iscachedbuild"].clone()), (json!(0), json!(1)), "{build}");
    let steps = server.get_json(&format!("/build/{}/steps", build["id"]));
    assert_eq!(steps, json!([]), "no step was run");
    assert_eq!(std::fs::read_to_string(&runs).unwrap(), "run\n", "nothing was built again");
}
on_both_backends!(project_files);
