use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use super::*;
use crate::model::fields;
use crate::query::{ListQuery, SortBy, StageSummary};

struct Fixture {
    _dir: tempfile::TempDir,
    store: Store,
    clock: Arc<AtomicI64>,
}

fn open_at(dir: &tempfile::TempDir, name: &str, user: &str) -> (Store, Arc<AtomicI64>) {
    // A plausible time (2025-11-24): relays refuse changes stamped in seconds.
    let clock = Arc::new(AtomicI64::new(1_764_000_000_000));
    let c = clock.clone();
    let options = StoreOptions {
        durable: false,
        clock: Arc::new(move || c.fetch_add(1, Ordering::SeqCst)),
    };
    (
        Store::open_with(dir.path().join(name), user, options).unwrap(),
        clock,
    )
}

fn fixture(user: &str) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let (store, clock) = open_at(&dir, "store.db", user);
    Fixture {
        _dir: dir,
        store,
        clock,
    }
}

fn account(store: &mut Store, name: &str, territory: &str) -> Record {
    store
        .create(
            Kind::Account,
            fields([("name", name), ("territory", territory)]),
        )
        .unwrap()
}

fn contact(store: &mut Store, account: &str, first: &str, last: &str, email: &str) -> Record {
    store
        .create(
            Kind::Contact,
            fields([
                ("account_id", account),
                ("first_name", first),
                ("last_name", last),
                ("email", email),
                ("territory", "north"),
            ]),
        )
        .unwrap()
}

/// Every projection row (without rowid) and every FTS row, for comparisons.
fn projection_rows(store: &Store) -> Vec<String> {
    let mut stmt = store
        .conn()
        .prepare(
            "SELECT r.id, r.kind, r.name, r.owner, r.territory, r.account_id, r.related_to, r.stage,
                    r.amount, r.close_date, r.due_at, r.done, r.deleted, r.has_conflicts,
                    r.created_at, r.updated_at, r.record, f.name, f.email, f.phone, f.notes
             FROM records r JOIN records_fts f ON f.rowid = r.rowid ORDER BY r.id",
        )
        .unwrap();
    stmt.query_map([], |r| {
        let mut out = Vec::new();
        for i in 0..21 {
            out.push(format!("{:?}", r.get::<_, rusqlite::types::Value>(i)?));
        }
        Ok(out.join("|"))
    })
    .unwrap()
    .map(|r| r.unwrap())
    .collect()
}

fn count(store: &Store, table: &str) -> i64 {
    store
        .conn()
        .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
        .unwrap()
}

/// Counts that any write would change.
fn footprint(store: &Store) -> (i64, i64, i64, i64) {
    (
        count(store, "documents"),
        count(store, "doc_changes"),
        count(store, "records"),
        count(store, "outbox"),
    )
}

#[test]
fn create_update_delete_restore_round_trip() {
    let mut fx = fixture("ann");
    let s = &mut fx.store;
    let acc = account(s, "Acme", "north");
    assert_eq!(acc.text("owner"), Some("ann"), "owner defaults to the user");
    assert_eq!(s.get(&acc.id).unwrap(), acc);

    let acc2 = s
        .update(
            &acc.id,
            fields([
                ("phone", Value::from("+44 20 7946 0958")),
                ("custom.tier", "gold".into()),
            ]),
        )
        .unwrap();
    assert_eq!(acc2.text("phone"), Some("+44 20 7946 0958"));
    assert_eq!(acc2.text("custom.tier"), Some("gold"));
    let cleared = s.update(&acc.id, fields([("phone", Value::Null)])).unwrap();
    assert_eq!(cleared.get("phone"), None);

    let deleted = s.delete(&acc.id).unwrap();
    assert!(deleted.deleted);
    assert!(matches!(
        s.update(&acc.id, fields([("industry", "Steel")])),
        Err(Error::Deleted(_))
    ));
    assert_eq!(s.list(&ListQuery::kind(Kind::Account)).unwrap().total, 0);
    assert!(!s.restore(&acc.id).unwrap().deleted);
    assert_eq!(s.list(&ListQuery::kind(Kind::Account)).unwrap().total, 1);

    // create + 2 updates + delete + restore: one outbox entry per action.
    assert_eq!(
        s.outbox_status().unwrap(),
        OutboxStatus {
            pending: 5,
            held: 0,
            rejected: 0
        }
    );
    // A no-op edit makes no change.
    s.update(&acc.id, fields([("name", "Acme")])).unwrap();
    assert_eq!(s.outbox_status().unwrap().pending, 5);
}

