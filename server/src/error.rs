//! HTTP errors: one type, one `IntoResponse`, a JSON body
//! `{ "error": code, "message": text }` with the right status. What is the
//! caller's fault is listed; anything else is a 500 ("unexpected"), never
//! a client error, so a new internal error cannot pass as bad input.

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

    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// A bug or a storage failure: details go to the log, not the answer.
    pub fn internal(e: impl std::fmt::Display) -> Self {
        tracing::error!(error = %e, "internal error");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "unexpected error in the relay; it has been logged",
        )
    }
}

impl From<RelayError> for ApiError {
    fn from(e: RelayError) -> Self {
        if e.is_storage_full() {
            return ApiError::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "storage_full",
                "the relay's storage is full: nothing of this request was stored and nothing \
                 acknowledged before is lost; send it again once the relay's operator has freed space",
            );
        }
        if e.is_unavailable() {
            // The database is away (see `RelayError::is_unavailable`).
            return ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                format!("relay storage unavailable, try again: {e}"),
            );
        }
        match e {
            RelayError::Core(core) => core.into(),
            RelayError::Invalid(m) => ApiError::bad_request(m),
            RelayError::NotFound(m) => ApiError::not_found(m),
            RelayError::AlreadyExists(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
            e @ RelayError::WrongOffset { .. } => {
                ApiError::new(StatusCode::CONFLICT, "wrong_offset", e.to_string())
            }
            RelayError::Pool(e) => ApiError::internal(e),
            RelayError::Sqlite(e) => ApiError::internal(e),
            RelayError::Storage(e) => ApiError::internal(e),
            RelayError::StorageFull => ApiError::internal("storage full"),
            RelayError::Postgres(e) => ApiError::internal(e),
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
            CoreError::NotFound(_) | CoreError::NotYetCreated { .. } => {
                ApiError::not_found(message)
            }
            CoreError::UnknownKind(_)
            | CoreError::UnknownField { .. }
            | CoreError::MissingField { .. }
            | CoreError::InvalidValue { .. }
            | CoreError::OversizeValue { .. }
            | CoreError::BadReference { .. }
            | CoreError::ImplausibleTime { .. }
            | CoreError::Deleted(_)
            | CoreError::MalformedChange { .. }
            | CoreError::ForeignChange { .. }
            | CoreError::MissingDependencies { .. }
            | CoreError::CompetingObject { .. }
            | CoreError::InvalidPipeline(_)
            | CoreError::InvalidQuery(_)
            | CoreError::Import { .. } => ApiError::bad_request(message),
            _ => ApiError::internal(message),
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

/// Gives every failed `/v1/*` answer the JSON error body, including the
/// ones axum and tower-http make themselves (413 body too large, 415
/// wrong content type, 408 timeout, 422 unreadable JSON, 405, 404).
pub async fn json_errors(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let (code, message) = match status {
        StatusCode::PAYLOAD_TOO_LARGE => (
            "too_large",
            format!(
                "the request body is larger than the relay accepts ({} MiB)",
                crate::MAX_BODY_BYTES >> 20
            ),
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ("unsupported_media_type", text),
        StatusCode::REQUEST_TIMEOUT => (
            "timeout",
            "the request took longer than the relay allows; send it again".to_string(),
        ),
        StatusCode::METHOD_NOT_ALLOWED => ("method_not_allowed", "method not allowed here".into()),
        StatusCode::NOT_FOUND => ("not_found", "no such endpoint".into()),
        s if s.is_server_error() => ("internal", "unexpected error in the relay".into()),
        _ => ("bad_request", text),
    };
    let mut fixed = ApiError::new(status, code, message).into_response();
    for (name, value) in parts.headers.iter() {
        if name != axum::http::header::CONTENT_TYPE && name != axum::http::header::CONTENT_LENGTH {
            fixed.headers_mut().insert(name.clone(), value.clone());
        }
    }
    fixed
}
