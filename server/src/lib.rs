//! FieldCRM relay server. [`app`] builds the router; `main.rs` only parses
//! flags and serves it, so tests drive the same router in-process.

pub mod accounts;
pub mod api;
pub mod auth;
pub mod config_entries;
pub mod demo;
pub mod error;
pub mod log_heads;
pub mod login_throttle;
pub mod preferences;
pub mod relay;
pub mod web;

use std::collections::BTreeSet;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::{header, HeaderName, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use relay::RelayStore;

/// Largest request body (a sync push is paged by the client at 1 MiB of changes).
pub const MAX_BODY_BYTES: usize = 64 << 20;
/// A request that takes longer is cut off with 408 (slow or stuck clients).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// How the relay serves, beyond its store.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Longest time a request may take, headers included (event streams
    /// excepted: they stay open).
    pub request_timeout: Duration,
    /// Mark the office UI's session cookie `Secure` (only sent over HTTPS):
    /// set it when the relay is reached through TLS.
    pub secure_cookies: bool,
    /// A header your reverse proxy sets to the client's address
    /// (`X-Forwarded-For`, `X-Real-IP`): sign-in throttling then counts by
    /// it instead of the proxy's address. Only set it behind such a proxy;
    /// otherwise clients could claim any address.
    pub client_address_header: Option<axum::http::HeaderName>,
    /// When set, `/metrics` answers only requests bearing this token.
    pub metrics_token: Option<String>,
    /// Largest attachment blob the relay stores.
    pub max_blob_bytes: u64,
    /// How long a blob no record names is kept (garbage collection runs
    /// every hour while serving).
    pub blob_grace_ms: i64,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            request_timeout: REQUEST_TIMEOUT,
            secure_cookies: false,
            client_address_header: None,
            metrics_token: None,
            max_blob_bytes: fieldcrm_core::MAX_ATTACHMENT_BYTES,
            blob_grace_ms: relay::blobs::DEFAULT_GRACE_MS,
        }
    }
}

/// How a sign-in attempt ended.
#[derive(Debug)]
pub enum SignIn {
    /// Right password: the user and a fresh token.
    Welcome(relay::User, String),
    /// Wrong username or password.
    Refused,
    /// This client tried too often; it may try again after the wait.
    Wait(Duration),
}

/// What every handler shares.
pub struct AppState {
    pub relay: Arc<dyn RelayStore>,
    /// How far the log has advanced, per territory; event streams watch it.
    /// Shared, so each stream's look at a new value is a pointer copy, not a
    /// copy of the map.
    pub head: tokio::sync::watch::Sender<Arc<log_heads::LogHeads>>,
    pub metrics: PrometheusHandle,
    pub logins: login_throttle::LoginThrottle,
    pub options: ServeOptions,
    /// Store calls running at once; other requests wait as cheap tasks,
    /// not as blocked threads (each thread costs memory).
    pub store_slots: tokio::sync::Semaphore,
    /// Password checks running at once. Argon2 takes ~19 MiB and a core
    /// for each; unbounded, a burst of sign-ins would take gigabytes.
    pub password_checks: tokio::sync::Semaphore,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").finish_non_exhaustive()
    }
}

impl AppState {
    pub fn new(relay: Arc<dyn RelayStore>) -> relay::Result<Arc<Self>> {
        AppState::with_options(relay, ServeOptions::default())
    }

    pub fn with_options(
        relay: Arc<dyn RelayStore>,
        options: ServeOptions,
    ) -> relay::Result<Arc<Self>> {
        let head = tokio::sync::watch::Sender::new(Arc::new(log_heads::LogHeads::starting_at(
            relay.head()?,
        )));
        // Other relays on the same database advance the log too.
        let watched = head.clone();
        relay.watch_log(Box::new(move |newest, territories| {
            advance(&watched, newest, territories.as_ref())
        }));
        let store_slots = tokio::sync::Semaphore::new(relay.parallelism().max(1));
        Ok(Arc::new(AppState {
            relay,
            head,
            metrics: metrics_handle(),
            logins: login_throttle::LoginThrottle::default(),
            options,
            store_slots,
            password_checks: tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(2, |n| n.get()),
            ),
        }))
    }
}

impl AppState {
    /// Checks a sign-in from `client` and issues a token: throttled per
    /// client and name, and at most one password check per core at a time
    /// (the rest wait their turn). The one sign-in path of the API and UI.
    pub async fn sign_in(
        &self,
        client: login_throttle::ClientAddress,
        username: &str,
        password: &str,
    ) -> Result<SignIn, error::ApiError> {
        if let Err(wait) = self.logins.check(client, username) {
            return Ok(SignIn::Wait(wait));
        }
        let _permit = self
            .password_checks
            .acquire()
            .await
            .map_err(error::ApiError::internal)?;
        let (name, secret) = (username.to_string(), password.to_string());
        let found = self
            .store(move |relay| auth::login(relay, &name, &secret))
            .await?;
        Ok(match found {
            Some((user, token)) => {
                self.logins.succeeded(client, username);
                SignIn::Welcome(user, token)
            }
            None => {
                self.logins.failed(client, username);
                SignIn::Refused
            }
        })
    }

    /// Runs store work on a blocking thread once a store slot is free.
    pub async fn store<R: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn RelayStore) -> relay::Result<R> + Send + 'static,
    ) -> Result<R, error::ApiError> {
        let _slot = self
            .store_slots
            .acquire()
            .await
            .map_err(error::ApiError::internal)?;
        let relay = self.relay.clone();
        Ok(tokio::task::spawn_blocking(move || f(&*relay))
            .await
            .map_err(error::ApiError::internal)??)
    }

    /// The log reached `newest` with changes in `territories` (`None`: not
    /// known, which wakes every event stream).
    pub fn log_advanced(&self, newest: u64, territories: Option<&BTreeSet<String>>) {
        advance(&self.head, newest, territories);
    }
}