#[test]
fn invalid_input_is_refused_and_changes_nothing() {
    let mut fx = fixture("ann");
    let s = &mut fx.store;
    let acc = account(s, "Acme", "north");
    let before = footprint(s);
    let rows = projection_rows(s);

    let cases: Vec<(Kind, Fields)> = vec![
        (Kind::Account, fields([("territory", "north")])),
        (
            Kind::Account,
            fields([("name", "X"), ("territory", "n"), ("colour", "red")]),
        ),
        (
            Kind::Account,
            fields([("name", "x".repeat(5000)), ("territory", "n".into())]),
        ),
        (
            Kind::Contact,
            fields([
                ("account_id", "nope"),
                ("first_name", "A"),
                ("last_name", "B"),
                ("territory", "n"),
            ]),
        ),
        (
            Kind::Deal,
            fields([
                ("account_id", acc.id.as_str()),
                ("name", "D"),
                ("stage", "maybe"),
                ("territory", "n"),
            ]),
        ),
        (
            Kind::Deal,
            fields([
                ("account_id", acc.id.clone().into()),
                ("name", "D".into()),
                ("stage", "lead".into()),
                ("territory", "n".into()),
                ("amount", Value::Float(1.5)),
            ]),
        ),
    ];
    for (kind, f) in cases {
        let err = s.create(kind, f.clone()).unwrap_err();
        assert!(!err.to_string().is_empty());
    }
    assert!(matches!(
        s.update(&acc.id, fields([("email", "x")])),
        Err(Error::UnknownField { .. })
    ));
    assert!(matches!(
        s.update("missing-id", fields([("name", "x")])),
        Err(Error::NotFound(_))
    ));
    assert!(s
        .update("../../etc/passwd", fields([("name", "x")]))
        .is_err());
    assert!(matches!(
        s.splice_text(&acc.id, "name", 0, 0, "x"),
        Err(Error::InvalidValue { .. })
    ));
    assert_eq!(footprint(s), before);
    assert_eq!(projection_rows(s), rows);
}

#[test]
fn references_must_point_at_live_records_of_the_right_kind() {
    let mut fx = fixture("ann");
    let s = &mut fx.store;
    let acc = account(s, "Acme", "north");
    let c = contact(s, &acc.id, "Ada", "Lovelace", "ada@example.com");
    let err = s
        .create(
            Kind::Contact,
            fields([
                ("account_id", c.id.as_str()),
                ("first_name", "A"),
                ("last_name", "B"),
                ("territory", "n"),
            ]),
        )
        .unwrap_err();
    assert!(err.to_string().contains("not an existing account"), "{err}");
    s.delete(&acc.id).unwrap();
    let err = s
        .create(
            Kind::Deal,
            fields([
                ("account_id", acc.id.as_str()),
                ("name", "D"),
                ("stage", "lead"),
                ("territory", "n"),
            ]),
        )
        .unwrap_err();
    assert!(err.to_string().contains("deleted"), "{err}");
}

