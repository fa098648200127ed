//! Evaluation with `nix-eval-jobs`, when it is installed: it walks the jobs
//! with its own worker processes and memory cap and prints one JSON line per
//! job (or per job error).
//!
//! It is given `jobs.nix` (next to `wrapper.nix`): the jobset's attribute
//! set with Orthrus's semantics applied first — job functions already called
//! with their arguments, and what nix-eval-jobs does not report (the jobs a
//! function used, aggregate constituents as written) tucked into
//! `meta._orthrus`, which nix-eval-jobs prints with `--meta`.
//!
//! Should it fail as a whole (an old version without `--force-recurse`, or
//! an expression that does not evaluate at all), the caller falls back to
//! the `nix-instantiate` workers, which also word the error properly.

use std::collections::BTreeMap;

use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, BufReader};

use super::instantiate::{JobsSource, RawJobs, Workspace};
use super::jobs::{ConstituentRef, JobInfo};
use super::rooter::{RootBatch, Rooter};
use crate::nix::{EvalCall, EvalJobsCall, Nix, string_literal};

/// The expression given to nix-eval-jobs; it reuses `wrapper.nix`'s inputs.
pub const JOBS_NIX: &str = r#"
{ exprPath }:
let
  inherit (builtins) attrNames functionArgs intersectAttrs isAttrs isFunction isString mapAttrs removeAttrs;
  inputs = import ./inputs.nix;
  jobDeps = import ./deps.nix;
  callWith = f: args: f (intersectAttrs (functionArgs f) args);
  top = import exprPath;
  root = if isFunction top then callWith top inputs else top;
  constituent = c: if isString c then { name = c; } else { drvPath = c.drvPath; };
  annotate = usedDeps: drv:
    if !(isAttrs drv && (drv.type or null) == "derivation") then drv
    else let aggregate = (drv._hydraAggregate or false) == true; in drv // {
      meta = (if isAttrs (drv.meta or null) then drv.meta else { }) // {
        _orthrus = {
          inherit usedDeps aggregate;
          constituents = if aggregate then map constituent drv.constituents else [ ];
          globConstituents = (drv._hydraGlobConstituents or false) == true;
        };
      };
    };
  prepare = name: job:
    if isFunction job
    then annotate (attrNames (intersectAttrs (functionArgs job) (removeAttrs root (attrNames inputs))))
                  (callWith job (jobDeps // inputs))
    else annotate [ ] job;
in mapAttrs prepare root
"#;

/// One line of nix-eval-jobs output.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Line {
    #[serde(default)]
    attr: String,
    #[serde(default)]
    attr_path: Vec<String>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    system: Option<String>,
    #[serde(default)]
    drv_path: Option<String>,
    #[serde(default)]
    outputs: BTreeMap<String, Option<String>>,
    #[serde(default)]
    meta: Option<serde_json::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct OrthrusMeta {
    #[serde(default)]
    used_deps: Vec<String>,
    #[serde(default)]
    aggregate: bool,
    #[serde(default)]
    constituents: Vec<ConstituentRef>,
    #[serde(default)]
    glob_constituents: bool,
}

/// What one output line means.
#[derive(Debug, PartialEq)]
enum Parsed {
    Job(String, Box<JobInfo>),
    Error(String, String),
}

fn meta_string(meta: &serde_json::Value, key: &str) -> Option<String> {
    meta.get(key).and_then(|v| v.as_str()).map(str::to_owned)
}

/// license / maintainers flattened as Hydra does: strings, or the given
/// field of attribute sets, comma-separated.
fn meta_flatten(meta: &serde_json::Value, key: &str, field: &str) -> Option<String> {
    let value = meta.get(key)?;
    let items: Vec<&serde_json::Value> = match value {
        serde_json::Value::Array(items) => items.iter().collect(),
        other => vec![other],
    };
    let strings: Vec<&str> = items
        .into_iter()
        .filter_map(|item| item.as_str().or_else(|| item.get(field).and_then(|f| f.as_str())))
        .collect();
    (!strings.is_empty()).then(|| strings.join(", "))
}

fn parse_line(text: &str) -> Result<Parsed, String> {
    let line: Line = serde_json::from_str(text).map_err(|e| format!("unreadable nix-eval-jobs output line: {e}"))?;
    let name = if line.attr_path.is_empty() { line.attr.clone() } else { line.attr_path.join(".") };
    if let Some(error) = line.error {
        return Ok(Parsed::Error(name, crate::nix::strip_ansi(&error)));
    }
    let meta = line.meta.unwrap_or(serde_json::Value::Null);
    let orthrus: OrthrusMeta = meta
        .get("_orthrus")
        .map(|m| serde_json::from_value(m.clone()))
        .transpose()
        .map_err(|e| e.to_string())?
        .unwrap_or_default();
    let int = |key: &str| meta.get(key).and_then(|v| v.as_i64());
    let job = JobInfo {
        nix_name: line.name.ok_or("a job line without a name")?,
        system: line.system.ok_or("a job line without a system")?,
        drv_path: line.drv_path.ok_or("a job line without a drvPath")?,
        outputs: line.outputs.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))).collect(),
        description: meta_string(&meta, "description"),
        license: meta_flatten(&meta, "license", "shortName"),
        homepage: meta_string(&meta, "homepage"),
        maintainers: meta_flatten(&meta, "maintainers", "email"),
        scheduling_priority: int("schedulingPriority"),
        timeout: int("timeout"),
        max_silent: int("maxSilent"),
        is_channel: meta.get("isHydraChannel").or(meta.get("isChannel")).and_then(|v| v.as_bool()).unwrap_or(false),
        aggregate: orthrus.aggregate,
        constituents: orthrus.constituents,
        glob_constituents: orthrus.glob_constituents,
        used_deps: orthrus.used_deps,
    };
    Ok(Parsed::Job(name, Box::new(job)))
}

