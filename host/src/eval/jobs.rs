//! Jobs as an evaluation reports them, and what the evaluator makes of
//! them before recording: defaults applied, aggregate constituents resolved
//! to job names (from derivations, names and globs), broken aggregates and
//! constituent cycles turned into per-job errors.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde::Deserialize;

use crate::db::NewJob;

/// One job as the evaluation describes it.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobInfo {
    pub nix_name: String,
    pub system: String,
    pub drv_path: String,
    /// Output name to store path, by name. A list, not a map: a map of one
    /// entry takes a whole B-tree node (half a KiB), 50 MiB over the jobs
    /// of a 100,000-job evaluation, held until they are recorded.
    #[serde(deserialize_with = "outputs_by_name")]
    pub outputs: Vec<(String, String)>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub license: Option<String>,
    #[serde(default)]
    pub homepage: Option<String>,
    #[serde(default)]
    pub maintainers: Option<String>,
    #[serde(default)]
    pub scheduling_priority: Option<i64>,
    #[serde(default)]
    pub timeout: Option<i64>,
    #[serde(default)]
    pub max_silent: Option<i64>,
    #[serde(default)]
    pub is_channel: bool,
    #[serde(default)]
    pub aggregate: bool,
    #[serde(default)]
    pub constituents: Vec<ConstituentRef>,
    #[serde(default)]
    pub glob_constituents: bool,
    /// Jobs whose latest build this job (a function) took as arguments.
    #[serde(default)]
    pub used_deps: Vec<String>,
}

/// A JSON object of output paths as a list sorted by output name.
fn outputs_by_name<'de, D: serde::Deserializer<'de>>(outputs: D) -> Result<Vec<(String, String)>, D::Error> {
    let outputs: BTreeMap<String, String> = Deserialize::deserialize(outputs)?;
    Ok(outputs.into_iter().collect())
}

/// A constituent as the aggregate lists it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum ConstituentRef {
    Derivation {
        #[serde(rename = "drvPath")]
        drv_path: String,
    },
    Name {
        name: String,
    },
}

/// Defaults for meta attributes a job does not set.
#[derive(Debug, Clone, Copy)]
pub struct JobDefaults {
    pub timeout: i64,
    pub max_silent: i64,
}

/// The evaluation's jobs and errors, ready to record.
#[derive(Debug, Clone, Default)]
pub struct ResolvedJobs {
    pub jobs: Vec<NewJob>,
    pub errors: Vec<(String, String)>,
    /// Job names used as arguments by job functions.
    pub used_deps: BTreeSet<String>,
}

fn clamp_i32(value: i64) -> i32 {
    value.clamp(0, i64::from(i32::MAX)) as i32
}

