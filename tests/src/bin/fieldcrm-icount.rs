//! Instruction counts of FieldCRM's per-record costs, the figure that holds
//! still on a noisy machine: callgrind counts the instructions a piece of
//! work executes, the same for the same binary and input whatever else
//! the machine does.
//!
//! `cargo run --release -p fieldcrm-tests --bin fieldcrm-icount -- [--records N] [--check BASELINE.json]`
//!
//! Each scenario runs in its own process under
//! `valgrind --tool=callgrind --collect-atstart=no --toggle-collect=...`:
//! only the instructions inside [`icount_measured`] are counted, so set-up
//! (making the records, opening stores) is left out. Prints one JSON
//! object; with `--check` it fails when a scenario costs more than 10%
//! above the baseline's figure (docs/performance.md says how to update it).

use std::path::{Path, PathBuf};
use std::process::Command;

use clap::Parser;
use fieldcrm_core::protocol::{self, Cursor, RecordBytes};
use fieldcrm_core::{fields, Store};
use fieldcrm_server::relay::sqlite::SqliteRelay;
use fieldcrm_server::relay::{RelayStore, Role, User};
use fieldcrm_tests::workload;
use serde_json::{json, Value as Json};

/// The same allocator as `fieldcrm-server`.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(about = "Count the instructions of FieldCRM's per-record costs under callgrind")]
struct Args {
    /// Records per batch scenario (bootstrap page, push, pull page).
    #[arg(long, default_value_t = 1000)]
    records: usize,
    /// Single operations per per-operation scenario (create, edit, search).
    #[arg(long, default_value_t = 100)]
    ops: usize,
    /// Fail if a scenario costs more than 10% above this baseline.
    #[arg(long)]
    check: Option<PathBuf>,
    /// Only these scenarios (comma-separated).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Internal: run one scenario in this process (under callgrind).
    #[arg(long, hide = true)]
    run: Option<String>,
}

/// (name, what one unit is, the floors it is compared with: their sum
/// is the same work done with raw Automerge and raw SQLite)
const SCENARIOS: &[(&str, &str, &[&str])] = &[
    (
        "bootstrap_page",
        "record",
        &["floor_automerge_load", "floor_sqlite_insert"],
    ),
    (
        "bootstrap_page_read",
        "record",
        &["floor_automerge_load", "floor_sqlite_insert"],
    ),
    (
        "relay_push",
        "change",
        &["floor_automerge_apply", "floor_sqlite_insert"],
    ),
    ("relay_sync_upload", "change", &[]),
    ("local_create", "record", &[]),
    ("local_edit", "edit", &[]),
    ("pull_page", "change", &[]),
    ("search", "query", &[]),
    ("floor_automerge_load", "record", &[]),
    ("floor_automerge_apply", "change", &[]),
    ("floor_sqlite_insert", "row", &[]),
];

/// The work callgrind counts; everything outside it is set-up.
#[inline(never)]
fn icount_measured<R>(work: impl FnOnce() -> R) -> R {
    std::hint::black_box(work())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    if let Some(name) = &args.run {
        let dir = tempfile::tempdir()?;
        let units = run(name, &args, dir.path())?;
        println!("units={units}");
        return Ok(());
    }
    let mut report = serde_json::Map::new();
    for (name, unit, _) in SCENARIOS {
        if !args.only.is_empty() && !args.only.iter().any(|o| o == name) {
            continue;
        }
        let (instructions, units) = count(name, &args)?;
        eprintln!(
            "  {name:<22} {:>14} instructions, {:>10.0} per {unit}",
            instructions,
            instructions as f64 / units as f64
        );
        report.insert(
            name.to_string(),
            json!({"instructions": instructions, "units": units, "unit": unit,
                   "per_unit": instructions / units.max(1)}),
        );
    }
    for (name, _, floors) in SCENARIOS {
        let per_unit = |n: &str| report.get(n).and_then(|e| e["per_unit"].as_f64());
        let floor: Option<f64> = floors.iter().map(|f| per_unit(f)).sum();
        if let (Some(cost), Some(floor)) = (per_unit(name), floor.filter(|_| !floors.is_empty())) {
            report[*name]["ratio_to_floor"] = json!((cost / floor * 100.0).round() / 100.0);
        }
    }
    report.insert(
        "sizes".into(),
        json!({"records": args.records, "ops": args.ops}),
    );
    let report = Json::Object(report);
    println!("{}", serde_json::to_string_pretty(&report)?);
    if let Some(baseline) = &args.check {
        check(&report, baseline)?;
    }
    Ok(())
}

