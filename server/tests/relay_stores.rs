//! One test suite for every relay store: each scenario runs against the
//! embedded SQLite store and against PostgreSQL (when
//! `FIELDCRM_TEST_POSTGRES` names a server; `.ci/run` sets it). Devices are
//! real core stores syncing through `relay::sync`, in-process.

mod common;

use std::sync::Arc;

use common::raw_client::{now_ms, RawRecord};
use fieldcrm_core::protocol::{self, Cursor, RecordBytes, Rejection, SyncRequest};
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
    /// The user as a sign-in sees them (territories under theirs included).
    fn user(&self, id: &str) -> User {
        let user = self.relay.user(id).unwrap().unwrap().0;
        self.relay.in_effect(user).unwrap()
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
            let report = device
                .apply_sync_response(&protocol::encode(&response))
                .unwrap();
            // As `Store::sync` stops: nothing more, and the outbox sent or
            // not moving (changes that wait for other devices' changes).
            let moved = report.acked + report.rejected + report.rebased > 0;
            if !response.more && (device.outbox_status().unwrap().pending == 0 || !moved) {
                return round;
            }
        }
        panic!("sync did not finish");
    }

    fn sync(&self, device: &mut Store) -> usize {
        self.sync_with(device, 16 << 20)
    }
}

impl Fixture {
    /// A second, empty store of the same kind with the same users: a
    /// relay restored from a backup taken before any record existed.
    fn twin(&self) -> Fixture {
        match self._schema {
            Some(_) => postgres(),
            None => sqlite(),
        }
        .unwrap()
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
        .map(|(u, _)| u.id)
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

    // Each user's own settings (time zone, saved filters) are theirs alone.
    use fieldcrm_server::preferences;
    preferences::set_time_zone(relay, "ann", Some("Europe/Berlin")).unwrap();
    let err = preferences::set_time_zone(relay, "ann", Some("Mars/Olympus")).unwrap_err();
    assert!(err.to_string().contains("not a time zone"), "{err}");
    preferences::save_filter(relay, "ann", Kind::Deal, "North leads", "stage=lead").unwrap();
    preferences::save_filter(relay, "ann", Kind::Deal, "North leads", "stage=won").unwrap();
    preferences::save_filter(relay, "ann", Kind::Account, "Mine", "owner=ann").unwrap();
    let ann = preferences::load(relay, "ann").unwrap();
    assert_eq!(ann.time_zone.as_deref(), Some("Europe/Berlin"));
    let deals: Vec<(&str, &str)> = ann
        .filters(Kind::Deal)
        .map(|f| (f.name.as_str(), f.query.as_str()))
        .collect();
    assert_eq!(
        deals,
        [("North leads", "stage=won")],
        "saving again replaces"
    );
    assert!(preferences::load(relay, "sam").unwrap().filters.is_empty());
    preferences::delete_filter(relay, "ann", Kind::Deal, "North leads").unwrap();
    preferences::set_time_zone(relay, "ann", None).unwrap();
    let ann = preferences::load(relay, "ann").unwrap();
    assert_eq!(ann.time_zone, None);
    assert_eq!(ann.filters.len(), 1);

    relay.set_territories("ann", &["south".into()]).unwrap();
    assert_eq!(fx.user("ann").territories, ["south"]);
    assert!(relay.set_territories("nobody", &[]).is_err());
    assert!(relay.remove_user("bob").unwrap());
    assert!(!relay.remove_user("bob").unwrap());

    // Disabling signs a user out and keeps them out; enabling lets the
    // same password in again; a reset replaces it.
    use fieldcrm_server::accounts;
    let signs_in = |password: &str| auth::login(relay, "sam", password).unwrap().is_some();
    let (_, sams) = auth::new_token();
    relay.add_token("sam", &sams).unwrap();
    accounts::set_disabled(relay, "test", "sam", true).unwrap();
    assert!(!signs_in("password1"));
    assert!(relay.user_by_token(&sams).unwrap().is_none(), "signed out");
    assert!(accounts::accounts(relay)
        .unwrap()
        .iter()
        .any(|a| a.user.id == "sam" && a.disabled));
    accounts::set_disabled(relay, "test", "sam", false).unwrap();
    assert!(signs_in("password1"));
    accounts::reset_password(relay, "test", "sam", "another-pass").unwrap();
    assert!(!signs_in("password1") && signs_in("another-pass"));
    assert!(matches!(
        accounts::set_disabled(relay, "test", "nobody", true),
        Err(relay::RelayError::NotFound(_))
    ));
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
        .push(&fx.user("ann"), "other-device", &Cursor::default(), again)
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
    let out = fx
        .relay
        .push(&fx.user("ann"), "dev-a", &Cursor::default(), push)
        .unwrap();
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
    let out = fx
        .relay
        .push(&bob, "dev-b", &Cursor::default(), stolen)
        .unwrap();
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
        Err(relay::EditRefusal::Refused { field, message, .. }) => {
            assert_eq!(field.as_deref(), Some("territory"), "{message}")
        }
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
    // Names for references: only what the reader may see, deleted included.
    let south = created[1].as_ref().unwrap().id.clone();
    let wanted = [north.clone(), south.clone(), "no-such-id".to_string()];
    let by_id = office::records_by_id(relay, &olivia, wanted.clone()).unwrap();
    assert_eq!(by_id.len(), 2);
    assert_eq!(by_id[&north].text("name"), Some("Acme North"));
    let by_id = office::records_by_id(relay, &sam, wanted).unwrap();
    assert_eq!(by_id.keys().collect::<Vec<_>>(), [&south]);
    assert!(office::records_by_id(relay, &olivia, [])
        .unwrap()
        .is_empty());
    let none = ListQuery {
        ids: Some(Vec::new()),
        ..Default::default()
    };
    assert_eq!(
        office::list(relay, &olivia, none).unwrap().total,
        0,
        "no ids, no records"
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

    // The dashboard's figures: the store's aggregate query and the same
    // deals read from their documents agree, probabilities included.
    office::edit_one(
        relay,
        &ann,
        Edit::Create {
            kind: Kind::Deal,
            fields: fields([
                ("account_id", Value::from(north.as_str())),
                ("name", Value::from("Sure")),
                ("stage", Value::from("proposal")),
                ("amount", Value::Int(2_000)),
                ("currency", Value::from("GBP")),
                ("close_date", Value::from("2026-12-10")),
                ("probability", Value::Int(90)),
                ("territory", Value::from("north")),
            ]),
        },
    )
    .unwrap();
    let now = office::deal_groups(relay, &olivia, None, None).unwrap();
    let later = office::deal_groups(relay, &olivia, None, Some(now_ms() + 60_000)).unwrap();
    assert_eq!(now, later, "the projection and the documents agree");
    let today = time::macros::date!(2026 - 11 - 20);
    let report = office::pipeline_report(relay, &olivia, None, today).unwrap();
    assert_eq!(report.open["EUR"].weighted(), 1_000, "lead counts at 20%");
    assert_eq!(report.open["GBP"].weighted(), 1_800, "its own 90%");
    let months: Vec<Option<&str>> = report.forecast.iter().map(|m| m.month.as_deref()).collect();
    assert_eq!(months, [Some("2026-12"), None]);
    let sams = office::pipeline_report(relay, &sam, None, today).unwrap();
    assert!(sams.open.is_empty(), "south sees no north deal");

    // An account's timeline takes in activities about its deals.
    let call = office::edit_one(
        relay,
        &olivia,
        Edit::Create {
            kind: Kind::Activity,
            fields: fields([
                ("kind", Value::from("call")),
                ("subject", Value::from("Called about Big")),
                ("related_to", Value::from(deal.id.as_str())),
                ("territory", Value::from("north")),
            ]),
        },
    )
    .unwrap();
    let about = |user: &User| {
        let q = ListQuery {
            about: Some(north.clone()),
            ..Default::default()
        };
        office::list(relay, user, q).unwrap().records
    };
    assert_eq!(
        about(&olivia).iter().map(|r| &r.id).collect::<Vec<_>>(),
        [&call.id]
    );
    assert!(about(&sam).is_empty());

    // Stage conversion from the deals' stage histories.
    office::edit_one(
        relay,
        &olivia,
        Edit::Update {
            id: deal.id.clone(),
            fields: fields([("stage", "qualified")]),
        },
    )
    .unwrap();
    let flow = office::stage_conversions(relay, &olivia).unwrap();
    let row = |stage: &str| {
        let r = flow.iter().find(|r| r.stage == stage).unwrap();
        (
            r.reached,
            r.moved_on,
            r.open_here,
            r.average_stay_ms.is_some(),
        )
    };
    assert_eq!(
        row("lead"),
        (2, 2, 0, true),
        "Big left lead; Sure skipped it"
    );
    assert_eq!(row("qualified"), (2, 1, 1, false));
    assert_eq!(row("proposal"), (1, 0, 1, false));
    assert!(office::stage_conversions(relay, &sam)
        .unwrap()
        .iter()
        .all(|r| r.reached == 0));

    // A device receives office edits by sync.
    let mut device = fx.device("ann");
    fx.sync(&mut device);
    assert_eq!(device.get(&north).unwrap().text("phone"), Some("+44 2"));
}

/// Pushes `changes` as `user` and returns the one rejection, checking that
/// nothing was stored.
fn refused(fx: &Fixture, user: &str, changes: Vec<RecordBytes>) -> Rejection {
    let before = fx.relay.stats().unwrap();
    let out = fx
        .relay
        .push(&fx.user(user), "raw-client", &Cursor::default(), changes)
        .unwrap();
    let after = fx.relay.stats().unwrap();
    assert_eq!(
        (before.records, before.log_entries),
        (after.records, after.log_entries),
        "something of a refused push was stored: {:?}",
        out.rejected
    );
    assert!(out.acks.is_empty(), "acknowledged: {:?}", out.rejected);
    assert_eq!(out.rejected.len(), 1, "{:?}", out.rejected);
    out.rejected.into_iter().next().unwrap()
}

fn accepted(fx: &Fixture, user: &str, changes: Vec<RecordBytes>) {
    let n = changes.len();
    let out = fx
        .relay
        .push(&fx.user(user), "raw-client", &Cursor::default(), changes)
        .unwrap();
    assert!(out.rejected.is_empty(), "{:?}", out.rejected);
    assert_eq!(out.acks.len(), n);
}

/// What a third-party client found the relay stored (issue 13), refused
/// now with the reason a device's own validation gives.
fn values_the_data_model_forbids_are_refused_in_the_devices_words(fx: Fixture) {
    let mut acme = RawRecord::account("ann", "Acme", "north");
    accepted(&fx, "ann", vec![acme.commit()]);
    let mut deal = RawRecord::deal("ann", &acme.id, "north");
    accepted(&fx, "ann", vec![deal.commit()]);

    /// What a case writes, the rejection code and the reason expected.
    type Case = (
        &'static str,
        Box<dyn Fn(&mut RawRecord)>,
        &'static str,
        &'static str,
    );
    let cases: Vec<Case> = vec![
        (
            "amount as a string",
            Box::new(|d| {
                d.put("amount", "12.5");
            }),
            "invalid_value",
            "invalid value for field \"amount\": \"12.5\" (amount must be an integer number of minor units (cents))",
        ),
        (
            "amount as a float",
            Box::new(|d| {
                d.put("amount", 12.5);
            }),
            "invalid_value",
            "invalid value for field \"amount\": 12.5 (amount must be an integer number of minor units (cents))",
        ),
        (
            "an unknown field",
            Box::new(|d| {
                d.put("fax", "0113 496 0000");
            }),
            "unknown_field",
            "unknown field \"fax\" for a deal",
        ),
        (
            "a stage outside the pipeline",
            Box::new(|d| {
                d.put("stage", "dreaming");
            }),
            "invalid_value",
            "invalid value for field \"stage\": \"dreaming\" (not a stage of the pipeline (lead, qualified, proposal, negotiation, won, lost))",
        ),
        (
            "a required field cleared",
            Box::new(|d| {
                d.put("name", ());
            }),
            "missing_field",
            "field \"name\" of a deal is required",
        ),
        (
            "a currency not in stored form",
            Box::new(|d| {
                d.put("currency", "eur");
            }),
            "invalid_value",
            "invalid value for field \"currency\": \"eur\" (not in stored form; a local edit stores \"EUR\")",
        ),
        (
            "a probability out of range",
            Box::new(|d| {
                d.put("probability", 250);
            }),
            "invalid_value",
            "invalid value for field \"probability\": 250 (must be between 0 and 100)",
        ),
        (
            "long text written as a plain string",
            Box::new(|d| {
                d.put("notes", "call back");
            }),
            "invalid_value",
            "invalid value for field \"notes\": \"call back\" (long text is stored as an Automerge Text object, not a plain string)",
        ),
        (
            "a short field written as Text",
            Box::new(|d| {
                d.put_object("name", automerge::ObjType::Text, "Big");
            }),
            "invalid_value",
            "invalid value for field \"name\": \"Big\" (stored as long text (an Automerge Text object); this field holds a plain string)",
        ),
        (
            "a custom field with a bad name",
            Box::new(|d| {
                d.put_in("custom", "Tier", "gold");
            }),
            "invalid_value",
            "invalid value for field \"custom.Tier\": \"Tier\" (custom field names are 1-64 of a-z, 0-9 and _, starting with a letter)",
        ),
        (
            "the creator rewritten",
            Box::new(|d| {
                d.put("created_by", "bob");
            }),
            "invalid_value",
            "invalid value for field \"created_by\": \"bob\" (it is set when the record is created and never changes)",
        ),
    ];
    let snapshot = {
        let mut device = fx.device("olivia");
        fx.sync(&mut device);
        device.snapshot(&deal.id).unwrap()
    };
    for (what, write, code, reason) in cases {
        let mut hostile = RawRecord::load(&deal.id, "ann", &snapshot);
        write(&mut hostile);
        let r = refused(&fx, "ann", vec![hostile.commit()]);
        assert_eq!(
            (r.code.as_str(), r.reason.as_str()),
            (code, reason),
            "{what}"
        );
    }

    // A device's own validation words it the same way.
    let mut device = fx.device("ann");
    fx.sync(&mut device);
    let err = device
        .update(&deal.id, fields([("amount", 12.5)]))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid value for field \"amount\": 12.5 (amount must be an integer number of minor units (cents))"
    );

    // A change stamped in seconds, as JavaScript Automerge does by default.
    let mut late = RawRecord::load(&deal.id, "ann", &snapshot);
    late.put("amount", 500);
    let r = refused(&fx, "ann", vec![late.commit_at(now_ms() / 1000)]);
    assert_eq!(r.code, "implausible_time");
    assert!(r.reason.contains("not seconds"), "{}", r.reason);

    // A record made with schema 2, or as someone else.
    let mut future = RawRecord::account("ann", "Future", "north");
    future.put("schema", 2);
    let r = refused(&fx, "ann", vec![future.commit()]);
    assert!(r.reason.contains("newer than this build"), "{}", r.reason);
    let mut forged = RawRecord::account("ann", "Forged", "north");
    forged.put("created_by", "bob");
    let r = refused(&fx, "ann", vec![forged.commit()]);
    assert_eq!(r.field.as_deref(), Some("created_by"), "{}", r.reason);

    // A concurrent value that loses the merge is checked all the same.
    let mut a = RawRecord::load(&deal.id, "ann", &snapshot);
    let mut b = a.fork();
    let good = {
        a.put("amount", 700);
        a.commit()
    };
    let bad = {
        b.put("amount", "lots");
        b.commit()
    };
    accepted(&fx, "ann", vec![good]);
    let r = refused(&fx, "ann", vec![bad]);
    assert!(r.reason.contains("\"lots\""), "{}", r.reason);

    // The relay's record is as the accepted changes left it.
    let mut office = fx.device("olivia");
    fx.sync(&mut office);
    let stored = office.get(&deal.id).unwrap();
    assert_eq!(stored.get("amount"), Some(&Value::Int(700)));
    assert_eq!(stored.text("name"), Some("Big deal"));
    assert!(stored.get("fax").is_none() && stored.get("currency").is_none());
}

/// References, owners and territories must name what exists — and what
/// the pusher may see, answering a foreign id exactly as an unknown one.
fn references_owners_and_territories_must_exist_for_the_pusher(fx: Fixture) {
    let mut north = RawRecord::account("ann", "Northwind", "north");
    accepted(&fx, "ann", vec![north.commit()]);

    let mut foreign = RawRecord::deal("sam", &north.id, "south");
    let r = refused(&fx, "sam", vec![foreign.commit()]);
    let mut unknown = RawRecord::deal("sam", "0190e0c5-0000-7000-8000-000000000000", "south");
    let u = refused(&fx, "sam", vec![unknown.commit()]);
    assert_eq!(
        (r.code.as_str(), u.code.as_str()),
        ("bad_reference", "bad_reference")
    );
    assert_eq!(
        r.reason.replace(&north.id, "ID"),
        u.reason
            .replace("0190e0c5-0000-7000-8000-000000000000", "ID"),
        "a foreign id must answer as an unknown one"
    );
    assert_eq!(r.field.as_deref(), Some("account_id"));

    let mut nobody = RawRecord::account("ann", "Owned by nobody", "north");
    nobody.put("owner", "zed");
    let r = refused(&fx, "ann", vec![nobody.commit()]);
    assert_eq!(
        r.reason,
        "invalid value for field \"owner\": \"zed\" (no such user)"
    );
    // An office user could place a record anywhere, but only where a territory exists.
    let mut nowhere = RawRecord::account("olivia", "Nowhere", "east");
    let r = refused(&fx, "olivia", vec![nowhere.commit()]);
    assert_eq!(
        r.reason,
        "invalid value for field \"territory\": \"east\" (no such territory)"
    );

    // An account and a deal on it in one push: the deal may come first.
    let mut account = RawRecord::account("ann", "Together", "north");
    let mut deal = RawRecord::deal("ann", &account.id, "north");
    let (a, d) = (account.commit(), deal.commit());
    let out = fx.relay.push(
        &fx.user("ann"),
        "raw-client",
        &Cursor::default(),
        vec![a.clone(), d.clone()],
    );
    assert!(out.unwrap().rejected.is_empty());
    let mut other = RawRecord::account("ann", "Later", "north");
    let mut on_later = RawRecord::deal("ann", &other.id, "north");
    let (o, l) = (other.commit(), on_later.commit());
    let out = fx
        .relay
        .push(
            &fx.user("ann"),
            "raw-client",
            &Cursor::default(),
            vec![l, o],
        )
        .unwrap();
    // The deal before its account in one push: tried again after it.
    assert!(out.rejected.is_empty(), "{:?}", out.rejected);
    assert_eq!(out.acks.len(), 2);
}

/// Territory rules are checked before and after each change, per change.
fn territory_moves_and_foreign_records_are_refused_per_change(fx: Fixture) {
    let mut acme = RawRecord::account("ann", "Acme", "north");
    accepted(&fx, "ann", vec![acme.commit()]);
    let mut sud = RawRecord::account("sam", "Sud", "south");
    accepted(&fx, "sam", vec![sud.commit()]);

    acme.put("territory", "south");
    let r = refused(&fx, "ann", vec![acme.commit()]);
    assert_eq!(
        (r.code.as_str(), r.field.as_deref()),
        ("outside_territory", Some("territory"))
    );
    assert_eq!(
        r.reason,
        format!(
            "record {} would move to territory \"south\", outside yours",
            acme.id
        )
    );
    let mut snapshot_holder = fx.device("olivia");
    fx.sync(&mut snapshot_holder);
    let mut theirs = RawRecord::load(&sud.id, "ann", &snapshot_holder.snapshot(&sud.id).unwrap());
    theirs.put("phone", "+44 1");
    let r = refused(&fx, "ann", vec![theirs.commit()]);
    assert_eq!(r.code, "not_yours");
    assert_eq!(
        r.reason,
        format!("record {} is not in your territories", sud.id)
    );
}

/// The same refusals on both stores, where they used to differ.
fn both_stores_answer_alike(fx: Fixture) {
    let err = fx
        .relay
        .add_user("ann", "hash", Role::Rep, &[])
        .unwrap_err();
    assert!(
        matches!(err, relay::RelayError::AlreadyExists(_)),
        "{err:?}"
    );
    assert_eq!(err.to_string(), "user \"ann\" already exists");
    let err = fx.relay.set_territories("nobody", &[]).unwrap_err();
    assert!(matches!(err, relay::RelayError::NotFound(_)), "{err:?}");
    let err = fx
        .relay
        .add_user("zed", "hash", Role::Rep, &["east".into()])
        .unwrap_err();
    assert!(matches!(err, relay::RelayError::Invalid(_)), "{err:?}");

    // An actor belongs to the first user who pushed with it: another
    // user's change with it is refused on its own, not the whole push.
    let mut device = fx.device("ann");
    let id = account(&mut device, "Acme", "north");
    let stolen = device.changes_since(&id, &[]).unwrap();
    let mut bob_device = fx.device("bob");
    let bobs = account(&mut bob_device, "Bobs", "north");
    let mut push: Vec<RecordBytes> = bob_device
        .changes_since(&bobs, &[])
        .unwrap()
        .into_iter()
        .map(|bytes| RecordBytes {
            record_id: bobs.clone(),
            bytes,
        })
        .collect();
    fx.sync(&mut device);
    // Re-signed as bob with ann's actor: forge it with raw Automerge.
    let mut forged = RawRecord::load(&id, "bob", &device.snapshot(&id).unwrap());
    forged.put("phone", "+44 2");
    let forged_change = forged.commit();
    let ann_actor = device.actor_hex();
    let forged_change = with_actor(&forged_change, &ann_actor);
    push.push(forged_change);
    let out = fx
        .relay
        .push(&fx.user("bob"), "bob-device", &Cursor::default(), push)
        .unwrap();
    assert_eq!(out.acks.len(), 1, "bob's own change is stored");
    assert_eq!(out.rejected.len(), 1);
    assert_eq!(out.rejected[0].code, "foreign_actor");
    assert_eq!(
        out.rejected[0].reason,
        format!("actor {ann_actor} belongs to another user")
    );
    assert!(!stolen.is_empty());

    // Office edits say which field they are about.
    let err = office::edit_one(
        &*fx.relay,
        &fx.user("olivia"),
        Edit::Update {
            id: id.clone(),
            fields: fields([("phone", "call me")]),
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("phone"), "{err}");
    let refusal = office::try_edit(
        &*fx.relay,
        &fx.user("olivia"),
        Edit::Update {
            id: id.clone(),
            fields: fields([("phone", "call me")]),
        },
    )
    .unwrap()
    .unwrap_err();
    match refusal {
        relay::EditRefusal::Refused { field, code, .. } => {
            assert_eq!(
                (field.as_deref(), code.as_str()),
                (Some("phone"), "invalid_value")
            )
        }
        other => panic!("{other:?}"),
    }
}

/// Issue 14, story 1: a refused change used to fork the record on the
/// device for good. Now the device takes the relay's copy back, re-makes
/// its later edits on top, and keeps the refused one to retry or discard.
fn a_refused_change_never_forks_the_record(fx: Fixture) {
    let mut ann = fx.device("ann");
    let mut olivia = fx.device("olivia");
    let id = account(&mut ann, "Acme", "north");
    fx.sync(&mut ann);
    ann.update(&id, fields([("phone", "+44 1")])).unwrap();
    // The device cannot know "ghost" is nobody; the relay refuses it.
    ann.update(&id, fields([("owner", "ghost")])).unwrap();
    ann.update(&id, fields([("industry", "Steel")])).unwrap();
    ann.update(&id, fields([("notes", "first visit")])).unwrap();
    fx.sync(&mut ann);
    fx.sync(&mut olivia);

    let mine = ann.get(&id).unwrap();
    assert_eq!(
        mine,
        olivia.get(&id).unwrap(),
        "the device equals the relay"
    );
    assert_eq!(mine.text("phone"), Some("+44 1"));
    assert_eq!(
        mine.text("industry"),
        Some("Steel"),
        "a later edit survives"
    );
    assert_eq!(mine.text("notes"), Some("first visit"));
    assert_eq!(
        mine.text("owner"),
        Some("ann"),
        "the refused intent is left out"
    );
    let status = ann.outbox_status().unwrap();
    assert_eq!((status.pending, status.rejected), (0, 1));
    let refused = ann.refused_changes().unwrap();
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].record_id, id);
    assert_eq!(refused[0].field.as_deref(), Some("owner"));
    assert_eq!(refused[0].code, "invalid_value");
    assert_eq!(
        refused[0].reason,
        "invalid value for field \"owner\": \"ghost\" (no such user)"
    );
    assert_eq!(
        refused[0]
            .fields
            .iter()
            .map(|f| (f.field.as_str(), f.new.clone()))
            .collect::<Vec<_>>(),
        [("owner", Value::from("ghost"))]
    );
    // Each accepted edit is in the relay's history exactly once.
    let history = olivia.history(&id).unwrap();
    for (field, value) in [("phone", "+44 1"), ("industry", "Steel")] {
        let times = history
            .iter()
            .filter(|h| {
                h.fields
                    .iter()
                    .any(|f| f.field == field && f.new == Value::from(value))
            })
            .count();
        assert_eq!(times, 1, "{field} applied {times} times");
    }

