//! The office UI in a real browser: headless Chromium from Debian driven
//! through chromedriver (WebDriver, fantoccini), against the real relay
//! binary, with a rep's device (a core store) syncing over HTTP.
//!
//! Needs `chromium` and `chromium-driver`. Without them the test says it
//! was skipped and passes, unless FIELDCRM_BROWSER_TESTS=1 (set by
//! `.ci/run`), which makes a missing browser a failure. Screenshots of the
//! list, record and pipeline pages go to `test-output/browser/`.

mod common;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{seed_users, Device, Relay};
use fantoccini::{Client, ClientBuilder, Locator};
use fieldcrm_core::{fields, Value};

fn chromedriver() -> Option<PathBuf> {
    if let Ok(path) = std::env::var("FIELDCRM_CHROMEDRIVER") {
        return Some(path.into());
    }
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| PathBuf::from(dir).join("chromedriver"))
        .find(|p| p.is_file())
}

/// chromedriver on a free loopback port, killed on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    fn start(binary: &PathBuf) -> Driver {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(binary)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not listen");
            std::thread::sleep(Duration::from_millis(100));
        }
        Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn browser(driver: &Driver, profile: &std::path::Path) -> Client {
    let chromium =
        std::env::var("FIELDCRM_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": chromium,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--window-size=1400,1000",
                format!("--user-data-dir={}", profile.display()),
            ]
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a Chromium session")
}

fn output_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../test-output/browser");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn screenshot(client: &Client, name: &str) {
    let png = client.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "{name} is a PNG");
    std::fs::write(output_dir().join(format!("{name}.png")), png).unwrap();
}

/// Fills a form field by its id.
async fn fill(client: &Client, id: &str, value: &str) {
    let input = client.find(Locator::Id(id)).await.unwrap();
    input.clear().await.unwrap();
    input.send_keys(value).await.unwrap();
}

