//! Backup and restore through the binary: `fieldcrm-server backup` taken
//! while a device pushes, more work after it, the relay killed and
//! `restore --from` the backup. Every device that synced after the backup
//! then re-converges with the restored relay by itself: nothing any device
//! saw acknowledged is missing from the log, no change is in it twice, and
//! a fresh device sees what every device has.

mod common;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};

use common::{admin_on, all_records, bin, outbox_hashes, seed_users, Device, Relay};
use fieldcrm_core::{fields, HttpTransport, Kind, Record, Store, Value};

/// The relay log's change hashes, in log order.
fn log_hashes(data: &Path) -> Vec<[u8; 32]> {
    let conn = rusqlite::Connection::open(data.join("relay.db")).unwrap();
    let mut stmt = conn
        .prepare("SELECT hash FROM relay_log ORDER BY seq")
        .unwrap();
    stmt.query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// `n` edits (a new account, or a field of a known one), then a sync; adds
/// what the relay acknowledged to `acked`.
fn work(device: &mut Device, n: usize, tag: &str, territory: &str, acked: &mut HashSet<[u8; 32]>) {
    for i in 0..n {
        let known = all_records(&device.store);
        if known.is_empty() || i % 3 == 0 {
            device
                .store
                .create(
                    Kind::Account,
                    fields([
                        ("name", format!("Account {tag} {i}")),
                        ("territory", territory.to_string()),
                    ]),
                )
                .unwrap();
        } else {
            let target = &known[(i * 7) % known.len()];
            device
                .store
                .update(&target.id, fields([("industry", format!("{tag} {i}"))]))
                .unwrap();
        }
    }
    let before = outbox_hashes(&device.store);
    device.sync();
    acked.extend(before.difference(&outbox_hashes(&device.store)));
}

fn newest_account(store: &Store) -> String {
    all_records(store)
        .into_iter()
        .filter(|r| r.kind == Kind::Account)
        .max_by_key(|r| r.created_at)
        .unwrap()
        .id
}

#[test]
fn a_backup_taken_mid_load_restores_and_every_device_reconverges() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("relay");
    seed_users(&data);
    let relay = Relay::start(&data);
    let mut acked = HashSet::new();
    let mut ann = Device::new(dir.path(), &relay, "ann");
    let mut bob = Device::new(dir.path(), &relay, "bob");
    let mut sam = Device::new(dir.path(), &relay, "sam");
    let mut olivia = Device::new(dir.path(), &relay, "olivia");
    work(&mut ann, 6, "ann", "north", &mut acked);
    work(&mut sam, 4, "sam", "south", &mut acked);
    olivia.sync();

    // The backup is taken while bob keeps editing and syncing.
    let backup = dir.path().join("backup.db");
    let stop = AtomicBool::new(false);
    let syncs_during_backup = std::thread::scope(|s| {
        let bob = &mut bob;
        let acked = &mut acked;
        let stop = &stop;
        let load = s.spawn(move || {
            let mut rounds = 0;
            while !stop.load(Ordering::SeqCst) || rounds < 3 {
                work(bob, 2, &format!("bob {rounds}"), "north", acked);
                rounds += 1;
            }
            rounds
        });
        std::thread::sleep(std::time::Duration::from_millis(50));
        let said = admin_on(
            &["--data".as_ref(), data.as_os_str()],
            &["backup", backup.to_str().unwrap()],
        );
        assert!(said.contains("backed up"), "{said}");
        stop.store(true, Ordering::SeqCst);
        load.join().unwrap()
    });
    assert!(syncs_during_backup >= 3);
    let in_backup = rusqlite::Connection::open(&backup)
        .unwrap()
        .query_row("SELECT count(*) FROM relay_log", [], |r| r.get::<_, i64>(0))
        .unwrap();

    // After the backup: ann works on, olivia edits ann's newest account (on
    // top of ann's changes), bob works on, and ann signs in on a second
    // device (its actor is bound only after the backup).
    work(&mut ann, 6, "ann later", "north", &mut acked);
    olivia.sync();
    let target = newest_account(&olivia.store);
    olivia
        .store
        .update(&target, fields([("phone", "+44 20 7946 0000")]))
        .unwrap();
    work(&mut olivia, 0, "olivia", "north", &mut acked);
    work(&mut bob, 4, "bob later", "north", &mut acked);
    let tablet_dir = dir.path().join("tablet");
    std::fs::create_dir(&tablet_dir).unwrap();
    let mut tablet = Device::new(&tablet_dir, &relay, "ann");
    tablet.sync();
    work(&mut tablet, 3, "tablet", "north", &mut acked);
    // Everyone converges; the tablet then edits bob's newest account, a
    // record only bob's device can send again after the restore. What
    // everyone sees then is what must survive.
    for _ in 0..2 {
        for device in [&mut ann, &mut tablet, &mut bob, &mut sam, &mut olivia] {
            device.sync();
        }
    }
    let bobs = all_records(&bob.store)
        .into_iter()
        .filter(|r| r.kind == Kind::Account && r.created_by == "bob")
        .max_by_key(|r| r.created_at)
        .unwrap()
        .id;
    tablet
        .store
        .update(&bobs, fields([("website", "https://example.com")]))
        .unwrap();
    work(&mut tablet, 0, "tablet", "north", &mut acked);
    for device in [&mut ann, &mut bob, &mut sam, &mut olivia] {
        device.sync();
    }
    let before: HashMap<String, Record> = all_records(&olivia.store)
        .into_iter()
        .map(|r| (r.id.clone(), r))
        .collect();
    let logged_before = log_hashes(&data).len() as i64;
    assert!(logged_before > in_backup);

    // A relay serving the folder cannot be restored under.
    let refused = Command::new(bin())
        .args(["--data".as_ref(), data.as_os_str()])
        .args(["restore", "--from", backup.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(why.contains("stop it first"), "{why}");

    relay.kill();
    let said = admin_on(
        &["--data".as_ref(), data.as_os_str()],
        &["restore", "--from", backup.to_str().unwrap()],
    );
    assert!(said.contains("kept in"), "{said}");
    assert_eq!(log_hashes(&data).len() as i64, in_backup);
    let relay = Relay::start(&data);

    // The tablet signed in after the backup: the restored relay does not
    // know its token, so it signs in again, keeping its store.
    for device in [&mut ann, &mut tablet, &mut bob, &mut sam, &mut olivia] {
        device.reconnect(&relay);
    }
    // A device listening for changes from its old position, now past the
    // log's end, is woken at once to learn of the restore.
    let past_end = ann.store.cursor().unwrap().seq;
    assert!(past_end > in_backup as u64);
    assert!(ann
        .transport
        .wait_for_change(past_end, std::time::Duration::from_secs(10))
        .unwrap());
    let err = tablet
        .store
        .sync(&tablet.transport, &mut |_| {})
        .unwrap_err();
    assert!(
        matches!(
            err,
            fieldcrm_core::Error::Transport {
                status: Some(401),
                ..
            }
        ),
        "{err}"
    );
    tablet.transport = HttpTransport::login(&relay.url, "ann", common::PASSWORD)
        .unwrap()
        .0;

    // Each device syncs as it would: the relay says it was restored, the
    // device queues its own changes again and pulls everything anew. An
    // edit that builds on another device's lost changes waits for them,
    // unchanged (the tablet edited bob's newest account, which only bob's
    // device can send again); later rounds bring each device what the
    // others sent.
    let mut requeued = Vec::new();
    let mut waited = 0;
    let mut rebased = 0;
    for pass in 0..5 {
        let mut moved = 0;
        for device in [&mut ann, &mut tablet, &mut bob, &mut sam, &mut olivia] {
            let done = device.sync();
            let t = done.total;
            if pass == 0 {
                requeued.push(t.requeued);
                waited += done.outbox_pending;
            }
            rebased += t.rebased;
            moved += t.acked + t.changes + t.snapshots;
        }
        if moved == 0 {
            break;
        }
    }
    assert!(requeued.iter().all(|n| *n > 0), "{requeued:?}");
    assert!(waited > 0, "the tablet's edit of bob's account waited");
    assert_eq!(
        rebased, 0,
        "nothing was made again: every change went as made"
    );

    // Every change any device saw acknowledged is in the log again, as it
    // was made, once.
    let log = log_hashes(&data);
    let logged: HashSet<[u8; 32]> = log.iter().copied().collect();
    assert_eq!(logged.len(), log.len(), "a change is in the log twice");
    let lost = acked.difference(&logged).count();
    assert_eq!(
        lost,
        0,
        "{lost} of {} acknowledged changes are missing",
        acked.len()
    );
    std::fs::create_dir(dir.path().join("fresh")).unwrap();
    let mut fresh = Device::new(&dir.path().join("fresh"), &relay, "olivia");
    fresh.sync();
    let after: HashMap<String, Record> = all_records(&fresh.store)
        .into_iter()
        .map(|r| (r.id.clone(), r))
        .collect();
    assert_eq!(after, before, "every record as it was before the restore");
    for (name, device) in [
        ("ann", &ann),
        ("tablet", &tablet),
        ("bob", &bob),
        ("sam", &sam),
        ("olivia", &olivia),
    ] {
        let store = &device.store;
        assert_eq!(store.outbox_status().unwrap().pending, 0, "{name}");
        assert!(store.refused_changes().unwrap().is_empty(), "{name}");
        for record in all_records(store) {
            assert_eq!(
                store.heads(&record.id).unwrap(),
                fresh.store.heads(&record.id).unwrap(),
                "{name}: {} has another history than the relay's",
                record.id
            );
        }
    }
    assert_eq!(
        after[&target].fields.get("phone"),
        Some(&Value::from("+44 20 7946 0000"))
    );
    assert_eq!(
        after[&bobs].fields.get("website"),
        Some(&Value::from("https://example.com"))
    );
    eprintln!(
        "backup_restore: {} acknowledged changes ({} in the backup, {} after it), \
         {syncs_during_backup} syncs during the backup, requeued per device {requeued:?}, \
         {waited} changes waited for another device's",
        acked.len(),
        in_backup,
        logged_before - in_backup
    );
}
