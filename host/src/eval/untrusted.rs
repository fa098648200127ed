//! What an expression says about its jobs, checked before it is recorded.
//!
//! An expression is written by whoever owns the jobset, and it can say
//! anything: `d // { out = d.out // { outPath = "/"; }; }` claims the
//! server's root as a build's output, which the server would then read
//! products from and serve. So a job's outputs must be exactly those its
//! derivation (the `.drv` in the store) makes, and its free-text fields are
//! cut to a size a page can show. A job that fails a check is recorded as
//! an error of the evaluation, like a job that does not evaluate.

use futures_util::StreamExt;

use super::instantiate::RawJobs;
use super::jobs::JobInfo;
use crate::nix::{Nix, StorePath};

/// Longest description, license, homepage or maintainers kept, in bytes.
const MAX_META: usize = 4096;
/// Longest derivation name kept (Nix allows 211 characters).
const MAX_NAME: usize = 1024;
/// Longest error message kept for one job.
const MAX_ERROR: usize = 64 * 1024;
/// Derivations read at once while checking.
const CONCURRENT_READS: usize = 32;

/// Moves every job whose outputs are not its derivation's to the errors,
/// and cuts what is too long.
pub async fn check(nix: &Nix, raw: RawJobs) -> RawJobs {
    let RawJobs { jobs, mut errors } = raw;
    let checked: Vec<(String, JobInfo, Result<(), String>)> = futures_util::stream::iter(jobs)
        .map(|(name, job)| async move {
            let verdict = if name.len() > MAX_NAME {
                Err(format!("its name is longer than {MAX_NAME} bytes"))
            } else {
                outputs_match(nix, &job).await
            };
            (name, job, verdict)
        })
        .buffer_unordered(CONCURRENT_READS)
        .collect()
        .await;
    let mut kept = Vec::with_capacity(checked.len());
    for (name, mut job, verdict) in checked {
        match verdict {
            Ok(()) => {
                cut_fields(&mut job);
                kept.push((name, job));
            }
            Err(message) => errors.push((name, message)),
        }
    }
    for (name, message) in &mut errors {
        cut(name, MAX_NAME);
        cut(message, MAX_ERROR);
    }
    kept.sort_by(|a, b| a.0.cmp(&b.0));
    RawJobs { jobs: kept, errors }
}

/// The job's outputs are the paths its derivation makes, each of them.
async fn outputs_match(nix: &Nix, job: &JobInfo) -> Result<(), String> {
    let drv = StorePath::parse(&job.drv_path).map_err(|e| format!("its drvPath is not a derivation: {e}"))?;
    if job.outputs.is_empty() {
        return Err("it has no outputs".into());
    }
    let derivation = nix.read_derivation(&drv).await.map_err(|e| format!("its derivation cannot be read: {e}"))?;
    for (name, claimed) in &job.outputs {
        let made =
            derivation.outputs.get(name).ok_or_else(|| format!("its derivation {drv} has no output ‘{name}’"))?;
        let made = made.path.as_ref().ok_or_else(|| {
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
