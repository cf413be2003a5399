//! One test suite for every relay store: each scenario runs against the
//! embedded SQLite store and against PostgreSQL (when
//! `FIELDCRM_TEST_POSTGRES` names a server; `.ci/run` sets it). Devices are
//! real core stores syncing through `relay::sync`, in-process.

mod common;

use std::sync::Arc;

use fieldcrm_core::protocol::{self, RecordBytes, SyncRequest};
use fieldcrm_core::{fields, Edit, Kind, ListQuery, Store, Value};
use fieldcrm_server::auth;
use fieldcrm_server::relay::postgres::PgRelay;
use fieldcrm_server::relay::sqlite::SqliteRelay;
use fieldcrm_server::relay::{self, office, RelayStore, Role, User};

/// A relay store and what keeps it alive.
struct Fixture {
    relay: Arc<dyn RelayStore>,
    dir: tempfile::TempDir,
    _schema: Option<common::PgSchema>,
}

fn seed(relay: &dyn RelayStore) {
    relay.add_territory("north").unwrap();
    relay.add_territory("south").unwrap();
    let hash = auth::hash_password("password1").unwrap();
    for (user, role, territories) in [
        ("ann", Role::Rep, vec!["north"]),
        ("bob", Role::Rep, vec!["north"]),
        ("sam", Role::Rep, vec!["south"]),
        ("olivia", Role::Office, vec![]),
    ] {
        let t: Vec<String> = territories.into_iter().map(String::from).collect();
        relay.add_user(user, &hash, role, &t).unwrap();
    }
}

fn sqlite() -> Option<Fixture> {
    let dir = tempfile::tempdir().unwrap();
    let relay = Arc::new(SqliteRelay::open(&dir.path().join("relay")).unwrap());
    seed(&*relay);
    Some(Fixture {
        relay,
        dir,
        _schema: None,
    })
}

fn postgres() -> Option<Fixture> {
    let base = common::postgres_url("this PostgreSQL store test")?;
    let schema = common::PgSchema::new(&base);
    let relay = Arc::new(PgRelay::open(&schema.url(), 4).unwrap());
    seed(&*relay);
    Some(Fixture {
        relay,
        dir: tempfile::tempdir().unwrap(),
        _schema: Some(schema),
    })
}

impl Fixture {
    fn user(&self, id: &str) -> User {
        self.relay.user(id).unwrap().unwrap().0
    }

    fn device(&self, user: &str) -> Store {
        Store::open(
            self.dir.path().join(format!("{user}-{}.db", rand_suffix())),
            user,
        )
        .unwrap()
    }

    /// Syncs a device to completion; `max_bytes` bounds each page.
    fn sync_with(&self, device: &mut Store, max_bytes: u64) -> usize {
        let user = self.user(device.user());
        for round in 1..=500 {
            let mut request: SyncRequest =
                protocol::decode(&device.sync_request().unwrap()).unwrap();
            request.max_bytes = max_bytes;
            let (response, _) = relay::sync(&*self.relay, &user, request).unwrap();
            device
                .apply_sync_response(&protocol::encode(&response))
                .unwrap();
            if !response.more && device.outbox_status().unwrap().pending == 0 {
                return round;
            }
        }
        panic!("sync did not finish");
    }

    fn sync(&self, device: &mut Store) -> usize {
        self.sync_with(device, 16 << 20)
    }
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::SeqCst)
}

