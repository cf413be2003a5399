//! Property: three stores make random edits and exchange their changes one
//! by one, in random order, with duplicates and with changes arriving before
//! their dependencies. Afterwards every store holds identical documents,
//! conflicts and query projections.

use fieldcrm_core::{fields, Error, Kind, Store, Value};
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

const STORES: usize = 3;

#[derive(Debug, Clone)]
enum Op {
    Create {
        store: usize,
        name: u8,
    },
    Update {
        store: usize,
        pick: usize,
        field: u8,
        value: u8,
    },
    Splice {
        store: usize,
        pick: usize,
        pos: u8,
        text: u8,
    },
    Delete {
        store: usize,
        pick: usize,
    },
    Restore {
        store: usize,
        pick: usize,
    },
    Sync {
        from: usize,
        to: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let s = 0..STORES;
    prop_oneof![
        2 => (s.clone(), any::<u8>()).prop_map(|(store, name)| Op::Create { store, name }),
        6 => (s.clone(), any::<usize>(), 0..4u8, any::<u8>())
            .prop_map(|(store, pick, field, value)| Op::Update { store, pick, field, value }),
        2 => (s.clone(), any::<usize>(), any::<u8>(), any::<u8>())
            .prop_map(|(store, pick, pos, text)| Op::Splice { store, pick, pos, text }),
        1 => (s.clone(), any::<usize>()).prop_map(|(store, pick)| Op::Delete { store, pick }),
        1 => (s.clone(), any::<usize>()).prop_map(|(store, pick)| Op::Restore { store, pick }),
        3 => (s.clone(), s).prop_map(|(from, to)| Op::Sync { from, to }),
    ]
}

fn ids(store: &Store) -> Vec<String> {
    store.record_ids_after("", 10_000).unwrap()
}

/// Ids of records this store can read (documents whose creation arrived).
fn readable(store: &Store) -> Vec<String> {
    ids(store)
        .into_iter()
        .filter(|id| store.get(id).is_ok())
        .collect()
}

/// One store to read from and another to write to.
fn pair_mut(stores: &mut [Store], from: usize, to: usize) -> (&Store, &mut Store) {
    if from < to {
        let (l, r) = stores.split_at_mut(to);
        (&l[from], &mut r[0])
    } else {
        let (l, r) = stores.split_at_mut(from);
        (&r[0], &mut l[to])
    }
}

fn pick_readable(store: &Store, pick: usize) -> Option<String> {
    let known = readable(store);
    (!known.is_empty()).then(|| known[pick % known.len()].clone())
}

/// Editing a record another store deleted is refused; anything else is a bug.
fn allow_deleted<T>(result: fieldcrm_core::Result<T>) {
    match result {
        Ok(_) | Err(Error::Deleted(_)) => {}
        Err(e) => panic!("edit failed: {e}"),
    }
}

/// Sends every change `from` has to `to`, one change per call, shuffled,
/// with about a third sent twice.
fn exchange(from: &Store, to: &mut Store, rng: &mut StdRng) {
    let mut items = Vec::new();
    for id in ids(from) {
        for change in from.changes_since(&id, &[]).unwrap() {
            items.push((id.clone(), change));
        }
    }
    let dups: Vec<_> = items
        .iter()
        .filter(|_| rng.gen_bool(0.33))
        .cloned()
        .collect();
    items.extend(dups);
    items.shuffle(rng);
    for (id, change) in items {
        to.apply_changes(&id, &[change]).unwrap();
    }
}

/// Everything a user could observe, in a comparable form.
fn observable(store: &Store) -> String {
    let mut out = String::new();
    for id in ids(store) {
        let record = store.get(&id).unwrap();
        let mut heads = store.heads(&id).unwrap();
        heads.sort();
        out += &format!(
            "{record:?}\n{heads:?}\n{:?}\n",
            store.conflicts(&id).unwrap()
        );
    }
    out
}

fn projection(store_path: &std::path::Path) -> Vec<String> {
    let conn = rusqlite::Connection::open(store_path).unwrap();
    let mut stmt = conn
        .prepare(
            "SELECT id, kind, name, owner, territory, account_id, related_to, stage, amount,
                    close_date, due_at, done, deleted, has_conflicts, created_at, updated_at, record
             FROM records ORDER BY id",
        )
        .unwrap();
    stmt.query_map([], |r| {
        (0..17)
            .map(|i| {
                r.get::<_, rusqlite::types::Value>(i)
                    .map(|v| format!("{v:?}"))
            })
            .collect::<rusqlite::Result<Vec<_>>>()
            .map(|v| v.join("|"))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

fn run(ops: Vec<Op>, seed: u64) {
    let dir = tempfile::tempdir().unwrap();
    let paths: Vec<_> = (0..STORES)
        .map(|i| dir.path().join(format!("s{i}.db")))
        .collect();
    let users = ["ann", "bob", "cat"];
    let mut stores: Vec<Store> = (0..STORES)
        .map(|i| Store::open(&paths[i], users[i]).unwrap())
        .collect();
    let mut rng = StdRng::seed_from_u64(seed);

    for op in ops {
        match op {
            Op::Create { store, name } => {
                stores[store]
                    .create(
                        Kind::Account,
                        fields([
                            ("name", format!("Account {name}")),
                            ("territory", "north".into()),
                        ]),
                    )
                    .unwrap();
            }
            Op::Sync { from, to } if from != to => {
                let (a, b) = pair_mut(&mut stores, from, to);
                exchange(a, b, &mut rng);
            }
            Op::Sync { .. } => {}
            Op::Update {
                store,
                pick,
                field,
                value,
            } => {
                let Some(id) = pick_readable(&stores[store], pick) else {
                    continue;
                };
                let (path, v) = match field {
                    0 => ("phone", Value::from(format!("+1 555 {value:03}"))),
                    1 => ("industry", Value::from(format!("Industry {}", value % 4))),
                    2 => ("custom.tier", Value::from(i64::from(value % 3))),
                    _ => (
                        "address.city",
                        Value::from(["Leeds", "Lyon", "Porto"][usize::from(value % 3)]),
                    ),
                };
                allow_deleted(stores[store].update(&id, fields([(path, v)])));
            }
            Op::Splice {
                store,
                pick,
                pos,
                text,
            } => {
                let Some(id) = pick_readable(&stores[store], pick) else {
                    continue;
                };
                let len = stores[store]
                    .get(&id)
                    .unwrap()
                    .text("notes")
                    .map_or(0, |t| t.chars().count());
                let pos = usize::from(pos) % (len + 1);
                allow_deleted(stores[store].splice_text(
                    &id,
                    "notes",
                    pos,
                    0,
                    &format!("<{text}>"),
                ));
            }
            Op::Delete { store, pick } => {
                let Some(id) = pick_readable(&stores[store], pick) else {
                    continue;
                };
                stores[store].delete(&id).unwrap();
            }
            Op::Restore { store, pick } => {
                let Some(id) = pick_readable(&stores[store], pick) else {
                    continue;
                };
                stores[store].restore(&id).unwrap();
            }
        }
    }

    // Everyone sends everything to everyone, in random pair order.
    let mut pairs: Vec<(usize, usize)> = (0..STORES)
        .flat_map(|a| (0..STORES).filter(move |b| *b != a).map(move |b| (a, b)))
        .collect();
    pairs.shuffle(&mut rng);
    for _ in 0..2 {
        for &(from, to) in &pairs {
            let (a, b) = pair_mut(&mut stores, from, to);
            exchange(a, b, &mut rng);
        }
    }

    let first = observable(&stores[0]);
    let first_projection = projection(&paths[0]);
    for i in 1..STORES {
        assert_eq!(
            observable(&stores[i]),
            first,
            "store {i} differs from store 0"
        );
        assert_eq!(
            projection(&paths[i]),
            first_projection,
            "projection {i} differs"
        );
    }
    for store in &stores {
        for id in ids(store) {
            assert!(
                store.get(&id).is_ok(),
                "every change arrived, so nothing is pending"
            );
        }
    }
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
    #![proptest_config(ProptestConfig { cases: cases(48), ..ProptestConfig::default() })]

    #[test]
    fn stores_converge_whatever_the_order(ops in prop::collection::vec(op(), 1..60), seed in any::<u64>()) {
        run(ops, seed);
    }
}
