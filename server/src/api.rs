//! HTTP handlers: thin shells that decode, call the relay, encode.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use fieldcrm_core::protocol::{self, LoginRequest, LoginResponse, SyncRequest};
use serde::Deserialize;
use tokio_stream::{Stream, StreamExt};

use crate::auth::AuthUser;
use crate::error::ApiError;
use crate::login_throttle::ClientAddress;
use crate::{relay, AppState, SignIn};

/// Liveness: the process answers. (Readiness, whether it can serve, is
/// [`readyz`].)
pub async fn healthz() -> &'static str {
    "ok"
}

/// How long readiness waits for the store before saying "not ready".
const READY_WITHIN: std::time::Duration = std::time::Duration::from_secs(2);

/// Readiness: the store answers a read within 2 s (`ready`), or 503 with
/// why not — the database is away, say, while the process lives on and
/// reconnects by itself. Load balancers send traffic only to ready relays.
pub async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let answer = tokio::time::timeout(READY_WITHIN, state.store(|relay| relay.head())).await;
    let not_ready = |why: String| {
        (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        )
            .into_response()
    };
    match answer {
        Ok(Ok(_)) => "ready\n".into_response(),
        Ok(Err(e)) => not_ready(e.message),
        Err(_) => not_ready(format!(
            "the store did not answer within {} s",
            READY_WITHIN.as_secs()
        )),
    }
}

pub async fn no_such_endpoint() -> ApiError {
    ApiError::not_found("no such endpoint")
}

