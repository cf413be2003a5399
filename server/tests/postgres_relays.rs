//! Several relay processes on one PostgreSQL: the log's cursor never skips
//! a change under concurrent writers, live push crosses processes, and a
//! device that alternates between relays loses and duplicates nothing.
//! Skipped (with a message) unless FIELDCRM_TEST_POSTGRES names a server.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::log_readers::{self, Reader};
use common::{PgSchema, Relay};
use fieldcrm_core::{fields, HttpTransport, Kind, Store};
use fieldcrm_server::relay::postgres::PgRelay;
use fieldcrm_server::relay::{RelayStore, Role};

const PASSWORD: &str = common::PASSWORD;
const WRITERS: usize = 8;
const ROUNDS: usize = 40;

fn seed(url: &str) -> PgRelay {
    let relay = PgRelay::open(url, 2).unwrap();
    log_readers::seed_users(&relay, WRITERS);
    relay
}

#[test]
fn concurrent_pushes_through_two_relays_never_make_a_reader_skip_or_repeat() {
    let Some(base) = common::postgres_url("the multi-relay PostgreSQL test") else {
        return;
    };
    let schema = PgSchema::new(&base);
    let store = seed(&schema.url());
    let (a, b) = (
        Relay::start_postgres(&schema.url()),
        Relay::start_postgres(&schema.url()),
    );
    let dir = tempfile::tempdir().unwrap();

    // One record first, so readers bootstrap now and read the log afterwards.
    let mut first = Store::open(dir.path().join("first.db"), "rep0").unwrap();
    first
        .create(
            Kind::Account,
            fields([("name", "First"), ("territory", "t0")]),
        )
        .unwrap();
    let (t, _) = HttpTransport::login(&a.url, "rep0", PASSWORD).unwrap();
    first.sync(&t, &mut |_| {}).unwrap();
    let start_head = store.head().unwrap();
    let urls = [a.url.clone(), b.url.clone()];
    let mut readers: Vec<Reader> = (0..2).map(|_| Reader::new(&urls, "olivia")).collect();
    for r in &mut readers {
        r.catch_up();
        assert_eq!(r.cursor.seq, start_head);
    }

    // Writers on both relays, alternating, while readers pull continuously.
    log_readers::write_while_reading(dir.path(), &urls, WRITERS, ROUNDS, &mut readers);

    // Every change in the log after the start, to every reader, exactly once.
    let mut client = postgres::Client::connect(&schema.url(), postgres::NoTls).unwrap();
    let logged: HashSet<[u8; 32]> = client
        .query(
            "SELECT hash FROM relay_log WHERE seq > $1",
            &[&(start_head as i64)],
        )
        .unwrap()
        .iter()
        .map(|r| r.get::<_, Vec<u8>>(0).try_into().unwrap())
        .collect();
    assert_eq!(logged.len(), WRITERS * ROUNDS * 3);
    log_readers::assert_each_read_once(&readers, &logged);

    // A device alternating between the relays ends with every record once.
    let mut office = Store::open(dir.path().join("office.db"), "olivia").unwrap();
    let transports = [
        HttpTransport::login(&a.url, "olivia", PASSWORD).unwrap().0,
        HttpTransport::login(&b.url, "olivia", PASSWORD).unwrap().0,
    ];
    for round in 0..4 {
        office.sync(&transports[round % 2], &mut |_| {}).unwrap();
    }
    assert_eq!(common::all_records(&office).len(), 1 + WRITERS * ROUNDS * 2);
    assert_eq!(
        store.stats().unwrap().records as usize,
        1 + WRITERS * ROUNDS * 2
    );
}

