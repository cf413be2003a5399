//! A device process SIGKILLed in the middle of syncing (while pushing,
//! between push and pull, while applying a page): on reopen its store is
//! sound, and a further sync completes with nothing lost and nothing applied
//! twice. The device is this test binary re-run with `FIELDCRM_DEVICE_CHILD`.

mod common;

use std::collections::HashMap;
use std::process::Stdio;
use std::time::Duration;

use common::{all_records, device_process, relay_and_phone, Device};
use fieldcrm_core::{fields, HttpTransport, Kind, Store};
use rand::{Rng, SeedableRng};

const CHILD_ENV: &str = "FIELDCRM_DEVICE_CHILD";
const ROUNDS: u64 = 12;

/// The device process: edit, sync, repeat, until killed.
#[test]
fn device_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let mut parts = spec.split('|');
    let (path, url, token, seed) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap().parse::<u64>().unwrap(),
    );
    let mut store = Store::open(path, "ann").unwrap();
    let transport = HttpTransport::new(url, token);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for i in 0.. {
        // Bursts of edits make multi-round syncs, so kills land mid-sync.
        for j in 0..rng.gen_range(1..120) {
            store
                .create(
                    Kind::Account,
                    fields([
                        ("name", format!("S{seed} {i}.{j}")),
                        ("territory", "north".into()),
                    ]),
                )
                .unwrap();
        }
        let _ = store.sync(&transport, &mut |_| {});
    }
}

#[test]
fn device_killed_mid_sync_recovers_without_loss_or_duplicates() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (relay, path, token) = relay_and_phone(dir.path());
    // Bob's edits flow down to ann's device during its syncs, so kills also
    // land while pulled pages are being applied.
    let mut bob = Device::new(dir.path(), &relay, "bob");
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);

    for round in 0..ROUNDS {
        for k in 0..20 {
            bob.store
                .create(
                    Kind::Account,
                    fields([
                        ("name", format!("Bob {round}.{k}")),
                        ("territory", "north".into()),
                    ]),
                )
                .unwrap();
        }
        bob.sync();
        let mut child = device_process(
            "device_child",
            CHILD_ENV,
            format!("{}|{}|{token}|{round}", path.display(), relay.url),
            Stdio::null(),
        );
        std::thread::sleep(Duration::from_millis(rng.gen_range(50..400)));
        child.kill().unwrap();
        child.wait().unwrap();

        // The killed device's store is sound and self-consistent.
        let mut store = Store::open(&path, "ann").unwrap();
        store.integrity_check().unwrap();
        let listed = all_records(&store);
        store.rebuild_projection().unwrap();
        assert_eq!(
            all_records(&store),
            listed,
            "round {round}: projection matches documents"
        );
        drop(store);
    }

    // A final sync completes; the device and the relay agree on everything.
    let mut ann = Store::open(&path, "ann").unwrap();
    let transport = HttpTransport::new(&relay.url, &token);
    ann.sync(&transport, &mut |_| {}).unwrap();
    assert_eq!(
        ann.outbox_status().unwrap().pending,
        0,
        "nothing left unsent"
    );
    bob.sync();
    let mine = all_records(&ann);
    assert_eq!(
        mine,
        all_records(&bob.store),
        "the device and another device agree"
    );
    // No change applied twice: every record's history has exactly its one creation.
    let mut per_name: HashMap<String, usize> = HashMap::new();
    for r in &mine {
        assert_eq!(
            ann.history(&r.id).unwrap().len(),
            1,
            "{} applied once",
            r.id
        );
        *per_name.entry(r.display_name()).or_default() += 1;
    }
    assert!(
        per_name.values().all(|n| *n == 1),
        "no record created twice"
    );
    assert!(
        mine.len() > 20 * ROUNDS as usize,
        "the device itself made records ({})",
        mine.len()
    );
    eprintln!("{ROUNDS} device kills, {} records converged", mine.len());
}

const PAGES_ENV: &str = "FIELDCRM_DEVICE_PAGES_CHILD";

/// The device process for the targeted kill: pulls in small pages, says
/// after each page is stored, and pauses so the kill lands between pages.
#[test]
fn device_pages_child() {
    let Ok(spec) = std::env::var(PAGES_ENV) else {
        return;
    };
    use std::io::Write;
    let mut parts = spec.split('|');
    let (path, url, token) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    let mut store = Store::open(path, "ann").unwrap();
    let transport = HttpTransport::new(url, token);
    for page in 1.. {
        let mut request: fieldcrm_core::protocol::SyncRequest =
            fieldcrm_core::protocol::decode(&store.sync_request().unwrap()).unwrap();
        request.max_bytes = 1_500;
        let bytes = fieldcrm_core::Transport::exchange(
            &transport,
            &fieldcrm_core::protocol::encode(&request),
        )
        .unwrap();
        store.apply_sync_response(&bytes).unwrap();
        let response: fieldcrm_core::protocol::SyncResponse =
            fieldcrm_core::protocol::decode(&bytes).unwrap();
        let mut out = std::io::stdout();
        writeln!(out, "\npage {page} stored, more={}", response.more).unwrap();
        out.flush().unwrap();
        std::thread::sleep(Duration::from_millis(200));
        if !response.more {
            return;
        }
    }
}

#[test]
fn device_killed_between_two_pages_of_one_sync_resumes_where_it_stopped() {
    if std::env::var(CHILD_ENV).is_ok() || std::env::var(PAGES_ENV).is_ok() {
        return;
    }
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let (relay, path, token) = relay_and_phone(dir.path());
    let mut bob = Device::new(dir.path(), &relay, "bob");
    for k in 0..200 {
        bob.store
            .create(
                Kind::Account,
                fields([("name", format!("Bob {k}")), ("territory", "north".into())]),
            )
            .unwrap();
    }
    bob.sync();

    let mut before = 0;
    for kill_after in [1usize, 3, 6] {
        let mut child = device_process(
            "device_pages_child",
            PAGES_ENV,
            format!("{}|{}|{token}", path.display(), relay.url),
            Stdio::piped(),
        );
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let mut stored = 0;
        let mut finished = false;
        while let Some(Ok(line)) = lines.next() {
            if line.starts_with("page ") {
                stored += 1;
                finished = line.ends_with("more=false");
                if stored == kill_after || finished {
                    break;
                }
            }
        }
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(!finished, "the kill came before the sync finished");

        // What was stored before the kill is there, consistent, once.
        let store = Store::open(&path, "ann").unwrap();
        store.integrity_check().unwrap();
        let partial = all_records(&store).len();
        assert!(partial < 200, "a partial pull: {partial}");
        assert!(
            partial > before,
            "each run kept the pages it stored: {partial} after {before}"
        );
        before = partial;
        drop(store);
    }

    // Resuming completes the pull: everything, each change once.
    let mut ann = Store::open(&path, "ann").unwrap();
    let transport = HttpTransport::new(&relay.url, &token);
    ann.sync(&transport, &mut |_| {}).unwrap();
    assert_eq!(all_records(&ann), all_records(&bob.store));
    for r in all_records(&ann) {
        assert_eq!(
            ann.history(&r.id).unwrap().len(),
            1,
            "{} applied once",
            r.id
        );
    }
}
