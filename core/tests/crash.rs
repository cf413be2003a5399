//! Crash safety: a child process makes a stream of edits and reports each
//! one after its call returned; the parent SIGKILLs it at a random moment,
//! 20 times. After every kill the store opens, passes SQLite's integrity
//! check, holds every reported edit, and its projection matches its documents.
//!
//! The child is this test binary re-run with `FIELDCRM_CRASH_CHILD` set.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fieldcrm_core::{fields, Kind, ListQuery, Store};
use rand::{Rng, SeedableRng};

const ROUNDS: u64 = 20;
const CHILD_ENV: &str = "FIELDCRM_CRASH_CHILD";

/// Entry point of the child process; does nothing in a normal test run.
#[test]
fn crash_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (path, start) = spec.split_once('|').expect("child spec is PATH|START");
    let start: u64 = start.parse().expect("start sequence number");
    let mut store = Store::open(path, "ann").expect("child opens the store");
    let mut ids: Vec<String> = store
        .list(&ListQuery {
            limit: 1000,
            ..ListQuery::kind(Kind::Account)
        })
        .expect("list accounts")
        .records
        .into_iter()
        .map(|r| r.id)
        .collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(start);
    for seq in start.. {
        if ids.is_empty() || seq % 3 == 0 {
            let record = store
                .create(
                    Kind::Account,
                    fields([
                        ("name", format!("acct-{seq}")),
                        ("territory", "north".into()),
                    ]),
                )
                .expect("create");
            ack(&format!("ack {seq} create {}", record.id));
            ids.push(record.id);
        } else {
            let id = ids[rng.gen_range(0..ids.len())].clone();
            store
                .update(&id, fields([("phone", format!("+1 555 {seq}"))]))
                .expect("update");
            ack(&format!("ack {seq} update {id}"));
        }
    }
}

/// Reports an edit whose call returned. Flushed at once: stdout on a pipe
/// may be block-buffered, and a buffered report would be lost to the kill.
fn ack(line: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").expect("write to the parent");
    out.flush().expect("flush to the parent");
}

#[derive(Debug)]
enum Ack {
    Create { seq: u64, id: String },
    Update { seq: u64, id: String },
}

fn parse(line: &str) -> Option<Ack> {
    // The test harness may have printed `test crash_child ... ` (no newline)
    // before the first report, so look for the marker anywhere in the line.
    let at = line.find("ack ")?;
    let mut parts = line[at + 4..].split(' ');
    let seq = parts.next()?.parse().ok()?;
    let op = parts.next()?;
    let id = parts.next()?.trim().to_string();
    match op {
        "create" => Some(Ack::Create { seq, id }),
        "update" => Some(Ack::Update { seq, id }),
        _ => None,
    }
}

/// Runs the child until a random moment after its first acknowledged edit,
/// kills it, and returns the edits it reported.
fn run_and_kill(path: &std::path::Path, start: u64, kill_after: Duration) -> Vec<Ack> {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, format!("{}|{start}", path.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut acks = Vec::new();
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        // A line without its newline was cut by the kill: not acknowledged.
        while reader.read_line(&mut line).unwrap_or(0) > 0 {
            if line.ends_with('\n') {
                acks.extend(parse(&line));
            }
            line.clear();
        }
        acks
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    // Wait for the store to exist, then let the child write for a while.
    while Instant::now() < deadline && !path.with_extension("db-wal").exists() {
        std::thread::sleep(Duration::from_millis(2));
    }
    std::thread::sleep(kill_after);
    child.kill().unwrap(); // SIGKILL on Unix
    child.wait().unwrap();
    reader.join().unwrap()
}

#[test]
fn sigkilled_writer_loses_no_acknowledged_edit() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("device.db");
    let mut rng = rand::rngs::StdRng::seed_from_u64(0xC0FFEE);
    let mut created: HashMap<String, u64> = HashMap::new();
    let mut last_update: HashMap<String, u64> = HashMap::new();
    let mut acked_total = 0usize;

    for round in 0..ROUNDS {
        let kill_after = Duration::from_millis(rng.gen_range(5..120));
        let acks = run_and_kill(&path, (round + 1) * 1_000_000, kill_after);
        acked_total += acks.len();
        for ack in acks {
            match ack {
                Ack::Create { seq, id } => {
                    created.insert(id, seq);
                }
                Ack::Update { seq, id } => {
                    let e = last_update.entry(id).or_default();
                    *e = (*e).max(seq);
                }
            }
        }

        let mut store = Store::open(&path, "ann").unwrap();
        store.integrity_check().unwrap();
        for (id, seq) in &created {
            let record = store
                .get(id)
                .unwrap_or_else(|e| panic!("round {round}: acknowledged create {seq} lost: {e}"));
            assert_eq!(record.text("name"), Some(format!("acct-{seq}").as_str()));
        }
        for (id, seq) in &last_update {
            let record = store.get(id).unwrap();
            let phone = record
                .text("phone")
                .unwrap_or_else(|| panic!("round {round}: update {seq} of {id} lost"));
            let stored: u64 = phone.rsplit(' ').next().unwrap().parse().unwrap();
            // The store may hold one later edit whose acknowledgement the kill cut off.
            assert!(
                stored >= *seq,
                "round {round}: {id} has phone from edit {stored}, acknowledged edit {seq} lost"
            );
        }
        // Each acknowledged edit is one outbox entry; at most one more committed unreported.
        let pending = store.outbox_status().unwrap().pending;
        assert!(
            pending >= acked_total && pending <= acked_total + round as usize + 1,
            "round {round}: outbox has {pending} entries for {acked_total} acknowledged edits"
        );
        let listed = |s: &Store| {
            s.list(&ListQuery {
                limit: 1000,
                ..Default::default()
            })
            .unwrap()
        };
        let before = listed(&store);
        store.rebuild_projection().unwrap();
        assert_eq!(
            listed(&store),
            before,
            "round {round}: projection disagrees with documents"
        );
    }
    eprintln!(
        "{ROUNDS} kills, {acked_total} acknowledged edits, {} records",
        created.len()
    );
    assert!(
        acked_total > ROUNDS as usize,
        "the child made edits before being killed ({acked_total})"
    );
    assert!(!created.is_empty() && !last_update.is_empty());
}
