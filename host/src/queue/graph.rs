//! The step graph: which derivations must be built for the queued builds,
//! what each waits for, and which build each one serves.
//!
//! A step is shared by every build that needs it (a common dependency is
//! built once). A build waits for its *roots*: its own derivation and, for
//! an aggregate, its constituents' derivations — the roots that still need
//! building. A step whose outputs are already valid never enters the graph.

use std::cmp::Reverse;
use std::collections::{HashMap, HashSet};
use std::time::Instant;

use super::scheduler::{RunnableStep, StepKind};
use crate::db::{Db, NewStep, QueuedBuild, StepType};
use crate::domain::StepStatus;
use crate::machines::Machines;
use crate::nix::{Derivation, Nix, NixError, StorePath};

/// Counting the steps that wait for a step stops here: beyond, the count
/// no longer changes the order much.
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
    /// Where it may be built. The derivation itself is not kept: a
    /// nixpkgs derivation's environment runs to kilobytes, times a hundred
    /// thousand steps; the step's task reads it again when it starts.
    pub kind: StepKind,
    pub state: StepState,
    /// Unfinished steps this one waits for.
    deps: HashSet<StorePath>,
    /// Steps waiting for this one.
    rdeps: HashSet<StorePath>,
    /// Builds for which this is a root.
    roots_of: HashSet<i64>,
    /// The most urgent build this step serves, directly or through the
    /// steps waiting for it; `None` once it serves none. Kept current by
    /// `refresh` whenever the builds a step serves change, so that ranking
    /// a step costs the same in a graph of ten steps and of a million.
    primary: Option<i64>,
    /// Steps waiting for this one, directly or not, counted along every
    /// path (a step reached twice counts twice) up to
    /// `MAX_DEPENDENTS_COUNTED`: a tie-breaker, cheap to keep current.
    dependents: u32,
}

/// How urgent a build is, the most urgent the smallest: bumped builds
/// first (global priority), then the job's `schedulingPriority`, then the
/// oldest build.
pub type Urgency = (Reverse<i64>, Reverse<i32>, i64);

