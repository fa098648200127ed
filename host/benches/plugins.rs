//! What plugins cost: one call (a fresh instance and `metadata()`), the
//! cold compilation and the cached load of each shipped plugin, and a git
//! fetch through the plugin beside `git clone` of the same repository.
//!
//!     cargo bench -p orthrus --bench plugins [-- SECTION…]
//!
//! SECTION is `compile`, `call` or `git` (all three without one); `profile`
//! makes 200,000 production calls and nothing else, for `perf record`.
//! Prints figures; asserts nothing.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use orthrus::config::{NixConfig, PluginsConfig};
use orthrus::db::Db;
use orthrus::nix::Nix;
use orthrus::plugins::{EngineTuning, PluginRuntime, RuntimeSetup};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn git(dir: &Path, args: &[&str]) {
    let status = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "Bench")
        .env("GIT_AUTHOR_EMAIL", "bench@example.org")
        .env("GIT_COMMITTER_NAME", "Bench")
        .env("GIT_COMMITTER_EMAIL", "bench@example.org")
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "git {args:?}");
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(&format!("sqlite://{}", dir.path().join("db.sqlite").display())).await.unwrap();
    let nix = Nix::new(&NixConfig::default());
    let config = PluginsConfig::default();
    let sections: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let wanted = |section: &str| sections.is_empty() || sections.iter().any(|s| s == section);

    if sections.iter().any(|s| s == "profile") {
        let setup = RuntimeSetup::in_dir(dir.path(), config.clone(), Vec::new()).await;
        let runtime = PluginRuntime::start(setup, db.clone(), nix.clone()).await.unwrap();
        println!("calling (pid {}): attach `perf record -g -p PID` now", std::process::id());
        let started = Instant::now();
        for _ in 0..200_000 {
            runtime.describe("git").await.unwrap();
        }
        println!("200,000 calls: {:.1} µs each", started.elapsed().as_secs_f64() * 1e6 / 200_000.0);
        return;
    }
    if wanted("compile") {
        compile_and_load(dir.path(), &db, &nix, &config).await;
    }
    if wanted("call") || wanted("git") {
        calls_and_git(dir.path(), &db, &nix, &config, wanted("call"), wanted("git")).await;
    }
}

/// Cold compilation and cached load, per shipped plugin.
async fn compile_and_load(dir: &Path, db: &Db, nix: &Nix, config: &PluginsConfig) {
    let dir = tempfile::tempdir_in(dir).unwrap();
    println!("plugin            cold compile+load   cached load");
    let components = PluginRuntime::builtin_components();
    for (i, bytes) in components.iter().enumerate() {
        let file = dir.path().join(format!("plugin-{i}.wasm"));
        std::fs::write(&file, bytes).unwrap();
        let cache = dir.path().join(format!("cache-{i}"));
        let mut setup = RuntimeSetup::in_dir(dir.path(), config.clone(), Vec::new()).await;
        setup.cache_dir = cache.clone();
        let runtime = PluginRuntime::start(setup, db.clone(), nix.clone()).await.unwrap();
        // Starting compiled the built-in plugins into the cache: empty it.
        std::fs::remove_dir_all(&cache).unwrap();
        let started = Instant::now();
        let info = runtime.inspect(&file, config).await.unwrap();
        let cold = started.elapsed();
        let started = Instant::now();
        runtime.inspect(&file, config).await.unwrap();
        let cached = started.elapsed();
        println!(
            "{:17} {:>10.1} ms {:>16.2} ms",
            info.metadata.name,
            cold.as_secs_f64() * 1e3,
            cached.as_secs_f64() * 1e3
        );
    }
}

