//! Who asks, and what they may do: roles, password hashing, the secrets of
//! sessions and API tokens, and the rule deciding each action.
//!
//! Rights follow Hydra: admins may do everything; project owners and
//! members may change their project, its jobsets and builds; roles grant
//! one kind of action on every project. An API token (an Orthrus addition)
//! acts for its user, but only within its scopes.

pub mod accounts;
pub mod throttle;

use std::collections::BTreeSet;
use std::sync::OnceLock;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use rand_core::{OsRng, RngCore};
use sha2::{Digest, Sha256};

use crate::db::{ApiToken, Db, DbResult, User};
use crate::domain::{Role, TokenScope, UnknownWord};

/// Passwords shorter than this are refused.
pub const MIN_PASSWORD_LEN: usize = 8;

/// What a request wants to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Read anything (only checked when the server is private).
    Read,
    CreateProject,
    /// Change or delete a project, or change its members.
    EditProject,
    /// Create, change or delete a jobset.
    EditJobset,
    RestartBuild,
    CancelBuild,
    BumpBuild,
    KeepBuild,
    /// Ask for an evaluation (`/api/push`).
    TriggerEval,
    /// Change one's own account: password, e-mail, full name, API tokens
    /// (listed, made, revoked). Checked only on the caller's own account.
    EditOwnAccount,
    /// Create, change and delete users (every account).
    ManageUsers,
}

impl Action {
    /// The token scope an action needs (the README's table of scopes).
    fn scope(self) -> TokenScope {
        match self {
            Action::Read => TokenScope::Read,
            Action::CreateProject | Action::EditProject | Action::EditJobset => TokenScope::Projects,
            Action::RestartBuild | Action::CancelBuild | Action::BumpBuild | Action::KeepBuild => TokenScope::Builds,
            Action::TriggerEval => TokenScope::Eval,
            Action::EditOwnAccount => TokenScope::Account,
            Action::ManageUsers => TokenScope::Admin,
        }
    }

    /// The role that grants the action on every project, if one does.
    fn role(self) -> Option<Role> {
        match self {
            Action::CreateProject => Some(Role::CreateProjects),
            Action::RestartBuild => Some(Role::RestartJobs),
            Action::CancelBuild => Some(Role::CancelBuild),
            Action::BumpBuild => Some(Role::BumpToFront),
            Action::TriggerEval => Some(Role::EvalJobset),
            _ => None,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Action::Read => "read this server",
            Action::CreateProject => "create projects",
            Action::EditProject => "change this project",
            Action::EditJobset => "change this project's jobsets",
            Action::RestartBuild => "restart builds of this project",
            Action::CancelBuild => "cancel builds of this project",
            Action::BumpBuild => "bump builds of this project",
            Action::KeepBuild => "keep builds of this project",
            Action::TriggerEval => "trigger evaluations of this project",
            Action::EditOwnAccount => "change this account (password, e-mail, name, API tokens)",
            Action::ManageUsers => "manage users",
        }
    }
}

/// How the caller proved who they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    Anonymous,
    /// A `hydra_session` cookie: a browser, or a script that logged in.
    /// Its digest names the session, so that a password change can end
    /// every session but this one.
    Session {
        digest: String,
    },
    /// `Authorization: Bearer`, limited to these scopes.
    Token {
        id: i64,
        scopes: BTreeSet<TokenScope>,
        /// When it stops working: the tokens it makes stop by then too.
        expires: Option<i64>,
    },
}

/// The one asking.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user: Option<User>,
    pub auth: Auth,
}

/// The project an action is about: who owns it.
#[derive(Debug, Clone, Copy)]
pub struct ProjectOwners<'a> {
    pub owner: &'a str,
    pub members: &'a [String],
}

/// Why an action was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// Nobody is logged in (HTTP 401).
    NotLoggedIn(String),
    /// Logged in, without the right (HTTP 403).
    Forbidden(String),
}

impl std::fmt::Display for Denied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Denied::NotLoggedIn(message) | Denied::Forbidden(message) => f.write_str(message),
        }
    }
}

impl Caller {
    pub fn anonymous() -> Caller {
        Caller { user: None, auth: Auth::Anonymous }
    }

    /// Whether the caller may do `action` (on `project`, for the actions
    /// about one).
    pub fn check(&self, action: Action, project: Option<ProjectOwners<'_>>) -> Result<(), Denied> {
        let Some(user) = &self.user else {
            return Err(Denied::NotLoggedIn(format!("log in (or send an API token) to {}", action.describe())));
        };
        if let Auth::Token { scopes, .. } = &self.auth {
            // Every token may read; other actions need their scope.
            if action != Action::Read && !scopes.contains(&action.scope()) {
                return Err(Denied::Forbidden(format!(
                    "this API token's scopes ({}) do not include ‘{}’, needed to {}",
                    words(scopes.iter().copied().map(TokenScope::as_str)),
                    action.scope(),
                    action.describe()
                )));
            }
        }
        let is_owner = project.is_some_and(|p| p.owner == user.username || p.members.contains(&user.username));
        // Every user may change their own account (callers check it is theirs).
        let allowed = matches!(action, Action::Read | Action::EditOwnAccount)
            || user.roles.contains(Role::Admin.as_str())
            || action.role().is_some_and(|role| user.roles.contains(role.as_str()))
            || (is_owner && !matches!(action, Action::CreateProject | Action::ManageUsers));
        if allowed {
            Ok(())
        } else {
            Err(Denied::Forbidden(format!("user ‘{}’ may not {}", user.username, action.describe())))
        }
    }
}

