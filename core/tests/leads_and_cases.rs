//! Leads, their conversion, and cases, through the public store API.

use fieldcrm_core::{fields, Conversion, Kind, ListQuery, Record, Store, Value};

fn store(dir: &tempfile::TempDir, name: &str, user: &str) -> Store {
    Store::open(dir.path().join(name), user).unwrap()
}

fn lead(store: &mut Store) -> Record {
    store
        .create(
            Kind::Lead,
            fields([
                ("name", "Ada Lovelace"),
                ("company", "Analytical Engines"),
                ("title", "Buyer"),
                ("email", "ada@engines.example"),
                ("phone", "+44 20 7946 0001"),
                ("source", "event"),
                ("territory", "north"),
            ]),
        )
        .unwrap()
}

fn call_about(store: &mut Store, id: &str, subject: &str) -> Record {
    store
        .create(
            Kind::Activity,
            fields([
                ("kind", "call"),
                ("subject", subject),
                ("related_to", id),
                ("territory", "north"),
            ]),
        )
        .unwrap()
}

/// Every record id in a store.
fn ids(store: &Store) -> Vec<String> {
    let q = ListQuery {
        limit: 1000,
        include_deleted: true,
        ..Default::default()
    };
    store
        .list(&q)
        .unwrap()
        .records
        .into_iter()
        .map(|r| r.id)
        .collect()
}

/// Sends `from` every change `to` lacks, record by record.
fn send(from: &Store, to: &mut Store) {
    for id in ids(from) {
        let have = to.heads(&id).unwrap_or_default();
        let changes = from.changes_since(&id, &have).unwrap();
        to.apply_changes(&id, &changes).unwrap();
    }
}

#[test]
fn new_leads_and_cases_start_new_and_take_only_their_values() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = store(&dir, "a.db", "ann");
    let l = lead(&mut s);
    assert_eq!(l.text("status"), Some("new"));
    let err = s
        .update(&l.id, fields([("status", "hot")]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("status") && err.contains("qualified"), "{err}");
    let case = s
        .create(
            Kind::Case,
            fields([("subject", "Pump broken"), ("territory", "north")]),
        )
        .unwrap();
    assert_eq!(case.text("status"), Some("new"));
    assert_eq!(case.text("priority"), Some("normal"));
    assert_eq!(case.display_name(), "Pump broken");
    let err = s
        .update(&case.id, fields([("priority", "whenever")]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("urgent"), "{err}");
    let found = s.search("Lovelace", Some(Kind::Lead), 10).unwrap();
    assert_eq!(found.len(), 1);
}

#[test]
fn a_lead_converts_in_one_offline_action() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = store(&dir, "a.db", "ann");
    let l = lead(&mut s);
    let first_call = call_about(&mut s, &l.id, "First call");
    let second_call = call_about(&mut s, &l.id, "Second call");
    let waiting = s.outbox_status().unwrap().pending;

    let done = s
        .convert_lead(
            &l.id,
            Conversion {
                account_id: None,
                deal_name: Some("Engines for Leeds".into()),
            },
        )
        .unwrap();
    assert_eq!(done.account.text("name"), Some("Analytical Engines"));
    assert_eq!(done.account.text("territory"), Some("north"));
    let c = &done.contact;
    assert_eq!(
        (c.text("first_name"), c.text("last_name")),
        (Some("Ada"), Some("Lovelace"))
    );
    assert_eq!(c.text("email"), Some("ada@engines.example"));
    assert_eq!(c.text("title"), Some("Buyer"));
    assert_eq!(c.text("account_id"), Some(done.account.id.as_str()));
    let deal = done.deal.as_ref().unwrap();
    assert_eq!(
        deal.text("stage"),
        s.pipeline().stages().first().map(String::as_str)
    );
    assert_eq!(deal.text("contact_id"), Some(c.id.as_str()));
    assert_eq!(done.lead.text("status"), Some("converted"));
    assert_eq!(done.lead.text("converted_contact_id"), Some(c.id.as_str()));
    assert_eq!(done.lead.text("converted_deal_id"), Some(deal.id.as_str()));
    assert!(matches!(done.lead.get("converted_at"), Some(Value::Int(_))));
    assert_eq!(done.moved_activities, 2);
    for call in [&first_call, &second_call] {
        assert_eq!(
            s.get(&call.id).unwrap().text("related_to"),
            Some(c.id.as_str())
        );
    }

    // Queued in the order made: the relay sees each record before what
    // points at it.
    let outbox = s.outbox(0, 100, false).unwrap();
    assert_eq!(outbox.len(), waiting + 6);
    let order: Vec<&str> = outbox[waiting..]
        .iter()
        .map(|e| e.record_id.as_str())
        .collect();
    assert_eq!(
        order,
        [
            done.account.id.as_str(),
            c.id.as_str(),
            deal.id.as_str(),
            first_call.id.as_str(),
            second_call.id.as_str(),
            l.id.as_str()
        ]
    );

    // Once only.
    let again = s.convert_lead(&l.id, Conversion::default()).unwrap_err();
    assert!(again.to_string().contains("converted already"), "{again}");
    assert_eq!(s.outbox_status().unwrap().pending, waiting + 6);
}

