/// How far a running evaluation is: jobs evaluated, and jobs known so far
/// (a nested attribute set adds its jobs when it is found). Shown as
/// `"evaluation": {"evaluated": N, "total": M}` on the jobset; `total` is
/// null for nix-eval-jobs, which does not say it before the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct EvalProgressCount {
    pub evaluated: usize,
    pub total: Option<usize>,
}
