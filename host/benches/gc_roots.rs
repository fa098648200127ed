//! What a full update of the GC roots costs with 20,000 finished builds
//! (10 jobsets of 2,000 jobs, every output a real store path): the first
//! update (every root added), an update with nothing to change, and the
//! sweep for collected outputs — against the floors: creating 20,000
//! hard links with plain syscalls (what the roots are), one `nix-store --check-validity` of the
//! same paths, and the one-process-per-path `nix-store --add-root` that
//! the roots directory replaces (timed on 200 paths, scaled to 20,000).
//!
//!     NIX_CONFIG=$'substituters =' cargo bench -p orthrus --bench gc_roots
//!
//! Needs Nix (a writable store); prints figures; asserts nothing.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use orthrus::config::Config;
use orthrus::db::{Expect, FinishedBuild, JobsetSettings, NewEval, NewJob, ProjectSettings};
use orthrus::domain::BuildStatus;
use orthrus::gc::GcRoots;
use orthrus::nix::{Nix, StorePath};
use orthrus::plugins::{PluginRuntime, RuntimeSetup};

const JOBSETS: usize = 10;
const JOBS: usize = 2_000;
const NAIVE_SAMPLE: usize = 200;

/// Adds one small file per build to the store; returns their paths.
fn real_outputs(dir: &Path, count: usize) -> Vec<String> {
    let files = dir.join("outputs");
    std::fs::create_dir_all(&files).unwrap();
    let names: Vec<_> = (0..count)
        .map(|i| {
            let file = files.join(format!("gc-bench-output-{i}"));
            std::fs::write(&file, format!("output {i}\n")).unwrap();
            file
        })
        .collect();
    let mut paths = Vec::with_capacity(count);
    for chunk in names.chunks(2_000) {
        let out = Command::new("nix-store").arg("--add").args(chunk).output().expect("nix-store is on PATH");
        assert!(out.status.success(), "nix-store --add: {}", String::from_utf8_lossy(&out.stderr));
        paths.extend(String::from_utf8(out.stdout).unwrap().lines().map(str::to_owned));
    }
    paths
}

fn seconds(d: Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let roots_dir = dir.path().join("roots");
    let mut config = Config { data_dir: dir.path().join("data"), ..Config::default() };
    config.gc.roots_dir = roots_dir.clone();
    config.gc.min_root_age_secs = 0;
    std::fs::create_dir_all(&config.data_dir).unwrap();
    let db = orthrus::server::open_db(&config).await.unwrap();
    let nix = Nix::new(&config.nix);
    let plugins =
        PluginRuntime::start(RuntimeSetup::from_config(&config).await, db.clone(), nix.clone()).await.unwrap();

    let started = Instant::now();
    let outputs = real_outputs(dir.path(), JOBSETS * JOBS);
    println!("setup: {} store paths added in {}", outputs.len(), seconds(started.elapsed()));

    let started = Instant::now();
    let (project, _) = db.save_project("bench", &ProjectSettings::new("bench"), Expect::Anything).await.unwrap();
    let mut build_ids = Vec::new();
    for j in 0..JOBSETS {
        let settings = JobsetSettings { keep_nr: 3, ..JobsetSettings::new(&format!("js{j}")) };
        let (jobset, _) = db.save_jobset(&project, &settings.name, &settings, Expect::Anything).await.unwrap();
        let jobs = (0..JOBS)
            .map(|i| {
                let output = &outputs[j * JOBS + i];
                let hash = &Path::new(output).file_name().unwrap().to_str().unwrap()[..32];
                // Derivations that are not in the store: the update checks them too.
                let drv = format!("{}/{hash}-job-{i}.drv", orthrus::nix::store_dir());
                NewJob::plain(&format!("job{i}"), &format!("job-{i}"), drv, "x86_64-linux", output.clone())
            })
            .collect();
        let eval = NewEval::of_jobs(jobset.id, 1, format!("bench-{j}"), jobs);
        build_ids.extend(db.record_eval(&eval).await.unwrap().new_builds);
    }
    let finished: Vec<FinishedBuild> =
        build_ids.iter().map(|&id| FinishedBuild::ended(id, BuildStatus::Succeeded, 1, 2)).collect();
    for chunk in finished.chunks(1_000) {
        db.finish_builds(chunk).await.unwrap();
    }
    println!("setup: {} finished builds recorded in {}", build_ids.len(), seconds(started.elapsed()));

    let roots = GcRoots::new(&config, db.clone(), nix.clone(), plugins);
    let started = Instant::now();
    let plan = roots.plan().await.unwrap();
    let planned = started.elapsed();
    roots.apply(&plan).await.unwrap();
    let first = started.elapsed();
    println!("first full update: {} ({} to plan), {} roots added", seconds(first), seconds(planned), plan.add.len());
    assert_eq!(plan.add.len(), outputs.len(), "every output is rooted");

    let started = Instant::now();
    let plan = roots.plan().await.unwrap();
    roots.apply(&plan).await.unwrap();
    let unchanged = started.elapsed();
    println!("update with nothing to change: {} ({} kept)", seconds(unchanged), plan.kept);

    // The sweep skips rooted paths; measured here without that shortcut,
    // every output checked in the store.
    let started = Instant::now();
    let (_, collected) = roots.sweep_collected(None, &Default::default(), Duration::MAX).await.unwrap();
    let sweep = started.elapsed();
    println!("sweep for collected outputs, every output checked: {} ({collected} collected)", seconds(sweep));
    let started = Instant::now();
    roots.sweep_collected(None, &plan.wanted, Duration::MAX).await.unwrap();
    println!("sweep for collected outputs, rooted ones skipped: {}", seconds(started.elapsed()));

    // Floors and the naive way, in the same run.
    let floor_dir = dir.path().join("floor");
    std::fs::create_dir_all(&floor_dir).unwrap();
    // The roots are hard links of an empty file (`gc/links.rs`).
    let anchor = floor_dir.join(".anchor");
    std::fs::write(&anchor, "").unwrap();
    let started = Instant::now();
    for path in &outputs {
        let name = Path::new(path).file_name().unwrap();
        std::fs::hard_link(&anchor, floor_dir.join(name)).unwrap();
    }
    let links = started.elapsed();
    println!("floor: {} hard links with plain syscalls: {}", outputs.len(), seconds(links));

    let parsed: Vec<StorePath> = outputs.iter().map(|p| StorePath::parse(p).unwrap()).collect();
    let started = Instant::now();
    nix.invalid_paths(&parsed).await.unwrap();
    let validity = started.elapsed();
    println!("floor: nix-store --check-validity of {} paths: {}", outputs.len(), seconds(validity));

    let naive_dir = dir.path().join("naive");
    std::fs::create_dir_all(&naive_dir).unwrap();
    let started = Instant::now();
    for path in &outputs[..NAIVE_SAMPLE] {
        let link = naive_dir.join(Path::new(path).file_name().unwrap());
        let out = Command::new("nix-store")
            .args(["--realise", "--add-root"])
            .arg(&link)
            .arg("--indirect")
            .arg(path)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let naive = started.elapsed().mul_f64(outputs.len() as f64 / NAIVE_SAMPLE as f64);
    println!("naive: one nix-store --add-root per path, scaled to {}: {}", outputs.len(), seconds(naive));

    println!(
        "ratios: first update / (hard links + validity check) = {:.2}; naive / first update = {:.1}",
        first.as_secs_f64() / (links + validity).as_secs_f64(),
        naive.as_secs_f64() / first.as_secs_f64()
    );
}
