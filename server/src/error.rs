//! HTTP errors: one type, one `IntoResponse`, a JSON body
//! `{ "error": code, "message": text }` with the right status.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use fieldcrm_core::protocol::ErrorBody;
use fieldcrm_core::Error as CoreError;

use crate::relay::RelayError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn internal(e: impl std::fmt::Display) -> Self {
        tracing::error!(error = %e, "internal error");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; see the relay's log",
        )
    }
}

impl From<RelayError> for ApiError {
    fn from(e: RelayError) -> Self {
        match e {
            RelayError::Core(core) => core.into(),
            RelayError::Invalid(m) => ApiError::bad_request(m),
            RelayError::NotFound(m) => ApiError::new(StatusCode::NOT_FOUND, "not_found", m),
            RelayError::Sqlite(e) => ApiError::internal(e),
            RelayError::Storage(e) => ApiError::internal(e),
            RelayError::Postgres(e) => ApiError::internal(e),
            RelayError::Pool(e) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                format!("relay storage unavailable: {e}"),
            ),
        }
    }
}

impl From<CoreError> for ApiError {
    fn from(e: CoreError) -> Self {
        let message = e.to_string();
        match e {
            CoreError::UnsupportedVersion { .. } => {
                ApiError::new(StatusCode::BAD_REQUEST, "unsupported_version", message)
            }
            CoreError::Protocol(_) => ApiError::new(StatusCode::BAD_REQUEST, "malformed", message),
            CoreError::NotFound(_) => ApiError::new(StatusCode::NOT_FOUND, "not_found", message),
            CoreError::Refused(_) => ApiError::forbidden(message),
            CoreError::Sqlite(_) | CoreError::Io(_) | CoreError::CorruptDocument { .. } => {
                ApiError::internal(message)
            }
            _ => ApiError::bad_request(message),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.code.to_string(),
            message: self.message,
        };
        (self.status, Json(body)).into_response()
    }
}
