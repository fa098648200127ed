//! `orthrus serve --demo`: a project whose jobset Orthrus evaluates and
//! builds right away, so that a newcomer sees the whole pipeline work.
//!
//! The expression is written to `<data_dir>/demo/release.nix` and reached
//! through a `path` input; the demo directory is added to the allowed
//! path-input roots for this run only.

use std::path::PathBuf;

use crate::config::Config;
use crate::db::{Db, DbResult, Expect, InputSetting, JobsetSettings, ProjectSettings};

const RELEASE_NIX: &str = include_str!("release.nix");

/// Writes the demo expression and returns its directory, to be allowed as
/// a path-input root.
pub fn write_files(config: &Config) -> std::io::Result<PathBuf> {
    let dir = config.data_dir.join("demo");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("release.nix"), RELEASE_NIX)?;
    dir.canonicalize()
}

/// Creates the demo project and jobset unless they exist.
pub async fn install(db: &Db, dir: &std::path::Path) -> DbResult<()> {
    if db.jobset("demo", "main").await?.is_some() {
        return Ok(());
    }
    let project = match db.project("demo").await? {
        Some(project) => project,
        None => {
            let settings = ProjectSettings {
                display_name: "Orthrus demo".into(),
                description: "A program, its test and a release gate, built with your local Nix".into(),
                ..ProjectSettings::new("demo")
            };
            db.save_project("demo", &settings, Expect::Anything).await?.0
        }
    };
    let settings = JobsetSettings {
        description: "The demo's release expression".into(),
        nixexpr_input: "src".into(),
        nixexpr_path: "release.nix".into(),
        check_interval: 60,
        inputs: vec![
            InputSetting {
                name: "src".into(),
                kind: "path".into(),
                value: dir.display().to_string(),
                email_responsible: false,
            },
            InputSetting {
                name: "officialRelease".into(),
                kind: "boolean".into(),
                value: "false".into(),
                email_responsible: false,
            },
        ],
        ..JobsetSettings::new("main")
    };
    db.save_jobset(&project, "main", &settings, Expect::Anything).await?;
    Ok(())
}
