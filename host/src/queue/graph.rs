//! The step graph: which derivations must be built for the queued builds,
//! what each waits for, and which build each one serves.
//!
//! A step is shared by every build that needs it (a common dependency is
//! built once). A build waits for its *roots*: its own derivation and, for
//! an aggregate, its constituents' derivations — the roots that still need
//! building. A step whose outputs are already valid never enters the graph.

use std::cmp::Reverse;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use super::scheduler::{RunnableStep, StepKind};
use crate::db::{Db, NewStep, QueuedBuild, StepType};
use crate::domain::StepStatus;
use crate::nix::{Derivation, Nix, NixError, StorePath};

/// Counting the steps that wait for a step stops here: beyond, the count
/// no longer changes the order much and would cost too much in huge graphs.
const MAX_DEPENDENTS_COUNTED: u32 = 10_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepState {
    /// Waiting for its dependencies, or runnable when it has none left.
    Pending,
    Running,
    /// Known to fail without running: a cached failure or an unreadable
    /// derivation. Failed (with this status) as soon as it is seen.
    FailsAtOnce {
        status: StepStatus,
        message: String,
    },
}

#[derive(Debug)]
pub struct Step {
    pub derivation: Arc<Derivation>,
    pub state: StepState,
    /// Unfinished steps this one waits for.
    deps: HashSet<StorePath>,
    /// Steps waiting for this one.
    rdeps: HashSet<StorePath>,
    /// Builds for which this is a root.
    roots_of: HashSet<i64>,
}

/// A queued build as the graph tracks it.
#[derive(Debug, Clone)]
pub struct TrackedBuild {
    pub id: i64,
    pub jobset_id: i64,
    pub top: StorePath,
    pub global_priority: i64,
    pub priority: i32,
    pub timeout: i32,
    pub max_silent: i32,
    /// Roots still to be built.
    pending: HashSet<StorePath>,
    /// Nothing had to be built for it: its outputs were all valid already.
    pub never_started: bool,
}

#[derive(Debug, Default)]
pub struct Graph {
    steps: HashMap<StorePath, Step>,
    builds: HashMap<i64, TrackedBuild>,
    /// Steps that became runnable since the runner last asked.
    ready: Vec<StorePath>,
}