/// Runs one scenario under callgrind; returns (instructions, units).
fn count(name: &str, args: &Args) -> Result<(u64, u64), Box<dyn std::error::Error>> {
    let out = tempfile::NamedTempFile::new()?;
    let me = std::env::current_exe()?;
    let run = Command::new("valgrind")
        .arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}", out.path().display()))
        .arg("--collect-atstart=no")
        .arg("--toggle-collect=*icount_measured*")
        .arg(me)
        .args(["--records", &args.records.to_string()])
        .args(["--ops", &args.ops.to_string()])
        .args(["--run", name])
        .output()
        .map_err(|e| format!("cannot run valgrind (is it installed?): {e}"))?;
    if !run.status.success() {
        return Err(format!(
            "scenario {name} failed under callgrind:\n{}",
            String::from_utf8_lossy(&run.stderr)
        )
        .into());
    }
    let units: u64 = String::from_utf8_lossy(&run.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("units="))
        .and_then(|u| u.trim().parse().ok())
        .ok_or_else(|| format!("scenario {name} did not report its units"))?;
    let profile = std::fs::read_to_string(out.path())?;
    let instructions = profile
        .lines()
        .find_map(|l| {
            l.strip_prefix("summary:")
                .or_else(|| l.strip_prefix("totals:"))
        })
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("no instruction total in callgrind's output for {name}"))?;
    Ok((instructions, units))
}

fn check(report: &Json, baseline: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let base: Json = serde_json::from_str(&std::fs::read_to_string(baseline)?)?;
    if base["sizes"] != report["sizes"] {
        return Err(format!(
            "the baseline was counted with sizes {}, this run with {}: use the same --records and --ops",
            base["sizes"], report["sizes"]
        )
        .into());
    }
    let mut failed = Vec::new();
    for (name, now) in report.as_object().into_iter().flatten() {
        let (Some(was), Some(is)) = (base[name]["per_unit"].as_f64(), now["per_unit"].as_f64())
        else {
            continue;
        };
        let change = is / was - 1.0;
        eprintln!("  {name:<22} {:+.1}% against the baseline", change * 100.0);
        if change > 0.10 {
            failed.push(format!(
                "{name}: {was:.0} -> {is:.0} per unit ({:+.1}%)",
                change * 100.0
            ));
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "instruction counts regressed by more than 10%:\n  {}",
            failed.join("\n  ")
        )
        .into())
    }
}

const PASSWORD_HASH: &str = "not-a-real-hash";

/// A relay at `dir` with W1's users.
fn relay(dir: &Path) -> Result<SqliteRelay, Box<dyn std::error::Error>> {
    let relay = SqliteRelay::open(&dir.join("relay"))?;
    relay.add_territory("north")?;
    for user in ["ann", "bob", "cat"] {
        relay.add_user(user, PASSWORD_HASH, Role::Rep, &["north".into()])?;
    }
    Ok(relay)
}

fn rep(id: &str) -> User {
    User {
        id: id.into(),
        role: Role::Rep,
        territories: vec!["north".into()],
    }
}

/// A device store holding `n` W1 records made on it.
fn device_with(dir: &Path, n: usize) -> Result<(Store, Vec<String>), Box<dyn std::error::Error>> {
    let mut store = Store::open(dir.join("device.db"), "ann")?;
    let plan = workload::w1(n, 42, "north", &["ann", "bob", "cat"]);
    let ids = workload::create_batch(&mut store, &plan)?;
    Ok((store, ids))
}

fn outbox(store: &Store) -> Result<Vec<RecordBytes>, Box<dyn std::error::Error>> {
    Ok(store
        .outbox(0, usize::MAX >> 1, false)?
        .into_iter()
        .map(|e| RecordBytes {
            record_id: e.record_id,
            bytes: e.bytes,
        })
        .collect())
}

