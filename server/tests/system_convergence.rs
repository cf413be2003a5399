//! Property, whole system: three devices (two reps and the office) and the
//! relay; random local edits, office edits made in the web UI's way,
//! syncs in random order, responses lost on the way back (the relay kept
//! the push, the device never heard), and relay restarts. At the end every
//! device syncs until it is up to date, and every device and the relay
//! hold identical documents, conflicts and query projections.

use std::path::Path;
use std::sync::Arc;

use fieldcrm_core::protocol::{self, SyncRequest};
use fieldcrm_core::{fields, Edit, Error, Kind, ListQuery, Store, Value};
use fieldcrm_server::auth;
use fieldcrm_server::relay::sqlite::SqliteRelay;
use fieldcrm_server::relay::{self, office, RelayStore, Role, User};
use proptest::prelude::*;

const DEVICES: [&str; 3] = ["ann", "bob", "olivia"];

#[derive(Debug, Clone)]
enum Op {
    Create {
        device: usize,
        name: u8,
    },
    Update {
        device: usize,
        pick: usize,
        field: u8,
        value: u8,
    },
    Delete {
        device: usize,
        pick: usize,
    },
    Restore {
        device: usize,
        pick: usize,
    },
    /// An edit from the office UI (drafted by the relay as olivia).
    Office {
        pick: usize,
        value: u8,
    },
    /// One sync round; the response may be lost; pages may be small.
    Sync {
        device: usize,
        lose_response: bool,
        small_pages: bool,
    },
    RestartRelay,
}

fn op() -> impl Strategy<Value = Op> {
    let d = 0..DEVICES.len();
    prop_oneof![
        2 => (d.clone(), any::<u8>()).prop_map(|(device, name)| Op::Create { device, name }),
        5 => (d.clone(), any::<usize>(), 0..3u8, any::<u8>())
            .prop_map(|(device, pick, field, value)| Op::Update { device, pick, field, value }),
        1 => (d.clone(), any::<usize>()).prop_map(|(device, pick)| Op::Delete { device, pick }),
        1 => (d.clone(), any::<usize>()).prop_map(|(device, pick)| Op::Restore { device, pick }),
        2 => (any::<usize>(), any::<u8>()).prop_map(|(pick, value)| Op::Office { pick, value }),
        5 => (d, any::<bool>(), any::<bool>()).prop_map(|(device, lose_response, small_pages)| {
            Op::Sync { device, lose_response, small_pages }
        }),
        1 => Just(Op::RestartRelay),
    ]
}

fn open_relay(dir: &Path) -> Arc<SqliteRelay> {
    Arc::new(SqliteRelay::open(dir).unwrap())
}

fn user(relay: &dyn RelayStore, id: &str) -> User {
    relay.user(id).unwrap().unwrap().0
}

/// One round; returns whether the relay said there is more.
fn sync_round(relay: &dyn RelayStore, device: &mut Store, lose: bool, small: bool) -> bool {
    let who = user(relay, device.user());
    let mut request: SyncRequest = protocol::decode(&device.sync_request().unwrap()).unwrap();
    if small {
        request.max_bytes = 600;
    }
    let (response, _) = relay::sync(relay, &who, request).unwrap();
    if !lose {
        device
            .apply_sync_response(&protocol::encode(&response))
            .unwrap();
    }
    response.more
}

fn ids(store: &Store) -> Vec<String> {
    store.record_ids_after("", 10_000).unwrap()
}

fn pick(store: &Store, pick: usize) -> Option<String> {
    let known: Vec<String> = ids(store)
        .into_iter()
        .filter(|id| store.get(id).is_ok())
        .collect();
    (!known.is_empty()).then(|| known[pick % known.len()].clone())
}

/// Editing a record that another party deleted is refused; anything else is a bug.
fn allow_deleted<T>(result: fieldcrm_core::Result<T>) {
    match result {
        Ok(_) | Err(Error::Deleted(_)) => {}
        Err(e) => panic!("edit failed: {e}"),
    }
}

/// Documents, heads, conflicts and projection rows, comparably.
fn observable(store: &Store) -> String {
    let mut out = String::new();
    for id in ids(store) {
        let mut heads = store.heads(&id).unwrap();
        heads.sort();
        out += &format!(
            "{:?}\n{heads:?}\n{:?}\n",
            store.get(&id).unwrap(),
            store.conflicts(&id).unwrap()
        );
    }
    let page = store
        .list(&ListQuery {
            include_deleted: true,
            limit: 1000,
            sort: fieldcrm_core::SortBy::CreatedAt,
            ..Default::default()
        })
        .unwrap();
    for record in page.records {
        out += &format!("projection {record:?}\n");
    }
    out
}

