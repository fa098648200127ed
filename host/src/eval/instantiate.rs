//! Evaluation with `nix-instantiate` worker processes, for Nix versions
//! without `nix-eval-jobs` (Debian's Nix 2.8 among them).
//!
//! `wrapper.nix` evaluates a list of attribute paths in one process (in
//! read-write mode, so the `.drv` files are written) and reports each
//! result as soon as it has it, one line on stderr. The job names are
//! discovered level by level: the root gives the top-level names, a nested
//! attribute set gives its own. Each level is cut into a few contiguous
//! chunks per worker (so that a worker evaluates the expression's root once
//! for many jobs, and a fast worker takes more chunks), run by at most
//! `workers` processes at once.
//!
//! A worker is followed job by job, as nix-eval-jobs does it: its resident
//! memory is sampled, and when it is above `evaluator.worker_memory_mb`
//! between two jobs the worker is replaced by a fresh one that goes on with
//! the rest of its chunk (a Nix process never frees memory). A job that
//! fails stops its worker; the error is that job's (the one after the last
//! reported), and a fresh worker goes on after it: one bad job costs one
//! process start, and every other job is still evaluated (`tryEval` alone
//! would not do: it catches neither every error nor a blown memory cap).
//! A job that runs out of memory after others shared its worker is tried
//! again alone in a fresh one; only a job that is over the cap alone is
//! recorded as failed for it.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::io::{AsyncRead, BufReader};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::jobs::JobInfo;
use super::progress::EvalProgress;
use super::rooter::{RootBatch, RootSender, Rooter};
use super::slices::{Next, Slice, Slices};
use super::untrusted::MadeOutputs;
use crate::nix::{EvalCall, MAX_ERROR_OUTPUT, Nix, Tail, string_literal};

/// How often a free worker looks again for a slice worth cutting.
const RECONSIDER_EVERY: Duration = Duration::from_millis(100);
/// How often a worker's resident memory is sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(20);
/// One result line at most: more is a job whose meta is absurd.
const MAX_LINE: usize = 4 << 20;
/// Lines read ahead of the worker's follower at most: what an expression
/// prints waits in its pipe, not in the server's memory.
const LINES_AHEAD: usize = 8;

/// The evaluation's files and settings, shared by its workers.
#[derive(Debug, Clone)]
pub struct Workspace {
    /// Holds `wrapper.nix`, `inputs.nix`, `deps.nix` and the item lists.
    pub dir: PathBuf,
    /// What holds the jobs.
    pub jobs: JobsSource,
    /// `-I` entries: the workspace itself and the readable inputs.
    pub search_path: Vec<(String, PathBuf)>,
    /// A worker's resident memory cap in MiB, checked between jobs (0: none).
    pub memory_cap_mb: u64,
    pub deadline: Instant,
    /// Where the derivations and outputs are rooted as soon as they are
    /// reported (`rooter.rs`), so that a collection before the evaluation
    /// is recorded, or while its builds run, cannot take them.
    pub gc_roots: Option<crate::gc::GcRoots>,
    /// Jobs evaluated so far, and known so far.
    pub progress: Arc<EvalProgress>,
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
    /// The outputs of the derivations read while evaluating.
    pub made: MadeOutputs,
}

/// One entry of `wrapper.nix`'s results.
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

/// What became of one attribute path.
#[derive(Debug)]
enum Outcome {
    Evaluated(ItemResult),
    Failed(String),
}

type AttrPath = Vec<String>;

fn job_name(path: &AttrPath) -> String {
    path.join(".")
}

/// Evaluates all jobs. `Err` is a failure of the expression as a whole
/// (a syntax error, a top-level `throw`, not an attribute set, …) or of the
/// evaluator (it cannot be started, the evaluation ran out of time).
pub async fn evaluate(nix: &Nix, workspace: Workspace, workers: usize) -> Result<RawJobs, String> {
    let (roots, rooter) = Rooter::start(nix, workspace.gc_roots.as_ref());
    let evaluation = Arc::new(Evaluation::new(nix.clone(), workspace, roots));
    let result = evaluate_levels(&evaluation, workers).await;
    // Every worker is done: the last paths are rooted before the jobs are
    // handed on.
    drop(evaluation);
    let made = rooter.finish().await;
    result.map(|jobs| RawJobs { made, ..jobs })
}