#[test]
fn list_filters_sorts_and_pages() {
    let mut fx = fixture("ann");
    let s = &mut fx.store;
    let north = account(s, "Northwind", "north");
    let south = account(s, "Southwind", "south");
    for (i, (acc, stage, amount)) in [
        (&north, "lead", 100),
        (&north, "won", 300),
        (&south, "lead", 200),
    ]
    .into_iter()
    .enumerate()
    {
        s.create(
            Kind::Deal,
            fields([
                ("account_id", Value::from(acc.id.as_str())),
                ("name", format!("Deal {i}").into()),
                ("stage", stage.into()),
                ("amount", Value::Int(amount)),
                ("currency", "EUR".into()),
                ("territory", acc.text("territory").unwrap().into()),
            ]),
        )
        .unwrap();
    }
    let deals = |q: ListQuery| s.list(&q).unwrap();
    let by_amount = deals(ListQuery {
        sort: SortBy::Amount,
        descending: true,
        ..ListQuery::kind(Kind::Deal)
    });
    let amounts: Vec<_> = by_amount
        .records
        .iter()
        .map(|r| r.get("amount").unwrap().clone())
        .collect();
    assert_eq!(amounts, [Value::Int(300), Value::Int(200), Value::Int(100)]);
    assert_eq!(
        deals(ListQuery {
            stage: Some("lead".into()),
            ..ListQuery::kind(Kind::Deal)
        })
        .total,
        2
    );
    assert_eq!(
        deals(ListQuery {
            territories: vec!["south".into()],
            ..ListQuery::kind(Kind::Deal)
        })
        .total,
        1
    );
    assert_eq!(
        deals(ListQuery {
            account_id: Some(north.id.clone()),
            ..ListQuery::kind(Kind::Deal)
        })
        .total,
        2
    );
    assert_eq!(
        deals(ListQuery {
            owner: Some("bob".into()),
            ..ListQuery::kind(Kind::Deal)
        })
        .total,
        0
    );
    let page = deals(ListQuery {
        limit: 2,
        offset: 2,
        sort: SortBy::Name,
        ..ListQuery::kind(Kind::Deal)
    });
    assert_eq!((page.total, page.records.len()), (3, 1));
    assert_eq!(page.records[0].text("name"), Some("Deal 2"));
    assert!(s
        .list(&ListQuery {
            limit: 0,
            ..Default::default()
        })
        .is_err());

    let t = fx.clock.load(Ordering::SeqCst);
    s.update(&south.id, fields([("industry", "Shipping")]))
        .unwrap();
    let recent = s
        .list(&ListQuery {
            updated_since: Some(t),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(
        recent
            .records
            .iter()
            .map(|r| r.id.as_str())
            .collect::<Vec<_>>(),
        [south.id.as_str()]
    );

    let summary = s.pipeline_summary(None, &[]).unwrap();
    assert_eq!(summary[0].stage, "lead");
    assert_eq!((summary[0].count, summary[0].amounts["EUR"]), (2, 300));
    assert_eq!(summary[4].stage, "won");
    assert_eq!(summary[4].count, 1);
    let south_only = s.pipeline_summary(None, &["south".into()]).unwrap();
    assert_eq!(south_only[0].amounts["EUR"], 200);
}

#[test]
fn search_finds_names_emails_phones_and_notes() {
    let mut fx = fixture("ann");
    let s = &mut fx.store;
    let acc = account(s, "Acme Steel", "north");
    let ada = contact(s, &acc.id, "Ada", "Lovelace", "ada@analytical.example");
    s.update(
        &ada.id,
        fields([
            ("phone", "+44 20 7946 0958"),
            ("notes", "Prefers morning calls about the Difference Engine"),
        ]),
    )
    .unwrap();
    let ids = |s: &Store, q: &str| {
        s.search(q, None, 10)
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(s, "lovel"), [ada.id.as_str()]);
    assert_eq!(ids(s, "analytical"), [ada.id.as_str()]);
    assert_eq!(ids(s, "7946"), [ada.id.as_str()]);
    assert_eq!(ids(s, "difference engine"), [ada.id.as_str()]);
    assert_eq!(ids(s, "acme"), [acc.id.as_str()]);
    assert!(ids(s, "zebra").is_empty());
    assert!(ids(s, "\"; DROP TABLE records; --").is_empty());
    assert_eq!(s.search("ada", Some(Kind::Account), 10).unwrap().len(), 0);
    s.delete(&ada.id).unwrap();
    assert!(
        ids(s, "lovelace").is_empty(),
        "deleted records are not found"
    );
}

#[test]
fn search_follows_renames_and_keeps_its_entry_through_other_edits() {
    let mut fx = fixture("ann");
    let s = &mut fx.store;
    let acc = account(s, "Acme Steel", "north");
    let found = |s: &Store, q: &str| s.search(q, None, 10).unwrap().len();
    let entries = |s: &Store, q: &str| -> i64 {
        s.sql()
            .query_row(
                "SELECT count(*) FROM records_fts WHERE records_fts MATCH ?1",
                [q],
                |r| r.get(0),
            )
            .unwrap()
    };
    // An edit that leaves the searchable text alone keeps the one entry.
    s.update(&acc.id, fields([("custom.visits", 3)])).unwrap();
    assert_eq!((found(s, "acme"), entries(s, "acme")), (1, 1));
    s.update(&acc.id, fields([("name", "Birch Works")]))
        .unwrap();
    assert_eq!((found(s, "acme"), entries(s, "acme")), (0, 0));
    assert_eq!((found(s, "birch"), entries(s, "birch")), (1, 1));
    s.update(&acc.id, fields([("custom.visits", 4)])).unwrap();
    assert_eq!((found(s, "birch"), entries(s, "birch")), (1, 1));
}

#[test]
fn account_overview_gathers_related_records() {
    let mut fx = fixture("ann");
    let s = &mut fx.store;
    let acc = account(s, "Acme", "north");
    let other = account(s, "Other", "north");
    let c = contact(s, &acc.id, "Ada", "L", "ada@example.com");
    contact(s, &other.id, "Bob", "M", "bob@example.com");
    let d = s
        .create(
            Kind::Deal,
            fields([
                ("account_id", acc.id.as_str()),
                ("name", "Big"),
                ("stage", "lead"),
                ("territory", "north"),
            ]),
        )
        .unwrap();
    for (related, subject, due) in [
        (&c.id, "Call Ada", 2),
        (&d.id, "Send proposal", 1),
        (&acc.id, "Visit", 3),
    ] {
        s.create(
            Kind::Activity,
            fields([
                ("kind", Value::from("task")),
                ("subject", subject.into()),
                ("related_to", related.as_str().into()),
                ("due_at", Value::Int(due)),
                ("territory", "north".into()),
            ]),
        )
        .unwrap();
    }
    let o = s.account_overview(&acc.id).unwrap();
    assert_eq!(o.contacts.len(), 1);
    assert_eq!(o.deals.len(), 1);
    let subjects: Vec<_> = o
        .activities
        .iter()
        .map(|a| a.text("subject").unwrap())
        .collect();
    assert_eq!(subjects, ["Send proposal", "Call Ada", "Visit"]);
    assert!(s.account_overview(&c.id).is_err());
}

#[test]
fn history_record_at_and_conflict_resolution_across_stores() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, clock_a) = open_at(&dir, "a.db", "ann");
    let (mut b, clock_b) = open_at(&dir, "b.db", "bob");
    clock_b.store(1_764_000_000_000 + 4_000_000, Ordering::SeqCst);
    let acc = account(&mut a, "Acme", "north");
    let id = acc.id.clone();
    b.apply_changes(&id, &a.changes_since(&id, &[]).unwrap())
        .unwrap();

    let t_before = clock_a.load(Ordering::SeqCst);
    a.update(&id, fields([("phone", "111 111")])).unwrap();
    b.update(&id, fields([("phone", "222 222")])).unwrap();
    let from_a = a.changes_since(&id, &[]).unwrap();
    let from_b = b.changes_since(&id, &[]).unwrap();
    a.apply_changes(&id, &from_b).unwrap();
    b.apply_changes(&id, &from_a).unwrap();

    assert_eq!(a.get(&id).unwrap(), b.get(&id).unwrap());
    let conflicts = a.conflicts(&id).unwrap();
    assert_eq!(conflicts.len(), 1);
    assert_eq!(conflicts[0].field, "phone");
    assert_eq!(b.conflicts(&id).unwrap(), conflicts);
    assert_eq!(
        a.list(&ListQuery {
            only_conflicts: true,
            ..Default::default()
        })
        .unwrap()
        .total,
        1
    );

    let resolved = b.resolve_conflict(&id, "phone", "333 333".into()).unwrap();
    assert_eq!(resolved.text("phone"), Some("333 333"));
    a.apply_changes(&id, &b.changes_since(&id, &a.heads(&id).unwrap()).unwrap())
        .unwrap();
    assert!(a.conflicts(&id).unwrap().is_empty());
    assert_eq!(a.get(&id).unwrap().text("phone"), Some("333 333"));
    assert_eq!(
        a.list(&ListQuery {
            only_conflicts: true,
            ..Default::default()
        })
        .unwrap()
        .total,
        0
    );

    let history = a.history(&id).unwrap();
    assert_eq!(history.len(), 4);
    let last = history.last().unwrap();
    assert_eq!(
        (last.user.as_str(), last.actor.as_str()),
        ("bob", b.actor_hex().as_str())
    );
    assert_eq!(last.fields.len(), 1);
    assert_eq!(last.fields[0].new, Value::from("333 333"));
    assert_eq!(a.record_at(&id, t_before - 1).unwrap().get("phone"), None);
    assert_eq!(
        a.record_at(&id, t_before).unwrap().text("phone"),
        Some("111 111")
    );
    assert_eq!(projection_rows(&a), projection_rows(&b));
}