impl Graph {
    pub fn build_ids(&self) -> impl Iterator<Item = i64> + '_ {
        self.builds.keys().copied()
    }

    pub fn has_build(&self, id: i64) -> bool {
        self.builds.contains_key(&id)
    }

    pub fn system_of(&self, drv: &StorePath) -> Option<String> {
        self.steps.get(drv).map(|s| s.derivation.system.clone())
    }

    pub fn is_complete(&self, build_id: i64) -> bool {
        self.builds.get(&build_id).is_some_and(|b| b.pending.is_empty())
    }

    /// Sets a build's global priority; true when it changed (and so the
    /// rank of the steps it needs).
    pub fn update_priority(&mut self, build_id: i64, global_priority: i64) -> bool {
        let Some(build) = self.builds.get_mut(&build_id) else {
            return false;
        };
        if build.global_priority == global_priority {
            return false;
        }
        build.global_priority = global_priority;
        true
    }

    /// Builds served by a step, directly or through the steps waiting for it.
    fn builds_served_by(&self, drv: &StorePath) -> HashSet<i64> {
        let mut builds = HashSet::new();
        let mut seen = HashSet::new();
        let mut stack = vec![drv.clone()];
        while let Some(current) = stack.pop() {
            if !seen.insert(current.clone()) {
                continue;
            }
            if let Some(step) = self.steps.get(&current) {
                builds.extend(step.roots_of.iter().copied());
                stack.extend(step.rdeps.iter().cloned());
            }
        }
        builds
    }

    /// The build a step runs for: the most urgent one it serves. Its
    /// timeouts apply, and the step is recorded under it.
    pub fn primary_build(&self, drv: &StorePath) -> Option<TrackedBuild> {
        self.builds_served_by(drv)
            .into_iter()
            .filter_map(|id| self.builds.get(&id))
            .min_by_key(|b| (Reverse(b.global_priority), Reverse(b.priority), b.id))
            .cloned()
    }

    fn make_runnable(&mut self, drv: StorePath) {
        self.ready.push(drv);
    }

    /// The steps that became runnable since the last call.
    pub fn take_ready(&mut self) -> Vec<StorePath> {
        std::mem::take(&mut self.ready)
    }

    /// Everything the scheduler weighs about a runnable step; `None` when
    /// no build needs it any more.
    pub fn rank(&self, drv: &StorePath, now: Instant) -> Option<RunnableStep> {
        let step = self.steps.get(drv)?;
        let primary = self.primary_build(drv)?;
        let kind = step_kind(&step.derivation);
        Some(RunnableStep {
            drv: drv.clone(),
            kind,
            global_priority: primary.global_priority,
            jobset: primary.jobset_id,
            scheduling_priority: primary.priority,
            dependents: self.dependents(drv),
            build_id: primary.id,
            since: now,
        })
    }

    /// How many steps wait for this one, directly or not.
    fn dependents(&self, drv: &StorePath) -> u32 {
        let mut seen: HashSet<&StorePath> = HashSet::new();
        let mut stack: Vec<&StorePath> = self.steps.get(drv).map(|s| s.rdeps.iter().collect()).unwrap_or_default();
        while let Some(current) = stack.pop() {
            if seen.len() as u32 >= MAX_DEPENDENTS_COUNTED {
                break;
            }
            if seen.insert(current) {
                if let Some(step) = self.steps.get(current) {
                    stack.extend(step.rdeps.iter());
                }
            }
        }
        seen.len() as u32
    }

    /// The given steps and every step they wait for, directly or not.
    pub fn with_dependencies(&self, drvs: Vec<StorePath>) -> Vec<StorePath> {
        let mut seen: HashSet<StorePath> = HashSet::new();
        let mut stack = drvs;
        while let Some(drv) = stack.pop() {
            if let Some(step) = self.steps.get(&drv) {
                if seen.insert(drv) {
                    stack.extend(step.deps.iter().cloned());
                }
            }
        }
        seen.into_iter().collect()
    }

    pub fn derivation(&self, drv: &StorePath) -> Option<Arc<Derivation>> {
        self.steps.get(drv).map(|s| s.derivation.clone())
    }

    pub fn set_state(&mut self, drv: &StorePath, state: StepState) {
        if let Some(step) = self.steps.get_mut(drv) {
            step.state = state;
        }
    }

    pub fn remove_step(&mut self, drv: &StorePath) {
        if let Some(step) = self.steps.remove(drv) {
            for dep in &step.deps {
                if let Some(d) = self.steps.get_mut(dep) {
                    d.rdeps.remove(drv);
                }
            }
            for rdep in &step.rdeps {
                if let Some(r) = self.steps.get_mut(rdep) {
                    r.deps.remove(drv);
                }
            }
            for build in &step.roots_of {
                if let Some(b) = self.builds.get_mut(build) {
                    b.pending.remove(drv);
                }
            }
        }
    }

    /// Forgets a build (finished or cancelled); its steps stay while other
    /// builds need them.
    pub fn remove_build(&mut self, id: i64) -> Option<TrackedBuild> {
        let build = self.builds.remove(&id)?;
        for drv in &build.pending {
            if let Some(step) = self.steps.get_mut(drv) {
                step.roots_of.remove(&id);
            }
        }
        Some(build)
    }

    /// A step built successfully: steps waiting for it may become runnable,
    /// and builds waiting only for it are complete (returned).
    pub fn step_succeeded(&mut self, drv: &StorePath) -> Vec<i64> {
        let Some(step) = self.steps.get(drv) else {
            return Vec::new();
        };
        let rdeps: Vec<StorePath> = step.rdeps.iter().cloned().collect();
        let roots_of: Vec<i64> = step.roots_of.iter().copied().collect();
        self.remove_step(drv);
        for rdep in rdeps {
            if self.steps.get(&rdep).is_some_and(|s| s.deps.is_empty() && s.state == StepState::Pending) {
                self.make_runnable(rdep);
            }
        }
        let mut complete: Vec<i64> = roots_of.into_iter().filter(|id| self.is_complete(*id)).collect();
        complete.sort_unstable();
        complete
    }

    /// A step failed: every build it serves fails. Returns those builds,
    /// each with whether the failed step is the build's own derivation.
    pub fn step_failed(&mut self, drv: &StorePath) -> Vec<(i64, bool)> {
        let mut affected: Vec<i64> = self.builds_served_by(drv).into_iter().collect();
        affected.sort_unstable();
        let result =
            affected.into_iter().filter_map(|id| self.remove_build(id)).map(|b| (b.id, &b.top == drv)).collect();
        self.remove_step(drv);
        result
    }

    /// Steps some queued build still needs (transitively).
    fn needed(&self) -> HashSet<StorePath> {
        let mut needed = HashSet::new();
        let mut stack: Vec<&StorePath> =
            self.steps.iter().filter(|(_, s)| !s.roots_of.is_empty()).map(|(drv, _)| drv).collect();
        while let Some(drv) = stack.pop() {
            if needed.insert(drv.clone()) {
                if let Some(step) = self.steps.get(drv) {
                    stack.extend(step.deps.iter());
                }
            }
        }
        needed
    }

    pub fn is_needed(&self, drv: &StorePath) -> bool {
        !self.builds_served_by(drv).is_empty()
    }

    /// Drops waiting steps no build needs any more; returns them.
    pub fn prune_unneeded(&mut self) -> Vec<StorePath> {
        let needed = self.needed();
        let unneeded: Vec<StorePath> = self
            .steps
            .iter()
            .filter(|(drv, s)| !needed.contains(*drv) && s.state != StepState::Running)
            .map(|(drv, _)| drv.clone())
            .collect();
        for drv in &unneeded {
            self.remove_step(drv);
        }
        unneeded
    }

    /// Steps that fail without running, with their status and message.
    pub fn fails_at_once(&self) -> Vec<(StorePath, StepStatus, String)> {
        self.steps
            .iter()
            .filter_map(|(drv, s)| match &s.state {
                StepState::FailsAtOnce { status, message } => Some((drv.clone(), *status, message.clone())),
                _ => None,
            })
            .collect()
    }
}