    // Later edits go through, and the relay's other changes still arrive.
    olivia
        .update(&id, fields([("website", "acme.example")]))
        .unwrap();
    fx.sync(&mut olivia);
    ann.update(&id, fields([("phone", "+44 2")])).unwrap();
    fx.sync(&mut ann);
    fx.sync(&mut olivia);
    assert_eq!(ann.get(&id).unwrap(), olivia.get(&id).unwrap());
    assert_eq!(ann.outbox_status().unwrap().pending, 0);

    // Once "ghost" is a user, a retry makes the intent again, as a new change.
    let hash = auth::hash_password("password1").unwrap();
    fx.relay
        .add_user("ghost", &hash, Role::Rep, &["north".into()])
        .unwrap();
    let retried = ann.retry_refused(refused[0].id).unwrap();
    assert_eq!(retried.text("owner"), Some("ghost"));
    fx.sync(&mut ann);
    fx.sync(&mut olivia);
    assert_eq!(olivia.get(&id).unwrap().text("owner"), Some("ghost"));
    assert!(ann.refused_changes().unwrap().is_empty());
    assert_eq!(ann.get(&id).unwrap(), olivia.get(&id).unwrap());
}

/// A record created before the device knew the user's territories, in one
/// that is not theirs: refused, gone from the device, kept as an intent;
/// its later edits wait with it; a retry after the grant re-creates it.
fn a_refused_creation_is_kept_and_can_be_retried(fx: Fixture) {
    let mut sam = fx.device("sam");
    let id = account(&mut sam, "Wrong side", "north");
    sam.update(&id, fields([("phone", "+44 3")])).unwrap();
    let keep = account(&mut sam, "Right side", "south");
    fx.sync(&mut sam);
    assert!(
        sam.get(&id).is_err(),
        "the relay has no such record for sam"
    );
    assert!(sam.get(&keep).is_ok());
    let refused = sam.refused_changes().unwrap();
    assert_eq!(refused.len(), 2, "{refused:?}");
    assert!(refused[0].creates && refused[0].code == "outside_territory");
    assert_eq!(refused[1].code, "depends_on_refused");
    assert!(
        refused[1].reason.contains("was not created"),
        "{}",
        refused[1].reason
    );
    // Now the device knows its territories: the same create is refused at the call.
    let err = sam
        .create(
            Kind::Account,
            fields([("name", "Again"), ("territory", "north")]),
        )
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid value for field \"territory\": \"north\" (not one of your territories (south))"
    );
    // Discard the edit; grant north; retry the creation.
    sam.discard_refused(refused[1].id).unwrap();
    fx.relay
        .set_territories("sam", &["north".into(), "south".into()])
        .unwrap();
    fx.sync(&mut sam); // learns the new territories
    let made = sam.retry_refused(refused[0].id).unwrap();
    assert_eq!(
        (made.id.as_str(), made.text("name")),
        (id.as_str(), Some("Wrong side"))
    );
    fx.sync(&mut sam);
    let mut olivia = fx.device("olivia");
    fx.sync(&mut olivia);
    assert_eq!(olivia.get(&id).unwrap().text("territory"), Some("north"));
    assert!(sam.refused_changes().unwrap().is_empty());
}