#[test]
fn apply_changes_is_idempotent_and_order_independent() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, _) = open_at(&dir, "a.db", "ann");
    let (mut b, _) = open_at(&dir, "b.db", "bob");
    let acc = account(&mut a, "Acme", "north");
    for i in 0..5 {
        a.update(&acc.id, fields([("industry", format!("Industry {i}"))]))
            .unwrap();
    }
    let mut changes = a.changes_since(&acc.id, &[]).unwrap();
    changes.reverse();
    let first = b.apply_changes(&acc.id, &changes[..3]).unwrap();
    assert_eq!(
        first,
        ApplyOutcome {
            applied: 0,
            duplicates: 0,
            pending: 3
        }
    );
    assert!(
        b.get(&acc.id).is_err(),
        "not readable before its creating change"
    );
    let second = b.apply_changes(&acc.id, &changes).unwrap();
    assert_eq!(
        second,
        ApplyOutcome {
            applied: 3,
            duplicates: 3,
            pending: 0
        }
    );
    assert_eq!(b.get(&acc.id).unwrap(), a.get(&acc.id).unwrap());
    let again = b.apply_changes(&acc.id, &changes).unwrap();
    assert_eq!(
        again,
        ApplyOutcome {
            applied: 0,
            duplicates: 6,
            pending: 0
        }
    );
    assert_eq!(projection_rows(&a), projection_rows(&b));
    assert_eq!(
        b.outbox_status().unwrap().pending,
        0,
        "remote changes are not ours to send"
    );
}

#[test]
fn bad_remote_input_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, _) = open_at(&dir, "a.db", "ann");
    let (mut b, _) = open_at(&dir, "b.db", "bob");
    let acc = account(&mut a, "Acme", "north");
    let other = account(&mut a, "Other", "north");
    b.apply_changes(&acc.id, &a.changes_since(&acc.id, &[]).unwrap())
        .unwrap();
    let before = footprint(&b);
    let rows = projection_rows(&b);

    let good = a.changes_since(&acc.id, &[]).unwrap().remove(0);
    let mut truncated = good.clone();
    truncated.truncate(good.len() / 2);
    let mut flipped = good.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0xff;
    for bad in [vec![], b"garbage".to_vec(), truncated, flipped] {
        let err = b.apply_changes(&acc.id, &[bad]).unwrap_err();
        assert!(matches!(err, Error::MalformedChange { .. }), "{err}");
    }
    // A valid change of another record.
    let foreign = a.changes_since(&other.id, &[]).unwrap();
    let err = b.apply_changes(&acc.id, &foreign).unwrap_err();
    assert!(matches!(err, Error::ForeignChange { .. }), "{err}");
    // A batch with one bad change stores none of the batch.
    a.update(&acc.id, fields([("industry", "Steel")])).unwrap();
    let mut batch = a
        .changes_since(&acc.id, &b.heads(&acc.id).unwrap())
        .unwrap();
    batch.push(b"junk".to_vec());
    assert!(b.apply_changes(&acc.id, &batch).is_err());
    assert!(b.apply_changes("bad id!", &batch[..1]).is_err());
    assert!(b.apply_snapshot(&acc.id, b"not a document").is_err());
    let err = b.apply_snapshot("fresh-id", &[]).unwrap_err();
    assert!(err.to_string().contains("holds no changes"), "{err}");
    assert!(b
        .apply_snapshot(&acc.id, &a.snapshot(&other.id).unwrap())
        .is_err());

    assert_eq!(footprint(&b), before);
    assert_eq!(projection_rows(&b), rows);
}

