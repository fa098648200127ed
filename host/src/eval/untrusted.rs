//! What an expression says about its jobs, checked before it is recorded.
//!
//! An expression is written by whoever owns the jobset, and it can say
//! anything: `d // { out = d.out // { outPath = "/"; }; }` claims the
//! server's root as a build's output, which the server would then read
//! products from and serve. So a job's outputs must be exactly those its
//! derivation (the `.drv` in the store) makes, and its free-text fields are
//! cut to a size a page can show. A job that fails a check is recorded as
//! an error of the evaluation, like a job that does not evaluate.

use std::collections::HashMap;

use futures_util::StreamExt;
use sha2::{Digest, Sha256};

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

/// The outputs each derivation makes: read beside the evaluation as its
/// jobs are reported (`rooter.rs`), so that the check after it reads no
/// file again (a third of a second at 20,000 jobs, when nothing else could
/// be done). Kept as digests (SHA-256 of the derivation's path, cut to 128
/// bits, to SHA-256 of its outputs' names and paths): 48 bytes a job, where
/// the paths themselves held 40 MiB more at 100,000 jobs. A job whose
/// outputs are exactly its derivation's passes on the digests alone; any
/// other is checked against the file again, which also words the error.
#[derive(Debug, Default)]
pub struct MadeOutputs(HashMap<[u8; 16], [u8; 32]>);

impl MadeOutputs {
    /// Records what `derivation` (at `drv`) makes, when every output's path
    /// is known (a content-addressed one is left to the check to refuse).
    pub fn insert(&mut self, drv: &StorePath, derivation: &Derivation) {
        let paths: Option<Vec<(&str, &str)>> = derivation
            .outputs
            .iter()
            .map(|(name, output)| output.path.as_ref().map(|path| (name.as_str(), path.as_str())))
            .collect();
        if let Some(paths) = paths {
            self.0.insert(derivation_key(drv.as_str()), outputs_digest(paths));
        }
    }

    /// Whether the job claims exactly the outputs its derivation was read
    /// to make.
    fn confirms(&self, job: &JobInfo) -> bool {
        let claimed = job.outputs.iter().map(|(name, path)| (name.as_str(), path.as_str())).collect();
        self.0.get(&derivation_key(&job.drv_path)) == Some(&outputs_digest(claimed))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }
}

fn derivation_key(drv: &str) -> [u8; 16] {
    let digest = Sha256::digest(drv.as_bytes());
    digest[..16].try_into().expect("a SHA-256 digest is 32 bytes")
}

/// The digest of outputs in name order; each name and path is preceded
/// by its length, so that no two lists share one (a claimed path is the
/// expression's, and may hold any byte a separator would be).
fn outputs_digest(mut outputs: Vec<(&str, &str)>) -> [u8; 32] {
    outputs.sort_unstable();
    let mut hash = Sha256::new();
    for (name, path) in outputs {
        for part in [name, path] {
            hash.update((part.len() as u64).to_le_bytes());
            hash.update(part.as_bytes());
        }
    }
    hash.finalize().into()
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
    if made.confirms(job) {
        return Ok(());
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
    fn digests_confirm_exactly_the_outputs_read() {
        let text = br#"Derive([("dev","/nix/store/00000000000000000000000000000000-a-dev","",""),("out","/nix/store/11111111111111111111111111111111-a","","")],[],[],"x86_64-linux","/bin/sh",[],[])"#;
        let derivation = Derivation::parse(text).unwrap();
        let drv = StorePath::parse("/nix/store/22222222222222222222222222222222-a.drv").unwrap();
        let mut made = MadeOutputs::default();
        made.insert(&drv, &derivation);
        let job = |outputs: &[(&str, &str)]| JobInfo {
            drv_path: drv.as_str().to_owned(),
            outputs: outputs.iter().map(|(n, p)| (n.to_string(), p.to_string())).collect(),
            ..JobInfo::default()
        };
        let out = ("out", "/nix/store/11111111111111111111111111111111-a");
        let dev = ("dev", "/nix/store/00000000000000000000000000000000-a-dev");
        assert!(made.confirms(&job(&[out, dev])), "in any order");
        assert!(!made.confirms(&job(&[out])), "a part is checked against the file");
        assert!(!made.confirms(&job(&[("out", "/"), dev])));
        // Names and paths cannot be shifted into one another, whatever bytes
        // a claimed path holds.
        assert_ne!(outputs_digest(vec![("ab", "c")]), outputs_digest(vec![("a", "bc")]));
        let run_together = format!("{}\0out\0{}", dev.1, out.1);
        assert!(!made.confirms(&job(&[("dev", &run_together)])));
        let other =
            JobInfo { drv_path: "/nix/store/33333333333333333333333333333333-a.drv".into(), ..job(&[out, dev]) };
        assert!(!made.confirms(&other), "another derivation was not read");
    }

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