/// Whether outputs are fetched from substituters before building
/// (`queue.use_substitutes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Substitutes {
    Use,
    BuildOnly,
}

impl Substitutes {
    pub fn from_config(use_substitutes: bool) -> Substitutes {
        if use_substitutes { Substitutes::Use } else { Substitutes::BuildOnly }
    }
}

/// Adds builds to the graph: reads their derivation closures level by
/// level, stopping at derivations whose outputs are valid (their own inputs
/// need no building), with one validity query per level for all builds.
/// With `substitutes`, outputs a substituter has are fetched instead of
/// built (as Hydra's `use-substitutes`), recorded as a substitution step
/// of the build that first needed them. Returns the steps of earlier
/// builds that the new ones need too (and so whose rank may have changed).
pub async fn expand(
    nix: &Nix,
    db: &Db,
    graph: &mut Graph,
    builds: &[QueuedBuild],
    substitutes: Substitutes,
) -> Result<Vec<StorePath>, NixError> {
    let mut shared: Vec<StorePath> = Vec::new();
    let mut new_steps: Vec<StorePath> = Vec::new();
    let mut checked: HashSet<StorePath> = HashSet::new();
    let mut frontier: Vec<(StorePath, i64)> = Vec::new();
    // The build that first reached each derivation: substitutions are
    // recorded on it.
    let mut reached_by: HashMap<StorePath, i64> = HashMap::new();
    let mut substituted: Vec<(StorePath, String, i64)> = Vec::new();
    let mut roots: HashMap<i64, (StorePath, Vec<StorePath>)> = HashMap::new();
    for build in builds {
        let parse = |p: &str| StorePath::parse(p);
        let top = match parse(&build.drv_path) {
            Ok(top) => top,
            Err(e) => {
                tracing::warn!(build = build.id, "not a derivation path: {e}");
                continue;
            }
        };
        let constituents: Vec<StorePath> = build.constituent_drvs.iter().filter_map(|d| parse(d).ok()).collect();
        frontier.push((top.clone(), build.id));
        frontier.extend(constituents.iter().map(|c| (c.clone(), build.id)));
        roots.insert(build.id, (top, constituents));
    }

    while !frontier.is_empty() {
        let mut level = Vec::new();
        for (drv, build_id) in frontier.drain(..) {
            if !checked.insert(drv.clone()) {
                continue;
            }
            reached_by.insert(drv.clone(), build_id);
            if graph.steps.contains_key(&drv) {
                shared.push(drv);
            } else {
                level.push(drv);
            }
        }
        let mut derivations = Vec::with_capacity(level.len());
        for drv in level {
            match nix.read_derivation(&drv).await {
                Ok(derivation) => derivations.push((drv, Arc::new(derivation))),
                Err(e) => {
                    // Garbage-collected, say: whatever needs it fails, the rest goes on.
                    let message = e.to_string();
                    graph.steps.insert(
                        drv.clone(),
                        new_step(
                            Arc::new(empty_derivation()),
                            StepState::FailsAtOnce { status: StepStatus::Aborted, message },
                        ),
                    );
                    new_steps.push(drv);
                }
            }
        }
        let outputs: Vec<StorePath> =
            derivations.iter().flat_map(|(_, d)| d.output_paths().map(|(_, p)| p.clone())).collect();
        let mut invalid = nix.invalid_paths(&outputs).await?;
        if substitutes == Substitutes::Use && !invalid.is_empty() {
            let mut wanted: Vec<StorePath> = invalid.iter().cloned().collect();
            wanted.sort();
            let fetched = nix.substitute(&wanted).await?;
            for (drv, derivation) in &derivations {
                let outputs: Vec<Option<&StorePath>> = derivation.outputs.values().map(|o| o.path.as_ref()).collect();
                let was_missing = outputs.iter().flatten().any(|p| invalid.contains(*p));
                let all_there = outputs.iter().all(|p| p.is_some_and(|p| !invalid.contains(p) || fetched.contains(p)));
                if was_missing && all_there {
                    substituted.push((drv.clone(), derivation.system.clone(), reached_by[drv]));
                }
            }
            invalid.retain(|p| !fetched.contains(p));
        }
        for (drv, derivation) in derivations {
            let needs_build = derivation.outputs.values().any(|o| o.path.as_ref().is_none_or(|p| invalid.contains(p)));
            if needs_build {
                let build_id = reached_by[&drv];
                frontier.extend(derivation.input_drvs.keys().map(|input| (input.clone(), build_id)));
                graph.steps.insert(drv.clone(), new_step(derivation, StepState::Pending));
                new_steps.push(drv);
            }
        }
    }

    // Edges between the new steps and the steps they wait for.
    for drv in &new_steps {
        let inputs: Vec<StorePath> = graph.steps[drv].derivation.input_drvs.keys().cloned().collect();
        let inputs: Vec<StorePath> = inputs.into_iter().filter(|i| graph.steps.contains_key(i)).collect();
        for input in inputs {
            graph.steps.get_mut(drv).expect("new step").deps.insert(input.clone());
            graph.steps.get_mut(&input).expect("input step").rdeps.insert(drv.clone());
        }
    }
    // An aggregate's own step runs after its constituents'.
    for (top, constituents) in roots.values() {
        if !graph.steps.contains_key(top) {
            continue;
        }
        let constituents: Vec<&StorePath> =
            constituents.iter().filter(|c| *c != top && graph.steps.contains_key(*c)).collect();
        for constituent in constituents {
            if graph.steps[top].deps.contains(constituent) || graph.steps[constituent].rdeps.contains(top) {
                continue;
            }
            graph.steps.get_mut(top).expect("top step").deps.insert(constituent.clone());
            graph.steps.get_mut(constituent).expect("constituent step").rdeps.insert(top.clone());
        }
    }

    for (drv, system, build_id) in substituted {
        let step = NewStep {
            kind: StepType::Substitution,
            drv_path: drv.to_string(),
            system,
            machine: crate::machines::LOCALHOST.into(),
            status: Some(StepStatus::Succeeded),
            error_msg: None,
            propagated_from: None,
        };
        if let Err(e) = db.create_step(build_id, &step).await {
            tracing::warn!(build = build_id, %drv, "cannot record a substitution: {e}");
        }
    }

    let drv_strings: Vec<String> = new_steps.iter().map(|d| d.to_string()).collect();
    let failed = db
        .failed_paths_among(&drv_strings)
        .await
        .map_err(|e| NixError::Failed { command: "reading the failed-paths cache".into(), message: e.to_string() })?;
    for drv in &new_steps {
        if failed.contains(drv.as_str()) {
            let step = graph.steps.get_mut(drv).expect("new step");
            if step.state == StepState::Pending {
                step.state = StepState::FailsAtOnce {
                    status: StepStatus::CachedFailure,
                    message: "cached failure: this derivation failed before (restart the build to try again)".into(),
                };
            }
        }
    }

    for build in builds {
        let Some((top, constituents)) = roots.remove(&build.id) else {
            continue;
        };
        let pending: HashSet<StorePath> =
            std::iter::once(top.clone()).chain(constituents).filter(|d| graph.steps.contains_key(d)).collect();
        for drv in &pending {
            graph.steps.get_mut(drv).expect("root step").roots_of.insert(build.id);
        }
        graph.builds.insert(
            build.id,
            TrackedBuild {
                id: build.id,
                jobset_id: build.jobset_id,
                top,
                global_priority: build.global_priority,
                priority: build.priority,
                timeout: build.timeout,
                max_silent: build.max_silent,
                never_started: pending.is_empty(),
                pending,
            },
        );
    }
    // Whatever waits for nothing can run now.
    let ready: Vec<StorePath> = new_steps
        .iter()
        .filter(|drv| graph.steps.get(*drv).is_some_and(|s| s.state == StepState::Pending && s.deps.is_empty()))
        .cloned()
        .collect();
    for drv in ready {
        graph.make_runnable(drv);
    }
    Ok(graph.with_dependencies(shared))
}