/// The order in which queued builds are loaded: the most urgent first.
pub fn load_order(build: &QueuedBuild) -> Urgency {
    (Reverse(build.global_priority), Reverse(build.priority), build.id)
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

impl TrackedBuild {
    fn urgency(&self) -> Urgency {
        (Reverse(self.global_priority), Reverse(self.priority), self.id)
    }
}

/// What adding builds to the graph changed.
#[derive(Debug, Default)]
pub struct Expanded {
    /// Steps whose rank may have changed: the new builds' closures, steps
    /// of earlier builds included.
    pub reranked: Vec<StorePath>,
    /// New steps that fail without running (a cached failure, an
    /// unreadable derivation), with their status and message.
    pub fails_at_once: Vec<(StorePath, StepStatus, String)>,
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

    pub fn step_count(&self) -> usize {
        self.steps.len()
    }

    pub fn has_build(&self, id: i64) -> bool {
        self.builds.contains_key(&id)
    }

    pub fn system_of(&self, drv: &StorePath) -> Option<String> {
        self.steps.get(drv).map(|s| s.kind.system.clone())
    }

    pub fn is_complete(&self, build_id: i64) -> bool {
        self.builds.get(&build_id).is_some_and(|b| b.pending.is_empty())
    }

    /// Whether a build's global priority differs from `global_priority`.
    pub fn priority_changed(&self, build_id: i64, global_priority: i64) -> bool {
        self.builds.get(&build_id).is_some_and(|b| b.global_priority != global_priority)
    }

    /// Sets builds' global priorities (a user bumped them); returns the
    /// steps whose rank may have changed.
    pub fn update_priorities(&mut self, changes: &[(i64, i64)]) -> Vec<StorePath> {
        let mut seeds = Vec::new();
        for &(build_id, global_priority) in changes {
            if let Some(build) = self.builds.get_mut(&build_id) {
                build.global_priority = global_priority;
                seeds.extend(build.pending.iter().cloned());
            }
        }
        self.refresh(seeds)
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
    pub fn primary_build(&self, drv: &StorePath) -> Option<&TrackedBuild> {
        let primary = self.steps.get(drv)?.primary?;
        self.builds.get(&primary)
    }

    /// Recomputes which build each step runs for and how many steps wait
    /// for it, for `seeds` and every step they wait for — the only steps
    /// whose served builds can change when builds whose roots are `seeds`
    /// come, go or change priority. A step's figures follow from those of
    /// the steps waiting for it, so they are computed in an order where
    /// those come first (Kahn's algorithm on the waiting-for edges); steps
    /// outside the region keep theirs. Returns the region's steps.
    fn refresh(&mut self, seeds: impl IntoIterator<Item = StorePath>) -> Vec<StorePath> {
        let mut region: HashSet<StorePath> = HashSet::new();
        let mut stack: Vec<StorePath> = seeds.into_iter().collect();
        while let Some(drv) = stack.pop() {
            if region.contains(&drv) {
                continue;
            }
            if let Some(step) = self.steps.get(&drv) {
                stack.extend(step.deps.iter().filter(|d| !region.contains(*d)).cloned());
                region.insert(drv);
            }
        }
        let mut waiting_on: HashMap<&StorePath, usize> = region
            .iter()
            .map(|drv| (drv, self.steps[drv].rdeps.iter().filter(|r| region.contains(*r)).count()))
            .collect();
        let mut next: Vec<&StorePath> = waiting_on.iter().filter(|(_, n)| **n == 0).map(|(d, _)| *d).collect();
        let mut order: Vec<StorePath> = Vec::with_capacity(region.len());
        while let Some(drv) = next.pop() {
            order.push(drv.clone());
            for dep in &self.steps[drv].deps {
                if let Some(count) = waiting_on.get_mut(dep) {
                    *count -= 1;
                    if *count == 0 {
                        next.push(dep);
                    }
                }
            }
        }
        if order.len() < region.len() {
            // Only a cycle leaves steps behind, and derivations have none;
            // still, every step of the region gets figures.
            let placed: HashSet<&StorePath> = order.iter().collect();
            let left: Vec<StorePath> = region.iter().filter(|d| !placed.contains(d)).cloned().collect();
            order.extend(left);
        }
        for drv in &order {
            let step = &self.steps[drv];
            let mut primary: Option<Urgency> =
                step.roots_of.iter().filter_map(|id| self.builds.get(id)).map(TrackedBuild::urgency).min();
            let mut dependents: u32 = 0;
            for waiting in step.rdeps.iter().filter_map(|r| self.steps.get(r)) {
                dependents = dependents.saturating_add(1).saturating_add(waiting.dependents);
                let served = waiting.primary.and_then(|id| self.builds.get(&id)).map(TrackedBuild::urgency);
                primary = match (primary, served) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            }
            let step = self.steps.get_mut(drv).expect("a step of the region");
            step.primary = primary.map(|(_, _, id)| id);
            step.dependents = dependents.min(MAX_DEPENDENTS_COUNTED);
        }
        order
    }

    fn make_runnable(&mut self, drv: StorePath) {
        self.ready.push(drv);
    }

    /// Up to `most` of the steps that became runnable since they were
    /// last asked for; the rest wait for the next call.
    pub fn take_ready(&mut self, most: usize) -> Vec<StorePath> {
        let keep = self.ready.len().saturating_sub(most);
        self.ready.split_off(keep)
    }

    /// Whether steps that became runnable wait for `take_ready`.
    pub fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    /// Everything the scheduler weighs about a runnable step; `None` when
    /// no build needs it any more.
    pub fn rank(&self, drv: &StorePath, now: Instant) -> Option<RunnableStep> {
        let step = self.steps.get(drv)?;
        let primary = self.builds.get(&step.primary?)?;
        let kind = step.kind.clone();
        Some(RunnableStep {
            drv: drv.clone(),
            kind,
            global_priority: primary.global_priority,
            jobset: primary.jobset_id,
            scheduling_priority: primary.priority,
            dependents: step.dependents,
            build_id: primary.id,
            since: now,
        })
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

    /// Forgets a build whose roots were all built (its closure is empty).
    pub fn remove_finished_build(&mut self, id: i64) -> Option<TrackedBuild> {
        let build = self.builds.remove(&id)?;
        debug_assert!(build.pending.is_empty(), "a finished build has nothing left to build");
        Some(build)
    }

    /// Forgets builds that left the queue unfinished (cancelled, or failed
    /// by a step): their steps stay while other builds need them. Returns
    /// the steps no build needs any more; those not running are dropped
    /// already, the running ones are the caller's to cancel and remove.
    pub fn remove_builds(&mut self, ids: &[i64]) -> Vec<StorePath> {
        self.forget_builds(ids, Vec::new())
    }

    /// `remove_builds`, also looking again at `seeds` and what they wait
    /// for (the dependencies of a step removed with them).
    fn forget_builds(&mut self, ids: &[i64], mut seeds: Vec<StorePath>) -> Vec<StorePath> {
        for id in ids {
            let Some(build) = self.builds.remove(id) else { continue };
            for drv in &build.pending {
                if let Some(step) = self.steps.get_mut(drv) {
                    step.roots_of.remove(id);
                }
            }
            seeds.extend(build.pending);
        }
        let region = self.refresh(seeds);
        self.drop_unneeded(region)
    }

    /// Of these steps, those that serve no build: drops the waiting ones,
    /// and returns them all.
    fn drop_unneeded(&mut self, steps: Vec<StorePath>) -> Vec<StorePath> {
        let unneeded: Vec<StorePath> =
            steps.into_iter().filter(|drv| self.steps.get(drv).is_some_and(|s| s.primary.is_none())).collect();
        for drv in &unneeded {
            if self.steps[drv].state != StepState::Running {
                self.remove_step(drv);
            }
        }
        unneeded
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
    /// each with whether the failed step is the build's own derivation,
    /// and the steps no build needs any more (as `remove_builds`).
    pub fn step_failed(&mut self, drv: &StorePath) -> (Vec<(i64, bool)>, Vec<StorePath>) {
        let mut affected: Vec<i64> = self.builds_served_by(drv).into_iter().collect();
        affected.sort_unstable();
        let failed: Vec<(i64, bool)> =
            affected.iter().filter_map(|id| self.builds.get(id)).map(|b| (b.id, &b.top == drv)).collect();
        // A step known to fail at once may still wait for others: those may
        // serve no build any more.
        let deps: Vec<StorePath> = self.steps.get(drv).map(|s| s.deps.iter().cloned().collect()).unwrap_or_default();
        self.remove_step(drv);
        let unneeded = self.forget_builds(&affected, deps);
        (failed, unneeded)
    }

    pub fn is_needed(&self, drv: &StorePath) -> bool {
        self.steps.get(drv).is_some_and(|s| s.primary.is_some())
    }

    /// Drops every waiting step no build needs (after adding builds
    /// failed half-way); returns them, as `remove_builds`.
    pub fn prune_unneeded(&mut self) -> Vec<StorePath> {
        let all: Vec<StorePath> = self.steps.keys().cloned().collect();
        let region = self.refresh(all);
        self.drop_unneeded(region)
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
/// of the build that first needed them. Derivations are read a level at a
/// time off the async threads, and validity is asked of the local store's
/// open connection (a `nix-store` process per level only if that fails).
pub async fn expand(
    nix: &Nix,
    machines: &Machines,
    db: &Db,
    graph: &mut Graph,
    builds: &[QueuedBuild],
    substitutes: Substitutes,
) -> Result<Expanded, NixError> {
    let mut new_steps: Vec<StorePath> = Vec::new();
    // The derivations each new step waits for, until the edges are made.
    let mut inputs_of: HashMap<StorePath, Vec<StorePath>> = HashMap::new();
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
            if !graph.steps.contains_key(&drv) {
                level.push(drv);
            }
        }
        let mut derivations = Vec::with_capacity(level.len());
        for (drv, read) in nix.read_derivations(level).await {
            match read {
                Ok(derivation) => derivations.push((drv, derivation)),
                Err(e) => {
                    // Garbage-collected, say: whatever needs it fails, the rest goes on.
                    let message = e.to_string();
                    graph.steps.insert(
                        drv.clone(),
                        new_step(StepKind::default(), StepState::FailsAtOnce { status: StepStatus::Aborted, message }),
                    );
                    new_steps.push(drv);
                }
            }
        }
        let outputs: Vec<StorePath> =
            derivations.iter().flat_map(|(_, d)| d.output_paths().map(|(_, p)| p.clone())).collect();
        let mut invalid = match machines.invalid_paths(&outputs).await {
            Ok(invalid) => invalid,
            Err(e) => {
                tracing::debug!("{e}; asking nix-store");
                nix.invalid_paths(&outputs).await?
            }
        };
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
            let kind = step_kind(&derivation);
            let needs_build = derivation.outputs.values().any(|o| o.path.as_ref().is_none_or(|p| invalid.contains(p)));
            if needs_build {
                let build_id = reached_by[&drv];
                frontier.extend(derivation.input_drvs.keys().map(|input| (input.clone(), build_id)));
                inputs_of.insert(drv.clone(), derivation.input_drvs.into_keys().collect());
                graph.steps.insert(drv.clone(), new_step(kind, StepState::Pending));
                new_steps.push(drv);
            }
        }
    }

    // Edges between the new steps and the steps they wait for.
    for drv in &new_steps {
        let inputs: Vec<StorePath> = inputs_of.remove(drv).unwrap_or_default();
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
    let seeds: Vec<StorePath> =
        builds.iter().filter_map(|b| graph.builds.get(&b.id)).flat_map(|b| b.pending.iter().cloned()).collect();
    let reranked = graph.refresh(seeds);
    let fails_at_once = new_steps
        .iter()
        .filter_map(|drv| match &graph.steps.get(drv)?.state {
            StepState::FailsAtOnce { status, message } => Some((drv.clone(), *status, message.clone())),
            _ => None,
        })
        .collect();
    // Whatever waits for nothing can run now.
    let ready: Vec<StorePath> = new_steps
        .iter()
        .filter(|drv| graph.steps.get(*drv).is_some_and(|s| s.state == StepState::Pending && s.deps.is_empty()))
        .cloned()
        .collect();
    for drv in ready {
        graph.make_runnable(drv);
    }
    Ok(Expanded { reranked, fails_at_once })
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

fn new_step(kind: StepKind, state: StepState) -> Step {
    Step {
        kind,
        state,
        deps: HashSet::new(),
        rdeps: HashSet::new(),
        roots_of: HashSet::new(),
        primary: None,
        dependents: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn path(name: &str) -> StorePath {
        StorePath::parse(&format!("/nix/store/{:0<32}-{name}.drv", name.len())).unwrap()
    }

    /// Adds a waiting step that waits for `deps` (steps already there).
    fn add_step(graph: &mut Graph, drv: &StorePath, deps: &[&StorePath]) {
        graph.steps.insert(drv.clone(), new_step(StepKind::default(), StepState::Pending));
        for dep in deps {
            graph.steps.get_mut(drv).unwrap().deps.insert((*dep).clone());
            graph.steps.get_mut(*dep).unwrap().rdeps.insert(drv.clone());
        }
        if deps.is_empty() {
            graph.make_runnable(drv.clone());
        }
    }

    /// Adds a build waiting for `roots`, as `expand` does.
    fn add_build(graph: &mut Graph, id: i64, global_priority: i64, roots: &[&StorePath]) {
        for root in roots {
            graph.steps.get_mut(*root).unwrap().roots_of.insert(id);
        }
        graph.builds.insert(
            id,
            TrackedBuild {
                id,
                jobset_id: 1,
                top: roots[0].clone(),
                global_priority,
                priority: 100,
                timeout: 10,
                max_silent: 10,
                pending: roots.iter().map(|p| (*p).clone()).collect(),
                never_started: roots.is_empty(),
            },
        );
        graph.refresh(roots.iter().map(|r| (*r).clone()));
    }

    /// dep <- a (build 1), dep <- b (build 2)
    fn shared_dependency() -> (Graph, StorePath, StorePath, StorePath) {
        let (dep, a, b) = (path("dep"), path("a"), path("bb"));
        let mut graph = Graph::default();
        add_step(&mut graph, &dep, &[]);
        add_step(&mut graph, &a, &[&dep]);
        add_step(&mut graph, &b, &[&dep]);
        add_build(&mut graph, 1, 0, &[&a]);
        add_build(&mut graph, 2, 0, &[&b]);
        (graph, dep, a, b)
    }

    #[test]
    fn shared_step_runs_for_the_most_urgent_build() {
        let (mut graph, dep, _, _) = shared_dependency();
        assert_eq!(graph.primary_build(&dep).unwrap().id, 1, "the oldest, at equal priority");
        assert!(graph.priority_changed(2, 1000));
        let reranked = graph.update_priorities(&[(2, 1000)]);
        assert!(reranked.contains(&dep));
        assert!(!graph.priority_changed(2, 1000));
        assert_eq!(graph.primary_build(&dep).unwrap().id, 2, "bumped");
        assert_eq!(graph.take_ready(usize::MAX), vec![dep.clone()]);
        let rank = graph.rank(&dep, Instant::now()).unwrap();
        assert_eq!((rank.global_priority, rank.build_id, rank.dependents), (1000, 2, 2));
        assert!(graph.take_ready(usize::MAX).is_empty());
        // Bumped down again: back to the oldest.
        graph.update_priorities(&[(2, 0)]);
        assert_eq!(graph.primary_build(&dep).unwrap().id, 1);
    }

    #[test]
    fn success_unblocks_dependents_and_completes_builds() {
        let (mut graph, dep, a, b) = shared_dependency();
        graph.take_ready(usize::MAX);
        assert!(graph.step_succeeded(&dep).is_empty());
        let mut runnable = graph.take_ready(usize::MAX);
        runnable.sort();
        let mut expected = vec![a.clone(), b];
        expected.sort();
        assert_eq!(runnable, expected);
        assert_eq!(graph.step_succeeded(&a), vec![1]);
        assert!(graph.remove_finished_build(1).is_some());
        assert_eq!(graph.build_ids().collect::<Vec<_>>(), vec![2]);
    }

    #[test]
    fn failure_fails_every_build_it_serves() {
        let (mut graph, dep, _, _) = shared_dependency();
        let (failed, unneeded) = graph.step_failed(&dep);
        assert_eq!(failed, vec![(1, false), (2, false)]);
        assert_eq!(unneeded.len(), 2, "both tops serve nothing now: {unneeded:?}");
        assert!(!graph.has_build(1) && !graph.has_build(2));
        assert!(graph.steps.is_empty(), "the waiting steps are dropped at once");
    }

    #[test]
    fn a_step_failing_at_once_frees_what_it_waited_for() {
        // leaf <- cached (fails at once) <- top (build 1); leaf <- other (build 2)
        let (leaf, cached, top, other) = (path("leaf"), path("cached"), path("top"), path("other"));
        let mut graph = Graph::default();
        add_step(&mut graph, &leaf, &[]);
        add_step(&mut graph, &cached, &[&leaf]);
        add_step(&mut graph, &top, &[&cached]);
        add_step(&mut graph, &other, &[&leaf]);
        add_build(&mut graph, 1, 0, &[&top]);
        add_build(&mut graph, 2, 0, &[&other]);
        let (failed, _) = graph.step_failed(&cached);
        assert_eq!(failed, vec![(1, false)]);
        assert_eq!(graph.primary_build(&leaf).unwrap().id, 2, "the leaf now runs for build 2 only");
        let (failed, unneeded) = graph.step_failed(&other);
        assert_eq!(failed, vec![(2, true)]);
        assert_eq!(unneeded, vec![leaf.clone()]);
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
        assert_eq!(graph.remove_builds(&[1]), vec![a.clone()]);
        assert!(!graph.steps.contains_key(&a));
        assert!(graph.is_needed(&dep));
        assert_eq!(graph.primary_build(&dep).unwrap().id, 2);
        assert_eq!(graph.rank(&dep, Instant::now()).unwrap().build_id, 2);
        graph.set_state(&dep, StepState::Running);
        let unneeded = graph.remove_builds(&[2]);
        assert!(unneeded.contains(&dep), "running, unneeded, the caller's to cancel");
        assert!(graph.steps.contains_key(&dep) && !graph.is_needed(&dep));
    }

    /// What `refresh` keeps must be what walking the graph finds, whatever
    /// came and went: builds added over shared steps, bumped, cancelled,
    /// failed by a step, finished.
    #[test]
    fn kept_ranks_match_a_walk_of_the_graph() {
        // A small deterministic generator (xorshift): the same graphs every run.
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move |below: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % below as u64) as usize
        };
        for round in 0..40 {
            let mut graph = Graph::default();
            let mut drvs: Vec<StorePath> = Vec::new();
            for i in 0..30 {
                let drv = path(&format!("r{round}s{i}"));
                let deps: Vec<StorePath> = if drvs.is_empty() {
                    Vec::new()
                } else {
                    (0..next(3)).map(|_| drvs[next(drvs.len())].clone()).collect()
                };
                add_step(&mut graph, &drv, &deps.iter().collect::<Vec<_>>());
                drvs.push(drv);
            }
            // Every step starts needed: a build for each that nothing waits for.
            let mut next_id = 1;
            let sinks: Vec<StorePath> = drvs.iter().filter(|d| graph.steps[*d].rdeps.is_empty()).cloned().collect();
            for sink in &sinks {
                add_build(&mut graph, next_id, 0, &[sink]);
                next_id += 1;
            }
            for _ in 0..60 {
                let live: Vec<StorePath> = graph.steps.keys().cloned().collect();
                let ids: Vec<i64> = graph.build_ids().collect();
                match next(5) {
                    0 | 1 if !live.is_empty() => {
                        let roots: Vec<StorePath> = (0..1 + next(2)).map(|_| live[next(live.len())].clone()).collect();
                        add_build(&mut graph, next_id, next(3) as i64, &roots.iter().collect::<Vec<_>>());
                        next_id += 1;
                    }
                    2 if !ids.is_empty() => {
                        graph.update_priorities(&[(ids[next(ids.len())], next(3) as i64)]);
                    }
                    3 if !ids.is_empty() => {
                        graph.remove_builds(&[ids[next(ids.len())]]);
                    }
                    _ if !live.is_empty() => {
                        let drv = &live[next(live.len())];
                        if graph.steps[drv].deps.is_empty() && next(2) == 0 {
                            for id in graph.step_succeeded(drv) {
                                graph.remove_finished_build(id);
                            }
                        } else {
                            graph.step_failed(drv);
                        }
                    }
                    _ => {}
                }
                for (drv, step) in &graph.steps {
                    let walked = graph
                        .builds_served_by(drv)
                        .into_iter()
                        .filter_map(|id| graph.builds.get(&id))
                        .min_by_key(|b| b.urgency())
                        .map(|b| b.id);
                    assert_eq!(step.primary, walked, "round {round}: the build {drv} runs for");
                    assert!(walked.is_some() || step.state == StepState::Running, "round {round}: {drv} kept unneeded");
                }
            }
        }
    }
}