#[test]
fn snapshots_bootstrap_and_merge() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, _) = open_at(&dir, "a.db", "ann");
    let (mut b, _) = open_at(&dir, "b.db", "bob");
    let acc = account(&mut a, "Acme", "north");
    a.update(&acc.id, fields([("industry", "Steel")])).unwrap();
    let snap = a.snapshot(&acc.id).unwrap();
    assert_eq!(b.apply_snapshot(&acc.id, &snap).unwrap().applied, 2);
    assert_eq!(b.get(&acc.id).unwrap(), a.get(&acc.id).unwrap());
    // Diverge, then merge a newer snapshot into the existing copy.
    b.update(&acc.id, fields([("phone", "555 0100")])).unwrap();
    a.update(&acc.id, fields([("website", "acme.example")]))
        .unwrap();
    let outcome = b
        .apply_snapshot(&acc.id, &a.snapshot(&acc.id).unwrap())
        .unwrap();
    assert_eq!((outcome.applied, outcome.duplicates), (1, 2));
    let r = b.get(&acc.id).unwrap();
    assert_eq!(
        (r.text("phone"), r.text("website")),
        (Some("555 0100"), Some("acme.example"))
    );
}

#[test]
fn compaction_keeps_content_and_waiting_changes() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, _) = open_at(&dir, "a.db", "ann");
    let (mut b, _) = open_at(&dir, "b.db", "bob");
    let acc = account(&mut a, "Acme", "north");
    for i in 0..(documents::COMPACT_AFTER + 3) {
        a.update(&acc.id, fields([("industry", format!("I{i}"))]))
            .unwrap();
    }
    assert!(
        count(&a, "doc_changes") < documents::COMPACT_AFTER as i64,
        "edits were compacted"
    );
    assert_eq!(
        a.changes_since(&acc.id, &[]).unwrap().len(),
        documents::COMPACT_AFTER + 4
    );

    // b holds a change waiting for its dependencies; compaction must keep it.
    let all = a.changes_since(&acc.id, &[]).unwrap();
    b.apply_changes(&acc.id, &all[..1]).unwrap();
    b.apply_changes(&acc.id, &all[2..3]).unwrap();
    b.compact().unwrap();
    b.apply_changes(&acc.id, &all[1..2]).unwrap();
    assert_eq!(b.get(&acc.id).unwrap().text("industry"), Some("I1"));
    b.apply_changes(&acc.id, &all).unwrap();
    assert_eq!(b.get(&acc.id).unwrap(), a.get(&acc.id).unwrap());
}

#[test]
fn rebuilt_projection_equals_the_incremental_one() {
    let mut fx = fixture("ann");
    let s = &mut fx.store;
    let acc = account(s, "Acme", "north");
    let c = contact(s, &acc.id, "Ada", "L", "ada@example.com");
    s.update(&c.id, fields([("notes", "hello")])).unwrap();
    s.delete(&acc.id).unwrap();
    let rows = projection_rows(s);
    s.conn().execute("DELETE FROM records_fts", []).unwrap();
    s.conn()
        .execute("UPDATE records SET name = 'garbage'", [])
        .unwrap();
    assert_eq!(s.rebuild_projection().unwrap(), 2);
    let mut rebuilt = projection_rows(s);
    let mut before = rows;
    rebuilt.sort();
    before.sort();
    assert_eq!(rebuilt, before);
}

#[test]
fn identity_survives_reopen_and_differs_per_user() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _) = open_at(&dir, "s.db", "ann");
    let (device, actor) = (a.device_id().to_string(), a.actor_hex());
    drop(a);
    let (a2, _) = open_at(&dir, "s.db", "ann");
    assert_eq!(
        (a2.device_id(), a2.actor_hex()),
        (device.as_str(), actor.clone())
    );
    drop(a2);
    let (b, _) = open_at(&dir, "s.db", "bob");
    assert_eq!(b.device_id(), device);
    assert_ne!(b.actor_hex(), actor);
}

#[test]
fn files_that_are_not_stores_are_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("photo.jpg");
    let bytes: Vec<u8> = (0..8192u32).map(|i| (i * 7919 % 251) as u8).collect();
    std::fs::write(&path, &bytes).unwrap();
    let err = Store::open(&path, "ann").unwrap_err();
    assert!(matches!(err, Error::NotAStore { .. }), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    assert!(Store::open(dir.path().join("s.db"), "  ").is_err());
}