#[test]
fn a_push_through_one_relay_wakes_the_devices_that_may_see_it_on_the_other() {
    let Some(base) = common::postgres_url("the cross-relay push test") else {
        return;
    };
    let schema = PgSchema::new(&base);
    let store = seed(&schema.url());
    let (a, b) = (
        Relay::start_postgres(&schema.url()),
        Relay::start_postgres(&schema.url()),
    );
    let dir = tempfile::tempdir().unwrap();
    let head = store.head().unwrap();
    // A device listens on relay B...
    let (listener, _) = HttpTransport::login(&b.url, "rep1", PASSWORD).unwrap();
    let waiting = std::thread::spawn(move || {
        let started = Instant::now();
        let woke = listener
            .wait_for_change(head, Duration::from_secs(20))
            .unwrap();
        (woke, started.elapsed())
    });
    std::thread::sleep(Duration::from_millis(300));
    // ...and a change arrives through relay A.
    let mut writer = Store::open(dir.path().join("w.db"), "rep1").unwrap();
    writer
        .create(
            Kind::Account,
            fields([("name", "Pushed"), ("territory", "t1")]),
        )
        .unwrap();
    let (t, _) = HttpTransport::login(&a.url, "rep1", PASSWORD).unwrap();
    let pushed_at = Instant::now();
    writer.sync(&t, &mut |_| {}).unwrap();
    let (woke, _) = waiting.join().unwrap();
    assert!(woke, "the device on relay B was told about the change");
    let latency = pushed_at.elapsed();
    assert!(latency < Duration::from_secs(5), "woke after {latency:?}");
    // Relay B now hears relay A (until it did, what A appended was of
    // territories not known, which wakes everyone). A device of another
    // territory is not woken by the next change in t1.
    let head = store.head().unwrap();
    // (Its territory is one no other test writes to: relays of every schema
    // in the database share the notification channel.)
    let hash = fieldcrm_server::auth::hash_password(PASSWORD).unwrap();
    store.add_territory("quiet").unwrap();
    store
        .add_user("quinn", &hash, Role::Rep, &["quiet".to_string()])
        .unwrap();
    let (elsewhere, _) = HttpTransport::login(&b.url, "quinn", PASSWORD).unwrap();
    let elsewhere_waiting =
        std::thread::spawn(move || elsewhere.wait_for_change(head, Duration::from_secs(2)));
    std::thread::sleep(Duration::from_millis(300));
    writer
        .create(
            Kind::Account,
            fields([("name", "Pushed again"), ("territory", "t1")]),
        )
        .unwrap();
    writer.sync(&t, &mut |_| {}).unwrap();
    assert!(
        !elsewhere_waiting.join().unwrap().unwrap(),
        "a device in another territory was woken by a change in t1"
    );
    // It pulls from B and has the record.
    let mut reader = Store::open(dir.path().join("r.db"), "rep1").unwrap();
    let (tb, _) = HttpTransport::login(&b.url, "rep1", PASSWORD).unwrap();
    reader.sync(&tb, &mut |_| {}).unwrap();
    assert_eq!(common::all_records(&reader).len(), 2);
}

/// A store made before schema 4 (so also without the columns of 5 and 6)
/// kept no stage histories: opening it adds the columns and fills
/// each deal's from its document, so the stage analysis reads rows.
#[test]
fn an_upgraded_store_fills_each_deals_stage_history_from_its_document() {
    let Some(base) = common::postgres_url("the PostgreSQL upgrade test") else {
        return;
    };
    let schema = PgSchema::new(&base);
    let relay = seed(&schema.url());
    let user = relay.user("rep0").unwrap().unwrap().0;
    let account = fieldcrm_server::relay::office::edit_one(
        &relay,
        &user,
        fieldcrm_core::Edit::Create {
            kind: Kind::Account,
            fields: fields([
                ("name", "Acme"),
                ("territory", user.territories[0].as_str()),
            ]),
        },
    )
    .unwrap();
    let deal = fieldcrm_server::relay::office::edit_one(
        &relay,
        &user,
        fieldcrm_core::Edit::Create {
            kind: Kind::Deal,
            fields: fields([
                ("name", "Big"),
                ("stage", "lead"),
                ("account_id", account.id.as_str()),
                ("territory", user.territories[0].as_str()),
            ]),
        },
    )
    .unwrap();
    fieldcrm_server::relay::office::edit_one(
        &relay,
        &user,
        fieldcrm_core::Edit::Update {
            id: deal.id.clone(),
            fields: fields([("stage", "qualified")]),
        },
    )
    .unwrap();
    let flow = relay.stage_flow(&[]).unwrap();
    let mut sql = postgres::Client::connect(&schema.url(), postgres::NoTls).unwrap();
    let stored = |sql: &mut postgres::Client| -> Vec<String> {
        let history: Option<String> = sql
            .query_one(
                "SELECT stage_history FROM relay_records WHERE id = $1",
                &[&deal.id],
            )
            .unwrap()
            .get(0);
        fieldcrm_core::parse_stage_history(history.as_deref())
            .expect("a stage history")
            .into_iter()
            .map(|(_, stage)| stage)
            .collect()
    };
    assert_eq!(
        stored(&mut sql),
        ["lead", "qualified"],
        "written by the push"
    );
    sql.batch_execute(
        // What a schema-3 store lacks: the columns later schemas added.
        "ALTER TABLE relay_records DROP COLUMN stage_history;
         ALTER TABLE relay_actors DROP COLUMN device;
         ALTER TABLE relay_log DROP COLUMN received_at;
         UPDATE relay_meta SET value = '3' WHERE key = 'schema'",
    )
    .unwrap();
    drop(relay);
    let reopened = PgRelay::open(&schema.url(), 2).unwrap();
    let history: Option<String> = sql
        .query_one(
            "SELECT stage_history FROM relay_records WHERE id = $1",
            &[&deal.id],
        )
        .unwrap()
        .get(0);
    let stages: Vec<String> = fieldcrm_core::parse_stage_history(history.as_deref())
        .expect("filled in")
        .into_iter()
        .map(|(_, stage)| stage)
        .collect();
    assert_eq!(stages, ["lead", "qualified"]);
    assert_eq!(reopened.stage_flow(&[]).unwrap(), flow);
}

