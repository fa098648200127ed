//! What an API token may be used for.

/// A scope an API token carries (`all` in a request stands for every one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TokenScope {
    /// Change one's own account.
    Account,
    /// Manage users.
    Admin,
    /// Restart, cancel, bump and keep builds.
    Builds,
    /// Ask for evaluations.
    Eval,
    /// Create and change projects and jobsets.
    Projects,
    /// Read a private server.
    Read,
}

impl TokenScope {
    /// Every scope, sorted by word.
    pub const ALL: [TokenScope; 6] = [
        TokenScope::Account,
        TokenScope::Admin,
        TokenScope::Builds,
        TokenScope::Eval,
        TokenScope::Projects,
        TokenScope::Read,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TokenScope::Account => "account",
            TokenScope::Admin => "admin",
            TokenScope::Builds => "builds",
            TokenScope::Eval => "eval",
            TokenScope::Projects => "projects",
            TokenScope::Read => "read",
        }
    }
}

impl std::str::FromStr for TokenScope {
    type Err = super::UnknownWord;

    fn from_str(word: &str) -> Result<TokenScope, super::UnknownWord> {
        super::parse_word(word, "scope", &TokenScope::ALL, TokenScope::as_str)
    }
}

impl std::fmt::Display for TokenScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