#[test]
fn ndjson_import_is_all_or_nothing_and_names_the_bad_line() {
    let mut fx = fixture("ann");
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.ndjson");
    std::fs::write(
        &good,
        "{\"kind\":\"account\",\"fields\":{\"name\":\"Acme\",\"territory\":\"north\"}}\n\n\
         {\"kind\":\"account\",\"fields\":{\"name\":\"Émile & Co\",\"territory\":\"north\"}}\n",
    )
    .unwrap();
    assert_eq!(fx.store.import_ndjson(&good).unwrap().len(), 2);

    let before = footprint(&fx.store);
    let bad = dir.path().join("bad.ndjson");
    let mut bytes =
        b"{\"kind\":\"account\",\"fields\":{\"name\":\"Ok\",\"territory\":\"n\"}}\n".to_vec();
    bytes.extend_from_slice(
        b"{\"kind\":\"account\",\"fields\":{\"name\":\"\xff\xfe\",\"territory\":\"n\"}}\n",
    );
    std::fs::write(&bad, bytes).unwrap();
    let err = fx.store.import_ndjson(&bad).unwrap_err().to_string();
    assert!(
        err.contains("line 2") && err.contains("invalid UTF-8"),
        "{err}"
    );
    std::fs::write(&bad, "{\"kind\":\"lead\",\"fields\":{}}\n").unwrap();
    let err = fx.store.import_ndjson(&bad).unwrap_err().to_string();
    assert!(err.contains("line 1") && err.contains("lead"), "{err}");
    assert_eq!(footprint(&fx.store), before);
}

#[test]
fn batch_create_is_one_transaction() {
    let mut fx = fixture("ann");
    let acc = account(&mut fx.store, "Acme", "north");
    let before = footprint(&fx.store);
    let mut batch: Vec<NewRecord> = (0..10)
        .map(|i| NewRecord {
            kind: Kind::Contact,
            fields: fields([
                ("account_id", acc.id.clone()),
                ("first_name", format!("C{i}")),
                ("last_name", "X".into()),
                ("territory", "north".into()),
            ]),
        })
        .collect();
    batch[7].fields.insert("email".into(), "broken".into());
    let err = fx.store.create_many(batch.clone()).unwrap_err().to_string();
    assert!(err.contains("line 8") && err.contains("email"), "{err}");
    assert_eq!(footprint(&fx.store), before);
    batch[7].fields.remove("email");
    assert_eq!(fx.store.create_many(batch).unwrap().len(), 10);
}

#[test]
fn pipeline_can_change_unless_deals_would_be_orphaned() {
    let mut fx = fixture("ann");
    let acc = account(&mut fx.store, "Acme", "north");
    fx.store
        .create(
            Kind::Deal,
            fields([
                ("account_id", acc.id.as_str()),
                ("name", "D"),
                ("stage", "proposal"),
                ("territory", "n"),
            ]),
        )
        .unwrap();
    let err = fx
        .store
        .set_pipeline(Pipeline::new(["new", "won"]).unwrap())
        .unwrap_err();
    assert!(err.to_string().contains("\"proposal\""), "{err}");
    fx.store
        .set_pipeline(Pipeline::new(["new", "proposal", "won"]).unwrap())
        .unwrap();
    let path = fx.store.path.clone();
    drop(fx.store);
    let reopened = Store::open(&path, "ann").unwrap();
    assert_eq!(reopened.pipeline().stages(), ["new", "proposal", "won"]);
}

#[test]
fn outbox_acks_holds_and_refusals() {
    use crate::protocol::{Rejection, SyncResponse};
    let mut fx = fixture("ann");
    let a = account(&mut fx.store, "A", "n");
    account(&mut fx.store, "B", "n");
    account(&mut fx.store, "C", "n");
    let entries = fx.store.outbox(0, 10, false).unwrap();
    assert_eq!(entries.len(), 3);
    assert_eq!(entries[0].record_id, a.id);
    let answer = |hash: [u8; 32], code: &str| Rejection {
        hash: hash.to_vec(),
        reason: format!("because {code}"),
        code: code.into(),
        field: None,
    };
    let response = SyncResponse {
        version: 1,
        acks: vec![serde_bytes::ByteBuf::from(entries[0].hash.to_vec())],
        rejected: vec![
            answer(entries[1].hash, "invalid_value"),
            answer(entries[2].hash, "held_for_review"),
        ],
        ..SyncResponse::default()
    };
    let report = fx
        .store
        .apply_sync_response(&crate::protocol::encode(&response))
        .unwrap();
    assert_eq!((report.acked, report.rejected, report.held), (1, 1, 1));
    assert_eq!(
        fx.store.outbox_status().unwrap(),
        OutboxStatus {
            pending: 0,
            held: 1,
            rejected: 1
        }
    );
    // A held change is sent again (the relay tells its fate); a refused one is not.
    let to_send = fx.store.outbox(0, 10, false).unwrap();
    assert_eq!(to_send.len(), 1);
    assert_eq!(to_send[0].code.as_deref(), Some("held_for_review"));
    let refused = fx.store.refused_changes().unwrap();
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].reason, "because invalid_value");
    fx.store.discard_refused(refused[0].id).unwrap();
    assert!(fx.store.refused_changes().unwrap().is_empty());
    assert!(matches!(
        fx.store.discard_refused(refused[0].id),
        Err(Error::NotFound(_))
    ));
    fx.store.set_sync_state("cursor", "42").unwrap();
    assert_eq!(
        fx.store.sync_state("cursor").unwrap().as_deref(),
        Some("42")
    );
}

