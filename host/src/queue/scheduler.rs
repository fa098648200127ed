//! The scheduling policy: which runnable step goes to which machine.
//!
//! Runnable steps are kept in one queue per *kind* — system type, required
//! features and `preferLocalBuild` — because every step of a kind can go to
//! the same machines. A kind whose machines are all busy costs nothing in a
//! pass, so a busy system never holds up another, however long its queue.
//!
//! Within a kind the order is: bumped builds first (global priority), then
//! the jobset that used least of its share of the machines in the last day
//! (build seconds divided by `schedulingshares`), then the job's
//! `meta.schedulingPriority`, then the step most others wait for, then the
//! oldest build. Across kinds the same order picks which kind fills a free
//! slot next. Among the machines that can take a step, the least loaded
//! relative to its speed factor gets it.

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::shares::ShareUsage;
use crate::machines::MachineSpec;
use crate::nix::StorePath;

pub type JobsetId = i64;

/// What decides where and when a runnable step runs.
#[derive(Debug, Clone)]
pub struct RunnableStep {
    pub drv: StorePath,
    pub kind: StepKind,
    /// The highest global priority (bump) of the builds it serves.
    pub global_priority: i64,
    /// The jobset of the most urgent build it serves.
    pub jobset: JobsetId,
    /// `meta.schedulingPriority` of that build.
    pub scheduling_priority: i32,
    /// How many steps wait for this one, directly or not.
    pub dependents: u32,
    /// The oldest build it serves.
    pub build_id: i64,
    /// When it became runnable.
    pub since: Instant,
}

/// Steps the same machines can take.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StepKind {
    pub system: String,
    pub required_features: BTreeSet<String>,
    /// `preferLocalBuild = true`: the local machine, when it can.
    pub prefer_local: bool,
}

/// A machine as one scheduling pass sees it.
#[derive(Debug, Clone)]
pub struct MachineLoad {
    pub spec: Arc<MachineSpec>,
    /// Steps running on it (including those this pass gave it).
    pub running: usize,
    /// Neither backing off after a failure nor being removed.
    pub available: bool,
}

impl MachineLoad {
    fn has_free_slot(&self) -> bool {
        self.available && self.running < self.spec.max_jobs
    }

    /// Hydra's order: least loaded for its speed, then the faster machine,
    /// then the one with the most slots left.
    fn preference(&self, other: &MachineLoad) -> Ordering {
        let load = |m: &MachineLoad| m.running as f64 / m.spec.speed_factor;
        let fill = |m: &MachineLoad| m.running as f64 / m.spec.max_jobs.max(1) as f64;
        load(self)
            .total_cmp(&load(other))
            .then_with(|| other.spec.speed_factor.total_cmp(&self.spec.speed_factor))
            .then_with(|| fill(self).total_cmp(&fill(other)))
    }
}

/// The order inside one jobset at one global priority.
type OrderKey = (Reverse<i32>, Reverse<u32>, i64, StorePath);

/// One kind's runnable steps: by global priority, then by jobset.
#[derive(Debug)]
struct KindQueue {
    kind: StepKind,
    levels: BTreeMap<Reverse<i64>, HashMap<JobsetId, BTreeSet<OrderKey>>>,
    /// The same steps by when they became runnable: the steps of a kind no
    /// machine builds time out oldest first, so a pass reads only those
    /// that expired and the next one (not 100,000 waiting steps each pass).
    by_age: BTreeSet<(Instant, StorePath)>,
}

/// The first step of a queue, with everything its rank depends on.
struct Head<'a> {
    global_priority: i64,
    usage: f64,
    key: &'a OrderKey,
    jobset: JobsetId,
}

impl Head<'_> {
    fn before(&self, other: &Head<'_>) -> bool {
        Reverse(self.global_priority)
            .cmp(&Reverse(other.global_priority))
            .then_with(|| self.usage.total_cmp(&other.usage))
            .then_with(|| self.key.cmp(other.key))
            == Ordering::Less
    }
}

