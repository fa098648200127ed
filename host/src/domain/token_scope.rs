//! What an API token may be used for.

word_enum! {
    /// A scope an API token carries (`all` in a request stands for every
    /// one), sorted by word.
    pub enum TokenScope ("scope") {
        /// Change one's own account.
        Account => "account",
        /// Manage users.
        Admin => "admin",
        /// Restart, cancel, bump and keep builds.
        Builds => "builds",
        /// Ask for evaluations.
        Eval => "eval",
        /// Create and change projects and jobsets.
        Projects => "projects",
        /// Read a private server.
        Read => "read",
    }
}