/// Waits until `relay` answers `/readyz` with `status`; how long it took.
fn until_ready_is(relay: &Relay, status: u16, within: Duration) -> Duration {
    let started = Instant::now();
    while common::status_of(relay, "/readyz") != status {
        assert!(
            started.elapsed() < within,
            "/readyz never answered {status}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    started.elapsed()
}

/// The database goes away and comes back 20 times while devices sync
/// through two relays: a sync in flight completes or fails with 503 (never
/// a 500), `/readyz` says "not ready" while the database is away and
/// "ready" soon after it is back (the relays reconnect by themselves: pool
/// and LISTEN), and every record made is on a fresh bootstrap afterwards.
#[test]
fn relays_ride_out_the_database_going_away() {
    use common::db_proxy::{self, DbProxy};
    let Some(base) = common::postgres_url("the database outage test") else {
        return;
    };
    const DEVICES: usize = 4;
    const OUTAGES: usize = 20;
    let schema = PgSchema::new(&base);
    let _store = seed(&schema.url());
    let proxy = DbProxy::start(&db_proxy::target(&schema.url()));
    let url = db_proxy::via(&schema.url(), &proxy);
    let (a, b) = (Relay::start_postgres(&url), Relay::start_postgres(&url));
    assert_eq!(common::status_of(&a, "/readyz"), 200);
    let dir = tempfile::tempdir().unwrap();
    let mut devices: Vec<(Store, HttpTransport)> = (0..DEVICES)
        .map(|i| {
            let user = format!("rep{i}");
            let relay = if i % 2 == 0 { &a } else { &b };
            let store = Store::open(dir.path().join(format!("{user}.db")), &user).unwrap();
            let (transport, _) = HttpTransport::login(&relay.url, &user, PASSWORD).unwrap();
            (store, transport)
        })
        .collect();
    let mut made = Vec::new();
    let (mut refused_cleanly, mut not_ready_for, mut back_after) =
        (0, Duration::ZERO, Duration::ZERO);
    for round in 0..OUTAGES {
        for (i, (store, _)) in devices.iter_mut().enumerate() {
            let name = format!("Round {round} device {i}");
            let territory = format!("t{i}");
            let record = store
                .create(
                    Kind::Account,
                    fields([("name", name.as_str()), ("territory", territory.as_str())]),
                )
                .unwrap();
            made.push(record.id);
        }
        let syncing: Vec<_> = devices
            .drain(..)
            .map(|(mut store, transport)| {
                std::thread::spawn(move || {
                    let outcome = store.sync(&transport, &mut |_| {});
                    (store, transport, outcome)
                })
            })
            .collect();
        // The database goes away while those syncs are on their way.
        std::thread::sleep(Duration::from_millis(10 * (round % 5) as u64));
        proxy.cut();
        if round % 5 == 0 {
            not_ready_for = not_ready_for.max(until_ready_is(&a, 503, Duration::from_secs(10)));
        }
        std::thread::sleep(Duration::from_millis(100));
        proxy.restore();
        for handle in syncing {
            let (store, transport, outcome) = handle.join().unwrap();
            match outcome {
                Ok(_) => {}
                Err(fieldcrm_core::Error::Transport {
                    status: Some(503), ..
                }) => refused_cleanly += 1,
                Err(other) => panic!("a sync during an outage failed badly: {other}"),
            }
            devices.push((store, transport));
        }
        back_after = back_after
            .max(until_ready_is(&a, 200, Duration::from_secs(20)))
            .max(until_ready_is(&b, 200, Duration::from_secs(20)));
    }
    // With the database staying, every device sends what waited.
    for (store, transport) in &mut devices {
        store.sync(transport, &mut |_| {}).unwrap();
        assert_eq!(store.outbox_status().unwrap().pending, 0);
    }
    eprintln!(
        "{OUTAGES} outages, {} records, {refused_cleanly} syncs answered 503; /readyz said so within {not_ready_for:?} and was ready again within {back_after:?}",
        made.len()
    );
    // Everything made is there for a fresh device, through either relay.
    let mut fresh = Store::open(dir.path().join("olivia.db"), "olivia").unwrap();
    let (t, _) = HttpTransport::login(&b.url, "olivia", PASSWORD).unwrap();
    fresh.sync(&t, &mut |_| {}).unwrap();
    let mut have: Vec<String> = common::all_records(&fresh)
        .into_iter()
        .map(|r| r.id)
        .collect();
    have.sort();
    made.sort();
    assert_eq!(have, made, "a record was lost or doubled");
    // LISTEN came back too: a push through A wakes a device listening on B.
    let head = fresh.sync(&t, &mut |_| {}).unwrap().cursor;
    let (listener, _) = HttpTransport::login(&b.url, "rep0", PASSWORD).unwrap();
    let waiting =
        std::thread::spawn(move || listener.wait_for_change(head, Duration::from_secs(20)));
    std::thread::sleep(Duration::from_millis(300));
    let (store, through_a) = &mut devices[0];
    store
        .create(
            Kind::Account,
            fields([("name", "After the outages"), ("territory", "t0")]),
        )
        .unwrap();
    store.sync(through_a, &mut |_| {}).unwrap();
    assert!(
        waiting.join().unwrap().unwrap(),
        "relay B heard relay A's push"
    );
}

/// Attachment files live in PostgreSQL: an upload started through one
/// relay continues through the other, and either serves the file.
#[test]
fn a_file_uploaded_half_through_each_relay_is_served_whole_by_both() {
    use fieldcrm_core::Transport;
    let Some(base) = common::postgres_url("the multi-relay blob test") else {
        return;
    };
    let schema = PgSchema::new(&base);
    let _store = seed(&schema.url());
    let (a, b) = (
        Relay::start_postgres(&schema.url()),
        Relay::start_postgres(&schema.url()),
    );
    let dir = tempfile::tempdir().unwrap();
    let mut rep = Store::open(dir.path().join("rep.db"), "rep0").unwrap();
    let id = rep
        .create(
            Kind::Account,
            fields([("name", "Acme"), ("territory", "t0")]),
        )
        .unwrap()
        .id;
    let mut photo = vec![
        0xFF, 0xD8, 0xFF, 0xE0, 0, 0x10, b'J', b'F', b'I', b'F', 0, 1,
    ];
    photo.extend((0..(5u32 << 19)).map(|i| (i % 251) as u8));
    let sha = fieldcrm_core::sha256_hex(&photo);
    rep.add_attachment(&id, "shelf.jpg", "image/jpeg", &photo, None)
        .unwrap();
    let (via_a, _) = HttpTransport::login(&a.url, "rep0", PASSWORD).unwrap();
    let (via_b, _) = HttpTransport::login(&b.url, "rep0", PASSWORD).unwrap();
    rep.sync(&via_a, &mut |_| {}).unwrap();
    let chunk = fieldcrm_core::UPLOAD_CHUNK;
    let first = via_a.put_blob_chunk(&sha, 0, &photo[..chunk]).unwrap();
    assert_eq!((first.received, first.complete), (chunk as u64, false));
    let rest = rep.upload_blobs(&via_b, &mut |_| {}).unwrap();
    assert_eq!(rest.bytes_sent, (photo.len() - chunk) as u64);
    for (n, url) in [&a.url, &b.url].into_iter().enumerate() {
        let mut office = Store::open(dir.path().join(format!("office{n}.db")), "olivia").unwrap();
        let (t, _) = HttpTransport::login(url, "olivia", PASSWORD).unwrap();
        office.sync(&t, &mut |_| {}).unwrap();
        assert_eq!(
            office.fetch_blob(&t, &sha, &mut |_| {}).unwrap(),
            photo,
            "via {url}"
        );
    }
}