/// An argon2id hash of a password, in PHC string format.
pub fn hash_password(password: &str) -> String {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default().hash_password(password.as_bytes(), &salt).expect("argon2 with default parameters").to_string()
}

pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
}

/// Argon2 work is deliberately slow: at most one computation per core at
/// once, off the async workers, whatever the number of logins.
fn password_work() -> &'static tokio::sync::Semaphore {
    static WORK: OnceLock<tokio::sync::Semaphore> = OnceLock::new();
    WORK.get_or_init(|| tokio::sync::Semaphore::new(std::thread::available_parallelism().map_or(1, |n| n.get())))
}

/// A hash no password matches, checked for users that do not exist (or have
/// no password), so that they cost what a wrong password costs and a caller
/// cannot tell which user names exist by the time a refusal takes.
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| hash_password(&new_secret("")))
}

/// Whether `password` is the one of `hash` (`None`: no such user, or no
/// password: always false, after the same work).
pub async fn check_password(password: String, hash: Option<String>) -> bool {
    let known = hash.is_some();
    let hash = hash.unwrap_or_else(|| dummy_hash().to_owned());
    let Ok(_permit) = password_work().acquire().await else { return false };
    let matches = tokio::task::spawn_blocking(move || verify_password(&password, &hash)).await.unwrap_or(false);
    known && matches
}

/// [`hash_password`], bounded like [`check_password`].
pub async fn hash_password_bounded(password: String) -> Option<String> {
    let _permit = password_work().acquire().await.ok()?;
    tokio::task::spawn_blocking(move || hash_password(&password)).await.ok()
}

/// A new random secret (a session or an API token), 256 bits in hex,
/// after a prefix saying what it is.
pub fn new_secret(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    format!("{prefix}{}", hex::encode(bytes))
}

/// What is stored of a secret: its SHA-256, in hex.
pub fn digest(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// What is wrong with a user name, a role or a list of token scopes
/// someone gave: each names the word at fault and what would do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WordError {
    #[error("invalid user name {0:?}: use letters, digits, ‘.’, ‘_’, ‘-’ and ‘@’, starting with a letter or digit")]
    Username(String),
    /// An unknown role or scope.
    #[error(transparent)]
    Unknown(#[from] UnknownWord),
    #[error("a token needs at least one scope: all, {known}")]
    NoScope { known: String },
}

/// User names: a letter or digit, then letters, digits, `.`, `_`, `-` or `@`.
pub fn check_username(name: &str) -> Result<(), WordError> {
    let mut chars = name.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || ".-_@".contains(c))
        && name.len() <= 64;
    if valid { Ok(()) } else { Err(WordError::Username(name.to_owned())) }
}

pub fn check_roles(roles: &BTreeSet<String>) -> Result<(), WordError> {
    Ok(roles.iter().try_for_each(|role| role.parse::<Role>().map(drop))?)
}

/// Words joined for a message: `a, b, c`.
fn words<'a>(words: impl Iterator<Item = &'a str>) -> String {
    words.collect::<Vec<_>>().join(", ")
}

/// Token scopes from a list; `all` means every scope.
/// Creates an API token for a user; returns its secret (shown once, only
/// its digest is kept) and the token as stored.
pub async fn issue_token(
    db: &Db,
    user_id: i64,
    name: &str,
    scopes: &BTreeSet<TokenScope>,
    expires_in_days: Option<u32>,
    not_after: Option<i64>,
) -> DbResult<(String, ApiToken)> {
    let secret = new_secret("orthrus_");
    let asked = expires_in_days.map(|days| crate::db::now() + i64::from(days) * 86400);
    let expires = match (asked, not_after) {
        (Some(asked), Some(limit)) => Some(asked.min(limit)),
        (asked, limit) => asked.or(limit),
    };
    let scopes = scopes.iter().map(|scope| scope.as_str()).collect::<Vec<_>>().join(" ");
    let token = db.create_token(user_id, name, &digest(&secret), &scopes, expires).await?;
    Ok((secret, token))
}

