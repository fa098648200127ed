//! Errors as HTTP answers: a status and `{"error": "..."}`. Each part's
//! error type is mapped to its status here, in one place.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::db::DbError;
use crate::projects::FieldError;
use crate::projects::save::ProjectError;
use crate::releases::ReleaseError;
use crate::users::Denied;
use crate::users::accounts::AccountError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// The request field at fault, when one is: forms show the reason next
    /// to it.
    pub field: Option<FieldError>,
    /// Seconds after which to try again (`Retry-After`), for a 429 or 503.
    pub retry_after: Option<u64>,
    /// Refused for want of a login (a 401 a person can answer by logging
    /// in): the pages show the login form with it.
    pub login_wanted: bool,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError { status, message: message.into(), field: None, retry_after: None, login_wanted: false }
    }

    /// A 400 naming the field at fault: `field ‘NAME’: REASON`.
    pub fn invalid_field(field: impl Into<String>, reason: impl std::fmt::Display) -> ApiError {
        let field = FieldError::new(field, reason.to_string());
        ApiError { field: Some(field.clone()), ..ApiError::bad_request(field.to_string()) }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }

    /// A 401 that logging in (or sending an API token) answers.
    pub fn login_wanted(message: impl Into<String>) -> ApiError {
        ApiError { login_wanted: true, ..ApiError::new(StatusCode::UNAUTHORIZED, message) }
    }

    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, message)
    }

    /// A refusal for now (429 or 503) that says when to try again.
    pub fn try_later(status: StatusCode, message: impl Into<String>, after: std::time::Duration) -> ApiError {
        ApiError { retry_after: Some(after.as_secs().max(1)), ..ApiError::new(status, message) }
    }

    /// A 500 whose message says what failed (it is logged too).
    pub fn internal(message: impl Into<String>) -> ApiError {
        let message = message.into();
        tracing::error!("{message}");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
}

impl From<Denied> for ApiError {
    fn from(denied: Denied) -> ApiError {
        match denied {
            Denied::NotLoggedIn(message) => ApiError::login_wanted(message),
            Denied::Forbidden(message) => ApiError::forbidden(message),
        }
    }
}

impl From<ProjectError> for ApiError {
    fn from(error: ProjectError) -> ApiError {
        match error {
            ProjectError::Denied(denied) => denied.into(),
            ProjectError::Locked(message) => ApiError::forbidden(message),
            ProjectError::NotFound(message) => ApiError::not_found(message),
            ProjectError::BadName(message) => ApiError::bad_request(message),
            ProjectError::Field(field) => field.into(),
            ProjectError::Db(e) => e.into(),
        }
    }
}

impl From<ReleaseError> for ApiError {
    fn from(error: ReleaseError) -> ApiError {
        match error {
            ReleaseError::NoSuchSet { .. } => ApiError::not_found(error.to_string()),
            // The plugin failed, not this server: a bad gateway.
            ReleaseError::Failed { .. } => ApiError::new(StatusCode::BAD_GATEWAY, error.to_string()),
            ReleaseError::Db(e) => e.into(),
        }
    }
}

impl From<AccountError> for ApiError {
    fn from(error: AccountError) -> ApiError {
        match error {
            AccountError::Denied(denied) => denied.into(),
            AccountError::NotFound(message) => ApiError::not_found(message),
            AccountError::BadName(error) => ApiError::bad_request(error.to_string()),
            AccountError::Field { field, message } => ApiError::invalid_field(field, message),
            AccountError::WrongCurrentPassword => ApiError {
                status: StatusCode::FORBIDDEN,
                ..ApiError::invalid_field("currentpassword", "give your current password to change it")
            },
            AccountError::Forbidden(message) => ApiError::forbidden(message),
            AccountError::Hashing => ApiError::internal("cannot hash the password"),
            AccountError::Db(e) => e.into(),
        }
    }
}

impl From<FieldError> for ApiError {
    fn from(e: FieldError) -> ApiError {
        ApiError::invalid_field(e.field, e.message)
    }
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> ApiError {
        match e {
            DbError::Conflict(message) => ApiError::new(StatusCode::CONFLICT, message),
            // Two requests created the same name at once (PostgreSQL lets
            // both read "none" before either commits): the later one lost.
            DbError::Db(e)
                if matches!(e.sql_err(), Some(sea_orm::SqlErr::UniqueConstraintViolation(_)))
                    || matches!(e, sea_orm::DbErr::RecordNotUpdated) =>
            {
                ApiError::new(StatusCode::CONFLICT, "another request made the same change meanwhile; try again")
            }
            // Web handlers write unfenced; a role's task never answers HTTP.
            e @ DbError::Fenced { .. } => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
            DbError::Db(e) => {
                tracing::error!("database error: {e}");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error: the database call failed")
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(serde_json::json!({ "error": self.message }))).into_response();
        if let Some(seconds) = self.retry_after {
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, seconds.into());
        }
        response
    }
}