/// Runs nix-eval-jobs over the workspace. `Err` means it could not do the
/// job at all, and the caller should use the other backend.
pub async fn evaluate(nix: &Nix, workspace: &Workspace, workers: usize, memory_mb: u64) -> Result<RawJobs, String> {
    let JobsSource::File(expr_path) = &workspace.jobs else {
        // Flakes are evaluated by the workers of `instantiate.rs`.
        return Err("nix-eval-jobs is used for legacy jobsets only".into());
    };
    let jobs_file = workspace.dir.join("jobs.nix");
    tokio::fs::write(&jobs_file, JOBS_NIX).await.map_err(|e| e.to_string())?;
    // The server's roots when it keeps them (nix-eval-jobs names each link
    // by the derivation's base name, as they do), so that derivations stay
    // until the evaluation is recorded; else roots that last the evaluation.
    let gc_roots = match &workspace.gc_roots {
        Some(gc) => gc.dir().to_owned(),
        None => workspace.dir.join("gcroots"),
    };
    tokio::fs::create_dir_all(&gc_roots).await.map_err(|e| e.to_string())?;
    let call = EvalJobsCall {
        eval: EvalCall {
            file: jobs_file,
            args: vec![("exprPath".to_owned(), format!("/. + {}", string_literal(&expr_path.to_string_lossy())))],
            search_path: workspace.search_path.clone(),
            ..Default::default()
        },
        workers,
        max_memory_mb: memory_mb,
        gc_roots_dir: gc_roots,
        extra_flags: vec!["--force-recurse".into()],
    };
    let mut child = nix.spawn_eval_jobs(&call).map_err(|e| e.to_string())?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut stderr = child.stderr.take().expect("stderr is piped");
    // Messages (`builtins.trace` among them) only matter at the end.
    let stderr_task = tokio::spawn(async move {
        crate::nix::read_tail(&mut stderr, crate::nix::MAX_ERROR_OUTPUT).await.unwrap_or_default()
    });
    // nix-eval-jobs roots the derivations; the outputs are rooted here.
    let (roots, rooter) = Rooter::start(nix, workspace.gc_roots.as_ref());
    let mut to_root = RootBatch::new(roots);
    let mut result = RawJobs::default();
    let mut stdout = BufReader::new(stdout);
    let remaining = workspace.deadline.saturating_duration_since(std::time::Instant::now());
    let read = tokio::time::timeout(remaining, async {
        let mut line = Vec::new();
        while let Some(whole) = read_line(&mut stdout, &mut line).await.map_err(|e| e.to_string())? {
            if !whole {
                result.errors.push((
                    format!("(job {} of the output)", result.jobs.len() + result.errors.len() + 1),
                    format!(
                        "nix-eval-jobs printed a line over {} MiB for this job: its meta is too large",
                        MAX_LINE >> 20
                    ),
                ));
                continue;
            }
            let line = String::from_utf8_lossy(&line);
            if line.trim().is_empty() {
                continue;
            }
            match parse_line(&line)? {
                Parsed::Job(name, job) => {
                    to_root.add(&job, false).await;
                    result.jobs.push((name, *job));
                }
                Parsed::Error(name, message) => result.errors.push((name, message)),
            }
            workspace.progress.add_evaluated(1);
        }
        Ok::<_, String>(())
    })
    .await;
    to_root.send().await;
    drop(to_root);
    result.made = rooter.finish().await;
    match read {
        Err(_) => return Err("the evaluation ran out of time (evaluator.timeout_secs)".into()),
        Ok(outcome) => outcome?,
    }
    let status = child.wait().await.map_err(|e| e.to_string())?;
    let stderr = stderr_task.await.unwrap_or_default();
    if !status.success() && result.jobs.is_empty() && result.errors.is_empty() {
        let marker = if stderr.cut > 0 { crate::nix::cut_marker(stderr.cut) + "\n" } else { String::new() };
        return Err(format!(
            "nix-eval-jobs failed: {marker}{}",
            crate::nix::strip_ansi(String::from_utf8_lossy(&stderr.bytes).trim())
        ));
    }
    result.jobs.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(result)
}

