//! End-to-end: the real relay binary, devices syncing over HTTP.

mod common;

use common::{all_records, seed_users, Device, Relay};
use fieldcrm_core::{fields, Kind, Transport, Value};

#[test]
fn reps_and_office_converge_and_other_territories_see_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("relay");
    seed_users(&data);
    let relay = Relay::start(&data);
    let mut ann = Device::new(dir.path(), &relay, "ann");
    let mut bob = Device::new(dir.path(), &relay, "bob");
    let mut sam = Device::new(dir.path(), &relay, "sam");
    let mut olivia = Device::new(dir.path(), &relay, "olivia");

    // Ann creates an account and a contact in her territory and syncs.
    let acme = ann
        .store
        .create(
            Kind::Account,
            fields([("name", "Acme"), ("territory", "north")]),
        )
        .unwrap();
    ann.store
        .create(
            Kind::Contact,
            fields([
                ("account_id", acme.id.as_str()),
                ("first_name", "Ada"),
                ("last_name", "Lovelace"),
                ("territory", "north"),
            ]),
        )
        .unwrap();
    let progress = ann.sync();
    assert_eq!(progress.total.acked, 2);
    assert_eq!(ann.store.outbox_status().unwrap().pending, 0);

    // Sam, in the south, has his own record.
    sam.store
        .create(
            Kind::Account,
            fields([("name", "Solent Marine"), ("territory", "south")]),
        )
        .unwrap();
    sam.sync();

    for device in [&mut bob, &mut olivia] {
        device.sync();
    }
    assert_eq!(
        bob.store.get(&acme.id).unwrap(),
        ann.store.get(&acme.id).unwrap()
    );
    assert_eq!(all_records(&bob.store).len(), 2, "bob sees north only");
    assert_eq!(
        all_records(&olivia.store).len(),
        3,
        "the office sees everything"
    );
    sam.sync();
    assert_eq!(
        all_records(&sam.store).len(),
        1,
        "sam sees none of the north"
    );

    // Offline: ann and bob edit the same field and different fields.
    ann.store
        .update(
            &acme.id,
            fields([("phone", "+44 111 111"), ("industry", "Steel")]),
        )
        .unwrap();
    bob.store
        .update(
            &acme.id,
            fields([("phone", "+44 222 222"), ("website", "acme.example")]),
        )
        .unwrap();
    // Several orders: bob first, then ann, then bob again, then the office.
    bob.sync();
    ann.sync();
    bob.sync();
    olivia.sync();
    sam.sync();

    let a = ann.store.get(&acme.id).unwrap();
    assert_eq!(a, bob.store.get(&acme.id).unwrap());
    assert_eq!(a, olivia.store.get(&acme.id).unwrap());
    assert_eq!(a.text("industry"), Some("Steel"));
    assert_eq!(a.text("website"), Some("acme.example"));
    for device in [&ann, &bob, &olivia] {
        let conflicts = device.store.conflicts(&acme.id).unwrap();
        assert_eq!(
            conflicts.len(),
            1,
            "the phone conflict is visible everywhere"
        );
        assert_eq!(conflicts[0].field, "phone");
        assert_eq!(conflicts[0].values.len(), 2);
    }
    assert!(sam.store.get(&acme.id).is_err());
    assert_eq!(all_records(&sam.store).len(), 1);

    // The office resolves it; everyone sees the resolution.
    olivia
        .store
        .resolve_conflict(&acme.id, "phone", Value::from("+44 333 333"))
        .unwrap();
    olivia.sync();
    ann.sync();
    bob.sync();
    for device in [&ann, &bob, &olivia] {
        assert!(device.store.conflicts(&acme.id).unwrap().is_empty());
        assert_eq!(
            device.store.get(&acme.id).unwrap().text("phone"),
            Some("+44 333 333")
        );
    }
    let history = ann.store.history(&acme.id).unwrap();
    assert_eq!(history.last().unwrap().user, "olivia");
}

#[test]
fn relay_restarts_lose_nothing_and_retries_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("relay");
    seed_users(&data);
    let relay = Relay::start(&data);
    let mut ann = Device::new(dir.path(), &relay, "ann");
    let mut bob = Device::new(dir.path(), &relay, "bob");
    for i in 0..20 {
        ann.store
            .create(
                Kind::Account,
                fields([
                    ("name", format!("Account {i}")),
                    ("territory", "north".into()),
                ]),
            )
            .unwrap();
    }
    ann.sync();

    // SIGKILL the relay right after it acknowledged: everything is there after restart.
    relay.kill();
    let relay = Relay::start(&data);
    bob.reconnect(&relay);
    ann.reconnect(&relay);
    bob.sync();
    assert_eq!(all_records(&bob.store).len(), 20);

    // A request whose response is lost is sent again: same result, no duplicates.
    let id = all_records(&ann.store)[0].id.clone();
    ann.store
        .update(&id, fields([("industry", "Retail")]))
        .unwrap();
    let request = ann.store.sync_request().unwrap();
    let _lost = ann.transport.exchange(&request).unwrap();
    let head_after_first = head(&relay);
    let response = ann.transport.exchange(&request).unwrap();
    assert_eq!(head(&relay), head_after_first, "the retry appended nothing");
    let round = ann.store.apply_sync_response(&response).unwrap();
    assert_eq!(round.acked, 1);
    assert_eq!(ann.store.outbox_status().unwrap().pending, 0);
    bob.sync();
    assert_eq!(
        bob.store.history(&id).unwrap().len(),
        2,
        "bob got the edit once"
    );

    // A graceful stop (SIGTERM) exits cleanly and keeps everything too.
    assert!(relay.stop().success());
    let relay = Relay::start(&data);
    std::fs::create_dir_all(dir.path().join("fresh")).unwrap();
    let mut fresh = Device::new(&dir.path().join("fresh"), &relay, "bob");
    fresh.sync();
    assert_eq!(all_records(&fresh.store), all_records(&bob.store));
}

