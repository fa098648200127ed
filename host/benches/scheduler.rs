//! What one scheduling pass costs: 100,000 runnable steps of 4 system
//! types (a tenth needing a feature) in 50 jobsets, matched with 20
//! machines of 8 slots each.
//!
//!     cargo bench -p orthrus --bench scheduler
//!
//! Prints figures; asserts nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use orthrus::machines::MachineFields;
use orthrus::nix::StorePath;
use orthrus::queue::scheduler::{MachineLoad, Runnable, RunnableStep, StepKind};
use orthrus::queue::shares::ShareUsage;

const STEPS: usize = 100_000;
const MACHINES: usize = 20;
const SLOTS: usize = 8;
const JOBSETS: i64 = 50;
const SYSTEMS: [&str; 4] = ["x86_64-linux", "aarch64-linux", "i686-linux", "riscv64-linux"];

/// A small deterministic generator, so every run measures the same queue.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % below
    }
}

fn steps() -> Vec<RunnableStep> {
    let mut random = Lcg(42);
    let now = Instant::now();
    (0..STEPS)
        .map(|i| {
            let system = SYSTEMS[random.next(SYSTEMS.len() as u64) as usize];
            let features = if random.next(10) == 0 { vec!["big-parallel".to_owned()] } else { Vec::new() };
            RunnableStep {
                drv: StorePath::parse(&format!("/nix/store/{:032}-step-{i}.drv", i)).unwrap(),
                kind: StepKind {
                    system: system.into(),
                    required_features: features.into_iter().collect(),
                    prefer_local: false,
                },
                global_priority: if random.next(1000) == 0 { 10 } else { 0 },
                jobset: random.next(JOBSETS as u64) as i64,
                scheduling_priority: 100 + random.next(3) as i32 * 50,
                dependents: random.next(20) as u32,
                build_id: i as i64,
                since: now,
            }
        })
        .collect()
}

fn machines() -> Vec<MachineLoad> {
    (0..MACHINES)
        .map(|i| {
            // Each machine builds two of the systems; every fourth has big-parallel.
            let systems = vec![SYSTEMS[i % 4].to_owned(), SYSTEMS[(i + 1) % 4].to_owned()];
            let features = if i % 4 == 0 { vec!["big-parallel".to_owned()] } else { Vec::new() };
            let spec = MachineFields {
                uri: format!("ssh://builder{i}"),
                systems,
                max_jobs: Some(SLOTS),
                speed_factor: Some(1.0 + (i % 3) as f64),
                supported_features: features,
                ..Default::default()
            }
            .into_spec("bench".into())
            .unwrap();
            MachineLoad { spec: Arc::new(spec), running: 0, available: true }
        })
        .collect()
}

fn usage() -> ShareUsage {
    let mut usage = ShareUsage::default();
    for jobset in 0..JOBSETS {
        usage.set(jobset, (jobset * 37 % 500) as f64, 1 + (jobset % 5) as u32 * 50, 30.0);
    }
    usage
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn main() {
    let steps = steps();
    let by_drv: std::collections::HashMap<StorePath, RunnableStep> =
        steps.iter().map(|s| (s.drv.clone(), s.clone())).collect();

    let start = Instant::now();
    let mut runnable = Runnable::default();
    for step in &steps {
        runnable.insert(step.clone());
    }
    let insert = start.elapsed();

    // Passes with every slot free: each gives out all 160 slots; the steps
    // given out are put back before the next pass.
    let mut free_passes = Vec::new();
    let mut assigned = 0;
    for _ in 0..50 {
        let mut loads = machines();
        let mut usage = usage();
        let start = Instant::now();
        let assignments = runnable.pass(&mut loads, &mut usage);
        free_passes.push(start.elapsed());
        assigned = assignments.len();
        for assignment in assignments {
            runnable.insert(by_drv[&assignment.drv].clone());
        }
    }

    // Passes with every slot taken: the common case while a big queue drains.
    let mut full_passes = Vec::new();
    for _ in 0..200 {
        let mut loads = machines();
        for load in &mut loads {
            load.running = SLOTS;
        }
        let mut usage = usage();
        let start = Instant::now();
        let assignments = runnable.pass(&mut loads, &mut usage);
        full_passes.push(start.elapsed());
        assert!(assignments.is_empty());
    }

    // A pass that frees one slot, as when one step finished.
    let mut one_slot = Vec::new();
    for _ in 0..200 {
        let mut loads = machines();
        for load in &mut loads {
            load.running = SLOTS;
        }
        loads[7].running = SLOTS - 1;
        let mut usage = usage();
        let start = Instant::now();
        let assignments = runnable.pass(&mut loads, &mut usage);
        one_slot.push(start.elapsed());
        for assignment in assignments {
            runnable.insert(by_drv[&assignment.drv].clone());
        }
    }

    // Without the machines that build riscv64 a quarter of the steps wait
    // as unsupported: each pass asks which of them waited too long.
    let without_riscv: Vec<MachineLoad> =
        machines().into_iter().filter(|m| !m.spec.systems.iter().any(|s| s == "riscv64-linux")).collect();
    let unsupported_steps = steps.iter().filter(|s| s.kind.system == "riscv64-linux").count();
    let mut unsupported = Vec::new();
    for _ in 0..200 {
        let start = Instant::now();
        let (expired, next) = runnable.unsupported(&without_riscv, Instant::now(), Duration::from_secs(3600));
        unsupported.push(start.elapsed());
        assert!(expired.is_empty() && next.is_some());
    }

    println!(
        "runnable steps:                    {STEPS} ({} systems, with and without a feature; {JOBSETS} jobsets)",
        SYSTEMS.len()
    );
    println!("machines:                          {MACHINES} x {SLOTS} slots");
    println!(
        "insert all steps:                  {:8.1} ms ({:.2} µs per step)",
        insert.as_secs_f64() * 1e3,
        insert.as_secs_f64() * 1e6 / STEPS as f64
    );
    println!(
        "pass, all {} slots free:          {:8.1} µs median ({assigned} steps given out)",
        MACHINES * SLOTS,
        median(free_passes).as_secs_f64() * 1e6
    );
    println!("pass, one slot free:               {:8.1} µs median", median(one_slot).as_secs_f64() * 1e6);
    println!("pass, every slot taken:            {:8.1} µs median", median(full_passes).as_secs_f64() * 1e6);
    println!(
        "unsupported steps expired, {unsupported_steps} waiting: {:8.1} µs median",
        median(unsupported).as_secs_f64() * 1e6
    );
}
