//! Saving accounts and issuing API tokens, with their rules: who may
//! change which account, roles only by admins, one's own password only
//! with the current one, a token never stronger or longer-lived than the
//! token that makes it. The JSON API and the admin pages both call these.

use std::collections::BTreeSet;

use super::{Action, Auth, Caller, Denied};
use crate::db::{ApiToken, Db, DbError, User, UserChanges};

/// Why an account change was refused.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("{0}")]
    Denied(Denied),
    #[error("{0}")]
    NotFound(String),
    /// A user name that breaks the rule (a 400).
    #[error(transparent)]
    BadName(super::WordError),
    /// A field of the request at fault (a 400 naming it).
    #[error("field ‘{field}’: {message}")]
    Field { field: &'static str, message: String },
    /// One's own password changed without the current one (a 403).
    #[error("field ‘currentpassword’: give your current password to change it")]
    WrongCurrentPassword,
    /// What the caller's token may not do.
    #[error("{0}")]
    Forbidden(String),
    #[error("cannot hash the password")]
    Hashing,
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<Denied> for AccountError {
    fn from(denied: Denied) -> AccountError {
        AccountError::Denied(denied)
    }
}

/// What is done with an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountUse {
    /// Its name, e-mail and roles (`read` is enough for one's own).
    See,
    /// Its password, e-mail, name, and its API tokens, listed included
    /// (`account` for one's own).
    Change,
}

/// Users see and change their own account, a token only within its
/// scopes; admins (with `admin`) every account.
pub fn check_account(caller: &Caller, username: &str, how: AccountUse) -> Result<(), Denied> {
    let is_self = caller.user.as_ref().is_some_and(|user| user.username == username);
    if !is_self {
        return caller.check(Action::ManageUsers, None);
    }
    let action = match how {
        AccountUse::See => Action::Read,
        AccountUse::Change => Action::EditOwnAccount,
    };
    // An admin's token without `account` may still act with `admin`; the
    // refusal names the scope for one's own account.
    caller.check(action, None).or_else(|refused| caller.check(Action::ManageUsers, None).map_err(|_| refused))
}

/// Changes to an account: what is `None` keeps its value.
#[derive(Debug, Default)]
pub struct AccountChanges {
    pub full_name: Option<String>,
    pub email: Option<String>,
    pub password: Option<String>,
    /// Needed to change one's own password (not for admins changing any):
    /// a stolen session or token must not become the account's password.
    pub current_password: Option<String>,
    pub roles: Option<BTreeSet<String>>,
}

/// Creates account `name` (admins) or changes it; whether it is new. A
/// changed password ends every other session of the account.
pub async fn save_account(
    db: &Db,
    caller: &Caller,
    name: &str,
    changes: AccountChanges,
) -> Result<(User, bool), AccountError> {
    let existing = db.user(name).await?;
    let is_admin = caller.check(Action::ManageUsers, None).is_ok();
    match &existing {
        None => caller.check(Action::ManageUsers, None)?,
        Some(user) => {
            check_account(caller, name, AccountUse::Change)?;
            if changes.roles.as_ref().is_some_and(|roles| roles != &user.roles) {
                caller.check(Action::ManageUsers, None)?;
            }
        }
    }
    if existing.is_some() && changes.password.is_some() && !is_admin {
        check_current_password(db, name, changes.current_password.unwrap_or_default()).await?;
    }
    super::check_username(name).map_err(AccountError::BadName)?;
    if let Some(roles) = &changes.roles {
        super::check_roles(roles)
            .map_err(|error| AccountError::Field { field: "userroles", message: error.to_string() })?;
    }
    let password_hash = match changes.password {
        Some(password) if password.len() < super::MIN_PASSWORD_LEN => {
            return Err(AccountError::Field {
                field: "password",
                message: format!("use at least {} characters", super::MIN_PASSWORD_LEN),
            });
        }
        Some(password) => Some(super::hash_password_bounded(password).await.ok_or(AccountError::Hashing)?),
        None => None,
    };
    let password_changed = password_hash.is_some();
    let changes =
        UserChanges { full_name: changes.full_name, email: changes.email, password_hash, roles: changes.roles };
    let (user, created) = db.save_user(name, &changes).await?;
    if password_changed && !created {
        // Whoever knew the old password is logged out everywhere but here.
        let keep = match &caller.auth {
            Auth::Session { digest } if caller.user.as_ref().is_some_and(|me| me.id == user.id) => {
                Some(digest.as_str())
            }
            _ => None,
        };
        db.end_sessions_of(user.id, keep).await?;
    }
    Ok((user, created))
}

/// Refuses unless `given` is the user's password (when they have one).
async fn check_current_password(db: &Db, name: &str, given: String) -> Result<(), AccountError> {
    let Some((_, Some(hash))) = db.user_with_password(name).await? else { return Ok(()) };
    if super::check_password(given, Some(hash)).await { Ok(()) } else { Err(AccountError::WrongCurrentPassword) }
}

/// A new API token for account `name`: its secret (shown once; only its
/// digest is kept) and the token as stored.
pub async fn create_token(
    db: &Db,
    caller: &Caller,
    name: &str,
    token_name: &str,
    scope_words: &[String],
    expires_in_days: Option<u32>,
) -> Result<(String, ApiToken), AccountError> {
    check_account(caller, name, AccountUse::Change)?;
    let scopes = super::parse_scopes(scope_words.iter().map(String::as_str))
        .map_err(|error| AccountError::Field { field: "scopes", message: error.to_string() })?;
    // A token cannot mint a token stronger than itself, nor one that
    // outlives it.
    let mut not_after = None;
    if let Auth::Token { scopes: own, expires, .. } = &caller.auth {
        if let Some(extra) = scopes.iter().find(|s| !own.contains(*s)) {
            return Err(AccountError::Forbidden(format!(
                "this API token cannot create a token with scope ‘{extra}’ it lacks"
            )));
        }
        not_after = *expires;
    }
    let user = db.user(name).await?.ok_or_else(|| AccountError::NotFound(format!("user ‘{name}’ does not exist")))?;
    Ok(super::issue_token(db, user.id, token_name, &scopes, expires_in_days, not_after).await?)
}
