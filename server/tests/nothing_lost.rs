//! Issue 14's three stories, told as a user meets them: devices syncing
//! over HTTP with the real relay binary, an admin using its command line —
//! on the embedded SQLite store and on PostgreSQL (when
//! `FIELDCRM_TEST_POSTGRES` names a server).
//!
//! 1. A refused change no longer forks the record: the device ends equal
//!    to the relay, later edits kept, the refused one listed and discarded.
//! 2. An edit made before a revocation waits for review; accepted, it is
//!    the rep's change, and only then does the device let the record go.
//! 3. The territory given back arrives complete.

mod common;

use std::ffi::OsStr;

use common::{Device, Relay};
use fieldcrm_core::{fields, Kind, Value};

fn story(store: &[&OsStr], relay: &Relay, dir: &std::path::Path) {
    let admin = |args: &[&str]| common::admin_on(store, args);
    admin(&["territory", "add", "north"]);
    admin(&["user", "add", "ann", "--territories", "north"]);
    admin(&["user", "add", "olivia", "--role", "office"]);
    let mut ann = Device::new(dir, relay, "ann");
    let mut olivia = Device::new(dir, relay, "olivia");

    // 1. A refused change among good ones.
    let acme = ann
        .store
        .create(
            Kind::Account,
            fields([("name", "Acme"), ("territory", "north")]),
        )
        .unwrap()
        .id;
    ann.sync();
    ann.store
        .update(&acme, fields([("owner", "nobody-here")]))
        .unwrap();
    ann.store
        .update(&acme, fields([("phone", "+44 113 496 0000")]))
        .unwrap();
    let round = ann.sync();
    assert_eq!((round.total.rejected, round.total.rebased), (1, 1));
    olivia.sync();
    assert_eq!(
        ann.store.get(&acme).unwrap(),
        olivia.store.get(&acme).unwrap()
    );
    assert_eq!(
        ann.store.get(&acme).unwrap().text("phone"),
        Some("+44 113 496 0000")
    );
    let refused = ann.store.refused_changes().unwrap();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(
        refused[0].reason.contains("\"nobody-here\" (no such user)"),
        "{}",
        refused[0].reason
    );
    ann.store.discard_refused(refused[0].id).unwrap();
    let status = ann.store.outbox_status().unwrap();
    assert_eq!((status.pending, status.held, status.rejected), (0, 0, 0));

    // 2. Offline edits, then the north is taken away.
    let birch = ann
        .store
        .create(
            Kind::Account,
            fields([("name", "Birch"), ("territory", "north")]),
        )
        .unwrap()
        .id;
    ann.sync();
    ann.store
        .update(&birch, fields([("industry", "Timber")]))
        .unwrap();
    admin(&["user", "set-territories", "ann"]);
    let round = ann.sync();
    assert_eq!(round.total.held, 1);
    assert!(
        ann.store.get(&acme).is_err(),
        "nothing waits for acme: evicted"
    );
    assert_eq!(
        ann.store.get(&birch).unwrap().text("industry"),
        Some("Timber"),
        "kept while its edit waits"
    );
    let listed = admin(&["review", "list", "--as", "olivia"]);
    assert!(
        listed.contains(&birch) && listed.contains("industry: null -> \"Timber\""),
        "{listed}"
    );
    let out = admin(&["review", "accept", &birch, "--as", "olivia"]);
    assert!(out.contains("accepted"), "{out}");
    ann.sync();
    assert!(ann.store.get(&birch).is_err(), "let go once accepted");
    assert_eq!(ann.store.outbox_status().unwrap().held, 0);
    olivia.sync();
    assert_eq!(
        olivia.store.get(&birch).unwrap().text("industry"),
        Some("Timber")
    );
    let history = olivia.store.history(&birch).unwrap();
    assert_eq!(history.last().unwrap().user, "ann");

    // 3. The north given back: everything returns, history included.
    admin(&["user", "set-territories", "ann", "north"]);
    ann.sync();
    for id in [&acme, &birch] {
        assert_eq!(
            ann.store.get(id).unwrap(),
            olivia.store.get(id).unwrap(),
            "{id}"
        );
        assert_eq!(
            ann.store.history(id).unwrap(),
            olivia.store.history(id).unwrap()
        );
    }
    assert_eq!(
        ann.store.get(&birch).unwrap().get("industry"),
        Some(&Value::from("Timber"))
    );
}

#[test]
fn nothing_a_rep_did_is_lost_on_the_sqlite_relay() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("relay");
    std::fs::create_dir_all(&data).unwrap();
    let store = ["--data".as_ref(), data.as_os_str()];
    common::admin_on(&store, &["territory", "list"]);
    let relay = Relay::start(&data);
    story(&store, &relay, dir.path());
}

#[test]
fn nothing_a_rep_did_is_lost_on_the_postgres_relay() {
    let Some(base) = common::postgres_url("the PostgreSQL nothing-lost scenario") else {
        return;
    };
    let schema = common::PgSchema::new(&base);
    let url = schema.url();
    let store = ["--database".as_ref(), url.as_ref()];
    common::admin_on(&store, &["territory", "list"]);
    let relay = Relay::start_postgres(&url);
    let dir = tempfile::tempdir().unwrap();
    story(&store, &relay, dir.path());
}