/// Evaluates the expression's root, then its attribute sets level by level.
async fn evaluate_levels(evaluation: &Arc<Evaluation>, workers: usize) -> Result<RawJobs, String> {
    let root = evaluation.run_level(Arc::new(vec![Vec::new()]), 1).await?;
    // From here on, what is evaluated are jobs (or sets of them).
    evaluation.counting.store(true, Ordering::Relaxed);
    let mut pending: Vec<AttrPath> = match root.into_iter().next() {
        Some(Outcome::Evaluated(ItemResult::Attrs { names })) => names.into_iter().map(|n| vec![n]).collect(),
        Some(Outcome::Evaluated(ItemResult::Job(_))) => {
            return Err("the expression is a single derivation; it must be an attribute set of jobs".into());
        }
        Some(Outcome::Evaluated(ItemResult::Skip)) => {
            return Err("the expression evaluates to null, not an attribute set of jobs".into());
        }
        Some(Outcome::Evaluated(ItemResult::Unsupported { value_type })) => {
            return Err(format!("the expression evaluates to a {value_type}, not an attribute set of jobs"));
        }
        Some(Outcome::Failed(message)) => return Err(message),
        None => return Err("the evaluator returned nothing for the expression".into()),
    };

    let mut result = RawJobs::default();
    while !pending.is_empty() {
        evaluation.workspace.progress.add_total(pending.len());
        // At most one job per item: the list grows once, not by doubling.
        result.jobs.reserve(pending.len());
        let level = Arc::new(std::mem::take(&mut pending));
        let outcomes = evaluation.run_level(level.clone(), workers).await?;
        let mut next_level = Vec::new();
        for (path, outcome) in level.iter().zip(outcomes) {
            match outcome {
                Outcome::Evaluated(ItemResult::Job(job)) => result.jobs.push((job_name(path), *job)),
                Outcome::Evaluated(ItemResult::Attrs { names }) => {
                    for name in names {
                        let mut child = path.clone();
                        child.push(name);
                        next_level.push(child);
                    }
                }
                Outcome::Evaluated(ItemResult::Skip) => {}
                Outcome::Evaluated(ItemResult::Unsupported { value_type }) => result.errors.push((
                    job_name(path),
                    format!("attribute ‘{}’ is a {value_type}, which is not a job", job_name(path)),
                )),
                Outcome::Failed(message) => result.errors.push((job_name(path), message)),
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
    tracing::info!(
        workers = evaluation.workers_started.load(Ordering::Relaxed),
        jobs = result.jobs.len(),
        errors = result.errors.len(),
        "jobs evaluated"
    );
    result.jobs.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(result)
}

/// How a worker process ended.
enum WorkerEnd {
    /// It reported every item it was given.
    Finished,
    /// Its memory was over the cap after a job: a fresh worker goes on.
    Replaced,
    /// It stopped at the item after the last it reported.
    Failed { message: String, out_of_memory: bool },
}

/// One evaluation's workers: what they share.
struct Evaluation {
    nix: Nix,
    workspace: Workspace,
    /// What marks a result line; random, so that an expression's own
    /// `builtins.trace` cannot pass for one by chance.
    marker: String,
    workers_started: AtomicUsize,
    /// Whether outcomes count towards the progress shown (the root does not).
    counting: AtomicBool,
    /// Where reported derivations and outputs go to be rooted.
    roots: RootSender,
}

impl Evaluation {
    fn new(nix: Nix, workspace: Workspace, roots: RootSender) -> Evaluation {
        use rand_core::RngCore;
        let mut nonce = [0u8; 12];
        rand_core::OsRng.fill_bytes(&mut nonce);
        let marker = format!("orthrus-{}:", hex::encode(nonce));
        Evaluation {
            nix,
            workspace,
            marker,
            workers_started: AtomicUsize::new(0),
            counting: AtomicBool::new(false),
            roots,
        }
    }

    fn memory_cap_bytes(&self) -> Option<u64> {
        (self.workspace.memory_cap_mb > 0).then_some(self.workspace.memory_cap_mb << 20)
    }

    /// Evaluates a level's items with at most `workers` workers at once
    /// (`slices.rs` shares them out): one outcome per item, in order. `Err`
    /// when no worker can run at all.
    async fn run_level(self: &Arc<Self>, items: Arc<Vec<AttrPath>>, workers: usize) -> Result<Vec<Outcome>, String> {
        let slices = Arc::new(Slices::new(items.len(), workers));
        let mut running = JoinSet::new();
        for _ in 0..workers.clamp(1, items.len().max(1)) {
            let (evaluation, items, slices) = (self.clone(), items.clone(), slices.clone());
            running.spawn(async move {
                let mut done = Vec::new();
                loop {
                    match slices.next() {
                        Next::Slice(slice) => {
                            let outcomes = evaluation.run_slice(&items, &slices, &slice).await;
                            slices.finished(&slice);
                            done.push((slice.start(), outcomes?));
                        }
                        // A running slice may yet be worth cutting (its jobs slow down).
                        Next::Later => tokio::time::sleep(RECONSIDER_EVERY).await,
                        Next::Done => return Ok::<_, String>(done),
                    }
                }
            });
        }
        let mut outcomes: Vec<Option<Outcome>> = std::iter::repeat_with(|| None).take(items.len()).collect();
        while let Some(joined) = running.join_next().await {
            let done = joined.map_err(|e| format!("evaluation worker task failed: {e}"))??;
            for (start, slice_outcomes) in done {
                for (slot, outcome) in outcomes[start..].iter_mut().zip(slice_outcomes) {
                    *slot = Some(outcome);
                }
            }
        }
        Ok(outcomes
            .into_iter()
            .map(|o| o.unwrap_or_else(|| Outcome::Failed("the evaluator did not report this job".into())))
            .collect())
    }

    /// Evaluates a slice's items, in as many successive workers as it
    /// takes, until it wants no more (its end may move closer meanwhile):
    /// one outcome per item, in order. `Err` when no worker can run at all.
    async fn run_slice(&self, items: &[AttrPath], slices: &Slices, slice: &Slice) -> Result<Vec<Outcome>, String> {
        let mut outcomes = Vec::new();
        loop {
            let wanted = slice.wanted();
            if wanted.is_empty() {
                // Lines skipped as too long can carry the count past a cut
                // made meanwhile: what is past it is another worker's.
                outcomes.truncate(slice.len());
                return Ok(outcomes);
            }
            let first = outcomes.len();
            let failure = match self.run_worker(&items[wanted], slices, slice, &mut outcomes).await? {
                WorkerEnd::Replaced => None,
                WorkerEnd::Finished if slice.wanted().is_empty() => None,
                WorkerEnd::Finished => {
                    Some("the evaluator stopped without reporting this job (see the server's log)".to_owned())
                }
                // Others may have filled the worker: alone, it may fit.
                WorkerEnd::Failed { out_of_memory: true, .. } if outcomes.len() > first => None,
                // Alone over the cap; without a cap, the system's limit: Nix says.
                WorkerEnd::Failed { out_of_memory: true, message } => {
                    Some(if self.memory_cap_bytes().is_some() { self.over_cap() } else { message })
                }
                WorkerEnd::Failed { message, .. } => Some(message),
            };
            if let Some(message) = failure {
                outcomes.push(Outcome::Failed(message));
                slice.reported(slices, 1);
                self.count_evaluated(1);
            }
        }
    }

    fn count_evaluated(&self, items: usize) {
        if self.counting.load(Ordering::Relaxed) {
            self.workspace.progress.add_evaluated(items);
        }
    }

    fn over_cap(&self) -> String {
        format!(
            "out of memory: evaluating this job alone took more than evaluator.worker_memory_mb ({} MiB)",
            self.workspace.memory_cap_mb
        )
    }

    /// One worker process over `items` (what `slice` wants), whose outcomes
    /// it appends to `outcomes` as they are reported.
    async fn run_worker(
        &self,
        items: &[AttrPath],
        slices: &Slices,
        slice: &Slice,
        outcomes: &mut Vec<Outcome>,
    ) -> Result<WorkerEnd, String> {
        let workspace = &self.workspace;
        if workspace.deadline <= Instant::now() {
            return Err(timed_out());
        }
        let n = self.workers_started.fetch_add(1, Ordering::Relaxed);
        let items_file = workspace.dir.join(format!("items-{n}.json"));
        let json = serde_json::to_vec(items).expect("attribute paths serialise");
        tokio::fs::write(&items_file, json).await.map_err(|e| format!("cannot write {}: {e}", items_file.display()))?;
        let mut call = EvalCall {
            file: workspace.dir.join("wrapper.nix"),
            args: Vec::new(),
            string_args: vec![
                ("itemsFile".into(), items_file.to_string_lossy().into_owned()),
                ("marker".into(), self.marker.clone()),
            ],
            search_path: workspace.search_path.clone(),
            // A backstop for a job that allocates faster than it is sampled.
            memory_limit: self.memory_cap_bytes().map(|cap| cap.saturating_mul(4)),
            timeout: workspace.deadline.saturating_duration_since(Instant::now()),
            flakes: false,
        };
        workspace.jobs.pass_to(&mut call);
        slice.worker_started();
        let outcome = self.follow_worker(&call, items.len(), slices, slice, outcomes).await;
        let _ = tokio::fs::remove_file(&items_file).await;
        outcome
    }

    async fn follow_worker(
        &self,
        call: &EvalCall,
        items: usize,
        slices: &Slices,
        slice: &Slice,
        outcomes: &mut Vec<Outcome>,
    ) -> Result<WorkerEnd, String> {
        let mut child = self.nix.spawn_streaming_evaluation(call).map_err(|e| e.to_string())?;
        let pid = child.id();
        let stderr = child.stderr.take().expect("stderr is piped");
        let (lines_tx, mut lines) = mpsc::channel(LINES_AHEAD);
        let reader = tokio::spawn(read_lines(stderr, lines_tx));

        let base = outcomes.len();
        let cap = self.memory_cap_bytes();
        let mut resident = 0u64;
        let mut killed_for_memory = false;
        let mut replaced = false;
        // Stopped because the slice wants no more (it was cut).
        let mut slice_done = false;
        // What the worker printed since its last result: the next job's messages.
        let mut messages = Tail::default();
        let mut to_root = RootBatch::new(self.roots.clone());
        let mut sample = tokio::time::interval(SAMPLE_EVERY);
        sample.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let deadline = tokio::time::sleep_until(self.workspace.deadline.into());
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                line = lines.recv() => {
                    let Some(line) = line else { break };
                    let reported = outcomes.len() - base;
                    // The file's items the slice still wants (fewer once cut).
                    let wanted = (reported + slice.wanted().len()).min(items);
                    match line {
                        Line::Text(text) => match self.result_in(&text) {
                            Some((index, json)) if index >= reported && index < wanted => {
                                // Jobs skipped over printed lines too long to keep.
                                while outcomes.len() - base < index {
                                    outcomes.push(Outcome::Failed(format!(
                                        "its result is larger than {} MiB: its name, meta or outputs are too large",
                                        MAX_LINE >> 20
                                    )));
                                }
                                let outcome = match serde_json::from_str::<ItemResult>(json) {
                                    Ok(ItemResult::Job(mut job)) => {
                                        super::untrusted::cut_fields(&mut job);
                                        Outcome::Evaluated(ItemResult::Job(job))
                                    }
                                    Ok(item) => Outcome::Evaluated(item),
                                    Err(e) => Outcome::Failed(format!("cannot read the evaluator's result: {e}")),
                                };
                                if let Outcome::Evaluated(ItemResult::Job(job)) = &outcome {
                                    to_root.add(job, true).await;
                                }
                                outcomes.push(outcome);
                                let more = slice.reported(slices, index + 1 - reported);
                                self.count_evaluated(index + 1 - reported);
                                messages.clear();
                                if !more {
                                    // The slice was cut here: another worker has the rest.
                                    slice_done = true;
                                    let _ = child.start_kill();
                                } else if cap.is_some_and(|cap| resident > cap) {
                                    if index == 0 {
                                        // Alone in a fresh worker, over the cap.
                                        *outcomes.last_mut().expect("just pushed") = Outcome::Failed(self.over_cap());
                                    }
                                    tracing::info!(
                                        jobs = outcomes.len() - base,
                                        resident_mib = resident >> 20,
                                        "evaluator worker replaced: over evaluator.worker_memory_mb after a job"
                                    );
                                    replaced = true;
                                    let _ = child.start_kill();
                                }
                            }
                            _ => {
                                messages.push(&text, MAX_ERROR_OUTPUT);
                                messages.push(b"\n", MAX_ERROR_OUTPUT);
                            }
                        },
                        Line::TooLong => messages.push(
                            format!("(a line of over {} MiB was left out)\n", MAX_LINE >> 20).as_bytes(),
                            MAX_ERROR_OUTPUT,
                        ),
                    }
                }
                _ = sample.tick(), if cap.is_some() && !replaced && !killed_for_memory && !slice_done => {
                    resident = pid.map(resident_bytes).unwrap_or(0);
                    let cap = cap.expect("sampled only with a cap");
                    // Mid-job: alone over the cap, or far over it with others.
                    let alone = outcomes.len() == base;
                    if resident > cap.saturating_mul(2) || (alone && resident > cap) {
                        killed_for_memory = true;
                        let _ = child.start_kill();
                    }
                }
                _ = &mut deadline => {
                    let _ = child.start_kill();
                    reader.abort();
                    to_root.send().await;
                    return Err(timed_out());
                }
            }
        }
        to_root.send().await;
        let status = child.wait().await.map_err(|e| format!("cannot wait for the evaluator: {e}"))?;
        if replaced {
            return Ok(WorkerEnd::Replaced);
        }
        if slice_done || status.success() {
            return Ok(WorkerEnd::Finished);
        }
        let message = crate::nix::error_text(&messages, status);
        let out_of_memory = killed_for_memory || is_out_of_memory(&message);
        Ok(WorkerEnd::Failed { message, out_of_memory })
    }

    /// The index and JSON of a result line, if it is one.
    fn result_in<'a>(&self, line: &'a [u8]) -> Option<(usize, &'a str)> {
        let line = std::str::from_utf8(line).ok()?;
        let rest = line.strip_prefix("trace: ")?.strip_prefix(self.marker.as_str())?;
        let (index, json) = rest.split_once(':')?;
        Some((index.parse().ok()?, json))
    }
}

