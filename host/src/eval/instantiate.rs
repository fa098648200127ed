//! Evaluation with `nix-instantiate` worker processes, for Nix versions
//! without `nix-eval-jobs` (Debian's Nix 2.8 among them).
//!
//! `wrapper.nix` evaluates a list of attribute paths to JSON in one process
//! (in read-write mode, so the `.drv` files are written). The job names are
//! discovered level by level: the root gives the top-level names, a nested
//! attribute set gives its own. Disjoint slices run in parallel worker
//! processes, each under a memory cap. A slice that fails is split in two
//! until the failing job is alone, so that its error is recorded and every
//! other job is still evaluated: `builtins.tryEval` alone would not do, as
//! it does not catch every error (nor a blown memory cap).

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use serde::Deserialize;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::jobs::JobInfo;
use crate::nix::{EvalCall, Nix, string_literal};

/// Jobs per worker call at most: a Nix process never frees memory, so
/// bounded slices keep each worker's footprint bounded.
const MAX_SLICE: usize = 250;

/// The evaluation's files and settings, shared by its workers.
#[derive(Debug, Clone)]
pub struct Workspace {
    /// Holds `wrapper.nix`, `inputs.nix`, `deps.nix` and the item lists.
    pub dir: PathBuf,
    /// What holds the jobs.
    pub jobs: JobsSource,
    /// `-I` entries: the workspace itself and the readable inputs.
    pub search_path: Vec<(String, PathBuf)>,
    pub memory_limit: Option<u64>,
    pub deadline: Instant,
    /// Where the derivations are rooted as soon as they are instantiated,
    /// so that a collection before the evaluation is recorded cannot take
    /// them.
    pub gc_roots: Option<crate::gc::GcRoots>,
}

/// Where a jobset's jobs come from.
#[derive(Debug, Clone)]
pub enum JobsSource {
    /// A legacy jobset's expression file, inside an input's store path.
    File(PathBuf),
    /// A flake, by its locked reference: its `hydraJobs`, else its `checks`.
    Flake(String),
}

impl JobsSource {
    /// Gives `wrapper.nix` its argument for this source (and turns flakes
    /// on for a flake).
    fn pass_to(&self, call: &mut EvalCall) {
        match self {
            JobsSource::File(path) => {
                call.args.push(("exprPath".into(), format!("/. + {}", string_literal(&path.to_string_lossy()))));
            }
            JobsSource::Flake(url) => {
                call.string_args.push(("flakeUrl".into(), url.clone()));
                call.flakes = true;
            }
        }
    }
}

