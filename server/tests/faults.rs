//! Faults: the relay process SIGKILLed at random moments while devices keep
//! editing and syncing. Nothing a device saw acknowledged may be missing
//! afterwards, and everyone converges.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{all_records, seed_users, Device, Relay};
use fieldcrm_core::{fields, Kind, Store};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const ROUNDS: usize = 20;

fn outbox_hashes(store: &Store) -> HashSet<[u8; 32]> {
    store
        .outbox(0, 100_000, true)
        .unwrap()
        .into_iter()
        .map(|e| e.hash)
        .collect()
}

fn relay_log(data: &std::path::Path) -> HashSet<[u8; 32]> {
    let conn = rusqlite::Connection::open(data.join("relay.db")).unwrap();
    let mut stmt = conn.prepare("SELECT hash FROM relay_log").unwrap();
    stmt.query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn edit(device: &mut Device, rng: &mut StdRng, tag: &str) {
    let known = all_records(&device.store);
    if known.is_empty() || rng.gen_bool(0.3) {
        device
            .store
            .create(
                Kind::Account,
                fields([
                    ("name", format!("Account {tag}")),
                    ("territory", "north".into()),
                ]),
            )
            .unwrap();
    } else {
        let target = &known[rng.gen_range(0..known.len())];
        let change = if rng.gen_bool(0.5) {
            fields([("industry", format!("Industry {tag}"))])
        } else {
            fields([("phone", format!("+44 {}", rng.gen_range(1000..9999)))])
        };
        device.store.update(&target.id, change).unwrap();
    }
}

#[test]
fn relay_killed_mid_sync_loses_no_acknowledged_change_and_devices_converge() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("relay");
    seed_users(&data);
    let mut relay = Relay::start(&data);
    let users = ["ann", "bob", "olivia"];
    let mut devices: Vec<Device> = users
        .iter()
        .map(|u| Device::new(dir.path(), &relay, u))
        .collect();
    let mut rng = StdRng::seed_from_u64(0xDEAD);
    let mut acked: HashSet<[u8; 32]> = HashSet::new();
    let mut failed_syncs = 0;

    for round in 0..ROUNDS {
        for (i, device) in devices.iter_mut().enumerate() {
            for e in 0..rng.gen_range(1..4) {
                edit(device, &mut rng, &format!("r{round}d{i}e{e}"));
            }
        }
        let pid = relay.pid();
        let delay = Duration::from_millis(rng.gen_range(5..60));
        let killer = std::thread::spawn(move || {
            std::thread::sleep(delay);
            std::process::Command::new("kill")
                .args(["-9", &pid.to_string()])
                .status()
                .unwrap();
        });
        for device in &mut devices {
            let before = outbox_hashes(&device.store);
            if device.store.sync(&device.transport, &mut |_| {}).is_err() {
                failed_syncs += 1;
            }
            let after = outbox_hashes(&device.store);
            acked.extend(before.difference(&after).copied());
        }
        killer.join().unwrap();
        relay.kill();

        let logged = relay_log(&data);
        let lost: Vec<_> = acked.difference(&logged).collect();
        assert!(
            lost.is_empty(),
            "round {round}: {} acknowledged change(s) missing from the relay",
            lost.len()
        );

        relay = Relay::start(&data);
        for device in &mut devices {
            device.reconnect(&relay);
        }
    }

    // Calm weather: everyone syncs until nothing moves.
    for _ in 0..2 {
        for device in &mut devices {
            device.sync();
        }
    }
    for device in &devices {
        assert_eq!(
            device.store.outbox_status().unwrap().pending,
            0,
            "every change got through"
        );
    }
    let expected = all_records(&devices[0].store);
    for device in &devices[1..] {
        assert_eq!(all_records(&device.store), expected, "devices converge");
    }
    assert!(failed_syncs > 0, "some syncs were cut off by a kill");
    eprintln!(
        "{ROUNDS} relay kills, {failed_syncs} interrupted syncs, {} acknowledged changes, {} records",
        acked.len(),
        expected.len()
    );
}
