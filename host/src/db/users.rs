//! Users and their roles, project members, login sessions and API tokens.
//! This part stores what it is given: hashing and checking secrets is the
//! `users` part's business.

use std::collections::{BTreeSet, HashMap};

use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, IntoActiveModel, JoinType, QueryFilter, QueryOrder,
    QuerySelect, RelationDef,
};

use super::entities::{api_token, project_member, session, user, user_role};
use super::{Db, DbError, DbResult, now};

pub use super::entities::api_token::Model as ApiToken;

/// A user with roles, as the rest of the server sees one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: i64,
    pub username: String,
    pub full_name: String,
    pub email: String,
    pub roles: BTreeSet<String>,
}

/// Changes to a user; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct UserChanges {
    pub full_name: Option<String>,
    pub email: Option<String>,
    pub password_hash: Option<String>,
    pub roles: Option<BTreeSet<String>>,
}

/// A user's row with one of their roles, as `Db::user_and_roles` reads it.
type UserRoleRow = (i64, String, String, String, Option<String>);

/// The user of rows of one user's roles.
fn fold_roles(rows: Vec<UserRoleRow>) -> Option<User> {
    let mut user: Option<User> = None;
    for (id, username, full_name, email, role) in rows {
        let user = user.get_or_insert_with(|| User { id, username, full_name, email, roles: BTreeSet::new() });
        user.roles.extend(role);
    }
    user
}

impl Db {
    async fn with_roles(&self, rows: Vec<user::Model>) -> DbResult<Vec<User>> {
        let ids: Vec<i64> = rows.iter().map(|u| u.id).collect();
        let mut roles: HashMap<i64, BTreeSet<String>> = HashMap::new();
        for row in user_role::Entity::find().filter(user_role::Column::UserId.is_in(ids)).all(self.read()).await? {
            roles.entry(row.user_id).or_default().insert(row.role);
        }
        Ok(rows
            .into_iter()
            .map(|u| User {
                roles: roles.remove(&u.id).unwrap_or_default(),
                id: u.id,
                username: u.username,
                full_name: u.full_name,
                email: u.email,
            })
            .collect())
    }

    pub async fn users(&self) -> DbResult<Vec<User>> {
        let rows = user::Entity::find().order_by_asc(user::Column::Username).all(self.read()).await?;
        self.with_roles(rows).await
    }

    pub async fn user(&self, username: &str) -> DbResult<Option<User>> {
        let rows =
            Self::user_and_roles().filter(user::Column::Username.eq(username)).into_tuple().all(self.read()).await?;
        Ok(fold_roles(rows))
    }

    async fn user_by_id(&self, id: i64) -> DbResult<Option<User>> {
        let rows = Self::user_and_roles().filter(user::Column::Id.eq(id)).into_tuple().all(self.read()).await?;
        Ok(fold_roles(rows))
    }

    /// A user's columns with one of their roles a row (no role: one row
    /// with none): the user and roles in one query, for every request.
    fn user_and_roles() -> sea_orm::Select<user::Entity> {
        let roles: RelationDef =
            user_role::Entity::belongs_to(user::Entity).from(user_role::Column::UserId).to(user::Column::Id).into();
        user::Entity::find()
            .select_only()
            .columns([user::Column::Id, user::Column::Username, user::Column::FullName, user::Column::Email])
            .column(user_role::Column::Role)
            .join(JoinType::LeftJoin, roles.rev())
    }

    /// The user and their password hash, for logging in.
    pub async fn user_with_password(&self, username: &str) -> DbResult<Option<(User, Option<String>)>> {
        let Some(row) = user::Entity::find().filter(user::Column::Username.eq(username)).one(self.read()).await? else {
            return Ok(None);
        };
        let hash = row.password_hash.clone();
        Ok(self.with_roles(vec![row]).await?.pop().map(|u| (u, hash)))
    }

