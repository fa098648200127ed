//! Roles a user may have: each grants some actions on every project.

/// A user's role (stored by its word).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    Admin,
    BumpToFront,
    CancelBuild,
    CreateProjects,
    EvalJobset,
    RestartJobs,
}

impl Role {
    /// Every role, sorted by word.
    pub const ALL: [Role; 6] =
        [Role::Admin, Role::BumpToFront, Role::CancelBuild, Role::CreateProjects, Role::EvalJobset, Role::RestartJobs];

    /// Hydra's word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::BumpToFront => "bump-to-front",
            Role::CancelBuild => "cancel-build",
            Role::CreateProjects => "create-projects",
            Role::EvalJobset => "eval-jobset",
            Role::RestartJobs => "restart-jobs",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = super::UnknownWord;

    fn from_str(word: &str) -> Result<Role, super::UnknownWord> {
        super::parse_word(word, "role", &Role::ALL, Role::as_str)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
