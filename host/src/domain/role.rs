//! Roles a user may have: each grants some actions on every project.

word_enum! {
    /// A user's role (stored by its word), sorted by word.
    pub enum Role ("role") {
        Admin => "admin",
        BumpToFront => "bump-to-front",
        CancelBuild => "cancel-build",
        CreateProjects => "create-projects",
        EvalJobset => "eval-jobset",
        RestartJobs => "restart-jobs",
    }
}
