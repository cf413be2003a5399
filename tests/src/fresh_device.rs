//! A fresh device bootstrapping in a process of its own, so its peak memory
//! is its own: the calling binary re-runs itself with `--fresh-device URL
//! USER DB`, and the child prints one JSON line of figures.
//!
//! The child runs on the system allocator, as the core does in an app
//! (see [`crate::allocator`]).
//!
//! "Listable" is checked from a second connection to the device's store,
//! as an app's UI would read: a record counts once another connection can
//! list it, that is once the page holding it has committed.

use std::cell::Cell;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fieldcrm_core::{HttpTransport, ListQuery, Store, Transport};
use serde_json::{json, Value as Json};

use crate::relay_process::{self, PASSWORD};

/// The flag that turns a binary into the fresh-device child.
pub const CHILD_FLAG: &str = "--fresh-device";

/// Records the first 1,000 of which the UI must be able to list early.
const FIRST: usize = 1_000;

/// Runs the child if this process was started as one.
pub fn child_main_if_requested() -> Option<Result<(), Box<dyn std::error::Error>>> {
    let args: Vec<String> = std::env::args().collect();
    let i = args.iter().position(|a| a == CHILD_FLAG)?;
    let (url, user, db) = (args.get(i + 1)?, args.get(i + 2)?, args.get(i + 3)?);
    Some(bootstrap(url, user, Path::new(db)).map(|figures| println!("{figures}")))
}

/// Bootstraps `user`'s device at `db` from a child process and returns its
/// figures: `wall_s`, `records`, `rounds`, `first_page_records`,
/// `first_1000_listable_ms` (after the first page's bytes arrived),
/// `peak_rss_kib` (the child's `VmHWM`), `cpu_s` (the child's, user +
/// system).
pub fn measure(url: &str, user: &str, db: &Path) -> Result<Json, Box<dyn std::error::Error>> {
    let out = Command::new(std::env::current_exe()?)
        .arg(CHILD_FLAG)
        .args([url, user])
        .arg(db)
        .env("RUST_LOG", "error")
        .env(crate::allocator::SYSTEM_ALLOCATOR_ENV, "1")
        .stderr(Stdio::inherit())
        .output()?;
    if !out.status.success() {
        return Err(format!("the fresh device failed ({})", out.status).into());
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// Remembers when the first response arrived.
struct Timed<'a> {
    inner: &'a HttpTransport,
    first_arrival: Cell<Option<Instant>>,
}

impl Transport for Timed<'_> {
    fn exchange(&self, request: &[u8]) -> fieldcrm_core::Result<Vec<u8>> {
        let response = self.inner.exchange(request)?;
        if self.first_arrival.get().is_none() {
            self.first_arrival.set(Some(Instant::now()));
        }
        Ok(response)
    }
}

fn bootstrap(url: &str, user: &str, db: &Path) -> Result<Json, Box<dyn std::error::Error>> {
    let mut store = Store::open(db, user)?;
    let ui = Store::open(db, user)?;
    let (transport, _) = HttpTransport::login(url, user, PASSWORD)?;
    let timed = Timed {
        inner: &transport,
        first_arrival: Cell::new(None),
    };
    let listable = |ui: &Store| -> fieldcrm_core::Result<usize> {
        let query = ListQuery {
            limit: FIRST,
            ..Default::default()
        };
        Ok(ui.list(&query)?.records.len())
    };
    let mut first_page_records = None;
    let mut first_listed: Option<Duration> = None;
    let mut failure = None;
    let t = Instant::now();
    let done = store.sync(&timed, &mut |progress| {
        first_page_records.get_or_insert(progress.total.snapshots);
        if first_listed.is_some() || failure.is_some() {
            return;
        }
        match listable(&ui) {
            Ok(n) if n >= FIRST => {
                let arrived = timed.first_arrival.get().unwrap_or(t);
                first_listed = Some(arrived.elapsed());
            }
            Ok(_) => {}
            Err(e) => failure = Some(e),
        }
    })?;
    let wall = t.elapsed();
    if let Some(e) = failure {
        return Err(e.into());
    }
    Ok(json!({
        "wall_s": (wall.as_secs_f64() * 1e4).round() / 1e4,
        "records": done.total.snapshots,
        "rounds": done.round,
        "first_page_records": first_page_records,
        "first_1000_listable_ms": first_listed.map(|d| (d.as_secs_f64() * 1e4).round() / 10.0),
        "peak_rss_kib": relay_process::own_peak_rss_kib(),
        "cpu_s": relay_process::process_cpu_time(std::process::id()).as_secs_f64(),
    }))
}