/// Issue 14, story 2: an edit made while the rep had the territory, that
/// arrives after it was taken away, used to be refused and its record
/// evicted. Now it waits in a review queue; the device keeps the record
/// until the office decides; accepted, it is applied as the rep's change.
fn edits_made_before_a_revocation_wait_for_review(fx: Fixture) {
    let relay = &*fx.relay;
    let mut ann = fx.device("ann");
    let kept = account(&mut ann, "Kept", "north");
    let dropped = account(&mut ann, "Dropped", "north");
    let other = account(&mut ann, "Untouched", "north");
    fx.sync(&mut ann);
    // Offline edits, then the office takes the north away.
    ann.update(&kept, fields([("phone", "+44 7")])).unwrap();
    ann.update(&kept, fields([("industry", "Mining")])).unwrap();
    ann.update(&dropped, fields([("phone", "+44 8")])).unwrap();
    relay.set_territories("ann", &[]).unwrap();
    fx.sync(&mut ann);

    let status = ann.outbox_status().unwrap();
    assert_eq!((status.pending, status.held, status.rejected), (0, 3, 0));
    assert!(
        ann.get(&other).is_err(),
        "what has nothing waiting is evicted"
    );
    assert_eq!(
        ann.get(&kept).unwrap().text("industry"),
        Some("Mining"),
        "kept until decided"
    );
    let err = ann.update(&kept, fields([("phone", "+44 9")])).unwrap_err();
    assert_eq!(err.code(), "not_yours", "{err}");

    // Who sees the queue: office and the north's manager, not a rep.
    let olivia = fx.user("olivia");
    let queue = office::review_queue(relay, &olivia).unwrap();
    assert_eq!(queue.len(), 3);
    assert_eq!(queue[0].held.record_id, kept);
    assert_eq!(queue[0].held.user, "ann");
    assert_eq!(queue[0].record_name, "Kept");
    assert_eq!(
        queue[0]
            .fields
            .iter()
            .map(|f| f.field.as_str())
            .collect::<Vec<_>>(),
        ["phone"]
    );
    assert_eq!(queue[1].fields[0].new, Value::from("Mining"));
    assert!(office::review_queue(relay, &fx.user("bob"))
        .unwrap()
        .is_empty());
    assert!(office::decide_record(relay, &fx.user("bob"), &kept, true).is_err());

    let decided = office::decide_record(relay, &olivia, &kept, true).unwrap();
    assert_eq!(decided, vec![relay::review::Decided::Accepted; 2]);
    let decided = office::decide_record(relay, &olivia, &dropped, false).unwrap();
    assert_eq!(decided, vec![relay::review::Decided::Discarded]);
    assert!(office::review_queue(relay, &olivia).unwrap().is_empty());
    let detail = office::record(relay, &olivia, &kept).unwrap();
    assert_eq!(detail.record.text("industry"), Some("Mining"));
    let last = detail.history.last().unwrap();
    assert_eq!(last.user, "ann", "applied as its author's change");

    // The device learns both outcomes, and only then lets the records go.
    fx.sync(&mut ann);
    assert!(ann.get(&kept).is_err() && ann.get(&dropped).is_err());
    let status = ann.outbox_status().unwrap();
    assert_eq!((status.pending, status.held, status.rejected), (0, 0, 1));
    let refused = ann.refused_changes().unwrap();
    assert_eq!(refused[0].record_id, dropped);
    assert_eq!(refused[0].code, "discarded");
    assert_eq!(refused[0].reason, "discarded on review by olivia");
    assert_eq!(refused[0].fields[0].new, Value::from("+44 8"));

    // A record moved out of the rep's territory while she edited it offline.
    relay.set_territories("ann", &["north".into()]).unwrap();
    fx.sync(&mut ann);
    let mut office_device = fx.device("olivia");
    fx.sync(&mut office_device);
    ann.update(&other, fields([("website", "untouched.example")]))
        .unwrap();
    office_device
        .update(&other, fields([("territory", "south")]))
        .unwrap();
    fx.sync(&mut office_device);
    fx.sync(&mut ann);
    assert_eq!(ann.outbox_status().unwrap().held, 1);
    let err = ann
        .update(&other, fields([("phone", "+44 10")]))
        .unwrap_err();
    assert_eq!(err.code(), "not_yours", "kept only until decided: {err}");
    office::decide_record(relay, &olivia, &other, true).unwrap();
    fx.sync(&mut ann);
    fx.sync(&mut office_device);
    assert_eq!(
        office_device.get(&other).unwrap().text("website"),
        Some("untouched.example")
    );
    assert!(ann.get(&other).is_err());
    assert_eq!(ann.outbox_status().unwrap().held, 0);
}

/// Issue 14, story 3: a re-granted territory used to come back with only
/// the records other devices had touched. Now it comes back whole, with
/// history; so does a record moved out and back, and a removed and
/// re-added user's view.
fn what_a_device_evicted_comes_back_complete(fx: Fixture) {
    let mut ann = fx.device("ann");
    let mut made: Vec<String> = (0..25)
        .map(|i| account(&mut ann, &format!("Mine {i:02}"), "north"))
        .collect();
    ann.update(&made[0], fields([("phone", "+44 5")])).unwrap();
    fx.sync(&mut ann);
    made.sort();

    // Territory removed and re-added.
    fx.relay.set_territories("ann", &[]).unwrap();
    fx.sync(&mut ann);
    assert!(ids(&ann).is_empty(), "north evicted");
    fx.relay.set_territories("ann", &["north".into()]).unwrap();
    fx.sync_with(&mut ann, 3_000);
    assert_eq!(ids(&ann), made, "every record back");
    assert_eq!(ann.history(&made[0]).unwrap().len(), 2, "with its history");

    // A record moved out and back.
    let mut olivia = fx.device("olivia");
    fx.sync(&mut olivia);
    olivia
        .update(&made[1], fields([("territory", "south")]))
        .unwrap();
    fx.sync(&mut olivia);
    fx.sync(&mut ann);
    assert!(ann.get(&made[1]).is_err());
    olivia
        .update(&made[1], fields([("territory", "north")]))
        .unwrap();
    olivia
        .update(&made[1], fields([("phone", "+44 6")]))
        .unwrap();
    fx.sync(&mut olivia);
    fx.sync(&mut ann);
    assert_eq!(ann.get(&made[1]).unwrap(), olivia.get(&made[1]).unwrap());

    // Out and back between two syncs: the device ends with it.
    olivia
        .update(&made[2], fields([("territory", "south")]))
        .unwrap();
    olivia
        .update(&made[2], fields([("territory", "north")]))
        .unwrap();
    fx.sync(&mut olivia);
    fx.sync(&mut ann);
    assert_eq!(ann.get(&made[2]).unwrap(), olivia.get(&made[2]).unwrap());

    // A user removed and re-added (same name, territories changed meanwhile).
    fx.relay.remove_user("ann").unwrap();
    let hash = auth::hash_password("password1").unwrap();
    fx.relay.add_user("ann", &hash, Role::Rep, &[]).unwrap();
    fx.sync(&mut ann);
    assert!(ids(&ann).is_empty());
    fx.relay.set_territories("ann", &["north".into()]).unwrap();
    fx.sync_with(&mut ann, 3_000);
    assert_eq!(ids(&ann), made);
    for id in &made {
        assert_eq!(ann.get(id).unwrap(), olivia.get(id).unwrap(), "{id}");
    }
}

/// The stage analysis reads each deal's stage history from the store's
/// rows; it must be what the deals' documents say, also after concurrent
/// stage moves merged from two devices.
fn stage_analysis_agrees_with_the_deals_documents(fx: Fixture) {
    let mut ann = fx.device("ann");
    let mut olivia = fx.device("olivia");
    let north = account(&mut ann, "Acme", "north");
    let deal = |name: &str| {
        fields([
            ("account_id", Value::from(north.as_str())),
            ("name", Value::from(name)),
            ("stage", Value::from("lead")),
            ("territory", Value::from("north")),
        ])
    };
    let big = ann.create(Kind::Deal, deal("Big")).unwrap().id;
    let small = ann.create(Kind::Deal, deal("Small")).unwrap().id;
    fx.sync(&mut ann);
    fx.sync(&mut olivia);
    ann.update(&big, fields([("stage", "qualified")])).unwrap();
    fx.sync(&mut ann);
    // Offline at once: one moves it on, the other loses it.
    ann.update(&small, fields([("stage", "proposal")])).unwrap();
    olivia.update(&small, fields([("stage", "lost")])).unwrap();
    fx.sync(&mut ann);
    fx.sync(&mut olivia);
    fx.sync(&mut ann);
    let pipeline = fieldcrm_core::Pipeline::default();
    let mut expected = fieldcrm_core::StageFlow::default();
    for id in [&big, &small] {
        let bytes = fx.relay.document(id).unwrap().unwrap();
        let mut doc = fieldcrm_core::RecordDoc::load(id, Some(&bytes), []).unwrap();
        expected.add_deal(&pipeline, &fieldcrm_core::stage_timeline(&mut doc).unwrap());
    }
    assert_eq!(fx.relay.stage_flow(&[]).unwrap(), expected);
    assert_eq!(fx.relay.stage_flow(&["north".into()]).unwrap(), expected);
    assert_eq!(
        fx.relay.stage_flow(&["south".into()]).unwrap(),
        fieldcrm_core::StageFlow::default()
    );
    let qualified = expected
        .conversions(&pipeline)
        .into_iter()
        .find(|c| c.stage == "lead")
        .unwrap();
    assert_eq!(qualified.reached, 2, "{qualified:?}");
}

