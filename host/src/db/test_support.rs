//! Helpers for the database's unit tests: jobs, evaluations and finished
//! builds made in a few words.

use super::{Db, FinishedBuild, NewEval, NewJob};
use crate::domain::BuildStatus;

/// A fresh SQLite database in a directory of its own (kept while the
/// directory lives).
pub async fn fresh_db() -> (tempfile::TempDir, Db) {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(&format!("sqlite://{}", dir.path().join("db.sqlite").display())).await.unwrap();
    (dir, db)
}

/// A project `p` with a jobset `main`, both with default settings.
pub async fn main_jobset(db: &Db) -> super::Jobset {
    let settings = super::ProjectSettings::new("p");
    let (project, _) = db.save_project("p", &settings, super::Expect::Anything).await.unwrap();
    let settings = super::JobsetSettings::new("main");
    db.save_jobset(&project, "main", &settings, super::Expect::Anything).await.unwrap().0
}

/// A job whose derivation and output are named after it and `nonce`.
pub fn job(name: &str, nonce: &str) -> NewJob {
    let hash = format!("{:0>32}", format!("{name}{nonce}").chars().filter(|c| c.is_ascii_digit()).collect::<String>());
    let hash: String = hash.chars().rev().take(32).collect();
    let store = crate::nix::store_dir();
    NewJob::plain(
        name,
        &format!("{name}-{nonce}"),
        format!("{store}/{hash}-{name}-{nonce}.drv"),
        "x86_64-linux",
        format!("{store}/{hash}-{name}-{nonce}"),
    )
}

/// Records an evaluation of these jobs; returns the new builds.
pub async fn eval(db: &Db, jobset_id: i64, started: i64, jobs: Vec<NewJob>) -> Vec<i64> {
    let eval = NewEval::of_jobs(jobset_id, started, format!("h{started}"), jobs);
    db.record_eval(&eval).await.unwrap().new_builds
}

/// Finishes a build with this status.
pub async fn finish(db: &Db, id: i64, status: BuildStatus) {
    let result = FinishedBuild::ended(id, status, 1, 2);
    db.finish_builds(&[result]).await.unwrap();
}
