//! Inputs taken from other jobsets (`build` and `eval`), Nix values (`nix`)
//! and strings, and what a jobset shows when an input cannot be fetched.

use std::time::Duration;

use serde_json::json;

use crate::harness::{Backend, MK, Server, nonce, write};
use crate::on_both_backends;

fn inputs(backend: Backend) {
    let server = Server::start(backend);
    let nonce = nonce();

    let lib_src = server.source_dir("lib");
    write(
        &lib_src.join("release.nix"),
        &format!(
            "{{ nonce }}:\nlet {MK}\nin {{ libfoo = mk \"libfoo\" \"mkdir $out; echo 'libfoo 1.2' > $out/lib.txt\"; }}\n"
        ),
    );

    let app_src = server.source_dir("app");
    write(
        &app_src.join("release.nix"),
        &format!(
            r#"{{ nonce, libBuild, libEval, settings, greeting }}:
let {MK}
in {{
  app = mk "app" ''
    cat ${{libBuild}}/lib.txt > $out
    cat ${{libEval.libfoo}}/lib.txt >> $out
    cat ${{builtins.toFile "greeting" "${{greeting}} ${{settings.who}} x${{toString settings.count}}\n"}} >> $out
    echo "${{libBuild.inputType}} ${{toString libBuild.id}}" >> $out
  '';
}}
"#
        ),
    );
    server.put("/project/multi", &json!({ "displayname": "Two jobsets" }));
    let app_inputs = json!({
        "nonce": { "type": "string", "value": nonce },
        "libBuild": { "type": "build", "value": "lib:libfoo" },
        "libEval": { "type": "eval", "value": "multi:lib" },
        "settings": { "type": "nix", "value": "{ who = \"world\"; count = 2 + 1; }" },
        "greeting": { "type": "string", "value": "hello \"quoted\" ${not interpolated}" },
    });

    // Before the library is built, the app's `build` input cannot be fetched:
    // the jobset says which input and why, and nothing is evaluated.
    server.create_jobset("multi", "app", &app_src, "release.nix", app_inputs.clone());
    let jobset = server.wait_for("the fetch error", Duration::from_secs(60), || {
        let jobset = server.get_json("/jobset/multi/app");
        (jobset["lastcheckoutcome"] == "fetch-failed").then_some(jobset)
    });
    let fetch_error = jobset["fetcherrormsg"].as_str().unwrap();
    assert!(fetch_error.contains("libBuild"), "{fetch_error}");
    assert!(server.evals("multi", "app").is_empty());

    server.create_jobset(
        "multi",
        "lib",
        &lib_src,
        "release.nix",
        json!({ "nonce": { "type": "string", "value": nonce } }),
    );
    let lib_eval = server.wait_for_evals("multi", "lib", 1);
    let lib_builds = server.wait_for_eval_builds(lib_eval["id"].as_i64().unwrap());
    let libfoo = &lib_builds["libfoo"];

    server.push("multi", "app", false);
    let eval = server.wait_for_evals("multi", "app", 1);
    let inputs = &eval["jobsetevalinputs"];
    assert_eq!(inputs["libBuild"]["type"], "build");
    assert_eq!(inputs["libBuild"]["dependency"], libfoo["id"]);
    assert_eq!(inputs["libEval"]["revision"], lib_eval["id"].to_string());
    assert_eq!(inputs["settings"]["value"], "{ who = \"world\"; count = 2 + 1; }");
    let builds = server.wait_for_eval_builds(eval["id"].as_i64().unwrap());
    let app = &builds["app"];
    assert_eq!(app["buildstatus"], 0, "{app}");
    let out = std::fs::read_to_string(app["buildoutputs"]["out"]["path"].as_str().unwrap()).unwrap();
    assert_eq!(
        out,
        format!("libfoo 1.2\nlibfoo 1.2\nhello \"quoted\" ${{not interpolated}} world x3\nbuild {}\n", libfoo["id"])
    );
    assert!(server.get_json("/jobset/multi/app")["fetcherrormsg"].as_str().unwrap().is_empty());
}

on_both_backends!(inputs);
