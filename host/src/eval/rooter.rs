//! What is done beside an evaluation with each job as it is reported:
//! its derivation and outputs are rooted, and its derivation is read for
//! the check of its outputs (`untrusted.rs`).
//!
//! A root is a file system write per path (`gc/links.rs`; 40 µs each
//! when they were symbolic links). Done in line,
//! rooting held up the reading of a worker's results, and the worker with
//! them once its pipe was full (one worker ran at a third of a core); done
//! after the evaluation, the outputs' roots took 2 s of a 100,000-job
//! evaluation before it could be recorded. A task of its own roots them
//! while the workers go on, and the evaluation ends once it is done, so
//! that everything is rooted before the builds are queued. Reading the
//! derivations there too takes the check's reads (a third of a second at
//! 20,000 jobs) off the end of the evaluation, while the file is fresh in
//! the page cache.
//!
//! What is rooted is what a job claims, before it is checked against its
//! derivation (`untrusted.rs`): a job that fails the check is not
//! recorded, so the next full update of the roots (`gc/`) removes its
//! links, as it removes those of every path no build wants.

use tokio::sync::mpsc;

use super::jobs::JobInfo;
use super::untrusted::MadeOutputs;
use crate::gc::GcRoots;
use crate::nix::{Nix, StorePath};

/// Paths rooted at once, as they are reported.
const BATCH: usize = 500;
/// Batches waiting for the rooter at most (a few MiB).
const BATCHES_AHEAD: usize = 64;

/// The task that roots what it is sent and reads the derivations.
pub struct Rooter {
    task: tokio::task::JoinHandle<MadeOutputs>,
}

/// Where an evaluation's reported jobs go (cheap to clone), and whether
/// the server keeps roots (else their paths are only read).
#[derive(Clone)]
pub struct RootSender {
    batches: mpsc::Sender<Reported>,
    keeps_roots: bool,
}

/// A batch of reported jobs' paths.
#[derive(Default)]
struct Reported {
    /// To root (none when the server keeps no roots).
    roots: Vec<String>,
    /// To read.
    derivations: Vec<StorePath>,
}

impl Rooter {
    /// Starts the task; it roots in `gc`'s directory when the server keeps
    /// roots.
    pub fn start(nix: &Nix, gc: Option<&GcRoots>) -> (RootSender, Rooter) {
        let (gc, nix) = (gc.cloned(), nix.clone());
        let keeps_roots = gc.is_some();
        let (sender, mut batches) = mpsc::channel::<Reported>(BATCHES_AHEAD);
        let task = tokio::spawn(async move {
            let mut made = MadeOutputs::default();
            while let Some(batch) = batches.recv().await {
                if let Some(gc) = &gc {
                    gc.root(&batch.roots).await;
                }
                // One unreadable is read again by the check, which says why.
                for (path, derivation) in nix.read_derivations(batch.derivations).await {
                    if let Ok(derivation) = derivation {
                        made.insert(&path, &derivation);
                    }
                }
            }
            made
        });
        (RootSender { batches: sender, keeps_roots }, Rooter { task })
    }

    /// Waits until every batch sent is rooted and read, and returns what
    /// the derivations make: call once every sender is gone.
    pub async fn finish(self) -> MadeOutputs {
        self.task.await.unwrap_or_else(|e| {
            tracing::warn!("the evaluation's GC rooting task failed: {e}");
            MadeOutputs::default()
        })
    }
}

/// One worker's reported paths not yet sent to the rooter.
pub struct RootBatch {
    sender: RootSender,
    batch: Reported,
}

impl RootBatch {
    pub fn new(sender: RootSender) -> RootBatch {
        RootBatch { sender, batch: Reported::default() }
    }

    /// A reported job's derivation (rooted unless its evaluator roots those
    /// itself) and outputs; sent once a batch is full.
    pub async fn add(&mut self, job: &JobInfo, root_derivation: bool) {
        if let Ok(drv) = StorePath::parse(&job.drv_path) {
            self.batch.derivations.push(drv);
        }
        if self.sender.keeps_roots {
            if root_derivation {
                self.batch.roots.push(job.drv_path.clone());
            }
            self.batch.roots.extend(job.outputs.iter().map(|(_, path)| path.clone()));
        }
        if self.batch.derivations.len() >= BATCH || self.batch.roots.len() >= BATCH {
            self.send().await;
        }
    }

    /// Sends what is left; waits only when the rooter is far behind.
    pub async fn send(&mut self) {
        let batch = std::mem::take(&mut self.batch);
        if !batch.roots.is_empty() || !batch.derivations.is_empty() {
            // The rooter ends only after every sender is gone.
            let _ = self.sender.batches.send(batch).await;
        }
    }
}
