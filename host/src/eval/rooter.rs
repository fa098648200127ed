//! Rooting an evaluation's derivations and outputs as its jobs are
//! reported, beside the evaluation.
//!
//! A root is a file system write per path (`gc/links.rs`; 40 µs each
//! when they were symbolic links). Done in line,
//! rooting held up the reading of a worker's results, and the worker with
//! them once its pipe was full (one worker ran at a third of a core); done
//! after the evaluation, the outputs' roots took 2 s of a 100,000-job
//! evaluation before it could be recorded. A task of its own roots them
//! while the workers go on, and the evaluation ends once it is done, so
//! that everything is rooted before the builds are queued.
//!
//! What is rooted is what a job claims, before it is checked against its
//! derivation (`untrusted.rs`): a job that fails the check is not
//! recorded, so the next full update of the roots (`gc/`) removes its
//! links, as it removes those of every path no build wants.

use tokio::sync::mpsc;

use super::jobs::JobInfo;
use crate::gc::GcRoots;

/// Paths rooted at once, as they are reported.
const BATCH: usize = 500;
/// Batches waiting for the rooter at most (a few MiB).
const BATCHES_AHEAD: usize = 64;

/// The task that roots what it is sent.
pub struct Rooter {
    task: tokio::task::JoinHandle<()>,
}

/// Where an evaluation's paths go to be rooted (cheap to clone).
#[derive(Clone)]
pub struct RootSender(mpsc::Sender<Vec<String>>);

impl Rooter {
    /// Starts rooting in `gc`'s directory, when the server keeps roots.
    pub fn start(gc: Option<&GcRoots>) -> (Option<RootSender>, Option<Rooter>) {
        let Some(gc) = gc.cloned() else {
            return (None, None);
        };
        let (sender, mut batches) = mpsc::channel::<Vec<String>>(BATCHES_AHEAD);
        let task = tokio::spawn(async move {
            while let Some(batch) = batches.recv().await {
                gc.root(&batch).await;
            }
        });
        (Some(RootSender(sender)), Some(Rooter { task }))
    }

    /// Waits until every batch sent is rooted: call once every sender is
    /// gone.
    pub async fn finish(self) {
        if let Err(e) = self.task.await {
            tracing::warn!("the evaluation's GC rooting task failed: {e}");
        }
    }
}

/// One worker's paths not yet sent to the rooter.
pub struct RootBatch {
    sender: Option<RootSender>,
    paths: Vec<String>,
}

impl RootBatch {
    pub fn new(sender: Option<RootSender>) -> RootBatch {
        RootBatch { sender, paths: Vec::new() }
    }

    /// A reported job's derivation (unless its evaluator roots those
    /// itself) and outputs; sent once a batch is full.
    pub async fn add(&mut self, job: &JobInfo, with_derivation: bool) {
        if self.sender.is_none() {
            return;
        }
        if with_derivation {
            self.paths.push(job.drv_path.clone());
        }
        self.paths.extend(job.outputs.iter().map(|(_, path)| path.clone()));
        if self.paths.len() >= BATCH {
            self.send().await;
        }
    }

    /// Sends what is left; waits only when the rooter is far behind.
    pub async fn send(&mut self) {
        let paths = std::mem::take(&mut self.paths);
        if let Some(RootSender(sender)) = &self.sender
            && !paths.is_empty()
        {
            // The rooter ends only after every sender is gone.
            let _ = sender.send(paths).await;
        }
    }
}