/// One job's line at most: more is a job whose meta is absurd.
const MAX_LINE: usize = 16 << 20;

/// The next line of nix-eval-jobs' output (see [`crate::nix::read_bounded_line`]).
async fn read_line(stream: &mut (impl AsyncBufReadExt + Unpin), line: &mut Vec<u8>) -> std::io::Result<Option<bool>> {
    crate::nix::read_bounded_line(stream, line, MAX_LINE).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_job_lines() {
        let line = r#"{"attr":"hello","attrPath":["pkgs","hello"],"drvPath":"/nix/store/a-hello.drv","inputDrvs":{},"name":"hello-2.12","outputs":{"out":"/nix/store/b-hello","dev":null},"system":"x86_64-linux","meta":{"description":"greets","license":[{"shortName":"gpl3"},"mit"],"maintainers":[{"email":"a@b"}],"timeout":60,"_orthrus":{"usedDeps":["tarball"],"aggregate":true,"constituents":[{"name":"x"},{"drvPath":"/nix/store/c.drv"}],"globConstituents":false}}}"#;
        let Parsed::Job(name, job) = parse_line(line).unwrap() else { panic!("not a job") };
        assert_eq!(name, "pkgs.hello");
        assert_eq!(job.nix_name, "hello-2.12");
        assert_eq!(job.outputs.len(), 1);
        assert_eq!(job.license.as_deref(), Some("gpl3, mit"));
        assert_eq!(job.maintainers.as_deref(), Some("a@b"));
        assert_eq!(job.timeout, Some(60));
        assert_eq!(job.used_deps, ["tarball"]);
        assert!(job.aggregate);
        assert_eq!(
            job.constituents,
            [
                ConstituentRef::Name { name: "x".into() },
                ConstituentRef::Derivation { drv_path: "/nix/store/c.drv".into() }
            ]
        );
    }

    #[test]
    fn parses_error_lines() {
        let line = r#"{"attr":"broken","attrPath":["broken"],"error":"\u001b[31;1merror:\u001b[0m boom"}"#;
        assert_eq!(parse_line(line).unwrap(), Parsed::Error("broken".into(), "error: boom".into()));
        assert!(parse_line("not json").is_err());
    }

    #[tokio::test]
    async fn long_lines_are_skipped_not_kept() {
        let mut text = b"first\n".to_vec();
        text.extend(std::iter::repeat_n(b'x', MAX_LINE + 100));
        text.extend_from_slice(b"\nlast");
        let mut stream = &text[..];
        let mut line = Vec::new();
        assert_eq!(read_line(&mut stream, &mut line).await.unwrap(), Some(true));
        assert_eq!(line, b"first");
        assert_eq!(read_line(&mut stream, &mut line).await.unwrap(), Some(false));
        assert_eq!(read_line(&mut stream, &mut line).await.unwrap(), Some(true));
        assert_eq!(line, b"last");
        assert_eq!(read_line(&mut stream, &mut line).await.unwrap(), None);
    }
}