/// A directory where every name and record exists.
struct Open;

impl crate::model::Directory for Open {
    fn record(&self, _: &str) -> Result<Option<(Kind, bool)>> {
        Ok(Some((Kind::Account, false)))
    }
    fn is_user(&self, _: &str) -> Result<bool> {
        Ok(true)
    }
    fn is_territory(&self, _: &str) -> Result<bool> {
        Ok(true)
    }
}

#[test]
fn received_changes_are_checked_before_anything_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let (mut device, _) = open_at(&dir, "d.db", "ann");
    let (mut relay, _) = open_at(&dir, "r.db", "relay");
    let acc = account(&mut device, "Acme", "north");
    device
        .update(&acc.id, fields([("industry", "Steel")]))
        .unwrap();
    let changes = device.changes_since(&acc.id, &[]).unwrap();
    let parse = |b: &Vec<u8>| ParsedChange::parse(&acc.id, b).unwrap();
    let config = crate::model::Config::default();
    let rules = crate::model::Rules {
        config: &config,
        author: "ann",
        directory: &Open,
        standing: crate::model::Standing::Rep,
    };
    let before = footprint(&relay);

    // The second change alone cannot apply: refused, nothing stored.
    let err = StoredDoc::new(&acc.id)
        .receive(vec![parse(&changes[1])], &rules)
        .unwrap_err();
    assert!(
        matches!(err, Error::MissingDependencies { count: 1, .. }),
        "{err}"
    );

    // A change a local edit could not make: an unknown field.
    let mut raw = automerge::AutoCommit::load(&device.snapshot(&acc.id).unwrap()).unwrap();
    raw.set_actor(automerge::ActorId::from(&[9u8; 16][..]));
    automerge::transaction::Transactable::put(&mut raw, automerge::ROOT, "fax", "0113 496")
        .unwrap();
    raw.commit_with(
        automerge::transaction::CommitOptions::default()
            .with_message("ann".to_string())
            .with_time(2_000_000_000_000),
    );
    let fax = raw.get_last_local_change().unwrap().raw_bytes().to_vec();
    let mut stored = relay
        .transaction(|tx| tx.load_doc(&acc.id))
        .unwrap()
        .unwrap_or_else(|| StoredDoc::new(&acc.id));
    let mut all: Vec<ParsedChange> = changes.iter().map(parse).collect();
    all.push(parse(&fax));
    let err = stored.fork().receive(all, &rules).unwrap_err();
    assert_eq!(err.to_string(), "unknown field \"fax\" for a account");
    assert_eq!(footprint(&relay), before);

    // The valid ones are received and stored together.
    let received = stored
        .receive(changes.iter().map(parse).collect(), &rules)
        .unwrap();
    assert!(received.before.is_none());
    assert_eq!(received.after.text("industry"), Some("Steel"));
    relay.transaction(|tx| tx.save_doc(&mut stored)).unwrap();
    assert_eq!(relay.get(&acc.id).unwrap(), device.get(&acc.id).unwrap());
    assert!(!relay.snapshot(&acc.id).unwrap().is_empty());
}

#[test]
fn eviction_removes_records_but_keeps_unsent_changes() {
    let mut fx = fixture("ann");
    let a = account(&mut fx.store, "A", "north");
    let b = account(&mut fx.store, "B", "south");
    assert_eq!(fx.store.evict(&[a.id.clone(), "nope".into()]).unwrap(), 1);
    assert!(matches!(fx.store.get(&a.id), Err(Error::NotFound(_))));
    assert!(fx
        .store
        .search("A", None, 10)
        .unwrap()
        .iter()
        .all(|r| r.id != a.id));
    assert_eq!(fx.store.outbox_status().unwrap().pending, 2);
    let south = fx
        .store
        .transaction(|tx| tx.ids_in_territories(&["south".into()]))
        .unwrap();
    assert_eq!(south, [b.id]);
}

fn deal(
    store: &mut Store,
    account: &str,
    name: &str,
    stage: &str,
    amount: i64,
    territory: &str,
) -> Record {
    store
        .create(
            Kind::Deal,
            fields([
                ("account_id", Value::from(account)),
                ("name", Value::from(name)),
                ("stage", Value::from(stage)),
                ("amount", Value::Int(amount)),
                ("currency", Value::from("EUR")),
                ("territory", Value::from(territory)),
            ]),
        )
        .unwrap()
}

