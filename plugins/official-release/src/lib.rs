//! The release sets of the Hydra paper: a release is a successful build of
//! a source job (`tarball`) from an evaluation where the boolean input
//! `officialRelease` had the wanted value, together with the builds that
//! took that tarball as their input — the other jobs of evaluations whose
//! `tarball` input (of type `build`) was this build, or, in the tarball's
//! own evaluation, the evaluation's own tarball.
//!
//! Settings:
//! - `value` (required): `true` for the stable set, `false` for unstable;
//! - `job`: the source job (default `tarball`);
//! - `input`: the boolean input (default `officialRelease`);
//! - `jobset`: only this jobset (default: all of the project's).
//!
//! A release is named from the tarball's `hydra-release-name`, or from the
//! job's name and the first input revision of its evaluation.

#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

use std::collections::BTreeMap;

use orthrus_plugin_release_set::host::builds::{self, BuildSummary, EvalSummary};
use orthrus_plugin_release_set::{
    Capability, Error, Member, Metadata, Release, ReleaseSet, Settings, export_release_set,
};

/// What the queries give, so that the rule can be tested without a host.
pub trait Source {
    fn jobsets(&self) -> Result<Vec<String>, Error>;
    fn job_builds(&self, jobset: &str, job: &str, limit: u32) -> Result<Vec<BuildSummary>, Error>;
    fn eval(&self, id: u64) -> Result<EvalSummary, Error>;
    fn eval_builds(&self, id: u64) -> Result<Vec<BuildSummary>, Error>;
}

struct Host;

impl Source for Host {
    fn jobsets(&self) -> Result<Vec<String>, Error> {
        builds::jobsets()
    }
    fn job_builds(&self, jobset: &str, job: &str, limit: u32) -> Result<Vec<BuildSummary>, Error> {
        builds::job_builds(jobset, job, limit)
    }
    fn eval(&self, id: u64) -> Result<EvalSummary, Error> {
        builds::eval(id)
    }
    fn eval_builds(&self, id: u64) -> Result<Vec<BuildSummary>, Error> {
        builds::eval_builds(id)
    }
}

fn succeeded(build: &BuildSummary) -> bool {
    build.finished && build.status == Some(0)
}

/// The releases of the set, newest first.
pub fn releases(source: &impl Source, settings: &Settings, limit: u32) -> Result<Vec<Release>, Error> {
    let wanted = match settings.required("value")? {
        "true" | "1" => "true",
        "false" | "0" => "false",
        other => return Err(Error::InvalidInput(format!("the setting ‘value’ is true or false, not {other:?}"))),
    };
    let job = settings.get("job").filter(|j| !j.is_empty()).unwrap_or("tarball");
    let input = settings.get("input").filter(|i| !i.is_empty()).unwrap_or("officialRelease");
    let jobsets = match settings.get("jobset").filter(|j| !j.is_empty()) {
        Some(jobset) => vec![jobset.to_owned()],
        None => source.jobsets()?,
    };
    let mut found: Vec<(u64, Release)> = Vec::new();
    for jobset in &jobsets {
        // Tarballs of the other value are skipped: look further back.
        for tarball in source.job_builds(jobset, job, limit.saturating_mul(4).max(20))? {
            if !succeeded(&tarball) {
                continue;
            }
            let mut members: BTreeMap<String, (u64, String)> = BTreeMap::new();
            let mut origin: Option<EvalSummary> = None;
            for eval_id in &tarball.evals {
                let eval = source.eval(*eval_id)?;
                let value = eval.inputs.iter().find(|i| i.name == input).map(|i| i.value.as_str());
                if value != Some(wanted) {
                    continue;
                }
                // Did this evaluation's jobs take this tarball?
                let took_it = eval
                    .inputs
                    .iter()
                    .find(|i| i.name == job && i.type_ == "build")
                    .is_some_and(|i| i.dependency.is_none_or(|d| d == tarball.id));
                if took_it {
                    for build in source.eval_builds(eval.id)? {
                        if build.job != job && succeeded_or_failed(&build) {
                            // The newest build of each job wins.
                            let entry = members.entry(build.job.clone()).or_insert((build.id, build.job.clone()));
                            if build.id > entry.0 {
                                *entry = (build.id, build.job.clone());
                            }
                        }
                    }
                }
                origin.get_or_insert(eval);
            }
            let Some(origin) = origin else { continue };
            let name = match &tarball.release_name {
                Some(name) if !name.is_empty() => name.clone(),
                _ => match origin.inputs.iter().find(|i| !i.revision.is_empty()) {
                    Some(i) => format!("{job}-{}", i.revision.chars().take(12).collect::<String>()),
                    None => format!("{job}-{}", tarball.id),
                },
            };
            let mut list = vec![Member { build: tarball.id, label: job.to_owned() }];
            list.extend(members.into_values().map(|(build, label)| Member { build, label }));
            let timestamp = if tarball.stop_time > 0 { tarball.stop_time } else { tarball.timestamp };
            found.push((tarball.id, Release { name, timestamp, members: list }));
        }
    }
    found.sort_by_key(|(id, _)| std::cmp::Reverse(*id));
    // Names are unique in a set: an older release of the same name gets its build's id.
    let mut seen = std::collections::BTreeSet::new();
    let mut releases = Vec::new();
    for (id, mut release) in found.into_iter().take(limit as usize) {
        if !seen.insert(release.name.clone()) {
            release.name = format!("{}-{id}", release.name);
        }
        releases.push(release);
    }
    Ok(releases)
}