/// The relay's log head, read from /metrics.
fn head(relay: &Relay) -> u64 {
    let body = ureq_get(&format!("{}/metrics", relay.url));
    body.lines()
        .find_map(|l| l.strip_prefix("fieldcrm_relay_log_head "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
        .expect("metrics show the log head")
}

fn ureq_get(url: &str) -> String {
    let output = std::process::Command::new("curl")
        .args(["-s", url])
        .output()
        .unwrap();
    String::from_utf8(output.stdout).unwrap()
}

/// A device listening for changes is woken by pushes its user may see, and
/// not by pushes in other territories (200 listening devices used to sync
/// on every push anywhere).
#[test]
fn live_updates_wake_only_devices_that_may_see_the_change() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("relay");
    seed_users(&data);
    let relay = Relay::start(&data);
    let mut ann = Device::new(dir.path(), &relay, "ann");
    let mut sam = Device::new(dir.path(), &relay, "sam");
    sam.sync();
    let listen = |device: &Device, timeout_ms: u64| {
        let cursor = device.store.cursor().unwrap().seq;
        let transport = fieldcrm_core::HttpTransport::new(&relay.url, device.token());
        std::thread::spawn(move || {
            transport
                .wait_for_change(cursor, std::time::Duration::from_millis(timeout_ms))
                .unwrap()
        })
    };

    // A push in the north does not wake Sam (south).
    let sam_waits = listen(&sam, 1500);
    std::thread::sleep(std::time::Duration::from_millis(200));
    ann.store
        .create(
            Kind::Account,
            fields([("name", "Acme"), ("territory", "north")]),
        )
        .unwrap();
    ann.sync();
    assert!(!sam_waits.join().unwrap(), "sam was woken by a north push");

    // Moving that account to the south wakes him.
    let sam_waits = listen(&sam, 10_000);
    std::thread::sleep(std::time::Duration::from_millis(200));
    let mut maria = Device::new(dir.path(), &relay, "maria");
    maria.sync();
    let acme = all_records(&maria.store)[0].id.clone();
    maria
        .store
        .update(&acme, fields([("territory", "south")]))
        .unwrap();
    maria.sync();
    assert!(
        sam_waits.join().unwrap(),
        "sam was not woken by a move into the south"
    );
    sam.sync();
    assert_eq!(all_records(&sam.store).len(), 1);
}

/// Attachments over HTTP (issue 17): a rep attaches a 3 MiB photo and a
/// delivery note offline, syncs, sends the files; the relay restarts; the
/// office downloads both byte-identical; a rep of another territory gets
/// nothing by hash. Prints the throughput it saw.
#[test]
fn attachments_go_up_and_down_over_http_and_survive_a_relay_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("relay");
    seed_users(&data);
    let relay = Relay::start(&data);
    let mut ann = Device::new(dir.path(), &relay, "ann");
    let contact = ann
        .store
        .create(
            fieldcrm_core::Kind::Account,
            fieldcrm_core::fields([("name", "Acme"), ("territory", "north")]),
        )
        .unwrap()
        .id;
    let mut photo = vec![
        0xFF, 0xD8, 0xFF, 0xE0, 0, 0x10, b'J', b'F', b'I', b'F', 0, 1,
    ];
    photo.extend((0..3u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8));
    let note = b"Delivery note 4711: 12 cases, signed J. Doe".to_vec();
    ann.store
        .add_attachment(
            &contact,
            "card.jpg",
            "image/jpeg",
            &photo,
            Some("Business card"),
        )
        .unwrap();
    ann.store
        .add_attachment(&contact, "note.txt", "text/plain", &note, None)
        .unwrap();
    ann.sync();
    let started = std::time::Instant::now();
    let sent = ann.store.upload_blobs(&ann.transport, &mut |_| {}).unwrap();
    let up = started.elapsed();
    assert_eq!((sent.uploaded, sent.waiting), (2, 0));
    assert!(ann.store.blobs_to_upload().unwrap().is_empty());

    relay.stop();
    let relay = Relay::start(&data);
    let mut olivia = Device::new(dir.path(), &relay, "olivia");
    olivia.sync();
    let shas: Vec<String> = olivia
        .store
        .attachments(&contact)
        .unwrap()
        .into_iter()
        .map(|(_, a)| a.sha256)
        .collect();
    assert_eq!(shas.len(), 2);
    let started = std::time::Instant::now();
    let got = olivia
        .store
        .fetch_blob(&olivia.transport, &shas[0], &mut |_| {})
        .unwrap();
    let down = started.elapsed();
    assert_eq!(got, photo);
    let got = olivia
        .store
        .fetch_blob(&olivia.transport, &shas[1], &mut |_| {})
        .unwrap();
    assert_eq!(got, note);
    let mib = photo.len() as f64 / f64::from(1 << 20);
    eprintln!(
        "attachments: upload {:.1} MiB/s, download {:.1} MiB/s",
        mib / up.as_secs_f64(),
        mib / down.as_secs_f64()
    );

    let mut sam = Device::new(dir.path(), &relay, "sam");
    let err = sam
        .store
        .fetch_blob(&sam.transport, &shas[0], &mut |_| {})
        .unwrap_err();
    assert!(err.to_string().contains("404"), "{err}");
}