#[test]
fn pipeline_as_it_stood_at_a_past_time() {
    let mut fx = fixture("ann");
    let acme = account(&mut fx.store, "Acme", "north");
    let south = account(&mut fx.store, "Sud", "south");
    let big = deal(&mut fx.store, &acme.id, "Big", "lead", 1_000, "north");
    let small = deal(&mut fx.store, &acme.id, "Small", "lead", 50, "north");
    deal(&mut fx.store, &south.id, "Far", "lead", 7, "south");
    let then = fx.clock.load(Ordering::SeqCst);
    fx.clock.fetch_add(10, Ordering::SeqCst);
    // After `then`: one deal advances, one is deleted, one is created.
    fx.store
        .update(&big.id, fields([("stage", "won")]))
        .unwrap();
    fx.store.delete(&small.id).unwrap();
    deal(&mut fx.store, &acme.id, "Late", "proposal", 5, "north");

    let stage = |s: &[StageSummary], name: &str| {
        let e = s.iter().find(|e| e.stage == name).unwrap();
        (e.count, e.amounts.get("EUR").copied().unwrap_or(0))
    };
    let north = vec!["north".to_string()];
    let past = fx.store.pipeline_summary_at(&north, then).unwrap();
    assert_eq!(stage(&past, "lead"), (2, 1_050));
    assert_eq!(stage(&past, "won"), (0, 0));
    assert_eq!(stage(&past, "proposal"), (0, 0));
    assert_eq!(
        stage(&fx.store.pipeline_summary_at(&[], then).unwrap(), "lead"),
        (3, 1_057)
    );

    let now = fx.store.pipeline_summary(None, &north).unwrap();
    assert_eq!(stage(&now, "lead"), (0, 0));
    assert_eq!(stage(&now, "won"), (1, 1_000));
    assert_eq!(stage(&now, "proposal"), (1, 5));
}

#[test]
fn owner_counts_and_territory_narrowed_search() {
    let mut fx = fixture("ann");
    let acme = account(&mut fx.store, "Acme North", "north");
    account(&mut fx.store, "Acme South", "south");
    contact(
        &mut fx.store,
        &acme.id,
        "Ada",
        "Lovelace",
        "ada@example.com",
    );
    let counts = fx.store.owner_counts(&[]).unwrap();
    assert_eq!(
        counts,
        vec![crate::query::OwnerCount {
            owner: "ann".into(),
            accounts: 2,
            contacts: 1,
            deals: 0,
            activities: 0,
            leads: 0,
            cases: 0,
        }]
    );
    let north = vec!["north".to_string()];
    assert_eq!(fx.store.owner_counts(&north).unwrap()[0].accounts, 1);
    let names = |hits: Vec<Record>| hits.iter().map(Record::display_name).collect::<Vec<_>>();
    assert_eq!(
        names(fx.store.search_in("acme", None, &north, 10).unwrap()),
        ["Acme North"]
    );
    assert_eq!(
        fx.store
            .search_in("acme", Some(Kind::Account), &[], 10)
            .unwrap()
            .len(),
        2
    );
}

#[test]
fn a_deals_stored_stage_history_follows_its_document_through_merges() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, _) = open_at(&dir, "a.db", "ann");
    let (mut b, clock_b) = open_at(&dir, "b.db", "bob");
    clock_b.store(1_764_000_000_000 + 4_000_000, Ordering::SeqCst);
    let acc = account(&mut a, "Acme", "north");
    let d = deal(&mut a, &acc.id, "Big", "lead", 1_000, "north");
    for id in [&acc.id, &d.id] {
        b.apply_changes(id, &a.changes_since(id, &[]).unwrap())
            .unwrap();
    }
    a.update(&d.id, fields([("stage", "qualified")])).unwrap();
    b.update(&d.id, fields([("stage", "lost")])).unwrap();
    let from_b = b.changes_since(&d.id, &[]).unwrap();
    a.apply_changes(&d.id, &from_b).unwrap();
    let stored = |s: &Store| -> Option<String> {
        s.conn()
            .query_row(
                "SELECT stage_history FROM records WHERE id = ?1",
                [&d.id],
                |r| r.get(0),
            )
            .unwrap()
    };
    let expected = crate::query::stage_timeline(&mut a.load(&d.id).unwrap()).unwrap();
    assert_eq!(
        super::projection::parse_stage_history(stored(&a).as_deref()),
        Some(expected.clone())
    );
    assert_eq!(expected.len(), 3, "{expected:?}");
    // Accounts keep none; a rebuilt projection holds the same histories.
    let account_history: Option<String> = a
        .conn()
        .query_row(
            "SELECT stage_history FROM records WHERE id = ?1",
            [&acc.id],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(account_history, None);
    let flow = a.stage_flow(&[]).unwrap();
    a.rebuild_projection().unwrap();
    assert_eq!(
        super::projection::parse_stage_history(stored(&a).as_deref()),
        Some(expected)
    );
    assert_eq!(a.stage_flow(&[]).unwrap(), flow);
}