/// Where a derivation may be built: its system, `requiredSystemFeatures`
/// and `preferLocalBuild`.
fn step_kind(derivation: &Derivation) -> StepKind {
    StepKind {
        system: derivation.system.clone(),
        required_features: derivation.required_features(),
        prefer_local: derivation.prefers_local_build(),
    }
}

fn new_step(derivation: Arc<Derivation>, state: StepState) -> Step {
    Step { derivation, state, deps: HashSet::new(), rdeps: HashSet::new(), roots_of: HashSet::new() }
}

fn empty_derivation() -> Derivation {
    Derivation {
        outputs: Default::default(),
        input_drvs: Default::default(),
        input_srcs: Default::default(),
        system: String::new(),
        builder: String::new(),
        args: Vec::new(),
        env: Default::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(name: &str) -> StorePath {
        StorePath::parse(&format!("/nix/store/{:0<32}-{name}.drv", name.len())).unwrap()
    }

    fn new_pending_step() -> Step {
        new_step(Arc::new(empty_derivation()), StepState::Pending)
    }

    fn build(id: i64, top: &StorePath, pending: &[&StorePath]) -> TrackedBuild {
        TrackedBuild {
            id,
            jobset_id: 1,
            top: top.clone(),
            global_priority: 0,
            priority: 100,
            timeout: 10,
            max_silent: 10,
            pending: pending.iter().map(|p| (*p).clone()).collect(),
            never_started: pending.is_empty(),
        }
    }

    /// dep <- a (build 1), dep <- b (build 2, bumped)
    fn shared_dependency() -> (Graph, StorePath, StorePath, StorePath) {
        let (dep, a, b) = (path("dep"), path("a"), path("bb"));
        let mut graph = Graph::default();
        for drv in [&dep, &a, &b] {
            graph.steps.insert(drv.clone(), new_pending_step());
        }
        for top in [&a, &b] {
            graph.steps.get_mut(top).unwrap().deps.insert(dep.clone());
            graph.steps.get_mut(&dep).unwrap().rdeps.insert(top.clone());
        }
        graph.steps.get_mut(&a).unwrap().roots_of.insert(1);
        graph.steps.get_mut(&b).unwrap().roots_of.insert(2);
        graph.builds.insert(1, build(1, &a, &[&a]));
        graph.builds.insert(2, build(2, &b, &[&b]));
        graph.make_runnable(dep.clone());
        (graph, dep, a, b)
    }

    #[test]
    fn shared_step_runs_for_the_most_urgent_build() {
        let (mut graph, dep, _, _) = shared_dependency();
        assert_eq!(graph.primary_build(&dep).unwrap().id, 1);
        assert!(graph.update_priority(2, 1000));
        assert!(!graph.update_priority(2, 1000));
        assert_eq!(graph.primary_build(&dep).unwrap().id, 2);
        assert_eq!(graph.take_ready(), vec![dep.clone()]);
        let rank = graph.rank(&dep, Instant::now()).unwrap();
        assert_eq!((rank.global_priority, rank.build_id, rank.dependents), (1000, 2, 2));
        assert!(graph.take_ready().is_empty());
    }

    #[test]
    fn success_unblocks_dependents_and_completes_builds() {
        let (mut graph, dep, a, b) = shared_dependency();
        graph.take_ready();
        assert!(graph.step_succeeded(&dep).is_empty());
        let mut runnable = graph.take_ready();
        runnable.sort();
        let mut expected = vec![a.clone(), b];
        expected.sort();
        assert_eq!(runnable, expected);
        assert_eq!(graph.step_succeeded(&a), vec![1]);
    }

    #[test]
    fn failure_fails_every_build_it_serves() {
        let (mut graph, dep, _, _) = shared_dependency();
        assert_eq!(graph.step_failed(&dep), vec![(1, false), (2, false)]);
        assert!(!graph.has_build(1) && !graph.has_build(2));
        graph.prune_unneeded();
        assert!(graph.steps.is_empty());
    }

    #[test]
    fn features_and_local_preference_come_from_env_or_structured_attrs() {
        let mut drv = empty_derivation();
        drv.system = "x86_64-linux".into();
        drv.env.insert("requiredSystemFeatures".into(), "kvm  big-parallel".into());
        drv.env.insert("preferLocalBuild".into(), "1".into());
        let kind = step_kind(&drv);
        assert_eq!(kind.required_features.iter().collect::<Vec<_>>(), ["big-parallel", "kvm"]);
        assert!(kind.prefer_local);
        drv.env.clear();
        drv.env.insert("__json".into(), r#"{"requiredSystemFeatures":["cuda"],"preferLocalBuild":false}"#.into());
        let kind = step_kind(&drv);
        assert_eq!(kind.required_features.iter().collect::<Vec<_>>(), ["cuda"]);
        assert!(!kind.prefer_local);
    }

    #[test]
    fn cancelling_one_build_keeps_shared_steps() {
        let (mut graph, dep, a, _) = shared_dependency();
        graph.remove_build(1);
        graph.prune_unneeded();
        assert!(!graph.steps.contains_key(&a));
        assert!(graph.is_needed(&dep));
        graph.remove_build(2);
        assert!(!graph.is_needed(&dep));
    }
}