/// Applies defaults and resolves aggregates. `errors` are jobs that failed
/// to evaluate; aggregates that depend on them fail too.
pub fn resolve(
    mut jobs: Vec<(String, JobInfo)>,
    mut errors: Vec<(String, String)>,
    defaults: JobDefaults,
) -> ResolvedJobs {
    // Sorted by name in place, looked up by binary search: a map of the
    // jobs would copy all of them (twice while it is built).
    jobs.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    jobs.dedup_by(|a, b| a.0 == b.0);
    let is_job = |jobs: &[(String, JobInfo)], name: &str| jobs.binary_search_by(|(n, _)| n.as_str().cmp(name)).is_ok();
    let mut failed: HashSet<String> = errors.iter().map(|(name, _)| name.clone()).collect();

    // A derivation listed as a constituent means the job with that
    // derivation; when several jobs share it, the shortest name wins.
    let mut job_of_drv: HashMap<&str, &str> = HashMap::new();
    for (name, job) in &jobs {
        job_of_drv
            .entry(job.drv_path.as_str())
            .and_modify(|current| {
                if (name.len(), name.as_str()) < (current.len(), *current) {
                    *current = name;
                }
            })
            .or_insert(name);
    }
    let all_names: Vec<&str> =
        jobs.iter().map(|(name, _)| name.as_str()).chain(failed.iter().map(String::as_str)).collect();

    let mut constituents: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut broken: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, job) in jobs.iter().filter(|(_, j)| j.aggregate) {
        let mut found = BTreeSet::new();
        let mut problems = Vec::new();
        for reference in &job.constituents {
            match reference {
                ConstituentRef::Derivation { drv_path } => match job_of_drv.get(drv_path.as_str()) {
                    Some(&constituent) if constituent != name => {
                        found.insert(constituent.to_owned());
                    }
                    Some(_) => {}
                    None => {
                        tracing::warn!(job = %name, %drv_path, "constituent derivation is not a job of this evaluation")
                    }
                },
                ConstituentRef::Name { name: pattern } if job.glob_constituents => match globset::Glob::new(pattern) {
                    Err(e) => problems.push(format!("‘{pattern}’ is not a valid glob: {e}")),
                    Ok(glob) => {
                        let matcher = glob.compile_matcher();
                        let matches: Vec<&str> =
                            all_names.iter().copied().filter(|&n| n != name && matcher.is_match(n)).collect();
                        if matches.is_empty() {
                            problems.push(format!("constituent glob pattern ‘{pattern}’ had no matches"));
                        }
                        for m in matches {
                            if failed.contains(m) {
                                problems.push(format!("‘{m}’ failed to evaluate"));
                            } else {
                                found.insert(m.to_owned());
                            }
                        }
                    }
                },
                ConstituentRef::Name { name: constituent } => {
                    if failed.contains(constituent) {
                        problems.push(format!("‘{constituent}’ failed to evaluate"));
                    } else if is_job(&jobs, constituent) && constituent != name {
                        found.insert(constituent.clone());
                    } else {
                        problems.push(format!("‘{constituent}’ does not exist"));
                    }
                }
            }
        }
        if problems.is_empty() {
            constituents.insert(name.clone(), found);
        } else {
            broken.insert(name.clone(), problems);
        }
    }

    // Aggregates whose constituents include each other could never finish.
    for name in aggregate_cycles(&constituents) {
        constituents.remove(&name);
        broken.insert(name, vec!["its constituents form a dependency cycle with other aggregates".into()]);
    }
    // An aggregate whose constituent aggregate broke is broken as well.
    loop {
        let newly: Vec<String> = constituents
            .iter()
            .filter(|(_, cs)| cs.iter().any(|c| broken.contains_key(c)))
            .map(|(name, _)| name.clone())
            .collect();
        if newly.is_empty() {
            break;
        }
        for name in newly {
            let cs = constituents.remove(&name).unwrap_or_default();
            let bad = cs.iter().filter(|c| broken.contains_key(*c)).map(|c| format!("‘{c}’ is broken")).collect();
            broken.insert(name, bad);
        }
    }
    jobs.retain(|(name, _)| !broken.contains_key(name));
    for (name, problems) in broken {
        failed.insert(name.clone());
        errors.push((name, format!("aggregate job has broken constituents: {}", problems.join("; "))));
    }

    let mut used_deps = BTreeSet::new();
    let resolved = jobs
        .into_iter()
        .map(|(name, job)| {
            used_deps.extend(job.used_deps.iter().cloned());
            NewJob {
                constituents: constituents.remove(&name).map(|c| c.into_iter().collect()),
                name,
                nix_name: job.nix_name,
                drv_path: job.drv_path,
                system: job.system,
                outputs: job.outputs,
                description: job.description,
                license: job.license,
                homepage: job.homepage,
                maintainers: job.maintainers,
                scheduling_priority: clamp_i32(job.scheduling_priority.unwrap_or(100)),
                timeout: clamp_i32(job.timeout.unwrap_or(defaults.timeout)),
                max_silent: clamp_i32(job.max_silent.unwrap_or(defaults.max_silent)),
                is_channel: job.is_channel,
            }
        })
        .collect();
    errors.sort();
    ResolvedJobs { jobs: resolved, errors, used_deps }
}