fn ids(store: &Store) -> Vec<String> {
    let mut ids: Vec<String> = common::all_records(store)
        .into_iter()
        .map(|r| r.id)
        .collect();
    ids.sort();
    ids
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

// ----- scenarios --------------------------------------------------------

fn users_tokens_and_territories(fx: Fixture) {
    let relay = &*fx.relay;
    assert_eq!(relay.territories().unwrap(), ["north", "south"]);
    let users: Vec<String> = relay
        .list_users()
        .unwrap()
        .into_iter()
        .map(|u| u.id)
        .collect();
    assert_eq!(users, ["ann", "bob", "olivia", "sam"]);
    let err = relay
        .add_user("zed", "hash", Role::Rep, &["east".into()])
        .unwrap_err();
    assert!(
        err.to_string().contains("unknown territory \"east\""),
        "{err}"
    );
    assert!(
        relay.add_user("ann", "hash", Role::Rep, &[]).is_err(),
        "duplicate"
    );
    assert!(relay.add_territory("").is_err());

    let (token, hash) = auth::new_token();
    relay.add_token("ann", &hash).unwrap();
    assert_eq!(
        relay
            .user_by_token(&auth::token_hash(&token))
            .unwrap()
            .unwrap()
            .id,
        "ann"
    );
    let (_, second) = auth::new_token();
    relay.add_token("ann", &second).unwrap();
    assert!(relay.revoke_token(&hash).unwrap());
    assert!(relay.user_by_token(&hash).unwrap().is_none());
    assert!(
        relay.user_by_token(&second).unwrap().is_some(),
        "only that session ended"
    );
    assert_eq!(relay.revoke_tokens("ann").unwrap(), 1);

    relay.set_territories("ann", &["south".into()]).unwrap();
    assert_eq!(fx.user("ann").territories, ["south"]);
    assert!(relay.set_territories("nobody", &[]).is_err());
    assert!(relay.remove_user("bob").unwrap());
    assert!(!relay.remove_user("bob").unwrap());
}

fn changes_reach_the_right_devices_once(fx: Fixture) {
    let (mut ann, mut bob, mut sam) = (fx.device("ann"), fx.device("bob"), fx.device("sam"));
    let north = account(&mut ann, "Acme", "north");
    ann.update(&north, fields([("phone", "+44 1")])).unwrap();
    let south = account(&mut sam, "Solent", "south");
    fx.sync(&mut ann);
    fx.sync(&mut sam);
    fx.sync(&mut bob);
    assert_eq!(ids(&bob), vec![north.clone()]);
    assert_eq!(bob.get(&north).unwrap(), ann.get(&north).unwrap());
    fx.sync(&mut sam);
    assert_eq!(ids(&sam), vec![south.clone()]);
    let stats = fx.relay.stats().unwrap();
    assert_eq!((stats.records, stats.log_entries), (2, 3));
    assert_eq!(fx.relay.head().unwrap(), stats.head);

    // Sending the same changes again acknowledges them and appends nothing.
    let again: Vec<RecordBytes> = ann
        .changes_since(&north, &[])
        .unwrap()
        .into_iter()
        .map(|bytes| RecordBytes {
            record_id: north.clone(),
            bytes,
        })
        .collect();
    let out = fx
        .relay
        .push(&fx.user("ann"), "other-device", again)
        .unwrap();
    assert_eq!(
        (out.acks.len(), out.appended, out.rejected.len()),
        (2, 0, 0)
    );
    assert_eq!(fx.relay.stats().unwrap().log_entries, 3);
}

fn bad_pushes_are_refused_one_by_one(fx: Fixture) {
    let mut ann = fx.device("ann");
    let mut sam = fx.device("sam");
    let good = account(&mut ann, "Acme", "north");
    let theirs = account(&mut sam, "Sud", "south");
    let changes = |store: &Store, id: &str| -> Vec<RecordBytes> {
        store
            .changes_since(id, &[])
            .unwrap()
            .into_iter()
            .map(|bytes| RecordBytes {
                record_id: id.to_string(),
                bytes,
            })
            .collect()
    };
    let mut push = changes(&ann, &good);
    push.push(RecordBytes {
        record_id: "junk".into(),
        bytes: vec![1, 2, 3],
    });
    // Sam's change pushed by ann: signed by someone else.
    push.extend(changes(&sam, &theirs));
    // Ann's own change for a record in a territory she does not have.
    let outside = account(&mut ann, "Elsewhere", "south");
    push.extend(changes(&ann, &outside));
    let out = fx.relay.push(&fx.user("ann"), "dev-a", push).unwrap();
    assert_eq!(out.acks.len(), 1);
    assert_eq!(out.appended, 1);
    let reasons: Vec<&str> = out.rejected.iter().map(|r| r.reason.as_str()).collect();
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    assert!(
        reasons.iter().any(|r| r.contains("malformed change")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("signed as user \"sam\"")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("outside yours")),
        "{reasons:?}"
    );
    assert_eq!(
        fx.relay.stats().unwrap().records,
        1,
        "nothing refused was stored"
    );

    // An actor is bound to the first user who pushed with it.
    let bob = fx.user("bob");
    let stolen = changes(&ann, &good);
    let out = fx.relay.push(&bob, "dev-b", stolen).unwrap();
    assert_eq!(out.rejected.len(), 1);
}

fn bootstrap_pages_and_skips_a_devices_own_records(fx: Fixture) {
    let mut ann = fx.device("ann");
    let mut made = Vec::new();
    for i in 0..60 {
        made.push(account(&mut ann, &format!("Account {i:02}"), "north"));
    }
    fx.sync(&mut ann);
    let mut sam = fx.device("sam");
    for i in 0..5 {
        account(&mut sam, &format!("South {i}"), "south");
    }
    fx.sync(&mut sam);
    // A fresh device pages through in small pages and gets each record once.
    let mut bob = fx.device("bob");
    let rounds = fx.sync_with(&mut bob, 2_000);
    assert!(rounds > 5, "small pages: {rounds} rounds");
    made.sort();
    assert_eq!(ids(&bob), made);
    // The office sees both territories.
    let mut olivia = fx.device("olivia");
    fx.sync_with(&mut olivia, 3_000);
    assert_eq!(ids(&olivia).len(), 65);
}

fn moving_a_record_evicts_it_and_hands_it_over(fx: Fixture) {
    let (mut ann, mut bob, mut sam) = (fx.device("ann"), fx.device("bob"), fx.device("sam"));
    let id = account(&mut ann, "Mover", "north");
    ann.update(&id, fields([("phone", "+44 1")])).unwrap();
    fx.sync(&mut ann);
    fx.sync(&mut bob);
    fx.sync(&mut sam);
    assert!(sam.get(&id).is_err());
    // The office moves it south.
    let mut olivia = fx.device("olivia");
    fx.sync(&mut olivia);
    olivia
        .update(&id, fields([("territory", "south")]))
        .unwrap();
    fx.sync(&mut olivia);
    fx.sync(&mut bob);
    assert!(bob.get(&id).is_err(), "evicted from the north");
    fx.sync(&mut sam);
    let record = sam.get(&id).unwrap();
    assert_eq!(
        record.text("phone"),
        Some("+44 1"),
        "with its whole history"
    );
    assert_eq!(sam.history(&id).unwrap().len(), 3);
}

fn office_reads_and_edits_follow_territories(fx: Fixture) {
    let relay = &*fx.relay;
    let (ann, sam, olivia) = (fx.user("ann"), fx.user("sam"), fx.user("olivia"));
    let created = office::edit(
        relay,
        &olivia,
        vec![
            Edit::Create {
                kind: Kind::Account,
                fields: fields([("name", "Acme North"), ("territory", "north")]),
            },
            Edit::Create {
                kind: Kind::Account,
                fields: fields([("name", "Acme South"), ("territory", "south")]),
            },
            Edit::Create {
                kind: Kind::Account,
                fields: fields([("name", "No territory")]),
            },
        ],
    )
    .unwrap();
    match &created[2] {
        Err(relay::EditRefusal::Refused(why)) => assert!(why.contains("territory"), "{why}"),
        other => panic!("a record without a territory was not refused: {other:?}"),
    }
    let north = created[0].as_ref().unwrap().id.clone();
    let deal = office::edit_one(
        relay,
        &ann,
        Edit::Create {
            kind: Kind::Deal,
            fields: fields([
                ("account_id", Value::from(north.as_str())),
                ("name", Value::from("Big")),
                ("stage", Value::from("lead")),
                ("amount", Value::Int(5_000)),
                ("currency", Value::from("EUR")),
                ("territory", Value::from("north")),
            ]),
        },
    )
    .unwrap();
    let err = office::edit_one(
        relay,
        &ann,
        Edit::Create {
            kind: Kind::Contact,
            fields: fields([
                ("account_id", "no-such-account"),
                ("first_name", "A"),
                ("last_name", "B"),
                ("territory", "north"),
            ]),
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("no-such-account"), "{err}");

    let accounts = |user: &User| office::list(relay, user, ListQuery::kind(Kind::Account)).unwrap();
    assert_eq!(accounts(&olivia).total, 2);
    assert_eq!(accounts(&sam).records[0].text("name"), Some("Acme South"));
    let hits = office::search(relay, &sam, "acme", None, 10).unwrap();
    assert_eq!(hits.len(), 1);
    assert_eq!(
        office::search(relay, &olivia, "acm nor", None, 10)
            .unwrap()
            .len(),
        1
    );
    assert!(
        office::record(relay, &sam, &north).is_err(),
        "outside sam's view"
    );

    // An edit is the editor's change, shown with the web device.
    office::edit_one(
        relay,
        &olivia,
        Edit::Update {
            id: north.clone(),
            fields: fields([("phone", "+44 2")]),
        },
    )
    .unwrap();
    let detail = office::record(relay, &olivia, &north).unwrap();
    assert_eq!(detail.record.text("phone"), Some("+44 2"));
    let last = detail.history.last().unwrap();
    assert_eq!(last.user, "olivia");
    assert_eq!(detail.devices[&last.change], office::WEB_DEVICE);
    let err = office::edit_one(relay, &sam, Edit::Delete { id: north.clone() }).unwrap_err();
    assert!(matches!(err, relay::RelayError::NotFound(_)), "{err}");

    // Summaries, now and before the deal existed.
    let lead = |s: Vec<fieldcrm_core::StageSummary>| {
        let e = s.into_iter().find(|e| e.stage == "lead").unwrap();
        (e.count, e.amounts.get("EUR").copied().unwrap_or(0))
    };
    assert_eq!(
        lead(office::pipeline_summary(relay, &olivia, None, None).unwrap()),
        (1, 5_000)
    );
    assert_eq!(
        lead(office::pipeline_summary(relay, &sam, None, None).unwrap()),
        (0, 0)
    );
    let before = deal.created_at - 1;
    assert_eq!(
        lead(office::pipeline_summary(relay, &olivia, None, Some(before)).unwrap()),
        (0, 0)
    );
    assert_eq!(
        lead(office::pipeline_summary(relay, &olivia, None, Some(deal.created_at + 1)).unwrap()),
        (1, 5_000)
    );
    let counts = office::owner_counts(relay, &olivia).unwrap();
    assert_eq!(
        counts
            .iter()
            .map(|c| (c.owner.as_str(), c.accounts, c.deals))
            .collect::<Vec<_>>(),
        [("ann", 0, 1), ("olivia", 2, 0)]
    );

    // A device receives office edits by sync.
    let mut device = fx.device("ann");
    fx.sync(&mut device);
    assert_eq!(device.get(&north).unwrap().text("phone"), Some("+44 2"));
}

macro_rules! store_suite {
    ($store:ident: $($scenario:ident),* $(,)?) => {
        mod $store {
            $(
                #[test]
                fn $scenario() {
                    if let Some(fx) = super::$store() {
                        super::$scenario(fx);
                    }
                }
            )*
        }
    };
}

store_suite!(sqlite:
    users_tokens_and_territories,
    changes_reach_the_right_devices_once,
    bad_pushes_are_refused_one_by_one,
    bootstrap_pages_and_skips_a_devices_own_records,
    moving_a_record_evicts_it_and_hands_it_over,
    office_reads_and_edits_follow_territories,
);
store_suite!(postgres:
    users_tokens_and_territories,
    changes_reach_the_right_devices_once,
    bad_pushes_are_refused_one_by_one,
    bootstrap_pages_and_skips_a_devices_own_records,
    moving_a_record_evicts_it_and_hands_it_over,
    office_reads_and_edits_follow_territories,
);