#[test]
fn a_lead_joins_an_existing_account_and_a_bad_choice_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = store(&dir, "a.db", "ann");
    let account = s
        .create(
            Kind::Account,
            fields([("name", "Engines Ltd"), ("territory", "north")]),
        )
        .unwrap();
    let l = lead(&mut s);
    let other_lead = lead(&mut s);
    let before = s.outbox_status().unwrap().pending;
    let err = s
        .convert_lead(
            &l.id,
            Conversion {
                account_id: Some(other_lead.id.clone()),
                deal_name: None,
            },
        )
        .unwrap_err();
    assert!(err.to_string().contains("not a live account"), "{err}");
    let err = s
        .convert_lead(
            &l.id,
            Conversion {
                account_id: None,
                deal_name: Some("  ".into()),
            },
        )
        .unwrap_err();
    assert!(err.to_string().contains("name"), "{err}");
    assert_eq!(s.outbox_status().unwrap().pending, before);
    assert_eq!(s.get(&l.id).unwrap().text("status"), Some("new"));

    let done = s
        .convert_lead(
            &l.id,
            Conversion {
                account_id: Some(account.id.clone()),
                deal_name: None,
            },
        )
        .unwrap();
    assert_eq!(done.account.id, account.id);
    assert!(done.deal.is_none());
    assert_eq!(done.contact.text("account_id"), Some(account.id.as_str()));
    assert_eq!(
        done.lead
            .get("converted_deal_id")
            .cloned()
            .unwrap_or(Value::Null),
        Value::Null
    );
    let err = s
        .convert_lead(&account.id, Conversion::default())
        .unwrap_err();
    assert!(err.to_string().contains("not a lead"), "{err}");
}

#[test]
fn two_devices_converting_one_lead_offline_keep_both_and_show_the_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = store(&dir, "a.db", "ann");
    let mut b = store(&dir, "b.db", "ann");
    let l = lead(&mut a);
    send(&a, &mut b);
    let on_a = a.convert_lead(&l.id, Conversion::default()).unwrap();
    let on_b = b.convert_lead(&l.id, Conversion::default()).unwrap();
    // While b converts, a edits the lead's phone: that edit stays on the lead.
    a.update(&l.id, fields([("phone", "+44 20 7946 0002")]))
        .unwrap();
    send(&a, &mut b);
    send(&b, &mut a);
    for s in [&a, &b] {
        let lead = s.get(&l.id).unwrap();
        assert_eq!(lead.text("status"), Some("converted"));
        assert_eq!(lead.text("phone"), Some("+44 20 7946 0002"));
        for made in [&on_a, &on_b] {
            assert!(s.get(&made.account.id).is_ok());
            assert!(s.get(&made.contact.id).is_ok());
        }
        let conflicts = s.conflicts(&l.id).unwrap();
        let fields: Vec<&str> = conflicts.iter().map(|c| c.field.as_str()).collect();
        assert!(fields.contains(&"converted_contact_id"), "{fields:?}");
    }
    assert_eq!(a.heads(&l.id).unwrap(), b.heads(&l.id).unwrap());
    assert_eq!(a.get(&l.id).unwrap(), b.get(&l.id).unwrap());
}

#[test]
fn cases_list_by_status_priority_and_overdue() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = store(&dir, "a.db", "ann");
    let now = 1_800_000_000_000i64;
    let case = |s: &mut Store, subject: &str, priority: &str, resolve_by: i64| {
        s.create(
            Kind::Case,
            fields([
                ("subject", Value::from(subject)),
                ("priority", Value::from(priority)),
                ("resolve_by", Value::Int(resolve_by)),
                ("territory", Value::from("north")),
            ]),
        )
        .unwrap()
    };
    let late = case(&mut s, "Late", "high", now - 1);
    case(&mut s, "Later", "high", now + 86_400_000);
    let done_late = case(&mut s, "Solved", "low", now - 1);
    s.update(&done_late.id, fields([("status", "resolved")]))
        .unwrap();
    let names = |q: ListQuery| -> Vec<String> {
        s.list(&q)
            .unwrap()
            .records
            .iter()
            .map(|r| r.display_name())
            .collect()
    };
    let cases = || ListQuery {
        kind: Some(Kind::Case),
        ..Default::default()
    };
    assert_eq!(
        names(ListQuery {
            field_is: vec![("priority".into(), "high".into())],
            ..cases()
        }),
        ["Late", "Later"]
    );
    assert_eq!(
        names(ListQuery {
            stage: Some("resolved".into()),
            ..cases()
        }),
        ["Solved"]
    );
    // Overdue: due before now and neither resolved nor closed.
    assert_eq!(
        names(ListQuery {
            due_before: Some(now),
            ..cases()
        }),
        [late.display_name()]
    );
    let err = s
        .list(&ListQuery {
            field_is: vec![("priority') OR 1=1 --".into(), "x".into())],
            ..cases()
        })
        .unwrap_err();
    assert!(err.to_string().contains("not a field"), "{err}");
}
