//! A whole company on one relay: `records` W1 records spread over
//! `territories` territories (`t0..`, one rep each), uploaded territory by
//! territory from devices made and dropped one at a time, so the harness
//! never holds more than one territory. Fresh devices of `rep0` then
//! bootstrap: when the relay holds only `t0`, and when it holds the whole
//! company, [`RUNS`] times each (the median is reported: one bootstrap is
//! a third of a second, which this machine's noise swings by half). The
//! two should take the same time: a bootstrap reads its own territory's
//! range, not the store.

use std::path::Path;
use std::time::{Duration, Instant};

use fieldcrm_core::{HttpTransport, Store};
use serde_json::{json, Value as Json};

use crate::relay_process::{RelayProcess, PASSWORD};
use crate::{fresh_device, workload};

/// Runs the phase against `relay` (seeded with at least `territories`
/// reps); `store_bytes` reads the relay store's size.
pub fn phase(
    dir: &Path,
    relay: &RelayProcess,
    records: usize,
    territories: usize,
    seed: u64,
    store_bytes: &dyn Fn() -> u64,
) -> Result<Json, Box<dyn std::error::Error>> {
    let per_territory = records / territories.max(1);
    let mut upload = Duration::ZERO;
    let mut alone = Json::Null;
    for i in 0..territories {
        let user = format!("rep{i}");
        let path = dir.join(format!("uploader-{i}.db"));
        let mut device = Store::open(&path, &user)?;
        let plan = workload::w1(per_territory, seed + i as u64, &format!("t{i}"), &[&user]);
        workload::create_batch(&mut device, &plan)?;
        let (transport, _) = HttpTransport::login(&relay.url, &user, PASSWORD)?;
        let t = Instant::now();
        let done = device.sync(&transport, &mut |_| {})?;
        upload += t.elapsed();
        if done.total.rejected > 0 || done.outbox_pending > 0 {
            return Err(format!(
                "territory t{i}: {} changes refused, {} not sent",
                done.total.rejected, done.outbox_pending
            )
            .into());
        }
        drop(device);
        remove_store(&path);
        if i == 0 {
            alone = median_bootstrap(&relay.url, &dir.join("fresh-alone.db"))?;
        }
    }
    let company = median_bootstrap(&relay.url, &dir.join("fresh-company.db"))?;
    let stored = per_territory * territories;
    let bytes = store_bytes();
    let ratio = match (company["wall_s"].as_f64(), alone["wall_s"].as_f64()) {
        (Some(a), Some(b)) if b > 0.0 => json!((a / b * 100.0).round() / 100.0),
        _ => Json::Null,
    };
    Ok(json!({
        "records": stored,
        "territories": territories,
        "upload_s": (upload.as_secs_f64() * 1e3).round() / 1e3,
        "upload_records_per_s": (stored as f64 / upload.as_secs_f64()).round(),
        "bootstrap_territory_alone": alone,
        "bootstrap_territory_in_company": company,
        "bootstrap_ratio": ratio,
        "relay_peak_rss_kib": relay.peak_rss_kib(),
        "store_bytes": bytes,
        "store_bytes_per_record": (bytes as f64 / stored.max(1) as f64).round(),
    }))
}

/// Bootstraps of one territory measured per relay state.
const RUNS: usize = 3;

/// [`RUNS`] fresh devices of `rep0` bootstrap one after another (each
/// removed after): the figures of the median one by wall time, with every
/// run's wall time under `wall_s_runs`.
fn median_bootstrap(url: &str, db: &Path) -> Result<Json, Box<dyn std::error::Error>> {
    let mut runs = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        runs.push(fresh_device::measure(url, "rep0", db)?);
        remove_store(db);
    }
    let wall = |run: &Json| run["wall_s"].as_f64().unwrap_or(f64::INFINITY);
    let walls: Vec<f64> = runs.iter().map(wall).collect();
    runs.sort_by(|a, b| wall(a).total_cmp(&wall(b)));
    let mut median = runs.swap_remove(RUNS / 2);
    median["wall_s_runs"] = json!(walls);
    Ok(median)
}

/// Removes a device store and its WAL files.
fn remove_store(path: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        let _ = std::fs::remove_file(name);
    }
}