pub fn parse_scopes<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<BTreeSet<TokenScope>, WordError> {
    let known = || words(TokenScope::ALL.iter().map(|scope| scope.as_str()));
    let mut scopes = BTreeSet::new();
    for name in names {
        match name {
            "all" => scopes.extend(TokenScope::ALL.iter().copied()),
            word => match word.parse::<TokenScope>() {
                Ok(scope) => {
                    scopes.insert(scope);
                }
                Err(_) => {
                    let known = format!("all, {}", known());
                    Err(UnknownWord { what: "token scope", word: word.to_owned(), known })?
                }
            },
        }
    }
    if scopes.is_empty() {
        return Err(WordError::NoScope { known: known() });
    }
    Ok(scopes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str, roles: &[&str]) -> User {
        User {
            id: 1,
            username: name.into(),
            full_name: String::new(),
            email: String::new(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
        }
    }

    fn session(name: &str, roles: &[&str]) -> Caller {
        Caller { user: Some(user(name, roles)), auth: Auth::Session { digest: String::new() } }
    }

    const ALL: [Action; 11] = [
        Action::Read,
        Action::CreateProject,
        Action::EditProject,
        Action::EditJobset,
        Action::RestartBuild,
        Action::CancelBuild,
        Action::BumpBuild,
        Action::KeepBuild,
        Action::TriggerEval,
        Action::EditOwnAccount,
        Action::ManageUsers,
    ];

    #[test]
    fn rights_matrix() {
        let members = vec!["mia".to_owned()];
        let project = ProjectOwners { owner: "olga", members: &members };
        let allowed = |caller: &Caller| -> Vec<Action> {
            ALL.iter().copied().filter(|a| caller.check(*a, Some(project)).is_ok()).collect()
        };
        assert!(matches!(Caller::anonymous().check(Action::RestartBuild, Some(project)), Err(Denied::NotLoggedIn(_))));
        assert_eq!(allowed(&session("admin", &["admin"])), ALL);
        assert_eq!(allowed(&session("pat", &[])), [Action::Read, Action::EditOwnAccount]);
        let owner_rights = [
            Action::Read,
            Action::EditProject,
            Action::EditJobset,
            Action::RestartBuild,
            Action::CancelBuild,
            Action::BumpBuild,
            Action::KeepBuild,
            Action::TriggerEval,
            Action::EditOwnAccount,
        ];
        assert_eq!(allowed(&session("olga", &[])), owner_rights);
        assert_eq!(allowed(&session("mia", &[])), owner_rights);
        let own = Action::EditOwnAccount;
        assert_eq!(allowed(&session("r", &["restart-jobs"])), [Action::Read, Action::RestartBuild, own]);
        assert_eq!(allowed(&session("c", &["cancel-build"])), [Action::Read, Action::CancelBuild, own]);
        assert_eq!(allowed(&session("b", &["bump-to-front"])), [Action::Read, Action::BumpBuild, own]);
        assert_eq!(allowed(&session("e", &["eval-jobset"])), [Action::Read, Action::TriggerEval, own]);
        assert_eq!(allowed(&session("p", &["create-projects"])), [Action::Read, Action::CreateProject, own]);
    }

    #[test]
    fn tokens_act_within_their_scopes() {
        let admin_token = |scopes: &[&str]| Caller {
            user: Some(user("root", &["admin"])),
            auth: Auth::Token { id: 1, scopes: parse_scopes(scopes.iter().copied()).unwrap(), expires: None },
        };
        let builds_only = admin_token(&["builds"]);
        assert!(builds_only.check(Action::RestartBuild, None).is_ok());
        assert!(builds_only.check(Action::Read, None).is_ok());
        let Err(Denied::Forbidden(message)) = builds_only.check(Action::EditProject, None) else { panic!() };
        assert!(message.contains("‘projects’"), "{message}");
        assert!(admin_token(&["all"]).check(Action::ManageUsers, None).is_ok());
        // A scope does not give what the user lacks.
        let plain = Caller {
            user: Some(user("pat", &[])),
            auth: Auth::Token { id: 2, scopes: parse_scopes(["all"]).unwrap(), expires: None },
        };
        assert!(plain.check(Action::CreateProject, None).is_err());
        // `read` reads, and does nothing else, not even to its own account.
        let read_only = Caller {
            user: Some(user("pat", &[])),
            auth: Auth::Token { id: 3, scopes: parse_scopes(["read"]).unwrap(), expires: None },
        };
        let allowed: Vec<Action> = ALL.iter().copied().filter(|a| read_only.check(*a, None).is_ok()).collect();
        assert_eq!(allowed, [Action::Read]);
        assert!(parse_scopes(["all"]).unwrap().contains(&TokenScope::Account));
    }

    #[test]
    fn passwords_and_secrets() {
        let hash = hash_password("correct horse");
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &hash));
        assert!(!verify_password("wrong", &hash));
        assert!(!verify_password("x", "not a hash"));
        let a = new_secret("orthrus_");
        assert_eq!(a.len(), 8 + 64);
        assert_ne!(a, new_secret("orthrus_"));
        assert_eq!(digest("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[test]
    fn names_roles_and_scopes_are_checked() {
        assert!(check_username("alice").is_ok());
        assert!(check_username("a b").is_err());
        assert!(check_roles(&["admin".to_owned()].into()).is_ok());
        assert!(check_roles(&["root".to_owned()].into()).unwrap_err().to_string().contains("unknown role"));
        assert!(parse_scopes(["nope"]).is_err());
        assert!(parse_scopes([]).is_err());
        assert_eq!(parse_scopes(["eval", "read"]).unwrap().len(), 2);
    }
}
