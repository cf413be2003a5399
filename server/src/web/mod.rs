//! The office web UI: server-rendered pages (maud templates, which escape
//! every value), a stylesheet and a little JavaScript, all embedded in the
//! binary so the UI works on a LAN with no internet. Handlers are thin:
//! parse the request, call `relay::office` (which enforces territories) in
//! `spawn_blocking`, render. Decision record: docs/decisions/0003-office-ui.md.

mod admin;
mod assets;
mod attachments;
mod board;
mod configuration;
mod convert;
mod csv_io;
mod dashboard;
mod duplicates;
mod form;
mod layout;
mod merge;
mod names;
mod orders;
mod records;
mod review;
mod route;
mod search;
mod session;
mod settings;
mod timeline;
mod visits;
mod zone;

use std::sync::Arc;

use axum::extract::Request;
use axum::http::{header, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::error::ApiError;
use crate::relay::{RelayError, RelayStore};
use crate::AppState;

pub use session::Session;

/// The office UI's routes.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/dashboard") }))
        .route("/login", get(session::login_page).post(session::login))
        .route("/logout", post(session::logout))
        .route("/dashboard", get(dashboard::dashboard))
        .route("/dashboard/stages", get(dashboard::stages))
        .route("/search", get(search::search))
        .route("/conflicts", get(records::conflicts))
        .route("/pipeline", get(board::pipeline))
        .route("/pipeline/move", post(board::move_deal))
        .route("/route", get(route::route))
        .route("/visits", get(visits::visits))
        .route(
            "/import",
            get(csv_io::import_page).post(csv_io::import_preview),
        )
        .route("/import/run", post(csv_io::import_run))
        .route("/lookup", get(names::lookup))
        .route("/review", get(review::queue))
        .route("/admin", get(admin::page_view))
        .route("/admin/users", post(admin::add_user))
        .route(
            "/admin/users/{id}/territories",
            post(admin::set_territories),
        )
        .route("/admin/users/{id}/disable", post(admin::disable))
        .route("/admin/users/{id}/enable", post(admin::enable))
        .route("/admin/users/{id}/password", post(admin::reset_password))
        .route("/admin/territories", post(admin::add_territory))
        .route(
            "/admin/configuration",
            get(configuration::page_view).post(configuration::change),
        )
        .route("/admin/territories/{name}/parent", post(admin::set_parent))
        .route("/review/{record}", post(review::decide))
        .route(
            "/settings",
            get(settings::page_view).post(settings::save_zone),
        )
        .route("/static/app.css", get(assets::css))
        .route("/static/app.js", get(assets::js))
        .route("/r/{id}", get(records::show).post(records::update))
        .route("/r/{id}/edit", get(records::edit_form))
        .route("/r/{id}/delete", post(records::delete))
        .route("/r/{id}/restore", post(records::restore))
        .route("/r/{id}/resolve", post(records::resolve))
        .route("/r/{id}/log", post(timeline::log))
        .route("/r/{id}/done", post(timeline::done))
        .route("/r/{id}/convert", post(convert::convert))
        .route("/r/{id}/merge", get(merge::form).post(merge::merge))
        .route("/r/{id}/unmerge", post(merge::unmerge))
        .route("/r/{id}/lines", post(orders::add_line))
        .route("/r/{id}/files", post(attachments::add))
        .route("/r/{id}/files/{aid}", get(attachments::file))
        .route("/r/{id}/files/{aid}/thumb", get(attachments::thumbnail))
        .route("/r/{id}/files/{aid}/caption", post(attachments::caption))
        .route("/r/{id}/files/{aid}/remove", post(attachments::remove))
        .route("/r/{id}/print", get(orders::print))
        .route("/{kind}", get(records::list).post(records::create))
        .route("/{kind}/new", get(records::new_form))
        .route("/{kind}/duplicates", get(duplicates::page_view))
        .route("/{kind}/bulk", post(records::bulk))
        .route("/{kind}/filters", post(settings::save_filter))
        .route("/{kind}/filters/remove", post(settings::remove_filter))
        .route("/{kind}/export.csv", get(csv_io::export))
        .layer(middleware::from_fn(same_origin))
}

/// Refuses state-changing requests sent from another site's page (checked
/// on top of the CSRF token and the SameSite cookie), sign-in included: a
/// forged sign-in would put the victim in the attacker's account. `Origin:
/// null` (sandboxed frames, `data:` pages) is another site too. Requests
/// without an Origin (not from a browser) rely on the CSRF token.
async fn same_origin(request: Request, next: Next) -> Response {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let header_text = |name| request.headers().get(name).and_then(|h| h.to_str().ok());
        if let Some(origin) = header_text(header::ORIGIN) {
            let origin_host = origin.split_once("://").map(|(_, rest)| rest);
            // HTTP/2 carries the host in the URI, HTTP/1.1 in Host.
            let host =
                header_text(header::HOST).or_else(|| request.uri().authority().map(|a| a.as_str()));
            if origin_host.is_none() || origin_host != host {
                return PageError::new(
                    StatusCode::FORBIDDEN,
                    format!("refused a form sent from another site ({origin})"),
                )
                .into_response();
            }
        }
    }
    next.run(request).await
}

/// Runs store work off the async threads.
async fn blocking<R: Send + 'static>(
    state: &Arc<AppState>,
    f: impl FnOnce(&dyn RelayStore) -> Result<R, RelayError> + Send + 'static,
) -> Result<R, PageError> {
    Ok(state.store(f).await?)
}

/// Wakes connected devices after office edits advanced the log.
async fn log_advanced(state: &Arc<AppState>) {
    if let Ok(head) = blocking(state, |relay| relay.head()).await {
        state.log_advanced(head, None);
    }
}

/// An error shown as a page.
#[derive(Debug)]
pub struct PageError {
    status: StatusCode,
    message: String,
}

impl PageError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        PageError {
            status,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        PageError::new(StatusCode::BAD_REQUEST, message)
    }
}

impl From<ApiError> for PageError {
    fn from(e: ApiError) -> Self {
        PageError::new(e.status, e.message)
    }
}

impl From<RelayError> for PageError {
    fn from(e: RelayError) -> Self {
        ApiError::from(e).into()
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let title = self.status.canonical_reason().unwrap_or("Error");
        (self.status, layout::bare(title, &self.message)).into_response()
    }
}