impl KindQueue {
    fn head(&self, usage: &ShareUsage) -> Option<Head<'_>> {
        let (Reverse(global_priority), jobsets) = self.levels.first_key_value()?;
        jobsets
            .iter()
            .filter_map(|(jobset, keys)| keys.first().map(|key| (*jobset, key)))
            .map(|(jobset, key)| Head { global_priority: *global_priority, usage: usage.of(jobset), key, jobset })
            .min_by(|a, b| a.usage.total_cmp(&b.usage).then_with(|| a.key.cmp(b.key)))
    }
}

#[derive(Debug)]
struct Entry {
    queue: usize,
    global_priority: i64,
    jobset: JobsetId,
    key: OrderKey,
    since: Instant,
}

/// Every runnable step, ready to be matched with machines.
#[derive(Debug, Default)]
pub struct Runnable {
    queues: Vec<KindQueue>,
    queue_of_kind: HashMap<StepKind, usize>,
    entries: HashMap<StorePath, Entry>,
}

/// A step given to a machine (by its index in the pass's machines).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub drv: StorePath,
    pub machine: usize,
}

impl Runnable {
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn contains(&self, drv: &StorePath) -> bool {
        self.entries.contains_key(drv)
    }

    pub fn drvs(&self) -> impl Iterator<Item = &StorePath> {
        self.entries.keys()
    }

    /// Adds a step, or re-ranks it if it is there already.
    pub fn insert(&mut self, step: RunnableStep) {
        let since = self.entries.get(&step.drv).map(|e| e.since).unwrap_or(step.since);
        self.remove(&step.drv);
        let queue = match self.queue_of_kind.get(&step.kind) {
            Some(&queue) => queue,
            None => {
                self.queues.push(KindQueue {
                    kind: step.kind.clone(),
                    levels: BTreeMap::new(),
                    by_age: BTreeSet::new(),
                });
                self.queue_of_kind.insert(step.kind, self.queues.len() - 1);
                self.queues.len() - 1
            }
        };
        let key = (Reverse(step.scheduling_priority), Reverse(step.dependents), step.build_id, step.drv.clone());
        let q = &mut self.queues[queue];
        q.levels.entry(Reverse(step.global_priority)).or_default().entry(step.jobset).or_default().insert(key.clone());
        q.by_age.insert((since, step.drv.clone()));
        self.entries
            .insert(step.drv, Entry { queue, global_priority: step.global_priority, jobset: step.jobset, key, since });
    }

    pub fn remove(&mut self, drv: &StorePath) -> bool {
        let Some(entry) = self.entries.remove(drv) else {
            return false;
        };
        let q = &mut self.queues[entry.queue];
        q.by_age.remove(&(entry.since, drv.clone()));
        let level = Reverse(entry.global_priority);
        if let Some(jobsets) = q.levels.get_mut(&level) {
            if let Some(keys) = jobsets.get_mut(&entry.jobset) {
                keys.remove(&entry.key);
                if keys.is_empty() {
                    jobsets.remove(&entry.jobset);
                }
            }
            if jobsets.is_empty() {
                q.levels.remove(&level);
            }
        }
        true
    }