pub async fn metrics(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Some(expected) = &state.options.metrics_token {
        let sent = crate::auth::bearer_hash(&headers).ok();
        if sent != Some(crate::auth::token_hash(expected)) {
            let mut refused = ApiError::unauthorized(
                "/metrics needs `Authorization: Bearer <the relay's --metrics-token>`",
            )
            .into_response();
            refused.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
            return refused;
        }
    }
    if let Ok(stats) = state.store(|relay| relay.stats()).await {
        metrics::gauge!("fieldcrm_relay_records").set(stats.records as f64);
        metrics::gauge!("fieldcrm_relay_log_head").set(stats.head as f64);
    }
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

pub async fn login(
    State(state): State<Arc<AppState>>,
    client: ClientAddress,
    Json(body): Json<LoginRequest>,
) -> Result<Response, ApiError> {
    match state
        .sign_in(client, &body.username, &body.password)
        .await?
    {
        SignIn::Welcome(user, token) => Ok(Json(LoginResponse {
            token,
            user: user.id,
            role: user.role.as_str().to_string(),
            territories: user.territories,
        })
        .into_response()),
        SignIn::Refused => Err(ApiError::unauthorized("wrong username or password")),
        SignIn::Wait(wait) => {
            let seconds = wait.as_secs() + 1;
            let mut response = ApiError::new(
                axum::http::StatusCode::TOO_MANY_REQUESTS,
                "too_many_attempts",
                format!("too many failed sign-ins from this address; try again in {seconds} s"),
            )
            .into_response();
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, seconds.into());
            Ok(response)
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct LogoutQuery {
    #[serde(default)]
    everywhere: bool,
}

/// Ends this sign-in (the token stops working), or with `?everywhere=true`
/// every sign-in of the user.
pub async fn logout(
    State(state): State<Arc<AppState>>,
    AuthUser(user): AuthUser,
    Query(q): Query<LogoutQuery>,
    headers: axum::http::HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    let this = crate::auth::bearer_hash(&headers)?;
    let revoked = state
        .store(move |relay| match q.everywhere {
            true => relay.revoke_tokens(&user.id),
            false => relay.revoke_token(&this).map(usize::from),
        })
        .await?;
    Ok(Json(serde_json::json!({ "revoked": revoked })))
}

pub async fn sync(
    State(state): State<Arc<AppState>>,
    AuthUser(user): AuthUser,
    body: Bytes,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let request: SyncRequest = protocol::decode(&body)?;
    let pushed = request.push.len();
    let (response, appended, head) = state
        .store(move |relay| {
            let (response, appended) = relay::sync(relay, &user, request)?;
            let head = if appended.changes > 0 {
                Some(relay.head()?)
            } else {
                None
            };
            Ok((response, appended, head))
        })
        .await?;
    if let Some(head) = head {
        // Wake the connected devices that may see what was appended.
        state.log_advanced(head, appended.territories.as_ref());
    }
    metrics::counter!("fieldcrm_changes_accepted_total")
        .increment((pushed - response.rejected.len()) as u64);
    metrics::counter!("fieldcrm_changes_rejected_total").increment(response.rejected.len() as u64);
    metrics::counter!("fieldcrm_changes_appended_total").increment(appended.changes as u64);
    metrics::histogram!("fieldcrm_sync_duration_seconds").record(started.elapsed().as_secs_f64());
    Ok((
        [(CONTENT_TYPE, protocol::CONTENT_TYPE)],
        protocol::encode(&response),
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
pub struct EventsQuery {
    after: Option<u64>,
}

/// Server-sent events: one `log` event (data = a sequence number to sync
/// up to) whenever the log advances past `after` with changes the user may
/// see (or ones whose territories are not known). Devices sync when they
/// get one.
pub async fn events(
    State(state): State<Arc<AppState>>,
    AuthUser(user): AuthUser,
    Query(q): Query<EventsQuery>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let mut sent = q.after.unwrap_or(0);
    if sent > state.head.borrow().newest() {
        // Past the log's end: the relay was restored from a backup. The
        // first event comes at once, and that sync tells the device.
        sent = 0;
    }
    let connected = ConnectedDevice::new();
    let stream =
        tokio_stream::wrappers::WatchStream::new(state.head.subscribe()).filter_map(move |heads| {
            let _still_connected = &connected;
            let visible = heads.visible_to(&user);
            (visible > sent).then(|| {
                sent = visible;
                Ok(Event::default().event("log").data(visible.to_string()))
            })
        });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// Counts open event streams in the `fieldcrm_connected_devices` gauge.
struct ConnectedDevice;

impl ConnectedDevice {
    fn new() -> Self {
        metrics::gauge!("fieldcrm_connected_devices").increment(1.0);
        ConnectedDevice
    }
}

impl Drop for ConnectedDevice {
    fn drop(&mut self) {
        metrics::gauge!("fieldcrm_connected_devices").decrement(1.0);
    }
}

/// The offset header of blob uploads: where the chunk in the body starts.
pub const UPLOAD_OFFSET: &str = "upload-offset";

/// How far a blob has come at the relay (`GET /v1/blobs/{sha256}/status`):
/// where an interrupted upload continues.
pub async fn blob_status(
    State(state): State<Arc<AppState>>,
    AuthUser(user): AuthUser,
    axum::extract::Path(sha): axum::extract::Path<String>,
) -> Result<Json<relay::blobs::BlobStatus>, ApiError> {
    Ok(Json(
        state
            .store(move |relay| relay::blobs::status(relay, &user, &sha))
            .await?,
    ))
}

/// One chunk of a blob upload (`PUT /v1/blobs/{sha256}`, the chunk's
/// place in `Upload-Offset`, 0 if absent). Answers the status after it.
pub async fn put_blob(
    State(state): State<Arc<AppState>>,
    AuthUser(user): AuthUser,
    axum::extract::Path(sha): axum::extract::Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<relay::blobs::BlobStatus>, ApiError> {
    let offset = match headers.get(UPLOAD_OFFSET) {
        None => 0,
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .ok_or_else(|| {
                ApiError::bad_request("Upload-Offset is the byte the chunk starts at, e.g. 1048576")
            })?,
    };
    let limit = state.options.max_blob_bytes;
    let sent = body.len() as u64;
    let status = state
        .store(move |relay| relay::blobs::upload(relay, &user, &sha, offset, &body, limit))
        .await?;
    metrics::counter!("fieldcrm_blob_bytes_received_total").increment(sent);
    Ok(Json(status))
}

/// A blob's bytes (`GET /v1/blobs/{sha256}`), or one range of them with
/// `Range: bytes=N-` / `bytes=N-M` (206). Sent as a download, never for a
/// browser to render: the type is the attachment's, sniffing is off, and
/// the page policy forbids running anything in it.
pub async fn get_blob(
    State(state): State<Arc<AppState>>,
    AuthUser(user): AuthUser,
    axum::extract::Path(sha): axum::extract::Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let range = headers
        .get(axum::http::header::RANGE)
        .map(|v| v.to_str().unwrap_or_default().to_string());
    let span = state
        .store(move |relay| {
            relay::blobs::open(relay, &user, &sha, |size| {
                let Some(range) = range else { return Ok(None) };
                let ranges = http_range_header::parse_range_header(&range)
                    .and_then(|r| r.validate(size))
                    .map_err(|_| {
                        relay::RelayError::Invalid(format!(
                            "Range {range:?} is not a range of this blob of {size} bytes \
                             (send e.g. bytes=1048576-)"
                        ))
                    })?;
                // One range is served; a client asking for several gets the whole.
                Ok(match ranges.as_slice() {
                    [one] => Some((*one.start(), *one.end())),
                    _ => None,
                })
            })
        })
        .await?;
    Ok(blob_response(&span, false, blob_body(state, span.clone())))
}

/// The bytes of `span`, read from the store a piece at a time as the
/// client takes them (a slow client holds one piece, not the file). A
/// failure midway ends the body short; the client's hash check and a
/// ranged retry take it from there.
pub fn blob_body(state: Arc<AppState>, span: relay::blobs::BlobSpan) -> axum::body::Body {
    let end = span.start + span.len;
    let pieces = futures_util::stream::unfold(
        (state, Arc::new(span.sha), span.start),
        move |(state, sha, at)| async move {
            if at >= end {
                return None;
            }
            let n = (end - at).min(relay::blobs::READ_PIECE);
            let key = sha.clone();
            let piece = state.store(move |relay| relay.read_blob(&key, at, n)).await;
            let next = match piece {
                Ok(_) => at + n,
                Err(_) => end,
            };
            let piece = piece.map(axum::body::Bytes::from).map_err(|e| {
                tracing::warn!(sha = %sha, error = %e.message, "a download stopped midway");
                std::io::Error::other(e.message)
            });
            Some((piece, (state, sha, next)))
        },
    );
    axum::body::Body::from_stream(pieces)
}

/// The response carrying `span` of a blob as `body`: `inline` lets an
/// image show in a page (the office UI's previews); anything else is an
/// attachment to save.
pub fn blob_response(
    span: &relay::blobs::BlobSpan,
    inline: bool,
    body: axum::body::Body,
) -> Response {
    use axum::http::header::{ACCEPT_RANGES, CONTENT_DISPOSITION, CONTENT_LENGTH, CONTENT_RANGE};
    let end = span.start + span.len;
    let partial = span.start > 0 || end < span.size;
    let disposition = match inline && span.media_type.starts_with("image/") {
        true => "inline",
        false => "attachment",
    };
    let mut response = (
        [
            (CONTENT_TYPE, span.media_type.clone()),
            (CONTENT_DISPOSITION, disposition.to_string()),
            (ACCEPT_RANGES, "bytes".to_string()),
            // Known before the first piece is read: clients see a body cut short.
            (CONTENT_LENGTH, span.len.to_string()),
            (
                axum::http::header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; sandbox".to_string(),
            ),
        ],
        body,
    )
        .into_response();
    if partial {
        *response.status_mut() = axum::http::StatusCode::PARTIAL_CONTENT;
        if let Ok(v) = format!(
            "bytes {}-{}/{}",
            span.start,
            end.saturating_sub(1),
            span.size
        )
        .parse()
        {
            response.headers_mut().insert(CONTENT_RANGE, v);
        }
    }
    response
}
