//! The embedded SQLite relay under concurrent devices: pushes are written in
//! group commits while pulls read from other connections, and still every
//! change is acknowledged, logged once, and read once by every reader.

mod common;

use std::collections::HashSet;

use common::log_readers::{self, Reader};
use common::Relay;
use fieldcrm_core::{fields, HttpTransport, Kind, Store};
use fieldcrm_server::relay::sqlite::SqliteRelay;

const WRITERS: usize = 8;
const ROUNDS: usize = 30;

#[test]
fn concurrent_pushes_and_pulls_never_make_a_reader_skip_or_repeat() {
    let data = tempfile::tempdir().unwrap();
    log_readers::seed_users(&SqliteRelay::open(data.path()).unwrap(), WRITERS);
    let relay = Relay::start(data.path());
    let devices = tempfile::tempdir().unwrap();
    let urls = [relay.url.clone()];
    // One record first, so readers bootstrap now and read the log afterwards.
    let mut first = Store::open(devices.path().join("first.db"), "rep0").unwrap();
    first
        .create(
            Kind::Account,
            fields([("name", "First"), ("territory", "t0")]),
        )
        .unwrap();
    let (t, _) = HttpTransport::login(&relay.url, "rep0", common::PASSWORD).unwrap();
    first.sync(&t, &mut |_| {}).unwrap();
    let mut readers: Vec<Reader> = (0..2).map(|_| Reader::new(&urls, "olivia")).collect();
    for r in &mut readers {
        r.catch_up();
        assert_eq!(r.cursor.seq, 1);
    }

    log_readers::write_while_reading(devices.path(), &urls, WRITERS, ROUNDS, &mut readers);

    // The relay's own log, read beside the running relay (WAL allows it).
    let db = rusqlite::Connection::open_with_flags(
        data.path().join("relay.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let logged: HashSet<[u8; 32]> = db
        .prepare("SELECT hash FROM relay_log WHERE seq > 1")
        .unwrap()
        .query_map([], |r| r.get::<_, Vec<u8>>(0))
        .unwrap()
        .map(|h| h.unwrap().try_into().unwrap())
        .collect();
    assert_eq!(logged.len(), WRITERS * ROUNDS * 3);
    let seqs: (i64, i64) = db
        .query_row("SELECT min(seq), max(seq) FROM relay_log", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!(
        seqs,
        (1, 1 + (WRITERS * ROUNDS * 3) as i64),
        "no gaps in the log"
    );
    log_readers::assert_each_read_once(&readers, &logged);
}