/// Aggregates that reach themselves through constituent aggregates.
fn aggregate_cycles(constituents: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let mut in_cycle = Vec::new();
    for start in constituents.keys() {
        let mut stack: Vec<&str> = constituents[start].iter().map(String::as_str).collect();
        let mut seen = HashSet::new();
        while let Some(node) = stack.pop() {
            if node == start {
                in_cycle.push(start.clone());
                break;
            }
            if seen.insert(node) {
                if let Some(next) = constituents.get(node) {
                    stack.extend(next.iter().map(String::as_str));
                }
            }
        }
    }
    in_cycle
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULTS: JobDefaults = JobDefaults { timeout: 36000, max_silent: 7200 };

    fn job(drv: &str) -> JobInfo {
        JobInfo {
            nix_name: drv.into(),
            system: "x86_64-linux".into(),
            drv_path: format!("/nix/store/{drv}.drv"),
            outputs: [("out".to_owned(), format!("/nix/store/{drv}"))].into_iter().collect(),
            description: None,
            license: None,
            homepage: None,
            maintainers: None,
            scheduling_priority: None,
            timeout: None,
            max_silent: None,
            is_channel: false,
            aggregate: false,
            constituents: vec![],
            glob_constituents: false,
            used_deps: vec![],
        }
    }

    fn aggregate(drv: &str, constituents: Vec<ConstituentRef>, glob: bool) -> JobInfo {
        JobInfo { aggregate: true, constituents, glob_constituents: glob, ..job(drv) }
    }

    fn name(n: &str) -> ConstituentRef {
        ConstituentRef::Name { name: n.into() }
    }

    fn constituents_of<'a>(resolved: &'a ResolvedJobs, job: &str) -> Option<&'a Vec<String>> {
        resolved.jobs.iter().find(|j| j.name == job).and_then(|j| j.constituents.as_ref())
    }

    #[test]
    fn constituents_by_derivation_name_and_glob() {
        let jobs = vec![
            ("a".to_owned(), job("a")),
            ("b.x".to_owned(), job("b")),
            (
                "by_drv".to_owned(),
                aggregate("g1", vec![ConstituentRef::Derivation { drv_path: "/nix/store/a.drv".into() }], false),
            ),
            ("by_name".to_owned(), aggregate("g2", vec![name("a"), name("b.x")], false)),
            ("all".to_owned(), aggregate("g3", vec![name("*")], true)),
        ];
        let resolved = resolve(jobs, vec![], DEFAULTS);
        assert!(resolved.errors.is_empty(), "{:?}", resolved.errors);
        assert_eq!(constituents_of(&resolved, "by_drv").unwrap(), &["a"]);
        assert_eq!(constituents_of(&resolved, "by_name").unwrap(), &["a", "b.x"]);
        // `*` matches dots too (fnmatch without flags), and every job but itself.
        assert_eq!(constituents_of(&resolved, "all").unwrap(), &["a", "b.x", "by_drv", "by_name"]);
        assert_eq!(constituents_of(&resolved, "a"), None);
        assert_eq!(resolved.jobs.iter().find(|j| j.name == "a").unwrap().timeout, 36000);
    }

    #[test]
    fn broken_constituents_fail_only_the_aggregate() {
        let jobs = vec![
            ("a".to_owned(), job("a")),
            ("missing".to_owned(), aggregate("g1", vec![name("nope")], false)),
            ("uses_failed".to_owned(), aggregate("g2", vec![name("bad")], false)),
            ("no_match".to_owned(), aggregate("g3", vec![name("zz*")], true)),
            ("on_broken".to_owned(), aggregate("g4", vec![name("missing"), name("a")], false)),
        ];
        let resolved = resolve(jobs, vec![("bad".into(), "boom".into())], DEFAULTS);
        let names: Vec<&str> = resolved.jobs.iter().map(|j| j.name.as_str()).collect();
        assert_eq!(names, ["a"]);
        let errors: HashMap<&str, &str> = resolved.errors.iter().map(|(n, m)| (n.as_str(), m.as_str())).collect();
        assert!(errors["missing"].contains("‘nope’ does not exist"));
        assert!(errors["uses_failed"].contains("‘bad’ failed to evaluate"));
        assert!(errors["no_match"].contains("had no matches"));
        assert!(errors["on_broken"].contains("‘missing’ is broken"));
        assert_eq!(errors["bad"], "boom");
    }

    #[test]
    fn aggregate_cycles_are_errors() {
        let jobs = vec![
            ("a".to_owned(), job("a")),
            ("x".to_owned(), aggregate("x", vec![name("*")], true)),
            ("y".to_owned(), aggregate("y", vec![name("*")], true)),
        ];
        let resolved = resolve(jobs, vec![], DEFAULTS);
        assert_eq!(resolved.jobs.len(), 1);
        assert_eq!(resolved.errors.len(), 2);
        assert!(resolved.errors[0].1.contains("cycle"));
    }
}