    /// Creates the user or changes it. Returns the user and whether it is new.
    pub async fn save_user(&self, username: &str, changes: &UserChanges) -> DbResult<(User, bool)> {
        let txn = self.begin_write().await?;
        let existing = user::Entity::find().filter(user::Column::Username.eq(username)).one(&txn).await?;
        let created = existing.is_none();
        let mut model = match existing {
            Some(row) => row.into_active_model(),
            None => user::ActiveModel {
                username: Set(username.to_owned()),
                full_name: Set(String::new()),
                email: Set(String::new()),
                password_hash: Set(None),
                created_time: Set(now()),
                ..Default::default()
            },
        };
        if let Some(full_name) = &changes.full_name {
            model.full_name = Set(full_name.clone());
        }
        if let Some(email) = &changes.email {
            model.email = Set(email.clone());
        }
        if let Some(hash) = &changes.password_hash {
            model.password_hash = Set(Some(hash.clone()));
        }
        let row = if created { model.insert(&txn).await? } else { model.update(&txn).await? };
        if let Some(roles) = &changes.roles {
            user_role::Entity::delete_many().filter(user_role::Column::UserId.eq(row.id)).exec(&txn).await?;
            if !roles.is_empty() {
                user_role::Entity::insert_many(
                    roles.iter().map(|r| user_role::ActiveModel { user_id: Set(row.id), role: Set(r.clone()) }),
                )
                .exec_without_returning(&txn)
                .await?;
            }
        }
        txn.commit().await?;
        let user = self.user_by_id(row.id).await?.ok_or_else(|| DbError::Conflict("the user vanished".into()))?;
        Ok((user, created))
    }

    pub async fn delete_user(&self, username: &str) -> DbResult<bool> {
        let result = user::Entity::delete_many().filter(user::Column::Username.eq(username)).exec(self.write()).await?;
        Ok(result.rows_affected > 0)
    }

    /// Usernames of a project's members.
    pub async fn project_members(&self, project_id: i64) -> DbResult<Vec<String>> {
        Ok(user::Entity::find()
            .select_only()
            .column(user::Column::Username)
            .filter(
                user::Column::Id.in_subquery(
                    sea_orm::sea_query::Query::select()
                        .column(project_member::Column::UserId)
                        .from(project_member::Entity)
                        .and_where(Expr::col(project_member::Column::ProjectId).eq(project_id))
                        .to_owned(),
                ),
            )
            .order_by_asc(user::Column::Username)
            .into_tuple()
            .all(self.read())
            .await?)
    }

    /// Replaces a project's members; every name must be a user.
    pub async fn set_project_members(&self, project_id: i64, usernames: &[String]) -> DbResult<()> {
        let txn = self.begin_write().await?;
        let ids: Vec<(i64, String)> = user::Entity::find()
            .select_only()
            .columns([user::Column::Id, user::Column::Username])
            .filter(user::Column::Username.is_in(usernames.iter().cloned()))
            .into_tuple()
            .all(&txn)
            .await?;
        if let Some(unknown) = usernames.iter().find(|name| !ids.iter().any(|(_, u)| u == *name)) {
            return Err(DbError::Conflict(format!("there is no user ‘{unknown}’")));
        }
        project_member::Entity::delete_many()
            .filter(project_member::Column::ProjectId.eq(project_id))
            .exec(&txn)
            .await?;
        if !ids.is_empty() {
            project_member::Entity::insert_many(
                ids.iter()
                    .map(|(id, _)| project_member::ActiveModel { project_id: Set(project_id), user_id: Set(*id) }),
            )
            .exec_without_returning(&txn)
            .await?;
        }
        txn.commit().await?;
        Ok(())
    }

    /// Starts a session for a user whose password hash is still
    /// `password_hash` (the one a login just checked): a password changed
    /// meanwhile ended every session, and must end this one too. Returns
    /// whether the session was made.
    pub async fn create_session(
        &self,
        digest: &str,
        user_id: i64,
        expires_time: i64,
        password_hash: &str,
    ) -> DbResult<bool> {
        let txn = self.begin_write().await?;
        let current: Option<Option<String>> = user::Entity::find_by_id(user_id)
            .select_only()
            .column(user::Column::PasswordHash)
            .into_tuple()
            .one(&txn)
            .await?;
        if current.flatten().as_deref() != Some(password_hash) {
            return Ok(false);
        }
        session::ActiveModel {
            digest: Set(digest.to_owned()),
            user_id: Set(user_id),
            created_time: Set(now()),
            expires_time: Set(expires_time),
        }
        .insert(&txn)
        .await?;
        txn.commit().await?;
        Ok(true)
    }

    /// The user of a live session.
    pub async fn session_user(&self, digest: &str) -> DbResult<Option<User>> {
        let sessions: RelationDef =
            session::Entity::belongs_to(user::Entity).from(session::Column::UserId).to(user::Column::Id).into();
        let rows = Self::user_and_roles()
            .join(JoinType::InnerJoin, sessions.rev())
            .filter(session::Column::Digest.eq(digest))
            .filter(session::Column::ExpiresTime.gt(now()))
            .into_tuple()
            .all(self.read())
            .await?;
        Ok(fold_roles(rows))
    }