fn run(ops: Vec<Op>) {
    let dir = tempfile::tempdir().unwrap();
    let relay_dir = dir.path().join("relay");
    let mut relay = open_relay(&relay_dir);
    relay.add_territory("north").unwrap();
    let hash = auth::hash_password("password1").unwrap();
    relay
        .add_user("ann", &hash, Role::Rep, &["north".into()])
        .unwrap();
    relay
        .add_user("bob", &hash, Role::Rep, &["north".into()])
        .unwrap();
    relay.add_user("olivia", &hash, Role::Office, &[]).unwrap();
    let mut devices: Vec<Store> = DEVICES
        .iter()
        .map(|u| Store::open(dir.path().join(format!("{u}.db")), u).unwrap())
        .collect();

    for op in ops {
        match op {
            Op::Create { device, name } => {
                devices[device]
                    .create(
                        Kind::Account,
                        fields([
                            ("name", format!("Account {name}")),
                            ("territory", "north".into()),
                        ]),
                    )
                    .unwrap();
            }
            Op::Update {
                device,
                pick: p,
                field,
                value,
            } => {
                let Some(id) = pick(&devices[device], p) else {
                    continue;
                };
                let (path, v) = match field {
                    0 => ("phone", Value::from(format!("+1 555 {value:03}"))),
                    1 => ("industry", Value::from(format!("Industry {}", value % 3))),
                    _ => ("custom.tier", Value::from(i64::from(value % 3))),
                };
                allow_deleted(devices[device].update(&id, fields([(path, v)])));
            }
            Op::Delete { device, pick: p } => {
                if let Some(id) = pick(&devices[device], p) {
                    devices[device].delete(&id).unwrap();
                }
            }
            Op::Restore { device, pick: p } => {
                if let Some(id) = pick(&devices[device], p) {
                    devices[device].restore(&id).unwrap();
                }
            }
            Op::Office { pick: p, value } => {
                let olivia = user(&*relay, "olivia");
                let page = office::list(
                    &*relay,
                    &olivia,
                    ListQuery {
                        kind: Some(Kind::Account),
                        limit: 1000,
                        ..Default::default()
                    },
                )
                .unwrap();
                if page.records.is_empty() {
                    continue;
                }
                let id = page.records[p % page.records.len()].id.clone();
                let edit = Edit::Update {
                    id,
                    fields: fields([("industry", format!("Office {}", value % 3))]),
                };
                office::edit_one(&*relay, &olivia, edit).unwrap();
            }
            Op::Sync {
                device,
                lose_response,
                small_pages,
            } => {
                sync_round(&*relay, &mut devices[device], lose_response, small_pages);
            }
            Op::RestartRelay => {
                drop(relay);
                relay = open_relay(&relay_dir);
            }
        }
    }

    // Everyone syncs until up to date, twice around, so every change is everywhere.
    for _ in 0..2 {
        for device in devices.iter_mut() {
            for round in 0.. {
                assert!(round < 200, "sync did not settle");
                let more = sync_round(&*relay, device, false, false);
                if !more && device.outbox_status().unwrap().pending == 0 {
                    break;
                }
            }
        }
    }
    for device in &devices {
        let status = device.outbox_status().unwrap();
        assert_eq!(
            (status.pending, status.rejected),
            (0, 0),
            "{} kept unsent work",
            device.user()
        );
    }
    let expected = observable(&devices[0]);
    for device in &devices[1..] {
        assert_eq!(
            observable(device),
            expected,
            "{} differs from ann",
            device.user()
        );
    }
    let at_relay = relay.with_records(|store| observable(store));
    assert_eq!(at_relay, expected, "the relay differs from the devices");
}

/// `PROPTEST_CASES` for a longer run; the CI default otherwise. (An
/// explicit `cases` in the config would ignore the variable.)
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(24), ..ProptestConfig::default() })]

    #[test]
    fn devices_office_and_relay_converge_through_lost_responses_and_restarts(
        ops in proptest::collection::vec(op(), 1..60)
    ) {
        run(ops);
    }
}