/// Runs scenario `name` in this process; returns how many units it did.
fn run(name: &str, args: &Args, dir: &Path) -> Result<u64, Box<dyn std::error::Error>> {
    let n = args.records;
    Ok(match name {
        "bootstrap_page" | "bootstrap_page_read" => {
            // The page as the relay serves it to a fresh device of the
            // territory: with the relay's projections, or (`_read`, what an
            // older relay sends) without, so the device reads every document.
            let (source, _) = device_with(dir, n)?;
            let relay = relay(dir)?;
            relay.push(
                &rep("ann"),
                "device-a",
                &Cursor::default(),
                outbox(&source)?,
            )?;
            let mut fresh = Store::open(dir.join("fresh.db"), "bob")?;
            let mut request: fieldcrm_core::protocol::SyncRequest =
                protocol::decode(&fresh.sync_request_paged(16 << 20)?)?;
            request.projections = name == "bootstrap_page";
            let (response, _) = fieldcrm_server::relay::sync(&relay, &rep("bob"), request)?;
            if response.snapshots.len() != n || response.more {
                return Err(format!(
                    "one page of {n} snapshots expected, got {}",
                    response.snapshots.len()
                )
                .into());
            }
            let bytes = protocol::encode(&response);
            icount_measured(|| fresh.apply_sync_response(&bytes))?;
            n as u64
        }
        "relay_push" => {
            let (device, _) = device_with(dir, n)?;
            let changes = outbox(&device)?;
            let relay = relay(dir)?;
            let out = icount_measured(|| {
                relay.push(&rep("ann"), "device-a", &Cursor::default(), changes)
            })?;
            if !out.rejected.is_empty() {
                return Err(format!("the relay refused: {}", out.rejected[0].reason).into());
            }
            n as u64
        }
        "relay_sync_upload" => {
            // A device's first sync round as the relay serves it: the push
            // of its records, then the pull (a first bootstrap).
            let (device, _) = device_with(dir, n)?;
            let request: fieldcrm_core::protocol::SyncRequest =
                protocol::decode(&device.sync_request_paged(4 << 20)?)?;
            let relay = relay(dir)?;
            let (response, _) =
                icount_measured(|| fieldcrm_server::relay::sync(&relay, &rep("ann"), request))?;
            if !response.rejected.is_empty() {
                return Err(format!("the relay refused: {}", response.rejected[0].reason).into());
            }
            n as u64
        }
        "local_create" => {
            let (mut store, ids) = device_with(dir, 10)?;
            let plan = workload::w1(args.ops, 7, "north", &["ann"]);
            icount_measured(|| -> fieldcrm_core::Result<()> {
                for p in &plan {
                    let mut fields = p.fields.clone();
                    if p.account.is_some() {
                        fields.insert("account_id".into(), ids[0].as_str().into());
                    }
                    store.create(p.kind, fields)?;
                }
                Ok(())
            })?;
            args.ops as u64
        }
        "local_edit" => {
            let (mut store, ids) = device_with(dir, args.ops)?;
            icount_measured(|| -> fieldcrm_core::Result<()> {
                for (i, id) in ids.iter().enumerate() {
                    store.update(id, fields([("custom.visits", i as i64)]))?;
                }
                Ok(())
            })?;
            ids.len() as u64
        }
        "pull_page" => {
            let (device, _) = device_with(dir, n)?;
            let relay = relay(dir)?;
            relay.push(
                &rep("ann"),
                "device-a",
                &Cursor::default(),
                outbox(&device)?,
            )?;
            // After the first entry: a page of log entries, not a bootstrap.
            let cursor = Cursor {
                seq: 1,
                ..Cursor::default()
            };
            let size = fieldcrm_server::relay::PageSize {
                max_bytes: 64 << 20,
                projections: false,
            };
            let page = icount_measured(|| relay.pull(&rep("bob"), "device-b", &cursor, size))?;
            page.changes.len() as u64
        }
        "search" => {
            let (store, _) = device_with(dir, n)?;
            let terms = workload::search_terms(args.ops, 3);
            icount_measured(|| -> fieldcrm_core::Result<()> {
                for t in &terms {
                    store.search(t, None, 20)?;
                }
                Ok(())
            })?;
            terms.len() as u64
        }
        "floor_automerge_load" => {
            let (source, ids) = device_with(dir, n)?;
            let docs: Vec<Vec<u8>> = ids
                .iter()
                .map(|id| source.snapshot(id))
                .collect::<fieldcrm_core::Result<_>>()?;
            icount_measured(|| -> Result<(), automerge::AutomergeError> {
                for bytes in &docs {
                    std::hint::black_box(automerge::AutoCommit::load(bytes)?);
                }
                Ok(())
            })?;
            n as u64
        }
        "floor_automerge_apply" => {
            let (source, _) = device_with(dir, n)?;
            let changes = outbox(&source)?;
            icount_measured(|| -> Result<(), automerge::AutomergeError> {
                for c in &changes {
                    let mut doc = automerge::AutoCommit::new();
                    doc.load_incremental(&c.bytes)?;
                    std::hint::black_box(doc);
                }
                Ok(())
            })?;
            n as u64
        }
        "floor_sqlite_insert" => {
            let (source, _) = device_with(dir, n)?;
            let changes = outbox(&source)?;
            let mut conn = rusqlite::Connection::open(dir.join("floor.db"))?;
            conn.execute_batch(
                "PRAGMA journal_mode=WAL; CREATE TABLE t (id TEXT PRIMARY KEY, bytes BLOB);",
            )?;
            icount_measured(|| -> rusqlite::Result<()> {
                let tx = conn.transaction()?;
                {
                    let mut insert = tx.prepare("INSERT INTO t (id, bytes) VALUES (?1, ?2)")?;
                    for c in &changes {
                        insert.execute(rusqlite::params![c.record_id, c.bytes])?;
                    }
                }
                tx.commit()
            })?;
            n as u64
        }
        other => return Err(format!("unknown scenario {other:?}").into()),
    })
}
