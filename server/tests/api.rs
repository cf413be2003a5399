//! Router tests, in-process: auth, bad input, access control, evictions,
//! live push. Devices are real core stores; requests go through `oneshot`.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{header, Request, StatusCode};
use axum::Router;
use fieldcrm_core::protocol::{
    self, Cursor, RecordBytes, SyncRequest, SyncResponse, PROTOCOL_VERSION,
};
use fieldcrm_core::{fields, Kind, Store, Value};
use fieldcrm_server::relay::sqlite::SqliteRelay;
use fieldcrm_server::relay::{RelayStore, Role};
use fieldcrm_server::{app, auth, AppState};
use http_body_util::BodyExt;
use tower::ServiceExt;

struct Fixture {
    _dir: tempfile::TempDir,
    dir: std::path::PathBuf,
    relay: Arc<SqliteRelay>,
    app: Router,
    state: Arc<AppState>,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let relay = Arc::new(SqliteRelay::open(&dir.path().join("relay")).unwrap());
    relay.add_territory("north").unwrap();
    relay.add_territory("south").unwrap();
    // A cheap hash: these tests are about the relay, not argon2's cost.
    let hash = auth::hash_password("password1").unwrap();
    for (user, role, territories) in [
        ("ann", Role::Rep, vec!["north"]),
        ("bob", Role::Rep, vec!["north"]),
        ("sam", Role::Rep, vec!["south"]),
        ("maria", Role::Manager, vec!["north", "south"]),
        ("olivia", Role::Office, vec![]),
    ] {
        let t: Vec<String> = territories.into_iter().map(String::from).collect();
        relay.add_user(user, &hash, role, &t).unwrap();
    }
    let state = AppState::new(relay.clone()).unwrap();
    Fixture {
        dir: dir.path().to_path_buf(),
        _dir: dir,
        app: app(state.clone()),
        relay,
        state,
    }
}

