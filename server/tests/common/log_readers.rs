//! Concurrent writers and log readers over real relays: every reader must
//! get every change exactly once, whatever order commits land in.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use fieldcrm_core::protocol::{self, Cursor, SyncRequest, SyncResponse, PROTOCOL_VERSION};
use fieldcrm_core::{fields, HttpTransport, Kind, ParsedChange, Store, Transport};

use fieldcrm_server::auth;
use fieldcrm_server::relay::{RelayStore, Role};

use super::PASSWORD;

/// Users for [`write_while_reading`]: `rep{i}` in territory `t{i}` for each
/// writer, and `olivia` (office, sees everything) for the readers.
pub fn seed_users(relay: &dyn RelayStore, writers: usize) {
    let hash = auth::hash_password(PASSWORD).unwrap();
    for i in 0..writers {
        let t = format!("t{i}");
        relay.add_territory(&t).unwrap();
        relay
            .add_user(&format!("rep{i}"), &hash, Role::Rep, &[t])
            .unwrap();
    }
    relay.add_user("olivia", &hash, Role::Office, &[]).unwrap();
}

/// Reads the log with the raw protocol and remembers every change hash it
/// is sent, so duplicates and gaps are visible.
pub struct Reader {
    transports: Vec<HttpTransport>,
    pub cursor: Cursor,
    pub seen: HashMap<[u8; 32], usize>,
    round: usize,
}

impl Reader {
    /// A reader signed in as `user` (who must see every territory) on each of `urls`.
    pub fn new(urls: &[String], user: &str) -> Reader {
        let transports = urls
            .iter()
            .map(|u| HttpTransport::login(u, user, PASSWORD).unwrap().0)
            .collect();
        Reader {
            transports,
            cursor: Cursor::default(),
            seen: HashMap::new(),
            round: 0,
        }
    }

    /// One pull, from the next relay in turn; `true` while there is more.
    pub fn pull(&mut self) -> bool {
        let transport = &self.transports[self.round % self.transports.len()];
        self.round += 1;
        let request = SyncRequest {
            version: PROTOCOL_VERSION,
            device_id: format!("reader-{:p}", self),
            cursor: self.cursor.clone(),
            push: vec![],
            max_bytes: 4_000,
            projections: true,
        };
        let bytes = transport.exchange(&protocol::encode(&request)).unwrap();
        let response: SyncResponse = protocol::decode(&bytes).unwrap();
        for change in &response.changes {
            let hash = ParsedChange::parse(&change.record_id, &change.bytes)
                .unwrap()
                .hash();
            *self.seen.entry(hash).or_default() += 1;
        }
        self.cursor = response.cursor;
        response.more
    }

    /// Pulls until the reader has everything.
    pub fn catch_up(&mut self) {
        while self.pull() {}
    }
}

/// Users `rep{i}` (territory `t{i}`) each run a device that makes `rounds`
/// rounds of two creates and one update, syncing each round with the next of
/// `urls`, all at once, while `readers` pull continuously. Returns when every
/// writer is done and every reader has caught up.
pub fn write_while_reading(
    dir: &std::path::Path,
    urls: &[String],
    writers: usize,
    rounds: usize,
    readers: &mut [Reader],
) {
    let threads: Vec<_> = (0..writers)
        .map(|i| {
            let (urls, path) = (urls.to_vec(), dir.join(format!("w{i}.db")));
            std::thread::spawn(move || {
                let user = format!("rep{i}");
                let mut device = Store::open(path, &user).unwrap();
                let transports: Vec<HttpTransport> = urls
                    .iter()
                    .map(|u| HttpTransport::login(u, &user, PASSWORD).unwrap().0)
                    .collect();
                let territory = format!("t{i}");
                for round in 0..rounds {
                    let x = device
                        .create(
                            Kind::Account,
                            fields([
                                ("name", format!("W{i} R{round} x")),
                                ("territory", territory.clone()),
                            ]),
                        )
                        .unwrap();
                    device
                        .create(
                            Kind::Account,
                            fields([
                                ("name", format!("W{i} R{round} y")),
                                ("territory", territory.clone()),
                            ]),
                        )
                        .unwrap();
                    device
                        .update(
                            &x.id,
                            fields([("phone", format!("+44 20 7946 {round:04}"))]),
                        )
                        .unwrap();
                    let synced = device
                        .sync(&transports[round % transports.len()], &mut |_| {})
                        .unwrap();
                    assert_eq!(synced.outbox_pending, 0, "writer {i} round {round}");
                }
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !threads.iter().all(|w| w.is_finished()) {
        for r in readers.iter_mut() {
            r.pull();
        }
        assert!(Instant::now() < deadline, "writers did not finish");
    }
    for w in threads {
        w.join().expect("a writer failed");
    }
    for r in readers.iter_mut() {
        r.catch_up();
    }
}

/// Asserts that every reader got each of `logged` once and nothing else.
pub fn assert_each_read_once(readers: &[Reader], logged: &std::collections::HashSet<[u8; 32]>) {
    for (n, r) in readers.iter().enumerate() {
        let repeated = r.seen.values().filter(|count| **count > 1).count();
        assert_eq!(repeated, 0, "reader {n} got {repeated} change(s) twice");
        let missed = logged.iter().filter(|h| !r.seen.contains_key(*h)).count();
        assert_eq!(missed, 0, "reader {n} skipped {missed} change(s)");
        assert_eq!(
            r.seen.len(),
            logged.len(),
            "reader {n} got changes not logged"
        );
    }
}
