//! Against the real `nix-store --serve --write` of the Nix on PATH.

use super::*;
use crate::config::NixConfig;
use crate::nix::Nix;

fn nix() -> Nix {
    let mut config = NixConfig::default();
    for (name, value) in [("build-users-group", ""), ("sandbox", "false"), ("substituters", "")] {
        config.settings.insert(name.into(), value.into());
    }
    Nix::new(&config)
}

/// Instantiates `derivation { … }` with a fresh name, so that it is not built yet.
fn instantiate(script: &str, extra: &str) -> StorePath {
    let nonce = format!("{:x}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos());
    let expr = format!(
        r#"let dep = derivation {{ name = "serve-dep-{nonce}"; system = builtins.currentSystem; builder = "/bin/sh"; args = ["-c" "echo dependency > $out"]; }};
           in derivation {{ name = "serve-test-{nonce}"; system = builtins.currentSystem; builder = "/bin/sh"; inherit dep; args = ["-c" {script:?}]; {extra} }}"#
    );
    let out = std::process::Command::new("nix-instantiate")
        .args(["--option", "build-users-group", "", "--expr", &expr])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    StorePath::parse(String::from_utf8(out.stdout).unwrap().trim()).unwrap()
}

async fn resolve(nix: &Nix, drv_path: &StorePath) -> (Derivation, BasicDerivation) {
    let drv = nix.read_derivation(drv_path).await.unwrap();
    let mut inputs = Vec::new();
    for (input, outputs) in &drv.input_drvs {
        let input_drv = nix.read_derivation(input).await.unwrap();
        inputs.extend(outputs.iter().filter_map(|o| input_drv.outputs[o].path.clone()));
    }
    let basic = BasicDerivation::new(&drv, inputs);
    (drv, basic)
}

fn options(timeout: u64) -> BuildOptions {
    BuildOptions {
        max_silent: Duration::from_secs(timeout),
        timeout: Duration::from_secs(timeout),
        max_log_size: 1 << 20,
    }
}

/// Builds the dependency of `drv_path` (the far side needs its inputs valid).
async fn build_dependency(nix: &Nix, connection: &mut ServeConnection, drv_path: &StorePath) {
    let drv = nix.read_derivation(drv_path).await.unwrap();
    let dep = drv.input_drvs.keys().next().unwrap().clone();
    let (_, basic_dep) = resolve(nix, &dep).await;
    let result = connection.build_derivation(&dep, &basic_dep, options(60), &mut |_| {}).await.unwrap();
    assert!(result.status.is_success(), "{result:?}");
}

#[tokio::test]
async fn builds_streaming_the_log_and_reports_failures() {
    let nix = nix();
    let mut connection = nix.serve_local().await.unwrap();
    assert_eq!(connection.version(), "2.7");

    let drv_path = instantiate("echo hello from the builder; echo second line >&2; /bin/cat $dep > $out", "");
    build_dependency(&nix, &mut connection, &drv_path).await;
    let (drv, basic) = resolve(&nix, &drv_path).await;
    let mut log = Vec::new();
    let result =
        connection.build_derivation(&drv_path, &basic, options(60), &mut |b| log.extend_from_slice(b)).await.unwrap();
    assert_eq!(result.status, BuildResultStatus::Built, "{result:?}");
    let log = String::from_utf8(log).unwrap();
    assert!(log.contains("hello from the builder\n") && log.contains("second line\n"), "{log:?}");
    let out = drv.outputs["out"].path.clone().unwrap();
    assert!(connection.query_valid_paths(std::slice::from_ref(&out)).await.unwrap().contains(&out));

    // The same connection goes on: a failing builder, then a timeout.
    let failing = instantiate("echo about to fail; exit 3", "");
    build_dependency(&nix, &mut connection, &failing).await;
    let (_, basic) = resolve(&nix, &failing).await;
    let mut log = Vec::new();
    let result =
        connection.build_derivation(&failing, &basic, options(60), &mut |b| log.extend_from_slice(b)).await.unwrap();
    assert_eq!(result.status, BuildResultStatus::PermanentFailure);
    assert!(result.error_msg.contains("exit code 3"), "{}", result.error_msg);
    assert!(String::from_utf8_lossy(&log).contains("about to fail"));

    let slow = instantiate("/bin/sleep 30", "");
    build_dependency(&nix, &mut connection, &slow).await;
    let (_, basic) = resolve(&nix, &slow).await;
    let result = connection.build_derivation(&slow, &basic, options(1), &mut |_| {}).await.unwrap();
    assert_eq!(result.status, BuildResultStatus::TimedOut, "{result:?}");
    assert!(!connection.is_closed());

    // A build cut off half-way leaves the connection unusable.
    let mut ignore = |_: &[u8]| {};
    let building = connection.build_derivation(&slow, &basic, options(60), &mut ignore);
    assert!(tokio::time::timeout(Duration::from_millis(300), building).await.is_err());
    assert!(connection.is_closed(), "a connection cut off mid-build must not be reused");
    assert!(connection.query_valid_paths(&[]).await.is_err());
}

#[tokio::test]
async fn builds_a_derivation_of_the_store_by_its_path_as_an_untrusted_user_may() {
    let nix = nix();
    let mut connection = nix.serve_local().await.unwrap();
    // Its dependency is built along with it, by the far side's store.
    let drv_path = instantiate("echo stored derivation built; /bin/cat $dep > $out", "");
    let mut log = Vec::new();
    let result =
        connection.build_stored_derivation(&drv_path, options(60), &mut |b| log.extend_from_slice(b)).await.unwrap();
    assert_eq!(result.status, BuildResultStatus::Built, "{result:?}");
    assert!(String::from_utf8_lossy(&log).contains("stored derivation built"), "{}", String::from_utf8_lossy(&log));
    let out = nix.read_derivation(&drv_path).await.unwrap().outputs["out"].path.clone().unwrap();
    assert!(connection.query_valid_paths(std::slice::from_ref(&out)).await.unwrap().contains(&out));

    let failing = instantiate("echo about to fail; exit 3", "");
    let result = connection.build_stored_derivation(&failing, options(60), &mut |_| {}).await.unwrap();
    assert_eq!(result.status, BuildResultStatus::PermanentFailure, "{result:?}");
    assert!(result.error_msg.contains("failed"), "{}", result.error_msg);
    let slow = instantiate("/bin/sleep 30", "");
    let result = connection.build_stored_derivation(&slow, options(1), &mut |_| {}).await.unwrap();
    assert_eq!(result.status, BuildResultStatus::TimedOut, "{result:?}");
    assert!(!connection.is_closed());
}

#[test]
fn exit_codes_of_builds_say_how_they_failed() {
    assert_eq!(status_of_exit_code(100), BuildResultStatus::PermanentFailure);
    assert_eq!(status_of_exit_code(101), BuildResultStatus::TimedOut);
    assert_eq!(status_of_exit_code(102), BuildResultStatus::PermanentFailure);
    assert_eq!(status_of_exit_code(104), BuildResultStatus::NotDeterministic);
    assert_eq!(status_of_exit_code(1), BuildResultStatus::MiscFailure);
    // Through a daemon, the message says it.
    let failed = "error: builder for '/nix/store/x-broken.drv' failed with exit code 3;\n last 1 log lines:";
    assert_eq!(status_of_message(failed), BuildResultStatus::PermanentFailure);
    let newer = "error: Cannot build '/nix/store/x-broken.drv'.\n Reason: builder failed with exit code 3.";
    assert_eq!(status_of_message(newer), BuildResultStatus::PermanentFailure);
    assert_eq!(
        status_of_message("error: building of '/nix/store/x.drv' timed out after 1 seconds"),
        BuildResultStatus::TimedOut
    );
    assert_eq!(status_of_message("error: cannot connect to socket"), BuildResultStatus::MiscFailure);
    // What the builder printed does not count.
    let lying = "error: builder for '/nix/store/x.drv' failed with exit code 1;\n       last 2 log lines:\n       > timed out after 5 seconds\n       > may not be deterministic";
    assert_eq!(status_of_message(lying), BuildResultStatus::PermanentFailure);
}

#[tokio::test]
async fn copies_a_closure_to_another_store_in_reference_order() {
    let nix = nix();
    let mut local = nix.serve_local().await.unwrap();
    let drv_path = instantiate("echo $dep > $out", "");
    build_dependency(&nix, &mut local, &drv_path).await;
    let (drv, basic) = resolve(&nix, &drv_path).await;
    assert!(local.build_derivation(&drv_path, &basic, options(60), &mut |_| {}).await.unwrap().status.is_success());
    let out = drv.outputs["out"].path.clone().unwrap();

    let infos = local.query_path_infos(std::slice::from_ref(&out)).await.unwrap();
    assert_eq!(infos.len(), 1);
    assert!(infos[0].nar_hash.starts_with("sha256:") && infos[0].nar_size > 0);
    let dep_out =
        infos[0].references.iter().find(|r| **r != out).expect("the output references its dependency").clone();
    let mut closure = local.query_path_infos(&[dep_out.clone(), out.clone()]).await.unwrap();
    closure.reverse();
    let sorted = sort_by_references(closure);
    assert_eq!(sorted.iter().map(|i| &i.path).collect::<Vec<_>>(), [&dep_out, &out]);

    let other = tempfile::tempdir().unwrap();
    let mut remote = nix.serve_store(Some(other.path().to_str().unwrap())).await.unwrap();
    assert!(remote.query_valid_paths(std::slice::from_ref(&out)).await.unwrap().is_empty());
    for info in &sorted {
        local.copy_path(info, &mut remote).await.unwrap();
    }
    let valid = remote.query_valid_paths(&[out.clone(), dep_out.clone()]).await.unwrap();
    assert_eq!(valid.len(), 2);
    let copied = remote.query_path_infos(std::slice::from_ref(&out)).await.unwrap();
    assert_eq!((copied[0].nar_hash.as_str(), copied[0].nar_size), (infos[0].nar_hash.as_str(), infos[0].nar_size));

    // A wrong hash is refused by the receiving store, and said so.
    let fake = RemotePathInfo {
        nar_hash: "sha256:1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s".into(),
        ..infos[0].clone()
    };
    let other = tempfile::tempdir().unwrap();
    let mut remote = nix.serve_store(Some(other.path().to_str().unwrap())).await.unwrap();
    let only_out = RemotePathInfo { references: vec![out.clone()], ..fake };
    let err = local.copy_path(&only_out, &mut remote).await.unwrap_err().to_string();
    assert!(err.contains("hash mismatch") || err.contains("stopped"), "{err}");
}

#[tokio::test]
async fn a_closed_far_side_says_why() {
    let nix = nix();
    let mut connection = nix.serve_local().await.unwrap();
    connection.write_u64(42).await.unwrap();
    connection.flush().await.unwrap();
    let err = connection.read_u64(&mut |_| {}).await.unwrap_err();
    assert!(err.to_string().contains("unknown serve command"), "{err}");
    assert!(connection.is_closed() || matches!(err, ServeError::Closed(_)));
}