/// Everything a device's projection holds, keyed by record id: the row,
/// its full-text entry and its attachment references.
fn projection_rows(store: &Store) -> Vec<Vec<Option<String>>> {
    let mut stmt = store
        .sql()
        .prepare(
            "SELECT r.id, r.kind, r.name, r.territory, r.stage, CAST(r.amount AS TEXT),
                    r.record, CAST(r.has_conflicts AS TEXT), r.stage_history,
                    f.name, f.email, f.phone, f.notes,
                    (SELECT group_concat(sha256) FROM attachment_refs a WHERE a.record_id = r.id)
             FROM records r LEFT JOIN records_fts f ON f.rowid = r.rowid ORDER BY r.id",
        )
        .unwrap();
    stmt.query_map([], |row| (0..14).map(|i| row.get(i)).collect())
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// A fresh device bootstraps from the relay's projections without reading
/// the documents; what it stores is exactly what reading them gives, it
/// searches and edits the records at once, and a projection it cannot use
/// (another reading, not a record, bytes that are not a document) makes
/// it read that document instead (bytes that are not one whole chunk:
/// `doc.rs`'s unit test).
fn a_bootstrap_from_projections_holds_what_reading_the_documents_gives(fx: Fixture) {
    let mut ann = fx.device("ann");
    let mut bob = fx.device("bob");
    let acme = account(&mut ann, "Acme Tools", "north");
    ann.create(
        Kind::Contact,
        fields([
            ("first_name", Value::from("Ada")),
            ("last_name", Value::from("Quist")),
            ("email", Value::from("ada@acme.test")),
            ("phone", Value::from("+44 20 7946 0958")),
            ("account_id", Value::from(acme.as_str())),
            ("territory", Value::from("north")),
        ]),
    )
    .unwrap();
    let deal = ann
        .create(
            Kind::Deal,
            fields([
                ("account_id", Value::from(acme.as_str())),
                ("name", Value::from("Big order")),
                ("stage", Value::from("lead")),
                ("amount", Value::from(12_000)),
                ("territory", Value::from("north")),
            ]),
        )
        .unwrap()
        .id;
    ann.update(&deal, fields([("stage", "qualified")])).unwrap();
    fx.sync(&mut ann);
    fx.sync(&mut bob);
    // Offline at once: the account's phone gets two values.
    ann.update(&acme, fields([("phone", "+1 555 0100")]))
        .unwrap();
    bob.update(&acme, fields([("phone", "+1 555 0199")]))
        .unwrap();
    fx.sync(&mut ann);
    fx.sync(&mut bob);

    let user = fx.user("bob");
    let fresh = |projections: bool| {
        let device = fx.device("bob");
        let mut request: SyncRequest = protocol::decode(&device.sync_request().unwrap()).unwrap();
        request.projections = projections;
        let (response, _) = relay::sync(&*fx.relay, &user, request).unwrap();
        (device, response)
    };
    let (_, plain) = fresh(false);
    assert!(plain.projections.is_empty(), "not asked for, not sent");
    let (mut adopted, response) = fresh(true);
    assert_eq!(response.snapshots.len(), 3);
    let shipped: Vec<&str> = response
        .projections
        .iter()
        .map(|p| p.record_id.as_str())
        .collect();
    let sent: Vec<&str> = response
        .snapshots
        .iter()
        .map(|s| s.record_id.as_str())
        .collect();
    assert_eq!(shipped, sent, "one projection per snapshot, in order");
    let conflicted = response
        .projections
        .iter()
        .find(|p| p.record_id == acme)
        .unwrap();
    assert!(
        conflicted.has_conflicts,
        "the relay's row says the phone has two values"
    );
    adopted
        .apply_sync_response(&protocol::encode(&response))
        .unwrap();

    let rows = projection_rows(&adopted);
    assert_eq!(rows.len(), 3);
    adopted.rebuild_projection().unwrap();
    assert_eq!(
        projection_rows(&adopted),
        rows,
        "adopted rows = rows read from the documents"
    );
    assert_eq!(
        adopted.search("7946", None, 10).unwrap().len(),
        1,
        "indexed"
    );
    assert_eq!(
        adopted.search("Quist", None, 10).unwrap().len(),
        1,
        "indexed"
    );

    // A device that cannot use a projection reads that document instead.
    let (mut wary, mut odd) = fresh(true);
    odd.projections[2].record = odd.projections[0].record.clone(); // another record's
    odd.projections[0].reading += 1;
    odd.projections[1].record = "{\"not\": \"a record\"}".into();
    wary.apply_sync_response(&protocol::encode(&odd)).unwrap();
    assert_eq!(projection_rows(&wary), rows);

    // An adopted record's document loads like any other: edit and sync.
    adopted
        .update(&deal, fields([("stage", "proposal")]))
        .unwrap();
    fx.sync(&mut adopted);
    fx.sync(&mut ann);
    assert_eq!(ann.get(&deal).unwrap().text("stage"), Some("proposal"));
    assert!(adopted.integrity_check().is_ok());
}

/// A device's history names the device of every change: its own, another
/// device's (learnt from the relay with the changes or the snapshot), and
/// the office's (`web`).
fn history_names_the_device_of_every_change(fx: Fixture) {
    let mut ann = fx.device("ann");
    let mut olivia = fx.device("olivia");
    let id = account(&mut ann, "Acme", "north");
    fx.sync(&mut ann);
    fx.sync(&mut olivia); // a snapshot
    let devices = |store: &Store| -> Vec<Option<String>> {
        store
            .history(&id)
            .unwrap()
            .into_iter()
            .map(|h| h.device)
            .collect()
    };
    assert_eq!(devices(&olivia), [Some(ann.device_id().to_string())]);
    olivia.update(&id, fields([("phone", "+44 1")])).unwrap();
    fx.sync(&mut olivia);
    office::edit_one(
        &*fx.relay,
        &fx.user("olivia"),
        Edit::Update {
            id: id.clone(),
            fields: fields([("phone", "+44 2")]),
        },
    )
    .unwrap();
    fx.sync(&mut ann); // changes from the log
    assert_eq!(
        devices(&ann),
        [
            Some(ann.device_id().to_string()),
            Some(olivia.device_id().to_string()),
            Some("web".to_string()),
        ]
    );
}

/// Pushes arriving at once (one group commit, on either store) are each
/// answered on their own, logged once under their own device, and a
/// refused change in one leaves its neighbours stored.
fn pushes_at_once_are_answered_one_by_one_and_logged_under_their_devices(fx: Fixture) {
    // (user, the territory of their first record, of the other two)
    let pushers = [
        ("ann", "north", "north"),
        ("ann", "north", "north"),
        ("bob", "north", "north"),
        ("bob", "north", "north"),
        ("sam", "south", "south"),
        ("sam", "north", "south"), // not sam's: refused, the other two stored
    ];
    let at_once = std::sync::Barrier::new(pushers.len());
    let made: Vec<(String, Vec<String>, fieldcrm_core::OutboxStatus)> =
        std::thread::scope(|scope| {
            let threads: Vec<_> = pushers
                .iter()
                .enumerate()
                .map(|(i, (user, first, rest))| {
                    let (fx, at_once) = (&fx, &at_once);
                    scope.spawn(move || {
                        let mut device = fx.device(user);
                        let ids: Vec<String> = (0..3)
                            .map(|n| {
                                let t = if n == 0 { first } else { rest };
                                account(&mut device, &format!("Pusher {i} #{n}"), t)
                            })
                            .collect();
                        at_once.wait();
                        fx.sync(&mut device);
                        let status = device.outbox_status().unwrap();
                        (device.device_id().to_string(), ids, status)
                    })
                })
                .collect();
            threads.into_iter().map(|t| t.join().unwrap()).collect()
        });
    for (i, (_, _, status)) in made.iter().enumerate() {
        let refused = usize::from(i == 5);
        assert_eq!(
            (status.pending, status.rejected),
            (0, refused),
            "pusher {i}: {status:?}"
        );
    }
    assert_eq!(fx.relay.stats().unwrap().log_entries, 17);
    let mut olivia = fx.device("olivia");
    fx.sync(&mut olivia);
    let all = olivia
        .list(&ListQuery {
            limit: 100,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(all.total, 17);
    for (i, (device, ids, _)) in made.iter().enumerate() {
        for (n, id) in ids.iter().enumerate() {
            let history = olivia.history(id);
            if i == 5 && n == 0 {
                assert!(history.is_err() || history.unwrap().is_empty());
                continue;
            }
            let devices: Vec<Option<String>> =
                history.unwrap().into_iter().map(|h| h.device).collect();
            assert_eq!(devices, [Some(device.clone())], "pusher {i}, record {n}");
        }
    }
}

/// A search is a page of the filtered records' best matches with a count
/// up to a cap, on every store alike.
fn search_pages_are_filtered_ranked_and_counted(fx: Fixture) {
    let relay = &*fx.relay;
    let olivia = fx.user("olivia");
    let edits = (0..12)
        .map(|i| Edit::Create {
            kind: Kind::Account,
            fields: fields([
                ("name", Value::from(format!("Harbour {i:02}"))),
                (
                    "territory",
                    Value::from(if i % 3 == 0 { "south" } else { "north" }),
                ),
                (
                    "owner",
                    Value::from(if i % 2 == 0 { "ann" } else { "olivia" }),
                ),
            ]),
        })
        .collect();
    for made in office::edit(relay, &olivia, edits).unwrap() {
        made.unwrap();
    }
    let q = |offset: usize, limit: usize| ListQuery {
        kind: Some(Kind::Account),
        offset,
        limit,
        ..Default::default()
    };
    let all = relay.search_page("harb", &q(0, 5), 100).unwrap();
    assert_eq!((all.records.len(), all.total), (5, 12));
    let rest = relay.search_page("harb", &q(5, 50), 100).unwrap();
    assert_eq!(rest.records.len(), 7);
    let mut names: Vec<String> = all
        .records
        .iter()
        .chain(&rest.records)
        .map(|r| r.display_name())
        .collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 12, "pages neither repeat nor skip a match");
    assert_eq!(
        relay.search_page("harb", &q(0, 5), 8).unwrap().total,
        8,
        "counted up to the cap"
    );
    assert_eq!(
        relay.search_page("harb", &q(0, 5), 0).unwrap().total,
        5,
        "not counted"
    );
    let narrowed = relay
        .search_page(
            "harb",
            &ListQuery {
                owner: Some("ann".into()),
                territories: vec!["north".into()],
                ..q(0, 50)
            },
            100,
        )
        .unwrap();
    // Even i (ann) and not a multiple of 3 (north): 2, 4, 8, 10.
    assert_eq!(narrowed.total, 4);
    assert!(narrowed
        .records
        .iter()
        .all(|r| r.text("owner") == Some("ann") && r.text("territory") == Some("north")));
    assert_eq!(relay.search_page("  ", &q(0, 5), 100).unwrap().total, 0);
    assert!(
        relay.search_page("harb", &q(0, 0), 100).is_err(),
        "a limit of 0"
    );
}

/// A change re-made with another actor id (same content, same record).
fn a_device_ahead_of_a_restored_relay_sends_its_changes_again(fx: Fixture) {
    // Before "the backup" nothing existed; afterwards ann made an account
    // and a contact, olivia (office) edited the account on top of ann's
    // change, and ann edited it again on top of olivia's.
    let mut ann = fx.device("ann");
    let mut olivia = fx.device("olivia");
    let a1 = account(&mut ann, "Acme", "north");
    let c1 = ann
        .create(
            Kind::Contact,
            fields([
                ("first_name", "Ada"),
                ("last_name", "Lovelace"),
                ("territory", "north"),
                ("account_id", &a1),
            ]),
        )
        .unwrap()
        .id;
    fx.sync(&mut ann);
    fx.sync(&mut olivia);
    olivia
        .update(&a1, fields([("industry", "Retail")]))
        .unwrap();
    fx.sync(&mut olivia);
    fx.sync(&mut ann);
    ann.update(&a1, fields([("phone", "+44 1")])).unwrap();
    fx.sync(&mut ann);
    let ann_log = ann.cursor().unwrap().log.unwrap();
    assert_eq!(ann_log, fx.relay.log_id());

    // The relay is restored: a store with another log identity that lacks
    // all of it. Its first answer looks at none of the push and says so.
    let restored = fx.twin();
    assert_ne!(restored.relay.log_id(), fx.relay.log_id());
    ann.update(&c1, fields([("title", "Buyer")])).unwrap();
    let request: SyncRequest = protocol::decode(&ann.sync_request().unwrap()).unwrap();
    assert_eq!(request.push.len(), 1);
    let (response, appended) =
        relay::sync(&*restored.relay, &restored.user("ann"), request).unwrap();
    assert!(response.restored && response.more);
    assert!(response.acks.is_empty() && response.rejected.is_empty());
    assert_eq!(appended.changes, 0);
    assert_eq!(
        response.cursor.log.as_deref(),
        Some(restored.relay.log_id())
    );
    let round = ann
        .apply_sync_response(&protocol::encode(&response))
        .unwrap();
    // Her three earlier changes, then the waiting one.
    assert_eq!(round.requeued, 3, "{round:?}");
    let outbox = ann.outbox(0, 100, false).unwrap();
    let order: Vec<&str> = outbox.iter().map(|e| e.record_id.as_str()).collect();
    assert_eq!(order, [&a1, &a1, &c1, &c1], "her oldest record goes first");
    // ann's edit built on olivia's change waits for it; olivia's own device
    // sends hers again, then ann's goes as it was made.
    restored.sync(&mut ann);
    assert_eq!(ann.outbox_status().unwrap().pending, 1);
    restored.sync(&mut olivia);
    restored.sync(&mut ann);
    restored.sync(&mut olivia);
    assert_eq!(ann.outbox_status().unwrap().pending, 0);
    assert!(ann.refused_changes().unwrap().is_empty());
    assert!(olivia.refused_changes().unwrap().is_empty());
    let mut fresh = restored.device("olivia");
    restored.sync(&mut fresh);
    let fresh_a1 = fresh.get(&a1).unwrap();
    for field in ["industry", "phone"] {
        assert_eq!(
            fresh_a1.fields.get(field),
            ann.get(&a1).unwrap().fields.get(field)
        );
    }
    assert_eq!(
        fresh_a1.fields.get("industry"),
        Some(&Value::from("Retail"))
    );
    assert_eq!(fresh_a1.fields.get("phone"), Some(&Value::from("+44 1")));
    assert_eq!(
        fresh.get(&c1).unwrap().fields.get("title"),
        Some(&Value::from("Buyer"))
    );
    for device in [&ann, &olivia] {
        assert_eq!(ids(device), ids(&fresh));
        for id in ids(device) {
            assert_eq!(device.heads(&id).unwrap(), fresh.heads(&id).unwrap());
        }
    }

    // A copy restored by hand keeps the log's identity: a cursor past the
    // log's end tells the same.
    let head = restored.relay.head().unwrap();
    let mut ahead = ann.cursor().unwrap();
    ahead.seq = head + 10;
    let (response, _) = relay::sync(
        &*restored.relay,
        &restored.user("ann"),
        SyncRequest {
            version: protocol::PROTOCOL_VERSION,
            device_id: ann.device_id().to_string(),
            cursor: ahead,
            push: Vec::new(),
            max_bytes: 1 << 20,
            projections: true,
        },
    )
    .unwrap();
    assert!(response.restored);
    // A cursor at the end is not.
    let (response, _) = relay::sync(
        &*restored.relay,
        &restored.user("ann"),
        protocol::decode(&ann.sync_request().unwrap()).unwrap(),
    )
    .unwrap();
    assert!(!response.restored);

    // On PostgreSQL, `fieldcrm-server restore` after pg_restore gives the
    // log its new identity.
    if let Some(schema) = &restored._schema {
        let before = PgRelay::open(&schema.url(), 1).unwrap();
        before.mark_restored().unwrap();
        let after = PgRelay::open(&schema.url(), 1).unwrap();
        assert_ne!(after.log_id(), before.log_id());
    }
}

fn a_lead_made_and_converted_offline_is_taken_in_one_push(fx: Fixture) {
    // The lead's last change names records made after its first one: the
    // relay tries it again once the rest of the push is in.
    let mut ann = fx.device("ann");
    fx.sync(&mut ann);
    let lead = ann
        .create(
            Kind::Lead,
            fields([
                ("name", "Ada Lovelace"),
                ("company", "Analytical Engines"),
                ("territory", "north"),
            ]),
        )
        .unwrap();
    let done = ann
        .convert_lead(
            &lead.id,
            fieldcrm_core::Conversion {
                account_id: None,
                deal_name: Some("Engines".into()),
            },
        )
        .unwrap();
    let request: SyncRequest = protocol::decode(&ann.sync_request().unwrap()).unwrap();
    assert_eq!(request.push.len(), 5);
    let (response, _) = relay::sync(&*fx.relay, &fx.user("ann"), request).unwrap();
    assert!(response.rejected.is_empty(), "{:?}", response.rejected);
    assert_eq!(response.acks.len(), 5);
    ann.apply_sync_response(&protocol::encode(&response))
        .unwrap();
    let mut office = fx.device("olivia");
    fx.sync(&mut office);
    let seen = office.get(&lead.id).unwrap();
    assert_eq!(seen.text("status"), Some("converted"));
    let deal = done.deal.unwrap();
    assert_eq!(seen.text("converted_deal_id"), Some(deal.id.as_str()));
    assert_eq!(office.get(&deal.id).unwrap().text("name"), Some("Engines"));

    // Cases list alike on both stores: by priority, open, overdue.
    let day = 86_400_000;
    for (subject, priority, status, resolve_by) in [
        ("Pump", "high", "open", now_ms() - day),
        ("Door", "high", "resolved", now_ms() - day),
        ("Valve", "low", "open", now_ms() + day),
    ] {
        ann.create(
            Kind::Case,
            fields([
                ("subject", Value::from(subject)),
                ("priority", priority.into()),
                ("status", status.into()),
                ("resolve_by", Value::Int(resolve_by)),
                ("territory", "north".into()),
            ]),
        )
        .unwrap();
    }
    fx.sync(&mut ann);
    let names = |q: ListQuery| -> Vec<String> {
        let mut n: Vec<String> = fx
            .relay
            .list(&q)
            .unwrap()
            .records
            .iter()
            .map(|r| r.display_name())
            .collect();
        n.sort();
        n
    };
    let cases = || ListQuery {
        kind: Some(Kind::Case),
        ..Default::default()
    };
    let high = ListQuery {
        field_is: vec![("priority".into(), "high".into())],
        ..cases()
    };
    assert_eq!(names(high.clone()), ["Door", "Pump"]);
    let open_high = ListQuery {
        not_done: true,
        ..high
    };
    assert_eq!(names(open_high), ["Pump"]);
    let overdue = ListQuery {
        due_before: Some(now_ms()),
        ..cases()
    };
    assert_eq!(names(overdue), ["Pump"]);
    let resolved = ListQuery {
        stage: Some("resolved".into()),
        ..cases()
    };
    assert_eq!(names(resolved), ["Door"]);
    let hostile = ListQuery {
        field_is: vec![("x') OR true --".into(), "y".into())],
        ..cases()
    };
    assert!(fx.relay.list(&hostile).is_err());

    // Office edits that stand or fall together: a refusal keeps none.
    let olivia = fx.user("olivia");
    let before = fx.relay.head().unwrap();
    let id = uuid::Uuid::now_v7().to_string();
    let together = fx
        .relay
        .edit_together(
            &olivia,
            "web",
            vec![
                Edit::CreateWithId {
                    id: id.clone(),
                    kind: Kind::Account,
                    fields: fields([("name", "Kept?"), ("territory", "north")]),
                },
                Edit::Update {
                    id: id.clone(),
                    fields: fields([("owner", "nobody-at-all")]),
                },
            ],
        )
        .unwrap();
    assert!(together.is_err(), "{together:?}");
    assert_eq!(fx.relay.head().unwrap(), before);
    assert!(fx.relay.document(&id).unwrap().is_none());
    let create_as = |name: &str| {
        fx.relay
            .edit_together(
                &olivia,
                "web",
                vec![Edit::CreateWithId {
                    id: id.clone(),
                    kind: Kind::Account,
                    fields: fields([("name", name), ("territory", "north")]),
                }],
            )
            .unwrap()
    };
    assert_eq!(create_as("Kept").unwrap()[0].id, id);
    let twice = create_as("Again").unwrap_err();
    assert!(twice.to_string().contains("exists already"), "{twice}");

    // A reference to a record that is nowhere stays refused.
    let mut bob = fx.device("bob");
    fx.sync(&mut bob);
    let other = bob
        .create(
            Kind::Lead,
            fields([("name", "Grace Hopper"), ("territory", "north")]),
        )
        .unwrap();
    fx.sync(&mut bob);
    let snapshot = fx.relay.document(&other.id).unwrap().unwrap();
    let bad = RawRecord::load(&other.id, "bob", &snapshot)
        .put("converted_account_id", "no-such-account")
        .commit();
    let refusal = refused(&fx, "bob", vec![bad]);
    assert_eq!(refusal.code, "bad_reference", "{refusal:?}");
}

fn territories_form_a_tree_and_moving_one_changes_who_sees_it(fx: Fixture) {
    use fieldcrm_server::accounts;
    let relay = &*fx.relay;
    relay.add_territory("region").unwrap();
    accounts::set_territory_parent(relay, "test", "north", Some("region")).unwrap();
    let hash = auth::hash_password("password1").unwrap();
    relay
        .add_user("rita", &hash, Role::Manager, &["region".to_string()])
        .unwrap();
    assert_eq!(fx.user("rita").territories, ["north", "region"]);
    // Territories form a tree.
    let err = accounts::set_territory_parent(relay, "test", "region", Some("north"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("cannot go under"), "{err}");
    let err = accounts::set_territory_parent(relay, "test", "north", Some("nowhere"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("no territory \"nowhere\""), "{err}");

    let mut ann = fx.device("ann");
    let mut sam = fx.device("sam");
    let north_account = account(&mut ann, "North Ltd", "north");
    let south_account = account(&mut sam, "South Ltd", "south");
    fx.sync(&mut ann);
    fx.sync(&mut sam);
    let mut rita = fx.device("rita");
    fx.sync(&mut rita);
    assert_eq!(ids(&rita), std::slice::from_ref(&north_account));

    // South joins the region: rita's device fetches it whole.
    accounts::set_territory_parent(relay, "test", "south", Some("region")).unwrap();
    fx.sync(&mut rita);
    let mut both = vec![north_account.clone(), south_account.clone()];
    both.sort();
    assert_eq!(ids(&rita), both);
    // North leaves it: evicted from her device, kept on ann's.
    accounts::set_territory_parent(relay, "test", "north", None).unwrap();
    fx.sync(&mut rita);
    assert_eq!(ids(&rita), [south_account]);
    assert_eq!(ids(&ann), [north_account]);
    let parents = relay.territory_parents().unwrap();
    assert!(parents.contains(&("south".to_string(), Some("region".to_string()))));
    assert!(parents.contains(&("north".to_string(), None)));
}

fn a_rep_cannot_change_a_won_deals_amount_and_a_manager_can(fx: Fixture) {
    let hash = auth::hash_password("password1").unwrap();
    fx.relay
        .add_user("maria", &hash, Role::Manager, &["north".to_string()])
        .unwrap();
    let mut ann = fx.device("ann");
    fx.sync(&mut ann);
    let acme = account(&mut ann, "Acme", "north");
    let deal = ann
        .create(
            Kind::Deal,
            fields([
                ("account_id", Value::from(acme.as_str())),
                ("name", "Annual supply".into()),
                ("stage", "proposal".into()),
                ("amount", Value::Int(100_000)),
                ("territory", "north".into()),
            ]),
        )
        .unwrap();
    // Open: a rep changes the amount and wins the deal.
    ann.update(&deal.id, fields([("amount", Value::Int(120_000))]))
        .unwrap();
    ann.update(&deal.id, fields([("stage", "won")])).unwrap();
    fx.sync(&mut ann);
    assert!(ann.refused_changes().unwrap().is_empty());
    // Won: the amount is no longer the rep's to change; notes still are.
    // The device knows the rep's standing from the relay and refuses at
    // the call; a device that does not know it yet is refused by the relay.
    let err = ann
        .update(&deal.id, fields([("amount", Value::Int(1))]))
        .unwrap_err();
    assert_eq!(err.code(), "not_allowed");
    assert!(
        err.to_string().contains("only managers and the office"),
        "{err}"
    );
    ann.update(&deal.id, fields([("notes", "Signed on site")]))
        .unwrap();
    let mut unaware = fx.device("ann");
    fx.sync(&mut unaware);
    let bytes = unaware
        .sql()
        .execute("DELETE FROM meta WHERE key = 'sync.standing'", [])
        .unwrap();
    assert_eq!(bytes, 1);
    let path = unaware.path().to_string();
    drop(unaware);
    let mut unaware = Store::open(path, "ann").unwrap();
    unaware
        .update(&deal.id, fields([("amount", Value::Int(1))]))
        .unwrap();
    fx.sync(&mut unaware);
    let [refused] = unaware.refused_changes().unwrap().try_into().unwrap();
    assert_eq!(refused.code, "not_allowed");
    assert_eq!(refused.field.as_deref(), Some("amount"));
    assert!(
        refused.reason.contains("only managers and the office"),
        "{}",
        refused.reason
    );
    fx.sync(&mut ann);
    let at_relay = fx.relay.record(&deal.id).unwrap().unwrap().record;
    assert_eq!(at_relay.get("amount"), Some(&Value::Int(120_000)));
    assert_eq!(at_relay.text("notes"), Some("Signed on site"));
    assert_eq!(
        ann.get(&deal.id).unwrap().get("amount"),
        Some(&Value::Int(120_000))
    );
    // The office edit path follows the same rule; a manager may.
    let by = |user: &str, amount: i64| {
        office::try_edit(
            &*fx.relay,
            &fx.user(user),
            Edit::Update {
                id: deal.id.clone(),
                fields: fields([("amount", Value::Int(amount))]),
            },
        )
        .unwrap()
    };
    let err = by("ann", 2).unwrap_err().to_string();
    assert!(err.contains("may not change \"amount\""), "{err}");
    assert_eq!(
        by("maria", 130_000).unwrap().get("amount"),
        Some(&Value::Int(130_000))
    );
    assert_eq!(
        by("olivia", 140_000).unwrap().get("amount"),
        Some(&Value::Int(140_000))
    );
}

fn an_edit_on_another_devices_lost_change_waits_for_it_then_is_made_again(fx: Fixture) {
    // ann made an account after the backup; olivia edited it.
    let mut ann = fx.device("ann");
    let mut olivia = fx.device("olivia");
    let acme = account(&mut ann, "Acme", "north");
    fx.sync(&mut ann);
    fx.sync(&mut olivia);
    olivia.update(&acme, fields([("phone", "+44 1")])).unwrap();
    fx.sync(&mut olivia);
    let edit = olivia.heads(&acme).unwrap();

    // The relay is restored without either. olivia syncs first: her edit
    // lacks ann's account, so it waits, unchanged, and her copy stays.
    let restored = fx.twin();
    restored.sync(&mut olivia);
    assert_eq!(olivia.outbox_status().unwrap().pending, 1);
    assert!(olivia.refused_changes().unwrap().is_empty());
    assert_eq!(olivia.heads(&acme).unwrap(), edit);
    // Sent again at every sync; once ann's device has sent the account
    // again, it goes as it was made.
    restored.sync(&mut olivia);
    restored.sync(&mut ann);
    restored.sync(&mut olivia);
    assert_eq!(olivia.outbox_status().unwrap().pending, 0);
    restored.sync(&mut ann);
    assert_eq!(
        ann.heads(&acme).unwrap(),
        edit,
        "the same history everywhere"
    );

    // If the other device does not come back within the wait, the edit is
    // made again: it waits for its record, and is made again on it as soon
    // as the record is back.
    let again = fx.twin();
    let mut olivia2 = fx.device("olivia");
    let mut ann2 = fx.device("ann");
    let other = account(&mut ann2, "Other", "north");
    restored.sync(&mut ann2);
    restored.sync(&mut olivia2);
    olivia2
        .update(&other, fields([("phone", "+44 2")]))
        .unwrap();
    restored.sync(&mut olivia2);
    again.sync(&mut olivia2);
    assert_eq!(olivia2.outbox_status().unwrap().pending, 1);
    let four_days = 4 * 86_400_000i64;
    olivia2
        .sql()
        .execute(
            "UPDATE outbox SET refused_at = refused_at - ?1",
            [four_days],
        )
        .unwrap();
    again.sync(&mut olivia2);
    let [waiting] = olivia2.refused_changes().unwrap().try_into().unwrap();
    assert_eq!(waiting.code, "waits_for_record");
    again.sync(&mut ann2);
    again.sync(&mut olivia2);
    assert!(olivia2.refused_changes().unwrap().is_empty());
    assert_eq!(olivia2.outbox_status().unwrap().pending, 0);
    let at_relay = again.relay.record(&other).unwrap().unwrap().record;
    assert_eq!(at_relay.text("phone"), Some("+44 2"));
}

fn with_actor(change: &RecordBytes, actor_hex: &str) -> RecordBytes {
    let parsed = automerge::Change::from_bytes(change.bytes.clone()).unwrap();
    let mut expanded = parsed.decode();
    expanded.actor_id = automerge::ActorId::from(hex::decode(actor_hex).unwrap());
    RecordBytes {
        record_id: change.record_id.clone(),
        bytes: automerge::Change::from(expanded).raw_bytes().to_vec(),
    }
}

/// The organisation configuration: an admin defines a picklist field, a
/// rep's device receives it at its next sync, and the device and the
/// relay both check values by it.
fn the_configuration_reaches_every_device_and_values_follow_it(fx: Fixture) {
    use fieldcrm_core::{ConfigEntry, CustomType, FieldEntry, PickEntry, CONFIG_ID};
    let hash = auth::hash_password("password1").unwrap();
    fx.relay.add_user("ada", &hash, Role::Admin, &[]).unwrap();
    let mut ann = fx.device("ann");
    fx.sync(&mut ann);
    let acme = account(&mut ann, "Acme", "north");
    fx.sync(&mut ann);
    assert!(ann.config().custom_field(Kind::Account, "tier").is_none());

    let value = |v: &str, retired: bool| ConfigEntry::PickValue {
        list: "tier".into(),
        value: v.into(),
        entry: PickEntry {
            label: v.to_uppercase(),
            position: None,
            retired,
        },
    };
    let tier = ConfigEntry::Field {
        kind: Kind::Account,
        name: "tier".into(),
        entry: FieldEntry {
            label: "Tier".into(),
            ty: CustomType::Picklist,
            picklist: Some("tier".into()),
            refers_to: None,
            required: false,
            searchable: false,
            position: None,
            retired: false,
        },
    };
    let set = |user: &str, entry: &ConfigEntry| {
        office::set_config_entry(&*fx.relay, &fx.user(user), entry).unwrap()
    };
    // Only admins change it, in the office and from a device alike.
    let err = set("olivia", &value("gold", false))
        .unwrap_err()
        .to_string();
    assert!(err.contains("only admins"), "{err}");
    let err = set("ann", &value("gold", false)).unwrap_err().to_string();
    assert!(err.contains("only admins"), "{err}");
    // A field needs its picklist first.
    let err = set("ada", &tier).unwrap_err().to_string();
    assert!(err.contains("no such picklist"), "{err}");
    for entry in [value("gold", false), value("silver", false), tier.clone()] {
        set("ada", &entry).unwrap();
    }
    // A field's type never changes.
    let mut retyped = tier.clone();
    if let ConfigEntry::Field { entry, .. } = &mut retyped {
        entry.ty = CustomType::Text;
        entry.picklist = None;
    }
    let err = set("ada", &retyped).unwrap_err().to_string();
    assert!(err.contains("type never changes"), "{err}");

    // The rep's device receives it at its next sync.
    fx.sync(&mut ann);
    let def = ann.config().custom_field(Kind::Account, "tier").unwrap();
    assert_eq!(def.entry.label, "Tier");
    assert!(ann.config().allows("tier", "gold"));
    // A rep's device refuses a change of it at the call, as the relay would.
    let err = ann
        .update(CONFIG_ID, fields([("name", "Mine now")]))
        .unwrap_err();
    assert_eq!(err.code(), "not_allowed", "{err}");
    // Set through the same calls a form uses; a wrong value is refused here.
    ann.update(&acme, fields([("custom.tier", "gold")]))
        .unwrap();
    let err = ann
        .update(&acme, fields([("custom.tier", "platinum")]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("custom.tier") && err.contains("platinum") && err.contains("gold, silver"),
        "{err}"
    );
    let beta = account(&mut ann, "Beta", "north");
    fx.sync(&mut ann);
    assert!(ann.refused_changes().unwrap().is_empty());

    // ... and at the relay: a device that never received the configuration
    // (it takes any custom value) has its change refused, naming the field.
    let mut bob = fx.device("bob");
    let bob_account = bob
        .create(
            Kind::Account,
            fields([
                ("name", Value::from("Gamma")),
                ("territory", "north".into()),
                ("custom.tier", "platinum".into()),
            ]),
        )
        .unwrap()
        .id;
    fx.sync(&mut bob);
    let [refused] = bob.refused_changes().unwrap().try_into().unwrap();
    assert_eq!(refused.code, "invalid_value");
    assert_eq!(refused.field.as_deref(), Some("custom.tier"));
    assert!(fx.relay.record(&bob_account).unwrap().is_none());
    // Bob's device has the configuration now; the office's lists filter by it.
    assert!(bob.config().custom_field(Kind::Account, "tier").is_some());
    let gold = office::list(
        &*fx.relay,
        &fx.user("olivia"),
        ListQuery {
            kind: Some(Kind::Account),
            field_is: vec![("custom.tier".into(), "gold".into())],
            ..Default::default()
        },
    )
    .unwrap();
    let names: Vec<String> = gold.records.iter().map(|r| r.display_name()).collect();
    assert_eq!(names, ["Acme"]);

    // Retired: offered to no-one, still valid for records (and offline edits).
    set("ada", &value("silver", true)).unwrap();
    fx.sync(&mut ann);
    ann.update(&beta, fields([("custom.tier", "silver")]))
        .unwrap();
    fx.sync(&mut ann);
    assert!(ann.refused_changes().unwrap().is_empty());
    let silver = ann
        .config()
        .picklist("tier")
        .iter()
        .find(|v| v.value == "silver")
        .cloned();
    assert!(silver.unwrap().retired);

    // Required: new records must set it; old ones are not refused for it.
    let mut required = tier;
    if let ConfigEntry::Field { entry, .. } = &mut required {
        entry.required = true;
    }
    set("ada", &required).unwrap();
    fx.sync(&mut ann);
    let err = ann
        .create(
            Kind::Account,
            fields([("name", "Delta"), ("territory", "north")]),
        )
        .unwrap_err();
    assert!(err.to_string().contains("custom.tier"), "{err}");
    ann.update(&acme, fields([("phone", "+44 20 7946 0000")]))
        .unwrap();
    fx.sync(&mut ann);
    assert!(ann.refused_changes().unwrap().is_empty());
    // It is never deleted, not even by an admin.
    let err = office::try_edit(
        &*fx.relay,
        &fx.user("ada"),
        Edit::Delete {
            id: CONFIG_ID.into(),
        },
    )
    .unwrap()
    .unwrap_err()
    .to_string();
    assert!(err.contains("never deleted"), "{err}");
    // The configuration's own history names who changed it.
    let history = fx.relay.record(CONFIG_ID).unwrap().unwrap().history;
    assert!(history.iter().all(|h| h.user == "ada"), "{history:?}");
}

/// Issue 18's done-when: two reps make the same account and contact
/// offline; the office merges each pair; a third device, offline through
/// the merge, edits the duplicate contact and links new records to both
/// duplicates. After sync every device and the office hold one account
/// and one contact with both reps' notes, activities and deals and the
/// late edits; what met another value waits for review; the account's
/// merge can be undone, the contact's (changed since) cannot.
fn duplicates_made_offline_merge_into_one_with_every_edit_kept(fx: Fixture) {
    let (mut ann, mut bob, mut tablet) = (fx.device("ann"), fx.device("bob"), fx.device("bob"));
    for d in [&mut ann, &mut bob, &mut tablet] {
        fx.sync(d);
    }
    // Offline, each rep makes "Acme GmbH / Jane Doe" with a deal and a call.
    let made = |d: &mut Store, who: &str, extra: (&str, &str), jane: (&str, &str)| {
        let acme = d
            .create(
                Kind::Account,
                fields([
                    ("name", "Acme GmbH"),
                    ("territory", "north"),
                    ("notes", &*format!("{who}'s note")),
                    extra,
                ]),
            )
            .unwrap()
            .id;
        let contact = d
            .create(
                Kind::Contact,
                fields([
                    ("account_id", &*acme),
                    ("first_name", "Jane"),
                    ("last_name", "Doe"),
                    ("territory", "north"),
                    ("notes", &*format!("{who} met Jane")),
                    jane,
                ]),
            )
            .unwrap()
            .id;
        d.create(
            Kind::Deal,
            fields([
                ("account_id", &*acme),
                ("name", &*format!("{who}'s deal")),
                ("stage", "lead"),
                ("territory", "north"),
            ]),
        )
        .unwrap();
        d.create(
            Kind::Activity,
            fields([
                ("kind", "call"),
                ("subject", &*format!("{who}'s call")),
                ("related_to", &*contact),
                ("territory", "north"),
            ]),
        )
        .unwrap();
        (acme, contact)
    };
    let (acme, jane) = made(
        &mut ann,
        "ann",
        ("phone", "+49 30 1111"),
        ("email", "jane@acme.de"),
    );
    let (acme2, jane2) = made(
        &mut bob,
        "bob",
        ("website", "acme.de"),
        ("email", "j.doe@acme.de"),
    );
    fx.sync(&mut ann);
    fx.sync(&mut bob);
    fx.sync(&mut tablet);

    // The office merges bob's pair into ann's.
    let olivia = fx.user("olivia");
    let err = office::merge(&*fx.relay, &fx.user("ann"), &acme, &acme2, &[])
        .unwrap()
        .unwrap_err();
    assert!(err.to_string().contains("only office and admin"), "{err}");
    let merged = office::merge(&*fx.relay, &olivia, &acme, &acme2, &[])
        .unwrap()
        .unwrap();
    assert_eq!(merged.taken, ["notes", "website"]);
    assert_eq!(merged.repointed, 2, "bob's contact and deal");
    // The same merge again is the same result; the other way round is refused.
    let again = office::merge(&*fx.relay, &olivia, &acme, &acme2, &[])
        .unwrap()
        .unwrap();
    assert_eq!(again.repointed, 0);
    let err = office::merge(&*fx.relay, &olivia, &acme2, &acme, &[])
        .unwrap()
        .unwrap_err();
    assert!(err.to_string().contains("merged into"), "{err}");
    office::merge(&*fx.relay, &olivia, &jane, &jane2, &[])
        .unwrap()
        .unwrap();

    // The tablet, offline through the merge, edits bob's Jane and links
    // new records to both duplicates.
    tablet
        .update(
            &jane2,
            fields([
                ("title", "CTO"),
                ("email", "jane.doe@acme.de"),
                ("notes", "bob met Jane, she wants a demo"),
            ]),
        )
        .unwrap();
    let late_call = tablet
        .create(
            Kind::Activity,
            fields([
                ("kind", "call"),
                ("subject", "demo call"),
                ("related_to", &*jane2),
                ("territory", "north"),
            ]),
        )
        .unwrap()
        .id;
    let late_deal = tablet
        .create(
            Kind::Deal,
            fields([
                ("account_id", &*acme2),
                ("name", "demo deal"),
                ("stage", "lead"),
                ("territory", "north"),
            ]),
        )
        .unwrap()
        .id;
    fx.sync(&mut tablet);
    assert_eq!(
        tablet.outbox_status().unwrap().pending,
        0,
        "every late change was taken"
    );
    for d in [&mut ann, &mut bob, &mut tablet] {
        fx.sync(d);
    }

    // The email met ann's: it waits for review, as bob's, from the merge.
    let held = fx.relay.held_changes(&relay::access::Scope::All).unwrap();
    assert_eq!(held.len(), 1, "{held:?}");
    assert_eq!(
        (
            held[0].record_id.as_str(),
            held[0].user.as_str(),
            held[0].device.as_str()
        ),
        (jane.as_str(), "bob", "merge")
    );
    let decided = fx.relay.decide(&olivia, &[held[0].hash], true).unwrap();
    assert_eq!(decided, [relay::review::Decided::Accepted]);
    for d in [&mut ann, &mut bob, &mut tablet] {
        fx.sync(d);
    }

    let live = |store: &Store, kind: Kind| -> Vec<fieldcrm_core::Record> {
        store
            .list(&ListQuery {
                kind: Some(kind),
                limit: 100,
                ..Default::default()
            })
            .unwrap()
            .records
    };
    for (name, d) in [("ann", &ann), ("bob", &bob), ("tablet", &tablet)] {
        let accounts = live(d, Kind::Account);
        assert_eq!(
            accounts.iter().map(|r| &r.id).collect::<Vec<_>>(),
            [&acme],
            "{name}"
        );
        assert_eq!(
            accounts[0].text("notes"),
            Some("ann's note\n\nbob's note"),
            "{name}"
        );
        assert_eq!(accounts[0].text("website"), Some("acme.de"), "{name}");
        let contacts = live(d, Kind::Contact);
        assert_eq!(contacts.len(), 1, "{name}: {contacts:?}");
        let c = &contacts[0];
        assert_eq!(c.id, jane, "{name}");
        assert_eq!(
            c.text("notes"),
            Some("ann met Jane\n\nbob met Jane, she wants a demo"),
            "{name}"
        );
        assert_eq!(
            c.text("title"),
            Some("CTO"),
            "{name}: carried from the tombstone"
        );
        assert_eq!(
            c.text("email"),
            Some("jane.doe@acme.de"),
            "{name}: accepted in review"
        );
        let deals = live(d, Kind::Deal);
        assert_eq!(deals.len(), 3, "{name}");
        assert!(
            deals
                .iter()
                .all(|deal| deal.text("account_id") == Some(acme.as_str())),
            "{name}: {deals:?}"
        );
        let calls = live(d, Kind::Activity);
        assert_eq!(calls.len(), 3, "{name}");
        assert!(
            calls
                .iter()
                .all(|a| a.text("related_to") == Some(jane.as_str())),
            "{name}: {calls:?}"
        );
        let gone = d.get(&jane2).unwrap();
        assert!(gone.deleted, "{name}");
        assert_eq!(
            fieldcrm_core::merge::merged_into(&gone),
            Some(jane.as_str())
        );
        // Every device holds the very documents the relay holds.
        for id in [&acme, &jane, &jane2, &late_call, &late_deal] {
            assert_eq!(
                d.get(id).unwrap(),
                office::record(&*fx.relay, &olivia, id).unwrap().record,
                "{name}: {id}"
            );
        }
    }
    // The survivor's history tells what came from where.
    let history = office::record(&*fx.relay, &olivia, &jane).unwrap().history;
    assert!(
        history
            .iter()
            .any(|h| h.user == "bob" && h.fields.iter().any(|f| f.field == "title")),
        "{history:?}"
    );
    assert_eq!(
        office::merged_from(&*fx.relay, &olivia, &acme)
            .unwrap()
            .iter()
            .map(|r| &r.id)
            .collect::<Vec<_>>(),
        [&acme2]
    );

    // Jane changed since her merge: it stays. The account did not: undone.
    let err = office::unmerge(&*fx.relay, &olivia, &jane2)
        .unwrap()
        .unwrap_err();
    assert!(err.to_string().contains("changed after the merge"), "{err}");
    let back = office::unmerge(&*fx.relay, &olivia, &acme2)
        .unwrap()
        .unwrap();
    assert!(
        !back.deleted && back.text("merged_into").is_none(),
        "{back:?}"
    );
    for d in [&mut ann, &mut bob] {
        fx.sync(d);
        let a = d.get(&acme).unwrap();
        assert_eq!(
            (a.text("notes"), a.text("website")),
            (Some("ann's note"), None)
        );
        let mut on_bobs: Vec<String> = live(d, Kind::Deal)
            .into_iter()
            .filter(|deal| deal.text("account_id") == Some(acme2.as_str()))
            .map(|deal| deal.text("name").unwrap().to_string())
            .collect();
        on_bobs.sort();
        assert_eq!(on_bobs, ["bob's deal", "demo deal"]);
    }
}

/// Issue 18 item 4: write rules an admin defines in the configuration
/// bind on the device (at the call) and at the relay, by standing; a
/// retired rule binds no-one.
fn write_rules_an_admin_defines_bind_by_standing_everywhere(fx: Fixture) {
    use fieldcrm_server::config_entries as entries;
    let hash = auth::hash_password("password1").unwrap();
    fx.relay.add_user("ada", &hash, Role::Admin, &[]).unwrap();
    let both = ["north".to_string(), "south".to_string()];
    fx.relay
        .add_user("maria", &hash, Role::Manager, &both)
        .unwrap();
    let set = |entry: fieldcrm_core::ConfigEntry| {
        office::set_config_entry(&*fx.relay, &fx.user("ada"), &entry)
            .unwrap()
            .unwrap();
    };
    let config = fx.relay.configuration().unwrap();
    let rule = |name: &str, field: &str, who: &str, why: &str| {
        entries::add_rule(
            &config,
            Kind::Account,
            name,
            vec![field.into()],
            who,
            false,
            why,
        )
        .unwrap()
    };
    set(rule(
        "owner_by_managers",
        "owner",
        "manager",
        "only managers change an account's owner",
    ));
    set(rule(
        "territory_by_office",
        "territory",
        "office",
        "only the office moves accounts between territories",
    ));
    // Said in the admin's words before anything is written.
    let err = entries::add_rule(
        &config,
        Kind::Account,
        "x",
        vec!["owner".into()],
        "rep",
        false,
        "r",
    )
    .unwrap_err();
    assert!(err.contains("not manager, office or admin"), "{err}");
    let bad = entries::add_rule(
        &config,
        Kind::Account,
        "x",
        vec!["colour".into()],
        "office",
        false,
        "r",
    )
    .unwrap();
    let err = office::set_config_entry(&*fx.relay, &fx.user("ada"), &bad)
        .unwrap()
        .unwrap_err();
    assert!(
        err.to_string().contains("not a field a account has"),
        "{err}"
    );

    let mut ann = fx.device("ann");
    let acme = account(&mut ann, "Acme", "north");
    fx.sync(&mut ann);
    assert_eq!(ann.config().write_rules().len(), 2);
    // The device refuses at the call, with the rule's reason.
    let err = ann.update(&acme, fields([("owner", "bob")])).unwrap_err();
    assert_eq!(err.code(), "not_allowed");
    assert!(
        err.to_string()
            .contains("only managers change an account's owner"),
        "{err}"
    );
    ann.update(&acme, fields([("phone", "+49 1")])).unwrap();
    fx.sync(&mut ann);
    assert!(ann.refused_changes().unwrap().is_empty());
    // The relay refuses the same for anyone below the rule, in every path.
    let by = |user: &str, field: &str, value: &str| {
        office::try_edit(
            &*fx.relay,
            &fx.user(user),
            Edit::Update {
                id: acme.clone(),
                fields: fields([(field, value)]),
            },
        )
        .unwrap()
    };
    let err = by("ann", "owner", "bob").unwrap_err().to_string();
    assert!(err.contains("may not change \"owner\""), "{err}");
    assert_eq!(
        by("maria", "owner", "bob").unwrap().text("owner"),
        Some("bob")
    );
    let err = by("maria", "territory", "south").unwrap_err().to_string();
    assert!(err.contains("only the office moves accounts"), "{err}");
    assert_eq!(
        by("olivia", "territory", "south")
            .unwrap()
            .text("territory"),
        Some("south")
    );
    assert_eq!(
        by("olivia", "territory", "north")
            .unwrap()
            .text("territory"),
        Some("north")
    );

    // Retired: the rule binds no-one, on the device after its next sync.
    let config = fx.relay.configuration().unwrap();
    set(entries::retire_rule(&config, Kind::Account, "owner_by_managers", true).unwrap());
    fx.sync(&mut ann);
    ann.update(&acme, fields([("owner", "ann")])).unwrap();
    fx.sync(&mut ann);
    assert!(ann.refused_changes().unwrap().is_empty());
    assert_eq!(
        fx.relay
            .record(&acme)
            .unwrap()
            .unwrap()
            .record
            .text("owner"),
        Some("ann")
    );
}

/// Issue 16's order: the office keeps a catalogue every device receives;
/// a rep takes an order with three lines offline while the office adds a
/// fourth to it; after sync both hold the same four lines and totals. A
/// submitted order is the office's; bad lines are refused.
/// Four products priced 10.00, 2.50, 99.99 and 0.40 EUR, made by the office.
fn catalogue(fx: &Fixture) -> Vec<String> {
    use fieldcrm_core::SHARED_TERRITORY;
    let olivia = fx.user("olivia");
    let create = |kind: Kind, f: fieldcrm_core::Fields| {
        office::edit_one(&*fx.relay, &olivia, Edit::Create { kind, fields: f })
            .unwrap()
            .id
    };
    let mut products = Vec::new();
    for (sku, cents) in [("P1", 1000), ("P2", 250), ("P3", 9999), ("P4", 40)] {
        let product = create(
            Kind::Product,
            fields([
                ("sku", Value::from(sku)),
                ("name", format!("Product {sku}").into()),
                ("active", true.into()),
                ("territory", SHARED_TERRITORY.into()),
            ]),
        );
        create(
            Kind::Price,
            fields([
                ("product_id", Value::from(product.as_str())),
                ("currency", "EUR".into()),
                ("unit_price", Value::Int(cents)),
                ("valid_from", "2020-01-01".into()),
                ("territory", SHARED_TERRITORY.into()),
            ]),
        );
        products.push(product);
    }
    products
}

fn an_order_taken_offline_keeps_every_line_and_locks_once_submitted(fx: Fixture) {
    use fieldcrm_core::{order_totals, SHARED_TERRITORY};
    let olivia = fx.user("olivia");
    let products = catalogue(&fx);
    // The catalogue stays in the shared territory, and is the office's.
    let err = office::try_edit(
        &*fx.relay,
        &olivia,
        Edit::Create {
            kind: Kind::Product,
            fields: fields([("sku", "X"), ("name", "X"), ("territory", "north")]),
        },
    )
    .unwrap()
    .unwrap_err()
    .to_string();
    assert!(err.contains("products are in \"*organisation\""), "{err}");

    let mut ann = fx.device("ann");
    fx.sync(&mut ann);
    let mut bob = fx.device("bob");
    fx.sync(&mut bob);
    assert_eq!(
        ann.list(&ListQuery {
            kind: Some(Kind::Product),
            limit: 10,
            ..Default::default()
        })
        .unwrap()
        .total,
        4,
        "every device holds the catalogue"
    );
    let err = ann
        .create(
            Kind::Product,
            fields([("sku", "X"), ("name", "X"), ("territory", SHARED_TERRITORY)]),
        )
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("only the office changes the product catalogue"),
        "{err}"
    );

    let acme = account(&mut ann, "Acme", "north");
    let order = ann
        .create(
            Kind::Order,
            fields([
                ("account_id", Value::from(acme.as_str())),
                ("name", "Spring order".into()),
                ("currency", "EUR".into()),
                ("tax_percent", Value::Int(19)),
                ("territory", "north".into()),
            ]),
        )
        .unwrap()
        .id;
    let (first, _) = ann.add_order_line(&order, &products[0], 3.0, 10.0).unwrap();
    fx.sync(&mut ann);
    // Offline: two more lines and a changed discount, while the office adds one.
    ann.add_order_line(&order, &products[1], 2.0, 0.0).unwrap();
    ann.add_order_line(&order, &products[2], 1.0, 0.0).unwrap();
    ann.set_order_line(&order, &first, None, Some(20.0))
        .unwrap();
    office::add_order_line(&*fx.relay, &olivia, &order, &products[3], 10.0, 0.0)
        .unwrap()
        .unwrap();
    let err = office::add_order_line(&*fx.relay, &olivia, &order, &acme, 1.0, 0.0)
        .unwrap()
        .unwrap_err()
        .to_string();
    assert!(err.contains("no product"), "{err}");
    fx.sync(&mut ann);
    fx.sync(&mut bob);
    let at_relay = office::record(&*fx.relay, &olivia, &order).unwrap().record;
    for d in [&ann, &bob] {
        assert_eq!(d.get(&order).unwrap(), at_relay);
    }
    let totals = order_totals(&at_relay);
    assert_eq!(totals.lines.len(), 4);
    // 3 × 10.00 − 20 % + 2 × 2.50 + 99.99 + 10 × 0.40 = 132.99; 19 % tax.
    assert_eq!((totals.net, totals.tax, totals.gross), (13299, 2527, 15826));
    assert!(at_relay.fields.keys().all(|k| !k.starts_with("lines.")
        || fieldcrm_core::OrderLine::parse(k, at_relay.text(k).unwrap()).is_ok()));

    // Bad lines are refused at the relay, in the data model's words.
    let bad = |json: &str| {
        office::try_edit(
            &*fx.relay,
            &olivia,
            Edit::Update {
                id: order.clone(),
                fields: fields([("lines.bad", json)]),
            },
        )
        .unwrap()
        .unwrap_err()
        .to_string()
    };
    assert!(bad(r#"{"product_id":"x","quantity":-1,"unit_price":1}"#).contains("more than 0"));
    let wrong = bad(&format!(
        r#"{{"product_id":"{acme}","quantity":1,"unit_price":1}}"#
    ));
    assert!(wrong.contains("which is not"), "{wrong}");

    // Submitted: the rep's device refuses at once, the relay too; the office may.
    ann.update(&order, fields([("status", "submitted")]))
        .unwrap();
    fx.sync(&mut ann);
    let err = ann
        .add_order_line(&order, &products[0], 1.0, 0.0)
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("a submitted order is the office's to change"),
        "{err}"
    );
    let err = office::try_edit(
        &*fx.relay,
        &fx.user("ann"),
        Edit::Update {
            id: order.clone(),
            fields: fields([("notes", "late")]),
        },
    )
    .unwrap()
    .unwrap_err()
    .to_string();
    assert!(err.contains("a submitted order"), "{err}");
    office::edit_one(
        &*fx.relay,
        &olivia,
        Edit::Update {
            id: order.clone(),
            fields: fields([("status", "confirmed")]),
        },
    )
    .unwrap();
}

/// Issue 16's day on the road: offline, a rep opens the day's route, checks
/// in at the first customer, takes an order of three lines while the office
/// adds a fourth, and checks out with a report. After sync the rep, a
/// colleague and the office hold the same order (four lines, same totals),
/// the visit with its times and positions, and the follow-up task.
fn a_reps_day_on_the_road_ends_the_same_everywhere(fx: Fixture) {
    use fieldcrm_core::{order_totals, RouteOptions, VisitReport};
    let olivia = fx.user("olivia");
    let products = catalogue(&fx);
    let mut ann = fx.device("ann");
    let mut bob = fx.device("bob");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let hour = 3_600_000;
    // Three customers about 10 km apart, visits planned far-first.
    let mut visits = Vec::new();
    for (i, (name, lat, lon)) in [
        ("Far", 52.70, 13.40),
        ("Near", 52.52, 13.40),
        ("Middle", 52.61, 13.40),
    ]
    .into_iter()
    .enumerate()
    {
        let customer = ann
            .create(
                Kind::Account,
                fields([
                    ("name", Value::from(name)),
                    ("territory", "north".into()),
                    ("geo.lat", Value::Float(lat)),
                    ("geo.lon", Value::Float(lon)),
                ]),
            )
            .unwrap()
            .id;
        let visit = ann
            .create(
                Kind::Activity,
                fields([
                    ("kind", Value::from("visit")),
                    ("subject", format!("Visit {name}").into()),
                    ("related_to", customer.as_str().into()),
                    ("due_at", Value::Int(now + (i as i64 + 1) * hour)),
                    ("territory", "north".into()),
                ]),
            )
            .unwrap()
            .id;
        visits.push((customer, visit));
    }
    fx.sync(&mut ann);
    fx.sync(&mut bob);

    // Offline from here. The route starts at the office (south of Near)
    // and goes up the line, whatever order the visits were planned in.
    let options = RouteOptions {
        start: Some((52.50, 13.40)),
        ..RouteOptions::default()
    };
    let route = ann
        .day_route("ann", now - hour, now + 12 * hour, &options, &[])
        .unwrap();
    let names: Vec<&str> = route.legs.iter().map(|l| l.stop.name.as_str()).collect();
    assert_eq!(names, ["Visit Near", "Visit Middle", "Visit Far"]);
    let (near, first) = visits[1].clone();
    assert_eq!(route.legs[0].stop.id, first);

    let checked_in = ann
        .check_in(&first, Some((52.5201, 13.4001)), 250.0)
        .unwrap();
    assert!(checked_in.warning.is_none(), "{checked_in:?}");
    let order = ann
        .create(
            Kind::Order,
            fields([
                ("account_id", Value::from(near.as_str())),
                ("visit_id", first.as_str().into()),
                ("name", "Order at Near".into()),
                ("currency", "EUR".into()),
                ("tax_percent", Value::Int(19)),
                ("territory", "north".into()),
            ]),
        )
        .unwrap()
        .id;
    // The draft reached the office in a moment of signal; then, offline
    // again, the rep adds three lines while the office adds a fourth.
    fx.sync(&mut ann);
    for (product, quantity) in products.iter().zip([3.0, 2.0, 1.0]) {
        ann.add_order_line(&order, product, quantity, 0.0).unwrap();
    }
    office::add_order_line(&*fx.relay, &olivia, &order, &products[3], 10.0, 0.0)
        .unwrap()
        .unwrap();
    assert_eq!(order_totals(&ann.get(&order).unwrap()).lines.len(), 3);
    let out = ann
        .check_out(
            &first,
            Some((52.5202, 13.4002)),
            VisitReport {
                outcome: "successful".into(),
                notes: "Shelf space agreed for P3.".into(),
                next_step: Some(fieldcrm_core::NextStep {
                    subject: "Send the P3 brochure".into(),
                    due_at: now + 48 * hour,
                }),
            },
        )
        .unwrap();
    let task = out.follow_up.expect("the next step became a task").id;

    fx.sync(&mut ann);
    fx.sync(&mut bob);
    fx.sync(&mut ann);
    for id in [&order, &first, &task] {
        let at_relay = office::record(&*fx.relay, &olivia, id).unwrap().record;
        for d in [&ann, &bob] {
            assert_eq!(d.get(id).unwrap(), at_relay, "{} differs on {id}", d.user());
        }
    }
    let order = office::record(&*fx.relay, &olivia, &order).unwrap().record;
    let totals = order_totals(&order);
    assert_eq!(totals.lines.len(), 4);
    // 3 × 10.00 + 2 × 2.50 + 99.99 + 10 × 0.40 = 138.99; 19 % tax.
    assert_eq!((totals.net, totals.tax, totals.gross), (13899, 2641, 16540));
    let visit = bob.get(&first).unwrap();
    assert_eq!(visit.get("done"), Some(&Value::Bool(true)));
    assert_eq!(visit.text("outcome"), Some("successful"));
    assert_eq!(visit.get("checkin_lat"), Some(&Value::Float(52.5201)));
    assert_eq!(visit.get("checkout_lon"), Some(&Value::Float(13.4002)));
    let (Some(Value::Int(inn)), Some(Value::Int(out))) =
        (visit.get("checked_in_at"), visit.get("checked_out_at"))
    else {
        panic!("the visit has its times: {visit:?}");
    };
    assert!(now <= *inn && inn <= out, "{inn} {out}");
    let task = bob.get(&task).unwrap();
    assert_eq!(task.text("subject"), Some("Send the P3 brochure"));
    assert_eq!(task.text("related_to"), Some(near.as_str()));
}

/// Issue 17's metadata merge: two reps attach files to one record at once,
/// offline. The record's first attachment makes its `attachments` map, so
/// both devices make one: the relay refuses the second map (it would hide
/// the first one's files) and that device makes its attachment again in
/// the map the relay has. Once the map exists, attachments are plain keys.
/// On a raw client's record and on one the core made alike. Both files stay,
/// on every device; metadata a client forges is refused in the device's
/// words.
fn attachments_added_at_once_on_two_devices_both_stay(fx: Fixture) {
    use fieldcrm_core::attachments_of;
    const JPEG: &[u8] = &[
        0xFF, 0xD8, 0xFF, 0xE0, 0, 0x10, b'J', b'F', b'I', b'F', 0, 7,
    ];
    let mut old = RawRecord::account("ann", "Acme", "north");
    accepted(&fx, "ann", vec![old.commit()]);
    let mut ann = fx.device("ann");
    fx.sync(&mut ann);
    let mut bob = fx.device("bob");
    fx.sync(&mut bob);
    let fresh = account(&mut ann, "Bolt", "north");
    fx.sync(&mut ann);
    fx.sync(&mut bob);
    for id in [&old.id, &fresh] {
        ann.add_attachment(id, "card.jpg", "image/jpeg", JPEG, Some("Jane's card"))
            .unwrap();
        bob.add_attachment(id, "note.txt", "text/plain", b"Delivered 12 cases", None)
            .unwrap();
    }
    fx.sync(&mut ann);
    fx.sync(&mut bob);
    fx.sync(&mut ann);
    let olivia = fx.user("olivia");
    for id in [&old.id, &fresh] {
        let at_relay = office::record(&*fx.relay, &olivia, id).unwrap().record;
        let mut names: Vec<String> = attachments_of(&at_relay)
            .into_iter()
            .map(|(_, a)| format!("{} by {}", a.name, a.added_by))
            .collect();
        names.sort();
        assert_eq!(names, ["card.jpg by ann", "note.txt by bob"], "on {id}");
        for d in [&ann, &bob] {
            assert_eq!(d.get(id).unwrap(), at_relay, "{} on {id}", d.user());
        }
    }
    for d in [&ann, &bob] {
        assert!(d.refused_changes().unwrap().is_empty(), "{}", d.user());
        assert_eq!(d.outbox_status().unwrap().pending, 0);
    }

    // The map exists now: two more at once are two more keys.
    ann.add_attachment(&fresh, "shelf.jpg", "image/jpeg", JPEG, None)
        .unwrap();
    bob.add_attachment(&fresh, "po.csv", "text/csv", b"sku,qty\nP1,3\n", None)
        .unwrap();
    fx.sync(&mut ann);
    fx.sync(&mut bob);
    fx.sync(&mut ann);
    let at_relay = office::record(&*fx.relay, &olivia, &fresh).unwrap().record;
    assert_eq!(attachments_of(&at_relay).len(), 4);
    assert_eq!(ann.get(&fresh).unwrap(), at_relay);
    assert!(bob.refused_changes().unwrap().is_empty());

    // Forged metadata: an HTML page declared as such, a bad hash.
    let forged = |json: &str| {
        let mut raw = RawRecord::account("ann", "Forged", "north");
        raw.put_object("attachments", automerge::ObjType::Map, "");
        raw.put_in("attachments", &uuid::Uuid::now_v7().to_string(), json);
        refused(&fx, "ann", vec![raw.commit()])
    };
    let html = forged(&format!(
        r#"{{"name":"x.html","media_type":"text/html","size":5,"sha256":"{}","added_by":"ann","added_at":1}}"#,
        "a".repeat(64)
    ));
    assert_eq!(html.code, "invalid_value");
    assert!(
        html.reason.contains("attachments are one of"),
        "{}",
        html.reason
    );
    let hash = forged(
        r#"{"name":"x.jpg","media_type":"image/jpeg","size":5,"sha256":"../../etc/passwd","added_by":"ann","added_at":1}"#,
    );
    assert!(hash.reason.contains("SHA-256"), "{}", hash.reason);
    // A "thumbnail" that is a web page in base64, not a small JPEG.
    let thumb = forged(&format!(
        r#"{{"name":"x.jpg","media_type":"image/jpeg","size":5,"sha256":"{}","added_by":"ann","added_at":1,"thumbnail":"PHNjcmlwdD5zdGVhbCgpPC9zY3JpcHQ+"}}"#,
        "a".repeat(64)
    ));
    assert!(
        thumb.reason.contains("thumbnail is a JPEG"),
        "{}",
        thumb.reason
    );
}

/// A device's way to the relay's blob rules, in-process; `drop_after`
/// chunks or ranges, it fails as a dropped connection would.
struct BlobWire<'a> {
    fx: &'a Fixture,
    user: User,
    drop_after: std::cell::Cell<Option<usize>>,
}

impl<'a> BlobWire<'a> {
    fn new(fx: &'a Fixture, user: &str, drop_after: Option<usize>) -> Self {
        BlobWire {
            fx,
            user: fx.user(user),
            drop_after: drop_after.into(),
        }
    }

    fn answer<T>(&self, r: relay::Result<T>) -> fieldcrm_core::Result<T> {
        r.map_err(|e| {
            let status = match e {
                relay::RelayError::NotFound(_) => 404,
                relay::RelayError::WrongOffset { .. } => 409,
                _ => 400,
            };
            fieldcrm_core::Error::Transport {
                status: Some(status),
                message: e.to_string(),
            }
        })
    }

    fn maybe_drop(&self) -> fieldcrm_core::Result<()> {
        match self.drop_after.get() {
            Some(0) => Err(fieldcrm_core::Error::Transport {
                status: None,
                message: "connection reset".into(),
            }),
            Some(n) => {
                self.drop_after.set(Some(n - 1));
                Ok(())
            }
            None => Ok(()),
        }
    }
}

impl fieldcrm_core::Transport for BlobWire<'_> {
    fn exchange(&self, _: &[u8]) -> fieldcrm_core::Result<Vec<u8>> {
        unreachable!("records sync through Fixture::sync")
    }
    fn blob_status(&self, sha: &str) -> fieldcrm_core::Result<Option<protocol::BlobStatus>> {
        self.answer(relay::blobs::status(&*self.fx.relay, &self.user, sha))
            .map(Some)
    }
    fn put_blob_chunk(
        &self,
        sha: &str,
        offset: u64,
        bytes: &[u8],
    ) -> fieldcrm_core::Result<protocol::BlobStatus> {
        self.maybe_drop()?;
        let limit = fieldcrm_core::MAX_ATTACHMENT_BYTES;
        self.answer(relay::blobs::upload(
            &*self.fx.relay,
            &self.user,
            sha,
            offset,
            bytes,
            limit,
        ))
    }
    fn get_blob_range(&self, sha: &str, from: u64, len: u64) -> fieldcrm_core::Result<Vec<u8>> {
        self.maybe_drop()?;
        let blob = relay::blobs::download(&*self.fx.relay, &self.user, sha, |_| {
            Ok(Some((from, from + len - 1)))
        });
        self.answer(blob).map(|b| b.bytes)
    }
}

/// A photo of about 2.5 MiB: three upload chunks.
fn photo(seed: u8) -> Vec<u8> {
    let mut bytes = vec![
        0xFF, 0xD8, 0xFF, 0xE0, 0, 0x10, b'J', b'F', b'I', b'F', 0, 1,
    ];
    bytes.extend((0..(5 << 19)).map(|i: u32| (i as u8) ^ seed));
    bytes
}

fn blob_rules_answer(fx: &Fixture, user: &str, sha: &str) -> String {
    let user = fx.user(user);
    match relay::blobs::status(&*fx.relay, &user, sha) {
        Ok(s) => format!("received {} of {}", s.received, s.size),
        Err(e) => e.to_string(),
    }
}

/// Issue 17's transfer: a photo attached offline goes up in chunks and
/// resumes after a dropped connection, the office fetches it byte-identical
/// (resuming too), a rep of another territory gets nothing by its hash,
/// the same photo twice is stored and sent once, forged and disguised
/// uploads are refused and discarded, and garbage collection spares a blob
/// a device's pending change names again.
fn attachment_bytes_travel_resume_and_stay_in_their_territory(fx: Fixture) {
    use fieldcrm_core::{sha256_hex, BlobDirection, UPLOAD_CHUNK};
    let mut ann = fx.device("ann");
    let card = account(&mut ann, "Acme", "north");
    let shot = photo(7);
    let sha = sha256_hex(&shot);
    ann.add_attachment(&card, "card.jpg", "image/jpeg", &shot, None)
        .unwrap();
    // Before the record reaches the relay nobody may send its blob.
    assert!(blob_rules_answer(&fx, "ann", &sha).contains("no attachment you may see"));
    fx.sync(&mut ann);

    // The connection drops after the first chunk: that chunk stays.
    let flaky = BlobWire::new(&fx, "ann", Some(1));
    let err = ann.upload_blobs(&flaky, &mut |_| {}).unwrap_err();
    assert!(err.to_string().contains("connection reset"), "{err}");
    assert_eq!(
        blob_rules_answer(&fx, "ann", &sha),
        format!("received {UPLOAD_CHUNK} of {}", shot.len())
    );
    assert_eq!(ann.blobs_to_upload().unwrap(), std::slice::from_ref(&sha));
    let mut heard = Vec::new();
    let done = ann
        .upload_blobs(&BlobWire::new(&fx, "ann", None), &mut |p| {
            heard.push(p.done)
        })
        .unwrap();
    assert_eq!((done.uploaded, done.waiting), (1, 0));
    assert_eq!(
        done.bytes_sent,
        (shot.len() - UPLOAD_CHUNK) as u64,
        "resumed, not resent"
    );
    assert_eq!(heard.last(), Some(&(shot.len() as u64)));
    assert!(ann.blobs_to_upload().unwrap().is_empty());

    // The office opens it: the download drops once, then resumes.
    let mut olivia = fx.device("olivia");
    fx.sync(&mut olivia);
    assert_eq!(olivia.blob(&sha).unwrap(), None);
    let flaky = BlobWire::new(&fx, "olivia", Some(2));
    assert!(olivia.fetch_blob(&flaky, &sha, &mut |_| {}).is_err());
    let mut got = Vec::new();
    let bytes = olivia
        .fetch_blob(&BlobWire::new(&fx, "olivia", None), &sha, &mut |p| {
            assert_eq!(p.direction, BlobDirection::Download);
            got.push(p.done)
        })
        .unwrap();
    assert_eq!(bytes, shot, "byte-identical");
    assert_eq!(
        got,
        [shot.len() as u64],
        "only the last range was left to fetch"
    );
    assert_eq!(olivia.blob(&sha).unwrap().as_deref(), Some(&shot[..]));

    // Another territory's rep knows the hash and gets nothing.
    let sam = BlobWire::new(&fx, "sam", None);
    let mut sam_store = fx.device("sam");
    let err = sam_store.fetch_blob(&sam, &sha, &mut |_| {}).unwrap_err();
    assert!(
        err.to_string().contains("no attachment you may see"),
        "{err}"
    );
    let sam_user = fx.user("sam");
    let put = relay::blobs::upload(&*fx.relay, &sam_user, &sha, 0, &shot[..10], u64::MAX);
    assert!(
        matches!(put, Err(relay::RelayError::NotFound(_))),
        "{put:?}"
    );

    // The same photo on bob's record: stored once, not sent again.
    let mut bob = fx.device("bob");
    fx.sync(&mut bob);
    let other = account(&mut bob, "Bolt", "north");
    bob.add_attachment(&other, "same.jpg", "image/jpeg", &shot, None)
        .unwrap();
    fx.sync(&mut bob);
    let again = bob
        .upload_blobs(&BlobWire::new(&fx, "bob", None), &mut |_| {})
        .unwrap();
    assert_eq!((again.uploaded, again.bytes_sent), (1, 0));

    // Metadata forged by a raw client: an HTML page declared a JPEG, and
    // bytes that are not the declared hash. Refused, nothing kept.
    let html = b"<!DOCTYPE html><script>steal()</script>".to_vec();
    for (declared, bytes) in [
        (sha256_hex(&html), html.clone()),
        ("ab".repeat(32), b"xyzxyz".to_vec()),
    ] {
        let mut raw = RawRecord::account("ann", "Forged", "north");
        raw.put_object("attachments", automerge::ObjType::Map, "");
        let meta = format!(
            r#"{{"name":"p.jpg","media_type":"image/jpeg","size":{},"sha256":"{declared}","added_by":"ann","added_at":{}}}"#,
            bytes.len(),
            now_ms()
        );
        raw.put_in(
            "attachments",
            &uuid::Uuid::now_v7().to_string(),
            meta.as_str(),
        );
        accepted(&fx, "ann", vec![raw.commit()]);
        let user = fx.user("ann");
        let err = relay::blobs::upload(&*fx.relay, &user, &declared, 0, &bytes, u64::MAX)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("not what its attachment says") || err.contains("are not blob"),
            "{err}"
        );
        assert_eq!(
            fx.relay.blob_held(&declared).unwrap(),
            relay::blobs::Held::Nothing
        );
    }
    // Oversize for this relay, and a chunk out of place.
    let user = fx.user("ann");
    let small_relay = relay::blobs::upload(&*fx.relay, &user, &sha256_hex(&html), 0, &html, 10);
    assert!(
        format!("{small_relay:?}").contains("at most"),
        "{small_relay:?}"
    );

    // Garbage: a delivery note attached, sent, then removed everywhere.
    let note = b"Delivered 12 cases, signed J. Doe".to_vec();
    let note_sha = sha256_hex(&note);
    let (note_id, _) = ann
        .add_attachment(&card, "note.txt", "text/plain", &note, None)
        .unwrap();
    fx.sync(&mut ann);
    let wire = BlobWire::new(&fx, "ann", None);
    ann.upload_blobs(&wire, &mut |_| {}).unwrap();
    ann.remove_attachment(&card, &note_id).unwrap();
    fx.sync(&mut ann);
    let week = 7 * 24 * 3600 * 1000;
    fx.relay.collect_blobs(now_ms(), week).unwrap();
    assert!(
        matches!(
            fx.relay.blob_held(&note_sha).unwrap(),
            relay::blobs::Held::Whole(_)
        ),
        "kept through the grace period"
    );
    // A week on, the note goes; the photo, named by ann's and bob's
    // records, stays.
    assert_eq!(
        fx.relay.collect_blobs(now_ms() + week + 1, week).unwrap(),
        1,
        "the note went"
    );
    assert!(matches!(
        fx.relay.blob_held(&sha).unwrap(),
        relay::blobs::Held::Whole(_)
    ));
    assert_eq!(
        fx.relay.blob_held(&note_sha).unwrap(),
        relay::blobs::Held::Nothing
    );
    // Ann, offline, had attached the same note to another record: her
    // device kept it as unsent, and sends it again once the change is in.
    let (_, _) = ann
        .add_attachment(&card, "note again.txt", "text/plain", &note, None)
        .unwrap();
    ann.evict_blobs(0).unwrap();
    fx.sync(&mut ann);
    let resent = ann.upload_blobs(&wire, &mut |_| {}).unwrap();
    assert_eq!(resent.bytes_sent, note.len() as u64);
    let office = BlobWire::new(&fx, "olivia", None);
    assert_eq!(
        olivia.fetch_blob(&office, &note_sha, &mut |_| {}).unwrap(),
        note
    );
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
    a_refused_change_never_forks_the_record,
    edits_made_before_a_revocation_wait_for_review,
    a_refused_creation_is_kept_and_can_be_retried,
    what_a_device_evicted_comes_back_complete,
    users_tokens_and_territories,
    changes_reach_the_right_devices_once,
    bad_pushes_are_refused_one_by_one,
    bootstrap_pages_and_skips_a_devices_own_records,
    moving_a_record_evicts_it_and_hands_it_over,
    office_reads_and_edits_follow_territories,
    values_the_data_model_forbids_are_refused_in_the_devices_words,
    references_owners_and_territories_must_exist_for_the_pusher,
    territory_moves_and_foreign_records_are_refused_per_change,
    both_stores_answer_alike,
    stage_analysis_agrees_with_the_deals_documents,
    history_names_the_device_of_every_change,
    pushes_at_once_are_answered_one_by_one_and_logged_under_their_devices,
    search_pages_are_filtered_ranked_and_counted,
    a_device_ahead_of_a_restored_relay_sends_its_changes_again,
    a_lead_made_and_converted_offline_is_taken_in_one_push,
    territories_form_a_tree_and_moving_one_changes_who_sees_it,
    a_rep_cannot_change_a_won_deals_amount_and_a_manager_can,
    an_edit_on_another_devices_lost_change_waits_for_it_then_is_made_again,
    the_configuration_reaches_every_device_and_values_follow_it,
    duplicates_made_offline_merge_into_one_with_every_edit_kept,
    write_rules_an_admin_defines_bind_by_standing_everywhere,
    an_order_taken_offline_keeps_every_line_and_locks_once_submitted,
    a_reps_day_on_the_road_ends_the_same_everywhere,
    attachments_added_at_once_on_two_devices_both_stay,
    attachment_bytes_travel_resume_and_stay_in_their_territory,
    a_bootstrap_from_projections_holds_what_reading_the_documents_gives,
);
store_suite!(postgres:
    a_refused_change_never_forks_the_record,
    edits_made_before_a_revocation_wait_for_review,
    a_refused_creation_is_kept_and_can_be_retried,
    what_a_device_evicted_comes_back_complete,
    users_tokens_and_territories,
    changes_reach_the_right_devices_once,
    bad_pushes_are_refused_one_by_one,
    bootstrap_pages_and_skips_a_devices_own_records,
    moving_a_record_evicts_it_and_hands_it_over,
    office_reads_and_edits_follow_territories,
    values_the_data_model_forbids_are_refused_in_the_devices_words,
    references_owners_and_territories_must_exist_for_the_pusher,
    territory_moves_and_foreign_records_are_refused_per_change,
    both_stores_answer_alike,
    stage_analysis_agrees_with_the_deals_documents,
    history_names_the_device_of_every_change,
    pushes_at_once_are_answered_one_by_one_and_logged_under_their_devices,
    search_pages_are_filtered_ranked_and_counted,
    a_device_ahead_of_a_restored_relay_sends_its_changes_again,
    a_lead_made_and_converted_offline_is_taken_in_one_push,
    territories_form_a_tree_and_moving_one_changes_who_sees_it,
    a_rep_cannot_change_a_won_deals_amount_and_a_manager_can,
    an_edit_on_another_devices_lost_change_waits_for_it_then_is_made_again,
    the_configuration_reaches_every_device_and_values_follow_it,
    duplicates_made_offline_merge_into_one_with_every_edit_kept,
    write_rules_an_admin_defines_bind_by_standing_everywhere,
    an_order_taken_offline_keeps_every_line_and_locks_once_submitted,
    a_reps_day_on_the_road_ends_the_same_everywhere,
    attachments_added_at_once_on_two_devices_both_stay,
    attachment_bytes_travel_resume_and_stay_in_their_territory,
    a_bootstrap_from_projections_holds_what_reading_the_documents_gives,
);