/// Finished builds are members whatever their status: a release whose
/// build failed shows it (and `latest` passes it over).
fn succeeded_or_failed(build: &BuildSummary) -> bool {
    build.finished
}

struct OfficialRelease;

impl ReleaseSet for OfficialRelease {
    fn metadata() -> Metadata {
        Metadata::new("official-release", env!("CARGO_PKG_VERSION"))
            .describe("Releases of a tarball job for one value of officialRelease, with the builds that took it")
            .needs(Capability::ReadBuilds)
    }

    fn releases(settings: &Settings, limit: u32) -> Result<Vec<Release>, Error> {
        releases(&Host, settings, limit)
    }
}

export_release_set!(OfficialRelease);

#[cfg(test)]
mod tests {
    use super::*;
    use orthrus_plugin_release_set::host::builds::EvalInput;

    struct Fake {
        builds: Vec<BuildSummary>,
        evals: Vec<EvalSummary>,
    }

    impl Source for Fake {
        fn jobsets(&self) -> Result<Vec<String>, Error> {
            Ok(vec!["trunk".into()])
        }
        fn job_builds(&self, _: &str, job: &str, limit: u32) -> Result<Vec<BuildSummary>, Error> {
            let mut list: Vec<_> = self.builds.iter().filter(|b| b.job == job).cloned().collect();
            list.sort_by_key(|b| std::cmp::Reverse(b.id));
            list.truncate(limit as usize);
            Ok(list)
        }
        fn eval(&self, id: u64) -> Result<EvalSummary, Error> {
            self.evals.iter().find(|e| e.id == id).cloned().ok_or("no such eval".into())
        }
        fn eval_builds(&self, id: u64) -> Result<Vec<BuildSummary>, Error> {
            Ok(self.builds.iter().filter(|b| b.evals.contains(&id)).cloned().collect())
        }
    }

    fn build(id: u64, job: &str, evals: &[u64], release: Option<&str>) -> BuildSummary {
        BuildSummary {
            id,
            jobset: "trunk".into(),
            job: job.into(),
            nix_name: job.into(),
            finished: true,
            status: Some(0),
            timestamp: id as i64,
            stop_time: id as i64 + 1,
            release_name: release.map(Into::into),
            outputs: vec![],
            evals: evals.to_vec(),
        }
    }

    fn eval(id: u64, official: bool, dependency: Option<u64>) -> EvalSummary {
        let input = |name: &str, type_: &str, value: &str, dependency| EvalInput {
            name: name.into(),
            type_: type_.into(),
            value: value.into(),
            uri: String::new(),
            revision: String::new(),
            dependency,
        };
        EvalSummary {
            id,
            jobset: "trunk".into(),
            timestamp: id as i64,
            inputs: vec![
                input("officialRelease", "boolean", if official { "true" } else { "false" }, None),
                input("tarball", "build", "", dependency),
            ],
        }
    }

    /// The paper's history: eval 1 (unofficial) builds tarball 1 and build 2;
    /// eval 2 reuses tarball 1 as its input for build 3; eval 3 is official.
    fn paper() -> Fake {
        Fake {
            builds: vec![
                build(1, "tarball", &[1, 2], Some("hello-1.0pre")),
                build(2, "build", &[1], None),
                build(3, "build", &[2], None),
                build(4, "tarball", &[3], Some("hello-1.0")),
                build(5, "build", &[3], None),
            ],
            evals: vec![eval(1, false, None), eval(2, false, Some(1)), eval(3, true, None)],
        }
    }

    #[test]
    fn stable_and_unstable_sets_of_the_paper() {
        let fake = paper();
        let stable = releases(&fake, &Settings::new([("value", "true")]), 10).unwrap();
        assert_eq!(stable.len(), 1);
        assert_eq!(stable[0].name, "hello-1.0");
        let members: Vec<_> = stable[0].members.iter().map(|m| (m.build, m.label.as_str())).collect();
        assert_eq!(members, [(4, "tarball"), (5, "build")]);

        let unstable = releases(&fake, &Settings::new([("value", "false")]), 10).unwrap();
        assert_eq!(unstable.len(), 1);
        let members: Vec<_> = unstable[0].members.iter().map(|m| (m.build, m.label.as_str())).collect();
        assert_eq!(members, [(1, "tarball"), (3, "build")], "the newest build that took tarball 1");
        assert!(releases(&fake, &Settings::new([("value", "maybe")]), 10).is_err());
    }
}