impl Fixture {
    async fn token(&self, user: &str) -> String {
        let body = serde_json::json!({ "username": user, "password": "password1" }).to_string();
        let (status, bytes) = self
            .call(
                Request::post("/v1/login")
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(Body::from(body))
                    .unwrap(),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        serde_json::from_slice::<serde_json::Value>(&bytes).unwrap()["token"]
            .as_str()
            .unwrap()
            .to_string()
    }

    async fn call(&self, request: Request<Body>) -> (StatusCode, Bytes) {
        let response = self.app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        (
            status,
            response.into_body().collect().await.unwrap().to_bytes(),
        )
    }

    async fn post_sync(&self, token: &str, body: Vec<u8>) -> (StatusCode, Bytes) {
        self.call(
            Request::post("/v1/sync")
                .header(header::AUTHORIZATION, format!("Bearer {token}"))
                .header(header::CONTENT_TYPE, protocol::CONTENT_TYPE)
                .body(Body::from(body))
                .unwrap(),
        )
        .await
    }

    fn device(&self, user: &str) -> Store {
        Store::open(self.dir.join(format!("{user}.db")), user).unwrap()
    }

    /// Runs the device's sync rounds through the router until done.
    async fn sync(&self, device: &mut Store, token: &str) -> SyncResponse {
        let mut last = SyncResponse::default();
        for _ in 0..100 {
            let (status, bytes) = self.post_sync(token, device.sync_request().unwrap()).await;
            assert_eq!(
                status,
                StatusCode::OK,
                "{}",
                String::from_utf8_lossy(&bytes)
            );
            device.apply_sync_response(&bytes).unwrap();
            last = protocol::decode(&bytes).unwrap();
            if !last.more && device.outbox_status().unwrap().pending == 0 {
                break;
            }
        }
        last
    }
}

fn message(bytes: &Bytes) -> String {
    let v: serde_json::Value = serde_json::from_slice(bytes).unwrap_or_default();
    format!(
        "{}: {}",
        v["error"].as_str().unwrap_or(""),
        v["message"].as_str().unwrap_or("")
    )
}

fn account(store: &mut Store, name: &str, territory: &str) -> String {
    store
        .create(
            Kind::Account,
            fields([("name", name), ("territory", territory)]),
        )
        .unwrap()
        .id
}

#[tokio::test]
async fn unauthenticated_and_bad_credentials_are_refused() {
    let fx = fixture();
    let (status, body) = fx.post_sync("", vec![]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{}", message(&body));
    let (status, _) = fx.post_sync("not-a-token", vec![]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let body = serde_json::json!({ "username": "ann", "password": "wrong" }).to_string();
    let (status, body) = fx
        .call(
            Request::post("/v1/login")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body))
                .unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(message(&body).contains("wrong username or password"));

    // Logout revokes the token.
    let token = fx.token("ann").await;
    let (status, _) = fx
        .call(
            Request::post("/v1/logout")
                .header(header::AUTHORIZATION, format!("Bearer {token}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = fx.post_sync(&token, vec![]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn malformed_envelopes_and_unknown_versions_get_400_with_a_message() {
    let fx = fixture();
    let token = fx.token("ann").await;
    let (status, body) = fx.post_sync(&token, b"\x00\x01garbage".to_vec()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        message(&body).starts_with("malformed: malformed envelope"),
        "{}",
        message(&body)
    );

    let future = SyncRequest {
        version: 7,
        device_id: "d".into(),
        cursor: Cursor::default(),
        push: vec![],
        max_bytes: 1000,
        projections: false,
    };
    let (status, body) = fx.post_sync(&token, protocol::encode(&future)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        message(&body),
        "unsupported_version: unsupported protocol version 7; this side speaks 1"
    );
    let (status, body) = fx
        .post_sync(
            &token,
            protocol::encode(&SyncRequest {
                version: PROTOCOL_VERSION,
                device_id: String::new(),
                ..future.clone()
            }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{}", message(&body));

    // Oversize body: refused before it is read whole, in JSON like every error.
    let (status, body) = fx
        .post_sync(&token, vec![0u8; fieldcrm_server::MAX_BODY_BYTES + 1])
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        message(&body),
        "too_large: the request body is larger than the relay accepts (64 MiB)"
    );
    // Sign-in without a JSON content type, a wrong method, an unknown path.
    let (status, body) = fx
        .call(
            Request::post("/v1/login")
                .body(Body::from(r#"{"username":"ann","password":"x"}"#))
                .unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(
        message(&body).starts_with("unsupported_media_type: ")
            && message(&body).contains("application/json"),
        "{}",
        message(&body)
    );
    let (status, body) = fx
        .call(Request::get("/v1/sync").body(Body::empty()).unwrap())
        .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(
        message(&body),
        "method_not_allowed: method not allowed here"
    );
    let (status, body) = fx
        .call(
            Request::get("/v1/nothing-here")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(message(&body), "not_found: no such endpoint");
    // A truncated envelope is described in words, not debug text.
    let mut cut = protocol::encode(&future);
    cut.truncate(cut.len() - 3);
    let (status, body) = fx.post_sync(&token, cut).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        !message(&body).contains("Io(") && !message(&body).contains("Semantic("),
        "{}",
        message(&body)
    );
    // The relay still serves, and is ready (its store answers).
    let (status, _) = fx
        .call(Request::get("/healthz").body(Body::empty()).unwrap())
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = fx
        .call(Request::get("/readyz").body(Body::empty()).unwrap())
        .await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"ready\n"[..]));
}

#[tokio::test]
async fn pushes_outside_the_territory_or_as_someone_else_are_rejected_per_change() {
    let fx = fixture();
    let sam_token = fx.token("sam").await;
    let mut sam = fx.device("sam");
    let ok = account(&mut sam, "Solent", "south");
    let outside = account(&mut sam, "Sneaky", "north");
    let response = fx.sync(&mut sam, &sam_token).await;
    assert_eq!(response.acks.len(), 1);
    let rejected = sam.outbox(0, 10, true).unwrap();
    assert_eq!(rejected.len(), 1, "the refused change stays in the outbox");
    assert_eq!(rejected[0].record_id, outside);
    let reason = rejected[0].rejected.clone().unwrap();
    assert!(
        reason.contains("outside yours") && reason.contains("north"),
        "{reason}"
    );
    assert_eq!(sam.outbox_status().unwrap().rejected, 1);
    assert!(fx.relay.with_records(|r| r.get(&outside)).is_err());
    assert!(fx.relay.with_records(|r| r.get(&ok)).is_ok());

    // Bob replays ann's change bytes: signed as ann, refused.
    let mut ann = fx.device("ann");
    let id = account(&mut ann, "Acme", "north");
    let ann_change = ann.outbox(0, 1, false).unwrap().remove(0);
    let bob_token = fx.token("bob").await;
    let forged = SyncRequest {
        version: PROTOCOL_VERSION,
        device_id: "bob-phone".into(),
        cursor: Cursor::default(),
        push: vec![RecordBytes {
            record_id: id.clone(),
            bytes: ann_change.bytes.clone(),
        }],
        max_bytes: 1 << 20,
        projections: false,
    };
    let (status, body) = fx.post_sync(&bob_token, protocol::encode(&forged)).await;
    assert_eq!(status, StatusCode::OK);
    let response: SyncResponse = protocol::decode(&body).unwrap();
    assert_eq!(response.rejected.len(), 1);
    assert!(
        response.rejected[0]
            .reason
            .contains("signed as user \"ann\""),
        "{}",
        response.rejected[0].reason
    );

    // Ann pushes with her actor; then a store for bob reusing ann's actor id is refused.
    let ann_token = fx.token("ann").await;
    fx.sync(&mut ann, &ann_token).await;
    let mut bob = fx.device("bob");
    fx.sync(&mut bob, &bob_token).await;
    // Forge: make bob's store write with ann's actor (a tampered device file).
    bob.sql()
        .execute(
            "UPDATE actors SET actor = (SELECT actor FROM actors LIMIT 1)",
            [],
        )
        .unwrap();
    let actor: Vec<u8> = ann
        .sql()
        .query_row("SELECT actor FROM actors", [], |r| r.get(0))
        .unwrap();
    bob.sql()
        .execute(
            "UPDATE actors SET actor = ?1 WHERE user_id = 'bob'",
            [actor],
        )
        .unwrap();
    drop(bob);
    let mut bob = fx.device("bob");
    bob.update(&id, fields([("industry", "Forgery")])).unwrap();
    fx.sync(&mut bob, &bob_token).await;
    let reason = bob.outbox(0, 10, true).unwrap().remove(0).rejected.unwrap();
    assert!(reason.contains("belongs to another user"), "{reason}");

    // Malformed change bytes inside a valid envelope: rejected, relay unchanged.
    let before = fx.relay.stats().unwrap().head;
    let junk = SyncRequest {
        push: vec![RecordBytes {
            record_id: id.clone(),
            bytes: b"junk".to_vec(),
        }],
        ..forged
    };
    let (_, body) = fx.post_sync(&bob_token, protocol::encode(&junk)).await;
    let response: SyncResponse = protocol::decode(&body).unwrap();
    assert!(
        response.rejected[0].reason.contains("malformed change"),
        "{}",
        response.rejected[0].reason
    );
    assert_eq!(fx.relay.stats().unwrap().head, before);
}

#[tokio::test]
async fn records_moving_between_territories_are_evicted_and_delivered() {
    let fx = fixture();
    let (ann_t, sam_t, maria_t) = (
        fx.token("ann").await,
        fx.token("sam").await,
        fx.token("maria").await,
    );
    let (mut ann, mut sam, mut maria) = (fx.device("ann"), fx.device("sam"), fx.device("maria"));
    let id = account(&mut ann, "Wanderer", "north");
    ann.update(&id, fields([("industry", "Travel")])).unwrap();
    fx.sync(&mut ann, &ann_t).await;
    fx.sync(&mut sam, &sam_t).await;
    fx.sync(&mut maria, &maria_t).await;
    assert!(sam.get(&id).is_err());

    // The manager moves the account south.
    maria.update(&id, fields([("territory", "south")])).unwrap();
    fx.sync(&mut maria, &maria_t).await;
    let to_ann = fx.sync(&mut ann, &ann_t).await;
    assert_eq!(to_ann.evict, vec![id.clone()]);
    assert!(ann.get(&id).is_err(), "ann's device evicted it");
    fx.sync(&mut sam, &sam_t).await;
    let moved = sam.get(&id).unwrap();
    assert_eq!(moved.text("territory"), Some("south"));
    assert_eq!(
        moved.text("industry"),
        Some("Travel"),
        "sam got the whole record, history included"
    );
    assert_eq!(sam.history(&id).unwrap().len(), 3);

    // Sam loses the south and gains the north: his device evicts and re-bootstraps.
    fx.relay.set_territories("sam", &["north".into()]).unwrap();
    let north = account(&mut maria, "Northern", "north");
    fx.sync(&mut maria, &maria_t).await;
    let (_, first) = fx.post_sync(&sam_t, sam.sync_request().unwrap()).await;
    sam.apply_sync_response(&first).unwrap();
    let first: SyncResponse = protocol::decode(&first).unwrap();
    assert_eq!(first.evict_territories, ["south"]);
    assert!(sam.get(&id).is_err(), "south records evicted");
    fx.sync(&mut sam, &sam_t).await;
    assert!(sam.get(&north).is_ok(), "north records delivered");
    // Told once: the next sync's cursor already describes the new view.
    let again = fx.sync(&mut sam, &sam_t).await;
    assert!(again.evict_territories.is_empty());
}

#[tokio::test]
async fn bootstrap_pages_by_bytes_and_resumes() {
    let fx = fixture();
    let ann_t = fx.token("ann").await;
    let mut ann = fx.device("ann");
    for i in 0..60 {
        account(&mut ann, &format!("Account {i:02}"), "north");
    }
    fx.sync(&mut ann, &ann_t).await;

    let bob_t = fx.token("bob").await;
    let mut bob = fx.device("bob");
    let mut request: SyncRequest = protocol::decode(&bob.sync_request().unwrap()).unwrap();
    request.max_bytes = 2_000;
    let mut rounds = 0;
    loop {
        let (status, body) = fx.post_sync(&bob_t, protocol::encode(&request)).await;
        assert_eq!(status, StatusCode::OK);
        let response: SyncResponse = protocol::decode(&body).unwrap();
        let page_bytes: usize = response.snapshots.iter().map(|s| s.bytes.len()).sum();
        assert!(page_bytes <= 2_000 || response.snapshots.len() == 1);
        bob.apply_sync_response(&body).unwrap();
        rounds += 1;
        if !response.more {
            break;
        }
        request.cursor = bob.cursor().unwrap();
    }
    assert!(rounds > 3, "paged into {rounds} rounds");
    assert_eq!(
        bob.list(&fieldcrm_core::ListQuery {
            limit: 100,
            ..Default::default()
        })
        .unwrap()
        .total,
        60
    );
    assert_eq!(bob.cursor().unwrap().bootstrap, None);
}

#[tokio::test]
async fn event_stream_announces_log_advances() {
    let fx = fixture();
    let token = fx.token("ann").await;
    let response = fx
        .app
        .clone()
        .oneshot(
            Request::get("/v1/events?after=0")
                .header(header::AUTHORIZATION, format!("Bearer {token}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let mut ann = fx.device("ann");
    account(&mut ann, "Live", "north");
    fx.sync(&mut ann, &token).await;
    let frame = tokio::time::timeout(std::time::Duration::from_secs(5), body.frame())
        .await
        .expect("an event within 5 s")
        .unwrap()
        .unwrap();
    let text = String::from_utf8(frame.into_data().unwrap().to_vec()).unwrap();
    assert!(
        text.contains("event: log") && text.contains("data: 1"),
        "{text:?}"
    );
    assert_eq!(fx.state.head.borrow().newest(), 1);

    let (status, metrics) = fx
        .call(Request::get("/metrics").body(Body::empty()).unwrap())
        .await;
    assert_eq!(status, StatusCode::OK);
    let metrics = String::from_utf8(metrics.to_vec()).unwrap();
    for name in [
        "fieldcrm_changes_accepted_total",
        "fieldcrm_sync_duration_seconds",
        "fieldcrm_connected_devices",
        "fieldcrm_http_requests_total",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }
    let _ = Value::Null;
}

#[tokio::test]
async fn one_bad_change_in_a_run_of_one_records_changes_is_rejected_alone() {
    let fx = fixture();
    let token = fx.token("ann").await;
    let mut ann = fx.device("ann");
    let id = account(&mut ann, "Mover", "north");
    ann.update(&id, fields([("industry", "Steel")])).unwrap();
    // Ann may not move a record out of her territories.
    ann.update(&id, fields([("territory", "south")])).unwrap();
    let response = fx.sync(&mut ann, &token).await;
    assert_eq!(
        response.acks.len(),
        2,
        "the create and the first edit are accepted"
    );
    assert_eq!(response.rejected.len(), 1);
    assert!(
        response.rejected[0].reason.contains("outside yours"),
        "{}",
        response.rejected[0].reason
    );
    let on_relay = fx.relay.with_records(|r| r.get(&id)).unwrap();
    assert_eq!(
        (on_relay.text("industry"), on_relay.text("territory")),
        (Some("Steel"), Some("north"))
    );
    assert_eq!(fx.relay.stats().unwrap().head, 2);
}

#[tokio::test]
async fn a_paged_bootstrap_walks_every_territory_of_the_user() {
    let fx = fixture();
    let (ann_t, sam_t) = (fx.token("ann").await, fx.token("sam").await);
    let (mut ann, mut sam) = (fx.device("ann"), fx.device("sam"));
    for i in 0..15 {
        account(&mut ann, &format!("North {i:02}"), "north");
        account(&mut sam, &format!("South {i:02}"), "south");
    }
    fx.sync(&mut ann, &ann_t).await;
    fx.sync(&mut sam, &sam_t).await;

    let maria_t = fx.token("maria").await;
    let mut maria = fx.device("maria");
    let mut rounds = 0;
    loop {
        let mut request: SyncRequest = protocol::decode(&maria.sync_request().unwrap()).unwrap();
        request.max_bytes = 1_500;
        let (status, body) = fx.post_sync(&maria_t, protocol::encode(&request)).await;
        assert_eq!(status, StatusCode::OK);
        maria.apply_sync_response(&body).unwrap();
        rounds += 1;
        if !protocol::decode::<SyncResponse>(&body).unwrap().more {
            break;
        }
    }
    assert!(rounds > 4, "{rounds} rounds");
    let all = maria
        .list(&fieldcrm_core::ListQuery {
            limit: 100,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(all.total, 30, "both territories arrived, nothing twice");
}

#[tokio::test]
async fn repeated_failed_sign_ins_slow_down_that_client_not_the_user() {
    let fx = fixture();
    let state = AppState::with_options(
        fx.relay.clone(),
        fieldcrm_server::ServeOptions {
            client_address_header: Some(header::HeaderName::from_static("x-forwarded-for")),
            ..Default::default()
        },
    )
    .unwrap();
    let router = app(state);
    let attempt = |from: &str, username: &str, password: &str| {
        Request::post("/v1/login")
            .header(header::CONTENT_TYPE, "application/json")
            .header("x-forwarded-for", format!("10.0.0.1, {from}"))
            .body(Body::from(
                serde_json::json!({ "username": username, "password": password }).to_string(),
            ))
            .unwrap()
    };
    let status = |response: axum::response::Response| response.status();
    for _ in 0..fieldcrm_server::login_throttle::FREE_PER_USER {
        let response = router
            .clone()
            .oneshot(attempt("203.0.113.9", "ann", "guess"))
            .await;
        assert_eq!(status(response.unwrap()), StatusCode::UNAUTHORIZED);
    }
    // That client waits now, even with the right password...
    let response = router
        .clone()
        .oneshot(attempt("203.0.113.9", "ann", "password1"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers()[header::RETRY_AFTER], "1");
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert!(
        message(&body).contains("too many failed sign-ins from this address"),
        "{}",
        message(&body)
    );
    // ...but Ann signs in from her own address (the last one the proxy
    // wrote; the first is whatever the client claimed).
    let response = router
        .clone()
        .oneshot(attempt("198.51.100.7", "ann", "password1"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    // Trying many names from one address is slowed down as well.
    for i in 0..fieldcrm_server::login_throttle::FREE_PER_CLIENT {
        let response = router
            .clone()
            .oneshot(attempt("192.0.2.50", &format!("user{i}"), "guess"))
            .await;
        assert_eq!(status(response.unwrap()), StatusCode::UNAUTHORIZED, "{i}");
    }
    let response = router
        .clone()
        .oneshot(attempt("192.0.2.50", "bob", "password1"))
        .await;
    assert_eq!(status(response.unwrap()), StatusCode::TOO_MANY_REQUESTS);
}

/// The blob endpoints as a client written from docs/protocol.md uses
/// them: status, chunked PUT with Upload-Offset, a wrong offset answered
/// with where to go on, ranged GET, safe headers, and nothing for a user
/// of another territory.
#[tokio::test]
async fn blobs_upload_in_chunks_and_download_by_range_with_safe_headers() {
    let fx = fixture();
    let ann = fx.token("ann").await;
    let sam = fx.token("sam").await;
    let mut device = fx.device("ann");
    let id = account(&mut device, "Acme", "north");
    let note = b"Delivered 12 cases; signed by J. Doe at the loading bay".to_vec();
    let sha = fieldcrm_core::sha256_hex(&note);
    device
        .add_attachment(&id, "note.txt", "text/plain", &note, None)
        .unwrap();
    fx.sync(&mut device, &ann).await;
    let url = format!("/v1/blobs/{sha}");
    let request = |method: &str, path: &str, token: &str| {
        Request::builder()
            .method(method)
            .uri(path)
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
    };
    let status = |token: &str| request("GET", &format!("{url}/status"), token);
    let (code, body) = fx.call(status(&ann).body(Body::empty()).unwrap()).await;
    assert_eq!(code, StatusCode::OK);
    let s: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (s["received"].as_u64(), s["complete"].as_bool()),
        (Some(0), Some(false))
    );
    assert_eq!(s["size"].as_u64(), Some(note.len() as u64));

    let put = |offset: usize, bytes: &[u8]| {
        request("PUT", &url, &ann)
            .header("upload-offset", offset.to_string())
            .body(Body::from(bytes.to_vec()))
            .unwrap()
    };
    let (code, _) = fx.call(put(0, &note[..20])).await;
    assert_eq!(code, StatusCode::OK);
    // A chunk out of place: 409, and the message says where to go on.
    let (code, body) = fx.call(put(30, &note[30..])).await;
    assert_eq!(code, StatusCode::CONFLICT);
    assert!(
        message(&body).starts_with("wrong_offset: "),
        "{}",
        message(&body)
    );
    assert!(
        message(&body).contains("holds 20 bytes"),
        "{}",
        message(&body)
    );
    let (code, body) = fx.call(put(20, &note[20..])).await;
    assert_eq!(code, StatusCode::OK, "{}", message(&body));
    let s: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(s["complete"].as_bool(), Some(true));

    // Downloads: whole, then a range, as an attachment never rendered.
    let response = fx
        .app
        .clone()
        .oneshot(request("GET", &url, &ann).body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let headers = response.headers().clone();
    assert_eq!(headers[header::CONTENT_TYPE], "text/plain");
    assert_eq!(headers[header::CONTENT_DISPOSITION], "attachment");
    assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    assert!(headers[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap()
        .contains("sandbox"));
    let whole = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(whole.as_ref(), &note[..]);
    let response = fx
        .app
        .clone()
        .oneshot(
            request("GET", &url, &ann)
                .header(header::RANGE, "bytes=10-")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        response.headers()[header::CONTENT_RANGE],
        format!("bytes 10-{}/{}", note.len() - 1, note.len())
    );
    let tail = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(tail.as_ref(), &note[10..]);

    // Sam (south) knows the hash: not found, whatever he asks.
    for req in [
        status(&sam).body(Body::empty()).unwrap(),
        request("GET", &url, &sam).body(Body::empty()).unwrap(),
        request("PUT", &url, &sam).body(Body::from("x")).unwrap(),
    ] {
        let (code, body) = fx.call(req).await;
        assert_eq!(code, StatusCode::NOT_FOUND, "{}", message(&body));
    }
    // Not a hash at all.
    let (code, body) = fx
        .call(
            request("GET", "/v1/blobs/..%2f..%2frelay.db", &ann)
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{}", message(&body));
    let (code, _) = fx
        .call(Request::get(url.as_str()).body(Body::empty()).unwrap())
        .await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
}