/// What the evaluation found: jobs by name and per-job errors.
#[derive(Debug, Default)]
pub struct RawJobs {
    pub jobs: Vec<(String, JobInfo)>,
    pub errors: Vec<(String, String)>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
enum ItemResult {
    Job(Box<JobInfo>),
    Attrs {
        names: Vec<String>,
    },
    Skip,
    Unsupported {
        #[serde(rename = "type")]
        value_type: String,
    },
}

type AttrPath = Vec<String>;

fn job_name(path: &AttrPath) -> String {
    path.join(".")
}

/// Evaluates all jobs. `Err` is a failure of the expression as a whole
/// (a syntax error, a top-level `throw`, not an attribute set, …).
pub async fn evaluate(nix: &Nix, workspace: Workspace, workers: usize) -> Result<RawJobs, String> {
    let workspace = Arc::new(workspace);
    let calls = Arc::new(AtomicUsize::new(0));
    let root = run_slice(nix.clone(), workspace.clone(), calls.clone(), vec![Vec::new()]).await?;
    let mut pending: Vec<AttrPath> = match root.into_iter().next() {
        Some(ItemResult::Attrs { names }) => names.into_iter().map(|n| vec![n]).collect(),
        Some(ItemResult::Job(_)) => {
            return Err("the expression is a single derivation; it must be an attribute set of jobs".into());
        }
        Some(ItemResult::Skip) => {
            return Err("the expression evaluates to null, not an attribute set of jobs".into());
        }
        Some(ItemResult::Unsupported { value_type }) => {
            return Err(format!("the expression evaluates to a {value_type}, not an attribute set of jobs"));
        }
        None => return Err("the evaluator returned nothing for the expression".into()),
    };

    let semaphore = Arc::new(Semaphore::new(workers.max(1)));
    let mut result = RawJobs::default();
    while !pending.is_empty() {
        let mut next_level = Vec::new();
        let mut queue: VecDeque<Vec<AttrPath>> = slices(std::mem::take(&mut pending), workers).into();
        let mut running = JoinSet::new();
        loop {
            while let Some(slice) = queue.pop_front() {
                let permit = semaphore.clone().acquire_owned().await.expect("semaphore is never closed");
                let (nix, workspace, calls) = (nix.clone(), workspace.clone(), calls.clone());
                running.spawn(async move {
                    let outcome = run_slice(nix, workspace, calls, slice.clone()).await;
                    drop(permit);
                    (slice, outcome)
                });
            }
            let Some(joined) = running.join_next().await else {
                break;
            };
            let (slice, outcome) = joined.map_err(|e| format!("evaluation worker task failed: {e}"))?;
            match outcome {
                Ok(items) => {
                    if let Some(gc) = &workspace.gc_roots {
                        let drvs: Vec<String> = items
                            .iter()
                            .filter_map(|item| match item {
                                ItemResult::Job(job) => Some(job.drv_path.clone()),
                                _ => None,
                            })
                            .collect();
                        gc.root(&drvs).await;
                    }
                    for (path, item) in slice.into_iter().zip(items) {
                        match item {
                            ItemResult::Job(job) => result.jobs.push((job_name(&path), *job)),
                            ItemResult::Attrs { names } => {
                                for name in names {
                                    let mut child = path.clone();
                                    child.push(name);
                                    next_level.push(child);
                                }
                            }
                            ItemResult::Skip => {}
                            ItemResult::Unsupported { value_type } => result.errors.push((
                                job_name(&path),
                                format!("attribute ‘{}’ is a {value_type}, which is not a job", job_name(&path)),
                            )),
                        }
                    }
                }
                Err(message) if slice.len() > 1 => {
                    let mut first = slice;
                    let second = first.split_off(first.len() / 2);
                    tracing::debug!(jobs = first.len() + second.len(), "evaluation slice failed; splitting it");
                    queue.push_back(first);
                    queue.push_back(second);
                    drop(message);
                }
                Err(message) => result.errors.push((job_name(&slice[0]), message)),
            }
        }
        // Names with whitespace cannot be addressed as Hydra jobs.
        let (bad, good): (Vec<_>, Vec<_>) =
            next_level.into_iter().partition(|path: &AttrPath| path.iter().any(|n| n.contains(char::is_whitespace)));
        for path in bad {
            result.errors.push((job_name(&path), "job names cannot contain whitespace".into()));
        }
        pending = good;
    }
    tracing::debug!(calls = calls.load(Ordering::Relaxed), jobs = result.jobs.len(), "evaluation done");
    result.jobs.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(result)
}

/// Splits items into at least `workers` slices of at most [`MAX_SLICE`].
fn slices(items: Vec<AttrPath>, workers: usize) -> Vec<Vec<AttrPath>> {
    let per_slice = items.len().div_ceil(workers.max(1)).clamp(1, MAX_SLICE);
    let mut slices = Vec::new();
    let mut items = items.into_iter().peekable();
    while items.peek().is_some() {
        slices.push(items.by_ref().take(per_slice).collect());
    }
    slices
}

/// One worker process evaluating `items`.
async fn run_slice(
    nix: Nix,
    workspace: Arc<Workspace>,
    calls: Arc<AtomicUsize>,
    items: Vec<AttrPath>,
) -> Result<Vec<ItemResult>, String> {
    let remaining = workspace.deadline.saturating_duration_since(Instant::now());
    if remaining.is_zero() {
        return Err("the evaluation ran out of time (evaluator.timeout_secs)".into());
    }
    let n = calls.fetch_add(1, Ordering::Relaxed);
    let items_file = workspace.dir.join(format!("items-{n}.json"));
    let json = serde_json::to_vec(&items).expect("attribute paths serialise");
    tokio::fs::write(&items_file, json).await.map_err(|e| format!("cannot write {}: {e}", items_file.display()))?;
    let mut call = EvalCall {
        file: workspace.dir.join("wrapper.nix"),
        args: Vec::new(),
        string_args: vec![("itemsFile".into(), items_file.to_string_lossy().into_owned())],
        search_path: workspace.search_path.clone(),
        memory_limit: workspace.memory_limit,
        timeout: remaining,
        flakes: false,
    };
    workspace.jobs.pass_to(&mut call);
    let outcome = nix.evaluate_json(&call).await;
    let _ = tokio::fs::remove_file(&items_file).await;
    let stdout = outcome.map_err(|e| match e {
        crate::nix::NixError::Failed { message, .. } => message,
        other => other.to_string(),
    })?;
    let results: Vec<ItemResult> =
        serde_json::from_slice(&stdout).map_err(|e| format!("cannot read the evaluator's output: {e}"))?;
    if results.len() != items.len() {
        return Err(format!("the evaluator returned {} results for {} jobs", results.len(), items.len()));
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_are_balanced_and_bounded() {
        let items: Vec<AttrPath> = (0..1000).map(|i| vec![i.to_string()]).collect();
        let s = slices(items.clone(), 2);
        assert_eq!(s.len(), 4);
        assert!(s.iter().all(|s| s.len() == MAX_SLICE));
        let s = slices(items[..10].to_vec(), 4);
        assert_eq!(s.iter().map(Vec::len).collect::<Vec<_>>(), [3, 3, 3, 1]);
        assert!(slices(Vec::new(), 3).is_empty());
    }
}