    /// Gives free machine slots to the most urgent steps; returns what went
    /// where, having taken those steps out and counted them on their
    /// machines (`running`) and jobsets (`usage`).
    pub fn pass(&mut self, machines: &mut [MachineLoad], usage: &mut ShareUsage) -> Vec<Assignment> {
        let local = machines.iter().position(|m| m.spec.is_local());
        // The machines each non-empty queue may use.
        let mut candidates: Vec<(usize, Vec<usize>)> = Vec::new();
        for (index, q) in self.queues.iter().enumerate().filter(|(_, q)| !q.levels.is_empty()) {
            let able: Vec<usize> = (0..machines.len())
                .filter(|&m| machines[m].spec.can_build(&q.kind.system, &q.kind.required_features))
                .collect();
            let able = match local {
                // Unless it is backing off: then whoever can.
                Some(local) if q.kind.prefer_local && able.contains(&local) && machines[local].available => vec![local],
                _ => able,
            };
            candidates.push((index, able));
        }
        let mut assignments = Vec::new();
        loop {
            let mut best: Option<(usize, Head<'_>)> = None;
            for (queue, able) in &candidates {
                if !able.iter().any(|&m| machines[m].has_free_slot()) {
                    continue;
                }
                let Some(head) = self.queues[*queue].head(usage) else { continue };
                if best.as_ref().is_none_or(|(_, b)| head.before(b)) {
                    best = Some((*queue, head));
                }
            }
            let Some((queue, head)) = best else { break };
            let (drv, jobset) = (head.key.3.clone(), head.jobset);
            let able = &candidates.iter().find(|(q, _)| *q == queue).expect("candidate queue").1;
            let machine = able
                .iter()
                .copied()
                .filter(|&m| machines[m].has_free_slot())
                .min_by(|&a, &b| machines[a].preference(&machines[b]))
                .expect("a free machine");
            self.remove(&drv);
            machines[machine].running += 1;
            usage.charge(jobset);
            assignments.push(Assignment { drv, machine });
        }
        assignments
    }

    /// Steps that no configured machine can build (none has their system
    /// and features) and that have waited `timeout` or longer; and when the
    /// next of the others will have.
    pub fn unsupported(
        &self,
        machines: &[MachineLoad],
        now: Instant,
        timeout: Duration,
    ) -> (Vec<StorePath>, Option<Instant>) {
        let mut expired = Vec::new();
        let mut next: Option<Instant> = None;
        for q in self.queues.iter().filter(|q| !q.levels.is_empty()) {
            if machines.iter().any(|m| m.spec.can_build(&q.kind.system, &q.kind.required_features)) {
                continue;
            }
            for (since, drv) in &q.by_age {
                let deadline = *since + timeout;
                if deadline > now {
                    next = Some(next.map_or(deadline, |n| n.min(deadline)));
                    break;
                }
                expired.push(drv.clone());
            }
        }
        (expired, next)
    }

    /// The kind of a runnable step.
    pub fn kind_of(&self, drv: &StorePath) -> Option<&StepKind> {
        self.entries.get(drv).map(|e| &self.queues[e.queue].kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machines::MachineFields;

    fn drv(name: &str) -> StorePath {
        StorePath::parse(&format!("/nix/store/{:0<32}-{name}.drv", name.len())).unwrap()
    }

    fn kind(system: &str, features: &[&str]) -> StepKind {
        StepKind {
            system: system.into(),
            required_features: features.iter().map(|f| f.to_string()).collect(),
            prefer_local: false,
        }
    }

    fn step(name: &str, kind: StepKind, jobset: JobsetId, build_id: i64) -> RunnableStep {
        RunnableStep {
            drv: drv(name),
            kind,
            global_priority: 0,
            jobset,
            scheduling_priority: 100,
            dependents: 0,
            build_id,
            since: Instant::now(),
        }
    }

    fn machine(
        uri: &str,
        systems: &[&str],
        max_jobs: usize,
        speed: f64,
        features: &[&str],
        mandatory: &[&str],
    ) -> MachineLoad {
        let spec = MachineFields {
            uri: uri.into(),
            systems: systems.iter().map(|s| s.to_string()).collect(),
            max_jobs: Some(max_jobs),
            speed_factor: Some(speed),
            supported_features: features.iter().map(|s| s.to_string()).collect(),
            mandatory_features: mandatory.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
        .into_spec("test".into())
        .unwrap();
        MachineLoad { spec: Arc::new(spec), running: 0, available: true }
    }

    fn names(assignments: &[Assignment]) -> Vec<(String, usize)> {
        assignments.iter().map(|a| (a.drv.name().trim_end_matches(".drv").to_owned(), a.machine)).collect()
    }

    #[test]
    fn steps_go_only_where_system_and_features_allow() {
        let mut runnable = Runnable::default();
        runnable.insert(step("plain", kind("x86_64-linux", &[]), 1, 1));
        runnable.insert(step("kvm", kind("x86_64-linux", &["kvm"]), 1, 2));
        runnable.insert(step("arm", kind("aarch64-linux", &[]), 1, 3));
        runnable.insert(step("bench", kind("x86_64-linux", &["benchmark"]), 1, 4));
        let mut machines = vec![
            machine("localhost", &["x86_64-linux"], 4, 1.0, &[], &[]),
            machine("ssh://kvm", &["x86_64-linux"], 4, 1.0, &["kvm"], &["kvm"]),
        ];
        let assigned = runnable.pass(&mut machines, &mut ShareUsage::default());
        let mut got = names(&assigned);
        got.sort();
        assert_eq!(got, [("kvm".to_owned(), 1), ("plain".to_owned(), 0)]);
        assert_eq!(runnable.drvs().count(), 2, "arm and benchmark wait");
        let (expired, next) =
            runnable.unsupported(&machines, Instant::now() + Duration::from_secs(5), Duration::from_secs(10));
        assert!(expired.is_empty() && next.is_some());
        let (mut expired, _) =
            runnable.unsupported(&machines, Instant::now() + Duration::from_secs(11), Duration::from_secs(10));
        expired.sort();
        assert_eq!(expired, [drv("arm"), drv("bench")]);
    }

    #[test]
    fn unsupported_steps_expire_oldest_first_and_keep_their_age_when_reranked() {
        let start = Instant::now();
        let arm = kind("aarch64-linux", &[]);
        let mut runnable = Runnable::default();
        for (i, name) in ["a", "b", "c", "d"].into_iter().enumerate() {
            let since = start + Duration::from_secs(i as u64);
            runnable.insert(RunnableStep { since, ..step(name, arm.clone(), 1, i as i64) });
        }
        // Ranked again (more dependents now): it keeps the time it became
        // runnable, so it neither expires later nor moves in the order.
        runnable.insert(RunnableStep { dependents: 9, since: start + Duration::from_secs(60), ..step("a", arm, 1, 0) });
        runnable.remove(&drv("b"));
        let machines = vec![machine("localhost", &["x86_64-linux"], 4, 1.0, &[], &[])];
        let timeout = Duration::from_secs(10);

        let (expired, next) = runnable.unsupported(&machines, start + Duration::from_secs(12), timeout);
        assert_eq!(expired, [drv("a"), drv("c")]);
        assert_eq!(next, Some(start + Duration::from_secs(13)), "d, which became runnable at 3 s");
        let (expired, next) = runnable.unsupported(&machines, start + Duration::from_secs(9), timeout);
        assert!(expired.is_empty());
        assert_eq!(next, Some(start + Duration::from_secs(10)));
    }

    #[test]
    fn bumped_builds_go_first_then_priority_dependents_and_age() {
        let mut runnable = Runnable::default();
        let x86 = kind("x86_64-linux", &[]);
        runnable.insert(step("old", x86.clone(), 1, 1));
        runnable.insert(step("new", x86.clone(), 1, 9));
        runnable.insert(RunnableStep { dependents: 5, ..step("needed", x86.clone(), 1, 8) });
        runnable.insert(RunnableStep { scheduling_priority: 200, ..step("urgent", x86.clone(), 1, 7) });
        runnable.insert(RunnableStep { global_priority: 10, ..step("bumped", x86.clone(), 1, 10) });
        let mut order = Vec::new();
        for _ in 0..5 {
            let mut machines = vec![machine("localhost", &["x86_64-linux"], 1, 1.0, &[], &[])];
            let assigned = runnable.pass(&mut machines, &mut ShareUsage::default());
            order.extend(names(&assigned).into_iter().map(|(n, _)| n));
        }
        assert_eq!(order, ["bumped", "urgent", "needed", "old", "new"]);
    }

    #[test]
    fn jobsets_share_the_machines_by_their_shares() {
        let mut runnable = Runnable::default();
        let x86 = kind("x86_64-linux", &[]);
        for i in 0..20 {
            runnable.insert(step(&format!("a{i}"), x86.clone(), 1, i));
            runnable.insert(step(&format!("b{i}"), x86.clone(), 2, 100 + i));
        }
        let mut usage = ShareUsage::default();
        usage.set(1, 0.0, 1, 1.0);
        usage.set(2, 0.0, 3, 1.0);
        let mut machines = vec![machine("localhost", &["x86_64-linux"], 8, 1.0, &[], &[])];
        let assigned = runnable.pass(&mut machines, &mut usage);
        let from_a = assigned.iter().filter(|a| a.drv.name().starts_with('a')).count();
        assert_eq!((from_a, assigned.len() - from_a), (2, 6));
    }

    #[test]
    fn a_busy_system_does_not_hold_up_another() {
        let mut runnable = Runnable::default();
        for i in 0..1000 {
            runnable.insert(step(&format!("x{i}"), kind("x86_64-linux", &[]), 1, i));
        }
        runnable.insert(step("arm", kind("aarch64-linux", &[]), 1, 5000));
        let mut machines = vec![
            machine("localhost", &["x86_64-linux"], 2, 1.0, &[], &[]),
            machine("ssh://arm", &["aarch64-linux"], 1, 1.0, &[], &[]),
        ];
        let assigned = runnable.pass(&mut machines, &mut ShareUsage::default());
        assert_eq!(assigned.len(), 3);
        assert!(assigned.contains(&Assignment { drv: drv("arm"), machine: 1 }));
    }

    #[test]
    fn the_least_loaded_machine_for_its_speed_gets_the_step() {
        let mut runnable = Runnable::default();
        for i in 0..6 {
            runnable.insert(step(&format!("s{i}"), kind("x86_64-linux", &[]), 1, i));
        }
        let mut machines = vec![
            machine("ssh://slow", &["x86_64-linux"], 4, 1.0, &[], &[]),
            machine("ssh://fast", &["x86_64-linux"], 4, 2.0, &[], &[]),
        ];
        let assigned = runnable.pass(&mut machines, &mut ShareUsage::default());
        let on = |m: usize| assigned.iter().filter(|a| a.machine == m).count();
        assert_eq!((on(0), on(1)), (2, 4));
        assert_eq!(assigned[0].machine, 1, "the faster of two idle machines first");
    }

    #[test]
    fn prefer_local_build_stays_local_when_it_can() {
        let mut runnable = Runnable::default();
        let local_kind = StepKind { prefer_local: true, ..kind("x86_64-linux", &[]) };
        runnable.insert(step("small", local_kind, 1, 1));
        let mut machines = vec![
            machine("ssh://fast", &["x86_64-linux"], 4, 10.0, &[], &[]),
            machine("localhost", &["x86_64-linux"], 1, 1.0, &[], &[]),
        ];
        let assigned = runnable.pass(&mut machines, &mut ShareUsage::default());
        assert_eq!(assigned, [Assignment { drv: drv("small"), machine: 1 }]);
    }

    #[test]
    fn unavailable_machines_get_nothing_but_still_count_as_support() {
        let mut runnable = Runnable::default();
        runnable.insert(step("s", kind("x86_64-linux", &[]), 1, 1));
        let mut machines = vec![machine("ssh://b", &["x86_64-linux"], 4, 1.0, &[], &[])];
        machines[0].available = false;
        assert!(runnable.pass(&mut machines, &mut ShareUsage::default()).is_empty());
        let (expired, next) = runnable.unsupported(&machines, Instant::now() + Duration::from_secs(99), Duration::ZERO);
        assert!(expired.is_empty() && next.is_none());
    }
}
