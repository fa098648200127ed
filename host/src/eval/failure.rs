//! Why a check of a jobset failed as a whole (recorded as its evaluation
//! error), and why a declarative project's spec was not applied (recorded
//! on the project): each names the input, path or setting at fault.

use std::path::PathBuf;

use crate::db::{DbError, SPEC_JOBSET};
use crate::inputs::PathRefused;
use crate::nix::StorePath;
use crate::projects::spec::FieldError;

#[derive(Debug, thiserror::Error)]
pub enum EvalFailure {
    #[error("the Nix expression input ‘{0}’ is not an input of this jobset")]
    NoExpressionInput(String),
    #[error("the Nix expression input ‘{0}’ is not a source tree (use a path, git or svn input)")]
    NotASourceTree(String),
    #[error("the Nix expression path {0:?} must be a relative path inside the input")]
    PathOutsideInput(String),
    #[error("there is no file ‘{path}’ in input ‘{input}’ ({root})")]
    NoExpressionFile { path: String, input: String, root: StorePath },
    #[error("a flake jobset needs a flake")]
    NoFlake,
    #[error("flake {reference}: {refused}")]
    FlakeRefused { reference: String, refused: PathRefused },
    /// The generator of a declarative project must make its one job and
    /// nothing else (Hydra's rule), or its output could not be told apart.
    #[error("this jobset must have exactly one job, named ‘{job}’, whose output is the spec; it has {found}{why}")]
    NotOnlyJob {
        job: String,
        /// The jobs it has, or `none`.
        found: String,
        /// Why the first job that failed to evaluate failed, if one did.
        why: String,
    },
    #[error("cannot prepare the evaluation in {}: {source}", .dir.display())]
    Workspace { dir: PathBuf, source: std::io::Error },
    /// What the evaluator (Nix) said.
    #[error("{0}")]
    Evaluator(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

/// Why a declarative project's spec was not applied.
#[derive(Debug, thiserror::Error)]
pub enum SpecRefused {
    #[error("the spec's input (type {0}) is not a source tree; use a git, svn or path input")]
    NotASourceTree(String),
    #[error("the spec file {0:?} must be a relative path inside its input")]
    FileOutsideInput(String),
    #[error("the spec file ‘{file}’ of {input}: {reason}")]
    Unreadable { file: String, input: String, reason: String },
    #[error("{file}: {reason}")]
    Malformed { file: String, reason: String },
    #[error("{0} (in the settings of {SPEC_JOBSET})")]
    Settings(FieldError),
    #[error(transparent)]
    Db(#[from] DbError),
}