fn advance(
    head: &tokio::sync::watch::Sender<Arc<log_heads::LogHeads>>,
    newest: u64,
    territories: Option<&BTreeSet<String>>,
) {
    // Copies the map only if a stream still holds the previous value.
    head.send_if_modified(|heads| Arc::make_mut(heads).advance(newest, territories));
}

/// The process-wide Prometheus recorder (installed once).
fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full("fieldcrm_sync_duration_seconds".into()),
                    &[
                        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                    ],
                )
                .expect("bucket list is not empty")
                .set_buckets_for_metric(
                    Matcher::Full("fieldcrm_group_commit_pushes".into()),
                    &[1.0, 2.0, 4.0, 8.0, 16.0],
                )
                .expect("bucket list is not empty");
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder is installed; then ours just stays unused.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// Garbage-collects attachment blobs every hour while the relay serves
/// (several relays on one database may each do it: it is idempotent).
async fn collect_blobs_hourly(state: Arc<AppState>) {
    let mut every = tokio::time::interval(Duration::from_secs(3600));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let grace = state.options.blob_grace_ms;
        match state
            .store(move |relay| relay::blobs::collect_garbage(relay, grace))
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "attachment blobs no record names removed"),
            Err(e) => tracing::warn!(error = %e.message, "attachment garbage collection failed"),
        }
    }
}

/// The relay's HTTP routes.
pub fn app(state: Arc<AppState>) -> Router {
    let timeout = TimeoutLayer::with_status_code(
        axum::http::StatusCode::REQUEST_TIMEOUT,
        state.options.request_timeout,
    );
    let v1 = Router::new()
        .route("/v1/login", post(api::login))
        .route("/v1/logout", post(api::logout))
        .route("/v1/sync", post(api::sync))
        .route("/v1/blobs/{sha256}", get(api::get_blob).put(api::put_blob))
        .route("/v1/blobs/{sha256}/status", get(api::blob_status))
        // Unknown /v1 paths answer in JSON too.
        .route("/v1/{*rest}", axum::routing::any(api::no_such_endpoint))
        .layer(timeout)
        // Added after the timeout: event streams stay open.
        .route("/v1/events", get(api::events))
        .layer(middleware::from_fn(error::json_errors));
    let pages = Router::new()
        .route("/healthz", get(api::healthz))
        .route("/readyz", get(api::readyz))
        .route("/metrics", get(api::metrics))
        .merge(web::routes())
        .layer(timeout);
    Router::new()
        .merge(v1)
        .merge(pages)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        // No framing, no inline or foreign script, no content sniffing, no
        // URLs leaked to other sites, nothing kept in caches (pages and
        // exports hold customer data; static assets set their own caching).
        .layer(default_header(
            header::CONTENT_SECURITY_POLICY,
            CONTENT_SECURITY_POLICY,
        ))
        .layer(default_header(header::X_FRAME_OPTIONS, "DENY"))
        .layer(default_header(header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .layer(default_header(header::REFERRER_POLICY, "same-origin"))
        .layer(default_header(header::CACHE_CONTROL, "no-store"))
        .layer(middleware::from_fn(count_requests))
        // A bug must cost one request a 500, never the process.
        .layer(CatchPanicLayer::new())
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// Serves the relay on `listener` until `shutdown` resolves, then lets
/// in-flight requests finish.
pub async fn serve(
    relay: Arc<dyn RelayStore>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), Box<dyn std::error::Error>> {
    serve_with(relay, listener, shutdown, ServeOptions::default()).await
}

/// [`serve`] with `options`. A client that sends its headers, or (on
/// bounded routes) its request, slower than the request timeout is cut
/// off, so slow or stuck clients cannot pile up connections.
pub async fn serve_with(
    relay: Arc<dyn RelayStore>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    options: ServeOptions,
) -> Result<(), Box<dyn std::error::Error>> {
    let request_timeout = options.request_timeout;
    use axum::extract::ConnectInfo;
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto::Builder;
    use hyper_util::service::TowerToHyperService;

    // Store calls block; a PostgreSQL client must not block the runtime.
    let state =
        tokio::task::spawn_blocking(move || AppState::with_options(relay, options)).await??;
    let collector = tokio::spawn(collect_blobs_hourly(state.clone()));
    let router = app(state);
    // axum::serve sets no header timeout; hyper does once it has a timer.
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(request_timeout);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors and the like: wait, do not spin.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                // Handlers see the peer's address (sign-in throttling).
                let service = TowerToHyperService::new(tower::ServiceExt::map_request(
                    router.clone(),
                    move |mut request: axum::http::Request<hyper::body::Incoming>| {
                        request.extensions_mut().insert(ConnectInfo(peer));
                        request
                    },
                ));
                let connection = builder
                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                    .into_owned();
                let connection = graceful.watch(connection);
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                });
            }
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    collector.abort();
    // In-flight requests finish; open event streams do not end by
    // themselves, so they get at most one request timeout.
    if tokio::time::timeout(request_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::info!("closing connections still open after the shutdown grace period");
    }
    Ok(())
}

/// A header every response carries unless its handler set its own.
fn default_header(name: HeaderName, value: &'static str) -> SetResponseHeaderLayer<HeaderValue> {
    SetResponseHeaderLayer::if_not_present(name, HeaderValue::from_static(value))
}

/// Pages load only this site's stylesheet, script and images, post forms
/// only here, and may not be framed.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

async fn count_requests(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_string();
    let response = next.run(request).await;
    metrics::counter!("fieldcrm_http_requests_total", "route" => route, "status" => response.status().as_u16().to_string())
        .increment(1);
    response
}