/// One call, in each engine variant; then a git fetch beside `git clone`.
async fn calls_and_git(dir: &Path, db: &Db, nix: &Nix, config: &PluginsConfig, call: bool, fetch: bool) {
    // One call: a fresh store, instantiation, `metadata()`; in production
    // trim, then with one piece of the engine off at a time (interleaved
    // rounds, so that the machine's drift hits them all alike), to tell
    // what each costs.
    let repo = dir.join("repo");
    std::fs::create_dir(&repo).unwrap();
    let production = EngineTuning::default();
    let variants = [
        ("production (pooling, pagemap reset, fuel yields)", production),
        ("with epoch interruption as well", EngineTuning { epoch: true, ..production }),
        ("epoch interruption instead of fuel", EngineTuning { epoch: true, fuel: false, ..production }),
        ("neither fuel nor epoch (no preemption)", EngineTuning { fuel: false, ..production }),
        ("memory reset by madvise (no pagemap)", EngineTuning { pagemap: false, ..production }),
        ("without the pooling allocator", EngineTuning { pooling: false, pagemap: false, ..production }),
    ];
    let mut runtimes = Vec::new();
    for (_, tuning) in variants {
        let mut setup = RuntimeSetup::in_dir(dir, config.clone(), vec![repo.clone()]).await;
        setup.tuning = tuning;
        let runtime = PluginRuntime::start(setup, db.clone(), nix.clone()).await.unwrap();
        for _ in 0..200 {
            runtime.describe("git").await.unwrap();
        }
        runtimes.push(runtime);
    }
    let mut times: Vec<Vec<Duration>> = vec![Vec::with_capacity(5000); variants.len()];
    for _round in 0..if call { 10 } else { 0 } {
        for (runtime, times) in runtimes.iter().zip(&mut times) {
            for _ in 0..500 {
                let started = Instant::now();
                runtime.describe("git").await.unwrap();
                times.push(started.elapsed());
            }
        }
    }
    let runtime = runtimes.swap_remove(0);
    if call {
        print_calls(&variants, &mut times);
    }
    if fetch {
        git_fetch(dir, &repo, &runtime).await;
    }
}

fn print_calls(variants: &[(&str, EngineTuning)], times: &mut [Vec<Duration>]) {
    println!("\none call (instantiate + metadata), 5000 calls each     median      p99   vs production");
    let production_median = {
        let mut sorted = times[0].clone();
        sorted.sort();
        percentile(&sorted, 0.5)
    };
    for ((label, _), times) in variants.iter().zip(times.iter_mut()) {
        times.sort();
        let median = percentile(times, 0.5);
        println!(
            "{label:52} {:6.1} µs {:6.1} µs   {:+5.1} µs",
            median.as_secs_f64() * 1e6,
            percentile(times, 0.99).as_secs_f64() * 1e6,
            (median.as_secs_f64() - production_median.as_secs_f64()) * 1e6
        );
    }
}

async fn git_fetch(dir: &Path, repo: &Path, runtime: &PluginRuntime) {
    // A git fetch through the plugin (its git in the sandbox), beside git clone.
    git(repo, &["init", "-q", "-b", "main"]);
    for commit in 0..50 {
        for file in 0..20 {
            std::fs::write(repo.join(format!("file{file}.txt")), format!("commit {commit} file {file}\n").repeat(200))
                .unwrap();
        }
        git(repo, &["add", "-A"]);
        git(repo, &["commit", "-q", "-m", &format!("commit {commit}")]);
    }
    let url = format!("file://{}", repo.display());
    let mut direct = Vec::new();
    for run in 0..5 {
        let target = dir.join(format!("clone-{run}"));
        let started = Instant::now();
        let status = Command::new("git").args(["clone", "-q", "--no-local", &url]).arg(&target).status().unwrap();
        assert!(status.success());
        direct.push(started.elapsed());
    }
    direct.sort();
    let started = Instant::now();
    runtime.fetch("git", "src", &url).await.unwrap();
    let first = started.elapsed();
    let mut again = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        runtime.fetch("git", "src", &url).await.unwrap();
        again.push(started.elapsed());
    }
    again.sort();
    let clone = percentile(&direct, 0.5);
    println!("\ngit repository: 50 commits of 20 files");
    println!("git clone --no-local, directly:               {:8.1} ms", clone.as_secs_f64() * 1e3);
    println!(
        "fetch through the plugin, first (clone, checkout, add to store): {:8.1} ms (ratio {:.2})",
        first.as_secs_f64() * 1e3,
        first.as_secs_f64() / clone.as_secs_f64()
    );
    println!(
        "fetch through the plugin, again (fetch, checkout, add to store): {:8.1} ms (ratio {:.2})",
        percentile(&again, 0.5).as_secs_f64() * 1e3,
        percentile(&again, 0.5).as_secs_f64() / clone.as_secs_f64()
    );
}