    pub async fn delete_session(&self, digest: &str) -> DbResult<()> {
        session::Entity::delete_by_id(digest.to_owned()).exec(self.write()).await?;
        Ok(())
    }

    /// Ends every session of a user, but `keep` (the one asking, say).
    pub async fn end_sessions_of(&self, user_id: i64, keep: Option<&str>) -> DbResult<u64> {
        let mut delete = session::Entity::delete_many().filter(session::Column::UserId.eq(user_id));
        if let Some(keep) = keep {
            delete = delete.filter(session::Column::Digest.ne(keep));
        }
        Ok(delete.exec(self.write()).await?.rows_affected)
    }

    pub async fn delete_expired_sessions(&self) -> DbResult<u64> {
        let result =
            session::Entity::delete_many().filter(session::Column::ExpiresTime.lte(now())).exec(self.write()).await?;
        Ok(result.rows_affected)
    }

    pub async fn create_token(
        &self,
        user_id: i64,
        name: &str,
        digest: &str,
        scopes: &str,
        expires_time: Option<i64>,
    ) -> DbResult<ApiToken> {
        Ok(api_token::ActiveModel {
            user_id: Set(user_id),
            name: Set(name.to_owned()),
            digest: Set(digest.to_owned()),
            scopes: Set(scopes.to_owned()),
            created_time: Set(now()),
            expires_time: Set(expires_time),
            last_used_time: Set(None),
            revoked: Set(false),
            ..Default::default()
        }
        .insert(self.write())
        .await?)
    }

    /// The user and token behind a token digest, if the token is live;
    /// notes its use.
    pub async fn token_user(&self, digest: &str) -> DbResult<Option<(User, ApiToken)>> {
        /// A token with its user and one of the user's roles a row.
        #[derive(sea_orm::FromQueryResult)]
        struct TokenRow {
            #[sea_orm(nested)]
            token: ApiToken,
            user_name: String,
            user_full_name: String,
            user_email: String,
            role: Option<String>,
        }
        let time = now();
        // The token, its user and their roles in one query: every API call
        // with a token makes it.
        let users: RelationDef =
            api_token::Entity::belongs_to(user::Entity).from(api_token::Column::UserId).to(user::Column::Id).into();
        let roles: RelationDef =
            user_role::Entity::belongs_to(user::Entity).from(user_role::Column::UserId).to(user::Column::Id).into();
        let rows = api_token::Entity::find()
            .column_as(user::Column::Username, "user_name")
            .column_as(user::Column::FullName, "user_full_name")
            .column_as(user::Column::Email, "user_email")
            .column(user_role::Column::Role)
            .join(JoinType::InnerJoin, users)
            .join(JoinType::LeftJoin, roles.rev())
            .filter(api_token::Column::Digest.eq(digest))
            .filter(api_token::Column::Revoked.eq(false))
            .into_model::<TokenRow>()
            .all(self.read())
            .await?;
        let Some(token) = rows.first().map(|row| row.token.clone()) else { return Ok(None) };
        let rows = rows.into_iter().map(|r| (r.token.user_id, r.user_name, r.user_full_name, r.user_email, r.role));
        let Some(user) = fold_roles(rows.collect()) else { return Ok(None) };
        if token.expires_time.is_some_and(|t| t <= time) {
            return Ok(None);
        }
        // Recorded at most once a minute: reads must not turn into writes.
        if token.last_used_time.is_none_or(|t| t + 60 < time) {
            api_token::Entity::update_many()
                .col_expr(api_token::Column::LastUsedTime, Expr::value(time))
                .filter(api_token::Column::Id.eq(token.id))
                .exec(self.write())
                .await?;
        }
        Ok(Some((user, token)))
    }

    pub async fn tokens_of(&self, user_id: i64) -> DbResult<Vec<ApiToken>> {
        Ok(api_token::Entity::find()
            .filter(api_token::Column::UserId.eq(user_id))
            .order_by_asc(api_token::Column::Id)
            .all(self.read())
            .await?)
    }

    pub async fn revoke_token(&self, user_id: i64, token_id: i64) -> DbResult<bool> {
        let result = api_token::Entity::update_many()
            .col_expr(api_token::Column::Revoked, Expr::value(true))
            .filter(api_token::Column::Id.eq(token_id))
            .filter(api_token::Column::UserId.eq(user_id))
            .exec(self.write())
            .await?;
        Ok(result.rows_affected > 0)
    }
}
