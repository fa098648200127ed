//! What an expression says about its jobs, checked before it is recorded.
//!
//! An expression is written by whoever owns the jobset, and it can say
//! anything: `d // { out = d.out // { outPath = "/"; }; }` claims the
//! server's root as a build's output, which the server would then read
//! products from and serve. So a job's outputs must be exactly those its
//! derivation (the `.drv` in the store) makes, and its free-text fields are
//! cut to a size a page can show. A job that fails a check is recorded as
//! an error of the evaluation, like a job that does not evaluate.

use std::collections::{BTreeMap, HashMap};

use futures_util::StreamExt;

use super::instantiate::RawJobs;
use super::jobs::JobInfo;
use crate::nix::{Derivation, Nix, StorePath};

/// Longest description, license, homepage or maintainers kept, in bytes.
const MAX_META: usize = 4096;
/// Longest derivation name kept (Nix allows 211 characters).
const MAX_NAME: usize = 1024;
/// Longest error message kept for one job.
const MAX_ERROR: usize = 64 * 1024;
/// Derivations read at once while checking.
const CONCURRENT_READS: usize = 32;

/// The outputs each derivation makes, by derivation path: read beside the
/// evaluation as its jobs are reported (`rooter.rs`), so that the check
/// after it reads no file again (a third of a second at 20,000 jobs, when
/// nothing else could be done).
#[derive(Debug, Default)]
pub struct MadeOutputs(HashMap<String, BTreeMap<String, Option<StorePath>>>);

impl MadeOutputs {
    pub fn insert(&mut self, drv: &StorePath, derivation: Derivation) {
        let outputs = derivation.outputs.into_iter().map(|(name, output)| (name, output.path)).collect();
        self.0.insert(drv.as_str().to_owned(), outputs);
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }
}

/// Moves every job whose outputs are not its derivation's to the errors,
/// and cuts what is too long. The jobs stay where they are (only a verdict
/// a job is collected): a second list of them, growing as it is filled,
/// held 40 MiB more at 100,000 jobs.
pub async fn check(nix: &Nix, raw: RawJobs) -> RawJobs {
    let RawJobs { mut jobs, mut errors, made } = raw;
    // By index: a closure over `&(String, JobInfo)` would make the future
    // generic over that reference's lifetime, which the task cannot be.
    let jobs_ref = &jobs;
    let verdicts: Vec<Result<(), String>> = futures_util::stream::iter(0..jobs.len())
        .map(|i| verdict(nix, &made, &jobs_ref[i].0, &jobs_ref[i].1))
        .buffered(CONCURRENT_READS)
        .collect()
        .await;
    let mut verdicts = verdicts.into_iter();
    jobs.retain_mut(|(name, job)| match verdicts.next().unwrap_or_else(|| Err("it was not checked".into())) {
        Ok(()) => {
            cut_fields(job);
            true
        }
        Err(message) => {
            errors.push((std::mem::take(name), message));
            false
        }
    });
    for (name, message) in &mut errors {
        cut(name, MAX_NAME);
        cut(message, MAX_ERROR);
    }
    jobs.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    RawJobs { jobs, errors, made: MadeOutputs::default() }
}

/// Whether a job may be recorded: its name, then its outputs.
async fn verdict(nix: &Nix, made: &MadeOutputs, name: &str, job: &JobInfo) -> Result<(), String> {
    if name.len() > MAX_NAME {
        return Err(format!("its name is longer than {MAX_NAME} bytes"));
    }
    outputs_match(nix, made, job).await
}

/// The job's outputs are the paths its derivation makes, each of them.
async fn outputs_match(nix: &Nix, made: &MadeOutputs, job: &JobInfo) -> Result<(), String> {
    let drv = StorePath::parse(&job.drv_path).map_err(|e| format!("its drvPath is not a derivation: {e}"))?;
    if job.outputs.is_empty() {
        return Err("it has no outputs".into());
    }
    let read;
    let outputs = match made.0.get(drv.as_str()) {
        Some(outputs) => outputs,
        None => {
            let mut one = MadeOutputs::default();
            let derivation =
                nix.read_derivation(&drv).await.map_err(|e| format!("its derivation cannot be read: {e}"))?;
            one.insert(&drv, derivation);
            read = one;
            &read.0[drv.as_str()]
        }
    };
    for (name, claimed) in &job.outputs {
        let made = outputs.get(name).ok_or_else(|| format!("its derivation {drv} has no output ‘{name}’"))?;
        let made = made.as_ref().ok_or_else(|| {
            format!("output ‘{name}’ is content-addressed: its path is only known once built, which is not supported")
        })?;
        if made.as_str() != claimed {
            return Err(format!("output ‘{name}’ is said to be {claimed:?}, but its derivation {drv} makes {made}"));
        }
    }
    Ok(())
}

/// Cuts a job's free text to what a page shows (done as soon as a result
/// is read, so that an evaluation never holds more).
pub(super) fn cut_fields(job: &mut JobInfo) {
    cut(&mut job.nix_name, MAX_NAME);
    for text in [&mut job.description, &mut job.license, &mut job.homepage, &mut job.maintainers].into_iter().flatten()
    {
        cut(text, MAX_META);
    }
}

/// Cuts `text` to at most `max` bytes (at a character boundary), saying so.
fn cut(text: &mut String, max: usize) {
    if text.len() <= max {
        return;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let removed = text.len() - end;
    text.truncate(end);
    text.push_str(&format!(" [… {removed} bytes cut]"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_text_is_cut_at_a_character() {
        let mut text = "é".repeat(10);
        cut(&mut text, 5);
        assert_eq!(text, "éé [… 16 bytes cut]");
        let mut short = "ok".to_owned();
        cut(&mut short, 5);
        assert_eq!(short, "ok");
    }
}