fn timed_out() -> String {
    "the evaluation ran out of time (evaluator.timeout_secs)".into()
}

/// Whether Nix's message says it ran out of memory (its address-space
/// backstop).
fn is_out_of_memory(message: &str) -> bool {
    message.contains("out of memory") || message.contains("std::bad_alloc")
}

/// A process's resident memory (0 once it is gone).
fn resident_bytes(pid: u32) -> u64 {
    let Ok(statm) = std::fs::read_to_string(format!("/proc/{pid}/statm")) else {
        return 0;
    };
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page_size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u64;
    pages * page_size
}

/// A line of a worker's stderr.
#[derive(Debug, PartialEq)]
enum Line {
    Text(Vec<u8>),
    /// A line longer than [`MAX_LINE`], skipped.
    TooLong,
}

/// Reads a worker's stderr line by line until it ends, without ever keeping
/// more than [`MAX_LINE`] of one (colour codes removed).
async fn read_lines(stream: impl AsyncRead + Unpin, lines: mpsc::Sender<Line>) {
    let mut stream = BufReader::with_capacity(1 << 16, stream);
    let mut line = Vec::new();
    while let Ok(Some(whole)) = crate::nix::read_bounded_line(&mut stream, &mut line, MAX_LINE).await {
        let message = if !whole {
            Line::TooLong
        } else if line.contains(&0x1b) {
            Line::Text(crate::nix::strip_ansi(&String::from_utf8_lossy(&line)).into_bytes())
        } else {
            Line::Text(std::mem::take(&mut line))
        };
        if lines.send(message).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn long_lines_are_skipped_not_kept() {
        let mut text = b"first\n".to_vec();
        text.extend(std::iter::repeat_n(b'x', MAX_LINE + 100));
        text.extend_from_slice(b"\n\x1b[31;1merror:\x1b[0m last");
        let (tx, mut rx) = mpsc::channel(8);
        read_lines(&text[..], tx).await;
        assert_eq!(rx.recv().await, Some(Line::Text(b"first".to_vec())));
        assert_eq!(rx.recv().await, Some(Line::TooLong));
        assert_eq!(rx.recv().await, Some(Line::Text(b"error: last".to_vec())));
        assert_eq!(rx.recv().await, None);
    }

    #[tokio::test]
    async fn result_lines_need_the_marker() {
        let nix = Nix::new(&crate::config::NixConfig::default());
        let workspace = Workspace {
            dir: PathBuf::new(),
            jobs: JobsSource::Flake(String::new()),
            search_path: Vec::new(),
            memory_cap_mb: 0,
            deadline: Instant::now(),
            gc_roots: None,
            progress: Arc::default(),
        };
        let (roots, _rooter) = Rooter::start(&nix, None);
        let evaluation = Evaluation::new(nix, workspace, roots);
        let line = format!("trace: {}12:{{\"kind\":\"skip\"}}", evaluation.marker);
        assert_eq!(evaluation.result_in(line.as_bytes()), Some((12, "{\"kind\":\"skip\"}")));
        assert_eq!(evaluation.result_in(b"trace: orthrus-00:1:{}"), None);
        assert_eq!(evaluation.result_in(b"trace: hello"), None);
    }
}