/// Fills in the sign-in form on the current page and sends it.
async fn submit_sign_in(client: &Client, user: &str) {
    fill(client, "username", user).await;
    fill(client, "password", common::PASSWORD).await;
    client
        .find(Locator::Css("form.login button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

async fn text_of(client: &Client, css: &str) -> String {
    client
        .find(Locator::Css(css))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

async fn value_of(client: &Client, css: &str) -> Option<String> {
    client
        .find(Locator::Css(css))
        .await
        .unwrap()
        .prop("value")
        .await
        .unwrap()
}

/// Runs blocking device work (HTTP sync) off the async runtime's thread.
fn device_work<R>(f: impl FnOnce() -> R) -> R {
    tokio::task::block_in_place(f)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn office_and_rep_work_on_the_same_records_in_a_real_browser() {
    let Some(driver_binary) = chromedriver() else {
        let required = std::env::var("FIELDCRM_BROWSER_TESTS").is_ok_and(|v| v == "1");
        assert!(!required, "FIELDCRM_BROWSER_TESTS=1 but chromedriver is not installed (apt-get install chromium chromium-driver)");
        eprintln!("skipped: chromedriver not found (install Debian's chromium and chromium-driver to run the browser test)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("relay");
    seed_users(&data);
    let relay = Relay::start(&data);
    let driver = Driver::start(&driver_binary);
    let client = browser(&driver, &dir.path().join("chromium-profile")).await;
    let base = relay.url.clone();

    // The office signs in.
    client.goto(&format!("{base}/accounts")).await.unwrap();
    assert!(client
        .current_url()
        .await
        .unwrap()
        .path()
        .ends_with("/login"));
    submit_sign_in(&client, "olivia").await;
    client
        .wait()
        .for_element(Locator::Css("table.records"))
        .await
        .unwrap();
    assert_eq!(client.current_url().await.unwrap().path(), "/accounts");

    // ...and creates an account.
    client.goto(&format!("{base}/accounts/new")).await.unwrap();
    fill(&client, "name", "Harbour Logistics").await;
    fill(&client, "phone", "+44 20 7946 0001").await;
    client
        .find(Locator::Id("territory"))
        .await
        .unwrap()
        .select_by_value("north")
        .await
        .unwrap();
    client
        .find(Locator::Css("form.record button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    client
        .wait()
        .for_element(Locator::Id("history-h"))
        .await
        .unwrap();
    let url = client.current_url().await.unwrap();
    let id = url.path().strip_prefix("/r/").unwrap().to_string();
    assert_eq!(text_of(&client, "main h1").await, "Harbour Logistics");

    // A rep's device syncs and has it; the rep edits it offline, then syncs.
    let mut ann = device_work(|| {
        let mut ann = Device::new(dir.path(), &relay, "ann");
        ann.sync();
        ann
    });
    assert_eq!(
        ann.store.get(&id).unwrap().text("name"),
        Some("Harbour Logistics")
    );
    ann.store
        .update(&id, fields([("industry", "Shipping")]))
        .unwrap();
    device_work(|| ann.sync());

    // The office reloads the record page: the change and its history.
    client.refresh().await.unwrap();
    assert_eq!(
        text_of(&client, "dd[data-field=industry]").await,
        "Shipping"
    );
    let history = text_of(&client, "table.history").await;
    assert!(
        history.contains("ann") && history.contains("Shipping"),
        "{history}"
    );
    assert!(
        history.contains("olivia") && history.contains("web"),
        "{history}"
    );

    // The rep and the manager change the phone at the same time, offline.
    let mut maria = device_work(|| {
        let mut maria = Device::new(dir.path(), &relay, "maria");
        maria.sync();
        maria
    });
    ann.store
        .update(&id, fields([("phone", "+44 111 111")]))
        .unwrap();
    maria
        .store
        .update(&id, fields([("phone", "+44 222 222")]))
        .unwrap();
    device_work(|| {
        ann.sync();
        maria.sync();
    });
    client.refresh().await.unwrap();
    let conflict = text_of(&client, "section.conflicts").await;
    assert!(
        conflict.contains("+44 111 111") && conflict.contains("+44 222 222"),
        "{conflict}"
    );
    screenshot(&client, "record-with-conflict").await;
    // The office keeps the manager's number.
    let choices = client.find_all(Locator::Css(".conflict li")).await.unwrap();
    let mut kept = false;
    for choice in choices {
        if choice.text().await.unwrap().contains("+44 222 222") {
            choice
                .find(Locator::Css("button"))
                .await
                .unwrap()
                .click()
                .await
                .unwrap();
            kept = true;
            break;
        }
    }
    assert!(kept);
    // The page reloads without the conflict once the choice is stored.
    let deadline = Instant::now() + Duration::from_secs(10);
    while client.find(Locator::Css("section.conflicts")).await.is_ok() {
        assert!(Instant::now() < deadline, "the conflict was not resolved");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    client
        .wait()
        .for_element(Locator::Id("history-h"))
        .await
        .unwrap();
    assert_eq!(
        text_of(&client, "dd[data-field=phone]").await,
        "+44 222 222"
    );
    device_work(|| ann.sync());
    assert!(ann.store.conflicts(&id).unwrap().is_empty());
    assert_eq!(
        ann.store.get(&id).unwrap().text("phone"),
        Some("+44 222 222")
    );
    screenshot(&client, "record").await;

    // A contact named like a script renders as text and runs nothing.
    let probe = "<script>alert(1)</script>";
    client.goto(&format!("{base}/contacts/new")).await.unwrap();
    // The account picker suggests as one types; choosing sets the
    // territory from the account.
    fill(&client, "account_id", "harb").await;
    let suggestion = client
        .wait()
        .for_element(Locator::Css("#account_id-suggestions li"))
        .await
        .unwrap();
    assert!(suggestion
        .text()
        .await
        .unwrap()
        .contains("Harbour Logistics"));
    suggestion.click().await.unwrap();
    assert_eq!(
        value_of(&client, "input[type=hidden][name=account_id]")
            .await
            .as_deref(),
        Some(id.as_str())
    );
    assert_eq!(
        value_of(&client, "#territory").await.as_deref(),
        Some("north")
    );
    fill(&client, "first_name", probe).await;
    fill(&client, "last_name", "Probe").await;
    fill(&client, "email", "probe@example.com").await;
    client
        .find(Locator::Css("form.record button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    client
        .wait()
        .for_element(Locator::Id("history-h"))
        .await
        .unwrap();
    client.goto(&format!("{base}/contacts")).await.unwrap();
    assert!(client.get_alert_text().await.is_err(), "no alert opened");
    let names = text_of(&client, "table.records").await;
    assert!(names.contains(&format!("{probe} Probe")), "{names}");
    assert!(
        names.contains("Harbour Logistics"),
        "the account by name: {names}"
    );
    screenshot(&client, "contacts-list").await;

    // A deal moves on the pipeline board; the rep's device gets the move.
    let deal = ann
        .store
        .create(
            fieldcrm_core::Kind::Deal,
            fields([
                ("account_id", Value::from(id.as_str())),
                ("name", Value::from("Harbour renewal")),
                ("stage", Value::from("proposal")),
                ("amount", Value::Int(4_200_000)),
                ("currency", Value::from("GBP")),
                ("territory", Value::from("north")),
            ]),
        )
        .unwrap();
    device_work(|| ann.sync());
    client.goto(&format!("{base}/pipeline")).await.unwrap();
    let card = format!("article.card[data-id='{}']", deal.id);
    client
        .find(Locator::Css(&format!("{card} select")))
        .await
        .unwrap()
        .select_by_value("negotiation")
        .await
        .unwrap();
    // The page's script submits the move when the stage changes.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let column = client
            .find(Locator::Css("section.stage[data-stage=negotiation]"))
            .await;
        if let Ok(column) = column {
            let text = column.text().await.unwrap_or_default();
            if text.contains("Harbour renewal") {
                assert!(text.contains("42,000.00 GBP"), "{text}");
                break;
            }
        }
        assert!(Instant::now() < deadline, "the deal did not move");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    screenshot(&client, "pipeline").await;
    device_work(|| ann.sync());
    assert_eq!(
        ann.store.get(&deal.id).unwrap().text("stage"),
        Some("negotiation")
    );

    client.goto(&format!("{base}/dashboard")).await.unwrap();
    screenshot(&client, "dashboard").await;

    // The open-redirect probe: a `next` whose tab the browser would drop
    // (`/<TAB>/host` is `//host`, another site) lands on the dashboard.
    client.goto(&format!("{base}/login")).await.unwrap();
    client
        .execute(
            "document.querySelector('input[name=next]').value = '/\\t/example.invalid/phish'",
            vec![],
        )
        .await
        .unwrap();
    submit_sign_in(&client, "olivia").await;
    client
        .wait()
        .for_element(Locator::Css("nav"))
        .await
        .unwrap();
    let landed = client.current_url().await.unwrap();
    assert_eq!(landed.host_str(), Some("127.0.0.1"), "{landed}");
    assert_eq!(landed.path(), "/dashboard");

    // At a phone's width no page scrolls sideways (wide tables scroll
    // inside their own box).
    // The page script tells the relay the browser's time zone; the settings
    // page says times are shown in it.
    let cookie = client
        .execute("return document.cookie", vec![])
        .await
        .unwrap();
    let zone = cookie
        .as_str()
        .unwrap()
        .split("; ")
        .find_map(|c| c.strip_prefix("fieldcrm_tz="))
        .expect("the time zone cookie")
        .to_string();
    client.goto(&format!("{base}/settings")).await.unwrap();
    let shown = client
        .find(Locator::Css("strong.zone"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(shown, zone);
    client.set_window_size(390, 844).await.unwrap();
    let record = format!("/r/{}", deal.id);
    let edit = format!("/r/{}/edit", deal.id);
    for path in [
        "/dashboard",
        "/dashboard/stages",
        "/accounts",
        "/contacts",
        "/deals",
        "/activities",
        record.as_str(),
        edit.as_str(),
        "/deals/new",
        "/pipeline",
        "/search?q=harbour",
        "/import",
        "/review",
        "/settings",
    ] {
        client.goto(&format!("{base}{path}")).await.unwrap();
        // The page's width, the window's, and the elements that stick out
        // (to say what to fix).
        let widths = client
            .execute(
                "const w = document.documentElement.clientWidth;
                 const out = [...document.querySelectorAll('body *')]
                   .filter(e => e.getBoundingClientRect().right > w + 1
                             && ![...e.children].some(c => c.getBoundingClientRect().right > w + 1)
                             && !(e.parentElement.closest('.scroll, .board') && getComputedStyle(e).position !== 'absolute'))
                   .slice(0, 5)
                   .map(e => e.tagName + '.' + e.className + ' ' + Math.round(e.getBoundingClientRect().right));
                 return [document.documentElement.scrollWidth, w, out.join(', ')];",
                vec![],
            )
            .await
            .unwrap();
        let (scroll, client_width) = (widths[0].as_u64().unwrap(), widths[1].as_u64().unwrap());
        assert!(
            client_width <= 400,
            "the window is phone-sized: {client_width}"
        );
        assert!(
            scroll <= client_width,
            "{path} scrolls sideways at {client_width} px: {scroll} px wide; sticking out: {}",
            widths[2]
        );
        if ["/dashboard", "/accounts", edit.as_str()].contains(&path) {
            let name = format!("phone{}", path.replace('/', "-"));
            screenshot(&client, &name[..name.len().min(24)]).await;
        }
    }
    client.close().await.unwrap();
}
