//! The disk fills up, on the relay (SQLite) and on a device: every call
//! fails with a clear "storage full" error, nothing stored is corrupted or
//! lost, and work resumes by itself once there is space. Each store lives
//! on a small tmpfs the test mounts (and grows to free space), so the test
//! needs root; elsewhere it says so and is skipped.

mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{outbox_hashes, seed_users, Relay};
use fieldcrm_core::{fields, HttpTransport, Kind, Store};

/// A tmpfs of `mib` MiB mounted at a fresh directory, unmounted on drop.
struct SmallDisk {
    path: PathBuf,
}

impl SmallDisk {
    fn mount(under: &Path, name: &str, mib: u32) -> Option<SmallDisk> {
        let path = under.join(name);
        std::fs::create_dir_all(&path).unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(&path)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        mounted.then_some(SmallDisk { path })
    }

    /// Frees space: the filesystem grows to `mib` MiB.
    fn grow(&self, mib: u32) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={mib}m")])
            .arg(&self.path)
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

fn skipped(why: &str) {
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "skipped the disk-full test: {why} (it mounts small tmpfs filesystems, which needs root)"
    );
}

/// An account with about 20 KB in five custom fields that compress badly,
/// so the disk fills quickly (a few Automerge operations, where 20 KB of
/// notes would be 20,000: slow in a debug build).
fn bulky(name: String, territory: &str, i: usize) -> fieldcrm_core::Fields {
    let mut fields = fields([("name", name), ("territory", territory.to_string())]);
    for f in 0..5 {
        let text: String = (0..1000)
            .map(|j| format!("{:04x}", (i * 7919 + f * 31 + j * 104_729) % 65_521))
            .collect();
        fields.insert(
            format!("custom.bulk{f}"),
            fieldcrm_core::Value::Text(text[..4000].to_string()),
        );
    }
    fields
}

fn integrity(path: &Path) -> String {
    rusqlite::Connection::open(path)
        .unwrap()
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn a_full_disk_fails_calls_clearly_loses_nothing_and_work_resumes_once_there_is_space() {
    let started = std::time::Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let Some(relay_disk) = SmallDisk::mount(dir.path(), "relay-disk", 6) else {
        return skipped("mount -t tmpfs failed");
    };
    let data = relay_disk.path.join("relay");
    seed_users(&data);
    let relay = Relay::start(&data);
    let (transport, _) = HttpTransport::login(&relay.url, "ann", common::PASSWORD).unwrap();
    let mut ann = Store::open(dir.path().join("ann.db"), "ann").unwrap();

    // The relay's disk fills while ann syncs.
    let mut acked: HashSet<[u8; 32]> = HashSet::new();
    let mut full_answers = 0;
    for i in 0..400 {
        ann.create(Kind::Account, bulky(format!("Account {i}"), "north", i))
            .unwrap();
        let before = outbox_hashes(&ann);
        match ann.sync(&transport, &mut |_| {}) {
            Ok(_) => {}
            Err(fieldcrm_core::Error::Transport {
                status: Some(507),
                message,
            }) => {
                assert!(message.contains("storage is full"), "{message}");
                full_answers += 1;
            }
            Err(other) => panic!("a sync on a full relay failed unclearly: {other}"),
        }
        acked.extend(before.difference(&outbox_hashes(&ann)));
        if full_answers >= 3 {
            break;
        }
    }
    assert!(full_answers >= 3, "the relay's disk never filled");
    assert_eq!(
        common::status_of(&relay, "/healthz"),
        200,
        "the relay stays up"
    );
    let waiting = ann.outbox_status().unwrap().pending;
    assert!(waiting > 0);

    // Space is freed: the same relay process takes the rest, by itself.
    relay_disk.grow(64);
    ann.sync(&transport, &mut |_| {}).unwrap();
    assert_eq!(ann.outbox_status().unwrap().pending, 0);
    drop(relay);
    assert_eq!(integrity(&data.join("relay.db")), "ok");
    let conn = rusqlite::Connection::open(data.join("relay.db")).unwrap();
    let logged: HashSet<[u8; 32]> = conn
        .prepare("SELECT hash FROM relay_log")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(acked.is_subset(&logged), "an acknowledged change was lost");
    assert_eq!(
        logged.len(),
        ann.list(&fieldcrm_core::ListQuery::kind(Kind::Account))
            .unwrap()
            .total,
        "every record ann made is in the relay's log once"
    );

    let relay_part = started.elapsed();
    // A device's disk fills during local edits.
    let device_disk = SmallDisk::mount(dir.path(), "device-disk", 3).unwrap();
    let path = device_disk.path.join("bob.db");
    let mut bob = Store::open(&path, "bob").unwrap();
    let mut saved = Vec::new();
    let error = loop {
        let i = saved.len();
        let made = bob.create(Kind::Account, bulky(format!("Offline {i}"), "north", i));
        match made {
            Ok(record) => saved.push(record.id),
            Err(e) => break e,
        }
        assert!(saved.len() < 10_000, "the device's disk never filled");
    };
    assert!(
        matches!(error, fieldcrm_core::Error::StorageFull),
        "{error:?}"
    );
    assert!(error.to_string().starts_with("storage full"), "{error}");
    // Reads go on, and everything saved is there.
    for id in &saved {
        bob.get(id).unwrap();
    }
    device_disk.grow(32);
    let more = bob
        .create(
            Kind::Account,
            fields([("name", "After"), ("territory", "north")]),
        )
        .unwrap();
    assert_eq!(bob.outbox_status().unwrap().pending, saved.len() + 1);
    drop(bob);
    assert_eq!(integrity(&path), "ok");
    let bob = Store::open(&path, "bob").unwrap();
    bob.get(&more.id).unwrap();
    eprintln!(
        "relay: {} changes acknowledged, {full_answers} syncs answered 507, then {waiting} sent after the disk grew ({relay_part:.1?}); device: {} records saved before its disk was full ({:.1?})",
        acked.len(),
        saved.len(),
        started.elapsed() - relay_part
    );
}
