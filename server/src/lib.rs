//! FieldCRM relay server. `app` builds the router; `main.rs` only parses
//! flags and serves it, so tests drive the same router in-process.

use axum::response::Html;
use axum::routing::get;
use axum::Router;

/// The relay's HTTP routes.
pub fn app() -> Router {
    Router::new()
        .route("/", get(index))
        .route("/healthz", get(healthz))
}

async fn healthz() -> &'static str {
    "ok"
}

async fn index() -> Html<&'static str> {
    Html(concat!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>FieldCRM relay</title></head>",
        "<body><h1>FieldCRM relay</h1><p>Version ",
        env!("CARGO_PKG_VERSION"),
        ". The relay is running. Sync (protocol v1) and the office UI are not built yet; ",
        "see the project's open issues.</p></body></html>"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    #[tokio::test]
    async fn healthz_answers_ok() {
        let response = app()
            .oneshot(Request::get("/healthz").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"ok");
    }
}
