//! Property-based fuzzing of everything that decodes untrusted bytes: the
//! sync envelope, single changes, compacted documents, and the store's merge
//! path. Arbitrary bytes and structure-aware mutations of valid input must
//! give an error or a clean result: never a panic, never a hang, and a
//! refused input leaves the store exactly as it was.
//!
//! CI runs a short pass; set `PROPTEST_CASES=100000` for the full run
//! documented in docs/reliability.md.

use fieldcrm_core::protocol::{self, SyncRequest, SyncResponse};
use fieldcrm_core::{fields, Kind, ParsedChange, Store};
use proptest::prelude::*;

/// Valid inputs to mutate: a creating change, an edit, a compacted
/// document and a sync request carrying them.
struct Seeds {
    record_id: String,
    changes: Vec<Vec<u8>>,
    snapshot: Vec<u8>,
    request: Vec<u8>,
}

fn seeds() -> Seeds {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path().join("seed.db"), "ann").unwrap();
    let acc = store
        .create(
            Kind::Account,
            fields([("name", "Acme"), ("territory", "north"), ("notes", "hello")]),
        )
        .unwrap();
    store
        .update(&acc.id, fields([("phone", "+44 20 7946 0958")]))
        .unwrap();
    let changes = store.changes_since(&acc.id, &[]).unwrap();
    let snapshot = store.snapshot(&acc.id).unwrap();
    let request = store.sync_request().unwrap();
    Seeds {
        record_id: acc.id,
        changes,
        snapshot,
        request,
    }
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip { at: usize, bits: u8 },
    Truncate { at: usize },
    Insert { at: usize, bytes: Vec<u8> },
    Delete { at: usize, len: usize },
    Duplicate { at: usize, len: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1..=255u8).prop_map(|(at, bits)| Mutation::Flip { at, bits }),
        any::<usize>().prop_map(|at| Mutation::Truncate { at }),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        (any::<usize>(), 1..32usize).prop_map(|(at, len)| Mutation::Delete { at, len }),
        (any::<usize>(), 1..64usize).prop_map(|(at, len)| Mutation::Duplicate { at, len }),
    ]
}

fn mutate(input: &[u8], mutations: &[Mutation]) -> Vec<u8> {
    let mut b = input.to_vec();
    for m in mutations {
        if b.is_empty() {
            break;
        }
        match m {
            Mutation::Flip { at, bits } => {
                let i = at % b.len();
                b[i] ^= bits;
            }
            Mutation::Truncate { at } => b.truncate(at % b.len()),
            Mutation::Insert { at, bytes } => {
                let i = at % (b.len() + 1);
                b.splice(i..i, bytes.iter().copied());
            }
            Mutation::Delete { at, len } => {
                let i = at % b.len();
                let end = (i + len).min(b.len());
                b.drain(i..end);
            }
            Mutation::Duplicate { at, len } => {
                let i = at % b.len();
                let end = (i + len).min(b.len());
                let copy = b[i..end].to_vec();
                b.splice(end..end, copy);
            }
        }
    }
    b
}

/// Row counts and every stored byte a refused input could have touched.
fn footprint(store: &Store) -> String {
    let sql = store.sql();
    let mut out = String::new();
    for q in [
        "SELECT count(*), coalesce(sum(length(snapshot)), 0) FROM documents",
        "SELECT count(*), coalesce(sum(length(bytes)), 0) FROM doc_changes",
        "SELECT count(*), coalesce(sum(length(record)), 0) FROM records",
        "SELECT count(*), coalesce(sum(length(bytes)), 0) FROM outbox",
    ] {
        let (n, bytes): (i64, i64) = sql
            .query_row(q, [], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap();
        out += &format!("{n}/{bytes} ");
    }
    out
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
    #![proptest_config(ProptestConfig { cases: cases(256), ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic_any_decoder(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        let _ = protocol::decode::<SyncRequest>(&bytes);
        let _ = protocol::decode::<SyncResponse>(&bytes);
        let _ = ParsedChange::parse("fuzz", &bytes);
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path().join("s.db"), "bob").unwrap();
        // Random bytes are never a valid change, document or response.
        let before = footprint(&store);
        prop_assert!(store.apply_changes("fuzz", std::slice::from_ref(&bytes)).is_err());
        prop_assert!(store.apply_snapshot("fuzz", &bytes).is_err());
        prop_assert!(store.apply_sync_response(&bytes).is_err());
        prop_assert_eq!(footprint(&store), before);
    }

    #[test]
    fn mutated_valid_input_is_refused_cleanly_or_applied(
        which in 0..4usize,
        mutations in prop::collection::vec(mutation(), 1..4),
    ) {
        let seeds = seeds();
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path().join("s.db"), "bob").unwrap();
        // The store already holds the record's creation, so edits can apply.
        store.apply_changes(&seeds.record_id, &seeds.changes[..1]).unwrap();
        let before = footprint(&store);
        let result = match which {
            0 => store.apply_changes(&seeds.record_id, &[mutate(&seeds.changes[0], &mutations)]).map(|_| ()),
            1 => store.apply_changes(&seeds.record_id, &[mutate(&seeds.changes[1], &mutations)]).map(|_| ()),
            2 => store.apply_snapshot(&seeds.record_id, &mutate(&seeds.snapshot, &mutations)).map(|_| ()),
            _ => protocol::decode::<SyncRequest>(&mutate(&seeds.request, &mutations)).map(|_| ()),
        };
        match result {
            Err(e) => {
                prop_assert!(!e.to_string().is_empty());
                prop_assert_eq!(footprint(&store), before);
            }
            // A mutation may leave valid input (e.g. a flipped bit in an unused
            // field): then the record must still read back.
            Ok(()) => {
                if which < 3 {
                    prop_assert!(store.get(&seeds.record_id).is_ok());
                }
            }
        }
    }
}
