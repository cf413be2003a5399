//! A device process SIGKILLed in the middle of syncing (while pushing,
//! between push and pull, while applying a page): on reopen its store is
//! sound, and a further sync completes with nothing lost and nothing applied
//! twice. The device is this test binary re-run with `FIELDCRM_DEVICE_CHILD`.

mod common;

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{all_records, seed_users, Device, Relay, PASSWORD};
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
    let data = dir.path().join("relay");
    seed_users(&data);
    let relay = Relay::start(&data);
    let (_, login) = HttpTransport::login(&relay.url, "ann", PASSWORD).unwrap();
    let path = dir.path().join("ann-phone.db");
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
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "device_child", "--nocapture", "--test-threads=1"])
            .env(
                CHILD_ENV,
                format!("{}|{}|{}|{round}", path.display(), relay.url, login.token),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
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
    let transport = HttpTransport::new(&relay.url, &login.token);
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
