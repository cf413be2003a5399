//! Faults: every relay process SIGKILLed at random moments while devices
//! keep editing and syncing — one relay on SQLite, and two relays on one
//! PostgreSQL (killed together). Nothing a device saw acknowledged may be
//! missing afterwards, no change may be in the log twice, every device's
//! cursor stays valid, and everyone converges.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{all_records, outbox_hashes, seed_users, Device, Relay};
use fieldcrm_core::{fields, Kind};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const ROUNDS: usize = 20;

/// A relay log's entries: (seq, change hash), in log order.
type Log = Vec<(u64, [u8; 32])>;

fn sqlite_log(data: &std::path::Path) -> Log {
    let conn = rusqlite::Connection::open(data.join("relay.db")).unwrap();
    let mut stmt = conn
        .prepare("SELECT seq, hash FROM relay_log ORDER BY seq")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn edit(device: &mut Device, rng: &mut StdRng, tag: &str, territory: &str) {
    let known = all_records(&device.store);
    if known.is_empty() || rng.gen_bool(0.3) {
        device
            .store
            .create(
                Kind::Account,
                fields([
                    ("name", format!("Account {tag}")),
                    ("territory", territory.to_string()),
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

/// The relays of one deployment: how to start them all, and its log.
struct Deployment<'a> {
    start: &'a dyn Fn() -> Vec<Relay>,
    log: &'a dyn Fn() -> Log,
    /// Each device's user and the territory it writes in; the last is an
    /// office user, who sees every territory.
    users: &'a [(&'a str, &'a str)],
}

/// ROUNDS times: devices edit, then sync while every relay is SIGKILLed at
/// one random moment; the log must hold every acknowledged change once,
/// and no device's cursor may be past the log's end. Devices alternate
/// between the relays.
fn kill_every_relay_mid_sync(deployment: Deployment<'_>, dir: &std::path::Path) {
    let mut relays = (deployment.start)();
    let mut devices: Vec<Device> = deployment
        .users
        .iter()
        .enumerate()
        .map(|(i, (user, _))| Device::new(dir, &relays[i % relays.len()], user))
        .collect();
    let mut rng = StdRng::seed_from_u64(0xDEAD);
    let mut acked: HashSet<[u8; 32]> = HashSet::new();
    let mut failed_syncs = 0;

    for round in 0..ROUNDS {
        for (i, device) in devices.iter_mut().enumerate() {
            for e in 0..rng.gen_range(1..4) {
                edit(
                    device,
                    &mut rng,
                    &format!("r{round}d{i}e{e}"),
                    deployment.users[i].1,
                );
            }
        }
        let pids: Vec<String> = relays.iter().map(|r| r.pid().to_string()).collect();
        let delay = Duration::from_millis(rng.gen_range(5..60));
        let killer = std::thread::spawn(move || {
            std::thread::sleep(delay);
            std::process::Command::new("kill")
                .arg("-9")
                .args(&pids)
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
        for relay in relays.drain(..) {
            relay.kill();
        }

        let log = (deployment.log)();
        let logged: HashSet<[u8; 32]> = log.iter().map(|(_, hash)| *hash).collect();
        assert_eq!(
            logged.len(),
            log.len(),
            "round {round}: a change is in the log twice"
        );
        let lost = acked.difference(&logged).count();
        assert_eq!(
            lost, 0,
            "round {round}: {lost} acknowledged change(s) missing from the log"
        );
        // (PostgreSQL's numbers have gaps where a killed transaction took some.)
        let end = log.last().map_or(0, |(seq, _)| *seq);
        for device in &devices {
            let cursor = device.store.cursor().unwrap().seq;
            assert!(
                cursor <= end,
                "round {round}: a device's cursor {cursor} is past the log's end {end}"
            );
        }

        relays = (deployment.start)();
        for (i, device) in devices.iter_mut().enumerate() {
            device.reconnect(&relays[i % relays.len()]);
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
    // Reps see their territory, the office everything: compare what each
    // rep has with the office device's records of that territory.
    let office = all_records(&devices.last().unwrap().store);
    let reps = devices.len() - 1;
    for (device, (_, territory)) in devices[..reps].iter().zip(deployment.users) {
        let theirs: Vec<_> = office
            .iter()
            .filter(|r| r.text("territory") == Some(territory))
            .cloned()
            .collect();
        assert_eq!(all_records(&device.store), theirs, "devices converge");
    }
    assert!(failed_syncs > 0, "some syncs were cut off by a kill");
    eprintln!(
        "{ROUNDS} kills of {} relay(s), {failed_syncs} interrupted syncs, {} acknowledged changes, {} records",
        relays.len(),
        acked.len(),
        office.len()
    );
}

#[test]
fn relay_killed_mid_sync_loses_no_acknowledged_change_and_devices_converge() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("relay");
    seed_users(&data);
    kill_every_relay_mid_sync(
        Deployment {
            start: &|| vec![Relay::start(&data)],
            log: &|| sqlite_log(&data),
            users: &[("ann", "north"), ("bob", "north"), ("olivia", "north")],
        },
        dir.path(),
    );
}

#[test]
fn every_relay_on_postgresql_killed_at_once_loses_nothing_acknowledged() {
    let Some(base) = common::postgres_url("the PostgreSQL relay-kill test") else {
        return;
    };
    let schema = common::PgSchema::new(&base);
    let url = schema.url();
    common::log_readers::seed_users(
        &fieldcrm_server::relay::postgres::PgRelay::open(&url, 1).unwrap(),
        2,
    );
    let log = || -> Log {
        let mut sql = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        sql.query("SELECT seq, hash FROM relay_log ORDER BY seq", &[])
            .unwrap()
            .iter()
            .map(|r| {
                let hash: Vec<u8> = r.get(1);
                (r.get::<_, i64>(0) as u64, hash.try_into().unwrap())
            })
            .collect()
    };
    let dir = tempfile::tempdir().unwrap();
    kill_every_relay_mid_sync(
        Deployment {
            start: &|| vec![Relay::start_postgres(&url), Relay::start_postgres(&url)],
            log: &log,
            users: &[("rep0", "t0"), ("rep1", "t1"), ("olivia", "t1")],
        },
        dir.path(),
    );
}
