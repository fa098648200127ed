//! The box: what a program run for a plugin finds, and what it cannot.

use super::plan::find_program;
use super::*;

#[test]
fn programs_are_found_on_the_path() {
    let path = std::env::var("PATH").unwrap();
    assert!(find_program("sh", &path).is_some());
    assert_eq!(find_program("no-such-program-here", &path), None);
    assert_eq!(find_program("bin/sh", &path), None, "a relative path is no program");
}

#[tokio::test]
async fn a_missing_bwrap_refuses_every_program() {
    let dir = tempfile::tempdir().unwrap();
    let settings = SandboxSettings {
        bwrap: "/nonexistent/bwrap".into(),
        path: std::env::var("PATH").unwrap(),
        runtime_dir: dir.path().to_owned(),
        ..Default::default()
    };
    let sandbox = Sandbox::new(&settings).await;
    assert!(sandbox.unavailable().unwrap().contains("not installed"), "{:?}", sandbox.unavailable());
    let run = Run {
        program: "true",
        args: &[],
        scratch: dir.path(),
        workdir: Path::new(""),
        network: false,
        credentials: &Credentials::default(),
    };
    assert!(sandbox.command(&run).unwrap_err().contains("programs are refused"));
}
